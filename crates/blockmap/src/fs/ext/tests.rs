//! Tests on real images made by mke2fs, judged by dumpe2fs: every block dumpe2fs does not
//! list as free must be in the map, and none it lists as free may be.

use super::desc::desc_checksum;
use super::superblock::{Fs, Superblock};
use super::*;
use crate::{Extent, FileDisk};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::testutil::{expect_corrupt, run, sparse_image, Rng};

/// `n` reproducible bytes, none of them zero.
fn nonzero_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| (rng.next() >> 24) as u8 | 1).collect()
}

/// A directory of files of assorted sizes, some sparse, for `mke2fs -d`. Contents are
/// random and never zero, so stale data is visible in free space.
fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (i, size) in [
        0usize,
        1,
        100,
        1023,
        1024,
        4095,
        4096,
        4097,
        65_536,
        200_000,
        1 << 20,
        3 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        fs::write(root.join(format!("file{i}")), nonzero_bytes(&mut rng, size)).unwrap();
    }
    for i in 0..150 {
        fs::write(
            root.join(format!("sub/small{i}")),
            nonzero_bytes(&mut rng, 300 + i * 7),
        )
        .unwrap();
    }
    fs::write(
        root.join("sub/deeper/big"),
        nonzero_bytes(&mut rng, 2 << 20),
    )
    .unwrap();
    // Sparse: 16 MiB long, three data blocks.
    let f = File::create(root.join("sparse")).unwrap();
    f.set_len(16 << 20).unwrap();
    for at in [0u64, 5 << 20, (16 << 20) - 10] {
        f.write_all_at(&nonzero_bytes(&mut rng, 10), at).unwrap();
    }
    std::os::unix::fs::symlink("sub/deeper/big", root.join("link")).unwrap();
    root
}

/// Makes a `size`-byte image with `mke2fs -F -q -E nodiscard[,ext]` and `args`.
fn mkfs(
    dir: &Path,
    name: &str,
    size: u64,
    args: &[&str],
    ext: &str,
    from: Option<&Path>,
) -> PathBuf {
    let path = sparse_image(dir, name, size);
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-F", "-q"]).args(args);
    let e = if ext.is_empty() {
        "nodiscard".to_owned()
    } else {
        format!("nodiscard,{ext}")
    };
    cmd.arg("-E").arg(e);
    if let Some(d) = from {
        cmd.arg("-d").arg(d);
    }
    run(cmd.arg(&path));
    path
}

/// Deletes files with debugfs (no mount): their blocks become free but keep their data.
fn debugfs_rm(img: &Path, files: &[&str]) {
    let script: String = files.iter().map(|f| format!("rm {f}\n")).collect();
    let cmds = img.with_extension("cmds");
    fs::write(&cmds, script).unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(img));
}

/// What dumpe2fs says: block size, block count, free bytes, and per group the block
/// bitmap location and flags.
struct Dump {
    block_size: u64,
    blocks: u64,
    free: ExtentSet,
    features: String,
    /// (group, block bitmap block, flags text)
    groups: Vec<(u64, u64, String)>,
}

impl Dump {
    fn used(&self) -> ExtentSet {
        ExtentSet::range(0, self.blocks * self.block_size).subtract(&self.free)
    }
}

