//! Streaming chunks: reader thread, encoder workers, and the async loop that writes DATA
//! frames and takes ACKs.
//!
//! ```text
//! reader threads ──(jobs)──► encoder workers ──(encoded)──► async loop ──► TLS
//!  O_DIRECT pread, window        lz4 + blake3                   ▲ ACK frames release the window
//! ```
//!
//! Several readers keep several reads in flight (a virtual disk reads 1 MiB at about 1.2 GB/s
//! one at a time and about 2 GB/s two at a time), into page-aligned pooled buffers, bypassing
//! the source's page cache so the running server keeps its own.
//!
//! A hash-delta round (`Scope::Delta`) has a prober thread instead of the reader: it reads and
//! digests pieces of the source (`delta::Probe`) and hands them to the async loop, which asks
//! the receiver to compare each (HASH_REQUEST) while DATA flows; each answer goes to a
//! splitter thread that cuts the differing fine granules out of the piece into jobs.
//!
//! Memory is bounded by the queues between the stages (a few chunks each) and by the window of
//! raw bytes read but not yet acknowledged as durable, whatever the disk size. Disk reads,
//! compression and hashing never run on the async reactor.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use blockrep_blockmap::ExtentSet;
use blockrep_chunk::Encoding;
use blockrep_disk::{AlignedBuf, SourceDisk};
use blockrep_proto::consts::MAX_OUTSTANDING_HASH_REQUESTS;
use blockrep_proto::frame::encode_data_head;
use blockrep_proto::{Frame, SenderEvent, Sent};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::adapt::{Adaptive, LinkMeter};
use super::connect::{peer_error, read_failure, Link};
use super::delta::{self, Probe};
use super::{plan, Control, SendConfig};
use crate::framed::{write_frame, ReadError};
use crate::Error;

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

    fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// Reads in flight at once: enough to keep a disk's queue busy, few enough to leave the
/// window to the encoders.
const READERS: usize = 3;

/// A chunk read from a disk, on its way to an encoder.
struct Job {
    disk: u16,
    offset: u64,
    raw: AlignedBuf,
}

/// A chunk ready to go on the wire.
struct Encoded {
    disk: u16,
    offset: u64,
    raw: AlignedBuf,
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
struct Pool<T> {
    tx: crossbeam_channel::Sender<T>,
    rx: crossbeam_channel::Receiver<T>,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        }
    }
}

impl<T> Pool<T> {
    fn new(max: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(max);
        Self { tx, rx }
    }

    fn give(&self, buf: T) {
        let _ = self.tx.try_send(buf);
    }
}

impl Pool<Vec<u8>> {
    fn take(&self) -> Vec<u8> {
        self.rx.try_recv().unwrap_or_default()
    }
}

impl Pool<AlignedBuf> {
    /// A buffer of `len` bytes (contents unspecified).
    fn take_len(&self, len: usize) -> AlignedBuf {
        match self.rx.try_recv() {
            Ok(mut buf) => {
                buf.set_len(len);
                buf
            }
            Err(_) => AlignedBuf::new(len),
        }
    }
}

/// What streaming achieved.
pub(crate) struct Streamed {
    /// Everything planned is durable on the target (or, for `Scope::Compare`, compared).
    pub complete: bool,
    /// `Scope::Compare`: per disk, the ranges that differ on the target (4 KiB granules).
    pub found: Vec<ExtentSet>,
}

/// What a round streams.
#[derive(Clone, Copy)]
pub(crate) enum Scope {
    /// Every chunk of the plans.
    Chunks,
    /// The parts of the plans whose contents differ on the target (hash delta).
    Delta,
    /// Nothing: compare the plans with the target and report what differs (verification).
    Compare,
}

