//! End-to-end tests of the two binaries as users and scripts run them: real processes, real
//! TLS on 127.0.0.1, real files, certificates made by the `openssl` command line and by
//! `blockrep certs`. Each test checks exit codes, the one-line `error SMS.xxxx: ...` shape on
//! stderr and the bytes on the target.
//!
//! Nothing here sleeps to wait for something: the receiver's port comes from its
//! `blockrep-receiver listening on ADDR` line, exits are polled with a deadline, and every
//! child process is killed by a guard when a test fails.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

mod common;
#[path = "common/disks.rs"]
mod disks;
#[path = "common/process.rs"]
mod process;

use process::*;

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// A disk image that looks like a real disk: random (incompressible) data, text, long zero
/// runs (whole zero chunks at every block size), and an odd length.
fn make_image(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    let mib = 1024 * 1024;
    // [0, 1 MiB): random.
    rng.fill_bytes(&mut data[..mib.min(size)]);
    // [1 MiB, 2 MiB): text.
    let text = b"Block-level replication copies every used block of the source disk; \
                 lines of text like this one compress well with lz4.\n";
    for (i, b) in data[mib.min(size)..(2 * mib).min(size)]
        .iter_mut()
        .enumerate()
    {
        *b = text[i % text.len()];
    }
    // [2 MiB, 2.5 MiB): zeros (already). [2.5 MiB, 2.75 MiB): random. Then zeros, then a
    // random tail that ends mid-block.
    let a = (2 * mib + mib / 2).min(size);
    let b = (2 * mib + 3 * mib / 4).min(size);
    rng.fill_bytes(&mut data[a..b]);
    let tail = size.saturating_sub(20_000);
    rng.fill_bytes(&mut data[tail..]);
    fs::write(path, &data).expect("write the source image");
    data
}

/// A target of `size` bytes holding [`TARGET_FILL`]; returns its content.
fn make_target(path: &Path, size: usize) -> Vec<u8> {
    let data = vec![TARGET_FILL; size];
    fs::write(path, &data).expect("write the target image");
    data
}

/// Asserts the file at `path` holds exactly `expected`, naming the first difference.
fn assert_file_is(path: &Path, expected: &[u8], what: &str) {
    let actual = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} has {} bytes, expected {}",
        path.display(),
        actual.len(),
        expected.len()
    );
    if let Some(at) = actual.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "{what}: {} differs first at offset {at} (0x{:02x}, expected 0x{:02x})",
            path.display(),
            actual[at],
            expected[at]
        );
    }
}

/// Asserts stderr is exactly one line, `error CODE: <something>`, and returns it.
fn assert_error_line(stderr: &str, code: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr (error {code}: ...), got {}:\n{stderr}",
        lines.len()
    );
    let prefix = format!("error {code}: ");
    assert!(
        lines[0].starts_with(&prefix) && lines[0].len() > prefix.len(),
        "expected a line starting {prefix:?} with a reason, got {:?}",
        lines[0]
    );
    assert!(
        !lines[0].chars().any(char::is_control),
        "the error line holds control characters: {:?}",
        lines[0]
    );
    lines[0].to_owned()
}

/// Key types and PEM forms, as `openssl` writes them.
#[derive(Clone, Copy, Debug)]
enum KeyKind {
    /// RSA 2048, PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
    /// EC P-256, SEC1 (`BEGIN EC PRIVATE KEY`).
    EcSec1,
    /// RSA 2048, PKCS#8 (`BEGIN PRIVATE KEY`).
    RsaPkcs8,
    /// EC P-256, PKCS#8 (`BEGIN PRIVATE KEY`).
    EcPkcs8,
}

fn openssl() -> Command {
    let mut cmd = Command::new("openssl");
    // No user or system configuration changes what these commands produce.
    cmd.env_remove("OPENSSL_CONF");
    cmd
}

fn openssl_key(path: &Path, kind: KeyKind) {
    let mut cmd = openssl();
    let header = match kind {
        KeyKind::RsaPkcs1 => {
            cmd.args(["genrsa", "-traditional", "-out", p(path), "2048"]);
            "-----BEGIN RSA PRIVATE KEY-----"
        }
        KeyKind::EcSec1 => {
            cmd.args([
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                p(path),
            ]);
            "-----BEGIN EC PRIVATE KEY-----"
        }
        KeyKind::RsaPkcs8 => {
            cmd.args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                p(path),
            ]);
            "-----BEGIN PRIVATE KEY-----"
        }
        KeyKind::EcPkcs8 => {
            cmd.args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                p(path),
            ]);
            "-----BEGIN PRIVATE KEY-----"
        }
    };
    run_ok(&mut cmd);
    let pem = fs::read_to_string(path).expect("read the key openssl wrote");
    assert!(
        pem.starts_with(header),
        "openssl wrote a {kind:?} key that does not start with {header}:\n{}",
        pem.lines().next().unwrap_or("")
    );
}

