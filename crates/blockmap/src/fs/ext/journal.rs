//! The internal journal (JBD2). When its log holds committed transactions that were not yet
//! written back in place (`s_start != 0`: the filesystem is mounted, or was not unmounted
//! cleanly), the block bitmaps in place are older than the copies in the log, and a block
//! allocated by such a transaction looks free. Replaying the log (at the next mount, or by
//! e2fsck) writes the copies back, so the caller ORs every logged copy of a block bitmap
//! into the bitmap it reads: a superset of what replay produces, never less.
//!
//! Layout (big-endian; kernel Documentation/filesystems/ext4/journal.rst): a superblock in
//! log block 0, then from `s_start` descriptor blocks (block tags, each naming the fs block
//! the next log block is a copy of), commit blocks ending a transaction, and revoke blocks,
//! each block headed by the magic and the transaction's sequence number.

use super::inode::BlockMap;
use super::superblock::Fs;
use crate::read::{be, le};
use crate::{corrupt, MetaError, Region};

/// `h_magic`, also restored into escaped copies. On-disk format: must not change.
pub const MAGIC: u32 = 0xC03B_3998;
const BLOCKTYPE_DESCRIPTOR: u32 = 1;
const BLOCKTYPE_COMMIT: u32 = 2;
const BLOCKTYPE_SB_V1: u32 = 3;
const BLOCKTYPE_SB_V2: u32 = 4;
const BLOCKTYPE_REVOKE: u32 = 5;

// Journal superblock s_feature_incompat.
const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;
const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
    | INCOMPAT_64BIT
    | INCOMPAT_ASYNC_COMMIT
    | INCOMPAT_CSUM_V2
    | INCOMPAT_CSUM_V3
    | INCOMPAT_FAST_COMMIT;

// Block tag flags.
const FLAG_ESCAPE: u32 = 1;
const FLAG_SAME_UUID: u32 = 2;
const FLAG_LAST_TAG: u32 = 8;

/// Size of the block header (magic, type, sequence).
const HEADER: usize = 12;
/// Size of the checksum tail of descriptor blocks with checksums v2/v3.
const TAIL: usize = 4;
/// Most logged block copies kept (16 bytes each: 16 MiB). A 1 GiB journal of 4 KiB blocks
/// holds at most 262,144.
const MAX_COPIES: usize = 1 << 20;

/// A copy, in the log, of filesystem block `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Copy {
    pub target: u64,
    /// The filesystem block that holds the copy.
    pub source: u64,
    /// The copy's first four bytes were the journal magic and are stored as zeros.
    pub escaped: bool,
}

