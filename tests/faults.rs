//! Faults against a real `blockrep-receiver` process: idle and slowloris connections with the
//! receiver's peak memory read from /proc, floods of tiny frames, oversized length fields and
//! DATA outside the disk, a target whose filesystem fills up (ENOSPC), and a target device that
//! fails its writes (EIO through device-mapper, when the kernel has it; a loop device made
//! read-only under the receiver otherwise). After each fault the same process must still serve
//! a proper client, and a target that nobody may write is byte for byte what it was.
//!
//! Every wait is bounded in time and count, only 127.0.0.1 is used, and every child process,
//! mount, loop and dm device is removed by a guard whatever happens to the test.

mod common;
#[path = "common/disks.rs"]
mod disks;
#[path = "common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blockrep::sender::{self, Control, Mode};
use blockrep::{Error, SendConfig, SourceSpec};
use blockrep_proto::{consts, decode, DiskAnnounce, Encoding, Frame, Hello};
use bytes::BytesMut;
use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The receiver's peak resident memory (VmHWM) must stay below this, whatever the peers do.
///
/// Why 64 MiB: the process starts at about 10 MiB (binary, tokio's threads, TLS config). A
/// connection before HELLO may hold rustls' buffers (one TLS record, 16 KiB, each way) and the
/// frame reader's 16 KiB read-ahead: under 100 KiB, so 300 of them are under 30 MiB. A
/// streaming session holds at most one frame being read (1 MiB), 16 queued DATA frames and one
/// decompression buffer: about 18 MiB with 1 MiB chunks, 2 MiB with the 64 KiB chunks used
/// here. 64 MiB is twice the sum of the worst case these tests build: a leak of a few KiB per
/// frame or per connection, or a buffer sized from an untrusted length field, goes past it.
const MEMORY_BOUND: u64 = 64 * MIB;

// ---------------------------------------------------------------------------------------------
// The receiver as a process
// ---------------------------------------------------------------------------------------------

/// A running `blockrep-receiver` (killed and reaped when dropped) and its address.
struct ReceiverProc {
    proc: process::Receiver,
    addr: SocketAddr,
}

