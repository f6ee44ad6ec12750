//! blockrep's disk access: the source disk it reads and the target disk it writes, each a
//! regular image file or a block device, through bounded positional I/O.
//!
//! [`SourceDisk`] is opened read-only and can drop what it has read from the page cache, so a
//! migration does not evict the source server's working set. [`TargetDisk`] is opened
//! read-write but is never created, truncated or grown: a missing or too-small target is the
//! operator's to fix, not something to guess at. A block device target is opened exclusively,
//! so a mounted or otherwise claimed device is refused. The target writes only
//! [`Verified`](blockrep_chunk::Verified) chunks, so bytes whose digest has not been checked
//! cannot reach it, and zero chunks become hole punches or `BLKZEROOUT` rather than writes.
//!
//! Every offset is checked against the disk's size with checked arithmetic before any I/O.
//! Both types take `&self` everywhere and are `Send + Sync`, so a pool of worker threads can
//! share one disk; this crate does not order, batch or schedule I/O, and does no async I/O:
//! callers run these blocking calls off the reactor. Linux only.

// Only the `ioctl` module needs `unsafe` (raw ioctls have no safe wrapper); it is allowed
// there and nowhere else.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod buf;
mod disk;
mod error;
#[allow(unsafe_code)]
mod ioctl;
#[cfg(test)]
mod skip;
mod source;
mod target;

pub use buf::{AlignedBuf, DIRECT_ALIGN};
pub use error::DiskError;
pub use source::SourceDisk;
pub use target::TargetDisk;

/// What a disk path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// A regular file holding a disk image.
    File,
    /// A block device such as `/dev/sdb` or `/dev/loop0`.
    BlockDevice,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SourceDisk>();
        assert_send_sync::<TargetDisk>();
    }
}
