//! The receiver: accepts mutually authenticated TLS sessions and writes verified chunks to the
//! target disks it was configured with, and to nothing else.
//!
//! Per connection, a task reads frames and a pool of writer threads verifies (lz4, blake3) and
//! writes them; what is durable (fdatasync'ed) is reported and only then acknowledged. A
//! session may come over several connections (streams): the first opens it and claims its
//! disks, the others join it (HELLO JOIN) and write to the same disks and journal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use blockrep_blockmap::ExtentSet;
use blockrep_disk::TargetDisk;
use blockrep_proto::{ReceiverEvent, ReceiverSession};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

mod hasher;
pub(crate) mod journal;
mod live;
mod writer;

use hasher::Hasher;
use journal::{DiskLayout, Header, Journal, JournalDir};
use writer::{write_loop, SharedJournal, WriteMsg, WriterEvent};

use crate::error::{codes, sanitize};
use crate::framed::{write_frame, FrameReader, ReadError};
use crate::metrics::Metrics;
use crate::Error;

/// How long a failed session keeps reading (and discarding) after its ERROR, so the sender
/// gets to read the ERROR instead of a connection reset.
const LINGER: Duration = Duration::from_secs(2);
/// DATA frames queued between a connection's reader and its writer thread.
const WRITE_QUEUE: usize = 16;

/// How a receiver runs.
#[derive(Clone)]
pub struct ReceiverConfig {
    /// TLS configuration: certificate, key, and the CA clients must be issued by.
    pub tls: Arc<rustls::ServerConfig>,
    /// The only targets that can ever be written: disk id to path.
    pub disks: BTreeMap<String, PathBuf>,
    /// Stop after the first session (a connection that got past TLS and sent a HELLO).
    pub once: bool,
    /// Sessions at once; more are refused with a "busy" error.
    pub max_sessions: usize,
    /// Connections at once, including those still in the handshake; more are closed at once.
    pub max_connections: usize,
    /// Time a new connection has to finish TLS and send its HELLO.
    pub handshake_timeout: Duration,
    /// Time a session may go without a frame from its sender.
    pub idle_timeout: Duration,
    /// Where session journals are kept (what is durable per session), so a sender that
    /// reconnects after this receiver restarted is not asked again for what it already sent.
    /// `None`: no journals; a restarted receiver then takes every session from the start.
    pub state_dir: Option<PathBuf>,
    /// How long the journal of a finished session is kept (a late retry of it is then told it
    /// is all there).
    pub journal_retention: Duration,
    /// Where sessions, bytes, chunks, errors and write and sync latencies are counted (see
    /// [`crate::metrics`]); share it to read them while the receiver runs.
    pub metrics: Arc<Metrics>,
}

