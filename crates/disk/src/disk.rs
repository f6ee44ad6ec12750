//! What sources and targets share: opening a path as a disk, its size, bounds checks and
//! positional I/O that retries short transfers.

use std::cell::RefCell;
use std::fs::{File, FileType, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::buf::{is_aligned, AlignedBuf, DIRECT_ALIGN};
use crate::{ioctl, DiskError, DiskKind};

thread_local! {
    /// Per thread, the aligned copy of an unaligned buffer being written directly.
    static BOUNCE_BUF: RefCell<Option<AlignedBuf>> = const { RefCell::new(None) };
}

/// How a disk is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read-only, shared: a source may be mounted and in use while it is copied.
    Read,
    /// Read-write, never created or truncated; block devices exclusively.
    Write,
}

/// An open disk of fixed size.
#[derive(Debug)]
pub(crate) struct Disk {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) kind: DiskKind,
    /// The same disk opened again with `O_DIRECT`, for bulk transfers that should bypass
    /// the page cache; `None` where the filesystem refuses it.
    direct: Option<File>,
    /// Set (once) when direct I/O turned out not to work: why.
    no_direct: OnceLock<String>,
}

impl Disk {
    pub(crate) fn open(path: &Path, access: Access) -> Result<Self, DiskError> {
        let open_error = |source| DiskError::Open {
            path: path.to_owned(),
            source,
        };
        // Classify before opening: opening a fifo would block until a writer appears, and
        // opening some character devices (a tape, a tty) has side effects.
        let meta = std::fs::metadata(path).map_err(open_error)?;
        let kind = kind_of(path, meta.file_type())?;

        let mut options = OpenOptions::new();
        options.read(true);
        // O_NONBLOCK so that, should the path be swapped for a fifo after the check above,
        // open returns instead of hanging; it is cleared again below.
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
        if access == Access::Write {
            // No create, no truncate: std adds neither unless asked.
            options.write(true);
            if kind == DiskKind::BlockDevice {
                // Without O_CREAT, O_EXCL on a block device claims it exclusively: the open
                // fails with EBUSY if the device is mounted, in an md array, in use by LVM or
                // device-mapper, or open exclusively by anyone else.
                flags |= libc::O_EXCL;
            }
        }
        options.custom_flags(flags);
        let file = options.open(path).map_err(open_error)?;

        // What counts is what was opened, not what the path was a moment ago.
        let opened = file.metadata().map_err(open_error)?;
        if kind_of(path, opened.file_type())? != kind {
            return Err(open_error(io::Error::other(
                "the path changed while it was being opened",
            )));
        }
        let status = fcntl(&file, FcntlArg::F_GETFL).map_err(|e| open_error(e.into()))?;
        let status = OFlag::from_bits_truncate(status) - OFlag::O_NONBLOCK;
        fcntl(&file, FcntlArg::F_SETFL(status)).map_err(|e| open_error(e.into()))?;

        let size = match kind {
            DiskKind::File => opened.len(),
            DiskKind::BlockDevice => {
                ioctl::blkgetsize64(&file).map_err(|source| DiskError::Size {
                    path: path.to_owned(),
                    source,
                })?
            }
        };
        let no_direct = OnceLock::new();
        let direct = reopen_direct(&file, access)
            .map_err(|e| no_direct.set(format!("opening it with O_DIRECT failed: {e}")))
            .ok();
        Ok(Self {
            file,
            path: path.to_owned(),
            size,
            kind,
            direct,
            no_direct,
        })
    }

    /// Why bulk I/O goes through the page cache, or `None` when it bypasses it.
    pub(crate) fn direct_unavailable(&self) -> Option<&str> {
        self.no_direct.get().map(String::as_str)
    }

    /// The direct file, for a transfer of `buf` at `offset` that meets its alignment.
    fn direct_for(&self, buf: &[u8], offset: u64) -> Option<&File> {
        let file = self.direct.as_ref()?;
        (self.no_direct.get().is_none() && is_aligned(buf, offset)).then_some(file)
    }

