//! Full replication over real mutual TLS on 127.0.0.1, real files, checked with `cmp`.

mod common;
#[path = "common/disks.rs"]
mod disks;

use std::time::Duration;

use blockrep::sender::{self, Control, Mode};
use blockrep::{SendConfig, SourceSpec};
use common::*;

fn config(pki: &Pki, addr: std::net::SocketAddr, disks: &[(&str, &std::path::Path)]) -> SendConfig {
    let specs = disks
        .iter()
        .map(|(id, p)| SourceSpec::new(id.to_string(), p.to_path_buf()))
        .collect();
    let mut c = SendConfig::new(addr.to_string(), pki.client(), specs);
    c.mode = Mode::Full;
    c.io_timeout = Duration::from_secs(30);
    c
}

/// Random, text, explicit zeros and a hole, with a tail that is not a multiple of any block
/// size.
fn mixed() -> Vec<Region> {
    vec![
        Region::Random(3 * MIB),
        Region::Text(2 * MIB + 4096),
        Region::Zeros(2 * MIB),
        Region::Hole(3 * MIB),
        Region::Random(65_536 + 17),
        Region::Text(MIB),
        Region::Random(12_345),
    ]
}

async fn replicate_mixed(block_size: u32) {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(&src, &mixed(), block_size as u64);
    assert_ne!(
        size % u64::from(block_size),
        0,
        "the size must not be a multiple of the block size"
    );
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    let mut c = config(&pki, rx.addr, &[("d0", &src)]);
    c.block_size = block_size;
    let summary = sender::send(c, Control::new())
        .await
        .expect("transfer succeeds");
    assert!(summary.complete);
    assert_eq!(summary.total_bytes, size);
    assert_eq!(
        summary.acked_bytes, size,
        "every byte acknowledged as durable"
    );
    // 5 MiB of zeros start 4 KiB past a MiB boundary: at least 4 MiB of whole chunks.
    assert!(
        summary.zero_bytes >= 4 * MIB,
        "zeros and the hole go as zero chunks: {summary:?}"
    );
    assert!(
        summary.wire_bytes < summary.sent_bytes,
        "text compresses: {summary:?}"
    );
    let outcome = rx.stop().await;
    assert_eq!((outcome.succeeded, outcome.failed), (1, 0));
    assert!(cmp(&src, &dst), "cmp says the target differs");
    assert_identical(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_replication_4k_blocks() {
    replicate_mixed(4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_replication_64k_blocks() {
    replicate_mixed(64 << 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_replication_1m_blocks() {
    replicate_mixed(1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_disks_in_one_session() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let layouts: [&[Region]; 3] = [
        &[Region::Random(MIB + 5), Region::Hole(MIB)],
        &[Region::Text(3 * MIB), Region::Zeros(4096)],
        &[Region::Hole(2 * MIB), Region::Random(4096 * 3 + 1)],
    ];
    let mut pairs = Vec::new();
    for (i, layout) in layouts.iter().enumerate() {
        let src = dir.path().join(format!("src{i}.img"));
        let dst = dir.path().join(format!("dst{i}.img"));
        let size = make_image(&src, layout, i as u64);
        // One target larger than its source: allowed, the tail is left alone.
        make_target(&dst, size + if i == 1 { MIB } else { 0 });
        pairs.push((format!("disk{i}"), src, dst, size));
    }
    let rdisks: Vec<(&str, &std::path::Path)> = pairs
        .iter()
        .map(|(id, _, d, _)| (id.as_str(), d.as_path()))
        .collect();
    let sdisks: Vec<(&str, &std::path::Path)> = pairs
        .iter()
        .map(|(id, s, _, _)| (id.as_str(), s.as_path()))
        .collect();
    let rx = Receiver::start(receiver_config(&pki, &rdisks)).await;
    let mut c = config(&pki, rx.addr, &sdisks);
    c.block_size = 64 << 10;
    let summary = sender::send(c, Control::new())
        .await
        .expect("transfer succeeds");
    assert!(summary.complete);
    assert_eq!(summary.acked_bytes, pairs.iter().map(|p| p.3).sum::<u64>());
    rx.stop().await;
    for (_, src, dst, size) in &pairs {
        let (s, d) = (std::fs::read(src).unwrap(), std::fs::read(dst).unwrap());
        assert_eq!(&s[..], &d[..*size as usize], "{} differs", dst.display());
        assert!(
            d[*size as usize..].iter().all(|&b| b == 0xa5),
            "bytes past the source were touched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_cleanly_and_keeps_what_is_durable() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(&src, &[Region::Random(48 * MIB)], 9);
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    let mut c = config(&pki, rx.addr, &[("d0", &src)]);
    c.block_size = 64 << 10;
    c.window = 4 * MIB;
    let control = Control::new();
    let transfer = tokio::spawn(sender::send(c, control.clone()));
    // STOP once some data is durable: wait for the event, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while control.progress().replicatesize == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    control.stop();
    let summary = transfer.await.unwrap().expect("a STOP is not an error");
    assert!(!summary.complete, "stopped early: {summary:?}");
    assert!(summary.acked_bytes > 0 && summary.acked_bytes < size);
    assert_eq!(
        summary.acked_bytes, summary.sent_bytes,
        "everything sent is durable at the end"
    );
    let outcome = rx.stop().await;
    assert_eq!(outcome.succeeded + outcome.failed, 1);
    // What was acknowledged is on the target: the acked prefix matches (chunks are sent in order
    // per disk here, with several encoders reordering at most within the window).
    let matching = matching_chunk_bytes(&src, &dst, 64 << 10);
    assert!(
        matching >= summary.acked_bytes,
        "{matching} bytes match, {} acknowledged",
        summary.acked_bytes
    );
}

#[test]
fn start_handle_reports_progress_and_finishes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(&src, &[Region::Text(4 * MIB), Region::Hole(MIB)], 3);
    make_target(&dst, size);
    let rx = rt.block_on(Receiver::start(receiver_config(&pki, &[("d0", &dst)])));
    let handle = sender::start(config(&pki, rx.addr, &[("d0", &src)]));
    let summary = handle.wait().expect("transfer succeeds");
    assert!(summary.complete);
    rt.block_on(rx.stop());
    assert!(cmp(&src, &dst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_replicate_at_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut pairs = Vec::new();
    for i in 0..2u64 {
        let (src, dst) = (
            dir.path().join(format!("s{i}")),
            dir.path().join(format!("t{i}")),
        );
        let size = make_image(
            &src,
            &[Region::Random(6 * MIB + i), Region::Text(2 * MIB)],
            i,
        );
        make_target(&dst, size);
        pairs.push((src, dst));
    }
    let rx = Receiver::start(receiver_config(
        &pki,
        &[("a", &pairs[0].1), ("b", &pairs[1].1)],
    ))
    .await;
    let mut ca = config(&pki, rx.addr, &[("a", &pairs[0].0)]);
    let mut cb = config(&pki, rx.addr, &[("b", &pairs[1].0)]);
    // Small windows keep both sessions open at the same time.
    ca.window = MIB;
    cb.window = MIB;
    ca.block_size = 64 << 10;
    cb.block_size = 64 << 10;
    let (ra, rb) = tokio::join!(
        sender::send(ca, Control::new()),
        sender::send(cb, Control::new())
    );
    assert!(ra.unwrap().complete && rb.unwrap().complete);
    let outcome = rx.stop().await;
    assert_eq!((outcome.succeeded, outcome.failed), (2, 0));
    for (src, dst) in &pairs {
        assert!(cmp(src, dst));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_shutdown_mid_transfer_keeps_what_it_acknowledged() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(&src, &[Region::Random(128 * MIB)], 4);
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    let mut c = config(&pki, rx.addr, &[("d0", &src)]);
    c.block_size = 64 << 10;
    c.window = 2 * MIB;
    c.workers = 1;
    // This sender does not wait for the receiver to come back (tests/resume.rs covers that).
    c.retry.total = Duration::ZERO;
    let control = Control::new();
    let transfer = tokio::spawn(sender::send(c, control.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while control.progress().replicatesize == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // As SIGTERM: finish in-flight writes, acknowledge, tell the sender, stop.
    let outcome = rx.stop().await;
    assert_eq!(
        outcome.failed, 1,
        "the interrupted session is not a success"
    );
    let err = transfer
        .await
        .unwrap()
        .expect_err("the sender learns the receiver stopped");
    assert_eq!(err.code(), "SMS.1908", "{err}");
    assert!(err.to_string().contains("shutting down"), "{err}");
    let acked = control.progress().replicatesize;
    assert!(acked > 0 && acked < size);
    let matching = matching_chunk_bytes(&src, &dst, 64 << 10);
    assert!(
        matching >= acked,
        "{matching} bytes on the target, {acked} acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_devices_as_source_and_target() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(
        &src,
        &[
            Region::Random(3 * MIB),
            Region::Zeros(2 * MIB),
            Region::Text(3 * MIB),
        ],
        8,
    );
    make_target(&dst, size);
    let (ls, ld) = match (
        disks::Loop::attach(&src, 0, size, false),
        disks::Loop::attach(&dst, 0, size, false),
    ) {
        (Ok(ls), Ok(ld)) => (ls, ld),
        (Err(e), _) | (_, Err(e)) => {
            skip(
                "block_devices_as_source_and_target",
                format_args!("{e} (needs root and /dev/loop-control)"),
            );
            return;
        }
    };
    let pki = Pki::new();
    let (sdev, ddev) = (ls.dev.clone(), ld.dev.clone());
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &ddev)])).await;
    let summary = sender::send(config(&pki, rx.addr, &[("d0", &sdev)]), Control::new())
        .await
        .expect("transfer between loop devices");
    assert!(summary.complete);
    assert_eq!(
        summary.total_bytes, size,
        "the device size comes from BLKGETSIZE64"
    );
    rx.stop().await;
    assert!(cmp(&sdev, &ddev), "cmp says the devices differ");
    drop((ls, ld));
    assert!(cmp(&src, &dst), "the backing files differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_streams_carry_one_session() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let mut layout = mixed();
    layout.insert(0, Region::Random(24 * MIB));
    let size = make_image(&src, &layout, 11);
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    let mut c = config(&pki, rx.addr, &[("d0", &src)]);
    c.streams = 3;
    c.block_size = 256 << 10;
    c.window = 4 * MIB;
    let summary = sender::send(c, Control::new())
        .await
        .expect("transfer succeeds");
    assert!(summary.complete);
    assert_eq!(summary.acked_bytes, size, "{summary:?}");
    assert_eq!(summary.sent_bytes, size, "no chunk went twice: {summary:?}");
    let outcome = rx.stop().await;
    assert_eq!((outcome.succeeded, outcome.failed), (1, 0), "{outcome:?}");
    // Both other streams ended well, and between them carried part of the disk, not all.
    assert_eq!(outcome.streams, 2, "{outcome:?}");
    eprintln!(
        "other streams carried {} of {size} bytes",
        outcome.stream_bytes
    );
    assert!(
        outcome.stream_bytes > 0 && outcome.stream_bytes < size,
        "{outcome:?}"
    );
    assert!(cmp(&src, &dst), "cmp says the target differs");
}
