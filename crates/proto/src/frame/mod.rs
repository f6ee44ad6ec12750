//! Frames: an 8-byte header and a typed body (docs/PROTOCOL.md, "Frames").
//!
//! ```text
//! 0        1        2        4                8
//! +--------+--------+--------+----------------+------------ - - -
//! |  type  | flags  |reserved|  body length   |  body (length bytes)
//! +--------+--------+--------+----------------+------------ - - -
//! ```
//!
//! Decoding is two steps, as in mini-redis: [`check`] says whether a whole frame is buffered
//! (and rejects a bad header before its body arrives), then [`decode`] parses it.

mod ack;
mod data;
mod done;
mod end;
mod error;
mod hash;
mod hello;
mod ping;
mod welcome;

pub use ack::Ack;
pub use data::{decode_data, encode_data_head, payload_fits, Data, DATA_HEAD_LEN};
pub use done::Done;
pub use end::End;
pub use error::ErrorFrame;
pub use hash::{Compare, HashRange, HashRequest, Hashes};
pub use hello::{valid_block_size, DiskAnnounce, Hello};
pub use ping::{Ping, MAX_PAD as MAX_PING_PAD};
pub use welcome::{Extent, Welcome};

use bytes::{BufMut, BytesMut};

use crate::codec::Reader;
use crate::consts::{FRAME_HEADER_LEN, MAX_FRAME_BODY};
use crate::error::DecodeError;

/// The frame types. The byte values are part of the wire format and must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Sender to receiver, first frame: versions, session, disks.
    Hello = 0x01,
    /// Receiver to sender, answer to HELLO: chosen version, what is already held.
    Welcome = 0x02,
    /// Sender to receiver: one chunk.
    Data = 0x10,
    /// Receiver to sender: how many DATA frames are durable.
    Ack = 0x11,
    /// Sender to receiver: no more DATA frames, with the sender's counts.
    End = 0x20,
    /// Sender to receiver: digests of some ranges, please (hash delta).
    HashRequest = 0x30,
    /// Receiver to sender: the digests, for the oldest unanswered HASH_REQUEST.
    Hashes = 0x31,
    /// Receiver to sender: everything is durable, with the receiver's counts.
    Done = 0x21,
    /// Sender to receiver, network check only: please answer (padding measures bandwidth).
    Ping = 0x40,
    /// Receiver to sender: the answer to the oldest unanswered PING.
    Pong = 0x41,
    /// Either way: the session ends with a service error code and a message.
    Error = 0x7f,
}

impl FrameType {
    /// The type for a wire byte, or `None` for an unknown one.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x10 => Self::Data,
            0x11 => Self::Ack,
            0x20 => Self::End,
            0x21 => Self::Done,
            0x30 => Self::HashRequest,
            0x31 => Self::Hashes,
            0x40 => Self::Ping,
            0x41 => Self::Pong,
            0x7f => Self::Error,
            _ => return None,
        })
    }

    /// The largest body this frame type may have. Checked on the header, before the body is
    /// buffered, so a peer cannot make the receiver wait for (or allocate) more.
    pub fn max_body(self) -> u32 {
        match self {
            Self::Data => MAX_FRAME_BODY,
            Self::Welcome => welcome::MAX_BODY,
            Self::Hello => hello::MAX_BODY,
            Self::Ack => ack::BODY_LEN as u32,
            Self::End => end::BODY_LEN as u32,
            Self::Done => done::BODY_LEN as u32,
            Self::Error => error::MAX_BODY,
            Self::HashRequest => hash::MAX_REQUEST_BODY,
            Self::Hashes => hash::MAX_HASHES_BODY,
            Self::Ping => ping::MAX_PING_BODY,
            Self::Pong => ping::HEAD_LEN as u32,
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// HELLO (0x01).
    Hello(Hello),
    /// WELCOME (0x02).
    Welcome(Welcome),
    /// DATA (0x10).
    Data(Data),
    /// ACK (0x11).
    Ack(Ack),
    /// END (0x20).
    End(End),
    /// DONE (0x21).
    Done(Done),
    /// ERROR (0x7F).
    Error(ErrorFrame),
    /// HASH_REQUEST (0x30).
    HashRequest(HashRequest),
    /// HASHES (0x31).
    Hashes(Hashes),
    /// PING (0x40).
    Ping(Ping),
    /// PONG (0x41): the numbers of the PING it answers.
    Pong(Ping),
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame type.
    pub frame_type: FrameType,
    /// The body length, already checked against the type's maximum.
    pub body_len: u32,
}

impl Header {
    /// Parses and checks the 8 header bytes.
    pub fn decode(b: &[u8; FRAME_HEADER_LEN]) -> Result<Self, DecodeError> {
        let frame_type = FrameType::from_byte(b[0]).ok_or(DecodeError::UnknownType(b[0]))?;
        if b[1] != 0 {
            return Err(DecodeError::NonzeroFlags);
        }
        if b[2] != 0 || b[3] != 0 {
            return Err(DecodeError::NonzeroReserved);
        }
        let body_len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let max = frame_type.max_body();
        if body_len > max {
            return Err(DecodeError::TooLong { len: body_len, max });
        }
        Ok(Self {
            frame_type,
            body_len,
        })
    }

    /// Writes the header.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(self.frame_type as u8);
        dst.put_u8(0);
        dst.put_u16(0);
        dst.put_u32(self.body_len);
    }
}

