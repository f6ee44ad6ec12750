//! ext2, ext3 and ext4: the blocks in use are those marked in each group's block bitmap,
//! plus every block of metadata whether a bitmap marks it or not (superblock and its
//! backups, descriptor tables, reserved descriptor blocks, bitmaps, inode tables, the MMP
//! block and the internal journal), plus blocks that committed but unreplayed journal
//! transactions allocate.
//!
//! Handled: 1 to 64 KiB blocks, bigalloc (bitmap bits are clusters), 32-byte and 64bit
//! descriptors, flex_bg, meta_bg, sparse_super and sparse_super2, resize_inode, BLOCK_UNINIT
//! groups (bitmap computed from the metadata that lives in the group, as the kernel does),
//! descriptor checksums (crc16 `gdt_csum`, crc32c `metadata_csum`) and block bitmap
//! checksums, and a journal that needs recovery (see [`journal`]).
//!
//! Refused ([`MetaError::Unsupported`]): external journal devices, an external journal that
//! needs recovery, fast-commit journals that need recovery, snapshots (`has_snapshot`),
//! compression and any feature flag this reader does not know. Refused as corrupt: anything
//! that fails a check, including a filesystem marked as having errors.
//!
//! Memory: one block bitmap and one descriptor block at a time, plus the metadata extents
//! (a few per group) and the journal's map; the result is built in block order.
//!
//! Layout reference: the kernel's Documentation/filesystems/ext4 (blockgroup.rst,
//! super.rst, group_descr.rst, bitmaps.rst, journal.rst).

mod crc;
mod desc;
mod inode;
mod journal;
mod superblock;

use desc::DescReader;
use superblock::{Fs, Journal, Superblock, SB_OFFSET, SB_SIZE};

use crate::fs::FsKind;
use crate::{corrupt, ExtentSet, MetaError, Region};

/// Recognises an ext2/3/4 superblock: magic and sane geometry (block size, group sizes,
/// first data block). A filesystem larger than its partition is still recognised, so that
/// [`used`] can say so.
pub fn probe(region: &Region) -> Result<Option<FsKind>, MetaError> {
    Ok(read_superblock(region)?.map(|sb| sb.kind))
}

fn read_superblock(region: &Region) -> Result<Option<Superblock>, MetaError> {
    if region.len() < SB_OFFSET + SB_SIZE as u64 {
        return Ok(None);
    }
    let mut buf = [0u8; SB_SIZE];
    region.read("the ext superblock", &mut buf, SB_OFFSET)?;
    Superblock::parse(&buf)
}

