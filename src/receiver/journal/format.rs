//! The journal's record format, pure: encoding and decoding of the preamble, the records and
//! their payloads, and the checksums. No files here: [`super::dir`] reads and writes them.
//!
//! # File format, version 1
//!
//! All integers are little-endian. A file is a 32-byte preamble, then records back to back.
//!
//! Preamble:
//!
//! | offset | size | field                                                                  |
//! |--------|------|------------------------------------------------------------------------|
//! | 0      | 8    | magic, ASCII `BRJOURNL`                                                |
//! | 8      | 4    | format version, u32 = 1                                                |
//! | 12     | 4    | flags, u32 = 0 (anything else: unusable)                               |
//! | 16     | 16   | instance: random bytes, new for every file written whole               |
//!
//! Record, at file offset `pos`:
//!
//! | offset    | size  | field                                                             |
//! |-----------|-------|-------------------------------------------------------------------|
//! | 0         | 4     | `len`: payload length, u32, at most 1 MiB (1048576)               |
//! | 4         | 1     | `kind`: 1 header, 2 durable ranges, 3 finished                    |
//! | 5         | `len` | payload                                                           |
//! | 5 + `len` | 16    | check: the first 16 bytes of `blake3::keyed_hash(key, pos as u64 ‖ kind ‖ len as u32 ‖ payload)`, where `key = blake3::derive_key(KEY_CONTEXT, instance)` |
//!
//! `KEY_CONTEXT` is the ASCII string `blockrep 2025 session journal record checksum v1`.
//!
//! Payloads (each must have exactly the length its fields give):
//!
//! - **header** (kind 1; exactly one, the first record): u8 `n` (1..=128), `n` bytes session
//!   id (`A-Z a-z 0-9 . _ -`, not starting with a dot); 32 bytes client (blake3 of the client
//!   certificate's DER); u64 created (unix seconds); u16 disk count `d` (0..=64); then `d`
//!   times: u8 `m` (1..=64), `m` bytes disk id (same alphabet, unique), u64 size in bytes,
//!   u32 block size.
//! - **durable ranges** (kind 2): u32 count `c` (1..=58253), then `c` times: u16 disk index
//!   (`< d`), u64 offset, u64 length (`>= 1`, `offset + length` not overflowing and at most
//!   the disk's size): 18 bytes each, so `len = 4 + 18c`. It also clears a preceding
//!   finished mark (the session was resumed and is writing again).
//! - **finished** (kind 3): u64 unix seconds when the session was recorded finished.
//!
//! Loading stops at the first record that is incomplete, longer than 1 MiB, fails its check,
//! has an unknown kind, is a second header, or whose payload fails a check above; that record
//! and everything after it are ignored. A durable-ranges record is applied whole or not at all.
//!
//! The format must not change without a new version: journals outlive the binary that wrote
//! them (a receiver upgraded between two connections of a session).

use std::io::{self, Read, Write};

use blockrep_blockmap::ExtentSet;
use blockrep_proto::codec::is_identifier;
use blockrep_proto::consts::{MAX_DISKS, MAX_DISK_ID_LEN, MAX_SESSION_ID_LEN};

/// The first 8 bytes of every journal.
const MAGIC: [u8; 8] = *b"BRJOURNL";
/// The format version this build writes and reads.
const FORMAT_VERSION: u32 = 1;
/// Magic, version, flags, instance.
pub(super) const PREAMBLE_LEN: u64 = 32;
/// blake3 `derive_key` context for the record checksum key.
const KEY_CONTEXT: &str = "blockrep 2025 session journal record checksum v1";
/// Bytes of the truncated blake3 checksum at the end of each record.
const CHECK_LEN: usize = 16;
/// `len` (u32) and `kind` (u8).
const RECORD_HEAD: usize = 5;
/// Bytes of a record besides its payload.
pub(super) const RECORD_OVERHEAD: u64 = (RECORD_HEAD + CHECK_LEN) as u64;
/// Longest record payload.
const MAX_RECORD: u32 = 1 << 20;
/// Bytes of one range in a durable-ranges payload: disk u16, offset u64, length u64.
pub(super) const RANGE_LEN: usize = 18;
/// Most ranges in one durable-ranges record.
pub(super) const MAX_RANGES_PER_RECORD: usize = (MAX_RECORD as usize - 4) / RANGE_LEN;