/// Makes a CA and a server and a client certificate with the openssl command line, each key
/// of the kind asked, with X.509 v3 extensions given by `-extfile`.
fn openssl_pki(dir: &Path, ca_kind: KeyKind, server_kind: KeyKind, client_kind: KeyKind) -> Pki {
    fs::create_dir_all(dir).expect("create the PKI directory");
    let f = |name: &str| dir.join(name);
    fs::write(
        f("ca.ext"),
        "basicConstraints=critical,CA:TRUE\n\
         keyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\n",
    )
    .expect("write ca.ext");
    fs::write(
        f("server.ext"),
        "basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    )
    .expect("write server.ext");
    fs::write(
        f("client.ext"),
        "basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    )
    .expect("write client.ext");

    // The CA: a request self-signed by `x509 -req`, so its extensions come from ca.ext.
    openssl_key(&f("ca.key"), ca_kind);
    run_ok(openssl().args([
        "req",
        "-new",
        "-key",
        p(&f("ca.key")),
        "-subj",
        "/O=blockrep tests/CN=openssl test CA",
        "-out",
        p(&f("ca.csr")),
    ]));
    run_ok(openssl().args([
        "x509",
        "-req",
        "-in",
        p(&f("ca.csr")),
        "-signkey",
        p(&f("ca.key")),
        "-sha256",
        "-days",
        "30",
        "-set_serial",
        "1",
        "-extfile",
        p(&f("ca.ext")),
        "-out",
        p(&f("ca.pem")),
    ]));

    for (name, kind, serial) in [("server", server_kind, "2"), ("client", client_kind, "3")] {
        let key = f(&format!("{name}.key"));
        let csr = f(&format!("{name}.csr"));
        openssl_key(&key, kind);
        run_ok(openssl().args([
            "req",
            "-new",
            "-key",
            p(&key),
            "-subj",
            &format!("/O=blockrep tests/CN=openssl test {name}"),
            "-out",
            p(&csr),
        ]));
        run_ok(openssl().args([
            "x509",
            "-req",
            "-in",
            p(&csr),
            "-CA",
            p(&f("ca.pem")),
            "-CAkey",
            p(&f("ca.key")),
            "-set_serial",
            serial,
            "-sha256",
            "-days",
            "30",
            "-extfile",
            p(&f(&format!("{name}.ext"))),
            "-out",
            p(&f(&format!("{name}.pem"))),
        ]));
    }
    // openssl itself agrees the chain is sound, so a refusal below is blockrep's.
    run_ok(openssl().args([
        "verify",
        "-CAfile",
        p(&f("ca.pem")),
        "-purpose",
        "sslserver",
        p(&f("server.pem")),
    ]));
    run_ok(openssl().args([
        "verify",
        "-CAfile",
        p(&f("ca.pem")),
        "-purpose",
        "sslclient",
        p(&f("client.pem")),
    ]));
    Pki {
        ca: f("ca.pem"),
        server_cert: f("server.pem"),
        server_key: f("server.key"),
        client_cert: f("client.pem"),
        client_key: f("client.key"),
    }
}

// ---------------------------------------------------------------------------------------------
// The two commands
// ---------------------------------------------------------------------------------------------

/// Receiver arguments for `pki` and `disks` (`ID=PATH`), plus `extra`.
fn receiver_args(pki: &Pki, disks: &[String], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--cert".into(),
        p(&pki.server_cert).into(),
        "--key".into(),
        p(&pki.server_key).into(),
        "--client-ca".into(),
        p(&pki.ca).into(),
    ];
    for d in disks {
        args.push("--disk".into());
        args.push(d.clone());
    }
    args.extend(extra.iter().map(ToString::to_string));
    args
}

fn start_receiver(pki: &Pki, disks: &[String], extra: &[&str]) -> Receiver {
    let args = receiver_args(pki, disks, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Receiver::start(&refs, true)
}

/// How a sender authenticates: trusted CA, client certificate and key.
struct ClientAuth<'a> {
    ca: &'a Path,
    cert: &'a Path,
    key: &'a Path,
}

impl<'a> ClientAuth<'a> {
    fn of(pki: &'a Pki) -> Self {
        Self {
            ca: &pki.ca,
            cert: &pki.client_cert,
            key: &pki.client_key,
        }
    }
}

/// `blockrep send --to ADDR <auth>`, to which a test adds the rest.
fn send_command(to: &str, auth: &ClientAuth<'_>) -> Command {
    connect_command("send", to, auth)
}

/// `blockrep SUBCOMMAND --to ADDR <auth>`: a command taking the connection flags.
fn connect_command(subcommand: &str, to: &str, auth: &ClientAuth<'_>) -> Command {
    let mut cmd = Command::new(SEND);
    cmd.args([
        subcommand,
        "--to",
        to,
        "--ca",
        p(auth.ca),
        "--cert",
        p(auth.cert),
        "--key",
        p(auth.key),
    ]);
    cmd
}

/// `blockrep send --to ADDR <auth> --mode full --disk ... <extra>`.
fn send(to: &str, auth: &ClientAuth<'_>, disks: &[String], extra: &[&str]) -> Output {
    let mut cmd = send_command(to, auth);
    cmd.args(["--mode", "full"]);
    for d in disks {
        cmd.args(["--disk", d]);
    }
    cmd.args(extra);
    run(&mut cmd)
}

fn disk(id: &str, path: &Path) -> String {
    format!("{id}={}", p(path))
}

/// Asserts a send succeeded: exit 0, nothing but progress on stderr.
fn assert_sent(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: send failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// One full replication with `pki` to a `--once` receiver: both exit 0, target identical.
fn replicate_once(dir: &Path, pki: &Pki, seed: u64, extra_send: &[&str]) -> Output {
    fs::create_dir_all(dir).expect("create the work directory");
    let source = dir.join("source.img");
    let target = dir.join("target.img");
    let data = make_image(&source, IMAGE_SIZE, seed);
    make_target(&target, IMAGE_SIZE);
    let receiver = start_receiver(pki, &[disk("d0", &target)], &["--once"]);
    let out = send(
        &receiver.addr,
        &ClientAuth::of(pki),
        &[disk("d0", &source)],
        extra_send,
    );
    assert_sent(&out, "replication");
    let (status, lines) = receiver.wait();
    assert!(
        status.success(),
        "the --once receiver exited with {status} after a successful session:\n{}",
        lines.join("\n")
    );
    assert_file_is(&target, &data, "target after replication");
    out
}

/// Checks `--progress json` output: progress objects with the service's field names, then a
/// summary that says the transfer is complete.
fn assert_json_progress(stdout: &str, total: u64) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() >= 2,
        "expected progress lines and a summary on stdout, got:\n{stdout}"
    );
    let (summary, progress) = lines.split_last().expect("at least two lines");
    for line in progress {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a progress line is not JSON ({e}): {line}"));
        assert_eq!(
            v["subtask_name"], "MIGRATE_LINUX_BLOCK",
            "subtask_name in {line}"
        );
        for field in [
            "progress",
            "replicatesize",
            "totalsize",
            "migrate_speed",
            "compress_rate",
            "remain_time",
            "agent_cpu_usage",
            "agent_mem_usage",
            "agent_disk_io",
        ] {
            assert!(
                v[field].is_number(),
                "{field} missing or not a number in {line}"
            );
        }
        // The sender's own use of the machine, measured from /proc: a real process holds
        // some memory and uses between none and all of the CPU.
        let cpu = v["agent_cpu_usage"].as_f64().expect("agent_cpu_usage");
        assert!(
            (0.0..=100.0).contains(&cpu),
            "agent_cpu_usage {cpu} in {line}"
        );
        let mem = v["agent_mem_usage"].as_f64().expect("agent_mem_usage");
        assert!(
            mem > 1.0 && mem < 1000.0,
            "agent_mem_usage {mem} MB in {line}"
        );
        assert!(v["agent_disk_io"].as_f64().is_some_and(|io| io >= 0.0));
        let pct = v["progress"].as_f64().expect("progress is a number");
        assert!((0.0..=100.0).contains(&pct), "progress {pct} in {line}");
        let done = v["replicatesize"].as_u64().expect("replicatesize is a u64");
        let size = v["totalsize"].as_u64().expect("totalsize is a u64");
        assert!(done <= size, "replicatesize > totalsize in {line}");
        assert!(
            size == total || size == 0,
            "totalsize {size} is neither the plan ({total}) nor 0 in {line}"
        );
    }
    let last: Value = serde_json::from_str(progress.last().expect("a progress line"))
        .expect("the last progress line is JSON");
    assert_eq!(last["replicatesize"].as_u64(), Some(total), "final {last}");
    assert_eq!(last["progress"].as_f64(), Some(100.0), "final {last}");

    let s: Value = serde_json::from_str(summary)
        .unwrap_or_else(|e| panic!("the summary line is not JSON ({e}): {summary}"));
    let s = s
        .get("summary")
        .unwrap_or_else(|| panic!("the last line is not {{\"summary\":...}}: {summary}"));
    assert_eq!(s["complete"], true, "summary: {summary}");
    assert_eq!(s["total_bytes"].as_u64(), Some(total), "summary: {summary}");
    assert_eq!(s["acked_bytes"].as_u64(), Some(total), "summary: {summary}");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn openssl_made_certificates_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let variants = [
        // RSA PKCS#1 on the receiver's side, EC SEC1 on the agent's.
        (
            "rsa-server",
            KeyKind::RsaPkcs1,
            KeyKind::RsaPkcs1,
            KeyKind::EcSec1,
        ),
        // And the other way round, with an EC CA.
        (
            "ec-server",
            KeyKind::EcSec1,
            KeyKind::EcSec1,
            KeyKind::RsaPkcs1,
        ),
        // PKCS#8 keys, as `openssl genpkey` writes them.
        (
            "pkcs8",
            KeyKind::EcPkcs8,
            KeyKind::RsaPkcs8,
            KeyKind::EcPkcs8,
        ),
    ];
    for (i, (name, ca, server, client)) in variants.into_iter().enumerate() {
        let dir = tmp.path().join(name);
        let pki = openssl_pki(&dir.join("pki"), ca, server, client);
        let block_size = if i == 1 { "64KiB" } else { "1MiB" };
        let out = replicate_once(
            &dir.join("work"),
            &pki,
            10 + i as u64,
            &["--progress", "json", "--block-size", block_size],
        );
        assert_json_progress(&out.stdout, IMAGE_SIZE as u64);
    }
}

