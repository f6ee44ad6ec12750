//! What the receiver may never do, whatever a client or its disks do: acknowledge what a failed
//! fdatasync may have lost, let a client of the CA that is not allowed use a disk, grow a
//! target nobody allowed to grow, take a bad HELLO for a retryable failure, or start with a
//! list of targets that names one disk twice. Real TLS on 127.0.0.1, real files, real
//! processes where the environment matters (an LD_PRELOAD).

mod common;
#[path = "common/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use blockrep::receiver::{ClientAccess, ClientRule};
use blockrep::sender::{self, Control, Mode};
use blockrep::{Error, ReceiverConfig, SendConfig, SourceSpec};
use blockrep_proto::{consts, decode, DiskAnnounce, Frame, Hello};
use bytes::BytesMut;
use common::{cmp, make_image, make_target, Region, MIB};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SIZE: u64 = 2 * MIB + 4096;
const FILL: u8 = 0xa5;

// ---------------------------------------------------------------------------------------------
// A CA of the test's own, so it can issue clients with any name and key usage.
// ---------------------------------------------------------------------------------------------

struct Ca {
    dir: tempfile::TempDir,
    cert: Certificate,
    key: KeyPair,
    server: (PathBuf, PathBuf),
}

/// A client certificate's files, and the SHA-256 of its public key.
struct Client {
    cert: PathBuf,
    key: PathBuf,
    spki_sha256: String,
}

