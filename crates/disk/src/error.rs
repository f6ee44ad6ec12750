//! Why a disk could not be opened, read or written.

use std::io;
use std::path::{Path, PathBuf};

/// A failure opening, reading or writing a disk. Each carries the service error code the agent
/// reports ([`DiskError::code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// The path could not be opened (missing, no permission, or an exclusively claimed device).
    #[error("cannot open disk {}: {source}{}", path.display(), open_hint(path, source))]
    Open {
        /// The disk's path.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The path exists but is neither a regular file nor a block device.
    #[error(
        "{} is {what}, not a disk: give a block device or a regular disk image file",
        path.display()
    )]
    NotADisk {
        /// The path.
        path: PathBuf,
        /// What it is instead, with an article: "a directory", "a character device", ...
        what: &'static str,
    },
    /// The disk's size could not be found.
    #[error("cannot find the size of disk {}: {source}", path.display())]
    Size {
        /// The disk's path.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A read failed.
    #[error("cannot read disk {} at offset {offset}: {source}", path.display())]
    Read {
        /// The disk's path.
        path: PathBuf,
        /// Where the failing read began.
        offset: u64,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A read inside the disk's size found the end of the disk.
    #[error(
        "disk {} ended early, at offset {offset}: did it shrink while it was being copied?",
        path.display()
    )]
    ShortRead {
        /// The disk's path.
        path: PathBuf,
        /// Where the data ran out.
        offset: u64,
    },
    /// A write (or zeroing) failed.
    #[error("cannot write target disk {} at offset {offset}: {source}", path.display())]
    Write {
        /// The disk's path.
        path: PathBuf,
        /// Where the failing write began.
        offset: u64,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A write, zeroing or flush failed with ENOSPC or EDQUOT.
    #[error(
        "no space left for target disk {} (writing at offset {offset}): the filesystem, quota \
         or thin pool holding it is full; free space, or preallocate an image file with \
         fallocate -l SIZE {}",
        path.display(),
        path.display()
    )]
    NoSpace {
        /// The disk's path.
        path: PathBuf,
        /// Where the failing write began; 0 when it was the flush that failed, which does not
        /// say which write could not be stored.
        offset: u64,
    },
    /// Flushing written data to stable storage failed.
    #[error("cannot flush target disk {} to stable storage: {source}", path.display())]
    Sync {
        /// The disk's path.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A read or write would reach past the end of the disk.
    #[error(
        "{len} bytes at offset {offset} lie outside disk {}, which is {size} bytes",
        path.display()
    )]
    OutOfBounds {
        /// The disk's path.
        path: PathBuf,
        /// The requested offset.
        offset: u64,
        /// The requested length.
        len: u64,
        /// The disk's size.
        size: u64,
    },
}

impl DiskError {
    /// The service error code for this failure: `SMS.2013` for a disk that cannot be opened,
    /// `SMS.1905` for a failed read, `SMS.2007` for a failed write, `SMS.0519` for no space.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Open { .. } | Self::NotADisk { .. } | Self::Size { .. } => {
                blockrep_codes::OPEN_DISK
            }
            Self::Read { .. } | Self::ShortRead { .. } => blockrep_codes::READ_SOURCE,
            Self::Write { .. } | Self::Sync { .. } | Self::OutOfBounds { .. } => {
                blockrep_codes::WRITE
            }
            Self::NoSpace { .. } => blockrep_codes::NO_SPACE,
        }
    }

    /// The error for a failed write at `offset`: NoSpace when the storage is full.
    pub(crate) fn write(path: &Path, offset: u64, source: io::Error) -> Self {
        if is_no_space(&source) {
            Self::NoSpace {
                path: path.to_owned(),
                offset,
            }
        } else {
            Self::Write {
                path: path.to_owned(),
                offset,
                source,
            }
        }
    }
}

/// ENOSPC, or EDQUOT: to the operator both mean "the target's storage is full".
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// What to do about a failed open. The same variant serves sources and targets, so the hints
/// are phrased for either.
fn open_hint(path: &Path, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => format!(
            "; a target disk must already exist and be at least as large as the source \
             (for an image file: truncate -s SIZE {})",
            path.display()
        ),
        Some(libc::EBUSY) => "; the device is in use (mounted, or held by LVM, md, swap or \
                              another program): unmount or release it, or pick another device"
            .to_owned(),
        Some(libc::EACCES | libc::EPERM) => {
            "; run as root or give this user access to the disk".to_owned()
        }
        Some(libc::EROFS) => "; the disk is read-only and cannot be a target".to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let path = PathBuf::from("/x");
        let io = || io::Error::from_raw_os_error(libc::EIO);
        let cases = [
            (
                DiskError::Open {
                    path: path.clone(),
                    source: io(),
                },
                "SMS.2013",
            ),
            (
                DiskError::NotADisk {
                    path: path.clone(),
                    what: "a directory",
                },
                "SMS.2013",
            ),
            (
                DiskError::Size {
                    path: path.clone(),
                    source: io(),
                },
                "SMS.2013",
            ),
            (
                DiskError::Read {
                    path: path.clone(),
                    offset: 0,
                    source: io(),
                },
                "SMS.1905",
            ),
            (
                DiskError::ShortRead {
                    path: path.clone(),
                    offset: 0,
                },
                "SMS.1905",
            ),
            (
                DiskError::Write {
                    path: path.clone(),
                    offset: 0,
                    source: io(),
                },
                "SMS.2007",
            ),
            (
                DiskError::NoSpace {
                    path: path.clone(),
                    offset: 0,
                },
                "SMS.0519",
            ),
            (
                DiskError::Sync {
                    path: path.clone(),
                    source: io(),
                },
                "SMS.2007",
            ),
            (
                DiskError::OutOfBounds {
                    path: path.clone(),
                    offset: 1,
                    len: 2,
                    size: 3,
                },
                "SMS.2007",
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }

    #[test]
    fn write_errors_for_full_storage_are_no_space() {
        let path = Path::new("/x");
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = DiskError::write(path, 7, io::Error::from_raw_os_error(errno));
            assert!(matches!(e, DiskError::NoSpace { offset: 7, .. }), "{e}");
        }
        let e = DiskError::write(path, 7, io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, DiskError::Write { offset: 7, .. }), "{e}");
    }

    #[test]
    fn open_messages_say_what_to_do() {
        let e = DiskError::Open {
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot open disk /x: No such file or directory"),
            "{msg}"
        );
        assert!(msg.contains("truncate -s SIZE /x"), "{msg}");
        let e = DiskError::Open {
            path: PathBuf::from("/dev/sdb"),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert!(e.to_string().contains("in use (mounted"), "{e}");
    }
}
