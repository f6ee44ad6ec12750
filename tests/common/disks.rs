//! Real disks for the used-block tests: made by the tools that make servers' disks (sgdisk,
//! sfdisk, mkfs.*, mkswap), populated through the filesystems themselves (mke2fs -d, debugfs,
//! mtools, loop mounts, ntfs-3g), and judged by their own checkers (e2fsck, xfs_repair,
//! fsck.vfat, ntfsfix) and usage reports (dumpe2fs, xfs_db, ntfscluster).
//!
//! Loop devices and mounts live in guards that undo them on drop, even when a test panics.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use blockrep::sender::{self, Control, Mode};
use blockrep::{SendConfig, SendSummary, SourceSpec};
use blockrep_blockmap::{map_disk, DiskMap, ExtentSet, FileDisk};

use crate::common::{random_bytes, receiver_config, text_bytes, Pki, Receiver, MIB};

/// Sector size of every image made here.
pub const SECTOR: u64 = 512;

/// What a tool printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Both streams, for assertion messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a tool (C locale, mtools' drive-geometry check off) and returns what it did.
pub fn exec<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (see scripts/install-deps): {e}"));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a tool that must succeed; returns its stdout.
pub fn run<S: AsRef<OsStr> + std::fmt::Debug>(program: &str, args: &[S]) -> String {
    let out = exec(program, args);
    assert!(
        out.ok(),
        "{program} {args:?} failed ({:?}):\n{}",
        out.code,
        out.text()
    );
    out.stdout
}

/// `path?offset=N`: how e2fsprogs tools address a filesystem inside an image.
pub fn e2spec(img: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", img.display())
}

/// A sparse file of `size` bytes (all zero).
pub fn sparse(path: &Path, size: u64) {
    File::create(path).unwrap().set_len(size).unwrap();
}

pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

pub fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// Fills `offset .. offset + len` with stale non-zero data (pseudo-random, different in every
/// MiB), as a disk that held other things before its filesystems were made.
pub fn fill_garbage(path: &Path, offset: u64, len: u64, seed: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(MIB) as usize;
        random_bytes(
            &mut buf[..n],
            seed ^ (offset + at).wrapping_mul(0x9e37_79b9),
        );
        f.write_all_at(&buf[..n], offset + at).unwrap();
        at += n as u64;
    }
}

/// Copies `offset .. offset + len` of `img` into a new sparse file (all-zero MiBs are left as
/// holes), so that tools without an offset option can judge one partition without root.
pub fn extract(img: &Path, offset: u64, len: u64, dest: &Path) {
    let (src, out) = (File::open(img).unwrap(), File::create(dest).unwrap());
    out.set_len(len).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(MIB) as usize;
        src.read_exact_at(&mut buf[..n], offset + at).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            out.write_all_at(&buf[..n], at).unwrap();
        }
        at += n as u64;
    }
}

/// True when `offset .. offset + len` of `path` holds only zeros.
pub fn all_zero(path: &Path, offset: u64, len: u64) -> bool {
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(MIB) as usize;
        f.read_exact_at(&mut buf[..n], offset + at).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
        at += n as u64;
    }
    true
}

/// The first byte where the two ranges differ, if any.
pub fn first_difference(a: &Path, b: &Path, offset: u64, len: u64) -> Option<u64> {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(MIB) as usize;
        fa.read_exact_at(&mut x[..n], offset + at).unwrap();
        fb.read_exact_at(&mut y[..n], offset + at).unwrap();
        if let Some(i) = x[..n].iter().zip(&y[..n]).position(|(p, q)| p != q) {
            return Some(offset + at + i as u64);
        }
        at += n as u64;
    }
    None
}

