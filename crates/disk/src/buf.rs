//! Page-aligned buffers: what direct I/O (`O_DIRECT`) reads into and writes from.

use std::ops::{Deref, DerefMut};

use memmap2::MmapMut;

/// The alignment direct I/O gets from this crate: of buffers, offsets and lengths. 4 KiB is
/// the largest logical block size disks have, so it satisfies every device and filesystem.
pub const DIRECT_ALIGN: usize = 4096;

/// A byte buffer whose start is aligned to [`DIRECT_ALIGN`], of a length that can change up
/// to its capacity without reallocating. Anonymous memory, so it is zeroed when first made.
pub struct AlignedBuf {
    map: MmapMut,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` zero bytes.
    ///
    /// # Panics
    /// When the memory cannot be mapped (the process is out of address space or memory).
    pub fn new(len: usize) -> Self {
        let capacity = len.max(1).next_multiple_of(DIRECT_ALIGN);
        let map = MmapMut::map_anon(capacity)
            .unwrap_or_else(|e| panic!("cannot map a {capacity}-byte buffer: {e}"));
        Self { map, len }
    }

    /// Bytes it can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// Makes it `len` bytes long. The contents are unspecified (old bytes, or zeros when it
    /// had to grow): callers fill what they use.
    pub fn set_len(&mut self, len: usize) {
        if len > self.capacity() {
            *self = Self::new(len);
        }
        self.len = len;
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// Whether a transfer of `buf` at `offset` meets direct I/O's alignment.
pub(crate) fn is_aligned(buf: &[u8], offset: u64) -> bool {
    (buf.as_ptr() as usize | buf.len()).is_multiple_of(DIRECT_ALIGN)
        && offset.is_multiple_of(DIRECT_ALIGN as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_aligned_and_resizes() {
        let mut b = AlignedBuf::new(5000);
        assert_eq!(b.len(), 5000);
        assert_eq!(b.capacity(), 8192);
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(b.as_ptr() as usize % DIRECT_ALIGN, 0);
        b[4999] = 7;
        b.set_len(8192);
        assert_eq!(
            b[4999], 7,
            "shrinking and growing within capacity keeps the bytes"
        );
        b.set_len(1 << 20);
        assert_eq!(b.len(), 1 << 20);
        assert_eq!(b.as_ptr() as usize % DIRECT_ALIGN, 0);
        b.set_len(0);
        assert!(b.is_empty());
        assert!(is_aligned(&AlignedBuf::new(4096), 8192));
        assert!(!is_aligned(&AlignedBuf::new(4096), 512));
        assert!(!is_aligned(&AlignedBuf::new(4095), 0));
        assert!(!is_aligned(&AlignedBuf::new(8192)[1..4097], 0));
    }
}
