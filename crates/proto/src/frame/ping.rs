//! PING (0x40), sender to receiver, and PONG (0x41), its answer: the network check.
//!
//! ```text
//! PING: seq u64 | time u64 | pad u32 | pad zero bytes
//! PONG: seq u64 | time u64 | pad u32
//! ```
//!
//! Only in a session whose HELLO has the NETCHECK flag. The receiver answers each PING, in
//! order, with a PONG carrying the same three numbers; `time` is the sender's clock, opaque
//! to the receiver, so the sender measures the round trip without the clocks agreeing. The
//! padding (zeros, at most [`MAX_PAD`] bytes) is how the sender measures bandwidth; it is read
//! and dropped.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;

/// Bytes of a PING or PONG body before the padding.
pub(super) const HEAD_LEN: usize = 20;
/// The most padding a PING may carry.
pub const MAX_PAD: u32 = 1 << 20;
pub(super) const MAX_PING_BODY: u32 = HEAD_LEN as u32 + MAX_PAD;

/// A PING, or the PONG that answers it (the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// The sender's sequence number.
    pub seq: u64,
    /// The sender's clock when it sent the PING, echoed in the PONG.
    pub time: u64,
    /// Zero bytes of padding the PING carries, at most [`MAX_PAD`]; the PONG says how many it
    /// answers for.
    pub pad: u32,
}

impl Ping {
    /// A PING's body: the head, then exactly `pad` zero bytes.
    pub(super) fn load_ping(r: &mut Reader) -> Result<Self, DecodeError> {
        let ping = Self::load_pong(r)?;
        if ping.pad > MAX_PAD {
            return Err(DecodeError::TooLong {
                len: ping.pad,
                max: MAX_PAD,
            });
        }
        let pad = r.take(ping.pad as usize)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(DecodeError::NonzeroReserved);
        }
        Ok(ping)
    }

    /// A PONG's body: the head alone.
    pub(super) fn load_pong(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            seq: r.u64()?,
            time: r.u64()?,
            pad: r.u32()?,
        })
    }

    pub(super) fn encode_ping(&self, dst: &mut impl BufMut) {
        self.encode_pong(dst);
        dst.put_bytes(0, self.pad as usize);
    }

    pub(super) fn encode_pong(&self, dst: &mut impl BufMut) {
        dst.put_u64(self.seq);
        dst.put_u64(self.time);
        dst.put_u32(self.pad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{check, Frame, FrameType};
    use crate::testutil::{assert_truncated, body, header, reject, Body};

    fn ping(pad: u32) -> Ping {
        Ping {
            seq: 7,
            time: 0x0102_0304_0506_0708,
            pad,
        }
    }

    #[test]
    fn encodes_as_documented() {
        let head = |pad| Body::new().u64(7).u64(0x0102_0304_0506_0708).u32(pad).0;
        let mut padded = head(3);
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(body(&Frame::Ping(ping(3))), padded);
        assert_eq!(body(&Frame::Pong(ping(3))), head(3));
    }

    #[test]
    fn rejects_truncated_and_bad_padding() {
        assert_truncated(FrameType::Ping, &body(&Frame::Ping(ping(4))), 0);
        assert_truncated(FrameType::Pong, &body(&Frame::Pong(ping(4))), 0);
        // Padding that is not zero, or longer than the length field says.
        let mut b = body(&Frame::Ping(ping(4)));
        b[HEAD_LEN + 2] = 1;
        assert_eq!(reject(FrameType::Ping, &b), DecodeError::NonzeroReserved);
        let mut b = body(&Frame::Ping(ping(4)));
        b.push(0);
        assert!(matches!(
            reject(FrameType::Ping, &b),
            DecodeError::TrailingBytes
        ));
        // A PONG is fixed-size: refused from the header.
        let e = DecodeError::TooLong { len: 21, max: 20 };
        assert_eq!(check(&header(FrameType::Pong as u8, 21)), Err(e));
        // A PING's padding is bounded, on the header too.
        let max = MAX_PING_BODY + 1;
        assert!(check(&header(FrameType::Ping as u8, max)).is_err());
    }
}
