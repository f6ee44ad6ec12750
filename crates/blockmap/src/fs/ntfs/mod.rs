//! NTFS (Windows servers' volumes): used clusters from `$Bitmap`.
//!
//! The boot sector says where `$MFT` starts. Record 0 (`$MFT` itself) maps the MFT; through
//! it we read records 1 (`$MFTMirr`), 2 (`$LogFile`), 3 (`$Volume`) and 6 (`$Bitmap`), each
//! checked (magic, update sequence fixups, in-use base record, its number and its name). The
//! unnamed `$DATA` of `$Bitmap` holds one bit per cluster; it is streamed in bounded pieces
//! and every set bit is a used cluster. Cluster 0 (the boot sector), the clusters of `$MFT`,
//! `$MFTMirr`, `$LogFile` and `$Bitmap` must be among them, or the bitmap is not trusted.
//! The backup boot sector (one sector past the volume's sectors, normally the partition's
//! last sector), the partition's last sector and the sectors past the last whole cluster are
//! added: they belong to no cluster.
//!
//! Not read (`Unsupported`, so the partition is sent whole): a volume whose `$LogFile` holds
//! unapplied transactions (see [`logfile`]), a `$Bitmap` whose data continues in other MFT
//! records or is compressed/encrypted/sparse, unknown `$Volume` versions. A volume marked
//! dirty (chkdsk due) is `Corrupt`: its own metadata says it is not consistent.

mod boot;
mod logfile;
mod record;
mod runlist;

use boot::Boot;
use record::Record;
use runlist::Run;

use crate::fs::FsKind;
use crate::read::le;
use crate::{corrupt, ExtentSet, MetaError, Region};

/// MFT record numbers of the system files read here (fixed by the format).
const MFT: u32 = 0;
const MFTMIRR: u32 = 1;
const LOGFILE: u32 = 2;
const VOLUME: u32 = 3;
const BITMAP: u32 = 6;
/// Records 0-15 are reserved for system files: a smaller MFT is not a valid volume.
const MIN_MFT_RECORDS: u64 = 16;
/// Bytes of $Bitmap read at once (8 Mi clusters).
const BITMAP_PIECE: u64 = 1 << 20;
/// $VOLUME_INFORMATION flag: chkdsk must run.
const VOLUME_IS_DIRTY: u16 = 0x0001;

fn boot_sector(region: &Region) -> Result<Option<Vec<u8>>, MetaError> {
    if region.len() < boot::BOOT_SECTOR_LEN as u64 {
        return Ok(None);
    }
    region
        .read_vec("ntfs boot sector", 0, boot::BOOT_SECTOR_LEN)
        .map(Some)
}

/// Recognises an NTFS boot sector: its OEM id and signature, then a sane BPB (a sector with
/// NTFS's OEM id whose BPB fails the checks is `Corrupt`).
pub fn probe(region: &Region) -> Result<Option<FsKind>, MetaError> {
    match boot_sector(region)? {
        Some(b) if boot::is_ntfs(&b) => boot::parse(&b).map(|_| Some(FsKind::Ntfs)),
        _ => Ok(None),
    }
}

/// A system file's data: its runs (first segment) and sizes, checked against each other.
struct FileData {
    runs: Vec<Run>,
    size: u64,
    initialized: u64,
}

/// Reads a system file's unnamed $DATA. `complete`: the runs in the base record must map all
/// of it (otherwise it continues in extension records, which this code does not follow).
fn file_data(rec: &Record, boot: &Boot, name: &str, complete: bool) -> Result<FileData, MetaError> {
    let (nr, pairs) = rec.data()?;
    let runs = runlist::decode(pairs, boot.clusters, name)?;
    let mapped = runlist::clusters(&runs);
    if nr.lowest_vcn != 0 || nr.highest_vcn.checked_add(1) != Some(mapped) {
        return Err(corrupt!(
            "ntfs {name}: $DATA covers VCNs {}..={} but its runs map {mapped} clusters",
            nr.lowest_vcn,
            nr.highest_vcn
        ));
    }
    if nr.initialized > nr.size
        || nr.size > nr.allocated
        || !nr.allocated.is_multiple_of(boot.cluster)
    {
        return Err(corrupt!(
            "ntfs {name}: $DATA sizes do not add up (initialized {}, size {}, allocated {})",
            nr.initialized,
            nr.size,
            nr.allocated
        ));
    }
    let allocated = nr.allocated / boot.cluster;
    if mapped > allocated {
        return Err(corrupt!(
            "ntfs {name}: runs map {mapped} clusters, more than the {allocated} allocated"
        ));
    }
    if complete && mapped < allocated {
        return Err(MetaError::Unsupported(format!(
            "ntfs {name}: $DATA continues in other MFT records ({mapped} of {allocated} clusters in the base record)"
        )));
    }
    Ok(FileData {
        runs,
        size: nr.size,
        initialized: nr.initialized,
    })
}

