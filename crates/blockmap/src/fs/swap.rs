//! Linux swap areas (version 1, as `mkswap` writes them). Only the first page matters: it
//! holds the header (version, size, bad pages, UUID, label) and the signature; the rest is
//! scratch space that the kernel rewrites after every boot.
//!
//! The first page (`union swap_header` in the kernel's `include/linux/swap.h`; fields in the
//! byte order of the machine that wrote them):
//!
//! ```text
//!    0..1024  boot bits (zeroed by mkswap)
//! 1024..1028  version (1)            1028..1032  last_page (index of the last usable page)
//! 1032..1036  nr_badpages            1036..1052  UUID          1052..1068  label
//! 1536..      badpages[nr_badpages]  (u32 page numbers)
//! page_size - 10 .. page_size        "SWAPSPACE2"
//! ```
//!
//! A hibernation image replaces the signature (`S1SUSPEND` and friends); such an area holds
//! the image in its pages and is sent whole.

use crate::fs::FsKind;
use crate::read::le;
use crate::{corrupt, ExtentSet, MetaError, Region};

/// Page sizes tried, in this order; the signature ends the first page, so where it is tells
/// the page size.
const PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];
/// The length of the signature at the end of the first page.
const SIGNATURE_LEN: usize = 10;
/// A version 1 swap area (the only version Linux has read since 2.5).
const SIGNATURE_V1: &[u8] = b"SWAPSPACE2";
/// A version 0 swap area (bitmap-based; obsolete).
const SIGNATURE_V0: &[u8] = b"SWAP-SPACE";
/// Signatures a hibernation image writes over `SWAPSPACE2` (swsusp, uswsusp, TuxOnIce);
/// compared on their first bytes, since the rest of the 10 bytes varies.
const HIBERNATION: [&[u8]; 5] = [
    b"S1SUSPEND",
    b"S2SUSPEND",
    b"ULSUSPEND",
    b"LINHIB0001",
    b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c",
];
/// Where the version field is.
const VERSION_AT: usize = 1024;
/// The only header version read.
const VERSION_1: u32 = 1;
/// Where the bad-page list starts in the first page.
const BADPAGES_AT: u64 = 1536;
/// A swap area must hold the header page plus at least this many pages (mkswap refuses
/// fewer than 10 pages in all).
const MIN_PAGES: u64 = 10;
/// Where a boot sector's 0x55 0xAA signature is.
const BOOT_SIGNATURE_AT: u64 = 510;

/// What the first page says.
enum Signature {
    V1,
    V0,
    Hibernation,
}

/// Finds the signature page: its size and what it holds.
fn signature(region: &Region) -> Result<Option<(u64, Signature)>, MetaError> {
    for page in PAGE_SIZES {
        let at = page - SIGNATURE_LEN as u64;
        if region
            .check("the swap signature", at, SIGNATURE_LEN as u64)
            .is_err()
        {
            break;
        }
        let mut sig = [0u8; SIGNATURE_LEN];
        region.read("the swap signature", &mut sig, at)?;
        if sig == SIGNATURE_V1 {
            return Ok(Some((page, Signature::V1)));
        }
        if sig == SIGNATURE_V0 {
            return Ok(Some((page, Signature::V0)));
        }
        if HIBERNATION.iter().any(|h| sig.starts_with(h)) {
            return Ok(Some((page, Signature::Hibernation)));
        }
    }
    Ok(None)
}

/// Reads the version field in either byte order: the byte order that gives version 1 is the
/// one the header was written in. Returns a reader for the header's u32 fields.
fn byte_order(page: &[u8]) -> Result<fn(u32) -> u32, MetaError> {
    let raw = le::u32(page, VERSION_AT)?;
    if raw == VERSION_1 {
        Ok(|v| v)
    } else if raw.swap_bytes() == VERSION_1 {
        Ok(u32::swap_bytes)
    } else {
        Err(corrupt!(
            "swap header version is {raw} (0x{raw:08x}), not {VERSION_1}"
        ))
    }
}

pub fn probe(region: &Region) -> Result<Option<FsKind>, MetaError> {
    if signature(region)?.is_none() {
        return Ok(None);
    }
    // mkswap zeroes the first 1024 bytes. A boot sector's 0x55AA there means something else
    // was written over an old swap area (whose stale signature would otherwise hide it).
    let mut boot = [0u8; 2];
    region.read("the swap boot bits", &mut boot, BOOT_SIGNATURE_AT)?;
    if boot == [0x55, 0xaa] {
        return Ok(None);
    }
    Ok(Some(FsKind::Swap))
}

