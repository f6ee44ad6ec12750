//! The sender's side: choosing an encoding for one chunk.

use crate::{digest, is_zero, zero_digest, Digest, Encoding};

/// How [`encode`] chose to send one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// The payload's encoding.
    pub encoding: Encoding,
    /// blake3 of the chunk's raw bytes, whatever the encoding.
    pub digest: Digest,
    /// Bytes of payload: 0 for `Zero`, the raw length for `Raw`, the compressed length for
    /// `Lz4`.
    pub payload_len: usize,
}

/// Encodes one chunk of raw bytes.
///
/// An all-zero chunk (including an empty one) is [`Encoding::Zero`] and has no payload. Any
/// other chunk is lz4 block-compressed (no size prefix: the DATA frame carries the raw length)
/// into `compressed`; if that does not make it strictly smaller, the chunk goes
/// [`Encoding::Raw`], as storing it uncompressed costs the receiver nothing and saves it a
/// decompression.
///
/// The payload to send is `raw` itself for `Raw` and `&compressed[..payload_len]` for `Lz4`.
/// `compressed` is a buffer reused across calls; its contents are meaningless for `Raw` and
/// `Zero`.
pub fn encode(raw: &[u8], compressed: &mut Vec<u8>) -> Encoded {
    if is_zero(raw) {
        return zero(raw.len());
    }
    let digest = digest(raw);
    compressed.resize(lz4_flex::block::get_maximum_output_size(raw.len()), 0);
    // The buffer is sized to lz4's worst case, so compression cannot run out of room; if it
    // ever reports an error anyway, sending the chunk raw is still correct.
    match lz4_flex::block::compress_into(raw, compressed) {
        Ok(len) if len < raw.len() => {
            compressed.truncate(len);
            Encoded {
                encoding: Encoding::Lz4,
                digest,
                payload_len: len,
            }
        }
        _ => {
            compressed.clear();
            Encoded {
                encoding: Encoding::Raw,
                digest,
                payload_len: raw.len(),
            }
        }
    }
}

/// Encodes one chunk without trying compression: [`Encoding::Zero`] for an all-zero chunk,
/// else [`Encoding::Raw`]. For chunks that are known not to compress, or when compressing
/// would cost more time than it saves on the wire.
pub fn encode_uncompressed(raw: &[u8]) -> Encoded {
    if is_zero(raw) {
        return zero(raw.len());
    }
    Encoded {
        encoding: Encoding::Raw,
        digest: digest(raw),
        payload_len: raw.len(),
    }
}

fn zero(len: usize) -> Encoded {
    Encoded {
        encoding: Encoding::Zero,
        digest: zero_digest(len),
        payload_len: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn zeros_encode_as_zero_without_payload() {
        let mut compressed = Vec::new();
        for len in [0, 1, 4096, 1 << 20] {
            let encoded = encode(&vec![0; len], &mut compressed);
            assert_eq!(encoded.encoding, Encoding::Zero);
            assert_eq!(encoded.payload_len, 0);
            assert_eq!(encoded.digest, crate::digest(&vec![0; len]));
        }
    }

    #[test]
    fn uncompressed_is_zero_or_raw() {
        for raw in [
            vec![0; 4096],
            testdata::text(65_536, 3),
            testdata::random(4096, 4),
        ] {
            let mut compressed = Vec::new();
            let full = encode(&raw, &mut compressed);
            let e = encode_uncompressed(&raw);
            assert_eq!(e.digest, full.digest);
            if full.encoding == Encoding::Zero {
                assert_eq!((e.encoding, e.payload_len), (Encoding::Zero, 0));
            } else {
                assert_eq!((e.encoding, e.payload_len), (Encoding::Raw, raw.len()));
            }
        }
    }

    #[test]
    fn random_data_goes_raw() {
        let raw = testdata::random(65_536, 1);
        let mut compressed = Vec::new();
        let encoded = encode(&raw, &mut compressed);
        assert_eq!(encoded.encoding, Encoding::Raw);
        assert_eq!(encoded.payload_len, raw.len());
        assert_eq!(encoded.digest, crate::digest(&raw));
    }

    #[test]
    fn text_compresses_to_a_bare_lz4_block() {
        let raw = testdata::text(65_536, 2);
        let mut compressed = Vec::new();
        let encoded = encode(&raw, &mut compressed);
        assert_eq!(encoded.encoding, Encoding::Lz4);
        assert_eq!(compressed.len(), encoded.payload_len);
        assert!(encoded.payload_len < raw.len());
        // No size prefix: the block decodes on its own, given the raw length.
        let back = lz4_flex::block::decompress(&compressed, raw.len()).unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn a_single_nonzero_byte_is_not_zero() {
        let mut raw = vec![0; 4096];
        raw[4095] = 1;
        let mut compressed = Vec::new();
        let encoded = encode(&raw, &mut compressed);
        assert_eq!(encoded.encoding, Encoding::Lz4);
        assert_eq!(encoded.digest, crate::digest(&raw));
    }
}
