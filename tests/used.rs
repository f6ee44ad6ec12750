//! `--mode used` on real disks: GPT and MBR disks and a whole-disk filesystem, made by sgdisk,
//! sfdisk and the mkfs tools over stale data, populated with files (some deleted again),
//! replicated over mutual TLS on 127.0.0.1 to all-zero targets, and judged by the
//! filesystems' own tools: the checkers must find the targets clean, the mounted trees must be
//! identical, and the used map must cover everything the tools do not list as free.
//!
//! Tests that mount need root and loop devices (ext4 and XFS in the kernel, ntfs-3g over
//! FUSE); where the machine cannot, they say `SKIPPED` and why. Everything else here runs
//! without root: e2fsprogs take `IMG?offset=N`, mtools take `IMG@@N`, and the other checkers
//! get the partition copied out to a sparse file.

mod common;
#[path = "common/disks.rs"]
mod disks;
#[path = "common/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use blockrep::progress::human_bytes;
use blockrep::SendSummary;
use blockrep_blockmap::{ExtentSet, FsKind, TableKind};
use common::MIB;
use disks::*;

/// A partition a test made, and what it holds.
#[derive(Debug, Clone)]
struct Part {
    number: u32,
    start: u64,
    len: u64,
    fs: Fs,
    /// The files it should hold (the host's copy, deletions applied).
    tree: Option<PathBuf>,
}

/// A partition's bytes on a tool's command line: a read-only loop device where the machine
/// has them, else a sparse copy.
enum PartDev {
    Loop(Loop),
    File(PathBuf),
}

impl PartDev {
    fn open(img: &Path, p: &Part, scratch: &Path) -> PartDev {
        if caps().mount.is_ok() {
            PartDev::Loop(Loop::attach(img, p.start, p.len, true).expect("a loop device"))
        } else {
            let name = img.file_name().unwrap().to_string_lossy();
            let path = scratch.join(format!("{name}.p{}", p.number));
            extract(img, p.start, p.len, &path);
            PartDev::File(path)
        }
    }

    fn path(&self) -> &Path {
        match self {
            PartDev::Loop(l) => &l.dev,
            PartDev::File(p) => p,
        }
    }
}

/// What the filesystem's own tools say about the space of partition `p` of `img`.
fn usage(img: &Path, p: &Part, scratch: &Path) -> Usage {
    match p.fs {
        Fs::Ext4 => ext_usage(&e2spec(img, p.start)),
        Fs::Xfs => xfs_usage(PartDev::open(img, p, scratch).path()),
        Fs::Vfat => fat_usage(PartDev::open(img, p, scratch).path()),
        Fs::Ntfs => ntfs_usage(PartDev::open(img, p, scratch).path()),
        // The signature page is all of swap that survives a reboot.
        Fs::Swap => Usage {
            fs_bytes: p.len,
            used: 4096,
            free: None,
        },
    }
}

/// The checker's verdict on partition `p` of `img`.
fn check(img: &Path, p: &Part, scratch: &Path) -> Result<String, String> {
    if p.fs == Fs::Ext4 {
        return fsck(Fs::Ext4, Path::new(&e2spec(img, p.start)));
    }
    fsck(p.fs, PartDev::open(img, p, scratch).path())
}

fn fs_kind(fs: Fs) -> &'static str {
    match fs {
        Fs::Vfat => "vfat",
        Fs::Ext4 => "ext4",
        Fs::Xfs => "xfs",
        Fs::Swap => "swap",
        Fs::Ntfs => "ntfs",
    }
}

/// Compares the file trees of partition `p` on source and target (and with what was written),
/// mounted where the machine allows it, with mtools for FAT. Returns how it was judged.
fn compare_trees(test: &str, src: &Path, dst: &Path, p: &Part, scratch: &Path) -> String {
    let Some(tree) = &p.tree else {
        return "no files".into();
    };
    let base = scratch.join(format!("p{}", p.number));
    if p.fs == Fs::Vfat {
        let (a, b) = (base.join("src"), base.join("dst"));
        fat_tree(src, p.start, &a);
        fat_tree(dst, p.start, &b);
        diff_trees(&a, &b).unwrap_or_else(|d| panic!("FAT trees differ:\n{d}"));
        diff_trees(tree, &b)
            .unwrap_or_else(|d| panic!("the target's FAT tree is not what was written:\n{d}"));
        return "mcopy + diff -r identical".into();
    }
    let (kind, cap) = match p.fs {
        Fs::Ext4 => (MountKind::Ext4, &caps().mount),
        Fs::Xfs => (MountKind::Xfs, &caps().xfs),
        Fs::Ntfs => (MountKind::Ntfs3g, &caps().fuse),
        Fs::Vfat | Fs::Swap => unreachable!(),
    };
    if let Err(why) = cap {
        common::skip(
            test,
            format_args!("mounted comparison of partition {}: {why}", p.number),
        );
        return "not mounted (skipped)".into();
    }
    let a = mount_part(src, p.start, p.len, &base.join("src"), kind, false)
        .expect("mounting the source read-only");
    let b = mount_part(dst, p.start, p.len, &base.join("dst"), kind, false)
        .expect("mounting the target read-only");
    diff_trees(&a.dir, &b.dir)
        .unwrap_or_else(|d| panic!("partition {} trees differ:\n{d}", p.number));
    diff_trees(tree, &b.dir).unwrap_or_else(|d| {
        panic!(
            "partition {}: the target is not what was written:\n{d}",
            p.number
        )
    });
    for rel in DOOMED {
        assert!(!b.dir.join(rel).exists(), "{rel} was deleted");
    }
    "mounted read-only, diff -r identical".into()
}

