//! The used-block map of a whole disk: the table, each partition's filesystem, and what to send.

use crate::fs::{self, FsKind};
use crate::table::{self, TableKind};
use crate::{ExtentSet, MetaError, ReadAt, Region};

/// The start of every disk is always sent: the MBR or protective MBR, the GPT, and the gap
/// before the first partition where boot loaders live (GRUB's core.img, for one).
pub const ALWAYS_SENT_HEAD: u64 = 1 << 20;

/// What a partition (or a whole-disk filesystem) holds and what of it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMap {
    /// The partition number (0 for a whole-disk filesystem).
    pub number: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The partition type, for people (empty for a whole-disk filesystem).
    pub type_name: String,
    /// The filesystem found, if any.
    pub fs: Option<FsKind>,
    /// Bytes of it that are sent.
    pub used_bytes: u64,
    /// Why the whole partition is sent although a filesystem was found (corrupt or
    /// unsupported metadata), or `None`.
    pub fallback: Option<String>,
}

/// The used-block map of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskMap {
    /// The disk's size.
    pub size: u64,
    /// The partition table, if any.
    pub table: Option<TableKind>,
    /// Partitions (or one entry for a whole-disk filesystem), in disk order.
    pub partitions: Vec<PartitionMap>,
    /// Everything to send, absolute and sorted.
    pub used: ExtentSet,
    /// Things an operator should know: each names the partition and why.
    pub warnings: Vec<String>,
}

/// Maps one filesystem region: its used extents (absolute), or the whole region with a
/// warning when its metadata cannot be trusted.
fn map_region(
    disk: &dyn ReadAt,
    number: u32,
    start: u64,
    len: u64,
    type_name: String,
    warnings: &mut Vec<String>,
) -> (PartitionMap, ExtentSet) {
    let label = if number == 0 {
        "the whole-disk filesystem".to_owned()
    } else {
        format!("partition {number}")
    };
    let whole = ExtentSet::range(start, len);
    let region = match Region::new(disk, start, len) {
        Ok(r) => r,
        Err(e) => {
            warnings.push(format!("{label}: {e}; sending it whole"));
            return (
                PartitionMap {
                    number,
                    start,
                    len,
                    type_name,
                    fs: None,
                    used_bytes: len,
                    fallback: Some(e.to_string()),
                },
                whole,
            );
        }
    };
    let (fs, result) = match fs::probe(&region) {
        Ok(Some(kind)) => (Some(kind), fs::used(kind, &region)),
        Ok(None) => (None, Ok(ExtentSet::range(0, len))),
        Err(e) => (None, Err(e)),
    };
    let (used, fallback) = match result {
        Ok(used) => (used.clip(0, len).shifted(start), None),
        Err(e) => {
            let name = fs.map_or("filesystem", |k| k.name());
            let reason = match e {
                MetaError::Unsupported(_) => format!("{label} ({name}): {e}; sending it whole"),
                _ => format!("{label} ({name}): metadata failed a check: {e}; sending it whole"),
            };
            warnings.push(reason.clone());
            (whole, Some(e.to_string()))
        }
    };
    let map = PartitionMap {
        number,
        start,
        len,
        type_name,
        fs,
        used_bytes: used.total(),
        fallback,
    };
    (map, used)
}

/// Maps a disk: reads its partition table and each partition's filesystem. Never fails: what
/// cannot be read or trusted is sent whole, with a warning.
pub fn map_disk(disk: &dyn ReadAt) -> DiskMap {
    let size = disk.size();
    let mut warnings = Vec::new();
    let mut used = ExtentSet::range(0, ALWAYS_SENT_HEAD.min(size));
    let mut partitions = Vec::new();

    // A filesystem at byte 0 means no table (its boot sector may carry an MBR signature).
    let whole_fs = fs::probe(&Region::whole(disk)).ok().flatten();
    let table = if whole_fs.is_some() {
        Ok(None)
    } else {
        table::read_table(disk)
    };
    let kind = match table {
        Ok(Some(t)) => {
            warnings.extend(t.warnings.iter().map(|w| format!("partition table: {w}")));
            used.union(&t.metadata);
            for p in &t.partitions {
                let (m, u) = map_region(
                    disk,
                    p.number,
                    p.start,
                    p.len,
                    p.type_name.clone(),
                    &mut warnings,
                );
                used.union(&u);
                partitions.push(m);
            }
            Some(t.kind)
        }
        Ok(None) => {
            let (m, u) = map_region(disk, 0, 0, size, String::new(), &mut warnings);
            if m.fs.is_some() || size <= ALWAYS_SENT_HEAD {
                used.union(&u);
                partitions.push(m);
            } else {
                warnings.push(
                    "no partition table and no filesystem found: sending the whole disk".into(),
                );
                used.union(&u);
                partitions.push(m);
            }
            None
        }
        Err(e) => {
            warnings.push(format!(
                "partition table cannot be trusted: {e}; sending the whole disk"
            ));
            used.insert(0, size);
            None
        }
    };
    DiskMap {
        size,
        table: kind,
        partitions,
        used: used.clip(0, size),
        warnings,
    }
}
