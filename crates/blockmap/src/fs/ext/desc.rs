//! Block group descriptors: read one descriptor block at a time, checksums verified, and
//! the locations they point at checked against the filesystem.
//!
//! Layout: `struct ext4_group_desc` (kernel Documentation/filesystems/ext4/group_descr.rst),
//! 32 bytes, or `s_desc_size` bytes with `64bit` (the `_hi` halves from offset 0x20).

use super::crc::{crc16, crc32c};
use super::superblock::{DescCsum, Fs};
use crate::read::le;
use crate::{corrupt, MetaError, Region};

/// `bg_flags`: the block bitmap is not initialised on disk (it must be computed).
pub const BG_BLOCK_UNINIT: u16 = 0x2;
/// Offset of `bg_checksum`.
const CHECKSUM_OFFSET: usize = 0x1E;
/// `bg_block_bitmap_csum_hi` ends here: descriptors at least this long carry all 32 bits of
/// the block bitmap checksum.
const BLOCK_BITMAP_CSUM_HI_END: u64 = 0x3A;

/// One group's descriptor, the fields this module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u64,
    pub flags: u16,
    /// The stored block bitmap checksum (16 bits unless the descriptor is long enough).
    pub block_bitmap_csum: u32,
}

impl GroupDesc {
    fn parse(fs: &Fs, b: &[u8]) -> Result<Self, MetaError> {
        let lo32 = |at| le::u32(b, at).map(u64::from);
        let lo16 = |at| le::u16(b, at).map(u64::from);
        let long = fs.bit64 && fs.desc_size >= 64;
        let hi32 = |at| if long { lo32(at) } else { Ok(0) };
        let hi16 = |at| if long { lo16(at) } else { Ok(0) };
        let mut block_bitmap_csum = u32::from(le::u16(b, 0x18)?);
        if fs.desc_size >= BLOCK_BITMAP_CSUM_HI_END {
            block_bitmap_csum |= u32::from(le::u16(b, 0x38)?) << 16;
        }
        Ok(Self {
            block_bitmap: lo32(0x0)? | hi32(0x20)? << 32,
            inode_bitmap: lo32(0x4)? | hi32(0x24)? << 32,
            inode_table: lo32(0x8)? | hi32(0x28)? << 32,
            free_blocks: lo16(0xC)? | hi16(0x2C)? << 16,
            flags: le::u16(b, 0x12)?,
            block_bitmap_csum,
        })
    }

    /// Whether the block bitmap is to be computed rather than read.
    pub fn block_uninit(&self, fs: &Fs) -> bool {
        fs.has_desc_csum() && self.flags & BG_BLOCK_UNINIT != 0
    }
}

/// The checksum a descriptor should carry, or `None` when the filesystem has none.
pub(super) fn desc_checksum(fs: &Fs, group: u64, b: &[u8]) -> Option<u16> {
    // Group numbers are below 2^22, so they fit the on-disk 32 bits.
    let le_group = (group as u32).to_le_bytes();
    let head = b.get(..CHECKSUM_OFFSET)?;
    let tail = b.get(CHECKSUM_OFFSET + 2..).unwrap_or_default();
    match fs.csum {
        DescCsum::None => None,
        DescCsum::Crc32c => {
            let mut c = crc32c(fs.csum_seed, &le_group);
            c = crc32c(c, head);
            c = crc32c(c, &[0, 0]);
            c = crc32c(c, tail);
            Some((c & 0xFFFF) as u16)
        }
        DescCsum::Crc16 => {
            let mut c = crc16(!0, &fs.uuid);
            c = crc16(c, &le_group);
            c = crc16(c, head);
            if fs.bit64 {
                c = crc16(c, tail);
            }
            Some(c)
        }
    }
}

/// Reads group descriptors in order (or any order), one descriptor block at a time.
pub struct DescReader<'r, 'a> {
    region: &'r Region<'a>,
    fs: &'r Fs,
    buf: Vec<u8>,
    loaded: Option<u64>,
}

impl<'r, 'a> DescReader<'r, 'a> {
    pub fn new(region: &'r Region<'a>, fs: &'r Fs) -> Self {
        Self {
            region,
            fs,
            // A block is at most 64 KiB (checked by the superblock).
            buf: vec![0; fs.block_size as usize],
            loaded: None,
        }
    }

    /// Group `g`'s descriptor, checksum verified (`g < groups`).
    pub fn get(&mut self, g: u64) -> Result<GroupDesc, MetaError> {
        let fs = self.fs;
        let index = g / fs.descs_per_block;
        if self.loaded != Some(index) {
            let block = fs.desc_block(index);
            if block >= fs.blocks_count {
                return Err(corrupt!(
                    "{} descriptor block {index} would be at block {block}, outside the \
                     filesystem's {} blocks",
                    fs.name,
                    fs.blocks_count
                ));
            }
            self.loaded = None;
            self.region.read(
                "an ext descriptor block",
                &mut self.buf,
                block * fs.block_size,
            )?;
            self.loaded = Some(index);
        }
        // desc_size * descs_per_block <= block_size.
        let at = ((g % fs.descs_per_block) * fs.desc_size) as usize;
        let raw = self
            .buf
            .get(at..at + fs.desc_size as usize)
            .ok_or_else(|| corrupt!("{} group {g} descriptor: outside its block", fs.name))?;
        if let Some(want) = desc_checksum(fs, g, raw) {
            let have = le::u16(raw, CHECKSUM_OFFSET)?;
            if !crate::checksum_ok(have, want) {
                return Err(corrupt!(
                    "{} group {g} descriptor: checksum 0x{have:04x} does not match the computed \
                     0x{want:04x}",
                    fs.name
                ));
            }
        }
        let d = GroupDesc::parse(fs, raw)?;
        check_locations(fs, g, &d)?;
        Ok(d)
    }
}

/// The kernel's `ext4_check_descriptors`: bitmaps and inode table inside the filesystem
/// (inside their own group without flex_bg), clear of the superblock and descriptor table,
/// and a free count no larger than the group.
fn check_locations(fs: &Fs, g: u64, d: &GroupDesc) -> Result<(), MetaError> {
    let name = fs.name;
    let (lo, hi) = if fs.flex_bg {
        (fs.first_data_block, fs.blocks_count)
    } else {
        (fs.group_first(g), fs.group_end(g))
    };
    let (_, base_end) = fs.base_meta(0);
    for (what, start, len) in [
        ("block bitmap", d.block_bitmap, 1),
        ("inode bitmap", d.inode_bitmap, 1),
        ("inode table", d.inode_table, fs.inode_table_blocks),
    ] {
        let end = start.checked_add(len);
        if start < lo || end.is_none_or(|e| e > hi) {
            let place = if fs.flex_bg {
                format!("the filesystem's {} blocks", fs.blocks_count)
            } else {
                format!("its group (blocks {lo}..{hi})")
            };
            return Err(corrupt!(
                "{name} group {g} descriptor: {what} at block {start} (length {len}) is \
                 outside {place}"
            ));
        }
        if start < base_end {
            return Err(corrupt!(
                "{name} group {g} descriptor: {what} at block {start} overlaps the superblock \
                 and descriptor table (blocks 0..{base_end})"
            ));
        }
    }
    let units = (fs.group_end(g) - fs.group_first(g)).div_ceil(fs.cluster_ratio);
    if d.free_blocks > units {
        return Err(corrupt!(
            "{name} group {g} descriptor: {} free clusters in a group of {units}",
            d.free_blocks
        ));
    }
    Ok(())
}