/// Reads MFT record `number` through the MFT's runs and checks it is the system file `name`.
fn read_record(
    region: &Region,
    boot: &Boot,
    mft: &[Run],
    number: u32,
    name: &'static str,
) -> Result<Record, MetaError> {
    // boot.record <= MAX_RECORD (64 KiB), checked when the boot sector was parsed.
    let mut buf = vec![0u8; boot.record as usize];
    let offset = u64::from(number) * boot.record;
    runlist::read(region, mft, boot.cluster, offset, &mut buf, "$MFT")?;
    let rec = Record::parse(buf, number, name)?;
    if !rec.has_name(name) {
        return Err(corrupt!(
            "ntfs MFT record {number}: its $FILE_NAME is not {name}"
        ));
    }
    Ok(rec)
}

/// Checks $Volume's version and dirty flag.
fn check_volume(rec: &Record) -> Result<(), MetaError> {
    let attr = rec
        .attrs(record::VOLUME_INFORMATION)
        .next()
        .ok_or_else(|| corrupt!("ntfs $Volume: no $VOLUME_INFORMATION"))?;
    let v = rec.value(attr)?;
    let (major, minor) = (v.get(8).copied(), v.get(9).copied());
    let flags = le::u16(v, 10)?;
    match (major, minor) {
        (Some(3), Some(0 | 1)) | (Some(1), Some(2)) => {}
        _ => {
            return Err(MetaError::Unsupported(format!(
                "ntfs version {}.{}",
                major.unwrap_or(0),
                minor.unwrap_or(0)
            )))
        }
    }
    if flags & VOLUME_IS_DIRTY != 0 {
        return Err(corrupt!(
            "ntfs $Volume is marked dirty (flags {flags:#06x}): chkdsk is due, so $Bitmap may not match the files"
        ));
    }
    Ok(())
}

/// Streams the first `clusters` bits of $Bitmap and returns the set clusters as bytes.
fn stream_bitmap(region: &Region, boot: &Boot, runs: &[Run]) -> Result<ExtentSet, MetaError> {
    let cs = boot.cluster;
    let need = boot.clusters.div_ceil(8);
    let mut set = ExtentSet::new();
    let mut open: Option<u64> = None; // first cluster of the current run of set bits
    let mut buf = vec![0u8; BITMAP_PIECE.min(need) as usize];
    let mut pos = 0u64;
    while pos < need {
        let n = (need - pos).min(BITMAP_PIECE) as usize;
        let piece = buf.get_mut(..n).unwrap_or_default();
        runlist::read(region, runs, cs, pos, piece, "$Bitmap")?;
        for (i, &byte) in piece.iter().enumerate() {
            if (byte == 0 && open.is_none()) || (byte == 0xFF && open.is_some()) {
                continue;
            }
            let base = (pos + i as u64) * 8;
            for bit in 0..8u64 {
                let c = base + bit;
                if c >= boot.clusters {
                    break;
                }
                match (byte & (1 << bit) != 0, open) {
                    (true, None) => open = Some(c),
                    (false, Some(s)) => {
                        set.insert(s * cs, (c - s) * cs);
                        open = None;
                    }
                    _ => {}
                }
            }
        }
        pos += n as u64;
    }
    if let Some(s) = open {
        set.insert(s * cs, (boot.clusters - s) * cs);
    }
    Ok(set)
}