#[test]
fn certs_command_makes_a_working_pair() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    // The host part of --to (127.0.0.1) is the name checked.
    replicate_once(&tmp.path().join("by-ip"), &pki, 20, &["--progress", "none"]);
    // An explicit --server-name.
    replicate_once(
        &tmp.path().join("by-name"),
        &pki,
        21,
        &["--progress", "none", "--server-name", "localhost"],
    );
}

#[test]
fn connection_refused_is_sms_1807() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    make_image(&source, 64 * 1024, 30);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        l.local_addr().expect("local addr").port()
    };
    let out = send(
        &format!("127.0.0.1:{port}"),
        &ClientAuth::of(&pki),
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert!(!out.status.success(), "send to a closed port succeeded");
    assert_error_line(&out.stderr, "SMS.1807");
}

#[test]
fn wrong_ca_is_sms_0304() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let other = blockrep_certs(&tmp.path().join("other"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    let data = make_image(&source, IMAGE_SIZE, 40);
    let before = make_target(&target, IMAGE_SIZE);
    let mut receiver = start_receiver(&pki, &[disk("d0", &target)], &["--once"]);

    // The sender trusts another CA than the one that issued the receiver's certificate.
    let bad = ClientAuth {
        ca: &other.ca,
        cert: &pki.client_cert,
        key: &pki.client_key,
    };
    let out = send(
        &receiver.addr,
        &bad,
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert!(
        !out.status.success(),
        "a sender trusting the wrong CA succeeded"
    );
    assert_error_line(&out.stderr, "SMS.0304");
    assert_file_is(&target, &before, "target after a refused handshake");
    assert!(
        receiver.is_running(),
        "a --once receiver exited after a failed handshake (no session was opened)"
    );

    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert_sent(&out, "proper client after a refused one");
    let (status, lines) = receiver.wait();
    assert!(status.success(), "receiver: {status}\n{}", lines.join("\n"));
    assert_file_is(&target, &data, "target after the proper client");
}

#[test]
fn client_from_another_ca_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let other = blockrep_certs(&tmp.path().join("other"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    let data = make_image(&source, IMAGE_SIZE, 50);
    let before = make_target(&target, IMAGE_SIZE);
    let mut receiver = start_receiver(&pki, &[disk("d0", &target)], &[]);

    // The sender trusts the right CA, but its own certificate comes from another one.
    let bad = ClientAuth {
        ca: &pki.ca,
        cert: &other.client_cert,
        key: &other.client_key,
    };
    let out = send(
        &receiver.addr,
        &bad,
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert!(
        !out.status.success(),
        "a client certificate from another CA was accepted"
    );
    assert_error_line(&out.stderr, "SMS.0304");
    assert_file_is(&target, &before, "target after a refused client");
    assert!(
        receiver.is_running(),
        "the receiver died after a refused client"
    );

    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert_sent(&out, "proper client after a refused one");
    assert_file_is(&target, &data, "target after the proper client");
    assert!(receiver.is_running(), "a receiver without --once exited");
    // The guard kills it.
}

#[test]
fn bad_key_file_is_sms_3301() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    make_image(&source, 64 * 1024, 60);
    let garbage = tmp.path().join("garbage.key");
    let mut junk = vec![0u8; 2048];
    StdRng::seed_from_u64(61).fill_bytes(&mut junk);
    fs::write(&garbage, &junk).expect("write garbage");
    let missing = tmp.path().join("does-not-exist.key");
    // Not a key at all, but a certificate: a file with PEM, of the wrong kind.
    let cert_as_key = pki.client_cert.clone();

    // Nothing listens there: the key must be refused before any connection is tried.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        l.local_addr().expect("local addr").port()
    };
    for key in [&missing, &garbage, &cert_as_key] {
        let auth = ClientAuth {
            ca: &pki.ca,
            cert: &pki.client_cert,
            key,
        };
        let out = send(
            &format!("127.0.0.1:{port}"),
            &auth,
            &[disk("d0", &source)],
            &["--progress", "none"],
        );
        assert!(
            !out.status.success(),
            "send with key {} succeeded",
            key.display()
        );
        let line = assert_error_line(&out.stderr, "SMS.3301");
        assert!(
            line.contains(p(key)),
            "the error does not name the key file {}: {line}",
            key.display()
        );
    }

    // The receiver refuses to start with such a key, too.
    let target = tmp.path().join("target.img");
    make_target(&target, 64 * 1024);
    for key in [&missing, &garbage] {
        let out = run(Command::new(RECEIVER).args([
            "--listen",
            "127.0.0.1:0",
            "--cert",
            p(&pki.server_cert),
            "--key",
            p(key),
            "--client-ca",
            p(&pki.ca),
            "--disk",
            &disk("d0", &target),
        ]));
        assert!(
            !out.status.success(),
            "receiver started with key {}",
            key.display()
        );
        assert_error_line(&out.stderr, "SMS.3301");
    }
}

#[test]
fn source_larger_than_target_is_sms_1504() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    make_image(&source, IMAGE_SIZE, 70);
    let before = make_target(&target, IMAGE_SIZE - 4096);
    // A device cannot grow (an image file target would: tests/refusals.rs).
    let lo = match disks::Loop::attach(&target, 0, IMAGE_SIZE as u64 - 4096, false) {
        Ok(lo) => lo,
        Err(e) => {
            return common::skip(
                "source_larger_than_target_is_sms_1504",
                format_args!("no loop device: {e}"),
            )
        }
    };
    let mut receiver = start_receiver(&pki, &[disk("d0", &lo.dev)], &[]);
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert!(
        !out.status.success(),
        "a source larger than its target was sent"
    );
    assert_error_line(&out.stderr, "SMS.1504");
    assert_file_is(&target, &before, "a target smaller than its source");
    assert!(
        receiver.is_running(),
        "the receiver died after refusing a session"
    );

    // The next proper client, with a source that fits, is served.
    let fits = tmp.path().join("fits.img");
    // A loop device has whole 512-byte sectors.
    let data = make_image(&fits, (IMAGE_SIZE - 4096) / 512 * 512, 71);
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &fits)],
        &["--progress", "none"],
    );
    assert_sent(&out, "a source as large as its target");
    drop(receiver);
    drop(lo);
    let mut expected = data.clone();
    expected.extend_from_slice(&before[data.len()..]);
    assert_file_is(&target, &expected, "target after a source that fits");
}