fn dumpe2fs(img: &Path) -> Dump {
    let out = run(Command::new("dumpe2fs").arg(img));
    let field = |name: &str| -> Option<u64> {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let block_size = field("Block size:").expect("block size");
    let blocks = field("Block count:").expect("block count");
    // With bigalloc a free range a-b names the first blocks of its first and last clusters.
    let ratio = field("Cluster size:").map_or(1, |c| c / block_size);
    let features = out
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .unwrap_or("")
        .to_owned();
    let mut free = Vec::new();
    let mut groups = Vec::new();
    for l in out.lines() {
        if let Some(list) = l.strip_prefix("  Free blocks: ") {
            for part in list.split(", ").filter(|p| !p.is_empty()) {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
                let end = (b + ratio).min(blocks);
                free.push(Extent::new(a * block_size, (end - a) * block_size));
            }
        } else if let Some(rest) = l
            .strip_prefix("Group ")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        {
            let g: u64 = rest.split(':').next().unwrap().parse().unwrap();
            let flags = rest.split_once('[').map_or("", |(_, f)| f).to_owned();
            groups.push((g, 0, flags));
        } else if let Some(rest) = l.strip_prefix("  Block bitmap at ") {
            let b: u64 = rest.split([' ', ',']).next().unwrap().parse().unwrap();
            if let Some(last) = groups.last_mut() {
                last.1 = b;
            }
        }
    }
    Dump {
        block_size,
        blocks,
        free: free.into_iter().collect(),
        features,
        groups,
    }
}

fn map(img: &Path) -> Result<ExtentSet, MetaError> {
    let disk = FileDisk::new(File::open(img).unwrap()).unwrap();
    used(&Region::whole(&disk))
}

fn kind(img: &Path) -> Option<FsKind> {
    let disk = FileDisk::new(File::open(img).unwrap()).unwrap();
    probe(&Region::whole(&disk)).unwrap()
}

fn first_extents(s: &ExtentSet, bs: u64) -> String {
    s.iter()
        .take(8)
        .map(|e| format!("{}+{}", e.offset / bs, e.len / bs))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps `img` and checks it against dumpe2fs: returns (our used bytes, dumpe2fs's).
fn check(img: &Path, label: &str, want: FsKind) -> (u64, u64) {
    assert_eq!(kind(img), Some(want), "{label}: probe");
    let ours = map(img).unwrap_or_else(|e| panic!("{label}: {e}"));
    let dump = dumpe2fs(img);
    let bs = dump.block_size;
    let tool = dump.used();
    let missing = tool.subtract(&ours);
    assert!(
        missing.is_empty(),
        "{label}: {} bytes dumpe2fs has in use are not in the map (blocks {})",
        missing.total(),
        first_extents(&missing, bs)
    );
    let extra = ours.intersect(&dump.free);
    assert!(
        extra.is_empty(),
        "{label}: {} bytes dumpe2fs lists as free are in the map (blocks {})",
        extra.total(),
        first_extents(&extra, bs)
    );
    assert!(
        ours.clip(dump.blocks * bs, u64::MAX).is_empty(),
        "{label}: past the end"
    );
    eprintln!(
        "{label}: map {} bytes in {} extents, dumpe2fs in use {} bytes, filesystem {} bytes",
        ours.total(),
        ours.len(),
        tool.total(),
        dump.blocks * bs
    );
    (ours.total(), tool.total())
}

#[test]
fn ext4_4k_populated_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let img = mkfs(
        dir.path(),
        "a.img",
        64 << 20,
        &["-t", "ext4", "-b", "4096"],
        "",
        Some(&src),
    );
    let (before, _) = check(&img, "ext4 4k populated", FsKind::Ext4);
    debugfs_rm(&img, &["/file11", "/sub/deeper/big", "/file9"]);
    let (after, _) = check(&img, "ext4 4k after deletes", FsKind::Ext4);
    assert!(
        before - after >= 5 << 20,
        "deleting 5 MiB freed {}",
        before - after
    );
    // The deleted data is still there, in space the map leaves out.
    let data = fs::read(&img).unwrap();
    let ours = map(&img).unwrap();
    let stale = ExtentSet::range(0, data.len() as u64).subtract(&ours);
    let nonzero: u64 = stale
        .iter()
        .map(|e| {
            data[e.offset as usize..e.end() as usize]
                .iter()
                .filter(|&&b| b != 0)
                .count() as u64
        })
        .sum();
    assert!(
        nonzero > 4 << 20,
        "free space holds stale data ({nonzero} bytes)"
    );
}

#[test]
fn ext4_1k_many_groups() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let args = ["-t", "ext4", "-b", "1024", "-g", "1024"];
    let img = mkfs(dir.path(), "a.img", 40 << 20, &args, "", Some(&src));
    check(&img, "ext4 1k, 1 MiB groups", FsKind::Ext4);
    debugfs_rm(&img, &["/file11", "/file10"]);
    check(&img, "ext4 1k, 1 MiB groups, after deletes", FsKind::Ext4);
}

#[test]
fn ext4_without_64bit() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let args = ["-t", "ext4", "-b", "4096", "-O", "^64bit", "-g", "1024"];
    let img = mkfs(dir.path(), "a.img", 200 << 20, &args, "", Some(&src));
    check(
        &img,
        "ext4 ^64bit (32-byte descriptors, 50 groups)",
        FsKind::Ext4,
    );
    let img = mkfs(
        dir.path(),
        "b.img",
        48 << 20,
        &["-t", "ext4", "-b", "1024", "-O", "^64bit"],
        "",
        Some(&src),
    );
    check(&img, "ext4 1k ^64bit", FsKind::Ext4);
}

