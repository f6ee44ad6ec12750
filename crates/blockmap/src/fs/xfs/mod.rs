//! XFS: the used blocks of the data section, read from each allocation group's
//! by-block-number free-space B+tree.
//!
//! Everything of an allocation group (AG) that its free-space tree does not list is used: the
//! AG headers (superblock copy, AGF, AGI, AGFL), every B+tree block, inode chunks, file data,
//! the internal log, and the blocks on the AG free list (reserved for B+tree growth, not in
//! the tree; counted as used, which is conservative and costs a few blocks per AG).
//!
//! Checks, any failure of which sends the whole partition: the superblock's geometry and (v5)
//! CRC; each AGF's magic, CRC, UUID, sequence number, length and counters; each tree block's
//! magic, CRC, self-address, owner, UUID, level, record count and sibling links; that records
//! are sorted, disjoint and inside the AG, and that parent keys match children; that the free
//! blocks found equal the AGF's `agf_freeblks` and the longest extent its `agf_longest`; that
//! the by-size free-space tree holds the same extents (compared by count, total and an
//! order-independent digest, so memory stays constant); that no tree block and no part of the
//! internal log is listed as free; and that the internal log is clean (ends with an unmount
//! record), since a log that needs recovery may hold allocations the free-space trees on disk
//! do not show yet.
//!
//! Read: v5 (CRC) and v4 filesystems. Refused as unsupported: superblock versions before 4,
//! unknown feature bits (and the metadir/zoned features, whose realtime groups can sit on the
//! data device), and logs that do not end with an unmount record: a mounted filesystem, one
//! that crashed, and also a frozen one (`xfs_freeze` leaves a "covered" log of superblock-only
//! transactions, which this reader does not parse). An external log is accepted (none of it is
//! in this region, and its state cannot be checked from here); a realtime device is ignored
//! (not in this region either). Bytes of the partition past the data section are not used.

mod alloc;
mod log;
mod sb;

use crate::fs::FsKind;
use crate::{corrupt, ExtentSet, MetaError, Region};
use alloc::Tree;
use sb::Superblock;

/// Finds an XFS superblock at byte 0. A region whose first bytes hold the XFS magic but whose
/// superblock fails its checks is an error (a damaged XFS, not something else).
pub fn probe(region: &Region) -> Result<Option<FsKind>, MetaError> {
    Ok(Superblock::read(region)?.map(|_| FsKind::Xfs))
}

/// The bytes the filesystem uses, relative to the region's start, in whole blocks.
pub fn used(region: &Region) -> Result<ExtentSet, MetaError> {
    let sb = Superblock::read(region)?.ok_or_else(|| corrupt!("xfs: no superblock at byte 0"))?;
    sb.check_supported()?;
    let data_bytes = sb.data_bytes().unwrap_or(u64::MAX);
    if data_bytes > region.len() {
        return Err(corrupt!(
            "xfs superblock: {} blocks of {} bytes ({data_bytes} bytes) do not fit the \
             partition's {} bytes",
            sb.dblocks,
            sb.block_size,
            region.len()
        ));
    }
    let log = internal_log(&sb)?;
    if let Some((offset, _)) = log {
        // First, as it is cheap and decides whether the trees can be trusted at all.
        log::check_clean(region, &sb, offset)?;
    }

    let bs = u64::from(sb.block_size);
    let mut used = ExtentSet::new();
    for agno in 0..sb.agcount {
        let agf = alloc::read_agf(region, &sb, agno)?;
        let base = sb.ag_offset(agno);
        let ag_len = sb.ag_len(agno);
        // Everything between two free extents is used; the walk checks that extents come
        // in increasing order, after the AG headers and inside the AG.
        let mut used_from = 0u32;
        let by_block = alloc::walk(region, &sb, agno, &agf, Tree::ByBlock, |start, count| {
            let gap = start.saturating_sub(used_from);
            used.insert(base + u64::from(used_from) * bs, u64::from(gap) * bs);
            used_from = start.saturating_add(count);
        })?;
        let rest = ag_len.saturating_sub(used_from);
        used.insert(base + u64::from(used_from) * bs, u64::from(rest) * bs);

        if by_block.free_blocks != u64::from(agf.freeblks) || by_block.longest != agf.longest {
            return Err(corrupt!(
                "xfs AG {agno}: the by-block free-space B+tree holds {} free blocks (longest \
                 extent {}), the AGF says {} (longest {})",
                by_block.free_blocks,
                by_block.longest,
                agf.freeblks,
                agf.longest
            ));
        }
        // The by-size tree must hold the very same extents: a second, independent copy of
        // the free-space map (and the only check of the records themselves on v4, which has
        // no CRCs).
        let by_size = alloc::walk(region, &sb, agno, &agf, Tree::BySize, |_, _| {})?;
        if (by_size.records, by_size.free_blocks, by_size.digest)
            != (by_block.records, by_block.free_blocks, by_block.digest)
        {
            return Err(corrupt!(
                "xfs AG {agno}: the by-size free-space B+tree ({} extents, {} blocks) does not \
                 hold the same extents as the by-block tree ({} extents, {} blocks)",
                by_size.records,
                by_size.free_blocks,
                by_block.records,
                by_block.free_blocks
            ));
        }
        if let Some(b) = by_block
            .tree_blocks
            .iter()
            .chain(&by_size.tree_blocks)
            .find(|&&b| !used.contains(base + u64::from(b) * bs, bs))
        {
            return Err(corrupt!(
                "xfs AG {agno}: free-space B+tree block {b} lies in a free extent"
            ));
        }
    }
    if let Some((offset, len)) = log {
        if !used.contains(offset, len) {
            return Err(corrupt!(
                "xfs: the internal log (bytes {offset}+{len}) overlaps free space"
            ));
        }
    }
    Ok(used)
}

