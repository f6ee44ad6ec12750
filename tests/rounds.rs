//! Sync rounds over real mutual TLS: a change bitmap round and a hash delta round after
//! scattered writes give a byte-identical target, with wire bytes measured against the
//! changed bytes.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use blockrep::sender::{self, Control, Mode};
use blockrep::{SendConfig, SourceSpec};
use blockrep_blockmap::{bitmap, ExtentSet, FileDisk};
use common::*;

fn config(pki: &Pki, addr: std::net::SocketAddr, src: &Path, mode: Mode) -> SendConfig {
    let mut c = SendConfig::new(
        addr.to_string(),
        pki.client(),
        vec![SourceSpec::new("d0", src)],
    );
    c.mode = mode;
    c.io_timeout = Duration::from_secs(30);
    c
}

/// Overwrites `fraction` of the image's 4 KiB blocks, chosen at random, with fresh random
/// bytes (incompressible: the worst case for the wire). Returns the blocks changed.
fn scatter(path: &Path, fraction: f64, seed: u64) -> ExtentSet {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    let blocks = f.metadata().unwrap().len() / 4096;
    let mut x = seed | 1;
    let mut changed = ExtentSet::new();
    let mut buf = vec![0u8; 4096];
    let target = (blocks as f64 * fraction) as u64;
    let mut guard = 0;
    while changed.total() / 4096 < target && guard < blocks * 10 {
        guard += 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x % blocks;
        random_bytes(&mut buf, x);
        f.write_all_at(&buf, b * 4096).unwrap();
        changed.insert(b * 4096, 4096);
    }
    changed
}

struct Round {
    pki: Pki,
    dir: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
    size: u64,
}

/// A source and a target that starts as an exact copy, then scattered writes on the source.
fn setup(fraction: f64) -> (Round, ExtentSet) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(
        &src,
        &[
            Region::Random(8 * MIB),
            Region::Text(8 * MIB),
            Region::Hole(8 * MIB),
            Region::Random(8 * MIB + 4096),
        ],
        11,
    );
    fs::copy(&src, &dst).unwrap();
    let changed = scatter(&src, fraction, 99);
    assert_eq!(cmp(&src, &dst), changed.is_empty());
    (
        Round {
            pki: Pki::new(),
            dir,
            src,
            dst,
            size,
        },
        changed,
    )
}