#[test]
fn ext4_without_flex_bg() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let img = mkfs(
        dir.path(),
        "a.img",
        64 << 20,
        &["-t", "ext4", "-b", "4096", "-O", "^flex_bg", "-g", "2048"],
        "",
        Some(&src),
    );
    check(&img, "ext4 4k ^flex_bg", FsKind::Ext4);
    let img = mkfs(
        dir.path(),
        "b.img",
        32 << 20,
        &["-t", "ext4", "-b", "1024", "-O", "^flex_bg"],
        "",
        Some(&src),
    );
    check(&img, "ext4 1k ^flex_bg", FsKind::Ext4);
}

#[test]
fn ext4_meta_bg() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let args = [
        "-t",
        "ext4",
        "-b",
        "4096",
        "-O",
        "64bit,meta_bg,^resize_inode",
    ];
    let img = mkfs(dir.path(), "a.img", 64 << 20, &args, "", Some(&src));
    check(&img, "ext4 4k meta_bg", FsKind::Ext4);
    // 1 KiB blocks and 1 MiB groups: 16 descriptors a block, so 4 meta groups.
    let args = [
        "-t",
        "ext4",
        "-b",
        "1024",
        "-g",
        "1024",
        "-O",
        "64bit,meta_bg,^resize_inode",
    ];
    let img = mkfs(dir.path(), "b.img", 64 << 20, &args, "", Some(&src));
    check(&img, "ext4 1k meta_bg, 64 groups", FsKind::Ext4);
}

#[test]
fn ext4_gdt_csum_sparse_super2_bigalloc_mmp() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "gdt_csum (crc16) with uninit_bg",
            &["-O", "^metadata_csum,uninit_bg", "-b", "4096", "-g", "2048"],
            "",
        ),
        (
            "sparse_super2, one backup",
            &["-O", "sparse_super2", "-b", "1024", "-g", "1024"],
            "num_backup_sb=1",
        ),
        (
            "no sparse_super",
            &[
                "-O",
                "^sparse_super,^resize_inode",
                "-b",
                "1024",
                "-g",
                "2048",
            ],
            "",
        ),
        (
            "bigalloc 16 KiB clusters",
            &["-O", "bigalloc", "-b", "4096", "-C", "16384"],
            "",
        ),
        (
            "bigalloc 1k blocks",
            &["-O", "bigalloc", "-b", "1024", "-C", "8192"],
            "",
        ),
        ("mmp", &["-O", "mmp", "-b", "4096"], ""),
    ];
    for (i, (label, args, ext)) in cases.into_iter().enumerate() {
        let mut a = vec!["-t", "ext4"];
        a.extend_from_slice(args);
        let img = mkfs(
            dir.path(),
            &format!("{i}.img"),
            64 << 20,
            &a,
            ext,
            Some(&src),
        );
        check(&img, &format!("ext4 {label}"), FsKind::Ext4);
    }
}