/// Where the internal log is (byte offset and length), or `None` for an external log.
fn internal_log(sb: &Superblock) -> Result<Option<(u64, u64)>, MetaError> {
    if sb.logstart == 0 {
        return Ok(None);
    }
    let agno = sb.logstart >> sb.agblklog;
    let agbno = sb.logstart & ((1u64 << sb.agblklog) - 1);
    let bs = u64::from(sb.block_size);
    let len = u64::from(sb.logblocks) * bs;
    let fits = u32::try_from(agno)
        .ok()
        .filter(|&a| a < sb.agcount)
        .is_some_and(|a| {
            agbno >= u64::from(sb.header_blocks())
                && agbno + u64::from(sb.logblocks) <= u64::from(sb.ag_len(a))
        });
    if !fits || sb.logblocks == 0 || len > sb::MAX_LOG_BYTES {
        return Err(corrupt!(
            "xfs superblock: internal log at block {} (AG {agno} block {agbno}), {} blocks, is \
             not inside one allocation group or is larger than 2 GiB",
            sb.logstart,
            sb.logblocks
        ));
    }
    // agno < agcount and agbno < agblocks: bounded like every AG offset.
    Ok(Some((sb.ag_offset(agno as u32) + agbno * bs, len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc32c;
    use crate::read::{FileDisk, ReadAt};
    use std::fs::{self, File};
    use std::io;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const MIB: u64 = 1 << 20;

    use crate::testutil::{run, sparse_image, Rng};

    /// A sparse image of `size` bytes with stale non-zero data every 4 MiB (what a reused
    /// disk holds), formatted with `mkfs.xfs -f -K` and `args`; checked by `xfs_repair -n`
    /// after `populate` (if any) has had its turn.
    fn image(dir: &Path, name: &str, size: u64, args: &[&str]) -> PathBuf {
        let path = dir.join(name);
        let f = File::create(&path).unwrap();
        f.set_len(size).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let stale = rng.bytes(64 * 1024);
        let mut at = 0;
        while at < size {
            std::os::unix::fs::FileExt::write_all_at(&f, &stale, at).unwrap();
            at += 4 * MIB;
        }
        drop(f);
        run(Command::new("mkfs.xfs")
            .args(["-f", "-K", "-q"])
            .args(args)
            .arg(&path));
        path
    }

    /// Writes `count` files of varied sizes under `dir/src` and a protofile that puts them
    /// into the new filesystem's root and a subdirectory (populates without mounting).
    fn protofile(dir: &Path, count: usize) -> PathBuf {
        let src = dir.join("src");
        fs::create_dir_all(&src).unwrap();
        let mut rng = Rng(42);
        let mut root = String::new();
        let mut sub = String::new();
        for i in 0..count {
            let len = if i % 10 == 9 {
                2 * MIB as usize + i
            } else {
                1 + rng.below(300_000) as usize
            };
            let file = src.join(format!("f{i}"));
            fs::write(&file, rng.bytes(len)).unwrap();
            let line = format!("f{i} ---644 0 0 {}\n", file.display());
            if i % 2 == 0 {
                root.push_str(&line);
            } else {
                sub.push_str(&line);
            }
        }
        let proto = format!("boot\n0 0\nd--755 0 0\n{root}sub d--755 0 0\n{sub}$\n$\n");
        let path = dir.join("proto");
        fs::write(&path, proto).unwrap();
        path
    }

    /// The external log of an image made with `-l logdev=`, if any.
    fn logdev(img: &Path) -> Option<PathBuf> {
        let log = img.with_extension("log");
        log.exists().then_some(log)
    }

    /// `tool -r|-n [-l LOG]`, for xfs_db and xfs_repair.
    fn xfs_tool(tool: &str, flag: &str, img: &Path) -> Command {
        let mut cmd = Command::new(tool);
        cmd.arg(flag);
        if let Some(log) = logdev(img) {
            cmd.arg("-l").arg(log);
        }
        cmd
    }

    fn repair_is_clean(img: &Path) {
        run(xfs_tool("xfs_repair", "-n", img).arg(img));
    }

    fn map_file(img: &Path) -> Result<ExtentSet, MetaError> {
        let disk = FileDisk::new(File::open(img).unwrap()).unwrap();
        let region = Region::whole(&disk);
        assert_eq!(probe(&region), Ok(Some(FsKind::Xfs)));
        used(&region)
    }

    /// What `xfs_db` says about an image.
    struct ToolView {
        block_size: u64,
        data_bytes: u64,
        /// Every extent `freesp -d` lists (free-space trees plus free-list blocks), in bytes.
        free: ExtentSet,
        /// Blocks on the AG free lists, in bytes.
        free_list: ExtentSet,
        /// The internal log, in bytes.
        log: Option<(u64, u64)>,
        /// The free-space B+tree heights.
        bno_levels: Vec<u64>,
    }

    fn fields(out: &str) -> Vec<(String, String)> {
        out.lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }

    fn tool_view(img: &Path) -> ToolView {
        let sb = fields(&run(xfs_tool("xfs_db", "-r", img)
            .args([
                "-c",
                "sb 0",
                "-c",
                "print blocksize dblocks agblocks agcount agblklog logstart logblocks",
            ])
            .arg(img)));
        let num = |name: &str| -> u64 {
            sb.iter()
                .find(|(k, _)| k == name)
                .unwrap_or_else(|| panic!("xfs_db printed no {name}"))
                .1
                .parse()
                .unwrap()
        };
        let (bs, agblocks, agcount) = (num("blocksize"), num("agblocks"), num("agcount"));
        let block = |agno: u64, agbno: u64| (agno * agblocks + agbno) * bs;
        let mut free = ExtentSet::new();
        for line in run(xfs_tool("xfs_db", "-r", img)
            .args(["-c", "freesp -d"])
            .arg(img))
        .lines()
        {
            let n: Vec<u64> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if n.len() == 3 && line.split_whitespace().count() == 3 {
                free.insert(block(n[0], n[1]), n[2] * bs);
            }
        }
        let mut cmd = xfs_tool("xfs_db", "-r", img);
        for agno in 0..agcount {
            cmd.args(["-c", &format!("agf {agno}"), "-c", "print bnolevel"]);
            cmd.args(["-c", &format!("agfl {agno}"), "-c", "print bno"]);
        }
        let mut free_list = ExtentSet::new();
        let mut bno_levels = Vec::new();
        for (k, v) in fields(&run(cmd.arg(img))) {
            if k == "bnolevel" {
                bno_levels.push(v.parse().unwrap());
            } else if k.starts_with("bno[") {
                let agno = bno_levels.len() as u64 - 1;
                for slot in v.split_whitespace() {
                    if let Some(Ok(agbno)) = slot.split_once(':').map(|(_, b)| b.parse::<u64>()) {
                        free_list.insert(block(agno, agbno), bs);
                    }
                }
            }
        }
        let logstart = num("logstart");
        let agblklog = num("agblklog");
        let log = (logstart != 0).then(|| {
            let (agno, agbno) = (logstart >> agblklog, logstart & ((1 << agblklog) - 1));
            (block(agno, agbno), num("logblocks") * bs)
        });
        ToolView {
            block_size: bs,
            data_bytes: num("dblocks") * bs,
            free,
            free_list,
            log,
            bno_levels,
        }
    }

    /// Checks the used map against `xfs_db`: it covers every block not listed free, and of the
    /// listed free blocks holds only those on the AG free lists (which `freesp` counts as
    /// free and this reader counts as used). Returns (used bytes, bytes xfs_db counts used).
    fn compare_with_xfs_db(img: &Path, used: &ExtentSet) -> (u64, u64) {
        let tool = tool_view(img);
        let whole = ExtentSet::range(0, tool.data_bytes);
        let tool_used = whole.subtract(&tool.free);
        let missing = tool_used.subtract(used);
        assert!(missing.is_empty(), "used blocks left out: {missing:?}");
        let also = used.intersect(&tool.free);
        let not_free_list = also.subtract(&tool.free_list);
        assert!(
            not_free_list.is_empty(),
            "free blocks (not on a free list) in the used map: {not_free_list:?}"
        );
        assert!(
            used.subtract(&whole).is_empty(),
            "used bytes past the data section"
        );
        assert_eq!(
            also,
            tool.free_list.intersect(&tool.free),
            "every free-list block is in the used map"
        );
        if let Some((at, len)) = tool.log {
            assert!(used.contains(at, len), "the internal log is used");
            assert!(tool.free.intersect(&ExtentSet::range(at, len)).is_empty());
        }
        assert_eq!(used.total(), tool_used.total() + also.total());
        assert_eq!(used.total() % tool.block_size, 0);
        (used.total(), tool_used.total())
    }

    fn report(name: &str, img: &Path, used: &ExtentSet) {
        let (ours, tools) = compare_with_xfs_db(img, used);
        let size = fs::metadata(img).unwrap().len();
        eprintln!(
            "{name}: {size} byte image, used map {ours} bytes in {} extents, xfs_db counts \
             {tools} bytes not free (difference: AG free-list blocks)",
            used.len()
        );
    }

    /// A loop mount, unmounted (and its loop device freed) when dropped.
    struct Mounted {
        dir: PathBuf,
        mounted: bool,
    }

    impl Mounted {
        fn new(img: &Path, dir: &Path) -> Result<Self, String> {
            fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let out = Command::new("mount")
                .args(["-t", "xfs", "-o", "loop"])
                .arg(img)
                .arg(dir)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            }
            Ok(Self {
                dir: dir.to_owned(),
                mounted: true,
            })
        }

        fn unmount(mut self) {
            self.mounted = false;
            crate::testutil::unmount(&self.dir);
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            if self.mounted {
                let _ = Command::new("umount").arg(&self.dir).status();
            }
        }
    }

    /// Mounts `img` or says why the test is skipped.
    fn mount_or_skip(test: &str, img: &Path, dir: &Path) -> Option<Mounted> {
        match Mounted::new(img, dir) {
            Ok(m) => Some(m),
            Err(e) => {
                crate::testutil::skip(
                    test,
                    format_args!(
                        "cannot loop-mount an xfs image here (needs root and loop devices): {e}"
                    ),
                );
                None
            }
        }
    }

    /// Writes `count` files of `size` (or varied sizes when 0) in `dirs` subdirectories, then
    /// deletes every `nth`: free space between live files, holding stale data.
    fn write_and_delete(root: &Path, count: usize, size: usize, dirs: usize, nth: usize) {
        let mut rng = Rng(7);
        for d in 0..dirs {
            fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
        }
        let path = |i: usize| root.join(format!("d{}/f{i}", i % dirs));
        for i in 0..count {
            let len = if size > 0 {
                size
            } else {
                1 + rng.below(200_000) as usize
            };
            fs::write(path(i), rng.bytes(len)).unwrap();
        }
        // Allocate the data now (delayed allocation would skip files deleted before
        // writeback), then delete every nth file of each directory: holes between live files.
        run(Command::new("sync").arg("-f").arg(root));
        for i in (0..count).filter(|i| (i / dirs).is_multiple_of(nth)) {
            fs::remove_file(path(i)).unwrap();
        }
    }

    #[test]
    fn v5_mounted_files_written_and_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let img = image(tmp.path(), "v5.img", 400 * MIB, &[]);
        let Some(m) = mount_or_skip(
            "v5_mounted_files_written_and_deleted",
            &img,
            &tmp.path().join("mnt"),
        ) else {
            return;
        };
        write_and_delete(&m.dir, 300, 0, 3, 3);
        fs::write(m.dir.join("big"), Rng(3).bytes(40 * MIB as usize)).unwrap();
        m.unmount();
        repair_is_clean(&img);
        let used = map_file(&img).unwrap();
        report("v5 default, mounted", &img, &used);
    }

    #[test]
    fn v5_small_blocks_multi_level_trees() {
        let tmp = tempfile::tempdir().unwrap();
        let img = image(
            tmp.path(),
            "v5-1k.img",
            320 * MIB,
            &["-b", "size=1024", "-d", "agcount=4"],
        );
        let Some(m) = mount_or_skip(
            "v5_small_blocks_multi_level_trees",
            &img,
            &tmp.path().join("mnt"),
        ) else {
            return;
        };
        write_and_delete(&m.dir, 4000, 1024, 4, 2);
        m.unmount();
        repair_is_clean(&img);
        let used = map_file(&img).unwrap();
        let levels = tool_view(&img).bno_levels;
        assert!(
            levels.iter().any(|&l| l >= 2),
            "a free-space tree with more than one level (heights {levels:?})"
        );
        report("v5 1 KiB blocks, fragmented", &img, &used);
    }

    #[test]
    fn v5_sixteen_ags_external_log_from_protofile() {
        // 16 AGs of 64 MiB cannot hold mkfs's smallest internal log (64 MiB): the log goes
        // to another file, and nothing of it is in the data device.
        let tmp = tempfile::tempdir().unwrap();
        let proto = protofile(tmp.path(), 60);
        let log = sparse_image(tmp.path(), "v5-16.log", 64 * MIB);
        let l = format!("logdev={}", log.display());
        let p = proto.to_str().unwrap();
        let args = ["-d", "agcount=16", "-l", &l, "-p", p];
        let img = image(tmp.path(), "v5-16.img", 1024 * MIB, &args);
        repair_is_clean(&img);
        let used = map_file(&img).unwrap();
        assert!(tool_view(&img).log.is_none());
        report("v5 agcount=16, external log, protofile", &img, &used);
    }

    #[test]
    fn v5_4k_sectors() {
        let tmp = tempfile::tempdir().unwrap();
        let proto = protofile(tmp.path(), 20);
        let p = proto.to_str().unwrap();
        let img = image(
            tmp.path(),
            "v5-4k.img",
            320 * MIB,
            &["-s", "size=4096", "-p", p],
        );
        repair_is_clean(&img);
        let used = map_file(&img).unwrap();
        report("v5 4 KiB sectors, protofile", &img, &used);
    }

    #[test]
    fn v4_from_protofile() {
        let tmp = tempfile::tempdir().unwrap();
        let proto = protofile(tmp.path(), 40);
        let p = proto.to_str().unwrap();
        let img = image(
            tmp.path(),
            "v4.img",
            400 * MIB,
            &["-m", "crc=0", "-d", "agcount=4", "-p", p],
        );
        repair_is_clean(&img);
        let used = map_file(&img).unwrap();
        report("v4 agcount=4, protofile", &img, &used);
    }

    #[test]
    fn v4_512_byte_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let proto = protofile(tmp.path(), 20);
        let p = proto.to_str().unwrap();
        let img = image(
            tmp.path(),
            "v4-512.img",
            320 * MIB,
            &["-m", "crc=0", "-b", "size=512", "-p", p],
        );
        repair_is_clean(&img);
        let used = map_file(&img).unwrap();
        report("v4 512-byte blocks, protofile", &img, &used);
    }

    /// An image with bytes replaced in memory, and optionally cut short: corruption without
    /// copying hundreds of MiB.
    struct Patched {
        base: FileDisk,
        patches: Vec<(u64, Vec<u8>)>,
        size: u64,
    }

    impl Patched {
        fn new(img: &Path) -> Self {
            let base = FileDisk::new(File::open(img).unwrap()).unwrap();
            let size = base.size();
            Self {
                base,
                patches: Vec::new(),
                size,
            }
        }

        fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
            let mut b = vec![0; len];
            self.read_exact_at(&mut b, at).unwrap();
            b
        }

        fn write(&mut self, at: u64, bytes: &[u8]) {
            self.patches.push((at, bytes.to_vec()));
        }

        fn be32(&self, at: u64) -> u32 {
            u32::from_be_bytes(self.bytes(at, 4).try_into().unwrap())
        }

        fn set_be32(&mut self, at: u64, v: u32) {
            self.write(at, &v.to_be_bytes());
        }

        /// Recomputes the CRC of the `len`-byte structure at `at`, stored at `crc_off`.
        fn fix_crc(&mut self, at: u64, len: usize, crc_off: usize) {
            let b = self.bytes(at, len);
            let crc = crc32c::crc32c_without(&b, crc_off);
            self.write(at + crc_off as u64, &crc.to_le_bytes());
        }

        fn map(&self) -> Result<ExtentSet, MetaError> {
            let region = Region::whole(self);
            match probe(&region)? {
                Some(FsKind::Xfs) => used(&region),
                other => Err(corrupt!("probe found {other:?}")),
            }
        }
    }

    impl ReadAt for Patched {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            if offset.saturating_add(buf.len() as u64) > self.size {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.base.read_exact_at(buf, offset)?;
            let end = offset + buf.len() as u64;
            for (at, bytes) in &self.patches {
                let from = offset.max(*at);
                let to = end.min(at + bytes.len() as u64);
                if from < to {
                    buf[(from - offset) as usize..(to - offset) as usize]
                        .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
                }
            }
            Ok(())
        }

        fn size(&self) -> u64 {
            self.size
        }
    }

    /// Where things are in a test image (4 KiB blocks, 512-byte sectors, from mkfs defaults).
    struct Layout {
        bs: u64,
        agblocks: u64,
        sect: u64,
        crc: bool,
    }

    impl Layout {
        fn of(img: &Patched) -> Self {
            let sb = Superblock::decode(&img.bytes(0, 512)).unwrap();
            Self {
                bs: u64::from(sb.block_size),
                agblocks: u64::from(sb.agblocks),
                sect: u64::from(sb.sector_size),
                crc: sb.has_crc(),
            }
        }

        fn agf(&self, agno: u64) -> u64 {
            agno * self.agblocks * self.bs + self.sect
        }

        /// The AG-relative block `agbno` of AG `agno`, in bytes.
        fn block(&self, agno: u64, agbno: u64) -> u64 {
            (agno * self.agblocks + agbno) * self.bs
        }

        fn fix_agf(&self, img: &mut Patched, agno: u64) {
            if self.crc {
                img.fix_crc(self.agf(agno), self.sect as usize, 216);
            }
        }

        fn fix_block(&self, img: &mut Patched, at: u64) {
            if self.crc {
                img.fix_crc(at, self.bs as usize, 52);
            }
        }
    }

    /// A populated 320 MiB image, v5 or v4.
    fn fixture(v4: bool) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let proto = protofile(tmp.path(), 12);
        let p = proto.to_str().unwrap();
        let crc = if v4 { "crc=0" } else { "crc=1" };
        let img = image(tmp.path(), "x.img", 320 * MIB, &["-m", crc, "-p", p]);
        (tmp, img)
    }

    fn assert_corrupt(r: Result<ExtentSet, MetaError>, words: &[&str]) {
        match r {
            Err(MetaError::Corrupt(msg)) => {
                for w in words {
                    assert!(msg.contains(w), "{msg:?} lacks {w:?}");
                }
            }
            other => panic!("expected Corrupt({words:?}), got {other:?}"),
        }
    }

    #[test]
    fn fixtures_map_cleanly() {
        for v4 in [false, true] {
            let (_tmp, img) = fixture(v4);
            assert!(Patched::new(&img).map().is_ok());
        }
    }

    #[test]
    fn rejects_agf_with_bad_crc() {
        let (_tmp, img) = fixture(false);
        let mut disk = Patched::new(&img);
        let l = Layout::of(&disk);
        let at = l.agf(1) + 60; // agf_btreeblks
        let b = disk.bytes(at, 1)[0];
        disk.write(at, &[b ^ 0x10]);
        assert_corrupt(disk.map(), &["AG 1 AGF", "CRC"]);
    }

    #[test]
    fn rejects_tree_block_with_bad_magic() {
        for v4 in [false, true] {
            let (_tmp, img) = fixture(v4);
            let mut disk = Patched::new(&img);
            let l = Layout::of(&disk);
            let root = u64::from(disk.be32(l.agf(2) + 16));
            let at = l.block(2, root);
            disk.write(at, b"ABTC"); // the by-size tree's magic
            l.fix_block(&mut disk, at);
            assert_corrupt(
                disk.map(),
                &["AG 2 by-block free-space B+tree block", "bad magic"],
            );
        }
    }

    #[test]
    fn rejects_by_size_tree_that_disagrees() {
        // v4 has no CRCs: a record changed in one tree is caught by the other.
        let (_tmp, img) = fixture(true);
        let mut disk = Patched::new(&img);
        let l = Layout::of(&disk);
        let root = u64::from(disk.be32(l.agf(1) + 20));
        let at = l.block(1, root) + 16;
        let (start, count) = (disk.be32(at), disk.be32(at + 4));
        disk.set_be32(at, start - 1);
        disk.set_be32(at + 4, count); // same length, shifted by a block
        assert_corrupt(disk.map(), &["AG 1", "by-size", "same extents"]);
    }

    #[test]
    fn rejects_tree_block_with_bad_crc() {
        let (_tmp, img) = fixture(false);
        let mut disk = Patched::new(&img);
        let l = Layout::of(&disk);
        let root = u64::from(disk.be32(l.agf(0) + 16));
        let at = l.block(0, root) + 100;
        let b = disk.bytes(at, 1)[0];
        disk.write(at, &[b ^ 1]);
        assert_corrupt(
            disk.map(),
            &["AG 0 by-block free-space B+tree block", "CRC"],
        );
    }

    #[test]
    fn rejects_agf_root_outside_the_ag() {
        for v4 in [false, true] {
            let (_tmp, img) = fixture(v4);
            let mut disk = Patched::new(&img);
            let l = Layout::of(&disk);
            disk.set_be32(l.agf(3) + 16, l.agblocks as u32 + 10);
            l.fix_agf(&mut disk, 3);
            assert_corrupt(disk.map(), &["AG 3 AGF", "root", "outside"]);
        }
    }

    #[test]
    fn rejects_free_count_that_does_not_add_up() {
        for v4 in [false, true] {
            let (_tmp, img) = fixture(v4);
            let mut disk = Patched::new(&img);
            let l = Layout::of(&disk);
            let freeblks = disk.be32(l.agf(1) + 52);
            disk.set_be32(l.agf(1) + 52, freeblks + 1);
            l.fix_agf(&mut disk, 1);
            assert_corrupt(disk.map(), &["AG 1", "free blocks"]);
        }
    }

    #[test]
    fn rejects_free_extent_over_the_ag_headers() {
        for v4 in [false, true] {
            let (_tmp, img) = fixture(v4);
            let mut disk = Patched::new(&img);
            let l = Layout::of(&disk);
            let root = u64::from(disk.be32(l.agf(0) + 16));
            let header = if l.crc { 56 } else { 16 };
            let at = l.block(0, root);
            disk.set_be32(at + header, 0); // the first record now starts at block 0
            l.fix_block(&mut disk, at);
            assert_corrupt(disk.map(), &["free extent 0+"]);
        }
    }

    #[test]
    fn rejects_filesystem_larger_than_the_partition() {
        let (_tmp, img) = fixture(false);
        let mut disk = Patched::new(&img);
        disk.size -= MIB;
        assert_eq!(probe(&Region::whole(&disk)), Ok(Some(FsKind::Xfs)));
        assert_corrupt(disk.map(), &["do not fit the partition"]);
    }

    #[test]
    fn rejects_superblock_damage() {
        let (_tmp, img) = fixture(false);
        // A flipped bit anywhere in the sector: the CRC catches it.
        let mut disk = Patched::new(&img);
        let b = disk.bytes(200, 1)[0];
        disk.write(200, &[b ^ 4]);
        assert!(matches!(
            probe(&Region::whole(&disk)),
            Err(MetaError::Corrupt(m)) if m.contains("CRC")
        ));
        // More AGs than the data blocks fill, with a valid CRC: the geometry check catches it.
        let mut disk = Patched::new(&img);
        let agcount = disk.be32(88);
        disk.set_be32(88, agcount + 1);
        disk.fix_crc(0, 512, 224);
        assert!(matches!(
            probe(&Region::whole(&disk)),
            Err(MetaError::Corrupt(m)) if m.contains("allocation groups")
        ));
        // Not XFS at all.
        let mut disk = Patched::new(&img);
        disk.write(0, b"XFSC");
        assert_eq!(probe(&Region::whole(&disk)), Ok(None));
    }

    /// The byte offset of the internal log and the BB of its head (after mkfs: just past the
    /// unmount record at BB 0).
    fn log_of(img: &Path) -> u64 {
        tool_view(img).log.unwrap().0
    }

    #[test]
    fn rejects_log_with_a_newer_record_after_the_unmount_record() {
        let (_tmp, img) = fixture(false);
        let mut disk = Patched::new(&img);
        let log = log_of(&img);
        assert!(disk.map().is_ok());
        // mkfs: unmount record (header + 1 BB) at BB 0, cycle 1; older blocks after it.
        assert_eq!(disk.be32(log), 0xFEED_BABE);
        assert_eq!(disk.be32(log + 4), 1);
        // A block written in cycle 1 beyond the head, as an unfinished write leaves it.
        disk.set_be32(log + 5 * 512, 1);
        match disk.map() {
            Err(MetaError::Unsupported(m)) => assert!(m.contains("log needs recovery"), "{m}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn rejects_log_ending_in_something_else_than_an_unmount_record() {
        let (_tmp, img) = fixture(false);
        let mut disk = Patched::new(&img);
        let log = log_of(&img);
        // The unmount record's operation header: flags at byte 9 of its payload.
        let flags = disk.bytes(log + 512 + 9, 1)[0];
        assert_eq!(flags & 0x20, 0x20);
        disk.write(log + 512 + 9, &[flags & !0x20]);
        match disk.map() {
            Err(MetaError::Unsupported(m)) => assert!(m.contains("not an unmount record"), "{m}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn log_states_written_by_the_kernel() {
        let test = "log_states_written_by_the_kernel";
        let tmp = tempfile::tempdir().unwrap();
        let img = image(tmp.path(), "v5.img", 320 * MIB, &[]);
        let mnt = tmp.path().join("mnt");
        let Some(m) = mount_or_skip(test, &img, &mnt) else {
            return;
        };
        write_and_delete(&m.dir, 50, 0, 2, 2);
        m.unmount();
        // Cleanly unmounted: the kernel's unmount record carries a CRC; damage to it is caught.
        let log = log_of(&img);
        let mut disk = Patched::new(&img);
        assert!(disk.map().is_ok());
        let logprint = run(Command::new("xfs_logprint").arg("-t").arg(&img));
        let head: u64 = logprint
            .split("head: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no head in {logprint}"));
        assert!(logprint.contains("<CLEAN>"), "{logprint}");
        let rec = (0..head)
            .rev()
            .find(|bb| disk.be32(log + bb * 512) == 0xFEED_BABE)
            .unwrap();
        let at = log + (rec + 1) * 512 + 20;
        let b = disk.bytes(at, 1)[0];
        disk.write(at, &[b ^ 0x40]);
        assert_corrupt(disk.map(), &["log record", "CRC"]);

        // Frozen: metadata is on disk, but the log ends in covering records, not an unmount
        // record. This reader does not parse those, so it refuses (safe, not optimal).
        let m = Mounted::new(&img, &mnt).unwrap();
        fs::write(m.dir.join("more"), Rng(9).bytes(3 * MIB as usize)).unwrap();
        run(Command::new("xfs_freeze").arg("-f").arg(&m.dir));
        let frozen = map_file(&img);
        run(Command::new("xfs_freeze").arg("-u").arg(&m.dir));
        assert!(
            matches!(frozen, Err(MetaError::Unsupported(_))),
            "{frozen:?}"
        );

        // Shut down without flushing the log: the AGFs on disk are stale, and that must be
        // an error, not a map.
        fs::write(m.dir.join("late"), Rng(10).bytes(5 * MIB as usize)).unwrap();
        run(Command::new("sync").arg("-f").arg(&m.dir));
        run(Command::new("xfs_io")
            .args(["-x", "-c", "shutdown"])
            .arg(&m.dir));
        m.unmount();
        let logprint = run(Command::new("xfs_logprint").arg("-t").arg(&img));
        assert!(logprint.contains("<DIRTY>"), "{logprint}");
        match map_file(&img) {
            Err(MetaError::Unsupported(m)) => assert!(m.contains("log needs recovery"), "{m}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn random_byte_flips_never_panic() {
        for v4 in [false, true] {
            let (_tmp, img) = fixture(v4);
            let base = Patched::new(&img);
            let truth = base.map().unwrap();
            let l = Layout::of(&base);
            let log = log_of(&img);
            let mut rng = Rng(if v4 { 11 } else { 12 });
            let (mut ok, mut err) = (0, 0);
            for _ in 0..300 {
                let mut disk = Patched::new(&img);
                for _ in 0..1 + rng.below(8) {
                    // Mostly metadata: AG headers and the first blocks of each AG, the log
                    // head; sometimes anywhere in the first 4 MiB.
                    let ag = rng.below(4);
                    let at = match rng.below(4) {
                        0 => l.agf(ag) - l.sect + rng.below(4 * l.sect),
                        1 => l.block(ag, 0) + rng.below(16 * l.bs),
                        2 => log + rng.below(8 * 512),
                        _ => rng.below(4 * MIB),
                    };
                    let b = disk.bytes(at, 1)[0];
                    disk.write(at, &[b ^ (1 << rng.below(8))]);
                }
                // Either refused, or the same map: every structure that decides it is
                // checked (v5: CRCs; v4: the two free-space trees against each other).
                match disk.map() {
                    Ok(map) => {
                        assert_eq!(map, truth, "a damaged image gave a different map");
                        ok += 1
                    }
                    Err(_) => err += 1,
                }
            }
            eprintln!(
                "byte flips ({}): {ok} mapped, {err} refused",
                if v4 { "v4" } else { "v5" }
            );
        }
    }

    #[test]
    fn maps_through_the_disk_mapper() {
        let (_tmp, img) = fixture(false);
        let disk = FileDisk::new(File::open(&img).unwrap()).unwrap();
        let map = crate::map_disk(&disk);
        assert_eq!(map.partitions.len(), 1);
        assert_eq!(map.partitions[0].fs, Some(FsKind::Xfs));
        assert_eq!(map.partitions[0].fallback, None, "{:?}", map.warnings);
        let ours = map_file(&img).unwrap();
        assert_eq!(map.partitions[0].used_bytes, ours.total());
        assert!(map.used.total() < disk.size() / 2);
    }
}