impl Ca {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "trust test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        let mut ca = Self {
            dir,
            cert,
            key,
            server: (PathBuf::new(), PathBuf::new()),
        };
        let server = ca.issue(
            "server",
            &["localhost", "127.0.0.1"],
            &[ExtendedKeyUsagePurpose::ServerAuth],
        );
        ca.server = (server.cert, server.key);
        ca
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn issue(&self, cn: &str, names: &[&str], eku: &[ExtendedKeyUsagePurpose]) -> Client {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = eku.to_vec();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{cn}.pem")),
            self.dir.path().join(format!("{cn}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &key.public_key_der());
        Client {
            cert: c,
            key: k,
            spki_sha256: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// A client for client authentication named `cn`.
    fn client(&self, cn: &str) -> Client {
        self.issue(cn, &[], &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn tls(&self, client: &Client) -> Arc<rustls::ClientConfig> {
        blockrep::tls::client_config(&self.ca_path(), &client.cert, &client.key).unwrap()
    }

    fn receiver_config(&self, disks: &[(&str, &Path)]) -> ReceiverConfig {
        let tls =
            blockrep::tls::server_config(&self.server.0, &self.server.1, &self.ca_path()).unwrap();
        let map = disks
            .iter()
            .map(|(id, p)| (id.to_string(), p.to_path_buf()))
            .collect();
        let mut c = ReceiverConfig::new(tls, map);
        c.handshake_timeout = Duration::from_secs(5);
        c
    }
}

fn send_config(tls: Arc<rustls::ClientConfig>, addr: &str, id: &str, src: &Path) -> SendConfig {
    let mut c = SendConfig::new(addr, tls, vec![SourceSpec::new(id, src)]);
    c.mode = Mode::Full;
    c.block_size = 64 << 10;
    c.io_timeout = Duration::from_secs(20);
    c.connect_timeout = Duration::from_secs(10);
    c.retry.total = Duration::ZERO;
    c
}

async fn send(c: SendConfig) -> Result<blockrep::SendSummary, Error> {
    sender::send(c, Control::new()).await
}

fn filled_target(path: &Path, size: u64) {
    std::fs::write(path, vec![FILL; size as usize]).unwrap();
}

fn assert_untouched(dst: &Path, size: u64) {
    let d = std::fs::read(dst).unwrap();
    assert_eq!(d.len() as u64, size, "the target's size changed");
    assert!(d.iter().all(|&b| b == FILL), "the target was written");
}

fn rule(s: &str) -> ClientRule {
    ClientRule::parse(s).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Client binding
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_on_the_allow_list_is_refused_and_the_next_is_served() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    make_image(&src, &[Region::Random(SIZE)], 3);
    filled_target(&dst, SIZE);
    let (alice, mallory, carol) = (ca.client("alice"), ca.client("mallory"), ca.client("carol"));
    let mut config = ca.receiver_config(&[("d0", &dst)]);
    config.access = ClientAccess {
        receiver: vec![
            rule("alice"),
            rule(&format!("sha256:{}", carol.spki_sha256)),
        ],
        ..ClientAccess::default()
    };
    let rx = common::Receiver::start(config).await;
    let addr = rx.addr.to_string();

    let err = send(send_config(ca.tls(&mallory), &addr, "d0", &src))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "SMS.0304", "{err}");
    assert!(err.to_string().contains("not allowed"), "{err}");
    assert!(!err.to_string().contains(&SIZE.to_string()), "{err}");
    assert_untouched(&dst, SIZE);
    // Its digests are refused too: a verification is a session like any other.
    let mut v = send_config(ca.tls(&mallory), &addr, "d0", &src);
    v.session_id = "mallory-verify".into();
    let err = blockrep::sender::verify(v, Control::new(), None)
        .await
        .unwrap_err();
    assert!(
        err.code() == "SMS.0304" || err.to_string().contains("SMS.0304"),
        "{err}"
    );

    // Allowed by name, and by the digest of its public key.
    for client in [&alice, &carol] {
        let summary = send(send_config(ca.tls(client), &addr, "d0", &src))
            .await
            .expect("an allowed client is served");
        assert!(summary.complete);
    }
    assert!(cmp(&src, &dst));
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_bound_to_another_client_is_neither_written_nor_read() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let (d0, d1) = (dir.path().join("d0.img"), dir.path().join("d1.img"));
    make_image(&src, &[Region::Random(SIZE)], 4);
    filled_target(&d0, SIZE);
    filled_target(&d1, SIZE);
    let (alice, mallory) = (ca.client("alice"), ca.client("mallory"));
    let mut config = ca.receiver_config(&[("d0", &d0), ("d1", &d1)]);
    config.access.disks.insert("d0".into(), vec![rule("alice")]);
    let rx = common::Receiver::start(config).await;
    let addr = rx.addr.to_string();

    let err = send(send_config(ca.tls(&mallory), &addr, "d0", &src))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "SMS.0304", "{err}");
    assert_untouched(&d0, SIZE);

    // A hostile client asking for d0's digests gets no WELCOME, no HASHES: only the refusal.
    let mut tls = connect(&ca, &mallory, &addr).await;
    write(
        &mut tls,
        hello("peek", "d0", SIZE, true, consts::VERSION_MAX),
    )
    .await;
    match next_frame(&mut tls).await {
        Some(Frame::Error(e)) => assert_eq!(e.code, "SMS.0304", "{}", e.message),
        other => panic!("expected ERROR SMS.0304, got {other:?}"),
    }
    assert!(next_frame(&mut tls).await.is_none(), "more after the ERROR");

    // An unknown id lists only the disks this client may use.
    let err = send(send_config(ca.tls(&mallory), &addr, "sdz", &src))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "SMS.2013", "{err}");
    assert!(
        err.to_string().contains("d1") && !err.to_string().contains("d0"),
        "{err}"
    );

    // Mallory may write the disk nobody was bound to; Alice may write hers.
    assert!(
        send(send_config(ca.tls(&mallory), &addr, "d1", &src))
            .await
            .unwrap()
            .complete
    );
    assert!(
        send(send_config(ca.tls(&alice), &addr, "d0", &src))
            .await
            .unwrap()
            .complete
    );
    assert!(cmp(&src, &d0) && cmp(&src, &d1));
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_client_auth_usage_is_refused() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    make_image(&src, &[Region::Random(SIZE)], 5);
    filled_target(&dst, SIZE);
    let rx = common::Receiver::start(ca.receiver_config(&[("d0", &dst)])).await;
    let addr = rx.addr.to_string();
    let server_usage = ca.issue("serverish", &[], &[ExtendedKeyUsagePurpose::ServerAuth]);
    let no_usage = ca.issue("plain", &[], &[]);
    // One for servers only is refused by the TLS handshake already; one with no extended key
    // usage at all passes the handshake and is refused by the receiver, saying why.
    for (client, why) in [(&server_usage, "certificate"), (&no_usage, "clientAuth")] {
        let err = send(send_config(ca.tls(client), &addr, "d0", &src))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SMS.0304", "{err}");
        assert!(err.to_string().contains(why), "{err}");
        assert_untouched(&dst, SIZE);
    }
    assert!(
        send(send_config(ca.tls(&ca.client("alice")), &addr, "d0", &src))
            .await
            .unwrap()
            .complete
    );
    rx.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Growing image files
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_image_is_grown_only_when_allowed_and_after_every_check() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (small, big, dst) = (
        dir.path().join("small.img"),
        dir.path().join("big.img"),
        dir.path().join("dst.img"),
    );
    make_image(&small, &[Region::Random(SIZE - 8192)], 6);
    let big_size = make_image(&big, &[Region::Random(SIZE + 12_345)], 7);
    filled_target(&dst, SIZE);
    let (alice, mallory) = (ca.client("alice"), ca.client("mallory"));

    // Without --grow-images: SMS.1504, the file as it was.
    let rx = common::Receiver::start(ca.receiver_config(&[("d0", &dst)])).await;
    let err = send(send_config(
        ca.tls(&alice),
        &rx.addr.to_string(),
        "d0",
        &big,
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), "SMS.1504", "{err}");
    assert_untouched(&dst, SIZE);
    rx.stop().await;

    // With it, a session refused as another client's grows nothing.
    let state = dir.path().join("state");
    let mut config = ca.receiver_config(&[("d0", &dst)]);
    config.grow_images = true;
    config.state_dir = Some(state);
    let rx = common::Receiver::start(config).await;
    let addr = rx.addr.to_string();
    let mut first = send_config(ca.tls(&alice), &addr, "d0", &small);
    first.session_id = "task-9".into();
    assert!(send(first).await.unwrap().complete);
    let mut theirs = send_config(ca.tls(&mallory), &addr, "d0", &big);
    theirs.session_id = "task-9".into();
    let err = send(theirs).await.unwrap_err();
    assert_eq!(err.code(), "SMS.0304", "{err}");
    assert_eq!(
        std::fs::metadata(&dst).unwrap().len(),
        SIZE,
        "grown for a refused session"
    );

    // The allowed session grows it, and the copy is exact.
    let mut grow = send_config(ca.tls(&alice), &addr, "d0", &big);
    grow.session_id = "task-10".into();
    assert!(send(grow).await.unwrap().complete);
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), big_size);
    assert!(cmp(&big, &dst));
    rx.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A bad HELLO
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_in_a_version_the_receiver_does_not_speak_is_a_protocol_error() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    make_image(&src, &[Region::Random(SIZE)], 8);
    filled_target(&dst, SIZE);
    let rx = common::Receiver::start(ca.receiver_config(&[("d0", &dst)])).await;
    let addr = rx.addr.to_string();
    let alice = ca.client("alice");
    let mut tls = connect(&ca, &alice, &addr).await;
    let future = consts::VERSION_MAX + 1;
    let mut frame = hello("future", "d0", SIZE, false, future);
    if let Frame::Hello(h) = &mut frame {
        h.version_min = future;
    }
    write(&mut tls, frame).await;
    match next_frame(&mut tls).await {
        Some(Frame::Error(e)) => {
            // Not SMS.1908, which a sender retries for minutes: a protocol error, with why.
            assert_eq!(e.code, "SMS.2011", "{}", e.message);
            assert!(e.message.contains("version"), "{}", e.message);
        }
        other => panic!("expected ERROR SMS.2011, got {other:?}"),
    }
    assert_untouched(&dst, SIZE);
    assert!(
        send(send_config(ca.tls(&alice), &addr, "d0", &src))
            .await
            .unwrap()
            .complete
    );
    rx.stop().await;
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

fn hello(session: &str, disk: &str, size: u64, verify: bool, version: u16) -> Frame {
    Frame::Hello(Hello {
        version_min: consts::VERSION_MIN.min(version),
        version_max: version,
        session_id: session.into(),
        agent_version: "trust test".into(),
        disks: vec![DiskAnnounce {
            id: disk.into(),
            size,
            block_size: 64 << 10,
        }],
        verify,
        join: false,
        netcheck: false,
    })
}

async fn connect(ca: &Ca, client: &Client, addr: &str) -> Tls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(ca.tls(client))
        .connect(name, tcp)
        .await
        .unwrap()
}

