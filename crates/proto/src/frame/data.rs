//! DATA (0x10), sender to receiver: one chunk of one disk.
//!
//! ```text
//! disk u16 | encoding u8 | reserved u8 (0) | offset u64 | raw_len u32 | digest [32] | payload
//! ```
//!
//! The payload runs to the end of the body. Its length must fit the encoding: raw = `raw_len`,
//! lz4 = 1 to `raw_len - 1`, zero = 0. Whether `disk` and `offset + raw_len` fit the session's
//! disks is a session rule ([`crate::session::ReceiverSession`]).

use bytes::{BufMut, Bytes};

use crate::codec::Reader;
use crate::consts::{DATA_FIXED_LEN, FRAME_HEADER_LEN, MAX_BLOCK_SIZE};
use crate::error::DecodeError;
use crate::frame::{FrameType, Header};
use crate::{Digest, Encoding};

/// One chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Index of the disk in the HELLO's list.
    pub disk: u16,
    /// How `payload` encodes the raw bytes.
    pub encoding: Encoding,
    /// Byte offset of the chunk on the disk.
    pub offset: u64,
    /// Length of the raw chunk, 1 to `MAX_BLOCK_SIZE`.
    pub raw_len: u32,
    /// blake3 of the raw bytes.
    pub digest: Digest,
    /// The encoded bytes.
    pub payload: Bytes,
}

/// True when a payload of `payload_len` bytes fits `encoding` for a chunk of `raw_len` bytes.
pub fn payload_fits(encoding: Encoding, raw_len: u32, payload_len: usize) -> bool {
    match encoding {
        Encoding::Raw => payload_len == raw_len as usize,
        Encoding::Lz4 => payload_len >= 1 && payload_len < raw_len as usize,
        Encoding::Zero => payload_len == 0,
    }
}

impl Data {
    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut data = Self::load_fixed(r)?;
        data.payload = r.rest();
        data.check_payload()
    }

    /// The fixed fields, with an empty payload.
    fn load_fixed(r: &mut Reader) -> Result<Self, DecodeError> {
        let disk = r.u16()?;
        let enc = r.u8()?;
        let encoding = Encoding::from_byte(enc).ok_or(DecodeError::UnknownEncoding(enc))?;
        if r.u8()? != 0 {
            return Err(DecodeError::NonzeroReserved);
        }
        let offset = r.u64()?;
        let raw_len = r.u32()?;
        if raw_len == 0 || raw_len > MAX_BLOCK_SIZE {
            return Err(DecodeError::BadRawLength);
        }
        let digest = r.digest()?;
        Ok(Self {
            disk,
            encoding,
            offset,
            raw_len,
            digest,
            payload: Bytes::new(),
        })
    }

    fn check_payload(self) -> Result<Self, DecodeError> {
        if payload_fits(self.encoding, self.raw_len, self.payload.len()) {
            Ok(self)
        } else {
            Err(DecodeError::BadPayloadLength)
        }
    }

    pub(super) fn body_len(&self) -> usize {
        DATA_FIXED_LEN + self.payload.len()
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        encode_fixed(
            dst,
            self.disk,
            self.encoding,
            self.offset,
            self.raw_len,
            &self.digest,
        );
        dst.put_slice(&self.payload);
    }
}

fn encode_fixed(
    dst: &mut impl BufMut,
    disk: u16,
    encoding: Encoding,
    offset: u64,
    raw_len: u32,
    digest: &Digest,
) {
    dst.put_u16(disk);
    dst.put_u8(encoding as u8);
    dst.put_u8(0);
    dst.put_u64(offset);
    dst.put_u32(raw_len);
    dst.put_slice(digest);
}

/// Length of the bytes that precede a DATA frame's payload: frame header plus fixed fields.
pub const DATA_HEAD_LEN: usize = FRAME_HEADER_LEN + DATA_FIXED_LEN;

/// Writes the frame header and fixed fields of a DATA frame whose payload is `payload_len`
/// bytes, so a sender can write the payload from its own buffer without copying it into a
/// frame first. The caller guarantees `payload_fits(encoding, raw_len, payload_len)`.
pub fn encode_data_head(
    disk: u16,
    encoding: Encoding,
    offset: u64,
    raw_len: u32,
    digest: &Digest,
    payload_len: usize,
) -> [u8; DATA_HEAD_LEN] {
    debug_assert!(payload_fits(encoding, raw_len, payload_len));
    let mut out = [0u8; DATA_HEAD_LEN];
    let mut dst = &mut out[..];
    Header {
        frame_type: FrameType::Data,
        body_len: (DATA_FIXED_LEN + payload_len) as u32,
    }
    .encode(&mut dst);
    encode_fixed(&mut dst, disk, encoding, offset, raw_len, digest);
    out
}

