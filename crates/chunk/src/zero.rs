//! All-zero chunks: detecting them and their digest.

use std::cell::Cell;

use crate::Digest;

/// A block of zeros to compare against and to hash from. 4 KiB keeps it within L1 cache while
/// still letting `memcmp` run its vectorized loop on long stretches.
static ZEROS: [u8; 4096] = [0; 4096];

/// How many zero digests each thread remembers. A session has one block size per disk, plus
/// the shorter last chunk of a disk, so two entries cover the common case.
const CACHE_ENTRIES: usize = 2;

thread_local! {
    /// Recently asked zero digests as `(len, digest)`; `len == 0` marks an empty slot (a zero
    /// length is cheap to hash and never cached).
    static ZERO_DIGESTS: Cell<[(usize, Digest); CACHE_ENTRIES]> =
        const { Cell::new([(0, [0; 32]); CACHE_ENTRIES]) };
}

/// True when every byte of `buf` is zero (and for an empty `buf`).
///
/// Compares 4 KiB at a time against a static zero block: `memcmp` is vectorized, and a chunk
/// with data usually differs in its first block, so the common "not zero" answer is quick.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(ZEROS.len());
    for block in &mut blocks {
        if block != ZEROS {
            return false;
        }
    }
    let rest = blocks.remainder();
    rest == &ZEROS[..rest.len()]
}

/// The blake3 digest of `len` zero bytes.
///
/// The receiver asks for this for every zero chunk, almost always with the same length, so the
/// last few answers are cached per thread; hashing 1 MiB of zeros costs as much as hashing data.
pub fn zero_digest(len: usize) -> Digest {
    if len == 0 {
        return compute(0);
    }
    ZERO_DIGESTS.with(|cache| {
        let mut entries = cache.get();
        if let Some(hit) = entries.iter().find(|(l, _)| *l == len) {
            return hit.1;
        }
        let digest = compute(len);
        // Keep the most recent answer first; the oldest falls off the end.
        entries.rotate_right(1);
        entries[0] = (len, digest);
        cache.set(entries);
        digest
    })
}

fn compute(mut len: usize) -> Digest {
    let mut hasher = blake3::Hasher::new();
    while len > 0 {
        let piece = len.min(ZEROS.len());
        hasher.update(&ZEROS[..piece]);
        len -= piece;
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockrep_proto::consts::MAX_BLOCK_SIZE;

    #[test]
    fn empty_is_zero() {
        assert!(is_zero(&[]));
    }

    #[test]
    fn finds_a_single_nonzero_byte_anywhere() {
        for len in [1, 7, 8, 15, 16, 4095, 4096, 4097, 8191, 12_345] {
            let mut buf = vec![0u8; len];
            assert!(is_zero(&buf), "len {len}");
            for pos in [0, len / 2, len - 1] {
                buf[pos] = 0x80;
                assert!(!is_zero(&buf), "len {len} pos {pos}");
                buf[pos] = 0;
            }
        }
    }

    #[test]
    fn zero_digest_matches_hashing_zeros() {
        for len in [
            0,
            1,
            4095,
            4096,
            65_536,
            MAX_BLOCK_SIZE as usize,
            MAX_BLOCK_SIZE as usize + 3,
        ] {
            assert_eq!(zero_digest(len), crate::digest(&vec![0; len]), "len {len}");
        }
    }

    #[test]
    fn zero_digest_cache_answers_alternating_lengths() {
        // More lengths than cache slots, asked in turn, exercises hits and evictions.
        let lens = [4096, 65_536, 100, 4096, 100, 65_536, 65_536, 4096];
        for len in lens {
            assert_eq!(zero_digest(len), crate::digest(&vec![0; len]), "len {len}");
        }
    }

    proptest::proptest! {
        #[test]
        fn is_zero_agrees_with_naive(
            len in 0usize..9000,
            hit in proptest::option::of(proptest::arbitrary::any::<proptest::sample::Index>()),
            byte in 1u8..=255,
        ) {
            let mut buf = vec![0u8; len];
            if let (Some(hit), false) = (hit, buf.is_empty()) {
                buf[hit.index(len)] = byte;
            }
            proptest::prop_assert_eq!(is_zero(&buf), buf.iter().all(|&b| b == 0));
        }
    }
}
