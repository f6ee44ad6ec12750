//! HELLO (0x01), sender to receiver, the first frame of a session.
//!
//! ```text
//! magic "BRP1" (4) | version_min u16 | version_max u16 | session_id str | agent_version str |
//! disk_count u16 | disk_count x ( id str | size u64 | block_size u32 ) | flags u8
//! ```
//!
//! Flag bit 0, VERIFY: the session only compares (HASH_REQUESTs, no DATA) the disks of the
//! migration session `session_id`. Flag bit 1, JOIN: another stream (TLS connection) of the
//! session `session_id`, which is open on a first connection: its DATA is part of that
//! session. Flag bit 2, NETCHECK: a network check, PINGs answered by PONGs and no data; its
//! HELLO announces no disks (every other HELLO at least one). At most one of the three; the
//! other bits are 0.

use bytes::BufMut;

use crate::codec::{is_identifier, is_printable, put_string, string_len, Reader};
use crate::consts::*;
use crate::error::DecodeError;

/// Largest HELLO body: every string and the disk list at their maxima.
pub(super) const MAX_BODY: u32 = (4
    + 2
    + 2
    + 2
    + MAX_SESSION_ID_LEN
    + 2
    + MAX_VERSION_STR_LEN
    + 2
    + MAX_DISKS as usize * (2 + MAX_DISK_ID_LEN + 8 + 4)
    + 1) as u32;

/// HELLO flag: a verification of session `session_id`.
const VERIFY: u8 = 1;
/// HELLO flag: another stream of the open session `session_id`.
const JOIN: u8 = 2;
/// HELLO flag: a network check (PING/PONG, no disks).
const NETCHECK: u8 = 4;

/// One disk the sender will send: the receiver maps `id` to a configured target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskAnnounce {
    /// The disk id: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// The source disk's size in bytes, 1 to `MAX_DISK_SIZE`.
    pub size: u64,
    /// The chunk size: a power of two from 4 KiB to 1 MiB. No DATA frame for this disk is
    /// longer.
    pub block_size: u32,
}

/// The sender's opening frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest protocol version the sender speaks (at least 1).
    pub version_min: u16,
    /// Newest protocol version the sender speaks (at least `version_min`).
    pub version_max: u16,
    /// The migration task id: 1 to 128 bytes of `A-Z a-z 0-9 . _ -`.
    pub session_id: String,
    /// The sender's software version, printable ASCII, at most 64 bytes.
    pub agent_version: String,
    /// The disks, 1 to `MAX_DISKS`, ids unique (uniqueness is a session rule).
    pub disks: Vec<DiskAnnounce>,
    /// A verification of the migration session `session_id`: it sends no DATA, and the
    /// receiver may refuse it when it does not know that session.
    pub verify: bool,
    /// Another stream of the session `session_id`, open on a first connection of the same
    /// client with the same disks; the receiver refuses it otherwise. Not with `verify`.
    pub join: bool,
    /// A network check: no disks, PINGs answered by PONGs, then END and DONE. Not with
    /// `verify` or `join`.
    pub netcheck: bool,
}

/// True for a block size the protocol allows.
pub fn valid_block_size(block_size: u32) -> bool {
    block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
}