#[test]
fn ext2_and_ext3() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let img = mkfs(
        dir.path(),
        "2.img",
        32 << 20,
        &["-t", "ext2", "-b", "1024"],
        "",
        Some(&src),
    );
    check(&img, "ext2 1k", FsKind::Ext2);
    debugfs_rm(&img, &["/file11"]);
    check(&img, "ext2 1k after delete", FsKind::Ext2);
    let img = mkfs(
        dir.path(),
        "2b.img",
        64 << 20,
        &["-t", "ext2", "-b", "4096", "-r", "0"],
        "",
        None,
    );
    check(&img, "ext2 revision 0", FsKind::Ext2);
    // ext3 keeps its journal in an indirect-mapped inode: with 1 KiB blocks that needs
    // double-indirect blocks, which are metadata too.
    let img = mkfs(
        dir.path(),
        "3.img",
        48 << 20,
        &["-t", "ext3", "-b", "1024"],
        "",
        Some(&src),
    );
    check(&img, "ext3 1k", FsKind::Ext3);
    let img = mkfs(
        dir.path(),
        "3b.img",
        64 << 20,
        &["-t", "ext3", "-b", "4096"],
        "",
        Some(&src),
    );
    check(&img, "ext3 4k", FsKind::Ext3);
}

/// Reads the superblock and geometry of an image, for the corruption tests.
fn geometry(data: &[u8]) -> (Superblock, Fs) {
    let sb = Superblock::parse(&data[1024..2048]).unwrap().unwrap();
    let fs = Fs::new(&sb, data.len() as u64).unwrap();
    (sb, fs)
}

fn map_bytes(data: &dyn crate::ReadAt) -> Result<ExtentSet, MetaError> {
    used(&Region::whole(data))
}

fn probe_bytes(data: &dyn crate::ReadAt) -> Option<FsKind> {
    probe(&Region::whole(data)).unwrap()
}

/// Recomputes the superblock checksum after an edit.
fn fix_sb_csum(data: &mut [u8]) {
    let c = crc::crc32c(!0, &data[1024..1024 + 0x3FC]);
    data[1024 + 0x3FC..2048].copy_from_slice(&c.to_le_bytes());
}

fn desc_offset(fs: &Fs, g: u64) -> usize {
    (fs.desc_block(g / fs.descs_per_block) * fs.block_size
        + (g % fs.descs_per_block) * fs.desc_size) as usize
}

