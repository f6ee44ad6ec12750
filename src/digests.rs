//! Range digests for the hash delta: both sides compute exactly this.
//!
//! A range is cut into granules of `granularity` bytes (the last may be shorter); each
//! granule's digest is blake3 keyed with the request's key, truncated to `digest_len` bytes.

/// Hashes `len` bytes from `offset`, read through `read`, appending one digest per granule to
/// `out`. Reads in pieces of at least 1 MiB that hold whole granules, so memory stays bounded
/// whatever the range.
pub(crate) fn hash_range<E>(
    mut read: impl FnMut(&mut [u8], u64) -> Result<(), E>,
    offset: u64,
    len: u64,
    granularity: u32,
    key: &[u8; 32],
    digest_len: u8,
    out: &mut Vec<u8>,
) -> Result<(), E> {
    let gran = u64::from(granularity);
    let piece_len = gran.max(1 << 20);
    let mut buf = vec![0u8; piece_len.min(len) as usize];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let n = (end - at).min(piece_len) as usize;
        read(&mut buf[..n], at)?;
        for granule in buf[..n].chunks(gran as usize) {
            let digest = blake3::keyed_hash(key, granule);
            out.extend_from_slice(&digest.as_bytes()[..usize::from(digest_len)]);
        }
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_digest_per_granule_whatever_the_pieces() {
        let data: Vec<u8> = (0..3 * (1 << 20) + 5000).map(|i| (i % 251) as u8).collect();
        let key = [7u8; 32];
        let read = |buf: &mut [u8], at: u64| -> Result<(), ()> {
            buf.copy_from_slice(&data[at as usize..at as usize + buf.len()]);
            Ok(())
        };
        let mut out = Vec::new();
        hash_range(
            read,
            4096,
            data.len() as u64 - 4096,
            4096,
            &key,
            8,
            &mut out,
        )
        .unwrap();
        let granules: Vec<&[u8]> = data[4096..].chunks(4096).collect();
        assert_eq!(out.len(), granules.len() * 8);
        for (i, g) in granules.iter().enumerate() {
            assert_eq!(
                &out[i * 8..i * 8 + 8],
                &blake3::keyed_hash(&key, g).as_bytes()[..8]
            );
        }
    }
}