impl ReceiverProc {
    /// Starts a receiver on 127.0.0.1:0 with the PKI's files, `disks` and `extra` flags, and
    /// waits (bounded) for its `listening on` line.
    fn start(pki: &Pki, disks: &[(&str, &Path)], extra: &[&str]) -> Self {
        let f = &pki.files;
        let mut args: Vec<String> = vec![
            "--cert".into(),
            f.server_cert.display().to_string(),
            "--key".into(),
            f.server_key.display().to_string(),
            "--client-ca".into(),
            f.ca.display().to_string(),
        ];
        for (id, path) in disks {
            args.push("--disk".into());
            args.push(format!("{id}={}", path.display()));
        }
        args.extend(extra.iter().map(ToString::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = process::Receiver::start(&args, true);
        let addr = proc.addr.parse().expect("the receiver prints an address");
        Self { proc, addr }
    }

    fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Panics (with the receiver's log) unless the process still runs.
    fn assert_alive(&mut self, when: &str) {
        if let Some(status) = self.proc.exited() {
            panic!(
                "the receiver exited ({status}) {when}:\n{}",
                self.proc.log()
            );
        }
    }

    /// A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`), in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        let kb: u64 = line
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .expect("a number of kB");
        kb * 1024
    }

    fn peak_memory(&self) -> u64 {
        self.status_bytes("VmHWM")
    }

    /// Sockets the process holds open: the listener plus one per accepted connection.
    fn sockets(&self) -> usize {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return 0;
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|t| t.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// Polls (bounded) until the process holds at most `max` sockets; false on timeout.
    async fn wait_sockets_at_most(&self, max: usize, limit: Duration) -> bool {
        let start = Instant::now();
        for _ in 0..10_000 {
            if self.sockets() <= max {
                return true;
            }
            if start.elapsed() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

// ---------------------------------------------------------------------------------------------
// Proper clients
// ---------------------------------------------------------------------------------------------

fn send_config(pki: &Pki, addr: SocketAddr, id: &str, src: &Path) -> SendConfig {
    let mut c = SendConfig::new(
        addr.to_string(),
        pki.client(),
        vec![SourceSpec::new(id, src)],
    );
    c.mode = Mode::Full;
    c.block_size = 64 << 10;
    c.io_timeout = Duration::from_secs(20);
    c.connect_timeout = Duration::from_secs(10);
    c
}

/// Sends `src` to disk `id`; bounded in time whatever the sender's reconnection policy.
async fn send(pki: &Pki, addr: SocketAddr, id: &str, src: &Path) -> Result<(), Error> {
    let sending = sender::send(send_config(pki, addr, id, src), Control::new());
    let summary = tokio::time::timeout(Duration::from_secs(60), sending)
        .await
        .unwrap_or_else(|_| panic!("sending {id} took over 60 s"))?;
    assert!(summary.complete, "the transfer of {id} stopped early");
    Ok(())
}

/// A proper client replicates `src` to disk `id` (`dst` on the receiver) and the copy is exact.
async fn replicate(pki: &Pki, addr: SocketAddr, id: &str, src: &Path, dst: &Path) {
    if let Err(e) = send(pki, addr, id, src).await {
        panic!("a proper client was not served: {}", e.user_line());
    }
    assert!(
        cmp(src, dst),
        "{} and {} differ",
        src.display(),
        dst.display()
    );
}

/// At the same time, `src` goes to disk `id`, which fails with `code` and names the disk, and
/// `spare_src` to disk `spare_id` (`spare` on the receiver), which arrives intact. Returns the
/// failure's user line.
async fn fails_beside_a_served_disk(
    pki: &Pki,
    addr: SocketAddr,
    (id, src, code): (&str, &Path, &str),
    (spare_id, spare_src, spare): (&str, &Path, &Path),
) -> String {
    let (failed, served) = tokio::join!(
        send(pki, addr, id, src),
        send(pki, addr, spare_id, spare_src)
    );
    let err = failed.expect_err("the failing target cannot be written");
    let line = err.user_line();
    assert_eq!(err.code(), code, "{line}");
    assert!(
        line.contains(id),
        "the error does not name the disk id {id} (the receiver names only the path): {line}"
    );
    served.unwrap_or_else(|e| panic!("the other disk was not served: {}", e.user_line()));
    assert!(cmp(spare_src, spare), "the other disk's copy differs");
    line
}

/// `blockrep send` as a user runs it (for [`process::run`]).
fn send_cli(pki: &Pki, addr: SocketAddr, id: &str, src: &Path) -> Command {
    let f = &pki.files;
    let mut cmd = Command::new(process::SEND);
    cmd.args(["send", "--to", &addr.to_string(), "--ca"])
        .arg(&f.ca)
        .arg("--cert")
        .arg(&f.client_cert)
        .arg("--key")
        .arg(&f.client_key)
        .arg("--disk")
        .arg(format!("{id}={}", src.display()))
        .args([
            "--mode",
            "full",
            "--block-size",
            "64KiB",
            "--progress",
            "none",
        ]);
    cmd
}

// ---------------------------------------------------------------------------------------------
// Hostile clients, speaking TLS and frames directly
// ---------------------------------------------------------------------------------------------

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects and completes the TLS handshake with the PKI's (valid) client certificate.
async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a server name");
    connector.connect(name, tcp).await
}

fn hello(id: &str, size: u64) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Frame::Hello(Hello {
        version_min: consts::VERSION_MIN,
        version_max: consts::VERSION_MAX,
        // One session id per disk: a HELLO with the id of a running session (from the same
        // client certificate) takes that session over, as a reconnecting sender does.
        session_id: format!("hostile-{id}"),
        agent_version: "faults-test".into(),
        disks: vec![DiskAnnounce {
            id: id.into(),
            size,
            block_size: 64 << 10,
        }],
        verify: false,
        join: false,
        netcheck: false,
    })
    .encode(&mut buf);
    buf.to_vec()
}

/// Frames from the receiver, with a buffer kept across reads.
struct Frames<R> {
    rd: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    fn new(rd: R) -> Self {
        Self {
            rd,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or None once the receiver closed; at most 15 s.
    async fn next(&mut self) -> Option<Frame> {
        let (rd, buf) = (&mut self.rd, &mut self.buf);
        tokio::time::timeout(Duration::from_secs(15), async {
            // Each pass reads at least one byte or returns: bounded by what the receiver sends.
            loop {
                if let Some(f) = decode(buf).expect("the receiver sends valid frames") {
                    return Some(f);
                }
                match rd.read_buf(buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the receiver answers or closes within 15 s")
    }

    /// Every frame until the receiver closes (at most `max`).
    async fn until_closed(&mut self, max: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        for _ in 0..max {
            match self.next().await {
                Some(f) => frames.push(f),
                None => return frames,
            }
        }
        panic!("the receiver sent more than {max} frames without closing");
    }
}

/// Opens a session on disk `id` (announced as `size` bytes), writes `bytes` from a task of its
/// own while reading, and returns what the receiver sent until it closed.
async fn hostile(pki: &Pki, addr: SocketAddr, id: &str, size: u64, bytes: Vec<u8>) -> Vec<Frame> {
    let connector = tokio_rustls::TlsConnector::from(pki.client());
    let mut tls = tls_connect(&connector, addr).await.expect("TLS handshake");
    tls.write_all(&hello(id, size)).await.expect("send HELLO");
    let (rd, mut wr) = tokio::io::split(tls);
    let mut frames = Frames::new(rd);
    match frames.next().await {
        Some(Frame::Welcome(_)) => {}
        other => panic!("expected WELCOME for {id}, got {other:?}"),
    }
    let writer = tokio::spawn(async move {
        // The receiver may close while this is still being written: that is the point.
        for piece in bytes.chunks(64 << 10) {
            if wr.write_all(piece).await.is_err() {
                break;
            }
        }
        let _ = wr.flush().await;
        wr // kept open: closing would be a different fault
    });
    let got = frames.until_closed(100_000).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    got
}

/// The last frame is an ERROR with `code`; returns its message.
fn ends_with_error(frames: &[Frame], code: &str, case: &str) -> String {
    match frames.last() {
        Some(Frame::Error(e)) => {
            assert_eq!(e.code, code, "{case}: {}", e.message);
            e.message.clone()
        }
        other => panic!("{case}: expected ERROR {code} last, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Idle TLS connections and slowloris: bounded memory, still serving
// ---------------------------------------------------------------------------------------------

/// 200 connections that finish the TLS handshake with a valid client certificate and then say
/// nothing, 50 that never start TLS, and 50 that trickle a byte of a ClientHello at a time: the
/// receiver holds them all with bounded memory, closes every one after its handshake timeout
/// (trickling does not extend it), and then serves a proper client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_and_slowloris_connections_use_bounded_memory() {
    const IDLE_TLS: usize = 200;
    const SILENT: usize = 50;
    const TRICKLE: usize = 50;
    const HANDSHAKE_TIMEOUT: u64 = 10;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(&src, &[Region::Random(MIB), Region::Text(MIB + 4096)], 11);
    make_target(&dst, size);
    let mut rx = ReceiverProc::start(
        &pki,
        &[("d0", &dst)],
        &[
            "--max-connections",
            "400",
            "--max-sessions",
            "4",
            "--handshake-timeout",
            &HANDSHAKE_TIMEOUT.to_string(),
            "--idle-timeout",
            "5",
        ],
    );
    let addr = rx.addr;
    let base_sockets = rx.sockets();
    let base_rss = rx.status_bytes("VmRSS");
    let started = Instant::now();

    // The idle TLS connections, handshakes in parallel.
    let connector = tokio_rustls::TlsConnector::from(pki.client());
    let mut handshakes = tokio::task::JoinSet::new();
    for _ in 0..IDLE_TLS {
        let connector = connector.clone();
        handshakes.spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), tls_connect(&connector, addr)).await
        });
    }
    let mut idle = Vec::with_capacity(IDLE_TLS);
    while let Some(joined) = handshakes.join_next().await {
        match joined.expect("handshake task") {
            Ok(Ok(tls)) => idle.push(tls),
            Ok(Err(e)) => panic!("a valid client's TLS handshake failed: {e}"),
            Err(_) => panic!("a TLS handshake took over 20 s"),
        }
    }
    let handshakes_took = started.elapsed();

    // Connections that never start TLS.
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Connections that send a TLS record header announcing a 16 KiB ClientHello, then one
    // byte of it every 250 ms: each byte would reset a per-read timeout, not a handshake one.
    let mut trickle = tokio::task::JoinSet::new();
    for _ in 0..TRICKLE {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        trickle.spawn(async move {
            let opened = Instant::now();
            let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01]).await;
            let mut buf = [0u8; 256];
            // At most 40 s of trickling: far past the handshake timeout.
            for _ in 0..160 {
                if tcp.write_all(&[0]).await.is_err() {
                    return opened.elapsed();
                }
                match tokio::time::timeout(Duration::from_millis(250), tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return opened.elapsed(),
                    Ok(Ok(_)) | Err(_) => {}
                }
            }
            panic!("a trickling connection was still open after 40 s");
        });
    }

    // All of them are open at once: the receiver holds a socket for each.
    let want = base_sockets + IDLE_TLS + SILENT + TRICKLE;
    let mut held = 0;
    for _ in 0..200 {
        held = rx.sockets();
        if held >= want || started.elapsed() > Duration::from_secs(HANDSHAKE_TIMEOUT / 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (rss, hwm) = (rx.status_bytes("VmRSS"), rx.peak_memory());
    let measured_at = started.elapsed();
    let conns = (IDLE_TLS + SILENT + TRICKLE) as u64;
    eprintln!(
        "faults: receiver with {IDLE_TLS} idle TLS + {SILENT} silent + {TRICKLE} trickling \
         connections ({held} sockets, {base_sockets} before): VmRSS {:.1} MiB (before {:.1} MiB, \
         {:.1} KiB per connection), VmHWM {:.1} MiB; handshakes took {:.2} s, measured at {:.2} s",
        mib(rss),
        mib(base_rss),
        rss.saturating_sub(base_rss) as f64 / conns as f64 / 1024.0,
        mib(hwm),
        handshakes_took.as_secs_f64(),
        measured_at.as_secs_f64(),
    );
    assert!(
        held >= want,
        "the receiver holds {held} sockets, expected {want}: connections were closed before \
         their handshake timeout, or never accepted\n{}",
        rx.proc.log()
    );
    assert!(
        hwm < MEMORY_BOUND,
        "the receiver's peak memory is {:.1} MiB with {conns} idle connections (bound {:.0} MiB)",
        mib(hwm),
        mib(MEMORY_BOUND)
    );
    rx.assert_alive("while holding idle connections");

    // Every connection is closed by the receiver once its handshake timeout passes.
    let deadline = Duration::from_secs(HANDSHAKE_TIMEOUT + 15);
    let waits = async {
        let mut tasks = tokio::task::JoinSet::new();
        for mut tls in idle.drain(..) {
            tasks.spawn(async move {
                let mut buf = [0u8; 1024];
                // rustls may deliver a session ticket; only the close counts.
                for _ in 0..100 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return 0,
                        Ok(_) => {}
                    }
                }
                1
            });
        }
        for mut tcp in silent.drain(..) {
            tasks.spawn(async move {
                let mut buf = [0u8; 64];
                tcp.read(&mut buf).await.unwrap_or(0)
            });
        }
        while let Some(n) = tasks.join_next().await {
            let n = n.expect("reader task");
            assert_eq!(
                n, 0,
                "the receiver sent data to a connection that sent nothing"
            );
        }
        let mut longest = Duration::ZERO;
        while let Some(took) = trickle.join_next().await {
            longest = longest.max(took.expect("trickle task"));
        }
        longest
    };
    let longest_trickle = tokio::time::timeout(deadline, waits)
        .await
        .expect("every idle connection is closed within the handshake timeout + 15 s");
    assert!(
        longest_trickle < Duration::from_secs(HANDSHAKE_TIMEOUT + 10),
        "a trickling connection stayed open {:.1} s: the handshake timeout is reset by each byte",
        longest_trickle.as_secs_f64()
    );
    assert!(
        rx.wait_sockets_at_most(base_sockets, Duration::from_secs(10))
            .await,
        "the receiver still holds {} sockets (had {base_sockets} before)",
        rx.sockets()
    );
    rx.assert_alive("after closing idle connections");

    // A proper client is served.
    replicate(&pki, addr, "d0", &src, &dst).await;
    let hwm = rx.peak_memory();
    eprintln!(
        "faults: receiver VmHWM {:.1} MiB after a proper replication",
        mib(hwm)
    );
    assert!(hwm < MEMORY_BOUND, "peak memory {:.1} MiB", mib(hwm));
    rx.assert_alive("after a proper replication");
}

// ---------------------------------------------------------------------------------------------
// 2. Floods, oversized length fields, DATA outside the disk
// ---------------------------------------------------------------------------------------------

/// Hostile but authenticated senders against one receiver process, at once, each on a disk
/// of its own: floods of tiny DATA frames with bad digests and of frames only a receiver may
/// send, a 4 GiB length field before and after HELLO, DATA past the disk's end, a DATA frame
/// that stops half way. Each session ends with an ERROR, nothing is written, the process
/// stays within its memory bound, and a proper client is served afterwards. A flood of valid
/// 1-byte frames is written and acknowledged exactly, with bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_end_sessions_of_a_receiver_process_without_writing() {
    const SIZE: u64 = MIB + 4096;
    const FLOOD: usize = 20_000;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ids = [
        "bad_digest",
        "ack_flood",
        "huge_len",
        "past_end",
        "stalled",
        "tiny_ok",
    ];
    let targets: Vec<PathBuf> = ids
        .iter()
        .map(|id| dir.path().join(format!("{id}.img")))
        .collect();
    for t in &targets {
        make_target(t, SIZE);
    }
    let disks: Vec<(&str, &Path)> = ids
        .iter()
        .copied()
        .zip(targets.iter().map(PathBuf::as_path))
        .collect();
    let mut rx = ReceiverProc::start(
        &pki,
        &disks,
        &["--handshake-timeout", "5", "--idle-timeout", "3"],
    );
    let addr = rx.addr;
    let started = Instant::now();

    // 20 000 DATA frames of one byte whose digests do not match.
    let bad_digest = async {
        let mut flood = Vec::with_capacity(FLOOD * 57);
        for i in 0..FLOOD as u64 {
            let mut frame = data_frame(0, Encoding::Raw, i * 7 % SIZE, &[1], &[1]);
            *frame.last_mut().unwrap() = 2;
            flood.extend_from_slice(&frame);
        }
        let frames = hostile(&pki, addr, "bad_digest", SIZE, flood).await;
        let msg = ends_with_error(&frames, "SMS.2011", "bad-digest flood");
        assert!(
            frames
                .iter()
                .all(|f| !matches!(f, Frame::Ack(a) if a.frames > 0)),
            "a chunk with a bad digest was acknowledged: {frames:?}"
        );
        assert!(
            msg.contains("bad_digest"),
            "the error names the disk: {msg}"
        );
    };
    // 20 000 ACK frames: a type only the receiver sends.
    let ack_flood = async {
        let mut flood = BytesMut::new();
        for i in 0..FLOOD as u64 {
            Frame::Ack(blockrep_proto::Ack {
                frames: i,
                bytes: i,
            })
            .encode(&mut flood);
        }
        let frames = hostile(&pki, addr, "ack_flood", SIZE, flood.to_vec()).await;
        ends_with_error(&frames, "SMS.2011", "ACK flood");
    };
    // A DATA header announcing a 4 GiB body: refused from the header, nothing reserved.
    let huge_len = async {
        let mut frame = vec![0x10, 0, 0, 0];
        frame.extend_from_slice(&u32::MAX.to_be_bytes());
        let frames = hostile(&pki, addr, "huge_len", SIZE, frame).await;
        ends_with_error(&frames, "SMS.2011", "4 GiB DATA length");
    };
    // The same before HELLO: a HELLO header announcing 4 GiB.
    let huge_hello = async {
        let connector = tokio_rustls::TlsConnector::from(pki.client());
        let mut tls = tls_connect(&connector, addr).await.expect("TLS handshake");
        let mut frame = vec![0x01, 0, 0, 0];
        frame.extend_from_slice(&u32::MAX.to_be_bytes());
        tls.write_all(&frame).await.expect("send the header");
        let got = Frames::new(tls).until_closed(10).await;
        ends_with_error(&got, "SMS.2011", "4 GiB HELLO length");
    };
    // DATA at the disk's end, and at an offset that overflows.
    let past_end = async {
        let raw = vec![7u8; 4096];
        let mut bytes = data_frame(0, Encoding::Raw, SIZE, &raw, &raw);
        bytes.extend(data_frame(0, Encoding::Raw, u64::MAX - 100, &raw, &raw));
        let frames = hostile(&pki, addr, "past_end", SIZE, bytes).await;
        ends_with_error(&frames, "SMS.2011", "DATA past the disk's end");
    };
    // A DATA header announcing the largest body allowed, 4 KiB of it, then silence: the
    // receiver buffers one frame at most and closes the session at its idle timeout.
    let stalled = async {
        let mut bytes = vec![0x10, 0, 0, 0];
        bytes.extend_from_slice(&consts::MAX_FRAME_BODY.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 4096]);
        let frames = hostile(&pki, addr, "stalled", SIZE, bytes).await;
        let msg = ends_with_error(&frames, "SMS.1908", "stalled DATA frame");
        assert!(msg.contains("no frame"), "{msg}");
    };
    // 20 000 valid DATA frames of one byte, each rewriting a byte the target already holds,
    // then END: all acknowledged, DONE counts them, and the target's bytes are unchanged.
    let tiny_ok = async {
        let mut flood = Vec::with_capacity(FLOOD * 57 + 25);
        for i in 0..FLOOD as u64 {
            flood.extend(data_frame(
                0,
                Encoding::Raw,
                i * 4099 % SIZE,
                &[0xa5],
                &[0xa5],
            ));
        }
        let mut end = BytesMut::new();
        Frame::End(blockrep_proto::End {
            complete: true,
            frames: FLOOD as u64,
            bytes: FLOOD as u64,
        })
        .encode(&mut end);
        flood.extend_from_slice(&end);
        let t = Instant::now();
        let frames = hostile(&pki, addr, "tiny_ok", SIZE, flood).await;
        let acks = frames.iter().filter(|f| matches!(f, Frame::Ack(_))).count();
        eprintln!(
            "faults: {FLOOD} valid 1-byte DATA frames written in {:.2} s with {acks} ACKs",
            t.elapsed().as_secs_f64()
        );
        match frames.last() {
            Some(Frame::Done(d)) => {
                assert_eq!((d.frames, d.bytes), (FLOOD as u64, FLOOD as u64), "{d:?}");
            }
            other => panic!("expected DONE after the tiny-frame flood, got {other:?}"),
        }
    };
    tokio::join!(bad_digest, ack_flood, huge_len, huge_hello, past_end, stalled, tiny_ok);
    eprintln!(
        "faults: hostile sessions took {:.2} s",
        started.elapsed().as_secs_f64()
    );

    rx.assert_alive("after the hostile sessions");
    for t in &targets {
        let bytes = std::fs::read(t).unwrap();
        assert_eq!(bytes.len() as u64, SIZE);
        assert!(
            bytes.iter().all(|&b| b == 0xa5),
            "{} was changed by a hostile session",
            t.display()
        );
    }
    let hwm = rx.peak_memory();
    eprintln!(
        "faults: receiver VmHWM {:.1} MiB after floods and hostile frames",
        mib(hwm)
    );
    assert!(
        hwm < MEMORY_BOUND,
        "the receiver's peak memory is {:.1} MiB after hostile sessions",
        mib(hwm)
    );

    // A proper client is served, on a disk a hostile session used.
    let src = dir.path().join("src.img");
    make_image(&src, &[Region::Random(SIZE / 2), Region::Text(SIZE / 2)], 3);
    replicate(&pki, addr, "bad_digest", &src, &targets[0]).await;
    rx.assert_alive("after a proper replication");
}

// ---------------------------------------------------------------------------------------------
// 3. Target out of space
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("blockrep-faults")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a receiver killed mid-write): detach it lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A target image file bigger than the free space of the filesystem holding it (a 2 MiB tmpfs
/// under a sparse 6 MiB file): the sender fails with SMS.0519 naming the disk, while the same
/// receiver completes a session to another disk at the same time, serves another one after,
/// and refuses the full disk again the same way (it was released, not left busy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_out_of_space_is_sms_0519_and_other_disks_are_served() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let _mount = match TmpfsMount::mount(&small, "2m") {
        Ok(m) => m,
        Err(e) => {
            skip(
                "target_out_of_space_is_sms_0519_and_other_disks_are_served",
                format_args!("{e} (needs root and tmpfs)"),
            );
            return;
        }
    };
    // Random data: nothing compresses, no zero chunk is punched instead of written.
    let (src, full) = (dir.path().join("big.img"), small.join("vol.img"));
    let size = make_image(&src, &[Region::Random(6 * MIB)], 21);
    std::fs::File::create(&full).unwrap().set_len(size).unwrap();
    let (spare_src, spare) = (
        dir.path().join("spare-src.img"),
        dir.path().join("spare.img"),
    );
    let spare_size = make_image(
        &spare_src,
        &[Region::Random(MIB), Region::Text(MIB), Region::Zeros(MIB)],
        22,
    );
    make_target(&spare, spare_size);
    // Disk ids that appear in no path, so a message that names the disk names its id.
    let mut rx = ReceiverProc::start(
        &pki,
        &[("bigdata", &full), ("sparedisk", &spare)],
        &["--idle-timeout", "10"],
    );
    let addr = rx.addr;

    let line = fails_beside_a_served_disk(
        &pki,
        addr,
        ("bigdata", &src, "SMS.0519"),
        ("sparedisk", &spare_src, &spare),
    )
    .await;
    eprintln!("faults: out of space: {line}");
    assert!(line.contains("no space"), "{line}");
    rx.assert_alive("after running out of space");

    // The full disk was released: the CLI gets the same one-line SMS.0519 again, not "busy".
    let mut cli = send_cli(&pki, addr, "bigdata", &src);
    let out = tokio::task::spawn_blocking(move || process::run(&mut cli))
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "blockrep send succeeded on a full target"
    );
    let stderr = out.stderr;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    assert!(lines[0].starts_with("error SMS.0519: "), "{stderr}");
    assert!(lines[0].contains("bigdata"), "names the disk id: {stderr}");

    // And another session to the other disk afterwards.
    make_target(&spare, spare_size);
    replicate(&pki, addr, "sparedisk", &spare_src, &spare).await;
    rx.assert_alive("after a later session");
    drop(rx); // before the tmpfs is unmounted
}

// ---------------------------------------------------------------------------------------------
// 4. Target device fails writes
// ---------------------------------------------------------------------------------------------

/// Runs a setup command with a 30 s bound; its stdout on success.
fn run_tool(cmd: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{what}: {e}"))?;
    }
    let start = Instant::now();
    for _ in 0..3_000 {
        if let Some(_status) = child.try_wait().map_err(|e| e.to_string())? {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            } else {
                Err(format!(
                    "{what} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            };
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("{what} did not finish within 30 s"))
}

/// A block device made read-only (BLKROSET), made read-write again when dropped: the flag
/// outlives a loop device's attachment, and the next user of the device must not inherit it.
struct ReadOnly<'a>(&'a Path);

impl<'a> ReadOnly<'a> {
    fn set(dev: &'a Path) -> Self {
        run_tool(Command::new("blockdev").arg("--setro").arg(dev), None).expect("blockdev --setro");
        Self(dev)
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = run_tool(Command::new("blockdev").arg("--setrw").arg(self.0), None);
    }
}

/// A device-mapper device, removed when dropped.
struct DmDev {
    name: String,
}

impl DmDev {
    fn path(&self) -> PathBuf {
        Path::new("/dev/mapper").join(&self.name)
    }
}

impl Drop for DmDev {
    fn drop(&mut self) {
        let _ = run_tool(
            Command::new("dmsetup").args(["remove", "--noudevsync", "--retry", &self.name]),
            None,
        );
        let _ = std::fs::remove_file(self.path());
    }
}

/// Why device-mapper cannot be used here, if it cannot. Checks /proc/misc first: running
/// dmsetup on a kernel without device-mapper would leave a /dev/mapper/control behind.
fn dm_unavailable() -> Option<String> {
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    if !misc
        .lines()
        .any(|l| l.trim_end().ends_with(" device-mapper"))
    {
        return Some("the kernel has no device-mapper (not in /proc/misc)".into());
    }
    for tool in ["dmsetup", "losetup"] {
        if let Err(e) = run_tool(Command::new(tool).arg("--version"), None) {
            return Some(format!("{tool} is not usable: {e}"));
        }
    }
    None
}

/// A target device whose first 2 MiB work and whose next 2 MiB return EIO (dm linear + error
/// over a loop device): the sender fails with SMS.2007 naming the disk, while the same receiver
/// serves another disk at the same time and afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_device_eio_is_sms_2007_and_other_disks_are_served() {
    if let Some(why) = dm_unavailable() {
        skip(
            "target_device_eio_is_sms_2007_and_other_disks_are_served",
            why,
        );
        return;
    }
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(2 * MIB)
        .unwrap();
    let lo = match disks::Loop::attach(&backing, 0, 2 * MIB, false) {
        Ok(lo) => lo,
        Err(e) => {
            skip(
                "target_device_eio_is_sms_2007_and_other_disks_are_served",
                e,
            );
            return;
        }
    };
    let name = format!("blockrep-faults-{}", std::process::id());
    // 512-byte sectors: [0, 2 MiB) on the loop device, [2 MiB, 4 MiB) fails every I/O.
    let table = format!("0 4096 linear {} 0\n4096 4096 error\n", lo.dev.display());
    if let Err(e) = run_tool(
        Command::new("dmsetup").args(["create", "--noudevsync", &name]),
        Some(&table),
    ) {
        skip(
            "target_device_eio_is_sms_2007_and_other_disks_are_served",
            e,
        );
        return;
    }
    let dm = DmDev { name };
    // Without udev, make the /dev/mapper node ourselves.
    let _ = run_tool(Command::new("dmsetup").args(["mknodes", &dm.name]), None);
    assert!(
        dm.path().exists(),
        "{} was not created",
        dm.path().display()
    );

    let src = dir.path().join("src.img");
    make_image(&src, &[Region::Random(4 * MIB)], 31);
    let (spare_src, spare) = (
        dir.path().join("spare-src.img"),
        dir.path().join("spare.img"),
    );
    let spare_size = make_image(&spare_src, &[Region::Random(MIB), Region::Text(MIB)], 32);
    make_target(&spare, spare_size);
    let dm_path = dm.path();
    let mut rx = ReceiverProc::start(
        &pki,
        &[("sysdisk", &dm_path), ("sparedisk", &spare)],
        &["--idle-timeout", "10"],
    );
    let addr = rx.addr;
    let line = fails_beside_a_served_disk(
        &pki,
        addr,
        ("sysdisk", &src, "SMS.2007"),
        ("sparedisk", &spare_src, &spare),
    )
    .await;
    eprintln!("faults: EIO: {line}");
    make_target(&spare, spare_size);
    replicate(&pki, addr, "sparedisk", &spare_src, &spare).await;
    rx.assert_alive("after a failing device");
    drop(rx); // releases the device before the guards remove it
    drop(dm);
    drop(lo);
}

/// Without device-mapper, the write failure path still runs on this machine: a loop device
/// that is made read-only (BLKROSET) after the receiver opened it for a session refuses every
/// write (EPERM from the block layer, the same `cannot write target disk` path as EIO). The
/// session ends with ERROR SMS.2007 naming the disk, nothing reaches the device, and the
/// receiver serves another disk afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_device_refusing_writes_is_sms_2007() {
    const SIZE: u64 = MIB;
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    make_target(&backing, SIZE);
    let lo = match disks::Loop::attach(&backing, 0, SIZE, false) {
        Ok(lo) => lo,
        Err(e) => {
            skip("target_device_refusing_writes_is_sms_2007", e);
            return;
        }
    };
    let pki = Pki::new();
    let (spare_src, spare) = (
        dir.path().join("spare-src.img"),
        dir.path().join("spare.img"),
    );
    let spare_size = make_image(&spare_src, &[Region::Random(MIB), Region::Text(MIB)], 41);
    make_target(&spare, spare_size);
    let mut rx = ReceiverProc::start(
        &pki,
        &[("sysdisk", &lo.dev), ("sparedisk", &spare)],
        &["--idle-timeout", "10"],
    );
    let addr = rx.addr;

