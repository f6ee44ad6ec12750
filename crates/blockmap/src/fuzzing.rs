//! Fuzz entry points: ordinary functions that the fuzz workspace (`fuzz/`, cargo-fuzz) calls,
//! and that the unit tests below run on the seeds in `fuzz/seeds/blockmap`, so the seeds are
//! checked in every CI.
//!
//! Each takes any bytes and must not panic. Beyond that, each checks the contracts its
//! parsers document: what they return lies inside the disk or partition they were given.
#![cfg(any(feature = "fuzzing", test))]

use std::io::BufReader;

use crate::bitmap::{self, Format};
use crate::fs::{self, FsKind};
use crate::table::read_table;
use crate::{map_disk as map, ExtentSet, Region};

/// The filesystem a [`filesystem`] input's first byte selects (modulo the length).
pub const FS_KINDS: [FsKind; 10] = [
    FsKind::Ext2,
    FsKind::Ext3,
    FsKind::Ext4,
    FsKind::Xfs,
    FsKind::Fat12,
    FsKind::Fat16,
    FsKind::Fat32,
    FsKind::Ntfs,
    FsKind::Swap,
    FsKind::LvmPv,
];

/// The filesystems each `fs_*` fuzz target reads: the kinds one parser module handles.
pub const FS_FAMILIES: [(&str, &[FsKind]); 4] = [
    ("ext", &[FsKind::Ext2, FsKind::Ext3, FsKind::Ext4]),
    ("xfs", &[FsKind::Xfs]),
    ("fat", &[FsKind::Fat12, FsKind::Fat16, FsKind::Fat32]),
    ("ntfs", &[FsKind::Ntfs]),
];

/// Disk sizes the text formats are parsed against: one ordinary, one at the top of the range
/// (offsets and lengths near 2^64 must be refused, not wrapped).
const TEXT_DISK_SIZES: [u64; 2] = [1 << 30, u64::MAX];
/// Era block sizes: the common one, and an odd multiple of 512.
const ERA_BLOCK_SIZES: [u64; 2] = [64 << 10, 3 * 512];

#[track_caller]
fn assert_inside(set: &ExtentSet, size: u64, what: &str) {
    if let Some(last) = set.as_slice().last() {
        assert!(
            last.offset.checked_add(last.len).is_some_and(|e| e <= size),
            "{what}: extent {}+{} ends past {size}",
            last.offset,
            last.len
        );
    }
}

/// `data` as a whole disk, through [`crate::map_disk`]: the table, then each partition's
/// filesystem. Checks that partitions lie inside the disk, in order and without overlapping,
/// that what is sent lies inside the disk, and that a partition sent whole (no filesystem
/// found, or metadata that failed a check) is in it whole.
pub fn map_disk(data: &[u8]) {
    let disk = data.to_vec();
    let size = disk.len() as u64;
    let m = map(&disk);
    assert_eq!(m.size, size);
    assert_inside(&m.used, size, "the disk map");
    let mut next = 0u64;
    for p in &m.partitions {
        let end = p.start.checked_add(p.len);
        assert!(
            end.is_some_and(|e| e <= size),
            "partition {} at {}+{} is outside the {size}-byte disk",
            p.number,
            p.start,
            p.len
        );
        assert!(
            p.start >= next,
            "partition {} at {} overlaps the one before (ends at {next})",
            p.number,
            p.start
        );
        next = p.start + p.len;
        assert!(
            p.used_bytes <= p.len,
            "partition {} uses more than it has",
            p.number
        );
        if p.len > 0 && (p.fallback.is_some() || p.fs.is_none()) {
            assert!(
                m.used.contains(p.start, p.len),
                "partition {} is sent whole but the map misses part of it",
                p.number
            );
        }
    }
}

/// `data` as a whole disk, through the partition-table readers alone (GPT, then MBR). A table
/// they accept keeps the promises of [`crate::Table`]: partitions of non-zero length, inside
/// the disk, in order, overlapping neither each other nor the table's own sectors, which lie
/// inside the disk too.
pub fn partitions(data: &[u8]) {
    let disk = data.to_vec();
    let size = disk.len() as u64;
    let Ok(Some(table)) = read_table(&disk) else {
        return;
    };
    assert_inside(&table.metadata, size, "the table's metadata");
    let mut next = 0u64;
    for p in &table.partitions {
        assert!(p.len > 0, "partition {} is empty", p.number);
        assert!(
            p.start >= next && p.start.checked_add(p.len).is_some_and(|e| e <= size),
            "partition {} at {}+{} is outside the disk or overlaps the one before",
            p.number,
            p.start,
            p.len
        );
        next = p.start + p.len;
        assert!(
            table.metadata.clip(p.start, next).is_empty(),
            "partition {} overlaps the table",
            p.number
        );
    }
}

