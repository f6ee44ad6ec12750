//! Resume and fault tolerance: a dropped connection, a receiver killed and restarted, a
//! sender killed and rerun. Each ends with a byte-identical target and little re-sent.

mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/proxy.rs"]
mod proxy;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blockrep::sender::{self, Control, Mode};
use blockrep::throttle::Throttle;
use blockrep::{Retry, SendConfig, SourceSpec};
use blockrep_rate::Rules;
use common::*;
use process::{lines_of, run, wait_exit, ChildGuard, PROCESS_DEADLINE, SEND};
use proxy::Proxy;

/// The wire rate of the process-level tests, so a transfer lasts long enough (a few seconds)
/// to be cut in the middle.
const MBPS: u32 = 320;

fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A free port on 127.0.0.1, for a receiver that must come back on the same address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `blockrep-receiver` on `port` writing `d0` to `target`, with journals in `state`.
fn receiver_process(pki: &Pki, port: u16, target: &Path, state: &Path) -> process::Receiver {
    let f = &pki.files;
    let listen = format!("127.0.0.1:{port}");
    let disk = format!("d0={}", p(target));
    process::Receiver::start(
        &[
            "--listen",
            &listen,
            "--cert",
            p(&f.server_cert),
            "--key",
            p(&f.server_key),
            "--client-ca",
            p(&f.ca),
            "--disk",
            &disk,
            "--state-dir",
            p(state),
        ],
        false,
    )
}

/// A source image of `regions` and a target as large with none of it matching, in a
/// temporary directory that also holds the receiver's journals (`state`).
struct Files {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
    state: std::path::PathBuf,
    size: u64,
}

/// MiB of the images the resume tests send: 96, or `BLOCKREP_FAULT_MIB` (the figures in the
/// notes are from `BLOCKREP_FAULT_MIB=1024 cargo test --test resume -- --nocapture --test-threads 1`).
fn disk_mib() -> u64 {
    std::env::var("BLOCKREP_FAULT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

/// Two thirds random bytes, then text.
fn realistic() -> [Region; 2] {
    let mib = disk_mib();
    [
        Region::Random(mib * 2 / 3 * MIB),
        Region::Text((mib - mib * 2 / 3) * MIB),
    ]
}

fn files(regions: &[Region], seed: u64) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (
        dir.path().join("src.img"),
        dir.path().join("dst.img"),
        dir.path().join("state"),
    );
    let size = make_image(&src, regions, seed);
    make_target(&dst, size);
    Files {
        _dir: dir,
        src,
        dst,
        state,
        size,
    }
}

/// Polls `done` every 5 ms until it is true; panics after 60 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..12_000 {
        if done() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{what}: not within 12000 polls");
}

