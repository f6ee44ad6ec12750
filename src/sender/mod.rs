//! The sender: what a round sends (plan), how it gets there (connect, pipeline), and the
//! handle the agent holds (start, STOP, progress, summary).
//!
//! A round opens one session: HELLO/WELCOME, then (for `Mode::Delta`) a digest comparison,
//! then the planned chunks through the pipeline, then END/DONE.

mod adapt;
pub(crate) mod connect;
mod delta;
mod pipeline;
mod plan;
mod verify;

pub use adapt::Compression;
pub use verify::{verify, verify_and_repair, Range, Verification, MAX_LISTED};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use blockrep_blockmap::ExtentSet;
use blockrep_disk::SourceDisk;
use blockrep_proto::frame::valid_block_size;
use blockrep_proto::{DiskAnnounce, Hello};
use tokio::sync::Notify;
use tracing::{info, warn};

use connect::Link;

use crate::progress::{Progress, ProgressSnapshot};
use crate::throttle::Throttle;
use crate::Error;

/// Default chunk size.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Default window: raw bytes read but not yet durable on the target.
pub const DEFAULT_WINDOW: u64 = 64 << 20;
/// Default TLS connections per round.
pub const DEFAULT_STREAMS: usize = 1;
/// Most TLS connections per round.
pub const MAX_STREAMS: usize = 16;

/// Which blocks of a disk a round sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Partition tables and the blocks filesystems use (a full round). What cannot be mapped
    /// with certainty is sent whole.
    #[default]
    Used,
    /// Every block (a full round).
    Full,
    /// The ranges each disk's change set marks ([`SourceSpec::changed`]; a sync round).
    Bitmap,
    /// The ranges whose digests differ between source and target (a sync round without a
    /// change tracker).
    Delta,
}

impl Mode {
    /// The service's name for a round of this mode.
    pub fn subtask(self) -> &'static str {
        match self {
            Self::Used | Self::Full => "MIGRATE_LINUX_BLOCK",
            Self::Bitmap | Self::Delta => "SYNC_LINUX_BLOCK",
        }
    }
}

/// A source disk and the receiver disk id it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The receiver's disk id.
    pub id: String,
    /// The source file or block device.
    pub path: PathBuf,
    /// For [`Mode::Bitmap`]: the byte ranges that changed since the last round (from a change
    /// bitmap file, or the agent's own tracker).
    pub changed: Option<ExtentSet>,
}

impl SourceSpec {
    /// Source disk `path` sent to the receiver's disk `id`, whole plan (`changed` none).
    pub fn new(id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            id: id.into(),
            path: path.into(),
            changed: None,
        }
    }
}

/// Everything a transfer needs.
#[derive(Clone)]
pub struct SendConfig {
    /// `HOST[:PORT]` of the receiver; the port defaults to 8900.
    pub target: String,
    /// The name the receiver's certificate must carry; defaults to the host of `target`.
    pub server_name: Option<String>,
    /// TLS client configuration (trust anchors and the client certificate).
    pub tls: Arc<rustls::ClientConfig>,
    /// The disks to send.
    pub disks: Vec<SourceSpec>,
    /// Which blocks to send.
    pub mode: Mode,
    /// Chunk size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// The migration task id.
    pub session_id: String,
    /// Raw bytes in flight (read, not yet durable) at most.
    pub window: u64,
    /// Encoder threads.
    pub workers: usize,
    /// When chunks are compressed.
    pub compression: Compression,
    /// TLS connections a round sends its chunks over, 1 to [`MAX_STREAMS`]: several streams
    /// share the window, the rate limit and the progress, and spread the TLS work over
    /// cores and a long fat link's losses over connections. Hash-delta rounds and
    /// verifications use one.
    pub streams: usize,
    /// Time allowed to connect and complete the TLS handshake.
    pub connect_timeout: Duration,
    /// Time allowed without any answer from the receiver while it owes one.
    pub io_timeout: Duration,
    /// The task's speed limits and over-speed protection. Keep the `Arc` to change the rules
    /// while the transfer runs (`Throttle::set_rules`); share it between the rounds and
    /// streams of one task.
    pub limits: Arc<Throttle>,
    /// Reconnection after a dropped connection, a receiver restart or a busy receiver.
    pub retry: Retry,
}

