//! FAT12, FAT16 and FAT32 (EFI system partitions, boot partitions, USB media).
//!
//! Layout (Microsoft, "FAT: General Overview of On-Disk Format", 2000): the boot sector
//! with its BIOS parameter block (BPB), the rest of the reserved sectors (FAT32 keeps its
//! FSInfo sector and a backup boot sector there), `NumFATs` copies of the file allocation
//! table, on FAT12/16 a fixed root directory, then the data clusters, numbered from 2.
//!
//! Used: everything before the first data cluster, plus every cluster whose entry in the
//! active FAT is nonzero (allocated, end of chain, and bad-cluster marks all count: a bad
//! cluster costs little to send and we never guess). The FAT is read in bounded pieces.
//!
//! FAT has no magic number: the BPB's sanity is its signature. A sector whose BPB does not
//! pass those checks is "not FAT" (`Ok(None)`), not "corrupt FAT"; a BPB that passes them but
//! whose geometry does not add up is `Corrupt`.

use crate::fs::FsKind;
use crate::read::le;
use crate::{corrupt, ExtentSet, MetaError, Region};

/// The boot sector is read as 512 bytes whatever the logical sector size: every BPB field
/// and the 0x55AA signature sit in the first 512 bytes.
const BOOT_SECTOR_LEN: usize = 512;
/// OEM id of an NTFS boot sector, whose BPB resembles FAT's.
const NTFS_OEM_ID: &[u8; 8] = b"NTFS    ";
/// Microsoft's rule: fewer clusters than this is FAT12 (the type depends on the count alone).
const FAT12_MAX_CLUSTERS: u64 = 4085;
/// Fewer clusters than this (and not FAT12) is FAT16; otherwise FAT32.
const FAT16_MAX_CLUSTERS: u64 = 65525;
/// FAT32 entries are 28 bits, and 0x0FFFFFF7 and up are the bad mark and end-of-chain
/// values, so cluster numbers stop at 0x0FFFFFF6: at most 0x0FFFFFF5 clusters (numbered 2..).
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF5;
/// The 28 bits of a FAT32 entry that hold a value (the top four are reserved).
const FAT32_ENTRY_MASK: u32 = 0x0FFF_FFFF;
/// FAT32 values from here up mark the end of a chain.
const FAT32_END_OF_CHAIN: u32 = 0x0FFF_FFF8;
/// The FAT32 bad-cluster mark.
const FAT32_BAD_CLUSTER: u32 = 0x0FFF_FFF7;
/// FAT entries read at once: 1 MiB of FAT32 entries. Even, so that a FAT12 piece always
/// starts on a whole byte (two 12-bit entries fill three bytes).
const FAT_PIECE_ENTRIES: u64 = 256 * 1024;
/// A directory holds at most 65536 entries of 32 bytes (Microsoft's spec; Linux enforces the
/// same), which bounds the FAT32 root directory's cluster chain.
const MAX_DIR_BYTES: u64 = 65536 * 32;

/// Which FAT width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    Fat12,
    Fat16,
    Fat32,
}

/// A boot sector's geometry, checked to add up.
#[derive(Debug, Clone)]
struct Geometry {
    width: Width,
    bytes_per_sector: u64,
    /// Bytes per cluster.
    cluster: u64,
    /// Sectors in the volume (what the BPB says).
    total_sectors: u64,
    /// The byte where the active FAT starts.
    active_fat: u64,
    /// Bytes in one FAT copy.
    fat_bytes: u64,
    /// The byte where cluster 2 starts (everything before is metadata).
    data_start: u64,
    /// Data clusters, numbered 2 ..= clusters + 1.
    clusters: u64,
    media: u8,
    /// FAT32: the root directory's first cluster.
    root_cluster: u32,
}

impl Geometry {
    /// Bytes of FAT that the cluster entries fill (entries 0 and 1 are reserved).
    fn entries_bytes(&self) -> u64 {
        let entries = self.clusters + 2;
        match self.width {
            Width::Fat12 => (entries * 3).div_ceil(2),
            Width::Fat16 => entries * 2,
            Width::Fat32 => entries * 4,
        }
    }

