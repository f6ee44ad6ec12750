//! MBR partition tables: four primary entries in sector 0, and logical partitions in a chain
//! of extended boot records (EBRs) inside one extended partition.
//!
//! Layout of sector 0 (and of every EBR), 512 bytes:
//!
//! ```text
//!   0..446  boot code (ignored)
//! 446..510  four 16-byte entries:  0 status (0x00 or 0x80)   1..4 CHS start (ignored)
//!                                  4 type (0 = empty)         5..8 CHS end (ignored)
//!                                  8..12 first LBA (LE)       12..16 sector count (LE)
//! 510..512  0x55 0xAA
//! ```
//!
//! In an EBR, entry 1 is a logical partition whose first LBA is relative to the EBR, entry 2
//! links to the next EBR, relative to the start of the extended partition; entries 3 and 4
//! are empty. LBAs are 512-byte sectors (an MBR has no field for the sector size; disks with
//! 4096-byte logical sectors use GPT in practice).

use crate::read::le;
use crate::table::{Partition, Table, TableKind};
use crate::{corrupt, ExtentSet, MetaError, ReadAt, Region};

/// The MBR's unit: LBAs count 512-byte sectors.
pub(super) const SECTOR: u64 = 512;
/// Where the four entries start in the sector.
const ENTRIES_AT: usize = 446;
/// The size of one entry.
const ENTRY_LEN: usize = 16;
/// Where the 0x55 0xAA boot signature sits.
const SIGNATURE_AT: usize = 510;
/// Partition type of an empty entry.
const TYPE_EMPTY: u8 = 0x00;
/// Partition type of a GPT protective entry.
pub(super) const TYPE_GPT_PROTECTIVE: u8 = 0xee;
/// Partition types of an extended partition (CHS, LBA, Linux).
const TYPES_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
/// Number of the first logical partition, as tools show it.
const FIRST_LOGICAL: u32 = 5;
/// The most EBRs walked in one chain. Linux tools stop far below this (fdisk allows 60
/// logical partitions); a longer chain is treated as corrupt rather than followed.
const MAX_EBRS: usize = 128;

/// One 16-byte entry, as stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub status: u8,
    pub kind: u8,
    pub first_lba: u32,
    pub sectors: u32,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.kind == TYPE_EMPTY
    }

    fn is_extended(&self) -> bool {
        TYPES_EXTENDED.contains(&self.kind)
    }

    /// A boot flag other than 0x00/0x80 means the bytes are not a partition entry (boot code
    /// of a filesystem's boot sector, say).
    fn status_is_valid(&self) -> bool {
        self.status == 0x00 || self.status == 0x80
    }
}

/// True when `sector` ends in the 0x55 0xAA boot signature.
pub(super) fn has_signature(sector: &[u8]) -> bool {
    sector.get(SIGNATURE_AT..SIGNATURE_AT + 2) == Some(&[0x55, 0xaa][..])
}

/// The four entries of an MBR or EBR sector.
pub(super) fn entries(sector: &[u8]) -> Result<[Entry; 4], MetaError> {
    let mut out = [Entry {
        status: 0,
        kind: 0,
        first_lba: 0,
        sectors: 0,
    }; 4];
    for (i, e) in out.iter_mut().enumerate() {
        let at = ENTRIES_AT + i * ENTRY_LEN;
        let b = sector
            .get(at..at + ENTRY_LEN)
            .ok_or_else(|| corrupt!("MBR sector too short for entry {}", i + 1))?;
        *e = Entry {
            status: b.first().copied().unwrap_or(0),
            kind: b.get(4).copied().unwrap_or(0),
            first_lba: le::u32(b, 8)?,
            sectors: le::u32(b, 12)?,
        };
    }
    Ok(out)
}

/// True when sector 0 is a (protective or hybrid) MBR with a GPT protective entry.
pub(super) fn is_protective(sector0: &[u8]) -> bool {
    has_signature(sector0)
        && entries(sector0).is_ok_and(|es| {
            es.iter()
                .any(|e| e.kind == TYPE_GPT_PROTECTIVE && e.status_is_valid())
        })
}