    /// Turns direct I/O off after `e` from a direct transfer, when `e` says the file or its
    /// filesystem does not support it (rather than a failing disk). True when turned off.
    fn refused_direct(&self, e: &io::Error, what: &str) -> bool {
        let refused = e.raw_os_error() == Some(libc::EINVAL);
        if refused {
            let _ = self.no_direct.set(format!("a direct {what} failed: {e}"));
        }
        refused
    }

    /// Fills `buf` from `offset` bypassing the page cache where it can (`O_DIRECT`, for a
    /// buffer, offset and length aligned to [`DIRECT_ALIGN`]); returns whether it did.
    /// Otherwise reads through the cache like [`read_exact_at`](Self::read_exact_at).
    pub(crate) fn read_uncached(&self, buf: &mut [u8], offset: u64) -> Result<bool, DiskError> {
        self.check(offset, buf.len() as u64)?;
        if let Some(direct) = self.direct_for(buf, offset) {
            match self.read_from(direct, buf, offset) {
                Err(DiskError::Read { source, .. }) if self.refused_direct(&source, "read") => {}
                other => return other.map(|()| true),
            }
        }
        self.read_from(&self.file, buf, offset).map(|()| false)
    }

    /// Writes all of `buf` at `offset` bypassing the page cache where it can: `O_DIRECT`
    /// for an offset and length aligned to [`DIRECT_ALIGN`], through an aligned copy when
    /// `buf` itself is not aligned. The caller has checked the bounds.
    pub(crate) fn write_uncached(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        let aligned_range = |len: usize| {
            (offset | len as u64).is_multiple_of(DIRECT_ALIGN as u64)
                && self.no_direct.get().is_none()
        };
        let Some(direct) = self.direct.as_ref().filter(|_| aligned_range(buf.len())) else {
            return self.write_to(&self.file, buf, offset);
        };
        let written = if is_aligned(buf, offset) {
            self.write_to(direct, buf, offset)
        } else {
            BOUNCE_BUF.with_borrow_mut(|bounce| {
                let bounce = bounce.get_or_insert_with(|| AlignedBuf::new(buf.len()));
                bounce.set_len(buf.len());
                bounce.copy_from_slice(buf);
                self.write_to(direct, bounce, offset)
            })
        };
        match written {
            Err(DiskError::Write { source, .. }) if self.refused_direct(&source, "write") => {
                self.write_to(&self.file, buf, offset)
            }
            other => other,
        }
    }

    /// Refuses a range that does not lie wholly inside the disk.
    pub(crate) fn check(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(DiskError::OutOfBounds {
                path: self.path.clone(),
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// Fills `buf` from `offset` through the page cache, retrying short reads and EINTR.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.check(offset, buf.len() as u64)?;
        self.read_from(&self.file, buf, offset)
    }

    fn read_from(&self, file: &File, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            match file.read_at(&mut buf[done..], at) {
                // The range was inside the size found at open, so the disk has shrunk since.
                Ok(0) => {
                    return Err(DiskError::ShortRead {
                        path: self.path.clone(),
                        offset: at,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(DiskError::Read {
                        path: self.path.clone(),
                        offset: at,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset` through the page cache, retrying short writes and
    /// EINTR. The caller has checked the bounds.
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        self.write_to(&self.file, buf, offset)
    }

    fn write_to(&self, file: &File, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            match file.write_at(&buf[done..], at) {
                Ok(0) => {
                    return Err(DiskError::write(
                        &self.path,
                        at,
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DiskError::write(&self.path, at, e)),
            }
        }
        Ok(())
    }
}

/// Opens what `file` is open on again, with `O_DIRECT`: through `/proc/self/fd`, so it is
/// the same file whatever its path names now. Not exclusive: `file` holds any claim.
fn reopen_direct(file: &File, access: Access) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(access == Access::Write)
        .custom_flags(libc::O_DIRECT | libc::O_NOCTTY);
    options.open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// The kind of disk a file type is, or why it is not one.
fn kind_of(path: &Path, file_type: FileType) -> Result<DiskKind, DiskError> {
    let what = if file_type.is_file() {
        return Ok(DiskKind::File);
    } else if file_type.is_block_device() {
        return Ok(DiskKind::BlockDevice);
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_fifo() {
        "a fifo"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "an unknown kind of file"
    };
    Err(DiskError::NotADisk {
        path: path.to_owned(),
        what,
    })
}
