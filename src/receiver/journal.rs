//! Per-session resume journals in the receiver's `--state-dir`.
//!
//! For each session the receiver keeps `<session id>.journal`: the session's disk layout and
//! the byte ranges that are durable (fdatasync'ed) on the target disks. After a SIGKILL or a
//! power cut, a sender reconnecting with the same session id (and the same client
//! certificate) is told what it need not send again.
//!
//! The journal never claims a range that is not durable:
//!
//! - [`Journal::record`] is called only after the target disks were synced, and returns only
//!   after the journal itself is fdatasync'ed;
//! - whole-file writes ([`JournalDir::create`], compaction) go to a temporary file that is
//!   fsync'ed, renamed over the journal, and then the directory is fsync'ed, so a crash leaves
//!   either the old or the new file, each of them valid;
//! - on load, every record is checked (checksum, bounds, kinds) and the first one that fails
//!   ends the valid part: a torn or corrupt tail is dropped, and a journal whose preamble or
//!   header record fails is treated as absent (with a warning);
//! - every record's checksum is keyed by a random per-file instance id and covers the
//!   record's file offset, so a stale record (from an older file of the same session, or from
//!   another place in this one) that a crash leaves in a file's tail is never taken as valid.
//!
//! A journal that grows past a threshold (4 MiB by default, and at least twice its compacted
//! size) is compacted: rewritten as the header plus the merged extents, the same way a new
//! journal is written, so a multi-terabyte session's journal stays small.
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
//! Temporary files are named `.<session id>.journal.<16 hex digits>.tmp`; session ids never
//! start with a dot, so they cannot collide with a journal.

// Wired into the receiver separately; until then nothing outside the tests calls it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use blockrep_blockmap::ExtentSet;
use blockrep_proto::codec::is_identifier;
use blockrep_proto::consts::{MAX_DISKS, MAX_DISK_ID_LEN, MAX_SESSION_ID_LEN};
use tracing::{debug, warn};

use crate::Error;

/// The first 8 bytes of every journal.
const MAGIC: [u8; 8] = *b"BRJOURNL";
/// The format version this build writes and reads.
const FORMAT_VERSION: u32 = 1;
/// Magic, version, flags, instance.
const PREAMBLE_LEN: u64 = 32;
/// blake3 `derive_key` context for the record checksum key.
const KEY_CONTEXT: &str = "blockrep 2025 session journal record checksum v1";
/// Bytes of the truncated blake3 checksum at the end of each record.
const CHECK_LEN: usize = 16;
/// `len` (u32) and `kind` (u8).
const RECORD_HEAD: usize = 5;
/// Bytes of a record besides its payload.
const RECORD_OVERHEAD: u64 = (RECORD_HEAD + CHECK_LEN) as u64;
/// Longest record payload.
const MAX_RECORD: u32 = 1 << 20;
/// Bytes of one range in a durable-ranges payload: disk u16, offset u64, length u64.
const RANGE_LEN: usize = 18;
/// Most ranges in one durable-ranges record.
const MAX_RANGES_PER_RECORD: usize = (MAX_RECORD as usize - 4) / RANGE_LEN;
/// Default journal size after which it is compacted.
pub(crate) const COMPACT_THRESHOLD: u64 = 4 << 20;
/// Age after which a temporary file is taken to be left over from an interrupted write.
const STALE_TEMP_SECS: u64 = 15 * 60;

const KIND_HEADER: u8 = 1;
const KIND_DURABLE: u8 = 2;
const KIND_FINISHED: u8 = 3;

const SUFFIX: &str = ".journal";
const TEMP_SUFFIX: &str = ".tmp";

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
    instance: [u8; 16],
    /// Bytes of the file that are valid; anything after is a torn or corrupt tail.
    valid_len: u64,
}

impl Loaded {
    #[cfg(test)]
    /// Bytes of the file that passed every check.
    pub fn valid_len(&self) -> u64 {
        self.valid_len
    }
}

/// The directory holding the journals (`--state-dir`).
#[derive(Debug, Clone)]
pub(crate) struct JournalDir {
    dir: PathBuf,
    compact_threshold: u64,
}

/// An open journal, appended to as ranges become durable.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    key: [u8; 32],
    header: Header,
    durable: Vec<ExtentSet>,
    finished: Option<u64>,
    /// The file's length: where the next record goes.
    len: u64,
    /// Compact when `len` exceeds this.
    limit: u64,
    threshold: u64,
    /// Set after a failed write or sync: the file's state is unknown, so nothing more is
    /// appended.
    failed: Option<String>,
}

