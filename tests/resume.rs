//! Resume and fault tolerance: a dropped connection, a receiver killed and restarted, a
//! sender killed and rerun. Each ends with a byte-identical target and little re-sent.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::time::Duration;

use blockrep::sender::{self, Control, Mode};
use blockrep::{Retry, SendConfig, SourceSpec};
use common::*;
use proxy::Proxy;

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
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(&src, &[Region::Random(48 * MIB), Region::Text(16 * MIB)], 5);
    make_target(&dst, size);
    let rx = Receiver::start(receiver_config(&pki, &[("d0", &dst)])).await;
    // The first two connections are cut mid-transfer, after 20 MiB and then 8 MiB.
    let proxy = Proxy::start(rx.addr, vec![20 * MIB, 8 * MIB]).await;
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
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    let size = make_image(&src, &[Region::Random(24 * MIB)], 6);
    make_target(&dst, size);
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
