//! The state directory (`--state-dir`) and its files: opening and checking the directory,
//! reading journals without following symlinks, writing whole journals through temporary
//! files, and the cleanup that keeps the directory bounded (retention and a count bound).
//!
//! Nothing here follows a symlink planted in the directory: journals are opened with
//! `O_NOFOLLOW` after an `lstat` that refuses anything but a regular file (a FIFO would
//! block, a device would be opened), temporary files are created with `O_EXCL | O_NOFOLLOW`
//! and renamed over the journal (which replaces a symlink, never its target), and the cleanup
//! deletes only regular files. The state directory itself may be a symlink: that is the
//! operator's choice (its own path is given on the command line).
//!
//! Temporary files are named `.<session id>.journal.<16 hex digits>.tmp`; session ids never
//! start with a dot, so they cannot collide with a journal.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use blockrep_blockmap::ExtentSet;
use blockrep_proto::codec::is_identifier;
use blockrep_proto::consts::MAX_SESSION_ID_LEN;
use tracing::{debug, info, warn};

use super::format::{
    all_ranges, parse, preamble, record_key, Header, Loaded, Parsed, RecordWriter, KIND_FINISHED,
    KIND_HEADER, PREAMBLE_LEN,
};
use super::session::COMPACT_THRESHOLD;
use crate::Error;

/// Age after which a temporary file is taken to be left over from an interrupted write.
const STALE_TEMP_SECS: u64 = 15 * 60;
/// Most session journals a state directory keeps (see [`JournalDir::sweep`]): every session
/// id a sender ever used leaves one, and a directory of millions of files would make every
/// cleanup slow.
pub(crate) const MAX_JOURNALS: usize = 1024;

const SUFFIX: &str = ".journal";
pub(super) const TEMP_SUFFIX: &str = ".tmp";

/// Why a journal path is not used, when it is a symlink.
const SYMLINK: &str = "it is a symbolic link, which the receiver never follows (a journal is a \
                       regular file in --state-dir; remove the link)";

/// The directory holding the journals (`--state-dir`).
#[derive(Debug, Clone)]
pub(crate) struct JournalDir {
    pub(super) dir: PathBuf,
    pub(super) compact_threshold: u64,
    max_journals: usize,
    /// Sessions whose journal is open in this process (by any clone of this value), with how
    /// many times: their journals are never expired or evicted.
    open: Arc<Mutex<HashMap<String, usize>>>,
    #[cfg(test)]
    permission_warning: Option<String>,
}

/// Marks a session's journal open in its [`JournalDir`] while it lives.
#[derive(Debug)]
pub(super) struct OpenMark {
    open: Arc<Mutex<HashMap<String, usize>>>,
    id: String,
}

impl Drop for OpenMark {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.id);
            }
        }
    }
}

fn lock(open: &Mutex<HashMap<String, usize>>) -> MutexGuard<'_, HashMap<String, usize>> {
    open.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`JournalDir::sweep`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Journals of sessions recorded finished longer ago than the retention.
    pub finished: usize,
    /// Journals of unfinished sessions last written longer ago than the retention.
    pub unfinished: usize,
    /// Journals deleted to bring the directory back within [`MAX_JOURNALS`].
    pub evicted: usize,
}

/// A usable journal found in the directory.
#[derive(Debug)]
struct Entry {
    id: String,
    path: PathBuf,
    /// The file's device and inode when it was read: it is deleted only if still the same.
    ino: (u64, u64),
    /// When the session was recorded finished, if it was.
    finished: Option<u64>,
    /// The file's last modification, unix seconds: its last record, or its last resume.
    written: u64,
}

impl Entry {
    /// The order in which journals go when the directory is over its bound: finished ones
    /// first, the longest finished first; then unfinished ones, the longest unwritten first.
    fn eviction_order(&self) -> (bool, u64) {
        match self.finished {
            Some(t) => (false, t),
            None => (true, self.written),
        }
    }
}