impl Hello {
    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        if r.take(4)?[..] != HELLO_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version_min = r.u16()?;
        let version_max = r.u16()?;
        if version_min == 0 || version_min > version_max {
            return Err(DecodeError::BadVersion);
        }
        let session_id = r.string(MAX_SESSION_ID_LEN)?;
        if !is_identifier(&session_id, MAX_SESSION_ID_LEN) {
            return Err(DecodeError::BadString);
        }
        let agent_version = r.string(MAX_VERSION_STR_LEN)?;
        if !is_printable(&agent_version, MAX_VERSION_STR_LEN) {
            return Err(DecodeError::BadString);
        }
        let count = r.u16()?;
        if count > MAX_DISKS {
            return Err(DecodeError::BadDiskCount);
        }
        // Bounded by MAX_DISKS, and each entry needs at least 14 body bytes.
        let mut disks = Vec::with_capacity(usize::from(count).min(r.remaining() / 14));
        for _ in 0..count {
            let id = r.string(MAX_DISK_ID_LEN)?;
            if !is_identifier(&id, MAX_DISK_ID_LEN) {
                return Err(DecodeError::BadString);
            }
            let size = r.u64()?;
            if size == 0 || size > MAX_DISK_SIZE {
                return Err(DecodeError::BadDiskSize);
            }
            let block_size = r.u32()?;
            if !valid_block_size(block_size) {
                return Err(DecodeError::BadBlockSize);
            }
            disks.push(DiskAnnounce {
                id,
                size,
                block_size,
            });
        }
        let flags = r.u8()?;
        if flags & !(VERIFY | JOIN | NETCHECK) != 0 || flags.count_ones() > 1 {
            return Err(DecodeError::NonzeroReserved);
        }
        // A network check announces no disks; everything else at least one.
        if (count == 0) != (flags == NETCHECK) {
            return Err(DecodeError::BadDiskCount);
        }
        Ok(Self {
            version_min,
            version_max,
            session_id,
            agent_version,
            disks,
            verify: flags & VERIFY != 0,
            join: flags & JOIN != 0,
            netcheck: flags & NETCHECK != 0,
        })
    }

    pub(super) fn body_len(&self) -> usize {
        4 + 2
            + 2
            + string_len(&self.session_id)
            + string_len(&self.agent_version)
            + 2
            + self
                .disks
                .iter()
                .map(|d| string_len(&d.id) + 8 + 4)
                .sum::<usize>()
            + 1
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_slice(&HELLO_MAGIC);
        dst.put_u16(self.version_min);
        dst.put_u16(self.version_max);
        put_string(dst, &self.session_id);
        put_string(dst, &self.agent_version);
        dst.put_u16(self.disks.len() as u16);
        for d in &self.disks {
            put_string(dst, &d.id);
            dst.put_u64(d.size);
            dst.put_u32(d.block_size);
        }
        let flag = |on, bit| if on { bit } else { 0 };
        dst.put_u8(
            flag(self.verify, VERIFY) | flag(self.join, JOIN) | flag(self.netcheck, NETCHECK),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameType;
    use crate::testutil::{self, assert_truncated, body, decode_one, reject, Body};
    use crate::Frame;

    /// A HELLO body with the given session id, agent version and disks, written raw.
    fn hello_body(session: &[u8], agent: &[u8], disks: &[(&[u8], u64, u32)]) -> Vec<u8> {
        let mut b = Body::new()
            .bytes(&HELLO_MAGIC)
            .u16(1)
            .u16(1)
            .str(session)
            .str(agent)
            .u16(disks.len() as u16);
        for (id, size, block) in disks {
            b = b.str(id).u64(*size).u32(*block);
        }
        b.u8(0).0
    }

    #[test]
    fn the_verify_and_join_flags_and_no_other() {
        let mut b = one_disk(b"d", 1, MIN_BLOCK_SIZE);
        for (flags, verify, join) in [(0u8, false, false), (1, true, false), (2, false, true)] {
            *b.last_mut().unwrap() = flags;
            match decode_one(&testutil::raw_frame(FrameType::Hello, &b)) {
                Ok(Some(Frame::Hello(h))) => assert_eq!((h.verify, h.join), (verify, join)),
                other => panic!("{other:?}"),
            }
        }
        // Both at once, or any other bit.
        for flags in [3u8, 5, 6, 7, 8, 0x80, 0xff] {
            *b.last_mut().unwrap() = flags;
            assert_eq!(reject(FrameType::Hello, &b), DecodeError::NonzeroReserved);
        }
        b.pop();
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::Truncated);
    }

    fn one_disk(id: &[u8], size: u64, block: u32) -> Vec<u8> {
        hello_body(b"s1", b"v1", &[(id, size, block)])
    }

    #[test]
    fn encodes_as_documented() {
        let expected = hello_body(
            b"task-0042",
            b"blockrep 0.1.0",
            &[(b"disk0", 1 << 30, 64 << 10), (b"disk1", 1 << 30, 64 << 10)],
        );
        assert_eq!(body(&Frame::Hello(testutil::hello(2))), expected);
        let decoded = decode_one(&testutil::raw_frame(FrameType::Hello, &expected));
        assert_eq!(decoded, Ok(Some(Frame::Hello(testutil::hello(2)))));
    }

    #[test]
    fn accepts_limits() {
        let id = "d".repeat(MAX_DISK_ID_LEN);
        let disks: Vec<(&[u8], u64, u32)> =
            vec![(id.as_bytes(), MAX_DISK_SIZE, MAX_BLOCK_SIZE); usize::from(MAX_DISKS)];
        let b = hello_body(
            "s".repeat(MAX_SESSION_ID_LEN).as_bytes(),
            "~".repeat(MAX_VERSION_STR_LEN).as_bytes(),
            &disks,
        );
        // Duplicate ids are a session rule, not a decoding one.
        assert_eq!(b.len(), MAX_BODY as usize);
        assert!(decode_one(&testutil::raw_frame(FrameType::Hello, &b)).is_ok());
        let b = one_disk(b"d", 1, MIN_BLOCK_SIZE);
        assert!(decode_one(&testutil::raw_frame(FrameType::Hello, &b)).is_ok());
    }

    #[test]
    fn rejects_bad_magic() {
        let mut b = body(&Frame::Hello(testutil::hello(1)));
        for i in 0..4 {
            let mut b = b.clone();
            b[i] ^= 0x20;
            assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadMagic);
        }
        b[..4].copy_from_slice(b"BRP2");
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadMagic);
    }

    #[test]
    fn rejects_version_zero() {
        let mut b = body(&Frame::Hello(testutil::hello(1)));
        b[4..8].copy_from_slice(&[0, 0, 0, 1]);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadVersion);
        b[4..8].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadVersion);
    }

    #[test]
    fn rejects_version_min_above_max() {
        let mut b = body(&Frame::Hello(testutil::hello(1)));
        b[4..8].copy_from_slice(&[0, 3, 0, 2]);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadVersion);
    }

    #[test]
    fn rejects_session_id_too_long() {
        let long = "s".repeat(MAX_SESSION_ID_LEN + 1);
        let b = hello_body(long.as_bytes(), b"v", &[(b"d", 4096, 4096)]);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::StringTooLong);
    }

    #[test]
    fn rejects_agent_version_too_long() {
        let long = "v".repeat(MAX_VERSION_STR_LEN + 1);
        let b = hello_body(b"s", long.as_bytes(), &[(b"d", 4096, 4096)]);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::StringTooLong);
    }

    #[test]
    fn rejects_disk_id_too_long() {
        let long = "d".repeat(MAX_DISK_ID_LEN + 1);
        let b = one_disk(long.as_bytes(), 4096, 4096);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::StringTooLong);
    }

    #[test]
    fn rejects_invalid_utf8() {
        let d: &[(&[u8], u64, u32)] = &[(b"d", 4096, 4096)];
        for b in [
            hello_body(b"s\xff", b"v", d),
            hello_body(b"s", b"v\xc3", d),
            hello_body(b"s", b"v", &[(b"d\xff", 4096, 4096)]),
        ] {
            assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadString);
        }
    }

    /// Identifiers become file names on the receiver: nothing but `A-Z a-z 0-9 . _ -`.
    const BAD_IDS: [&[u8]; 9] = [
        b"",
        b".",
        b"..",
        b".hidden",
        b"../etc",
        b"a/b",
        b"a b",
        b"a\0",
        "é".as_bytes(),
    ];

    #[test]
    fn rejects_bad_session_id() {
        for id in BAD_IDS {
            let b = hello_body(id, b"v", &[(b"d", 4096, 4096)]);
            assert_eq!(
                reject(FrameType::Hello, &b),
                DecodeError::BadString,
                "{id:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_disk_id() {
        for id in BAD_IDS {
            let b = one_disk(id, 4096, 4096);
            assert_eq!(
                reject(FrameType::Hello, &b),
                DecodeError::BadString,
                "{id:?}"
            );
        }
    }

    #[test]
    fn rejects_non_printable_agent_version() {
        for v in [&b"1.0\n"[..], b"\x1b[31m", b"\x7f", b"\t", "é".as_bytes()] {
            let b = hello_body(b"s", v, &[(b"d", 4096, 4096)]);
            assert_eq!(
                reject(FrameType::Hello, &b),
                DecodeError::BadString,
                "{v:?}"
            );
        }
    }

    #[test]
    fn rejects_zero_disks() {
        let b = hello_body(b"s", b"v", &[]);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadDiskCount);
    }

    #[test]
    fn rejects_too_many_disks() {
        // Refused on the count, before the entries (which need not be there).
        let mut b = hello_body(b"s", b"v", &[]);
        let n = b.len();
        // The count is the two bytes before the flags.
        b[n - 3..n - 1].copy_from_slice(&(MAX_DISKS + 1).to_be_bytes());
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadDiskCount);
        b[n - 3..n - 1].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadDiskCount);
    }

    #[test]
    fn a_network_check_and_only_it_announces_no_disks() {
        let mut b = hello_body(b"s", b"v", &[]);
        *b.last_mut().unwrap() = NETCHECK;
        match decode_one(&testutil::raw_frame(FrameType::Hello, &b)) {
            Ok(Some(Frame::Hello(h))) => assert!(h.netcheck && h.disks.is_empty()),
            other => panic!("{other:?}"),
        }
        // With a disk, or with VERIFY or JOIN too.
        let mut b = one_disk(b"d", 1, MIN_BLOCK_SIZE);
        *b.last_mut().unwrap() = NETCHECK;
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadDiskCount);
        let mut b = hello_body(b"s", b"v", &[]);
        for flags in [NETCHECK | VERIFY, NETCHECK | JOIN] {
            *b.last_mut().unwrap() = flags;
            assert_eq!(reject(FrameType::Hello, &b), DecodeError::NonzeroReserved);
        }
    }

    #[test]
    fn rejects_disk_count_above_the_entries_present() {
        let mut b = one_disk(b"d", 4096, 4096);
        let at = 4 + 2 + 2 + 4 + 4;
        b[at..at + 2].copy_from_slice(&MAX_DISKS.to_be_bytes());
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::Truncated);
    }

    #[test]
    fn rejects_disk_size_zero() {
        let b = one_disk(b"d", 0, 4096);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadDiskSize);
    }

    #[test]
    fn rejects_disk_size_too_large() {
        for size in [MAX_DISK_SIZE + 1, u64::MAX] {
            let b = one_disk(b"d", size, 4096);
            assert_eq!(reject(FrameType::Hello, &b), DecodeError::BadDiskSize);
        }
    }

    #[test]
    fn rejects_bad_block_sizes() {
        for bs in [
            0,
            1,
            512,
            2048,
            4095,
            4097,
            3 * 4096,
            (1 << 20) - 1,
            2 << 20,
            u32::MAX,
        ] {
            let b = one_disk(b"d", 1 << 30, bs);
            assert_eq!(
                reject(FrameType::Hello, &b),
                DecodeError::BadBlockSize,
                "{bs}"
            );
        }
        for shift in 12..=20 {
            assert!(valid_block_size(1 << shift));
        }
    }

    #[test]
    fn rejects_truncated() {
        let b = body(&Frame::Hello(testutil::hello(3)));
        assert_truncated(FrameType::Hello, &b, 0);
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut b = body(&Frame::Hello(testutil::hello(2)));
        b.push(0);
        assert_eq!(reject(FrameType::Hello, &b), DecodeError::TrailingBytes);
    }
}
