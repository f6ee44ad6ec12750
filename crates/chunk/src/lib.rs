//! blockrep's chunk encoding: what travels in a DATA frame's payload, and the check that a
//! received chunk is the chunk the sender read.
//!
//! The sender calls [`encode`] on each chunk it reads: an all-zero chunk becomes
//! [`Encoding::Zero`] with no payload, a chunk that lz4 shrinks becomes [`Encoding::Lz4`], and
//! anything else is sent [`Encoding::Raw`]. Every chunk carries the blake3 [`Digest`] of its raw
//! bytes. The receiver calls [`verify`], which checks the length, decompresses into a buffer
//! exactly one chunk long and compares the digest; only then does it hand out a [`Verified`],
//! the one type the disk writer accepts.
//!
//! This crate does no I/O, keeps no state beyond a small per-thread cache of zero digests, and
//! does not frame, order or deduplicate chunks: that is `blockrep-proto`'s job. Payloads are
//! untrusted: no input makes it panic or allocate more than one chunk (`MAX_BLOCK_SIZE`).
//! The encodings are specified in `docs/PROTOCOL.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod encode;
mod error;
mod verify;
mod zero;

#[cfg(any(feature = "fuzzing", test))]
pub mod fuzzing;

pub use blockrep_proto::{Digest, Encoding};
pub use encode::{encode, encode_uncompressed, Encoded};
pub use error::ChunkError;
pub use verify::{verify, Verified};
pub use zero::{is_zero, zero_digest};

/// The blake3 digest of `raw`: what a DATA frame announces for a chunk.
pub fn digest(raw: &[u8]) -> Digest {
    *blake3::hash(raw).as_bytes()
}

#[cfg(test)]
pub(crate) mod testdata {
    //! Deterministic inputs that look like disk contents, shared by the unit tests.

    /// xorshift64*: a small deterministic PRNG, so failures reproduce without a seed file.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }

        pub fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub fn fill(&mut self, buf: &mut [u8]) {
            for piece in buf.chunks_mut(8) {
                let word = self.next_u64().to_le_bytes();
                piece.copy_from_slice(&word[..piece.len()]);
            }
        }
    }

    pub fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut buf = vec![0; len];
        Rng::new(seed).fill(&mut buf);
        buf
    }

    pub fn text(len: usize, seed: u64) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "the",
            "disk",
            "block",
            "server",
            "migration",
            "replicates",
            "every",
            "chunk",
            "over",
            "a",
            "mutual",
            "TLS",
            "session",
            "and",
            "checks",
            "its",
            "digest",
            "before",
            "writing",
        ];
        let mut rng = Rng::new(seed);
        let mut buf = Vec::with_capacity(len + 16);
        while buf.len() < len {
            let word = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
            buf.extend_from_slice(word.as_bytes());
            // A line break about every eleventh word.
            buf.push(match rng.next_u64() % 11 {
                0 => b'\n',
                _ => b' ',
            });
        }
        buf.truncate(len);
        buf
    }

    /// Zeros, text and random data in runs, like a partly used filesystem.
    pub fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        let mut buf = vec![0; len];
        let mut pos = 0;
        while pos < len {
            let run = (1 + rng.next_u64() % 8192) as usize;
            let end = (pos + run).min(len);
            match rng.next_u64() % 3 {
                0 => {}
                1 => buf[pos..end].copy_from_slice(&text(end - pos, rng.next_u64())),
                _ => rng.fill(&mut buf[pos..end]),
            }
            pos = end;
        }
        buf
    }
}