impl ReceiverConfig {
    /// A configuration with the defaults: 16 sessions, 64 connections, 10 s to say HELLO,
    /// 60 s idle.
    pub fn new(tls: Arc<rustls::ServerConfig>, disks: BTreeMap<String, PathBuf>) -> Self {
        Self {
            tls,
            disks,
            once: false,
            max_sessions: 16,
            max_connections: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            state_dir: None,
            journal_retention: Duration::from_secs(7 * 24 * 3600),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Checks that every configured target can be opened for writing and that the state
    /// directory (if any) is usable, so a bad path fails at start, not at the first session.
    pub fn check_disks(&self) -> Result<(), Error> {
        if let Some(dir) = &self.state_dir {
            JournalDir::open(dir)?;
        }
        if self.disks.is_empty() {
            return Err(Error::Config(
                "no --disk ID=PATH given: the receiver would have nothing to write".into(),
            ));
        }
        for path in self.disks.values() {
            TargetDisk::open(path)?;
        }
        Ok(())
    }
}

/// What one session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// The session id the sender gave.
    pub session_id: String,
    /// The sender's address.
    pub peer: SocketAddr,
    /// True when the sender sent everything it planned (END complete) and all of it is durable.
    pub complete: bool,
    /// DATA frames durable.
    pub frames: u64,
    /// Raw bytes durable.
    pub bytes: u64,
    /// Bytes written as data.
    pub data_bytes: u64,
    /// Bytes zeroed.
    pub zero_bytes: u64,
}

/// What [`serve`] did before it returned.
#[derive(Debug, Default)]
pub struct ServeOutcome {
    /// Sessions that ended well.
    pub succeeded: u64,
    /// Sessions that ended with an error.
    pub failed: u64,
    /// With `once`: the first session's result.
    pub first: Option<Result<SessionReport, String>>,
    /// More streams of sessions (HELLO JOIN) that ended well; a session's own figures are its
    /// first connection's.
    pub streams: u64,
    /// The raw bytes those streams made durable.
    pub stream_bytes: u64,
}

/// How a connection ended.
enum Ended {
    /// It never became a session (handshake failure, garbage, timeout before HELLO).
    NoSession,
    /// A session's first connection, or a verification.
    Session(Result<SessionReport, Error>),
    /// Another stream of a session.
    Stream(Result<SessionReport, Error>),
    /// A network check: counted in the metrics, not as the session `once` waits for.
    Check(Result<SessionReport, Error>),
}

struct Shared {
    config: ReceiverConfig,
    acceptor: TlsAcceptor,
    sessions: Arc<Semaphore>,
    busy_disks: Mutex<HashSet<String>>,
    live: live::Live,
    journals: Option<JournalDir>,
    /// Sessions open on their first connection, which more streams may join, by id.
    open: Mutex<HashMap<String, Arc<OpenSession>>>,
}

/// What a stream joining a session shares with the session's first connection.
struct OpenSession {
    client: [u8; 32],
    disks: Vec<DiskLayout>,
    targets: Vec<Arc<TargetDisk>>,
    journal: SharedJournal,
}

/// A session's place among the open ones; on drop it is removed (unless a newer connection
/// of the session replaced it) and its journal closed to joined streams.
struct OpenGuard<'a> {
    shared: &'a Shared,
    id: String,
    open: Arc<OpenSession>,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        if open
            .get(&self.id)
            .is_some_and(|o| Arc::ptr_eq(o, &self.open))
        {
            open.remove(&self.id);
        }
        *self.open.journal.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Runs a receiver on `listener` until `shutdown` resolves (then finishes in-flight writes,
/// acknowledges what is durable, tells the senders, and returns), or, with `once`, until the
/// first session ends.
pub async fn serve(
    listener: TcpListener,
    config: ReceiverConfig,
    shutdown: impl Future<Output = ()>,
) -> ServeOutcome {
    let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let journals = config.state_dir.as_deref().and_then(|dir| {
        JournalDir::open(dir)
            .map_err(|e| warn!("{e}; sessions will not be resumable after a restart"))
            .ok()
    });
    let shared = Arc::new(Shared {
        acceptor: TlsAcceptor::from(config.tls.clone()),
        sessions: Arc::new(Semaphore::new(config.max_sessions.max(1))),
        busy_disks: Mutex::new(HashSet::new()),
        live: live::Live::default(),
        journals,
        open: Mutex::new(HashMap::new()),
        config,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut outcome = ServeOutcome::default();
    tokio::pin!(shutdown);
    let mut clean = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = clean.tick() => {
                if let Some(dir) = &shared.journals {
                    let (dir, keep) = (dir.clone(), shared.config.journal_retention);
                    tokio::task::spawn_blocking(move || clean_journals(&dir, keep));
                }
            }
            _ = &mut shutdown => {
                info!("shutting down: finishing in-flight writes");
                break;
            }
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                shared.config.metrics.connection();
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    warn!(%peer, "too many connections; closing this one");
                    continue;
                };
                let (shared, stop_rx) = (shared.clone(), stop_rx.clone());
                tasks.spawn(async move {
                    let r = handle_connection(tcp, peer, shared, stop_rx).await;
                    drop(permit);
                    r
                });
            }
            Some(joined) = tasks.join_next() => {
                if let Some(result) = record(&mut outcome, &shared.config.metrics, joined) {
                    if shared.config.once {
                        outcome.first = Some(result);
                        break;
                    }
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        record(&mut outcome, &shared.config.metrics, joined);
    }
    outcome
}

/// Deletes the journals of sessions finished longer ago than `keep`.
fn clean_journals(dir: &JournalDir, keep: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match dir.clean(keep, now) {
        Ok(0) => {}
        Ok(n) => info!(
            "removed {n} journals of sessions finished more than {} s ago",
            keep.as_secs()
        ),
        Err(e) => warn!("{e}"),
    }
}

/// Counts how a connection ended, in `outcome` and in the metrics.
fn record(
    outcome: &mut ServeOutcome,
    metrics: &Metrics,
    joined: Result<Ended, tokio::task::JoinError>,
) -> Option<Result<SessionReport, String>> {
    match joined {
        Ok(Ended::Session(Ok(report))) => {
            outcome.succeeded += u64::from(report.complete);
            outcome.failed += u64::from(!report.complete);
            metrics.session_ended(report.complete, None);
            Some(Ok(report))
        }
        Ok(Ended::Session(Err(e))) => {
            outcome.failed += 1;
            metrics.session_ended(false, Some(e.code()));
            Some(Err(e.user_line()))
        }
        Ok(Ended::Check(r)) => {
            let code = r.as_ref().err().map(Error::code);
            metrics.session_ended(r.is_ok(), code);
            None
        }
        Ok(Ended::Stream(r)) => {
            if let Ok(report) = r {
                outcome.streams += 1;
                outcome.stream_bytes += report.bytes;
            }
            None
        }
        Ok(Ended::NoSession) => {
            metrics.handshake_failed();
            None
        }
        Err(e) => {
            warn!("a connection task failed: {e}");
            outcome.failed += 1;
            metrics.session_ended(false, Some(codes::RECEIVE));
            Some(Err(format!(
                "error {}: internal failure: {e}",
                codes::RECEIVE
            )))
        }
    }
}

type Writer = WriteHalf<TlsStream<TcpStream>>;

/// One connection: TLS, HELLO, then the session.
async fn handle_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Ended {
    let _ = tcp.set_nodelay(true);
    let hs_timeout = shared.config.handshake_timeout;
    let tls = match tokio::time::timeout(hs_timeout, shared.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            warn!(%peer, "TLS handshake failed: {e}");
            return Ended::NoSession;
        }
        Err(_) => {
            warn!(%peer, "TLS handshake not finished within {} s; closing", hs_timeout.as_secs());
            return Ended::NoSession;
        }
    };
    // Who the client is: only the certificate that started a session may resume it.
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map_or([0; 32], |c| *blake3::hash(c.as_ref()).as_bytes());
    let (rd, mut wr) = tokio::io::split(tls);
    let mut reader = FrameReader::new(rd);
    let mut session = ReceiverSession::new();
    let first = match tokio::time::timeout(hs_timeout, reader.read_frame()).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => {
            warn!(%peer, "closed before HELLO");
            return Ended::NoSession;
        }
        Ok(Err(e)) => {
            let e = read_error(e, peer);
            warn!(%peer, "before HELLO: {e}");
            send_error(&mut session, &mut wr, &e).await;
            return Ended::NoSession;
        }
        Err(_) => {
            warn!(%peer, "no HELLO within {} s; closing", hs_timeout.as_secs());
            return Ended::NoSession;
        }
    };
    let hello = match session.handle_frame(first) {
        Ok(ReceiverEvent::Hello(hello)) => hello,
        Ok(_) | Err(_) => {
            warn!(%peer, "the first frame is not a valid HELLO; closing");
            let e = Error::Config("the first frame must be a valid HELLO".into());
            send_error(&mut session, &mut wr, &e).await;
            return Ended::NoSession;
        }
    };
    let session_id = hello.session_id.clone();
    let (join, netcheck) = (hello.join, hello.netcheck);
    if join {
        info!(%peer, session = %session_id, "another stream of the session");
    } else {
        info!(%peer, session = %session_id, agent = %sanitize(&hello.agent_version), disks = hello.disks.len(), "session opened");
    }
    let result = run_session(
        &mut session,
        &mut reader,
        &mut wr,
        &shared,
        Client {
            addr: peer,
            cert,
            verify: hello.verify,
            join: hello.join,
        },
        &session_id,
        stop,
    )
    .await;
    match &result {
        Ok(r) if join => {
            info!(%peer, session = %session_id, bytes = r.bytes, "stream ended")
        }
        Ok(r) => {
            info!(%peer, session = %session_id, complete = r.complete, bytes = r.bytes, "session ended")
        }
        Err(e) => {
            warn!(%peer, session = %session_id, "session failed: {}", e.user_line());
            send_error(&mut session, &mut wr, e).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), wr.shutdown()).await;
    if result.is_err() {
        reader.drain(LINGER).await;
    }
    if join {
        Ended::Stream(result)
    } else if netcheck {
        Ended::Check(result)
    } else {
        Ended::Session(result)
    }
}

/// Tells the sender why the session ends; best effort, bounded in time.
async fn send_error(session: &mut ReceiverSession, wr: &mut Writer, e: &Error) {
    let frame = session.refuse(e.code(), &e.to_string());
    let _ = tokio::time::timeout(Duration::from_secs(5), write_frame(wr, &frame)).await;
}

fn read_error(e: ReadError, peer: SocketAddr) -> Error {
    match e {
        ReadError::Decode(d) => Error::Protocol(d.into()),
        ReadError::Io(io) => Error::Transport(format!("reading from the sender {peer}: {io}")),
    }
}

/// Marks disks as in use by one session; released on drop.
struct DiskClaim<'a> {
    shared: &'a Shared,
    ids: Vec<String>,
}