/// The async loop's side of a delta round.
#[derive(Default)]
struct DeltaFlow {
    /// The prober is still reading.
    reading: bool,
    /// Probes read, waiting for room among the outstanding HASH_REQUESTs.
    queued: VecDeque<Probe>,
    /// Probes whose HASH_REQUEST is outstanding, oldest first.
    asked: VecDeque<Probe>,
    /// To the splitter; dropped once every probe is answered.
    answers: Option<crossbeam_channel::Sender<(Probe, ExtentSet)>>,
    /// `Scope::Compare`: keeps the encoders' queue open until every probe is answered (the
    /// loop ends when it closes), and collects what differs, per disk.
    compare: Option<(crossbeam_channel::Sender<Job>, Vec<ExtentSet>)>,
    /// What `Scope::Compare` found different, once it is complete.
    found: Vec<ExtentSet>,
}

/// One connection's async loop and its state. A round has one per stream; they share the
/// window, the encoded chunks and the progress, and each takes the ACKs of what it sent.
struct Stream {
    link: Link,
    window: Arc<Window>,
    control: Arc<Control>,
    config: Arc<SendConfig>,
    /// Per disk, what is known durable on the target (acknowledged, or compared the same)
    /// through this stream.
    durable: Vec<ExtentSet>,
    /// Set when the over-speed protection tripped: the round ends like a STOP, then fails.
    over: Option<blockrep_rate::OverSpeed>,
    delta: DeltaFlow,
    /// The encoders' compression decision, and what this loop measures of the link for it.
    adaptive: Arc<Adaptive>,
    meter: LinkMeter,
}

/// The encoded chunks, shared by the streams.
type EncodedRx = async_channel::Receiver<Encoded>;

impl Stream {
    /// Handles one frame from the receiver; returns DONE when it arrives.
    fn on_frame(
        &mut self,
        frame: Option<Result<Option<Frame>, ReadError>>,
    ) -> Result<Option<blockrep_proto::Done>, Error> {
        let peer = &self.link.peer;
        let frame = frame
            .unwrap_or(Ok(None))
            .map_err(|e| read_failure(e, peer))?
            .ok_or_else(|| {
                Error::Transport(format!("the receiver {peer} closed the connection"))
            })?;
        match self.link.session.handle_frame(frame)? {
            SenderEvent::Acked(sent) => {
                let mut bytes = 0;
                for s in &sent {
                    let len = u64::from(s.raw_len);
                    self.durable[usize::from(s.disk)].insert(s.offset, len);
                    bytes += len;
                }
                self.window.release(bytes);
                self.control.progress.acked.fetch_add(bytes, Relaxed);
                Ok(None)
            }
            SenderEvent::Done(done) => Ok(Some(done)),
            SenderEvent::PeerError(e) => Err(peer_error(e)),
            SenderEvent::Welcome(_) => unreachable!("the session refuses a second WELCOME"),
            SenderEvent::Pong(_) => unreachable!("the session refuses a PONG it sent no PING for"),
            SenderEvent::Hashes { hashes, .. } => {
                let probe = self
                    .delta
                    .asked
                    .pop_front()
                    .expect("the session checked an answer was due");
                let differing = probe.differing(&hashes);
                let (len, to_send) = (probe.data.len() as u64, differing.total());
                // What is the same on both sides is done; what differs holds its share of
                // the window until acknowledged.
                let same = ExtentSet::range(probe.offset, len).subtract(&differing);
                self.durable[usize::from(probe.disk)].union(&same);
                if let Some((_, found)) = &mut self.delta.compare {
                    found[usize::from(probe.disk)].union(&differing);
                    self.window.release(len);
                    return Ok(None);
                }
                self.window.release(len - to_send);
                self.control.progress.total.fetch_add(to_send, Relaxed);
                if let Some(tx) = &self.delta.answers {
                    let _ = tx.send((probe, differing));
                }
                Ok(None)
            }
        }
    }

    /// [`write_all`](Self::write_all), with the receiver's own word for a failed write
    /// where it gave one.
    async fn run(
        &mut self,
        enc_rx: &EncodedRx,
        probes: &mut mpsc::Receiver<Probe>,
        raw_pool: &Pool<AlignedBuf>,
        lz4_pool: &Pool<Vec<u8>>,
    ) -> Result<(), Error> {
        match self.write_all(enc_rx, probes, raw_pool, lz4_pool).await {
            Err(e @ Error::Transport(_)) => Err(self.explain(e).await),
            other => other,
        }
    }