/// Recomputes group `g`'s descriptor checksum after an edit.
fn fix_desc_csum(data: &mut [u8], fs: &Fs, g: u64) {
    let at = desc_offset(fs, g);
    let d = &data[at..at + fs.desc_size as usize];
    let c = desc_checksum(fs, g, d).unwrap();
    data[at + 0x1E..at + 0x20].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn rejects_corrupt_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let ext4 = fs::read(mkfs(
        dir.path(),
        "4.img",
        16 << 20,
        &["-t", "ext4", "-b", "1024", "-g", "2048"],
        "",
        Some(&src),
    ))
    .unwrap();
    let ext2 = fs::read(mkfs(
        dir.path(),
        "2.img",
        16 << 20,
        &["-t", "ext2", "-b", "1024"],
        "",
        Some(&src),
    ))
    .unwrap();
    let gdt = fs::read(mkfs(
        dir.path(),
        "g.img",
        16 << 20,
        &["-t", "ext4", "-O", "^metadata_csum,uninit_bg"],
        "",
        None,
    ))
    .unwrap();
    assert!(map_bytes(&ext4).is_ok() && map_bytes(&ext2).is_ok() && map_bytes(&gdt).is_ok());
    let (_, fs4) = geometry(&ext4);
    let (_, fs2) = geometry(&ext2);
    let (_, fsg) = geometry(&gdt);

    // A flipped bit in a group descriptor: the checksum (crc32c, then crc16) catches it.
    for (data, fs) in [(&ext4, &fs4), (&gdt, &fsg)] {
        let mut d = data.clone();
        d[desc_offset(fs, 1) + 0xC] ^= 0x10;
        expect_corrupt(map_bytes(&d), "group 1 descriptor: checksum");
    }

    // A block bitmap beyond the filesystem (checksum made valid, and without checksums).
    for (data, fs) in [(&ext4, &fs4), (&ext2, &fs2)] {
        let mut d = data.clone();
        let at = desc_offset(fs, 1);
        d[at..at + 4].copy_from_slice(&99_999_999u32.to_le_bytes());
        if fs.has_desc_csum() {
            fix_desc_csum(&mut d, fs, 1);
        }
        expect_corrupt(
            map_bytes(&d),
            "block bitmap at block 99999999 (length 1) is outside",
        );
    }

    // Two groups sharing one block bitmap (checksum made valid).
    let mut d = ext4.clone();
    let (g0, g1) = (desc_offset(&fs4, 0), desc_offset(&fs4, 1));
    let shared: [u8; 4] = d[g0..g0 + 4].try_into().unwrap();
    d[g1..g1 + 4].copy_from_slice(&shared);
    fix_desc_csum(&mut d, &fs4, 1);
    expect_corrupt(map_bytes(&d), "holds two structures");

    // A block count larger than the partition: still probed, refused by used().
    for data in [&ext4, &ext2] {
        let mut d = data.clone();
        let blocks = (d.len() / 1024 + 100) as u32;
        d[1024 + 4..1024 + 8].copy_from_slice(&blocks.to_le_bytes());
        fix_sb_csum(&mut d);
        assert!(probe_bytes(&d).is_some());
        expect_corrupt(map_bytes(&d), "do not fit in the");
    }

    // A flipped bit in the superblock of a metadata_csum filesystem.
    let mut d = ext4.clone();
    d[1024 + 0x10] ^= 1;
    expect_corrupt(map_bytes(&d), "superblock: checksum");

    // No magic: not ext at all.
    for data in [&ext4, &ext2] {
        let mut d = data.clone();
        d[1024 + 0x38] = 0;
        d[1024 + 0x39] = 0;
        assert_eq!(probe_bytes(&d), None);
        assert!(map_bytes(&d).is_err());
    }
    // Nonsense geometry: not ext either.
    let mut d = ext2.clone();
    d[1024 + 0x18] = 9;
    assert_eq!(probe_bytes(&d), None);

    // A block bitmap that lost its metadata bits (no checksum to catch it).
    let mut d = ext2.clone();
    let at = desc_offset(&fs2, 0);
    let bitmap = u32::from_le_bytes(d[at..at + 4].try_into().unwrap()) as usize * 1024;
    d[bitmap..bitmap + 1024].fill(0);
    expect_corrupt(map_bytes(&d), "is not marked in use");

    // A block bitmap that does not match its checksum.
    let mut d = ext4.clone();
    let at = desc_offset(&fs4, 0);
    let bitmap = u32::from_le_bytes(d[at..at + 4].try_into().unwrap()) as usize * 1024;
    d[bitmap + 100] ^= 0x40;
    expect_corrupt(map_bytes(&d), "group 0 block bitmap");

    // A free count larger than the group.
    let mut d = ext2.clone();
    let at = desc_offset(&fs2, 1);
    d[at + 0xC..at + 0xE].copy_from_slice(&60_000u16.to_le_bytes());
    expect_corrupt(map_bytes(&d), "free clusters in a group");

    // Marked as having errors.
    let mut d = ext2.clone();
    d[1024 + 0x3A] |= 2;
    expect_corrupt(map_bytes(&d), "having errors");

    // An incompatible feature nobody knows.
    let mut d = ext4.clone();
    d[1024 + 0x63] |= 0x40;
    fix_sb_csum(&mut d);
    assert!(matches!(map_bytes(&d), Err(MetaError::Unsupported(_))));

    // Inode counts that do not add up.
    let mut d = ext2.clone();
    d[1024] ^= 1;
    expect_corrupt(map_bytes(&d), "inodes, but");
}