impl JournalDir {
    /// Opens the state directory, creating it (mode 0700) if missing, and checks that it is a
    /// directory the receiver can write.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Config(format!(
                    "--state-dir {} is not a directory; give a directory the receiver may write",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
                        Error::Config(format!(
                            "cannot create --state-dir {}: {e}; create it, or point --state-dir \
                             elsewhere",
                            dir.display()
                        ))
                    })?;
            }
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot use --state-dir {}: {e}; point --state-dir at a directory the \
                     receiver may write",
                    dir.display()
                )))
            }
        }
        tempfile::Builder::new()
            .prefix(".blockrep-probe-")
            .tempfile_in(dir)
            .map_err(|e| {
                Error::Config(format!(
                    "--state-dir {} is not writable: {e}; give the receiver write access to it, \
                     or point --state-dir elsewhere",
                    dir.display()
                ))
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            compact_threshold: COMPACT_THRESHOLD,
        })
    }

    #[cfg(test)]
    /// Sets the size after which journals opened from here are compacted (tests use a small
    /// one).
    pub fn with_compact_threshold(mut self, bytes: u64) -> Self {
        self.compact_threshold = bytes;
        self
    }

    #[cfg(test)]
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The journal file of a session.
    pub fn journal_path(&self, session_id: &str) -> PathBuf {
        self.dir.join(format!("{session_id}{SUFFIX}"))
    }

    /// Reads a session's journal: `None` when there is none, or it is unusable (a warning
    /// says why). A torn or corrupt tail is ignored, with a warning. Errors are I/O failures.
    pub fn load(&self, session_id: &str) -> Result<Option<Loaded>, Error> {
        if !is_identifier(session_id, MAX_SESSION_ID_LEN) {
            return Ok(None);
        }
        let path = self.journal_path(session_id);
        let (parsed, file_len) = match read_journal(&path) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::Config(io_msg("read", &path, &e))),
        };
        let parsed = match parsed {
            Ok(p) if p.loaded.header.session_id == session_id => p,
            Ok(p) => {
                warn!(
                    "ignoring the session journal {}: it is for session {:?}; the session \
                     starts from scratch",
                    path.display(),
                    p.loaded.header.session_id
                );
                return Ok(None);
            }
            Err(reason) => {
                warn!(
                    "ignoring the session journal {}: {reason}; the session starts from scratch",
                    path.display()
                );
                return Ok(None);
            }
        };
        if let Some(reason) = &parsed.ended {
            warn!(
                "session journal {}: ignoring its last {} bytes ({reason}); what they recorded \
                 will be sent again",
                path.display(),
                file_len.saturating_sub(parsed.loaded.valid_len)
            );
        }
        Ok(Some(parsed.loaded))
    }

    /// Starts a fresh journal for a session, durably replacing any old one.
    pub fn create(&self, header: Header) -> Result<Journal, Error> {
        header
            .check()
            .map_err(|e| Error::Config(format!("cannot start a session journal: {e}")))?;
        let path = self.journal_path(&header.session_id);
        let durable = vec![ExtentSet::new(); header.disks.len()];
        let (file, key, len) = write_whole(&self.dir, &path, &header, &durable, None)
            .map_err(|e| Error::Config(io_msg("write", &path, &e)))?;
        sync_dir(&self.dir).map_err(|e| Error::Config(io_msg("create", &path, &e)))?;
        Ok(Journal {
            dir: self.dir.clone(),
            path,
            file,
            key,
            header,
            durable,
            finished: None,
            len,
            limit: compact_limit(self.compact_threshold, len),
            threshold: self.compact_threshold,
            failed: None,
        })
    }

    /// Reopens a loaded journal for appending after its last valid record, first truncating
    /// a torn or corrupt tail. Fails if the file was replaced since it was loaded.
    pub fn resume(&self, loaded: &Loaded) -> Result<Journal, Error> {
        let path = self.journal_path(&loaded.header.session_id);
        let reopen = |e: io::Error| Error::Config(io_msg("reopen", &path, &e));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(reopen)?;
        let mut preamble = [0u8; PREAMBLE_LEN as usize];
        let same =
            file.read_exact_at(&mut preamble, 0).is_ok() && preamble[16..] == loaded.instance;
        let len = file.metadata().map_err(reopen)?.len();
        if !same || len < loaded.valid_len {
            return Err(Error::Config(format!(
                "the session journal {} changed since it was loaded; load it again",
                path.display()
            )));
        }
        if len > loaded.valid_len {
            file.set_len(loaded.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::Config(io_msg("truncate the torn tail of", &path, &e)))?;
        }
        let key = record_key(&loaded.instance);
        let compacted = compacted_size(&loaded.header, &loaded.durable, loaded.finished);
        Ok(Journal {
            dir: self.dir.clone(),
            path,
            file,
            key,
            header: loaded.header.clone(),
            durable: loaded.durable.clone(),
            finished: loaded.finished,
            len: loaded.valid_len,
            limit: compact_limit(self.compact_threshold, compacted),
            threshold: self.compact_threshold,
            failed: None,
        })
    }

    #[cfg(test)]
    /// Deletes a session's journal, if it has one.
    pub fn remove(&self, session_id: &str) -> Result<(), Error> {
        if !is_identifier(session_id, MAX_SESSION_ID_LEN) {
            return Ok(());
        }
        let path = self.journal_path(session_id);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir).map_err(|e| Error::Config(io_msg("remove", &path, &e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Config(io_msg("remove", &path, &e))),
        }
    }

    /// Deletes the journals recorded finished more than `retention` before `now` (unix
    /// seconds) and returns how many; also deletes temporary files left by interrupted writes
    /// (older than 15 minutes; not counted). Unfinished journals, files that are not usable
    /// journals, and files not named like ours are left alone.
    pub fn clean(&self, retention: Duration, now: u64) -> Result<usize, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| {
            Error::Config(format!(
                "cannot list --state-dir {}: {e}; give the receiver access to it, or point \
                 --state-dir elsewhere",
                self.dir.display()
            ))
        })?;
        let (mut removed, mut touched) = (0, false);
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    warn!("listing --state-dir {}: {e}", self.dir.display());
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if let Some(id) = name.strip_suffix(SUFFIX) {
                if !is_identifier(id, MAX_SESSION_ID_LEN) {
                    continue;
                }
                let finished = match read_journal(&path) {
                    Ok(Some((Ok(p), _))) if p.loaded.header.session_id == id => p.loaded.finished,
                    Ok(_) => None,
                    Err(e) => {
                        debug!("clean: cannot read {}: {e}", path.display());
                        None
                    }
                };
                let Some(finished) = finished else { continue };
                if now.saturating_sub(finished) <= retention.as_secs() {
                    continue;
                }
                match fs::remove_file(&path) {
                    Ok(()) => {
                        removed += 1;
                        touched = true;
                    }
                    Err(e) => warn!(
                        "cannot remove the old session journal {}: {e}",
                        path.display()
                    ),
                }
            } else if is_temp_name(name) {
                let Ok(meta) = entry.metadata() else { continue };
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                if !meta.is_file() || now.saturating_sub(modified) <= STALE_TEMP_SECS {
                    continue;
                }
                match fs::remove_file(&path) {
                    Ok(()) => touched = true,
                    Err(e) => warn!(
                        "cannot remove the stale temporary file {}: {e}",
                        path.display()
                    ),
                }
            }
        }
        if touched {
            if let Err(e) = sync_dir(&self.dir) {
                warn!("cannot sync --state-dir {}: {e}", self.dir.display());
            }
        }
        Ok(removed)
    }
}