/// The checks every replicated disk goes through; returns one line per partition.
fn judge(test: &str, src: &Path, dst: &Path, parts: &[Part], scratch: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for p in parts {
        check(dst, p, scratch)
            .unwrap_or_else(|e| panic!("partition {} of the target is not clean: {e}", p.number));
        let how = if p.fs == Fs::Swap {
            let page = read_at(dst, p.start, 4096);
            assert_eq!(page, read_at(src, p.start, 4096), "swap signature page");
            let label = |img: &Path| {
                let d = PartDev::open(img, p, scratch);
                exec("swaplabel", &[d.path()]).stdout
            };
            assert_eq!(label(src), label(dst), "swaplabel sees the same swap");
            "swaplabel same UUID and label".to_owned()
        } else {
            compare_trees(test, src, dst, p, scratch)
        };
        let checker = match p.fs {
            Fs::Ext4 => "e2fsck -fn",
            Fs::Xfs => "xfs_repair -n",
            Fs::Vfat => "fsck.vfat -n",
            Fs::Ntfs => "ntfsfix -n",
            Fs::Swap => "swaplabel",
        };
        lines.push(format!(
            "  partition {} ({}): {checker} clean; {how}",
            p.number,
            fs_kind(p.fs)
        ));
    }
    lines
}

/// Every byte the map sends is the same on the target as on the source.
fn assert_used_identical(src: &Path, dst: &Path, used: &ExtentSet) {
    for e in used.iter() {
        if let Some(at) = first_difference(src, dst, e.offset, e.len) {
            panic!("byte {at} (in the sent extent {e:?}) differs on the target");
        }
    }
}

/// Replicates `src` to a new `dst` in used mode: the round completes, and plans, sends and
/// gets acknowledged exactly the map's bytes.
fn replicate_map(src: &Path, dst: &Path, map: &blockrep_blockmap::DiskMap) -> SendSummary {
    let summary = replicate_used(src, dst);
    assert!(summary.complete, "{summary:?}");
    assert_eq!(summary.total_bytes, map.used.total(), "the plan is the map");
    assert_eq!(summary.sent_bytes, summary.total_bytes, "{summary:?}");
    assert_eq!(summary.acked_bytes, summary.total_bytes, "{summary:?}");
    summary
}

/// dumpe2fs and xfs_db count the same used blocks on the target as on the source.
fn assert_same_usage(src: &Path, dst: &Path, parts: &[Part], scratch: &Path) {
    for p in parts.iter().filter(|p| matches!(p.fs, Fs::Ext4 | Fs::Xfs)) {
        let (a, b) = (usage(src, p, scratch), usage(dst, p, scratch));
        assert_eq!(
            (a.used, a.free),
            (b.used, b.free),
            "partition {}: the tools see other free space on the target",
            p.number
        );
    }
}

/// The largest free range (by the tools) that the map leaves out holds stale data on the
/// source, and zeros on the target: free space was neither empty nor sent.
fn assert_stale_data_stays(
    src: &Path,
    dst: &Path,
    parts: &[Part],
    map: &blockrep_blockmap::DiskMap,
    scratch: &Path,
) {
    for p in parts.iter().filter(|p| matches!(p.fs, Fs::Ext4 | Fs::Xfs)) {
        let free = usage(src, p, scratch).free.unwrap().shifted(p.start);
        let unsent = free.subtract(&map.used);
        let big = unsent
            .iter()
            .max_by_key(|e| e.len)
            .unwrap_or_else(|| panic!("partition {}: no free space left out", p.number));
        let n = big.len.min(MIB);
        assert!(
            !all_zero(src, big.offset, n),
            "partition {}: free space at {} holds no stale data",
            p.number,
            big.offset
        );
        assert!(
            all_zero(dst, big.offset, n),
            "partition {}: free space at {} was sent",
            p.number,
            big.offset
        );
    }
}