#[test]
fn unknown_disk_id_is_sms_2013() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    let data = make_image(&source, IMAGE_SIZE, 80);
    let before = make_target(&target, IMAGE_SIZE);
    let mut receiver = start_receiver(&pki, &[disk("d0", &target)], &[]);
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d9", &source)],
        &["--progress", "none"],
    );
    assert!(
        !out.status.success(),
        "a disk id the receiver does not know was sent"
    );
    let line = assert_error_line(&out.stderr, "SMS.2013");
    assert!(
        line.contains("d9"),
        "the error does not name the disk id: {line}"
    );
    assert_file_is(&target, &before, "target after an unknown disk id");

    // Naming a known and an unknown disk in one session is refused as a whole.
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &source), disk("d9", &source)],
        &["--progress", "none"],
    );
    assert!(
        !out.status.success(),
        "a session with an unknown disk id ran"
    );
    assert_error_line(&out.stderr, "SMS.2013");
    assert_file_is(
        &target,
        &before,
        "target after a session with an unknown disk id",
    );

    assert!(
        receiver.is_running(),
        "the receiver died after refusing a session"
    );
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert_sent(&out, "proper client after refused sessions");
    assert_file_is(&target, &data, "target after the proper client");
}

#[test]
fn receiver_once_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    let data = make_image(&source, IMAGE_SIZE, 90);
    let before = make_target(&target, IMAGE_SIZE);

    // A refused session: the receiver exits non-zero and says why on its last line.
    let receiver = start_receiver(&pki, &[disk("d0", &target)], &["--once"]);
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("nope", &source)],
        &["--progress", "none"],
    );
    assert!(!out.status.success());
    assert_error_line(&out.stderr, "SMS.2013");
    let (status, lines) = receiver.wait();
    assert!(
        !status.success(),
        "a --once receiver exited 0 after a refused session:\n{}",
        lines.join("\n")
    );
    let last = lines.last().map_or("", String::as_str);
    assert!(
        last.starts_with("error SMS.2013: "),
        "the receiver's last stderr line is not the session's error: {last:?}\n{}",
        lines.join("\n")
    );
    assert_file_is(&target, &before, "target after a refused --once session");

    // A successful session: exit 0.
    let receiver = start_receiver(&pki, &[disk("d0", &target)], &["--once"]);
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert_sent(&out, "--once session");
    let (status, lines) = receiver.wait();
    assert!(
        status.success(),
        "a --once receiver exited {status} after a successful session:\n{}",
        lines.join("\n")
    );
    assert_file_is(&target, &data, "target after a --once session");
}

