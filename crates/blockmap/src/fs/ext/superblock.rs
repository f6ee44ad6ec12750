//! The ext2/3/4 superblock: the probe's sanity checks, the features this reader handles,
//! and the validated geometry ([`Fs`]) the rest of the module works from.
//!
//! Field offsets are those of `struct ext4_super_block` (kernel
//! Documentation/filesystems/ext4/super.rst). They are on-disk format and must not change.

use super::crc::crc32c;
use crate::fs::FsKind;
use crate::read::le;
use crate::{corrupt, MetaError};

/// Where the primary superblock starts, in bytes from the start of the partition.
pub const SB_OFFSET: u64 = 1024;
/// Its size.
pub const SB_SIZE: usize = 1024;
/// `s_magic`.
const MAGIC: u16 = 0xEF53;

/// Largest `s_log_block_size`: 64 KiB blocks (ext4's limit).
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Largest `s_log_cluster_size` with bigalloc: 1 GiB clusters (the kernel's
/// `EXT4_MAX_CLUSTER_LOG_SIZE` 30, less the 10 of the 1 KiB unit).
const MAX_LOG_CLUSTER_SIZE: u32 = 20;
/// Most block groups read. 2^22 groups is 512 TiB at 4 KiB blocks (32 TiB at 1 KiB); beyond
/// that the per-group work and the metadata extent list would no longer be small.
const MAX_GROUPS: u64 = 1 << 22;
/// Largest descriptor size (`EXT4_MAX_DESC_SIZE`, the smallest block size).
const MAX_DESC_SIZE: u64 = 1024;

// s_feature_compat
pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const COMPAT_SPARSE_SUPER2: u32 = 0x200;

// s_feature_incompat
const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// Incompatible features whose meaning for block allocation is known: none of them changes
/// what the block bitmaps mean, except those handled below (`meta_bg`, `64bit`, `flex_bg`,
/// `mmp`, `recover`).
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_DIRDATA
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;
/// What ext3 already had; anything else incompatible makes it ext4 (as blkid decides).
const INCOMPAT_EXT3: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;

// s_feature_ro_compat
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_BTREE_DIR: u32 = 0x4;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const RO_COMPAT_QUOTA: u32 = 0x100;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const RO_COMPAT_READONLY: u32 = 0x1000;
const RO_COMPAT_PROJECT: u32 = 0x2000;
const RO_COMPAT_SHARED_BLOCKS: u32 = 0x4000;
const RO_COMPAT_VERITY: u32 = 0x8000;
const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;
/// Read-only-compatible features this reader knows. `has_snapshot` (0x80, next3 snapshots
/// with their exclude bitmaps) and `replica` (0x800) are not among them.
const RO_COMPAT_KNOWN: u32 = RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_BTREE_DIR
    | RO_COMPAT_HUGE_FILE
    | RO_COMPAT_GDT_CSUM
    | RO_COMPAT_DIR_NLINK
    | RO_COMPAT_EXTRA_ISIZE
    | RO_COMPAT_QUOTA
    | RO_COMPAT_BIGALLOC
    | RO_COMPAT_METADATA_CSUM
    | RO_COMPAT_READONLY
    | RO_COMPAT_PROJECT
    | RO_COMPAT_SHARED_BLOCKS
    | RO_COMPAT_VERITY
    | RO_COMPAT_ORPHAN_PRESENT;
const RO_COMPAT_EXT3: u32 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;

/// `s_state` bit: errors were detected and not yet repaired by e2fsck.
const STATE_ERROR_FS: u16 = 0x2;
/// `s_checksum_type` for CRC32C, the only one defined.
const CHECKSUM_TYPE_CRC32C: u8 = 1;
/// `s_rev_level` 0: fixed 128-byte inodes, no feature fields.
const GOOD_OLD_REV: u32 = 0;
const GOOD_OLD_INODE_SIZE: u64 = 128;
/// Offset of `s_checksum`, the last field.
const SB_CHECKSUM_OFFSET: usize = 0x3FC;

/// The superblock fields this module uses, as read (only the probe's checks applied).
#[derive(Debug, Clone)]
pub struct Superblock {
    pub kind: FsKind,
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub log_block_size: u32,
    pub log_cluster_size: u32,
    pub blocks_per_group: u64,
    pub clusters_per_group: u64,
    pub inodes_per_group: u64,
    pub state: u16,
    pub rev_level: u32,
    pub inode_size: u16,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub reserved_gdt_blocks: u64,
    pub journal_inum: u32,
    pub journal_dev: u32,
    pub desc_size: u16,
    pub first_meta_bg: u64,
    pub mmp_block: u64,
    pub checksum_type: u8,
    pub backup_bgs: [u64; 2],
    pub checksum_seed: u32,
    pub checksum: u32,
    /// CRC32C of the superblock up to `s_checksum`, computed.
    pub computed_checksum: u32,
}

impl Superblock {
    /// Parses a superblock, returning `None` when the magic or the basic geometry says it is
    /// not one (block size, group sizes, first data block).
    pub fn parse(b: &[u8]) -> Result<Option<Self>, MetaError> {
        if b.len() < SB_SIZE || le::u16(b, 0x38)? != MAGIC {
            return Ok(None);
        }
        let incompat = le::u32(b, 0x60)?;
        let ro_compat = le::u32(b, 0x64)?;
        let compat = le::u32(b, 0x5C)?;
        let log_block_size = le::u32(b, 0x18)?;
        let mut log_cluster_size = le::u32(b, 0x1C)?;
        let mut blocks_count = u64::from(le::u32(b, 0x4)?);
        if incompat & INCOMPAT_64BIT != 0 {
            blocks_count |= u64::from(le::u32(b, 0x150)?) << 32;
        }
        let first_data_block = u64::from(le::u32(b, 0x14)?);
        let blocks_per_group = u64::from(le::u32(b, 0x20)?);
        let mut clusters_per_group = u64::from(le::u32(b, 0x24)?);
        let inodes_per_group = u64::from(le::u32(b, 0x28)?);

        if log_block_size > MAX_LOG_BLOCK_SIZE || blocks_count == 0 {
            return Ok(None);
        }
        let block_size = 1024u64 << log_block_size;
        let bigalloc = ro_compat & RO_COMPAT_BIGALLOC != 0;
        if bigalloc {
            if log_cluster_size < log_block_size || log_cluster_size > MAX_LOG_CLUSTER_SIZE {
                return Ok(None);
            }
            let ratio = 1u64 << (log_cluster_size - log_block_size);
            if clusters_per_group.checked_mul(ratio) != Some(blocks_per_group) {
                return Ok(None);
            }
        } else {
            // Without bigalloc a cluster is a block, whatever these (once fragment) fields say.
            log_cluster_size = log_block_size;
            clusters_per_group = blocks_per_group;
        }
        let bits_per_bitmap = block_size * 8;
        if clusters_per_group == 0
            || clusters_per_group > bits_per_bitmap
            || inodes_per_group == 0
            || inodes_per_group > bits_per_bitmap
        {
            return Ok(None);
        }
        // Block 0 holds the superblock at byte 1024 unless blocks are 1 KiB, when the
        // superblock is block 1 and the groups start there (bigalloc always starts at 0).
        let expected_first = u64::from(block_size == 1024 && !bigalloc);
        if first_data_block != expected_first || first_data_block >= blocks_count {
            return Ok(None);
        }

        let kind = if incompat & !INCOMPAT_EXT3 != 0 || ro_compat & !RO_COMPAT_EXT3 != 0 {
            FsKind::Ext4
        } else if compat & COMPAT_HAS_JOURNAL != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(b.get(0x68..0x78).unwrap_or(&[0u8; 16]));
        let head = b.get(..SB_CHECKSUM_OFFSET).unwrap_or_default();
        Ok(Some(Self {
            kind,
            inodes_count: le::u32(b, 0x0)?,
            blocks_count,
            first_data_block,
            log_block_size,
            log_cluster_size,
            blocks_per_group,
            clusters_per_group,
            inodes_per_group,
            state: le::u16(b, 0x3A)?,
            rev_level: le::u32(b, 0x4C)?,
            inode_size: le::u16(b, 0x58)?,
            compat,
            incompat,
            ro_compat,
            uuid,
            reserved_gdt_blocks: u64::from(le::u16(b, 0xCE)?),
            journal_inum: le::u32(b, 0xE0)?,
            journal_dev: le::u32(b, 0xE4)?,
            desc_size: le::u16(b, 0xFE)?,
            first_meta_bg: u64::from(le::u32(b, 0x104)?),
            mmp_block: le::u64(b, 0x168)?,
            checksum_type: b.get(0x175).copied().unwrap_or(0),
            backup_bgs: [u64::from(le::u32(b, 0x24C)?), u64::from(le::u32(b, 0x250)?)],
            checksum_seed: le::u32(b, 0x270)?,
            checksum: le::u32(b, SB_CHECKSUM_OFFSET)?,
            computed_checksum: crc32c(!0, head),
        }))
    }
}

/// Which group descriptor checksum the filesystem uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescCsum {
    None,
    /// `gdt_csum`: CRC16 over UUID, group number and descriptor.
    Crc16,
    /// `metadata_csum`: CRC32C (low 16 bits) with the checksum seed; bitmaps checksummed too.
    Crc32c,
}

