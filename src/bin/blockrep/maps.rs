//! `blockrep blockmap` and `blockrep bitmap diff`: what a send would read, and change sets.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use blockrep::progress::human_bytes;
use blockrep::Error;
use blockrep_blockmap::bitmap::{self, Header};
use blockrep_blockmap::{map_disk, DiskMap, ExtentSet, FileDisk, ReadAt};
use blockrep_disk::SourceDisk;

fn open(path: &Path) -> Result<FileDisk, Error> {
    // SourceDisk refuses what is not a disk (directories, fifos) with a clear message.
    SourceDisk::open(path)?;
    let file = File::open(path)
        .map_err(|e| Error::Config(format!("cannot open {}: {e}", path.display())))?;
    FileDisk::new(file).map_err(|e| Error::Config(format!("cannot size {}: {e}", path.display())))
}

/// `blockrep blockmap PATH [--full] [--json]`.
pub fn blockmap(path: &Path, full: bool, json: bool) -> Result<(), Error> {
    let disk = open(path)?;
    let map = if full {
        DiskMap {
            size: disk.size(),
            table: None,
            partitions: Vec::new(),
            used: ExtentSet::range(0, disk.size()),
            warnings: Vec::new(),
        }
    } else {
        map_disk(&disk)
    };
    if json {
        let partitions: Vec<_> = map
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "number": p.number, "start": p.start, "length": p.len, "type": p.type_name,
                    "filesystem": p.fs.map(|f| f.name()), "used_bytes": p.used_bytes,
                    "sent_whole_because": p.fallback,
                })
            })
            .collect();
        let extents: Vec<[u64; 2]> = map.used.iter().map(|e| [e.offset, e.len]).collect();
        let out = serde_json::json!({
            "path": path, "size": map.size, "table": map.table.map(|t| t.name()),
            "partitions": partitions, "used_bytes": map.used.total(),
            "extent_count": extents.len(), "extents": extents, "warnings": map.warnings,
        });
        crate::say!("{out}");
        return Ok(());
    }
    crate::say!(
        "{}: {} ({} bytes), partition table: {}",
        path.display(),
        human_bytes(map.size),
        map.size,
        map.table.map_or("none", |t| t.name())
    );
    if !map.partitions.is_empty() {
        crate::say!(
            "  {:>3}  {:>14}  {:>12}  {:<22}  {:<6}  {:>12}",
            "#",
            "start",
            "size",
            "type",
            "fs",
            "used"
        );
        for p in &map.partitions {
            crate::say!(
                "  {:>3}  {:>14}  {:>12}  {:<22}  {:<6}  {:>12}{}",
                p.number,
                p.start,
                human_bytes(p.len),
                truncate(&p.type_name, 22),
                p.fs.map_or("-", |f| f.name()),
                human_bytes(p.used_bytes),
                if p.fallback.is_some() {
                    "  (sent whole)"
                } else {
                    ""
                }
            );
        }
    }
    let used = map.used.total();
    crate::say!(
        "  to send: {} of {} ({:.1}%) in {} extents",
        human_bytes(used),
        human_bytes(map.size),
        100.0 * used as f64 / map.size.max(1) as f64,
        map.used.len()
    );
    for w in &map.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// `blockrep bitmap diff OLD NEW --block-size SIZE --out FILE`.
pub fn bitmap_diff(old: &Path, new: &Path, granularity: u32, out: &PathBuf) -> Result<(), Error> {
    let (a, b) = (open(old)?, open(new)?);
    if a.size() != b.size() {
        return Err(Error::Config(format!(
            "{} is {} bytes and {} is {}: a change bitmap needs two images of one disk",
            old.display(),
            a.size(),
            new.display(),
            b.size()
        )));
    }
    let changed = bitmap::diff(&a, &b, granularity).map_err(|e| Error::Config(e.to_string()))?;
    let header = Header {
        granularity,
        device_size: b.size(),
        generation: 0,
    };
    let tmp = out.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let f = File::create(&tmp)?;
        bitmap::write_native(BufWriter::new(&f), header, &changed)?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    };
    write().map_err(|e| Error::Config(format!("cannot write {}: {e}", out.display())))?;
    crate::say!(
        "{}: {} of {} changed ({} granules of {}), {}",
        out.display(),
        human_bytes(changed.total()),
        human_bytes(b.size()),
        changed.total().div_ceil(u64::from(granularity)),
        human_bytes(u64::from(granularity)),
        if changed.is_empty() {
            "nothing to send"
        } else {
            "ready for --mode bitmap"
        }
    );
    Ok(())
}

/// Loads `--bitmap ID=FILE` for a disk of `disk_size` bytes.
pub fn load_changes(
    path: &Path,
    disk_size: u64,
    era_block_size: Option<u64>,
) -> Result<ExtentSet, Error> {
    let file = File::open(path)
        .map_err(|e| Error::Config(format!("cannot open the bitmap {}: {e}", path.display())))?;
    bitmap::read_any(std::io::BufReader::new(file), disk_size, era_block_size)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}
