//! Is the internal log clean? A log that needs recovery holds allocations that the AGFs and
//! free-space trees on disk do not show yet: blocks a file already uses may still be listed as
//! free. Only a log whose last record is a complete unmount record is trusted.
//!
//! The log is a ring of 512-byte basic blocks (BBs). Every BB starts with the cycle number of
//! the pass that wrote it (a record header instead starts with the magic 0xFEEDBABE and keeps
//! the cycle in its next word), so the head, where writing stopped, is where the cycle number
//! drops: `c c c ... c | c-1 c-1 ...` (or `c ... c | 0 0 ...` before the first wrap). Layouts
//! from "XFS Algorithms & Data Structures", chapter "Journaling Log", and the kernel's
//! `xfs_log_format.h` / `xfs_log_recover.c` (head search and `xlog_check_unmount_rec`).

use super::sb::Superblock;
use crate::crc32c::Crc32c;
use crate::read::{be, le};
use crate::{corrupt, MetaError, Region};

/// A basic block: the log's unit.
const BB: u64 = 512;
/// `XLOG_HEADER_MAGIC_NUM`: the first word of a log record header.
const HEADER_MAGIC: u32 = 0xFEED_BABE;
/// How far the head can be from a block of the newest pass: all log buffers in flight at
/// once (`XLOG_MAX_ICLOGS` = 8 of `XLOG_MAX_RECORD_BSIZE` = 256 KiB), in BBs. Writes that
/// were in flight when the system stopped can leave holes this far before the head, or
/// finished blocks this far after a hole.
const INFLIGHT_BBS: u64 = 8 * 256 * 1024 / BB;
/// Largest log record payload and iclog size (`XLOG_MAX_RECORD_BSIZE`).
const MAX_RECORD_BYTES: u32 = 256 * 1024;
/// Payload bytes whose first words one header (or extended header) keeps
/// (`XLOG_HEADER_CYCLE_SIZE`).
const HEADER_CYCLE_SIZE: u32 = 32 * 1024;
/// `sizeof(struct xlog_rec_header)` as checksummed: 328 bytes on most machines, 324 where
/// a 64-bit field is only 4-byte aligned (i386). The kernel accepts either; so does this.
const REC_HEADER_SIZES: [usize; 2] = [328, 324];
/// `sizeof(struct xlog_rec_ext_header)`: a cycle word and 64 saved words.
const EXT_HEADER_SIZE: usize = 260;
/// Where a record header keeps its CRC.
const REC_CRC_OFF: usize = 32;
/// `oh_clientid` of log-internal operations (`XFS_LOG`) and `oh_flags` bit of an unmount
/// record (`XLOG_UNMOUNT_TRANS`).
const CLIENT_LOG: u8 = 0xAA;
const FLAG_UNMOUNT: u8 = 0x20;
/// BBs read at once while checking windows (64 KiB).
const READ_CHUNK_BBS: u64 = 128;

/// Why the log cannot be trusted to be clean.
fn needs_recovery(why: String) -> MetaError {
    MetaError::Unsupported(format!(
        "xfs log needs recovery (the filesystem is mounted, frozen or was not cleanly \
         unmounted; only a log that ends with an unmount record is trusted): {why}"
    ))
}

/// The internal log: where it is, and how many BBs it has.
struct Log<'a> {
    region: &'a Region<'a>,
    offset: u64,
    bbs: u64,
}

impl Log<'_> {
    /// Reads BBs `start .. start + count` (inside the log) and calls `each(bb, bytes)`.
    fn each_bb(
        &self,
        start: u64,
        count: u64,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        let end = start.saturating_add(count).min(self.bbs);
        let mut at = start;
        while at < end {
            let n = (end - at).min(READ_CHUNK_BBS);
            // n <= READ_CHUNK_BBS, so the buffer is at most 64 KiB.
            let buf =
                self.region
                    .read_vec("the xfs log", self.offset + at * BB, (n * BB) as usize)?;
            for (i, bb) in buf.chunks_exact(BB as usize).enumerate() {
                each(at + i as u64, bb)?;
            }
            at += n;
        }
        Ok(())
    }

    /// The cycle number of BB `n`.
    fn cycle(&self, n: u64) -> Result<u32, MetaError> {
        let mut w = [0u8; 8];
        self.region
            .read("the xfs log", &mut w, self.offset + n * BB)?;
        cycle_of(&w)
    }
}

fn cycle_of(bb: &[u8]) -> Result<u32, MetaError> {
    let first = be::u32(bb, 0)?;
    if first == HEADER_MAGIC {
        be::u32(bb, 4)
    } else {
        Ok(first)
    }
}

