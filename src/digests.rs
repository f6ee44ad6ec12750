//! Range digests for HASH_REQUESTs: both sides compute exactly this.
//!
//! A range is cut into granules of `granularity` bytes (the last may be shorter). Plain
//! requests: a granule's digest is blake3 keyed with the request's key, truncated to
//! `digest_len` bytes. COMPARE requests: the granule is cut again into fine granules, each
//! digested that way, and the granule's digest is the keyed blake3 of its fine digests laid
//! end to end, so one pass over the bytes gives both levels.

use blockrep_proto::Compare;

/// The digest of `bytes`, keyed, truncated to `len` bytes.
fn keyed(key: &[u8; 32], bytes: &[u8], len: u8) -> [u8; 32] {
    let mut out = *blake3::keyed_hash(key, bytes).as_bytes();
    out[usize::from(len)..].fill(0);
    out
}

/// How a request's granules are digested.
#[derive(Clone, Copy)]
pub(crate) struct Digester<'a> {
    pub key: &'a [u8; 32],
    pub len: u8,
    /// The fine granule, for COMPARE requests.
    pub fine: Option<usize>,
}

impl<'a> Digester<'a> {
    pub fn new(key: &'a [u8; 32], len: u8, compare: Option<&Compare>) -> Self {
        Self {
            key,
            len,
            fine: compare.map(|c| c.fine as usize),
        }
    }

    /// The digest of one granule (the first `len` bytes count); for COMPARE, its fine digests
    /// are appended to `fine_out` first.
    pub fn granule(&self, granule: &[u8], fine_out: &mut Vec<u8>) -> [u8; 32] {
        let Some(fine) = self.fine else {
            return keyed(self.key, granule, self.len);
        };
        let start = fine_out.len();
        for f in granule.chunks(fine) {
            fine_out.extend_from_slice(&keyed(self.key, f, self.len)[..usize::from(self.len)]);
        }
        keyed(self.key, &fine_out[start..], self.len)
    }
}

/// Reads `len` bytes from `offset` through `read`, in pieces of at least 1 MiB that hold whole
/// granules (so memory stays bounded whatever the range), and calls `each` on every granule
/// in order.
pub(crate) fn for_each_granule<E>(
    mut read: impl FnMut(&mut [u8], u64) -> Result<(), E>,
    offset: u64,
    len: u64,
    granularity: u32,
    mut each: impl FnMut(&[u8]),
) -> Result<(), E> {
    let gran = u64::from(granularity);
    let piece_len = gran.max(1 << 20);
    // Aligned, so that reads of aligned ranges can bypass the page cache.
    let mut buf = blockrep_disk::AlignedBuf::new(piece_len.min(len) as usize);
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let n = (end - at).min(piece_len) as usize;
        read(&mut buf[..n], at)?;
        buf[..n].chunks(gran as usize).for_each(&mut each);
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
        let d = Digester::new(&key, 8, None);
        let mut out = Vec::new();
        for_each_granule(read, 4096, data.len() as u64 - 4096, 4096, |g| {
            out.extend_from_slice(&d.granule(g, &mut Vec::new())[..8])
        })
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

    #[test]
    fn compare_digest_is_the_hash_of_the_fine_digests() {
        let key = [3u8; 32];
        let compare = Compare {
            fine: 4096,
            digests: bytes::Bytes::new(),
        };
        let d = Digester::new(&key, 8, Some(&compare));
        // A short granule: 2.5 fine granules.
        let granule: Vec<u8> = (0..10_240).map(|i| (i % 13) as u8).collect();
        let mut fine = vec![0xee]; // appended after what is there
        let coarse = d.granule(&granule, &mut fine);
        let expected: Vec<u8> = granule
            .chunks(4096)
            .flat_map(|f| blake3::keyed_hash(&key, f).as_bytes()[..8].to_vec())
            .collect();
        assert_eq!(&fine[1..], &expected[..]);
        assert_eq!(
            &coarse[..8],
            &blake3::keyed_hash(&key, &expected).as_bytes()[..8]
        );
        assert!(coarse[8..].iter().all(|&b| b == 0));
    }
}
