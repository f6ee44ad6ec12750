//! Pieces shared by the two binaries: argument parsing helpers and logging set-up.

use std::path::PathBuf;

/// Parses `ID=PATH`.
pub fn parse_disk(s: &str) -> Result<(String, PathBuf), String> {
    let (id, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=PATH, e.g. disk0=/dev/sdb"))?;
    if !blockrep_proto::codec::is_identifier(id, blockrep_proto::consts::MAX_DISK_ID_LEN) {
        return Err(format!(
            "{id:?}: a disk id is 1 to 64 characters of A-Z a-z 0-9 . _ - (not starting with a dot)"
        ));
    }
    if path.is_empty() {
        return Err(format!("{s:?}: the path is empty"));
    }
    Ok((id.to_owned(), PathBuf::from(path)))
}

/// How log lines on stderr look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: `2025-01-01T00:00:00Z  INFO message key=value`.
    #[default]
    Text,
    /// For log collectors: one JSON object per line, with `timestamp`, `level`, `target` and
    /// `fields` (the event's fields, its text under `message`).
    Json,
}

/// The environment variable that chooses the log format (`text` or `json`) where no flag
/// does.
pub const LOG_FORMAT_ENV: &str = "BLOCKREP_LOG_FORMAT";

impl LogFormat {
    /// From [`LOG_FORMAT_ENV`]: `Ok(None)` when it is unset or empty, `Err` with the value
    /// when it is neither `text` nor `json`.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(LOG_FORMAT_ENV) {
            Err(_) => Ok(None),
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "text" => Ok(Some(Self::Text)),
                "json" => Ok(Some(Self::Json)),
                _ => Err(v),
            },
        }
    }
}

/// Logs to stderr in the format [`LOG_FORMAT_ENV`] names (text when unset); `RUST_LOG`
/// overrides `default` (e.g. `RUST_LOG=blockrep=debug`).
pub fn init_logging(default: &str) {
    match LogFormat::from_env() {
        Ok(format) => init_logging_with(default, format.unwrap_or_default()),
        Err(bad) => {
            init_logging_with(default, LogFormat::Text);
            tracing::warn!("{LOG_FORMAT_ENV}={bad:?} is neither text nor json; logging text");
        }
    }
}

/// Logs to stderr in `format`; `RUST_LOG` overrides `default` (e.g. `RUST_LOG=blockrep=debug`).
pub fn init_logging_with(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::parse_disk;

    #[test]
    fn disk_specs() {
        assert_eq!(
            parse_disk("disk0=/dev/sdb"),
            Ok(("disk0".into(), "/dev/sdb".into()))
        );
        assert_eq!(parse_disk("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_disk("/dev/sdb").is_err());
        assert!(parse_disk("=x").is_err());
        assert!(parse_disk("../x=y").is_err());
        assert!(parse_disk("x=").is_err());
    }
}

/// Parses a duration for the command line: a whole number with a unit, `s`, `m`, `h` or `d`
/// (`90s`, `15m`, `2h`, `7d`), or `0`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let bad = || format!("{s}: give a duration like 90s, 15m, 2h or 7d (or 0)");
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        "d" => n.checked_mul(86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "s",
            "15",
            "1.5m",
            "-1s",
            "10w",
            "99999999999999999999h",
            "m5",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
