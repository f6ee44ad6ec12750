//! DONE (0x21), receiver to sender, the answer to END once everything is durable:
//! `frames` u64 | `bytes` u64 | `data_bytes` u64 | `zero_bytes` u64.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;

pub(super) const BODY_LEN: usize = 32;

/// The receiver's summary of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// DATA frames durable.
    pub frames: u64,
    /// Raw bytes in those frames.
    pub bytes: u64,
    /// Of those, bytes written as data.
    pub data_bytes: u64,
    /// Of those, bytes zeroed (zero chunks).
    pub zero_bytes: u64,
}

impl Done {
    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            frames: r.u64()?,
            bytes: r.u64()?,
            data_bytes: r.u64()?,
            zero_bytes: r.u64()?,
        })
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u64(self.frames);
        dst.put_u64(self.bytes);
        dst.put_u64(self.data_bytes);
        dst.put_u64(self.zero_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{check, Frame, FrameType};
    use crate::testutil::{assert_truncated, body, header, reject, Body};

    fn done() -> Frame {
        Frame::Done(Done {
            frames: 1,
            bytes: 2,
            data_bytes: 3,
            zero_bytes: u64::MAX,
        })
    }

    #[test]
    fn encodes_as_documented() {
        let expected = Body::new().u64(1).u64(2).u64(3).u64(u64::MAX).0;
        assert_eq!(body(&done()), expected);
    }

    #[test]
    fn rejects_truncated() {
        assert_truncated(FrameType::Done, &body(&done()), 0);
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut b = body(&done());
        b.push(0);
        let e = DecodeError::TooLong { len: 33, max: 32 };
        assert_eq!(reject(FrameType::Done, &b), e);
        assert_eq!(check(&header(FrameType::Done as u8, 33)), Err(e));
    }
}