/// The bytes in use, relative to the region, at block (cluster with bigalloc) granularity.
pub fn used(region: &Region) -> Result<ExtentSet, MetaError> {
    let sb = read_superblock(region)?
        .ok_or_else(|| corrupt!("ext superblock: no valid superblock at byte {SB_OFFSET}"))?;
    let fs = Fs::new(&sb, region.len())?;
    let mut descs = DescReader::new(region, &fs);

    // Pass 1: every descriptor (checksums and locations checked), and where all metadata is.
    let mut meta = MetaList::default();
    for g in 0..fs.groups {
        let (start, end) = fs.base_meta(g);
        if end > fs.group_end(g) {
            return Err(corrupt!(
                "{} group {g}: its superblock copy and descriptor blocks ({start}..{end}) do not \
                 fit in the group ({}..{})",
                fs.name,
                fs.group_first(g),
                fs.group_end(g)
            ));
        }
        meta.push(Meta::Base, start, end - start);
        let d = descs.get(g)?;
        meta.push(Meta::BlockBitmap, d.block_bitmap, 1);
        meta.push(Meta::InodeBitmap, d.inode_bitmap, 1);
        meta.push(Meta::InodeTable, d.inode_table, fs.inode_table_blocks);
    }
    if let Some(b) = fs.mmp_block {
        meta.push(Meta::Other, b, 1);
    }
    let copies = match fs.journal {
        Journal::Inode(ino) => {
            let map = inode::map_inode(region, &fs, &mut descs, u64::from(ino), "journal")?;
            for r in &map.runs {
                meta.push(Meta::Other, r.physical, r.len);
            }
            for &b in &map.tree_blocks {
                meta.push(Meta::Other, b, 1);
            }
            journal::logged_copies(region, &fs, &map)?
        }
        Journal::None | Journal::External => Vec::new(),
    };
    let meta = meta.into_set(fs.name)?;

    // Pass 2: each group's bitmap (read, or computed for BLOCK_UNINIT), with logged copies
    // ORed in, must mark the group's metadata; its runs are the result.
    let bs = fs.block_size;
    let mut out = ExtentSet::new();
    // The boot block and the superblock, also when blocks are 1 KiB and block 0 is in no group.
    out.insert(0, SB_OFFSET + SB_SIZE as u64);
    let mut bitmap = vec![0u8; bs as usize];
    let mut copy = vec![0u8; bs as usize];
    let mut meta_at = 0usize;
    let ratio = fs.cluster_ratio;
    for g in 0..fs.groups {
        let d = descs.get(g)?;
        let first = fs.group_first(g);
        let end = fs.group_end(g);
        let units = (end - first).div_ceil(ratio);
        let uninit = d.block_uninit(&fs);
        let logged = journal::copies_of(&copies, d.block_bitmap);
        if uninit {
            bitmap.fill(0);
        } else {
            region.read("an ext block bitmap", &mut bitmap, d.block_bitmap * bs)?;
            if fs.csum == superblock::DescCsum::Crc32c && logged.is_empty() {
                check_bitmap_csum(&fs, g, &d, &bitmap)?;
            }
        }
        for c in logged {
            c.read(region, &fs, &mut copy)?;
            for (b, l) in bitmap.iter_mut().zip(&copy) {
                *b |= *l;
            }
        }
        // The metadata inside this group: computed into an uninit bitmap, required of a
        // read one. An extent may run on into the next group, so it is kept for that one.
        let extents = meta.as_slice();
        while let Some(e) = extents.get(meta_at) {
            if e.offset >= end {
                break;
            }
            let from = e.offset.max(first);
            let to = e.end().min(end);
            let mut b = from;
            while b < to {
                let unit = (b - first) / ratio;
                if uninit {
                    set_bit(&mut bitmap, unit);
                } else if !bit(&bitmap, unit) {
                    return Err(corrupt!(
                        "{} group {g} block bitmap (block {}): metadata block {b} is not marked \
                         in use",
                        fs.name,
                        d.block_bitmap
                    ));
                }
                // Next cluster.
                b = first + (unit + 1) * ratio;
            }
            if e.end() > end {
                break;
            }
            meta_at += 1;
        }
        for_each_run(&bitmap, units, |a, z| {
            let start = first + a * ratio;
            let stop = (first + z * ratio).min(end);
            out.insert(start * bs, (stop - start) * bs);
        });
    }
    Ok(out)
}

/// Kinds of metadata, each listed apart so that the runs flex_bg packs together (the block
/// bitmaps of 16 groups, then their inode bitmaps, then their inode tables) merge as they
/// are listed: a few entries per flex group rather than per group.
#[derive(Clone, Copy)]
enum Meta {
    Base,
    BlockBitmap,
    InodeBitmap,
    InodeTable,
    Other,
}

/// Block ranges of metadata, merged with the previous range of the same kind when adjacent.
#[derive(Default)]
struct MetaList {
    lists: [Vec<(u64, u64)>; 5],
}

impl MetaList {
    fn push(&mut self, kind: Meta, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let list = &mut self.lists[kind as usize];
        if let Some(last) = list.last_mut() {
            if last.0.saturating_add(last.1) == start {
                last.1 += len;
                return;
            }
        }
        list.push((start, len));
    }