impl JournalDir {
    /// Opens the state directory, creating it if missing (mode 0700; missing parents 0755,
    /// as `mkdir -p` would), and checks that it is a directory the receiver can write. An
    /// existing directory keeps its mode, with a warning if others may write to it.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(not_a_directory(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_private(dir).map_err(|e| {
                    Error::Config(format!(
                        "cannot create --state-dir {}: {e}; create it (mode 0700), or point \
                         --state-dir elsewhere",
                        dir.display()
                    ))
                })?;
            }
            Err(e) => return Err(cannot_use(dir, &e)),
        }
        let meta = fs::metadata(dir).map_err(|e| cannot_use(dir, &e))?;
        if !meta.is_dir() {
            return Err(not_a_directory(dir));
        }
        let warning = permission_problem(dir, meta.mode());
        if let Some(w) = &warning {
            warn!("{w}");
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
            max_journals: MAX_JOURNALS,
            open: Arc::default(),
            #[cfg(test)]
            permission_warning: warning,
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
    /// Sets the most journals kept (tests use a small number).
    pub fn with_max_journals(mut self, n: usize) -> Self {
        self.max_journals = n;
        self
    }

    #[cfg(test)]
    /// The warning [`JournalDir::open`] gave about the directory's permissions, if any.
    pub fn permission_warning(&self) -> Option<&str> {
        self.permission_warning.as_deref()
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

    /// Marks a session's journal as open (so never expired nor evicted) until the mark drops.
    pub(super) fn mark_open(&self, session_id: &str) -> OpenMark {
        *lock(&self.open).entry(session_id.to_owned()).or_insert(0) += 1;
        OpenMark {
            open: self.open.clone(),
            id: session_id.to_owned(),
        }
    }

    /// Reads a session's journal: `None` when there is none, or it is unusable (a warning
    /// says why; a symlink is never followed). A torn or corrupt tail is ignored, with a
    /// warning. Errors are I/O failures.
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

    /// [`JournalDir::sweep`], logging what it deleted besides finished journals; returns how
    /// many journals of finished sessions it deleted. The receiver runs it at start and
    /// hourly.
    pub fn clean(&self, retention: Duration, now: u64) -> Result<usize, Error> {
        let swept = self.sweep(retention, now)?;
        if swept.unfinished > 0 {
            info!(
                "removed {} journals of unfinished sessions not written for more than {} s",
                swept.unfinished,
                retention.as_secs()
            );
        }
        if swept.evicted > 0 {
            info!(
                "removed {} old session journals to keep --state-dir within {} journals",
                swept.evicted, self.max_journals
            );
        }
        Ok(swept.finished)
    }

    /// Deletes, with `now` in unix seconds:
    ///
    /// - the journals recorded finished more than `retention` before `now`;
    /// - the journals of unfinished sessions last written (or resumed) more than `retention`
    ///   before `now`: the sender gave up on them, or will start over;
    /// - then, while more than [`MAX_JOURNALS`] are left, the oldest: finished ones first
    ///   (the longest finished first), then unfinished ones (the longest unwritten first);
    /// - temporary files left by interrupted writes (older than 15 minutes; not counted).
    ///
    /// The journal of a session that is running now is never deleted. Files that are not
    /// usable journals of the session they are named after, symlinks, and files not named
    /// like ours are left alone.
    pub fn sweep(&self, retention: Duration, now: u64) -> Result<Swept, Error> {
        let (entries, temps) = self.survey(None, Some(now))?;
        let mut swept = Swept::default();
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            let last = e.finished.unwrap_or(e.written);
            if now.saturating_sub(last) > retention.as_secs() && self.remove_unless_open(&e) {
                match e.finished {
                    Some(_) => swept.finished += 1,
                    None => {
                        info!(
                            "removed the journal of session {:?}: unfinished, not written for \
                             more than {} s",
                            e.id,
                            retention.as_secs()
                        );
                        swept.unfinished += 1;
                    }
                }
            } else {
                kept.push(e);
            }
        }
        let over = kept.len().saturating_sub(self.max_journals);
        swept.evicted = self.evict(kept, over);
        let mut touched = swept != Swept::default();
        for path in temps {
            match fs::remove_file(&path) {
                Ok(()) => touched = true,
                Err(e) => warn!(
                    "cannot remove the stale temporary file {}: {e}",
                    path.display()
                ),
            }
        }
        if touched {
            if let Err(e) = sync_dir(&self.dir) {
                warn!("cannot sync --state-dir {}: {e}", self.dir.display());
            }
        }
        Ok(swept)
    }

    /// Before a new journal for `session_id` is written: if the directory holds
    /// [`MAX_JOURNALS`] journals of other sessions, deletes the oldest of those not running
    /// now (finished first) to make room; refuses when every one of them is running.
    pub(super) fn make_room(&self, session_id: &str) -> Result<(), Error> {
        let max = self.max_journals.max(1);
        // Counting names is cheap; only a full directory is read.
        if self
            .journal_names()?
            .filter(|(id, _)| id != session_id)
            .count()
            < max
        {
            return Ok(());
        }
        let (entries, _) = self.survey(Some(session_id), None)?;
        let need = (entries.len() + 1).saturating_sub(max);
        let running = entries.len();
        if self.evict(entries, need) < need {
            return Err(Error::Config(format!(
                "--state-dir {} holds {running} session journals (at most {max} are kept), and \
                 none can go: their sessions are running now",
                self.dir.display()
            )));
        }
        if let Err(e) = sync_dir(&self.dir) {
            warn!("cannot sync --state-dir {}: {e}", self.dir.display());
        }
        Ok(())
    }

    /// Deletes up to `need` of `entries` in eviction order, skipping running sessions;
    /// returns how many went.
    fn evict(&self, mut entries: Vec<Entry>, need: usize) -> usize {
        if need == 0 {
            return 0;
        }
        entries.sort_by_key(Entry::eviction_order);
        let mut removed = 0;
        for e in &entries {
            if removed == need {
                break;
            }
            if self.remove_unless_open(e) {
                info!(
                    "removed the journal of session {:?} ({}): --state-dir keeps at most {} \
                     journals",
                    e.id,
                    if e.finished.is_some() {
                        "finished"
                    } else {
                        "unfinished"
                    },
                    self.max_journals
                );
                removed += 1;
            }
        }
        removed
    }

    /// Deletes a journal unless its session is open now or the file was replaced since it
    /// was read; true if it was deleted.
    fn remove_unless_open(&self, e: &Entry) -> bool {
        // Held across the unlink so that a session cannot start between the check and it.
        let open = lock(&self.open);
        if open.contains_key(&e.id) {
            return false;
        }
        match fs::symlink_metadata(&e.path) {
            Ok(m) if m.is_file() && (m.dev(), m.ino()) == e.ino => {}
            _ => return false,
        }
        match fs::remove_file(&e.path) {
            Ok(()) => true,
            Err(err) => {
                warn!(
                    "cannot remove the old session journal {}: {err}",
                    e.path.display()
                );
                false
            }
        }
    }

    /// The regular files named `<session id>.journal`, without reading them; symlinks and
    /// other files are left out.
    fn journal_names(&self) -> Result<impl Iterator<Item = (String, PathBuf)>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| {
            Error::Config(format!(
                "cannot list --state-dir {}: {e}; give the receiver access to it, or point \
                 --state-dir elsewhere",
                self.dir.display()
            ))
        })?;
        Ok(entries.filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let id = name.strip_suffix(SUFFIX)?;
            if !is_identifier(id, MAX_SESSION_ID_LEN) || !entry.file_type().ok()?.is_file() {
                return None;
            }
            Some((id.to_owned(), entry.path()))
        }))
    }

    /// Reads the directory: the usable journals (except `skip`'s), and, when `now` is given,
    /// the temporary files older than 15 minutes. Symlinks named like journals are reported.
    fn survey(
        &self,
        skip: Option<&str>,
        now: Option<u64>,
    ) -> Result<(Vec<Entry>, Vec<PathBuf>), Error> {
        let listing = fs::read_dir(&self.dir).map_err(|e| {
            Error::Config(format!(
                "cannot list --state-dir {}: {e}; give the receiver access to it, or point \
                 --state-dir elsewhere",
                self.dir.display()
            ))
        })?;
        let (mut journals, mut temps) = (Vec::new(), Vec::new());
        for entry in listing {
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
                if !is_identifier(id, MAX_SESSION_ID_LEN) || Some(id) == skip {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                    warn!("ignoring {}: {SYMLINK}", path.display());
                    continue;
                }
                match read_entry(id, &path) {
                    Ok(Some(e)) => journals.push(e),
                    Ok(None) => {}
                    Err(e) => debug!("cannot read {}: {e}", path.display()),
                }
            } else if let Some(now) = now.filter(|_| is_temp_name(name)) {
                // DirEntry::metadata does not follow a symlink.
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() && now.saturating_sub(mtime(&meta)) > STALE_TEMP_SECS {
                    temps.push(path);
                }
            }
        }
        Ok((journals, temps))
    }
}