/// Random bytes flipped in the metadata of real images never panic the parser, and each
/// run ends (they are bounded by the image).
#[test]
fn random_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let images = [
        fs::read(mkfs(
            dir.path(),
            "4.img",
            12 << 20,
            &["-t", "ext4", "-b", "1024", "-g", "1024"],
            "",
            Some(&src),
        ))
        .unwrap(),
        fs::read(mkfs(
            dir.path(),
            "3.img",
            12 << 20,
            &[
                "-t",
                "ext3",
                "-b",
                "1024",
                "-g",
                "1024",
                "-O",
                "^sparse_super,^resize_inode",
            ],
            "",
            Some(&src),
        ))
        .unwrap(),
        fs::read(mkfs(
            dir.path(),
            "m.img",
            12 << 20,
            &[
                "-t",
                "ext4",
                "-b",
                "1024",
                "-g",
                "1024",
                "-O",
                "64bit,meta_bg,^resize_inode,^metadata_csum",
            ],
            "",
            Some(&src),
        ))
        .unwrap(),
    ];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (mut ok, mut err) = (0, 0);
    for round in 0..600 {
        let base = &images[round % images.len()];
        let mut d = base.clone();
        let flips = 1 + rng.next() % 8;
        for _ in 0..flips {
            // The superblock and descriptors, or also the bitmaps and inode tables, or
            // anywhere in the first 4 MiB (the journal, directories, data).
            let span = match rng.next() % 3 {
                0 => 8 << 10,
                1 => 300 << 10,
                _ => 4 << 20,
            };
            let at = (rng.next() % span) as usize;
            d[at] ^= 1 << (rng.next() % 8);
        }
        if probe_bytes(&d).is_some() {
            match map_bytes(&d) {
                Ok(s) => {
                    assert!(s.iter().all(|e| e.end() <= d.len() as u64));
                    ok += 1;
                }
                Err(_) => err += 1,
            }
        }
    }
    eprintln!("random corruption: {ok} mapped, {err} refused");
    assert!(err > 0);
}

