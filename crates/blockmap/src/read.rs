//! Bounded reads of untrusted disks.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::MetaError;

/// Something disk-like that can be read at any offset: an open disk, or bytes in memory
/// (tests, fuzzing).
pub trait ReadAt {
    /// Fills `buf` from `offset`. Reading past the end is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The size in bytes.
    fn size(&self) -> u64;
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }

    fn size(&self) -> u64 {
        self.len() as u64
    }
}

/// A file or block device, with its size taken once.
pub struct FileDisk {
    file: File,
    size: u64,
}

impl FileDisk {
    /// Wraps an open file or block device (its size is found by seeking to the end, which
    /// works for both).
    pub fn new(file: File) -> io::Result<Self> {
        use std::io::Seek;
        let size = (&file).seek(io::SeekFrom::End(0))?;
        Ok(Self { file, size })
    }
}

impl ReadAt for FileDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// A window `start .. start + len` of a disk: what one partition's parser may read. Every
/// read is checked against the window, so a pointer in corrupt metadata cannot reach another
/// partition or past the disk.
#[derive(Clone, Copy)]
pub struct Region<'a> {
    src: &'a dyn ReadAt,
    start: u64,
    len: u64,
}

impl<'a> Region<'a> {
    /// The whole of `src`.
    pub fn whole(src: &'a dyn ReadAt) -> Self {
        Self {
            src,
            start: 0,
            len: src.size(),
        }
    }

    /// `start .. start + len` of `src`, which must lie inside it.
    pub fn new(src: &'a dyn ReadAt, start: u64, len: u64) -> Result<Self, MetaError> {
        let size = src.size();
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(MetaError::OutOfRange {
                what: "the partition",
                offset: start,
                len,
                size,
            });
        }
        Ok(Self { src, start, len })
    }

    /// Where the window starts on the disk.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The window's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the region holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks that `offset .. offset + len` lies inside the window.
    pub fn check(&self, what: &'static str, offset: u64, len: u64) -> Result<(), MetaError> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(MetaError::OutOfRange {
                what,
                offset,
                len,
                size: self.len,
            });
        }
        Ok(())
    }

    /// Fills `buf` from `offset` (relative to the window). `what` names the structure being
    /// read, for the error message.
    pub fn read(&self, what: &'static str, buf: &mut [u8], offset: u64) -> Result<(), MetaError> {
        self.check(what, offset, buf.len() as u64)?;
        self.src
            .read_exact_at(buf, self.start + offset)
            .map_err(|e| MetaError::Io {
                offset,
                message: format!("reading {what}: {e}"),
            })
    }

    /// Reads `len` bytes into a new buffer. `len` must already be bounded by the caller (a
    /// named maximum); it is also checked against the window before allocating.
    pub fn read_vec(
        &self,
        what: &'static str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, MetaError> {
        self.check(what, offset, len as u64)?;
        let mut buf = vec![0u8; len];
        self.read(what, &mut buf, offset)?;
        Ok(buf)
    }

    /// A sub-window, relative to this one.
    pub fn sub(&self, offset: u64, len: u64) -> Result<Region<'a>, MetaError> {
        self.check("a sub-region", offset, len)?;
        Ok(Self {
            src: self.src,
            start: self.start + offset,
            len,
        })
    }
}

/// Little-endian field readers for on-disk structures, bounds-checked: a short buffer reads
/// as an error rather than a panic.
pub mod le {
    use crate::MetaError;

    fn field<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], MetaError> {
        b.get(at..at.saturating_add(N))
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| MetaError::Corrupt(format!("structure too short for a field at {at}")))
    }

    /// The little-endian u16 at `at`; an error when `b` is too short.
    pub fn u16(b: &[u8], at: usize) -> Result<u16, MetaError> {
        field(b, at).map(u16::from_le_bytes)
    }

    /// The little-endian u32 at `at`; an error when `b` is too short.
    pub fn u32(b: &[u8], at: usize) -> Result<u32, MetaError> {
        field(b, at).map(u32::from_le_bytes)
    }

    /// The little-endian u64 at `at`; an error when `b` is too short.
    pub fn u64(b: &[u8], at: usize) -> Result<u64, MetaError> {
        field(b, at).map(u64::from_le_bytes)
    }
}

/// Big-endian field readers (XFS is big-endian).
pub mod be {
    use crate::MetaError;

    fn field<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], MetaError> {
        b.get(at..at.saturating_add(N))
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| MetaError::Corrupt(format!("structure too short for a field at {at}")))
    }

    /// The big-endian u16 at `at`; an error when `b` is too short.
    pub fn u16(b: &[u8], at: usize) -> Result<u16, MetaError> {
        field(b, at).map(u16::from_be_bytes)
    }

    /// The big-endian u32 at `at`; an error when `b` is too short.
    pub fn u32(b: &[u8], at: usize) -> Result<u32, MetaError> {
        field(b, at).map(u32::from_be_bytes)
    }

    /// The big-endian u64 at `at`; an error when `b` is too short.
    pub fn u64(b: &[u8], at: usize) -> Result<u64, MetaError> {
        field(b, at).map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_refuse_reads_outside() {
        let disk = vec![7u8; 100];
        let r = Region::new(&disk, 10, 50).unwrap();
        let mut b = [0u8; 10];
        assert!(r.read("x", &mut b, 40).is_ok());
        assert!(matches!(
            r.read("x", &mut b, 41),
            Err(MetaError::OutOfRange { .. })
        ));
        assert!(matches!(
            r.read("x", &mut b, u64::MAX - 3),
            Err(MetaError::OutOfRange { .. })
        ));
        assert!(Region::new(&disk, 90, 11).is_err());
        assert!(r.sub(45, 10).is_err());
        assert!(le::u32(&[1, 2, 3], 0).is_err());
        assert!(le::u16(&[1, 2, 3], usize::MAX).is_err());
    }
}