/// The map against the tools, partition by partition: every byte a tool does not list as free
/// is in the map, and (where the tool lists free ranges) almost none it lists is. Returns
/// (number, fs, partition length, tool's used bytes, map's used bytes).
fn map_agrees_with_tools(
    img: &Path,
    parts: &[Part],
    map: &blockrep_blockmap::DiskMap,
    scratch: &Path,
) -> Vec<(u32, Fs, u64, u64, u64)> {
    let mut rows = Vec::new();
    for p in parts {
        let m = map
            .partitions
            .iter()
            .find(|m| m.number == p.number)
            .unwrap_or_else(|| panic!("partition {} is not in the map", p.number));
        assert_eq!(
            (m.start, m.len),
            (p.start, p.len),
            "partition {} geometry",
            p.number
        );
        assert_eq!(
            m.fallback, None,
            "partition {}: {:?}",
            p.number, map.warnings
        );
        let want = match p.fs {
            Fs::Vfat => FsKind::Fat32,
            Fs::Ext4 => FsKind::Ext4,
            Fs::Xfs => FsKind::Xfs,
            Fs::Swap => FsKind::Swap,
            Fs::Ntfs => FsKind::Ntfs,
        };
        assert_eq!(m.fs, Some(want), "partition {}", p.number);
        let u = usage(img, p, scratch);
        assert!(
            m.used_bytes >= u.used,
            "partition {} ({:?}): the map sends {} bytes, the tools say {} are used",
            p.number,
            p.fs,
            m.used_bytes,
            u.used
        );
        if let Some(free) = &u.free {
            let free = free.shifted(p.start);
            let in_use = ExtentSet::range(p.start, u.fs_bytes).subtract(&free);
            let missing = in_use.subtract(&map.used);
            assert!(
                missing.is_empty(),
                "partition {} ({:?}): {} bytes the tools count as used are not sent, first {:?}",
                p.number,
                p.fs,
                missing.total(),
                missing.iter().next()
            );
            let extra = map.used.intersect(&free).total();
            assert!(
                extra <= (free.total() / 100).max(MIB),
                "partition {} ({:?}): the map sends {extra} bytes the tools list as free",
                p.number,
                p.fs
            );
        } else {
            // No list of free ranges: the totals must be close.
            assert!(
                m.used_bytes <= u.used + (p.len / 50).max(2 * MIB),
                "partition {} ({:?}): the map sends {} bytes, the tools say {} are used",
                p.number,
                p.fs,
                m.used_bytes,
                u.used
            );
        }
        rows.push((p.number, p.fs, p.len, u.used, m.used_bytes));
    }
    rows
}

/// An identifier mke2fs, sgdisk and friends accept.
fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn tree(dir: &Path, name: &str, seed: u64, symlinks: bool) -> PathBuf {
    let t = dir.join(name);
    make_tree(&t, seed, symlinks);
    t
}