    /// Writes every encoded chunk until the encoders are done (or STOP closed the window).
    async fn write_all(
        &mut self,
        enc_rx: &EncodedRx,
        probes: &mut mpsc::Receiver<Probe>,
        raw_pool: &Pool<AlignedBuf>,
        lz4_pool: &Pool<Vec<u8>>,
    ) -> Result<(), Error> {
        let io_timeout = self.config.io_timeout;
        let mut last_ack = Instant::now();
        loop {
            let owed = self.link.session.unacked().next().is_some()
                || self.link.session.hash_requests_pending() > 0;
            let deadline = tokio::time::Instant::from_std(last_ack + io_timeout);
            tokio::select! {
                biased;
                frame = self.link.frames.recv() => {
                    if let Some(done) = self.on_frame(frame)? {
                        unreachable!("the session refuses DONE before END: {done:?}");
                    }
                    last_ack = Instant::now();
                    self.ask().await?;
                }
                probe = probes.recv(), if self.delta.reading => {
                    match probe {
                        Some(p) => self.delta.queued.push_back(p),
                        None => self.delta.reading = false,
                    }
                    if !owed {
                        last_ack = Instant::now();
                    }
                    self.ask().await?;
                }
                _ = self.control.stopped(), if !self.window.is_closed() => {
                    info!("STOP requested: finishing the chunks in flight");
                    self.window.close();
                }
                chunk = enc_rx.recv() => {
                    let Ok(chunk) = chunk else { return Ok(()) };
                    if !owed {
                        last_ack = Instant::now();
                    }
                    let writing = Instant::now();
                    let wire = self.write_chunk(&chunk).await?;
                    if self.over.is_none() {
                        if let Some(o) = self.config.limits.over_speed() {
                            tracing::warn!("{o}: stopping as a protection");
                            self.over = Some(o);
                            self.window.close();
                        }
                    }
                    raw_pool.give(chunk.raw);
                    if let Some(c) = chunk.compressed {
                        lz4_pool.give(c);
                    }
                    if enc_rx.is_empty() {
                        self.link.wr.flush().await.map_err(|e| self.transport(e))?;
                    }
                    self.meter.wrote(&self.adaptive, wire, writing.elapsed());
                }
                _ = tokio::time::sleep_until(deadline), if owed => {
                    return Err(Error::Transport(format!(
                        "the receiver {} acknowledged nothing for {} s", self.link.peer, io_timeout.as_secs()
                    )));
                }
            }
        }
    }

    /// Sends the HASH_REQUESTs of queued probes while there is room among the outstanding
    /// ones (none after a STOP); once every probe is answered, lets the splitter finish.
    async fn ask(&mut self) -> Result<(), Error> {
        if self.window.is_closed() {
            self.delta.queued.clear();
        }
        while self.link.session.hash_requests_pending() < MAX_OUTSTANDING_HASH_REQUESTS {
            let Some(probe) = self.delta.queued.pop_front() else {
                break;
            };
            let frame = self.link.session.request_hashes(probe.request.clone());
            write_frame(&mut self.link.wr, &frame)
                .await
                .map_err(|e| self.transport(e))?;
            self.control
                .progress
                .wire
                .fetch_add(frame.encoded_len() as u64, Relaxed);
            self.delta.asked.push_back(probe);
        }
        let d = &mut self.delta;
        if !d.reading && d.queued.is_empty() && d.asked.is_empty() {
            let compared = d.compare.take().map(|(_, found)| found);
            if d.answers.take().is_some() || compared.is_some() {
                self.control.progress.planned.store(true, Relaxed);
            }
            if let Some(found) = compared {
                d.found = found;
            }
        }
        Ok(())
    }