pub(super) const KIND_HEADER: u8 = 1;
pub(super) const KIND_DURABLE: u8 = 2;
pub(super) const KIND_FINISHED: u8 = 3;

/// One disk of a session, as the sender announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskLayout {
    /// The disk id.
    pub id: String,
    /// The source disk's size in bytes.
    pub size: u64,
    /// The session's block size for this disk.
    pub block_size: u32,
}

/// What a journal is about: written once, at its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// 1..=128 characters of `A-Z a-z 0-9 . _ -`, not starting with a dot; the file name is
    /// `<session_id>.journal`.
    pub session_id: String,
    /// blake3 of the client certificate's DER: only that client may resume.
    pub client: [u8; 32],
    /// The session's disks; durable ranges name them by index.
    pub disks: Vec<DiskLayout>,
    /// When the session was created, unix seconds.
    pub created: u64,
}

/// A journal read back from disk: everything up to the first record that failed a check.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The session's header.
    pub header: Header,
    /// The durable ranges, merged; one set per disk in `header.disks`.
    pub durable: Vec<ExtentSet>,
    /// When the session was recorded finished (unix seconds), unless it wrote again since.
    pub finished: Option<u64>,
    /// The file's instance id, to check on resume that it is still the same file.
    pub(super) instance: [u8; 16],
    /// Bytes of the file that are valid; anything after is a torn or corrupt tail.
    pub(super) valid_len: u64,
}

impl Loaded {
    #[cfg(test)]
    /// Bytes of the file that passed every check.
    pub fn valid_len(&self) -> u64 {
        self.valid_len
    }
}

impl Header {
    /// Checks what the format requires of a header.
    pub(super) fn check(&self) -> Result<(), String> {
        if !is_identifier(&self.session_id, MAX_SESSION_ID_LEN) {
            return Err(format!(
                "session id {:?} is not 1..={MAX_SESSION_ID_LEN} characters of A-Z a-z 0-9 . _ - \
                 not starting with a dot",
                self.session_id
            ));
        }
        if self.disks.len() > usize::from(MAX_DISKS) {
            return Err(format!(
                "{} disks, more than the {MAX_DISKS} a session may have",
                self.disks.len()
            ));
        }
        for (i, disk) in self.disks.iter().enumerate() {
            if !is_identifier(&disk.id, MAX_DISK_ID_LEN) {
                return Err(format!(
                    "disk id {:?} is not 1..={MAX_DISK_ID_LEN} characters of A-Z a-z 0-9 . _ - \
                     not starting with a dot",
                    disk.id
                ));
            }
            if self.disks[..i].iter().any(|d| d.id == disk.id) {
                return Err(format!("disk id {:?} appears twice", disk.id));
            }
        }
        Ok(())
    }

    /// The header record's payload. Call [`Header::check`] first.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(256);
        p.push(self.session_id.len() as u8);
        p.extend_from_slice(self.session_id.as_bytes());
        p.extend_from_slice(&self.client);
        p.extend_from_slice(&self.created.to_le_bytes());
        p.extend_from_slice(&(self.disks.len() as u16).to_le_bytes());
        for disk in &self.disks {
            p.push(disk.id.len() as u8);
            p.extend_from_slice(disk.id.as_bytes());
            p.extend_from_slice(&disk.size.to_le_bytes());
            p.extend_from_slice(&disk.block_size.to_le_bytes());
        }
        p
    }

    pub(super) fn decode(payload: &[u8]) -> Result<Header, String> {
        let mut c = Cursor(payload);
        let n = c.u8()?;
        let session_id = c.string(n)?;
        let client: [u8; 32] = c.array()?;
        let created = c.u64()?;
        let count = c.u16()?;
        if count > MAX_DISKS {
            return Err(format!("{count} disks, more than {MAX_DISKS}"));
        }
        let mut disks = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let m = c.u8()?;
            let id = c.string(m)?;
            let size = c.u64()?;
            let block_size = c.u32()?;
            disks.push(DiskLayout {
                id,
                size,
                block_size,
            });
        }
        if !c.0.is_empty() {
            return Err(format!("{} bytes after the last disk", c.0.len()));
        }
        let header = Header {
            session_id,
            client,
            disks,
            created,
        };
        header.check()?;
        Ok(header)
    }
}