    let connector = tokio_rustls::TlsConnector::from(pki.client());
    let mut tls = tls_connect(&connector, addr).await.expect("TLS handshake");
    tls.write_all(&hello("sysdisk", SIZE)).await.unwrap();
    let mut frames = Frames::new(tls);
    match frames.next().await {
        Some(Frame::Welcome(_)) => {}
        other => panic!("expected WELCOME, got {other:?}"),
    }
    // The receiver holds the device open for writing; now it refuses writes.
    let read_only = ReadOnly::set(&lo.dev);
    let raw = vec![0x3cu8; 64 << 10];
    let mut bytes = Vec::new();
    for i in 0..4 {
        bytes.extend(data_frame(
            0,
            Encoding::Raw,
            i * raw.len() as u64,
            &raw,
            &raw,
        ));
    }
    frames.rd.write_all(&bytes).await.unwrap();
    let got = frames.until_closed(100).await;
    let msg = ends_with_error(&got, "SMS.2007", "write to a read-only device");
    eprintln!("faults: write refused: SMS.2007 {msg}");
    assert!(
        msg.contains("sysdisk"),
        "the error does not name the disk id sysdisk (the receiver names only the path): {msg}"
    );
    assert!(
        got.iter()
            .all(|f| !matches!(f, Frame::Ack(a) if a.frames > 0)),
        "a refused write was acknowledged: {got:?}"
    );
    drop(frames);
    rx.assert_alive("after a refused write");
    replicate(&pki, addr, "sparedisk", &spare_src, &spare).await;
    drop(rx);
    drop(read_only);
    drop(lo);
    let bytes = std::fs::read(&backing).unwrap();
    assert!(
        bytes.iter().all(|&b| b == 0xa5),
        "a write reached the read-only device"
    );
}
