//! End-to-end rate limits on real sockets: the measured rate at three limits, and how long a
//! rules change takes to show on the wire. Prints a Markdown table for BENCHMARKS.md.
//!
//!     cargo bench --bench ratelimit
//!
//! Sender and receiver run in this process over mutual TLS on 127.0.0.1; the rate is what the
//! throttle counted on the socket (ciphertext), sampled every 50 ms.

#[path = "util/mod.rs"]
mod util;

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockrep::sender::{self, Control, Mode};
use blockrep::throttle::Throttle;
use blockrep::{certs, tls, ReceiverConfig, SendConfig, SourceSpec};
use blockrep_rate::Rules;

/// Runs one transfer, sampling the socket counter; `change` = (after, new rules).
fn run(
    mbps: u32,
    seconds: f64,
    change: Option<(Duration, &str)>,
) -> (Vec<(f64, u64)>, Option<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::generate(&[])
        .unwrap()
        .write(&dir.path().join("c"))
        .unwrap();
    let size = (f64::from(mbps) * 1e6 / 8.0 * seconds) as u64;
    let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
    util::random_image(&src, size);
    File::create(&dst).unwrap().set_len(size).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca).unwrap();
        let mut disks = BTreeMap::new();
        disks.insert("d0".to_string(), dst.clone());
        let mut rc = ReceiverConfig::new(server, disks);
        rc.once = true;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rx = tokio::spawn(blockrep::serve(listener, rc, std::future::pending()));
        let client = tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key).unwrap();
        let mut c = SendConfig::new(addr.to_string(), client, vec![SourceSpec::new("d0", &src)]);
        c.mode = Mode::Full;
        c.block_size = 1 << 20;
        let rules = format!("00:00-23:59={mbps}");
        let throttle: Arc<Throttle> = Throttle::new(Rules::parse(&rules).unwrap());
        c.limits = throttle.clone();
        let written = throttle.written();
        let start = Instant::now();
        let transfer = tokio::spawn(sender::send(c, Control::new()));
        let mut samples = Vec::new();
        let mut changed_at = None;
        let mut switch_delay = None;
        let mut last = (0.0, 0u64);
        for _ in 0..20_000 {
            if transfer.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t = start.elapsed().as_secs_f64();
            let w = written.load(Relaxed);
            samples.push((t, w));
            if let Some((after, new)) = change {
                if changed_at.is_none() && t >= after.as_secs_f64() {
                    throttle.set_rules(Rules::parse(new).unwrap());
                    changed_at = Some(t);
                } else if let (Some(at), None) = (changed_at, switch_delay) {
                    // The first 50 ms sample running at more than half the new limit.
                    let rate = (w - last.1) as f64 * 8.0 / (t - last.0) / 1e6;
                    if rate > f64::from(mbps) * 5.0 {
                        switch_delay = Some(t - at);
                    }
                }
            }
            last = (t, w);
        }
        transfer.await.unwrap().unwrap();
        let _ = rx.await;
        (samples, switch_delay)
    })
}

/// The rate over every 2 s interval after the first second: (min, max) in Mbit/s.
fn two_second_rates(samples: &[(f64, u64)]) -> (f64, f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, 0.0f64);
    for (i, &(t0, w0)) in samples.iter().enumerate() {
        if t0 < 1.0 {
            continue;
        }
        if let Some(&(t1, w1)) = samples[i..].iter().find(|(t, _)| *t >= t0 + 2.0) {
            let r = (w1 - w0) as f64 * 8.0 / (t1 - t0) / 1e6;
            lo = lo.min(r);
            hi = hi.max(r);
        }
    }
    let (t, w) = samples.last().copied().unwrap_or((1.0, 0));
    (lo, hi, w as f64 * 8.0 / t / 1e6)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("| limit (Mbit/s) | every 2 s interval after 1 s: min .. max (Mbit/s) | whole transfer (Mbit/s) |");
    println!("|---|---|---|");
    for mbps in [8u32, 80, 800] {
        let (samples, _) = run(mbps, 6.0, None);
        let (lo, hi, all) = two_second_rates(&samples);
        println!(
            "| {mbps} | {lo:.2} .. {hi:.2} ({:+.1}% .. {:+.1}%) | {all:.2} |",
            (lo / f64::from(mbps) - 1.0) * 100.0,
            (hi / f64::from(mbps) - 1.0) * 100.0
        );
    }
    let (_, delay) = run(8, 8.0, Some((Duration::from_secs(2), "00:00-23:59=80")));
    match delay {
        Some(d) => println!("\nrules change 8 -> 80 Mbit/s (library `set_rules`): the new rate shows on the socket {:.0} ms later (50 ms sampling)", d * 1000.0),
        None => println!("\nrules change: the new rate was not seen"),
    }
}