/// True when sector 0 holds an MBR with at least one entry that is neither empty nor a GPT
/// protective entry, and no protective entry: a disk partitioned the MBR way.
pub(super) fn has_plain_partitions(sector0: &[u8]) -> bool {
    has_signature(sector0)
        && !is_protective(sector0)
        && entries(sector0).is_ok_and(|es| {
            es.iter()
                .any(|e| !e.is_empty() && e.status_is_valid() && e.sectors > 0)
        })
}

/// The type, for people: `0x83 Linux`, or `0xNN` for types without a name here.
fn type_name(kind: u8) -> String {
    let name = match kind {
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "NTFS/exFAT",
        0x0b => "FAT32",
        0x0c => "FAT32 LBA",
        0x0e => "FAT16 LBA",
        0x0f => "Extended LBA",
        0x27 => "Hidden NTFS WinRE",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xee => "GPT protective",
        0xef => "EFI System",
        0xfd => "Linux RAID",
        _ => return format!("0x{kind:02x}"),
    };
    format!("0x{kind:02x} {name}")
}

/// A byte range that must not overlap another, with its name for the error.
struct Span {
    first: u64,
    /// One past the last sector.
    end: u64,
    name: String,
}

/// Fails when two spans overlap.
fn check_overlaps(spans: &mut [Span]) -> Result<(), MetaError> {
    spans.sort_by_key(|s| (s.first, s.end));
    for w in spans.windows(2) {
        if let [a, b] = w {
            if b.first < a.end {
                return Err(corrupt!(
                    "MBR: {} (sectors {}..{}) overlaps {} (sectors {}..{})",
                    a.name,
                    a.first,
                    a.end,
                    b.name,
                    b.first,
                    b.end
                ));
            }
        }
    }
    Ok(())
}

/// Reads the MBR of `disk`: `Ok(None)` when sector 0 is not a partition table (no boot
/// signature, no entries, or entries that are clearly not entries), `Err` when it is one
/// that cannot be trusted.
pub fn read(disk: &dyn ReadAt) -> Result<Option<Table>, MetaError> {
    let whole = Region::whole(disk);
    if whole.len() < SECTOR {
        return Ok(None);
    }
    let disk_sectors = whole.len() / SECTOR;
    let mut sector0 = [0u8; SECTOR as usize];
    whole.read("the MBR", &mut sector0, 0)?;
    if !has_signature(&sector0) {
        return Ok(None);
    }
    let primary = entries(&sector0)?;
    let used: Vec<(u32, &Entry)> = (1u32..)
        .zip(primary.iter())
        .filter(|(_, e)| !e.is_empty())
        .collect();
    if used.is_empty() {
        return Ok(None);
    }
    let valid = used.iter().filter(|(_, e)| e.status_is_valid()).count();
    if valid == 0 {
        // The boot sector of something else (a filesystem, a boot loader) also ends in
        // 0x55AA; without one plausible entry it is not a partition table.
        return Ok(None);
    }
    if let Some((n, e)) = used.iter().find(|(_, e)| !e.status_is_valid()) {
        return Err(corrupt!(
            "MBR entry {n} has boot flag 0x{:02x} (not 0x00 or 0x80) while other entries look valid",
            e.status
        ));
    }
    if let Some((n, _)) = used.iter().find(|(_, e)| e.kind == TYPE_GPT_PROTECTIVE) {
        return Err(corrupt!(
            "protective MBR (entry {n} has type 0xee) but no valid GPT"
        ));
    }

    let mut partitions = Vec::new();
    let mut metadata = ExtentSet::range(0, SECTOR);
    let mut spans = Vec::new();
    let mut extended = None;
    for &(n, e) in &used {
        let what = format!("MBR partition {n} ({})", type_name(e.kind));
        let (first, end) = check_entry(&what, e, 0, (1, disk_sectors), "the disk")?;
        spans.push(Span {
            first,
            end,
            name: what.clone(),
        });
        if e.is_extended() {
            if extended.is_some() {
                return Err(MetaError::Unsupported(format!(
                    "MBR has more than one extended partition ({what} is another)"
                )));
            }
            extended = Some((first, end));
        } else {
            partitions.push(partition(n, first, end, e.kind)?);
        }
    }
    check_overlaps(&mut spans)?;

    if let Some((ext_first, ext_end)) = extended {
        let ebrs = read_logical(&whole, ext_first, ext_end, &mut partitions)?;
        let mut spans: Vec<Span> = partitions
            .iter()
            .filter(|p| p.number >= FIRST_LOGICAL)
            .map(|p| Span {
                first: p.start / SECTOR,
                end: p.start.saturating_add(p.len) / SECTOR,
                name: format!("logical partition {} ({})", p.number, p.type_name),
            })
            .collect();
        for &lba in &ebrs {
            metadata.insert(lba.saturating_mul(SECTOR), SECTOR);
            spans.push(Span {
                first: lba,
                end: lba.saturating_add(1),
                name: format!("the EBR at LBA {lba}"),
            });
        }
        check_overlaps(&mut spans)?;
    }

    partitions.sort_by_key(|p| p.start);
    Ok(Some(Table {
        kind: TableKind::Mbr,
        partitions,
        metadata,
        warnings: Vec::new(),
    }))
}

