//! The receiver's side: checking a chunk before it may reach a disk.

use std::fmt;

use blockrep_proto::consts::MAX_BLOCK_SIZE;

use crate::{zero_digest, ChunkError, Digest, Encoding};

/// A chunk whose length and digest have been checked.
///
/// Only [`verify`] builds one: the fields are private and there is no other constructor, no
/// `Default` and no `From`. The disk writer takes `&Verified`, so bytes that have not been
/// checked against their digest cannot reach a disk.
pub struct Verified<'a>(Chunk<'a>);

enum Chunk<'a> {
    /// The raw bytes, borrowed from the payload or from the decompression buffer.
    Data(&'a [u8]),
    /// An all-zero chunk of this many bytes, which the writer zeroes without a buffer.
    Zero(usize),
}

impl<'a> Verified<'a> {
    /// The chunk's raw length.
    pub fn len(&self) -> usize {
        match self.0 {
            Chunk::Data(data) => data.len(),
            Chunk::Zero(len) => len,
        }
    }

    /// Always false: `verify` refuses empty chunks. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes, or `None` for an all-zero chunk (which the writer zeroes cheaply).
    pub fn data(&self) -> Option<&'a [u8]> {
        match self.0 {
            Chunk::Data(data) => Some(data),
            Chunk::Zero(_) => None,
        }
    }

    /// True for a chunk sent as [`Encoding::Zero`]. A `Raw` or `Lz4` chunk that happens to hold
    /// only zeros is still data.
    pub fn is_zero(&self) -> bool {
        matches!(self.0, Chunk::Zero(_))
    }
}

// By hand, so that logging a chunk prints its length rather than a megabyte of bytes.
impl fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("len", &self.len())
            .field("zero", &self.is_zero())
            .finish()
    }
}