/// Reads little-endian fields from a payload, failing instead of reading past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or_else(|| "the payload ends early".to_string())?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self, n: u8) -> Result<String, String> {
        let bytes = self.take(usize::from(n))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "an id is not UTF-8".to_string())
    }
}

/// Checks one durable range against the layout.
pub(super) fn check_range(
    disks: &[DiskLayout],
    disk: u16,
    offset: u64,
    len: u64,
) -> Result<(), String> {
    let Some(layout) = disks.get(usize::from(disk)) else {
        return Err(format!(
            "disk index {disk}, but the session has {} disks",
            disks.len()
        ));
    };
    match offset.checked_add(len) {
        Some(end) if end <= layout.size => Ok(()),
        _ => Err(format!(
            "{len} bytes at offset {offset} lie outside disk {}, which is {} bytes",
            layout.id, layout.size
        )),
    }
}

/// Decodes and checks a durable-ranges payload; nothing is returned unless all of it is good.
fn decode_ranges(payload: &[u8], disks: &[DiskLayout]) -> Result<Vec<(usize, u64, u64)>, String> {
    let mut c = Cursor(payload);
    let count = c.u32()? as usize;
    if count == 0 || count > MAX_RANGES_PER_RECORD || c.0.len() != count * RANGE_LEN {
        return Err(format!(
            "a durable-ranges record of {} bytes claims {count} ranges",
            payload.len()
        ));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (disk, offset, len) = (c.u16()?, c.u64()?, c.u64()?);
        if len == 0 {
            return Err(format!("an empty range at offset {offset}"));
        }
        check_range(disks, disk, offset, len)?;
        out.push((usize::from(disk), offset, len));
    }
    Ok(out)
}

pub(super) fn record_key(instance: &[u8; 16]) -> [u8; 32] {
    blake3::derive_key(KEY_CONTEXT, instance)
}

fn checksum(key: &[u8; 32], pos: u64, kind: u8, payload: &[u8]) -> [u8; CHECK_LEN] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&pos.to_le_bytes());
    h.update(&[kind]);
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..CHECK_LEN]);
    out
}

pub(super) fn preamble(instance: &[u8; 16]) -> [u8; PREAMBLE_LEN as usize] {
    let mut p = [0u8; PREAMBLE_LEN as usize];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p[16..].copy_from_slice(instance);
    p
}

/// Writes records, keeping track of the file offset each one lands at.
pub(super) struct RecordWriter<W> {
    pub(super) w: W,
    key: [u8; 32],
    pub(super) pos: u64,
}

impl<W: Write> RecordWriter<W> {
    pub(super) fn new(w: W, key: [u8; 32], pos: u64) -> Self {
        Self { w, key, pos }
    }

    pub(super) fn record(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        debug_assert!(payload.len() <= MAX_RECORD as usize);
        let len = payload.len() as u32;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(&[kind])?;
        self.w.write_all(payload)?;
        self.w
            .write_all(&checksum(&self.key, self.pos, kind, payload))?;
        self.pos += RECORD_OVERHEAD + u64::from(len);
        Ok(())
    }

