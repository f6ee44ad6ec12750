//! The sender: reads source disks, encodes chunks on worker threads, streams them over TLS.
//!
//! ```text
//! reader thread ──(jobs)──► encoder workers ──(encoded)──► async loop ──► TLS
//!  pread, window                lz4 + blake3                   ▲ ACK frames release the window
//! ```
//!
//! Memory is bounded by the queues between the stages (a few chunks each) and by the window of
//! raw bytes read but not yet acknowledged as durable, whatever the disk size. Disk reads,
//! compression and hashing never run on the async reactor.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use blockrep_chunk::Encoding;
use blockrep_disk::SourceDisk;
use blockrep_proto::frame::{encode_data_head, valid_block_size};
use blockrep_proto::{DiskAnnounce, Frame, Hello, SenderEvent, SenderSession, Sent};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::error::sanitize;
use crate::framed::{write_frame, FrameReader, ReadError};
use crate::progress::{Progress, ProgressSnapshot};
use crate::{Error, DEFAULT_PORT};

/// Default chunk size.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Default window: raw bytes read but not yet durable on the target.
pub const DEFAULT_WINDOW: u64 = 64 << 20;

/// Which blocks of a disk to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Partition tables and the blocks filesystems use. Until block maps exist this reads the
    /// whole disk, with a notice.
    #[default]
    Used,
    /// Every block.
    Full,
}

/// A source disk and the receiver disk id it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The receiver's disk id.
    pub id: String,
    /// The source file or block device.
    pub path: PathBuf,
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
    /// Time allowed to connect and complete the TLS handshake.
    pub connect_timeout: Duration,
    /// Time allowed without any answer from the receiver while it owes one.
    pub io_timeout: Duration,
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
            connect_timeout: Duration::from_secs(15),
            io_timeout: Duration::from_secs(120),
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
        Ok(())
    }
}

/// What a finished (or stopped) transfer did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SendSummary {
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
    /// Wall time.
    pub elapsed_ms: u64,
}

/// Shared between a running transfer and its handle: STOP and progress.
pub struct Control {
    stop: AtomicBool,
    notify: Notify,
    progress: Progress,
}

impl Control {
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
}

/// Starts a transfer on a thread of its own (with its own small tokio runtime).
pub fn start(config: SendConfig) -> SendHandle {
    let control = Control::new();
    let c = control.clone();
    let thread = thread::Builder::new()
        .name("blockrep-send".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;
            rt.block_on(send(config, c))
        })
        .expect("spawning a thread");
    SendHandle {
        control,
        thread: Some(thread),
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

/// `host:port` with the default port added, and the host part for certificate checks.
fn split_target(target: &str) -> (String, String) {
    // [v6]:port, [v6], v4:port, name:port, v4, name, bare v6
    if let Some(rest) = target.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once(']') {
            let port = port.strip_prefix(':').unwrap_or("");
            let port = if port.is_empty() {
                DEFAULT_PORT.to_string()
            } else {
                port.to_owned()
            };
            return (format!("[{host}]:{port}"), host.to_owned());
        }
    }
    if target.matches(':').count() > 1 {
        return (format!("[{target}]:{DEFAULT_PORT}"), target.to_owned());
    }
    match target.rsplit_once(':') {
        Some((host, _port)) => (target.to_owned(), host.to_owned()),
        None => (format!("{target}:{DEFAULT_PORT}"), target.to_owned()),
    }
}

/// Connects and authenticates: TCP (`SMS.1807` on failure), then TLS 1.3 (`SMS.0304`).
pub(crate) async fn connect(
    target: &str,
    server_name: Option<&str>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, Error> {
    let (addr, host) = split_target(target);
    let name = server_name.unwrap_or(&host).to_owned();
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| Error::Config(format!("{name:?} is not a valid server name")))?;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| Error::Connect {
            addr: addr.clone(),
            reason: format!("no answer within {} s", timeout.as_secs()),
        })?
        .map_err(|e| Error::Connect {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio::time::timeout(timeout, TlsConnector::from(tls).connect(server_name, tcp))
        .await
        .map_err(|_| Error::Tls {
            peer: addr.clone(),
            reason: format!("handshake not finished within {} s", timeout.as_secs()),
        })?
        .map_err(|e| Error::Tls {
            peer: addr.clone(),
            reason: tls_reason(&e),
        })?;
    Ok(stream)
}

/// The rustls error inside an I/O error, if any.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn tls_reason(e: &std::io::Error) -> String {
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(c)) => format!(
            "the receiver's certificate was refused ({c:?}); check --ca and --server-name"
        ),
        Some(rustls::Error::AlertReceived(a)) => format!(
            "the receiver refused this client's certificate (alert {a:?}); check --cert/--key and the receiver's --client-ca"
        ),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// Maps a failure to read the receiver's frames to the error a user should see.
