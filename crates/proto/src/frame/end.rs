//! END (0x20), sender to receiver: `complete` u8 (0/1) | `frames` u64 | `bytes` u64.
//!
//! No more DATA frames follow. `complete` = 1: every planned chunk was sent; 0: the sender
//! stops early (the service's STOP) and will resume later. `frames` and `bytes` are the DATA
//! frames and raw bytes sent on this connection; the receiver checks them against its own
//! counts.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::load_bool;

pub(super) const BODY_LEN: usize = 17;

/// The sender's end of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// Whether the whole plan was sent (false: stopped early, to be resumed).
    pub complete: bool,
    /// DATA frames sent on this connection.
    pub frames: u64,
    /// Raw bytes in those frames.
    pub bytes: u64,
}

impl End {
    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            complete: load_bool(r)?,
            frames: r.u64()?,
            bytes: r.u64()?,
        })
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(u8::from(self.complete));
        dst.put_u64(self.frames);
        dst.put_u64(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{check, Frame, FrameType};
    use crate::testutil::{assert_truncated, body, decode_one, header, raw_frame, reject, Body};

    fn end(complete: bool) -> Frame {
        Frame::End(End {
            complete,
            frames: 5,
            bytes: 5 << 20,
        })
    }

    #[test]
    fn encodes_as_documented() {
        assert_eq!(body(&end(true)), Body::new().u8(1).u64(5).u64(5 << 20).0);
        assert_eq!(body(&end(false)), Body::new().u8(0).u64(5).u64(5 << 20).0);
        let b = body(&end(false));
        assert_eq!(
            decode_one(&raw_frame(FrameType::End, &b)),
            Ok(Some(end(false)))
        );
    }

    #[test]
    fn rejects_bad_bool() {
        for v in [2, 0x80, 0xff] {
            let mut b = body(&end(true));
            b[0] = v;
            assert_eq!(reject(FrameType::End, &b), DecodeError::BadBool);
        }
    }

    #[test]
    fn rejects_truncated() {
        assert_truncated(FrameType::End, &body(&end(true)), 0);
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut b = body(&end(true));
        b.push(0);
        let e = DecodeError::TooLong { len: 18, max: 17 };
        assert_eq!(reject(FrameType::End, &b), e);
        assert_eq!(check(&header(FrameType::End as u8, 18)), Err(e));
    }
}