/// Checks that the internal log at byte `offset` of `region` (already checked to lie inside
/// the data section) ends with a complete unmount record.
pub fn check_clean(region: &Region, sb: &Superblock, offset: u64) -> Result<(), MetaError> {
    let bytes = u64::from(sb.logblocks) * u64::from(sb.block_size);
    let log = Log {
        region,
        offset,
        bbs: bytes / BB,
    };
    let n = log.bbs;
    if n < 2 {
        return Err(corrupt!("xfs log: {n} basic blocks"));
    }
    let newest = log.cycle(0)?;
    let end_cycle = log.cycle(n - 1)?;
    if newest == 0 {
        return Err(needs_recovery(
            "the log's first block was never written".into(),
        ));
    }
    // The cycle of the blocks after the head: 0 before the log's first wrap, else the pass
    // before the newest. Equal cycles at both ends mean the head is at the ring's end, a
    // rare case this check leaves to the kernel.
    let older = if end_cycle == 0 || end_cycle.wrapping_add(1) == newest {
        end_cycle
    } else {
        return Err(needs_recovery(format!(
            "cycle {newest} at the start and {end_cycle} at the end: no head found"
        )));
    };
    // Binary search for the first block of the older pass: the head.
    let (mut lo, mut hi) = (0u64, n - 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match log.cycle(mid)? {
            c if c == newest => lo = mid,
            c if c == older => hi = mid,
            c => {
                return Err(needs_recovery(format!(
                    "block {mid} has cycle {c}, neither {newest} nor {older}"
                )))
            }
        }
    }
    let head = hi;
    // No block of the newest pass after the head (a hole the search landed in), no block of
    // the older pass just before it (a write still in flight).
    log.each_bb(head, INFLIGHT_BBS, |i, bb| match cycle_of(bb)? {
        c if c == older => Ok(()),
        c => Err(needs_recovery(format!(
            "block {i} after the head at {head} has cycle {c}"
        ))),
    })?;
    let from = head.saturating_sub(INFLIGHT_BBS);
    let mut last_header = None;
    log.each_bb(from, head - from, |i, bb| {
        let c = cycle_of(bb)?;
        if c != newest {
            return Err(needs_recovery(format!(
                "block {i} before the head at {head} has cycle {c}"
            )));
        }
        if be::u32(bb, 0)? == HEADER_MAGIC {
            last_header = Some(i);
        }
        Ok(())
    })?;
    let rec = last_header.ok_or_else(|| {
        needs_recovery(format!(
            "no record header in the {} blocks before the head",
            head - from
        ))
    })?;
    check_unmount_record(&log, sb, rec, newest, head)
}

/// Checks that the record at BB `rec` is a complete unmount record that ends at `head`.
fn check_unmount_record(
    log: &Log,
    sb: &Superblock,
    rec: u64,
    cycle: u32,
    head: u64,
) -> Result<(), MetaError> {
    let what = format!("xfs log record at block {rec}");
    let mut h = [0u8; BB as usize];
    log.region
        .read("the xfs log", &mut h, log.offset + rec * BB)?;
    let version = be::u32(&h, 8)?;
    let len = be::u32(&h, 12)?;
    let lsn = be::u64(&h, 16)?;
    let num_ops = be::u32(&h, 40)?;
    let size = be::u32(&h, 320)?;
    if (version != 1 && version != 2) || len > MAX_RECORD_BYTES || size > MAX_RECORD_BYTES {
        return Err(corrupt!(
            "{what}: version {version}, length {len}, buffer size {size}"
        ));
    }
    if lsn != (u64::from(cycle) << 32 | rec) {
        return Err(corrupt!("{what}: says it is at {:#x}", lsn));
    }
    if h.get(304..320) != Some(&sb.uuid[..]) {
        return Err(corrupt!(
            "{what}: filesystem UUID differs from the superblock's"
        ));
    }
    // Headers take one BB, or one per 32 KiB of buffer in v2 logs with big buffers.
    let header_bbs = if version == 2 && size > HEADER_CYCLE_SIZE {
        u64::from(size.div_ceil(HEADER_CYCLE_SIZE))
    } else {
        1
    };
    let data_bbs = u64::from(len).div_ceil(BB);
    let after = rec + header_bbs + data_bbs;
    if after != head || num_ops != 1 || data_bbs == 0 {
        return Err(needs_recovery(format!(
            "the last record (block {rec}, {num_ops} operations, ending at block {after}) is not \
             a lone unmount record ending at the head ({head})"
        )));
    }
    // Header(s) and payload: at most 8 + 512 BBs (260 KiB), bounded by the checks above.
    let total = ((header_bbs + data_bbs) * BB) as usize;
    let record = log
        .region
        .read_vec("the xfs log", log.offset + rec * BB, total)?;
    let data = record
        .get((header_bbs * BB) as usize..)
        .ok_or_else(|| corrupt!("{what}: short"))?;
    let client = data.get(8).copied().unwrap_or(0);
    let flags = data.get(9).copied().unwrap_or(0);
    if client != CLIENT_LOG || flags & FLAG_UNMOUNT == 0 {
        return Err(needs_recovery(format!(
            "the last record (block {rec}) is not an unmount record (client {client:#x}, flags \
             {flags:#x})"
        )));
    }
    let stored = le::u32(&record, REC_CRC_OFF)?;
    // mkfs writes its unmount record with a zero CRC, which the kernel accepts even on v5.
    if sb.has_crc() && stored != 0 {
        let payload = data
            .get(..len as usize)
            .ok_or_else(|| corrupt!("{what}: short"))?;
        let ext_headers = len.div_ceil(HEADER_CYCLE_SIZE).max(1) as usize - 1;
        let matches = REC_HEADER_SIZES.iter().any(|&hs| {
            let mut crc = Crc32c::new();
            crc.update_without(record.get(..hs).unwrap_or(&[]), REC_CRC_OFF);
            for i in 1..=ext_headers {
                let at = i * BB as usize;
                crc.update(record.get(at..at + EXT_HEADER_SIZE).unwrap_or(&[]));
            }
            crc.update(payload);
            crc.finish() == stored
        });
        if !matches {
            return Err(corrupt!("{what}: CRC mismatch (stored {stored:#010x})"));
        }
    }
    Ok(())
}
