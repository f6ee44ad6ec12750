//! Real processes for the end-to-end tests: children killed when a test fails, exits polled
//! with a deadline, and a `blockrep-receiver` whose address comes from its listening line.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver as LineRx, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub const SEND: &str = env!("CARGO_BIN_EXE_blockrep");
pub const RECEIVER: &str = env!("CARGO_BIN_EXE_blockrep-receiver");

/// How long any one process may take before the test gives up on it.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(60);
/// How long a receiver may take to say where it listens.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// Between two `try_wait` polls.
pub const POLL: Duration = Duration::from_millis(10);
/// Size of the test images: a few MiB, not a multiple of any block size.
pub const IMAGE_SIZE: usize = 3 * 1024 * 1024 + 12_345;
/// What a target holds before a transfer, so untouched and overwritten targets differ.
pub const TARGET_FILL: u8 = 0xEE;

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process that is killed and reaped when dropped, whatever happened to the test.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Polls `child` until it exits or `deadline` passes (then kills it and panics).
pub fn wait_exit(child: &mut Child, deadline: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    let max_polls = deadline.as_millis() / POLL.as_millis() + 1;
    for _ in 0..max_polls {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => panic!("{what}: try_wait failed: {e}"),
        }
        if start.elapsed() >= deadline {
            break;
        }
        thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not exit within {} s", deadline.as_secs());
}

/// Reads a pipe to its end on a thread.
pub fn slurp(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Sends each line of a pipe, as it comes, from a thread of its own (which drains the pipe to
/// its end, so a full pipe never stalls the writer).
pub fn lines_of(pipe: impl Read + Send + 'static) -> LineRx<String> {
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to its end, bounded by [`PROCESS_DEADLINE`].
pub fn run(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let mut child = ChildGuard(
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}")),
    );
    let stdout = slurp(child.0.stdout.take().expect("piped stdout"));
    let stderr = slurp(child.0.stderr.take().expect("piped stderr"));
    let status = wait_exit(&mut child.0, PROCESS_DEADLINE, &what);
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs a command that must succeed (a tool such as openssl, or a blockrep step that is set-up
/// rather than the thing under test).
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

/// The address in a text-logging receiver's listening line.
pub fn listening_line(line: &str) -> Option<String> {
    line.strip_prefix("blockrep-receiver listening on ")
        .map(|a| a.trim().to_owned())
}

/// A running `blockrep-receiver`, its address, and its stderr lines as they come.
pub struct Receiver {
    child: ChildGuard,
    pub addr: String,
    lines: LineRx<String>,
    seen: Vec<String>,
}

impl Receiver {
    /// Starts a receiver with `args` plus `--listen 127.0.0.1:0` (unless `listen` is false:
    /// then the arguments or a config file must say where) and waits for its listening line.
    pub fn start(args: &[&str], listen: bool) -> Self {
        Self::start_with(args, listen, listening_line)
    }

    /// [`Receiver::start`], finding the address in the line for which `listening` returns it
    /// (a receiver logging JSON says where it listens inside a JSON object).
    pub fn start_with(args: &[&str], listen: bool, listening: fn(&str) -> Option<String>) -> Self {
        Self::start_env(args, listen, &[], listening)
    }

    /// [`Receiver::start_with`] with more environment variables (an LD_PRELOAD, say).
    pub fn start_env(
        args: &[&str],
        listen: bool,
        env: &[(&str, &str)],
        listening: fn(&str) -> Option<String>,
    ) -> Self {
        let mut cmd = Command::new(RECEIVER);
        if listen {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.envs(env.iter().copied());
        cmd.args(args)
            .env_remove("RUST_LOG")
            .env_remove("BLOCKREP_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = ChildGuard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
        );
        let lines = lines_of(child.0.stderr.take().expect("piped stderr"));
        let mut receiver = Self {
            child,
            addr: String::new(),
            lines,
            seen: Vec::new(),
        };
        let start = Instant::now();
        // Bounded by the deadline, and by the lines a starting receiver may print.
        for _ in 0..10_000 {
            let left = STARTUP_DEADLINE.saturating_sub(start.elapsed());
            match receiver.lines.recv_timeout(left) {
                Ok(line) => {
                    let addr = listening(&line);
                    receiver.seen.push(line);
                    if let Some(addr) = addr {
                        receiver.addr = addr;
                        return receiver;
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    let status = wait_exit(&mut receiver.child.0, PROCESS_DEADLINE, "receiver");
                    panic!(
                        "the receiver exited ({status}) before listening:\n{}",
                        receiver.seen.join("\n")
                    );
                }
            }
        }
        panic!(
            "the receiver did not say where it listens within {} s:\n{}",
            STARTUP_DEADLINE.as_secs(),
            receiver.seen.join("\n")
        );
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// How it ended, once it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.0.try_wait().ok().flatten()
    }

    /// Waits for the receiver to exit on its own; returns its status and all its stderr lines.
    pub fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let status = wait_exit(&mut self.child.0, PROCESS_DEADLINE, "receiver");
        // The pipe closes with the process; the deadline only guards against a stray holder.
        let start = Instant::now();
        for _ in 0..100_000 {
            let left = Duration::from_secs(10).saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        (status, std::mem::take(&mut self.seen))
    }

    /// SIGTERM, then its status and every line it wrote; it must exit 0 (a clean stop).
    pub fn terminate(self) -> Vec<String> {
        // SAFETY: kill(2) on our own child's pid, which the guard has not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed: {}", std::io::Error::last_os_error());
        let (status, lines) = self.wait();
        assert!(
            status.success(),
            "the receiver exited with {status} on SIGTERM:\n{}",
            lines.join("\n")
        );
        lines
    }

    /// Its stderr so far, for a failure message.
    pub fn log(&mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        self.seen.join("\n")
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.0.id()).expect("pid fits i32")
    }
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The files of a CA, a server and a client certificate (for the command lines).
#[derive(Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// `blockrep certs --out DIR`.
pub fn blockrep_certs(dir: &Path) -> Pki {
    let out = run_ok(Command::new(SEND).args(["certs", "--out", p(dir)]));
    assert!(
        out.stderr.is_empty(),
        "certs wrote to stderr: {}",
        out.stderr
    );
    let pki = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    for f in [
        &pki.ca,
        &pki.server_cert,
        &pki.server_key,
        &pki.client_cert,
        &pki.client_key,
    ] {
        assert!(f.is_file(), "blockrep certs did not write {}", f.display());
    }
    pki
}
