//! One allocation group's free space: its AGF header and the by-block-number free-space
//! B+tree the AGF roots.
//!
//! Layouts from "XFS Algorithms & Data Structures" (chapters "AG Free Space Management" and
//! "B+trees", short-format blocks) and the kernel's `xfs_format.h`. Big-endian except CRCs.

use super::sb::Superblock;
use crate::crc32c;
use crate::read::be;
use crate::{corrupt, MetaError, Region};

/// `agf_magicnum`: "XAGF".
const AGF_MAGIC: u32 = 0x5841_4746;
/// `agf_versionnum`: the only version there is.
const AGF_VERSION: u32 = 1;
/// Where the AGF keeps its CRC (`agf_crc`, v5).
const AGF_CRC_OFF: usize = 216;
/// Bytes of the v5 AGFL header (magic, seqno, uuid, lsn, crc) before its block array.
const AGFL_V5_HEADER: u32 = 36;

/// By-block-number free-space B+tree block magics: "AB3B" (v5, CRC) and "ABTB" (v4).
const BNOBT_MAGIC_V5: u32 = 0x4142_3342;
const BNOBT_MAGIC_V4: u32 = 0x4142_5442;
/// By-size free-space B+tree block magics: "AB3C" (v5) and "ABTC" (v4).
const CNTBT_MAGIC_V5: u32 = 0x4142_3343;
const CNTBT_MAGIC_V4: u32 = 0x4142_5443;
/// Short-format B+tree block header sizes: v4 has magic, level, numrecs and the two siblings;
/// v5 adds blkno, lsn, uuid, owner and crc.
const SBLOCK_HEADER_V4: usize = 16;
const SBLOCK_HEADER_V5: usize = 56;
/// Where a v5 short-format block keeps its CRC (`bb_crc`).
const SBLOCK_CRC_OFF: usize = 52;
/// A null AG block pointer (`NULLAGBLOCK`): no sibling.
const NULL_AGBLOCK: u32 = 0xffff_ffff;
/// A free-space record and a key: (startblock, blockcount), 4 bytes each.
const REC_LEN: usize = 8;
/// A node's child pointer: an AG block number.
const PTR_LEN: usize = 4;
/// Deepest free-space B+tree accepted. XFS computes its own limit from the geometry; for
/// the largest AG (2^31 blocks) and the smallest blocks (512 bytes) it stays below 9, the
/// historical `XFS_BTREE_MAXLEVELS`.
pub const MAX_LEVELS: usize = 9;

/// The two free-space B+trees of an AG: the same free extents, indexed by block number and
/// by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// By block number ("bnobt"): records in increasing start block.
    ByBlock,
    /// By size ("cntbt"): records in increasing (length, start block).
    BySize,
}

impl Tree {
    fn name(self) -> &'static str {
        match self {
            Self::ByBlock => "by-block free-space B+tree",
            Self::BySize => "by-size free-space B+tree",
        }
    }

    fn magic(self, crc: bool) -> u32 {
        match (self, crc) {
            (Self::ByBlock, true) => BNOBT_MAGIC_V5,
            (Self::ByBlock, false) => BNOBT_MAGIC_V4,
            (Self::BySize, true) => CNTBT_MAGIC_V5,
            (Self::BySize, false) => CNTBT_MAGIC_V4,
        }
    }

    /// The sort key of a record or key (start block, length): what must strictly increase.
    /// The by-block tree compares start blocks only (its keys' length field is not kept up
    /// to date by every kernel path).
    fn key(self, start: u32, count: u32) -> u64 {
        match self {
            Self::ByBlock => u64::from(start),
            Self::BySize => u64::from(count) << 32 | u64::from(start),
        }
    }

    /// Index into the AGF's `agf_roots` / `agf_levels`.
    fn slot(self) -> usize {
        match self {
            Self::ByBlock => 0,
            Self::BySize => 1,
        }
    }
}

/// What the AGF says about its AG's free space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agf {
    /// Roots of the by-block and by-size trees (indexed by [`Tree::slot`]) and their heights
    /// (levels, >= 1).
    pub roots: [u32; 2],
    pub levels: [u32; 2],
    /// Blocks on the AG free list (reserved for B+tree growth; not in the free trees).
    pub flcount: u32,
    /// Free blocks recorded in the free-space trees.
    pub freeblks: u32,
    /// The longest free extent.
    pub longest: u32,
}

