//! Speed limits on real sockets over mutual TLS on 127.0.0.1. Bounds are one-sided: the
//! limiter must never let more through than the limit allows; a slow machine only makes the
//! transfer slower, so it cannot make these tests fail. Figures go to BENCHMARKS.md.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use blockrep::sender::{self, Control, Mode};
use blockrep::throttle::Throttle;
use blockrep::{SendConfig, SourceSpec};
use blockrep_rate::Rules;
use common::*;

fn config(pki: &Pki, addr: std::net::SocketAddr, src: &std::path::Path, rules: &str) -> SendConfig {
    let mut c = SendConfig::new(
        addr.to_string(),
        pki.client(),
        vec![SourceSpec::new("d0", src)],
    );
    c.mode = Mode::Full;
    c.block_size = 64 << 10;
    c.io_timeout = Duration::from_secs(60);
    c.limits = Throttle::new(Rules::parse(rules).unwrap());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_on_the_socket() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("s.img"), dir.path().join("d.img"));
    let size = make_image(&src, &[Region::Random(6 * MIB)], 3);
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    // 24 Mbit/s = 3 MB/s for the whole day.
    let c = config(&pki, rx.addr, &src, "00:00-23:59=24");
    let limits = c.limits.clone();
    let started = Instant::now();
    let s = sender::send(c, Control::new())
        .await
        .expect("limited transfer");
    let elapsed = started.elapsed().as_secs_f64();
    rx.stop().await;
    assert!(s.complete);
    assert!(cmp(&src, &dst));
    let socket = limits.written().load(Relaxed) as f64;
    assert!(
        socket >= size as f64,
        "ciphertext is at least the data: {socket}"
    );
    // At most the limit, plus the 100 ms burst the bucket starts with.
    let allowed = 3e6 * elapsed + 3e6 * 0.1 + 65536.0;
    assert!(
        socket <= allowed,
        "{socket} bytes in {elapsed:.2} s is faster than 3 MB/s"
    );
    eprintln!(
        "24 Mbit/s limit: {:.2} Mbit/s measured over {elapsed:.2} s",
        socket * 8.0 / elapsed / 1e6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rules_apply_to_a_running_transfer() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("s.img"), dir.path().join("d.img"));
    let size = make_image(&src, &[Region::Random(32 * MIB)], 4);
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    // 8 Mbit/s: 32 MiB would take 34 s.
    let c = config(&pki, rx.addr, &src, "00:00-23:59=8");
    let limits = c.limits.clone();
    let control = Control::new();
    let transfer = tokio::spawn(sender::send(c, control.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while control.progress().replicatesize == 0 {
        assert!(Instant::now() < deadline, "no progress within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        control.progress().replicatesize < size / 2,
        "the limit holds at first"
    );
    limits.set_rules(Rules::parse("00:00-23:59=0").unwrap());
    // Unlimited now: the rest goes at loopback speed (bounded wait for the event).
    let s = tokio::time::timeout(Duration::from_secs(30), transfer)
        .await
        .expect("finished within 30 s of lifting the limit")
        .unwrap()
        .expect("transfer");
    rx.stop().await;
    assert!(s.complete);
    assert!(cmp(&src, &dst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_the_measured_socket_rate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("s.img"), dir.path().join("d.img"));
    let size = make_image(&src, &[Region::Random(4 * MIB)], 5);
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    let c = config(&pki, rx.addr, &src, "00:00-23:59=16");
    let control = Control::new();
    let transfer = tokio::spawn(sender::send(c, control.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut peak = 0.0f64;
    while !transfer.is_finished() {
        assert!(Instant::now() < deadline, "not finished within 30 s");
        peak = peak.max(control.progress().migrate_speed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    transfer.await.unwrap().expect("transfer");
    rx.stop().await;
    assert!(peak > 0.0, "migrate_speed was reported");
    // Over windows of 200 ms and more the burst is at most 100 ms of tokens: < 1.5x.
    assert!(
        peak < 16.0 * 1.5,
        "migrate_speed {peak} Mbit/s against a 16 Mbit/s limit"
    );
}

#[test]
fn bad_rules_are_sms_6405() {
    for bad in [
        "00:00-24:01=5",
        "7:60-8:00=5",
        "00:00-08:00=5,07:00-09:00=5",
        "x",
        "00:00-08:00=10001",
    ] {
        let e: blockrep::Error = Rules::parse(bad).unwrap_err().into();
        assert_eq!(e.code(), "SMS.6405", "{bad}: {e}");
    }
}