impl Journal {
    /// Appends that these ranges (disk index, offset, length) are durable on the target
    /// disks, then fdatasyncs the journal. Call it only after the disks were synced. Empty
    /// ranges are skipped; a range outside its disk (or a bad disk index) is refused and
    /// nothing is written. Compacts the journal when it has grown past its threshold.
    pub fn record(&mut self, ranges: &[(u16, u64, u64)]) -> Result<(), Error> {
        self.usable()?;
        for &(disk, offset, len) in ranges {
            check_range(&self.header.disks, disk, offset, len).map_err(|e| {
                Error::Config(format!(
                    "internal error: refusing to record in the session journal {}: {e}",
                    self.path.display()
                ))
            })?;
        }
        let ranges: Vec<(u16, u64, u64)> = ranges.iter().copied().filter(|r| r.2 > 0).collect();
        if ranges.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(ranges.len() * RANGE_LEN + 64);
        let mut w = RecordWriter::new(&mut buf, self.key, self.len);
        w.ranges(ranges.iter().copied())
            .expect("writing to a Vec cannot fail");
        self.append(&buf)?;
        for &(disk, offset, len) in &ranges {
            self.durable[usize::from(disk)].insert(offset, len);
        }
        self.finished = None;
        if self.len > self.limit {
            if let Err(e) = self.compact() {
                warn!("{e}; the journal keeps growing until the next try");
                self.limit = self.len.saturating_add(self.threshold);
            }
        }
        Ok(())
    }

