//! Run lists ("mapping pairs"): where a non-resident attribute's clusters are.
//!
//! Each run starts with a header byte: the low nibble is the size in bytes of the run's
//! length, the high nibble the size of its starting cluster, stored as a signed delta from
//! the previous run's start. A zero header ends the list; a run without a start is sparse.

use crate::{corrupt, MetaError, Region};

/// Most runs accepted in one list. A list lives inside one MFT record (at most 64 KiB) and a
/// run takes at least two bytes, so a real list never has more.
const MAX_RUNS: usize = 32 * 1024;

/// One run: `len` clusters from `lcn` on the volume hold clusters `vcn ..` of the attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub lcn: u64,
    pub len: u64,
}

/// Reads a little-endian integer of `n` bytes (1..=8), sign-extended when `signed`.
fn int(b: &[u8], n: usize, signed: bool) -> Option<i128> {
    let bytes = b.get(..n)?;
    let mut v: i128 = 0;
    for (i, &x) in bytes.iter().enumerate() {
        v |= i128::from(x) << (8 * i);
    }
    if signed && bytes.last().is_some_and(|&x| x & 0x80 != 0) {
        v -= 1i128 << (8 * n);
    }
    Some(v)
}

/// Decodes a run list for `what`. Every run must lie inside the volume's `clusters`; sparse
/// runs are refused (none of the system files read here can be sparse).
pub fn decode(b: &[u8], clusters: u64, what: &str) -> Result<Vec<Run>, MetaError> {
    let mut runs = Vec::new();
    let mut at = 0usize;
    let mut vcn = 0u64;
    let mut lcn: i128 = 0;
    loop {
        let header = *b
            .get(at)
            .ok_or_else(|| corrupt!("ntfs {what}: run list has no end marker"))?;
        if header == 0 {
            return Ok(runs);
        }
        if runs.len() >= MAX_RUNS {
            return Err(corrupt!("ntfs {what}: more than {MAX_RUNS} runs"));
        }
        let len_size = usize::from(header & 0x0F);
        let lcn_size = usize::from(header >> 4);
        if !(1..=8).contains(&len_size) || lcn_size > 8 {
            return Err(corrupt!(
                "ntfs {what}: run header {header:#04x} at byte {at} of the run list"
            ));
        }
        let field = |from: usize, n: usize, signed: bool| {
            b.get(from..)
                .and_then(|rest| int(rest, n, signed))
                .ok_or_else(|| corrupt!("ntfs {what}: run list ends inside a run"))
        };
        let len = field(at + 1, len_size, true)?;
        if len <= 0 {
            return Err(corrupt!("ntfs {what}: run of {len} clusters"));
        }
        if lcn_size == 0 {
            return Err(corrupt!(
                "ntfs {what}: sparse run at VCN {vcn} (this file is never sparse)"
            ));
        }
        lcn += field(at + 1 + len_size, lcn_size, true)?;
        // Both fit an i128 comfortably: at most 8 bytes each, summed at most MAX_RUNS times.
        let end = lcn + len;
        if lcn < 0 || end > i128::from(clusters) {
            return Err(corrupt!(
                "ntfs {what}: run of {len} clusters at cluster {lcn} is outside the volume's {clusters} clusters"
            ));
        }
        // In range of the volume, so both fit a u64.
        let (start, count) = (lcn as u64, len as u64);
        runs.push(Run {
            vcn,
            lcn: start,
            len: count,
        });
        vcn = vcn
            .checked_add(count)
            .ok_or_else(|| corrupt!("ntfs {what}: run list longer than 2^64 clusters"))?;
        at += 1 + len_size + lcn_size;
    }
}

/// Total clusters the runs map.
pub fn clusters(runs: &[Run]) -> u64 {
    runs.last().map_or(0, |r| r.vcn + r.len)
}

/// Fills `buf` with the attribute's bytes from `offset`, following `runs`.
pub fn read(
    region: &Region,
    runs: &[Run],
    cluster: u64,
    offset: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), MetaError> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = offset + done as u64;
        let vcn = at / cluster;
        let run = runs
            .iter()
            .find(|r| r.vcn <= vcn && vcn < r.vcn + r.len)
            .ok_or_else(|| corrupt!("ntfs {what}: byte {at} is past the clusters it maps"))?;
        // Runs were checked to lie inside the volume, which lies inside the region.
        let disk = run.lcn * cluster + (at - run.vcn * cluster);
        let run_end = (run.lcn + run.len) * cluster;
        let n = (run_end - disk).min((buf.len() - done) as u64) as usize;
        region.read(what, &mut buf[done..done + n], disk)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_runs_with_negative_deltas() {
        // 0x20 clusters at 0x2000; 0x10 at 0x2000 - 0x100; 8 at +0x400.
        let b = [
            0x21, 0x20, 0x00, 0x20, 0x21, 0x10, 0x00, 0xFF, 0x21, 0x08, 0x00, 0x04, 0x00,
        ];
        let runs = decode(&b, 0x10000, "t").unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    vcn: 0,
                    lcn: 0x2000,
                    len: 0x20
                },
                Run {
                    vcn: 0x20,
                    lcn: 0x1F00,
                    len: 0x10
                },
                Run {
                    vcn: 0x30,
                    lcn: 0x2300,
                    len: 8
                },
            ]
        );
        assert_eq!(clusters(&runs), 0x38);
    }

    #[test]
    fn rejects_run_outside_volume() {
        let b = [0x21, 0x20, 0x00, 0x20, 0x00];
        assert!(decode(&b, 0x2010, "t").is_err());
        let b = [0x11, 0x20, 0xF0, 0x00]; // starts at cluster -16
        assert!(decode(&b, 0x10000, "t").is_err());
    }

    #[test]
    fn rejects_sparse_zero_and_negative_lengths() {
        assert!(decode(&[0x01, 0x20, 0x00], 1000, "t").is_err());
        assert!(decode(&[0x11, 0x00, 0x05, 0x00], 1000, "t").is_err());
        assert!(decode(&[0x11, 0xF0, 0x05, 0x00], 1000, "t").is_err());
    }

    #[test]
    fn rejects_truncated_lists_and_bad_headers() {
        assert!(decode(&[0x11, 0x20, 0x05], 1000, "t").is_err()); // no end marker
        assert!(decode(&[0x31, 0x20, 0x05], 1000, "t").is_err()); // ends inside a run
        assert!(decode(&[0x10, 0x00], 1000, "t").is_err()); // no length
        assert!(decode(&[0x91, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1000, "t").is_err());
        assert!(decode(&[], 1000, "t").is_err());
    }

    #[test]
    fn reads_across_runs() {
        let disk: Vec<u8> = (0..64u8).collect();
        let region = Region::whole(&disk);
        let runs = [
            Run {
                vcn: 0,
                lcn: 4,
                len: 2,
            },
            Run {
                vcn: 2,
                lcn: 1,
                len: 1,
            },
        ];
        let mut buf = [0u8; 6];
        read(&region, &runs, 4, 6, &mut buf, "t").unwrap();
        assert_eq!(buf, [22, 23, 4, 5, 6, 7]);
        assert!(read(&region, &runs, 4, 10, &mut [0u8; 4], "t").is_err());
    }
}