    fn kind(&self) -> FsKind {
        match self.width {
            Width::Fat12 => FsKind::Fat12,
            Width::Fat16 => FsKind::Fat16,
            Width::Fat32 => FsKind::Fat32,
        }
    }
}

/// True when the partition-table area of a boot sector holds an MBR table: every boot
/// indicator is 0x00 or 0x80 and at least one entry has a type, a start and a size. FAT boot
/// code (mkfs.fat leaves zeros there; Windows puts its messages there) never looks like this.
fn has_mbr_entries(b: &[u8]) -> bool {
    const TABLE: usize = 446;
    let mut any = false;
    for i in 0..4 {
        let e = TABLE + 16 * i;
        let (Some(&boot), Some(&kind)) = (b.get(e), b.get(e + 4)) else {
            return false;
        };
        if boot != 0x00 && boot != 0x80 {
            return false;
        }
        let start = le::u32(b, e + 8).unwrap_or(0);
        let len = le::u32(b, e + 12).unwrap_or(0);
        any |= kind != 0 && start != 0 && len != 0;
    }
    any
}

/// Reads the BPB. `Ok(None)`: not a FAT boot sector. `Err`: a FAT boot sector whose
/// geometry does not add up, or uses a FAT32 version this code does not know.
fn parse(b: &[u8]) -> Result<Option<Geometry>, MetaError> {
    let byte = |at: usize| b.get(at).copied().unwrap_or(0);
    // The identity checks: a jump instruction, the signature, an OEM id that is not
    // NTFS's, and BPB fields in the ranges the spec allows.
    let jump = (byte(0) == 0xEB && byte(2) == 0x90) || byte(0) == 0xE9;
    if !jump || le::u16(b, 510)? != 0xAA55 || b.get(3..11) == Some(&NTFS_OEM_ID[..]) {
        return Ok(None);
    }
    let bytes_per_sector = le::u16(b, 11)?;
    let sectors_per_cluster = byte(13);
    let reserved = le::u16(b, 14)?;
    let fats = byte(16);
    let root_entries = le::u16(b, 17)?;
    let total16 = le::u16(b, 19)?;
    let media = byte(21);
    let fat16_size = le::u16(b, 22)?;
    let total32 = le::u32(b, 32)?;
    let fat32_size = le::u32(b, 36)?;
    let total = if total16 != 0 {
        u64::from(total16)
    } else {
        u64::from(total32)
    };
    let fat_size = if fat16_size != 0 {
        u64::from(fat16_size)
    } else {
        u64::from(fat32_size)
    };
    let sane = matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && sectors_per_cluster <= 128
        && reserved >= 1
        && (1..=4).contains(&fats)
        && (media == 0xF0 || media >= 0xF8)
        && total > 0
        && fat_size > 0;
    if !sane || has_mbr_entries(b) {
        return Ok(None);
    }

    // From here on it is a FAT boot sector: what does not add up is corrupt.
    if total16 != 0 && total32 != 0 && u64::from(total32) != total {
        return Err(corrupt!(
            "fat boot sector: 16-bit total sectors {total16} and 32-bit total sectors {total32} disagree"
        ));
    }
    let bps = u64::from(bytes_per_sector);
    let root_dir_sectors = (u64::from(root_entries) * 32).div_ceil(bps);
    // Each term is at most 2^32 * 4: the sum cannot overflow a u64.
    let meta_sectors = u64::from(reserved) + u64::from(fats) * fat_size + root_dir_sectors;
    let data_sectors = total.checked_sub(meta_sectors).ok_or_else(|| {
        corrupt!(
            "fat boot sector: {meta_sectors} sectors of reserved area, FATs and root directory do not fit in {total} sectors"
        )
    })?;
    let clusters = data_sectors / u64::from(sectors_per_cluster);
    if clusters == 0 {
        return Err(corrupt!(
            "fat boot sector: no data clusters ({data_sectors} data sectors, {sectors_per_cluster} sectors per cluster)"
        ));
    }
    let width = if clusters < FAT12_MAX_CLUSTERS {
        Width::Fat12
    } else if clusters < FAT16_MAX_CLUSTERS {
        Width::Fat16
    } else {
        Width::Fat32
    };

    let mut active = 0u64;
    let mut root_cluster = 0u32;
    match width {
        Width::Fat12 | Width::Fat16 => {
            if root_entries == 0 || fat16_size == 0 {
                return Err(corrupt!(
                    "fat boot sector: {clusters} clusters make it FAT12/16, but it has {root_entries} root entries and a 16-bit FAT size of {fat16_size} (FAT32 fields)"
                ));
            }
        }
        Width::Fat32 => {
            if root_entries != 0 || fat16_size != 0 {
                return Err(corrupt!(
                    "fat32 boot sector: {root_entries} root entries and a 16-bit FAT size of {fat16_size}, both must be 0"
                ));
            }
            if clusters > FAT32_MAX_CLUSTERS {
                return Err(corrupt!(
                    "fat32 boot sector: {clusters} clusters, more than FAT32's {FAT32_MAX_CLUSTERS}"
                ));
            }
            let version = le::u16(b, 42)?;
            if version != 0 {
                return Err(MetaError::Unsupported(format!(
                    "fat32 version {:#06x} (only version 0 is defined)",
                    version
                )));
            }
            let flags = le::u16(b, 40)?;
            // Bit 7: the FATs are not mirrored, and bits 0-3 name the one in use.
            if flags & 0x80 != 0 {
                active = u64::from(flags & 0x0F);
                if active >= u64::from(fats) {
                    return Err(corrupt!(
                        "fat32 boot sector: active FAT {active}, but there are {fats} FATs"
                    ));
                }
            }
            root_cluster = le::u32(b, 44)?;
            if root_cluster < 2 || u64::from(root_cluster) > clusters + 1 {
                return Err(corrupt!(
                    "fat32 boot sector: root directory cluster {root_cluster} is not one of clusters 2..={}",
                    clusters + 1
                ));
            }
            // The FSInfo and backup boot sectors must lie in the reserved area (which is
            // sent whole); 0 and 0xFFFF mean "none".
            for (name, at) in [("FSInfo", 48), ("backup boot", 50)] {
                let sector = le::u16(b, at)?;
                if sector != 0 && sector != 0xFFFF && sector >= reserved {
                    return Err(corrupt!(
                        "fat32 boot sector: {name} sector {sector} is outside the {reserved} reserved sectors"
                    ));
                }
            }
        }
    }
    let geometry = Geometry {
        width,
        bytes_per_sector: bps,
        cluster: bps * u64::from(sectors_per_cluster),
        total_sectors: total,
        active_fat: (u64::from(reserved) + active * fat_size) * bps,
        fat_bytes: fat_size * bps,
        data_start: meta_sectors * bps,
        clusters,
        media,
        root_cluster,
    };
    if geometry.entries_bytes() > geometry.fat_bytes {
        return Err(corrupt!(
            "fat boot sector: {} clusters need {} bytes of FAT, but a FAT is {} bytes",
            clusters,
            geometry.entries_bytes(),
            geometry.fat_bytes
        ));
    }
    Ok(Some(geometry))
}

