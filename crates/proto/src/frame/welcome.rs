//! WELCOME (0x02), receiver to sender, the answer to an accepted HELLO.
//!
//! ```text
//! version u16 | receiver_version str | disk_count u16 |
//! disk_count x ( extent_count u32 | extent_count x ( offset u64 | length u64 ) )
//! ```
//!
//! `held` lists, per announced disk and in HELLO order, the byte ranges the receiver already
//! holds durably for this session, so a resuming sender can skip them.

use bytes::BufMut;

use crate::codec::{is_printable, put_string, string_len, Reader};
use crate::consts::*;
use crate::error::DecodeError;

/// Largest WELCOME body.
pub(super) const MAX_BODY: u32 =
    (2 + 2 + MAX_VERSION_STR_LEN + 2 + MAX_DISKS as usize * 4 + MAX_HELD_EXTENTS as usize * 16)
        as u32;

/// A byte range of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes, at least 1; `offset + len` does not overflow.
    pub len: u64,
}

/// The receiver's answer to an accepted HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version chosen, within the HELLO's range.
    pub version: u16,
    /// The receiver's software version, printable ASCII, at most 64 bytes.
    pub receiver_version: String,
    /// Per announced disk, in HELLO order: the ranges already durable on the target for this
    /// session. At most `MAX_HELD_EXTENTS` over all disks.
    pub held: Vec<Vec<Extent>>,
}