/// The input of [`filesystem`] (its selector byte is skipped) through the parsers of one
/// family (an entry of [`FS_FAMILIES`]): [`fs::probe`], then [`fs::used`] for every kind of
/// the family. What `used` returns must lie inside the partition.
pub fn filesystem_family(family: &[FsKind], data: &[u8]) {
    let Some((_, partition)) = data.split_first() else {
        return;
    };
    let partition = partition.to_vec();
    let region = Region::whole(&partition);
    let _ = fs::probe(&region);
    for &kind in family {
        if let Ok(used) = fs::used(kind, &region) {
            assert_inside(&used, region.len(), kind.name());
        }
    }
}

/// First byte: the filesystem ([`FS_KINDS`], modulo its length); the rest: the partition.
/// Runs [`fs::probe`], then [`fs::used`] for the selected kind (whatever the probe found, so
/// every parser sees every input) and for the probed kind. What `used` returns must lie
/// inside the partition.
pub fn filesystem(data: &[u8]) {
    let Some((&selector, partition)) = data.split_first() else {
        return;
    };
    let kind = FS_KINDS[usize::from(selector) % FS_KINDS.len()];
    let partition = partition.to_vec();
    let region = Region::whole(&partition);
    let probed = fs::probe(&region);
    let mut kinds = vec![kind];
    if let Ok(Some(found)) = probed {
        if found != kind {
            kinds.push(found);
        }
    }
    for k in kinds {
        if let Ok(used) = fs::used(k, &region) {
            assert_inside(&used, region.len(), k.name());
        }
    }
}