impl SendConfig {
    /// A configuration with the defaults: used mode, 1 MiB chunks, 64 MiB window, one encoder
    /// per core, a session id made from the current time.
    pub fn new(
        target: impl Into<String>,
        tls: Arc<rustls::ClientConfig>,
        disks: Vec<SourceSpec>,
    ) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            target: target.into(),
            server_name: None,
            tls,
            disks,
            mode: Mode::Used,
            block_size: DEFAULT_BLOCK_SIZE,
            session_id: format!("blockrep-{}-{}", now.as_secs(), now.subsec_nanos()),
            window: DEFAULT_WINDOW,
            workers: thread::available_parallelism().map_or(2, |n| n.get()),
            compression: Compression::Auto,
            streams: DEFAULT_STREAMS,
            connect_timeout: Duration::from_secs(15),
            io_timeout: Duration::from_secs(120),
            limits: Throttle::new(blockrep_rate::Rules::unlimited()),
            retry: Retry::default(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if !valid_block_size(self.block_size) {
            return Err(Error::Config(format!(
                "block size {} is not a power of two from 4 KiB to 1 MiB",
                self.block_size
            )));
        }
        if self.disks.is_empty() {
            return Err(Error::Config("no disks to send".into()));
        }
        if self.disks.len() > usize::from(blockrep_proto::consts::MAX_DISKS) {
            return Err(Error::Config(format!(
                "{} disks in one session; at most {}",
                self.disks.len(),
                blockrep_proto::consts::MAX_DISKS
            )));
        }
        let ident = |s: &str, max| blockrep_proto::codec::is_identifier(s, max);
        for (i, d) in self.disks.iter().enumerate() {
            if !ident(&d.id, blockrep_proto::consts::MAX_DISK_ID_LEN) {
                return Err(Error::Config(format!(
                    "disk id {:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -",
                    d.id
                )));
            }
            if self.disks[..i].iter().any(|e| e.id == d.id) {
                return Err(Error::Config(format!("disk id {:?} is given twice", d.id)));
            }
        }
        if !ident(&self.session_id, blockrep_proto::consts::MAX_SESSION_ID_LEN) {
            return Err(Error::Config(format!(
                "session id {:?}: use 1 to 128 characters of A-Z a-z 0-9 . _ -",
                self.session_id
            )));
        }
        if !(1..=MAX_STREAMS).contains(&self.streams) {
            return Err(Error::Config(format!(
                "{} streams: use 1 to {MAX_STREAMS}",
                self.streams
            )));
        }
        Ok(())
    }
}

/// What a finished (or stopped) transfer did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SendSummary {
    /// `MIGRATE_LINUX_BLOCK` or `SYNC_LINUX_BLOCK`.
    pub subtask_name: &'static str,
    /// True when every planned chunk is durable on the target; false after a STOP.
    pub complete: bool,
    /// Raw bytes planned.
    pub total_bytes: u64,
    /// Raw bytes read from the sources.
    pub read_bytes: u64,
    /// Raw bytes sent.
    pub sent_bytes: u64,
    /// Raw bytes durable on the target.
    pub acked_bytes: u64,
    /// Bytes written to the connection.
    pub wire_bytes: u64,
    /// Raw bytes sent as zero chunks.
    pub zero_bytes: u64,
    /// Bytes of frames received (acknowledgements, digests): with `wire_bytes`, everything
    /// the session put on the network before TLS.
    pub received_bytes: u64,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Raw bytes planned but not durable (0 when complete).
    pub remaining_bytes: u64,
    /// Times the connection was lost and made again during the round.
    pub reconnects: u32,
    /// Per disk id, the planned ranges that are not durable on the target: what the next
    /// round must send as well (empty when complete).
    #[serde(skip)]
    pub remaining: Vec<(String, ExtentSet)>,
}

/// Shared between a running transfer and its handle: STOP and progress.
pub struct Control {
    stop: AtomicBool,
    notify: Notify,
    progress: Progress,
}

impl Control {
    /// A new control: running, counters at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            stop: AtomicBool::new(false),
            notify: Notify::new(),
            progress: Progress::new("MIGRATE_LINUX_BLOCK"),
        })
    }

    /// The service's STOP: finish what is in flight, end the session cleanly, return a summary
    /// with `complete: false`. Safe to call from any thread, any number of times.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
        self.notify.notify_one();
    }

    /// Has STOP been asked for?
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Progress now.
    pub fn progress(&self) -> ProgressSnapshot {
        self.progress.snapshot()
    }

    async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// A transfer running on its own thread, for callers that do not run tokio.