impl Welcome {
    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        let version = r.u16()?;
        if version == 0 {
            return Err(DecodeError::BadVersion);
        }
        let receiver_version = r.string(MAX_VERSION_STR_LEN)?;
        if !is_printable(&receiver_version, MAX_VERSION_STR_LEN) {
            return Err(DecodeError::BadString);
        }
        let disks = r.u16()?;
        if disks > MAX_DISKS {
            return Err(DecodeError::BadDiskCount);
        }
        let mut held = Vec::with_capacity(usize::from(disks));
        let mut total: u32 = 0;
        for _ in 0..disks {
            let count = r.u32()?;
            total = total.saturating_add(count);
            // The count is checked against the limit and against the bytes actually present
            // before anything is allocated for it.
            if total > MAX_HELD_EXTENTS || count as usize > r.remaining() / 16 {
                return Err(DecodeError::BadExtentCount);
            }
            let mut extents = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let offset = r.u64()?;
                let len = r.u64()?;
                if len == 0 || offset.checked_add(len).is_none() {
                    return Err(DecodeError::BadExtent);
                }
                extents.push(Extent { offset, len });
            }
            held.push(extents);
        }
        Ok(Self {
            version,
            receiver_version,
            held,
        })
    }

    pub(super) fn body_len(&self) -> usize {
        2 + string_len(&self.receiver_version)
            + 2
            + self.held.iter().map(|e| 4 + 16 * e.len()).sum::<usize>()
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u16(self.version);
        put_string(dst, &self.receiver_version);
        dst.put_u16(self.held.len() as u16);
        for extents in &self.held {
            dst.put_u32(extents.len() as u32);
            for e in extents {
                dst.put_u64(e.offset);
                dst.put_u64(e.len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameType;
    use crate::testutil::{self, assert_truncated, body, decode_one, reject, Body};
    use crate::Frame;

    fn head(version: u16, receiver: &[u8], disks: u16) -> Body {
        Body::new().u16(version).str(receiver).u16(disks)
    }

    /// One disk holding `count` extents, all present.
    fn extents(b: Body, count: u32) -> Body {
        let mut b = b.u32(count);
        for i in 0..u64::from(count) {
            b = b.u64(i * 2).u64(1);
        }
        b
    }

    #[test]
    fn encodes_as_documented() {
        let expected = head(1, b"blockrep 0.1.0", 2)
            .u32(1)
            .u64(4096)
            .u64(8192)
            .u32(0)
            .0;
        assert_eq!(body(&Frame::Welcome(testutil::welcome(2))), expected);
    }

    #[test]
    fn accepts_limits() {
        // No disks (the sender checks the count against its HELLO), an extent ending at 2^64,
        // and the most extents allowed.
        let b = head(u16::MAX, b"", 0).0;
        assert!(decode_one(&testutil::raw_frame(FrameType::Welcome, &b)).is_ok());
        let b = head(1, b"", 1).u32(1).u64(u64::MAX - 1).u64(1).0;
        assert!(decode_one(&testutil::raw_frame(FrameType::Welcome, &b)).is_ok());
        let b = extents(head(1, b"v", 1), MAX_HELD_EXTENTS).0;
        assert!(b.len() <= MAX_BODY as usize);
        let Ok(Some(Frame::Welcome(w))) = decode_one(&testutil::raw_frame(FrameType::Welcome, &b))
        else {
            panic!("refused the maximum");
        };
        assert_eq!(w.held[0].len(), MAX_HELD_EXTENTS as usize);
    }

    #[test]
    fn rejects_version_zero() {
        let b = head(0, b"v", 0).0;
        assert_eq!(reject(FrameType::Welcome, &b), DecodeError::BadVersion);
    }

    #[test]
    fn rejects_receiver_version_too_long() {
        let long = "v".repeat(MAX_VERSION_STR_LEN + 1);
        let b = head(1, long.as_bytes(), 0).0;
        assert_eq!(reject(FrameType::Welcome, &b), DecodeError::StringTooLong);
    }

    #[test]
    fn rejects_invalid_utf8() {
        let b = head(1, b"\xff", 0).0;
        assert_eq!(reject(FrameType::Welcome, &b), DecodeError::BadString);
    }

    #[test]
    fn rejects_non_printable_receiver_version() {
        for v in [&b"1\n"[..], b"\x1b]", b"\x00", "é".as_bytes()] {
            let b = head(1, v, 0).0;
            assert_eq!(
                reject(FrameType::Welcome, &b),
                DecodeError::BadString,
                "{v:?}"
            );
        }
    }

    #[test]
    fn rejects_too_many_disks() {
        let b = head(1, b"v", MAX_DISKS + 1).0;
        assert_eq!(reject(FrameType::Welcome, &b), DecodeError::BadDiskCount);
    }

    #[test]
    fn rejects_extent_count_over_the_max() {
        // All the extents are there: the limit itself refuses them.
        let b = extents(head(1, b"v", 1), MAX_HELD_EXTENTS + 1).0;
        assert!(b.len() <= MAX_BODY as usize);
        assert_eq!(reject(FrameType::Welcome, &b), DecodeError::BadExtentCount);
    }

    #[test]
    fn rejects_extent_count_over_the_max_across_disks() {
        let b = extents(extents(head(1, b"v", 2), MAX_HELD_EXTENTS), 1).0;
        assert!(b.len() <= MAX_BODY as usize);
        assert_eq!(reject(FrameType::Welcome, &b), DecodeError::BadExtentCount);
    }

    #[test]
    fn rejects_extent_count_above_the_bytes_present() {
        // Refused before anything is allocated for the count: u32::MAX extents would be 64 GiB.
        for count in [u32::MAX, MAX_HELD_EXTENTS, 2] {
            let b = head(1, b"v", 1).u32(count).u64(0).u64(1).0;
            assert_eq!(
                reject(FrameType::Welcome, &b),
                DecodeError::BadExtentCount,
                "{count}"
            );
        }
    }

    #[test]
    fn rejects_empty_extent() {
        let b = head(1, b"v", 1).u32(1).u64(4096).u64(0).0;
        assert_eq!(reject(FrameType::Welcome, &b), DecodeError::BadExtent);
    }

    #[test]
    fn rejects_overflowing_extent() {
        for (offset, len) in [
            (u64::MAX, 1),
            (1, u64::MAX),
            (u64::MAX / 2 + 1, u64::MAX / 2 + 1),
        ] {
            let b = head(1, b"v", 1).u32(1).u64(offset).u64(len).0;
            assert_eq!(reject(FrameType::Welcome, &b), DecodeError::BadExtent);
        }
    }

    #[test]
    fn rejects_truncated() {
        let mut w = testutil::welcome(3);
        w.held[2].push(Extent { offset: 0, len: 1 });
        let b = body(&Frame::Welcome(w));
        // Cut inside an extent list, the count no longer fits the bytes: that is the
        // (earlier) count check, not a truncated read.
        let counts = [2 + 2 + 14 + 2, 2 + 2 + 14 + 2 + 4 + 16 + 4];
        for n in 0..b.len() {
            let expected = if counts.iter().any(|&c| n >= c + 4 && n < c + 4 + 16) {
                DecodeError::BadExtentCount
            } else {
                DecodeError::Truncated
            };
            assert_eq!(reject(FrameType::Welcome, &b[..n]), expected, "cut at {n}");
        }
        assert_truncated(FrameType::Welcome, &b[..2 + 2 + 14 + 2 + 4], 0);
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut b = body(&Frame::Welcome(testutil::welcome(2)));
        b.push(0);
        assert_eq!(reject(FrameType::Welcome, &b), DecodeError::TrailingBytes);
    }
}
