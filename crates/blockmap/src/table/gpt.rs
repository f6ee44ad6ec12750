//! GUID partition tables (UEFI specification, chapter 5.3): a protective MBR in LBA 0, the
//! primary header in LBA 1 and its entry array after it, and a backup entry array and header
//! at the end of the disk. Both headers and both arrays carry CRC32s.
//!
//! Header (little-endian), at the start of its sector:
//!
//! ```text
//!  0..8   "EFI PART"             8..12  revision (0x00010000)   12..16 header size (>= 92)
//! 16..20  header CRC32 (computed with this field zeroed, over `header size` bytes)
//! 20..24  reserved               24..32 my LBA                  32..40 alternate LBA
//! 40..48  first usable LBA       48..56 last usable LBA         56..72 disk GUID
//! 72..80  entry array LBA        80..84 number of entries       84..88 entry size
//! 88..92  entry array CRC32 (over number * size bytes)
//! ```
//!
//! Entry: 0..16 type GUID (all zero = unused), 16..32 unique GUID, 32..40 first LBA,
//! 40..48 last LBA (inclusive), 48..56 attributes, 56..128 name (UTF-16LE, not read).
//!
//! Sector sizes of 512 and 4096 bytes are recognised, by where the signature is.

use crate::read::le;
use crate::table::{mbr, Partition, Table, TableKind};
use crate::{corrupt, ExtentSet, MetaError, ReadAt, Region};

/// The header's signature.
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The only header revision defined (UEFI 2.x still writes 1.0).
const REVISION_1_0: u32 = 0x0001_0000;
/// The size of the header fields defined by revision 1.0.
const HEADER_MIN: u32 = 92;
/// Logical sector sizes tried, in this order: where the signature is tells which.
const SECTOR_SIZES: [u64; 2] = [512, 4096];
/// The primary header's LBA.
const PRIMARY_LBA: u64 = 1;
/// The smallest entry the specification allows (and the one every tool writes).
const ENTRY_MIN: u32 = 128;
/// The largest entry accepted. The specification allows 128 * 2^n; nothing writes more than
/// 128, so a larger value is far more likely corruption than a real table.
const ENTRY_MAX: u32 = 4096;
/// The most entries accepted (tools write 128; the specification sets no limit).
const MAX_ENTRIES: u32 = 16384;
/// The most bytes of entry array read (bounds the allocation for one array): MAX_ENTRIES
/// entries of the standard 128 bytes.
const MAX_ENTRY_ARRAY: u64 = MAX_ENTRIES as u64 * ENTRY_MIN as u64;
/// Offsets of the entry fields used.
const ENTRY_FIRST_LBA: usize = 32;
const ENTRY_LAST_LBA: usize = 40;

/// Well-known partition type GUIDs, in canonical text form.
const KNOWN_TYPES: [(&str, &str); 13] = [
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    (
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        "Linux root (x86-64)",
    ),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"),
    (
        "BC13C2FF-59E6-4262-A352-B275FD6F7172",
        "Linux extended boot",
    ),
    (
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "Microsoft basic data",
    ),
    ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"),
    ("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    (
        "024DEE41-33E7-11D3-9D69-0008C781F39F",
        "MBR partition scheme",
    ),
];

/// Which copy a header claims to be; they differ in where the other one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Backup,
}

/// A header that passed its checks, with its entry array.
#[derive(Debug)]
struct Header {
    lba: u64,
    alternate: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: [u8; 16],
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entries_crc: u32,
    /// The entry array's length in bytes (`entry_count * entry_size`).
    array_len: u64,
    /// The entry array.
    array: Vec<u8>,
}

impl Header {
    /// The bytes of this header's sector and its entry array.
    fn extents(&self, ss: u64) -> ExtentSet {
        let mut s = ExtentSet::range(self.lba.saturating_mul(ss), ss);
        let array_bytes = self.array_len.div_ceil(ss).saturating_mul(ss);
        s.insert(self.entries_lba.saturating_mul(ss), array_bytes);
        s
    }

    /// What differs between a primary and its backup, if anything (besides their LBAs).
    fn mismatch(&self, other: &Header) -> Option<&'static str> {
        if self.first_usable != other.first_usable || self.last_usable != other.last_usable {
            Some("usable LBAs")
        } else if self.disk_guid != other.disk_guid {
            Some("disk GUID")
        } else if self.entry_count != other.entry_count || self.entry_size != other.entry_size {
            Some("entry count or size")
        } else if self.entries_crc != other.entries_crc {
            Some("partition entries")
        } else {
            None
        }
    }
}

/// True when the sector-aligned ranges `a0 ..= a1` and `b0 ..= b1` (inclusive) share a sector.
fn overlaps_inclusive(a0: u64, a1: u64, b0: u64, b1: u64) -> bool {
    a0 <= b1 && b0 <= a1
}