fn read_failure(e: ReadError, peer: &str) -> Error {
    match e {
        ReadError::Decode(d) => Error::Protocol(d.into()),
        ReadError::Io(io) if rustls_error(&io).is_some() => Error::Tls {
            peer: peer.to_owned(),
            reason: tls_reason(&io),
        },
        ReadError::Io(io) => Error::Transport(format!("reading from the receiver {peer}: {io}")),
    }
}

/// The window: raw bytes read but not yet acknowledged. The reader thread blocks on it.
struct Window {
    state: Mutex<(u64, bool)>,
    cond: Condvar,
}

impl Window {
    fn new(bytes: u64) -> Self {
        Self {
            state: Mutex::new((bytes, false)),
            cond: Condvar::new(),
        }
    }

    /// Takes `n` bytes of window, waiting for them; false once closed.
    fn acquire(&self, n: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.1 {
                return false;
            }
            if s.0 >= n {
                s.0 -= n;
                return true;
            }
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn release(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += n;
        self.cond.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.cond.notify_all();
    }
}

/// A chunk read from a disk, on its way to an encoder.
struct Job {
    disk: u16,
    offset: u64,
    raw: Vec<u8>,
}

/// A chunk ready to go on the wire.
struct Encoded {
    disk: u16,
    offset: u64,
    raw: Vec<u8>,
    encoding: Encoding,
    digest: blockrep_chunk::Digest,
    /// The lz4 payload, for `Encoding::Lz4`.
    compressed: Option<Vec<u8>>,
}

impl Encoded {
    fn payload(&self) -> &[u8] {
        match self.encoding {
            Encoding::Raw => &self.raw,
            Encoding::Lz4 => self.compressed.as_deref().unwrap_or_default(),
            Encoding::Zero => &[],
        }
    }
}

/// Reusable buffers, so steady state allocates nothing per chunk.
#[derive(Clone)]
struct Pool {
    tx: crossbeam_channel::Sender<Vec<u8>>,
    rx: crossbeam_channel::Receiver<Vec<u8>>,
}

impl Pool {
    fn new(max: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(max);
        Self { tx, rx }
    }

    fn take(&self) -> Vec<u8> {
        self.rx.try_recv().unwrap_or_default()
    }

    fn give(&self, buf: Vec<u8>) {
        let _ = self.tx.try_send(buf);
    }
}

/// The chunks to send: each disk in full, in block-size pieces.
fn plan(sizes: &[u64], block_size: u32) -> impl Iterator<Item = (u16, u64, u32)> + '_ {
    let bs = u64::from(block_size);
    sizes.iter().enumerate().flat_map(move |(disk, &size)| {
        (0..size.div_ceil(bs)).map(move |i| {
            let offset = i * bs;
            (disk as u16, offset, (size - offset).min(bs) as u32)
        })
    })
}