fn partitions_of(img: &Path, fss: &[Fs]) -> Vec<Part> {
    let tool: Vec<ToolPartition> = sfdisk_partitions(img)
        .into_iter()
        .filter(|p| !matches!(p.type_id.as_str(), "5" | "f" | "85"))
        .collect();
    assert_eq!(tool.len(), fss.len(), "{tool:?}");
    tool.iter()
        .zip(fss)
        .map(|(t, &fs)| Part {
            number: t.number,
            start: t.start,
            len: t.len,
            fs,
            tree: None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

/// The server disk: GPT with an ESP (FAT32), ext4 with 4 KiB blocks (64bit, flex_bg,
/// metadata_csum), ext4 with 1 KiB blocks without 64bit and flex_bg, XFS (v5), swap and NTFS,
/// over stale data, with stale data past the last partition too.
#[test]
fn gpt_server_disk_sends_used_blocks_and_replica_is_clean() {
    const NAME: &str = "gpt_server_disk_sends_used_blocks_and_replica_is_clean";
    let t0 = Instant::now();
    let caps = caps();
    for (what, cap) in [("loop mounts", &caps.mount), ("XFS mounts", &caps.xfs)] {
        if let Err(why) = cap {
            common::skip(
                NAME,
                format_args!("needs {what} to populate XFS and compare trees: {why}"),
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, dst) = (d.join("gpt.img"), d.join("target.img"));
    let size = 1536 * MIB;
    sparse(&img, size);
    run(
        "sgdisk",
        &[
            "-o",
            "-n",
            "1:2048:+64M",
            "-t",
            "1:ef00",
            "-c",
            "1:EFI",
            "-n",
            "2:0:+64M",
            "-t",
            "2:8300",
            "-c",
            "2:root",
            "-n",
            "3:0:+64M",
            "-t",
            "3:8300",
            "-c",
            "3:boot1k",
            "-n",
            "4:0:+320M",
            "-t",
            "4:8300",
            "-c",
            "4:data",
            "-n",
            "5:0:+32M",
            "-t",
            "5:8200",
            "-c",
            "5:swap",
            "-n",
            "6:0:+64M",
            "-t",
            "6:0700",
            "-c",
            "6:windows",
            s(&img),
        ],
    );
    let fss = [Fs::Vfat, Fs::Ext4, Fs::Ext4, Fs::Xfs, Fs::Swap, Fs::Ntfs];
    let mut parts = partitions_of(&img, &fss);
    let last_end = parts.last().map(|p| p.start + p.len).unwrap();
    for p in &parts {
        fill_garbage(&img, p.start, p.len, u64::from(p.number));
    }
    // Stale data outside any partition: never sent.
    let (gap_at, gap_len) = (last_end + MIB, 8 * MIB);
    fill_garbage(&img, gap_at, gap_len, 99);
    let t_layout = t0.elapsed();

    // 1: EFI system partition, FAT32, populated with mtools.
    let t1 = tree(d, "t1", 1, false);
    mkfs_vfat(&img, parts[0].start, parts[0].len, &t1);
    // 2: ext4, 4 KiB blocks, populated by mke2fs -d, files deleted with debugfs.
    let t2 = tree(d, "t2", 2, true);
    mkfs_ext4(&img, parts[1].start, parts[1].len, 4096, "", Some(&t2));
    ext4_delete_doomed(&img, parts[1].start, d);
    // 3: ext4, 1 KiB blocks, no 64bit or flex_bg, populated through a read-write mount.
    let t3 = tree(d, "t3", 3, true);
    mkfs_ext4(
        &img,
        parts[2].start,
        parts[2].len,
        1024,
        "^64bit,^flex_bg",
        None,
    );
    {
        let m = mount_part(
            &img,
            parts[2].start,
            parts[2].len,
            &d.join("m3"),
            MountKind::Ext4,
            true,
        )
        .expect("mounting the new ext4 read-write");
        populate_mounted(&m.dir, &t3);
    }
    // 4: XFS (mkfs.xfs -K keeps the stale data), populated through a read-write mount.
    let t4 = tree(d, "t4", 4, true);
    {
        let dev = Loop::attach(&img, parts[3].start, parts[3].len, false).expect("a loop device");
        run(
            "mkfs.xfs",
            &[
                os("-q"),
                os("-f"),
                os("-K"),
                os("-L"),
                os("data"),
                dev.dev.as_os_str(),
            ],
        );
        let m = Mount::new(dev, &d.join("m4"), MountKind::Xfs, true).expect("mounting the new XFS");
        populate_mounted(&m.dir, &t4);
    }
    // 5: swap.
    mkswap(&img, parts[4].start, parts[4].len, &d.join("swap.scratch"));
    // 6: NTFS (quick format), populated through ntfs-3g where FUSE works, else left empty.
    let t6 = tree(d, "t6", 6, true);
    let ntfs_populated = {
        let dev = Loop::attach(&img, parts[5].start, parts[5].len, false).expect("a loop device");
        let start_sector = (parts[5].start / SECTOR).to_string();
        run(
            "mkfs.ntfs",
            &[
                os("-q"),
                os("-f"),
                os("-L"),
                os("windows"),
                os("-p"),
                os(&start_sector),
                os("-H"),
                os("255"),
                os("-S"),
                os("63"),
                dev.dev.as_os_str(),
            ],
        );
        match &caps.fuse {
            Ok(()) => {
                let m = Mount::new(dev, &d.join("m6"), MountKind::Ntfs3g, true)
                    .expect("mounting the new NTFS with ntfs-3g");
                populate_mounted(&m.dir, &t6);
                true
            }
            Err(why) => {
                common::skip(
                    NAME,
                    format_args!("NTFS files: ntfs-3g cannot mount here: {why}"),
                );
                false
            }
        }
    };
    for (i, t) in [(0, t1), (1, t2), (2, t3), (3, t4), (5, t6)] {
        if i == 5 && !ntfs_populated {
            continue;
        }
        forget_doomed(&t);
        parts[i].tree = Some(t);
    }
    let t_build = t0.elapsed();

    // The source as the tools see it.
    gpt_clean(&img).unwrap_or_else(|e| panic!("sgdisk -v on the source: {e}"));
    for p in &parts {
        check(&img, p, d).unwrap_or_else(|e| panic!("the source is not clean: {e}"));
    }
    let map = map_of(&img);
    assert_eq!(map.table, Some(TableKind::Gpt));
    assert!(map.warnings.is_empty(), "{:?}", map.warnings);
    assert_eq!(
        map.partitions.iter().map(|m| m.number).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let rows = map_agrees_with_tools(&img, &parts, &map, d);
    let tools_used: u64 = rows.iter().map(|r| r.3).sum();
    assert!(map.used.contains(0, MIB), "the first MiB is always sent");
    assert!(
        map.used.contains(size - 33 * SECTOR, 33 * SECTOR),
        "the backup GPT is sent"
    );
    assert!(
        map.used
            .intersect(&ExtentSet::range(gap_at, gap_len))
            .is_empty(),
        "unpartitioned space is not sent"
    );

    // The replication.
    let t_send = Instant::now();
    let summary = replicate_map(&img, &dst, &map);
    let send_time = t_send.elapsed();
    assert!(
        summary.sent_bytes >= tools_used,
        "sent {} < used {tools_used}",
        summary.sent_bytes
    );
    assert!(
        summary.sent_bytes < size / 8,
        "sent {} of {size}: not far less",
        summary.sent_bytes
    );
    let written: u64 = parts.iter().map(|p| p.len).sum();
    assert!(
        summary.sent_bytes < written / 2,
        "sent {} of {written} partitioned bytes",
        summary.sent_bytes
    );

    // The target as the tools see it.
    gpt_clean(&dst).unwrap_or_else(|e| panic!("sgdisk -v on the target: {e}"));
    assert_eq!(table_dump(&img), table_dump(&dst));
    assert_used_identical(&img, &dst, &map.used);
    assert!(
        all_zero(&dst, gap_at, gap_len),
        "stale data outside the partitions reached the target"
    );
    let judged = judge(NAME, &img, &dst, &parts, d);
    assert_same_usage(&img, &dst, &parts, d);
    assert_stale_data_stays(&img, &dst, &parts, &map, d);
    assert_eq!(map_of(&dst).used, map.used, "the target maps the same");

    eprintln!("{NAME}: GPT disk of {size} bytes ({} MiB)", size / MIB);
    eprintln!("  #  fs     partition     tools' used      map's used");
    for (n, fs, len, tool, mapped) in &rows {
        eprintln!(
            "  {n}  {:<5} {len:>10} {tool:>14} {mapped:>15}",
            fs_kind(*fs)
        );
    }
    eprintln!(
        "  tools' used {tools_used}, map {}, sent {} ({} as zero chunks), wire {} (+{} received), {} ms",
        map.used.total(),
        summary.sent_bytes,
        summary.zero_bytes,
        summary.wire_bytes,
        summary.received_bytes,
        send_time.as_millis()
    );
    for l in judged {
        eprintln!("{l}");
    }
    eprintln!(
        "  time: layout+garbage {:?}, filesystems {:?}, total {:?}",
        t_layout,
        t_build - t_layout,
        t0.elapsed()
    );
}

/// A small GPT disk (160 MiB) made without root: an ESP (FAT32, 40 MiB), ext4 (4 KiB blocks,
/// metadata_csum, 64 MiB) and swap (8 MiB), over stale data, files written and some deleted.
fn small_gpt(d: &Path) -> (PathBuf, Vec<Part>) {
    let img = d.join("small.img");
    sparse(&img, 160 * MIB);
    run(
        "sgdisk",
        &[
            "-o",
            "-n",
            "1:2048:+40M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:+64M",
            "-t",
            "2:8300",
            "-n",
            "3:0:+8M",
            "-t",
            "3:8200",
            s(&img),
        ],
    );
    let mut parts = partitions_of(&img, &[Fs::Vfat, Fs::Ext4, Fs::Swap]);
    for p in &parts {
        fill_garbage(&img, p.start, p.len, 40 + u64::from(p.number));
    }
    let t1 = tree(d, "s1", 11, false);
    mkfs_vfat(&img, parts[0].start, parts[0].len, &t1);
    let t2 = tree(d, "s2", 12, true);
    mkfs_ext4(
        &img,
        parts[1].start,
        parts[1].len,
        4096,
        "metadata_csum",
        Some(&t2),
    );
    ext4_delete_doomed(&img, parts[1].start, d);
    mkswap(&img, parts[2].start, parts[2].len, &d.join("swap.scratch"));
    for (i, t) in [(0, t1), (1, t2)] {
        forget_doomed(&t);
        parts[i].tree = Some(t);
    }
    gpt_clean(&img).unwrap_or_else(|e| panic!("sgdisk -v on the new disk: {e}"));
    for p in &parts {
        check(&img, p, d).unwrap_or_else(|e| panic!("the new disk is not clean: {e}"));
    }
    (img, parts)
}

/// A sparse copy of an image.
fn copy_image(from: &Path, to: &Path) {
    run(
        "cp",
        &[os("--sparse=always"), from.as_os_str(), to.as_os_str()],
    );
}

/// `sgdisk -v` with the image's name taken out: what it finds wrong with a table.
fn gpt_verdict(img: &Path) -> String {
    exec("sgdisk", &[os("-v"), img.as_os_str()])
        .text()
        .replace(img.to_str().unwrap(), "IMG")
}

/// Flips a bit of group 0's descriptor (bg_free_blocks_count_lo) of the ext4 at `start`
/// (4 KiB blocks: the descriptors are in block 1). metadata_csum makes it a checksum error.
fn flip_group_descriptor_bit(img: &Path, start: u64) {
    let at = start + 4096 + 0x0C;
    let mut b = read_at(img, at, 1);
    b[0] ^= 0x04;
    write_at(img, at, &b);
}

/// An MBR disk: a primary ext4 (4 KiB blocks, no metadata_csum: crc16 descriptor checksums)
/// and an extended partition holding a logical ext4 (1 KiB blocks, 64bit) and a logical swap,
/// over stale data (the gaps around the EBRs too).
#[test]
fn mbr_disk_with_logical_partitions_replicates_clean() {
    const NAME: &str = "mbr_disk_with_logical_partitions_replicates_clean";
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, dst) = (d.join("mbr.img"), d.join("target.img"));
    let size = 160 * MIB;
    sparse(&img, size);
    // Stale data from the first MiB to the end of the extended partition, EBR gaps included.
    fill_garbage(&img, MIB, (188_416 + 32_768) * SECTOR - MIB, 7);
    let script = d.join("sfdisk.txt");
    std::fs::write(
        &script,
        "label: dos\n\
         start=2048, size=81920, type=83\n\
         start=86016, size=204800, type=5\n\
         start=88064, size=98304, type=83\n\
         start=188416, size=32768, type=82\n",
    )
    .unwrap();
    let out = Command::new("sfdisk")
        .args(["-q", s(&img)])
        .stdin(std::fs::File::open(&script).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "sfdisk: {out:?}");
    let mut parts = partitions_of(&img, &[Fs::Ext4, Fs::Ext4, Fs::Swap]);
    assert_eq!(
        parts.iter().map(|p| p.number).collect::<Vec<_>>(),
        [1, 5, 6],
        "one primary, two logical"
    );
    let t1 = tree(d, "m1", 21, true);
    mkfs_ext4(
        &img,
        parts[0].start,
        parts[0].len,
        4096,
        "^metadata_csum,uninit_bg",
        Some(&t1),
    );
    ext4_delete_doomed(&img, parts[0].start, d);
    let t5 = tree(d, "m5", 25, true);
    mkfs_ext4(&img, parts[1].start, parts[1].len, 1024, "64bit", Some(&t5));
    ext4_delete_doomed(&img, parts[1].start, d);
    mkswap(&img, parts[2].start, parts[2].len, &d.join("swap.scratch"));
    for (i, t) in [(0, t1), (1, t5)] {
        forget_doomed(&t);
        parts[i].tree = Some(t);
    }
    mbr_clean(&img).unwrap_or_else(|e| panic!("sfdisk --verify on the source: {e}"));
    for p in &parts {
        check(&img, p, d).unwrap_or_else(|e| panic!("the source is not clean: {e}"));
    }

    let map = map_of(&img);
    assert_eq!(map.table, Some(TableKind::Mbr));
    assert!(map.warnings.is_empty(), "{:?}", map.warnings);
    let rows = map_agrees_with_tools(&img, &parts, &map, d);
    let tools_used: u64 = rows.iter().map(|r| r.3).sum();
    // Each EBR is sent; the stale data in the gap after it is not.
    for ebr in [86_016 * SECTOR, 186_368 * SECTOR] {
        assert!(map.used.contains(ebr, SECTOR), "the EBR at {ebr} is sent");
        assert!(
            !map.used.contains(ebr + 4096, 1),
            "the gap after the EBR at {ebr} is not"
        );
    }

    let summary = replicate_map(&img, &dst, &map);
    assert!(summary.sent_bytes >= tools_used);
    assert!(summary.sent_bytes < size / 4, "{summary:?}");
    mbr_clean(&dst).unwrap_or_else(|e| panic!("sfdisk --verify on the target: {e}"));
    assert_eq!(
        table_dump(&img),
        table_dump(&dst),
        "the target has the same table"
    );
    assert_used_identical(&img, &dst, &map.used);
    let judged = judge(NAME, &img, &dst, &parts, d);
    assert_same_usage(&img, &dst, &parts, d);
    assert_stale_data_stays(&img, &dst, &parts, &map, d);
    assert_eq!(map_of(&dst).used, map.used, "the target maps the same");
    eprintln!(
        "{NAME}: {size} bytes, tools' used {tools_used}, sent {}, wire {}, {:?}",
        summary.sent_bytes,
        summary.wire_bytes,
        t0.elapsed()
    );
    for l in judged {
        eprintln!("{l}");
    }
}

/// ext4 made directly on the disk, no partition table.
#[test]
fn whole_disk_filesystem_replicates_clean() {
    const NAME: &str = "whole_disk_filesystem_replicates_clean";
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, dst) = (d.join("whole.img"), d.join("target.img"));
    let size = 96 * MIB;
    sparse(&img, size);
    fill_garbage(&img, 0, size, 5);
    let t = tree(d, "w", 31, true);
    mkfs_ext4(&img, 0, size, 4096, "", Some(&t));
    ext4_delete_doomed(&img, 0, d);
    forget_doomed(&t);
    let parts = [Part {
        number: 0,
        start: 0,
        len: size,
        fs: Fs::Ext4,
        tree: Some(t),
    }];
    check(&img, &parts[0], d).unwrap_or_else(|e| panic!("the source is not clean: {e}"));
    let map = map_of(&img);
    assert_eq!(map.table, None);
    assert!(map.warnings.is_empty(), "{:?}", map.warnings);
    assert_eq!(map.partitions.len(), 1);
    let rows = map_agrees_with_tools(&img, &parts, &map, d);

    let summary = replicate_map(&img, &dst, &map);
    assert!(summary.sent_bytes >= rows[0].3);
    assert!(summary.sent_bytes < size / 2, "{summary:?}");
    assert_used_identical(&img, &dst, &map.used);
    let judged = judge(NAME, &img, &dst, &parts, d);
    assert_same_usage(&img, &dst, &parts, d);
    assert_stale_data_stays(&img, &dst, &parts, &map, d);
    eprintln!(
        "{NAME}: {size} bytes, dumpe2fs used {}, sent {}, wire {}, {:?}",
        rows[0].3,
        summary.sent_bytes,
        summary.wire_bytes,
        t0.elapsed()
    );
    for l in judged {
        eprintln!("{l}");
    }
}

/// A flipped bit in an ext4 group descriptor: the checksum catches it, the map names the
/// partition and sends it whole, and the target's copy is byte-identical (as broken as the
/// source's: e2fsck says the same of both). The other partitions are still mapped.
#[test]
fn corrupt_group_descriptor_sends_that_partition_whole() {
    const NAME: &str = "corrupt_group_descriptor_sends_that_partition_whole";
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, parts) = small_gpt(d);
    let dst = d.join("target.img");
    let p2 = &parts[1];
    flip_group_descriptor_bit(&img, p2.start);
    let broken = check(&img, p2, d).expect_err("e2fsck sees the flipped bit");
    assert!(broken.contains("checksum"), "{broken}");

    let map = map_of(&img);
    assert_eq!(map.table, Some(TableKind::Gpt));
    assert_eq!(map.warnings.len(), 1, "{:?}", map.warnings);
    let w = &map.warnings[0];
    assert!(
        w.contains("partition 2") && w.contains("ext4") && w.contains("sending it whole"),
        "the warning names the partition and the fallback: {w}"
    );
    let m2 = &map.partitions[1];
    assert_eq!((m2.number, m2.fs), (2, Some(FsKind::Ext4)));
    assert!(m2.fallback.is_some());
    assert_eq!(m2.used_bytes, p2.len);
    assert!(map.used.contains(p2.start, p2.len));
    // The ESP and swap are still read, not sent whole.
    map_agrees_with_tools(&img, &[parts[0].clone(), parts[2].clone()], &map, d);

    let summary = replicate_map(&img, &dst, &map);
    assert!(summary.sent_bytes >= p2.len);
    assert_eq!(
        first_difference(&img, &dst, p2.start, p2.len),
        None,
        "partition 2 is byte-identical on the target"
    );
    assert_used_identical(&img, &dst, &map.used);
    gpt_clean(&dst).unwrap_or_else(|e| panic!("sgdisk -v on the target: {e}"));
    let judged = judge(NAME, &img, &dst, &[parts[0].clone(), parts[2].clone()], d);
    let broken_dst = check(&dst, p2, d).expect_err("the target's copy is as broken");
    let norm = |t: &str, img: &Path| t.replace(img.to_str().unwrap(), "IMG");
    assert_eq!(norm(&broken_dst, &dst), norm(&broken, &img));
    eprintln!(
        "{NAME}: warning {w:?}; sent {} (partition 2: {}), {:?}",
        summary.sent_bytes,
        p2.len,
        t0.elapsed()
    );
    for l in judged {
        eprintln!("{l}");
    }
}

/// How the backup GPT is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackupGone {
    /// Its header sector zeroed (the backup entry array is still there).
    Zeroed,
    /// The image cut 1 MiB short, as a disk copied onto a smaller one: no backup at all.
    Cut,
}

/// The backup GPT gone: the map warns, reads the primary, and the replica is clean; with
/// `tail`, the end of the disk (where the backup lives) is also byte-identical and sgdisk says
/// the same of both.
fn backup_gpt_gone(name: &str, case: BackupGone, tail: bool) {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, parts) = small_gpt(d);
    let good = map_of(&img);
    let size = std::fs::metadata(&img).unwrap().len();
    let (src, dst) = (d.join("src.img"), d.join("dst.img"));
    copy_image(&img, &src);
    let needle = match case {
        BackupGone::Zeroed => {
            write_at(&src, size - SECTOR, &[0u8; SECTOR as usize]);
            "backup GPT header at LBA"
        }
        BackupGone::Cut => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&src)
                .unwrap()
                .set_len(size - MIB)
                .unwrap();
            "past the end of the disk"
        }
    };
    let src_size = std::fs::metadata(&src).unwrap().len();
    let verdict = gpt_verdict(&src);
    assert!(
        gpt_clean(&src).is_err(),
        "sgdisk -v finds nothing wrong: {verdict}"
    );
    let map = map_of(&src);
    assert_eq!(map.table, Some(TableKind::Gpt));
    assert_eq!(map.partitions, good.partitions, "the primary's partitions");
    assert_eq!(map.warnings.len(), 1, "{:?}", map.warnings);
    let w = &map.warnings[0];
    assert!(
        w.starts_with("partition table:") && w.contains(needle),
        "{w}"
    );

    let summary = replicate_map(&src, &dst, &map);
    assert_used_identical(&src, &dst, &map.used);
    let judged = judge(name, &src, &dst, &parts, d);
    assert_eq!(table_dump(&src), table_dump(&dst));
    assert_eq!(map_of(&dst).partitions, good.partitions);
    // What is left of the backup at the end of the disk is sent like any table sectors.
    if tail {
        let n = 33 * SECTOR;
        assert_eq!(
            first_difference(&src, &dst, src_size - n, n),
            None,
            "the last 33 sectors (where the backup GPT lives) differ on the target"
        );
        assert_eq!(
            gpt_verdict(&dst),
            verdict,
            "sgdisk finds the same on the target"
        );
    }
    eprintln!(
        "{name}: warning {w:?}; sent {}, {:?}",
        summary.sent_bytes,
        t0.elapsed()
    );
    for l in judged {
        eprintln!("{l}");
    }
}

