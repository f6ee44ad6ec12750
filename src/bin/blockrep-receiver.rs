//! `blockrep-receiver`: runs on the target server and writes the target disks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use blockrep::cli::{self, LogFormat};
use blockrep::{tls, Error, ReceiverConfig};
use clap::Parser;
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "blockrep-receiver",
    version,
    about = "Receive disks from blockrep senders over mutual TLS and write them to the target disks",
    long_about = "Receive disks from blockrep senders over mutual TLS and write them to the target disks.\n\n\
        Only the disks given with --disk ID=PATH can ever be opened for writing, whatever a \
        sender asks. Every chunk's digest is checked before it is written, and data is \
        acknowledged only once it is durable (fdatasync).\n\n\
        Settings can also come from a TOML file (--config); flags override it. Every key, \
        each the flag of the same name, all optional but cert, key, client_ca and a disk:\n\n\
        \x20   listen = \"0.0.0.0:8900\"\n\
        \x20   cert = \"/etc/blockrep/server.pem\"\n\
        \x20   key = \"/etc/blockrep/server.key\"\n\
        \x20   client_ca = \"/etc/blockrep/ca.pem\"\n\
        \x20   state_dir = \"/var/lib/blockrep\"\n\
        \x20   journal_retention = \"7d\"\n\
        \x20   once = false\n\
        \x20   max_sessions = 16\n\
        \x20   max_connections = 64\n\
        \x20   handshake_timeout = 10\n\
        \x20   idle_timeout = 60\n\
        \x20   metrics = \"127.0.0.1:9900\"\n\
        \x20   log_format = \"text\"\n\
        \x20   allow_client = [\"agent-web-01\"]\n\
        \x20   grow_images = false\n\
        \x20   disk_client = { disk0 = [\"agent-web-01\"] }\n\
        \x20   [disks]\n\
        \x20   disk0 = \"/dev/vdb\"\n\n\
        An unknown key or a value of the wrong type is an error naming the file, the line and \
        the key. In the source tree, docs/receiver.toml is this example with comments, and \
        docs/HARDENING.md with docs/blockrep-receiver.service runs the receiver as a locked-down \
        systemd service.\n\n\
        On start it prints \"blockrep-receiver metrics on ADDR\" (with --metrics) and then \
        \"blockrep-receiver listening on ADDR\" on stderr, so scripts can find the ports when \
        listening on port 0; with --log-format json these are the \"message\" of JSON lines.\n\n\
        Logs go to stderr, as text or, with --log-format json (or BLOCKREP_LOG_FORMAT=json, \
        which blockrep reads too), one JSON object per line with timestamp, level, target and \
        fields (the text under fields.message). RUST_LOG sets the level (default info).\n\n\
        SIGTERM or SIGINT: stop accepting, finish the writes in flight, acknowledge what is \
        durable, tell the senders, exit 0."
)]
struct Args {
    /// TOML file with the settings below (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8900].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Server certificate chain (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Server private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Clients must present a certificate issued by this CA (PEM).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// A target disk the receiver may write: ID=PATH, an existing file or block device
    /// (repeatable). No other path is ever opened for writing.
    #[arg(long = "disk", value_name = "ID=PATH", value_parser = cli::parse_disk)]
    disks: Vec<(String, PathBuf)>,
    /// Only clients whose certificate matches RULE may use this receiver (repeatable): a name
    /// (a subject alternative DNS name or the common name) or sha256:HEX (the SHA-256 of the
    /// certificate's public key). Without it, every certificate of --client-ca may.
    #[arg(long = "allow-client", value_name = "RULE", value_parser = blockrep::receiver::ClientRule::parse)]
    allow_clients: Vec<blockrep::receiver::ClientRule>,
    /// Only clients matching RULE may write or compare disk ID (repeatable, per disk; RULE as
    /// for --allow-client). A disk without such rules is open to every allowed client.
    #[arg(long = "disk-client", value_name = "ID=RULE", value_parser = parse_disk_client)]
    disk_clients: Vec<(String, blockrep::receiver::ClientRule)>,
    /// Let an image-file target smaller than its source be grown (sparse) to the source's
    /// size, once every other check of the session passed. Without it such a target is
    /// refused (SMS.1504) and left as it is. Block devices are never grown.
    #[arg(long)]
    grow_images: bool,
    /// Directory for session journals: per session, what is durable on the targets, so a
    /// sender reconnecting after this receiver restarted (even after SIGKILL or a power cut)
    /// sends only the rest. Created if missing. Without it, a restart loses that knowledge.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// How long the journal of a finished session is kept, and that of an unfinished one
    /// after its last write, e.g. 12h or 7d [default: 7d].
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    journal_retention: Option<Duration>,
    /// Exit after the first session ends (a `blockrep netcheck` does not count): 0 if it
    /// succeeded, 1 if not.
    #[arg(long)]
    once: bool,
    /// Sessions at once; more are refused as busy [default: 16].
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Connections at once, handshakes included; more are closed [default: 64].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a new connection has to finish TLS and send HELLO [default: 10].
    #[arg(long)]
    handshake_timeout: Option<u64>,
    /// Seconds a session may stay silent before it is closed [default: 60].
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Serve Prometheus metrics (sessions, bytes, chunks, errors by code, write and sync
    /// latency) over plain HTTP at http://ADDR/metrics, e.g. 127.0.0.1:9900. Off unless
    /// given. Unauthenticated: bind it to localhost or a monitoring network only.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Log lines on stderr: text, or json (one object per line) [default: text].
    #[arg(long, value_enum, value_name = "FORMAT", env = cli::LOG_FORMAT_ENV)]
    log_format: Option<LogFormat>,
}

/// The TOML configuration file; every field is optional and flags win.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    journal_retention: Option<String>,
    once: Option<bool>,
    max_sessions: Option<usize>,
    max_connections: Option<usize>,
    handshake_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    metrics: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    disks: BTreeMap<String, PathBuf>,
    #[serde(default)]
    allow_client: Vec<String>,
    #[serde(default)]
    disk_client: BTreeMap<String, Vec<String>>,
    grow_images: Option<bool>,
}