/// Runs a transfer to its end: every chunk durable (`complete`), or stopped by
/// [`Control::stop`], or an error.
pub async fn send(config: SendConfig, control: Arc<Control>) -> Result<SendSummary, Error> {
    config.validate()?;
    let started = Instant::now();
    if config.mode == Mode::Used {
        warn!("--mode used: used-block maps are not available in this version yet; reading every block (as --mode full)");
    }
    let mut sources = Vec::with_capacity(config.disks.len());
    for spec in &config.disks {
        sources.push(Arc::new(SourceDisk::open(&spec.path)?));
    }
    let sizes: Vec<u64> = sources.iter().map(|s| s.size()).collect();
    for (spec, size) in config.disks.iter().zip(&sizes) {
        if *size == 0 {
            return Err(Error::Config(format!(
                "source disk {} ({}) is empty",
                spec.id,
                spec.path.display()
            )));
        }
    }
    let progress = &control.progress;
    progress.total.store(sizes.iter().sum(), Relaxed);

    let stream = connect(
        &config.target,
        config.server_name.as_deref(),
        config.tls.clone(),
        config.connect_timeout,
    )
    .await?;
    let peer = config.target.clone();
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = FrameReader::new(rd);

    let mut session = SenderSession::new(Hello {
        version_min: 0,
        version_max: 0,
        session_id: config.session_id.clone(),
        agent_version: crate::VERSION.into(),
        disks: config
            .disks
            .iter()
            .zip(&sizes)
            .map(|(spec, &size)| DiskAnnounce {
                id: spec.id.clone(),
                size,
                block_size: config.block_size,
            })
            .collect(),
    });
    write_frame(&mut wr, &session.hello())
        .await
        .map_err(|e| Error::Transport(format!("sending HELLO to {peer}: {e}")))?;
    let welcome = tokio::time::timeout(config.io_timeout, reader.read_frame())
        .await
        .map_err(|_| {
            Error::Transport(format!(
                "no answer to HELLO from {peer} within {} s",
                config.io_timeout.as_secs()
            ))
        })?
        .map_err(|e| read_failure(e, &peer))?
        .ok_or_else(|| Error::Transport(format!("{peer} closed the connection after HELLO")))?;
    match session.handle_frame(welcome)? {
        SenderEvent::Welcome(w) => {
            debug!(version = w.version, receiver = %sanitize(&w.receiver_version), "session accepted");
            if w.held.iter().any(|h| !h.is_empty()) {
                warn!("the receiver holds data from an earlier attempt; this version sends everything again");
            }
        }
        SenderEvent::PeerError(e) => return Err(peer_error(e)),
        other => unreachable!("the session only yields WELCOME or an error here, got {other:?}"),
    }

    // Frames from the receiver arrive on their own task, so ACKs are taken while we write.
    let (frames_tx, mut frames_rx) = mpsc::channel(64);
    let reader_task = tokio::spawn(async move {
        loop {
            let r = reader.read_frame().await;
            let last = !matches!(r, Ok(Some(_)));
            if frames_tx.send(r).await.is_err() || last {
                break;
            }
        }
    });

    let window = Arc::new(Window::new(config.window.max(u64::from(config.block_size))));
    let failure: Arc<Mutex<Option<Error>>> = Arc::default();
    let workers = config.workers.max(1);
    let raw_pool = Pool::new(4 * workers + 4);
    let lz4_pool = Pool::new(4 * workers + 4);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(2 * workers);
    let (enc_tx, mut enc_rx) = mpsc::channel::<Encoded>(2 * workers);

    let reader_thread = {
        let (window, failure, pool, control) = (
            window.clone(),
            failure.clone(),
            raw_pool.clone(),
            control.clone(),
        );
        let sources = sources.clone();
        let sizes = sizes.clone();
        let block_size = config.block_size;
        thread::Builder::new()
            .name("blockrep-read".into())
            .spawn(move || {
                for (disk, offset, len) in plan(&sizes, block_size) {
                    if control.is_stopped() || !window.acquire(u64::from(len)) {
                        return;
                    }
                    let mut raw = pool.take();
                    raw.resize(len as usize, 0);
                    let source = &sources[usize::from(disk)];
                    if let Err(e) = source.read_exact_at(&mut raw, offset) {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.into());
                        return;
                    }
                    source.drop_cache(offset, u64::from(len));
                    control.progress.read.fetch_add(u64::from(len), Relaxed);
                    if job_tx.send(Job { disk, offset, raw }).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning a thread")
    };
    let encoders: Vec<_> = (0..workers)
        .map(|i| {
            let (job_rx, enc_tx, lz4_pool) = (job_rx.clone(), enc_tx.clone(), lz4_pool.clone());
            thread::Builder::new()
                .name(format!("blockrep-enc{i}"))
                .spawn(move || {
                    let mut compressed = lz4_pool.take();
                    for job in job_rx {
                        let e = blockrep_chunk::encode(&job.raw, &mut compressed);
                        let compressed = (e.encoding == Encoding::Lz4)
                            .then(|| std::mem::replace(&mut compressed, lz4_pool.take()));
                        let out = Encoded {
                            disk: job.disk,
                            offset: job.offset,
                            raw: job.raw,
                            encoding: e.encoding,
                            digest: e.digest,
                            compressed,
                        };
                        if enc_tx.blocking_send(out).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawning a thread")
        })
        .collect();
    drop((job_rx, enc_tx));

    let stream_result = stream_chunks(
        &mut session,
        &mut wr,
        &mut enc_rx,
        &mut frames_rx,
        &window,
        &control,
        &raw_pool,
        &lz4_pool,
        &config,
    )
    .await;
    // Whatever happened, let the pipeline threads finish: close the window and the queue.
    window.close();
    drop(enc_rx);
    let _ = reader_thread.join();
    for e in encoders {
        let _ = e.join();
    }
    let read_failure_ = failure.lock().unwrap_or_else(|p| p.into_inner()).take();

    let result = match (stream_result, read_failure_) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => {
            let _ = write_frame(&mut wr, &session.abort(e.code(), &e.to_string())).await;
            Err(e)
        }
        (Ok(()), None) => {
            finish(
                &mut session,
                &mut wr,
                &mut frames_rx,
                &window,
                &control,
                &config,
            )
            .await
        }
    };
    reader_task.abort();
    let complete = result?;
    let _ = wr.shutdown().await;
    let s = control.progress.snapshot();
    let summary = SendSummary {
        complete,
        total_bytes: s.totalsize,
        read_bytes: s.read_bytes,
        sent_bytes: s.sent_bytes,
        acked_bytes: s.replicatesize,
        wire_bytes: s.wire_bytes,
        zero_bytes: s.zero_bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    info!(?summary, "transfer ended");
    Ok(summary)
}

fn peer_error(e: blockrep_proto::ErrorFrame) -> Error {
    Error::Peer {
        side: "receiver",
        code: sanitize(&e.code),
        message: sanitize(&e.message),
    }
}

type Writer = WriteHalf<TlsStream<TcpStream>>;
type FrameRx = mpsc::Receiver<Result<Option<Frame>, ReadError>>;

/// Handles one frame from the receiver while streaming or ending.
fn on_frame(
    session: &mut SenderSession,
    frame: Result<Option<Frame>, ReadError>,
    window: &Window,
    progress: &Progress,
    peer: &str,
) -> Result<Option<blockrep_proto::Done>, Error> {
    let frame = frame
        .map_err(|e| read_failure(e, peer))?
        .ok_or_else(|| Error::Transport(format!("the receiver {peer} closed the connection")))?;
    match session.handle_frame(frame)? {
        SenderEvent::Acked(sent) => {
            let bytes: u64 = sent.iter().map(|s| u64::from(s.raw_len)).sum();
            window.release(bytes);
            progress.acked.fetch_add(bytes, Relaxed);
            Ok(None)
        }
        SenderEvent::Done(done) => Ok(Some(done)),
        SenderEvent::PeerError(e) => Err(peer_error(e)),
        SenderEvent::Welcome(_) => unreachable!("the session refuses a second WELCOME"),
    }
}

/// Streams every encoded chunk. After a failed write the receiver has usually said why before
/// it closed: prefer its ERROR (and take its last ACKs) to a bare "broken pipe".
#[allow(clippy::too_many_arguments)]
async fn stream_chunks(
    session: &mut SenderSession,
    wr: &mut Writer,
    enc_rx: &mut mpsc::Receiver<Encoded>,
    frames_rx: &mut FrameRx,
    window: &Window,
    control: &Control,
    raw_pool: &Pool,
    lz4_pool: &Pool,
    config: &SendConfig,
) -> Result<(), Error> {
    let result = stream_loop(
        session, wr, enc_rx, frames_rx, window, control, raw_pool, lz4_pool, config,
    )
    .await;
    let Err(fallback @ Error::Transport(_)) = result else {
        return result;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, frames_rx.recv()).await {
        match on_frame(session, frame, window, &control.progress, &config.target) {
            Ok(_) => continue,
            Err(e @ Error::Peer { .. }) => return Err(e),
            Err(_) => break,
        }
    }
    Err(fallback)
}

#[allow(clippy::too_many_arguments)]
async fn stream_loop(
    session: &mut SenderSession,
    wr: &mut Writer,
    enc_rx: &mut mpsc::Receiver<Encoded>,
    frames_rx: &mut FrameRx,
    window: &Window,
    control: &Control,
    raw_pool: &Pool,
    lz4_pool: &Pool,
    config: &SendConfig,
) -> Result<(), Error> {
    let peer = config.target.as_str();
    let progress = &control.progress;
    let mut last_ack = Instant::now();
    let transport =
        |e: std::io::Error| Error::Transport(format!("sending to the receiver {peer}: {e}"));
    loop {
        let owed = session.unacked().next().is_some();
        let deadline = tokio::time::Instant::from_std(last_ack + config.io_timeout);
        tokio::select! {
            biased;
            frame = frames_rx.recv() => {
                let frame = frame.unwrap_or_else(|| Ok(None));
                if let Some(done) = on_frame(session, frame, window, progress, peer)? {
                    // DONE before END is refused by the session; this cannot be reached.
                    unreachable!("DONE while streaming: {done:?}");
                }
                last_ack = Instant::now();
            }
            _ = control.stopped(), if !window_closed(window) => {
                info!("STOP requested: finishing the chunks in flight");
                window.close();
            }
            chunk = enc_rx.recv() => {
                let Some(chunk) = chunk else { return Ok(()) };
                let payload = chunk.payload();
                let head = encode_data_head(chunk.disk, chunk.encoding, chunk.offset, chunk.raw.len() as u32, &chunk.digest, payload.len());
                wr.write_all(&head).await.map_err(transport)?;
                wr.write_all(payload).await.map_err(transport)?;
                if !owed {
                    last_ack = Instant::now();
                }
                session.record_data(Sent { disk: chunk.disk, offset: chunk.offset, raw_len: chunk.raw.len() as u32 });
                let raw_len = chunk.raw.len() as u64;
                progress.sent.fetch_add(raw_len, Relaxed);
                progress.wire.fetch_add((head.len() + payload.len()) as u64, Relaxed);
                if chunk.encoding == Encoding::Zero {
                    progress.zero.fetch_add(raw_len, Relaxed);
                }
                raw_pool.give(chunk.raw);
                if let Some(c) = chunk.compressed {
                    lz4_pool.give(c);
                }
                if enc_rx.is_empty() {
                    wr.flush().await.map_err(transport)?;
                }
            }
            _ = tokio::time::sleep_until(deadline), if owed => {
                return Err(Error::Transport(format!(
                    "the receiver {peer} acknowledged nothing for {} s", config.io_timeout.as_secs()
                )));
            }
        }
    }
}

fn window_closed(window: &Window) -> bool {
    window.state.lock().unwrap_or_else(|e| e.into_inner()).1
}

/// Sends END and waits for DONE. Returns whether the transfer was complete.
async fn finish(
    session: &mut SenderSession,
    wr: &mut Writer,
    frames_rx: &mut FrameRx,
    window: &Window,
    control: &Control,
    config: &SendConfig,
) -> Result<bool, Error> {
    let peer = config.target.as_str();
    let complete = !control.is_stopped();
    write_frame(wr, &session.end(complete))
        .await
        .map_err(|e| Error::Transport(format!("sending END to {peer}: {e}")))?;
    loop {
        let frame = tokio::time::timeout(config.io_timeout, frames_rx.recv())
            .await
            .map_err(|_| {
                Error::Transport(format!(
                    "no answer to END from {peer} within {} s",
                    config.io_timeout.as_secs()
                ))
            })?
            .unwrap_or_else(|| Ok(None));
        if let Some(done) = on_frame(session, frame, window, &control.progress, peer)? {
            debug!(?done, "receiver summary");
            return Ok(complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_get_the_default_port() {
        assert_eq!(split_target("host"), ("host:8900".into(), "host".into()));
        assert_eq!(split_target("host:99"), ("host:99".into(), "host".into()));
        assert_eq!(
            split_target("127.0.0.1"),
            ("127.0.0.1:8900".into(), "127.0.0.1".into())
        );
        assert_eq!(split_target("[::1]:7"), ("[::1]:7".into(), "::1".into()));
        assert_eq!(split_target("[::1]"), ("[::1]:8900".into(), "::1".into()));
        assert_eq!(split_target("::1"), ("[::1]:8900".into(), "::1".into()));
    }

    #[test]
    fn plan_covers_every_byte_once() {
        let chunks: Vec<_> = plan(&[10_000, 4096], 4096).collect();
        assert_eq!(
            chunks,
            vec![(0, 0, 4096), (0, 4096, 4096), (0, 8192, 1808), (1, 0, 4096)]
        );
    }

    #[test]
    fn window_blocks_until_released() {
        let w = Arc::new(Window::new(10));
        assert!(w.acquire(10));
        let w2 = w.clone();
        let t = thread::spawn(move || w2.acquire(5));
        w.release(5);
        assert!(t.join().unwrap());
        w.close();
        assert!(!w.acquire(1));
    }
}
