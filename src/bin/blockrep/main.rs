//! `blockrep`: the agent-side command line. A thin shell over the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use blockrep::progress::human_bytes;
use blockrep::sender::{self, Compression, Control, Mode};
use blockrep::{certs, cli, size, tls, Error, SendConfig, SendHandle, SendSummary, SourceSpec};
use clap::{Parser, Subcommand, ValueEnum};

mod limits;
mod maps;
mod netcheck;
mod verify;

/// Writes a line on stdout. Returns false when stdout is gone (a closed pipe: `| head`)
/// instead of panicking as `println!` does, so a reader that exits never kills a transfer.
fn write_line(args: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .is_ok()
}

/// `println!` that does not panic on a closed stdout; evaluates to whether it was written.
macro_rules! say {
    ($($arg:tt)*) => { crate::write_line(format_args!($($arg)*)) };
}
pub(crate) use say;

#[derive(Parser)]
#[command(
    name = "blockrep",
    version,
    about = "Replicate disks block by block to a blockrep-receiver over mutual TLS",
    long_about = "Replicate disks block by block to a blockrep-receiver over mutual TLS.\n\n\
        Every chunk is compressed (lz4) and hashed (blake3); the receiver checks each digest \
        before writing and acknowledges only data that is durable on its disks.\n\n\
        Try it: `blockrep demo` runs the whole job on loopback; `blockrep certs --out DIR` \
        makes certificates to try a real pair of hosts.\n\n\
        On failure a command prints one line `error SMS.xxxx: <what and why>` on stderr and \
        exits non-zero; SMS.xxxx is the migration service's error code."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send disks to a receiver.
    Send(Box<SendArgs>),
    /// Check that the receiver's disks hold what the source disks hold: both sides read and
    /// digest the same ranges, only digests cross the wire. Exit 0 consistent, 1 differences
    /// found, 2 could not verify (SMS.1511). Takes the connection flags of `send`; `--mode
    /// used` (the default) checks what a used-mode round sends, `--mode full` every byte.
    Verify(Box<verify::VerifyArgs>),
    /// Check the network to a receiver before a migration: round trip (median, p99) and
    /// jitter of small frames, bandwidth of a short TLS burst (obeying --speed-limit), loss
    /// and retransmissions from the kernel's TCP counters, this agent's CPU and memory, and
    /// a verdict (good, fair, poor; exit 1 when poor). Takes the connection flags of `send`.
    Netcheck(Box<netcheck::NetcheckArgs>),
    /// Make a CA, a server and a client certificate, for trying blockrep out.
    Certs {
        /// Directory to write ca.pem, server.pem/key, client.pem/key into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS name or IP address for the server certificate (repeatable). localhost,
        /// 127.0.0.1 and ::1 are always included.
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Run the whole job on an embedded example on loopback: make an image, start a
    /// receiver, replicate, check the copy. Needs no root.
    Demo,
    /// Show what a send would read of a disk: its partitions, their filesystems and used
    /// bytes, and the totals. `--json` adds the extents.
    Blockmap {
        /// A disk image or block device.
        path: PathBuf,
        /// `used` (the default): what `send --mode used` reads; `full`: every byte.
        #[arg(long, value_enum, default_value_t = MapMode::Used)]
        mode: MapMode,
        /// One JSON object with the partitions, totals and extents.
        #[arg(long)]
        json: bool,
    },
    /// Change bitmaps (docs/BITMAP.md).
    #[command(subcommand)]
    Bitmap(BitmapCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum MapMode {
    Used,
    Full,
}

#[derive(Subcommand)]
enum BitmapCommand {
    /// Write the native change bitmap of two images of one disk (the granules that differ).
    Diff {
        /// The image as it was.
        old: PathBuf,
        /// The image as it is.
        new: PathBuf,
        /// Bytes per bit: a power of two from 4KiB to 64MiB.
        #[arg(long, value_parser = parse_granularity)]
        block_size: u32,
        /// Where to write the bitmap.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s}: a percentage, 0 or more"))
}

fn parse_granularity(s: &str) -> Result<u32, String> {
    let n = size::parse_size(s)?;
    u32::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two() && (4096..=64 << 20).contains(n))
        .ok_or_else(|| format!("{s}: a bitmap block size is a power of two from 4KiB to 64MiB"))
}

#[derive(clap::Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    conn: ConnectionArgs,
    /// Source disk PATH (file or block device) goes to the receiver's disk ID (repeatable).
    #[arg(long = "disk", value_name = "ID=PATH", required = true, value_parser = cli::parse_disk)]
    disks: Vec<(String, PathBuf)>,
    /// Which blocks to send: `used` (partition tables and allocated blocks; what cannot be
    /// mapped with certainty is sent whole), `full`, `bitmap` (the ranges --bitmap marks), or
    /// `delta` (the ranges whose digests differ on the target).
    #[arg(long, value_enum, default_value_t = ModeArg::Used)]
    mode: ModeArg,
    /// For --mode bitmap: the change set of disk ID (repeatable, one per disk): a native
    /// BRCBMAP1 bitmap, dm-era's era_invalidate XML, or `offset length` lines (docs/BITMAP.md).
    #[arg(long = "bitmap", value_name = "ID=FILE", value_parser = cli::parse_disk)]
    bitmaps: Vec<(String, PathBuf)>,
    /// The dm-era block size, for era_invalidate block lists.
    #[arg(long, value_parser = size::parse_size)]
    era_block_size: Option<u64>,
    /// Chunk size: a power of two from 4KiB to 1MiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_block_size)]
    block_size: u32,
    /// Task id; a later run with the same id continues the same session on the receiver.
    #[arg(long)]
    session: Option<String>,
    /// Progress output: a bar on stderr, one JSON object per second on stdout (the service's
    /// field names), or nothing. Default: bar on a terminal, none otherwise.
    #[arg(long, value_enum)]
    progress: Option<ProgressArg>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Raw bytes read but not yet durable on the target, at most.
    #[arg(long, default_value = "64MiB", value_parser = size::parse_size)]
    window: u64,
    /// Compression and hashing threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// lz4 compression: `auto` compresses where it pays (less on a link faster than the
    /// compressing threads, or on data that does not compress; more when the link or a rate
    /// limit is the bottleneck), `always` tries every chunk, `never` sends chunks as read
    /// (all-zero chunks still travel as a few bytes).
    #[arg(long, value_enum, default_value = "auto")]
    compress: CompressArg,
    /// TLS connections to send over at once (1-16): more spread the encryption over cores
    /// and a long fat link's losses over connections; they share --window and the speed
    /// limits. Hash-delta rounds use one.
    #[arg(long, default_value_t = sender::DEFAULT_STREAMS)]
    streams: usize,
    /// After a dropped connection or a receiver restart, reconnect (waiting 1 s, 2 s, 4 s ...
    /// up to 60 s between tries, with jitter) for this long, then give up; 0 = never. What
    /// the receiver already holds is not sent again.
    #[arg(long, default_value = "15m", value_name = "DURATION", value_parser = cli::parse_duration)]
    retry_for: Duration,
    /// After a complete transfer, verify the target (as `blockrep verify`, in used mode
    /// unless --mode full); exit 1 if it differs.
    #[arg(long)]
    verify: bool,
}

/// How to reach and authenticate to the receiver: `send`, `verify` and `netcheck`.
#[derive(clap::Args)]
pub(crate) struct ConnectionArgs {
    /// The receiver, HOST[:PORT] (port 8900 by default; [v6addr]:port for IPv6).
    #[arg(long)]
    to: String,
    /// CA certificate (PEM) that issued the receiver's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// This agent's client certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// This agent's private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long)]
    key: PathBuf,
    /// Name the receiver's certificate must carry (default: the host part of --to).
    #[arg(long)]
    server_name: Option<String>,
}

/// The rate limits a transfer (or netcheck's burst) obeys.
#[derive(clap::Args)]
pub(crate) struct LimitArgs {
    /// Speed limits by time of day, Mbit/s: `00:00-08:00=20,08:00-15:00=50,15:00-23:59=25`,
    /// or @FILE holding the service's JSON ({"speed_limit":[{"start":"0:00","end":"8:00",
    /// "speed":20,"over_speed_threshold":50.0},...]}) or the same shorthand. A file is re-read
    /// when it changes and on SIGHUP; new limits apply within a second. 0 = unlimited.
    #[arg(long, value_name = "RULES|@FILE")]
    speed_limit: Option<String>,
    /// The limit outside every window, Mbit/s (0 = unlimited).
    #[arg(long, default_value_t = 0, value_name = "MBPS")]
    speed_limit_default: u32,
    /// Stop as a protection when the wire rate over 5 s exceeds the limit by more than PCT
    /// percent (rules may set their own).
    #[arg(long, value_name = "PCT", value_parser = parse_threshold)]
    over_speed_threshold: Option<f64>,
}

impl ConnectionArgs {
    /// A configuration for these connection flags and `disks`, with the defaults otherwise.
    pub(crate) fn config(
        self,
        disks: Vec<SourceSpec>,
        limits: &LimitArgs,
    ) -> Result<SendConfig, Error> {
        let tls = tls::client_config(&self.ca, &self.cert, &self.key)?;
        let mut config = SendConfig::new(self.to, tls, disks);
        config.server_name = self.server_name;
        config.limits = limits.throttle()?;
        Ok(config)
    }
}

impl LimitArgs {
    fn throttle(&self) -> Result<std::sync::Arc<blockrep::throttle::Throttle>, Error> {
        if self.speed_limit_default > 10_000 {
            return Err(Error::Config(format!(
                "--speed-limit-default {}: at most 10000 Mbit/s (0 = unlimited)",
                self.speed_limit_default
            )));
        }
        limits::throttle(
            self.speed_limit.as_deref().map(limits::Source::parse),
            limits::Defaults {
                default_mbps: self.speed_limit_default,
                threshold: self.over_speed_threshold,
            },
        )
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressArg {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Partition tables and allocated blocks.
    Used,
    /// Every block.
    Full,
    /// Only blocks marked in a change bitmap.
    Bitmap,
    /// Only ranges whose digests differ on the two sides.
    Delta,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProgressArg {
    Bar,
    Json,
    None,
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    let n = size::parse_size(s)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| blockrep_proto::frame::valid_block_size(n))
        .ok_or_else(|| format!("{s}: the block size must be a power of two from 4KiB to 1MiB"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(args) => {
            let args = *args;
            cli::init_logging("warn");
            run_send(args)
        }
        Command::Verify(args) => {
            cli::init_logging("warn");
            return verify::run(*args);
        }
        Command::Netcheck(args) => {
            cli::init_logging("warn");
            netcheck::run(*args)
        }
        Command::Certs { out, names } => certs::generate(&names)
            .and_then(|pki| pki.write(&out))
            .map(|files| {
                say!(
                    "wrote {} (CA), {} + {} (receiver), {} + {} (sender)",
                    files.ca.display(),
                    files.server_cert.display(),
                    files.server_key.display(),
                    files.client_cert.display(),
                    files.client_key.display()
                );
                ExitCode::SUCCESS
            }),
        Command::Demo => {
            cli::init_logging("warn");
            blockrep::demo::run(&mut std::io::stdout()).map(|()| ExitCode::SUCCESS)
        }
        Command::Blockmap { path, mode, json } => {
            cli::init_logging("warn");
            maps::blockmap(&path, matches!(mode, MapMode::Full), json).map(|()| ExitCode::SUCCESS)
        }
        Command::Bitmap(BitmapCommand::Diff {
            old,
            new,
            block_size,
            out,
        }) => maps::bitmap_diff(&old, &new, block_size, &out).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("{}", e.user_line());
        ExitCode::FAILURE
    })
}

fn run_send(args: SendArgs) -> Result<ExitCode, Error> {
    let (verify_after, json) = (args.verify, args.progress == Some(ProgressArg::Json));
    let (config, progress) = send_config(args)?;
    let handle = sender::start(config.clone());
    install_stop_on_signal(handle.control());
    report(&handle, progress);
    let summary = handle.wait()?;
    print_summary(&summary, progress);
    if !summary.complete {
        return Err(Error::Transport(format!(
            "stopped before the end: {} of {} durable on the target",
            human_bytes(summary.acked_bytes),
            human_bytes(summary.total_bytes)
        )));
    }
    if verify_after {
        return Ok(verify::after_send(config, json));
    }
    Ok(ExitCode::SUCCESS)
}

/// The transfer `args` describe, and how to show its progress.
fn send_config(args: SendArgs) -> Result<(SendConfig, ProgressArg), Error> {
    let mode = match args.mode {
        ModeArg::Used => Mode::Used,
        ModeArg::Full => Mode::Full,
        ModeArg::Bitmap => Mode::Bitmap,
        ModeArg::Delta => Mode::Delta,
    };
    if mode != Mode::Bitmap && !args.bitmaps.is_empty() {
        return Err(Error::Config(
            "--bitmap is only used with --mode bitmap".into(),
        ));
    }
    let mut disks = Vec::new();
    for (id, path) in args.disks {
        let mut spec = SourceSpec::new(id, path);
        if mode == Mode::Bitmap {
            let file = args
                .bitmaps
                .iter()
                .find(|(b, _)| *b == spec.id)
                .map(|(_, f)| f)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--mode bitmap: no --bitmap {}=FILE for disk {}",
                        spec.id, spec.id
                    ))
                })?;
            let size = blockrep_disk::SourceDisk::open(&spec.path)?.size();
            spec.changed = Some(maps::load_changes(file, size, args.era_block_size)?);
        }
        disks.push(spec);
    }
    if let Some((id, _)) = args
        .bitmaps
        .iter()
        .find(|(b, _)| !disks.iter().any(|d| d.id == *b))
    {
        return Err(Error::Config(format!(
            "--bitmap {id}=...: there is no --disk {id}"
        )));
    }
    let mut config = args.conn.config(disks, &args.limits)?;
    config.mode = mode;
    config.block_size = args.block_size;
    config.window = args.window;
    config.streams = args.streams;
    config.compression = match args.compress {
        CompressArg::Auto => Compression::Auto,
        CompressArg::Always => Compression::Always,
        CompressArg::Never => Compression::Never,
    };
    if let Some(w) = args.workers {
        config.workers = w;
    }
    if let Some(s) = args.session {
        config.session_id = s;
    }
    config.retry.total = args.retry_for;
    let progress = args.progress.unwrap_or(if std::io::stderr().is_terminal() {
        ProgressArg::Bar
    } else {
        ProgressArg::None
    });
    Ok((config, progress))
}