fn load_file(path: &Path) -> Result<FileConfig, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(describe_toml_error(path, &text, &e)))
}

/// One line saying where the file is wrong (line and key), what is wrong, and what to do.
fn describe_toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace("unknown field", "unknown key")
        .replace("expected usize", "expected a whole number")
        .replace("expected u64", "expected a whole number");
    let fix = "fix or remove it (blockrep-receiver --help lists every key and its type)";
    let Some(start) = e.span().map(|s| s.start) else {
        return format!("{}: {message}; {fix}", path.display());
    };
    let before = text.get(..start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    // The key on that line, under the table it is in ("disks.d0").
    let table = before
        .lines()
        .take(line_no - 1)
        .map(str::trim)
        .filter(|l| l.starts_with('[') && l.ends_with(']'))
        .last()
        .map(|l| l.trim_matches(['[', ']', ' ']));
    let key = if line.starts_with('[') {
        Some(line.trim_matches(['[', ']', ' ']).to_owned())
    } else {
        line.split_once('=').map(|(k, _)| {
            let k = k.trim().trim_matches(['"', '\'']);
            table.map_or_else(|| k.to_owned(), |t| format!("{t}.{k}"))
        })
    };
    match key {
        Some(key) if !key.is_empty() && !message.contains(&format!("`{key}`")) => format!(
            "{}, line {line_no}: key `{key}`: {message}; {fix}",
            path.display()
        ),
        _ => format!("{}, line {line_no}: {message}; {fix}", path.display()),
    }
}

/// Writes a line meant for people and scripts to stderr: as it is, or with `--log-format
/// json` as an object shaped like the log's lines, the text under `fields.message`.
fn say(format: LogFormat, level: &str, text: &str) {
    match format {
        LogFormat::Text => eprintln!("{text}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": level,
                "fields": { "message": text },
                "target": "blockrep_receiver",
            })
        ),
    }
}

fn required(value: Option<PathBuf>, flag: &str) -> Result<PathBuf, Error> {
    value.ok_or_else(|| Error::Config(format!("{flag} is required (or set it in --config)")))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let file = args.config.as_deref().map(load_file).transpose();
    // The flag (or its environment variable), else the file's key; a file that cannot be
    // read leaves the flag's choice for its error line.
    let format = args
        .log_format
        .or_else(|| file.as_ref().ok()?.as_ref()?.log_format)
        .unwrap_or_default();
    cli::init_logging_with("info", format);
    match file.and_then(|file| run(args, file.unwrap_or_default(), format)) {
        Ok(code) => code,
        Err(e) => {
            say(format, "ERROR", &e.user_line());
            ExitCode::FAILURE
        }
    }
}

/// `ID=RULE` of `--disk-client`.
fn parse_disk_client(s: &str) -> Result<(String, blockrep::receiver::ClientRule), String> {
    let (id, rule) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=RULE, e.g. root=agent-7"))?;
    Ok((id.to_owned(), blockrep::receiver::ClientRule::parse(rule)?))
}

/// The client rules of the config file and of the flags, together.
fn client_access(
    file_receiver: &[String],
    file_disks: &BTreeMap<String, Vec<String>>,
    flags_receiver: Vec<blockrep::receiver::ClientRule>,
    flags_disks: Vec<(String, blockrep::receiver::ClientRule)>,
) -> Result<blockrep::receiver::ClientAccess, Error> {
    use blockrep::receiver::ClientRule;
    let parse =
        |key: &str, r: &str| ClientRule::parse(r).map_err(|e| Error::Config(format!("{key}: {e}")));
    let mut access = blockrep::receiver::ClientAccess::default();
    for r in file_receiver {
        access.receiver.push(parse("allow_client", r)?);
    }
    access.receiver.extend(flags_receiver);
    for (id, rules) in file_disks {
        for r in rules {
            let rule = parse(&format!("disk_client.{id}"), r)?;
            access.disks.entry(id.clone()).or_default().push(rule);
        }
    }
    for (id, rule) in flags_disks {
        access.disks.entry(id).or_default().push(rule);
    }
    Ok(access)
}