/// The used bytes: every cluster $Bitmap marks, the boot sector and its backup.
pub fn used(region: &Region) -> Result<ExtentSet, MetaError> {
    let b = boot_sector(region)?
        .filter(|b| boot::is_ntfs(b))
        .ok_or_else(|| corrupt!("ntfs: no NTFS boot sector"))?;
    let boot = boot::parse(&b)?;
    let volume = boot.total_sectors.checked_mul(boot.sector);
    if volume.is_none_or(|v| v > region.len()) {
        return Err(corrupt!(
            "ntfs boot sector: {} sectors of {} bytes do not fit in the partition's {} bytes",
            boot.total_sectors,
            boot.sector,
            region.len()
        ));
    }
    let cs = boot.cluster;

    // $MFT's record 0 sits where the boot sector says; its $DATA then maps the MFT.
    let first = [Run {
        vcn: 0,
        lcn: boot.mft_lcn,
        len: boot.record.div_ceil(cs),
    }];
    if boot.mft_lcn + first[0].len > boot.clusters {
        return Err(corrupt!(
            "ntfs boot sector: $MFT at cluster {} runs past the volume's {} clusters",
            boot.mft_lcn,
            boot.clusters
        ));
    }
    let mft_rec = read_record(region, &boot, &first, MFT, "$MFT")?;
    let mft = file_data(&mft_rec, &boot, "$MFT", false)?;
    let min_mft = MIN_MFT_RECORDS * boot.record;
    if mft.runs.first().map(|r| r.lcn) != Some(boot.mft_lcn)
        || mft.initialized < min_mft
        || runlist::clusters(&mft.runs).saturating_mul(cs) < min_mft
    {
        return Err(corrupt!(
            "ntfs $MFT: its $DATA does not start at the boot sector's cluster {} or maps fewer than {MIN_MFT_RECORDS} records ({} bytes initialized)",
            boot.mft_lcn,
            mft.initialized
        ));
    }

    let mirr = file_data(
        &read_record(region, &boot, &mft.runs, MFTMIRR, "$MFTMirr")?,
        &boot,
        "$MFTMirr",
        true,
    )?;
    if mirr.runs.first().map(|r| r.lcn) != Some(boot.mftmirr_lcn) {
        return Err(corrupt!(
            "ntfs $MFTMirr: its $DATA does not start at the boot sector's cluster {}",
            boot.mftmirr_lcn
        ));
    }
    let log = file_data(
        &read_record(region, &boot, &mft.runs, LOGFILE, "$LogFile")?,
        &boot,
        "$LogFile",
        true,
    )?;
    logfile::check_clean(region, &log.runs, cs, log.initialized)?;
    check_volume(&read_record(region, &boot, &mft.runs, VOLUME, "$Volume")?)?;

    let bitmap = file_data(
        &read_record(region, &boot, &mft.runs, BITMAP, "$Bitmap")?,
        &boot,
        "$Bitmap",
        true,
    )?;
    let need = boot.clusters.div_ceil(8);
    if bitmap.initialized < need {
        return Err(corrupt!(
            "ntfs $Bitmap: {} bytes ({} initialized) cannot hold {} bits, one per cluster",
            bitmap.size,
            bitmap.initialized,
            boot.clusters
        ));
    }
    let mut set = stream_bitmap(region, &boot, &bitmap.runs)?;

    // The bitmap must mark what the volume's own structures occupy.
    let boot_cluster = Run {
        vcn: 0,
        lcn: 0,
        len: 1,
    };
    let system = [
        ("the boot sector", std::slice::from_ref(&boot_cluster)),
        ("$MFT", &mft.runs[..]),
        ("$MFTMirr", &mirr.runs[..]),
        ("$LogFile", &log.runs[..]),
        ("$Bitmap", &bitmap.runs[..]),
    ];
    for (name, runs) in system {
        for r in runs {
            if !set.contains(r.lcn * cs, r.len * cs) {
                return Err(corrupt!(
                    "ntfs $Bitmap marks clusters {}..{} of {name} free",
                    r.lcn,
                    r.lcn + r.len
                ));
            }
        }
    }

    // Sectors outside every cluster: those past the last whole cluster up to and including
    // the backup boot sector (one sector past the volume), and the partition's last sector.
    let len = region.len();
    let tail_start = boot.clusters * cs;
    let tail_end = boot
        .total_sectors
        .saturating_add(1)
        .saturating_mul(boot.sector)
        .min(len);
    let mut extra = ExtentSet::new();
    extra.insert(tail_start, tail_end.saturating_sub(tail_start));
    extra.insert(len.saturating_sub(boot.sector), boot.sector.min(len));
    set.union(&extra);
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileDisk;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::testutil::{assert_free_space_is_stale, replicate, run, sparse_image, Rng};

    /// A sparse image of `mib` MiB made by mkntfs with `args` (quick format: the rest of
    /// the image keeps whatever was there).
    fn mkntfs(dir: &Path, name: &str, mib: u64, args: &[&str]) -> PathBuf {
        let img = sparse_image(dir, name, mib << 20);
        run(Command::new("mkfs.ntfs")
            .args(["-f", "-F", "-q"])
            .args(args)
            .arg(&img));
        img
    }

    /// Deterministic pseudo-random bytes.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).bytes(len)
    }

    /// An ntfs-3g mount of an image, unmounted when dropped (and the loop device, which
    /// `mount -o loop` sets to clear itself, waited for).
    struct Mount {
        dir: PathBuf,
        img: PathBuf,
        options: String,
    }

    impl Mount {
        /// Mounts `img` at `dir`, or says why not (not root, no FUSE, no ntfs-3g).
        fn new(img: &Path, dir: &Path, options: &str) -> Result<Mount, String> {
            if run(Command::new("id").arg("-u")).trim() != "0" {
                return Err("not root".into());
            }
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let out = Command::new("mount")
                .args(["-t", "ntfs-3g", "-o", options])
                .arg(img)
                .arg(dir)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "mount -t ntfs-3g failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(Mount {
                dir: dir.to_owned(),
                img: img.to_owned(),
                options: options.to_owned(),
            })
        }
    }

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.dir).status();
            if self.options.contains("loop") {
                // Bounded wait for the auto-clearing loop device to let go of the image.
                for _ in 0..100 {
                    let out = Command::new("losetup").arg("-j").arg(&self.img).output();
                    if out.is_ok_and(|o| o.stdout.is_empty()) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }

    /// Writes files (some in a directory), deletes every other one and writes more, so free
    /// space holds stale data and allocations are fragmented. Returns the files kept.
    /// `None` when the machine cannot mount ntfs-3g (the reason is printed).
    fn populate(
        img: &Path,
        dir: &Path,
        files: usize,
        size: usize,
        test: &str,
    ) -> Option<Vec<(String, Vec<u8>)>> {
        let mnt = dir.join("mnt");
        let m = match Mount::new(img, &mnt, "loop") {
            Ok(m) => m,
            Err(why) => {
                crate::testutil::skip(test, why);
                return None;
            }
        };
        std::fs::create_dir_all(mnt.join("sub")).unwrap();
        let mut kept = Vec::new();
        for round in 0..2 {
            let mut written = Vec::new();
            for n in 0..files {
                let name = if n % 3 == 0 {
                    format!("sub/r{round}f{n}.bin")
                } else {
                    format!("r{round}f{n}.bin")
                };
                let data = noise((round * 1000 + n + 1) as u64, size + n * 4099);
                std::fs::write(mnt.join(&name), &data).unwrap();
                written.push((name, data));
            }
            for (n, (name, data)) in written.into_iter().enumerate() {
                if n % 2 == 1 {
                    std::fs::remove_file(mnt.join(&name)).unwrap();
                } else {
                    kept.push((name, data));
                }
            }
        }
        // A tiny file, resident in its MFT record.
        std::fs::write(mnt.join("tiny"), b"resident").unwrap();
        kept.push(("tiny".into(), b"resident".to_vec()));
        drop(m);
        Some(kept)
    }

    /// (volume clusters, free clusters) as ntfsinfo and ntfscluster count them.
    fn tool_clusters(img: &Path) -> (u64, u64) {
        let field = |out: &str, key: &str| -> u64 {
            let line = out
                .lines()
                .find(|l| l.contains(key))
                .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"));
            line.rsplit(':').next().unwrap().trim().parse().unwrap()
        };
        let info = run(Command::new("ntfsinfo").arg("-m").arg(img));
        let cluster = run(Command::new("ntfscluster").arg("-i").arg(img));
        (
            field(&info, "Volume Size in Clusters"),
            field(&cluster, "clusters of free space"),
        )
    }

    fn boot_of(region: &Region) -> Boot {
        boot::parse(&region.read_vec("t", 0, 512).unwrap()).unwrap()
    }

    /// Checks a populated image: used clusters == what ntfsinfo/ntfscluster count as used,
    /// the backup boot sector is in, and a copy of only the used bytes mounts with the same
    /// files.
    fn check_image(img: &Path, kept: &[(String, Vec<u8>)], dir: &Path, test: &str) {
        let disk = FileDisk::new(std::fs::File::open(img).unwrap()).unwrap();
        let region = Region::whole(&disk);
        assert_eq!(probe(&region).unwrap(), Some(FsKind::Ntfs));
        let used = used(&region).unwrap();
        let boot = boot_of(&region);
        let in_clusters = used.clip(0, boot.clusters * boot.cluster);
        assert_eq!(in_clusters.total() % boot.cluster, 0);
        let ours = in_clusters.total() / boot.cluster;
        let (tool_total, tool_free) = tool_clusters(img);
        assert_eq!(
            boot.clusters, tool_total,
            "cluster count agrees with ntfsinfo"
        );
        assert_eq!(
            ours,
            tool_total - tool_free,
            "used clusters agree with ntfscluster"
        );
        let backup = boot.total_sectors * boot.sector;
        assert!(used.contains(backup, boot.sector), "backup boot sector");
        assert!(used.contains(region.len() - 512, 512), "last sector");
        let outside = used.total() - in_clusters.total();
        eprintln!(
            "ntfs {}: used {} bytes = {ours} clusters of {} + {outside} bytes past the last cluster (backup boot sector); ntfscluster: {} of {tool_total} clusters used",
            img.display(),
            used.total(),
            boot.cluster,
            tool_total - tool_free
        );
        // Free space really holds stale data, so the comparison means something.
        assert_free_space_is_stale(&region, &used);

        let copy = dir.join("copy.img");
        replicate(img, &used, &copy);
        run(Command::new("ntfsfix").arg("-n").arg(&copy));
        let mnt = dir.join("copy-mnt");
        let m = match Mount::new(&copy, &mnt, "loop,ro") {
            Ok(m) => m,
            Err(why) => {
                crate::testutil::skip(test, format_args!("mounting the copy: {why}"));
                return;
            }
        };
        for (name, data) in kept {
            let got = std::fs::read(mnt.join(name)).unwrap();
            assert!(got == *data, "{name} differs in the copy");
        }
        drop(m);
    }

    fn image_test(test: &str, mib: u64, args: &[&str], files: usize, size: usize) {
        let dir = tempfile::tempdir().unwrap();
        let img = mkntfs(dir.path(), "n.img", mib, args);
        // Stale data in what will be free space: fill files, delete them (populate does).
        let Some(kept) = populate(&img, dir.path(), files, size, test) else {
            return;
        };
        check_image(&img, &kept, dir.path(), test);
    }

    #[test]
    fn ntfs_4k_clusters_agrees_with_tools() {
        image_test("ntfs_4k_clusters_agrees_with_tools", 64, &[], 10, 700_000);
    }

    #[test]
    fn ntfs_512_byte_clusters_agrees_with_tools() {
        image_test(
            "ntfs_512_byte_clusters_agrees_with_tools",
            64,
            &["-c", "512"],
            10,
            500_000,
        );
    }

    #[test]
    fn ntfs_64k_clusters_agrees_with_tools() {
        image_test(
            "ntfs_64k_clusters_agrees_with_tools",
            128,
            &["-c", "65536"],
            8,
            1_000_000,
        );
    }

    #[test]
    fn ntfs_4k_sectors_agrees_with_tools() {
        image_test(
            "ntfs_4k_sectors_agrees_with_tools",
            128,
            &["-s", "4096"],
            8,
            900_000,
        );
    }

    /// A freshly made 64 MiB image in memory, with the byte offset of MFT record `n`.
    fn fresh() -> (Vec<u8>, impl Fn(u64) -> usize) {
        let dir = tempfile::tempdir().unwrap();
        let img = mkntfs(dir.path(), "c.img", 64, &[]);
        let bytes = std::fs::read(&img).unwrap();
        let boot = boot::parse(&bytes[..512]).unwrap();
        let at = move |n: u64| (boot.mft_lcn * boot.cluster + n * boot.record) as usize;
        (bytes, at)
    }

    fn corrupt_message(img: &impl crate::ReadAt) -> String {
        match used(&Region::whole(img)) {
            Err(MetaError::Corrupt(m)) => m,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn fresh_volume_maps() {
        let (img, _) = fresh();
        let region = Region::whole(&img);
        assert_eq!(probe(&region).unwrap(), Some(FsKind::Ntfs));
        let used = used(&region).unwrap();
        assert!(used.total() > 0 && used.total() < img.len() as u64 / 4);
    }

    #[test]
    fn rejects_broken_fixup_in_bitmap_record() {
        let (mut img, at) = fresh();
        let r6 = at(6);
        img[r6 + 510] ^= 0xFF;
        let m = corrupt_message(&img);
        assert!(m.contains("fixup") && m.contains("$Bitmap"), "{m}");
    }

    #[test]
    fn rejects_bad_magic() {
        let (mut img, at) = fresh();
        let r6 = at(6);
        img[r6..r6 + 4].copy_from_slice(b"BAAD");
        assert!(corrupt_message(&img).contains("magic"));
        let (mut img, at) = fresh();
        let r0 = at(0);
        img[r0] = b'X';
        assert!(corrupt_message(&img).contains("MFT record 0"));
    }

    #[test]
    fn rejects_bitmap_run_outside_volume() {
        let (mut img, at) = fresh();
        let r6 = at(6);
        let boot = boot::parse(&img[..512]).unwrap();
        let rec = Record::parse(img[r6..r6 + boot.record as usize].to_vec(), 6, "$Bitmap").unwrap();
        let (_, pairs) = rec.data().unwrap();
        // Find the run list in the raw record and point its first run far past the volume.
        let raw = &img[r6..r6 + boot.record as usize];
        let off = raw.windows(pairs.len()).position(|w| w == pairs).unwrap();
        let header = pairs[0];
        let (len_size, lcn_size) = (usize::from(header & 0x0F), usize::from(header >> 4));
        let top = r6 + off + len_size + lcn_size;
        assert!(
            (top - r6 + 2) % 512 != 0 && (top - r6 + 1) % 512 != 0,
            "not a fixup slot"
        );
        img[top] = 0x40;
        let m = corrupt_message(&img);
        assert!(
            m.contains("$Bitmap") && m.contains("outside the volume"),
            "{m}"
        );
    }

    #[test]
    fn rejects_volume_larger_than_partition() {
        let (img, _) = fresh();
        let region = Region::new(&img, 0, img.len() as u64 - 8192).unwrap();
        assert_eq!(probe(&region).unwrap(), Some(FsKind::Ntfs));
        assert!(matches!(used(&region), Err(MetaError::Corrupt(m)) if m.contains("do not fit")));
    }

    /// The boot sector and system file `number`'s $DATA, found through the parser as
    /// [`used`] finds them.
    fn system_file(img: &dyn crate::ReadAt, number: u32, name: &'static str) -> (Boot, FileData) {
        let region = Region::whole(img);
        let boot = boot_of(&region);
        let first = [Run {
            vcn: 0,
            lcn: boot.mft_lcn,
            len: boot.record.div_ceil(boot.cluster),
        }];
        let rec0 = read_record(&region, &boot, &first, MFT, "$MFT").unwrap();
        let mft = file_data(&rec0, &boot, "$MFT", false).unwrap();
        let rec = read_record(&region, &boot, &mft.runs, number, name).unwrap();
        let data = file_data(&rec, &boot, name, true).unwrap();
        (boot, data)
    }

    #[test]
    fn rejects_bitmap_that_frees_the_mft() {
        let (mut img, _) = fresh();
        // Find $Bitmap's data through the parser, then clear the bit of $MFT's first cluster.
        let (boot, bitmap) = system_file(&img, BITMAP, "$Bitmap");
        let byte = (bitmap.runs[0].lcn * boot.cluster + boot.mft_lcn / 8) as usize;
        img[byte] &= !(1 << (boot.mft_lcn % 8));
        let m = corrupt_message(&img);
        assert!(m.contains("$MFT free"), "{m}");
    }

    #[test]
    fn rejects_dirty_volume() {
        let (mut img, at) = fresh();
        let boot = boot::parse(&img[..512]).unwrap();
        let r3 = at(3);
        let rec = Record::parse(img[r3..r3 + boot.record as usize].to_vec(), 3, "$Volume").unwrap();
        let a = *rec.attrs(record::VOLUME_INFORMATION).next().unwrap();
        let value_off = usize::from(u16::from_le_bytes([
            img[r3 + a.at + 0x14],
            img[r3 + a.at + 0x15],
        ]));
        img[r3 + a.at + value_off + 10] |= VOLUME_IS_DIRTY as u8;
        assert!(corrupt_message(&img).contains("dirty"));
    }

    #[test]
    fn rejects_unclean_log() {
        let (mut img, _) = fresh();
        let (boot, log) = system_file(&img, LOGFILE, "$LogFile");
        let at = (log.runs[0].lcn * boot.cluster) as usize;
        img[at..at + 4].copy_from_slice(b"RSTR");
        assert!(matches!(
            used(&Region::whole(&img)),
            Err(MetaError::Corrupt(_))
        ));
        img[at..at + 4].copy_from_slice(b"CHKD");
        assert!(matches!(
            used(&Region::whole(&img)),
            Err(MetaError::Unsupported(_))
        ));
    }

    #[test]
    fn streams_a_bitmap_split_across_runs_and_pieces() {
        // 8 Mi + 100 clusters need a bitmap of 1 MiB + 13 bytes: two reads. Its two runs
        // sit in reverse order on a small in-memory disk (512-byte clusters).
        let clusters = (8 << 20) + 100u64;
        let need = clusters.div_ceil(8) as usize;
        let bits = noise(42, need);
        let first_len = 1500u64; // clusters of the first run
        let second_len = (need as u64).div_ceil(512) - first_len;
        let mut disk = vec![0u8; ((2 + first_len + second_len) * 512) as usize];
        let first_lcn = 2 + second_len;
        let (a, b) = bits.split_at((first_len * 512) as usize);
        let at = (first_lcn * 512) as usize;
        disk[at..at + a.len()].copy_from_slice(a);
        disk[1024..1024 + b.len()].copy_from_slice(b);
        let runs = [
            Run {
                vcn: 0,
                lcn: first_lcn,
                len: first_len,
            },
            Run {
                vcn: first_len,
                lcn: 2,
                len: second_len,
            },
        ];
        let boot = Boot {
            sector: 512,
            cluster: 512,
            total_sectors: clusters,
            clusters,
            mft_lcn: 1,
            mftmirr_lcn: 1,
            record: 1024,
        };
        let set = stream_bitmap(&Region::whole(&disk), &boot, &runs).unwrap();
        let mut expect = ExtentSet::new();
        for c in 0..clusters {
            if bits[(c / 8) as usize] & (1 << (c % 8)) != 0 {
                expect.insert(c * 512, 512);
            }
        }
        assert_eq!(set, expect);
    }

    #[test]
    fn random_corruption_never_panics() {
        let (clean, at) = fresh();
        let mft_end = at(64) as u64;
        let mut img = clean.clone();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for round in 0..300 {
            // Alternately: the boot sector and the first MFT records, or the first 4 MiB.
            let (lo, span) = match round % 3 {
                0 => (0, 512),
                1 => (at(0) as u64, mft_end - at(0) as u64),
                _ => (0, 4 << 20),
            };
            let flips: Vec<(usize, u8)> = (0..1 + rng.next() % 6)
                .map(|_| ((lo + rng.next() % span) as usize, 1u8 << (rng.next() % 8)))
                .collect();
            for &(i, bit) in &flips {
                img[i] ^= bit;
            }
            let region = Region::whole(&img);
            let _ = probe(&region);
            let _ = used(&region);
            for &(i, bit) in flips.iter().rev() {
                img[i] ^= bit;
            }
        }
        assert!(img == clean);
    }
}