    /// Durable-ranges records for `ranges`, as many as their size limit needs.
    pub(super) fn ranges(
        &mut self,
        ranges: impl IntoIterator<Item = (u16, u64, u64)>,
    ) -> io::Result<()> {
        let mut payload = Vec::new();
        let mut count = 0usize;
        for (disk, offset, len) in ranges {
            if count == MAX_RANGES_PER_RECORD {
                self.ranges_record(&mut payload, count)?;
                count = 0;
            }
            if count == 0 {
                payload.clear();
                payload.extend_from_slice(&[0; 4]);
            }
            payload.extend_from_slice(&disk.to_le_bytes());
            payload.extend_from_slice(&offset.to_le_bytes());
            payload.extend_from_slice(&len.to_le_bytes());
            count += 1;
        }
        if count > 0 {
            self.ranges_record(&mut payload, count)?;
        }
        Ok(())
    }

    fn ranges_record(&mut self, payload: &mut [u8], count: usize) -> io::Result<()> {
        payload[..4].copy_from_slice(&(count as u32).to_le_bytes());
        self.record(KIND_DURABLE, payload)
    }
}

/// Every (disk index, offset, length) of per-disk sets.
pub(super) fn all_ranges(durable: &[ExtentSet]) -> impl Iterator<Item = (u16, u64, u64)> + '_ {
    durable
        .iter()
        .enumerate()
        .flat_map(|(i, set)| set.iter().map(move |e| (i as u16, e.offset, e.len)))
}

/// The size of a journal written whole with this content.
pub(super) fn compacted_size(header: &Header, durable: &[ExtentSet], finished: Option<u64>) -> u64 {
    let ranges: u64 = durable.iter().map(|s| s.len() as u64).sum();
    let records = ranges.div_ceil(MAX_RANGES_PER_RECORD as u64);
    PREAMBLE_LEN
        + RECORD_OVERHEAD
        + header.encode().len() as u64
        + records * (RECORD_OVERHEAD + 4)
        + ranges * RANGE_LEN as u64
        + finished.map_or(0, |_| RECORD_OVERHEAD + 8)
}

