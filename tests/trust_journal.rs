//! The receiver's `--state-dir` as an operator and a hostile local user meet it: the real
//! `blockrep-receiver` and `blockrep send` binaries, real TLS on 127.0.0.1, real files.
//!
//! - a state directory the receiver creates is private (0700);
//! - one that others may write to is used, with a warning that says how to fix it;
//! - a journal planted as a symlink is never followed: the file it points to is neither read
//!   nor written, and the session starts afresh;
//! - the journal of an unfinished session not written within `--journal-retention` is
//!   deleted by the cleanup the receiver runs at start.
//!
//! Nothing sleeps to wait: the receiver's address comes from its listening line, exits are
//! polled with a deadline, and children are killed by a guard when a test fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

mod common;
#[path = "common/process.rs"]
mod process;

use process::*;

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `blockrep-receiver` for `pki`, one target `d0`, and `--state-dir state`.
fn start_receiver(pki: &Pki, target: &Path, state: &Path) -> Receiver {
    start_receiver_with(pki, target, state, &[])
}

/// [`start_receiver`] with more arguments.
fn start_receiver_with(pki: &Pki, target: &Path, state: &Path, extra: &[&str]) -> Receiver {
    let disk = format!("d0={}", p(target));
    let mut args = vec![
        "--cert",
        p(&pki.server_cert),
        "--key",
        p(&pki.server_key),
        "--client-ca",
        p(&pki.ca),
        "--disk",
        &disk,
        "--state-dir",
        p(state),
    ];
    args.extend_from_slice(extra);
    Receiver::start(&args, true)
}

/// `blockrep send --mode full --session SESSION` of `source` to `d0`; it must succeed.
fn send(receiver: &Receiver, pki: &Pki, source: &Path, session: &str) -> Output {
    let disk = format!("d0={}", p(source));
    run_ok(Command::new(SEND).args([
        "send",
        "--to",
        &receiver.addr,
        "--ca",
        p(&pki.ca),
        "--cert",
        p(&pki.client_cert),
        "--key",
        p(&pki.client_key),
        "--mode",
        "full",
        "--session",
        session,
        "--progress",
        "none",
        "--disk",
        &disk,
    ]))
}

/// Certificates, a source image and a target of the same size, in `dir`.
fn files(dir: &Path) -> (Pki, std::path::PathBuf, std::path::PathBuf) {
    let pki = blockrep_certs(&dir.join("certs"));
    let source = dir.join("source.img");
    let target = dir.join("target.img");
    let mut data = vec![0u8; IMAGE_SIZE];
    common::random_bytes(&mut data, 77);
    fs::write(&source, &data).expect("write the source");
    fs::write(&target, vec![TARGET_FILL; IMAGE_SIZE]).expect("write the target");
    (pki, source, target)
}

#[test]
fn the_receiver_creates_its_state_dir_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pki, _source, target) = files(tmp.path());
    let state = tmp.path().join("lib/blockrep/state");
    let receiver = start_receiver(&pki, &target, &state);
    assert_eq!(
        mode_of(&state),
        0o700,
        "the state directory the receiver made is not private"
    );
    for parent in [tmp.path().join("lib"), tmp.path().join("lib/blockrep")] {
        assert_eq!(
            mode_of(&parent) & 0o022,
            0,
            "{} is writable by others",
            parent.display()
        );
    }
    receiver.terminate();
}

#[test]
fn the_receiver_warns_about_a_state_dir_others_may_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pki, _source, target) = files(tmp.path());
    let state = tmp.path().join("state");
    fs::create_dir(&state).expect("create the state directory");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).expect("chmod 777");
    let mut receiver = start_receiver(&pki, &target, &state);
    let log = receiver.log();
    let fix = format!("chmod 700 {}", p(&state));
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("writable") && l.contains(&fix)),
        "no warning naming the fix `{fix}` at start:\n{log}"
    );
    // The operator's choice stands: the receiver does not change the mode itself.
    assert_eq!(mode_of(&state), 0o777);
    receiver.terminate();
}

#[test]
fn a_journal_symlink_planted_in_the_state_dir_is_not_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pki, source, target) = files(tmp.path());
    let state = tmp.path().join("state");
    let receiver = start_receiver(&pki, &target, &state);
    send(&receiver, &pki, &source, "s1");
    let journal = state.join("s1.journal");
    assert!(
        fs::symlink_metadata(&journal).is_ok_and(|m| m.is_file()),
        "the first transfer left no journal"
    );
    // A local user swaps the journal for a symlink to a file of theirs: a copy of the real
    // journal with more bytes after it, which a receiver resuming through the link would cut.
    let outside = tmp.path().join("elsewhere.journal");
    let mut planted = fs::read(&journal).expect("read the journal");
    planted.extend_from_slice(b"bytes that are nobody's journal");
    fs::write(&outside, &planted).expect("write the outside file");
    fs::remove_file(&journal).expect("remove the journal");
    std::os::unix::fs::symlink(&outside, &journal).expect("plant the symlink");

    // The same session again: it runs, from scratch.
    fs::write(&target, vec![TARGET_FILL; IMAGE_SIZE]).expect("refill the target");
    send(&receiver, &pki, &source, "s1");
    assert!(
        fs::read(&outside).expect("the outside file") == planted,
        "the receiver wrote through a symlinked journal"
    );
    assert!(
        fs::symlink_metadata(&journal).is_ok_and(|m| m.is_file()),
        "the session's journal is not a regular file of the state directory"
    );
    assert_eq!(mode_of(&journal), 0o600);
    assert!(
        cmp_files(&source, &target),
        "the session did not start afresh: the target differs from the source"
    );
    let lines = receiver.terminate();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("s1.journal") && l.contains("symbolic link")),
        "no warning about the symlinked journal:\n{}",
        lines.join("\n")
    );
}

#[test]
fn an_unfinished_journal_past_the_retention_is_removed_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pki, source, target) = files(tmp.path());
    let state = tmp.path().join("state");
    let receiver = start_receiver(&pki, &target, &state);
    send(&receiver, &pki, &source, "abandoned");
    send(&receiver, &pki, &source, "recent");
    receiver.terminate();
    // Both sessions as a sender killed before the end leaves them: without the finished
    // record, the journal's last (5 + 8 + 16 bytes).
    for id in ["abandoned", "recent"] {
        let journal = state.join(format!("{id}.journal"));
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .expect("open the journal");
        let len = f.metadata().expect("stat").len();
        f.set_len(len - 29).expect("drop the finished record");
    }
    // One was last written two days ago.
    fs::File::open(state.join("abandoned.journal"))
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(2 * 86_400)))
        .expect("age the journal");

    let mut receiver = start_receiver_with(&pki, &target, &state, &["--journal-retention", "1d"]);
    let gone = state.join("abandoned.journal");
    let start = Instant::now();
    for _ in 0..(STARTUP_DEADLINE.as_millis() / POLL.as_millis()) {
        if !gone.exists() || start.elapsed() > STARTUP_DEADLINE {
            break;
        }
        std::thread::sleep(POLL);
    }
    assert!(
        !gone.exists(),
        "the unfinished journal unwritten for two days is still there:\n{}",
        receiver.log()
    );
    assert!(
        state.join("recent.journal").is_file(),
        "the recent unfinished journal was removed"
    );
    let lines = receiver.terminate();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("abandoned") && l.contains("unfinished")),
        "no line says which journal went and why:\n{}",
        lines.join("\n")
    );
}

fn cmp_files(a: &Path, b: &Path) -> bool {
    fs::read(a).expect("read") == fs::read(b).expect("read")
}