impl Drop for DiskClaim<'_> {
    fn drop(&mut self) {
        let mut busy = self
            .shared
            .busy_disks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            busy.remove(id);
        }
    }
}

/// Checks the announced disks against the configuration and opens the targets.
fn open_targets<'a>(
    shared: &'a Shared,
    session: &ReceiverSession,
) -> Result<(Vec<Arc<TargetDisk>>, DiskClaim<'a>), Error> {
    let mut claim = DiskClaim {
        shared,
        ids: Vec::new(),
    };
    let mut targets = Vec::new();
    for disk in session.disks() {
        let Some(path) = shared.config.disks.get(&disk.id) else {
            let known: Vec<&str> = shared.config.disks.keys().map(String::as_str).collect();
            return Err(Error::UnknownDisk {
                disk: disk.id.clone(),
                configured: known.join(", "),
            });
        };
        let fresh = shared
            .busy_disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(disk.id.clone());
        if !fresh {
            return Err(Error::DiskBusy {
                disk: disk.id.clone(),
            });
        }
        claim.ids.push(disk.id.clone());
        let mut target = TargetDisk::open(path)?;
        if target.size() < disk.size && target.kind() == blockrep_disk::DiskKind::File {
            // An image file grows (sparse) to the source's size: a target made too small, or
            // cut short since, is then written, compared and repaired like any other.
            warn!(
                disk = %disk.id,
                "target file {} is {} bytes, the source {}: growing it",
                path.display(),
                target.size(),
                disk.size
            );
            let grown = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(disk.size));
            if let Err(e) = grown {
                warn!(disk = %disk.id, "cannot grow {}: {e}", path.display());
            }
            target = TargetDisk::open(path)?;
        }
        if target.size() < disk.size {
            return Err(Error::DiskSize {
                disk: disk.id.clone(),
                source_size: disk.size,
                target: target.size(),
            });
        }
        if let Some(why) = target.direct_unavailable() {
            info!(
                disk = %disk.id,
                "writing {} through the page cache, since {why}",
                path.display()
            );
        }
        targets.push(Arc::new(target));
    }
    Ok((targets, claim))
}