pub fn used(region: &Region) -> Result<ExtentSet, MetaError> {
    let (page_size, kind) = signature(region)?
        .ok_or_else(|| corrupt!("no swap signature at the end of the first page"))?;
    match kind {
        Signature::V1 => {}
        Signature::V0 => {
            return Err(MetaError::Unsupported(
                "version 0 swap area (\"SWAP-SPACE\")".into(),
            ))
        }
        Signature::Hibernation => {
            return Err(MetaError::Unsupported(
                "the swap area holds a hibernation image".into(),
            ))
        }
    }
    // One page, at most 64 KiB (PAGE_SIZES).
    let page = region.read_vec("the swap header", 0, page_size as usize)?;
    let order = byte_order(&page)?;
    let last_page = u64::from(order(le::u32(&page, VERSION_AT + 4)?));
    let bad_pages = u64::from(order(le::u32(&page, VERSION_AT + 8)?));
    let pages = region.len() / page_size;
    if last_page < MIN_PAGES - 1 || last_page >= pages {
        return Err(corrupt!(
            "swap header: last page {last_page} does not fit a {}-byte area of {pages} pages of {page_size} bytes (at least {MIN_PAGES} pages)",
            region.len()
        ));
    }
    let max_bad = (page_size - BADPAGES_AT - SIGNATURE_LEN as u64) / 4;
    if bad_pages > max_bad {
        return Err(corrupt!(
            "swap header: {bad_pages} bad pages (the header page holds at most {max_bad})"
        ));
    }
    Ok(ExtentSet::range(0, page_size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{expect_corrupt, run, sparse_image, Rng};
    use crate::{map_disk, FileDisk, MetaError, ReadAt};
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A `size`-byte swap area made by mkswap with `args`.
    fn mkswap(dir: &Path, size: u64, args: &[&str]) -> PathBuf {
        let path = sparse_image(dir, &format!("swap{size}{}.img", args.join("")), size);
        run(Command::new("mkswap").args(args).arg(&path));
        path
    }

    fn probe_bytes(b: &dyn ReadAt) -> Result<Option<FsKind>, MetaError> {
        probe(&Region::whole(b))
    }

    fn used_bytes(b: &dyn ReadAt) -> Result<ExtentSet, MetaError> {
        used(&Region::whole(b))
    }

    #[test]
    fn reads_mkswap_areas_of_every_page_size() {
        let dir = tempfile::tempdir().unwrap();
        for page in PAGE_SIZES {
            let path = mkswap(
                dir.path(),
                16 << 20,
                &["-p", &page.to_string(), "-L", "swaplabel"],
            );
            let disk = FileDisk::new(File::open(&path).unwrap()).unwrap();
            let region = Region::whole(&disk);
            assert_eq!(probe(&region).unwrap(), Some(FsKind::Swap), "page {page}");
            assert_eq!(crate::fs::probe(&region).unwrap(), Some(FsKind::Swap));
            assert_eq!(
                used(&region).unwrap(),
                ExtentSet::range(0, page),
                "page {page}"
            );
        }
    }

    #[test]
    fn whole_disk_swap_sends_its_header_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = mkswap(dir.path(), 40 << 20, &[]);
        let m = map_disk(&FileDisk::new(File::open(&path).unwrap()).unwrap());
        assert_eq!(m.table, None);
        assert_eq!(m.partitions.len(), 1);
        assert_eq!(m.partitions[0].fs, Some(FsKind::Swap));
        assert_eq!(m.partitions[0].used_bytes, 4096);
        // Only the always-sent head of the disk.
        assert_eq!(m.used, ExtentSet::range(0, crate::map::ALWAYS_SENT_HEAD));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn reads_big_endian_headers() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = std::fs::read(mkswap(dir.path(), 1 << 20, &[])).unwrap();
        for at in [VERSION_AT, VERSION_AT + 4, VERSION_AT + 8] {
            b[at..at + 4].reverse();
        }
        assert_eq!(used_bytes(&b).unwrap(), ExtentSet::range(0, 4096));
    }

    #[test]
    fn rejects_bad_headers() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(mkswap(dir.path(), 1 << 20, &[])).unwrap();
        let mut b = good.clone();
        b[VERSION_AT] = 2;
        expect_corrupt(used_bytes(&b), "version is 2");
        // The area as mkswap made it claims 256 pages; a shorter region cannot hold them.
        let short = good[..512 << 10].to_vec();
        expect_corrupt(used_bytes(&short), "last page 255 does not fit");
        let mut b = good.clone();
        b[VERSION_AT + 4..VERSION_AT + 8].copy_from_slice(&3u32.to_le_bytes());
        expect_corrupt(used_bytes(&b), "last page 3");
        let mut b = good.clone();
        b[VERSION_AT + 8..VERSION_AT + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        expect_corrupt(used_bytes(&b), "bad pages");
        // A flipped signature byte: no longer swap at all.
        let mut b = good.clone();
        b[4090] ^= 0x20;
        assert_eq!(probe_bytes(&b).unwrap(), None);
        assert!(used_bytes(&b).is_err());
    }

    #[test]
    fn hibernation_images_and_old_swap_are_sent_whole() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(mkswap(dir.path(), 1 << 20, &[])).unwrap();
        for (sig, needle) in [
            (&b"S1SUSPEND\0"[..], "hibernation"),
            (&b"LINHIB0001"[..], "hibernation"),
            (&b"SWAP-SPACE"[..], "version 0"),
        ] {
            let mut b = good.clone();
            b[4086..4096].copy_from_slice(sig);
            assert_eq!(probe_bytes(&b).unwrap(), Some(FsKind::Swap));
            match used_bytes(&b) {
                Err(MetaError::Unsupported(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("expected Unsupported, got {other:?}"),
            }
        }
        // Through the mapper: the whole disk, with a warning that says why.
        let path = dir.path().join("hibernated.img");
        std::fs::write(&path, &good).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"S1SUSPEND\0", 4086)
            .unwrap();
        let m = map_disk(&FileDisk::new(File::open(&path).unwrap()).unwrap());
        assert_eq!(m.used, ExtentSet::range(0, 1 << 20));
        assert!(
            m.warnings.iter().any(|w| w.contains("hibernation")),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn a_boot_sector_over_old_swap_is_not_swap() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = std::fs::read(mkswap(dir.path(), 1 << 20, &[])).unwrap();
        b[510] = 0x55;
        b[511] = 0xaa;
        assert_eq!(probe_bytes(&b).unwrap(), None);
        // mkfs.vfat over a swap area also wipes its signature.
        let path = mkswap(dir.path(), 40 << 20, &[]);
        run(Command::new("mkfs.vfat").args(["-F", "32"]).arg(&path));
        let disk = FileDisk::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(probe(&Region::whole(&disk)).unwrap(), None);
    }

    #[test]
    fn small_or_empty_regions_are_not_swap() {
        assert_eq!(probe_bytes(&vec![0u8; 100]).unwrap(), None);
        assert_eq!(probe_bytes(&vec![0u8; 1 << 20]).unwrap(), None);
        let mut b = vec![0u8; 4096];
        b[4086..].copy_from_slice(SIGNATURE_V1);
        b[VERSION_AT] = 1;
        assert_eq!(probe_bytes(&b).unwrap(), Some(FsKind::Swap));
        assert!(used_bytes(&b).is_err(), "one page cannot be a swap area");
    }

    #[test]
    fn random_corruption_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = std::fs::read(mkswap(dir.path(), 1 << 20, &["-L", "x"])).unwrap();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let (mut ok, mut err) = (0, 0);
        for _ in 0..3000 {
            let flips: Vec<(usize, u8)> = (0..1 + rng.next() % 3)
                .map(|_| {
                    let at = match rng.next() % 3 {
                        0 => VERSION_AT + rng.next() as usize % 16,
                        1 => 4086 + rng.next() as usize % 10,
                        _ => rng.next() as usize % 4096,
                    };
                    (at, 1u8 << (rng.next() % 8))
                })
                .collect();
            for &(at, bit) in &flips {
                b[at] ^= bit;
            }
            if probe_bytes(&b).unwrap() == Some(FsKind::Swap) {
                match used_bytes(&b) {
                    Ok(u) => {
                        assert!(u.total() <= 65536);
                        ok += 1
                    }
                    Err(_) => err += 1,
                }
            }
            for &(at, bit) in flips.iter().rev() {
                b[at] ^= bit;
            }
        }
        assert!(ok > 0 && err > 0, "ok {ok} err {err}");
    }
}