/// What parsing a journal found.
pub(super) struct Parsed {
    pub(super) loaded: Loaded,
    /// Why the valid part ended before the end of the file, if it did.
    pub(super) ended: Option<String>,
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_upto(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

enum Rec {
    /// The input ended exactly at a record boundary.
    End,
    /// A record that is incomplete or fails its checksum.
    Bad(String),
    Good(u8, Vec<u8>),
}

fn read_record(r: &mut impl Read, key: &[u8; 32], pos: u64) -> io::Result<Rec> {
    let mut head = [0u8; RECORD_HEAD];
    let n = read_upto(r, &mut head)?;
    if n == 0 {
        return Ok(Rec::End);
    }
    let torn = || Ok(Rec::Bad(format!("an incomplete record at offset {pos}")));
    if n < RECORD_HEAD {
        return torn();
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let kind = head[4];
    if len > MAX_RECORD {
        return Ok(Rec::Bad(format!(
            "the record at offset {pos} claims {len} bytes, more than {MAX_RECORD}"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    if read_upto(r, &mut payload)? < payload.len() {
        return torn();
    }
    let mut check = [0u8; CHECK_LEN];
    if read_upto(r, &mut check)? < CHECK_LEN {
        return torn();
    }
    if check != checksum(key, pos, kind, &payload) {
        return Ok(Rec::Bad(format!(
            "the record at offset {pos} fails its checksum"
        )));
    }
    Ok(Rec::Good(kind, payload))
}

/// Parses a journal: `Err(reason)` when the preamble or header record is unusable; otherwise
/// everything up to the first record that fails a check. Errors are read failures.
pub(super) fn parse(mut r: impl Read) -> io::Result<Result<Parsed, String>> {
    let mut pre = [0u8; PREAMBLE_LEN as usize];
    if read_upto(&mut r, &mut pre)? < pre.len() {
        return Ok(Err("it is shorter than its preamble".into()));
    }
    if pre[..8] != MAGIC {
        return Ok(Err(
            "it is not a blockrep session journal (bad magic)".into()
        ));
    }
    let version = u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]);
    if version != FORMAT_VERSION {
        return Ok(Err(format!(
            "it has format version {version}; this build reads version {FORMAT_VERSION}"
        )));
    }
    if pre[12..16] != [0; 4] {
        return Ok(Err("it has unknown flags".into()));
    }
    let mut instance = [0u8; 16];
    instance.copy_from_slice(&pre[16..]);
    let key = record_key(&instance);
    let mut pos = PREAMBLE_LEN;
    let header = match read_record(&mut r, &key, pos)? {
        Rec::End => return Ok(Err("it has no header record".into())),
        Rec::Bad(reason) => return Ok(Err(format!("its header record is damaged: {reason}"))),
        Rec::Good(KIND_HEADER, payload) => {
            pos += RECORD_OVERHEAD + payload.len() as u64;
            match Header::decode(&payload) {
                Ok(h) => h,
                Err(e) => return Ok(Err(format!("its header record is invalid: {e}"))),
            }
        }
        Rec::Good(kind, _) => {
            return Ok(Err(format!(
                "its first record is of kind {kind}, not a header"
            )))
        }
    };
    let mut durable = vec![ExtentSet::new(); header.disks.len()];
    let mut finished = None;
    let ended = loop {
        let (kind, payload) = match read_record(&mut r, &key, pos)? {
            Rec::End => break None,
            Rec::Bad(reason) => break Some(reason),
            Rec::Good(kind, payload) => (kind, payload),
        };
        let applied = match kind {
            KIND_DURABLE => decode_ranges(&payload, &header.disks).map(|ranges| {
                for (disk, offset, len) in ranges {
                    durable[disk].insert(offset, len);
                }
                finished = None;
            }),
            KIND_FINISHED => match <[u8; 8]>::try_from(payload.as_slice()) {
                Ok(t) => {
                    finished = Some(u64::from_le_bytes(t));
                    Ok(())
                }
                Err(_) => Err(format!("a finished record of {} bytes", payload.len())),
            },
            KIND_HEADER => Err("a second header record".into()),
            kind => Err(format!("a record of unknown kind {kind}")),
        };
        if let Err(e) = applied {
            break Some(format!("the record at offset {pos}: {e}"));
        }
        pos += RECORD_OVERHEAD + payload.len() as u64;
    };
    Ok(Ok(Parsed {
        loaded: Loaded {
            header,
            durable,
            finished,
            instance,
            valid_len: pos,
        },
        ended,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::journal::testutil::*;
    use proptest::prelude::*;
    use std::fs;
    use std::sync::OnceLock;

    #[test]
    fn torn_tail_at_every_length_is_dropped() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 4096)]).unwrap();
        j.record(&[(1, 100, 200), (0, 8192, 4096)]).unwrap();
        let before = j.file_len();
        let kept = j.durable().to_vec();
        j.record(&[(0, 1 << 20, 4096), (1, 0, 10)]).unwrap();
        let after_ranges = j.file_len();
        let with_ranges = j.durable().to_vec();
        j.finish(42).unwrap();
        let path = j.path().to_path_buf();
        let full = fs::read(&path).unwrap();
        for cut in before..full.len() as u64 {
            fs::write(&path, &full[..cut as usize]).unwrap();
            let loaded = dir.load(ID).unwrap().unwrap();
            if cut < after_ranges {
                assert_eq!(loaded.durable, kept, "cut at {cut}");
                assert_eq!(loaded.valid_len(), before, "cut at {cut}");
            } else {
                assert_eq!(loaded.durable, with_ranges, "cut at {cut}");
                assert_eq!(loaded.valid_len(), after_ranges, "cut at {cut}");
            }
            assert_eq!(loaded.finished, None, "cut at {cut}");
        }
        fs::write(&path, &full).unwrap();
        assert_eq!(dir.load(ID).unwrap().unwrap().finished, Some(42));
    }

    #[test]
    fn a_flipped_bit_ends_the_valid_part() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 4096)]).unwrap();
        let (start, kept) = (j.file_len(), j.durable().to_vec());
        j.record(&[(1, 100, 200), (0, 8192, 4096)]).unwrap();
        let end = j.file_len();
        j.record(&[(0, 1 << 20, 4096)]).unwrap();
        j.finish(42).unwrap();
        let path = j.path().to_path_buf();
        let full = fs::read(&path).unwrap();
        // Every byte of the middle record: length, kind, payload, checksum.
        for at in start..end {
            let mut bytes = full.clone();
            bytes[at as usize] ^= 1 << (at % 8);
            fs::write(&path, &bytes).unwrap();
            let loaded = dir.load(ID).unwrap().unwrap();
            assert_eq!(loaded.durable, kept, "bit flipped at {at}");
            assert_eq!(loaded.finished, None, "bit flipped at {at}");
            assert_eq!(loaded.valid_len(), start, "bit flipped at {at}");
        }
    }

