//! HASH_REQUEST (0x30), sender to receiver, and HASHES (0x31), the answer: the hash delta and
//! the consistency check.
//!
//! ```text
//! HASH_REQUEST: disk u16 | digest_len u8 | flags u8 | granularity u32 | key [32] |
//!               count u16 | count x ( offset u64 | length u32 ) |
//!               if COMPARE: fine u32 | one digest per granule (the sender's)
//! HASHES:       disk u16 | digest_len u8 | flags u8 | count u32 |
//!               plain:   count x digest
//!               COMPARE: bitmap ceil(count / 8) bytes | fine digests of each granule whose bit is set
//! ```
//!
//! Plain form: the receiver reads each requested range of its target and answers, in request
//! order, with one digest per granule: blake3 keyed with `key` over the granule's bytes (the
//! last granule of a range may be shorter), truncated to `digest_len` bytes. The key is chosen
//! by the sender per request, so nobody who writes data on the source can aim for a collision.
//!
//! COMPARE form (flag bit 0), the hash delta in one read of each side: every granule is cut
//! into fine granules of `fine` bytes, and a granule's digest is the keyed blake3 of its fine
//! digests (each keyed blake3 of the bytes, truncated to `digest_len`) laid end to end. The
//! sender sends its own granule digests; the receiver computes its fine and granule digests
//! in one pass, sets bit `i` of the bitmap (`1 << (i % 8)` of byte `i / 8`) where granule `i`
//! differs, and sends its fine digests of those granules only. The sender compares them with
//! its own and sends the fine granules that differ.

use bytes::{BufMut, Bytes};

use crate::codec::Reader;
use crate::consts::*;
use crate::error::DecodeError;

/// The COMPARE flag of HASH_REQUEST and HASHES.
const COMPARE: u8 = 1;
/// Bytes of a HASH_REQUEST before its ranges.
const REQUEST_FIXED: usize = 2 + 1 + 1 + 4 + 32 + 2;

/// Largest HASH_REQUEST body: the most ranges, and the sender's digests at the longest.
pub(super) const MAX_REQUEST_BODY: u32 =
    (REQUEST_FIXED + MAX_HASH_RANGES as usize * 12 + 4 + MAX_COMPARE_FINE as usize * DIGEST_LEN)
        as u32;
/// Largest HASHES body: a plain one (the COMPARE form's bitmap and fine digests, at most
/// `MAX_COMPARE_FINE` of each, take less).
pub(super) const MAX_HASHES_BODY: u32 = 2 + 1 + 1 + 4 + MAX_HASHES_PER_REQUEST * 32;

/// One range whose digests are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashRange {
    /// First byte; a multiple of the request's granularity.
    pub offset: u64,
    /// Bytes, at least 1.
    pub len: u32,
}

/// The COMPARE part of a request: the sender's own digests, for the receiver to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// Fine granule: a power of two, at least 4 KiB, smaller than the request's granularity.
    pub fine: u32,
    /// The sender's digest of each granule, `digest_len` bytes each, in range and granule
    /// order: keyed blake3 of the granule's fine digests.
    pub digests: Bytes,
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
    /// 1 to `MAX_HASH_RANGES` ranges; at most `MAX_HASHES_PER_REQUEST` granules (and
    /// `MAX_COMPARE_FINE` fine granules, for COMPARE) and `MAX_HASH_REQUEST_BYTES` bytes.
    pub ranges: Vec<HashRange>,
    /// `Some` for the COMPARE form.
    pub compare: Option<Compare>,
}

impl HashRequest {
    /// Granules: one digest each in a plain answer, one bit each in a COMPARE answer.
    /// Counted per range, not granule by granule: the decoder calls it on a peer's request
    /// before refusing one that asks for too many.
    pub fn digest_count(&self) -> u64 {
        let g = u64::from(self.granularity.max(1));
        self.ranges
            .iter()
            .map(|r| u64::from(r.len).div_ceil(g))
            .sum()
    }

    /// Fine granules of a COMPARE request (0 for a plain one).
    pub fn fine_count(&self) -> u64 {
        let Some(c) = &self.compare else { return 0 };
        let f = u64::from(c.fine.max(1));
        self.ranges
            .iter()
            .map(|r| u64::from(r.len).div_ceil(f))
            .sum()
    }