/// Is a whole frame at the start of `buf`? `Ok(None)`: not yet, read more; `Ok(Some(n))`: the
/// first `n` bytes are one frame. A bad header is an error as soon as its 8 bytes are there.
pub fn check(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(head) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let header = Header::decode(head)?;
    let total = FRAME_HEADER_LEN + header.body_len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// Decodes the frame at the start of `buf` and removes it, or returns `Ok(None)` (and leaves
/// `buf` alone) when it is not all buffered yet. A DATA payload is a view into `buf`'s
/// allocation, not a copy.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    let Some(total) = check(buf)? else {
        return Ok(None);
    };
    let frame = buf.split_to(total).freeze();
    let frame_type = FrameType::from_byte(frame[0]).ok_or(DecodeError::UnknownType(frame[0]))?;
    let mut r = Reader::new(frame.slice(FRAME_HEADER_LEN..));
    let frame = match frame_type {
        FrameType::Hello => Frame::Hello(Hello::load(&mut r)?),
        FrameType::Welcome => Frame::Welcome(Welcome::load(&mut r)?),
        FrameType::Data => Frame::Data(Data::load(&mut r)?),
        FrameType::Ack => Frame::Ack(Ack::load(&mut r)?),
        FrameType::End => Frame::End(End::load(&mut r)?),
        FrameType::Done => Frame::Done(Done::load(&mut r)?),
        FrameType::Error => Frame::Error(ErrorFrame::load(&mut r)?),
        FrameType::HashRequest => Frame::HashRequest(HashRequest::load(&mut r)?),
        FrameType::Hashes => Frame::Hashes(Hashes::load(&mut r)?),
        FrameType::Ping => Frame::Ping(Ping::load_ping(&mut r)?),
        FrameType::Pong => Frame::Pong(Ping::load_pong(&mut r)?),
    };
    r.finish()?;
    Ok(Some(frame))
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Hello(_) => FrameType::Hello,
            Self::Welcome(_) => FrameType::Welcome,
            Self::Data(_) => FrameType::Data,
            Self::Ack(_) => FrameType::Ack,
            Self::End(_) => FrameType::End,
            Self::Done(_) => FrameType::Done,
            Self::Error(_) => FrameType::Error,
            Self::HashRequest(_) => FrameType::HashRequest,
            Self::Hashes(_) => FrameType::Hashes,
            Self::Ping(_) => FrameType::Ping,
            Self::Pong(_) => FrameType::Pong,
        }
    }

    /// Bytes [`Frame::encode`] writes, header included.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Self::Hello(f) => f.body_len(),
            Self::Welcome(f) => f.body_len(),
            Self::Data(f) => f.body_len(),
            Self::Ack(_) => ack::BODY_LEN,
            Self::End(_) => end::BODY_LEN,
            Self::Done(_) => done::BODY_LEN,
            Self::Error(f) => f.body_len(),
            Self::HashRequest(f) => f.body_len(),
            Self::Hashes(f) => f.body_len(),
            Self::Ping(f) => ping::HEAD_LEN + f.pad as usize,
            Self::Pong(_) => ping::HEAD_LEN,
        }
    }

    /// Appends the whole frame, header and body, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        let header = Header {
            frame_type: self.frame_type(),
            body_len: self.body_len() as u32,
        };
        header.encode(dst);
        match self {
            Self::Hello(f) => f.encode(dst),
            Self::Welcome(f) => f.encode(dst),
            Self::Data(f) => f.encode(dst),
            Self::Ack(f) => f.encode(dst),
            Self::End(f) => f.encode(dst),
            Self::Done(f) => f.encode(dst),
            Self::Error(f) => f.encode(dst),
            Self::HashRequest(f) => f.encode(dst),
            Self::Hashes(f) => f.encode(dst),
            Self::Ping(f) => f.encode_ping(dst),
            Self::Pong(f) => f.encode_pong(dst),
        }
    }
}

