//! Replication throughput over a simulated WAN: full mode of a random image, sender and
//! receiver in this process over mutual TLS on 127.0.0.1, (a) directly and (b) through an
//! in-process TCP proxy that delays every byte by 25 ms in each direction (50 ms RTT) without
//! limiting bandwidth. Prints a Markdown table for BENCHMARKS.md.
//!
//!     cargo bench --bench wan
//!
//! Environment: `WAN_RUNS` (runs per row, default 3; the median is reported), `WAN_SIZE_MIB`
//! (image size for every row; default 1024 MiB unlimited, 512 MiB at 400 Mbit/s),
//! `WAN_DELAY_MS` (one-way delay, default 25). Run without `--bench` (`cargo test --benches`)
//! it is a smoke run: 16 MiB images, one run per row.
//!
//! Rows: 400 Mbit/s (`Rules::parse("00:00-23:59=400")`) and unlimited; the default window,
//! a 256 MiB window, and 2 and 4 streams (`SendConfig::streams`). At 400 Mbit/s the direct
//! transfer is measured once and is (a) for every limited row. A last line gives the proxy
//! with no delay, to tell its own cost from the delay's.
//!
//! The proxy reads each side in 256 KiB reads into timestamped chunks and forwards every chunk
//! once its delay has passed, reading on meanwhile: a queue per direction, bounded to 64 MiB
//! (when full it stops reading that side: backpressure). TCP_NODELAY on all its sockets; it
//! runs on its own runtime thread. The delay is applied above TCP: the kernel's TCP on either
//! side still sees loopback round trips, so this shows what the application protocol (window,
//! acknowledgements, handshakes) makes of the latency, not TCP congestion control over a WAN.
//! Before the table, the proxy is checked with plain TCP: its throughput with no delay and
//! with the delay, and the round trip it produces.
//!
//! Every run writes a fresh sparse target under /var/tmp; the source image (xorshift data,
//! incompressible) is made once. The rate is the sender's wire bytes (TLS ciphertext written
//! to the socket, `SendSummary::wire_bytes`) over the wall time of the whole `sender::send`
//! (connect, handshake and the final fdatasyncs included).

#[path = "util/mod.rs"]
mod util;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockrep::sender::{self, Control, Mode};
use blockrep::throttle::Throttle;
use blockrep::{certs, tls, ReceiverConfig, SendConfig, SourceSpec};
use blockrep_rate::Rules;
use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

const MIB: u64 = 1 << 20;
/// The rate limit of the limited rows, Mbit/s.
const LIMIT_MBPS: u32 = 400;
/// Proxy: bytes per read.
const READ_BUF: usize = 256 << 10;
/// Proxy: bytes queued per direction at most.
const QUEUE_CAP: usize = 64 << 20;

// ---------------------------------------------------------------------------------------
// The delaying proxy.

/// A proxy on 127.0.0.1 forwarding to `upstream` with `delay` each way; stops when dropped.
struct DelayProxy {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl DelayProxy {
    fn start(upstream: SocketAddr, delay: Duration) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wan-proxy")
            .enable_all()
            .build()
            .unwrap();
        // Bound without blocking on `rt`: the caller may be inside another runtime.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = {
            let _in_rt = rt.enter();
            TcpListener::from_std(std_listener).unwrap()
        };
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = relay(client, server, delay).await;
                    }
                });
            }
        });
        Self { addr, rt: Some(rt) }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn relay(a: TcpStream, b: TcpStream, delay: Duration) -> std::io::Result<()> {
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    // The first error (a reset, say) ends both directions; a clean EOF is passed on, delayed.
    tokio::try_join!(one_way(ar, bw, delay), one_way(br, aw, delay))?;
    Ok(())
}

/// Reads `r` into timestamped chunks and writes each to `w` once `delay` has passed since it
/// was read. `None` is the end of the stream, delayed like the data before it.
async fn one_way(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    delay: Duration,
) -> std::io::Result<()> {
    let budget = Semaphore::new(QUEUE_CAP);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Bytes>)>();
    let reader = async {
        let mut buf = BytesMut::new();
        loop {
            // Room for a whole read first; what the read did not use is given back.
            budget
                .acquire_many(READ_BUF as u32)
                .await
                .map_err(std::io::Error::other)?
                .forget();
            buf.reserve(READ_BUF);
            let n = {
                let mut room = (&mut buf).limit(READ_BUF);
                r.read_buf(&mut room).await?
            };
            budget.add_permits(READ_BUF - n);
            let at = Instant::now() + delay;
            if n == 0 {
                let _ = tx.send((at, None));
                return Ok::<(), std::io::Error>(());
            }
            if tx.send((at, Some(buf.split().freeze()))).is_err() {
                return Ok(());
            }
        }
    };
    let writer = async {
        while let Some((due, data)) = rx.recv().await {
            // (A deadline already past is not waited for: the timer would round it up to
            // the next millisecond.)
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            match data {
                Some(data) => {
                    w.write_all(&data).await?;
                    budget.add_permits(data.len());
                }
                None => break,
            }
        }
        w.shutdown().await
    };
    tokio::try_join!(reader, writer)?;
    Ok(())
}