    /// Bytes the receiver reads to answer.
    pub fn byte_count(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.len)).sum()
    }

    /// Every granule, in answer order (the last of a range may be short).
    pub fn granules(&self) -> impl Iterator<Item = HashRange> + '_ {
        let g = u64::from(self.granularity.max(1));
        self.ranges.iter().flat_map(move |r| {
            let end = r.offset + u64::from(r.len);
            (0..u64::from(r.len).div_ceil(g)).map(move |i| {
                let offset = r.offset + i * g;
                HashRange {
                    offset,
                    len: (end - offset).min(g) as u32,
                }
            })
        })
    }

    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        let (disk, digest_len, compare) = load_head(r)?;
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
        let mut req = Self {
            disk,
            digest_len,
            granularity,
            key,
            ranges,
            compare: None,
        };
        let digests = req.digest_count();
        if digests > u64::from(MAX_HASHES_PER_REQUEST) || req.byte_count() > MAX_HASH_REQUEST_BYTES
        {
            return Err(DecodeError::BadHashRequest);
        }
        if compare {
            let fine = r.u32()?;
            if !fine.is_power_of_two() || fine < MIN_HASH_GRANULARITY || fine >= granularity {
                return Err(DecodeError::BadHashRequest);
            }
            req.compare = Some(Compare {
                fine,
                digests: Bytes::new(),
            });
            if req.fine_count() > u64::from(MAX_COMPARE_FINE) {
                return Err(DecodeError::BadHashRequest);
            }
            let theirs = r.take(digests as usize * usize::from(digest_len))?;
            if let Some(c) = &mut req.compare {
                c.digests = theirs;
            }
        }
        Ok(req)
    }

    pub(super) fn body_len(&self) -> usize {
        REQUEST_FIXED
            + 12 * self.ranges.len()
            + self.compare.as_ref().map_or(0, |c| 4 + c.digests.len())
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u16(self.disk);
        dst.put_u8(self.digest_len);
        dst.put_u8(if self.compare.is_some() { COMPARE } else { 0 });
        dst.put_u32(self.granularity);
        dst.put_slice(&self.key);
        dst.put_u16(self.ranges.len() as u16);
        for r in &self.ranges {
            dst.put_u64(r.offset);
            dst.put_u32(r.len);
        }
        if let Some(c) = &self.compare {
            dst.put_u32(c.fine);
            dst.put_slice(&c.digests);
        }
    }
}

/// The head both frames share: disk, digest length (checked), and the COMPARE flag (the other
/// flag bits must be 0).
fn load_head(r: &mut Reader) -> Result<(u16, u8, bool), DecodeError> {
    let disk = r.u16()?;
    let digest_len = r.u8()?;
    if !(MIN_HASH_DIGEST_LEN..=DIGEST_LEN as u8).contains(&digest_len) {
        return Err(DecodeError::BadHashRequest);
    }
    let flags = r.u8()?;
    if flags & !COMPARE != 0 {
        return Err(DecodeError::NonzeroReserved);
    }
    Ok((disk, digest_len, flags & COMPARE != 0))
}

/// The receiver's digests for the oldest unanswered HASH_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    /// The disk, as in the request.
    pub disk: u16,
    /// Bytes per digest, as in the request.
    pub digest_len: u8,
    /// Granules answered for.
    pub count: u32,
    /// COMPARE answers: one bit per granule, set where the granule differs.
    pub differ: Option<Bytes>,
    /// Plain: one digest per granule. COMPARE: the fine digests of each differing granule.
    /// `digest_len` bytes each, in order.
    pub digests: Bytes,
}

impl Hashes {
    /// A plain answer: one digest per granule.
    pub fn plain(disk: u16, digest_len: u8, digests: Bytes) -> Self {
        Self {
            disk,
            digest_len,
            count: (digests.len() / usize::from(digest_len.max(1))) as u32,
            differ: None,
            digests,
        }
    }

    /// Digests carried.
    pub fn digest_total(&self) -> usize {
        self.digests.len() / usize::from(self.digest_len.max(1))
    }

    /// Digest `i`.
    pub fn digest(&self, i: usize) -> Option<&[u8]> {
        let n = usize::from(self.digest_len);
        self.digests
            .get(i.checked_mul(n)?..i.checked_mul(n)?.checked_add(n)?)
    }