fn layout(disks: &[blockrep_proto::DiskAnnounce]) -> Vec<DiskLayout> {
    disks
        .iter()
        .map(|d| DiskLayout {
            id: d.id.clone(),
            size: d.size,
            block_size: d.block_size,
        })
        .collect()
}

/// Only the client that started a session may take it up again, and only with its disks.
fn check_resumable(
    l: &journal::Loaded,
    session_id: &str,
    client: [u8; 32],
    disks: &[blockrep_proto::DiskAnnounce],
) -> Result<(), Error> {
    check_same(l.header.client, &l.header.disks, session_id, client, disks)
}

/// `client` with `disks` is the client that started session `session_id` (`started_by`),
/// with its disks (`started_with`).
fn check_same(
    started_by: [u8; 32],
    started_with: &[DiskLayout],
    session_id: &str,
    client: [u8; 32],
    disks: &[blockrep_proto::DiskAnnounce],
) -> Result<(), Error> {
    if started_by != client {
        return Err(Error::SessionOwner {
            session: session_id.into(),
        });
    }
    let now = layout(disks);
    if started_with != now {
        let describe = |l: &[DiskLayout]| {
            l.iter()
                .map(|d| format!("{} ({} bytes, block {})", d.id, d.size, d.block_size))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::SessionLayout {
            session: session_id.into(),
            journal: describe(started_with),
            hello: describe(&now),
        });
    }
    Ok(())
}

