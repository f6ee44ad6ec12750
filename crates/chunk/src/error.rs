//! Why a received chunk was refused.

use blockrep_proto::consts::MAX_BLOCK_SIZE;

use crate::Encoding;

/// Why [`verify`](crate::verify) refused a chunk. Each ends the session: a conforming sender
/// never produces any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The announced raw length is 0 or above `MAX_BLOCK_SIZE`.
    #[error("chunk raw length {raw_len} is outside the allowed 1..={MAX_BLOCK_SIZE} bytes")]
    BadLength {
        /// The announced raw length.
        raw_len: usize,
    },
    /// The payload's length does not fit its encoding: a raw payload that is not the raw
    /// length, a zero chunk with a payload, or an lz4 payload that is empty or not shorter than
    /// the raw length.
    #[error(
        "{} payload of {payload_len} bytes for a {raw_len}-byte chunk: {}",
        name(*encoding),
        rule(*encoding)
    )]
    PayloadLength {
        /// The announced encoding.
        encoding: Encoding,
        /// The announced raw length.
        raw_len: usize,
        /// The payload's actual length.
        payload_len: usize,
    },
    /// The lz4 payload is corrupt or does not decompress to exactly the raw length.
    #[error("lz4 payload does not decompress to the announced {raw_len} bytes")]
    Decompress {
        /// The announced raw length.
        raw_len: usize,
    },
    /// The blake3 digest of the raw bytes differs from the announced digest.
    #[error("digest mismatch: the chunk's bytes are not the bytes the sender hashed")]
    DigestMismatch,
}

impl ChunkError {
    /// The service error code the session reports for this refusal: `SMS.2009` for a payload
    /// that does not decompress, `SMS.2011` for every other corrupt chunk.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Decompress { .. } => blockrep_codes::DECOMPRESS,
            Self::BadLength { .. } | Self::PayloadLength { .. } | Self::DigestMismatch => {
                blockrep_codes::RECEIVE
            }
        }
    }
}

fn name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Raw => "raw",
        Encoding::Lz4 => "lz4",
        Encoding::Zero => "zero",
    }
}

fn rule(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Raw => "a raw payload must be exactly the raw length",
        Encoding::Lz4 => "an lz4 payload must be non-empty and shorter than the raw length",
        Encoding::Zero => "a zero chunk carries no payload",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_numbers() {
        let e = ChunkError::Decompress { raw_len: 1 << 20 };
        assert_eq!(
            e.to_string(),
            "lz4 payload does not decompress to the announced 1048576 bytes"
        );
        assert_eq!(e.code(), "SMS.2009");
        let e = ChunkError::PayloadLength {
            encoding: Encoding::Zero,
            raw_len: 4096,
            payload_len: 3,
        };
        assert_eq!(
            e.to_string(),
            "zero payload of 3 bytes for a 4096-byte chunk: a zero chunk carries no payload"
        );
        assert_eq!(e.code(), "SMS.2011");
        assert_eq!(ChunkError::DigestMismatch.code(), "SMS.2011");
        assert_eq!(ChunkError::BadLength { raw_len: 0 }.code(), "SMS.2011");
    }
}
