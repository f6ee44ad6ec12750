//! Fuzz entry points: ordinary functions that the fuzz workspace (`fuzz/`, cargo-fuzz) calls,
//! and that the unit tests below run on seed inputs so the seeds are checked in every CI.

use blockrep_proto::consts::{DIGEST_LEN, MAX_BLOCK_SIZE};

use crate::{encode, verify, Digest, Encoding};

/// Interprets `data` as one received chunk and checks it:
/// `encoding (1) | raw_len (4, LE, capped just above MAX_BLOCK_SIZE) | digest (32) | payload`.
///
/// Panics only when `verify` breaks its contract: it accepts a chunk whose bytes do not hash
/// to the digest or are not `raw_len` long, leaves `scratch` longer than one chunk, or fails to
/// round-trip the payload through `encode`.
pub fn verify_chunk(data: &[u8]) {
    let Some((&encoding, rest)) = data.split_first() else {
        return;
    };
    let Some(encoding) = Encoding::from_byte(encoding) else {
        return;
    };
    let Some((len_bytes, rest)) = rest.split_first_chunk::<4>() else {
        return;
    };
    // Capped so that both the accepted range and the first refused length stay reachable
    // without the fuzzer spending its time on huge numbers.
    let raw_len = u32::from_le_bytes(*len_bytes).min(MAX_BLOCK_SIZE + 1) as usize;
    let Some((digest, payload)) = rest.split_first_chunk::<DIGEST_LEN>() else {
        return;
    };
    let digest: Digest = *digest;

    let mut scratch = Vec::new();
    if let Ok(verified) = verify(encoding, raw_len, &digest, payload, &mut scratch) {
        assert_eq!(verified.len(), raw_len);
        match verified.data() {
            Some(raw) => assert_eq!(crate::digest(raw), digest),
            None => assert_eq!(crate::zero_digest(raw_len), digest),
        }
    }
    assert!(scratch.len() <= raw_len);

    // Whatever the payload was, as raw bytes it must survive the sender's path.
    if payload.is_empty() || payload.len() > MAX_BLOCK_SIZE as usize {
        return;
    }
    let mut compressed = Vec::new();
    let encoded = encode(payload, &mut compressed);
    let sent: &[u8] = match encoded.encoding {
        Encoding::Raw => payload,
        Encoding::Lz4 => &compressed[..encoded.payload_len],
        Encoding::Zero => &[],
    };
    let verified = verify(
        encoded.encoding,
        payload.len(),
        &encoded.digest,
        sent,
        &mut scratch,
    );
    match verified.as_ref().map(|v| v.data()) {
        Ok(Some(raw)) => assert_eq!(raw, payload),
        Ok(None) => assert!(crate::is_zero(payload)),
        Err(e) => panic!("encoded chunk refused: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn seed(encoding: u8, raw_len: u32, digest: &Digest, payload: &[u8]) -> Vec<u8> {
        let mut data = vec![encoding];
        data.extend_from_slice(&raw_len.to_le_bytes());
        data.extend_from_slice(digest);
        data.extend_from_slice(payload);
        data
    }

    /// The seeds, by file name: valid raw, lz4 and zero chunks, and each broken one way.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let text = testdata::text(8192, 1);
        let mut compressed = Vec::new();
        let encoded = encode(&text, &mut compressed);
        let random = testdata::random(4096, 2);
        let half = &compressed[..compressed.len() / 2];
        vec![
            ("raw", seed(0, 4096, &crate::digest(&random), &random)),
            ("raw_bad_digest", seed(0, 4096, &[0; 32], &random)),
            ("lz4", seed(1, 8192, &encoded.digest, &compressed)),
            ("lz4_short_len", seed(1, 8191, &encoded.digest, &compressed)),
            (
                "lz4_huge_len",
                seed(1, u32::MAX, &encoded.digest, &compressed),
            ),
            ("lz4_cut", seed(1, 8192, &encoded.digest, half)),
            ("zero", seed(2, 4096, &crate::zero_digest(4096), &[])),
            (
                "zero_with_payload",
                seed(2, 4096, &crate::zero_digest(4096), &[0]),
            ),
            ("zero_empty", seed(2, 0, &crate::zero_digest(0), &[])),
            ("bad_encoding", seed(3, 4096, &[0; 32], &[])),
        ]
    }

    fn seed_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/chunk")
    }

    /// The seeds and a few tiny inputs through the entry point; the files in fuzz/seeds/chunk
    /// are exactly these seeds.
    #[test]
    fn seeds_run() {
        for data in [vec![], vec![1]] {
            verify_chunk(&data);
        }
        for (name, data) in seeds() {
            verify_chunk(&data);
            let file = std::fs::read(seed_dir().join(name));
            assert_eq!(
                file.ok().as_ref(),
                Some(&data),
                "fuzz/seeds/chunk/{name} is stale: cargo test -p blockrep-chunk -- --ignored \
                 write_fuzz_seeds"
            );
        }
    }

    /// Writes fuzz/seeds/chunk.
    #[test]
    #[ignore = "writes the seed files"]
    fn write_fuzz_seeds() {
        std::fs::create_dir_all(seed_dir()).unwrap();
        for (name, data) in seeds() {
            std::fs::write(seed_dir().join(name), data).unwrap();
        }
    }
}