fn boot_sector(region: &Region) -> Result<Option<Vec<u8>>, MetaError> {
    if region.len() < BOOT_SECTOR_LEN as u64 {
        return Ok(None);
    }
    region
        .read_vec("fat boot sector", 0, BOOT_SECTOR_LEN)
        .map(Some)
}

/// Recognises a FAT boot sector and tells FAT12, FAT16 and FAT32 apart by cluster count.
pub fn probe(region: &Region) -> Result<Option<FsKind>, MetaError> {
    let Some(b) = boot_sector(region)? else {
        return Ok(None);
    };
    Ok(parse(&b)?.map(|g| g.kind()))
}

/// The value of entry `n` of a FAT piece that starts at entry `first`.
fn entry(width: Width, piece: &[u8], first: u64, n: u64) -> Result<u32, MetaError> {
    let i = n.saturating_sub(first);
    let at = |x: u64| usize::try_from(x).map_err(|_| corrupt!("fat entry {n} out of reach"));
    Ok(match width {
        Width::Fat12 => {
            // Entry n starts at byte n * 3 / 2 of the FAT (rounded down).
            let v = le::u16(piece, at((n * 3 / 2).saturating_sub(first * 3 / 2))?)?;
            u32::from(if n.is_multiple_of(2) {
                v & 0x0FFF
            } else {
                v >> 4
            })
        }
        Width::Fat16 => u32::from(le::u16(piece, at(i * 2)?)?),
        Width::Fat32 => le::u32(piece, at(i * 4)?)? & FAT32_ENTRY_MASK,
    })
}

