//! ERROR (0x7f), either way: `code` str | `message` str. The session ends after it.
//!
//! `code` is a service error code (`SMS.1504`): printable ASCII, at most 16 bytes. `message`
//! is UTF-8, at most 1024 bytes, and says what happened and what to do.

use bytes::BufMut;

use crate::codec::{is_printable, put_string, string_len, Reader};
use crate::consts::{MAX_CODE_LEN, MAX_MESSAGE_LEN};
use crate::error::DecodeError;

pub(super) const MAX_BODY: u32 = (2 + MAX_CODE_LEN + 2 + MAX_MESSAGE_LEN) as u32;

/// An error that ends the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The service error code, e.g. `SMS.1504`.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

impl ErrorFrame {
    /// Builds an error frame, cutting an over-long message (on a character boundary) and
    /// replacing a code that is not printable, so the frame always encodes validly.
    pub fn new(code: &str, message: &str) -> Self {
        let code = if is_printable(code, MAX_CODE_LEN) && !code.is_empty() {
            code.to_owned()
        } else {
            blockrep_codes::TRANSMISSION.to_owned()
        };
        let mut end = message.len().min(MAX_MESSAGE_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            code,
            message: message[..end].to_owned(),
        }
    }

    pub(super) fn load(r: &mut Reader) -> Result<Self, DecodeError> {
        let code = r.string(MAX_CODE_LEN)?;
        if code.is_empty() || !is_printable(&code, MAX_CODE_LEN) {
            return Err(DecodeError::BadString);
        }
        let message = r.string(MAX_MESSAGE_LEN)?;
        Ok(Self { code, message })
    }

    pub(super) fn body_len(&self) -> usize {
        string_len(&self.code) + string_len(&self.message)
    }

    pub(super) fn encode(&self, dst: &mut impl BufMut) {
        put_string(dst, &self.code);
        put_string(dst, &self.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameType};
    use crate::testutil::{assert_truncated, body, decode_one, raw_frame, reject, Body};

    fn error_body(code: &[u8], message: &[u8]) -> Vec<u8> {
        Body::new().str(code).str(message).0
    }

    #[test]
    fn encodes_as_documented() {
        let f = Frame::Error(ErrorFrame::new("SMS.1504", "disk sizes do not match"));
        assert_eq!(
            body(&f),
            error_body(b"SMS.1504", b"disk sizes do not match")
        );
    }

    #[test]
    fn accepts_limits() {
        let code = "C".repeat(MAX_CODE_LEN);
        let message = "é".repeat(MAX_MESSAGE_LEN / 2);
        let b = error_body(code.as_bytes(), message.as_bytes());
        assert_eq!(b.len(), MAX_BODY as usize);
        let f = decode_one(&raw_frame(FrameType::Error, &b));
        assert_eq!(
            f,
            Ok(Some(Frame::Error(ErrorFrame {
                code,
                message: message.clone()
            })))
        );
        // The message is UTF-8, not only ASCII, and may be empty.
        let b = error_body(b"X", b"");
        assert!(decode_one(&raw_frame(FrameType::Error, &b)).is_ok());
    }

    #[test]
    fn rejects_code_too_long() {
        let b = error_body("C".repeat(MAX_CODE_LEN + 1).as_bytes(), b"m");
        assert_eq!(reject(FrameType::Error, &b), DecodeError::StringTooLong);
    }

    #[test]
    fn rejects_message_too_long() {
        let b = error_body(b"SMS.1908", "m".repeat(MAX_MESSAGE_LEN + 1).as_bytes());
        assert_eq!(reject(FrameType::Error, &b), DecodeError::StringTooLong);
    }

    #[test]
    fn rejects_empty_code() {
        let b = error_body(b"", b"m");
        assert_eq!(reject(FrameType::Error, &b), DecodeError::BadString);
    }

    #[test]
    fn rejects_non_printable_code() {
        for code in [&b"SMS.1\n"[..], b"\x1b[0m", b"\x7f", "SMS.é".as_bytes()] {
            let b = error_body(code, b"m");
            assert_eq!(
                reject(FrameType::Error, &b),
                DecodeError::BadString,
                "{code:?}"
            );
        }
    }

    #[test]
    fn rejects_invalid_utf8() {
        for b in [error_body(b"\xff", b"m"), error_body(b"SMS.1908", b"m\xc3")] {
            assert_eq!(reject(FrameType::Error, &b), DecodeError::BadString);
        }
    }

    #[test]
    fn rejects_truncated() {
        let b = error_body(b"SMS.2011", b"digest mismatch");
        assert_truncated(FrameType::Error, &b, 0);
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut b = error_body(b"SMS.2011", b"digest mismatch");
        b.push(0);
        assert_eq!(reject(FrameType::Error, &b), DecodeError::TrailingBytes);
    }

    #[test]
    fn new_always_builds_a_valid_frame() {
        let e = ErrorFrame::new("", "m");
        assert_eq!(e.code, "SMS.1908");
        let e = ErrorFrame::new("SMS.\n", "m");
        assert_eq!(e.code, "SMS.1908");
        let e = ErrorFrame::new(&"C".repeat(MAX_CODE_LEN + 1), "m");
        assert_eq!(e.code, "SMS.1908");
        // Cut on a character boundary at or below the limit.
        let e = ErrorFrame::new("SMS.2007", &format!("a{}", "€".repeat(400)));
        assert_eq!(e.message.len(), 1 + 3 * 341);
        let f = Frame::Error(e);
        assert_eq!(
            decode_one(&crate::testutil::encode(&f)),
            Ok(Some(f.clone()))
        );
    }
}