/// The image cut 1 MiB short: the backup header's LBA is past the end.
#[test]
fn cut_disk_without_backup_gpt_uses_the_primary() {
    backup_gpt_gone(
        "cut_disk_without_backup_gpt_uses_the_primary",
        BackupGone::Cut,
        true,
    );
}

/// The backup header zeroed: the primary is read and the replica is clean.
#[test]
fn zeroed_backup_gpt_header_uses_the_primary() {
    backup_gpt_gone(
        "zeroed_backup_gpt_header_uses_the_primary",
        BackupGone::Zeroed,
        false,
    );
}

/// The backup header zeroed: the backup entry array before it still holds the table, and the
/// target must get it too.
#[test]
fn zeroed_backup_gpt_header_leaves_the_end_of_the_disk_identical() {
    backup_gpt_gone(
        "zeroed_backup_gpt_header_leaves_the_end_of_the_disk_identical",
        BackupGone::Zeroed,
        true,
    );
}

/// The primary GPT header's CRC broken: the backup is read, and the replica is clean.
#[test]
fn corrupt_primary_gpt_uses_the_backup() {
    const NAME: &str = "corrupt_primary_gpt_uses_the_backup";
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, parts) = small_gpt(d);
    let dst = d.join("target.img");
    let good = map_of(&img);
    // A bit of the first usable LBA: the header's bytes no longer match its CRC32.
    let at = SECTOR + 40;
    let mut b = read_at(&img, at, 1);
    b[0] ^= 0x01;
    write_at(&img, at, &b);
    let verdict = gpt_verdict(&img);
    assert!(
        gpt_clean(&img).is_err(),
        "sgdisk -v finds nothing wrong: {verdict}"
    );

    let map = map_of(&img);
    assert_eq!(map.table, Some(TableKind::Gpt));
    assert_eq!(map.partitions, good.partitions, "the backup's partitions");
    assert_eq!(map.warnings.len(), 1, "{:?}", map.warnings);
    let w = &map.warnings[0];
    assert!(
        w.contains("primary GPT header at LBA 1") && w.contains("using the backup"),
        "{w}"
    );
    assert_eq!(map.used, good.used, "the same blocks are sent");

    let summary = replicate_map(&img, &dst, &map);
    assert_used_identical(&img, &dst, &map.used);
    assert_eq!(
        gpt_verdict(&dst),
        verdict,
        "sgdisk finds the same on the target"
    );
    let judged = judge(NAME, &img, &dst, &parts, d);
    assert_eq!(map_of(&dst).partitions, good.partitions);
    eprintln!(
        "{NAME}: warning {w:?}; sent {}, {:?}",
        summary.sent_bytes,
        t0.elapsed()
    );
    for l in judged {
        eprintln!("{l}");
    }
}