    /// Writes one DATA frame; its length on the wire.
    async fn write_chunk(&mut self, chunk: &Encoded) -> Result<u64, Error> {
        let payload = chunk.payload();
        let raw_len = chunk.raw.len() as u32;
        let head = encode_data_head(
            chunk.disk,
            chunk.encoding,
            chunk.offset,
            raw_len,
            &chunk.digest,
            payload.len(),
        );
        self.link
            .wr
            .write_all(&head)
            .await
            .map_err(|e| self.transport(e))?;
        self.link
            .wr
            .write_all(payload)
            .await
            .map_err(|e| self.transport(e))?;
        self.link.session.record_data(Sent {
            disk: chunk.disk,
            offset: chunk.offset,
            raw_len,
        });
        let progress = &self.control.progress;
        let wire = (head.len() + payload.len()) as u64;
        progress.sent.fetch_add(u64::from(raw_len), Relaxed);
        progress.wire.fetch_add(wire, Relaxed);
        if chunk.encoding == Encoding::Zero {
            progress.zero.fetch_add(u64::from(raw_len), Relaxed);
        }
        Ok(wire)
    }

    fn transport(&self, e: std::io::Error) -> Error {
        Error::Transport(format!("sending to the receiver {}: {e}", self.link.peer))
    }

    /// After a failed write: the receiver usually said why before it closed. Prefer its ERROR
    /// (and take its last ACKs) to a bare "broken pipe"; bounded in time.
    async fn explain(&mut self, fallback: Error) -> Error {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.link.frames.recv()).await {
            let last = frame.is_none();
            match self.on_frame(frame) {
                Ok(_) if !last => continue,
                Err(e @ Error::Peer { .. }) => return e,
                _ => break,
            }
        }
        fallback
    }

    /// Sends END and waits for DONE, taking the last ACKs.
    async fn finish(&mut self, complete: bool) -> Result<(), Error> {
        let io_timeout = self.config.io_timeout;
        let end = self.link.session.end(complete);
        write_frame(&mut self.link.wr, &end)
            .await
            .map_err(|e| Error::Transport(format!("sending END to {}: {e}", self.link.peer)))?;
        loop {
            let frame = tokio::time::timeout(io_timeout, self.link.frames.recv())
                .await
                .map_err(|_| {
                    Error::Transport(format!(
                        "no answer to END from {} within {} s",
                        self.link.peer,
                        io_timeout.as_secs()
                    ))
                })?;
            if let Some(done) = self.on_frame(frame)? {
                debug!(?done, "receiver summary");
                return Ok(());
            }
        }
    }
}