/// Sends SIGTERM to a receiver and asserts it exits 0 within the bound.
fn terminate(receiver: Receiver) {
    receiver.terminate();
}

#[test]
fn receiver_sigterm_exits_zero() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let target = tmp.path().join("target.img");
    make_target(&target, 64 * 1024);
    // SIGTERM as soon as the receiver says it is ready, as a script or service manager would;
    // several times, since a missing handler only shows when the signal wins the race.
    for _ in 0..20 {
        let mut receiver = start_receiver(&pki, &[disk("d0", &target)], &[]);
        assert!(receiver.is_running());
        terminate(receiver);
    }
}

#[test]
fn receiver_sigterm_after_a_session_exits_zero() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    let data = make_image(&source, IMAGE_SIZE, 100);
    make_target(&target, IMAGE_SIZE);
    let mut receiver = start_receiver(&pki, &[disk("d0", &target)], &[]);
    // A whole session proves the serve loop (and so its signal handler) is running.
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert_sent(&out, "send before SIGTERM");
    assert_file_is(&target, &data, "target before SIGTERM");
    assert!(receiver.is_running(), "a receiver without --once exited");
    terminate(receiver);
    assert_file_is(&target, &data, "target after SIGTERM");
}

#[test]
fn help_answers_questions() {
    let top = run_ok(Command::new(SEND).arg("--help"));
    for word in ["send", "certs"] {
        assert!(
            top.stdout.contains(word),
            "blockrep --help does not mention {word}:\n{}",
            top.stdout
        );
    }
    let send_help = run_ok(Command::new(SEND).args(["send", "--help"]));
    for flag in [
        "--to",
        "--ca",
        "--cert",
        "--key",
        "--server-name",
        "--disk",
        "--mode",
        "--block-size",
        "--session",
        "--progress",
    ] {
        assert!(
            send_help.stdout.contains(flag),
            "blockrep send --help does not mention {flag}:\n{}",
            send_help.stdout
        );
    }
    let recv_help = run_ok(Command::new(RECEIVER).arg("--help"));
    for flag in [
        "--config",
        "--listen",
        "--cert",
        "--key",
        "--client-ca",
        "--disk",
        "--state-dir",
        "--once",
    ] {
        assert!(
            recv_help.stdout.contains(flag),
            "blockrep-receiver --help does not mention {flag}:\n{}",
            recv_help.stdout
        );
    }
}