/// `blockrep blockmap IMG [--json]`: each partition with its filesystem and used bytes, the
/// totals; JSON whose extents add up; a warning on stderr for a corrupt partition.
#[test]
fn blockmap_cli_lists_partitions_and_warns_on_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, parts) = small_gpt(d);
    let blockmap = |json: bool| {
        let mut c = Command::new(process::SEND);
        c.arg("blockmap").arg(&img);
        if json {
            c.arg("--json");
        }
        let out = process::run(&mut c);
        assert!(out.status.success(), "blockrep blockmap: {out:?}");
        (out.stdout, out.stderr)
    };
    let check_json = |text: &str, map: &blockrep_blockmap::DiskMap| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(text).expect("--json is JSON");
        let used = v["used_bytes"].as_u64().unwrap();
        assert_eq!(used, map.used.total());
        assert_eq!(v["size"].as_u64(), Some(160 * MIB));
        assert_eq!(v["table"].as_str(), Some("gpt"));
        let extents = v["extents"].as_array().unwrap();
        assert_eq!(v["extent_count"].as_u64(), Some(extents.len() as u64));
        let mut end = 0;
        let mut total = 0;
        for e in extents {
            let (o, l) = (e[0].as_u64().unwrap(), e[1].as_u64().unwrap());
            assert!(o >= end && l > 0, "extents sorted and disjoint: {e}");
            end = o + l;
            total += l;
        }
        assert!(end <= 160 * MIB);
        assert_eq!(total, used, "the extents add up to used_bytes");
        let ps = v["partitions"].as_array().unwrap();
        assert_eq!(ps.len(), map.partitions.len());
        for (j, m) in ps.iter().zip(&map.partitions) {
            assert_eq!(j["number"].as_u64(), Some(u64::from(m.number)));
            assert_eq!(j["start"].as_u64(), Some(m.start));
            assert_eq!(j["length"].as_u64(), Some(m.len));
            assert_eq!(j["filesystem"].as_str(), m.fs.map(|f| f.name()));
            assert_eq!(j["used_bytes"].as_u64(), Some(m.used_bytes));
            assert_eq!(j["sent_whole_because"].as_str(), m.fallback.as_deref());
        }
        assert_eq!(v["warnings"].as_array().unwrap().len(), map.warnings.len());
        v
    };

    let map = map_of(&img);
    let (text, err) = blockmap(false);
    assert!(!err.contains("warning"), "{err}");
    for (p, fs) in parts.iter().zip(["fat32", "ext4", "swap"]) {
        let row = text
            .lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&p.number.to_string().as_str())
                    && w.get(1) == Some(&p.start.to_string().as_str())
            })
            .unwrap_or_else(|| panic!("no row for partition {}:\n{text}", p.number));
        assert!(row.split_whitespace().any(|w| w == fs), "{row}");
        let m = map
            .partitions
            .iter()
            .find(|m| m.number == p.number)
            .unwrap();
        assert!(row.ends_with(&human_bytes(m.used_bytes)), "{row}");
        assert!(!row.contains("sent whole"), "{row}");
    }
    assert!(text.contains("partition table: gpt"), "{text}");
    let totals = text
        .lines()
        .find(|l| l.contains("to send:"))
        .expect("a totals line");
    assert!(
        totals.contains(&format!(
            "to send: {} of {}",
            human_bytes(map.used.total()),
            human_bytes(160 * MIB)
        )),
        "{totals}"
    );
    let (json, err) = blockmap(true);
    assert!(err.is_empty(), "{err}");
    let v = check_json(&json, &map);
    let tools_used: u64 = parts.iter().map(|p| usage(&img, p, d).used).sum();
    assert!(v["used_bytes"].as_u64().unwrap() >= tools_used);

    flip_group_descriptor_bit(&img, parts[1].start);
    let map = map_of(&img);
    let (text, err) = blockmap(false);
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning: partition 2 (ext4)"))
        .unwrap_or_else(|| panic!("no warning for partition 2 on stderr: {err:?}"));
    assert!(warning.contains("sending it whole"), "{warning}");
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("2"))
        .unwrap();
    assert!(row.contains("(sent whole)"), "{row}");
    let (json, _) = blockmap(true);
    let v = check_json(&json, &map);
    assert!(v["partitions"][1]["sent_whole_because"].is_string());
    assert!(v["warnings"][0].as_str().unwrap().contains("partition 2"));
    eprintln!("blockmap warning line: {warning}");
}

/// `OsStr::new`, short.
fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}