/// Reads and checks the AGF of allocation group `agno`.
pub fn read_agf(region: &Region, sb: &Superblock, agno: u32) -> Result<Agf, MetaError> {
    let sector = sb.sector_size as usize; // <= 32 KiB, checked by the superblock
    let at = sb
        .ag_offset(agno)
        .checked_add(u64::from(sb.sector_size))
        .ok_or_else(|| corrupt!("xfs AG {agno}: AGF offset overflows"))?;
    let b = region.read_vec("an xfs AGF", at, sector)?;
    let magic = be::u32(&b, 0)?;
    if magic != AGF_MAGIC {
        return Err(corrupt!("xfs AG {agno} AGF: bad magic {magic:#010x}"));
    }
    if sb.has_crc() && !crc32c::verify(&b, AGF_CRC_OFF) {
        return Err(corrupt!(
            "xfs AG {agno} AGF: CRC mismatch (stored {:#010x})",
            crate::read::le::u32(&b, AGF_CRC_OFF)?
        ));
    }
    let ag_len = sb.ag_len(agno);
    let version = be::u32(&b, 4)?;
    let seqno = be::u32(&b, 8)?;
    let length = be::u32(&b, 12)?;
    let roots = [be::u32(&b, 16)?, be::u32(&b, 20)?];
    let levels = [be::u32(&b, 28)?, be::u32(&b, 32)?];
    let flfirst = be::u32(&b, 40)?;
    let fllast = be::u32(&b, 44)?;
    let flcount = be::u32(&b, 48)?;
    let freeblks = be::u32(&b, 52)?;
    let longest = be::u32(&b, 56)?;
    if version != AGF_VERSION {
        return Err(corrupt!("xfs AG {agno} AGF: version {version}"));
    }
    if seqno != agno {
        return Err(corrupt!("xfs AG {agno} AGF: sequence number {seqno}"));
    }
    if length != ag_len {
        return Err(corrupt!(
            "xfs AG {agno} AGF: length {length} blocks, the superblock says {ag_len}"
        ));
    }
    if sb.has_crc() && b.get(64..80) != Some(&sb.meta_uuid[..]) {
        return Err(corrupt!(
            "xfs AG {agno} AGF: UUID differs from the superblock's"
        ));
    }
    for tree in [Tree::ByBlock, Tree::BySize] {
        let (root, height) = (roots[tree.slot()], levels[tree.slot()]);
        if height == 0 || height as usize > MAX_LEVELS {
            return Err(corrupt!(
                "xfs AG {agno} AGF: {} height {height} is outside 1..={MAX_LEVELS}",
                tree.name()
            ));
        }
        if root < sb.header_blocks() || root >= ag_len {
            return Err(corrupt!(
                "xfs AG {agno} AGF: {} root at block {root} is outside the AG's blocks \
                 {}..{ag_len}",
                tree.name(),
                sb.header_blocks()
            ));
        }
    }
    let agfl_slots = if sb.has_crc() {
        (sb.sector_size - AGFL_V5_HEADER) / 4
    } else {
        sb.sector_size / 4
    };
    if flcount > agfl_slots || flfirst >= agfl_slots || fllast >= agfl_slots {
        return Err(corrupt!(
            "xfs AG {agno} AGF: free list first {flfirst}, last {fllast}, count {flcount} do not \
             fit its {agfl_slots} slots"
        ));
    }
    if freeblks > ag_len || longest > freeblks || (freeblks > 0 && longest == 0) {
        return Err(corrupt!(
            "xfs AG {agno} AGF: {freeblks} free blocks, longest extent {longest}, in an AG of \
             {ag_len} blocks"
        ));
    }
    Ok(Agf {
        roots,
        levels,
        flcount,
        freeblks,
        longest,
    })
}

/// What a walk of a free-space tree found, for the cross-checks.
#[derive(Debug, Default)]
pub struct Walk {
    /// Records (free extents).
    pub records: u64,
    /// Free blocks in all records.
    pub free_blocks: u64,
    /// The longest free extent.
    pub longest: u32,
    /// An order-independent digest of the records: both trees must hold the same extents.
    pub digest: u64,
    /// Tree blocks visited (every one of them must be in use).
    pub tree_blocks: Vec<u32>,
}

