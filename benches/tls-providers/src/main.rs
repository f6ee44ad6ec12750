//! Raw rustls TLS 1.3 throughput over loopback, per crypto provider (ring, aws-lc-rs) and
//! cipher suite (AES-256-GCM, AES-128-GCM, CHACHA20-POLY1305).
//!
//!     cargo run --release -- [--bytes 4G] [--runs 3]
//!
//! Each run: a server thread accepts one connection on 127.0.0.1 and reads and discards until
//! the client's close_notify; a client thread connects, writes `--bytes` in 1 MiB writes and
//! closes. The time runs from connect to the server having read the last byte (the handshake,
//! about a millisecond, included). Only the one suite is offered, so the one under test is
//! the one negotiated (checked on both ends). Runs go round-robin over the six combinations,
//! so slow drift in the machine's load hits them alike. The table gives the median and the
//! best rate, and the process's CPU time (getrusage, both ends) per GB: on a shared machine the
//! CPU cost is steadier than the wall-clock rate.
//! Certificates: a self-signed ECDSA P-256 server certificate from rcgen (server
//! authentication only: client authentication costs nothing once the handshake is over).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use rustls::crypto::{aws_lc_rs, ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
    SupportedCipherSuite,
};

const WRITE: usize = 1 << 20;

struct Case {
    provider: &'static str,
    suite: &'static str,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    expect: rustls::CipherSuite,
}

fn parse_bytes(s: &str) -> u64 {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .expect("--bytes: a number, optionally with K, M or G")
        * mul
}

fn case(
    provider: &'static str,
    base: CryptoProvider,
    suite_name: &'static str,
    suite: SupportedCipherSuite,
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
) -> Case {
    let p = Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        ..base
    });
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let client = ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.clone_key())
        .unwrap();
    Case {
        provider,
        suite: suite_name,
        client: Arc::new(client),
        server: Arc::new(server),
        expect: suite.suite(),
    }
}

/// User + system CPU seconds of this process so far (both threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The 1-minute load average.
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One transfer of `total` bytes: (wall seconds, CPU seconds of both ends).
fn run(case: &Case, total: u64) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_config = case.server.clone();
    let expect = case.expect;
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_nodelay(true).unwrap();
        let conn = ServerConnection::new(server_config).unwrap();
        let mut s = StreamOwned::new(conn, tcp);
        let mut buf = vec![0u8; WRITE];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                k => n += k as u64,
            }
        }
        assert_eq!(s.conn.negotiated_cipher_suite().unwrap().suite(), expect);
        n
    });
    let data = vec![0x5au8; WRITE];
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let conn = ClientConnection::new(
        case.client.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(WRITE as u64) as usize;
        s.write_all(&data[..n]).unwrap();
        sent += n as u64;
    }
    s.conn.send_close_notify();
    s.flush().unwrap();
    assert_eq!(s.conn.negotiated_cipher_suite().unwrap().suite(), expect);
    s.sock.shutdown(Shutdown::Write).unwrap();
    let read = server.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(read, total);
    (secs, cpu)
}

fn main() {
    let mut total = 4u64 << 30;
    let mut runs = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bytes" => total = parse_bytes(&args.next().expect("--bytes N[K|M|G]")),
            "--runs" => runs = args.next().expect("--runs N").parse().expect("--runs N"),
            "-h" | "--help" => {
                println!("usage: tls-providers [--bytes N[K|M|G]] [--runs N]");
                return;
            }
            other => panic!("unknown argument {other:?}"),
        }
    }
    assert!(runs > 0 && total > 0);

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));

    let cases = vec![
        case(
            "ring",
            ring::default_provider(),
            "TLS13_AES_256_GCM_SHA384",
            ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            &cert,
            &key,
        ),
        case(
            "ring",
            ring::default_provider(),
            "TLS13_AES_128_GCM_SHA256",
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            &cert,
            &key,
        ),
        case(
            "ring",
            ring::default_provider(),
            "TLS13_CHACHA20_POLY1305_SHA256",
            ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            &cert,
            &key,
        ),
        case(
            "aws-lc-rs",
            aws_lc_rs::default_provider(),
            "TLS13_AES_256_GCM_SHA384",
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            &cert,
            &key,
        ),
        case(
            "aws-lc-rs",
            aws_lc_rs::default_provider(),
            "TLS13_AES_128_GCM_SHA256",
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            &cert,
            &key,
        ),
        case(
            "aws-lc-rs",
            aws_lc_rs::default_provider(),
            "TLS13_CHACHA20_POLY1305_SHA256",
            aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            &cert,
            &key,
        ),
    ];

    // Warm-up: a short transfer per case (page faults, thread start, CPU frequency).
    for c in &cases {
        run(c, 64 << 20);
    }
    let mut wall = vec![Vec::with_capacity(runs); cases.len()];
    let mut cpu = vec![Vec::with_capacity(runs); cases.len()];
    let mut loads = Vec::new();
    for r in 0..runs {
        for (i, c) in cases.iter().enumerate() {
            let l = load();
            let (t, u) = run(c, total);
            eprintln!(
                "run {}/{runs}: {} {}: {t:.3} s, {:.3} GB/s, {:.2} CPU s/GB, load {l:.2}",
                r + 1,
                c.provider,
                c.suite,
                total as f64 / t / 1e9,
                u / (total as f64 / 1e9)
            );
            loads.push(l);
            wall[i].push(t);
            cpu[i].push(u);
        }
    }

    let gb = total as f64 / 1e9;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!(
        "{total} bytes per run ({:.2} GiB) in 1 MiB writes, TLS 1.3, 127.0.0.1, one client and \
         one server thread; {runs} runs each, round-robin; 1-minute load {:.2} .. {:.2}\n",
        total as f64 / (1u64 << 30) as f64,
        loads.iter().cloned().fold(f64::MAX, f64::min),
        loads.iter().cloned().fold(0.0, f64::max),
    );
    println!("| provider | suite | GB/s (median) | GB/s (best) | CPU s per GB, both ends (median) | runs (GB/s) |");
    println!("|---|---|---|---|---|---|");
    for (i, c) in cases.iter().enumerate() {
        let rates: Vec<String> = wall[i].iter().map(|s| format!("{:.2}", gb / s)).collect();
        let best = wall[i].iter().cloned().fold(f64::MAX, f64::min);
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} |",
            c.provider,
            c.suite,
            gb / median(&wall[i]),
            gb / best,
            median(&cpu[i]) / gb,
            rates.join(" ")
        );
    }
}
