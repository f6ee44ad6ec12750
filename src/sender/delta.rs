//! Hash delta: find and send the ranges whose contents differ on the target, without a change
//! bitmap, reading each side once.
//!
//! The sender reads a piece of the source (16 MiB at most), digests it at two levels in one
//! pass (4 KiB fine granules; 16 KiB granules digested from their fine digests) and sends the
//! granule digests in a COMPARE HASH_REQUEST, keeping the piece in memory. The receiver reads
//! the same piece of its target, digests it the same way and answers with the fine digests
//! of the granules that differ. The sender compares those with its own and streams the fine
//! granules that differ straight from the piece it holds, while later pieces are being
//! compared. 5% of 4 KiB blocks changed at random touches about 19% of 16 KiB granules, so
//! about 0.6 MB of digests per GiB cross the wire. Digests are blake3 keyed with a random key
//! per round, truncated to 8 bytes: a collision cannot be aimed at, and by chance it is 2^-64
//! per compared pair.

use blockrep_blockmap::ExtentSet;
use blockrep_disk::{AlignedBuf, SourceDisk};
use blockrep_proto::consts::MAX_COMPARE_FINE;
use blockrep_proto::{Compare, HashRange, HashRequest, Hashes};

use crate::digests::Digester;
use crate::Error;

/// Granule: small enough that scattered changes leave most granules clean.
const COARSE: u32 = 16 << 10;
/// Fine granule: the block size of the filesystems being migrated.
const FINE: u32 = 4 << 10;
/// Bytes per digest, both levels.
const DIGEST_LEN: u8 = 8;
/// Most bytes one piece holds.
const MAX_PIECE: u32 = 16 << 20;
const _: () = assert!(MAX_PIECE / FINE <= MAX_COMPARE_FINE);

/// The piece length for a window of `window` bytes: a quarter of it (so several pieces are
/// compared at once), in whole granules, from one granule to `MAX_PIECE`.
pub(crate) fn piece_len(window: u64) -> u32 {
    let quarter = (window / 4).min(u64::from(MAX_PIECE)) as u32;
    (quarter / COARSE * COARSE).max(COARSE)
}

/// What is compared, per disk: each plan widened to whole granules (within the disk). Cut it
/// into pieces with `plan::chunks(.., piece_len(..))`.
pub(crate) fn compared(plans: &[ExtentSet], sizes: &[u64]) -> Vec<ExtentSet> {
    plans
        .iter()
        .zip(sizes)
        .map(|(plan, &size)| plan.aligned(u64::from(COARSE)).clip(0, size))
        .collect()
}

/// A piece of a source, read and digested, held until the receiver has compared it.
pub(crate) struct Probe {
    pub disk: u16,
    pub offset: u64,
    pub data: AlignedBuf,
    /// Our fine digests, `DIGEST_LEN` bytes each, in order.
    fine: Vec<u8>,
    pub request: HashRequest,
}

impl Probe {
    /// Reads `len` bytes at `offset` of `source` into `buf` (of that length) and digests
    /// them.
    pub fn read(
        source: &SourceDisk,
        disk: u16,
        offset: u64,
        len: u32,
        key: &[u8; 32],
        mut buf: AlignedBuf,
    ) -> Result<Self, Error> {
        debug_assert_eq!(buf.len(), len as usize);
        source.read_uncached(&mut buf, offset)?;
        let d = Digester {
            key,
            len: DIGEST_LEN,
            fine: Some(FINE as usize),
        };
        let n = usize::from(DIGEST_LEN);
        let granules = buf.len().div_ceil(COARSE as usize);
        let mut ours = Vec::with_capacity(granules * n);
        let mut fine = Vec::with_capacity(buf.len().div_ceil(FINE as usize) * n);
        for g in buf.chunks(COARSE as usize) {
            ours.extend_from_slice(&d.granule(g, &mut fine)[..n]);
        }
        let request = HashRequest {
            disk,
            digest_len: DIGEST_LEN,
            granularity: COARSE,
            key: *key,
            ranges: vec![HashRange { offset, len }],
            compare: Some(Compare {
                fine: FINE,
                digests: ours.into(),
            }),
        };
        Ok(Self {
            disk,
            offset,
            data: buf,
            fine,
            request,
        })
    }

    /// The fine granules that differ on the target, by the receiver's answer (which the
    /// session checked has the request's shape).
    pub fn differing(&self, hashes: &Hashes) -> ExtentSet {
        let n = usize::from(DIGEST_LEN);
        let per = (COARSE / FINE) as usize;
        let mut out = ExtentSet::new();
        let mut theirs = 0usize;
        for (i, g) in self.request.granules().enumerate() {
            if !hashes.differs(i) {
                continue;
            }
            let end = g.offset + u64::from(g.len);
            for j in 0..u64::from(g.len).div_ceil(u64::from(FINE)) as usize {
                let k = i * per + j;
                let ours = self.fine.get(k * n..k * n + n);
                if ours != hashes.digest(theirs) {
                    let at = g.offset + (j as u64) * u64::from(FINE);
                    out.insert(at, (end - at).min(u64::from(FINE)));
                }
                theirs += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_quarter_windows_in_whole_granules() {
        assert_eq!(piece_len(64 << 20), 16 << 20);
        assert_eq!(piece_len(1 << 30), MAX_PIECE);
        assert_eq!(piece_len(1 << 20), 256 << 10);
        assert_eq!(piece_len(100_000), COARSE);
        assert_eq!(piece_len(0), COARSE);
    }
}