#[test]
fn receiver_config_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    let data = make_image(&source, IMAGE_SIZE, 120);
    make_target(&target, IMAGE_SIZE);
    let state = tmp.path().join("state");
    let config = tmp.path().join("receiver.toml");
    // TOML basic strings: the temporary paths hold no quotes or backslashes.
    fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             cert = \"{}\"\n\
             key = \"{}\"\n\
             client_ca = \"{}\"\n\
             state_dir = \"{}\"\n\
             [disks]\n\
             d0 = \"{}\"\n",
            p(&pki.server_cert),
            p(&pki.server_key),
            p(&pki.ca),
            p(&state),
            p(&target)
        ),
    )
    .expect("write the config file");
    let receiver = Receiver::start(&["--config", p(&config), "--once"], false);
    assert!(
        receiver.addr.starts_with("127.0.0.1:"),
        "the receiver ignored listen from the config: {}",
        receiver.addr
    );
    assert!(state.is_dir(), "state_dir from the config was not created");
    let out = send(
        &receiver.addr,
        &ClientAuth::of(&pki),
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert_sent(&out, "send to a receiver configured by file");
    let (status, lines) = receiver.wait();
    assert!(status.success(), "receiver: {status}\n{}", lines.join("\n"));
    assert_file_is(&target, &data, "target of a receiver configured by file");
}

#[test]
fn missing_target_disk_fails_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let missing = tmp.path().join("nonexistent.img");
    let args = receiver_args(&pki, &[disk("d0", &missing)], &["--listen", "127.0.0.1:0"]);
    let out = run(Command::new(RECEIVER).args(&args));
    assert!(
        !out.status.success(),
        "the receiver started with a missing target disk"
    );
    let line = assert_error_line(&out.stderr, "SMS.2013");
    assert!(
        line.contains(p(&missing)),
        "the error does not name the missing path: {line}"
    );
    assert!(!missing.exists(), "the receiver created the missing target");
}

/// `blockrep send` with `args` after the connection flags (no default `--mode`).
fn send_with(to: &str, pki: &Pki, args: &[&str]) -> Output {
    run(send_command(to, &ClientAuth::of(pki)).args(args))
}

/// Overwrites every `stride`-th 4 KiB block from `first` with `byte`.
fn touch_blocks(path: &Path, first: u64, stride: u64, byte: u8) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the source");
    let blocks = f.metadata().expect("metadata").len() / 4096;
    let mut b = first;
    while b < blocks {
        f.write_all_at(&[byte; 4096], b * 4096)
            .expect("write a block");
        b += stride;
    }
}