/// Streams `plans` over `links` (every chunk, or for `Scope::Delta` what differs on the
/// target, or nothing for `Scope::Compare`), then ends the session (END/DONE on each link,
/// the first one last). The first link is the session's first connection; the others joined
/// it (`Scope::Chunks` only), and each carries whichever chunks it takes next. Adds to
/// `durable` what the receiver acknowledges (and what was compared the same), on every path.
/// On an error the session is over too.
pub(crate) async fn stream(
    mut links: Vec<Link>,
    sources: &[Arc<SourceDisk>],
    plans: &[ExtentSet],
    scope: Scope,
    config: &SendConfig,
    control: &Arc<Control>,
    durable: &mut [ExtentSet],
) -> Result<Streamed, Error> {
    let piece_len = delta::piece_len(config.window);
    let mut window_len = config.window.max(u64::from(config.block_size));
    if matches!(scope, Scope::Delta | Scope::Compare) {
        window_len = window_len.max(u64::from(piece_len));
    }
    let window = Arc::new(Window::new(window_len));
    let failure: Arc<Mutex<Option<Error>>> = Arc::default();
    let workers = config.workers.max(1);
    let adaptive = Arc::new(Adaptive::new(config.compression, workers));
    let raw_pool = Pool::new(4 * workers + 4 + READERS);
    let lz4_pool = Pool::new(4 * workers + 4);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(2 * workers);
    let (enc_tx, enc_rx) = async_channel::bounded::<Encoded>(2 * workers);
    let (probe_tx, mut probe_rx) = mpsc::channel::<Probe>(2);
    let mut flow = DeltaFlow::default();
    let fail = {
        let failure = failure.clone();
        move |e: Error| *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e)
    };

    let mut threads = Vec::new();
    match scope {
        Scope::Chunks => {
            drop(probe_tx);
            // The plan is cut into chunks lazily (a disk can hold millions of them), on a
            // thread of its own that hands them to the readers.
            let (next_tx, next) = crossbeam_channel::bounded::<(u16, u64, u32)>(2 * READERS);
            let (plans, block_size) = (plans.to_vec(), config.block_size);
            threads.push(spawn("blockrep-plan", move || {
                for chunk in plan::chunks(&plans, block_size) {
                    if next_tx.send(chunk).is_err() {
                        return;
                    }
                }
            }));
            for i in 0..READERS {
                let (window, pool, control) = (window.clone(), raw_pool.clone(), control.clone());
                let (sources, next, job_tx) = (sources.to_vec(), next.clone(), job_tx.clone());
                let fail = fail.clone();
                threads.push(spawn(&format!("blockrep-read{i}"), move || {
                    for (disk, offset, len) in next {
                        if control.is_stopped() || !window.acquire(u64::from(len)) {
                            return;
                        }
                        let mut raw = pool.take_len(len as usize);
                        let source = &sources[usize::from(disk)];
                        if let Err(e) = source.read_uncached(&mut raw, offset) {
                            window.close();
                            return fail(e.into());
                        }
                        control.progress.read.fetch_add(u64::from(len), Relaxed);
                        if job_tx.send(Job { disk, offset, raw }).is_err() {
                            return;
                        }
                    }
                }));
            }
            drop((next, job_tx));
        }
        Scope::Delta | Scope::Compare => {
            let sizes: Vec<u64> = sources.iter().map(|s| s.size()).collect();
            let compared = delta::compared(plans, &sizes);
            let key: [u8; 32] = rand::random();
            // Piece buffers go back to the prober once split.
            let pieces = Pool::new(4);
            let (answer_tx, answer_rx) = crossbeam_channel::unbounded::<(Probe, ExtentSet)>();
            flow.reading = true;
            if matches!(scope, Scope::Compare) {
                flow.compare = Some((job_tx.clone(), vec![ExtentSet::new(); plans.len()]));
            } else {
                flow.answers = Some(answer_tx);
            }
            {
                let (window, control) = (window.clone(), control.clone());
                let (sources, fail, buffers) = (sources.to_vec(), fail.clone(), pieces.clone());
                threads.push(spawn("blockrep-probe", move || {
                    for (disk, offset, len) in plan::chunks(&compared, piece_len) {
                        if control.is_stopped() || !window.acquire(u64::from(len)) {
                            return;
                        }
                        let source = &sources[usize::from(disk)];
                        let buf = buffers.take_len(len as usize);
                        let probe = match Probe::read(source, disk, offset, len, &key, buf) {
                            Ok(p) => p,
                            Err(e) => return fail(e),
                        };
                        control.progress.read.fetch_add(u64::from(len), Relaxed);
                        if probe_tx.blocking_send(probe).is_err() {
                            return;
                        }
                    }
                }));
            }
            let (window, pool, block_size) = (window.clone(), raw_pool.clone(), config.block_size);
            threads.push(spawn("blockrep-split", move || {
                for (probe, differing) in answer_rx {
                    let sets = [differing];
                    for (_, offset, len) in plan::chunks(&sets, block_size) {
                        if window.is_closed() {
                            break;
                        }
                        let at = (offset - probe.offset) as usize;
                        let mut raw = pool.take_len(len as usize);
                        raw.copy_from_slice(&probe.data[at..at + len as usize]);
                        let disk = probe.disk;
                        if job_tx.send(Job { disk, offset, raw }).is_err() {
                            return;
                        }
                    }
                    pieces.give(probe.data);
                }
            }));
        }
    }
    let encoders: Vec<_> = (0..workers)
        .map(|i| {
            let (job_rx, enc_tx, lz4_pool) = (job_rx.clone(), enc_tx.clone(), lz4_pool.clone());
            let adaptive = adaptive.clone();
            spawn(&format!("blockrep-enc{i}"), move || {
                let mut compressed = lz4_pool.take();
                for job in job_rx {
                    let started = Instant::now();
                    let lz4 = adaptive.try_next();
                    let e = if lz4 {
                        blockrep_chunk::encode(&job.raw, &mut compressed)
                    } else {
                        blockrep_chunk::encode_uncompressed(&job.raw)
                    };
                    if e.encoding != Encoding::Zero {
                        let c = lz4.then_some(e.payload_len);
                        adaptive.encoded(job.raw.len(), c, started.elapsed());
                    }
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
                    if enc_tx.send_blocking(out).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(enc_tx);

    let shared_config = Arc::new(config.clone());
    let new_stream = |link| Stream {
        link,
        window: window.clone(),
        control: control.clone(),
        config: shared_config.clone(),
        durable: vec![ExtentSet::new(); plans.len()],
        over: None,
        delta: DeltaFlow::default(),
        adaptive: adaptive.clone(),
        meter: LinkMeter::default(),
    };
    let first = links.remove(0);
    // The joined streams run as tasks of their own, so that their TLS work can go to other
    // threads of the runtime.
    let joined: Vec<_> = links
        .into_iter()
        .map(|link| {
            let mut st = new_stream(link);
            let (enc_rx, raw_pool, lz4_pool) = (enc_rx.clone(), raw_pool.clone(), lz4_pool.clone());
            tokio::spawn(async move {
                let mut no_probes = mpsc::channel(1).1;
                let r = st.run(&enc_rx, &mut no_probes, &raw_pool, &lz4_pool).await;
                let r = match r {
                    Ok(()) => {
                        let complete = !st.control.is_stopped() && st.over.is_none();
                        st.finish(complete).await
                    }
                    Err(e) => Err(e),
                };
                if r.is_err() {
                    // Stop the others: the round is over.
                    st.window.close();
                }
                (r, st.over.take(), st.durable)
            })
        })
        .collect();
    let mut st = new_stream(first);
    st.delta = flow;
    let written = st.run(&enc_rx, &mut probe_rx, &raw_pool, &lz4_pool).await;
    // Whatever happened, let the pipeline threads finish: close the window and the queues.
    window.close();
    drop((enc_rx, probe_rx));
    let found = std::mem::take(&mut st.delta).found;
    drop(job_rx);
    if written.is_err() {
        for task in &joined {
            task.abort();
        }
    }
    // The joined streams end before the first: its END (complete) finishes the session.
    let mut over = None;
    let mut joined_failure = None;
    for task in joined {
        match task.await {
            Ok((r, o, done)) => {
                merge(durable, &done);
                over = over.or(o);
                if let Err(e) = r {
                    joined_failure.get_or_insert(e);
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                joined_failure.get_or_insert(Error::Transport(format!("a stream failed: {e}")));
            }
        }
    }
    let threads = threads.into_iter().chain(encoders).collect::<Vec<_>>();
    let _ =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    debug!(
        tried = adaptive.tried.load(Relaxed),
        skipped = adaptive.skipped.load(Relaxed),
        "lz4 tried on chunks"
    );
    let read_failure = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    let result = match (written, read_failure.or(joined_failure)) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => {
            let abort = st.link.session.abort(e.code(), &e.to_string());
            let _ = write_frame(&mut st.link.wr, &abort).await;
            Err(e)
        }
        (Ok(()), None) => {
            let over = st.over.take().or(over);
            let complete = !control.is_stopped() && over.is_none();
            match st.finish(complete).await {
                Err(e) => Err(e),
                Ok(()) if over.is_some() => Err(Error::OverSpeed(over.expect("checked"))),
                Ok(()) => Ok(Streamed { complete, found }),
            }
        }
    };
    merge(durable, &st.durable);
    result
}

/// Adds a stream's durable ranges to the round's.
fn merge(durable: &mut [ExtentSet], stream: &[ExtentSet]) {
    for (all, done) in durable.iter_mut().zip(stream) {
        all.union(done);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a thread")
}

#[cfg(test)]
mod tests {
    use super::*;

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