/// Checks a received chunk and yields its raw bytes.
///
/// `raw_len` must be 1..=`MAX_BLOCK_SIZE`; it is checked first, before anything is allocated.
/// Then the payload's length must fit the encoding (docs/PROTOCOL.md, DATA):
/// - `Raw`: the payload is the raw bytes, exactly `raw_len` long;
/// - `Zero`: the payload is empty and `digest` is the digest of `raw_len` zeros;
/// - `Lz4`: the payload is non-empty and shorter than `raw_len`, and decompresses to exactly
///   `raw_len` bytes.
///
/// Finally the blake3 of the raw bytes must equal `digest`.
///
/// `scratch` is the decompression buffer, reused across calls. For `Lz4` its length is set to
/// exactly `raw_len` (its allocation grows only to `raw_len`), so a payload that claims to
/// expand further is cut off at one chunk rather than allocating what the sender asks.
pub fn verify<'a>(
    encoding: Encoding,
    raw_len: usize,
    digest: &Digest,
    payload: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<Verified<'a>, ChunkError> {
    if raw_len == 0 || raw_len > MAX_BLOCK_SIZE as usize {
        return Err(ChunkError::BadLength { raw_len });
    }
    let length_error = ChunkError::PayloadLength {
        encoding,
        raw_len,
        payload_len: payload.len(),
    };
    let data: &'a [u8] = match encoding {
        Encoding::Raw => {
            if payload.len() != raw_len {
                return Err(length_error);
            }
            payload
        }
        Encoding::Zero => {
            if !payload.is_empty() {
                return Err(length_error);
            }
            if zero_digest(raw_len) != *digest {
                return Err(ChunkError::DigestMismatch);
            }
            return Ok(Verified(Chunk::Zero(raw_len)));
        }
        Encoding::Lz4 => {
            // An lz4 payload that does not shrink the chunk would have been sent raw.
            if payload.is_empty() || payload.len() >= raw_len {
                return Err(length_error);
            }
            if scratch.len() < raw_len {
                // Exact, so a buffer that once held a smaller chunk does not grow past one
                // chunk by Vec's doubling.
                scratch.reserve_exact(raw_len - scratch.len());
            }
            scratch.resize(raw_len, 0);
            // The safe decoder bounds-checks every copy against `scratch`; it writes
            // sequentially from 0, so decompressing exactly `raw_len` bytes overwrites any
            // stale bytes left from an earlier chunk.
            match lz4_flex::block::decompress_into(payload, scratch) {
                Ok(len) if len == raw_len => {}
                _ => return Err(ChunkError::Decompress { raw_len }),
            }
            let scratch: &'a Vec<u8> = scratch;
            scratch
        }
    };
    if crate::digest(data) != *digest {
        return Err(ChunkError::DigestMismatch);
    }
    Ok(Verified(Chunk::Data(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{digest, encode, testdata};
    use proptest::prelude::*;

    const MAX: usize = MAX_BLOCK_SIZE as usize;

    /// Encodes `raw` and checks it back; returns the encoding used.
    fn round_trip(raw: &[u8]) -> Encoding {
        let mut compressed = Vec::new();
        let encoded = encode(raw, &mut compressed);
        let payload: &[u8] = match encoded.encoding {
            Encoding::Raw => raw,
            Encoding::Lz4 => &compressed[..encoded.payload_len],
            Encoding::Zero => &[],
        };
        assert_eq!(payload.len(), encoded.payload_len);
        let mut scratch = Vec::new();
        let verified = verify(
            encoded.encoding,
            raw.len(),
            &encoded.digest,
            payload,
            &mut scratch,
        )
        .unwrap();
        assert_eq!(verified.len(), raw.len());
        assert!(!verified.is_empty());
        match verified.data() {
            Some(data) => {
                assert!(!verified.is_zero());
                assert_eq!(data, raw);
            }
            None => {
                assert!(verified.is_zero());
                assert!(crate::is_zero(raw));
            }
        }
        encoded.encoding
    }

    /// An lz4 chunk of compressible text: (raw, payload, digest).
    fn lz4_chunk(len: usize) -> (Vec<u8>, Vec<u8>, Digest) {
        let raw = testdata::text(len, 7);
        let mut compressed = Vec::new();
        let encoded = encode(&raw, &mut compressed);
        assert_eq!(encoded.encoding, Encoding::Lz4);
        (raw, compressed, encoded.digest)
    }

    #[test]
    fn round_trips_every_kind_and_length() {
        for len in [1, 4095, 4096, 65_536, MAX] {
            assert_eq!(round_trip(&vec![0; len]), Encoding::Zero, "zeros {len}");
            let random = round_trip(&testdata::random(len, len as u64));
            assert_eq!(random, Encoding::Raw, "random {len}");
            let text = round_trip(&testdata::text(len, 3));
            if len >= 4095 {
                assert_eq!(text, Encoding::Lz4, "text {len}");
            }
            round_trip(&testdata::mixed(len, 5));
        }
    }

    #[test]
    fn zero_valued_data_chunks_are_still_data() {
        // A sender may send zeros raw; it is a valid chunk, written as data.
        let raw = vec![0; 4096];
        let mut scratch = Vec::new();
        let verified = verify(Encoding::Raw, 4096, &digest(&raw), &raw, &mut scratch).unwrap();
        assert!(!verified.is_zero());
        assert_eq!(verified.data(), Some(&raw[..]));
    }

    #[test]
    fn scratch_is_exactly_one_chunk() {
        let (big_raw, big, big_digest) = lz4_chunk(MAX);
        let (small_raw, small, small_digest) = lz4_chunk(5000);
        let mut scratch = Vec::new();
        let v = verify(Encoding::Lz4, 5000, &small_digest, &small, &mut scratch).unwrap();
        assert_eq!(v.data(), Some(&small_raw[..]));
        assert_eq!(scratch.len(), 5000);
        assert_eq!(scratch.capacity(), 5000);
        let v = verify(Encoding::Lz4, MAX, &big_digest, &big, &mut scratch).unwrap();
        assert_eq!(v.data(), Some(&big_raw[..]));
        assert_eq!(scratch.len(), MAX);
        assert_eq!(scratch.capacity(), MAX);
        // Shrinking keeps the allocation and still reports exactly the chunk.
        let v = verify(Encoding::Lz4, 5000, &small_digest, &small, &mut scratch).unwrap();
        assert_eq!(v.data(), Some(&small_raw[..]));
        assert_eq!(scratch.len(), 5000);
        assert_eq!(scratch.capacity(), MAX);
        // A payload claiming to expand past raw_len is cut off at raw_len, not grown into.
        let bomb = lz4_flex::block::compress(&vec![b'x'; MAX]);
        let raw_len = bomb.len() + 1;
        let err = verify(Encoding::Lz4, raw_len, &big_digest, &bomb, &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::Decompress { raw_len });
        assert_eq!(scratch.len(), raw_len);
    }

    #[test]
    fn rejects_zero_raw_len() {
        let mut scratch = Vec::new();
        let err = verify(Encoding::Raw, 0, &digest(&[]), &[], &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::BadLength { raw_len: 0 });
        let err = verify(Encoding::Zero, 0, &zero_digest(0), &[], &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::BadLength { raw_len: 0 });
    }

    #[test]
    fn rejects_raw_len_above_max_before_allocating() {
        let mut scratch = Vec::new();
        for raw_len in [MAX + 1, usize::MAX] {
            let err =
                verify(Encoding::Lz4, raw_len, &[0; 32], &[1, 2, 3], &mut scratch).unwrap_err();
            assert_eq!(err, ChunkError::BadLength { raw_len });
            assert_eq!(scratch.capacity(), 0);
        }
    }

    #[test]
    fn rejects_raw_payload_of_wrong_length() {
        let raw = testdata::random(4096, 9);
        let d = digest(&raw);
        let mut scratch = Vec::new();
        for (raw_len, payload) in [(4097, &raw[..]), (4096, &raw[..4095])] {
            let err = verify(Encoding::Raw, raw_len, &d, payload, &mut scratch).unwrap_err();
            assert_eq!(
                err,
                ChunkError::PayloadLength {
                    encoding: Encoding::Raw,
                    raw_len,
                    payload_len: payload.len()
                }
            );
        }
    }

    #[test]
    fn rejects_zero_with_payload() {
        let mut scratch = Vec::new();
        let err = verify(Encoding::Zero, 4096, &zero_digest(4096), &[0], &mut scratch).unwrap_err();
        assert_eq!(
            err,
            ChunkError::PayloadLength {
                encoding: Encoding::Zero,
                raw_len: 4096,
                payload_len: 1
            }
        );
    }

    #[test]
    fn rejects_zero_with_wrong_digest() {
        let mut scratch = Vec::new();
        // The digest of zeros of another length is still the wrong digest.
        let err = verify(Encoding::Zero, 4096, &zero_digest(4095), &[], &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::DigestMismatch);
    }

    #[test]
    fn rejects_empty_lz4_payload() {
        let mut scratch = Vec::new();
        let err = verify(Encoding::Lz4, 4096, &zero_digest(4096), &[], &mut scratch).unwrap_err();
        assert_eq!(
            err,
            ChunkError::PayloadLength {
                encoding: Encoding::Lz4,
                raw_len: 4096,
                payload_len: 0
            }
        );
    }

    #[test]
    fn rejects_lz4_payload_not_shorter() {
        let (raw, payload, d) = lz4_chunk(4096);
        let mut scratch = Vec::new();
        for raw_len in [payload.len(), payload.len() - 1] {
            let err = verify(Encoding::Lz4, raw_len, &d, &payload, &mut scratch).unwrap_err();
            assert_eq!(
                err,
                ChunkError::PayloadLength {
                    encoding: Encoding::Lz4,
                    raw_len,
                    payload_len: payload.len()
                }
            );
        }
        assert!(raw.len() > payload.len());
    }

    #[test]
    fn rejects_corrupt_lz4() {
        let mut scratch = Vec::new();
        // A token announcing 15 literals plus more length bytes, then nothing.
        let err = verify(Encoding::Lz4, 4096, &[0; 32], &[0xf0], &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::Decompress { raw_len: 4096 });
        // A match with offset 0.
        let err = verify(
            Encoding::Lz4,
            4096,
            &[0; 32],
            &[0x1f, b'a', 0, 0],
            &mut scratch,
        )
        .unwrap_err();
        assert_eq!(err, ChunkError::Decompress { raw_len: 4096 });
    }

    #[test]
    fn rejects_lz4_that_decompresses_to_fewer_bytes() {
        let (mut raw, payload, _) = lz4_chunk(4096);
        raw.push(b' ');
        let mut scratch = Vec::new();
        let err = verify(Encoding::Lz4, 4097, &digest(&raw), &payload, &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::Decompress { raw_len: 4097 });
    }

    #[test]
    fn rejects_lz4_that_decompresses_to_more_bytes() {
        let (raw, payload, _) = lz4_chunk(4096);
        let mut scratch = Vec::new();
        let err = verify(
            Encoding::Lz4,
            4095,
            &digest(&raw[..4095]),
            &payload,
            &mut scratch,
        )
        .unwrap_err();
        assert_eq!(err, ChunkError::Decompress { raw_len: 4095 });
        assert_eq!(scratch.len(), 4095);
    }

    #[test]
    fn rejects_raw_with_a_flipped_byte() {
        let mut raw = testdata::random(65_536, 11);
        let d = digest(&raw);
        raw[40_000] ^= 1;
        let mut scratch = Vec::new();
        let err = verify(Encoding::Raw, raw.len(), &d, &raw, &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::DigestMismatch);
    }

    #[test]
    fn rejects_lz4_with_a_flipped_compressed_byte() {
        let (raw, mut payload, d) = lz4_chunk(65_536);
        // An lz4 block always ends in literals, so the last byte is a literal: flipping it
        // still decompresses, to bytes that no longer match the digest.
        let last = payload.len() - 1;
        payload[last] ^= 0x20;
        let mut scratch = Vec::new();
        let err = verify(Encoding::Lz4, raw.len(), &d, &payload, &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::DigestMismatch);
    }

    #[test]
    fn rejects_right_bytes_with_wrong_digest() {
        let (raw, payload, mut d) = lz4_chunk(4096);
        d[31] ^= 1;
        let mut scratch = Vec::new();
        let err = verify(Encoding::Lz4, raw.len(), &d, &payload, &mut scratch).unwrap_err();
        assert_eq!(err, ChunkError::DigestMismatch);
    }

    /// Chunk contents: runs of zeros, repeated bytes and random bytes.
    fn chunk_strategy() -> impl Strategy<Value = Vec<u8>> {
        let run = prop_oneof![
            (1usize..3000).prop_map(|n| vec![0u8; n]),
            (any::<u8>(), 1usize..3000).prop_map(|(b, n)| vec![b; n]),
            proptest::collection::vec(any::<u8>(), 1..3000),
        ];
        proptest::collection::vec(run, 1..30).prop_map(|runs| runs.concat())
    }

    proptest! {
        #[test]
        fn encode_then_verify_round_trips(raw in chunk_strategy()) {
            round_trip(&raw);
        }

        #[test]
        fn verify_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            crate::fuzzing::verify_chunk(&data);
        }
    }
}
