//! Reading one inode and mapping its blocks: used for the internal journal, whose blocks
//! count as metadata and whose log is read when it holds unreplayed transactions.
//!
//! Layout: `struct ext4_inode` (kernel Documentation/filesystems/ext4/inodes.rst), the
//! extent tree (ifork.rst: 12-byte header, index and leaf entries) and the ext2/3 block map
//! (12 direct, then single, double and triple indirect pointers).

use super::desc::DescReader;
use super::superblock::Fs;
use crate::read::le;
use crate::{corrupt, MetaError, Region};

/// Most blocks the journal inode may map: 2^26 blocks is 256 GiB at 4 KiB blocks, far above
/// the 10,240,000 blocks mke2fs allows a journal.
const MAX_FILE_BLOCKS: u64 = 1 << 26;
/// Most physically contiguous runs kept for one inode (24 bytes each: 6 MiB).
const MAX_RUNS: usize = 1 << 18;
/// Most extent-tree or indirect blocks read for one inode: a 10,240,000-block journal of
/// 1 KiB blocks mapped the ext3 way needs about 40,000.
const MAX_MAP_NODES: u64 = 1 << 17;
/// Deepest extent tree the kernel builds (`EXT4_MAX_EXTENT_DEPTH`).
const MAX_EXTENT_DEPTH: u16 = 5;

const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENT_HEADER: usize = 12;
const EXTENT_ENTRY: usize = 12;
/// `ee_len` above this marks an unwritten extent, whose length is `ee_len - 32768`.
const EXT_INIT_MAX_LEN: u16 = 32768;
/// `i_flags` bits.
const EXTENTS_FL: u32 = 0x80000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// `i_mode` file type bits, and the type of a regular file.
const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
/// `i_block`: 15 little-endian words at 0x28.
const I_BLOCK: usize = 0x28;
const I_BLOCK_LEN: usize = 60;

/// A physically contiguous run of a file: logical blocks `logical..logical+len` are at
/// `physical..physical+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
}

/// Where an inode's blocks are.
#[derive(Debug, Default)]
pub struct BlockMap {
    /// Data runs, sorted by logical block, not overlapping.
    pub runs: Vec<Run>,
    /// Blocks of the mapping itself (extent tree nodes, indirect blocks).
    pub tree_blocks: Vec<u64>,
    /// The file's length in blocks (`i_size` rounded up).
    pub len_blocks: u64,
}

impl BlockMap {
    /// The physical block of logical block `logical`, if mapped.
    pub fn physical(&self, logical: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.logical + r.len <= logical);
        let r = self.runs.get(i)?;
        (r.logical <= logical).then(|| r.physical + (logical - r.logical))
    }
}

/// Reads inode `ino` (1-based) and maps its blocks. `what` names the inode in messages.
pub fn map_inode(
    region: &Region,
    fs: &Fs,
    descs: &mut DescReader,
    ino: u64,
    what: &str,
) -> Result<BlockMap, MetaError> {
    let name = fs.name;
    if ino == 0 || ino > fs.inodes_count {
        return Err(corrupt!("{name} {what}: inode {ino} does not exist"));
    }
    let group = (ino - 1) / fs.inodes_per_group;
    let index = (ino - 1) % fs.inodes_per_group;
    let table = descs.get(group)?.inode_table;
    // The table was checked to lie inside the filesystem, and index < inodes_per_group.
    let offset = table * fs.block_size + index * fs.inode_size;
    let raw = region.read_vec("an ext inode", offset, fs.inode_size as usize)?;
    let mode = le::u16(&raw, 0)?;
    if mode & S_IFMT != S_IFREG {
        return Err(corrupt!(
            "{name} {what}: inode {ino} is not a regular file (mode 0o{mode:o})"
        ));
    }
    let size = u64::from(le::u32(&raw, 0x4)?) | u64::from(le::u32(&raw, 0x6C)?) << 32;
    let len_blocks = size.div_ceil(fs.block_size);
    if len_blocks > MAX_FILE_BLOCKS {
        return Err(MetaError::Unsupported(format!(
            "{name} {what}: inode {ino} is {len_blocks} blocks long (at most \
             {MAX_FILE_BLOCKS} are mapped)"
        )));
    }
    let flags = le::u32(&raw, 0x20)?;
    if flags & INLINE_DATA_FL != 0 {
        return Err(corrupt!("{name} {what}: inode {ino} has inline data"));
    }
    let i_block = raw
        .get(I_BLOCK..I_BLOCK + I_BLOCK_LEN)
        .ok_or_else(|| corrupt!("{name} {what}: inode {ino} is too short"))?;
    let mut m = Mapper {
        region,
        fs,
        what,
        ino,
        nodes: 0,
        map: BlockMap {
            len_blocks,
            ..BlockMap::default()
        },
    };
    if flags & EXTENTS_FL != 0 {
        m.extent_node(i_block, None, 0)?;
    } else {
        m.indirect_root(i_block)?;
    }
    Ok(m.map)
}

struct Mapper<'m, 'a> {
    region: &'m Region<'a>,
    fs: &'m Fs,
    what: &'m str,
    ino: u64,
    nodes: u64,
    map: BlockMap,
}

impl Mapper<'_, '_> {
    /// Checks that `start..start+len` is inside the filesystem.
    fn check_blocks(&self, start: u64, len: u64, kind: &str) -> Result<(), MetaError> {
        let fs = self.fs;
        if start < fs.first_data_block || start.checked_add(len).is_none_or(|e| e > fs.blocks_count)
        {
            return Err(corrupt!(
                "{} {}: inode {} {kind} at block {start} (length {len}) is outside the \
                 filesystem's {} blocks",
                fs.name,
                self.what,
                self.ino,
                fs.blocks_count
            ));
        }
        Ok(())
    }

