//! The disk being copied: read-only.

use std::path::Path;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

use crate::disk::{Access, Disk};
use crate::{DiskError, DiskKind};

/// A source disk, open read-only. Its size is fixed when it is opened.
#[derive(Debug)]
pub struct SourceDisk {
    disk: Disk,
}

impl SourceDisk {
    /// Opens a regular file or block device read-only.
    ///
    /// Directories, character devices, fifos and sockets are refused with
    /// [`DiskError::NotADisk`]. The size is the file's length, or `BLKGETSIZE64` for a block
    /// device. The disk is not claimed exclusively: a source is usually mounted and live.
    pub fn open(path: &Path) -> Result<Self, DiskError> {
        Disk::open(path, Access::Read).map(|disk| Self { disk })
    }

    /// The path the disk was opened by.
    pub fn path(&self) -> &Path {
        &self.disk.path
    }

    /// The disk's size in bytes, as found when it was opened.
    pub fn size(&self) -> u64 {
        self.disk.size
    }

    /// Whether the disk is an image file or a block device.
    pub fn kind(&self) -> DiskKind {
        self.disk.kind
    }

    /// Fills `buf` with the bytes at `offset`.
    ///
    /// A range reaching past [`size`](Self::size) is refused with [`DiskError::OutOfBounds`]
    /// before any I/O. Short reads and EINTR are retried; reaching the end of the disk early
    /// (it shrank after it was opened) is [`DiskError::ShortRead`].
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.disk.read_exact_at(buf, offset)
    }

    /// Fills `buf` with the bytes at `offset` without filling the page cache, for bulk reads
    /// of a live server's disk: with `O_DIRECT` when `buf` (an [`AlignedBuf`]), `offset`
    /// and the length are aligned to [`DIRECT_ALIGN`], else through the cache, dropping
    /// what it read from it afterwards. Checked like [`read_exact_at`](Self::read_exact_at).
    ///
    /// [`AlignedBuf`]: crate::AlignedBuf
    /// [`DIRECT_ALIGN`]: crate::DIRECT_ALIGN
    pub fn read_uncached(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        if !self.disk.read_uncached(buf, offset)? {
            self.drop_cache(offset, buf.len() as u64);
        }
        Ok(())
    }

    /// Why [`read_uncached`](Self::read_uncached) goes through the page cache even for
    /// aligned reads (the filesystem refuses `O_DIRECT`, as tmpfs does), or `None`.
    pub fn direct_unavailable(&self) -> Option<&str> {
        self.disk.direct_unavailable()
    }

    /// Asks the kernel to drop `[offset, offset + len)`, already read, from the page cache,
    /// so that copying a disk does not push the source server's working set out of memory.
    /// Best effort: the kernel may keep pages (dirty or mapped ones) and errors are ignored,
    /// since the copy is correct either way.
    pub fn drop_cache(&self, offset: u64, len: u64) {
        // A zero length means "to the end of the file" to posix_fadvise; not what was asked.
        if len == 0 {
            return;
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        let _ = posix_fadvise(
            &self.disk.file,
            offset,
            len,
            PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn image(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn opens_a_file_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(&dir, "disk.img", &pattern(12_345));
        let disk = SourceDisk::open(&path).unwrap();
        assert_eq!(disk.size(), 12_345);
        assert_eq!(disk.kind(), DiskKind::File);
        assert_eq!(disk.path(), path);
    }

    #[test]
    fn reads_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = pattern(100_000);
        let path = image(&dir, "disk.img", &bytes);
        let disk = SourceDisk::open(&path).unwrap();
        let mut buf = vec![0; 4096];
        for offset in [0u64, 1, 4096, 50_001, 100_000 - 4096] {
            disk.read_exact_at(&mut buf, offset).unwrap();
            let at = offset as usize;
            assert_eq!(buf, bytes[at..at + 4096], "offset {offset}");
            disk.drop_cache(offset, 4096);
        }
        // Reading nothing at the very end is inside the disk.
        disk.read_exact_at(&mut [], 100_000).unwrap();
        disk.drop_cache(0, 0);
        disk.drop_cache(u64::MAX, u64::MAX);
    }

    #[test]
    fn uncached_reads_read_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = pattern(3 * 4096 + 100);
        let path = image(&dir, "disk.img", &bytes);
        let disk = SourceDisk::open(&path).unwrap();
        let mut aligned = crate::AlignedBuf::new(8192);
        let mut plain = vec![0u8; 8192];
        // Aligned (direct where the filesystem allows), unaligned offset, unaligned buffer,
        // and a ragged tail: each reads the same bytes.
        for (use_aligned, offset) in [(true, 0u64), (true, 4096), (true, 10), (false, 4096)] {
            let buf = if use_aligned {
                &mut aligned[..]
            } else {
                &mut plain[..]
            };
            disk.read_uncached(buf, offset).unwrap();
            let at = offset as usize;
            assert_eq!(buf, &bytes[at..at + 8192], "offset {offset}");
        }
        aligned.set_len(4196);
        disk.read_uncached(&mut aligned, 8192).unwrap();
        assert_eq!(&aligned[..], &bytes[8192..]);
        let err = disk.read_uncached(&mut aligned, 8193).unwrap_err();
        assert!(matches!(err, DiskError::OutOfBounds { .. }), "{err}");
    }

    #[test]
    fn opens_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(&dir, "empty.img", &[]);
        assert_eq!(SourceDisk::open(&path).unwrap().size(), 0);
    }

    #[test]
    fn rejects_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = SourceDisk::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DiskError::NotADisk {
                    what: "a directory",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.code(), "SMS.2013");
    }

    #[test]
    fn rejects_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = SourceDisk::open(&dir.path().join("nope")).unwrap_err();
        match &err {
            DiskError::Open { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            _ => panic!("{err}"),
        }
    }

    #[test]
    fn rejects_a_character_device() {
        let err = SourceDisk::open(Path::new("/dev/null")).unwrap_err();
        assert!(
            matches!(
                err,
                DiskError::NotADisk {
                    what: "a character device",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "/dev/null is a character device, not a disk: give a block device or a regular \
             disk image file"
        );
    }

    #[test]
    fn rejects_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = SourceDisk::open(&path).unwrap_err();
        assert!(
            matches!(err, DiskError::NotADisk { what: "a fifo", .. }),
            "{err}"
        );
    }

    #[test]
    fn follows_a_symlink_to_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(&dir, "disk.img", &pattern(4096));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(SourceDisk::open(&link).unwrap().size(), 4096);
    }

    #[test]
    fn rejects_reads_out_of_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(&dir, "disk.img", &pattern(8192));
        let disk = SourceDisk::open(&path).unwrap();
        let mut buf = vec![0; 4096];
        for offset in [4097, 8192, u64::MAX - 100, u64::MAX] {
            let err = disk.read_exact_at(&mut buf, offset).unwrap_err();
            assert!(
                matches!(
                    err,
                    DiskError::OutOfBounds {
                        len: 4096,
                        size: 8192,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_a_disk_that_shrank() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(&dir, "disk.img", &pattern(65_536));
        let disk = SourceDisk::open(&path).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10_240)
            .unwrap();
        let mut buf = vec![0; 4096];
        let err = disk.read_exact_at(&mut buf, 8192).unwrap_err();
        assert!(
            matches!(err, DiskError::ShortRead { offset: 10_240, .. }),
            "{err}"
        );
        assert_eq!(err.code(), "SMS.1905");
        assert!(err.to_string().contains("did it shrink"), "{err}");
    }

    #[test]
    fn size_is_fixed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(&dir, "disk.img", &pattern(4096));
        let disk = SourceDisk::open(&path).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[1; 4096])
            .unwrap();
        assert_eq!(disk.size(), 4096);
        let err = disk.read_exact_at(&mut [0; 1], 4096).unwrap_err();
        assert!(matches!(err, DiskError::OutOfBounds { .. }), "{err}");
    }
}