/// Checks one entry whose first LBA is relative to `base` and which must lie inside
/// `min .. max` (absolute sectors); returns its absolute first sector and end.
fn check_entry(
    what: &str,
    e: &Entry,
    base: u64,
    (min, max): (u64, u64),
    within: &str,
) -> Result<(u64, u64), MetaError> {
    if e.first_lba == 0 {
        return Err(corrupt!("{what} starts at relative LBA 0"));
    }
    if e.sectors == 0 {
        return Err(corrupt!("{what} has length 0"));
    }
    // u32 + u32 + u64 base: cannot overflow u64 unless base is near the top, so check anyway.
    let first = base
        .checked_add(u64::from(e.first_lba))
        .ok_or_else(|| corrupt!("{what}: start overflows"))?;
    let end = first
        .checked_add(u64::from(e.sectors))
        .ok_or_else(|| corrupt!("{what}: end overflows"))?;
    if first < min || end > max {
        return Err(corrupt!(
            "{what} (sectors {first}..{end}) is outside {within} (sectors {min}..{max})"
        ));
    }
    Ok((first, end))
}

/// A partition from checked sector bounds.
fn partition(number: u32, first: u64, end: u64, kind: u8) -> Result<Partition, MetaError> {
    let start = first
        .checked_mul(SECTOR)
        .ok_or_else(|| corrupt!("MBR partition {number}: start overflows"))?;
    let len = end
        .saturating_sub(first)
        .checked_mul(SECTOR)
        .ok_or_else(|| corrupt!("MBR partition {number}: length overflows"))?;
    Ok(Partition {
        number,
        start,
        len,
        type_name: type_name(kind),
    })
}

