//! TLS over loopback: raw rustls with blockrep's own configuration (ring, TLS 1.3, mutual
//! authentication) against a whole blockrep session moving the same number of bytes.
//!
//!     cargo bench --bench tls
//!
//! - `tls_loopback/rustls_raw_256MiB`: a tokio-rustls client writes 256 MiB in 1 MiB writes to
//!   a server that reads and discards; the time runs from connect to the server having read
//!   the last byte and closed (handshake included, about a millisecond).
//! - `tls_loopback/blockrep_full_256MiB`: `sender::send` in full mode of a 256 MiB random
//!   image (a tempdir under /var/tmp; in the page cache after the first iteration) to an
//!   in-process receiver writing a sparse target file (truncated and made sparse again,
//!   untimed, before every iteration); the time is the whole send, fdatasyncs included.
//!
//! Certificates (fresh, from `blockrep::certs`), TLS configurations (`blockrep::tls`), the
//! image and the receiver are set up once per bench; every iteration is a new connection.
//! Both ends share the process and the machine's cores.

#[path = "util/mod.rs"]
mod util;

use std::collections::BTreeMap;
use std::fs::File;
use std::time::{Duration, Instant};

use blockrep::sender::{self, Control, Mode};
use blockrep::{certs, tls, ReceiverConfig, SendConfig, SourceSpec};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TOTAL: u64 = 256 << 20;
const WRITE: usize = 1 << 20;

/// The suite blockrep's configurations are expected to negotiate.
const SUITE: rustls::CipherSuite = rustls::CipherSuite::TLS13_AES_256_GCM_SHA384;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn scratch_dir() -> tempfile::TempDir {
    // Not tmpfs: the image and target live on the real disk, like the loopback script's.
    tempfile::Builder::new()
        .prefix("blockrep-tls-bench")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn config(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("tls_loopback");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12))
        .throughput(Throughput::Bytes(TOTAL));
    g
}

fn rustls_raw(c: &mut Criterion) {
    let dir = scratch_dir();
    let pki = certs::generate(&[])
        .unwrap()
        .write(&dir.path().join("certs"))
        .unwrap();
    let server = tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca).unwrap();
    let client = tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key).unwrap();
    let rt = runtime();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    // Reads and discards each connection to its end, then says how much it read.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, rustls::CipherSuite)>();
    rt.spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut s = acceptor.accept(tcp).await.unwrap();
            let suite = s.get_ref().1.negotiated_cipher_suite().unwrap().suite();
            let mut buf = vec![0u8; WRITE];
            let mut n = 0u64;
            loop {
                match s.read(&mut buf).await.unwrap() {
                    0 => break,
                    k => n += k as u64,
                }
            }
            s.shutdown().await.unwrap();
            done_tx.send((n, suite)).unwrap();
        }
    });
    let connector = TlsConnector::from(client);
    let name = ServerName::try_from("localhost").unwrap();
    let data = vec![0x5au8; WRITE];
    let transfer = || {
        let start = Instant::now();
        let suite = rt.block_on(async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut s = connector.connect(name.clone(), tcp).await.unwrap();
            let suite = s.get_ref().1.negotiated_cipher_suite().unwrap().suite();
            let mut sent = 0u64;
            while sent < TOTAL {
                s.write_all(&data).await.unwrap();
                sent += WRITE as u64;
            }
            s.shutdown().await.unwrap();
            // Read to the server's close: it consumes the session tickets the server sent
            // after the handshake (closing with them unread would reset the connection) and
            // waits for the server to have read everything.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            suite
        });
        let (read, server_suite) = done_rx.recv().unwrap();
        let t = start.elapsed();
        assert_eq!(read, TOTAL);
        assert_eq!((suite, server_suite), (SUITE, SUITE));
        t
    };
    transfer(); // the first connection, and a check of the suite, before criterion's warm-up
    let mut g = config(c);
    g.bench_function("rustls_raw_256MiB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| transfer()).sum())
    });
    g.finish();
}

fn blockrep_full(c: &mut Criterion) {
    let dir = scratch_dir();
    let pki = certs::generate(&[])
        .unwrap()
        .write(&dir.path().join("certs"))
        .unwrap();
    let (src, dst) = (dir.path().join("source.img"), dir.path().join("target.img"));
    util::random_image(&src, TOTAL);
    File::create(&dst).unwrap().set_len(TOTAL).unwrap();
    let server = tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca).unwrap();
    let client = tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key).unwrap();
    let rt = runtime();
    let mut disks = BTreeMap::new();
    disks.insert("d0".to_string(), dst.clone());
    let rc = ReceiverConfig::new(server, disks);
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver = rt.spawn(blockrep::serve(listener, rc, async {
        let _ = stop_rx.await;
    }));
    let mut round = 0u64;
    let mut transfer = || {
        round += 1;
        // A fresh sparse target every time (untimed).
        let f = std::fs::OpenOptions::new().write(true).open(&dst).unwrap();
        f.set_len(0).unwrap();
        f.set_len(TOTAL).unwrap();
        drop(f);
        let mut cfg = SendConfig::new(
            addr.to_string(),
            client.clone(),
            vec![SourceSpec::new("d0", &src)],
        );
        cfg.mode = Mode::Full;
        cfg.block_size = 1 << 20;
        cfg.session_id = format!("tls-bench-{}-{round}", std::process::id());
        let start = Instant::now();
        let summary = rt.block_on(sender::send(cfg, Control::new())).unwrap();
        let t = start.elapsed();
        assert!(summary.complete, "{summary:?}");
        t
    };
    transfer();
    let mut g = config(c);
    g.bench_function("blockrep_full_256MiB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| transfer()).sum())
    });
    g.finish();
    let _ = stop_tx.send(());
    let _ = rt.block_on(receiver);
}

criterion_group!(benches, rustls_raw, blockrep_full);
criterion_main!(benches);