#[test]
fn sync_rounds_through_the_cli() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let (source, target, before) = (
        tmp.path().join("s.img"),
        tmp.path().join("t.img"),
        tmp.path().join("before.img"),
    );
    let data = make_image(&source, IMAGE_SIZE, 41);
    fs::write(&target, &data).expect("target starts as a copy");
    fs::write(&before, &data).expect("snapshot");
    touch_blocks(&source, 3, 17, 0x5a);
    let bitmap = tmp.path().join("changes.bmap");
    let diff = run_ok(Command::new(SEND).args([
        "bitmap",
        "diff",
        p(&before),
        p(&source),
        "--block-size",
        "4KiB",
        "--out",
        p(&bitmap),
    ]));
    assert!(diff.stdout.contains("changed"), "{}", diff.stdout);

    let receiver = start_receiver(&pki, &[disk("d0", &target)], &[]);
    // A bitmap round.
    let out = send_with(
        &receiver.addr,
        &pki,
        &[
            "--disk",
            &disk("d0", &source),
            "--mode",
            "bitmap",
            "--bitmap",
            &disk("d0", &bitmap),
            "--progress",
            "json",
        ],
    );
    assert_sent(&out, "bitmap round");
    assert!(
        out.stdout.contains("\"subtask_name\":\"SYNC_LINUX_BLOCK\""),
        "{}",
        out.stdout
    );
    assert_file_is(
        &target,
        &fs::read(&source).expect("source"),
        "target after the bitmap round",
    );
    // A delta round after more changes, without a bitmap.
    touch_blocks(&source, 5, 23, 0xa5);
    let out = send_with(
        &receiver.addr,
        &pki,
        &[
            "--disk",
            &disk("d0", &source),
            "--mode",
            "delta",
            "--progress",
            "json",
        ],
    );
    assert_sent(&out, "delta round");
    let summary: Value =
        serde_json::from_str(out.stdout.lines().last().expect("a summary")).expect("JSON");
    let sent = summary["summary"]["sent_bytes"]
        .as_u64()
        .expect("sent_bytes");
    assert!(
        sent > 0 && sent < IMAGE_SIZE as u64 / 10,
        "delta sent {sent} bytes"
    );
    assert_file_is(
        &target,
        &fs::read(&source).expect("source"),
        "target after the delta round",
    );

    // Mistakes get one clear line each.
    let out = send_with(
        &receiver.addr,
        &pki,
        &["--disk", &disk("d0", &source), "--mode", "bitmap"],
    );
    let line = assert_error_line(&out.stderr, "SMS.1908");
    assert!(line.contains("--bitmap d0=FILE"), "{line}");
    let other = tmp.path().join("other.img");
    make_image(&other, IMAGE_SIZE + 4096, 1);
    let wrong = tmp.path().join("wrong.bmap");
    run_ok(Command::new(SEND).args([
        "bitmap",
        "diff",
        p(&other),
        p(&other),
        "--block-size",
        "4KiB",
        "--out",
        p(&wrong),
    ]));
    let out = send_with(
        &receiver.addr,
        &pki,
        &[
            "--disk",
            &disk("d0", &source),
            "--mode",
            "bitmap",
            "--bitmap",
            &disk("d0", &wrong),
        ],
    );
    let line = assert_error_line(&out.stderr, "SMS.1908");
    assert!(line.contains("another disk"), "{line}");
    drop(receiver);
}

#[test]
fn blockmap_command_describes_a_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("disk.img");
    fs::File::create(&img)
        .expect("create")
        .set_len(64 << 20)
        .expect("size");
    run_ok(Command::new("sgdisk").args(["-o", "-n", "1:2048:+16M", "-t", "1:8300", p(&img)]));
    let text = run_ok(Command::new(SEND).args(["blockmap", p(&img)]));
    assert!(
        text.stdout.contains("partition table: gpt"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("to send:"), "{}", text.stdout);
    let json = run_ok(Command::new(SEND).args(["blockmap", p(&img), "--json"]));
    let v: Value = serde_json::from_str(json.stdout.trim()).expect("one JSON object");
    let total: u64 = v["extents"]
        .as_array()
        .expect("extents")
        .iter()
        .map(|e| e[1].as_u64().expect("length"))
        .sum();
    assert_eq!(Some(total), v["used_bytes"].as_u64());
    assert_eq!(v["partitions"].as_array().map(Vec::len), Some(1));
    let full = run_ok(Command::new(SEND).args(["blockmap", p(&img), "--mode", "full", "--json"]));
    let v: Value = serde_json::from_str(full.stdout.trim()).expect("one JSON object");
    assert_eq!(v["used_bytes"].as_u64(), Some(64 << 20));
    let missing = run(Command::new(SEND).args(["blockmap", p(&tmp.path().join("nope.img"))]));
    assert_error_line(&missing.stderr, "SMS.2013");
}

