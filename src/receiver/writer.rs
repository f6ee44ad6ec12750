//! The writers of a session: a coordinating thread hands each chunk to a pool of workers that
//! verify it (lz4, blake3) and write it, in any order and several at once, then syncs in
//! batches and reports what is durable: always a prefix of the frames received, so only what
//! is on stable storage is ever acknowledged, however the workers' writes interleave.
//!
//! ```text
//! connection task ──(WriteMsg)──► coordinator ──(Job)──► workers: verify, pwrite (O_DIRECT)
//!        ▲                           │   ▲                  │
//!        └──(WriterEvent: Durable)───┘   └──(Completion)────┘
//! ```
//!
//! Writes of one chunk never run beside a write of an overlapping one received earlier, so
//! the disk ends as if the chunks were written in order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use blockrep_disk::TargetDisk;
use blockrep_proto::Data;
use tokio::sync::mpsc;

use super::journal::Journal;
use crate::metrics::Metrics;
use crate::Error;

/// Unsynced bytes after which the writer syncs and acknowledges even while data keeps coming.
/// Below the sender's default window, so a sender never waits on a batch that cannot fill.
const SYNC_BATCH: u64 = 32 << 20;

/// Worker threads per session: direct writes wait for the disk, so more writes in flight than
/// cores keep it busy while others verify.
const WORKERS: usize = 4;

/// Chunks handed to the workers and not yet completed.
const IN_FLIGHT: usize = 2 * WORKERS;

/// Messages from the connection task to its writer thread.
pub(super) enum WriteMsg {
    Data(Data),
    /// The sender's END: whether it sent everything it planned. The last message.
    End {
        complete: bool,
    },
}

/// Messages from the writer thread back.
pub(super) enum WriterEvent {
    /// The first `frames` frames (`bytes` raw bytes) are durable.
    Durable { frames: u64, bytes: u64 },
    /// The queue closed and everything written is durable.
    Finished { data_bytes: u64, zero_bytes: u64 },
    /// Writing failed; frames after the last `Durable` ones may have been written, but are
    /// not durable and were never acknowledged.
    Failed(Error),
}

/// A session's journal, shared by the writers of its streams; `None` once it failed, or once
/// the session's first connection ended (its writers alone record in it).
pub(super) type SharedJournal = Arc<Mutex<Option<Journal>>>;

/// The session journal, if there is one: what is durable, recorded after each sync. A
/// journal that cannot be written is dropped with a warning; the session goes on, and a
/// resumption will just send more again.
struct Record {
    journal: Option<SharedJournal>,
    /// Ranges written since the last sync: (disk, offset, length), adjacent ones merged.
    pending: Vec<(u16, u64, u64)>,
}

impl Record {
    fn written(&mut self, disk: u16, offset: u64, len: u64) {
        if self.journal.is_none() {
            return;
        }
        match self.pending.last_mut() {
            Some((d, o, l)) if *d == disk && *o + *l == offset => *l += len,
            _ => self.pending.push((disk, offset, len)),
        }
    }

    /// After a sync: the pending ranges are durable.
    fn synced(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let Some(shared) = &self.journal else { return };
        let mut journal = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = journal.as_mut() {
            if let Err(e) = j.record(&pending) {
                tracing::warn!("{e}; the session continues without its journal");
                *journal = None;
            }
        }
    }