/// Plain TCP, through a proxy with `delay` when given: (bytes per second for `bytes` one way,
/// median round trip of a 1-byte ping-pong).
fn proxy_check(delay: Option<Duration>, bytes: u64) -> (f64, Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A sink that answers every 1-byte message in ping mode and counts the rest.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let proxy = delay.map(|d| DelayProxy::start(upstream, d));
        let target = proxy.as_ref().map_or(upstream, |p| p.addr);
        let received = Arc::new(AtomicU64::new(0));
        let rec = received.clone();
        let server = tokio::spawn(async move {
            // First connection: ping-pong; second: bulk.
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).await.is_ok() {
                s.write_all(&b).await.unwrap();
            }
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => rec.fetch_add(n as u64, Relaxed),
                };
            }
            Instant::now()
        });
        let mut c = TcpStream::connect(target).await.unwrap();
        c.set_nodelay(true).unwrap();
        let mut rtts = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            c.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
            rtts.push(t.elapsed());
        }
        drop(c);
        rtts.sort();
        let mut c = TcpStream::connect(target).await.unwrap();
        c.set_nodelay(true).unwrap();
        let block = vec![0x5au8; 1 << 20];
        let start = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            c.write_all(&block).await.unwrap();
            sent += block.len() as u64;
        }
        c.shutdown().await.unwrap();
        let end = server.await.unwrap();
        assert_eq!(received.load(Relaxed), sent);
        (
            sent as f64 / (end - start).as_secs_f64(),
            rtts[rtts.len() / 2],
        )
    })
}

// ---------------------------------------------------------------------------------------
// Transfers.

#[derive(Clone, Copy, PartialEq)]
struct Setup {
    /// Mbit/s; `None` = unlimited.
    limit: Option<u32>,
    /// `SendConfig::window`; `None` = the default.
    window: Option<u64>,
    /// Parallel TLS connections per transfer.
    streams: usize,
}

struct Bench {
    dir: PathBuf,
    pki: certs::PkiFiles,
    rt: tokio::runtime::Runtime,
    runs: usize,
    delay: Duration,
}

/// One transfer's result: seconds, wire bytes.
type Sample = (f64, u64);

impl Bench {
    /// One full-mode transfer of `src` (`size` bytes) to a fresh sparse target, through a
    /// proxy with `delay` when given.
    fn transfer(&self, src: &Path, size: u64, setup: Setup, delay: Option<Duration>) -> Sample {
        let dst = self.dir.join("target.img");
        let _ = std::fs::remove_file(&dst);
        File::create(&dst).unwrap().set_len(size).unwrap();
        let pki = &self.pki;
        let sample = self.rt.block_on(async {
            let server = tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca).unwrap();
            let mut disks = BTreeMap::new();
            disks.insert("d0".to_string(), dst.clone());
            let rc = ReceiverConfig::new(server, disks);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let rx = tokio::spawn(blockrep::serve(listener, rc, async {
                let _ = stopped.await;
            }));
            let proxy = delay.map(|d| DelayProxy::start(addr, d));
            let target = proxy.as_ref().map_or(addr, |p| p.addr);
            let client = tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key).unwrap();
            let mut c =
                SendConfig::new(target.to_string(), client, vec![SourceSpec::new("d0", src)]);
            c.mode = Mode::Full;
            c.block_size = 1 << 20;
            if let Some(w) = setup.window {
                c.window = w;
            }
            c.streams = setup.streams;
            let rules = match setup.limit {
                Some(mbps) => Rules::parse(&format!("00:00-23:59={mbps}")).unwrap(),
                None => Rules::unlimited(),
            };
            c.limits = Throttle::new(rules);
            let start = Instant::now();
            let summary = sender::send(c, Control::new()).await.unwrap();
            let secs = start.elapsed().as_secs_f64();
            assert!(summary.complete, "transfer incomplete");
            assert_eq!(summary.acked_bytes, size);
            let _ = stop.send(());
            let _ = rx.await;
            drop(proxy);
            (secs, summary.wire_bytes)
        });
        std::fs::remove_file(&dst).unwrap();
        sample
    }

    fn samples(&self, src: &Path, size: u64, setup: Setup, delay: Option<Duration>) -> Vec<Sample> {
        (0..self.runs)
            .map(|_| self.transfer(src, size, setup, delay))
            .collect()
    }
}

/// The median run (by time) of `s`.
fn median(s: &[Sample]) -> Sample {
    let mut v = s.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v[v.len() / 2]
}

fn rate(s: Sample) -> f64 {
    s.1 as f64 / s.0 / 1e6
}

