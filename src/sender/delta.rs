//! Hash delta: find the ranges whose contents differ on the target, without a change bitmap.
//!
//! Two levels, both sides reading in parallel: the sender asks the receiver for digests of
//! every coarse granule (16 KiB) of the planned ranges while hashing its own copy at both the
//! coarse and the fine (4 KiB) granularity in one pass; where a coarse digest differs, it asks
//! for the fine digests of that granule only. 5% of 4 KiB blocks changed at random touches
//! about 19% of 16 KiB granules, so the receiver re-reads a fifth of the disk and about
//! 3.7 MB of digests cross the wire per 4 GiB. Digests are blake3 keyed with a random key per
//! round, truncated to 8 bytes: a collision cannot be aimed at, and by chance it is 2^-64 per
//! compared pair.

use std::collections::VecDeque;
use std::sync::Arc;

use blockrep_blockmap::ExtentSet;
use blockrep_disk::SourceDisk;
use blockrep_proto::consts::{
    MAX_HASHES_PER_REQUEST, MAX_HASH_RANGES, MAX_OUTSTANDING_HASH_REQUESTS,
};
use blockrep_proto::{HashRange, HashRequest, SenderEvent};
use tokio::task::JoinHandle;
use tracing::debug;

use super::connect::{peer_error, read_failure, Link};
use super::{Control, SendConfig};
use crate::digests::hash_range;
use crate::framed::write_frame;
use crate::Error;

/// Coarse granule: small enough that scattered changes leave most granules clean.
const COARSE: u32 = 16 << 10;
/// Fine granule: the block size of the filesystems being migrated.
const FINE: u32 = 4 << 10;
/// Bytes per digest, both levels.
const DIGEST_LEN: u8 = 8;
/// Bytes one coarse request covers (and one local hashing task reads).
const COARSE_REQUEST_BYTES: u64 = 256 << 20;
/// Fine granules per coarse granule.
const FINE_PER_COARSE: usize = (COARSE / FINE) as usize;

/// The sender's own digests for one coarse request.
struct Local {
    coarse: Vec<u8>,
    fine: Vec<u8>,
}

enum Level {
    /// Coarse digests of whole ranges; the local digests are computed from when the request
    /// is sent, so at most as many source reads run as requests are in flight.
    Coarse(Option<JoinHandle<Result<Local, Error>>>),
    /// Fine digests of coarse granules that differed; the local ones, in request order.
    Fine(Vec<u8>),
}

/// A request to send (or sent), with what to compare its answer against.
struct Work {
    request: HashRequest,
    level: Level,
}

/// The parts of `plans` (per disk) whose contents differ on the target.
pub(crate) async fn differing(
    link: &mut Link,
    sources: &[Arc<SourceDisk>],
    plans: &[ExtentSet],
    config: &SendConfig,
    control: &Control,
) -> Result<Vec<ExtentSet>, Error> {
    let key: [u8; 32] = rand::random();
    let mut result = vec![ExtentSet::new(); plans.len()];
    let mut to_send: VecDeque<Work> = VecDeque::new();
    for (disk, plan) in plans.iter().enumerate() {
        let size = sources[disk].size();
        for request in coarse_requests(disk as u16, plan, size, &key) {
            to_send.push_back(Work {
                request,
                level: Level::Coarse(None),
            });
        }
    }
    let mut in_flight: VecDeque<Work> = VecDeque::new();
    let (mut asked, mut compared) = (0u64, 0u64);
    while !(to_send.is_empty() && in_flight.is_empty()) {
        if control.is_stopped() {
            // STOP: ask nothing more and take the answers due (the session must be quiet
            // before END); the whole plan is left to the next round.
            to_send.clear();
            if in_flight.is_empty() {
                break;
            }
        }
        while in_flight.len() < MAX_OUTSTANDING_HASH_REQUESTS.min(4) {
            let Some(mut work) = to_send.pop_front() else {
                break;
            };
            if let Level::Coarse(local @ None) = &mut work.level {
                let source = &sources[usize::from(work.request.disk)];
                *local = Some(local_digests(source, &work.request));
            }
            let frame = link.session.request_hashes(work.request.clone());
            control.progress.wire.fetch_add(
                frame.encoded_len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            write_frame(&mut link.wr, &frame).await.map_err(|e| {
                Error::Transport(format!("sending HASH_REQUEST to {}: {e}", link.peer))
            })?;
            asked += work.request.digest_count();
            in_flight.push_back(work);
        }
        let frame = tokio::time::timeout(config.io_timeout, link.frames.recv())
            .await
            .map_err(|_| {
                Error::Transport(format!(
                    "no digests from {} within {} s",
                    link.peer,
                    config.io_timeout.as_secs()
                ))
            })?
            .unwrap_or(Ok(None))
            .map_err(|e| read_failure(e, &link.peer))?
            .ok_or_else(|| {
                Error::Transport(format!("the receiver {} closed the connection", link.peer))
            })?;
        let (request, hashes) = match link.session.handle_frame(frame)? {
            SenderEvent::Hashes { request, hashes } => (request, hashes),
            SenderEvent::PeerError(e) => return Err(peer_error(e)),
            other => {
                return Err(Error::Transport(format!(
                    "unexpected answer during the digest comparison: {other:?}"
                )))
            }
        };
        let work = in_flight
            .pop_front()
            .expect("the session checked an answer was due");
        debug_assert_eq!(work.request, request);
        compared += hashes.count() as u64;
        let disk = usize::from(request.disk);
        match work.level {
            Level::Coarse(local) => {
                let local = local
                    .expect("local hashing starts when the request is sent")
                    .await
                    .map_err(|e| Error::Transport(format!("hashing the source failed: {e}")))??;
                let mut dirty = Vec::new();
                let mut fine_at = 0usize; // index of this granule's first fine digest
                for (i, granule) in granules(&request).enumerate() {
                    let fine_count = u64::from(granule.len).div_ceil(u64::from(FINE)) as usize;
                    if hashes.digest(i) != digest_at(&local.coarse, i) {
                        let n = usize::from(DIGEST_LEN);
                        let fine = local
                            .fine
                            .get(fine_at * n..(fine_at + fine_count) * n)
                            .unwrap_or_default();
                        dirty.push((granule, fine.to_vec()));
                    }
                    fine_at += fine_count;
                }
                for w in fine_requests(request.disk, dirty, &key) {
                    to_send.push_back(w);
                }
            }
            Level::Fine(local) => {
                for (i, granule) in granules(&request).enumerate() {
                    if hashes.digest(i) != digest_at(&local, i) {
                        result[disk].insert(granule.offset, u64::from(granule.len));
                    }
                }
            }
        }
    }
    if control.is_stopped() {
        return Ok(plans.to_vec());
    }
    debug!(
        asked,
        compared,
        differing = result.iter().map(ExtentSet::total).sum::<u64>(),
        "digest comparison done"
    );
    Ok(result)
}

fn digest_at(digests: &[u8], i: usize) -> Option<&[u8]> {
    let n = usize::from(DIGEST_LEN);
    digests.get(i * n..i * n + n)
}

/// Every granule of a request, in answer order.
fn granules(req: &HashRequest) -> impl Iterator<Item = HashRange> + '_ {
    let g = req.granularity;
    req.ranges.iter().flat_map(move |r| {
        let end = r.offset + u64::from(r.len);
        (0..u64::from(r.len).div_ceil(u64::from(g))).map(move |i| {
            let offset = r.offset + i * u64::from(g);
            HashRange {
                offset,
                len: (end - offset).min(u64::from(g)) as u32,
            }
        })
    })
}

