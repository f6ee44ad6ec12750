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

/// Logs to stderr; `RUST_LOG` overrides `default` (e.g. `RUST_LOG=blockrep=debug`).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
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