fn quick_retry() -> Retry {
    Retry {
        total: Duration::from_secs(30),
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_by_itself() {
    let pki = Pki::new();
    let Files {
        _dir,
        src,
        dst,
        state: _,
        size,
    } = files(&realistic(), 5);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    // The first two connections are cut mid-transfer: after a third of the disk, then after
    // a tenth more.
    let proxy = Proxy::start(rx.addr, vec![size / 3, size / 10]).await;
    let mut c = SendConfig::new(
        proxy.addr.to_string(),
        pki.client(),
        vec![SourceSpec::new("d0", &src)],
    );
    c.mode = Mode::Full;
    c.window = 8 * MIB;
    c.retry = quick_retry();
    c.io_timeout = Duration::from_secs(10);
    let s = sender::send(c, Control::new())
        .await
        .expect("the send completes by itself");
    rx.stop().await;
    assert!(s.complete, "{s:?}");
    assert_eq!(s.reconnects, 2, "{s:?}");
    assert!(cmp(&src, &dst));
    // What was in flight when each connection dropped is sent again, nothing else: at most a
    // window per cut.
    let resent = s.sent_bytes - size;
    assert!(resent <= 2 * 8 * MIB, "re-sent {resent} bytes: {s:?}");
    assert_eq!(s.acked_bytes, size);
    eprintln!(
        "dropped twice: {} bytes re-sent of {size}, {} connections",
        resent,
        proxy.connections.load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_dropped_connection_is_an_error() {
    let pki = Pki::new();
    let Files { _dir, src, dst, .. } = files(&[Region::Random(24 * MIB)], 6);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    let proxy = Proxy::start(rx.addr, vec![4 * MIB]).await;
    let mut c = SendConfig::new(
        proxy.addr.to_string(),
        pki.client(),
        vec![SourceSpec::new("d0", &src)],
    );
    c.mode = Mode::Full;
    c.retry.total = Duration::ZERO;
    let e = sender::send(c, Control::new()).await.unwrap_err();
    rx.stop().await;
    assert_eq!(e.code(), "SMS.1908", "{e}");
    assert!(e.retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_and_restarted_resumes_the_session() {
    let pki = Pki::new();
    let Files {
        _dir,
        src,
        dst,
        state,
        size,
    } = files(&realistic(), 8);
    let port = free_port();
    let rx = receiver_process(&pki, port, &dst, &state);
    let mut c = SendConfig::new(
        format!("127.0.0.1:{port}"),
        pki.client(),
        vec![SourceSpec::new("d0", &src)],
    );
    c.mode = Mode::Full;
    c.window = 16 * MIB;
    c.retry = Retry {
        total: Duration::from_secs(60),
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    c.limits = Throttle::new(Rules::unlimited().with_defaults(MBPS, None));
    let handle = sender::start(c);
    let control = handle.control();
    wait_until("a third durable", || {
        control.progress().replicatesize >= size / 3
    });
    let durable_before = control.progress().replicatesize;
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(rx.pid(), libc::SIGKILL) }, 0);
    let _ = rx.wait();
    assert!(
        !handle.is_finished(),
        "the sender waits for the receiver to come back"
    );
    let rx = receiver_process(&pki, port, &dst, &state);
    let s = tokio::task::spawn_blocking(move || handle.wait())
        .await
        .unwrap()
        .expect("the round completes after the restart");
    drop(rx);
    assert!(s.complete, "{s:?}");
    assert!(s.reconnects >= 1, "{s:?}");
    assert!(cmp(&src, &dst));
    let resent = s.sent_bytes - size;
    assert!(resent <= 16 * MIB + MIB, "re-sent {resent}: {s:?}");
    eprintln!(
        "receiver SIGKILL at {durable_before} of {size} durable: {resent} bytes re-sent, {} reconnections",
        s.reconnects
    );
}

/// `blockrep send` of `src` as d0, full mode, session `session`, JSON progress on stdout.
fn send_command(pki: &Pki, to: &str, src: &Path, session: &str) -> Command {
    let f = &pki.files;
    let mut cmd = Command::new(SEND);
    cmd.args([
        "send",
        "--to",
        to,
        "--ca",
        p(&f.ca),
        "--cert",
        p(&f.client_cert),
        "--key",
        p(&f.client_key),
        "--mode",
        "full",
        "--session",
        session,
        "--progress",
        "json",
        "--window",
        "16MiB",
        "--speed-limit-default",
        &MBPS.to_string(),
        "--disk",
        &format!("d0={}", p(src)),
    ])
    .env_remove("RUST_LOG")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}

/// A field of the JSON progress or summary line.
fn field(line: &serde_json::Value, name: &str) -> Option<u64> {
    line.get(name)
        .or_else(|| line.get("summary").and_then(|s| s.get(name)))
        .and_then(serde_json::Value::as_u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_and_rerun_resumes() {
    let pki = Pki::new();
    let Files {
        _dir,
        src,
        dst,
        state,
        size,
    } = files(&realistic(), 9);
    let mut config = receiver_config(&pki, &[("d0", &dst)]);
    config.state_dir = Some(state);
    let rx = Receiver::start(config).await;
    let to = rx.addr.to_string();

    let src2 = src.clone();
    let mut child = ChildGuard(send_command(&pki, &to, &src2, "rerun-1").spawn().unwrap());
    let lines = lines_of(child.0.stdout.take().unwrap());
    // Kill it once a third is durable on the target, by its own progress lines.
    let mut durable_before = 0;
    let start = Instant::now();
    for _ in 0..100_000 {
        let left = PROCESS_DEADLINE.saturating_sub(start.elapsed());
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        durable_before = field(&v, "replicatesize").unwrap_or(0);
        if durable_before >= size / 3 {
            break;
        }
    }
    assert!(durable_before >= size / 3, "the first run made no progress");
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) }, 0);
    let _ = wait_exit(&mut child.0, PROCESS_DEADLINE, "killed sender");

    // The same command again: it resumes the session and sends the rest.
    let rerun = move || {
        let out = run(&mut send_command(&pki, &to, &src, "rerun-1"));
        assert!(out.status.success(), "the rerun failed: {out:?}");
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|v: &serde_json::Value| v.get("summary").is_some())
            .expect("a summary line")
    };
    let (summary, again) = tokio::task::spawn_blocking(move || (rerun(), rerun()))
        .await
        .unwrap();
    rx.stop().await;
    // A finished session is never a reason to skip data: the same command once more is a
    // new transfer under the id, and sends everything again.
    assert_eq!(field(&again, "sent_bytes"), Some(size), "{again}");
    assert_eq!(field(&again, "acked_bytes"), Some(size), "{again}");
    let sent = field(&summary, "sent_bytes").unwrap();
    assert!(cmp(&src2, &dst));
    // The rerun sends what was not durable when the first run died, and no more.
    assert!(sent <= size - durable_before, "sent {sent}: {summary}");
    assert_eq!(field(&summary, "acked_bytes"), Some(size), "{summary}");
    eprintln!(
        "sender SIGKILL at {durable_before} of {size} durable: the rerun sent {sent} bytes, {} again",
        sent.saturating_sub(size - durable_before)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_several_streams_resumes_when_one_drops() {
    let pki = Pki::new();
    let Files {
        _dir,
        src,
        dst,
        state,
        size,
    } = files(&realistic(), 8);
    let mut config = receiver_config(&pki, &[("d0", &dst)]);
    config.state_dir = Some(state);
    let rx = Receiver::start(config).await;
    // Connection 0 is the first attempt's session, 1 and 2 its other streams: the second is
    // cut after a twelfth of the disk, so the whole attempt fails and is made again.
    let proxy = Proxy::start(rx.addr, vec![u64::MAX, size / 12, u64::MAX]).await;
    let mut c = SendConfig::new(
        proxy.addr.to_string(),
        pki.client(),
        vec![SourceSpec::new("d0", &src)],
    );
    c.mode = Mode::Full;
    c.session_id = "streams-resume".into();
    c.streams = 3;
    c.block_size = 256 << 10;
    c.window = 8 * MIB;
    c.retry = quick_retry();
    c.io_timeout = Duration::from_secs(10);
    let s = sender::send(c.clone(), Control::new())
        .await
        .expect("the send completes by itself");
    assert!(s.complete, "{s:?}");
    assert_eq!(s.reconnects, 1, "{s:?}");
    assert!(cmp(&src, &dst));
    let resent = s.sent_bytes - size;
    assert!(resent <= 8 * MIB, "re-sent {resent} bytes: {s:?}");
    assert!(
        proxy.connections.load(std::sync::atomic::Ordering::Relaxed) >= 6,
        "three streams, twice"
    );
    // Sent again after it finished, the session holds nothing: a new transfer under its id.
    let again = sender::send(c, Control::new()).await.unwrap();
    let outcome = rx.stop().await;
    assert!(again.complete, "{again:?}");
    assert_eq!(again.sent_bytes, size, "{again:?}");
    assert!(outcome.streams >= 2, "{outcome:?}");
}
