//! What to read of a disk: used-block maps from partition tables and filesystem allocation,
//! and change sets from change bitmaps, all as byte extents.
//!
//! Disk metadata is untrusted input: every parser reads through a bounds-checked [`Region`],
//! allocates only what a named maximum allows, never panics, and reports anything that fails
//! a check as a [`MetaError`], after which the caller sends the whole partition. This crate
//! opens no files of its own and does no writes; callers hand it something that implements
//! [`ReadAt`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bitmap;
mod crc32c;
pub mod error;
pub mod extent;
pub mod fs;
pub mod fuzzing;
pub mod map;
pub mod read;
pub mod table;
#[cfg(test)]
pub(crate) mod testutil;

pub use error::MetaError;

/// Whether a checksum stored in metadata matches the one computed from its bytes. A fuzz
/// build (`--cfg fuzzing`, which cargo-fuzz sets) takes every one as matching, so that mutated
/// metadata reaches the parsing behind its checksum instead of stopping there; every other
/// build checks.
#[inline]
pub(crate) fn checksum_ok<T: PartialEq>(stored: T, computed: T) -> bool {
    cfg!(fuzzing) || stored == computed
}
pub use extent::{Extent, ExtentSet};
pub use fs::FsKind;
pub use map::{map_disk, DiskMap, PartitionMap};
pub use read::{FileDisk, ReadAt, Region};
pub use table::{Partition, Table, TableKind};