    #[test]
    fn a_corrupt_preamble_or_header_makes_the_journal_unusable() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 4096)]).unwrap();
        let header_end = PREAMBLE_LEN + RECORD_OVERHEAD + header(ID).encode().len() as u64;
        let path = j.path().to_path_buf();
        let full = fs::read(&path).unwrap();
        for at in 0..header_end {
            for bit in [0, 7] {
                let mut bytes = full.clone();
                bytes[at as usize] ^= 1 << bit;
                fs::write(&path, &bytes).unwrap();
                assert!(dir.load(ID).unwrap().is_none(), "bit {bit} flipped at {at}");
            }
        }
        for cut in 0..header_end {
            fs::write(&path, &full[..cut as usize]).unwrap();
            assert!(dir.load(ID).unwrap().is_none(), "cut at {cut}");
        }
        fs::write(&path, &full).unwrap();
        assert!(dir.load(ID).unwrap().is_some());
        // Another session's journal under this name.
        fs::copy(&path, dir.journal_path("other")).unwrap();
        assert!(dir.load("other").unwrap().is_none());
        // A first record that is not a header.
        let mut bytes = full[..PREAMBLE_LEN as usize].to_vec();
        let mut instance = [0u8; 16];
        instance.copy_from_slice(&bytes[16..32]);
        RecordWriter::new(&mut bytes, record_key(&instance), PREAMBLE_LEN)
            .record(KIND_FINISHED, &1u64.to_le_bytes())
            .unwrap();
        fs::write(&path, &bytes).unwrap();
        assert!(dir.load(ID).unwrap().is_none());
    }

    #[test]
    fn checksummed_headers_that_fail_a_check_are_unusable() {
        let (_tmp, dir) = setup();
        let path = dir.journal_path(ID);
        let good = header(ID);
        let mut bad_disk_id = good.clone();
        bad_disk_id.disks[1].id = "bad/id".into();
        let mut duplicate = good.clone();
        duplicate.disks[1].id = "root".into();
        let mut trailing = good.encode();
        trailing.push(0);
        let mut too_many = good.encode();
        let at = 1 + ID.len() + 32 + 8;
        too_many[at..at + 2].copy_from_slice(&(MAX_DISKS + 1).to_le_bytes());
        let bad_session = Header {
            session_id: ".hidden".into(),
            ..good.clone()
        };
        let payloads = [
            bad_disk_id.encode(),
            duplicate.encode(),
            trailing,
            too_many,
            bad_session.encode(),
            good.encode()[..20].to_vec(),
            Vec::new(),
        ];
        for (i, payload) in payloads.iter().enumerate() {
            let instance = [i as u8; 16];
            let mut bytes = preamble(&instance).to_vec();
            RecordWriter::new(&mut bytes, record_key(&instance), PREAMBLE_LEN)
                .record(KIND_HEADER, payload)
                .unwrap();
            fs::write(&path, &bytes).unwrap();
            assert!(dir.load(ID).unwrap().is_none(), "payload {i}");
        }
    }

    #[test]
    fn records_outside_the_layout_end_the_valid_part() {
        let (_tmp, dir) = setup();
        let cases: Vec<(u8, Vec<u8>)> = vec![
            (KIND_DURABLE, ranges_payload(&[(2, 0, 10)])),
            (KIND_DURABLE, ranges_payload(&[(u16::MAX, 0, 10)])),
            (KIND_DURABLE, ranges_payload(&[(1, 9_999, 2)])),
            (KIND_DURABLE, ranges_payload(&[(1, 10_000, 1)])),
            (KIND_DURABLE, ranges_payload(&[(0, u64::MAX - 1, 10)])),
            (KIND_DURABLE, ranges_payload(&[(0, 10, u64::MAX)])),
            (KIND_DURABLE, ranges_payload(&[(0, 0, 0)])),
            // One good range and one bad: nothing of the record is applied.
            (KIND_DURABLE, ranges_payload(&[(0, 0, 10), (1, 0, 20_000)])),
            (KIND_DURABLE, ranges_payload(&[])),
            (KIND_DURABLE, {
                let mut p = ranges_payload(&[(0, 0, 10)]);
                p.push(0);
                p
            }),
            (KIND_DURABLE, {
                let mut p = ranges_payload(&[(0, 0, 10), (0, 20, 10)]);
                p[..4].copy_from_slice(&1u32.to_le_bytes());
                p
            }),
            (KIND_DURABLE, {
                let mut p = ranges_payload(&[(0, 0, 10)]);
                p[..4].copy_from_slice(&u32::MAX.to_le_bytes());
                p
            }),
            (KIND_FINISHED, vec![0; 7]),
            (KIND_FINISHED, vec![0; 9]),
            (KIND_HEADER, header(ID).encode()),
            (0, Vec::new()),
            (9, vec![1, 2, 3]),
        ];
        for (i, (kind, payload)) in cases.iter().enumerate() {
            let mut j = dir.create(header(ID)).unwrap();
            j.record(&[(0, 4096, 4096)]).unwrap();
            let valid = j.file_len();
            append_raw(j.path(), *kind, payload);
            // A good record after the bad one is not taken either.
            append_raw(j.path(), KIND_DURABLE, &ranges_payload(&[(1, 0, 100)]));
            let loaded = dir.load(ID).unwrap().unwrap();
            assert_eq!(loaded.durable, sets(&[(0, 4096, 4096)]), "case {i}");
            assert_eq!(loaded.valid_len(), valid, "case {i}");
        }
        // The helper itself makes records that load.
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 4096, 4096)]).unwrap();
        append_raw(j.path(), KIND_DURABLE, &ranges_payload(&[(1, 0, 100)]));
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.durable, sets(&[(0, 4096, 4096), (1, 0, 100)]));
    }

    #[test]
    fn an_oversized_record_length_is_not_allocated() {
        let (_tmp, dir) = setup();
        let j = dir.create(header(ID)).unwrap();
        let valid = j.file_len();
        let mut f = fs::OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(&u32::MAX.to_le_bytes()).unwrap();
        f.write_all(&[KIND_DURABLE; 64]).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.valid_len(), valid);
    }

    #[test]
    fn a_stale_record_from_an_older_file_is_not_taken() {
        let (_tmp, dir) = setup();
        let mut old = dir.create(header(ID)).unwrap();
        let start = old.file_len();
        old.record(&[(0, 0, 1 << 20)]).unwrap();
        let stale = fs::read(old.path()).unwrap()[start as usize..].to_vec();
        drop(old);
        // A new file for the same session, with the old record where its next one would go.
        let fresh = dir.create(header(ID)).unwrap();
        assert_eq!(fresh.file_len(), start);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(fresh.path())
            .unwrap();
        f.write_all(&stale).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.durable, vec![ExtentSet::new(); 2]);
        assert_eq!(loaded.valid_len(), start);
    }

    #[test]
    fn a_record_moved_to_another_offset_is_not_taken() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        let start = j.file_len();
        j.record(&[(0, 0, 4096)]).unwrap();
        let end = j.file_len();
        let bytes = fs::read(j.path()).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(&bytes[start as usize..end as usize]).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.valid_len(), end);
    }

    /// A journal's bytes and what it holds, built once.
    fn base() -> &'static (Vec<u8>, Vec<ExtentSet>, Option<u64>) {
        static BASE: OnceLock<(Vec<u8>, Vec<ExtentSet>, Option<u64>)> = OnceLock::new();
        BASE.get_or_init(|| {
            let (_tmp, dir) = setup();
            let mut j = dir.create(header(ID)).unwrap();
            j.record(&[(0, 0, 4096), (1, 0, 10)]).unwrap();
            j.record(&[(0, 1 << 20, 1 << 20)]).unwrap();
            j.record(&[(1, 5_000, 5_000)]).unwrap();
            j.finish(77).unwrap();
            (
                fs::read(j.path()).unwrap(),
                j.durable().to_vec(),
                j.finished(),
            )
        })
    }

    fn load_bytes(bytes: &[u8]) -> Option<Loaded> {
        let (_tmp, dir) = setup();
        fs::write(dir.journal_path(ID), bytes).unwrap();
        dir.load(ID).unwrap()
    }

    fn within_layout(loaded: &Loaded) -> bool {
        loaded.durable.len() == loaded.header.disks.len()
            && loaded
                .durable
                .iter()
                .zip(&loaded.header.disks)
                .all(|(s, d)| s.iter().all(|e| e.len > 0 && e.end() <= d.size))
    }

    proptest! {
        #[test]
        fn appended_bytes_never_panic_or_add_ranges(garbage in proptest::collection::vec(any::<u8>(), 0..600)) {
            let (bytes, durable, finished) = base();
            let mut bytes = bytes.clone();
            let valid = bytes.len() as u64;
            bytes.extend_from_slice(&garbage);
            let loaded = load_bytes(&bytes).expect("the valid part is kept");
            prop_assert_eq!(&loaded.durable, durable);
            prop_assert_eq!(loaded.finished, *finished);
            prop_assert_eq!(loaded.valid_len(), valid);
        }

        #[test]
        fn overwritten_bytes_never_panic_or_add_ranges(
            at in any::<prop::sample::Index>(),
            patch in proptest::collection::vec(any::<u8>(), 1..64),
            cut in any::<Option<prop::sample::Index>>(),
        ) {
            let (bytes, durable, finished) = base();
            let mut bytes = bytes.clone();
            let at = at.index(bytes.len());
            for (i, b) in patch.iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + i) {
                    *x = *b;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Some(loaded) = load_bytes(&bytes) {
                prop_assert!(within_layout(&loaded));
                for (got, had) in loaded.durable.iter().zip(durable) {
                    prop_assert!(got.subtract(had).is_empty(), "claims ranges never recorded");
                }
                prop_assert!(loaded.finished.is_none() || loaded.finished == *finished);
            }
        }

        #[test]
        fn arbitrary_files_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            with_preamble in any::<bool>(),
        ) {
            let mut file = if with_preamble { preamble(&[3; 16]).to_vec() } else { Vec::new() };
            file.extend_from_slice(&bytes);
            let _ = parse(&file[..]).unwrap();
        }

        #[test]
        fn checksummed_arbitrary_records_never_panic(
            records in proptest::collection::vec(
                (0u8..5, proptest::collection::vec(any::<u8>(), 0..80)), 0..8),
            random_header in any::<bool>(),
            ranges in proptest::collection::vec(
                (0u16..3, 0u64..20_000, 0u64..20_000), 0..6),
        ) {
            let instance = [9u8; 16];
            let mut file = preamble(&instance).to_vec();
            let mut w = RecordWriter::new(&mut file, record_key(&instance), PREAMBLE_LEN);
            if random_header {
                let (kind, payload) = records.first().cloned().unwrap_or((1, Vec::new()));
                w.record(kind, &payload).unwrap();
            } else {
                w.record(KIND_HEADER, &header(ID).encode()).unwrap();
            }
            w.record(KIND_DURABLE, &ranges_payload(&ranges)).unwrap();
            for (kind, payload) in &records {
                w.record(*kind, payload).unwrap();
            }
            if let Ok(parsed) = parse(&file[..]).unwrap() {
                prop_assert!(within_layout(&parsed.loaded));
                prop_assert!(parsed.loaded.valid_len() <= file.len() as u64);
            }
        }
    }
}