    /// COMPARE answers: does granule `i` differ?
    pub fn differs(&self, i: usize) -> bool {
        self.differ
            .as_ref()
            .and_then(|b| b.get(i / 8))
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        let (disk, digest_len, compare) = load_head(r)?;
        let count = r.u32()?;
        if count > MAX_HASHES_PER_REQUEST {
            return Err(DecodeError::BadHashRequest);
        }
        let n = usize::from(digest_len);
        if !compare {
            let digests = r.take(count as usize * n)?;
            return Ok(Self::plain(disk, digest_len, digests));
        }
        if count > MAX_COMPARE_FINE {
            return Err(DecodeError::BadHashRequest);
        }
        let bitmap = r.take((count as usize).div_ceil(8))?;
        // Bits past the last granule are zero, so one answer has one encoding.
        if count % 8 != 0 && bitmap.last().is_some_and(|b| b >> (count % 8) != 0) {
            return Err(DecodeError::BadHashRequest);
        }
        let rest = r.remaining();
        if !rest.is_multiple_of(n) || rest / n > MAX_COMPARE_FINE as usize {
            return Err(DecodeError::BadHashRequest);
        }
        let digests = r.take(rest)?;
        Ok(Self {
            disk,
            digest_len,
            count,
            differ: Some(bitmap),
            digests,
        })
    }

