//! What the receiver refuses, and that refusing leaves the target untouched and the receiver
//! serving the next proper client. Real TLS on 127.0.0.1, real files.

mod common;
#[path = "common/disks.rs"]
mod disks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blockrep::sender::{self, Control, Mode};
use blockrep::{Error, SendConfig, SourceSpec};
use blockrep_proto::{consts, decode, DiskAnnounce, Encoding, Frame, Hello};
use bytes::BytesMut;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SIZE: u64 = 2 * MIB + 4096;

struct Setup {
    pki: Pki,
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
    rx: Receiver,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(tune: impl FnOnce(&mut blockrep::ReceiverConfig)) -> Setup {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    make_image(&src, &[Region::Random(MIB), Region::Text(MIB + 4096)], 5);
    make_target(&dst, SIZE);
    let mut config = receiver_config(&pki, &[("d0", &dst)]);
    tune(&mut config);
    let rx = Receiver::start(config).await;
    Setup {
        pki,
        _dir: dir,
        src,
        dst,
        rx,
    }
}

fn send_config(
    tls: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    id: &str,
    src: &Path,
) -> SendConfig {
    let mut c = SendConfig::new(addr.to_string(), tls, vec![SourceSpec::new(id, src)]);
    c.mode = Mode::Full;
    c.block_size = 64 << 10;
    c.io_timeout = Duration::from_secs(20);
    c.connect_timeout = Duration::from_secs(10);
    c
}

fn assert_untouched(dst: &Path) {
    let d = std::fs::read(dst).unwrap();
    assert_eq!(d.len() as u64, SIZE);
    assert!(d.iter().all(|&b| b == 0xa5), "the target was written");
}

/// The receiver still serves a proper client, and the copy is exact.
async fn proper_client_succeeds(s: Setup) {
    let summary = sender::send(
        send_config(s.pki.client(), s.rx.addr, "d0", &s.src),
        Control::new(),
    )
    .await
    .expect("a proper client is served after the refusal");
    assert!(summary.complete);
    assert!(cmp(&s.src, &s.dst));
    s.rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused() {
    let s = setup().await;
    let other = Pki::new();
    // Trusts the right server CA, but presents a certificate from another CA.
    let tls = blockrep::tls::client_config(
        &s.pki.files.ca,
        &other.files.client_cert,
        &other.files.client_key,
    )
    .unwrap();
    let err = sender::send(send_config(tls, s.rx.addr, "d0", &s.src), Control::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "SMS.0304", "{err}");
    assert_untouched(&s.dst);
    proper_client_succeeds(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_from_another_ca_is_refused_by_the_sender() {
    let s = setup().await;
    let other = Pki::new();
    let tls = blockrep::tls::client_config(
        &other.files.ca,
        &s.pki.files.client_cert,
        &s.pki.files.client_key,
    )
    .unwrap();
    let err = sender::send(send_config(tls, s.rx.addr, "d0", &s.src), Control::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "SMS.0304", "{err}");
    assert_untouched(&s.dst);
    proper_client_succeeds(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_refused() {
    let s = setup().await;
    let mut roots = rustls::RootCertStore::empty();
    for c in blockrep::tls::load_certs(&s.pki.files.ca, "CA").unwrap() {
        roots.add(c).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(blockrep::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let err = sender::send(send_config(tls, s.rx.addr, "d0", &s.src), Control::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "SMS.0304", "{err}");
    assert_untouched(&s.dst);
    proper_client_succeeds(s).await;
}

/// Sends raw bytes on the port and expects the receiver to close the connection.
async fn raw_bytes_are_dropped(bytes: &[u8]) {
    let s = setup().await;
    let mut tcp = TcpStream::connect(s.rx.addr).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the receiver did not close the connection");
    assert_untouched(&s.dst);
    proper_client_succeeds(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_the_port_is_dropped() {
    raw_bytes_are_dropped(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_frames_on_the_port_are_dropped() {
    // A valid HELLO, but without TLS.
    let mut buf = BytesMut::new();
    hello("d0", SIZE).encode(&mut buf);
    raw_bytes_are_dropped(&buf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_the_port_are_dropped() {
    let mut junk = vec![0u8; 64 << 10];
    random_bytes(&mut junk, 77);
    raw_bytes_are_dropped(&junk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_larger_than_a_block_device_target_is_sms_1504() {
    // A loop device over the target file: a device cannot grow.
    let mut lo = None;
    let s = setup_with(|c| {
        let dst = c.disks["d0"].clone();
        match disks::Loop::attach(&dst, 0, SIZE, false) {
            Ok(l) => {
                c.disks.insert("d0".into(), l.dev.clone());
                lo = Some(l);
            }
            Err(e) => skip(
                "source_larger_than_a_block_device_target_is_sms_1504",
                format_args!("no loop device: {e}"),
            ),
        }
    })
    .await;
    if lo.is_none() {
        return;
    }
    let big = s._dir.path().join("big.img");
    make_image(&big, &[Region::Random(SIZE + 1)], 1);
    let err = sender::send(
        send_config(s.pki.client(), s.rx.addr, "d0", &big),
        Control::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "SMS.1504", "{err}");
    assert!(err.to_string().contains("smaller"), "{err}");
    assert_untouched(&s.dst);
    proper_client_succeeds(s).await;
    drop(lo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_image_file_target_grows_to_the_source_with_grow_images() {
    let s = setup_with(|c| c.grow_images = true).await;
    let big = s._dir.path().join("big.img");
    let size = make_image(&big, &[Region::Random(SIZE + 12_345)], 1);
    let summary = sender::send(
        send_config(s.pki.client(), s.rx.addr, "d0", &big),
        Control::new(),
    )
    .await
    .expect("an image file target grows");
    assert!(summary.complete);
    assert_eq!(std::fs::metadata(&s.dst).unwrap().len(), size);
    assert!(cmp(&big, &s.dst));
    s.rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_disk_id_is_refused() {
    let s = setup().await;
    let err = sender::send(
        send_config(s.pki.client(), s.rx.addr, "sdz", &s.src),
        Control::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "SMS.2013", "{err}");
    assert!(matches!(err, Error::Peer { .. }), "{err:?}");
    assert!(
        err.to_string().contains("sdz") && err.to_string().contains("d0"),
        "{err}"
    );
    assert_untouched(&s.dst);
    proper_client_succeeds(s).await;
}

#[tokio::test]
async fn connection_refused_is_sms_1807() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    make_image(&src, &[Region::Random(4096)], 1);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let err = sender::send(send_config(pki.client(), addr, "d0", &src), Control::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "SMS.1807", "{err}");
}

// ---- An authenticated but hostile sender, speaking frames directly. ----

fn hello(id: &str, size: u64) -> Frame {
    Frame::Hello(Hello {
        version_min: consts::VERSION_MIN,
        version_max: consts::VERSION_MAX,
        session_id: "hostile".into(),
        agent_version: "test".into(),
        disks: vec![DiskAnnounce {
            id: id.into(),
            size,
            block_size: 64 << 10,
        }],
        verify: false,
        join: false,
        netcheck: false,
    })
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens an authenticated session that announced disk d0 of `SIZE` bytes.
async fn hostile_session(s: &Setup) -> Tls {
    let tcp = TcpStream::connect(s.rx.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(s.pki.client())
        .connect(name, tcp)
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    hello("d0", SIZE).encode(&mut buf);
    tls.write_all(&buf).await.unwrap();
    match next_frame(&mut tls).await {
        Some(Frame::Welcome(_)) => tls,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// The next frame from the receiver, or None when it closed; bounded in time.
async fn next_frame(tls: &mut Tls) -> Option<Frame> {
    let mut buf = BytesMut::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(f) = decode(&mut buf).expect("the receiver sends valid frames") {
                return Some(f);
            }
            match tls.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the receiver answers within 10 s")
}

/// Sends `bytes` after a valid HELLO; the receiver must answer with ERROR `code`, write
/// nothing, and serve the next client.
async fn hostile_bytes_end_the_session(bytes: Vec<u8>, code: &str) {
    let s = setup().await;
    let mut tls = hostile_session(&s).await;
    let _ = tls.write_all(&bytes).await;
    let _ = tls.flush().await;
    match next_frame(&mut tls).await {
        Some(Frame::Error(e)) => assert_eq!(e.code, code, "{}", e.message),
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
    drop(tls);
    assert_untouched(&s.dst);
    proper_client_succeeds(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_with_a_wrong_digest_is_not_written() {
    let raw = vec![7u8; 4096];
    let mut frame = data_frame(0, Encoding::Raw, 0, &raw, &raw);
    let last = frame.len() - 1;
    frame[last] ^= 1; // the payload no longer matches the digest
    hostile_bytes_end_the_session(frame, "SMS.2011").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_lz4_is_not_written() {
    let raw = vec![7u8; 4096];
    hostile_bytes_end_the_session(
        data_frame(0, Encoding::Lz4, 0, &raw, &[0xff; 64]),
        "SMS.2009",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_past_the_disk_end_is_not_written() {
    let raw = vec![7u8; 8192];
    hostile_bytes_end_the_session(
        data_frame(0, Encoding::Raw, SIZE - 4096, &raw, &raw),
        "SMS.2011",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_at_an_overflowing_offset_is_not_written() {
    let raw = vec![7u8; 4096];
    hostile_bytes_end_the_session(
        data_frame(0, Encoding::Raw, u64::MAX - 100, &raw, &raw),
        "SMS.2011",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_for_an_unannounced_disk_is_not_written() {
    let raw = vec![7u8; 4096];
    hostile_bytes_end_the_session(data_frame(3, Encoding::Raw, 0, &raw, &raw), "SMS.2011").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_field_ends_the_session() {
    // A DATA header announcing a 4 GiB body: refused from the header alone.
    let mut frame = vec![0x10, 0, 0, 0];
    frame.extend_from_slice(&u32::MAX.to_be_bytes());
    hostile_bytes_end_the_session(frame, "SMS.2011").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_type_ends_the_session() {
    hostile_bytes_end_the_session(vec![0x42, 0, 0, 0, 0, 0, 0, 0], "SMS.2011").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_hello_ends_the_session() {
    let mut buf = BytesMut::new();
    hello("d0", SIZE).encode(&mut buf);
    hostile_bytes_end_the_session(buf.to_vec(), "SMS.2011").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_with_wrong_counts_ends_the_session() {
    let mut buf = BytesMut::new();
    Frame::End(blockrep_proto::End {
        complete: true,
        frames: 5,
        bytes: 5,
    })
    .encode(&mut buf);
    hostile_bytes_end_the_session(buf.to_vec(), "SMS.2011").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_chunks_before_a_bad_one_are_kept_and_acknowledged() {
    let s = setup().await;
    let mut tls = hostile_session(&s).await;
    let good = vec![9u8; 4096];
    let mut bytes = data_frame(0, Encoding::Raw, 0, &good, &good);
    let mut bad = data_frame(0, Encoding::Raw, 4096, &good, &good);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    bytes.extend_from_slice(&bad);
    tls.write_all(&bytes).await.unwrap();
    let mut acked = 0;
    let code = loop {
        match next_frame(&mut tls).await {
            Some(Frame::Ack(a)) => acked = a.frames,
            Some(Frame::Error(e)) => break e.code,
            other => panic!("expected ACK or ERROR, got {other:?}"),
        }
    };
    assert_eq!(code, "SMS.2011");
    assert_eq!(acked, 1, "the good chunk is durable and acknowledged");
    let d = std::fs::read(&s.dst).unwrap();
    assert!(
        d[..4096].iter().all(|&b| b == 9),
        "the good chunk is on disk"
    );
    assert!(
        d[4096..].iter().all(|&b| b == 0xa5),
        "nothing else was written"
    );
    s.rx.stop().await;
}

// ---- Limits and timeouts. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_the_cap_are_refused_as_busy() {
    let s = setup_with(|c| c.max_sessions = 1).await;
    let holder = hostile_session(&s).await; // holds the only session, idle
    let mut once = send_config(s.pki.client(), s.rx.addr, "d0", &s.src);
    once.retry.total = Duration::ZERO; // a sender would retry a busy receiver by itself
    let err = sender::send(once, Control::new()).await.unwrap_err();
    assert_eq!(err.code(), "SMS.1908", "{err}");
    assert!(err.to_string().contains("busy"), "{err}");
    assert_untouched(&s.dst);
    drop(holder);
    // The slot frees once the holder's session ends; retry, bounded, until it has.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sender::send(
            send_config(s.pki.client(), s.rx.addr, "d0", &s.src),
            Control::new(),
        )
        .await
        {
            Ok(summary) => {
                assert!(summary.complete);
                break;
            }
            Err(e) if e.code() == "SMS.1908" && tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(cmp(&s.src, &s.dst));
    s.rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_is_written_by_one_session_at_a_time() {
    let s = setup().await;
    let holder = hostile_session(&s).await; // has d0
    let err = sender::send(
        send_config(s.pki.client(), s.rx.addr, "d0", &s.src),
        Control::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "SMS.2013", "{err}");
    assert!(err.to_string().contains("another session"), "{err}");
    drop(holder);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sender::send(
            send_config(s.pki.client(), s.rx.addr, "d0", &s.src),
            Control::new(),
        )
        .await
        {
            Ok(_) => break,
            Err(e) if e.code() == "SMS.2013" && tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(cmp(&s.src, &s.dst));
    s.rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_is_closed_after_the_idle_timeout() {
    let s = setup_with(|c| c.idle_timeout = Duration::from_secs(1)).await;
    let mut tls = hostile_session(&s).await;
    match next_frame(&mut tls).await {
        Some(Frame::Error(e)) => {
            assert_eq!(e.code, "SMS.1908");
            assert!(e.message.contains("no frame"), "{}", e.message);
        }
        other => panic!("expected an idle-timeout ERROR, got {other:?}"),
    }
    assert_eq!(next_frame(&mut tls).await, None, "closed after the ERROR");
    assert_untouched(&s.dst);
    proper_client_succeeds(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_the_handshake_timeout() {
    let s = setup_with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    let mut tcp = TcpStream::connect(s.rx.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "not closed: {closed:?}"
    );
    proper_client_succeeds(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_hello_is_closed_after_the_handshake_timeout() {
    let s = setup_with(|c| c.handshake_timeout = Duration::from_secs(1)).await;
    let tcp = TcpStream::connect(s.rx.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(s.pki.client())
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(next_frame(&mut tls).await, None, "closed without a HELLO");
    proper_client_succeeds(s).await;
}

// ---- More streams of a session (HELLO JOIN). ----

/// A client certificate issued by the same CA as `pki`'s, for another client (openssl).
fn another_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let dir = pki.dir.path();
    let (key, csr, cert) = (
        dir.join("other.key"),
        dir.join("other.csr"),
        dir.join("other.pem"),
    );
    let ext = dir.join("other.ext");
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (scripts/install-deps installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&key),
        "-subj",
        "/CN=another-agent",
        "-out",
        &p(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&pki.files.ca),
        "-CAkey",
        &p(&pki.files.ca_key),
        "-set_serial",
        "4242",
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ]);
    blockrep::tls::client_config(&pki.files.ca, &cert, &key).unwrap()
}

/// Connects with `tls`, says `hello`, and returns the connection and the first answer.
async fn say_hello(s: &Setup, tls: Arc<rustls::ClientConfig>, hello: Frame) -> (Tls, Frame) {
    let tcp = TcpStream::connect(s.rx.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    hello.encode(&mut buf);
    conn.write_all(&buf).await.unwrap();
    let answer = next_frame(&mut conn).await.expect("an answer to HELLO");
    (conn, answer)
}

fn join(size: u64) -> Frame {
    match hello("d0", size) {
        Frame::Hello(h) => Frame::Hello(Hello { join: true, ..h }),
        _ => unreachable!(),
    }
}

fn refused_with(answer: Frame, code: &str) {
    match answer {
        Frame::Error(e) => assert_eq!(e.code, code, "{e:?}"),
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_joins_only_an_open_session_of_its_client_with_its_disks() {
    let s = setup().await;
    let other = another_client(&s.pki);
    // No session of that id is open: SMS.1908 (the sender reconnects).
    refused_with(
        say_hello(&s, s.pki.client(), join(SIZE)).await.1,
        "SMS.1908",
    );
    let first = hostile_session(&s).await;
    // Another client of the same CA: SMS.0304, whatever the disks.
    refused_with(say_hello(&s, other.clone(), join(SIZE)).await.1, "SMS.0304");
    // The same client with other disks: SMS.1504.
    refused_with(
        say_hello(&s, s.pki.client(), join(SIZE + 4096)).await.1,
        "SMS.1504",
    );
    // The same client with the same disks joins, and may write the session's disk even
    // though the first connection holds it.
    let (mut stream, answer) = say_hello(&s, s.pki.client(), join(SIZE)).await;
    match answer {
        Frame::Welcome(w) => assert!(w.held.iter().all(Vec::is_empty), "{w:?}"),
        other => panic!("expected WELCOME, got {other:?}"),
    }
    let chunk = vec![0x5a; 64 << 10];
    let frame = data_frame(0, Encoding::Raw, 0, &chunk, &chunk);
    stream.write_all(&frame).await.unwrap();
    match next_frame(&mut stream).await {
        Some(Frame::Ack(a)) => assert_eq!(a.frames, 1, "{a:?}"),
        other => panic!("expected ACK, got {other:?}"),
    }
    let written = std::fs::read(&s.dst).unwrap();
    assert!(written[..64 << 10].iter().all(|&b| b == 0x5a));
    // Once the session's first connection is gone, nothing joins it.
    drop((first, stream));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = say_hello(&s, s.pki.client(), join(SIZE)).await.1;
        match answer {
            Frame::Welcome(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break refused_with(other, "SMS.1908"),
        }
    }
    proper_client_succeeds(s).await;
}