/// The disks of the config file and of the flags, as one list: an id given twice (in either
/// place) is refused, naming both paths, since the list decides what may be overwritten.
fn disk_list(
    file: BTreeMap<String, PathBuf>,
    flags: Vec<(String, PathBuf)>,
) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut disks = file;
    for (id, path) in flags {
        if let Some(first) = disks.get(&id) {
            return Err(Error::Config(format!(
                "disk id {id:?} is given twice ({} and {}); give each target disk one id",
                first.display(),
                path.display()
            )));
        }
        disks.insert(id, path);
    }
    Ok(disks)
}

fn run(args: Args, file: FileConfig, format: LogFormat) -> Result<ExitCode, Error> {
    let cert = required(args.cert.or(file.cert), "--cert")?;
    let key = required(args.key.or(file.key), "--key")?;
    let client_ca = required(args.client_ca.or(file.client_ca), "--client-ca")?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], blockrep::DEFAULT_PORT)));
    let disks = disk_list(file.disks, args.disks)?;
    for id in disks.keys() {
        if !blockrep_proto::codec::is_identifier(id, blockrep_proto::consts::MAX_DISK_ID_LEN) {
            return Err(Error::Config(format!(
                "disk id {id:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
    }
    // Certificates first: a bad one is reported before anything is created on disk.
    let tls = tls::server_config(&cert, &key, &client_ca)?;
    // Created (mode 0700) by config.check_disks() below.
    let state_dir = args.state_dir.or(file.state_dir);
    let access = client_access(
        &file.allow_client,
        &file.disk_client,
        args.allow_clients,
        args.disk_clients,
    )?;
    let mut config = ReceiverConfig::new(tls, disks);
    config.state_dir = state_dir;
    config.access = access;
    config.grow_images = args.grow_images || file.grow_images.unwrap_or(false);
    let retention = match (args.journal_retention, file.journal_retention) {
        (Some(d), _) => Some(d),
        (None, Some(s)) => Some(
            cli::parse_duration(&s)
                .map_err(|e| Error::Config(format!("journal_retention: {e}")))?,
        ),
        (None, None) => None,
    };
    if let Some(d) = retention {
        config.journal_retention = d;
    }
    config.once = args.once || file.once.unwrap_or(false);
    if let Some(n) = args.max_sessions.or(file.max_sessions) {
        config.max_sessions = n;
    }
    if let Some(n) = args.max_connections.or(file.max_connections) {
        config.max_connections = n;
    }
    if let Some(s) = args.handshake_timeout.or(file.handshake_timeout) {
        config.handshake_timeout = Duration::from_secs(s);
    }
    if let Some(s) = args.idle_timeout.or(file.idle_timeout) {
        config.idle_timeout = Duration::from_secs(s);
    }
    config.check_disks()?;
    let once = config.once;
    let metrics_addr = args.metrics.or(file.metrics);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;
    rt.block_on(async move {
        // Signal handlers first: once "listening" is printed, SIGTERM must mean a clean stop.
        let shutdown = shutdown_signal()?;
        let metrics_task = match metrics_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    Error::Config(format!("cannot listen for metrics on {addr}: {e}"))
                })?;
                let local = listener
                    .local_addr()
                    .map_err(|e| Error::Config(e.to_string()))?;
                tracing::info!("serving metrics at http://{local}/metrics");
                // Printed before the listening line, which tells scripts the receiver is up.
                say(
                    format,
                    "INFO",
                    &format!("blockrep-receiver metrics on {local}"),
                );
                let metrics = config.metrics.clone();
                Some(tokio::spawn(blockrep::metrics::serve_http(
                    listener, metrics,
                )))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::Connect {
                addr: listen.to_string(),
                reason: format!("cannot listen: {e}"),
            })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Config(e.to_string()))?;
        // Scripts and tests read this line to learn the port when listening on port 0.
        tracing::info!("listening on {local}");
        say(
            format,
            "INFO",
            &format!("blockrep-receiver listening on {local}"),
        );
        let outcome = blockrep::serve(listener, config, shutdown).await;
        if let Some(task) = metrics_task {
            task.abort();
        }
        tracing::info!(
            succeeded = outcome.succeeded,
            failed = outcome.failed,
            "receiver stopped"
        );
        Ok(match outcome.first {
            Some(Ok(report)) if report.complete => ExitCode::SUCCESS,
            Some(Ok(_)) => {
                let line = format!(
                    "error {}: the session stopped before the end",
                    blockrep::codes::TRANSMISSION
                );
                say(format, "ERROR", &line);
                ExitCode::FAILURE
            }
            Some(Err(line)) => {
                say(format, "ERROR", &line);
                ExitCode::FAILURE
            }
            None if once => ExitCode::FAILURE,
            None => ExitCode::SUCCESS,
        })
    })
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind| {
        signal(kind).map_err(|e| Error::Config(format!("cannot install a signal handler: {e}")))
    };
    let (mut term, mut int) = (
        install(SignalKind::terminate())?,
        install(SignalKind::interrupt())?,
    );
    Ok(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    })
}
