//! The state directory (`--state-dir`) and its files: opening and checking the directory,
//! reading journals without following symlinks, writing whole journals through temporary
//! files, and cleaning up.
//!
//! Temporary files are named `.<session id>.journal.<16 hex digits>.tmp`; session ids never
//! start with a dot, so they cannot collide with a journal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use blockrep_blockmap::ExtentSet;
use blockrep_proto::codec::is_identifier;
use blockrep_proto::consts::MAX_SESSION_ID_LEN;
use tracing::{debug, warn};

use super::format::{
    all_ranges, parse, preamble, record_key, Header, Loaded, Parsed, RecordWriter, KIND_FINISHED,
    KIND_HEADER, PREAMBLE_LEN,
};
use super::session::COMPACT_THRESHOLD;
use crate::Error;

/// Age after which a temporary file is taken to be left over from an interrupted write.
const STALE_TEMP_SECS: u64 = 15 * 60;

const SUFFIX: &str = ".journal";
pub(super) const TEMP_SUFFIX: &str = ".tmp";

/// The directory holding the journals (`--state-dir`).
#[derive(Debug, Clone)]
pub(crate) struct JournalDir {
    pub(super) dir: PathBuf,
    pub(super) compact_threshold: u64,
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

/// Writes a whole journal to a temporary file, fsyncs it and renames it over `path`. The
/// caller syncs the directory. Returns the open file, its record key and its length.
pub(super) fn write_whole(
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

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
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

pub(super) fn io_msg(what: &str, path: &Path, e: &io::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::journal::testutil::*;
    use std::time::SystemTime;

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
    fn io_messages_say_what_to_do() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        let msg = io_msg("write", Path::new("/x/y.journal"), &e);
        assert!(
            msg.starts_with("cannot write the session journal /x/y.journal: "),
            "{msg}"
        );
        assert!(msg.contains("free space in --state-dir"), "{msg}");
    }
}