    pub(super) fn body_len(&self) -> usize {
        8 + self.differ.as_ref().map_or(0, Bytes::len) + self.digests.len()
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u16(self.disk);
        dst.put_u8(self.digest_len);
        dst.put_u8(if self.differ.is_some() { COMPARE } else { 0 });
        dst.put_u32(self.count);
        if let Some(b) = &self.differ {
            dst.put_slice(b);
        }
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
        assert_eq!(hashes.digest_total(), 6);
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
        assert_eq!(b.len(), REQUEST_FIXED + 12 * usize::from(MAX_HASH_RANGES));
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
        assert_eq!(accept_hashes(&hashes_head(8, 0, 0).0).digest_total(), 0);
        let b = hashes_head(32, 0, MAX_HASHES_PER_REQUEST)
            .bytes(&vec![0xab; MAX_HASHES_PER_REQUEST as usize * 32])
            .0;
        assert_eq!(b.len(), MAX_HASHES_BODY as usize);
        assert_eq!(
            accept_hashes(&b).digest_total(),
            MAX_HASHES_PER_REQUEST as usize
        );
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
        // Bit 0 is COMPARE; every other bit is reserved.
        for v in [2, 0x80, 0xff] {
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
        // All the ranges present.
        let ranges: Vec<(u64, u32)> = (0..=u64::from(MAX_HASH_RANGES))
            .map(|i| (i << 12, 1))
            .collect();
        assert_bad_request(&request(8, 4096, &ranges));
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

    /// Found reviewing the `session` fuzz target's decoder calls: `digest_count` walked every
    /// granule, so the most ranges of nearly 4 GiB each at 4 KiB (a 49 KB frame, about 4
    /// billion granules) took seconds to refuse in a build with overflow checks (tests,
    /// fuzzing); only the optimizer made it cheap in release builds.
    #[test]
    fn refuses_a_request_for_billions_of_granules_at_once() {
        let ranges: Vec<(u64, u32)> = (0..u64::from(MAX_HASH_RANGES))
            .map(|i| (i << 32, u32::MAX - 4095))
            .collect();
        let b = request(8, 4096, &ranges);
        let start = std::time::Instant::now();
        assert_bad_request(&b);
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_millis(500), "{took:?}");
        // The same count as granule by granule.
        for (granularity, ranges) in [
            (
                4096,
                vec![(0, 1), (8192, 4096), (1 << 20, 4097), (1 << 30, 20 << 10)],
            ),
            (1 << 26, vec![(0, u32::MAX), (1 << 40, 1 << 26)]),
        ] {
            let req = HashRequest {
                disk: 0,
                digest_len: 8,
                granularity,
                key: KEY,
                ranges: ranges
                    .iter()
                    .map(|&(offset, len)| HashRange { offset, len })
                    .collect(),
                compare: None,
            };
            assert_eq!(req.digest_count(), req.granules().count() as u64);
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

    /// A COMPARE request body: `request(..)` and then the fine granule and `digests`.
    fn compare(granularity: u32, ranges: &[(u64, u32)], fine: u32, digests: &[u8]) -> Vec<u8> {
        let mut b = request(8, granularity, ranges);
        b[3] = 1;
        Body(b).u32(fine).bytes(digests).0
    }

    #[test]
    fn compare_encodes_as_documented() {
        let req = testutil::compare_request(0, 9);
        // 6 granules (4 of 16 KiB, one of 16 KiB and one of 4 KiB): 6 sender digests.
        let expected = Body(body(&Frame::HashRequest(HashRequest {
            compare: None,
            ..req.clone()
        })))
        .u32(4096)
        .bytes(&[9; 6 * 8])
        .0;
        let mut expected = expected;
        expected[3] = 1;
        assert_eq!(body(&Frame::HashRequest(req.clone())), expected);
        assert_eq!(accept_request(&expected), req);
        assert_eq!(req.fine_count(), 16 + 5);
        // Every granule differs: a bitmap of six bits, then 21 fine digests.
        let hashes = testutil::hashes_for(&req, 2);
        let mut expected = Body::new().u16(0).u8(8).u8(1).u32(6).u8(0b11_1111);
        for i in 0..21u8 {
            expected = expected.bytes(&[i + 2; 8]);
        }
        assert_eq!(body(&Frame::Hashes(hashes.clone())), expected.0);
        assert_eq!(accept_hashes(&expected.0), hashes);
        assert!((0..6).all(|i| hashes.differs(i)));
        assert!(!hashes.differs(6));
    }

    #[test]
    fn compare_rejects_bad_fine_granule() {
        // Not a power of two, below 4 KiB, not below the granularity.
        for fine in [0, 4097, 6144, 2048, 1, 16 << 10, 32 << 10, u32::MAX] {
            assert_bad_request(&compare(16 << 10, &[(0, 16 << 10)], fine, &[0; 8]));
        }
    }

    #[test]
    fn compare_rejects_wrong_digest_bytes() {
        // Two granules: 16 bytes of digests, neither fewer nor more.
        let ranges = [(0, 32 << 10)];
        assert_eq!(
            accept_request(&compare(16 << 10, &ranges, 4096, &[0; 16])).fine_count(),
            8
        );
        let short = compare(16 << 10, &ranges, 4096, &[0; 15]);
        assert_eq!(
            reject(FrameType::HashRequest, &short),
            DecodeError::Truncated
        );
        let long = compare(16 << 10, &ranges, 4096, &[0; 17]);
        assert_eq!(
            reject(FrameType::HashRequest, &long),
            DecodeError::TrailingBytes
        );
    }

    #[test]
    fn compare_rejects_too_many_fine_granules() {
        let max = MAX_COMPARE_FINE;
        // At the maximum, then one fine granule more (a short last one).
        let n = (max / 4) as usize;
        let b = compare(16 << 10, &[(0, max * 4096)], 4096, &vec![0; n * 8]);
        assert_eq!(accept_request(&b).fine_count(), u64::from(max));
        let b = compare(
            16 << 10,
            &[(0, max * 4096 + 1)],
            4096,
            &vec![0; (n + 1) * 8],
        );
        assert_bad_request(&b);
    }

    #[test]
    fn compare_answer_rejects_stray_bits_and_partial_digests() {
        // Five granules: the three high bits of the bitmap byte must be clear.
        for stray in [0b0010_0000u8, 0b1000_0000, 0xff] {
            let b = hashes_head(8, 1, 5).u8(stray).0;
            assert_eq!(reject(FrameType::Hashes, &b), DecodeError::BadHashRequest);
        }
        let ok = hashes_head(8, 1, 5).u8(0b1_0001).bytes(&[0; 16]).0;
        assert_eq!(accept_hashes(&ok).digest_total(), 2);
        // Fine digests that are not whole.
        let b = hashes_head(8, 1, 5).u8(1).bytes(&[0; 12]).0;
        assert_eq!(reject(FrameType::Hashes, &b), DecodeError::BadHashRequest);
        // A bitmap cut short.
        let b = hashes_head(8, 1, 9).u8(1).0;
        assert_truncated(FrameType::Hashes, &b, 0);
        // More granules than a COMPARE request may have.
        let b = hashes_head(8, 1, MAX_COMPARE_FINE + 1)
            .bytes(&vec![0; MAX_COMPARE_FINE as usize / 8 + 1])
            .0;
        assert_eq!(reject(FrameType::Hashes, &b), DecodeError::BadHashRequest);
    }
}