/// A journal file as [`JournalDir::survey`] sees it: `None` unless it is a usable journal of
/// the session it is named after.
fn read_entry(id: &str, path: &Path) -> io::Result<Option<Entry>> {
    let file = match open_regular(path, false)? {
        Ok(file) => file,
        Err(_) => return Ok(None),
    };
    let meta = file.metadata()?;
    let loaded = match parse(BufReader::new(file))? {
        Ok(p) if p.loaded.header.session_id == id => p.loaded,
        _ => return Ok(None),
    };
    Ok(Some(Entry {
        id: id.to_owned(),
        path: path.to_path_buf(),
        ino: (meta.dev(), meta.ino()),
        finished: loaded.finished,
        written: mtime(&meta),
    }))
}

fn mtime(meta: &Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn not_a_directory(dir: &Path) -> Error {
    Error::Config(format!(
        "--state-dir {} is not a directory; give a directory the receiver may write",
        dir.display()
    ))
}

fn cannot_use(dir: &Path, e: &io::Error) -> Error {
    Error::Config(format!(
        "cannot use --state-dir {}: {e}; point --state-dir at a directory the receiver may write",
        dir.display()
    ))
}

/// Creates the state directory with mode 0700 (less the umask); missing parents get 0755, as
/// `mkdir -p` gives them: only the last component holds the journals.
fn create_private(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        // Made by someone else meanwhile: checked like any existing directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

/// What is wrong with a state directory of this mode, if anything: others than its owner may
/// write to it, so they could plant, replace or delete journals.
pub(super) fn permission_problem(dir: &Path, mode: u32) -> Option<String> {
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return None,
        (true, false) => "its group",
        (false, true) => "everyone",
        (true, true) => "its group and everyone",
    };
    Some(format!(
        "--state-dir {dir} is writable by {who} (mode {mode:04o}): another user could plant or \
         replace session journals there; run `chmod 700 {dir}`",
        dir = dir.display(),
        mode = mode & 0o7777
    ))
}

/// Opens a journal file for reading (and writing), never through a symlink and never
/// anything but a regular file. `Ok(Err(reason))` when the path is not a regular file;
/// errors (a missing file among them) are I/O failures.
pub(super) fn open_regular(path: &Path, write: bool) -> io::Result<Result<File, String>> {
    fn not_regular(meta: &Metadata) -> Option<String> {
        if meta.file_type().is_symlink() {
            Some(SYMLINK.into())
        } else if !meta.is_file() {
            Some("it is not a regular file".into())
        } else {
            None
        }
    }
    // lstat first: a FIFO or a device is never opened (that could block, or act).
    if let Some(reason) = not_regular(&fs::symlink_metadata(path)?) {
        return Ok(Err(reason));
    }
    let file = match OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        // Swapped for a symlink since the lstat.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Err(SYMLINK.into())),
        Err(e) => return Err(e),
    };
    Ok(match not_regular(&file.metadata()?) {
        Some(reason) => Err(reason),
        None => Ok(file),
    })
}

