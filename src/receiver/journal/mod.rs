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
//! The directory stays bounded and private: it is created 0700 (a warning says how to fix
//! one that others may write to); no symlink in it is ever followed; journals of finished
//! sessions, and of unfinished ones not written for as long, expire after the retention; at
//! most [`dir::MAX_JOURNALS`] are kept, the oldest going first, never one of a session that is
//! running now.
//!
//! The module is split by idea: [`format`] is the record format (pure encode and decode),
//! [`dir`] the state directory's lifecycle (permissions, listing, temporary files, expiry),
//! [`session`] the open journal of one session (appending, compaction, resume).

mod dir;
mod format;
mod session;

pub(crate) use dir::JournalDir;
pub(crate) use format::{DiskLayout, Header, Loaded};
pub(crate) use session::Journal;

#[cfg(test)]
mod testutil {
    //! Helpers shared by the journal module's tests.

    use std::fs;
    use std::io::Write;
    use std::path::Path;
    use std::time::{SystemTime, UNIX_EPOCH};

    use blockrep_blockmap::{Extent, ExtentSet};

    use super::dir::TEMP_SUFFIX;
    use super::format::{record_key, RecordWriter};
    use super::{DiskLayout, Header, JournalDir};

    pub(crate) const ID: &str = "task-0042";

    pub(crate) fn header(id: &str) -> Header {
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

    pub(crate) fn set(v: &[(u64, u64)]) -> ExtentSet {
        v.iter().map(|&(o, l)| Extent::new(o, l)).collect()
    }

    pub(crate) fn sets(ranges: &[(u16, u64, u64)]) -> Vec<ExtentSet> {
        let mut out = vec![ExtentSet::new(); 2];
        for &(d, o, l) in ranges {
            out[usize::from(d)].insert(o, l);
        }
        out
    }

    pub(crate) fn setup() -> (tempfile::TempDir, JournalDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = JournalDir::open(&tmp.path().join("state")).unwrap();
        (tmp, dir)
    }

    pub(crate) fn file_len(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    /// Appends a record with a valid checksum, whatever its payload.
    pub(crate) fn append_raw(path: &Path, kind: u8, payload: &[u8]) {
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

    pub(crate) fn ranges_payload(ranges: &[(u16, u64, u64)]) -> Vec<u8> {
        let mut p = (ranges.len() as u32).to_le_bytes().to_vec();
        for &(d, o, l) in ranges {
            p.extend_from_slice(&d.to_le_bytes());
            p.extend_from_slice(&o.to_le_bytes());
            p.extend_from_slice(&l.to_le_bytes());
        }
        p
    }

    pub(crate) fn temp_files(dir: &JournalDir) -> Vec<String> {
        fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(TEMP_SUFFIX))
            .collect()
    }

    pub(crate) fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}