/// The used-block map of an image, as `--mode used` computes it.
pub fn map_of(img: &Path) -> DiskMap {
    map_disk(&FileDisk::new(File::open(img).unwrap()).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Partition tables.

/// One partition as `sfdisk --json` reads it, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPartition {
    pub number: u32,
    pub start: u64,
    pub len: u64,
    pub type_id: String,
}

/// The partitions sfdisk reads from an image (GPT or MBR, logical ones included; the
/// extended container too).
pub fn sfdisk_partitions(img: &Path) -> Vec<ToolPartition> {
    let out = run("sfdisk", &[OsStr::new("--json"), img.as_os_str()]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("sfdisk --json");
    let parts = v["partitiontable"]["partitions"]
        .as_array()
        .expect("a partition list");
    parts
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let digits = node.len() - node.chars().rev().take_while(char::is_ascii_digit).count();
            ToolPartition {
                number: node[digits..].parse().unwrap(),
                start: p["start"].as_u64().unwrap() * SECTOR,
                len: p["size"].as_u64().unwrap() * SECTOR,
                type_id: p["type"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// `sgdisk -v`: exit 0, "No problems found", and no complaint about the headers (sgdisk
/// verifies the table it rebuilt in memory, so a corrupt header still ends in "No problems
/// found" after a caution and "Main header: ERROR").
pub fn gpt_clean(img: &Path) -> Result<(), String> {
    let out = exec("sgdisk", &[OsStr::new("-v"), img.as_os_str()]);
    let text = out.text();
    let complaint = ["ERROR", "Caution", "Warning", "corrupt", "damaged"]
        .iter()
        .any(|w| text.contains(w));
    if out.ok() && text.contains("No problems found") && !complaint {
        Ok(())
    } else {
        Err(out.text())
    }
}

/// `sfdisk --verify`: exit 0 and no complaint.
pub fn mbr_clean(img: &Path) -> Result<(), String> {
    let out = exec("sfdisk", &[OsStr::new("--verify"), img.as_os_str()]);
    let text = out.text();
    if out.ok() && text.contains("No errors detected") {
        Ok(())
    } else {
        Err(text)
    }
}

/// `sfdisk --dump` without the line naming the device: equal for two copies of one table.
pub fn table_dump(img: &Path) -> String {
    let name = img.display().to_string();
    run("sfdisk", &[OsStr::new("--dump"), img.as_os_str()])
        .lines()
        .filter(|l| !l.starts_with("device:"))
        .map(|l| l.replace(&name, "IMG"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// File trees.

/// What [`make_tree`] writes that is deleted again once it is on a filesystem: its data
/// lingers in free space.
pub const DOOMED: [&str; 3] = ["var/log/old.log", "var/cache/blob", "tmp/scratch"];

/// Writes a small server-like tree (about 6.5 MiB: configuration, binaries, logs; 2.7 MiB of
/// it in [`DOOMED`]). `symlinks: false` for FAT.
pub fn make_tree(dir: &Path, seed: u64, symlinks: bool) {
    let file = |rel: &str, len: usize, text: bool, s: u64| {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut buf = vec![0u8; len];
        if text {
            text_bytes(&mut buf, seed ^ s);
        } else {
            random_bytes(&mut buf, seed ^ s);
        }
        fs::write(p, buf).unwrap();
    };
    fs::create_dir_all(dir).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/hostname"), format!("server-{seed}\n")).unwrap();
    file("etc/fstab", 2000, true, 1);
    for i in 0..24u64 {
        file(
            &format!("etc/conf.d/unit{i:02}.conf"),
            1000 + 137 * i as usize,
            true,
            100 + i,
        );
    }
    file("usr/bin/agent", (MIB + 12_345) as usize, false, 2);
    file("usr/lib/libdisk.so.1", 700 << 10, false, 3);
    file("var/log/syslog", (3 * MIB / 2) as usize, true, 4);
    file("var/log/old.log", MIB as usize, true, 5);
    file("var/cache/blob", (5 * MIB / 4) as usize, false, 6);
    for i in 0..8u64 {
        file(&format!("tmp/scratch/part{i}"), 64 << 10, false, 200 + i);
    }
    file("home/user/notes.txt", 10_000, true, 7);
    file("home/user/empty", 0, true, 8);
    if symlinks {
        std::os::unix::fs::symlink("hostname", dir.join("etc/localname")).unwrap();
    }
}

/// Removes [`DOOMED`] from the host's copy, so that it shows what the filesystem should hold.
pub fn forget_doomed(dir: &Path) {
    for rel in DOOMED {
        let p = dir.join(rel);
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }
}

/// `diff -r` of two trees (lost+found, which only ext4 has, left out).
pub fn diff_trees(a: &Path, b: &Path) -> Result<(), String> {
    let out = exec(
        "diff",
        &[
            OsStr::new("-r"),
            OsStr::new("--no-dereference"),
            OsStr::new("--exclude=lost+found"),
            a.as_os_str(),
            b.as_os_str(),
        ],
    );
    if out.ok() {
        Ok(())
    } else {
        Err(out.text())
    }
}

// ---------------------------------------------------------------------------------------------
// Loop devices and mounts.

/// A loop device over part of an image; detached on drop.
pub struct Loop {
    pub dev: PathBuf,
}

impl Loop {
    /// `losetup --find --show [-r] -o OFFSET --sizelimit LEN IMG`. Another test may take the
    /// device `--find` chose before this one binds it: retried a few times.
    pub fn attach(img: &Path, offset: u64, len: u64, read_only: bool) -> Result<Loop, String> {
        let (o, l) = (offset.to_string(), len.to_string());
        let mut args: Vec<&OsStr> = vec![OsStr::new("--find"), OsStr::new("--show")];
        if read_only {
            args.push(OsStr::new("-r"));
        }
        args.extend([
            OsStr::new("-o"),
            OsStr::new(&o),
            OsStr::new("--sizelimit"),
            OsStr::new(&l),
            img.as_os_str(),
        ]);
        let mut last = String::new();
        for _ in 0..5 {
            let out = exec("losetup", &args);
            if out.ok() {
                return Ok(Loop {
                    dev: PathBuf::from(out.stdout.trim()),
                });
            }
            last = out.text();
            if !last.contains("busy") {
                break;
            }
        }
        Err(format!("losetup: {}", last.trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let out = exec("losetup", &[OsStr::new("-d"), self.dev.as_os_str()]);
        if !out.ok() {
            eprintln!("losetup -d {}: {}", self.dev.display(), out.text());
        }
    }
}

/// How a filesystem is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Ext4,
    Xfs,
    Ntfs3g,
}

/// A mounted loop device; unmounted (then detached) on drop.
pub struct Mount {
    pub dir: PathBuf,
    // Dropped after `drop` below has unmounted.
    _dev: Loop,
}

impl Mount {
    /// Mounts `dev` on `dir` (created), read-only with no log replay unless `writable`.
    pub fn new(dev: Loop, dir: &Path, kind: MountKind, writable: bool) -> Result<Mount, String> {
        fs::create_dir_all(dir).unwrap();
        let opts = match (kind, writable) {
            (MountKind::Ext4, false) => "ro,noload",
            // Two copies of one XFS have one UUID: nouuid lets them be mounted side by side.
            (MountKind::Xfs, false) => "ro,norecovery,nouuid",
            (MountKind::Ntfs3g, false) => "ro",
            (_, true) => "rw",
        };
        let out = match kind {
            MountKind::Ext4 | MountKind::Xfs => exec(
                "mount",
                &[
                    OsStr::new("-t"),
                    OsStr::new(if kind == MountKind::Ext4 {
                        "ext4"
                    } else {
                        "xfs"
                    }),
                    OsStr::new("-o"),
                    OsStr::new(opts),
                    dev.dev.as_os_str(),
                    dir.as_os_str(),
                ],
            ),
            // On a block device ntfs-3g mounts as fuseblk, whose umount waits for the
            // daemon to write everything back.
            MountKind::Ntfs3g => exec(
                "ntfs-3g",
                &[
                    OsStr::new("-o"),
                    OsStr::new(opts),
                    dev.dev.as_os_str(),
                    dir.as_os_str(),
                ],
            ),
        };
        if !out.ok() {
            return Err(format!("mounting {kind:?} ({opts}): {}", out.text().trim()));
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
            _dev: dev,
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A moment after the last use the mount can still be busy: a few tries, then lazy.
        for _ in 0..10 {
            let out = exec("umount", &[self.dir.as_os_str()]);
            if out.ok() {
                return;
            }
            if !out.text().contains("busy") {
                eprintln!("umount {}: {}", self.dir.display(), out.text());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = exec("umount", &[OsStr::new("-l"), self.dir.as_os_str()]);
        eprintln!("umount -l {}: {}", self.dir.display(), out.text());
    }
}

/// Mounts `offset .. offset + len` of `img`.
pub fn mount_part(
    img: &Path,
    offset: u64,
    len: u64,
    dir: &Path,
    kind: MountKind,
    writable: bool,
) -> Result<Mount, String> {
    Mount::new(
        Loop::attach(img, offset, len, !writable)?,
        dir,
        kind,
        writable,
    )
}

/// What this machine allows: loop devices with kernel mounts of ext4 and XFS, and ntfs-3g
/// (FUSE). Found out once, by doing it on scratch filesystems.
pub struct Caps {
    pub mount: Result<(), String>,
    pub xfs: Result<(), String>,
    pub fuse: Result<(), String>,
}

pub fn caps() -> &'static Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    CAPS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("probe.img");
        let probe = |kind: MountKind, size: u64, mkfs: &str, args: &[&str]| {
            sparse(&img, size);
            let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
            a.push(img.as_os_str());
            let out = exec(mkfs, &a);
            if !out.ok() {
                return Err(format!("{mkfs}: {}", out.text().trim()));
            }
            let m = mount_part(&img, 0, size, &dir.path().join("mnt"), kind, false)?;
            if !m.dir.join(".").exists() {
                return Err("mount point vanished".into());
            }
            drop(m);
            Ok(())
        };
        let root = if exec("id", &["-u"]).stdout.trim() == "0" {
            Ok(())
        } else {
            Err("not root (loop devices and mounts need it)".to_owned())
        };
        let mount = root.and_then(|()| probe(MountKind::Ext4, 8 * MIB, "mkfs.ext4", &["-q", "-F"]));
        let xfs = mount
            .clone()
            .and_then(|()| probe(MountKind::Xfs, 300 * MIB, "mkfs.xfs", &["-q", "-f", "-K"]));
        let fuse = mount
            .clone()
            .and_then(|()| probe(MountKind::Ntfs3g, 8 * MIB, "mkfs.ntfs", &["-q", "-f", "-F"]));
        Caps { mount, xfs, fuse }
    })
}

// ---------------------------------------------------------------------------------------------
// Filesystems: made, populated, judged, measured.

/// Which filesystem a test put in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    Vfat,
    Ext4,
    Xfs,
    Swap,
    Ntfs,
}

/// What a filesystem's own tools say about its space.
#[derive(Debug, Clone)]
pub struct Usage {
    /// Bytes the filesystem spans from the partition's start.
    pub fs_bytes: u64,
    /// Bytes in use (everything not free).
    pub used: u64,
    /// The free ranges, relative to the partition's start, when the tool lists them.
    pub free: Option<ExtentSet>,
}

fn field(text: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in:\n{text}"));
    let v = line[name.len()..]
        .trim()
        .trim_start_matches([':', '='])
        .trim();
    v.split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{name:?} in {line:?}: {e}"))
}

/// `dumpe2fs`: block size, count, and every group's free block ranges.
pub fn ext_usage(spec: &str) -> Usage {
    let text = run("dumpe2fs", &[spec]);
    let bs = field(&text, "Block size:");
    let blocks = field(&text, "Block count:");
    let mut free = ExtentSet::new();
    let mut free_blocks = 0;
    for line in text.lines() {
        // Group lines are indented; the header's "Free blocks:" count is not.
        let Some(list) = line
            .strip_prefix("  Free blocks: ")
            .or_else(|| line.strip_prefix("  Free blocks:"))
        else {
            continue;
        };
        for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (a, b) = match r.split_once('-') {
                Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
                None => {
                    let a = r.parse::<u64>().unwrap();
                    (a, a)
                }
            };
            free.insert(a * bs, (b - a + 1) * bs);
            free_blocks += b - a + 1;
        }
    }
    assert_eq!(
        free_blocks,
        field(&text, "Free blocks:"),
        "dumpe2fs's group lists and its total disagree"
    );
    Usage {
        fs_bytes: blocks * bs,
        used: (blocks - free_blocks) * bs,
        free: Some(free),
    }
}

/// `xfs_db -r -c 'freesp -d'`: the free extents of every allocation group's B+trees.
pub fn xfs_usage(dev: &Path) -> Usage {
    let sb = run(
        "xfs_db",
        &[
            OsStr::new("-r"),
            OsStr::new("-c"),
            OsStr::new("sb 0"),
            OsStr::new("-c"),
            OsStr::new("p blocksize agblocks dblocks"),
            dev.as_os_str(),
        ],
    );
    let (bs, agblocks, dblocks) = (
        field(&sb, "blocksize"),
        field(&sb, "agblocks"),
        field(&sb, "dblocks"),
    );
    let text = run(
        "xfs_db",
        &[
            OsStr::new("-r"),
            OsStr::new("-c"),
            OsStr::new("freesp -s -d"),
            dev.as_os_str(),
        ],
    );
    let mut free = ExtentSet::new();
    for line in text.lines() {
        let v: Vec<u64> = line
            .split_whitespace()
            .map_while(|w| w.parse().ok())
            .collect();
        if let [agno, agbno, len] = v[..] {
            free.insert((agno * agblocks + agbno) * bs, len * bs);
        }
    }
    let total = field(&text, "total free blocks");
    assert_eq!(free.total(), total * bs, "xfs_db's list and total disagree");
    Usage {
        fs_bytes: dblocks * bs,
        used: dblocks * bs - free.total(),
        free: Some(free),
    }
}

/// `fsck.vfat -n -v`: the area before the data clusters plus the clusters in use.
pub fn fat_usage(part: &Path) -> Usage {
    let out = exec(
        "fsck.vfat",
        &[OsStr::new("-n"), OsStr::new("-v"), part.as_os_str()],
    );
    assert!(out.ok(), "fsck.vfat -n -v: {}", out.text());
    let text = out.stdout;
    let cluster = text
        .lines()
        .find(|l| l.contains("bytes per cluster"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|w| w.parse::<u64>().ok())
        .expect("bytes per cluster");
    let data_start = field(&text, "Data area starts at byte");
    let sectors = text
        .lines()
        .find(|l| l.contains("sectors total"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|w| w.parse::<u64>().ok())
        .expect("sectors total");
    // The summary: "NAME: F files, USED/TOTAL clusters".
    let summary = text
        .lines()
        .rev()
        .find(|l| l.ends_with(" clusters"))
        .expect("the summary line");
    let counts = summary.rsplit(' ').nth(1).unwrap();
    let used_clusters: u64 = counts.split('/').next().unwrap().parse().unwrap();
    Usage {
        fs_bytes: sectors * SECTOR,
        used: data_start + used_clusters * cluster,
        free: None,
    }
}

/// `ntfscluster -i`: the volume's bytes less its free bytes (from `$Bitmap`).
pub fn ntfs_usage(part: &Path) -> Usage {
    let text = run("ntfscluster", &[OsStr::new("-i"), part.as_os_str()]);
    let volume = field(&text, "bytes per volume");
    let free = field(&text, "bytes of free space");
    Usage {
        fs_bytes: volume,
        used: volume - free,
        free: None,
    }
}

/// A filesystem checker's verdict on `dev` (a loop device or an extracted partition).
pub fn fsck(fs: Fs, dev: &Path) -> Result<String, String> {
    let d = dev.as_os_str();
    let (out, good) = match fs {
        Fs::Ext4 => {
            let out = exec("e2fsck", &[OsStr::new("-fn"), d]);
            let good = out.ok();
            (out, good)
        }
        Fs::Xfs => {
            let out = exec("xfs_repair", &[OsStr::new("-n"), OsStr::new("-f"), d]);
            let good = out.ok();
            (out, good)
        }
        Fs::Vfat => {
            let out = exec("fsck.vfat", &[OsStr::new("-n"), d]);
            let good = out.ok() && !out.text().contains("differences between boot sector");
            (out, good)
        }
        Fs::Ntfs => {
            let out = exec("ntfsfix", &[OsStr::new("-n"), d]);
            let good = out.ok() && out.stdout.contains("was processed successfully");
            (out, good)
        }
        Fs::Swap => {
            let out = exec("swaplabel", &[d]);
            let good = out.ok() && out.stdout.contains("UUID:");
            (out, good)
        }
    };
    if good {
        Ok(out.text())
    } else {
        Err(format!(
            "{fs:?} check of {} ({:?}):\n{}",
            dev.display(),
            out.code,
            out.text()
        ))
    }
}

/// Makes an ext4 filesystem over stale data at `offset` of `img` (`nodiscard`, so free space
/// keeps it), optionally populated from `tree` by mke2fs itself.
pub fn mkfs_ext4(
    img: &Path,
    offset: u64,
    len: u64,
    block: u64,
    features: &str,
    tree: Option<&Path>,
) {
    let e = format!("offset={offset},nodiscard");
    let (b, count) = (block.to_string(), (len / block).to_string());
    let mut args: Vec<&OsStr> = ["-q", "-F", "-t", "ext4", "-b", &b, "-E", &e]
        .into_iter()
        .map(OsStr::new)
        .collect();
    if !features.is_empty() {
        args.extend([OsStr::new("-O"), OsStr::new(features)]);
    }
    if let Some(t) = tree {
        args.extend([OsStr::new("-d"), t.as_os_str()]);
    }
    args.extend([img.as_os_str(), OsStr::new(&count)]);
    run("mkfs.ext4", &args);
}

/// Deletes [`DOOMED`] from an unmounted ext4 with debugfs (which frees the blocks and leaves
/// the data).
pub fn ext4_delete_doomed(img: &Path, offset: u64, dir: &Path) {
    let script = dir.join("debugfs.cmds");
    let mut cmds = String::new();
    for rel in DOOMED {
        if rel == "tmp/scratch" {
            for i in 0..8 {
                cmds.push_str(&format!("rm /{rel}/part{i}\n"));
            }
            cmds.push_str(&format!("rmdir /{rel}\n"));
        } else {
            cmds.push_str(&format!("rm /{rel}\n"));
        }
    }
    fs::write(&script, cmds).unwrap();
    let spec = e2spec(img, offset);
    let out = exec(
        "debugfs",
        &[
            OsStr::new("-w"),
            OsStr::new("-f"),
            script.as_os_str(),
            OsStr::new(&spec),
        ],
    );
    // debugfs exits 0 even when a command fails; its complaints name the command.
    assert!(
        out.ok() && !out.stderr.contains("rm:") && !out.stderr.contains("rmdir:"),
        "debugfs: {}",
        out.text()
    );
}

/// Copies a tree into a mounted filesystem, then deletes [`DOOMED`] from it.
pub fn populate_mounted(mnt: &Path, tree: &Path) {
    let src = format!("{}/.", tree.display());
    run("cp", &[OsStr::new("-r"), OsStr::new(&src), mnt.as_os_str()]);
    run("sync", &[OsStr::new("-f"), mnt.as_os_str()]);
    for rel in DOOMED {
        let p = mnt.join(rel);
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }
}

/// `mkfs.fat -F 32` (512-byte clusters, so that a small ESP still has the 65525 clusters
/// FAT32 needs) at `offset`, populated with mtools, [`DOOMED`] deleted.
pub fn mkfs_vfat(img: &Path, offset: u64, len: u64, tree: &Path) {
    let sector = (offset / SECTOR).to_string();
    let kib = (len / 1024).to_string();
    let off = format!("--offset={sector}");
    run(
        "mkfs.fat",
        &[
            OsStr::new("-F"),
            OsStr::new("32"),
            OsStr::new("-s"),
            OsStr::new("1"),
            OsStr::new("-n"),
            OsStr::new("ESP"),
            OsStr::new("-h"),
            OsStr::new(&sector),
            OsStr::new(&off),
            img.as_os_str(),
            OsStr::new(&kib),
        ],
    );
    let drive = format!("{}@@{offset}", img.display());
    let mut args: Vec<std::ffi::OsString> =
        vec!["-s".into(), "-Q".into(), "-i".into(), drive.clone().into()];
    let mut top: Vec<_> = fs::read_dir(tree)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    top.sort();
    args.extend(top.into_iter().map(Into::into));
    args.push("::/".into());
    run("mcopy", &args);
    for rel in DOOMED {
        let tool = if rel == "tmp/scratch" {
            "mdeltree"
        } else {
            "mdel"
        };
        run(tool, &["-i", &drive, &format!("::/{rel}")]);
    }
}

/// Everything of a FAT filesystem at `offset` of `img`, copied out with mtools.
pub fn fat_tree(img: &Path, offset: u64, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let drive = format!("{}@@{offset}", img.display());
    run(
        "mcopy",
        &[
            OsStr::new("-s"),
            OsStr::new("-n"),
            OsStr::new("-i"),
            OsStr::new(&drive),
            OsStr::new("::/*"),
            dest.as_os_str(),
        ],
    );
}

/// Writes a swap signature page (mkswap's, with a label) at `offset`; the rest of the
/// partition keeps what it held, as swap space does.
pub fn mkswap(img: &Path, offset: u64, len: u64, scratch: &Path) {
    sparse(scratch, len);
    run(
        "mkswap",
        &[
            OsStr::new("-q"),
            OsStr::new("-L"),
            OsStr::new("swap0"),
            scratch.as_os_str(),
        ],
    );
    let page = read_at(scratch, 0, 4096);
    assert!(
        all_zero(scratch, 4096, len - 4096),
        "mkswap wrote past its first page"
    );
    write_at(img, offset, &page);
}

// ---------------------------------------------------------------------------------------------
// Replication.

/// Sends `src` with `Mode::Used` over mutual TLS on 127.0.0.1 to a new all-zero sparse target
/// of the same size at `dst`, and returns the sender's summary.
pub fn replicate_used(src: &Path, dst: &Path) -> SendSummary {
    let size = fs::metadata(src).unwrap().len();
    sparse(dst, size);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = Pki::new();
        let rx = Receiver::start(receiver_config(&pki, &[("d0", dst)])).await;
        let mut c = SendConfig::new(
            rx.addr.to_string(),
            pki.client(),
            vec![SourceSpec::new("d0", src)],
        );
        c.mode = Mode::Used;
        c.io_timeout = Duration::from_secs(30);
        let summary =
            tokio::time::timeout(Duration::from_secs(120), sender::send(c, Control::new()))
                .await
                .expect("the transfer ends within 120 s")
                .expect("the transfer succeeds");
        let outcome = rx.stop().await;
        assert_eq!(
            (outcome.succeeded, outcome.failed),
            (1, 0),
            "the receiver saw one good session"
        );
        summary
    })
}