    /// The blocks of all of them, as a set of block numbers. No block may hold two things
    /// (two groups' bitmaps in one block, an inode table over the journal): that is
    /// corruption, and a bitmap shared by two groups could hide one group's blocks.
    fn into_set(self, name: &str) -> Result<ExtentSet, MetaError> {
        let mut all: Vec<(u64, u64)> = self.lists.into_iter().flatten().collect();
        all.sort_unstable();
        let mut set = ExtentSet::new();
        let mut end = 0u64;
        for (start, len) in all {
            if start < end {
                return Err(corrupt!(
                    "{name} metadata: block {start} holds two structures (bitmaps, inode \
                     tables, descriptors or journal overlap)"
                ));
            }
            end = start.saturating_add(len);
            set.insert(start, len);
        }
        Ok(set)
    }
}

/// The kernel's `ext4_block_bitmap_csum_verify`: CRC32C of the bitmap's used bytes.
fn check_bitmap_csum(fs: &Fs, g: u64, d: &desc::GroupDesc, bitmap: &[u8]) -> Result<(), MetaError> {
    let used = bitmap
        .get(..(fs.clusters_per_group / 8) as usize)
        .unwrap_or(bitmap);
    let mut want = crc::crc32c(fs.csum_seed, used);
    if fs.desc_size < 0x3A {
        want &= 0xFFFF;
    }
    if !crate::checksum_ok(d.block_bitmap_csum, want) {
        return Err(corrupt!(
            "{} group {g} block bitmap (block {}): checksum 0x{:08x} does not match the \
             computed 0x{want:08x}",
            fs.name,
            d.block_bitmap,
            d.block_bitmap_csum
        ));
    }
    Ok(())
}

fn bit(bitmap: &[u8], i: u64) -> bool {
    bitmap
        .get((i / 8) as usize)
        .is_some_and(|b| b >> (i % 8) & 1 == 1)
}

fn set_bit(bitmap: &mut [u8], i: u64) {
    if let Some(b) = bitmap.get_mut((i / 8) as usize) {
        *b |= 1 << (i % 8);
    }
}

/// Calls `f(a, z)` for every run `a..z` of set bits among the first `n` bits.
fn for_each_run(bitmap: &[u8], n: u64, mut f: impl FnMut(u64, u64)) {
    let mut run: Option<u64> = None;
    let mut emit = |a: u64, z: u64| {
        let z = z.min(n);
        if a < z {
            f(a, z);
        }
    };
    for (i, &byte) in bitmap.iter().enumerate() {
        let base = i as u64 * 8;
        if base >= n {
            break;
        }
        match byte {
            0x00 => {
                if let Some(a) = run.take() {
                    emit(a, base);
                }
            }
            0xFF => {
                run.get_or_insert(base);
            }
            _ => {
                for j in 0..8 {
                    let set = byte >> j & 1 == 1;
                    match (set, run) {
                        (true, None) => run = Some(base + j),
                        (false, Some(a)) => {
                            emit(a, base + j);
                            run = None;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if let Some(a) = run {
        emit(a, n);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn runs(bits: &[u8], n: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        for_each_run(bits, n, |a, z| v.push((a, z)));
        v
    }

    #[test]
    fn finds_runs_of_set_bits() {
        assert_eq!(runs(&[0xFF, 0xFF], 16), [(0, 16)]);
        assert_eq!(runs(&[0xFF, 0xFF], 12), [(0, 12)]);
        assert_eq!(
            runs(&[0b0000_0110, 0x00, 0x80, 0xFF], 32),
            [(1, 3), (23, 32)]
        );
        assert_eq!(runs(&[0xF0, 0x0F], 16), [(4, 12)]);
        assert_eq!(runs(&[0x00, 0x01], 8), []);
        assert_eq!(runs(&[], 8), []);
        let mut b = [0u8; 4];
        set_bit(&mut b, 9);
        set_bit(&mut b, 100);
        assert!(bit(&b, 9) && !bit(&b, 8) && !bit(&b, 100));
    }
}