impl Walk {
    fn add(&mut self, start: u32, count: u32) {
        self.records += 1;
        self.free_blocks += u64::from(count);
        self.longest = self.longest.max(count);
        self.digest = self
            .digest
            .wrapping_add(mix(u64::from(start) << 32 | u64::from(count)));
    }
}

/// A 64-bit mixing function (splitmix64's finaliser): sums of it over two lists of records
/// differ, with overwhelming likelihood, unless the lists hold the same records.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One B+tree block on the walk's path from the root.
struct Frame {
    agbno: u32,
    level: u16,
    numrecs: usize,
    /// The next key/pointer to descend into (nodes only).
    next: usize,
    block: Vec<u8>,
}

/// Walks free-space tree `tree` of AG `agno` in key order, calling `on_free` with each free
/// extent (start block in the AG, length in blocks).
///
/// Checks every block (magic, CRC, block number, owner, UUID, level, record count, siblings)
/// and every record (inside the AG and after its headers, in strictly increasing key order;
/// in the by-block tree also not overlapping), and that parent keys match their children. At
/// most `ag_len` blocks are visited and the depth is the AGF's height (at most
/// [`MAX_LEVELS`]), so a corrupt tree cannot loop.
pub fn walk(
    region: &Region,
    sb: &Superblock,
    agno: u32,
    agf: &Agf,
    tree: Tree,
    mut on_free: impl FnMut(u32, u32),
) -> Result<Walk, MetaError> {
    let ag_len = sb.ag_len(agno);
    let first_data = sb.header_blocks();
    let levels = agf.levels[tree.slot()] as usize; // 1..=MAX_LEVELS, checked by read_agf
    let magic = tree.magic(sb.has_crc());
    let header = if sb.has_crc() {
        SBLOCK_HEADER_V5
    } else {
        SBLOCK_HEADER_V4
    };
    let bs = sb.block_size as usize;
    let leaf_max = (bs - header) / REC_LEN;
    let node_max = (bs - header) / (REC_LEN + PTR_LEN);
    let name = tree.name();

    let mut walk = Walk::default();
    // The last block seen at each level and its right sibling, to check the sibling chains.
    let mut last_at: [Option<(u32, u32)>; MAX_LEVELS] = [None; MAX_LEVELS];
    // The previous record's key, and (by-block tree) where the previous extent ended.
    let mut prev_key: Option<u64> = None;
    let mut free_end = first_data;
    let mut stack: Vec<Frame> = Vec::with_capacity(levels);

    let visit = |agbno: u32,
                 level: usize,
                 parent_key: Option<u64>,
                 walk: &mut Walk,
                 last_at: &mut [Option<(u32, u32)>; MAX_LEVELS]|
     -> Result<Frame, MetaError> {
        let what = format!("xfs AG {agno} {name} block {agbno} (level {level})");
        if agbno < first_data || agbno >= ag_len {
            return Err(corrupt!(
                "{what}: outside the AG's blocks {first_data}..{ag_len}"
            ));
        }
        if walk.tree_blocks.len() >= ag_len as usize {
            return Err(corrupt!(
                "xfs AG {agno} {name}: more blocks than the AG's {ag_len}"
            ));
        }
        walk.tree_blocks.push(agbno);
        let offset = sb.ag_offset(agno) + u64::from(agbno) * u64::from(sb.block_size);
        let block = region.read_vec("an xfs free-space B+tree block", offset, bs)?;
        let got_magic = be::u32(&block, 0)?;
        if got_magic != magic {
            return Err(corrupt!("{what}: bad magic {got_magic:#010x}"));
        }
        if sb.has_crc() {
            if !crc32c::verify(&block, SBLOCK_CRC_OFF) {
                return Err(corrupt!("{what}: CRC mismatch"));
            }
            let daddr = be::u64(&block, 16)?;
            if daddr.checked_mul(512) != Some(offset) {
                return Err(corrupt!("{what}: says it is at sector {daddr}"));
            }
            if block.get(32..48) != Some(&sb.meta_uuid[..]) {
                return Err(corrupt!("{what}: UUID differs from the superblock's"));
            }
            let owner = be::u32(&block, 48)?;
            if owner != agno {
                return Err(corrupt!("{what}: owned by AG {owner}"));
            }
        }
        let got_level = be::u16(&block, 4)?;
        if usize::from(got_level) != level {
            return Err(corrupt!("{what}: says it is at level {got_level}"));
        }
        let numrecs = usize::from(be::u16(&block, 6)?);
        let max = if level == 0 { leaf_max } else { node_max };
        if numrecs > max || (numrecs == 0 && (level > 0 || parent_key.is_some())) {
            return Err(corrupt!(
                "{what}: {numrecs} records (at most {max}, empty only as a leaf root)"
            ));
        }
        let left = be::u32(&block, 8)?;
        let right = be::u32(&block, 12)?;
        for sib in [left, right] {
            if sib != NULL_AGBLOCK && (sib < first_data || sib >= ag_len || sib == agbno) {
                return Err(corrupt!(
                    "{what}: sibling pointer {sib} is not a block of the AG"
                ));
            }
        }
        // The chain at this level must run left to right through exactly the blocks the walk
        // meets, in the order it meets them.
        let slot = last_at
            .get_mut(level)
            .ok_or_else(|| corrupt!("{what}: too deep"))?;
        match *slot {
            None if left != NULL_AGBLOCK => {
                return Err(corrupt!(
                    "{what}: first block of its level has a left sibling {left}"
                ));
            }
            Some((prev, prev_right)) if prev_right != agbno || left != prev => {
                return Err(corrupt!(
                    "{what}: sibling chain broken (previous block {prev} points right to \
                     {prev_right}, this one left to {left})"
                ));
            }
            _ => {}
        }
        *slot = Some((agbno, right));
        if let Some(key) = parent_key {
            let low = tree.key(be::u32(&block, header)?, be::u32(&block, header + 4)?);
            if low != key {
                return Err(corrupt!(
                    "{what}: first key {low:#x}, its parent's key says {key:#x}"
                ));
            }
        }
        Ok(Frame {
            agbno,
            level: got_level,
            numrecs,
            next: 0,
            block,
        })
    };

    let root = visit(
        agf.roots[tree.slot()],
        levels - 1,
        None,
        &mut walk,
        &mut last_at,
    )?;
    stack.push(root);
    while let Some(top) = stack.last_mut() {
        if top.level == 0 {
            for i in 0..top.numrecs {
                let at = header + i * REC_LEN;
                let start = be::u32(&top.block, at)?;
                let count = be::u32(&top.block, at + 4)?;
                let end = u64::from(start) + u64::from(count);
                let key = tree.key(start, count);
                let in_order =
                    prev_key.is_none_or(|p| key > p) && (tree == Tree::BySize || start >= free_end);
                if count == 0 || start < first_data || end > u64::from(ag_len) || !in_order {
                    return Err(corrupt!(
                        "xfs AG {agno} {name} block {} record {i}: free extent {start}+{count} \
                         is empty, out of order, overlaps the one before, or is not inside the \
                         AG's blocks {first_data}..{ag_len}",
                        top.agbno
                    ));
                }
                prev_key = Some(key);
                free_end = start + count; // <= ag_len, checked just above
                walk.add(start, count);
                on_free(start, count);
            }
            stack.pop();
            continue;
        }
        if top.next >= top.numrecs {
            stack.pop();
            continue;
        }
        let i = top.next;
        top.next += 1;
        let at = header + i * REC_LEN;
        let key = tree.key(be::u32(&top.block, at)?, be::u32(&top.block, at + 4)?);
        if i > 0 {
            let before = header + (i - 1) * REC_LEN;
            let prev = tree.key(
                be::u32(&top.block, before)?,
                be::u32(&top.block, before + 4)?,
            );
            if key <= prev {
                return Err(corrupt!(
                    "xfs AG {agno} {name} node {}: keys out of order at {i}",
                    top.agbno
                ));
            }
        }
        let ptr = be::u32(&top.block, header + node_max * REC_LEN + i * PTR_LEN)?;
        let child_level = usize::from(top.level) - 1;
        let child = visit(ptr, child_level, Some(key), &mut walk, &mut last_at)?;
        stack.push(child);
    }
    for (level, last) in last_at.iter().take(levels).enumerate() {
        match last {
            Some((_, NULL_AGBLOCK)) => {}
            Some((agbno, right)) => {
                return Err(corrupt!(
                    "xfs AG {agno} {name} block {agbno} (level {level}): last of its level but \
                     has a right sibling {right}"
                ));
            }
            None => {
                return Err(corrupt!("xfs AG {agno} {name}: no block at level {level}"));
            }
        }
    }
    Ok(walk)
}
