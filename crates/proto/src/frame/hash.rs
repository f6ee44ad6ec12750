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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameType;
    use crate::testutil::{self, assert_truncated, body, decode_one, raw_frame, reject, Body};
    use crate::Frame;

    const KEY: [u8; 32] = [0x4b; 32];
    /// Bytes before a HASH_REQUEST's ranges.
    const REQUEST_FIXED: usize = 2 + 1 + 1 + 4 + 32 + 2;

    /// A HASH_REQUEST body up to its range count.
    fn request_head(digest_len: u8, reserved: u8, granularity: u32, count: u16) -> Body {
        Body::new()
            .u16(3)
            .u8(digest_len)
            .u8(reserved)
            .u32(granularity)
            .bytes(&KEY)
            .u16(count)
    }

    /// A whole HASH_REQUEST body with these ranges (and a count that matches).
    fn request(digest_len: u8, granularity: u32, ranges: &[(u64, u32)]) -> Vec<u8> {
        let mut b = request_head(digest_len, 0, granularity, ranges.len() as u16);
        for &(offset, len) in ranges {
            b = b.u64(offset).u32(len);
        }
        b.0
    }

    /// A HASHES body up to its digest count.
    fn hashes_head(digest_len: u8, reserved: u8, count: u32) -> Body {
        Body::new().u16(3).u8(digest_len).u8(reserved).u32(count)
    }

    #[track_caller]
    fn accept_request(b: &[u8]) -> HashRequest {
        match decode_one(&raw_frame(FrameType::HashRequest, b)) {
            Ok(Some(Frame::HashRequest(r))) => r,
            other => panic!("{other:?}"),
        }
    }

    #[track_caller]
    fn accept_hashes(b: &[u8]) -> Hashes {
        match decode_one(&raw_frame(FrameType::Hashes, b)) {
            Ok(Some(Frame::Hashes(h))) => h,
            other => panic!("{other:?}"),
        }
    }

    #[track_caller]
    fn assert_bad_request(b: &[u8]) {
        assert_eq!(
            reject(FrameType::HashRequest, b),
            DecodeError::BadHashRequest
        );
    }

    #[test]
    fn encodes_as_documented() {
        let expected = Body::new()
            .u16(0)
            .u8(8)
            .u8(0)
            .u32(16 << 10)
            .bytes(&KEY)
            .u16(2)
            .u64(0)
            .u32(64 << 10)
            .u64(1 << 20)
            .u32(20 << 10)
            .0;
        let req = testutil::hash_request(0);
        assert_eq!(body(&Frame::HashRequest(req.clone())), expected);
        let mut expected = Body::new().u16(0).u8(8).u8(0).u32(6);
        for i in 1..=6u8 {
            expected = expected.bytes(&[i; 8]);
        }
        let hashes = testutil::hashes_for(&req, 1);
        assert_eq!(body(&Frame::Hashes(hashes)), expected.0);
    }

    #[test]
    fn counts_one_digest_per_granule_the_last_one_short() {
        let req = testutil::hash_request(0);
        assert_eq!(req.digest_count(), 4 + 2);
        assert_eq!(req.byte_count(), (64 << 10) + (20 << 10));
        let hashes = testutil::hashes_for(&req, 1);
        assert_eq!(hashes.count(), 6);
        assert_eq!(hashes.digest(0), Some(&[1u8; 8][..]));
        assert_eq!(hashes.digest(5), Some(&[6u8; 8][..]));
        assert_eq!(hashes.digest(6), None);
        assert_eq!(hashes.digest(usize::MAX), None);
    }

    #[test]
    fn accepts_limits() {
        // Both digest lengths at their bounds, both granularities, and a range that ends at
        // the last byte of the u64 space.
        for digest_len in [MIN_HASH_DIGEST_LEN, DIGEST_LEN as u8] {
            for granularity in [MIN_HASH_GRANULARITY, MAX_HASH_GRANULARITY] {
                let offset = u64::MAX - u64::from(granularity) + 1;
                let b = request(digest_len, granularity, &[(offset, granularity - 1)]);
                let r = accept_request(&b);
                assert_eq!((r.digest_len, r.granularity), (digest_len, granularity));
            }
        }
        // The most ranges.
        let ranges: Vec<(u64, u32)> = (0..u64::from(MAX_HASH_RANGES))
            .map(|i| (i << 12, 1))
            .collect();
        let b = request(8, 4096, &ranges);
        assert_eq!(b.len(), MAX_REQUEST_BODY as usize);
        assert_eq!(
            accept_request(&b).ranges.len(),
            usize::from(MAX_HASH_RANGES)
        );
        // The most digests, and the most bytes.
        let r = accept_request(&request(8, 4096, &[(0, MAX_HASHES_PER_REQUEST * 4096)]));
        assert_eq!(r.digest_count(), u64::from(MAX_HASHES_PER_REQUEST));
        let r = accept_request(&request(8, 64 << 20, &[(0, MAX_HASH_REQUEST_BYTES as u32)]));
        assert_eq!(r.byte_count(), MAX_HASH_REQUEST_BYTES);
        // HASHES: none (the session judges the count), and the most, at the longest digest.
        assert_eq!(accept_hashes(&hashes_head(8, 0, 0).0).count(), 0);
        let b = hashes_head(32, 0, MAX_HASHES_PER_REQUEST)
            .bytes(&vec![0xab; MAX_HASHES_PER_REQUEST as usize * 32])
            .0;
        assert_eq!(b.len(), MAX_HASHES_BODY as usize);
        assert_eq!(accept_hashes(&b).count(), MAX_HASHES_PER_REQUEST as usize);
    }

    #[test]
    fn rejects_digest_len_out_of_range() {
        for digest_len in [0, 1, MIN_HASH_DIGEST_LEN - 1, DIGEST_LEN as u8 + 1, u8::MAX] {
            assert_bad_request(&request(digest_len, 4096, &[(0, 4096)]));
            let n = usize::from(digest_len);
            let b = hashes_head(digest_len, 0, 1).bytes(&vec![0; n]).0;
            assert_eq!(
                reject(FrameType::Hashes, &b),
                DecodeError::BadHashRequest,
                "{digest_len}"
            );
        }
    }

    #[test]
    fn rejects_nonzero_reserved() {
        for v in [1, 0x80, 0xff] {
            let b = request_head(8, v, 4096, 1).u64(0).u32(4096).0;
            assert_eq!(
                reject(FrameType::HashRequest, &b),
                DecodeError::NonzeroReserved
            );
            let b = hashes_head(8, v, 1).bytes(&[0; 8]).0;
            assert_eq!(reject(FrameType::Hashes, &b), DecodeError::NonzeroReserved);
        }
    }

    #[test]
    fn rejects_granularity_not_a_power_of_two() {
        for granularity in [0, 4097, 12 << 10, 3 << 20, (64 << 20) - 1, u32::MAX] {
            assert_bad_request(&request(8, granularity, &[(0, 4096)]));
        }
    }

    #[test]
    fn rejects_granularity_out_of_range() {
        // Powers of two, but below 4 KiB or above 64 MiB.
        for granularity in [1, 512, 2048, 128 << 20, 1 << 31] {
            assert_bad_request(&request(8, granularity, &[(0, 4096)]));
        }
    }

    #[test]
    fn rejects_zero_ranges() {
        assert_bad_request(&request(8, 4096, &[]));
    }

    #[test]
    fn rejects_range_count_over_the_max() {
        // All the ranges present: the header refuses the body's length first.
        let ranges: Vec<(u64, u32)> = (0..=u64::from(MAX_HASH_RANGES))
            .map(|i| (i << 12, 1))
            .collect();
        let b = request(8, 4096, &ranges);
        let len = b.len() as u32;
        assert_eq!(
            reject(FrameType::HashRequest, &b),
            DecodeError::TooLong {
                len,
                max: MAX_REQUEST_BODY
            }
        );
        // A count over the maximum in a body that fits.
        for count in [MAX_HASH_RANGES + 1, u16::MAX] {
            let b = request_head(8, 0, 4096, count).u64(0).u32(1).0;
            assert_bad_request(&b);
        }
    }

    #[test]
    fn rejects_range_count_above_the_bytes_present() {
        // Refused on the count, before anything is allocated for it (not as a truncated read
        // after a Vec of `count` ranges was reserved).
        for count in [2, 100, MAX_HASH_RANGES] {
            let b = request_head(8, 0, 4096, count).u64(0).u32(4096).0;
            assert_bad_request(&b);
        }
        // One byte short of the last range.
        let mut b = request(8, 4096, &[(0, 4096), (4096, 4096)]);
        b.pop();
        assert_bad_request(&b);
    }

    #[test]
    fn rejects_empty_range() {
        assert_bad_request(&request(8, 4096, &[(0, 4096), (8192, 0)]));
    }

    #[test]
    fn rejects_unaligned_offset() {
        for (granularity, offset) in [
            (4096, 1),
            (4096, 2048),
            (4096, 4095),
            (8192, 4096),
            (64 << 20, 32 << 20),
            (4096, u64::MAX),
        ] {
            assert_bad_request(&request(8, granularity, &[(offset, 1)]));
        }
    }

    #[test]
    fn rejects_overflowing_range() {
        let last = u64::MAX - 4095; // aligned to 4 KiB
        for (offset, len) in [
            (last, 4096),
            (last, u32::MAX),
            (u64::MAX - (1 << 26) + 1, 1 << 26),
        ] {
            let granularity = if len == 1 << 26 { 1 << 26 } else { 4096 };
            assert_bad_request(&request(8, granularity, &[(offset, len)]));
        }
    }

    #[test]
    fn rejects_too_many_digests() {
        let max = MAX_HASHES_PER_REQUEST;
        for ranges in [
            vec![(0, (max + 1) * 4096)],
            // The last granule a short one.
            vec![(0, max * 4096 + 1)],
            // Across ranges.
            vec![(0, max * 4096), (1 << 40, 1)],
            vec![(0, (max / 2) * 4096), (1 << 30, (max / 2 + 1) * 4096)],
        ] {
            assert_bad_request(&request(8, 4096, &ranges));
        }
    }

    #[test]
    fn rejects_too_many_bytes() {
        // Few digests, but more than a GiB to read.
        let max = MAX_HASH_REQUEST_BYTES as u32;
        assert_bad_request(&request(8, 64 << 20, &[(0, max + 1)]));
        assert_bad_request(&request(8, 64 << 20, &[(0, max), (1 << 40, 1)]));
        assert_bad_request(&request(8, 64 << 20, &[(0, u32::MAX), (1 << 40, u32::MAX)]));
    }

    #[test]
    fn rejects_truncated_request() {
        let b = body(&Frame::HashRequest(testutil::hash_request(0)));
        // Cut among the ranges, the count no longer fits the bytes: that is the (earlier)
        // count check.
        for n in REQUEST_FIXED..b.len() {
            assert_bad_request(&b[..n]);
        }
        assert_truncated(FrameType::HashRequest, &b[..REQUEST_FIXED], 0);
    }

    #[test]
    fn rejects_request_trailing_bytes() {
        let mut b = body(&Frame::HashRequest(testutil::hash_request(0)));
        b.push(0);
        assert_eq!(
            reject(FrameType::HashRequest, &b),
            DecodeError::TrailingBytes
        );
    }

    #[test]
    fn rejects_digest_count_over_the_max() {
        // All the digests present (8 bytes each, so the body fits): the count refuses them.
        let n = MAX_HASHES_PER_REQUEST + 1;
        let b = hashes_head(8, 0, n).bytes(&vec![0; n as usize * 8]).0;
        assert!(b.len() <= MAX_HASHES_BODY as usize);
        assert_eq!(reject(FrameType::Hashes, &b), DecodeError::BadHashRequest);
        // And with none present: refused on the count, not as truncated.
        for count in [n, u32::MAX] {
            let b = hashes_head(32, 0, count).0;
            assert_eq!(reject(FrameType::Hashes, &b), DecodeError::BadHashRequest);
        }
    }

    #[test]
    fn rejects_truncated_hashes() {
        let b = body(&Frame::Hashes(testutil::hashes_for(
            &testutil::hash_request(0),
            1,
        )));
        assert_truncated(FrameType::Hashes, &b, 0);
    }

    #[test]
    fn rejects_hashes_trailing_bytes() {
        let req = testutil::hash_request(0);
        let mut b = body(&Frame::Hashes(testutil::hashes_for(&req, 1)));
        // A partial digest after the last one, and a whole one more than the count says.
        b.push(0);
        assert_eq!(reject(FrameType::Hashes, &b), DecodeError::TrailingBytes);
        b.extend_from_slice(&[0; 7]);
        assert_eq!(reject(FrameType::Hashes, &b), DecodeError::TrailingBytes);
    }
}