/// Reads and checks the header at `lba` and its entry array.
fn load(disk: &Region, ss: u64, lba: u64, role: Role) -> Result<Header, MetaError> {
    let sectors = disk.len() / ss;
    let offset = lba
        .checked_mul(ss)
        .ok_or_else(|| corrupt!("LBA {lba} overflows"))?;
    // `ss` is one of SECTOR_SIZES, so this allocation is bounded.
    let mut buf = disk.read_vec("a GPT header", offset, ss as usize)?;
    if buf.get(..SIGNATURE.len()) != Some(&SIGNATURE[..]) {
        return Err(corrupt!("no \"EFI PART\" signature"));
    }
    let revision = le::u32(&buf, 8)?;
    if revision != REVISION_1_0 {
        return Err(MetaError::Unsupported(format!(
            "GPT header revision 0x{revision:08x} (only 0x{REVISION_1_0:08x} is read)"
        )));
    }
    let header_size = le::u32(&buf, 12)?;
    if header_size < HEADER_MIN || u64::from(header_size) > ss {
        return Err(corrupt!(
            "header size {header_size} is outside {HEADER_MIN}..={ss}"
        ));
    }
    let stored_crc = le::u32(&buf, 16)?;
    if let Some(field) = buf.get_mut(16..20) {
        field.fill(0);
    }
    let header = buf
        .get(..header_size as usize)
        .ok_or_else(|| corrupt!("header size {header_size} exceeds the sector"))?;
    let crc = crc32fast::hash(header);
    if !crate::checksum_ok(stored_crc, crc) {
        return Err(corrupt!(
            "header CRC32 is 0x{stored_crc:08x} but the header's bytes give 0x{crc:08x}"
        ));
    }
    let my_lba = le::u64(&buf, 24)?;
    if my_lba != lba {
        return Err(corrupt!("header says it is at LBA {my_lba}, not {lba}"));
    }
    let alternate = le::u64(&buf, 32)?;
    let first_usable = le::u64(&buf, 40)?;
    let last_usable = le::u64(&buf, 48)?;
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(
        buf.get(56..72)
            .ok_or_else(|| corrupt!("header too short for the disk GUID"))?,
    );
    let entries_lba = le::u64(&buf, 72)?;
    let entry_count = le::u32(&buf, 80)?;
    let entry_size = le::u32(&buf, 84)?;
    let entries_crc = le::u32(&buf, 88)?;

    // LBA 0 (protective MBR) and LBA 1 (primary header) are never usable. The last usable
    // LBA may lie past the end of a truncated disk: the partitions are checked against the
    // disk's end one by one.
    if first_usable < 2 || first_usable > last_usable {
        return Err(corrupt!(
            "usable LBAs {first_usable}..={last_usable} are empty or include LBA 0 or 1"
        ));
    }
    if overlaps_inclusive(lba, lba, first_usable, last_usable) {
        return Err(corrupt!(
            "the header's own LBA {lba} is inside the usable LBAs {first_usable}..={last_usable}"
        ));
    }
    match role {
        Role::Primary => {
            if alternate <= PRIMARY_LBA
                || overlaps_inclusive(alternate, alternate, first_usable, last_usable)
            {
                return Err(corrupt!(
                    "backup header LBA {alternate} is inside the usable LBAs {first_usable}..={last_usable} or at the start"
                ));
            }
        }
        Role::Backup => {
            if alternate != PRIMARY_LBA {
                return Err(corrupt!(
                    "a backup header whose primary is at LBA {alternate}, not {PRIMARY_LBA}"
                ));
            }
        }
    }
    if !(ENTRY_MIN..=ENTRY_MAX).contains(&entry_size) || !entry_size.is_multiple_of(8) {
        return Err(corrupt!(
            "entry size {entry_size} is not a multiple of 8 in {ENTRY_MIN}..={ENTRY_MAX}"
        ));
    }
    if entry_count > MAX_ENTRIES {
        return Err(corrupt!(
            "{entry_count} entries (at most {MAX_ENTRIES} are read)"
        ));
    }
    let array_len = u64::from(entry_count)
        .checked_mul(u64::from(entry_size))
        .filter(|&n| n <= MAX_ENTRY_ARRAY)
        .ok_or_else(|| {
            corrupt!("entry array of {entry_count} x {entry_size} bytes exceeds {MAX_ENTRY_ARRAY}")
        })?;
    let array_sectors = array_len.div_ceil(ss);
    if array_sectors > 0 {
        let array_last = entries_lba
            .checked_add(array_sectors - 1)
            .filter(|&l| l < sectors)
            .ok_or_else(|| {
                corrupt!(
                    "entry array at LBA {entries_lba} ({array_sectors} sectors) ends past the disk's {sectors} sectors"
                )
            })?;
        if entries_lba < 2
            || overlaps_inclusive(entries_lba, array_last, lba, lba)
            || overlaps_inclusive(entries_lba, array_last, first_usable, last_usable)
        {
            return Err(corrupt!(
                "entry array at LBAs {entries_lba}..={array_last} overlaps LBA 0 or 1, the header or the usable LBAs {first_usable}..={last_usable}"
            ));
        }
    }
    // Bounded by MAX_ENTRY_ARRAY above.
    let array_offset = entries_lba
        .checked_mul(ss)
        .ok_or_else(|| corrupt!("entry array LBA {entries_lba} overflows"))?;
    let array = disk.read_vec("a GPT entry array", array_offset, array_len as usize)?;
    let crc = crc32fast::hash(&array);
    if !crate::checksum_ok(entries_crc, crc) {
        return Err(corrupt!(
            "entry array CRC32 is 0x{entries_crc:08x} but its bytes give 0x{crc:08x}"
        ));
    }
    Ok(Header {
        lba,
        alternate,
        first_usable,
        last_usable,
        disk_guid,
        entries_lba,
        entry_count,
        entry_size,
        entries_crc,
        array_len,
        array,
    })
}

