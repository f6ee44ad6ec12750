//! Helpers shared by this crate's tests on images made by real tools.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{ExtentSet, MetaError, Region};

/// Runs a command, panicking with its output when it fails to start or exits non-zero;
/// returns its stdout.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    check(cmd, &out)
}

/// Unmounts `dir`. "target is busy" is retried (20 times, 0.1 s apart): another test thread
/// forking a child can hold an inherited descriptor of a file in the mount for an instant
/// before the child's exec closes it.
pub(crate) fn unmount(dir: &Path) {
    let mut cmd = Command::new("umount");
    cmd.arg(dir);
    for _ in 0..20 {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("busy") {
            check(&cmd, &out);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    run(&mut cmd);
}

/// Like [`run`], feeding the command `input` on its stdin.
pub(crate) fn run_with_input(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (scripts/install-deps): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    check(cmd, &out)
}

fn check(cmd: &Command, out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `r` is [`MetaError::Corrupt`] with a message that contains `needle`.
#[track_caller]
pub(crate) fn expect_corrupt<T: std::fmt::Debug>(r: Result<T, MetaError>, needle: &str) {
    match r {
        Err(MetaError::Corrupt(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected Corrupt({needle:?}), got {other:?}"),
    }
}

/// A sparse file `dir/name` of `size` bytes.
pub(crate) fn sparse_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap().set_len(size).unwrap();
    path
}

/// A 64-bit xorshift, for reproducible file contents and corruptions.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` bytes, the low byte of each step.
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Copies only the `used` extents of `img` into `out`, a zeroed image of the same size: what
/// the receiver of a used-blocks transfer holds.
pub(crate) fn replicate(img: &Path, used: &ExtentSet, out: &Path) {
    let src = File::open(img).unwrap();
    let dst = File::create(out).unwrap();
    dst.set_len(src.metadata().unwrap().len()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for e in used.iter() {
        let mut at = e.offset;
        while at < e.end() {
            let n = (e.end() - at).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], at).unwrap();
            dst.write_all_at(&buf[..n], at).unwrap();
            at += n as u64;
        }
    }
}

/// Asserts that some byte of `region` outside `used` is not zero (in the first MiB of each
/// free extent): stale data in free space, so that a comparison of copies means something.
pub(crate) fn assert_free_space_is_stale(region: &Region, used: &ExtentSet) {
    let free = ExtentSet::range(0, region.len()).subtract(used);
    let stale = free.iter().any(|e| {
        let n = e.len.min(1 << 20) as usize;
        region
            .read_vec("t", e.offset, n)
            .unwrap()
            .iter()
            .any(|&b| b != 0)
    });
    assert!(stale, "free space holds stale data");
}

// The skip of a test that cannot run here: one source, shared with the disk crate and the
// end-to-end tests (none of them depends on another's test code).
#[path = "../../disk/src/skip.rs"]
mod skip;
pub(crate) use skip::skip;