/// Where the journal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    None,
    /// In this inode (normally 8).
    Inode(u32),
    /// On another device: nothing of it is here.
    External,
}

/// A superblock that passed every check, with the geometry derived from it. All block
/// numbers below `blocks_count`, whose bytes fit in the partition.
#[derive(Debug, Clone)]
pub struct Fs {
    /// `ext2`, `ext3` or `ext4`, for messages.
    pub name: &'static str,
    pub block_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    /// Bits in a block bitmap that are used (clusters per group).
    pub clusters_per_group: u64,
    /// Blocks per cluster (1 without bigalloc).
    pub cluster_ratio: u64,
    pub groups: u64,
    pub inodes_per_group: u64,
    pub inodes_count: u64,
    pub inode_size: u64,
    /// Blocks of one group's inode table.
    pub inode_table_blocks: u64,
    pub desc_size: u64,
    pub descs_per_block: u64,
    /// Blocks of the (non-meta_bg) descriptor table.
    pub gdt_blocks: u64,
    pub reserved_gdt_blocks: u64,
    pub first_meta_bg: u64,
    pub meta_bg: bool,
    pub flex_bg: bool,
    pub bit64: bool,
    pub sparse_super: bool,
    pub sparse_super2: bool,
    pub backup_bgs: [u64; 2],
    pub csum: DescCsum,
    /// The seed of every metadata_csum checksum.
    pub csum_seed: u32,
    pub uuid: [u8; 16],
    /// The block holding the primary superblock (1 with 1 KiB blocks, else 0).
    pub sb_block: u64,
    pub journal: Journal,
    pub mmp_block: Option<u64>,
}

