//! Bounds-checked reading and plain writing of the primitive wire types.
//!
//! All integers are big-endian (network order). A string is a u16 length followed by that many
//! bytes of UTF-8; each string field has its own maximum, checked before anything is copied.

use bytes::{BufMut, Bytes};

use crate::error::DecodeError;

/// A cursor over one frame body. Every read checks that the bytes are there; a body that ends
/// early is [`DecodeError::Truncated`], a body with bytes left over is
/// [`DecodeError::TrailingBytes`] (see [`Reader::finish`]).
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    /// A reader at the start of `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next `n` bytes without copying.
    pub fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.split_to(n))
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    /// A byte; `Truncated` when the bytes run out.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian u16; `Truncated` when the bytes run out.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32; `Truncated` when the bytes run out.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian u64; `Truncated` when the bytes run out.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `DIGEST_LEN`-byte digest.
    pub fn digest(&mut self) -> Result<crate::Digest, DecodeError> {
        self.array()
    }

    /// A u16-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError::StringTooLong);
        }
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(&bytes).map_err(|_| DecodeError::BadString)?;
        Ok(s.to_owned())
    }

    /// Ends the body: left-over bytes are an error, so every byte of a frame has a meaning.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Writes a u16-length-prefixed string. Callers validate lengths first; a longer string is cut
/// at the u16 limit on a character boundary rather than corrupting the frame.
pub fn put_string(dst: &mut impl BufMut, s: &str) {
    let end = wire_str_len(s);
    dst.put_u16(end as u16);
    dst.put_slice(&s.as_bytes()[..end]);
}

/// Encoded length of a string written by [`put_string`].
pub fn string_len(s: &str) -> usize {
    2 + wire_str_len(s)
}

/// How many bytes of `s` [`put_string`] writes: all of them, or as many as fit the u16 length
/// cut back to a character boundary. Shared so that `encoded_len` always equals what is written.
fn wire_str_len(s: &str) -> usize {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// True for an identifier (session id, disk id): 1..=max bytes of `A-Z a-z 0-9 . _ -`, not
/// starting with a dot. Identifiers end up in file names on the receiver, so nothing else is
/// allowed.
pub fn is_identifier(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// True for a printable ASCII string of at most `max` bytes (versions, error codes).
pub fn is_printable(s: &str, max: usize) -> bool {
    s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Body;

    fn reader(bytes: &[u8]) -> Reader {
        Reader::new(Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn reads_big_endian() {
        let mut r = reader(&Body::new().u8(1).u16(2).u32(3).u64(4).0);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.u64(), Ok(4));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn rejects_truncated_integers() {
        assert_eq!(reader(&[]).u8(), Err(DecodeError::Truncated));
        assert_eq!(reader(&[0]).u16(), Err(DecodeError::Truncated));
        assert_eq!(reader(&[0; 3]).u32(), Err(DecodeError::Truncated));
        assert_eq!(reader(&[0; 7]).u64(), Err(DecodeError::Truncated));
        assert_eq!(reader(&[0; 31]).digest(), Err(DecodeError::Truncated));
        assert_eq!(reader(&[0; 3]).take(4), Err(DecodeError::Truncated));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut r = reader(&[0, 1, 2]);
        r.u16().unwrap();
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn reads_string_up_to_max() {
        let mut r = reader(&Body::new().str(b"abcd").0);
        assert_eq!(r.string(4).as_deref(), Ok("abcd"));
        r.finish().unwrap();
    }

    #[test]
    fn rejects_string_too_long() {
        assert_eq!(
            reader(&Body::new().str(b"abcde").0).string(4),
            Err(DecodeError::StringTooLong)
        );
        // Checked on the length prefix, before the bytes are there.
        assert_eq!(
            reader(&Body::new().u16(u16::MAX).0).string(4),
            Err(DecodeError::StringTooLong)
        );
    }

    #[test]
    fn rejects_truncated_string() {
        assert_eq!(reader(&[0]).string(4), Err(DecodeError::Truncated));
        assert_eq!(
            reader(&Body::new().u16(3).bytes(b"ab").0).string(4),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn rejects_invalid_utf8() {
        for bad in [&b"\xff"[..], b"a\xc3", b"\xed\xa0\x80", b"\xc0\xaf"] {
            assert_eq!(
                reader(&Body::new().str(bad).0).string(16),
                Err(DecodeError::BadString),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("disk-0_a.b", 64));
        assert!(is_identifier("a.", 64));
        assert!(is_identifier(&"x".repeat(64), 64));
        assert!(!is_identifier(&"x".repeat(65), 64));
        assert!(!is_identifier("", 64));
        assert!(!is_identifier(".hidden", 64));
        assert!(!is_identifier("..", 64));
        for bad in ["a/b", "a b", "a\\b", "a\0", "é", "a:b", "a\n"] {
            assert!(!is_identifier(bad, 64), "{bad:?}");
        }
    }

    #[test]
    fn printable() {
        assert!(is_printable("", 4));
        assert!(is_printable(" ~az", 4));
        assert!(!is_printable("abcde", 4));
        for bad in ["\t", "\x7f", "é", "\x1b[", "\0"] {
            assert!(!is_printable(bad, 16), "{bad:?}");
        }
    }

    #[test]
    fn string_len_matches_put_string() {
        let long_ascii = "a".repeat(70_000);
        // A 2-byte character straddles the u16 limit: it is dropped whole.
        let straddling = format!("{}é", "a".repeat(usize::from(u16::MAX) - 1));
        for s in ["", "abc", "é€𝄞", &long_ascii, &straddling] {
            let mut out = Vec::new();
            put_string(&mut out, s);
            assert_eq!(out.len(), string_len(s), "len {}", s.len());
            let mut r = Reader::new(Bytes::from(out));
            let back = r.string(usize::MAX).unwrap();
            assert!(s.starts_with(&back));
            r.finish().unwrap();
        }
    }
}
