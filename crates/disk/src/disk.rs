//! What sources and targets share: opening a path as a disk, its size, bounds checks and
//! positional I/O that retries short transfers.

use std::fs::{File, FileType, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::{ioctl, DiskError, DiskKind};

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
        Ok(Self {
            file,
            path: path.to_owned(),
            size,
            kind,
        })
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

    /// Fills `buf` from `offset`, retrying short reads and EINTR.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.check(offset, buf.len() as u64)?;
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            match self.file.read_at(&mut buf[done..], at) {
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

    /// Writes all of `buf` at `offset`, retrying short writes and EINTR. The caller has
    /// checked the bounds.
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            match self.file.write_at(&buf[done..], at) {
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