/// Reads FAT entries `first .. first + count` of the active FAT.
fn read_piece(region: &Region, g: &Geometry, first: u64, count: u64) -> Result<Vec<u8>, MetaError> {
    let (start, end) = match g.width {
        Width::Fat12 => (first * 3 / 2, ((first + count) * 3).div_ceil(2)),
        Width::Fat16 => (first * 2, (first + count) * 2),
        Width::Fat32 => (first * 4, (first + count) * 4),
    };
    // end <= entries_bytes <= fat_bytes, and a piece is at most FAT_PIECE_ENTRIES * 4.
    let len = usize::try_from(end - start).map_err(|_| corrupt!("fat piece too large"))?;
    region.read_vec("the file allocation table", g.active_fat + start, len)
}

/// Follows the FAT32 root directory's chain: each link must be an allocated cluster of the
/// volume, and the chain must end within the largest directory FAT allows.
fn check_root_chain(region: &Region, g: &Geometry) -> Result<(), MetaError> {
    let max_links = MAX_DIR_BYTES / g.cluster + 1;
    let mut cluster = g.root_cluster;
    for _ in 0..max_links {
        let piece = read_piece(region, g, u64::from(cluster), 1)?;
        let next = entry(g.width, &piece, u64::from(cluster), u64::from(cluster))?;
        if next >= FAT32_END_OF_CHAIN {
            return Ok(());
        }
        if next == 0 || next == FAT32_BAD_CLUSTER || next < 2 || u64::from(next) > g.clusters + 1 {
            return Err(corrupt!(
                "fat32 root directory: cluster {cluster} links to {next:#x}, which is not an allocated cluster of the volume (clusters 2..={})",
                g.clusters + 1
            ));
        }
        cluster = next;
    }
    Err(corrupt!(
        "fat32 root directory: chain from cluster {} is longer than {max_links} clusters (a directory holds at most {MAX_DIR_BYTES} bytes), or loops",
        g.root_cluster
    ))
}