/// Runs a round and STOPs it as soon as something is durable; returns its summary.
async fn stopped_after_first_ack(c: SendConfig) -> blockrep::SendSummary {
    let control = Control::new();
    let round = tokio::spawn(sender::send(c, control.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while control.progress().replicatesize == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    control.stop();
    round.await.unwrap().expect("a STOP is not an error")
}

/// A delta round of `r` to a receiver of its own, which must see one good session.
async fn delta_round(r: &Round) -> blockrep::SendSummary {
    let rx = Receiver::start(receiver_config(&r.pki, &[("d0", &r.dst)])).await;
    let s = sender::send(config(&r.pki, rx.addr, &r.src, Mode::Delta), Control::new())
        .await
        .expect("delta round");
    let outcome = rx.stop().await;
    assert_eq!((outcome.succeeded, outcome.failed), (1, 0), "{outcome:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitmap_round_sends_only_the_marked_blocks() {
    let (r, changed) = setup(0.05);
    // The change set as a native bitmap file, as an agent's tracker would hand it over.
    let old = FileDisk::new(fs::File::open(&r.dst).unwrap()).unwrap();
    let new = FileDisk::new(fs::File::open(&r.src).unwrap()).unwrap();
    let diff = bitmap::diff(&old, &new, 4096).unwrap();
    assert_eq!(
        diff, changed,
        "the image diff finds exactly the changed blocks"
    );
    let path = r.dir.path().join("changes.bmap");
    let header = bitmap::Header {
        granularity: 4096,
        device_size: r.size,
        generation: 1,
    };
    bitmap::write_native(fs::File::create(&path).unwrap(), header, &diff).unwrap();
    let (_, loaded) = bitmap::read_native(fs::File::open(&path).unwrap(), r.size).unwrap();

    let rx = Receiver::start(receiver_config(&r.pki, &[("d0", &r.dst)])).await;
    let mut c = config(&r.pki, rx.addr, &r.src, Mode::Bitmap);
    c.disks[0].changed = Some(loaded);
    let control = Control::new();
    let s = sender::send(c, control.clone())
        .await
        .expect("bitmap round");
    rx.stop().await;
    assert!(s.complete);
    assert_eq!(s.subtask_name, "SYNC_LINUX_BLOCK");
    assert_eq!(control.progress().subtask_name, "SYNC_LINUX_BLOCK");
    assert_eq!(
        s.sent_bytes,
        changed.total(),
        "exactly the changed bytes are sent"
    );
    // Random replacement data does not compress: the wire carries it plus 56 bytes a chunk.
    let frames = changed.total() / 4096;
    assert!(s.wire_bytes <= changed.total() + frames * 64, "{s:?}");
    assert!(cmp(&r.src, &r.dst));
    eprintln!(
        "bitmap round: changed {} bytes, wire {} bytes",
        changed.total(),
        s.wire_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_round_finds_and_sends_only_what_differs() {
    let (r, changed) = setup(0.05);
    let s = delta_round(&r).await;
    assert!(s.complete);
    assert_eq!(s.subtask_name, "SYNC_LINUX_BLOCK");
    assert_eq!(
        s.sent_bytes,
        changed.total(),
        "exactly the differing 4 KiB blocks are sent"
    );
    assert!(cmp(&r.src, &r.dst));
    // Digests: 8 bytes per 16 KiB of disk plus 8 per 4 KiB inside differing granules.
    let digests = r.size / 16384 * 8 + changed.total() / 4096 * 4 * 8;
    let frames = changed.total() / 4096;
    let on_the_wire = s.wire_bytes + s.received_bytes;
    assert!(
        on_the_wire <= changed.total() + frames * 64 + digests + 4096,
        "{s:?}"
    );
    eprintln!(
        "delta round: changed {} bytes, on the wire {on_the_wire} bytes ({} sent, {} received)",
        changed.total(),
        s.wire_bytes,
        s.received_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_in_small_pieces_stopped_then_resumed_converges_up_to_a_ragged_end() {
    let (r, mut changed) = setup(0.05);
    // The disk ends 4096 bytes past a 16 KiB granule; change its very last byte too, and one
    // byte in the middle of a block (the whole 4 KiB block around it is sent).
    let f = fs::OpenOptions::new().write(true).open(&r.src).unwrap();
    f.write_all_at(&[0xa5], r.size - 1).unwrap();
    f.write_all_at(&[0x5a], 3 * MIB + 1234).unwrap();
    changed.insert(r.size - 4096, 4096);
    changed.insert(3 * MIB, 4096);
    let rx = Receiver::start(receiver_config(&r.pki, &[("d0", &r.dst)])).await;
    let mut c = config(&r.pki, rx.addr, &r.src, Mode::Delta);
    // 64 KiB pieces, four at a time; 64 KiB chunks, one encoder.
    c.window = 256 << 10;
    c.block_size = 64 << 10;
    c.workers = 1;
    let s1 = stopped_after_first_ack(c.clone()).await;
    assert!(!s1.complete);
    assert!(
        s1.acked_bytes > 0 && s1.acked_bytes < changed.total(),
        "{s1:?}"
    );
    // What the stopped round left is the rest of the disk it had not compared (and what it
    // had found but not sent); what it compared the same is not in it.
    assert!(
        s1.remaining_bytes > 0 && s1.remaining_bytes < r.size,
        "{s1:?}"
    );
    let s2 = sender::send(c, Control::new()).await.expect("second round");
    rx.stop().await;
    assert!(s2.complete);
    assert!(cmp(&r.src, &r.dst));
    assert_eq!(
        s1.acked_bytes + s2.sent_bytes,
        changed.total(),
        "every differing block sent once: {s1:?} {s2:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_round_of_identical_disks_sends_nothing() {
    let (r, _) = setup(0.0);
    let s = delta_round(&r).await;
    assert!(s.complete);
    assert_eq!((s.sent_bytes, s.total_bytes), (0, 0));
    assert!(cmp(&r.src, &r.dst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_round_leaves_what_the_next_round_must_send() {
    let (r, changed) = setup(0.20);
    let rx = Receiver::start(receiver_config(&r.pki, &[("d0", &r.dst)])).await;
    let mut c = config(&r.pki, rx.addr, &r.src, Mode::Bitmap);
    c.disks[0].changed = Some(changed.clone());
    c.window = 256 << 10;
    c.workers = 1;
    let s1 = stopped_after_first_ack(c.clone()).await;
    let rest: ExtentSet = s1
        .remaining
        .iter()
        .map(|(_, set)| set.clone())
        .next()
        .unwrap_or_default();
    assert_eq!(s1.remaining_bytes, rest.total());
    if s1.complete {
        eprintln!("the round finished before STOP took effect; nothing remains");
        assert!(rest.is_empty());
    } else {
        assert!(!rest.is_empty() && rest.total() < changed.total(), "{s1:?}");
        assert_eq!(
            rest.total() + s1.acked_bytes,
            changed.total(),
            "acked + remaining = planned"
        );
    }
    // The next round sends what remains (plus, for a real tracker, what changed since).
    c.disks[0].changed = Some(rest);
    let s2 = sender::send(c, Control::new()).await.expect("second round");
    assert!(s2.complete && s2.remaining.is_empty());
    rx.stop().await;
    assert!(cmp(&r.src, &r.dst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitmap_for_another_disk_size_is_refused() {
    let (r, _) = setup(0.01);
    let path = r.dir.path().join("wrong.bmap");
    let header = bitmap::Header {
        granularity: 4096,
        device_size: r.size + 4096,
        generation: 1,
    };
    bitmap::write_native(fs::File::create(&path).unwrap(), header, &ExtentSet::new()).unwrap();
    let err = bitmap::read_native(fs::File::open(&path).unwrap(), r.size).unwrap_err();
    assert!(err.to_string().contains("another disk"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_full_round_stopped_then_sync_rounds_converge() {
    use blockrep::{Migration, SyncChanges};
    use std::collections::BTreeMap;

    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(&src, &[Region::Random(24 * MIB), Region::Text(8 * MIB)], 21);
    std::fs::File::create(&dst).unwrap().set_len(size).unwrap();
    // With journals: a finished round's journal must not make a later round skip anything.
    let mut rc = receiver_config(&pki, &[("d0", &dst)]);
    rc.state_dir = Some(dir.path().join("state"));
    let rx = Receiver::start(rc).await;
    let mut base = config(&pki, rx.addr, &src, Mode::Full);
    base.window = 512 << 10;
    base.block_size = 64 << 10;
    base.workers = 1;
    let mut m = Migration::new(base);

    // Sync before any full round is refused for bitmaps.
    let early = m
        .sync_round(SyncChanges::Bitmap(BTreeMap::new()), Control::new())
        .await;
    let early = early.expect_err("a bitmap round before any full round");
    assert!(early.to_string().contains("full round first"), "{early}");

    // Full round, stopped part-way.
    let control = Control::new();
    let c2 = control.clone();
    let stopper = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while c2.progress().replicatesize < 2 * MIB && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        c2.stop();
        c2.progress().replicatesize >= 2 * MIB
    });
    let full = m.full_round(control).await.expect("stopped full round");
    assert!(stopper.await.unwrap(), "2 MiB durable within 30 s");
    assert_eq!(full.subtask_name, "MIGRATE_LINUX_BLOCK");
    let left: u64 = m.pending().values().map(ExtentSet::total).sum();
    assert_eq!(left, full.remaining_bytes);
    assert!(!full.complete && left > 0, "stopped part-way: {full:?}");
    assert_eq!(
        left + full.acked_bytes,
        size,
        "durable + pending = the whole disk"
    );

    // The source changes; a bitmap round sends the changes and what the full round left.
    let changed = scatter(&src, 0.02, 5);
    let s = m
        .sync_round(
            SyncChanges::Bitmap(BTreeMap::from([("d0".to_string(), changed)])),
            Control::new(),
        )
        .await
        .expect("bitmap round");
    assert!(s.complete && m.pending().is_empty(), "{s:?}");
    assert!(cmp(&src, &dst), "converged after the bitmap round");

    // More changes, tracker lost: a delta round.
    let again = scatter(&src, 0.01, 6);
    let d = m
        .sync_round(SyncChanges::Delta, Control::new())
        .await
        .expect("delta round");
    assert_eq!(d.subtask_name, "SYNC_LINUX_BLOCK");
    assert_eq!(d.sent_bytes, again.total());
    assert!(cmp(&src, &dst), "converged after the delta round");
    assert_eq!(m.rounds(), 3, "the refused round never started");
    rx.stop().await;
}