/// The session's journal: what it already holds, if it is resumed (only by the client that
/// started it, with the same disks), and the journal to record into. A journal that cannot be
/// read or written is no reason to refuse the session: it then just starts from nothing.
fn open_journal(
    dir: &JournalDir,
    session_id: &str,
    client: [u8; 32],
    disks: &[blockrep_proto::DiskAnnounce],
) -> Result<(Vec<Vec<blockrep_proto::Extent>>, Option<Journal>), Error> {
    let mut held = vec![Vec::new(); disks.len()];
    let loaded = dir.load(session_id).unwrap_or_else(|e| {
        warn!(session = %session_id, "{e}; starting the session afresh");
        None
    });
    let journal = match loaded {
        Some(l) => {
            check_resumable(&l, session_id, client, disks)?;
            // The largest ranges first, within what one WELCOME may list; the sender sends
            // whatever is not listed.
            let mut all: Vec<(usize, blockrep_proto::Extent)> = l
                .durable
                .iter()
                .enumerate()
                .flat_map(|(i, set)| {
                    set.iter().map(move |e| {
                        (
                            i,
                            blockrep_proto::Extent {
                                offset: e.offset,
                                len: e.len,
                            },
                        )
                    })
                })
                .collect();
            all.sort_by_key(|(_, e)| std::cmp::Reverse(e.len));
            all.truncate(blockrep_proto::consts::MAX_HELD_EXTENTS as usize);
            all.sort_by_key(|(i, e)| (*i, e.offset));
            for (i, e) in all {
                held[i].push(e);
            }
            info!(
                session = %session_id,
                held = l.durable.iter().map(ExtentSet::total).sum::<u64>(),
                "resuming the session from its journal"
            );
            dir.resume(&l)
        }
        None => dir.create(Header {
            session_id: session_id.into(),
            client,
            disks: layout(disks),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }),
    };
    let journal = journal
        .map_err(|e| warn!(session = %session_id, "{e}; the session runs without a journal"))
        .ok();
    Ok((held, journal))
}

/// The sender of a session: its address, the blake3 of its client certificate, and whether
/// it only verifies.
struct Client {
    addr: SocketAddr,
    cert: [u8; 32],
    verify: bool,
    /// Another stream of an open session (HELLO JOIN).
    join: bool,
}

async fn run_session(
    session: &mut ReceiverSession,
    reader: &mut FrameReader<tokio::io::ReadHalf<TlsStream<TcpStream>>>,
    wr: &mut Writer,
    shared: &Shared,
    client: Client,
    session_id: &str,
    stop: watch::Receiver<bool>,
) -> Result<SessionReport, Error> {
    let peer = client.addr;
    if client.join {
        return run_joined(session, reader, wr, shared, client, session_id, stop).await;
    }
    if session.netcheck() {
        let report = serve_netcheck(session, reader, wr, shared, peer, session_id, stop).await;
        return finish_session(session, wr, peer, report).await;
    }
    // First take the session over from an earlier connection of it (a sender reconnecting
    // before this receiver noticed the old connection died), then count it.
    // A verification runs beside its session, not in its place.
    let key = if client.verify {
        format!("{session_id}#verify")
    } else {
        session_id.to_owned()
    };
    let live = shared.live.register(&key, client.cert).await?;
    let Ok(_session_permit) = shared.sessions.clone().try_acquire_owned() else {
        return Err(Error::Busy {
            sessions: shared.config.max_sessions,
        });
    };
    let _active = shared.config.metrics.session_active();
    let (targets, claim) = open_targets(shared, session)?;
    let (held, journal) = match &shared.journals {
        Some(dir) => {
            let (dir, id, disks) = (dir.clone(), session_id.to_owned(), session.disks().to_vec());
            let (cert, verify) = (client.cert, client.verify);
            tokio::task::spawn_blocking(move || {
                if verify {
                    // A verification holds nothing and writes no journal, but only of a
                    // session this receiver knows, for its client, with its disks.
                    let loaded =
                        dir.load(&id)
                            .ok()
                            .flatten()
                            .ok_or_else(|| Error::UnknownSession {
                                session: id.clone(),
                            })?;
                    check_resumable(&loaded, &id, cert, &disks)?;
                    Ok((vec![Vec::new(); disks.len()], None))
                } else {
                    open_journal(&dir, &id, cert, &disks)
                }
            })
            .await
            .map_err(|e| Error::Transport(format!("reading the session journal failed: {e}")))??
        }
        None => (vec![Vec::new(); targets.len()], None),
    };
    let journal: SharedJournal = Arc::new(Mutex::new(journal));
    // Open to more streams of the same client, before the sender hears WELCOME.
    let open = (!client.verify).then(|| {
        let open = Arc::new(OpenSession {
            client: client.cert,
            disks: layout(session.disks()),
            targets: targets.clone(),
            journal: journal.clone(),
        });
        let mut map = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(session_id.to_owned(), open.clone());
        OpenGuard {
            shared,
            id: session_id.to_owned(),
            open,
        }
    });
    let report = serve_session(
        session,
        reader,
        wr,
        shared,
        peer,
        session_id,
        stop,
        Stream {
            live: &live,
            targets,
            held,
            journal: Some(journal),
            finishes: true,
            verify: client.verify,
        },
    )
    .await;
    // The disks are released before DONE, so the sender's next round finds them free.
    drop(open);
    drop(claim);
    finish_session(session, wr, peer, report).await
}