/// The used bytes: reserved sectors, every FAT copy, the FAT12/16 root directory, and every
/// cluster with a nonzero FAT entry.
pub fn used(region: &Region) -> Result<ExtentSet, MetaError> {
    let Some(b) = boot_sector(region)? else {
        return Err(corrupt!(
            "fat: the region ({} bytes) is too small for a boot sector",
            region.len()
        ));
    };
    let Some(g) = parse(&b)? else {
        return Err(corrupt!("fat boot sector: the BPB is not a FAT BPB"));
    };
    // At most 2^32 sectors of 4096 bytes: no overflow.
    let volume_bytes = g.total_sectors * g.bytes_per_sector;
    if volume_bytes > region.len() {
        return Err(corrupt!(
            "fat boot sector: {} sectors of {} bytes ({volume_bytes} bytes) do not fit in the partition's {} bytes",
            g.total_sectors,
            g.bytes_per_sector,
            region.len()
        ));
    }
    // data_start + clusters * cluster <= total sectors by construction; the FAT lies before
    // data_start. Checked once more because everything below relies on it.
    region.check(
        "the FAT data region",
        0,
        g.data_start + g.clusters * g.cluster,
    )?;

    let first = read_piece(region, &g, 0, 2)?;
    let media_entry = entry(g.width, &first, 0, 0)?;
    if media_entry & 0xFF != u32::from(g.media) {
        return Err(corrupt!(
            "fat: FAT[0] is {media_entry:#x}, whose low byte does not match the boot sector's media byte {:#04x}",
            g.media
        ));
    }

    let mut set = ExtentSet::range(0, g.data_start);
    let end = g.clusters + 2;
    let mut run: Option<u64> = None; // first cluster of the current run of used clusters
    let mut piece_first = 0u64;
    while piece_first < end {
        let count = FAT_PIECE_ENTRIES.min(end - piece_first);
        let piece = read_piece(region, &g, piece_first, count)?;
        for n in piece_first.max(2)..piece_first + count {
            let in_use = entry(g.width, &piece, piece_first, n)? != 0;
            match (in_use, run) {
                (true, None) => run = Some(n),
                (false, Some(s)) => {
                    set.insert(g.data_start + (s - 2) * g.cluster, (n - s) * g.cluster);
                    run = None;
                }
                _ => {}
            }
        }
        piece_first += count;
    }
    if let Some(s) = run {
        set.insert(g.data_start + (s - 2) * g.cluster, (end - s) * g.cluster);
    }
    if g.width == Width::Fat32 {
        check_root_chain(region, &g)?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileDisk;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::testutil::{
        assert_free_space_is_stale, replicate, run, run_with_input, sparse_image, Rng,
    };

    /// A sparse image of `mib` MiB made by mkfs.fat with `args`.
    fn mkfs(dir: &Path, name: &str, mib: u64, args: &[&str]) -> PathBuf {
        let img = sparse_image(dir, name, mib << 20);
        run(Command::new("mkfs.fat").args(args).arg(&img));
        img
    }

    /// Deterministic pseudo-random bytes, so free space gets non-zero stale data.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        Rng(seed | 1).bytes(len)
    }

    /// Copies files in with mtools, deletes every other one (leaving stale data in free
    /// clusters), and returns the names and contents of those kept.
    fn populate(img: &Path, dir: &Path, files: usize, size: usize) -> Vec<(String, Vec<u8>)> {
        let i = img.to_str().unwrap();
        run(Command::new("mmd").args(["-i", i, "::sub"]));
        let mut kept = Vec::new();
        for n in 0..files {
            let name = format!("f{n}.bin");
            let data = noise(n as u64 + 1, size + n * 977);
            let src = dir.join(&name);
            std::fs::write(&src, &data).unwrap();
            let dest = if n % 3 == 0 {
                format!("::sub/{name}")
            } else {
                format!("::{name}")
            };
            run(Command::new("mcopy").args(["-i", i]).arg(&src).arg(&dest));
            kept.push((dest, data));
        }
        let mut out = Vec::new();
        for (n, (dest, data)) in kept.into_iter().enumerate() {
            if n % 2 == 1 {
                run(Command::new("mdel").args(["-i", i, &dest]));
            } else {
                out.push((dest, data));
            }
        }
        out
    }

    /// (used, total) clusters as `fsck.fat -n -v` counts them.
    fn fsck_clusters(img: &Path) -> (u64, u64) {
        let out = run(Command::new("fsck.fat").arg("-n").arg("-v").arg(img));
        let line = out
            .lines()
            .find(|l| l.contains(" clusters") && l.contains('/'))
            .unwrap_or_else(|| panic!("no cluster summary in fsck.fat output:\n{out}"));
        let counts = line.rsplit(", ").next().unwrap();
        let (u, rest) = counts.split_once('/').unwrap();
        let t = rest.split_whitespace().next().unwrap();
        (u.trim().parse().unwrap(), t.parse().unwrap())
    }

    /// Checks a populated image end to end: the kind, used clusters == fsck.fat's count,
    /// no used cluster outside the data area, and a copy of only the used bytes is clean
    /// under fsck.fat and holds the same files.
    fn check_image(img: &Path, kind: FsKind, kept: &[(String, Vec<u8>)], dir: &Path) {
        let disk = FileDisk::new(std::fs::File::open(img).unwrap()).unwrap();
        let region = Region::whole(&disk);
        assert_eq!(probe(&region).unwrap(), Some(kind));
        let used = used(&region).unwrap();
        let b = region.read_vec("t", 0, 512).unwrap();
        let g = parse(&b).unwrap().unwrap();
        assert!(used.contains(0, g.data_start), "metadata area is used");
        let data = used.clip(g.data_start, u64::MAX);
        assert_eq!(data.total() % g.cluster, 0);
        let ours = data.total() / g.cluster;
        let (tool_used, tool_total) = fsck_clusters(img);
        assert_eq!(g.clusters, tool_total, "cluster count agrees with fsck.fat");
        assert_eq!(ours, tool_used, "used clusters agree with fsck.fat");
        eprintln!(
            "{kind:?} {}: used {} bytes ({} metadata + {ours} clusters of {}); fsck.fat: {tool_used}/{tool_total} clusters used",
            img.display(),
            used.total(),
            g.data_start,
            g.cluster
        );

        // Free space really holds stale data, so the comparison means something.
        assert_free_space_is_stale(&region, &used);

        let copy = dir.join("copy.img");
        replicate(img, &used, &copy);
        run(Command::new("fsck.fat").arg("-n").arg(&copy));
        let i = copy.to_str().unwrap();
        for (name, data) in kept {
            let got = Command::new("mcopy")
                .args(["-n", "-i", i, name, "-"])
                .output()
                .unwrap();
            assert!(got.status.success(), "mcopy {name} from the copy");
            assert!(got.stdout == *data, "{name} differs in the copy");
        }
    }

    #[test]
    fn fat12_agrees_with_fsck() {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(dir.path(), "f12.img", 4, &["-F", "12"]);
        let kept = populate(&img, dir.path(), 8, 100_000);
        check_image(&img, FsKind::Fat12, &kept, dir.path());
    }

    #[test]
    fn fat16_agrees_with_fsck() {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(dir.path(), "f16.img", 64, &["-F", "16"]);
        let kept = populate(&img, dir.path(), 12, 1_000_000);
        check_image(&img, FsKind::Fat16, &kept, dir.path());
    }

    #[test]
    fn fat32_agrees_with_fsck() {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(
            dir.path(),
            "f32.img",
            300,
            &["-F", "32", "-S", "512", "-s", "1"],
        );
        let kept = populate(&img, dir.path(), 12, 1_500_000);
        check_image(&img, FsKind::Fat32, &kept, dir.path());
    }

    #[test]
    fn fat32_4k_sectors_and_large_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(
            dir.path(),
            "f32k.img",
            300,
            &["-F", "32", "-S", "4096", "-s", "1"],
        );
        let kept = populate(&img, dir.path(), 6, 700_000);
        check_image(&img, FsKind::Fat32, &kept, dir.path());
    }

    #[test]
    fn empty_fat32_uses_only_metadata_and_root() {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(
            dir.path(),
            "e.img",
            300,
            &["-F", "32", "-S", "512", "-s", "1"],
        );
        let disk = FileDisk::new(std::fs::File::open(&img).unwrap()).unwrap();
        let region = Region::whole(&disk);
        let used = used(&region).unwrap();
        let g = parse(&region.read_vec("t", 0, 512).unwrap())
            .unwrap()
            .unwrap();
        // Metadata plus the root directory's one cluster.
        assert_eq!(used.total(), g.data_start + g.cluster);
        assert_eq!(fsck_clusters(&img).0, 1);
    }

    #[test]
    fn mbr_sector_is_not_fat_but_its_partition_is() {
        let dir = tempfile::tempdir().unwrap();
        let img = sparse_image(dir.path(), "mbr.img", 64 << 20);
        run_with_input(
            Command::new("sfdisk").arg("-q").arg(&img),
            "label: dos\nstart=2048, type=e\n",
        );
        run(Command::new("mkfs.fat")
            .args(["-F", "16", "--offset", "2048"])
            .arg(&img));
        let disk = FileDisk::new(std::fs::File::open(&img).unwrap()).unwrap();
        assert_eq!(probe(&Region::whole(&disk)).unwrap(), None);
        let part = Region::new(&disk, 2048 * 512, (64 << 20) - 2048 * 512).unwrap();
        assert_eq!(probe(&part).unwrap(), Some(FsKind::Fat16));
        assert!(used(&part).is_ok());

        // A sector with both a valid BPB and partition entries belongs to the table code.
        let mut both = part.read_vec("t", 0, 512).unwrap();
        let mbr = Region::whole(&disk).read_vec("t", 0, 512).unwrap();
        both[446..510].copy_from_slice(&mbr[446..510]);
        assert_eq!(parse(&both).unwrap().map(|g| g.width), None);
    }

    /// An in-memory FAT16 image with a few files, for the corruption tests.
    fn fat16_bytes() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(dir.path(), "c.img", 16, &["-F", "16"]);
        populate(&img, dir.path(), 4, 50_000);
        std::fs::read(&img).unwrap()
    }

    #[test]
    fn rejects_non_power_of_two_cluster_size() {
        // Sectors per cluster 3 is not a FAT BPB: FAT has no magic number, so the probe
        // says "not FAT" rather than "corrupt FAT" (the map then sends the partition whole,
        // the same outcome, and on a whole disk the table code gets its turn).
        let mut img = fat16_bytes();
        img[13] = 3;
        let region = Region::whole(&img);
        assert_eq!(probe(&region).unwrap(), None);
        assert!(matches!(used(&region), Err(MetaError::Corrupt(_))));
    }

    #[test]
    fn rejects_media_byte_mismatch() {
        let mut img = fat16_bytes();
        let reserved = u16::from_le_bytes([img[14], img[15]]) as usize;
        img[reserved * 512] = 0xF0; // FAT[0] of the first FAT; the BPB says 0xF8
        let err = used(&Region::whole(&img)).unwrap_err();
        assert!(
            matches!(&err, MetaError::Corrupt(m) if m.contains("media")),
            "{err}"
        );
    }

    #[test]
    fn rejects_volume_larger_than_partition() {
        let img = fat16_bytes();
        let region = Region::new(&img, 0, img.len() as u64 - 4096).unwrap();
        assert_eq!(probe(&region).unwrap(), Some(FsKind::Fat16));
        let err = used(&region).unwrap_err();
        assert!(
            matches!(&err, MetaError::Corrupt(m) if m.contains("do not fit")),
            "{err}"
        );
    }

    #[test]
    fn rejects_geometry_that_does_not_add_up() {
        let mut img = fat16_bytes();
        img[22..24].copy_from_slice(&0xFFFFu16.to_le_bytes()); // FAT size past the volume
        assert!(matches!(
            probe(&Region::whole(&img)),
            Err(MetaError::Corrupt(_))
        ));
        let mut img = fat16_bytes();
        img[22..24].copy_from_slice(&1u16.to_le_bytes()); // a FAT too small for the clusters
        assert!(matches!(
            probe(&Region::whole(&img)),
            Err(MetaError::Corrupt(m)) if m.contains("bytes of FAT")
        ));
    }

    #[test]
    fn rejects_ntfs_and_short_regions() {
        let mut img = fat16_bytes();
        img[3..11].copy_from_slice(b"NTFS    ");
        assert_eq!(probe(&Region::whole(&img)).unwrap(), None);
        let img = fat16_bytes();
        assert_eq!(probe(&Region::new(&img, 0, 511).unwrap()).unwrap(), None);
    }

    #[test]
    fn rejects_fat32_root_chain_into_free_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(
            dir.path(),
            "r.img",
            40,
            &["-F", "32", "-S", "512", "-s", "1"],
        );
        let mut img = std::fs::read(&img).unwrap();
        let g = parse(&img[..512]).unwrap().unwrap();
        // Point the root directory at a free cluster.
        let free = g.root_cluster + 100;
        img[44..48].copy_from_slice(&free.to_le_bytes());
        let err = used(&Region::whole(&img)).unwrap_err();
        assert!(
            matches!(&err, MetaError::Corrupt(m) if m.contains("root directory")),
            "{err}"
        );
    }

    #[test]
    fn random_corruption_never_panics() {
        let clean = fat16_bytes();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // The boot sector, the FATs and the root directory sit in the first 64 KiB; flips
        // there hit parsed fields, flips further in (the first 2 MiB) hit FAT-irrelevant data.
        let mut img = clean.clone();
        for round in 0..400 {
            let span = if round % 2 == 0 { 64 << 10 } else { 2 << 20 };
            let flips: Vec<(usize, u8)> = (0..1 + rng.next() % 8)
                .map(|_| ((rng.next() % span) as usize, 1 << (rng.next() % 8)))
                .collect();
            for &(at, bit) in &flips {
                img[at] ^= bit;
            }
            let region = Region::whole(&img);
            let _ = probe(&region);
            let _ = used(&region);
            for &(at, bit) in flips.iter().rev() {
                img[at] ^= bit;
            }
        }
        assert_eq!(img, clean);
    }
}
