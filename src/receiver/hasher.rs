//! Digests for HASH_REQUESTs: a small pool of threads per session reads the targets and
//! hashes; answers leave in request order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

use blockrep_disk::TargetDisk;
use blockrep_proto::{HashRequest, Hashes};
use tokio::sync::mpsc;

use crate::digests::{for_each_granule, Digester};
use crate::Error;

/// Threads per session: hashing is read- and CPU-bound, and a sender keeps several requests
/// in flight, so two requests are worked on at once.
const THREADS: usize = 2;

/// A session's hashing threads, started at the first request.
pub(super) struct Hasher {
    targets: Vec<Arc<TargetDisk>>,
    tx: Option<crossbeam_channel::Sender<(u64, HashRequest)>>,
    rx: Option<mpsc::UnboundedReceiver<(u64, Result<Hashes, Error>)>>,
    threads: Vec<thread::JoinHandle<()>>,
    next_in: u64,
    next_out: u64,
    done: BTreeMap<u64, Result<Hashes, Error>>,
}

impl Hasher {
    pub fn new(targets: Vec<Arc<TargetDisk>>) -> Self {
        Self {
            targets,
            tx: None,
            rx: None,
            threads: Vec::new(),
            next_in: 0,
            next_out: 0,
            done: BTreeMap::new(),
        }
    }

    /// Requests taken and not yet answered.
    pub fn pending(&self) -> bool {
        self.next_out < self.next_in
    }

    /// Queues a request (already checked by the session: disk and ranges are in bounds).
    pub fn submit(&mut self, req: HashRequest) {
        if self.tx.is_none() {
            let (tx, jobs) = crossbeam_channel::unbounded::<(u64, HashRequest)>();
            let (results, rx) = mpsc::unbounded_channel();
            for i in 0..THREADS {
                let (jobs, results, targets) =
                    (jobs.clone(), results.clone(), self.targets.clone());
                let spawned = thread::Builder::new()
                    .name(format!("blockrep-hash{i}"))
                    .spawn(move || {
                        for (seq, req) in jobs {
                            let answer = digests(&targets[usize::from(req.disk)], &req);
                            if results.send((seq, answer)).is_err() {
                                return;
                            }
                        }
                    });
                if let Ok(t) = spawned {
                    self.threads.push(t);
                }
            }
            self.tx = Some(tx);
            self.rx = Some(rx);
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send((self.next_in, req));
        }
        self.next_in += 1;
    }

    /// The next answer in request order, once it is ready. Cancel safe.
    pub async fn next(&mut self) -> Option<Result<Hashes, Error>> {
        loop {
            if let Some(answer) = self.done.remove(&self.next_out) {
                self.next_out += 1;
                return Some(answer);
            }
            let (seq, answer) = self.rx.as_mut()?.recv().await?;
            self.done.insert(seq, answer);
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.tx = None;
        self.rx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The answer to `req`: every granule's digest (plain), or the fine digests of the granules
/// whose digest differs from the sender's (COMPARE); one read of each range either way.
fn digests(target: &TargetDisk, req: &HashRequest) -> Result<Hashes, Error> {
    let d = Digester::new(&req.key, req.digest_len, req.compare.as_ref());
    let n = usize::from(req.digest_len);
    let count = req.digest_count() as usize;
    let mut out = Vec::new();
    let mut differ = vec![0u8; count.div_ceil(8)];
    let mut fine = Vec::new();
    let mut i = 0usize;
    for r in &req.ranges {
        for_each_granule(
            |buf, at| target.read_uncached(buf, at),
            r.offset,
            u64::from(r.len),
            req.granularity,
            |granule| {
                fine.clear();
                let digest = d.granule(granule, &mut fine);
                match &req.compare {
                    None => out.extend_from_slice(&digest[..n]),
                    Some(c) => {
                        if c.digests.get(i * n..i * n + n) != Some(&digest[..n]) {
                            if let Some(byte) = differ.get_mut(i / 8) {
                                *byte |= 1 << (i % 8);
                            }
                            out.extend_from_slice(&fine);
                        }
                    }
                }
                i += 1;
            },
        )?;
    }
    let mut answer = Hashes::plain(req.disk, req.digest_len, out.into());
    if req.compare.is_some() {
        answer.count = count as u32;
        answer.differ = Some(differ.into());
    }
    Ok(answer)
}
