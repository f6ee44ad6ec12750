//! Filesystems: which one a partition holds, and which of its bytes are in use.
//!
//! Each module reads its filesystem's own allocation metadata through a [`Region`] (the
//! partition), and returns the used bytes as extents relative to the partition's start.
//! Everything it reads is untrusted: bounds-checked, allocation-bounded, panic-free. Metadata
//! that fails a check is an error, and the caller sends the whole partition: never guess.

mod ext;
mod fat;
mod lvm;
mod ntfs;
mod swap;
mod xfs;

use crate::{ExtentSet, MetaError, Region};

/// What a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsKind {
    /// ext2 (no journal).
    Ext2,
    /// ext3 (a journal, no extents).
    Ext3,
    /// ext4.
    Ext4,
    /// XFS, v4 or v5.
    Xfs,
    /// FAT with 12-bit entries.
    Fat12,
    /// FAT with 16-bit entries.
    Fat16,
    /// FAT32.
    Fat32,
    /// NTFS.
    Ntfs,
    /// A Linux swap area: only its header page is sent.
    Swap,
    /// An LVM2 physical volume: sent whole.
    LvmPv,
}

impl FsKind {
    /// A short lowercase name: `ext4`, `xfs`, `vfat`, `ntfs`, `swap`, `lvm2`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ext2 => "ext2",
            Self::Ext3 => "ext3",
            Self::Ext4 => "ext4",
            Self::Xfs => "xfs",
            Self::Fat12 => "fat12",
            Self::Fat16 => "fat16",
            Self::Fat32 => "fat32",
            Self::Ntfs => "ntfs",
            Self::Swap => "swap",
            Self::LvmPv => "lvm2",
        }
    }
}

/// Finds the filesystem in `region` by its superblock, or `None` when none is recognised.
/// Probes the most specific signatures first (FAT's boot sector is the least specific).
pub fn probe(region: &Region) -> Result<Option<FsKind>, MetaError> {
    type Probe = fn(&Region) -> Result<Option<FsKind>, MetaError>;
    const PROBES: [Probe; 6] = [
        xfs::probe,
        ext::probe,
        ntfs::probe,
        lvm::probe,
        swap::probe,
        fat::probe,
    ];
    for p in PROBES {
        if let Some(kind) = p(region)? {
            return Ok(Some(kind));
        }
    }
    Ok(None)
}

/// The bytes of `region` that filesystem `kind` uses, relative to the region's start.
pub fn used(kind: FsKind, region: &Region) -> Result<ExtentSet, MetaError> {
    match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => ext::used(region),
        FsKind::Xfs => xfs::used(region),
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => fat::used(region),
        FsKind::Ntfs => ntfs::used(region),
        FsKind::Swap => swap::used(region),
        FsKind::LvmPv => Ok(ExtentSet::range(0, region.len())),
    }
}