    /// Appends the finished mark with the time (unix seconds), then fdatasyncs the journal.
    pub fn finish(&mut self, now: u64) -> Result<(), Error> {
        self.usable()?;
        let mut buf = Vec::with_capacity(64);
        RecordWriter::new(&mut buf, self.key, self.len)
            .record(KIND_FINISHED, &now.to_le_bytes())
            .expect("writing to a Vec cannot fail");
        self.append(&buf)?;
        self.finished = Some(now);
        Ok(())
    }

    /// Rewrites the journal as its header plus the merged ranges (and the finished mark):
    /// temporary file, fsync, rename, directory fsync. [`Journal::record`] calls it when the
    /// file has grown past its threshold.
    pub fn compact(&mut self) -> Result<(), Error> {
        self.usable()?;
        let (file, key, len) = write_whole(
            &self.dir,
            &self.path,
            &self.header,
            &self.durable,
            self.finished,
        )
        .map_err(|e| Error::Config(io_msg("compact", &self.path, &e)))?;
        // The rename happened: from here on the new file is the journal. Should the directory
        // sync fail, a crash may bring back the old file, which is valid too, only shorter.
        self.file = file;
        self.key = key;
        self.len = len;
        self.limit = compact_limit(self.threshold, len);
        sync_dir(&self.dir).map_err(|e| Error::Config(io_msg("compact", &self.path, &e)))
    }

    #[cfg(test)]
    /// The durable ranges recorded so far, merged; one set per disk.
    pub fn durable(&self) -> &[ExtentSet] {
        &self.durable
    }

    #[cfg(test)]
    /// When the session was recorded finished, unless it wrote again since.
    pub fn finished(&self) -> Option<u64> {
        self.finished
    }

    #[cfg(test)]
    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    /// The journal file's length.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    fn usable(&self) -> Result<(), Error> {
        match &self.failed {
            None => Ok(()),
            Some(msg) => Err(Error::Config(format!(
                "the session journal stopped recording after an earlier failure: {msg}"
            ))),
        }
    }

    /// Writes `buf` at the end of the file and fdatasyncs. After a failure the file's state
    /// is unknown (a failed fsync may have dropped dirty pages), so the journal stops.
    fn append(&mut self, buf: &[u8]) -> Result<(), Error> {
        match self
            .file
            .write_all_at(buf, self.len)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let msg = io_msg("write", &self.path, &e);
                // Best effort: drop the partial record so the file ends on a record boundary.
                let _ = self.file.set_len(self.len);
                self.failed = Some(msg.clone());
                Err(Error::Config(msg))
            }
        }
    }
}

