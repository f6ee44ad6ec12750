//! `blockrep-receiver`: runs on the target server and writes the target disks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use blockrep::{cli, tls, Error, ReceiverConfig};
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
        Settings can also come from a TOML file (--config); flags override it:\n\n\
        \x20   listen = \"0.0.0.0:8900\"\n\
        \x20   cert = \"/etc/blockrep/server.pem\"\n\
        \x20   key = \"/etc/blockrep/server.key\"\n\
        \x20   client_ca = \"/etc/blockrep/ca.pem\"\n\
        \x20   state_dir = \"/var/lib/blockrep\"\n\
        \x20   [disks]\n\
        \x20   disk0 = \"/dev/vdb\"\n\n\
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
    /// Directory for session journals: per session, what is durable on the targets, so a
    /// sender reconnecting after this receiver restarted (even after SIGKILL or a power cut)
    /// sends only the rest. Created if missing. Without it, a restart loses that knowledge.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// How long the journal of a finished session is kept, e.g. 12h or 7d [default: 7d].
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    journal_retention: Option<Duration>,
    /// Exit after the first session ends: 0 if it succeeded, 1 if not.
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
    #[serde(default)]
    disks: BTreeMap<String, PathBuf>,
}

fn load_file(path: &Path) -> Result<FileConfig, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

fn required(value: Option<PathBuf>, flag: &str) -> Result<PathBuf, Error> {
    value.ok_or_else(|| Error::Config(format!("{flag} is required (or set it in --config)")))
}

fn main() -> ExitCode {
    cli::init_logging("info");
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", e.user_line());
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode, Error> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let cert = required(args.cert.or(file.cert), "--cert")?;
    let key = required(args.key.or(file.key), "--key")?;
    let client_ca = required(args.client_ca.or(file.client_ca), "--client-ca")?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], blockrep::DEFAULT_PORT)));
    let mut disks = file.disks;
    for (id, path) in args.disks {
        disks.insert(id, path);
    }
    for id in disks.keys() {
        if !blockrep_proto::codec::is_identifier(id, blockrep_proto::consts::MAX_DISK_ID_LEN) {
            return Err(Error::Config(format!(
                "disk id {id:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
    }
    let state_dir = args.state_dir.or(file.state_dir);
    if let Some(dir) = &state_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "cannot create the state directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let mut config = ReceiverConfig::new(tls::server_config(&cert, &key, &client_ca)?, disks);
    config.state_dir = state_dir;
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

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;
    rt.block_on(async move {
        // Signal handlers first: once "listening" is printed, SIGTERM must mean a clean stop.
        let shutdown = shutdown_signal()?;
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
        eprintln!("blockrep-receiver listening on {local}");
        let outcome = blockrep::serve(listener, config, shutdown).await;
        tracing::info!(
            succeeded = outcome.succeeded,
            failed = outcome.failed,
            "receiver stopped"
        );
        Ok(match outcome.first {
            Some(Ok(report)) if report.complete => ExitCode::SUCCESS,
            Some(Ok(_)) => {
                eprintln!(
                    "error {}: the session stopped before the end",
                    blockrep::codes::TRANSMISSION
                );
                ExitCode::FAILURE
            }
            Some(Err(line)) => {
                eprintln!("{line}");
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