async fn write(tls: &mut Tls, frame: Frame) {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    tls.write_all(&buf).await.unwrap();
    tls.flush().await.unwrap();
}

/// The next frame from the receiver, or None once it closed; bounded in time.
async fn next_frame(tls: &mut Tls) -> Option<Frame> {
    let mut buf = BytesMut::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        // Bounded by the timeout, and by the bytes a frame may take.
        for _ in 0..100_000 {
            if let Some(f) = decode(&mut buf).expect("the receiver sends valid frames") {
                return Some(f);
            }
            match tls.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    })
    .await
    .expect("the receiver answers within 10 s")
}

// ---------------------------------------------------------------------------------------------
// A failed fdatasync (real receiver process, fdatasync failing through an LD_PRELOAD shim)
// ---------------------------------------------------------------------------------------------

/// Makes the first fdatasync of the file named by $BLOCKREP_TEST_FAIL_SYNC fail with EIO and
/// let every later one through, as Linux does: a writeback error is reported once.
const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failed;

static int is_target(int fd) {
    const char *want = getenv("BLOCKREP_TEST_FAIL_SYNC");
    char link[64], path[4096];
    ssize_t n;
    if (!want) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return strcmp(path, want) == 0;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (is_target(fd) && !__atomic_exchange_n(&failed, 1, __ATOMIC_SEQ_CST)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}
"#;

fn build_shim(dir: &Path) -> PathBuf {
    let (c, so) = (dir.join("failsync.c"), dir.join("failsync.so"));
    std::fs::write(&c, SHIM).unwrap();
    process::run_ok(Command::new("gcc").args([
        "-shared",
        "-fPIC",
        "-O2",
        "-o",
        process::p(&so),
        process::p(&c),
        "-ldl",
    ]));
    so
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_is_never_acknowledged_or_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let pki = process::blockrep_certs(&dir.path().join("pki"));
    let shim = build_shim(dir.path());
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    make_image(&src, &[Region::Random(SIZE)], 9);
    make_target(&dst, SIZE);
    let dst = dst.canonicalize().unwrap();
    let state = dir.path().join("state");
    let disk = format!("d0={}", process::p(&dst));
    let args = [
        "--cert",
        process::p(&pki.server_cert),
        "--key",
        process::p(&pki.server_key),
        "--client-ca",
        process::p(&pki.ca),
        "--disk",
        &disk,
        "--state-dir",
        process::p(&state),
    ];
    let env = [
        ("LD_PRELOAD", process::p(&shim)),
        ("BLOCKREP_TEST_FAIL_SYNC", process::p(&dst)),
    ];
    let mut rx = process::Receiver::start_env(&args, true, &env, process::listening_line);
    let tls = blockrep::tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key).unwrap();
    let mut first = send_config(tls.clone(), &rx.addr, "d0", &src);
    first.session_id = "task-sync".into();
    // Slow enough that the receiver catches up and syncs while more data is coming.
    first.limits = blockrep::throttle::Throttle::new(
        blockrep_rate::Rules::unlimited().with_defaults(16, None),
    );
    let err = send(first).await.unwrap_err();
    assert_eq!(err.code(), "SMS.2007", "{err}\n{}", rx.log());
    assert!(
        err.to_string().contains("d0"),
        "the error names the disk: {err}"
    );

    // The same session again (the shim lets every later fdatasync through): nothing that the
    // failed sync covered may count as held, so every byte is read and sent again.
    let mut again = send_config(tls, &rx.addr, "d0", &src);
    again.session_id = "task-sync".into();
    let summary = send(again).await.expect("the second try succeeds");
    assert!(summary.complete);
    assert_eq!(
        summary.read_bytes,
        SIZE,
        "bytes a failed fdatasync covered were taken as held:\n{}",
        rx.log()
    );
    assert!(cmp(&src, &dst));
    assert!(rx.is_running());
    rx.terminate();
}