fn times(s: &[Sample]) -> String {
    s.iter()
        .map(|(t, _)| format!("{t:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // Under `cargo test --benches` (no `--bench`): a quick smoke run unless told otherwise.
    let smoke = !args.iter().any(|a| a == "--bench");
    let runs = env_u64("WAN_RUNS")
        .unwrap_or(if smoke { 1 } else { 3 })
        .max(1) as usize;
    let size_env = env_u64("WAN_SIZE_MIB").or(smoke.then_some(16));
    let size_unlimited = size_env.unwrap_or(1024) * MIB;
    let size_limited = size_env.unwrap_or(512) * MIB;
    let delay = Duration::from_millis(env_u64("WAN_DELAY_MS").unwrap_or(25));

    // The proxy alone, plain TCP.
    let check_bytes = if smoke { 64 * MIB } else { 2048 * MIB };
    let (bare, rtt_bare) = proxy_check(None, check_bytes);
    let (fast, rtt0) = proxy_check(Some(Duration::ZERO), check_bytes);
    let (slow, rtt) = proxy_check(Some(delay), check_bytes);
    println!(
        "proxy check (plain TCP, {} MiB one way): no proxy {:.0} MB/s ({:.1} Gbit/s), RTT {:.2} ms; \
         proxy, no delay {:.0} MB/s ({:.1} Gbit/s), RTT {:.2} ms; \
         proxy, {} ms each way {:.0} MB/s ({:.1} Gbit/s), RTT {:.1} ms\n",
        check_bytes / MIB,
        bare / 1e6,
        bare * 8.0 / 1e9,
        rtt_bare.as_secs_f64() * 1e3,
        fast / 1e6,
        fast * 8.0 / 1e9,
        rtt0.as_secs_f64() * 1e3,
        delay.as_millis(),
        slow / 1e6,
        slow * 8.0 / 1e9,
        rtt.as_secs_f64() * 1e3,
    );

    let dir = tempfile::Builder::new()
        .prefix("blockrep-wan-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let pki = certs::generate(&[])
        .unwrap()
        .write(&dir.path().join("c"))
        .unwrap();
    let src_unlimited = dir.path().join("src-unlimited.img");
    util::random_image(&src_unlimited, size_unlimited);
    let src_limited = if size_limited == size_unlimited {
        src_unlimited.clone()
    } else {
        let p = dir.path().join("src-limited.img");
        util::random_image(&p, size_limited);
        p
    };
    let bench = Bench {
        dir: dir.path().to_owned(),
        pki,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        runs,
        delay,
    };

    println!(
        "| limit | window | streams | image | (a) direct MB/s | (a) Mbit/s | (b) {} ms RTT MB/s | (b) Mbit/s | (b)/(a) | runs (a) s | runs (b) s |",
        2 * bench.delay.as_millis()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let variants: [(Option<u64>, usize); 4] =
        [(None, 1), (Some(256 * MIB), 1), (None, 2), (None, 4)];
    for limit in [Some(LIMIT_MBPS), None] {
        let (src, size) = match limit {
            Some(_) => (&src_limited, size_limited),
            None => (&src_unlimited, size_unlimited),
        };
        let mut base: Option<Vec<Sample>> = None;
        for &(window, streams) in &variants {
            let setup = Setup {
                limit,
                window,
                streams,
            };
            // At a fixed limit the direct transfer runs at the limit whatever the window or
            // streams, so it is measured once (default settings) and is (a) for every row.
            let (a, a_own) = match (&base, limit) {
                (Some(a), Some(_)) => (a.clone(), false),
                _ => (bench.samples(src, size, setup, None), true),
            };
            if base.is_none() {
                base = Some(a.clone());
            }
            let b = bench.samples(src, size, setup, Some(bench.delay));
            let (ma, mb) = (median(&a), median(&b));
            println!(
                "| {} | {} | {} | {} MiB | {:.1} | {:.0} | {:.1} | {:.0} | {:.2} | {}{} | {} |",
                limit.map_or("unlimited".to_string(), |m| format!("{m} Mbit/s")),
                window.map_or(
                    format!("{} MiB (default)", sender::DEFAULT_WINDOW / MIB),
                    |w| format!("{} MiB", w / MIB)
                ),
                streams,
                size / MIB,
                rate(ma),
                rate(ma) * 8.0,
                rate(mb),
                rate(mb) * 8.0,
                rate(mb) / rate(ma),
                times(&a),
                if a_own { "" } else { " (first row's)" },
                times(&b),
            );
        }
    }

    // What the proxy costs apart from its delay: the same hop with no delay.
    let setup = Setup {
        limit: None,
        window: None,
        streams: 1,
    };
    let z = bench.samples(&src_unlimited, size_unlimited, setup, Some(Duration::ZERO));
    let mz = median(&z);
    println!(
        "\nunlimited, default window, 1 stream, through the proxy with no delay: {:.1} MB/s ({:.0} Mbit/s); runs {} s",
        rate(mz),
        rate(mz) * 8.0,
        times(&z)
    );
    drop(bench);
}