/// Walks the EBR chain of the extended partition `ext_first .. ext_end` (sectors), adding the
/// logical partitions to `out`; returns the LBAs of the EBRs read.
fn read_logical(
    disk: &Region,
    ext_first: u64,
    ext_end: u64,
    out: &mut Vec<Partition>,
) -> Result<Vec<u64>, MetaError> {
    let mut ebrs: Vec<u64> = Vec::new();
    let mut number = FIRST_LOGICAL;
    let mut next = Some(ext_first);
    while let Some(lba) = next.take() {
        if ebrs.contains(&lba) {
            return Err(corrupt!("MBR: the EBR chain loops back to LBA {lba}"));
        }
        if ebrs.len() >= MAX_EBRS {
            return Err(corrupt!(
                "MBR: the EBR chain is longer than {MAX_EBRS} links"
            ));
        }
        if lba < ext_first || lba >= ext_end {
            return Err(corrupt!(
                "MBR: EBR at LBA {lba} is outside the extended partition (sectors {ext_first}..{ext_end})"
            ));
        }
        let mut sector = [0u8; SECTOR as usize];
        let offset = lba
            .checked_mul(SECTOR)
            .ok_or_else(|| corrupt!("MBR: EBR LBA {lba} overflows"))?;
        disk.read("an EBR", &mut sector, offset)?;
        let first_in_chain = ebrs.is_empty();
        ebrs.push(lba);
        if !has_signature(&sector) {
            if first_in_chain && sector.iter().all(|&b| b == 0) {
                // An extended partition that never held a logical partition.
                break;
            }
            return Err(corrupt!("MBR: EBR at LBA {lba} has no 0x55AA signature"));
        }
        let [logical, link, rest @ ..] = entries(&sector)?;
        if let Some(i) = rest.iter().position(|e| !e.is_empty()) {
            return Err(MetaError::Unsupported(format!(
                "MBR: EBR at LBA {lba} uses entry {} (only entries 1 and 2 are read)",
                i + 3
            )));
        }
        if !logical.is_empty() {
            let what = format!(
                "logical partition {number} ({}) in the EBR at LBA {lba}",
                type_name(logical.kind)
            );
            if !logical.status_is_valid() {
                return Err(corrupt!("{what} has boot flag 0x{:02x}", logical.status));
            }
            if logical.is_extended() {
                return Err(corrupt!("{what} is an extended partition"));
            }
            let (first, end) = check_entry(
                &what,
                &logical,
                lba,
                (ext_first, ext_end),
                "the extended partition",
            )?;
            out.push(partition(number, first, end, logical.kind)?);
            number = number.saturating_add(1);
        }
        if link.is_empty() {
            break;
        }
        if !link.is_extended() {
            return Err(corrupt!(
                "MBR: EBR at LBA {lba} links to type 0x{:02x}, not an extended partition",
                link.kind
            ));
        }
        if link.first_lba == 0 {
            return Err(corrupt!(
                "MBR: the EBR chain loops back to LBA {ext_first} (a link at LBA {lba} points to the start)"
            ));
        }
        let (first, _) = check_entry(
            &format!("the EBR link at LBA {lba}"),
            &link,
            ext_first,
            (ext_first, ext_end),
            "the extended partition",
        )?;
        next = Some(first);
    }
    Ok(ebrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::gpt::tests::{
        disk, read_at, resize, run, sectors_of, sfdisk_partitions, write_at,
    };
    use crate::table::read_table;
    use crate::testutil::{expect_corrupt, sparse_image as image, Rng};
    use std::path::{Path, PathBuf};

    /// An image of `size` bytes partitioned by `sfdisk` from `script`.
    fn sfdisk_image(dir: &Path, size: u64, script: &str) -> PathBuf {
        let path = image(dir, "mbr.img", size);
        run("sfdisk", &["-q", path.to_str().unwrap()], Some(script));
        path
    }

    /// Primary 1, 2, an extended partition with logical 5 and 6 (the brief's layout).
    const SCRIPT: &str = "label: dos\n,16M,83\n,16M,82\n,,5\n,8M,83\n,8M,83\n";

    /// The partitions sfdisk sees, without the extended container (we do not map it).
    fn tool_partitions(path: &Path) -> Vec<(u32, u64, u64)> {
        sfdisk_partitions(path)
            .into_iter()
            .filter(|p| !["5", "f", "85"].contains(&p.3.as_str()))
            .map(|p| (p.0, p.1, p.2))
            .collect()
    }

    /// Writes a 16-byte entry into slot `slot` (0-3) of the sector at `lba`, and the boot
    /// signature.
    fn put(img: &mut [u8], lba: u64, slot: usize, status: u8, kind: u8, first: u32, len: u32) {
        let s = (lba * SECTOR) as usize;
        let e = s + ENTRIES_AT + slot * ENTRY_LEN;
        img[e] = status;
        img[e + 4] = kind;
        img[e + 8..e + 12].copy_from_slice(&first.to_le_bytes());
        img[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
        img[s + SIGNATURE_AT] = 0x55;
        img[s + SIGNATURE_AT + 1] = 0xaa;
    }

    /// A disk of `sectors` sectors whose extended partition (entry 1, from LBA 2048) holds a
    /// chain of `logical` EBRs, each followed by a 2-sector logical partition, 4 sectors apart.
    fn chain(sectors: u64, logical: u32) -> Vec<u8> {
        let mut img = vec![0u8; (sectors * SECTOR) as usize];
        let ext_len = logical * 4 + 4;
        put(&mut img, 0, 0, 0, 0x05, 2048, ext_len);
        for k in 0..logical {
            let ebr = 2048 + u64::from(k) * 4;
            put(&mut img, ebr, 0, 0, 0x83, 1, 2);
            if k + 1 < logical {
                put(&mut img, ebr, 1, 0, 0x05, (k + 1) * 4, 4);
            }
        }
        img
    }

    #[test]
    fn reads_logical_partitions_like_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let path = sfdisk_image(dir.path(), 64 << 20, SCRIPT);
        let t = read(&disk(&path)).unwrap().expect("an MBR");
        assert_eq!(t.kind, TableKind::Mbr);
        assert!(t.warnings.is_empty());
        let want = tool_partitions(&path);
        assert_eq!(want.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 5, 6]);
        assert_eq!(sectors_of(&t), want);
        let names: Vec<&str> = t.partitions.iter().map(|p| p.type_name.as_str()).collect();
        assert_eq!(
            names,
            ["0x83 Linux", "0x82 Linux swap", "0x83 Linux", "0x83 Linux"]
        );
        // Sector 0 and the two EBRs; the extended partition's start holds the first EBR.
        let ext = sfdisk_partitions(&path)
            .into_iter()
            .find(|p| p.3 == "5")
            .unwrap();
        assert_eq!(t.metadata.total(), 3 * SECTOR);
        assert_eq!(t.metadata.len(), 3);
        assert!(t.metadata.contains(0, SECTOR));
        assert!(t.metadata.contains(ext.1 * SECTOR, SECTOR));
        // The second EBR sits before logical partition 6.
        let ebr2 = t.metadata.as_slice()[2].offset;
        assert!(ebr2 < t.partitions[3].start && ebr2 > t.partitions[2].start);
        // The same through the dispatcher (no GPT).
        assert_eq!(read_table(&disk(&path)).unwrap(), Some(t));
    }

    #[test]
    fn reads_many_logical_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let mut script = String::from("label: dos\n,4M,83\n,,5\n");
        for _ in 0..20 {
            script.push_str(",2M,83\n");
        }
        let path = sfdisk_image(dir.path(), 128 << 20, &script);
        let t = read(&disk(&path)).unwrap().unwrap();
        let want = tool_partitions(&path);
        assert_eq!(want.len(), 21);
        assert_eq!(sectors_of(&t), want);
        assert_eq!(t.metadata.len(), 21);
    }

    #[test]
    fn boot_flag_and_types_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = sfdisk_image(
            dir.path(),
            64 << 20,
            "label: dos\n,8M,ef,*\n,8M,7\n,8M,8e\n,8M,c\n",
        );
        let t = read(&disk(&path)).unwrap().unwrap();
        let names: Vec<&str> = t.partitions.iter().map(|p| p.type_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0xef EFI System",
                "0x07 NTFS/exFAT",
                "0x8e Linux LVM",
                "0x0c FAT32 LBA"
            ]
        );
        assert_eq!(sectors_of(&t), tool_partitions(&path));
        assert_eq!(type_name(0x42), "0x42");
    }

    #[test]
    fn empty_extended_partition_has_no_logical_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let path = sfdisk_image(dir.path(), 64 << 20, "label: dos\n,8M,83\n,16M,5\n");
        let t = read(&disk(&path)).unwrap().unwrap();
        assert_eq!(sectors_of(&t), tool_partitions(&path));
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.metadata.total(), 2 * SECTOR);
        // An extended partition whose first EBR was never written (all zero).
        let mut img = vec![0u8; 4 << 20];
        put(&mut img, 0, 0, 0, 0x0f, 2048, 2048);
        let t = read(&img).unwrap().unwrap();
        assert!(t.partitions.is_empty());
    }

    #[test]
    fn empty_table_and_no_signature_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = sfdisk_image(dir.path(), 8 << 20, "label: dos\n");
        assert_eq!(read(&disk(&path)).unwrap(), None);
        assert_eq!(read(&vec![0u8; 1 << 20]).unwrap(), None);
        assert_eq!(read(&vec![0u8; 10]).unwrap(), None);
        let mut img = chain(8192, 2);
        img[SIGNATURE_AT] = 0;
        assert_eq!(read(&img).unwrap(), None);
    }

    #[test]
    fn filesystem_boot_sectors_are_not_tables() {
        let dir = tempfile::tempdir().unwrap();
        let fat = image(dir.path(), "fat.img", 32 << 20);
        run("mkfs.vfat", &["-F", "32", fat.to_str().unwrap()], None);
        assert_eq!(read_at(&fat, 510, 2), [0x55, 0xaa]);
        assert_eq!(read(&disk(&fat)).unwrap(), None);
        let ntfs = image(dir.path(), "ntfs.img", 16 << 20);
        run(
            "mkfs.ntfs",
            &["-q", "-f", "-F", ntfs.to_str().unwrap()],
            None,
        );
        assert_eq!(read_at(&ntfs, 510, 2), [0x55, 0xaa]);
        assert_eq!(read(&disk(&ntfs)).unwrap(), None);
        // A boot sector whose code, where entries would be, has implausible boot flags.
        let mut img = vec![0u8; 1 << 20];
        img[..3].copy_from_slice(&[0xeb, 0x58, 0x90]);
        img[3..11].copy_from_slice(b"MSDOS5.0");
        for (i, b) in img[ENTRIES_AT..SIGNATURE_AT].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(0x11);
        }
        img[SIGNATURE_AT] = 0x55;
        img[SIGNATURE_AT + 1] = 0xaa;
        assert!(entries(&img).unwrap().iter().all(|e| !e.status_is_valid()));
        assert_eq!(read(&img).unwrap(), None);
    }

    #[test]
    fn rejects_overlapping_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = sfdisk_image(dir.path(), 64 << 20, SCRIPT);
        // Partition 2 starts inside partition 1.
        write_at(
            &path,
            (ENTRIES_AT + ENTRY_LEN + 8) as u64,
            &4096u32.to_le_bytes(),
        );
        expect_corrupt(read(&disk(&path)), "overlaps");
        // A logical partition reaching over the next EBR.
        let mut img = chain(8192, 3);
        put(&mut img, 2048, 0, 0, 0x83, 1, 5);
        expect_corrupt(read(&img), "logical partition 5");
    }

    #[test]
    fn rejects_partition_past_the_disk_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = sfdisk_image(dir.path(), 64 << 20, SCRIPT);
        resize(&path, 60 << 20);
        expect_corrupt(read(&disk(&path)), "MBR partition 3 (0x05 Extended)");
        // A logical partition past the end of its extended partition.
        let mut img = chain(8192, 2);
        put(&mut img, 2052, 0, 0, 0x83, 1, 50);
        expect_corrupt(read(&img), "outside the extended partition");
    }

    #[test]
    fn rejects_zero_start_or_length() {
        let mut img = vec![0u8; 1 << 20];
        put(&mut img, 0, 0, 0x80, 0x83, 0, 100);
        expect_corrupt(
            read(&img),
            "MBR partition 1 (0x83 Linux) starts at relative LBA 0",
        );
        let mut img = vec![0u8; 1 << 20];
        put(&mut img, 0, 1, 0, 0x83, 100, 0);
        expect_corrupt(read(&img), "MBR partition 2 (0x83 Linux) has length 0");
    }

    #[test]
    fn rejects_valid_entries_next_to_garbage() {
        let mut img = vec![0u8; 1 << 20];
        put(&mut img, 0, 0, 0, 0x83, 2048, 100);
        put(&mut img, 0, 2, 0x12, 0x83, 4096, 100);
        expect_corrupt(read(&img), "MBR entry 3 has boot flag 0x12");
    }

    #[test]
    fn protective_entry_without_gpt_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = sfdisk_image(dir.path(), 8 << 20, "label: dos\n,,ee\n");
        expect_corrupt(read(&disk(&path)), "protective MBR");
        expect_corrupt(read_table(&disk(&path)), "protective MBR but no valid GPT");
    }

    #[test]
    fn rejects_ebr_loops() {
        // The second EBR links back to the first (relative LBA 0).
        let mut img = chain(8192, 2);
        put(&mut img, 2052, 1, 0, 0x05, 0, 4);
        expect_corrupt(read(&img), "loops back to LBA 2048");
        // The third links back to the second.
        let mut img = chain(8192, 3);
        put(&mut img, 2056, 1, 0, 0x05, 4, 4);
        expect_corrupt(read(&img), "loops back to LBA 2052");
        // An EBR linking to itself.
        let mut img = chain(8192, 2);
        put(&mut img, 2052, 1, 0, 0x05, 4, 4);
        expect_corrupt(read(&img), "loops back to LBA 2052");
    }

    #[test]
    fn walks_long_chains_up_to_the_limit() {
        let img = chain(8192, MAX_EBRS as u32);
        let t = read(&img).unwrap().unwrap();
        assert_eq!(t.partitions.len(), MAX_EBRS);
        assert_eq!(
            t.partitions.last().unwrap().number,
            FIRST_LOGICAL + MAX_EBRS as u32 - 1
        );
        assert_eq!(t.metadata.len(), 1 + MAX_EBRS);
        let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        expect_corrupt(read(&chain(8192, MAX_EBRS as u32 + 1)), "longer than 128");
    }

    #[test]
    fn rejects_bad_ebrs() {
        // No signature on the second EBR.
        let mut img = chain(8192, 2);
        img[(2052 * SECTOR) as usize + SIGNATURE_AT] = 0;
        expect_corrupt(read(&img), "EBR at LBA 2052 has no 0x55AA signature");
        // A link of a non-extended type.
        let mut img = chain(8192, 2);
        put(&mut img, 2048, 1, 0, 0x83, 4, 4);
        expect_corrupt(read(&img), "links to type 0x83");
        // A link outside the extended partition.
        let mut img = chain(8192, 2);
        put(&mut img, 2048, 1, 0, 0x05, 4000, 4);
        expect_corrupt(read(&img), "outside the extended partition");
        // Entries 3 and 4 in use.
        let mut img = chain(8192, 2);
        put(&mut img, 2048, 2, 0, 0x83, 2, 1);
        assert!(matches!(read(&img), Err(MetaError::Unsupported(_))));
        // Two extended partitions.
        let mut img = chain(8192, 1);
        put(&mut img, 0, 1, 0, 0x05, 4096, 8);
        assert!(matches!(read(&img), Err(MetaError::Unsupported(_))));
    }

    #[test]
    fn random_corruption_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = sfdisk_image(dir.path(), 64 << 20, SCRIPT);
        let t = read(&disk(&path)).unwrap().unwrap();
        // Only the table sectors matter: keep a small in-memory copy of the first 60 MiB's
        // table sectors (the image is sparse elsewhere).
        let mut img = std::fs::read(&path).unwrap();
        let sectors: Vec<usize> = t.metadata.iter().map(|e| e.offset as usize).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut ok, mut none, mut err) = (0, 0, 0);
        for _ in 0..5000 {
            let flips: Vec<(usize, u8)> = (0..1 + rng.next() % 3)
                .map(|_| {
                    let s = sectors[rng.next() as usize % sectors.len()];
                    (s + 446 + rng.next() as usize % 66, 1u8 << (rng.next() % 8))
                })
                .collect();
            for &(at, bit) in &flips {
                img[at] ^= bit;
            }
            match read(&img) {
                Ok(Some(_)) => ok += 1,
                Ok(None) => none += 1,
                Err(_) => err += 1,
            }
            for &(at, bit) in flips.iter().rev() {
                img[at] ^= bit;
            }
        }
        eprintln!("mbr random flips: {ok} read, {none} not a table, {err} refused");
        assert!(ok > 0 && err > 0);
        assert_eq!(read(&img).unwrap(), Some(t));
    }
}
