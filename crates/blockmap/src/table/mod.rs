//! Partition tables: MBR (with extended and logical partitions) and GPT.
//!
//! A table is untrusted: entries are checked against the disk and each other, GPT headers and
//! entry arrays against their CRCs. The sectors that hold a table are listed in
//! [`Table::metadata`], so they are always sent.

mod gpt;
mod mbr;

use crate::{ExtentSet, MetaError, ReadAt};

/// Which kind of table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A DOS partition table (with extended and logical partitions).
    Mbr,
    /// A GUID partition table.
    Gpt,
}

impl TableKind {
    /// The name `blockmap` prints: `mbr` or `gpt`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mbr => "mbr",
            Self::Gpt => "gpt",
        }
    }
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its number as tools show it: 1-4 primary and 5.. logical for MBR; the entry index + 1
    /// for GPT.
    pub number: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes (never 0; `start + len` is inside the disk).
    pub len: u64,
    /// The type, for people: `0x83`, `EFI System`, a GUID.
    pub type_name: String,
}

/// A partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// MBR or GPT.
    pub kind: TableKind,
    /// The partitions, by start offset; they do not overlap each other or the metadata.
    pub partitions: Vec<Partition>,
    /// Bytes holding the table: the MBR and every EBR; the protective MBR, both GPT headers
    /// and both entry arrays.
    pub metadata: ExtentSet,
    /// Problems that did not stop the table from being read (a bad backup GPT, say).
    pub warnings: Vec<String>,
}

/// Reads the partition table of `disk`: `Ok(None)` when there is none (a whole-disk
/// filesystem, or an empty disk), `Err` when there is one but it cannot be trusted.
pub fn read_table(disk: &dyn ReadAt) -> Result<Option<Table>, MetaError> {
    if let Some(t) = gpt::read(disk)? {
        return Ok(Some(t));
    }
    mbr::read(disk)
}
