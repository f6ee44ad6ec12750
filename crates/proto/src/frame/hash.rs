//! HASH_REQUEST (0x30), sender to receiver, and HASHES (0x31), the answer: the hash delta.
//!
//! ```text
//! HASH_REQUEST: disk u16 | digest_len u8 | reserved u8 (0) | granularity u32 | key [32] |
//!               count u16 | count x ( offset u64 | length u32 )
//! HASHES:       disk u16 | digest_len u8 | reserved u8 (0) | count u32 | count x digest
//! ```
//!
//! The receiver reads each requested range of its target and answers, in request order, with
//! one digest per granule: blake3 keyed with `key` over the granule's bytes (the last granule
//! of a range may be shorter), truncated to `digest_len` bytes. The key is chosen by the
//! sender per request, so nobody who writes data on the source can aim for a collision.

use bytes::BufMut;

use crate::codec::Reader;
use crate::consts::*;
use crate::error::DecodeError;

/// Largest HASH_REQUEST body.
pub(super) const MAX_REQUEST_BODY: u32 =
    (2 + 1 + 1 + 4 + 32 + 2 + MAX_HASH_RANGES as usize * 12) as u32;
/// Largest HASHES body.
pub(super) const MAX_HASHES_BODY: u32 = 2 + 1 + 1 + 4 + MAX_HASHES_PER_REQUEST * 32;

/// One range whose digests are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashRange {
    /// First byte; a multiple of the request's granularity.
    pub offset: u64,
    /// Bytes, at least 1.
    pub len: u32,
}

/// The sender asks for digests of ranges of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRequest {
    /// Index of the disk in the HELLO's list.
    pub disk: u16,
    /// Bytes of each digest, 8 to 32.
    pub digest_len: u8,
    /// Bytes per digest: a power of two from 4 KiB to 64 MiB.
    pub granularity: u32,
    /// The blake3 key.
    pub key: [u8; 32],
    /// 1 to `MAX_HASH_RANGES` ranges; at most `MAX_HASHES_PER_REQUEST` granules and
    /// `MAX_HASH_REQUEST_BYTES` bytes in all.
    pub ranges: Vec<HashRange>,
}

impl HashRequest {
    /// Digests the answer carries: one per granule of each range.
    pub fn digest_count(&self) -> u64 {
        let g = u64::from(self.granularity.max(1));
        self.ranges
            .iter()
            .map(|r| u64::from(r.len).div_ceil(g))
            .sum()
    }

    /// Bytes the receiver reads to answer.
    pub fn byte_count(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.len)).sum()
    }

    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        let disk = r.u16()?;
        let digest_len = r.u8()?;
        if !(MIN_HASH_DIGEST_LEN..=DIGEST_LEN as u8).contains(&digest_len) {
            return Err(DecodeError::BadHashRequest);
        }
        if r.u8()? != 0 {
            return Err(DecodeError::NonzeroReserved);
        }
        let granularity = r.u32()?;
        if !granularity.is_power_of_two()
            || !(MIN_HASH_GRANULARITY..=MAX_HASH_GRANULARITY).contains(&granularity)
        {
            return Err(DecodeError::BadHashRequest);
        }
        let key = r.digest()?;
        let count = r.u16()?;
        if count == 0 || count > MAX_HASH_RANGES || usize::from(count) * 12 > r.remaining() {
            return Err(DecodeError::BadHashRequest);
        }
        let mut ranges = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let offset = r.u64()?;
            let len = r.u32()?;
            if len == 0
                || offset % u64::from(granularity) != 0
                || offset.checked_add(u64::from(len)).is_none()
            {
                return Err(DecodeError::BadHashRequest);
            }
            ranges.push(HashRange { offset, len });
        }
        let req = Self {
            disk,
            digest_len,
            granularity,
            key,
            ranges,
        };
        if req.digest_count() > u64::from(MAX_HASHES_PER_REQUEST)
            || req.byte_count() > MAX_HASH_REQUEST_BYTES
        {
            return Err(DecodeError::BadHashRequest);
        }
        Ok(req)
    }

    pub(super) fn body_len(&self) -> usize {
        2 + 1 + 1 + 4 + 32 + 2 + 12 * self.ranges.len()
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u16(self.disk);
        dst.put_u8(self.digest_len);
        dst.put_u8(0);
        dst.put_u32(self.granularity);
        dst.put_slice(&self.key);
        dst.put_u16(self.ranges.len() as u16);
        for r in &self.ranges {
            dst.put_u64(r.offset);
            dst.put_u32(r.len);
        }
    }
}

/// The receiver's digests for the oldest unanswered HASH_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    /// The disk, as in the request.
    pub disk: u16,
    /// Bytes per digest, as in the request.
    pub digest_len: u8,
    /// The digests, `digest_len` bytes each, in range and granule order.
    pub digests: bytes::Bytes,
}

impl Hashes {
    /// Digests carried.
    pub fn count(&self) -> usize {
        self.digests.len() / usize::from(self.digest_len.max(1))
    }

    /// Digest `i`.
    pub fn digest(&self, i: usize) -> Option<&[u8]> {
        let n = usize::from(self.digest_len);
        self.digests
            .get(i.checked_mul(n)?..i.checked_mul(n)?.checked_add(n)?)
    }

    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        let disk = r.u16()?;
        let digest_len = r.u8()?;
        if !(MIN_HASH_DIGEST_LEN..=DIGEST_LEN as u8).contains(&digest_len) {
            return Err(DecodeError::BadHashRequest);
        }
        if r.u8()? != 0 {
            return Err(DecodeError::NonzeroReserved);
        }
        let count = r.u32()?;
        if count > MAX_HASHES_PER_REQUEST {
            return Err(DecodeError::BadHashRequest);
        }
        let digests = r.take(count as usize * usize::from(digest_len))?;
        Ok(Self {
            disk,
            digest_len,
            digests,
        })
    }

    pub(super) fn body_len(&self) -> usize {
        8 + self.digests.len()
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u16(self.disk);
        dst.put_u8(self.digest_len);
        dst.put_u8(0);
        dst.put_u32(self.count() as u32);
        dst.put_slice(&self.digests);
    }
}