// ---------------------------------------------------------------------------------------------
// The list of targets
// ---------------------------------------------------------------------------------------------

#[test]
fn a_target_named_twice_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = process::blockrep_certs(&dir.path().join("pki"));
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    make_target(&a, SIZE);
    make_target(&b, SIZE);
    let link = dir.path().join("a-link.img");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let d = |id: &str, path: &Path| format!("{id}={}", process::p(path));
    let cases = [
        (
            vec![d("root", &a), d("root", &b)],
            ["\"root\"", "a.img", "b.img"],
        ),
        (
            vec![d("root", &a), d("data", &a)],
            ["\"root\"", "\"data\"", "a.img"],
        ),
        (
            vec![d("root", &a), d("data", &link)],
            ["\"root\"", "\"data\"", "a-link.img"],
        ),
    ];
    for (disks, names) in cases {
        let mut cmd = Command::new(process::RECEIVER);
        cmd.args(["--listen", "127.0.0.1:0", "--cert"])
            .arg(&pki.server_cert)
            .arg("--key")
            .arg(&pki.server_key)
            .arg("--client-ca")
            .arg(&pki.ca);
        for disk in &disks {
            cmd.args(["--disk", disk]);
        }
        let out = process::run(&mut cmd);
        assert!(
            !out.status.success(),
            "{disks:?} was accepted:\n{}",
            out.stderr
        );
        let line = out.stderr.trim();
        assert!(line.starts_with("error SMS."), "{line}");
        for name in names {
            assert!(
                line.contains(name),
                "{disks:?}: {name} not named in: {line}"
            );
        }
    }
}
