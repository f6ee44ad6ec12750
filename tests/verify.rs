//! Consistency verification over real mutual TLS: a clean replica verifies clean, damage on
//! the target is found exactly and repaired, and a verification that cannot be done says so
//! with SMS.1511 (exit 2 from the command line).

mod common;
#[path = "common/process.rs"]
mod process;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use blockrep::sender::{self, Control, Mode, Range};
use blockrep::{ExtentSet, SendConfig, SourceSpec};
use common::*;

fn config(pki: &Pki, addr: std::net::SocketAddr, src: &Path, mode: Mode) -> SendConfig {
    let mut c = SendConfig::new(
        addr.to_string(),
        pki.client(),
        vec![SourceSpec::new("d0", src)],
    );
    c.mode = mode;
    c
}

/// A 24 MiB image (random, text, zeros, random) replicated in full to a target.
async fn replica(pki: &Pki, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, u64) {
    let (src, dst) = (dir.join("src.img"), dir.join("dst.img"));
    let size = make_image(
        &src,
        &[
            Region::Random(8 * MIB),
            Region::Text(4 * MIB),
            Region::Zeros(4 * MIB),
            Region::Random(8 * MIB),
        ],
        31,
    );
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(pki, &[("d0", &dst)])).await;
    let s = sender::send(config(pki, rx.addr, &src, Mode::Full), Control::new())
        .await
        .unwrap();
    rx.stop().await;
    assert!(s.complete && cmp(&src, &dst));
    (src, dst, size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_replica_verifies_clean_in_used_and_full_mode() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, size) = replica(&pki, dir.path()).await;
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    for mode in [Mode::Used, Mode::Full] {
        let v = sender::verify(config(&pki, rx.addr, &src, mode), Control::new(), None)
            .await
            .unwrap();
        assert!(v.consistent, "{mode:?}: {v:?}");
        assert!(v.differences.is_empty());
        // No filesystem on this image: used mode checks it whole, as it would send it.
        assert_eq!(v.checked_bytes, size, "{mode:?}");
    }
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_is_found_exactly_and_repaired() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, _) = replica(&pki, dir.path()).await;
    // A few bytes at known offsets, and a whole MiB zeroed (in a random region).
    let f = std::fs::OpenOptions::new().write(true).open(&dst).unwrap();
    f.write_all_at(&[1, 2, 3], MIB + 17).unwrap();
    f.write_all_at(&[0xff], 5 * MIB + 4095).unwrap();
    f.write_all_at(&[0x00], 5 * MIB + 4096).unwrap(); // the next block too: merged
    f.write_all_at(&vec![0u8; MIB as usize], 18 * MIB).unwrap();
    drop(f);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    let c = config(&pki, rx.addr, &src, Mode::Full);
    let v = sender::verify(c.clone(), Control::new(), None)
        .await
        .unwrap();
    let range = |offset, length| Range {
        disk: "d0".into(),
        offset,
        length,
    };
    assert!(!v.consistent);
    assert_eq!(
        v.differences,
        vec![range(MIB, 4096), range(5 * MIB, 8192), range(18 * MIB, MIB)]
    );
    assert_eq!(
        (v.difference_count, v.differing_bytes),
        (3, 4096 + 8192 + MIB)
    );
    // Writes on the source during the verification are told apart.
    let during = ExtentSet::range(18 * MIB, MIB);
    let v2 = sender::verify(c.clone(), Control::new(), Some(vec![during]))
        .await
        .unwrap();
    assert_eq!(v2.changed_during_verification, vec![range(18 * MIB, MIB)]);
    assert_eq!(v2.difference_count, 2);
    // Repair: exactly the differing ranges are sent again, then verified.
    let r = sender::verify_and_repair(c.clone(), Control::new())
        .await
        .unwrap();
    assert!(r.consistent, "{r:?}");
    assert_eq!(r.repaired_bytes, 4096 + 8192 + MIB);
    let again = sender::verify(c, Control::new(), None).await.unwrap();
    assert!(again.consistent);
    rx.stop().await;
    assert!(cmp(&src, &dst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_target_file_is_found_and_repaired() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, size) = replica(&pki, dir.path()).await;
    // The last 3 MiB and 4 KiB cut off the target file (into the random region).
    let cut = size - 3 * MIB - 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dst)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let mut rconfig = receiver_config(&pki, &[("d0", &dst)]);
    rconfig.grow_images = true;
    let rx = Receiver::start(rconfig).await;
    let c = config(&pki, rx.addr, &src, Mode::Full);
    let v = sender::verify(c.clone(), Control::new(), None)
        .await
        .unwrap();
    assert!(!v.consistent);
    assert_eq!(
        v.differences,
        vec![Range {
            disk: "d0".into(),
            offset: cut,
            length: size - cut
        }],
        "the missing tail, exactly"
    );
    let r = sender::verify_and_repair(c, Control::new()).await.unwrap();
    rx.stop().await;
    assert!(r.consistent && r.repaired_bytes == size - cut, "{r:?}");
    assert!(cmp(&src, &dst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifying_a_disk_the_receiver_lacks_is_sms_1511() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, _) = replica(&pki, dir.path()).await;
    let rx = Receiver::start(receiver_config(&pki, &[("other", &dst)])).await;
    let e = sender::verify(
        config(&pki, rx.addr, &src, Mode::Used),
        Control::new(),
        None,
    )
    .await
    .unwrap_err();
    rx.stop().await;
    assert_eq!(e.code(), "SMS.1511", "{e}");
    assert!(e.to_string().contains("SMS.2013"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_journals_verifies_only_sessions_it_knows() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    make_image(&src, &[Region::Random(4 * MIB), Region::Text(MIB)], 41);
    std::fs::File::create(&dst).unwrap();
    let mut rc = receiver_config(&pki, &[("d0", &dst)]);
    rc.state_dir = Some(dir.path().join("state"));
    rc.grow_images = true;
    let rx = Receiver::start(rc).await;
    let mut c = config(&pki, rx.addr, &src, Mode::Full);
    c.session_id = "mig-1".into();
    assert!(
        sender::send(c.clone(), Control::new())
            .await
            .unwrap()
            .complete
    );
    let v = sender::verify(c.clone(), Control::new(), None)
        .await
        .unwrap();
    assert!(v.consistent, "{v:?}");
    c.session_id = "mig-2".into();
    let e = sender::verify(c, Control::new(), None).await.unwrap_err();
    rx.stop().await;
    assert_eq!(e.code(), "SMS.1511", "{e}");
    assert!(e.to_string().contains("no session \"mig-2\""), "{e}");
}

/// `blockrep verify` with the test PKI (for [`process::run`]).
fn verify_command(pki: &Pki, to: &str, disk: &str, extra: &[&str]) -> Command {
    let f = &pki.files;
    let mut cmd = Command::new(process::SEND);
    cmd.args(["verify", "--to", to])
        .args(["--ca", f.ca.to_str().unwrap()])
        .args(["--cert", f.client_cert.to_str().unwrap()])
        .args(["--key", f.client_key.to_str().unwrap()])
        .args(["--disk", disk])
        .args(extra);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_json_and_exits_0_1_or_2() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, size) = replica(&pki, dir.path()).await;
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    let to = rx.addr.to_string();
    let disk = format!("d0={}", src.display());
    let mut clean = verify_command(&pki, &to, &disk, &["--json"]);
    let out = tokio::task::spawn_blocking(move || process::run(&mut clean))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["consistent"], true);
    assert_eq!(v["checked_bytes"], size);
    assert_eq!(v["differences"], serde_json::json!([]));

    std::fs::OpenOptions::new()
        .write(true)
        .open(&dst)
        .unwrap()
        .write_all_at(&[9], 2 * MIB + 5)
        .unwrap();
    let mut damaged = verify_command(&pki, &to, &disk, &["--json", "--mode", "full"]);
    let out = tokio::task::spawn_blocking(move || process::run(&mut damaged))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["consistent"], false);
    assert_eq!(
        v["differences"],
        serde_json::json!([{"disk": "d0", "offset": 2 * MIB, "length": 4096}])
    );

    let mut repair = verify_command(&pki, &to, &disk, &["--repair"]);
    let out = tokio::task::spawn_blocking(move || process::run(&mut repair))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(cmp(&src, &dst));

    let mut missing = verify_command(&pki, &to, &format!("nosuch={}", src.display()), &[]);
    let out = tokio::task::spawn_blocking(move || process::run(&mut missing))
        .await
        .unwrap();
    rx.stop().await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error SMS.1511: "), "{}", out.stderr);
    assert!(last.contains("\"nosuch\""), "names the disk: {last}");
}