/// Reads a boolean byte: 0 or 1, nothing else.
pub(crate) fn load_bool(r: &mut Reader) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::BadBool),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::consts::*;
    use crate::testutil::{self, header};
    use crate::Encoding;

    const ALL_TYPES: [FrameType; 11] = [
        FrameType::Hello,
        FrameType::Welcome,
        FrameType::Data,
        FrameType::Ack,
        FrameType::End,
        FrameType::Done,
        FrameType::Error,
        FrameType::HashRequest,
        FrameType::Hashes,
        FrameType::Ping,
        FrameType::Pong,
    ];

    #[test]
    fn type_bytes_round_trip() {
        for ty in ALL_TYPES {
            assert_eq!(FrameType::from_byte(ty as u8), Some(ty));
        }
        let known = (0..=u8::MAX).filter(|&b| FrameType::from_byte(b).is_some());
        assert_eq!(known.count(), ALL_TYPES.len());
        assert_eq!(FrameType::HashRequest as u8, 0x30);
        assert_eq!(FrameType::Hashes as u8, 0x31);
    }

    #[test]
    fn rejects_unknown_frame_type() {
        for b in 0..=u8::MAX {
            if FrameType::from_byte(b).is_some() {
                continue;
            }
            // Refused from the header alone, before any body arrives.
            assert_eq!(check(&header(b, 0)), Err(DecodeError::UnknownType(b)));
            let mut buf = BytesMut::from(&header(b, 0)[..]);
            assert_eq!(decode(&mut buf), Err(DecodeError::UnknownType(b)));
        }
    }

    #[test]
    fn rejects_nonzero_flags() {
        for bit in 0..8 {
            let mut h = header(FrameType::Ack as u8, 16);
            h[1] = 1 << bit;
            assert_eq!(check(&h), Err(DecodeError::NonzeroFlags));
        }
    }

    #[test]
    fn rejects_nonzero_reserved_header_bytes() {
        for i in [2, 3] {
            for v in [1, 0x80, 0xff] {
                let mut h = header(FrameType::Ack as u8, 16);
                h[i] = v;
                assert_eq!(check(&h), Err(DecodeError::NonzeroReserved), "byte {i}");
            }
        }
    }

    /// The header alone (8 bytes, no body buffered) is enough to refuse a too-long body.
    #[track_caller]
    fn assert_too_long(ty: FrameType, max: u32) {
        assert_eq!(ty.max_body(), max);
        for len in [max + 1, u32::MAX] {
            let h = header(ty as u8, len);
            assert_eq!(check(&h), Err(DecodeError::TooLong { len, max }));
            let mut buf = BytesMut::from(&h[..]);
            assert_eq!(decode(&mut buf), Err(DecodeError::TooLong { len, max }));
        }
        // The maximum itself is only incomplete.
        assert_eq!(check(&header(ty as u8, max)), Ok(None));
    }

    #[test]
    fn rejects_too_long_hello() {
        assert_too_long(FrameType::Hello, 5199);
    }

    #[test]
    fn rejects_too_long_welcome() {
        assert_too_long(FrameType::Welcome, 1_048_902);
    }

    #[test]
    fn rejects_too_long_data() {
        assert_too_long(FrameType::Data, MAX_BLOCK_SIZE + DATA_FIXED_LEN as u32);
    }

    #[test]
    fn rejects_too_long_ack() {
        assert_too_long(FrameType::Ack, 16);
    }

    #[test]
    fn rejects_too_long_end() {
        assert_too_long(FrameType::End, 17);
    }

    #[test]
    fn rejects_too_long_done() {
        assert_too_long(FrameType::Done, 32);
    }

    #[test]
    fn rejects_too_long_error() {
        assert_too_long(FrameType::Error, 1044);
    }

    #[test]
    fn rejects_too_long_hash_request() {
        // The fixed part, MAX_HASH_RANGES ranges of 12 bytes, the COMPARE fine granule and
        // MAX_COMPARE_FINE digests of 32 bytes.
        assert_too_long(FrameType::HashRequest, 42 + 4096 * 12 + 4 + 16_384 * 32);
        assert!(FrameType::HashRequest.max_body() <= MAX_FRAME_BODY);
    }

    #[test]
    fn rejects_too_long_hashes() {
        // The fixed part and MAX_HASHES_PER_REQUEST digests of 32 bytes: within a DATA frame
        // (the COMPARE form is smaller).
        assert_too_long(FrameType::Hashes, 8 + 32_768 * 32);
        assert!(FrameType::Hashes.max_body() <= MAX_FRAME_BODY);
    }

    #[test]
    fn a_partial_header_is_incomplete_not_an_error() {
        let garbage = [0xffu8; FRAME_HEADER_LEN];
        for n in 0..FRAME_HEADER_LEN {
            assert_eq!(check(&garbage[..n]), Ok(None));
        }
        assert!(check(&garbage).is_err());
    }

    #[test]
    fn decodes_back_to_back_frames() {
        let frames = testutil::one_of_each();
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        for f in &frames {
            assert_eq!(check(&buf), Ok(Some(f.encoded_len())));
            assert_eq!(decode(&mut buf).as_ref(), Ok(&Some(f.clone())));
        }
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf), Ok(None));
    }

    #[test]
    fn header_encodes_as_documented() {
        let mut out = Vec::new();
        Header {
            frame_type: FrameType::Data,
            body_len: 0x0102_0304,
        }
        .encode(&mut out);
        assert_eq!(out, [0x10, 0, 0, 0, 1, 2, 3, 4]);
    }

    // Strategies for valid frames, every field over its whole allowed range.

    fn identifier(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{}}}", max - 1))
            .unwrap()
    }

    fn printable(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap()
    }

    fn disk() -> impl Strategy<Value = DiskAnnounce> {
        (identifier(MAX_DISK_ID_LEN), 1..=MAX_DISK_SIZE, 12u32..=20).prop_map(
            |(id, size, shift)| DiskAnnounce {
                id,
                size,
                block_size: 1 << shift,
            },
        )
    }

    fn hello() -> impl Strategy<Value = Hello> {
        (
            (1..=u16::MAX).prop_flat_map(|min| (Just(min), min..=u16::MAX)),
            identifier(MAX_SESSION_ID_LEN),
            printable(MAX_VERSION_STR_LEN),
            proptest::collection::vec(disk(), 1..=usize::from(MAX_DISKS)),
            0..4u8,
        )
            .prop_map(
                |((version_min, version_max), session_id, agent_version, disks, flags)| Hello {
                    version_min,
                    version_max,
                    session_id,
                    agent_version,
                    // A network check announces no disks.
                    disks: if flags == 3 { Vec::new() } else { disks },
                    verify: flags == 1,
                    join: flags == 2,
                    netcheck: flags == 3,
                },
            )
    }

    fn extent() -> impl Strategy<Value = Extent> {
        (0..u64::MAX)
            .prop_flat_map(|offset| (Just(offset), 1..=u64::MAX - offset))
            .prop_map(|(offset, len)| Extent { offset, len })
    }

    fn welcome() -> impl Strategy<Value = Welcome> {
        (
            1..=u16::MAX,
            printable(MAX_VERSION_STR_LEN),
            proptest::collection::vec(
                proptest::collection::vec(extent(), 0..8),
                0..=usize::from(MAX_DISKS),
            ),
        )
            .prop_map(|(version, receiver_version, held)| Welcome {
                version,
                receiver_version,
                held,
            })
    }

    fn data() -> impl Strategy<Value = Data> {
        let raw = prop_oneof![
            (1u32..=4096).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n as usize)),
            any::<u8>().prop_map(|b| vec![b; MAX_BLOCK_SIZE as usize]),
        ]
        .prop_map(|p| (Encoding::Raw, p.len() as u32, p));
        let lz4 = (2..=MAX_BLOCK_SIZE)
            .prop_flat_map(|raw_len| {
                let most = (raw_len as usize).min(4097);
                (
                    Just(raw_len),
                    proptest::collection::vec(any::<u8>(), 1..most),
                )
            })
            .prop_map(|(raw_len, p)| (Encoding::Lz4, raw_len, p));
        let zero = (1..=MAX_BLOCK_SIZE).prop_map(|raw_len| (Encoding::Zero, raw_len, Vec::new()));
        (
            any::<u16>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            prop_oneof![raw, lz4, zero],
        )
            .prop_map(
                |(disk, offset, digest, (encoding, raw_len, payload))| Data {
                    disk,
                    encoding,
                    offset,
                    raw_len,
                    digest,
                    payload: payload.into(),
                },
            )
    }

    fn error_frame() -> impl Strategy<Value = ErrorFrame> {
        (
            proptest::string::string_regex("[ -~]{1,16}").unwrap(),
            // At most 256 characters of at most 4 bytes: never over MAX_MESSAGE_LEN.
            proptest::string::string_regex("(?s).{0,256}").unwrap(),
        )
            .prop_map(|(code, message)| ErrorFrame { code, message })
    }

    /// A valid HASH_REQUEST: up to 16 ranges, each small enough that all of them stay within
    /// `MAX_HASHES_PER_REQUEST` digests and `MAX_HASH_REQUEST_BYTES` bytes; or the most ranges.
    fn hash_request() -> impl Strategy<Value = HashRequest> {
        const MOST_RANGES: usize = 16;
        let some = (12u32..=26, 1..=MOST_RANGES).prop_flat_map(|(shift, n)| {
            let granularity = 1u32 << shift;
            let longest = (MAX_HASH_REQUEST_BYTES / MOST_RANGES as u64)
                .min(u64::from(MAX_HASHES_PER_REQUEST) / MOST_RANGES as u64 * (1 << shift));
            // Granules an offset may start at, so that offset + len never overflows.
            let starts = (u64::MAX - longest) >> shift;
            let range = (0..=starts, 1..=longest as u32).prop_map(move |(k, len)| HashRange {
                offset: k << shift,
                len,
            });
            (Just(granularity), proptest::collection::vec(range, n))
        });
        let most = Just((
            MIN_HASH_GRANULARITY,
            (0..u64::from(MAX_HASH_RANGES))
                .map(|i| HashRange {
                    offset: i * u64::from(MIN_HASH_GRANULARITY),
                    len: 1,
                })
                .collect(),
        ));
        (
            any::<u16>(),
            MIN_HASH_DIGEST_LEN..=DIGEST_LEN as u8,
            any::<[u8; 32]>(),
            prop_oneof![9 => some, 1 => most],
            any::<(bool, u8)>(),
        )
            .prop_map(
                |(disk, digest_len, key, (granularity, ranges), (compare, fill))| {
                    let mut req = HashRequest {
                        disk,
                        digest_len,
                        granularity,
                        key,
                        ranges,
                        compare: None,
                    };
                    // COMPARE, where a finer granule exists and the fine digests stay within
                    // the maximum: a fine granule a quarter of the granule, or 4 KiB.
                    let fine = (granularity / 4).max(MIN_HASH_GRANULARITY);
                    if compare && fine < granularity {
                        req.compare = Some(Compare {
                            fine,
                            digests: bytes::Bytes::new(),
                        });
                        if req.fine_count() > u64::from(MAX_COMPARE_FINE) {
                            req.compare = None;
                        } else {
                            let n = req.digest_count() as usize * usize::from(digest_len);
                            req.compare = Some(Compare {
                                fine,
                                digests: vec![fill; n].into(),
                            });
                        }
                    }
                    req
                },
            )
    }

    /// Valid HASHES: up to 64 digests of any allowed length, or the most of the longest.
    fn hashes() -> impl Strategy<Value = Hashes> {
        let some = (MIN_HASH_DIGEST_LEN..=DIGEST_LEN as u8, 0..=64usize).prop_flat_map(
            |(digest_len, n)| {
                (
                    Just(digest_len),
                    proptest::collection::vec(any::<u8>(), n * usize::from(digest_len)),
                )
            },
        );
        let most = any::<u8>().prop_map(|b| {
            (
                DIGEST_LEN as u8,
                vec![b; MAX_HASHES_PER_REQUEST as usize * DIGEST_LEN],
            )
        });
        (
            any::<u16>(),
            prop_oneof![9 => some, 1 => most],
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=64)),
        )
            .prop_map(|(disk, (digest_len, digests), bitmap)| {
                let mut h = Hashes::plain(disk, digest_len, digests.into());
                // COMPARE form: every bit of the bitmap's bytes a granule.
                let fits = h.digest_total() <= MAX_COMPARE_FINE as usize;
                if let Some(bitmap) = bitmap.filter(|_| fits) {
                    h.count = bitmap.len() as u32 * 8;
                    h.differ = Some(bitmap.into());
                }
                h
            })
    }

    pub(crate) fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            hello().prop_map(Frame::Hello),
            welcome().prop_map(Frame::Welcome),
            data().prop_map(Frame::Data),
            (any::<u64>(), any::<u64>())
                .prop_map(|(frames, bytes)| Frame::Ack(Ack { frames, bytes })),
            (any::<bool>(), any::<u64>(), any::<u64>()).prop_map(|(complete, frames, bytes)| {
                Frame::End(End {
                    complete,
                    frames,
                    bytes,
                })
            }),
            any::<[u64; 4]>().prop_map(|[frames, bytes, data_bytes, zero_bytes]| {
                Frame::Done(Done {
                    frames,
                    bytes,
                    data_bytes,
                    zero_bytes,
                })
            }),
            error_frame().prop_map(Frame::Error),
            hash_request().prop_map(Frame::HashRequest),
            hashes().prop_map(Frame::Hashes),
            (any::<u64>(), any::<u64>(), 0..=4096u32)
                .prop_map(|(seq, time, pad)| Frame::Ping(Ping { seq, time, pad })),
            (any::<u64>(), any::<u64>(), any::<u32>())
                .prop_map(|(seq, time, pad)| Frame::Pong(Ping { seq, time, pad })),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(frame in frame()) {
            let mut buf = BytesMut::new();
            frame.encode(&mut buf);
            prop_assert_eq!(buf.len(), frame.encoded_len());
            prop_assert!(frame.body_len() <= frame.frame_type().max_body() as usize);
            prop_assert_eq!(check(&buf), Ok(Some(buf.len())));
            let back = decode(&mut buf);
            prop_assert_eq!(back, Ok(Some(frame)));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn every_prefix_is_incomplete(frame in frame()) {
            let mut bytes = BytesMut::new();
            frame.encode(&mut bytes);
            for n in 0..bytes.len() {
                prop_assert_eq!(check(&bytes[..n]), Ok(None), "prefix of {}", n);
            }
            // Through `decode` too, which must leave the buffer as it was.
            let len = bytes.len();
            for n in (0..len.min(256)).chain([len / 2, len - 1]) {
                let mut buf = BytesMut::from(&bytes[..n]);
                prop_assert_eq!(decode(&mut buf), Ok(None));
                prop_assert_eq!(&buf[..], &bytes[..n]);
            }
        }
    }
}