/// Runs the three change-bitmap parsers (and the sniffing `read_any`) on `data`. The native
/// parser is given the device size its header claims, so that it gets past that check; a
/// native bitmap it accepts must be written back byte for byte by `write_native`. Every
/// change set must lie inside its disk.
pub fn bitmap(data: &[u8]) {
    let claimed = data
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .map_or(data.len() as u64, u64::from_le_bytes);
    if let Ok((header, changed)) = bitmap::read_native(data, claimed) {
        assert_eq!(header.device_size, claimed);
        assert_inside(&changed, claimed, "native bitmap");
        let mut again = Vec::new();
        bitmap::write_native(&mut again, header, &changed).expect("writing to a Vec");
        assert_eq!(again, data, "a native bitmap does not round-trip");
    }
    for size in TEXT_DISK_SIZES {
        for era in ERA_BLOCK_SIZES {
            if let Ok(changed) = bitmap::read_era_xml(data, era, size) {
                assert_inside(&changed, size, "era block list");
            }
        }
        if let Ok(changed) = bitmap::read_extent_list(data, size) {
            assert_inside(&changed, size, "extent list");
        }
        // Through a small buffer, so that sniffing sees only the first bytes and the parsers
        // read across buffer refills.
        let reader = BufReader::with_capacity(16, data);
        let any = bitmap::read_any(reader, size, Some(ERA_BLOCK_SIZES[0]));
        if let Ok(changed) = any {
            assert_inside(&changed, size, "read_any");
            if bitmap::sniff(data) == Format::Native {
                assert_eq!(size, claimed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn seed_dir(sub: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/seeds/blockmap")
            .join(sub)
    }

    /// Every seed file in one directory, by name (at least `min` of them, each at most
    /// 64 KiB plus one selector byte).
    fn seeds(sub: &str, min: usize) -> Vec<(String, Vec<u8>)> {
        let dir = seed_dir(sub);
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        out.sort();
        assert!(out.len() >= min, "{}: {} seeds", dir.display(), out.len());
        for (name, bytes) in &out {
            assert!(bytes.len() <= (64 << 10) + 1, "{name} is over 64 KiB");
        }
        out
    }

    /// The filesystem seeds: the selector byte, then a (possibly truncated) real image.
    #[test]
    fn filesystem_seeds() {
        for (name, bytes) in seeds("fs", 10) {
            filesystem(&bytes);
            // The selector byte matches the file name, and the image is recognised as it.
            let kind = FS_KINDS[usize::from(bytes[0]) % FS_KINDS.len()];
            assert!(name.starts_with(kind.name()), "{name}: selects {kind:?}");
            let image = bytes[1..].to_vec();
            let found = fs::probe(&Region::whole(&image));
            assert_eq!(found, Ok(Some(kind)), "{name}");
            // Complete images are mapped; truncated ones (`*_head`) are refused, not guessed.
            let used = fs::used(kind, &Region::whole(&image));
            if name.contains("_head") {
                assert!(used.is_err(), "{name}: {used:?}");
            } else {
                let used = used.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(used.total() > 0, "{name}");
            }
            // Every other parser on the same bytes, and the image as a whole disk.
            for selector in 0..FS_KINDS.len() as u8 {
                let mut other = vec![selector];
                other.extend_from_slice(&image);
                filesystem(&other);
            }
            map_disk(&image);
            partitions(&image);
            for (_, family) in FS_FAMILIES {
                filesystem_family(family, &bytes);
            }
            // Each seed is read by its family's target.
            assert!(
                FS_FAMILIES.iter().any(|(_, f)| f.contains(&kind))
                    || matches!(kind, FsKind::Swap | FsKind::LvmPv),
                "{name}"
            );
        }
    }

    /// The disk seeds: partitioned images, each with a filesystem or two inside.
    #[test]
    fn map_disk_seeds() {
        let mut tables = 0;
        for (name, bytes) in seeds("disk", 4) {
            map_disk(&bytes);
            partitions(&bytes);
            tables += usize::from(matches!(read_table(&bytes), Ok(Some(_))));
            let m = crate::map_disk(&bytes);
            assert!(!m.partitions.is_empty(), "{name}: {m:?}");
            for selector in 0..FS_KINDS.len() as u8 {
                let mut other = vec![selector];
                other.extend_from_slice(&bytes);
                filesystem(&other);
            }
        }
        // MBR, GPT, GPT with a small entry array: tables the partition target starts from.
        assert!(tables >= 3, "{tables} seeds hold a partition table");
    }

    #[test]
    fn bitmap_seeds() {
        let all = seeds("bitmap", 4);
        for (name, bytes) in &all {
            bitmap(bytes);
            // Each seed is a valid change set in its format.
            let size = match bitmap::sniff(bytes) {
                Format::Native => u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
                _ => 1 << 30,
            };
            let got = bitmap::read_any(&bytes[..], size, Some(64 << 10));
            assert!(got.is_ok(), "{name}: {got:?}");
        }
        // Cut short, each is refused or still inside the disk, and never panics.
        for (_, bytes) in &all {
            for n in 0..bytes.len() {
                bitmap(&bytes[..n]);
            }
        }
    }

    /// Inputs that made a fuzz target fail once (fuzz/regressions/TARGET/, one file each,
    /// named for what they exercise), through its entry point again.
    #[test]
    fn regressions() {
        let family = |name: &str| FS_FAMILIES.iter().find(|(n, _)| *n == name).unwrap().1;
        type Entry<'a> = (&'a str, &'a dyn Fn(&[u8]));
        let targets: [Entry; 7] = [
            ("partitions", &partitions),
            ("blockmap", &map_disk),
            ("bitmap", &bitmap),
            ("fs_ext", &|d| filesystem_family(family("ext"), d)),
            ("fs_xfs", &|d| filesystem_family(family("xfs"), d)),
            ("fs_fat", &|d| filesystem_family(family("fat"), d)),
            ("fs_ntfs", &|d| filesystem_family(family("ntfs"), d)),
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
        let mut ran = 0;
        for (target, run) in targets {
            let Ok(files) = std::fs::read_dir(dir.join(target)) else {
                continue;
            };
            for file in files {
                run(&std::fs::read(file.unwrap().path()).unwrap());
                ran += 1;
            }
        }
        assert!(ran > 0, "no regression inputs in {}", dir.display());
    }

    /// A GPT whose backup header lies past the end of a truncated disk, with the last
    /// partition where a backup at the real end would be: the partition is kept, and the
    /// sectors sent for the backup are only those outside it (found by the fuzzer: the table
    /// claimed the partition's sectors as its own).
    #[test]
    fn gpt_on_a_truncated_disk_keeps_its_last_partition() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/partitions");
        let disk = std::fs::read(dir.join("gpt_backup_past_end")).unwrap();
        let table = read_table(&disk).unwrap().unwrap();
        assert_eq!(table.partitions.len(), 2);
        let last = &table.partitions[1];
        assert!(table
            .metadata
            .clip(last.start, last.start + last.len)
            .is_empty());
        assert!(table.warnings[0].contains("past the end of the disk"));
        // What is left of the backup's place is still sent: from the partition's end on.
        let end = last.start + last.len;
        assert!(table
            .metadata
            .contains(end, disk.len() as u64 / 512 * 512 - end));
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for n in 0..600 {
            let data = vec![0xa5u8; n];
            map_disk(&data);
            partitions(&data);
            filesystem(&data);
            for (_, family) in FS_FAMILIES {
                filesystem_family(family, &data);
            }
            bitmap(&data);
        }
    }
}