/// Creates a temporary file, mode 0600: never an existing file, never through a symlink.
pub(super) fn open_temp(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// Writes a whole journal to a temporary file, fsyncs it and renames it over `path` (which
/// replaces a symlink there, not its target). The caller syncs the directory. Returns the
/// open file, its record key and its length.
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
    let file = open_temp(&tmp)?;
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
/// when it is unusable (a symlink or another file that is not a regular file among them);
/// with the file's length.
fn read_journal(path: &Path) -> io::Result<Option<(Result<Parsed, String>, u64)>> {
    let file = match open_regular(path, false) {
        Ok(Ok(f)) => f,
        Ok(Err(reason)) => return Ok(Some((Err(reason), 0))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    Ok(Some((parse(BufReader::new(file))?, len)))
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
        if !nix::unistd::geteuid().is_root() {
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

    fn mode_of(path: &Path) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(&fs::symlink_metadata(path).unwrap().permissions())
            & 0o7777
    }

    /// The process's umask, read without changing it (`umask(2)` would race other tests).
    fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
    }

    /// Sets a file's modification time to `age` seconds ago (without following a symlink).
    fn age(path: &Path, age: u64) {
        File::open(path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(age))
            .unwrap();
    }

    fn names(dir: &JournalDir) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn open_makes_only_the_state_directory_itself_private() {
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join("var/lib/state");
        JournalDir::open(&nested).unwrap();
        assert_eq!(mode_of(&nested), 0o700);
        // Missing parents are made like `mkdir -p` would, never writable by others.
        for parent in [tmp.path().join("var"), tmp.path().join("var/lib")] {
            assert_eq!(mode_of(&parent), 0o755 & !umask(), "{}", parent.display());
        }
        // An existing directory is used as it is (the operator chose its mode), with a
        // warning when others may write to it.
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o770)).unwrap();
        let dir = JournalDir::open(&shared).unwrap();
        assert_eq!(mode_of(&shared), 0o770);
        let warning = dir
            .permission_warning()
            .expect("a group-writable directory warns");
        assert!(warning.contains("chmod 700"), "{warning}");
        assert!(JournalDir::open(&nested)
            .unwrap()
            .permission_warning()
            .is_none());
    }

    #[test]
    fn permission_problems_are_writable_by_others() {
        let d = Path::new("/srv/state");
        for ok in [0o40700, 0o40750, 0o40755, 0o41755, 0o40500] {
            assert_eq!(permission_problem(d, ok), None, "{ok:o}");
        }
        for bad in [0o40770, 0o40777, 0o40702, 0o41777, 0o40720] {
            let msg = permission_problem(d, bad).unwrap_or_else(|| panic!("{bad:o} warns"));
            assert!(msg.contains("chmod 700 /srv/state"), "{msg}");
            assert!(msg.contains(&format!("{:o}", bad & 0o7777)), "{msg}");
        }
    }

    #[test]
    fn a_journal_symlinked_elsewhere_is_never_followed() {
        let (tmp, dir) = setup();
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(0, 0, 4096)]).unwrap();
        j.finish(1).unwrap();
        drop(j);
        let loaded = dir.load(ID).unwrap().unwrap();
        // The real journal moves out; a symlink to it (with a tail to cut) takes its place.
        let outside = tmp.path().join("outside");
        fs::rename(dir.journal_path(ID), &outside).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&outside)
            .unwrap()
            .write_all(b"a tail resume would cut")
            .unwrap();
        let before = fs::read(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dir.journal_path(ID)).unwrap();

        assert!(
            dir.resume(&loaded).is_err(),
            "resume does not open a symlink"
        );
        assert_eq!(
            fs::read(&outside).unwrap(),
            before,
            "resume cut the outside file"
        );
        assert!(
            dir.load(ID).unwrap().is_none(),
            "a symlink is not read as a journal"
        );
        assert_eq!(dir.clean(Duration::ZERO, unix_now() + 10).unwrap(), 0);
        assert_eq!(
            dir.sweep(Duration::ZERO, unix_now() + 10).unwrap(),
            Swept::default()
        );
        assert!(fs::symlink_metadata(dir.journal_path(ID))
            .unwrap()
            .is_symlink());
        // A new journal replaces the symlink itself.
        let mut j = dir.create(header(ID)).unwrap();
        j.record(&[(1, 0, 10)]).unwrap();
        assert!(fs::symlink_metadata(dir.journal_path(ID))
            .unwrap()
            .is_file());
        assert_eq!(
            fs::read(&outside).unwrap(),
            before,
            "the outside file is untouched"
        );
        assert_eq!(dir.load(ID).unwrap().unwrap().durable, sets(&[(1, 0, 10)]));

        // Other files that are not regular files are not opened either (a FIFO would block).
        nix::unistd::mkfifo(
            &dir.journal_path("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(dir.load("fifo").unwrap().is_none());
    }

    #[test]
    fn temporary_files_are_created_without_following_a_symlink() {
        let (tmp, dir) = setup();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let tmp_path = dir.path().join(".x.journal.0000000000000000.tmp");
        std::os::unix::fs::symlink(&outside, &tmp_path).unwrap();
        let err = open_temp(&tmp_path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        let f = open_temp(&dir.path().join(".y.journal.0000000000000000.tmp")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&f.metadata().unwrap().permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn clean_expires_unfinished_journals_not_written_within_the_retention() {
        let (_tmp, dir) = setup();
        let now = unix_now();
        let retention = Duration::from_secs(500);
        for id in ["stale", "fresh", "running", "resumed"] {
            let mut j = dir.create(header(id)).unwrap();
            j.record(&[(0, 0, 4096)]).unwrap();
        }
        age(&dir.journal_path("stale"), 1_000);
        age(&dir.journal_path("fresh"), 100);
        // A session whose journal is open now is never expired, however old its last write.
        let running = dir.resume(&dir.load("running").unwrap().unwrap()).unwrap();
        age(&dir.journal_path("running"), 10_000);
        // A journal resumed counts as used then, even if nothing was written since.
        age(&dir.journal_path("resumed"), 1_000);
        drop(dir.resume(&dir.load("resumed").unwrap().unwrap()).unwrap());

        let swept = dir.sweep(retention, now).unwrap();
        assert_eq!(swept.unfinished, 1, "{swept:?}");
        assert_eq!(
            names(&dir),
            ["fresh.journal", "resumed.journal", "running.journal"]
        );
        drop(running);
        assert_eq!(dir.sweep(retention, now).unwrap().unfinished, 1);
        assert_eq!(names(&dir), ["fresh.journal", "resumed.journal"]);
    }

    #[test]
    fn clean_bounds_the_number_of_journals_oldest_finished_first() {
        let (_tmp, dir) = setup();
        assert_eq!(MAX_JOURNALS, 1024);
        let now = unix_now();
        for (id, finished) in [("f1", 300), ("f2", 200), ("f3", 100)] {
            let mut j = dir.create(header(id)).unwrap();
            j.finish(now - finished).unwrap();
        }
        let mut open = None;
        for (id, written) in [("u1", 50), ("u2", 40), ("u3", 30)] {
            let j = dir.create(header(id)).unwrap();
            age(&dir.journal_path(id), written);
            if id == "u1" {
                open = Some(j);
            }
        }
        // The same directory, bounded lower than it holds (a clone shares what is open).
        let dir = dir.clone().with_max_journals(2);
        let swept = dir.sweep(Duration::from_secs(3600), now).unwrap();
        assert_eq!(swept.evicted, 4, "{swept:?}");
        assert_eq!(names(&dir), ["u1.journal", "u3.journal"]);
        drop(open);
        // Within the bound nothing more goes.
        assert_eq!(
            dir.sweep(Duration::from_secs(3600), now).unwrap(),
            Swept::default()
        );
        assert_eq!(names(&dir), ["u1.journal", "u3.journal"]);
    }

    #[test]
    fn create_evicts_the_oldest_abandoned_journal_when_the_bound_is_reached() {
        let (_tmp, dir) = setup();
        let dir = dir.with_max_journals(3);
        let now = unix_now();
        dir.create(header("old-unfinished")).unwrap();
        age(&dir.journal_path("old-unfinished"), 5_000);
        dir.create(header("new-unfinished")).unwrap();
        dir.create(header("finished")).unwrap().finish(now).unwrap();
        // Full: the finished one goes first, even though it is the newest.
        let a = dir.create(header("a")).unwrap();
        assert_eq!(
            names(&dir),
            [
                "a.journal",
                "new-unfinished.journal",
                "old-unfinished.journal"
            ]
        );
        // Then the unfinished one written longest ago.
        let b = dir.create(header("b")).unwrap();
        assert_eq!(
            names(&dir),
            ["a.journal", "b.journal", "new-unfinished.journal"]
        );
        // A session starting again replaces its own journal: nothing else goes.
        let b = {
            drop(b);
            dir.create(header("b")).unwrap()
        };
        assert_eq!(
            names(&dir),
            ["a.journal", "b.journal", "new-unfinished.journal"]
        );
        let c = dir.create(header("c")).unwrap();
        assert_eq!(names(&dir), ["a.journal", "b.journal", "c.journal"]);
        // Every journal belongs to a running session: a new one is refused, none is lost.
        let Err(Error::Config(msg)) = dir.create(header("d")) else {
            panic!("a full state directory of running sessions refuses a new journal");
        };
        assert!(msg.contains("3 session journals"), "{msg}");
        assert_eq!(names(&dir), ["a.journal", "b.journal", "c.journal"]);
        drop((a, b, c));
        dir.create(header("d")).unwrap();
        assert_eq!(names(&dir).len(), 3);
    }
}
