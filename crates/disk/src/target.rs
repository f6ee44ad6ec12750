//! The disk being written: read-write, never created, truncated or grown.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use blockrep_chunk::Verified;
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};

use crate::disk::{Access, Disk};
use crate::error::is_no_space;
use crate::{ioctl, DiskError, DiskKind};

/// Zeros written by the slow path of [`TargetDisk::zero_range`]: 64 KiB per write keeps the
/// syscall count low without a per-disk buffer.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Bits of [`TargetDisk::unsupported`]: fast zeroing paths that answered "not supported".
const PUNCH_HOLE: u8 = 1;
const ZERO_RANGE: u8 = 2;
const BLKZEROOUT: u8 = 4;

/// Block-device zeroing works in 512-byte sectors whatever the device's own sector size.
const SECTOR: u64 = 512;

/// A target disk, open read-write. Its size is fixed when it is opened.
#[derive(Debug)]
pub struct TargetDisk {
    disk: Disk,
    /// Fast zeroing paths found unsupported, so they are not tried again for every chunk.
    unsupported: AtomicU8,
    /// Set by the first failed `fdatasync`: Linux reports a writeback error to a file
    /// descriptor once, so a later sync of the same descriptor may succeed although data
    /// written before it never reached the disk. From then on every sync fails.
    sync_failed: AtomicBool,
}

