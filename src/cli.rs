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