/// A stream joining the open session `session_id`: the session's disks and journal, no
/// claim of its own.
async fn run_joined(
    session: &mut ReceiverSession,
    reader: &mut FrameReader<tokio::io::ReadHalf<TlsStream<TcpStream>>>,
    wr: &mut Writer,
    shared: &Shared,
    client: Client,
    session_id: &str,
    stop: watch::Receiver<bool>,
) -> Result<SessionReport, Error> {
    let peer = client.addr;
    let open = shared
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(session_id)
        .cloned()
        .ok_or_else(|| Error::NotOpen {
            session: session_id.into(),
        })?;
    check_same(
        open.client,
        &open.disks,
        session_id,
        client.cert,
        session.disks(),
    )?;
    // Registered under a key of its own: nothing takes a stream over.
    let live = shared
        .live
        .register(&format!("{session_id}#{peer}"), client.cert)
        .await?;
    let report = serve_session(
        session,
        reader,
        wr,
        shared,
        peer,
        session_id,
        stop,
        Stream {
            live: &live,
            targets: open.targets.clone(),
            held: vec![Vec::new(); open.targets.len()],
            journal: Some(open.journal.clone()),
            finishes: false,
            verify: false,
        },
    )
    .await;
    finish_session(session, wr, peer, report).await
}

/// What a connection's session works with.
struct Stream<'a> {
    live: &'a live::Registration<'a>,
    targets: Vec<Arc<TargetDisk>>,
    /// What the session holds already, per disk, for the WELCOME.
    held: Vec<Vec<blockrep_proto::Extent>>,
    journal: Option<SharedJournal>,
    /// Whether this connection's complete END finishes the session's journal.
    finishes: bool,
    verify: bool,
}

/// A network check (HELLO NETCHECK): WELCOME, then a PONG for each PING until END. Takes a
/// session's place (so `max_sessions` bounds checks too) and its idle timeout; opens nothing.
async fn serve_netcheck(
    session: &mut ReceiverSession,
    reader: &mut FrameReader<tokio::io::ReadHalf<TlsStream<TcpStream>>>,
    wr: &mut Writer,
    shared: &Shared,
    peer: SocketAddr,
    session_id: &str,
    mut stop: watch::Receiver<bool>,
) -> Result<SessionReport, Error> {
    let Ok(_session_permit) = shared.sessions.clone().try_acquire_owned() else {
        return Err(Error::Busy {
            sessions: shared.config.max_sessions,
        });
    };
    let _active = shared.config.metrics.session_active();
    let welcome = session.accept(crate::VERSION, Vec::new());
    write_frame(wr, &welcome)
        .await
        .map_err(|e| Error::Transport(format!("sending WELCOME to {peer}: {e}")))?;
    let idle = shared.config.idle_timeout;
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => {
                return Err(Error::Transport("the receiver is shutting down".into()));
            }
            r = tokio::time::timeout(idle, reader.read_frame()) => match r {
                Err(_) => {
                    return Err(Error::Transport(format!(
                        "no frame from {peer} for {} s; closing",
                        idle.as_secs()
                    )))
                }
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => {
                    return Err(Error::Transport(format!(
                        "{peer} closed the connection during the network check"
                    )))
                }
                Ok(Err(e)) => return Err(read_error(e, peer)),
            },
        };
        match session.handle_frame(frame)? {
            ReceiverEvent::Ping(ping) => {
                let pong = session.pong(ping);
                write_frame(wr, &pong)
                    .await
                    .map_err(|e| Error::Transport(format!("sending PONG to {peer}: {e}")))?;
            }
            ReceiverEvent::End(end) => {
                return Ok(SessionReport {
                    session_id: session_id.to_owned(),
                    peer,
                    complete: end.complete,
                    frames: 0,
                    bytes: 0,
                    data_bytes: 0,
                    zero_bytes: 0,
                })
            }
            ReceiverEvent::PeerError(e) => return Err(sender_error(e)),
            other => unreachable!("a network check yields PINGs and END only, not {other:?}"),
        }
    }
}

