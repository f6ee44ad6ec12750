//! What a round sends: per disk, a set of byte ranges, cut into chunks at block boundaries.

use blockrep_blockmap::{map_disk, ExtentSet, ReadAt};
use blockrep_disk::SourceDisk;
use tracing::{info, warn};

use super::{Mode, SourceSpec};
use crate::Error;

/// A source disk as block-map input.
pub(crate) struct DiskReader<'a>(pub &'a SourceDisk);

impl ReadAt for DiskReader<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0
            .read_exact_at(buf, offset)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn size(&self) -> u64 {
        self.0.size()
    }
}

/// The ranges of one disk a round sends (not for `Mode::Delta`, whose ranges come from the
/// digest comparison). Reads disk metadata: call it off the async reactor.
pub(crate) fn plan_disk(
    mode: Mode,
    source: &SourceDisk,
    spec: &SourceSpec,
) -> Result<ExtentSet, Error> {
    let size = source.size();
    match mode {
        Mode::Full | Mode::Delta => Ok(ExtentSet::range(0, size)),
        Mode::Used => {
            let map = map_disk(&DiskReader(source));
            for w in &map.warnings {
                warn!(disk = %spec.id, "{w}");
            }
            info!(
                disk = %spec.id,
                table = map.table.map_or("none", |t| t.name()),
                used = map.used.total(),
                size,
                "used-block map"
            );
            Ok(map.used)
        }
        Mode::Bitmap => {
            let changed = spec.changed.as_ref().ok_or_else(|| {
                Error::Config(format!(
                    "--mode bitmap needs a change bitmap for disk {} (--bitmap {}=FILE)",
                    spec.id, spec.id
                ))
            })?;
            if let Some(last) = changed.as_slice().last() {
                if last.end() > size {
                    return Err(Error::Config(format!(
                        "the change set of disk {} reaches byte {}, past the disk's {size} bytes",
                        spec.id,
                        last.end()
                    )));
                }
            }
            Ok(changed.clone())
        }
    }
}

/// Cuts each disk's ranges into chunks of at most `block_size` bytes that never cross a
/// multiple of `block_size`: `(disk index, offset, length)`.
pub(crate) fn chunks(
    plans: &[ExtentSet],
    block_size: u32,
) -> impl Iterator<Item = (u16, u64, u32)> + '_ {
    let bs = u64::from(block_size);
    plans.iter().enumerate().flat_map(move |(disk, set)| {
        set.iter().flat_map(move |e| {
            let end = e.end();
            let mut at = e.offset;
            std::iter::from_fn(move || {
                if at >= end {
                    return None;
                }
                let stop = end.min((at / bs + 1) * bs);
                let chunk = (disk as u16, at, (stop - at) as u32);
                at = stop;
                Some(chunk)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockrep_blockmap::Extent;

    #[test]
    fn whole_disks_cover_every_byte_once() {
        let plans = [ExtentSet::range(0, 10_000), ExtentSet::range(0, 4096)];
        let got: Vec<_> = chunks(&plans, 4096).collect();
        assert_eq!(
            got,
            vec![(0, 0, 4096), (0, 4096, 4096), (0, 8192, 1808), (1, 0, 4096)]
        );
    }

    #[test]
    fn ranges_are_cut_at_block_boundaries() {
        let set: ExtentSet = [Extent::new(100, 50), Extent::new(4000, 5000)]
            .into_iter()
            .collect();
        let got: Vec<_> = chunks(std::slice::from_ref(&set), 4096).collect();
        assert_eq!(
            got,
            vec![(0, 100, 50), (0, 4000, 96), (0, 4096, 4096), (0, 8192, 808)]
        );
        let total: u64 = got.iter().map(|c| u64::from(c.2)).sum();
        assert_eq!(total, set.total());
    }
}