impl Fs {
    /// Checks everything [`Superblock::parse`] did not, against a partition of
    /// `region_len` bytes.
    pub fn new(sb: &Superblock, region_len: u64) -> Result<Self, MetaError> {
        let name = sb.kind.name();
        if sb.incompat & INCOMPAT_JOURNAL_DEV != 0 {
            return Err(MetaError::Unsupported(format!(
                "{name} superblock: this is an external journal device, not a filesystem"
            )));
        }
        if sb.incompat & INCOMPAT_COMPRESSION != 0 {
            return Err(MetaError::Unsupported(format!(
                "{name} superblock: the compression feature"
            )));
        }
        let unknown = sb.incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(MetaError::Unsupported(format!(
                "{name} superblock: incompatible features 0x{unknown:x}"
            )));
        }
        let unknown = sb.ro_compat & !RO_COMPAT_KNOWN;
        if unknown != 0 {
            return Err(MetaError::Unsupported(format!(
                "{name} superblock: read-only-compatible features 0x{unknown:x} (snapshots or \
                 unknown)"
            )));
        }
        let metadata_csum = sb.ro_compat & RO_COMPAT_METADATA_CSUM != 0;
        if metadata_csum {
            if sb.checksum_type != CHECKSUM_TYPE_CRC32C {
                return Err(corrupt!(
                    "{name} superblock: checksum type {} is not crc32c",
                    sb.checksum_type
                ));
            }
            if !crate::checksum_ok(sb.checksum, sb.computed_checksum) {
                return Err(corrupt!(
                    "{name} superblock: checksum 0x{:08x} does not match the computed 0x{:08x}",
                    sb.checksum,
                    sb.computed_checksum
                ));
            }
        }
        if sb.state & STATE_ERROR_FS != 0 {
            return Err(corrupt!(
                "{name} superblock: the filesystem is marked as having errors (s_state 0x{:x}); \
                 its bitmaps cannot be trusted until e2fsck repairs it",
                sb.state
            ));
        }