    /// Reads a mapping block (extent node or indirect block), counting it.
    fn read_node(&mut self, block: u64, kind: &str) -> Result<Vec<u8>, MetaError> {
        self.check_blocks(block, 1, kind)?;
        self.nodes += 1;
        if self.nodes > MAX_MAP_NODES {
            return Err(MetaError::Unsupported(format!(
                "{} {}: inode {} has more than {MAX_MAP_NODES} mapping blocks",
                self.fs.name, self.what, self.ino
            )));
        }
        self.map.tree_blocks.push(block);
        self.region.read_vec(
            "an ext mapping block",
            block * self.fs.block_size,
            self.fs.block_size as usize,
        )
    }

    fn push(&mut self, logical: u64, physical: u64, len: u64) -> Result<(), MetaError> {
        if len == 0 || logical >= self.map.len_blocks {
            return Ok(());
        }
        self.check_blocks(physical, len, "data")?;
        if let Some(last) = self.map.runs.last_mut() {
            if logical < last.logical + last.len {
                return Err(corrupt!(
                    "{} {}: inode {} maps logical block {logical} twice or out of order",
                    self.fs.name,
                    self.what,
                    self.ino
                ));
            }
            if last.logical + last.len == logical && last.physical + last.len == physical {
                last.len += len;
                return Ok(());
            }
        }
        if self.map.runs.len() >= MAX_RUNS {
            return Err(MetaError::Unsupported(format!(
                "{} {}: inode {} has more than {MAX_RUNS} fragments",
                self.fs.name, self.what, self.ino
            )));
        }
        self.map.runs.push(Run {
            logical,
            physical,
            len,
        });
        Ok(())
    }

    /// Walks an extent tree node (the inode's `i_block` at the root). `depth` is what the
    /// parent expects, `None` at the root.
    fn extent_node(&mut self, b: &[u8], depth: Option<u16>, level: u16) -> Result<(), MetaError> {
        let (name, what, ino) = (self.fs.name, self.what, self.ino);
        let magic = le::u16(b, 0)?;
        let entries = le::u16(b, 2)?;
        let max = le::u16(b, 4)?;
        let node_depth = le::u16(b, 6)?;
        let capacity = (b.len().saturating_sub(EXTENT_HEADER) / EXTENT_ENTRY) as u64;
        if magic != EXTENT_MAGIC
            || entries > max
            || u64::from(max) > capacity
            || node_depth > MAX_EXTENT_DEPTH
            || level > MAX_EXTENT_DEPTH
            || depth.is_some_and(|d| d != node_depth)
        {
            return Err(corrupt!(
                "{name} {what}: inode {ino} extent node (magic 0x{magic:04x}, {entries} of \
                 {max} entries, depth {node_depth}) is invalid"
            ));
        }
        for i in 0..usize::from(entries) {
            let at = EXTENT_HEADER + i * EXTENT_ENTRY;
            let logical = u64::from(le::u32(b, at)?);
            if node_depth == 0 {
                let raw_len = le::u16(b, at + 4)?;
                let len = if raw_len > EXT_INIT_MAX_LEN {
                    raw_len - EXT_INIT_MAX_LEN
                } else {
                    raw_len
                };
                let start = u64::from(le::u16(b, at + 6)?) << 32 | u64::from(le::u32(b, at + 8)?);
                self.push(logical, start, u64::from(len))?;
            } else {
                let child = u64::from(le::u32(b, at + 4)?) | u64::from(le::u16(b, at + 8)?) << 32;
                let node = self.read_node(child, "extent node")?;
                self.extent_node(&node, Some(node_depth - 1), level + 1)?;
            }
        }
        Ok(())
    }

    /// Walks the ext2/3 block map in `i_block`.
    fn indirect_root(&mut self, i_block: &[u8]) -> Result<(), MetaError> {
        let per = self.fs.block_size / 4;
        for i in 0..12u64 {
            let p = u64::from(le::u32(i_block, i as usize * 4)?);
            if p != 0 {
                self.push(i, p, 1)?;
            }
        }
        let mut logical = 12u64;
        let mut span = per;
        for (slot, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
            if logical >= self.map.len_blocks {
                break;
            }
            let p = u64::from(le::u32(i_block, slot * 4)?);
            if p != 0 {
                self.indirect(p, level, logical)?;
            }
            logical = logical.saturating_add(span);
            span = span.saturating_mul(per);
        }
        Ok(())
    }

    /// Walks an indirect block of `level` (1 = pointers to data) covering logical blocks
    /// from `logical`.
    fn indirect(&mut self, block: u64, level: u32, logical: u64) -> Result<(), MetaError> {
        let node = self.read_node(block, "indirect block")?;
        let per = self.fs.block_size / 4;
        let child_span = per.saturating_pow(level - 1);
        for i in 0..per {
            let at = logical.saturating_add(i.saturating_mul(child_span));
            if at >= self.map.len_blocks {
                break;
            }
            let p = u64::from(le::u32(&node, i as usize * 4)?);
            if p == 0 {
                continue;
            }
            if level == 1 {
                self.push(at, p, 1)?;
            } else {
                self.indirect(p, level - 1, at)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_logical_to_physical() {
        let m = BlockMap {
            runs: vec![
                Run {
                    logical: 0,
                    physical: 100,
                    len: 10,
                },
                Run {
                    logical: 12,
                    physical: 500,
                    len: 4,
                },
            ],
            tree_blocks: vec![],
            len_blocks: 16,
        };
        assert_eq!(m.physical(0), Some(100));
        assert_eq!(m.physical(9), Some(109));
        assert_eq!(m.physical(10), None);
        assert_eq!(m.physical(13), Some(501));
        assert_eq!(m.physical(16), None);
    }
}