/// Coarse requests covering `plan`, each range aligned to the coarse granule.
fn coarse_requests(disk: u16, plan: &ExtentSet, size: u64, key: &[u8; 32]) -> Vec<HashRequest> {
    let aligned = plan.aligned(u64::from(COARSE)).clip(0, size);
    let max_granules = u64::from(MAX_HASHES_PER_REQUEST);
    let mut out = Vec::new();
    let mut ranges = Vec::new();
    let mut granules = 0u64;
    let mut bytes = 0u64;
    let mut flush = |ranges: &mut Vec<HashRange>, granules: &mut u64, bytes: &mut u64| {
        if !ranges.is_empty() {
            out.push(HashRequest {
                disk,
                digest_len: DIGEST_LEN,
                granularity: COARSE,
                key: *key,
                ranges: std::mem::take(ranges),
            });
        }
        *granules = 0;
        *bytes = 0;
    };
    for e in aligned.iter() {
        let mut at = e.offset;
        while at < e.end() {
            let room =
                (COARSE_REQUEST_BYTES - bytes).min((max_granules - granules) * u64::from(COARSE));
            let len = (e.end() - at).min(room);
            ranges.push(HashRange {
                offset: at,
                len: len as u32,
            });
            granules += len.div_ceil(u64::from(COARSE));
            bytes += len;
            at += len;
            if bytes >= COARSE_REQUEST_BYTES
                || granules >= max_granules
                || ranges.len() >= usize::from(MAX_HASH_RANGES)
            {
                flush(&mut ranges, &mut granules, &mut bytes);
            }
        }
    }
    flush(&mut ranges, &mut granules, &mut bytes);
    out
}

/// Fine requests for the coarse granules that differed, with the local fine digests.
fn fine_requests(disk: u16, dirty: Vec<(HashRange, Vec<u8>)>, key: &[u8; 32]) -> Vec<Work> {
    let per_request =
        (MAX_HASHES_PER_REQUEST as usize / FINE_PER_COARSE).min(usize::from(MAX_HASH_RANGES));
    dirty
        .chunks(per_request)
        .map(|batch| Work {
            request: HashRequest {
                disk,
                digest_len: DIGEST_LEN,
                granularity: FINE,
                key: *key,
                ranges: batch.iter().map(|(r, _)| *r).collect(),
            },
            level: Level::Fine(batch.iter().flat_map(|(_, d)| d.iter().copied()).collect()),
        })
        .collect()
}

/// Reads a coarse request's ranges from the source once, hashing at both granularities.
fn local_digests(source: &Arc<SourceDisk>, req: &HashRequest) -> JoinHandle<Result<Local, Error>> {
    let (source, req) = (source.clone(), req.clone());
    tokio::task::spawn_blocking(move || {
        let mut local = Local {
            coarse: Vec::new(),
            fine: Vec::new(),
        };
        for r in &req.ranges {
            let (coarse, fine) = (&mut local.coarse, &mut local.fine);
            // One read, two digest levels: hash each piece at both granularities.
            hash_range(
                |buf: &mut [u8], at: u64| -> Result<(), Error> {
                    source.read_exact_at(buf, at)?;
                    source.drop_cache(at, buf.len() as u64);
                    for g in buf.chunks(FINE as usize) {
                        fine.extend_from_slice(
                            &blake3::keyed_hash(&req.key, g).as_bytes()[..usize::from(DIGEST_LEN)],
                        );
                    }
                    Ok(())
                },
                r.offset,
                u64::from(r.len),
                req.granularity,
                &req.key,
                req.digest_len,
                coarse,
            )?;
        }
        Ok(local)
    })
}