impl Header {
    /// Checks what the format requires of a header.
    fn check(&self) -> Result<(), String> {
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
    fn encode(&self) -> Vec<u8> {
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

    fn decode(payload: &[u8]) -> Result<Header, String> {
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
fn check_range(disks: &[DiskLayout], disk: u16, offset: u64, len: u64) -> Result<(), String> {
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

fn record_key(instance: &[u8; 16]) -> [u8; 32] {
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

fn preamble(instance: &[u8; 16]) -> [u8; PREAMBLE_LEN as usize] {
    let mut p = [0u8; PREAMBLE_LEN as usize];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p[16..].copy_from_slice(instance);
    p
}

/// Writes records, keeping track of the file offset each one lands at.
struct RecordWriter<W> {
    w: W,
    key: [u8; 32],
    pos: u64,
}

impl<W: Write> RecordWriter<W> {
    fn new(w: W, key: [u8; 32], pos: u64) -> Self {
        Self { w, key, pos }
    }

    fn record(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
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
    fn ranges(&mut self, ranges: impl IntoIterator<Item = (u16, u64, u64)>) -> io::Result<()> {
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
fn all_ranges(durable: &[ExtentSet]) -> impl Iterator<Item = (u16, u64, u64)> + '_ {
    durable
        .iter()
        .enumerate()
        .flat_map(|(i, set)| set.iter().map(move |e| (i as u16, e.offset, e.len)))
}

/// The size of a journal written whole with this content.
fn compacted_size(header: &Header, durable: &[ExtentSet], finished: Option<u64>) -> u64 {
    let ranges: u64 = durable.iter().map(|s| s.len() as u64).sum();
    let records = ranges.div_ceil(MAX_RANGES_PER_RECORD as u64);
    PREAMBLE_LEN
        + RECORD_OVERHEAD
        + header.encode().len() as u64
        + records * (RECORD_OVERHEAD + 4)
        + ranges * RANGE_LEN as u64
        + finished.map_or(0, |_| RECORD_OVERHEAD + 8)
}

/// The length past which a journal whose compacted form is `compacted` bytes is compacted.
fn compact_limit(threshold: u64, compacted: u64) -> u64 {
    threshold.max(compacted.saturating_mul(2))
}

/// Writes a whole journal to a temporary file, fsyncs it and renames it over `path`. The
/// caller syncs the directory. Returns the open file, its record key and its length.
fn write_whole(
    dir: &Path,
    path: &Path,
    header: &Header,
    durable: &[ExtentSet],
    finished: Option<u64>,
) -> io::Result<(File, [u8; 32], u64)> {
    let instance: [u8; 16] = rand::random();
    let key = record_key(&instance);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&instance[..8]);
    let tmp = dir.join(format!(
        ".{}{SUFFIX}.{:016x}{TEMP_SUFFIX}",
        header.session_id,
        u64::from_le_bytes(tag)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = (|| -> io::Result<u64> {
        let mut w = RecordWriter::new(BufWriter::new(&file), key, PREAMBLE_LEN);
        w.w.write_all(&preamble(&instance))?;
        w.record(KIND_HEADER, &header.encode())?;
        w.ranges(all_ranges(durable))?;
        if let Some(t) = finished {
            w.record(KIND_FINISHED, &t.to_le_bytes())?;
        }
        let len = w.pos;
        w.w.flush()?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(len)
    })();
    match written {
        Ok(len) => Ok((file, key, len)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// True for `.<session id>.journal.<16 hex digits>.tmp`.
fn is_temp_name(name: &str) -> bool {
    let Some(inner) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
    else {
        return false;
    };
    let Some((stem, tag)) = inner.rsplit_once('.') else {
        return false;
    };
    tag.len() == 16
        && tag.bytes().all(|b| b.is_ascii_hexdigit())
        && stem
            .strip_suffix(SUFFIX)
            .is_some_and(|id| is_identifier(id, MAX_SESSION_ID_LEN))
}

fn io_msg(what: &str, path: &Path, e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => "free space in --state-dir, or point it elsewhere",
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            "give the receiver write access to --state-dir, or point it elsewhere"
        }
        _ => "check the filesystem holding --state-dir, or point it elsewhere",
    };
    format!(
        "cannot {what} the session journal {}: {e}; {hint}",
        path.display()
    )
}

/// What parsing a journal found.
struct Parsed {
    loaded: Loaded,
    /// Why the valid part ended before the end of the file, if it did.
    ended: Option<String>,
}

/// Opens and parses a journal file: `None` when it does not exist; `Some((Err(reason), _))`
/// when it is unusable; with the file's length.
fn read_journal(path: &Path) -> io::Result<Option<(Result<Parsed, String>, u64)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Some((Err("it is not a regular file".into()), 0)));
    }
    Ok(Some((parse(BufReader::new(file))?, meta.len())))
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
fn parse(mut r: impl Read) -> io::Result<Result<Parsed, String>> {
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
    use blockrep_blockmap::Extent;
    use proptest::prelude::*;
    use std::sync::OnceLock;
    use std::time::SystemTime;

    const ID: &str = "task-0042";

    fn header(id: &str) -> Header {
        Header {
            session_id: id.into(),
            client: [7; 32],
            disks: vec![
                DiskLayout {
                    id: "root".into(),
                    size: 1 << 30,
                    block_size: 1 << 20,
                },
                DiskLayout {
                    id: "data".into(),
                    size: 10_000,
                    block_size: 4096,
                },
            ],
            created: 1_700_000_000,
        }
    }

    fn set(v: &[(u64, u64)]) -> ExtentSet {
        v.iter().map(|&(o, l)| Extent::new(o, l)).collect()
    }

    fn sets(ranges: &[(u16, u64, u64)]) -> Vec<ExtentSet> {
        let mut out = vec![ExtentSet::new(); 2];
        for &(d, o, l) in ranges {
            out[usize::from(d)].insert(o, l);
        }
        out
    }

    fn setup() -> (tempfile::TempDir, JournalDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = JournalDir::open(&tmp.path().join("state")).unwrap();
        (tmp, dir)
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    /// Appends a record with a valid checksum, whatever its payload.
    fn append_raw(path: &Path, kind: u8, payload: &[u8]) {
        let bytes = fs::read(path).unwrap();
        let mut instance = [0u8; 16];
        instance.copy_from_slice(&bytes[16..32]);
        let mut buf = Vec::new();
        RecordWriter::new(&mut buf, record_key(&instance), bytes.len() as u64)
            .record(kind, payload)
            .unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(&buf)
            .unwrap();
    }

    fn ranges_payload(ranges: &[(u16, u64, u64)]) -> Vec<u8> {
        let mut p = (ranges.len() as u32).to_le_bytes().to_vec();
        for &(d, o, l) in ranges {
            p.extend_from_slice(&d.to_le_bytes());
            p.extend_from_slice(&o.to_le_bytes());
            p.extend_from_slice(&l.to_le_bytes());
        }
        p
    }

    fn temp_files(dir: &JournalDir) -> Vec<String> {
        fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(TEMP_SUFFIX))
            .collect()
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn round_trip() {
        let (_tmp, dir) = setup();
        assert!(dir.load(ID).unwrap().is_none());
        let mut j = dir.create(header(ID)).unwrap();
        let batches: [&[(u16, u64, u64)]; 3] = [
            &[(0, 0, 4096), (1, 0, 100)],
            &[(0, 1 << 20, 1 << 20), (0, 4096, 4096), (1, 9_000, 1_000)],
            &[(0, 8192, (1 << 20) - 8192), (1, 50, 100)],
        ];
        for b in batches {
            j.record(b).unwrap();
        }
        j.finish(1_700_000_123).unwrap();
        let want = vec![set(&[(0, 2 << 20)]), set(&[(0, 150), (9_000, 1_000)])];
        assert_eq!(j.durable(), &want[..]);
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.header, header(ID));
        assert_eq!(loaded.durable, want);
        assert_eq!(loaded.finished, Some(1_700_000_123));
        assert_eq!(loaded.valid_len(), file_len(j.path()));
        assert_eq!(j.file_len(), file_len(j.path()));
        assert!(temp_files(&dir).is_empty());
        let mode = fs::metadata(j.path()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_fresh_journal_loads_empty() {
        let (_tmp, dir) = setup();
        dir.create(header(ID)).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.durable, vec![ExtentSet::new(); 2]);
        assert_eq!(loaded.finished, None);
    }

    #[test]
    fn a_batch_larger_than_one_record_round_trips() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        let n = MAX_RANGES_PER_RECORD as u64 + 1_000;
        let ranges: Vec<(u16, u64, u64)> = (0..n).map(|i| (0, i * 8192, 4096)).collect();
        j.record(&ranges).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.durable[0].len() as u64, n);
        assert_eq!(loaded.durable, j.durable());
        j.compact().unwrap();
        assert_eq!(dir.load(ID).unwrap().unwrap().durable, j.durable());
    }

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

    #[test]
    fn resume_truncates_a_torn_tail_and_appends() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 4096)]).unwrap();
        let valid = j.file_len();
        j.record(&[(1, 0, 5_000)]).unwrap();
        let path = j.path().to_path_buf();
        drop(j);
        let torn = valid + 7;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(torn)
            .unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.valid_len(), valid);
        assert_eq!(loaded.durable, sets(&[(0, 0, 4096)]));
        let mut j = dir.resume(&loaded).unwrap();
        assert_eq!(file_len(&path), valid);
        assert_eq!(j.durable(), &loaded.durable[..]);
        j.record(&[(0, 4096, 4096), (1, 10, 10)]).unwrap();
        j.finish(99).unwrap();
        let again = dir.load(ID).unwrap().unwrap();
        assert_eq!(again.durable, sets(&[(0, 0, 8192), (1, 10, 10)]));
        assert_eq!(again.finished, Some(99));
        assert_eq!(again.valid_len(), file_len(&path));
        assert_eq!(again.header, header(ID));
    }

    #[test]
    fn resume_refuses_a_replaced_file() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 4096)]).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        dir.create(header(ID)).unwrap();
        assert!(matches!(dir.resume(&loaded), Err(Error::Config(_))));
        dir.remove(ID).unwrap();
        assert!(matches!(dir.resume(&loaded), Err(Error::Config(_))));
    }

    #[test]
    fn writing_after_finish_clears_the_mark() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 4096)]).unwrap();
        j.finish(10).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.finished, Some(10));
        let mut j = dir.resume(&loaded).unwrap();
        assert_eq!(j.finished(), Some(10));
        j.record(&[(0, 4096, 4096)]).unwrap();
        assert_eq!(j.finished(), None);
        assert_eq!(dir.load(ID).unwrap().unwrap().finished, None);
        j.finish(20).unwrap();
        j.compact().unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.finished, Some(20));
        assert_eq!(loaded.durable, sets(&[(0, 0, 8192)]));
    }

    #[test]
    fn compaction_keeps_the_ranges_and_shrinks_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let threshold = 2048;
        let dir = JournalDir::open(tmp.path())
            .unwrap()
            .with_compact_threshold(threshold);
        let mut j = dir.create(header(ID)).unwrap();
        let first_instance = fs::read(j.path()).unwrap()[16..32].to_vec();
        let mut appended = j.file_len();
        let mut want = vec![ExtentSet::new(); 2];
        for i in 0..300u64 {
            // Overlapping and adjacent ranges that merge into a few extents.
            let batch = [(0, i * 4096, 8192), (1, (i * 7) % 9_000, 500)];
            j.record(&batch).unwrap();
            appended += RECORD_OVERHEAD + 4 + 2 * RANGE_LEN as u64;
            for (d, o, l) in batch {
                want[usize::from(d)].insert(o, l);
            }
            assert!(j.file_len() <= threshold, "never far past the threshold");
        }
        assert_eq!(j.durable(), &want[..]);
        let len = file_len(j.path());
        assert!(len < appended / 4, "{len} bytes after appending {appended}");
        assert_ne!(fs::read(j.path()).unwrap()[16..32], first_instance[..]);
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.durable, want);
        assert_eq!(loaded.valid_len(), len);
        assert!(temp_files(&dir).is_empty());
        // Appending after compaction, and a torn tail after it, still load.
        j.record(&[(0, 900 << 20, 4096)]).unwrap();
        want[0].insert(900 << 20, 4096);
        j.finish(5).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.durable, want);
        assert_eq!(loaded.finished, Some(5));
        // An explicit compaction of the same content gives the same file length.
        let before = j.file_len();
        j.compact().unwrap();
        assert_eq!(j.file_len(), compacted_size(&header(ID), &want, Some(5)));
        assert!(j.file_len() <= before);
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.durable, want);
        assert_eq!(loaded.finished, Some(5));
    }

    #[test]
    fn record_refuses_ranges_outside_the_layout_without_writing() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 10)]).unwrap();
        let len = j.file_len();
        for bad in [
            [(0u16, 0u64, 10u64), (2, 0, 10)],
            [(0, 0, 10), (1, 9_000, 1_001)],
            [(0, u64::MAX, 2), (0, 0, 10)],
        ] {
            assert!(matches!(j.record(&bad), Err(Error::Config(_))));
            assert_eq!(file_len(j.path()), len);
        }
        // Empty ranges are skipped; all empty writes nothing.
        j.record(&[(1, 5, 0)]).unwrap();
        j.record(&[]).unwrap();
        assert_eq!(file_len(j.path()), len);
        j.record(&[(1, 5, 0), (1, 10, 10)]).unwrap();
        assert_eq!(
            dir.load(ID).unwrap().unwrap().durable,
            sets(&[(0, 0, 10), (1, 10, 10)])
        );
    }

    #[test]
    fn create_checks_the_header_and_replaces_an_old_journal() {
        let (_tmp, dir) = setup();
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(
                matches!(dir.create(header(bad)), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
        let mut dup = header(ID);
        dup.disks[1].id = "root".into();
        assert!(dir.create(dup).is_err());
        let mut many = header(ID);
        many.disks = (0..=MAX_DISKS)
            .map(|i| DiskLayout {
                id: format!("d{i}"),
                size: 1,
                block_size: 1,
            })
            .collect();
        assert!(dir.create(many).is_err());
        assert!(dir.create(header(&"x".repeat(128))).is_ok());

        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 4096)]).unwrap();
        j.finish(1).unwrap();
        let mut h = header(ID);
        h.created += 1;
        dir.create(h.clone()).unwrap();
        let loaded = dir.load(ID).unwrap().unwrap();
        assert_eq!(loaded.header, h);
        assert_eq!(loaded.durable, vec![ExtentSet::new(); 2]);
        assert_eq!(loaded.finished, None);
        assert!(temp_files(&dir).is_empty());
    }

    #[test]
    fn remove_deletes_the_journal() {
        let (_tmp, dir) = setup();
        dir.create(header(ID)).unwrap();
        dir.remove(ID).unwrap();
        assert!(dir.load(ID).unwrap().is_none());
        dir.remove(ID).unwrap();
        dir.remove("../etc").unwrap();
        assert!(dir.load("../etc").unwrap().is_none());
    }

    #[test]
    fn open_creates_a_private_directory_and_refuses_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join("a/b/state");
        let dir = JournalDir::open(&nested).unwrap();
        let mode = fs::metadata(&nested).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        assert_eq!(dir.path(), nested);
        assert_eq!(fs::read_dir(&nested).unwrap().count(), 0, "no probe left");
        JournalDir::open(&nested).unwrap();

        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let Err(Error::Config(msg)) = JournalDir::open(&file) else {
            panic!("a file is not a state directory");
        };
        assert!(msg.contains("not a directory"), "{msg}");
        assert!(JournalDir::open(&file.join("below")).is_err());

        // Permissions do not stop root.
        if unsafe { libc::geteuid() } != 0 {
            let ro = tmp.path().join("ro");
            fs::create_dir(&ro).unwrap();
            fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
            let Err(Error::Config(msg)) = JournalDir::open(&ro) else {
                panic!("a read-only directory is not usable");
            };
            assert!(msg.contains("not writable"), "{msg}");
        }
    }

    #[test]
    fn clean_removes_only_old_finished_journals_and_stale_temps() {
        let (_tmp, dir) = setup();
        let now = unix_now();
        let retention = Duration::from_secs(500);
        let finished_at = |id: &str, t: Option<u64>| {
            let mut j = dir.create(header(id)).unwrap();
            j.record(&[(0, 0, 4096)]).unwrap();
            if let Some(t) = t {
                j.finish(t).unwrap();
            }
        };
        finished_at("old", Some(now - 1_000));
        finished_at("recent", Some(now - 100));
        finished_at("edge", Some(now - 500));
        finished_at("future", Some(now + 1_000));
        finished_at("running", None);
        fs::write(dir.path().join("garbage.journal"), b"not a journal").unwrap();
        fs::write(dir.path().join("notes.txt"), b"keep").unwrap();
        // An old finished journal under another session's name is not ours to judge.
        fs::copy(dir.journal_path("old"), dir.journal_path("renamed")).unwrap();
        fs::create_dir(dir.path().join("dir.journal")).unwrap();
        let touch = |name: &str, age: u64| {
            let f = File::create(dir.path().join(name)).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
        };
        touch(".old.journal.0123456789abcdef.tmp", 2 * 3600);
        touch(".new.journal.0123456789abcdef.tmp", 10);
        touch(".x.journal.nothex.tmp", 2 * 3600);
        touch("other.tmp", 2 * 3600);

        assert_eq!(dir.clean(retention, now).unwrap(), 1);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".new.journal.0123456789abcdef.tmp",
                ".x.journal.nothex.tmp",
                "dir.journal",
                "edge.journal",
                "future.journal",
                "garbage.journal",
                "notes.txt",
                "other.tmp",
                "recent.journal",
                "renamed.journal",
                "running.journal",
            ]
        );
        assert_eq!(dir.clean(retention, now).unwrap(), 0);
        assert_eq!(dir.clean(Duration::ZERO, now + 2_000).unwrap(), 3);
    }

    #[test]
    fn temp_names() {
        assert!(is_temp_name(".a.journal.0123456789abcdef.tmp"));
        assert!(is_temp_name(".a.b-c_d.journal.0123456789ABCDEF.tmp"));
        assert!(!is_temp_name("a.journal.0123456789abcdef.tmp"));
        assert!(!is_temp_name(".a.journal.0123456789abcde.tmp"));
        assert!(!is_temp_name(".a.journal.0123456789abcdef.tmp.journal"));
        assert!(!is_temp_name("..a.journal.0123456789abcdef.tmp"));
        assert!(!is_temp_name(".journal.0123456789abcdef.tmp"));
    }

    #[test]
    fn a_failed_journal_stops_recording() {
        let (_tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.failed = Some("disk on fire".into());
        let Err(Error::Config(msg)) = j.record(&[(0, 0, 1)]) else {
            panic!("a failed journal must refuse");
        };
        assert!(msg.contains("disk on fire"), "{msg}");
        assert!(j.finish(1).is_err());
        assert!(j.compact().is_err());
    }

    #[test]
    fn io_messages_say_what_to_do() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        let msg = io_msg("write", Path::new("/x/y.journal"), &e);
        assert!(
            msg.starts_with("cannot write the session journal /x/y.journal: "),
            "{msg}"
        );
        assert!(msg.contains("free space in --state-dir"), "{msg}");
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