/// A GUID in its canonical text form: the first three fields are stored little-endian, the
/// last two as bytes.
fn guid_text(g: &[u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] = *g;
    let mut s = format!(
        "{:08X}-{:04X}-{:04X}-",
        u32::from_le_bytes([a0, a1, a2, a3]),
        u16::from_le_bytes([b0, b1]),
        u16::from_le_bytes([c0, c1])
    );
    for (i, b) in rest.iter().enumerate() {
        if i == 2 {
            s.push('-');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// The type, for people: a known name or the GUID.
fn type_name(g: &[u8; 16]) -> String {
    let text = guid_text(g);
    match KNOWN_TYPES.iter().find(|(guid, _)| *guid == text) {
        Some((_, name)) => (*name).to_owned(),
        None => text,
    }
}

/// The partitions in a checked header's entry array, by start.
fn partitions(h: &Header, ss: u64, sectors: u64) -> Result<Vec<Partition>, MetaError> {
    let mut out = Vec::new();
    let size = h.entry_size as usize;
    for i in 0..h.entry_count {
        let number = i.saturating_add(1);
        let at = (i as usize).saturating_mul(size);
        let e = h
            .array
            .get(at..at.saturating_add(ENTRY_MIN as usize))
            .ok_or_else(|| corrupt!("GPT entry {number} lies outside its array"))?;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(
            e.get(..16)
                .ok_or_else(|| corrupt!("GPT entry {number} too short"))?,
        );
        if guid == [0u8; 16] {
            continue;
        }
        let first = le::u64(e, ENTRY_FIRST_LBA)?;
        let last = le::u64(e, ENTRY_LAST_LBA)?;
        if first > last {
            return Err(corrupt!(
                "GPT partition {number}: first LBA {first} is after its last LBA {last}"
            ));
        }
        if first < h.first_usable || last > h.last_usable {
            return Err(corrupt!(
                "GPT partition {number} (LBAs {first}..={last}) is outside the usable LBAs {}..={}",
                h.first_usable,
                h.last_usable
            ));
        }
        if last >= sectors {
            return Err(corrupt!(
                "GPT partition {number} (LBAs {first}..={last}) ends past the end of the disk ({sectors} sectors)"
            ));
        }
        let start = first
            .checked_mul(ss)
            .ok_or_else(|| corrupt!("GPT partition {number}: start overflows"))?;
        let len = (last - first)
            .checked_add(1)
            .and_then(|n| n.checked_mul(ss))
            .ok_or_else(|| corrupt!("GPT partition {number}: length overflows"))?;
        out.push(Partition {
            number,
            start,
            len,
            type_name: type_name(&guid),
        });
    }
    out.sort_by_key(|p| p.start);
    for w in out.windows(2) {
        if let [a, b] = w {
            if a.start.saturating_add(a.len) > b.start {
                return Err(corrupt!(
                    "GPT partitions {} and {} overlap",
                    a.number,
                    b.number
                ));
            }
        }
    }
    Ok(out)
}

/// Reads the GPT with sector size `ss`: the primary if it is valid, else the backup at the
/// last LBA; errors when neither is.
fn read_with(disk: &Region, ss: u64) -> Result<Table, MetaError> {
    let sectors = disk.len() / ss;
    if sectors < 3 {
        return Err(corrupt!("the disk holds only {sectors} sectors"));
    }
    let last = sectors - 1;
    let mut warnings = Vec::new();
    // The protective MBR and the primary header's sector.
    let mut metadata = ExtentSet::range(0, 2 * ss);
    let chosen = match load(disk, ss, PRIMARY_LBA, Role::Primary) {
        Ok(p) => {
            metadata.union(&p.extents(ss));
            if p.alternate >= sectors {
                warnings.push(format!(
                    "backup GPT header at LBA {} is missing or corrupt: it is past the end of the disk ({sectors} sectors; the disk may have been truncated)",
                    p.alternate
                ));
            } else {
                match load(disk, ss, p.alternate, Role::Backup) {
                    Ok(b) => {
                        metadata.union(&b.extents(ss));
                        if let Some(what) = p.mismatch(&b) {
                            warnings.push(format!(
                                "primary and backup GPT differ in their {what}; using the primary"
                            ));
                        }
                        if p.alternate != last {
                            warnings.push(format!(
                                "backup GPT header at LBA {} is not at the end of the disk (LBA {last}; the disk may have been grown)",
                                p.alternate
                            ));
                        }
                    }
                    Err(e) => warnings.push(format!(
                        "backup GPT header at LBA {} is missing or corrupt: {e}",
                        p.alternate
                    )),
                }
            }
            p
        }
        Err(pe) => match load(disk, ss, last, Role::Backup) {
            Ok(b) => {
                metadata.union(&b.extents(ss));
                warnings.push(format!(
                    "primary GPT header at LBA {PRIMARY_LBA} is missing or corrupt: {pe}; using the backup at LBA {last}"
                ));
                b
            }
            Err(be) => {
                return Err(corrupt!(
                "GPT primary header at LBA {PRIMARY_LBA}: {pe}; backup header at LBA {last}: {be}"
            ))
            }
        },
    };
    let partitions = partitions(&chosen, ss, sectors)?;
    for p in &partitions {
        if !metadata.clip(p.start, p.start + p.len).is_empty() {
            return Err(corrupt!(
                "GPT partition {} (bytes {}..{}) overlaps the table's own sectors",
                p.number,
                p.start,
                p.start + p.len
            ));
        }
    }
    // The backup belongs at the end of the disk whatever state it is in: send the sectors a
    // valid backup would occupy (its header at the last LBA, its entry array just before), so
    // a damaged backup is copied as it is and a good one is never left behind. On a disk
    // that is not what the header says (truncated, or a header that lies) a partition may lie
    // there: its sectors are the partition's, not the table's.
    let array_sectors = chosen.array_len.div_ceil(ss);
    let backup_start = last.saturating_sub(array_sectors).max(PRIMARY_LBA + 1);
    let mut backup = ExtentSet::range(backup_start * ss, (last + 1 - backup_start) * ss);
    for p in &partitions {
        backup = backup.subtract(&ExtentSet::range(p.start, p.len));
    }
    metadata.union(&backup);
    Ok(Table {
        kind: TableKind::Gpt,
        partitions,
        metadata,
        warnings,
    })
}

/// Reads the GPT of `disk`: `Ok(None)` when there is neither a protective MBR nor a GPT
/// signature, `Err` when there is a GPT that cannot be trusted.
pub fn read(disk: &dyn ReadAt) -> Result<Option<Table>, MetaError> {
    let whole = Region::whole(disk);
    if whole.len() < mbr::SECTOR {
        return Ok(None);
    }
    let mut sector0 = [0u8; mbr::SECTOR as usize];
    whole.read("the protective MBR", &mut sector0, 0)?;
    let protective = mbr::is_protective(&sector0);
    let mut signed = Vec::new();
    for ss in SECTOR_SIZES {
        let mut sig = [0u8; SIGNATURE.len()];
        if whole.check("a GPT signature", ss, sig.len() as u64).is_ok() {
            whole.read("a GPT signature", &mut sig, ss)?;
            if &sig == SIGNATURE {
                signed.push(ss);
            }
        }
    }
    if !protective && signed.is_empty() {
        return Ok(None);
    }
    if !protective && mbr::has_plain_partitions(&sector0) {
        return Err(corrupt!(
            "a GPT header at LBA 1, but the MBR holds ordinary partitions and no protective entry: cannot tell which table is in use"
        ));
    }
    // With only a protective MBR, the primary header is gone: look for a backup at the end
    // for either sector size.
    let candidates = if signed.is_empty() {
        SECTOR_SIZES.to_vec()
    } else {
        signed
    };
    let mut errors = Vec::new();
    for ss in candidates {
        match read_with(&whole, ss) {
            Ok(mut t) => {
                if !protective {
                    t.warnings.insert(
                        0,
                        "no protective MBR in sector 0 (the GPT was found by its signature)".into(),
                    );
                }
                return Ok(Some(t));
            }
            Err(e) => errors.push(format!("with {ss}-byte sectors: {e}")),
        }
    }
    Err(corrupt!(
        "{} but no valid GPT ({})",
        if protective {
            "protective MBR"
        } else {
            "GPT signature"
        },
        errors.join("; ")
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::table::read_table;
    use crate::testutil::{expect_corrupt, run_with_input, sparse_image as image, Rng};
    use crate::FileDisk;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    /// Runs a tool, feeding it `stdin`; panics (with its output) unless it succeeds.
    pub(in crate::table) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
        run_with_input(Command::new(program).args(args), stdin.unwrap_or(""))
    }

    pub(in crate::table) fn disk(path: &Path) -> FileDisk {
        FileDisk::new(File::open(path).unwrap()).unwrap()
    }

    pub(in crate::table) fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, offset).unwrap();
    }

    /// Truncates or extends the file at `path` to `size` bytes (a disk cut short or grown).
    pub(in crate::table) fn resize(path: &Path, size: u64) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(size).unwrap();
    }

    pub(in crate::table) fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        File::open(path)
            .unwrap()
            .read_exact_at(&mut buf, offset)
            .unwrap();
        buf
    }

    /// One partition as `sfdisk --json` lists it: (number, start, size, type), in sectors.
    pub(in crate::table) type ToolPartition = (u32, u64, u64, String);

    /// The partitions `sfdisk --json` reads from `path`. (A small line-based reader: the
    /// crate has no JSON dependency, and sfdisk prints one field per line.)
    pub(in crate::table) fn sfdisk_partitions(path: &Path) -> Vec<ToolPartition> {
        let json = run("sfdisk", &["--json", path.to_str().unwrap()], None);
        let mut out: Vec<ToolPartition> = Vec::new();
        for line in json.lines() {
            let line = line
                .trim()
                .trim_start_matches("},{")
                .trim_start_matches('{');
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim().trim_matches('"');
            let value = value.trim().trim_end_matches(',').trim_matches('"');
            match key {
                "node" => {
                    let digits =
                        value.len() - value.chars().rev().take_while(char::is_ascii_digit).count();
                    out.push((value[digits..].parse().unwrap(), 0, 0, String::new()));
                }
                "start" => out.last_mut().unwrap().1 = value.parse().unwrap(),
                "size" => out.last_mut().unwrap().2 = value.parse().unwrap(),
                "type" => out.last_mut().unwrap().3 = value.to_owned(),
                _ => {}
            }
        }
        out
    }

    /// Our partitions as (number, start, size) in 512-byte sectors.
    pub(in crate::table) fn sectors_of(t: &Table) -> Vec<(u32, u64, u64)> {
        t.partitions
            .iter()
            .map(|p| (p.number, p.start / 512, p.len / 512))
            .collect()
    }

    const SGDISK_ARGS: [&str; 13] = [
        "-o",
        "-n",
        "1:2048:+16M",
        "-t",
        "1:ef00",
        "-n",
        "2:0:+32M",
        "-t",
        "2:8300",
        "-n",
        "3:0:0",
        "-t",
        "3:8200",
    ];

    /// The size of [`sgdisk_image`].
    const SGDISK_SIZE: u64 = 100 << 20;
    /// How much of the start and of the end of [`sgdisk_image`] holds the table.
    const TABLE_SPAN: u64 = 34 * 512;

    /// A 100 MiB image partitioned by sgdisk (ESP, Linux, swap to the end). sgdisk waits a
    /// second after each write, so it runs once and its table sectors are kept.
    fn sgdisk_image(dir: &Path) -> PathBuf {
        static TABLE: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
        let (head, tail) = TABLE.get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let path = image(tmp.path(), "gpt.img", SGDISK_SIZE);
            let mut args: Vec<&str> = SGDISK_ARGS.to_vec();
            args.push(path.to_str().unwrap());
            run("sgdisk", &args, None);
            let head = read_at(&path, 0, TABLE_SPAN as usize);
            let tail = read_at(&path, SGDISK_SIZE - TABLE_SPAN, TABLE_SPAN as usize);
            (head, tail)
        });
        let path = image(dir, "gpt.img", SGDISK_SIZE);
        write_at(&path, 0, head);
        write_at(&path, SGDISK_SIZE - TABLE_SPAN, tail);
        path
    }

    fn sgdisk_verify(path: &Path) -> String {
        let out = Command::new("sgdisk")
            .args(["-v", path.to_str().unwrap()])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Recomputes the entry array CRC and the header CRC of the header at `lba` (512-byte
    /// sectors), after a test changed them.
    fn reseal(img: &mut [u8], lba: u64) {
        let h = (lba * 512) as usize;
        let entries = u64::from_le_bytes(img[h + 72..h + 80].try_into().unwrap()) as usize * 512;
        let count = u32::from_le_bytes(img[h + 80..h + 84].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(img[h + 84..h + 88].try_into().unwrap()) as usize;
        let len = (count * size).min(img.len().saturating_sub(entries));
        let crc = crc32fast::hash(&img[entries..entries + len]);
        img[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
        img[h + 16..h + 20].fill(0);
        let crc = crc32fast::hash(&img[h..h + 92]);
        img[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    }

    /// A small in-memory GPT disk (8 MiB, two partitions), for hand edits.
    fn small_gpt() -> Vec<u8> {
        static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
        IMAGE
            .get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let path = image(dir.path(), "small.img", 8 << 20);
                run(
                    "sgdisk",
                    &[
                        "-o",
                        "-n",
                        "1:2048:+2M",
                        "-n",
                        "2:0:+2M",
                        path.to_str().unwrap(),
                    ],
                    None,
                );
                std::fs::read(&path).unwrap()
            })
            .clone()
    }

    const SMALL_LAST: u64 = (8 << 20) / 512 - 1;

    /// Edits partition entry `index` (0-based) in both arrays and reseals both headers.
    fn edit_entry(img: &mut [u8], index: usize, at: usize, bytes: &[u8]) {
        for (header, array) in [(1u64, 2u64), (SMALL_LAST, SMALL_LAST - 32)] {
            let e = (array * 512) as usize + index * 128 + at;
            img[e..e + bytes.len()].copy_from_slice(bytes);
            reseal(img, header);
        }
    }

    /// Edits a header field in both headers and reseals them.
    fn edit_headers(img: &mut [u8], at: usize, bytes: &[u8]) {
        for header in [1u64, SMALL_LAST] {
            let h = (header * 512) as usize + at;
            img[h..h + bytes.len()].copy_from_slice(bytes);
            reseal(img, header);
        }
    }

    #[test]
    fn reads_sgdisk_table_like_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let path = sgdisk_image(dir.path());
        assert!(sgdisk_verify(&path).contains("No problems found"));
        let t = read(&disk(&path)).unwrap().expect("a GPT");
        assert_eq!(t.kind, TableKind::Gpt);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let tool = sfdisk_partitions(&path);
        assert_eq!(tool.len(), 3);
        let want: Vec<(u32, u64, u64)> = tool.iter().map(|p| (p.0, p.1, p.2)).collect();
        assert_eq!(sectors_of(&t), want);
        let names: Vec<&str> = t.partitions.iter().map(|p| p.type_name.as_str()).collect();
        assert_eq!(names, ["EFI System", "Linux filesystem", "Linux swap"]);
        // sfdisk prints the type GUIDs; ours must be the same text for unknown types.
        for (p, (_, _, _, guid)) in t.partitions.iter().zip(&tool) {
            let known = KNOWN_TYPES.iter().find(|(g, _)| g == guid).unwrap();
            assert_eq!(p.type_name, known.1);
        }
        // Protective MBR, primary header and array (32 sectors), backup array and header.
        let last = (100u64 << 20) / 512 - 1;
        assert_eq!(t.metadata.total(), (1 + 1 + 32 + 32 + 1) * 512);
        assert!(t.metadata.contains(0, 34 * 512));
        assert!(t.metadata.contains((last - 32) * 512, 33 * 512));
    }

    #[test]
    fn guid_text_is_mixed_endian() {
        let g = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(guid_text(&g), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(type_name(&g), "EFI System");
        let mut other = g;
        other[15] = 0;
        assert_eq!(type_name(&other), "C12A7328-F81F-11D2-BA4B-00A0C93EC900");
    }

    #[test]
    fn unknown_types_are_shown_as_sfdisk_shows_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), "t.img", 8 << 20);
        run(
            "sgdisk",
            &[
                "-o",
                "-n",
                "1:2048:+1M",
                "-t",
                "1:a503",
                path.to_str().unwrap(),
            ],
            None,
        );
        let t = read(&disk(&path)).unwrap().unwrap();
        let tool = sfdisk_partitions(&path);
        assert_eq!(t.partitions[0].type_name, tool[0].3);
    }

    #[test]
    fn truncated_disk_uses_the_primary_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), "trunc.img", 64 << 20);
        run(
            "sgdisk",
            &[
                "-o",
                "-n",
                "1:2048:+16M",
                "-n",
                "2:0:+16M",
                path.to_str().unwrap(),
            ],
            None,
        );
        let want = sectors_of(&read(&disk(&path)).unwrap().unwrap());
        // Lose the backup (the last 33 sectors) and then some.
        resize(&path, 48 << 20);
        let t = read(&disk(&path)).unwrap().expect("the primary");
        assert_eq!(sectors_of(&t), want);
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(
            t.warnings[0].contains("backup GPT header at LBA 131071 is missing or corrupt"),
            "{:?}",
            t.warnings
        );
        // The front, and the last 33 sectors, where the backup belongs: they are sent as
        // they are, so the end of the disk is copied whatever state it is in.
        assert_eq!(t.metadata.total(), (34 + 33) * 512);
        assert!(!sgdisk_verify(&path).contains("No problems found"));
    }

    #[test]
    fn truncated_disk_cutting_a_partition_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = sgdisk_image(dir.path());
        resize(&path, 90 << 20);
        expect_corrupt(read(&disk(&path)), "GPT partition 3");
    }

    #[test]
    fn grown_disk_keeps_its_backup_in_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let path = sgdisk_image(dir.path());
        resize(&path, 110 << 20);
        let t = read(&disk(&path)).unwrap().unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(t.warnings[0].contains("not at the end of the disk"));
        let old_last = (100u64 << 20) / 512 - 1;
        assert!(t.metadata.contains((old_last - 32) * 512, 33 * 512));
    }

    #[test]
    fn corrupt_primary_header_uses_the_backup_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = sgdisk_image(dir.path());
        let want = sectors_of(&read(&disk(&path)).unwrap().unwrap());
        // Flip a bit of the first usable LBA: the header CRC no longer matches.
        let mut b = read_at(&path, 512 + 40, 1);
        b[0] ^= 0x01;
        write_at(&path, 512 + 40, &b);
        let t = read(&disk(&path)).unwrap().expect("the backup");
        assert_eq!(sectors_of(&t), want);
        assert_eq!(t.warnings.len(), 1);
        assert!(t.warnings[0].contains("primary GPT header at LBA 1 is missing or corrupt"));
        assert!(t.warnings[0].contains("header CRC32"), "{}", t.warnings[0]);
        let last = (100u64 << 20) / 512 - 1;
        assert!(t.metadata.contains((last - 32) * 512, 33 * 512));
        assert!(sgdisk_verify(&path).contains("corrupt GPT"));
    }

    #[test]
    fn corrupt_primary_array_uses_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = sgdisk_image(dir.path());
        write_at(&path, 1024 + 130, b"x");
        let t = read(&disk(&path)).unwrap().unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert!(
            t.warnings[0].contains("entry array CRC32"),
            "{:?}",
            t.warnings
        );
    }

    #[test]
    fn wiped_primary_with_protective_mbr_uses_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = sgdisk_image(dir.path());
        write_at(&path, 512, &[0u8; 512]);
        let t = read(&disk(&path)).unwrap().unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert!(t.warnings[0].contains("no \"EFI PART\" signature"));
    }

    #[test]
    fn both_headers_corrupt_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = sgdisk_image(dir.path());
        let last = (100u64 << 20) / 512 - 1;
        write_at(&path, 512 + 40, b"\xff");
        write_at(&path, last * 512 + 40, b"\xff");
        expect_corrupt(read(&disk(&path)), "backup header at LBA 204799");
        expect_corrupt(read_table(&disk(&path)), "primary header at LBA 1");
    }

    #[test]
    fn corrupt_primary_on_a_truncated_disk_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = sgdisk_image(dir.path());
        write_at(&path, 512 + 40, b"\xff");
        resize(&path, 99 << 20);
        expect_corrupt(read(&disk(&path)), "GPT primary header");
    }

    #[test]
    fn rejects_overlapping_partitions() {
        let mut img = small_gpt();
        // Partition 2 (entry 1) starts inside partition 1 (2048..=6143).
        edit_entry(&mut img, 1, 32, &4000u64.to_le_bytes());
        expect_corrupt(read(&img), "GPT partitions 1 and 2 overlap");
    }

    #[test]
    fn rejects_partition_outside_usable_lbas() {
        let mut img = small_gpt();
        edit_entry(&mut img, 1, 40, &(SMALL_LAST - 1).to_le_bytes());
        expect_corrupt(read(&img), "outside the usable LBAs");
        let mut img = small_gpt();
        edit_entry(&mut img, 0, 32, &1u64.to_le_bytes());
        expect_corrupt(read(&img), "GPT partition 1 (LBAs 1..=6143)");
    }

    #[test]
    fn rejects_first_lba_after_last() {
        let mut img = small_gpt();
        edit_entry(&mut img, 0, 40, &2000u64.to_le_bytes());
        expect_corrupt(read(&img), "after its last LBA");
    }

    #[test]
    fn rejects_bad_entry_geometry() {
        let cases: [(&[(usize, u32)], &str); 10] = [
            (&[(84, 100)], "entry size 100"),
            (&[(84, 8192)], "entry size 8192"),
            (&[(84, 132)], "entry size 132"),
            (&[(80, 1_000_000)], "1000000 entries"),
            (&[(80, 16384), (84, 256)], "exceeds 2097152"),
            (&[(80, 16384)], "overlaps"), // 2 MiB of entries reach into the usable LBAs
            (&[(12, 91)], "header size 91"),
            (&[(12, 513)], "header size 513"),
            (&[(24, 7)], "at LBA 7"),
            (&[(8, 0x0002_0000)], "revision 0x00020000"),
        ];
        for (edits, needle) in cases {
            let mut img = small_gpt();
            for &(at, value) in edits {
                edit_headers(&mut img, at, &value.to_le_bytes());
            }
            match read(&img) {
                Err(MetaError::Corrupt(m)) | Err(MetaError::Unsupported(m)) => {
                    assert!(m.contains(needle), "{edits:?}: {m:?} lacks {needle:?}")
                }
                other => panic!("{edits:?}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_arrays_overlapping_usable_lbas() {
        let mut img = small_gpt();
        // First usable LBA 20: the primary array (LBAs 2..=33) overlaps it; the backup's does
        // not, so the backup is used.
        edit_headers(&mut img, 40, &20u64.to_le_bytes());
        let t = read(&img).unwrap().unwrap();
        assert!(
            t.warnings[0].contains("entry array at LBAs 2..=33 overlaps"),
            "{:?}",
            t.warnings
        );
        // A backup array reaching into the usable LBAs as well: nothing left to trust.
        let backup = (SMALL_LAST * 512) as usize;
        img[backup + 72..backup + 80].copy_from_slice(&(SMALL_LAST - 40).to_le_bytes());
        reseal(&mut img, SMALL_LAST);
        expect_corrupt(
            read(&img),
            "overlaps LBA 0 or 1, the header or the usable LBAs",
        );
    }

    #[test]
    fn no_signature_and_no_protective_mbr_is_none() {
        assert_eq!(read(&vec![0u8; 1 << 20]).unwrap(), None);
        assert_eq!(read(&vec![0u8; 100]).unwrap(), None);
        assert_eq!(read_table(&vec![0u8; 1 << 20]).unwrap(), None);
    }

    #[test]
    fn protective_mbr_without_a_gpt_is_an_error() {
        let mut img = small_gpt();
        img[512..34 * 512].fill(0);
        let n = img.len();
        img[n - 33 * 512..].fill(0);
        expect_corrupt(read(&img), "protective MBR but no valid GPT");
        expect_corrupt(read_table(&img), "protective MBR but no valid GPT");
        // The same through the MBR reader alone.
        expect_corrupt(mbr::read(&img), "protective MBR");
    }

    #[test]
    fn gpt_signature_without_protective_mbr() {
        // The MBR area zeroed: the GPT is still found, with a warning.
        let mut img = small_gpt();
        img[..512].fill(0);
        let t = read(&img).unwrap().unwrap();
        assert_eq!(t.partitions.len(), 2);
        assert!(t.warnings[0].contains("no protective MBR"));
        // An ordinary MBR partition instead of the protective entry: ambiguous.
        let mut img = small_gpt();
        img[446 + 4] = 0x83;
        expect_corrupt(read(&img), "cannot tell which table is in use");
    }

    #[test]
    fn reads_4096_byte_sector_gpt() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), "4k.img", 64 << 20);
        // fdisk writes a GPT for 4 KiB logical sectors into a plain file.
        run(
            "fdisk",
            &["-b", "4096", path.to_str().unwrap()],
            Some("g\nn\n1\n256\n2303\nn\n2\n2304\n16000\nw\n"),
        );
        let listing = run("fdisk", &["-b", "4096", "-l", path.to_str().unwrap()], None);
        assert!(listing.contains("2304 16000"), "{listing}");
        let t = read(&disk(&path)).unwrap().expect("a 4K GPT");
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let got: Vec<(u32, u64, u64)> = t
            .partitions
            .iter()
            .map(|p| (p.number, p.start, p.len))
            .collect();
        assert_eq!(
            got,
            [(1, 256 * 4096, 2048 * 4096), (2, 2304 * 4096, 13697 * 4096)]
        );
        // Protective MBR, header, array (128 x 128 bytes = 4 sectors), and the backup.
        assert_eq!(t.metadata.total(), (2 + 4 + 4 + 1) * 4096);
        assert!(t.metadata.contains((64 << 20) - 4096, 4096));
    }

    #[test]
    fn random_corruption_never_panics() {
        let mut img = small_gpt();
        let n = img.len();
        // The places that hold table data: sector 0, header and array; backup array and header.
        let spots: [(usize, usize); 2] = [(0, 34 * 512), (n - 33 * 512, 33 * 512)];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut ok, mut err) = (0, 0);
        for round in 0..3000 {
            let mut flips: Vec<(usize, u8)> = Vec::new();
            // Every other round hits both headers, so that the backup cannot save the day.
            let both = round % 2 == 0;
            for _ in 0..1 + rng.next() % 4 {
                let (base, len) = spots[(rng.next() % 2) as usize];
                let header = if base == 0 { 512 } else { n - 512 };
                // Mostly the header fields, where a flip is not always a length error.
                let at = if rng.next().is_multiple_of(2) {
                    base + (rng.next() as usize % len)
                } else {
                    header + rng.next() as usize % 92
                };
                flips.push((at, 1u8 << (rng.next() % 8)));
                if both {
                    let other = if base == 0 { n - 512 } else { 512 };
                    flips.push((other + rng.next() as usize % 92, 1u8 << (rng.next() % 8)));
                }
            }
            for &(at, bit) in &flips {
                img[at] ^= bit;
            }
            match read_table(&img) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
            for &(at, bit) in flips.iter().rev() {
                img[at] ^= bit;
            }
        }
        eprintln!("gpt random flips: {ok} read, {err} refused");
        assert!(ok > 0 && err > 0, "ok {ok} err {err}");
        assert_eq!(read(&img).unwrap().unwrap().partitions.len(), 2);
    }

    #[test]
    fn maps_a_gpt_disk_with_ext4_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), "disk.img", 64 << 20);
        let p = path.to_str().unwrap();
        run(
            "sgdisk",
            &[
                "-o",
                "-n",
                "1:2048:+8M",
                "-t",
                "1:ef00",
                "-n",
                "2:0:+40M",
                "-t",
                "2:8300",
                "-n",
                "3:0:+8M",
                "-t",
                "3:8200",
                p,
            ],
            None,
        );
        let tool = sfdisk_partitions(&path);
        let (p2_start, p2_len) = (tool[1].1 * 512, tool[1].2 * 512);
        let (p3_start, p3_len) = (tool[2].1 * 512, tool[2].2 * 512);
        // Stale data everywhere first, so that free space is not zero.
        let junk: Vec<u8> = (0..p2_len).map(|i| (i * 7 + 3) as u8).collect();
        write_at(&path, p2_start, &junk);
        // ext4 (4 KiB blocks) in partition 2, with a few files.
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        for i in 0..5 {
            std::fs::write(tree.join(format!("f{i}")), vec![i as u8 + 1; 300_000]).unwrap();
        }
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-E",
                &format!("offset={p2_start},nodiscard"),
                "-d",
                tree.to_str().unwrap(),
                p,
                &(p2_len / 4096).to_string(),
            ],
            None,
        );
        // Swap in partition 3: mkswap a separate file and copy it in.
        let swap = image(dir.path(), "swap.img", p3_len);
        run("mkswap", &["-q", swap.to_str().unwrap()], None);
        write_at(&path, p3_start, &std::fs::read(&swap).unwrap());
        assert!(sgdisk_verify(&path).contains("No problems found"));

        let m = crate::map_disk(&disk(&path));
        assert_eq!(m.table, Some(TableKind::Gpt));
        assert!(
            m.warnings.iter().all(|w| !w.contains("partition table")),
            "{:?}",
            m.warnings
        );
        let got: Vec<(u32, u64, u64)> = m
            .partitions
            .iter()
            .map(|p| (p.number, p.start / 512, p.len / 512))
            .collect();
        let want: Vec<(u32, u64, u64)> = tool.iter().map(|p| (p.0, p.1, p.2)).collect();
        assert_eq!(got, want);
        // The first MiB and the backup GPT are always sent.
        assert!(m.used.contains(0, crate::map::ALWAYS_SENT_HEAD));
        assert!(m.used.contains((64 << 20) - 33 * 512, 33 * 512));
        // Partition 1 holds nothing recognisable: sent whole.
        assert_eq!(m.partitions[0].fs, None);
        assert!(m.used.contains(tool[0].1 * 512, tool[0].2 * 512));
        // Partition 2: ext4, read by its own parser.
        let p2 = &m.partitions[1];
        assert_eq!(p2.fs, Some(crate::FsKind::Ext4));
        assert_eq!(p2.fallback, None, "{:?}", m.warnings);
        assert!(p2.used_bytes < p2_len, "{p2:?}");
        // Superblock and the first group's metadata.
        assert!(m.used.contains(p2_start, 4096));
        // At least every block that dumpe2fs does not count as free.
        let header = run("dumpe2fs", &["-h", &format!("{p}?offset={p2_start}")], None);
        let field = |name: &str| -> u64 {
            let line = header.lines().find(|l| l.starts_with(name)).unwrap();
            line[name.len()..].trim().parse().unwrap()
        };
        let tool_used = (field("Block count:") - field("Free blocks:")) * 4096;
        eprintln!(
            "partition 2 (ext4): {} bytes used by the map, {tool_used} by dumpe2fs, of {p2_len}",
            p2.used_bytes
        );
        assert!(p2.used_bytes >= tool_used);
        // Partition 3: swap, its header page only.
        let p3 = &m.partitions[2];
        assert_eq!(p3.fs, Some(crate::FsKind::Swap));
        assert_eq!(p3.used_bytes, 4096);
        assert!(m.used.contains(p3_start, 4096));
        assert!(!m.used.contains(p3_start + 4096, 1));
        // Nothing outside the head, the partitions and the backup GPT.
        let gap_after_p3 = p3_start + p3_len;
        assert!(!m.used.contains(gap_after_p3, 1) || gap_after_p3 >= (64 << 20) - 33 * 512);
    }
}