#[test]
fn speed_limit_file_changes_reach_a_running_transfer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let (source, target) = (tmp.path().join("s.img"), tmp.path().join("t.img"));
    // 32 MiB of random data: 34 s at 8 Mbit/s.
    let data: Vec<u8> = {
        let mut rng = StdRng::seed_from_u64(8);
        let mut v = vec![0u8; 32 << 20];
        rand::RngCore::fill_bytes(&mut rng, &mut v);
        v
    };
    fs::write(&source, &data).expect("source");
    make_target(&target, data.len());
    let rules = tmp.path().join("limits.json");
    fs::write(
        &rules,
        r#"{"speed_limit":[{"start":"0:00","end":"23:59","speed":8}]}"#,
    )
    .expect("rules");
    let receiver = start_receiver(&pki, &[disk("d0", &target)], &["--once"]);
    let limit_arg = format!("@{}", p(&rules));
    let mut child = ChildGuard(
        send_command(&receiver.addr, &ClientAuth::of(&pki))
            .args([
                "--disk",
                &disk("d0", &source),
                "--mode",
                "full",
                "--progress",
                "json",
                "--speed-limit",
                &limit_arg,
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start send"),
    );
    let lines = lines_of(child.0.stdout.take().expect("stdout"));
    let stderr = slurp(child.0.stderr.take().expect("stderr"));
    // Wait (bounded) until some data is durable under the 8 Mbit/s limit.
    let start = Instant::now();
    let mut progressed = false;
    while start.elapsed() < Duration::from_secs(30) {
        match lines.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).expect("a JSON line");
                if v["replicatesize"].as_u64().unwrap_or(0) > 0 {
                    let speed = v["migrate_speed"].as_f64().expect("a migrate_speed");
                    assert!(speed < 8.0 * 1.5, "{line}");
                    progressed = true;
                    break;
                }
            }
            Err(_) => break,
        }
    }
    assert!(
        progressed,
        "no progress under the 8 Mbit/s limit within 30 s"
    );
    // Lift the limit by editing the file: the rest goes at loopback speed.
    fs::write(&rules, "00:00-23:59=0").expect("new rules");
    let changed = Instant::now();
    let status = wait_exit(&mut child.0, Duration::from_secs(25), "send");
    assert!(
        status.success(),
        "send failed: {status}\n{}",
        stderr.join().expect("stderr reader")
    );
    assert!(changed.elapsed() < Duration::from_secs(25));
    let (status, _) = receiver.wait();
    assert!(status.success());
    assert_file_is(&target, &data, "target after the limit was lifted");
}

/// `blockrep netcheck <connection flags> [--json]` against a real receiver: the service's
/// NetworkCheckInfo fields, figures a loopback path must give, a burst that obeys
/// --speed-limit, a table for people, and the receiver serving a transfer afterwards.
#[test]
fn netcheck_measures_the_path_to_a_receiver() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let target = tmp.path().join("target.img");
    make_target(&target, 64 * 1024);
    // --once: a network check is not the session it waits for.
    let receiver = start_receiver(&pki, &[disk("d0", &target)], &["--once"]);
    let auth = ClientAuth::of(&pki);
    let netcheck = |extra: &[&str]| {
        let mut cmd = connect_command("netcheck", &receiver.addr, &auth);
        cmd.args(["--seconds", "1", "--pings", "10"]).args(extra);
        run(&mut cmd)
    };

    let out = netcheck(&["--json"]);
    assert!(out.status.success(), "netcheck failed: {}", out.stderr);
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", out.stdout));
    for field in [
        "network_delay",
        "network_jitter",
        "migration_speed",
        "loss_percentage",
        "cpu_usage",
        "mem_usage",
    ] {
        assert!(
            v[field].as_f64().is_some_and(|x| x >= 0.0),
            "{field} in {v}"
        );
    }
    // Loopback: little loss (the kernel does retransmit on loopback when its queues fill), a
    // round trip well under a second, some bandwidth, a verdict that is not poor.
    assert!(v["loss_percentage"].as_f64().unwrap() < 5.0, "{v}");
    assert!(v["network_delay"].as_f64().unwrap() < 1000.0, "{v}");
    assert!(v["burst_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["mem_usage"].as_f64().unwrap() > 1.0, "{v}");
    assert!(
        ["good", "fair"].contains(&v["evaluation_result"].as_str().unwrap()),
        "{v}"
    );

    // Under a 20 Mbit/s limit the burst goes no faster (the bucket's first second of burst
    // allowance aside, hence the margin), and is judged against the limit.
    let out = netcheck(&["--json", "--speed-limit", "00:00-24:00=20"]);
    assert!(out.status.success(), "netcheck failed: {}", out.stderr);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(v["speed_limit"].as_f64(), Some(20.0), "{v}");
    let speed = v["migration_speed"].as_f64().unwrap();
    assert!(
        speed > 0.0 && speed < 45.0,
        "{speed} Mbit/s under a 20 Mbit/s limit: {v}"
    );

    // The table for people.
    let out = netcheck(&[]);
    assert!(out.status.success(), "netcheck failed: {}", out.stderr);
    for word in [
        "round trip",
        "jitter",
        "bandwidth",
        "loss",
        "agent",
        "verdict",
    ] {
        assert!(out.stdout.contains(word), "no {word:?} in:\n{}", out.stdout);
    }

    // The receiver still serves a transfer after three checks, then (--once) exits 0.
    let source = tmp.path().join("source.img");
    let data = make_image(&source, 64 * 1024, 77);
    let out = send(
        &receiver.addr,
        &auth,
        &[disk("d0", &source)],
        &["--progress", "none"],
    );
    assert_sent(&out, "send after netcheck");
    assert_file_is(&target, &data, "target after netcheck and send");
    // --once: the checks were not the session it waits for; the transfer was.
    let (status, log) = receiver.wait();
    assert!(
        status.success(),
        "receiver --once: {status:?}\n{}",
        log.join("\n")
    );
}