/// A transaction in the journal that is not yet replayed: the blocks its bitmap copy marks
/// are in the map although the bitmap in place says they are free.
#[test]
fn unreplayed_journal_transaction_counts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        (
            "4k",
            &["-t", "ext4", "-b", "4096", "-g", "4096", "-O", "^flex_bg"][..],
        ),
        ("1k", &["-t", "ext4", "-b", "1024", "-O", "^64bit"][..]),
        ("ext3", &["-t", "ext3", "-b", "1024"][..]),
    ] {
        let img = mkfs(dir.path(), &format!("{name}.img"), 64 << 20, args, "", None);
        let before = dumpe2fs(&img);
        let bs = before.block_size;
        let sb = Superblock::parse(&fs::read(&img).unwrap()[1024..2048])
            .unwrap()
            .unwrap();
        let fs = Fs::new(&sb, 64 << 20).unwrap();
        // A group whose bitmap is on disk (replay leaves a BLOCK_UNINIT group computed, so
        // tools would not see the logged bits there), with 10 free blocks in a row: mark
        // them in a copy of its bitmap, logged as a transaction.
        let (g, bitmap_block, target) = before
            .groups
            .iter()
            .filter(|(_, _, flags)| !flags.contains("BLOCK_UNINIT"))
            .find_map(|&(g, bitmap, _)| {
                let free = before
                    .free
                    .clip(fs.group_first(g) * bs, fs.group_end(g) * bs);
                let e = free.iter().find(|e| e.len >= 10 * bs)?;
                Some((g, bitmap, e.offset / bs))
            })
            .expect("a group with 10 free blocks");
        let group_first = fs.group_first(g);
        let mut bitmap = vec![0u8; bs as usize];
        File::open(&img)
            .unwrap()
            .read_exact_at(&mut bitmap, bitmap_block * bs)
            .unwrap();
        for b in target..target + 10 {
            let i = b - group_first;
            bitmap[(i / 8) as usize] |= 1 << (i % 8);
        }
        // As the kernel would, log the descriptor block too, with the bitmap's new checksum.
        let desc_block = fs.desc_block(g / fs.descs_per_block);
        let mut descs = vec![0u8; bs as usize];
        File::open(&img)
            .unwrap()
            .read_exact_at(&mut descs, desc_block * bs)
            .unwrap();
        if fs.csum == super::superblock::DescCsum::Crc32c {
            let at = ((g % fs.descs_per_block) * fs.desc_size) as usize;
            let c = crc::crc32c(
                fs.csum_seed,
                &bitmap[..(fs.clusters_per_group / 8) as usize],
            );
            descs[at + 0x18..at + 0x1A].copy_from_slice(&(c as u16).to_le_bytes());
            if fs.desc_size >= 64 {
                descs[at + 0x38..at + 0x3A].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
            }
            let d = desc_checksum(&fs, g, &descs[at..at + fs.desc_size as usize]).unwrap();
            descs[at + 0x1E..at + 0x20].copy_from_slice(&d.to_le_bytes());
        }
        let copy = dir.path().join("blocks.bin");
        fs::write(&copy, [bitmap, descs].concat()).unwrap();
        let cmds = dir.path().join("cmds");
        fs::write(
            &cmds,
            format!(
                "jo\njw -b {bitmap_block},{desc_block} {}\njc\n",
                copy.display()
            ),
        )
        .unwrap();
        run(Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(&img));
        let logged = dumpe2fs(&img);
        assert!(
            logged.features.contains("needs_recovery"),
            "{name}: {}",
            logged.features
        );
        assert!(
            logged.free.contains(target * bs, 10 * bs),
            "{name}: in place, still free"
        );

        let ours = map(&img).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            ours.contains(target * bs, 10 * bs),
            "{name}: logged allocation missing"
        );

        // Replay a copy, as the next mount would: the map covers what it then uses.
        let replayed = dir.path().join(format!("{name}-replayed.img"));
        fs::copy(&img, &replayed).unwrap();
        let out = Command::new("e2fsck")
            .args(["-E", "journal_only", "-y"])
            .arg(&replayed)
            .output()
            .unwrap();
        assert!(out.status.code().is_some_and(|c| c <= 1), "e2fsck: {out:?}");
        let after = dumpe2fs(&replayed);
        assert!(
            after.used().contains(target * bs, 10 * bs),
            "{name}: replay uses them"
        );
        let missing = after.used().subtract(&ours);
        assert!(
            missing.is_empty(),
            "{name}: replay uses {} bytes the map lacks",
            missing.total()
        );
        eprintln!("{name}: the unreplayed log adds 10 blocks the bitmap in place lacks");
    }
}