pub struct SendHandle {
    control: Arc<Control>,
    thread: Option<thread::JoinHandle<Result<SendSummary, Error>>>,
    /// Set, and notified, when the transfer has ended.
    ended: Arc<(Mutex<bool>, Condvar)>,
}

/// Starts a transfer on a thread of its own (with its own small tokio runtime).
pub fn start(config: SendConfig) -> SendHandle {
    let control = Control::new();
    let c = control.clone();
    let ended = Arc::new((Mutex::new(false), Condvar::new()));
    let signal = ended.clone();
    let thread = thread::Builder::new()
        .name("blockrep-send".into())
        .spawn(move || {
            // Whatever happens below, say when it is over (see `wait_for`).
            struct Ended(Arc<(Mutex<bool>, Condvar)>);
            impl Drop for Ended {
                fn drop(&mut self) {
                    *self.0 .0.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    self.0 .1.notify_all();
                }
            }
            let _ended = Ended(signal);
            // One stream runs best on this thread alone (no hand-offs between threads);
            // several get two threads, so their TLS work can run at once.
            let rt = if config.streams > 1 {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("blockrep-io")
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;
            rt.block_on(send(config, c))
        })
        .expect("spawning a thread");
    SendHandle {
        control,
        thread: Some(thread),
        ended,
    }
}

impl SendHandle {
    /// STOP: see [`Control::stop`].
    pub fn cancel(&self) {
        self.control.stop();
    }

    /// Progress now.
    pub fn progress(&self) -> ProgressSnapshot {
        self.control.progress()
    }

    /// The shared control, e.g. for a progress reporter thread.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// True once the transfer has ended (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until the transfer has ended or `timeout` has passed; whether it has ended. For
    /// a progress reporter that wakes every second but should not make a short transfer wait.
    pub fn wait_for(&self, timeout: Duration) -> bool {
        let (lock, cond) = &*self.ended;
        let ended = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (ended, _) = cond
            .wait_timeout_while(ended, timeout, |ended| !*ended)
            .unwrap_or_else(|e| e.into_inner());
        *ended
    }

    /// Waits for the end of the transfer.
    pub fn wait(mut self) -> Result<SendSummary, Error> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Transport("the transfer thread panicked".into())),
            None => Err(Error::Transport(
                "the transfer was already waited for".into(),
            )),
        }
    }
}

/// Runs one round to its end: every planned chunk durable (`complete`), or stopped by
/// [`Control::stop`], or an error.
pub async fn send(config: SendConfig, control: Arc<Control>) -> Result<SendSummary, Error> {
    config.validate()?;
    let started = Instant::now();
    let progress = &control.progress;
    progress.set_subtask(config.mode.subtask());
    progress.measure_socket(config.limits.written());
    let (sources, plans) = open_and_plan(&config, None).await?;
    // A delta's total grows as the comparison finds what differs.
    let scope = if config.mode == Mode::Delta {
        pipeline::Scope::Delta
    } else {
        progress
            .total
            .store(plans.iter().map(ExtentSet::total).sum(), Relaxed);
        progress.planned.store(true, Relaxed);
        pipeline::Scope::Chunks
    };
    let round = run(&config, &control, &sources, &plans, scope).await?;
    let remaining: Vec<(String, ExtentSet)> = config
        .disks
        .iter()
        .zip(plans.iter().zip(&round.durable))
        .map(|(spec, (plan, durable))| (spec.id.clone(), plan.subtract(durable)))
        .filter(|(_, rest)| !rest.is_empty())
        .collect();
    let s = progress.snapshot();
    let summary = SendSummary {
        subtask_name: config.mode.subtask(),
        complete: round.complete,
        total_bytes: s.totalsize,
        read_bytes: s.read_bytes,
        sent_bytes: s.sent_bytes,
        acked_bytes: s.replicatesize,
        wire_bytes: s.wire_bytes,
        zero_bytes: s.zero_bytes,
        received_bytes: s.received_bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
        remaining_bytes: remaining.iter().map(|(_, r)| r.total()).sum(),
        reconnects: round.reconnects,
        remaining,
    };
    if summary.complete && summary.remaining_bytes != 0 {
        warn!(
            remaining = summary.remaining_bytes,
            "complete, but some planned ranges were not acknowledged"
        );
    }
    info!(
        complete = summary.complete,
        sent = summary.sent_bytes,
        wire = summary.wire_bytes,
        "round ended"
    );
    Ok(summary)
}