        let block_size = 1024u64 << sb.log_block_size;
        let bytes = sb.blocks_count.checked_mul(block_size);
        if bytes.is_none_or(|b| b > region_len) {
            return Err(corrupt!(
                "{name} superblock: {} blocks of {block_size} bytes do not fit in the \
                 {region_len}-byte partition",
                sb.blocks_count
            ));
        }
        if sb.blocks_per_group & 7 != 0 || sb.clusters_per_group & 7 != 0 {
            return Err(corrupt!(
                "{name} superblock: {} blocks ({} clusters) per group is not a multiple of 8",
                sb.blocks_per_group,
                sb.clusters_per_group
            ));
        }
        let inode_size = if sb.rev_level == GOOD_OLD_REV {
            GOOD_OLD_INODE_SIZE
        } else {
            u64::from(sb.inode_size)
        };
        if inode_size < GOOD_OLD_INODE_SIZE
            || !inode_size.is_power_of_two()
            || inode_size > block_size
        {
            return Err(corrupt!("{name} superblock: inode size {inode_size}"));
        }
        let groups = (sb.blocks_count - sb.first_data_block).div_ceil(sb.blocks_per_group);
        if groups > MAX_GROUPS {
            return Err(MetaError::Unsupported(format!(
                "{name} superblock: {groups} block groups (at most {MAX_GROUPS} are read)"
            )));
        }
        // Both factors are bounded (2^22 groups, 2^19 inodes per group).
        let inodes = groups * sb.inodes_per_group;
        if inodes != u64::from(sb.inodes_count) {
            return Err(corrupt!(
                "{name} superblock: {} inodes, but {groups} groups of {} inodes make {inodes}",
                sb.inodes_count,
                sb.inodes_per_group
            ));
        }
        let bit64 = sb.incompat & INCOMPAT_64BIT != 0;
        let desc_size = if bit64 {
            let d = u64::from(sb.desc_size);
            if !(64..=MAX_DESC_SIZE).contains(&d) || !d.is_power_of_two() {
                return Err(corrupt!(
                    "{name} superblock: 64bit descriptor size {d} (must be a power of two from \
                     64 to {MAX_DESC_SIZE})"
                ));
            }
            d
        } else {
            32
        };
        let descs_per_block = block_size / desc_size;
        let gdt_blocks = groups.div_ceil(descs_per_block);
        // The resize inode maps reserved descriptor blocks through one indirect block.
        if sb.reserved_gdt_blocks > block_size / 4 {
            return Err(corrupt!(
                "{name} superblock: {} reserved descriptor blocks (at most {})",
                sb.reserved_gdt_blocks,
                block_size / 4
            ));
        }
        let meta_bg = sb.incompat & INCOMPAT_META_BG != 0;
        if meta_bg && sb.first_meta_bg > gdt_blocks {
            return Err(corrupt!(
                "{name} superblock: first meta_bg {} is beyond the {gdt_blocks} descriptor blocks",
                sb.first_meta_bg
            ));
        }
        let csum = if metadata_csum {
            DescCsum::Crc32c
        } else if sb.ro_compat & RO_COMPAT_GDT_CSUM != 0 {
            DescCsum::Crc16
        } else {
            DescCsum::None
        };
        let csum_seed = if sb.incompat & INCOMPAT_CSUM_SEED != 0 {
            sb.checksum_seed
        } else {
            crc32c(!0, &sb.uuid)
        };
        let needs_recovery = sb.incompat & INCOMPAT_RECOVER != 0;
        let journal = if sb.compat & COMPAT_HAS_JOURNAL == 0 {
            Journal::None
        } else if sb.journal_inum != 0 {
            if u64::from(sb.journal_inum) > inodes {
                return Err(corrupt!(
                    "{name} superblock: journal inode {} is beyond the {inodes} inodes",
                    sb.journal_inum
                ));
            }
            Journal::Inode(sb.journal_inum)
        } else {
            Journal::External
        };
        if journal == Journal::External && needs_recovery {
            return Err(MetaError::Unsupported(format!(
                "{name} superblock: needs recovery from an external journal (device 0x{:x}), \
                 which is not on this partition",
                sb.journal_dev
            )));
        }
        let mmp_block = if sb.incompat & INCOMPAT_MMP != 0 {
            if sb.mmp_block < sb.first_data_block || sb.mmp_block >= sb.blocks_count {
                return Err(corrupt!(
                    "{name} superblock: MMP block {} is outside the filesystem's {} blocks",
                    sb.mmp_block,
                    sb.blocks_count
                ));
            }
            Some(sb.mmp_block)
        } else {
            None
        };
        // Bounded: at most 8 * 64 KiB inodes of at most 64 KiB each, over 64 KiB blocks.
        let inode_table_blocks = (sb.inodes_per_group * inode_size).div_ceil(block_size);
        Ok(Self {
            name,
            block_size,
            blocks_count: sb.blocks_count,
            first_data_block: sb.first_data_block,
            blocks_per_group: sb.blocks_per_group,
            clusters_per_group: sb.clusters_per_group,
            cluster_ratio: 1 << (sb.log_cluster_size - sb.log_block_size),
            groups,
            inodes_per_group: sb.inodes_per_group,
            inodes_count: inodes,
            inode_size,
            inode_table_blocks,
            desc_size,
            descs_per_block,
            gdt_blocks,
            reserved_gdt_blocks: sb.reserved_gdt_blocks,
            first_meta_bg: sb.first_meta_bg,
            meta_bg,
            flex_bg: sb.incompat & INCOMPAT_FLEX_BG != 0,
            bit64,
            sparse_super: sb.ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
            sparse_super2: sb.compat & COMPAT_SPARSE_SUPER2 != 0,
            backup_bgs: sb.backup_bgs,
            csum,
            csum_seed,
            uuid: sb.uuid,
            sb_block: SB_OFFSET / block_size,
            journal,
            mmp_block,
        })
    }

    /// The first block of group `g` (`g < groups`).
    pub fn group_first(&self, g: u64) -> u64 {
        // g * blocks_per_group < blocks_count for every existing group.
        self.first_data_block
            .saturating_add(g.saturating_mul(self.blocks_per_group))
    }

    /// One past the last block of group `g` (the last group may be short).
    pub fn group_end(&self, g: u64) -> u64 {
        self.group_first(g)
            .saturating_add(self.blocks_per_group)
            .min(self.blocks_count)
    }

    /// Whether group `g` holds a superblock (and, outside meta_bg, a descriptor table copy).
    pub fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.sparse_super2 {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if g <= 1 || !self.sparse_super {
            return true;
        }
        g % 2 == 1 && (is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7))
    }

    /// Descriptor blocks stored after the superblock copy in a group laid out the old way.
    fn gdt_blocks_nometa(&self, g: u64) -> u64 {
        if !self.has_super(g) {
            0
        } else if self.meta_bg {
            self.first_meta_bg
        } else {
            self.gdt_blocks
        }
    }

    /// Whether group `g` holds one of its meta group's descriptor block copies (meta_bg:
    /// the first, second and last group of each meta group).
    fn has_meta_gdt(&self, g: u64) -> bool {
        let first = g - g % self.descs_per_block;
        g == first || g == first + 1 || g == first + self.descs_per_block - 1
    }

    /// The blocks at the start of group `g` that hold its superblock copy, descriptor
    /// blocks and reserved descriptor blocks, as `start..end` (empty when it has none).
    /// For group 0 this starts at block 0, so the boot block of a 1 KiB filesystem is in it.
    pub fn base_meta(&self, g: u64) -> (u64, u64) {
        let has_super = u64::from(self.has_super(g));
        let old_layout = !self.meta_bg || g / self.descs_per_block < self.first_meta_bg;
        let count = if old_layout {
            if has_super == 1 {
                1 + self.gdt_blocks_nometa(g) + self.reserved_gdt_blocks
            } else {
                0
            }
        } else {
            has_super + u64::from(self.has_meta_gdt(g))
        };
        if g == 0 {
            // The superblock is at byte 1024 whatever the first data block; what follows it
            // starts at the next block.
            (0, self.sb_block + count)
        } else {
            let first = self.group_first(g);
            (first, first.saturating_add(count))
        }
    }

    /// Where descriptor block `i` (of `gdt_blocks`) of the primary table is.
    pub fn desc_block(&self, i: u64) -> u64 {
        if !self.meta_bg || i < self.first_meta_bg {
            return self.sb_block + 1 + i;
        }
        let g = i.saturating_mul(self.descs_per_block);
        if g == 0 {
            return self.sb_block + 1;
        }
        self.group_first(g) + u64::from(self.has_super(g))
    }

    /// Whether the kernel honours BLOCK_UNINIT (only with descriptor checksums).
    pub fn has_desc_csum(&self) -> bool {
        self.csum != DescCsum::None
    }
}

/// Whether `n` (>= 1) is a power of `base`.
fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 {
        let q = n / base;
        if q * base != n {
            break;
        }
        n = q;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_backups_are_in_powers_of_3_5_7() {
        let with: Vec<u64> = (0..130)
            .filter(|&n| n <= 1 || is_power_of(n, 3) || is_power_of(n, 5) || is_power_of(n, 7))
            .collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
    }
}