    fn finish(&mut self) {
        let Some(shared) = &self.journal else { return };
        if let Some(j) = shared.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(e) = j.finish(now) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// A chunk for a worker: its place in the session's frames, and the frame.
struct Job {
    seq: u64,
    data: Data,
}

/// What a worker did with a job.
struct Completion {
    seq: u64,
    disk: u16,
    offset: u64,
    len: u64,
    /// Whether it was a zero chunk, or why it could not be written.
    written: Result<bool, Error>,
}

/// The session's workers.
struct Workers {
    jobs: Option<crossbeam_channel::Sender<Job>>,
    done: crossbeam_channel::Receiver<Completion>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Workers {
    fn start(
        targets: &[Arc<TargetDisk>],
        ids: &[String],
        metrics: &Arc<Metrics>,
    ) -> Result<Self, Error> {
        let (jobs, job_rx) = crossbeam_channel::bounded::<Job>(IN_FLIGHT);
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        for i in 0..WORKERS {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            let (targets, ids, metrics) = (targets.to_vec(), ids.to_vec(), metrics.clone());
            let t = thread::Builder::new()
                .name(format!("blockrep-write{i}"))
                .spawn(move || {
                    let mut scratch = Vec::new();
                    for Job { seq, data } in job_rx {
                        let written = write_chunk(&targets, &ids, &data, &mut scratch, &metrics);
                        let c = Completion {
                            seq,
                            disk: data.disk,
                            offset: data.offset,
                            len: u64::from(data.raw_len),
                            written,
                        };
                        if done_tx.send(c).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::Transport(format!("cannot start a writer thread: {e}")))?;
            threads.push(t);
        }
        Ok(Self {
            jobs: Some(jobs),
            done,
            threads,
        })
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Verifies one chunk and writes it (timing the write); whether it was a zero chunk.
fn write_chunk(
    targets: &[Arc<TargetDisk>],
    ids: &[String],
    data: &Data,
    scratch: &mut Vec<u8>,
    metrics: &Metrics,
) -> Result<bool, Error> {
    let disk = usize::from(data.disk);
    let chunk = blockrep_chunk::verify(
        data.encoding,
        data.raw_len as usize,
        &data.digest,
        &data.payload,
        scratch,
    )
    .map_err(|source| Error::Chunk {
        disk: ids[disk].clone(),
        offset: data.offset,
        source,
    })?;
    let start = Instant::now();
    targets[disk]
        .write(data.offset, &chunk)
        .map_err(|source| Error::TargetDisk {
            disk: ids[disk].clone(),
            source,
        })?;
    metrics.written(data.encoding, data.raw_len, start.elapsed());
    Ok(chunk.is_zero())
}

/// The coordinator's books: frames handed out, completed, and durable.
struct Books {
    targets: Vec<Arc<TargetDisk>>,
    metrics: Arc<Metrics>,
    ids: Vec<String>,
    record: Record,
    /// Frames received (the next frame's sequence number).
    received: u64,
    /// Frames handed to the workers and not completed: sequence number to (disk, range).
    in_flight: BTreeMap<u64, (u16, u64, u64)>,
    /// Completed frames past the completed prefix.
    completed: BTreeMap<u64, Completion>,
    /// The completed prefix: frames and their raw bytes.
    frames: u64,
    bytes: u64,
    /// The prefix of frames (and raw bytes) that the last good sync made durable.
    durable: (u64, u64),
    /// Bytes completed since the last sync, and the disks they went to.
    unsynced: u64,
    dirty: Vec<bool>,
    data_bytes: u64,
    zero_bytes: u64,
    /// The first failure: no more frames are handed out once it is set.
    failed: Option<Error>,
}

impl Books {
    fn complete(&mut self, c: Completion) {
        self.in_flight.remove(&c.seq);
        self.completed.insert(c.seq, c);
        while let Some(c) = self.completed.remove(&self.frames) {
            match c.written {
                Ok(zero) => {
                    if zero {
                        self.zero_bytes += c.len;
                    } else {
                        self.data_bytes += c.len;
                    }
                    self.frames += 1;
                    self.bytes += c.len;
                    self.unsynced += c.len;
                    self.dirty[usize::from(c.disk)] = true;
                    self.record.written(c.disk, c.offset, c.len);
                }
                Err(e) => {
                    // Frames after it stay out of the prefix: never acknowledged.
                    self.failed.get_or_insert(e);
                    self.completed.clear();
                    break;
                }
            }
        }
    }

    /// Whether a frame for `disk` at `[offset, offset + len)` overlaps one being written.
    fn overlaps(&self, disk: u16, offset: u64, len: u64) -> bool {
        self.in_flight
            .values()
            .any(|&(d, o, l)| d == disk && o < offset + len && offset < o + l)
    }

    /// Makes the completed prefix durable (fdatasync of the disks written) and records it in
    /// the journal. A disk stays dirty until its sync succeeds; after a failed sync nothing
    /// completed since the last good one is ever recorded or reported durable (the target
    /// keeps failing its syncs: see [`TargetDisk::sync`]), and the session fails.
    fn sync(&mut self) -> Result<(), Error> {
        for i in 0..self.dirty.len() {
            if self.dirty[i] {
                let start = Instant::now();
                self.targets[i].sync().map_err(|source| Error::TargetDisk {
                    disk: self.ids[i].clone(),
                    source,
                })?;
                self.dirty[i] = false;
                self.metrics.synced(start.elapsed());
            }
        }
        self.record.synced();
        self.unsynced = 0;
        self.durable = (self.frames, self.bytes);
        Ok(())
    }

    /// Syncs what is completed and not yet durable, and reports it.
    fn sync_and_report(
        &mut self,
        events: &mpsc::UnboundedSender<WriterEvent>,
    ) -> Result<(), Error> {
        if self.unsynced > 0 {
            self.sync()?;
            let (frames, bytes) = self.durable;
            let _ = events.send(WriterEvent::Durable { frames, bytes });
        }
        Ok(())
    }
}

/// The coordinating thread: hands chunks to the workers, syncs in batches, reports what is
/// durable (and records it in the session's journal before reporting it). The writer of a
/// session's first connection `finishes` the journal when its END says the session is
/// complete; those of joined streams do not.
pub(super) fn write_loop(
    targets: Vec<Arc<TargetDisk>>,
    ids: Vec<String>,
    mut rx: mpsc::Receiver<WriteMsg>,
    events: mpsc::UnboundedSender<WriterEvent>,
    journal: Option<SharedJournal>,
    finishes: bool,
    metrics: Arc<Metrics>,
) {
    let mut workers = match Workers::start(&targets, &ids, &metrics) {
        Ok(w) => w,
        Err(e) => {
            let _ = events.send(WriterEvent::Failed(e));
            return;
        }
    };
    let mut books = Books {
        dirty: vec![false; targets.len()],
        targets,
        metrics,
        ids,
        record: Record {
            journal,
            pending: Vec::new(),
        },
        received: 0,
        in_flight: BTreeMap::new(),
        completed: BTreeMap::new(),
        frames: 0,
        bytes: 0,
        durable: (0, 0),
        unsynced: 0,
        data_bytes: 0,
        zero_bytes: 0,
        failed: None,
    };
    let mut complete = false;
    let outcome = coordinate(&workers, &mut books, &mut rx, &events, &mut complete);
    // Whatever ended it: let the workers finish the writes in flight (they stop once the
    // queue is empty), and make the completed prefix durable.
    workers.jobs = None;
    while !books.in_flight.is_empty() {
        match workers.done.recv() {
            Ok(c) => books.complete(c),
            Err(_) => {
                let e = Error::Transport("a writer thread ended unexpectedly".into());
                books.failed.get_or_insert(e);
                break;
            }
        }
    }
    drop(workers);
    // A failed sync (now or earlier) reports nothing more as durable.
    let synced = match &outcome {
        Ok(()) => books.sync(),
        Err(_) => Ok(()),
    };
    if synced.is_ok() && outcome.is_ok() {
        let (frames, bytes) = books.durable;
        let _ = events.send(WriterEvent::Durable { frames, bytes });
    }
    match outcome
        .and(synced)
        .and(books.failed.take().map_or(Ok(()), Err))
    {
        Ok(()) => {
            if complete && finishes {
                books.record.finish();
            }
            let _ = events.send(WriterEvent::Finished {
                data_bytes: books.data_bytes,
                zero_bytes: books.zero_bytes,
            });
        }
        Err(e) => {
            let _ = events.send(WriterEvent::Failed(e));
        }
    }
}

/// Hands out chunks until the queue closes or a write fails.
fn coordinate(
    workers: &Workers,
    books: &mut Books,
    rx: &mut mpsc::Receiver<WriteMsg>,
    events: &mpsc::UnboundedSender<WriterEvent>,
    complete: &mut bool,
) -> Result<(), Error> {
    let jobs = workers.jobs.as_ref().expect("workers started");
    loop {
        while let Ok(c) = workers.done.try_recv() {
            books.complete(c);
        }
        if books.failed.is_some() {
            return Ok(());
        }
        if books.unsynced >= SYNC_BATCH {
            books.sync_and_report(events)?;
        }
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::error::TryRecvError::Empty) => {
                if !books.in_flight.is_empty() {
                    // Let the writes in flight finish before syncing.
                    if let Ok(c) = workers.done.recv() {
                        books.complete(c);
                    }
                    continue;
                }
                // The sender paused or we caught up: make everything durable and say so.
                books.sync_and_report(events)?;
                match rx.blocking_recv() {
                    Some(msg) => msg,
                    None => return Ok(()),
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
        };
        let data = match msg {
            WriteMsg::End { complete: c } => {
                *complete = c;
                continue;
            }
            WriteMsg::Data(data) => data,
        };
        let (disk, offset, len) = (data.disk, data.offset, u64::from(data.raw_len));
        while books.in_flight.len() >= IN_FLIGHT || books.overlaps(disk, offset, len) {
            match workers.done.recv() {
                Ok(c) => books.complete(c),
                Err(_) => return Ok(()),
            }
        }
        let seq = books.received;
        books.received += 1;
        books.in_flight.insert(seq, (disk, offset, len));
        if jobs.send(Job { seq, data }).is_err() {
            return Ok(());
        }
    }
}