/// Decodes a DATA frame whose head (the first [`DATA_HEAD_LEN`] bytes: frame header and fixed
/// fields) and payload were read apart, so that a receiver can read large payloads straight
/// into buffers of its own. Checks everything [`decode`](super::decode) checks of a DATA
/// frame; a head that is not a DATA frame's, or a payload of another length than the head
/// announces, is refused too.
pub fn decode_data(head: &[u8; DATA_HEAD_LEN], payload: Bytes) -> Result<Data, DecodeError> {
    let (header, fixed) = head
        .split_first_chunk::<FRAME_HEADER_LEN>()
        .expect("long enough");
    let header = Header::decode(header)?;
    if header.frame_type != FrameType::Data {
        return Err(DecodeError::UnknownType(head[0]));
    }
    if header.body_len as usize != DATA_FIXED_LEN + payload.len() {
        return Err(DecodeError::BadPayloadLength);
    }
    let mut r = Reader::new(Bytes::copy_from_slice(fixed));
    let mut data = Data::load_fixed(&mut r)?;
    r.finish()?;
    data.payload = payload;
    data.check_payload()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::testutil::{self, assert_truncated, body, decode_one, reject, Body};

    fn fixed(encoding: u8, reserved: u8, raw_len: u32) -> Body {
        Body::new()
            .u16(3)
            .u8(encoding)
            .u8(reserved)
            .u64(1 << 20)
            .u32(raw_len)
            .bytes(&[0xaa; 32])
    }

    #[test]
    fn encodes_as_documented() {
        let d = testutil::data_raw(3, 1 << 20, 4096, 0xaa);
        let expected = fixed(0, 0, 4096).bytes(&[0xaa; 4096]).0;
        assert_eq!(body(&Frame::Data(d)), expected);
    }

    #[test]
    fn head_matches_frame_encoding() {
        for (enc, raw_len, payload_len) in [
            (Encoding::Raw, 4096, 4096),
            (Encoding::Lz4, 1 << 20, 1000),
            (Encoding::Zero, 65536, 0),
        ] {
            let d = Data {
                disk: 7,
                encoding: enc,
                offset: 123 << 12,
                raw_len,
                digest: [9; 32],
                payload: Bytes::from(vec![1; payload_len]),
            };
            let frame = testutil::encode(&Frame::Data(d.clone()));
            let head = encode_data_head(7, enc, 123 << 12, raw_len, &[9; 32], payload_len);
            assert_eq!(&frame[..DATA_HEAD_LEN], &head[..]);
            assert_eq!(frame.len(), DATA_HEAD_LEN + payload_len);
        }
    }

    /// `decode_data` on a whole encoded DATA frame split at the head.
    fn decode_split(frame: &[u8]) -> Result<Data, DecodeError> {
        let (head, payload) = frame.split_first_chunk::<DATA_HEAD_LEN>().unwrap();
        decode_data(head, Bytes::copy_from_slice(payload))
    }

    #[test]
    fn decode_data_agrees_with_decode() {
        let max = MAX_BLOCK_SIZE;
        for (enc, raw_len, payload_len) in [
            (0, 1, 1),
            (0, max, max as usize),
            (1, max, max as usize - 1),
            (2, max, 0),
            // Refused by both: lengths that do not fit the encoding, bad fields.
            (0, 4096, 4095),
            (1, 4096, 4096),
            (2, 4096, 1),
            (3, 4096, 4096),
            (0, 0, 0),
            (0, max + 1, max as usize + 1),
        ] {
            let b = fixed(enc, 0, raw_len).bytes(&vec![5; payload_len]).0;
            let frame = testutil::raw_frame(FrameType::Data, &b);
            let whole = decode_one(&frame).map(|f| match f {
                Some(Frame::Data(d)) => d,
                other => panic!("{other:?}"),
            });
            let split = decode_split(&frame);
            assert_eq!(split, whole, "{enc} {raw_len} {payload_len}");
        }
        let b = fixed(0, 1, 4096).bytes(&[0; 4096]).0;
        let frame = testutil::raw_frame(FrameType::Data, &b);
        assert_eq!(decode_split(&frame), Err(DecodeError::NonzeroReserved));
    }

    #[test]
    fn decode_data_refuses_what_does_not_match_the_head() {
        let b = fixed(0, 0, 4096).bytes(&[7; 4096]).0;
        let frame = testutil::raw_frame(FrameType::Data, &b);
        let (head, payload) = frame.split_first_chunk::<DATA_HEAD_LEN>().unwrap();
        // A payload shorter or longer than the header's body length.
        for len in [0, 4095] {
            let short = Bytes::copy_from_slice(&payload[..len]);
            assert_eq!(decode_data(head, short), Err(DecodeError::BadPayloadLength));
        }
        let mut long = payload.to_vec();
        long.push(0);
        assert_eq!(
            decode_data(head, long.into()),
            Err(DecodeError::BadPayloadLength)
        );
        // Another frame type's header: too long for an ACK, of the wrong type for HASHES.
        let mut other = *head;
        other[0] = FrameType::Ack as u8;
        let e = decode_data(&other, Bytes::copy_from_slice(payload));
        assert!(matches!(e, Err(DecodeError::TooLong { .. })), "{e:?}");
        other[0] = FrameType::Hashes as u8;
        assert_eq!(
            decode_data(&other, Bytes::copy_from_slice(payload)),
            Err(DecodeError::UnknownType(FrameType::Hashes as u8))
        );
        // A header no frame may have.
        let mut bad = *head;
        bad[1] = 1;
        assert_eq!(
            decode_data(&bad, Bytes::copy_from_slice(payload)),
            Err(DecodeError::NonzeroFlags)
        );
    }

    #[test]
    fn accepts_each_encoding_at_its_limits() {
        let max = MAX_BLOCK_SIZE;
        for (enc, raw_len, payload_len) in [
            (0, 1, 1),
            (0, max, max as usize),
            (1, 2, 1),
            (1, max, max as usize - 1),
            (2, 1, 0),
            (2, max, 0),
        ] {
            let b = fixed(enc, 0, raw_len).bytes(&vec![5; payload_len]).0;
            let f = decode_one(&testutil::raw_frame(FrameType::Data, &b));
            assert!(matches!(f, Ok(Some(Frame::Data(_)))), "{enc} {raw_len}");
        }
    }

    #[test]
    fn rejects_unknown_encoding() {
        for enc in [3, 0x7f, 0xff] {
            let b = fixed(enc, 0, 4096).bytes(&[0; 4096]).0;
            assert_eq!(
                reject(FrameType::Data, &b),
                DecodeError::UnknownEncoding(enc)
            );
        }
    }

    #[test]
    fn rejects_nonzero_reserved_byte() {
        for v in [1, 0x80, 0xff] {
            let b = fixed(0, v, 4096).bytes(&[0; 4096]).0;
            assert_eq!(reject(FrameType::Data, &b), DecodeError::NonzeroReserved);
        }
    }

    #[test]
    fn rejects_raw_len_zero() {
        for enc in 0..3 {
            let b = fixed(enc, 0, 0).0;
            assert_eq!(reject(FrameType::Data, &b), DecodeError::BadRawLength);
        }
    }

    #[test]
    fn rejects_raw_len_above_max() {
        for raw_len in [MAX_BLOCK_SIZE + 1, u32::MAX] {
            let b = fixed(2, 0, raw_len).0;
            assert_eq!(reject(FrameType::Data, &b), DecodeError::BadRawLength);
        }
    }

    #[test]
    fn rejects_raw_payload_length_mismatch() {
        for payload_len in [0, 4095, 4097] {
            let b = fixed(0, 0, 4096).bytes(&vec![1; payload_len]).0;
            assert_eq!(reject(FrameType::Data, &b), DecodeError::BadPayloadLength);
        }
    }

    #[test]
    fn rejects_lz4_payload_length_mismatch() {
        // Empty, or not smaller than the raw chunk (then it must be sent raw).
        for payload_len in [0, 4096, 4097] {
            let b = fixed(1, 0, 4096).bytes(&vec![1; payload_len]).0;
            assert_eq!(reject(FrameType::Data, &b), DecodeError::BadPayloadLength);
        }
        let b = fixed(1, 0, 1).bytes(&[1]).0;
        assert_eq!(reject(FrameType::Data, &b), DecodeError::BadPayloadLength);
    }

    #[test]
    fn rejects_zero_payload_length_mismatch() {
        for payload_len in [1, 4096] {
            let b = fixed(2, 0, 4096).bytes(&vec![0; payload_len]).0;
            assert_eq!(reject(FrameType::Data, &b), DecodeError::BadPayloadLength);
        }
    }

    #[test]
    fn rejects_truncated() {
        // Cut inside the fixed fields: truncated. Cut inside the payload, which runs to the end
        // of the body: the payload no longer fits its encoding.
        let b = body(&Frame::Data(testutil::data_raw(0, 0, 4096, 1)));
        assert_truncated(FrameType::Data, &b[..DATA_FIXED_LEN], 0);
        for n in DATA_FIXED_LEN..b.len() {
            assert_eq!(
                reject(FrameType::Data, &b[..n]),
                DecodeError::BadPayloadLength
            );
        }
    }

    #[test]
    fn rejects_trailing_bytes() {
        // The payload is the rest of the body, so a trailing byte makes it the wrong length.
        for d in [
            testutil::data_raw(0, 0, 4096, 1),
            testutil::data_zero(0, 0, 4096),
        ] {
            let mut b = body(&Frame::Data(d));
            b.push(0);
            assert_eq!(reject(FrameType::Data, &b), DecodeError::BadPayloadLength);
        }
    }

    #[test]
    fn payload_fits_each_encoding() {
        assert!(payload_fits(Encoding::Raw, 10, 10));
        assert!(!payload_fits(Encoding::Raw, 10, 9));
        assert!(payload_fits(Encoding::Lz4, 10, 9));
        assert!(payload_fits(Encoding::Lz4, 10, 1));
        assert!(!payload_fits(Encoding::Lz4, 10, 10));
        assert!(!payload_fits(Encoding::Lz4, 10, 0));
        assert!(payload_fits(Encoding::Zero, 10, 0));
        assert!(!payload_fits(Encoding::Zero, 10, 1));
    }
}