/// The ERROR a sender ended its session with.
fn sender_error(e: blockrep_proto::ErrorFrame) -> Error {
    Error::Peer {
        side: "sender",
        code: sanitize(&e.code),
        message: sanitize(&e.message),
    }
}

/// After a session's frames: DONE, with what was written.
async fn finish_session(
    session: &mut ReceiverSession,
    wr: &mut Writer,
    peer: SocketAddr,
    report: Result<SessionReport, Error>,
) -> Result<SessionReport, Error> {
    let report = report?;
    let done = session.done(report.data_bytes, report.zero_bytes);
    write_frame(wr, &done)
        .await
        .map_err(|e| Error::Transport(format!("sending DONE to {peer}: {e}")))?;
    Ok(report)
}

/// WELCOME, then DATA, HASH_REQUESTs and END until the session ends; writes and hashes on
/// threads of their own.
#[allow(clippy::too_many_arguments)]
async fn serve_session(
    session: &mut ReceiverSession,
    reader: &mut FrameReader<tokio::io::ReadHalf<TlsStream<TcpStream>>>,
    wr: &mut Writer,
    shared: &Shared,
    peer: SocketAddr,
    session_id: &str,
    mut stop: watch::Receiver<bool>,
    stream: Stream<'_>,
) -> Result<SessionReport, Error> {
    let Stream {
        live,
        targets,
        held,
        journal,
        finishes,
        verify,
    } = stream;
    let welcome = session.accept(crate::VERSION, held);
    write_frame(wr, &welcome)
        .await
        .map_err(|e| Error::Transport(format!("sending WELCOME to {peer}: {e}")))?;

    let ids: Vec<String> = session.disks().iter().map(|d| d.id.clone()).collect();
    let mut hasher = Hasher::new(targets.clone());
    let (data_tx, data_rx) = mpsc::channel::<WriteMsg>(WRITE_QUEUE);
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let metrics = shared.config.metrics.clone();
    let writer = thread::Builder::new()
        .name("blockrep-write".into())
        .spawn(move || write_loop(targets, ids, data_rx, event_tx, journal, finishes, metrics))
        .map_err(|e| Error::Transport(format!("cannot start a writer thread: {e}")))?;
    let mut data_tx = Some(data_tx);
    let mut complete = None;
    let idle = shared.config.idle_timeout;
    let mut last_frame = Instant::now();
    let result = loop {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(WriterEvent::Durable { frames, bytes }) => {
                    if let Some(ack) = session.durable(frames, bytes) {
                        write_frame(wr, &ack).await.map_err(|e| Error::Transport(format!("sending ACK to {peer}: {e}")))?;
                    }
                }
                Some(WriterEvent::Finished { data_bytes, zero_bytes }) => {
                    let Some(complete) = complete else {
                        break Err(Error::Transport("the receiver is shutting down; the transfer can resume later".into()));
                    };
                    let (frames, bytes) = session.received();
                    break Ok(SessionReport { session_id: session_id.to_owned(), peer, complete, frames, bytes, data_bytes, zero_bytes });
                }
                Some(WriterEvent::Failed(e)) => break Err(e),
                None => break Err(Error::Transport("the writer thread ended unexpectedly".into())),
            },
            answer = hasher.next(), if hasher.pending() => {
                let Some(answer) = answer else {
                    break Err(Error::Transport("the hashing threads ended unexpectedly".into()));
                };
                let answer = match answer {
                    Ok(a) => a,
                    Err(e) => break Err(e),
                };
                let frame = session.hashes(answer);
                write_frame(wr, &frame).await.map_err(|e| Error::Transport(format!("sending HASHES to {peer}: {e}")))?;
            }
            _ = stop.changed(), if data_tx.is_some() && complete.is_none() => {
                // Shutdown: write what is queued, sync, acknowledge, then tell the sender.
                data_tx = None;
            }
            _ = live.cancelled(), if data_tx.is_some() => {
                // The sender reconnected: finish the writes queued here, then make way.
                info!(%peer, session = %session_id, "the session continues on a new connection");
                data_tx = None;
                complete = None;
            }
            frame = reader.read_frame(), if data_tx.is_some() => {
                last_frame = Instant::now();
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break Err(Error::Transport(format!("the sender {peer} closed the connection mid-session"))),
                    Err(e) => break Err(read_error(e, peer)),
                };
                match session.handle_frame(frame) {
                    Ok(ReceiverEvent::Data(_)) if verify => {
                        break Err(Error::Config("DATA in a verification session: nothing is written".into()));
                    }
                    Ok(ReceiverEvent::Data(data)) => {
                        shared.config.metrics.received(data.payload.len());
                        if let Some(tx) = &data_tx {
                            // A closed queue means the writer failed; its event says why.
                            let _ = tx.send(WriteMsg::Data(data)).await;
                        }
                    }
                    Ok(ReceiverEvent::End(end)) => {
                        complete = Some(end.complete);
                        if let Some(tx) = data_tx.take() {
                            let _ = tx.send(WriteMsg::End { complete: end.complete }).await;
                        }
                    }
                    Ok(ReceiverEvent::PeerError(e)) => break Err(sender_error(e)),
                    Ok(ReceiverEvent::HashRequest(req)) => {
                        hasher.submit(req);
                    }
                    Ok(ReceiverEvent::Hello(_)) => unreachable!("the session refuses a second HELLO"),
                    Ok(ReceiverEvent::Ping(_)) => unreachable!("PINGs come only in network checks, served by serve_netcheck"),
                    Err(e) => break Err(e.into()),
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(last_frame + idle)), if data_tx.is_some() && !hasher.pending() => {
                break Err(Error::Transport(format!("no frame from the sender {peer} for {} s; closing", idle.as_secs())));
            }
        }
    };
    // On every path the writer drains its queue and syncs before the session is reported.
    drop(data_tx);
    drop(events);
    let _ = tokio::task::spawn_blocking(move || {
        drop(hasher); // joins its threads, which may be mid-request
        writer.join()
    })
    .await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockrep_proto::DiskAnnounce;

    fn disks(size: u64) -> Vec<DiskAnnounce> {
        vec![DiskAnnounce {
            id: "d0".into(),
            size,
            block_size: 1 << 20,
        }]
    }

    #[test]
    fn a_journal_is_resumed_only_by_its_client_with_its_disks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = JournalDir::open(tmp.path()).unwrap();
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        // A new session: nothing held, a fresh journal.
        let (held, journal) = open_journal(&dir, "s1", alice, &disks(8 << 20)).unwrap();
        assert_eq!(held, vec![Vec::new()]);
        let mut journal = journal.expect("a journal");
        journal
            .record(&[(0, 0, 1 << 20), (0, 3 << 20, 1 << 20)])
            .unwrap();
        drop(journal);
        // The same client and disks: what is durable is held.
        let (held, _) = open_journal(&dir, "s1", alice, &disks(8 << 20)).unwrap();
        let held: Vec<(u64, u64)> = held[0].iter().map(|e| (e.offset, e.len)).collect();
        assert_eq!(held, vec![(0, 1 << 20), (3 << 20, 1 << 20)]);
        // Another client certificate: refused, whatever the disks.
        let e = open_journal(&dir, "s1", bob, &disks(8 << 20)).unwrap_err();
        assert!(matches!(e, Error::SessionOwner { .. }), "{e}");
        assert_eq!(e.code(), "SMS.0304");
        // The same client with other disks: refused, saying what the session was started with.
        let e = open_journal(&dir, "s1", alice, &disks(16 << 20)).unwrap_err();
        assert!(matches!(e, Error::SessionLayout { .. }), "{e}");
        assert_eq!(e.code(), "SMS.1504");
        assert!(e.to_string().contains("d0 (8388608 bytes"), "{e}");
    }
}