impl TargetDisk {
    /// Opens an existing regular file or block device read-write.
    ///
    /// Nothing is created or truncated: a missing target is [`DiskError::Open`]. A block device
    /// is opened with `O_EXCL`, so one that is mounted or otherwise claimed is refused
    /// (`EBUSY`, reported as [`DiskError::Open`] with a hint that it is in use). Directories,
    /// character devices, fifos and sockets are [`DiskError::NotADisk`].
    pub fn open(path: &Path) -> Result<Self, DiskError> {
        Disk::open(path, Access::Write).map(|disk| Self {
            disk,
            unsupported: AtomicU8::new(0),
            sync_failed: AtomicBool::new(false),
        })
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

    /// Writes a verified chunk at `offset`: its bytes, or for a zero chunk a cheap
    /// [`zero_range`](Self::zero_range).
    ///
    /// Bytes bypass the page cache (`O_DIRECT`, through an aligned copy when the chunk's
    /// buffer is not aligned) when `offset` and the length are aligned to
    /// [`DIRECT_ALIGN`](crate::DIRECT_ALIGN) and the filesystem allows it; the rest go
    /// through the cache. Either way they are durable only after [`sync`](Self::sync).
    ///
    /// A chunk reaching past [`size`](Self::size) is refused with [`DiskError::OutOfBounds`]
    /// and nothing is written. Short writes and EINTR are retried.
    pub fn write(&self, offset: u64, chunk: &Verified<'_>) -> Result<(), DiskError> {
        let len = chunk.len() as u64;
        self.disk.check(offset, len)?;
        match chunk.data() {
            Some(data) => self.disk.write_uncached(data, offset),
            None => self.zero_range(offset, len),
        }
    }

    /// Why [`write`](Self::write) goes through the page cache even for aligned chunks (the
    /// filesystem refuses `O_DIRECT`, as tmpfs does), or `None`.
    pub fn direct_unavailable(&self) -> Option<&str> {
        self.disk.direct_unavailable()
    }

    /// Makes `[offset, offset + len)` read back as zeros, as cheaply as the disk allows.
    ///
    /// Files: punch a hole (which also frees the space), else `FALLOC_FL_ZERO_RANGE`, else
    /// write zeros. Block devices: `BLKZEROOUT` for 512-aligned ranges (devices with
    /// write-zeroes or unmap do it without moving data), else write zeros. A fast path that
    /// answers "not supported" is remembered and not tried again. Bounds-checked like
    /// [`write`](Self::write).
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.disk.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let done = match self.disk.kind {
            DiskKind::File => {
                let keep = FallocateFlags::FALLOC_FL_KEEP_SIZE;
                self.try_fallocate(
                    PUNCH_HOLE,
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | keep,
                    offset,
                    len,
                )? || self.try_fallocate(
                    ZERO_RANGE,
                    FallocateFlags::FALLOC_FL_ZERO_RANGE | keep,
                    offset,
                    len,
                )?
            }
            DiskKind::BlockDevice => {
                let aligned = (offset | len) & (SECTOR - 1) == 0;
                aligned && self.try_blkzeroout(offset, len)?
            }
        };
        if done {
            return Ok(());
        }
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let piece = (end - at).min(ZEROS.len() as u64);
            self.disk.write_all_at(&ZEROS[..piece as usize], at)?;
            at += piece;
        }
        Ok(())
    }

    /// Flushes written data to stable storage (`fdatasync`).
    ///
    /// A full filesystem can surface only here (delayed allocation, thin pools), as
    /// [`DiskError::NoSpace`] with offset 0. Once a sync has failed, every later sync of this
    /// disk fails too ([`DiskError::Sync`]): what was written since the last good sync may be
    /// lost, and the kernel reports that only once.
    pub fn sync(&self) -> Result<(), DiskError> {
        if self.sync_failed.load(Ordering::Acquire) {
            return Err(DiskError::Sync {
                path: self.disk.path.clone(),
                source: std::io::Error::other(
                    "an earlier flush of this disk failed, so data written since the last good \
                     flush may not be on it",
                ),
            });
        }
        self.disk.file.sync_data().map_err(|source| {
            self.sync_failed.store(true, Ordering::Release);
            if is_no_space(&source) {
                DiskError::NoSpace {
                    path: self.disk.path.clone(),
                    offset: 0,
                }
            } else {
                DiskError::Sync {
                    path: self.disk.path.clone(),
                    source,
                }
            }
        })
    }

    /// Fills `buf` with the bytes at `offset`; bounds-checked like
    /// [`SourceDisk::read_exact_at`](crate::SourceDisk::read_exact_at).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.disk.read_exact_at(buf, offset)
    }

    /// Like [`read_exact_at`](Self::read_exact_at), bypassing the page cache when `buf` (an
    /// [`AlignedBuf`](crate::AlignedBuf)), `offset` and the length are aligned, for bulk
    /// reads (comparing, verifying) that should not evict anything.
    pub fn read_uncached(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.disk.read_uncached(buf, offset).map(drop)
    }

    fn is_unsupported(&self, path: u8) -> bool {
        self.unsupported.load(Ordering::Relaxed) & path != 0
    }

    fn mark_unsupported(&self, path: u8) {
        self.unsupported.fetch_or(path, Ordering::Relaxed);
    }

    /// One fallocate zeroing mode: `Ok(true)` when it zeroed the range, `Ok(false)` when the
    /// caller should try the next way.
    fn try_fallocate(
        &self,
        path: u8,
        mode: FallocateFlags,
        offset: u64,
        len: u64,
    ) -> Result<bool, DiskError> {
        if self.is_unsupported(path) {
            return Ok(false);
        }
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(false);
        };
        loop {
            return match fallocate(&self.disk.file, mode, off, n) {
                Ok(()) => Ok(true),
                Err(Errno::EINTR) => continue,
                Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => {
                    self.mark_unsupported(path);
                    Ok(false)
                }
                Err(e @ (Errno::ENOSPC | Errno::EDQUOT)) => {
                    Err(DiskError::write(&self.disk.path, offset, e.into()))
                }
                // Anything else (EINVAL from an odd filesystem, EPERM on an append-only
                // file, EIO): writing zeros is always correct, and it reports a real
                // failure itself.
                Err(_) => Ok(false),
            };
        }
    }

    /// `BLKZEROOUT`: `Ok(true)` when it zeroed the range, `Ok(false)` to write zeros instead.
    fn try_blkzeroout(&self, offset: u64, len: u64) -> Result<bool, DiskError> {
        if self.is_unsupported(BLKZEROOUT) {
            return Ok(false);
        }
        loop {
            return match ioctl::blkzeroout(&self.disk.file, offset, len) {
                Ok(()) => Ok(true),
                Err(Errno::EINTR) => continue,
                Err(Errno::EOPNOTSUPP | Errno::ENOTTY) => {
                    self.mark_unsupported(BLKZEROOUT);
                    Ok(false)
                }
                // A thin-provisioned device can run out of space while zeroing.
                Err(e @ (Errno::ENOSPC | Errno::EDQUOT)) => {
                    Err(DiskError::write(&self.disk.path, offset, e.into()))
                }
                // EINVAL (a range the device will not zero, e.g. not aligned to its 4 KiB
                // sectors) or anything else: writing zeros is always correct.
                Err(_) => Ok(false),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockrep_chunk::{digest, verify, zero_digest, Encoding};
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::process::Command;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    fn image(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `raw` through the only door there is: `verify`, then `write`.
    fn write_raw(disk: &TargetDisk, offset: u64, raw: &[u8]) -> Result<(), DiskError> {
        let mut scratch = Vec::new();
        let chunk = verify(Encoding::Raw, raw.len(), &digest(raw), raw, &mut scratch).unwrap();
        disk.write(offset, &chunk)
    }

    fn write_zero(disk: &TargetDisk, offset: u64, len: usize) -> Result<(), DiskError> {
        let mut scratch = Vec::new();
        let chunk = verify(Encoding::Zero, len, &zero_digest(len), &[], &mut scratch).unwrap();
        disk.write(offset, &chunk)
    }

    fn read_all(disk: &TargetDisk) -> Vec<u8> {
        let mut buf = vec![0; disk.size() as usize];
        disk.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn opens_an_existing_file_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = pattern(20_000, 1);
        let path = image(dir.path(), "disk.img", &bytes);
        let disk = TargetDisk::open(&path).unwrap();
        assert_eq!(disk.size(), 20_000);
        assert_eq!(disk.kind(), DiskKind::File);
        assert_eq!(disk.path(), path);
        drop(disk);
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn rejects_a_missing_file_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.img");
        let err = TargetDisk::open(&path).unwrap_err();
        assert!(matches!(err, DiskError::Open { .. }), "{err}");
        assert!(err.to_string().contains("truncate -s SIZE"), "{err}");
        assert_eq!(err.code(), "SMS.2013");
        assert!(!path.exists());
    }

    #[test]
    fn rejects_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = TargetDisk::open(dir.path()).unwrap_err();
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
    }

    #[test]
    fn rejects_a_character_device() {
        let err = TargetDisk::open(Path::new("/dev/null")).unwrap_err();
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
    }

    #[test]
    fn writes_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), "disk.img", &vec![0; 1 << 20]);
        let disk = TargetDisk::open(&path).unwrap();
        let mut expected = vec![0; 1 << 20];
        for (offset, len, seed) in [(0, 4096, 1), (4096, 65_536, 2), (1_000_001, 48_575, 3)] {
            let raw = pattern(len, seed);
            write_raw(&disk, offset as u64, &raw).unwrap();
            expected[offset..offset + len].copy_from_slice(&raw);
        }
        disk.sync().unwrap();
        assert_eq!(read_all(&disk), expected);
        assert_eq!(fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn rejects_writes_out_of_bounds_writing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = pattern(8192, 4);
        let path = image(dir.path(), "disk.img", &bytes);
        let disk = TargetDisk::open(&path).unwrap();
        let raw = pattern(4096, 5);
        for offset in [4097, 8192, u64::MAX - 4095, u64::MAX] {
            let err = write_raw(&disk, offset, &raw).unwrap_err();
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
            assert_eq!(err.code(), "SMS.2007");
            let err = write_zero(&disk, offset, 4096).unwrap_err();
            assert!(matches!(err, DiskError::OutOfBounds { .. }), "{err}");
            let err = disk.zero_range(offset, 4096).unwrap_err();
            assert!(matches!(err, DiskError::OutOfBounds { .. }), "{err}");
        }
        drop(disk);
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    /// Zeroes ranges of a patterned file through `zero_range` and checks every byte.
    fn check_zeroing(disk: &TargetDisk, path: &Path) {
        let len = disk.size() as usize;
        let mut expected = pattern(len, 6);
        write_raw(disk, 0, &expected[..len.min(1 << 20)]).unwrap();
        let ranges = [
            (0, 4096),
            (65_536, 65_536),
            (1, 1),
            (4095, 2),
            (10_000, 100_000),
            (len - 777, 777),
            (len, 0),
        ];
        for (offset, n) in ranges {
            disk.zero_range(offset as u64, n as u64).unwrap();
            expected[offset..offset + n].fill(0);
        }
        write_zero(disk, 200_704, 4096).unwrap();
        expected[200_704..200_704 + 4096].fill(0);
        disk.sync().unwrap();
        assert_eq!(read_all(disk), expected);
        assert_eq!(fs::metadata(path).unwrap().len(), len as u64);
    }

    #[test]
    fn zero_range_zeroes_and_keeps_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), "disk.img", &pattern(1 << 20, 7));
        let disk = TargetDisk::open(&path).unwrap();
        let blocks_before = fs::metadata(&path).unwrap().blocks();
        check_zeroing(&disk, &path);
        // Whether a hole frees blocks depends on the filesystem (tmpfs, overlay and ext4
        // differ), so this is reported, not asserted.
        eprintln!(
            "st_blocks {} -> {}, unsupported paths {:#b}",
            blocks_before,
            fs::metadata(&path).unwrap().blocks(),
            disk.unsupported.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn zero_range_falls_back_to_zero_range_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), "disk.img", &pattern(1 << 20, 8));
        let disk = TargetDisk::open(&path).unwrap();
        disk.mark_unsupported(PUNCH_HOLE);
        check_zeroing(&disk, &path);
    }

    #[test]
    fn zero_range_falls_back_to_writing_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), "disk.img", &pattern(1 << 20, 9));
        let disk = TargetDisk::open(&path).unwrap();
        disk.mark_unsupported(PUNCH_HOLE | ZERO_RANGE);
        check_zeroing(&disk, &path);
    }

    /// Runs a command; `Err` carries why it could not, for a skip message.
    fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {cmd}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "{cmd} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A mounted tmpfs, unmounted on drop.
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let dir = self.0.to_string_lossy().into_owned();
            if let Err(e) = run("umount", &[&dir]) {
                eprintln!("{e}; detaching lazily");
                let _ = run("umount", &["-l", &dir]);
            }
        }
    }

    /// A loop device, detached on drop.
    struct Loop(PathBuf);

    impl Drop for Loop {
        fn drop(&mut self) {
            if let Err(e) = run("losetup", &["-d", &self.0.to_string_lossy()]) {
                eprintln!("{e}");
            }
        }
    }

    /// Bytes of `path` in the page cache, per `fincore`.
    fn cached(path: &Path) -> u64 {
        let out = run(
            "fincore",
            &[
                "--bytes",
                "--noheadings",
                "--output",
                "RES",
                &path.to_string_lossy(),
            ],
        )
        .expect("fincore (util-linux)");
        out.parse()
            .unwrap_or_else(|e| panic!("fincore said {out:?}: {e}"))
    }

    /// Writes `raw` from an aligned buffer, as the receiver's lz4 path does.
    fn write_aligned(disk: &TargetDisk, offset: u64, raw: &[u8]) -> Result<(), DiskError> {
        let mut buf = crate::AlignedBuf::new(raw.len());
        buf.copy_from_slice(raw);
        let mut scratch = Vec::new();
        let chunk = verify(Encoding::Raw, raw.len(), &digest(raw), &buf, &mut scratch).unwrap();
        disk.write(offset, &chunk)
    }

    #[test]
    fn aligned_writes_bypass_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        // A ragged size: the last chunk cannot be written directly.
        let size = (8u64 << 20) + 1000;
        let path = dir.path().join("disk.img");
        fs::File::create(&path).unwrap().set_len(size).unwrap();
        let disk = TargetDisk::open(&path).unwrap();
        if let Some(why) = disk.direct_unavailable() {
            crate::skip::skip("aligned_writes_bypass_the_page_cache", why);
            return;
        }
        let mut expected = vec![0u8; size as usize];
        // Aligned buffer; unaligned buffers of an aligned range (copied through the bounce
        // buffer, which grows); a 4 KiB block.
        let (a, b, c) = (pattern(1 << 20, 1), pattern(3 << 20, 2), pattern(4096, 3));
        write_aligned(&disk, 0, &a).unwrap();
        write_raw(&disk, 1 << 20, &b[..64 << 10]).unwrap();
        for i in 0..3 {
            let piece = &b[i << 20..(i + 1) << 20];
            write_raw(&disk, (1 + i as u64) << 20, piece).unwrap();
        }
        write_raw(&disk, 6 << 20, &c).unwrap();
        disk.sync().unwrap();
        expected[..1 << 20].copy_from_slice(&a);
        expected[1 << 20..4 << 20].copy_from_slice(&b);
        expected[6 << 20..(6 << 20) + 4096].copy_from_slice(&c);
        assert_eq!(cached(&path), 0, "aligned writes left pages in the cache");

        // Unaligned ranges go through the cache, and mix with direct writes of the pages
        // around them: a write inside a page written directly, then a direct write over a
        // page written through the cache.
        let (d, e, f) = (pattern(1000, 4), pattern(100, 5), pattern(8192, 6));
        write_raw(&disk, 8 << 20, &d).unwrap();
        write_raw(&disk, 50, &e).unwrap();
        write_raw(&disk, (6 << 20) + 10, &e).unwrap();
        write_raw(&disk, 6 << 20, &f).unwrap();
        disk.sync().unwrap();
        expected[8 << 20..].copy_from_slice(&d);
        expected[50..150].copy_from_slice(&e);
        expected[6 << 20..(6 << 20) + 8192].copy_from_slice(&f);
        assert_eq!(read_all(&disk), expected);
        assert_eq!(fs::read(&path).unwrap(), expected);

        // Reading back directly sees the same and caches nothing.
        let _ = run("sh", &["-c", "echo 1 > /proc/sys/vm/drop_caches"]);
        if cached(&path) == 0 {
            let mut buf = crate::AlignedBuf::new(8 << 20);
            disk.read_uncached(&mut buf, 0).unwrap();
            assert_eq!(&buf[..], &expected[..8 << 20]);
            assert_eq!(cached(&path), 0, "a direct read filled the cache");
        }
    }

    #[test]
    fn falls_back_where_direct_io_is_refused() {
        // ramfs has no direct I/O at all: opening with O_DIRECT fails with EINVAL.
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().to_string_lossy().into_owned();
        let mount = match run("mount", &["-t", "ramfs", "ramfs", &mnt]) {
            Ok(_) => Mount(dir.path().to_owned()),
            Err(e) => {
                crate::skip::skip(
                    "falls_back_where_direct_io_is_refused",
                    format_args!("needs root ({e})"),
                );
                return;
            }
        };
        {
            let path = mount.0.join("disk.img");
            fs::File::create(&path).unwrap().set_len(4 << 20).unwrap();
            let disk = TargetDisk::open(&path).unwrap();
            let why = disk.direct_unavailable().expect("ramfs refuses O_DIRECT");
            assert!(why.contains("O_DIRECT"), "{why}");
            let a = pattern(1 << 20, 7);
            write_aligned(&disk, 1 << 20, &a).unwrap();
            write_raw(&disk, 3 << 20, &a).unwrap();
            disk.sync().unwrap();
            let mut buf = crate::AlignedBuf::new(1 << 20);
            disk.read_uncached(&mut buf, 3 << 20).unwrap();
            assert_eq!(&buf[..], &a[..]);
            let source = crate::SourceDisk::open(&path).unwrap();
            assert!(source.direct_unavailable().is_some());
            source.read_uncached(&mut buf, 1 << 20).unwrap();
            assert_eq!(&buf[..], &a[..]);
        }
        drop(mount);
    }

    #[test]
    fn reports_no_space() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().to_string_lossy().into_owned();
        let mount = match run("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", &mnt]) {
            Ok(_) => Mount(dir.path().to_owned()),
            Err(e) => {
                crate::skip::skip(
                    "reports_no_space",
                    format_args!("needs root and mount ({e})"),
                );
                return;
            }
        };
        {
            // A sparse 8 MiB image on a 1 MiB filesystem: it opens, and filling it fails.
            let path = mount.0.join("disk.img");
            fs::File::create(&path).unwrap().set_len(8 << 20).unwrap();
            let disk = TargetDisk::open(&path).unwrap();
            let raw = pattern(1 << 20, 10);
            let err = (0..8)
                .map(|i| write_raw(&disk, i << 20, &raw))
                .find_map(Result::err)
                .expect("8 MiB fitted in a 1 MiB tmpfs");
            assert!(matches!(err, DiskError::NoSpace { .. }), "{err}");
            assert_eq!(err.code(), "SMS.0519");
            assert!(err.to_string().contains("no space left"), "{err}");
        }
        drop(mount);
    }

    #[test]
    fn block_device_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing.img");
        let size = 16u64 << 20;
        fs::File::create(&backing).unwrap().set_len(size).unwrap();
        let dev = match run("losetup", &["--find", "--show", &backing.to_string_lossy()]) {
            Ok(dev) => Loop(PathBuf::from(dev)),
            Err(e) => {
                crate::skip::skip(
                    "block_device_round_trip",
                    format_args!("needs root and loop devices ({e})"),
                );
                return;
            }
        };
        {
            let target = TargetDisk::open(&dev.0).unwrap();
            assert_eq!(target.kind(), DiskKind::BlockDevice);
            assert_eq!(target.size(), size);

            // O_EXCL: a second exclusive open, like a mount, is refused as "in use".
            let err = TargetDisk::open(&dev.0).unwrap_err();
            match &err {
                DiskError::Open { source, .. } => {
                    assert_eq!(source.raw_os_error(), Some(libc::EBUSY))
                }
                _ => panic!("{err}"),
            }
            assert!(err.to_string().contains("in use"), "{err}");

            // A source is read shared, even while the target holds the device.
            let source = crate::SourceDisk::open(&dev.0).unwrap();
            assert_eq!(source.kind(), DiskKind::BlockDevice);
            assert_eq!(source.size(), size);

            let mut expected = vec![0u8; size as usize];
            let a = pattern(1 << 20, 11);
            let b = pattern(1 << 20, 12);
            write_raw(&target, 0, &a).unwrap();
            write_raw(&target, 2 << 20, &b).unwrap();
            expected[..1 << 20].copy_from_slice(&a);
            expected[2 << 20..3 << 20].copy_from_slice(&b);
            // Aligned: BLKZEROOUT. Unaligned: written zeros.
            write_zero(&target, 2 << 20, 65_536).unwrap();
            target.zero_range((2 << 20) + 131_072, 4096).unwrap();
            target.zero_range(100, 1000).unwrap();
            for (offset, n) in [(2 << 20, 65_536), ((2 << 20) + 131_072, 4096), (100, 1000)] {
                expected[offset..offset + n].fill(0);
            }
            let err = target.zero_range(size - 512, 1024).unwrap_err();
            assert!(matches!(err, DiskError::OutOfBounds { .. }), "{err}");
            target.sync().unwrap();
            eprintln!(
                "unsupported paths {:#b}",
                target.unsupported.load(Ordering::Relaxed)
            );

            let mut back = vec![0u8; size as usize];
            source.read_exact_at(&mut back, 0).unwrap();
            assert!(
                back == expected,
                "block device does not read back what was written"
            );
            source.drop_cache(0, size);
            assert!(read_all(&target) == expected);
        }
        drop(dev);
        assert!(fs::read(&backing).unwrap() == expected_file(size));

        fn expected_file(size: u64) -> Vec<u8> {
            let mut expected = vec![0u8; size as usize];
            expected[..1 << 20].copy_from_slice(&pattern(1 << 20, 11));
            expected[2 << 20..3 << 20].copy_from_slice(&pattern(1 << 20, 12));
            for (offset, n) in [(2 << 20, 65_536), ((2 << 20) + 131_072, 4096), (100, 1000)] {
                expected[offset..offset + n].fill(0);
            }
            expected
        }
    }
}
