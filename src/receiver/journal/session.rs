//! The session journal: an open journal that durable ranges are appended to, its compaction,
//! and resuming one that was loaded back.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::time::SystemTime;

use blockrep_blockmap::ExtentSet;
use tracing::{debug, warn};

use super::dir::{io_msg, open_regular, sync_dir, write_whole, JournalDir, OpenMark};
use super::format::{
    check_range, compacted_size, record_key, Header, Loaded, RecordWriter, KIND_FINISHED,
    PREAMBLE_LEN, RANGE_LEN,
};
use crate::Error;

/// Default journal size after which it is compacted.
pub(crate) const COMPACT_THRESHOLD: u64 = 4 << 20;

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
    /// While the journal is open, its session counts as running: never expired nor evicted.
    _open: OpenMark,
}

impl JournalDir {
    /// Starts a fresh journal for a session, durably replacing any old one (or a symlink in
    /// its place: never its target). When the directory already holds its most journals, the
    /// oldest of sessions not running now goes first (see [`JournalDir::sweep`]); if all of
    /// them are running, the new journal is refused.
    pub fn create(&self, header: Header) -> Result<Journal, Error> {
        header
            .check()
            .map_err(|e| Error::Config(format!("cannot start a session journal: {e}")))?;
        let open = self.mark_open(&header.session_id);
        self.make_room(&header.session_id)
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
            _open: open,
        })
    }

    /// Reopens a loaded journal for appending after its last valid record, first truncating
    /// a torn or corrupt tail, and marks it used now (its modification time: an unfinished
    /// journal expires that long after its last use). Fails if the file was replaced since it
    /// was loaded, or is not a regular file (a symlink is never followed).
    pub fn resume(&self, loaded: &Loaded) -> Result<Journal, Error> {
        let open = self.mark_open(&loaded.header.session_id);
        let path = self.journal_path(&loaded.header.session_id);
        let reopen = |e: io::Error| Error::Config(io_msg("reopen", &path, &e));
        let file = match open_regular(&path, true).map_err(reopen)? {
            Ok(file) => file,
            Err(reason) => {
                return Err(Error::Config(format!(
                    "cannot reopen the session journal {}: {reason}",
                    path.display()
                )))
            }
        };
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
        if let Err(e) = file.set_modified(SystemTime::now()) {
            debug!("cannot mark {} used: {e}", path.display());
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
            _open: open,
        })
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

/// The length past which a journal whose compacted form is `compacted` bytes is compacted.
fn compact_limit(threshold: u64, compacted: u64) -> u64 {
    threshold.max(compacted.saturating_mul(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::journal::format::DiskLayout;
    use crate::receiver::journal::format::{MAX_RANGES_PER_RECORD, RECORD_OVERHEAD};
    use crate::receiver::journal::testutil::*;
    use blockrep_proto::consts::MAX_DISKS;
    use std::fs;

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
}