/// Opens the source disks and plans what the round covers: `plans` if given, else by the
/// mode (reading disk metadata, off the reactor).
async fn open_and_plan(
    config: &SendConfig,
    plans: Option<Vec<ExtentSet>>,
) -> Result<(Vec<Arc<SourceDisk>>, Vec<ExtentSet>), Error> {
    let mut sources = Vec::with_capacity(config.disks.len());
    for spec in &config.disks {
        let source = SourceDisk::open(&spec.path)?;
        if source.size() == 0 {
            return Err(Error::Config(format!(
                "source disk {} ({}) is empty",
                spec.id,
                spec.path.display()
            )));
        }
        if let Some(why) = source.direct_unavailable() {
            info!(
                "source disk {} ({}): reading through the page cache (dropping what was read), \
                 since {why}",
                spec.id,
                spec.path.display()
            );
        }
        sources.push(Arc::new(source));
    }
    if let Some(plans) = plans {
        return Ok((sources, plans));
    }
    let plans = {
        let (sources, config) = (sources.clone(), config.clone());
        tokio::task::spawn_blocking(move || {
            sources
                .iter()
                .zip(&config.disks)
                .map(|(source, spec)| plan::plan_disk(config.mode, source, spec))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Error::Config(format!("planning failed: {e}")))??
    };
    Ok((sources, plans))
}

/// What a round did, over all its connections.
struct Round {
    complete: bool,
    /// Per disk: what is known durable on the target (acknowledged, held by its journal, or
    /// compared the same).
    durable: Vec<ExtentSet>,
    /// `Scope::Compare`: per disk, what differs.
    found: Vec<ExtentSet>,
    reconnects: u32,
}

/// A round's session(s): connects, streams, and after a lost connection reconnects (by
/// `config.retry`) and carries on with what is not yet durable.
async fn run(
    config: &SendConfig,
    control: &Arc<Control>,
    sources: &[Arc<SourceDisk>],
    plans: &[ExtentSet],
    scope: pipeline::Scope,
) -> Result<Round, Error> {
    let hello = Hello {
        version_min: 0,
        version_max: 0,
        session_id: config.session_id.clone(),
        agent_version: crate::VERSION.into(),
        disks: config
            .disks
            .iter()
            .zip(sources)
            .map(|(spec, source)| DiskAnnounce {
                id: spec.id.clone(),
                size: source.size(),
                block_size: config.block_size,
            })
            .collect(),
        verify: matches!(scope, pipeline::Scope::Compare),
        join: false,
        netcheck: false,
    };
    let mut round = Round {
        complete: false,
        durable: vec![ExtentSet::new(); plans.len()],
        found: vec![ExtentSet::new(); plans.len()],
        reconnects: 0,
    };
    let mut backoff = Backoff::new(&config.retry);
    let mut connected = false;
    loop {
        let e = match attempt(config, control, &hello, sources, plans, scope, &mut round).await {
            Ok(()) => return Ok(round),
            Err(e) => e,
        };
        // A receiver that cannot be reached at all is a setup problem, said at once; one that
        // goes away after a session was established is reconnected to.
        let refused = matches!(e, Error::Connect { .. });
        connected |= !refused;
        let delay = match backoff.next() {
            Some(d) if e.retryable() && connected && !control.is_stopped() => d,
            _ => return Err(e),
        };
        round.reconnects += 1;
        warn!(
            "{}; reconnecting in {:.1} s (reconnection {}, giving up {} s after the first)",
            e.user_line(),
            delay.as_secs_f64(),
            round.reconnects,
            config.retry.total.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = control.stopped() => return Ok(round),
        }
    }
}

/// One connection's worth of a round: HELLO/WELCOME, then streaming what is not yet durable.
/// `round` grows on every path.
async fn attempt(
    config: &SendConfig,
    control: &Arc<Control>,
    hello: &Hello,
    sources: &[Arc<SourceDisk>],
    plans: &[ExtentSet],
    scope: pipeline::Scope,
    round: &mut Round,
) -> Result<(), Error> {
    let progress = &control.progress;
    let link = Link::open(config, hello.clone(), progress.received.clone()).await?;
    // What the receiver already holds for this session (its journal) need not be sent again;
    // a comparison compares everything.
    if !matches!(scope, pipeline::Scope::Compare) {
        for ((plan, known), held) in plans
            .iter()
            .zip(round.durable.iter_mut())
            .zip(&link.welcome.held)
        {
            let held: ExtentSet = held
                .iter()
                .map(|e| blockrep_blockmap::Extent::new(e.offset, e.len))
                .collect();
            let new = held.intersect(plan).subtract(known);
            // Held ranges count as replicated where the total is the whole plan (a delta's
            // total is what differs, which held ranges are not part of).
            if config.mode != Mode::Delta {
                progress.acked.fetch_add(new.total(), Relaxed);
            }
            known.union(&new);
        }
    }
    let todo: Vec<ExtentSet> = plans
        .iter()
        .zip(&round.durable)
        .map(|(plan, known)| plan.subtract(known))
        .collect();
    // More streams join the session now that it is open.
    let mut links = vec![link];
    if matches!(scope, pipeline::Scope::Chunks) {
        let join = Hello {
            join: true,
            netcheck: false,
            ..hello.clone()
        };
        for _ in 1..config.streams {
            links.push(Link::open(config, join.clone(), progress.received.clone()).await?);
        }
    }
    let streamed = pipeline::stream(
        links,
        sources,
        &todo,
        scope,
        config,
        control,
        &mut round.durable,
    )
    .await?;
    round.complete = streamed.complete;
    for (all, found) in round.found.iter_mut().zip(&streamed.found) {
        all.union(found);
    }
    Ok(())
}

/// The session id of a round derived from a migration's: `base` + `suffix`, `base` shortened
/// (at a character boundary) so the result stays within the protocol's length. A `base` that
/// is not a valid id stays invalid, and the round's validation says so.
pub(crate) fn derived_session_id(base: &str, suffix: &str) -> String {
    let mut end = base
        .len()
        .min(blockrep_proto::consts::MAX_SESSION_ID_LEN.saturating_sub(suffix.len()));
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

/// Reconnection policy: exponential backoff with jitter, within a total time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Time after the first failure within which reconnections are tried; zero: never.
    pub total: Duration,
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Retry {
    /// Reconnect for up to 15 minutes, waiting 1 s, 2 s, 4 s ... up to 60 s between tries.
    fn default() -> Self {
        Self {
            total: Duration::from_secs(15 * 60),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// The delays of one round's reconnections.
struct Backoff<'a> {
    retry: &'a Retry,
    next: Duration,
    deadline: Option<Instant>,
}

impl<'a> Backoff<'a> {
    fn new(retry: &'a Retry) -> Self {
        Self {
            retry,
            next: retry.initial,
            deadline: None,
        }
    }

    /// The delay before the next try, or `None` once the total time is spent. Each delay is
    /// the nominal one (doubling up to the max) times a random factor in [0.5, 1.0], so many
    /// agents cut off at once do not reconnect in step.
    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let deadline = *self.deadline.get_or_insert(now + self.retry.total);
        let left = deadline.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        let nominal = self.next.min(self.retry.max);
        self.next = nominal.saturating_mul(2);
        let jittered = nominal.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        Some(jittered.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_session_ids_stay_within_the_limit() {
        assert_eq!(derived_session_id("task-7", ".r2"), "task-7.r2");
        let long = "x".repeat(128);
        let id = derived_session_id(&long, ".r12");
        assert_eq!(id.len(), 128);
        assert!(id.ends_with("x.r12"));
        // Not an identifier, but no panic on a character boundary; validation refuses it.
        let odd = "é".repeat(100);
        assert!(derived_session_id(&odd, ".repair").len() <= 128);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_max_within_the_total() {
        let retry = Retry {
            total: Duration::from_secs(3600),
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut b = Backoff::new(&retry);
        let delays: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
        for (i, d) in delays.iter().enumerate() {
            let nominal = Duration::from_millis(100 << i).min(retry.max);
            assert!(*d >= nominal / 2 && *d <= nominal, "{i}: {d:?}");
        }
        let never = Retry {
            total: Duration::ZERO,
            ..retry
        };
        assert_eq!(Backoff::new(&never).next(), None);
    }
}
