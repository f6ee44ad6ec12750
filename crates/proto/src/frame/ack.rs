//! ACK (0x11), receiver to sender: `frames` u64 | `bytes` u64.
//!
//! Cumulative: the first `frames` DATA frames of the session (in the order the receiver read
//! them), holding `bytes` raw bytes, are durable on the targets (written and fdatasync'ed).
//! Never sent before the data is durable; never goes backwards.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;

pub(super) const BODY_LEN: usize = 16;

/// Durable-data acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// DATA frames durable so far, counted from the start of the connection.
    pub frames: u64,
    /// Raw bytes those frames hold.
    pub bytes: u64,
}

impl Ack {
    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            frames: r.u64()?,
            bytes: r.u64()?,
        })
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u64(self.frames);
        dst.put_u64(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{check, Frame, FrameType};
    use crate::testutil::{assert_truncated, body, header, reject, Body};

    fn ack() -> Frame {
        Frame::Ack(Ack {
            frames: 0x0102,
            bytes: u64::MAX,
        })
    }

    #[test]
    fn encodes_as_documented() {
        assert_eq!(body(&ack()), Body::new().u64(0x0102).u64(u64::MAX).0);
    }

    #[test]
    fn rejects_truncated() {
        assert_truncated(FrameType::Ack, &body(&ack()), 0);
    }

    #[test]
    fn rejects_trailing_bytes() {
        // A fixed-size body: a longer one is refused from the header alone.
        let mut b = body(&ack());
        b.push(0);
        let e = DecodeError::TooLong { len: 17, max: 16 };
        assert_eq!(reject(FrameType::Ack, &b), e);
        assert_eq!(check(&header(FrameType::Ack as u8, 17)), Err(e));
    }
}