/// Unmounts (and so detaches the loop device of) a `mount -o loop` when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts `img` on `dir`, or says why it cannot.
fn mount(img: &Path, dir: &Path) -> Result<Mounted, String> {
    fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-o", "loop"])
        .arg(img)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount -o loop failed (needs root and loop devices): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Mounted(dir.to_owned()))
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Files written and deleted through the kernel; then a copy taken while mounted, after
/// fsync but before the journal is checkpointed, as a live disk is read.
#[test]
fn mounted_writes_deletes_and_live_copy() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(
        dir.path(),
        "a.img",
        96 << 20,
        &["-t", "ext4", "-b", "4096"],
        "",
        None,
    );
    let mnt = dir.path().join("mnt");
    let m = match mount(&img, &mnt) {
        Ok(m) => m,
        Err(why) => {
            crate::testutil::skip("mounted_writes_deletes_and_live_copy", why);
            return;
        }
    };
    let mut rng = Rng(77);
    for i in 0..24 {
        write_synced(
            &mnt.join(format!("f{i}")),
            &nonzero_bytes(&mut rng, 300_000 + i * 40_000),
        );
    }
    for i in (0..24).step_by(3) {
        fs::remove_file(mnt.join(format!("f{i}"))).unwrap();
    }
    // Let the deletes commit, then write more: the last transactions stay in the log.
    write_synced(&mnt.join("late-a"), &nonzero_bytes(&mut rng, 3 << 20));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(mnt.join("late-b"))
        .unwrap();
    f.seek(SeekFrom::Start(40 << 20)).unwrap();
    f.write_all(&nonzero_bytes(&mut rng, 2 << 20)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let live = dir.path().join("live.img");
    fs::copy(&img, &live).unwrap();
    drop(m);

    check(
        &img,
        "ext4 written and deleted through the kernel",
        FsKind::Ext4,
    );

    let on_disk = dumpe2fs(&live);
    let ours = map(&live).unwrap_or_else(|e| panic!("live copy: {e}"));
    let replayed = dir.path().join("replayed.img");
    fs::copy(&live, &replayed).unwrap();
    let out = Command::new("e2fsck")
        .args(["-E", "journal_only", "-y"])
        .arg(&replayed)
        .output()
        .unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "e2fsck: {out:?}");
    let after = dumpe2fs(&replayed);
    let missing = after.used().subtract(&ours);
    assert!(
        missing.is_empty(),
        "live copy: replay uses {} bytes the map lacks ({})",
        missing.total(),
        first_extents(&missing, 4096)
    );
    let only_logged = after.used().subtract(&on_disk.used());
    eprintln!(
        "live copy: needs_recovery={}, map {} bytes, in place {} bytes, after replay {} bytes; \
         {} bytes in use only through the log",
        on_disk.features.contains("needs_recovery"),
        ours.total(),
        on_disk.used().total(),
        after.used().total(),
        only_logged.total()
    );
}

/// The ext parser on a 1 TiB sparse image holding a fresh ext4 (8192 groups, most of them
/// BLOCK_UNINIT). Run by hand:
/// `cargo test -p blockrep-blockmap --release one_tib -- --ignored --nocapture`
/// It makes the image in /var/tmp (about 1.1 GiB of it is really written, mostly the
/// zeroed journal) and deletes it afterwards; `EXT_BIG_IMAGE=PATH` uses an existing image
/// instead, so that `/usr/bin/time -v` on the test binary measures the parser alone.
#[test]
#[ignore]
fn one_tib_sparse_image() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = match std::env::var_os("EXT_BIG_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => {
            let img = sparse_image(dir.path(), "big.img", 1 << 40);
            run(Command::new("mkfs.ext4")
                .args(["-F", "-q", "-E", "nodiscard,lazy_itable_init=1"])
                .arg(&img));
            img
        }
    };
    let t = std::time::Instant::now();
    let ours = map(&img).unwrap();
    let elapsed = t.elapsed();
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("");
    eprintln!(
        "1 TiB ext4: mapped in {elapsed:?}: {} bytes in use in {} extents; {peak}",
        ours.total(),
        ours.len()
    );
    if std::env::var_os("EXT_BIG_IMAGE").is_none() {
        let tool = dumpe2fs(&img);
        assert!(tool.used().subtract(&ours).is_empty());
        assert!(ours.intersect(&tool.free).is_empty());
        eprintln!("dumpe2fs: {} bytes in use", tool.used().total());
    }
}