/// SIGINT or SIGTERM asks for a clean STOP; a second one exits at once.
fn install_stop_on_signal(control: Arc<Control>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            eprintln!("stopping: finishing the chunks in flight (signal again to exit at once)");
            control.stop();
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            std::process::exit(130);
        });
    });
}

/// Prints progress once a second until the transfer ends, and once more at the end.
fn report(handle: &SendHandle, kind: ProgressArg) {
    let style = |template| {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    };
    // Until the round knows its plan (a delta round compares digests first) there is no
    // total to show a bar against.
    let bar = (kind == ProgressArg::Bar).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(style("{spinner} planning the round ... {msg}"));
        bar
    });
    let mut planned = false;
    loop {
        let finished = handle.is_finished();
        let s = handle.progress();
        match (kind, &bar) {
            (ProgressArg::Json, _) => {
                if let Ok(line) = serde_json::to_string(&s) {
                    say!("{line}");
                }
            }
            (ProgressArg::Bar, Some(bar)) => {
                if !planned && (s.totalsize > 0 || s.progress >= 100.0) {
                    planned = true;
                    bar.set_style(style(
                        "{bar:40.cyan/blue} {percent:>3}% {binary_bytes}/{binary_total_bytes} {msg}",
                    ));
                }
                bar.set_length(s.totalsize);
                bar.set_position(s.replicatesize);
                bar.set_message(format!(
                    "{:.0} Mbit/s, {:.0}% saved, {} s left, CPU {:.0}%, {:.0} MB",
                    s.migrate_speed,
                    s.compress_rate,
                    s.remain_time,
                    s.agent_cpu_usage,
                    s.agent_mem_usage
                ));
            }
            _ => {}
        }
        if finished {
            break;
        }
        // Wake when the transfer ends, so a short transfer does not wait out the second.
        handle.wait_for(Duration::from_secs(1));
    }
    if let Some(bar) = bar {
        bar.finish();
    }
}

fn print_summary(s: &SendSummary, kind: ProgressArg) {
    match kind {
        ProgressArg::Json => {
            if let Ok(line) = serde_json::to_string(&serde_json::json!({ "summary": s })) {
                say!("{line}");
            }
        }
        _ => eprintln!(
            "{}: read {}, sent {} raw as {} on the wire, {} zero, in {:.2} s",
            if s.complete { "done" } else { "stopped" },
            human_bytes(s.read_bytes),
            human_bytes(s.sent_bytes),
            human_bytes(s.wire_bytes),
            human_bytes(s.zero_bytes),
            s.elapsed_ms as f64 / 1000.0
        ),
    }
}