impl Copy {
    /// Reads the copy into `buf` (one block), restoring an escaped magic.
    pub fn read(&self, region: &Region, fs: &Fs, buf: &mut [u8]) -> Result<(), MetaError> {
        region.read("an ext journal block", buf, self.source * fs.block_size)?;
        if self.escaped {
            if let Some(head) = buf.get_mut(..4) {
                head.copy_from_slice(&MAGIC.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// The copies of filesystem blocks in the committed, unreplayed transactions of the log, by
/// target block. Empty when the log is clean.
pub fn logged_copies(region: &Region, fs: &Fs, map: &BlockMap) -> Result<Vec<Copy>, MetaError> {
    let name = fs.name;
    let bs = fs.block_size as usize;
    let mut buf = vec![0u8; bs];
    let read_log = |pos: u64, buf: &mut [u8]| -> Result<(), MetaError> {
        let p = map.physical(pos).ok_or_else(|| {
            corrupt!("{name} journal: log block {pos} is not mapped by the journal inode")
        })?;
        region.read("an ext journal block", buf, p * fs.block_size)
    };

    read_log(0, &mut buf)?;
    let magic = be::u32(&buf, 0)?;
    let blocktype = be::u32(&buf, 4)?;
    if magic != MAGIC || !(blocktype == BLOCKTYPE_SB_V1 || blocktype == BLOCKTYPE_SB_V2) {
        return Err(corrupt!(
            "{name} journal superblock: magic 0x{magic:08x} type {blocktype} is not a journal"
        ));
    }
    let blocksize = u64::from(be::u32(&buf, 0xC)?);
    let maxlen = u64::from(be::u32(&buf, 0x10)?);
    let first = u64::from(be::u32(&buf, 0x14)?);
    let mut sequence = be::u32(&buf, 0x18)?;
    let start = u64::from(be::u32(&buf, 0x1C)?);
    if blocksize != fs.block_size || maxlen > map.len_blocks || first == 0 || first >= maxlen {
        return Err(corrupt!(
            "{name} journal superblock: block size {blocksize}, {maxlen} blocks from {first} \
             (the journal inode has {} blocks of {})",
            map.len_blocks,
            fs.block_size
        ));
    }
    if start == 0 {
        return Ok(Vec::new());
    }
    if start < first || start >= maxlen {
        return Err(corrupt!(
            "{name} journal superblock: log start {start} is outside {first}..{maxlen}"
        ));
    }
    let incompat = if blocktype == BLOCKTYPE_SB_V2 {
        be::u32(&buf, 0x28)?
    } else {
        0
    };
    let unknown = incompat & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(MetaError::Unsupported(format!(
            "{name} journal: needs recovery with incompatible journal features 0x{unknown:x}"
        )));
    }
    if incompat & INCOMPAT_FAST_COMMIT != 0 {
        // Fast commits log allocations as operations, not as bitmap blocks.
        return Err(MetaError::Unsupported(format!(
            "{name} journal: needs recovery and uses fast commits"
        )));
    }
    let bit64 = incompat & INCOMPAT_64BIT != 0;
    let csum3 = incompat & INCOMPAT_CSUM_V3 != 0;
    let csum2 = incompat & INCOMPAT_CSUM_V2 != 0;
    let tag_bytes: usize = if csum3 {
        16
    } else {
        8 + if csum2 { 2 } else { 0 } + if bit64 { 4 } else { 0 }
    };
    let tag_end = if csum2 || csum3 { bs - TAIL } else { bs };
    let next = |pos: u64| if pos + 1 >= maxlen { first } else { pos + 1 };

    // The kernel's scan pass: follow the log while each block carries the magic and the
    // expected sequence; a transaction counts once its commit block is seen.
    let mut copies: Vec<Copy> = Vec::new();
    let mut pending: Vec<Copy> = Vec::new();
    let mut pos = start;
    let mut visited = 0u64;
    let log_len = maxlen - first;
    while visited < log_len {
        read_log(pos, &mut buf)?;
        if be::u32(&buf, 0)? != MAGIC || be::u32(&buf, 8)? != sequence {
            break;
        }
        match be::u32(&buf, 4)? {
            BLOCKTYPE_DESCRIPTOR => {
                let mut at = HEADER;
                while at + tag_bytes <= tag_end {
                    let low = u64::from(be::u32(&buf, at)?);
                    let flags = if csum3 {
                        be::u32(&buf, at + 4)?
                    } else {
                        u32::from(be::u16(&buf, at + 6)?)
                    };
                    let high = if bit64 {
                        u64::from(be::u32(&buf, at + 8)?)
                    } else {
                        0
                    };
                    at += tag_bytes;
                    if flags & FLAG_SAME_UUID == 0 {
                        at += 16;
                    }
                    pos = next(pos);
                    visited += 1;
                    let source = map
                        .physical(pos)
                        .ok_or_else(|| corrupt!("{name} journal: log block {pos} is not mapped"))?;
                    if copies.len() + pending.len() >= MAX_COPIES {
                        return Err(MetaError::Unsupported(format!(
                            "{name} journal: more than {MAX_COPIES} logged blocks"
                        )));
                    }
                    pending.push(Copy {
                        target: high << 32 | low,
                        source,
                        escaped: flags & FLAG_ESCAPE != 0,
                    });
                    if flags & FLAG_LAST_TAG != 0 {
                        break;
                    }
                }
            }
            BLOCKTYPE_COMMIT => {
                copies.append(&mut pending);
                sequence = sequence.wrapping_add(1);
            }
            BLOCKTYPE_REVOKE => {}
            _ => break,
        }
        pos = next(pos);
        visited += 1;
    }

    for c in &copies {
        if c.target >= fs.blocks_count {
            return Err(corrupt!(
                "{name} journal: a logged block targets block {}, outside the filesystem's {} \
                 blocks",
                c.target,
                fs.blocks_count
            ));
        }
        if c.target == fs.sb_block {
            // A logged superblock with another size is an unfinished resize: the groups it
            // adds are not described on disk yet.
            c.read(region, fs, &mut buf)?;
            let at = (super::superblock::SB_OFFSET - fs.sb_block * fs.block_size) as usize;
            let mut blocks = u64::from(le::u32(&buf, at + 0x4)?);
            if fs.bit64 {
                blocks |= u64::from(le::u32(&buf, at + 0x150)?) << 32;
            }
            if blocks != fs.blocks_count {
                return Err(MetaError::Unsupported(format!(
                    "{name} journal: holds a superblock of {blocks} blocks (on disk {}): an \
                     unfinished resize",
                    fs.blocks_count
                )));
            }
        }
    }
    copies.sort_unstable();
    Ok(copies)
}

/// The copies of `target` in `copies` (sorted by target).
pub fn copies_of(copies: &[Copy], target: u64) -> &[Copy] {
    let from = copies.partition_point(|c| c.target < target);
    let to = copies.partition_point(|c| c.target <= target);
    copies.get(from..to).unwrap_or_default()
}
