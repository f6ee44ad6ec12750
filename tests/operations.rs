//! What an operator of `blockrep-receiver` relies on: the metrics endpoint (scraped with a
//! plain TCP socket and parsed line by line as the Prometheus text format), JSON logs, config
//! errors that name the file and the key, and the example configuration in docs/ (loaded by
//! the real binary). Real processes, real TLS on 127.0.0.1, bounded waits only.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/process.rs"]
mod process;

use process::*;

/// Block size of the sends here: several chunks of every kind in a small image.
const BLOCK: u64 = 64 * 1024;
/// How long a metric may take to reach an expected value after the event that sets it.
const METRIC_DEADLINE: Duration = Duration::from_secs(20);

/// Random data, text, a run of zeros (whole zero chunks) and a random tail.
fn make_image(path: &Path) -> Vec<u8> {
    let mut data = vec![0u8; IMAGE_SIZE];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for (i, b) in data.iter_mut().enumerate() {
        match i >> 20 {
            0 => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            1 => *b = b"metrics and logs for the operator\n"[i % 34],
            2 => {}
            _ => *b = (i % 251) as u8,
        }
    }
    fs::write(path, &data).expect("write the source image");
    data
}

fn receiver_args(pki: &Pki, disks: &[(&str, &Path)], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--cert",
        p(&pki.server_cert),
        "--key",
        p(&pki.server_key),
        "--client-ca",
        p(&pki.ca),
    ]
    .map(String::from)
    .to_vec();
    for (id, path) in disks {
        args.push("--disk".into());
        args.push(format!("{id}={}", p(path)));
    }
    args.extend(extra.iter().map(ToString::to_string));
    args
}

/// `blockrep send --mode full --block-size 64KiB --progress json` of `disks` to `to`.
fn send(to: &str, pki: &Pki, disks: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(SEND);
    cmd.args(["send", "--to", to, "--ca", p(&pki.ca)])
        .args(["--cert", p(&pki.client_cert), "--key", p(&pki.client_key)])
        .args([
            "--mode",
            "full",
            "--block-size",
            "64KiB",
            "--progress",
            "json",
        ]);
    for (id, path) in disks {
        cmd.args(["--disk", &format!("{id}={}", p(path))]);
    }
    run(&mut cmd)
}

/// The sender's `{"summary": {...}}` line.
fn summary(out: &Output) -> Value {
    let last = out.stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last stdout line is not JSON ({e}): {last}"));
    v.get("summary")
        .unwrap_or_else(|| panic!("no summary: {last}"))
        .clone()
}

/// The address of `blockrep-receiver metrics on ADDR` among a receiver's lines.
fn metrics_addr(log: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix("blockrep-receiver metrics on "))
        .unwrap_or_else(|| panic!("the receiver did not say where its metrics are:\n{log}"))
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// HTTP and the exposition format
// ---------------------------------------------------------------------------------------------

/// A raw HTTP answer: status code, headers (lower-case names), body.
struct Http {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Sends `request` as it is and reads the answer to the end (the server closes).
fn http(addr: &str, request: &[u8]) -> Http {
    let mut tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(request).unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer from {addr}: {e}"));
    let raw = String::from_utf8(raw).expect("the answer is UTF-8");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of the head in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("header {l:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect::<BTreeMap<_, _>>();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(
            len.parse::<usize>().ok(),
            Some(body.len()),
            "Content-Length"
        );
    }
    Http {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn get(addr: &str, path: &str) -> Http {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n").as_bytes(),
    )
}

/// Parses the text exposition format: every line is `# HELP name text`, `# TYPE name kind`
/// or `name{labels} value`; returns the samples by `name{labels}`. Every sample's metric has
/// a TYPE and a HELP line before it.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "empty HELP: {line}");
            helped.push(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#'),
            "a comment that is neither HELP nor TYPE: {line}"
        );
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `name{{labels}} value`: {line:?}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "label name in {line}"
                    );
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "label value in {line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(
            name.starts_with("blockrep_receiver_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name in {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "no TYPE before {line}");
        assert!(helped.iter().any(|h| h == family), "no HELP before {line}");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value is not a number: {line}")),
        };
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "the same series twice: {line}"
        );
    }
    samples
}

/// Scrapes `/metrics` and parses it.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let answer = get(addr, "/metrics");
    assert_eq!(answer.status, 200, "GET /metrics: {}", answer.body);
    let ct = answer
        .headers
        .get("content-type")
        .cloned()
        .unwrap_or_default();
    assert!(
        ct.starts_with("text/plain; version=0.0.4"),
        "Content-Type {ct:?}"
    );
    parse_exposition(&answer.body)
}

fn metric(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// Scrapes until `series` has `value` (the receiver counts a session just after its sender
/// heard DONE), within [`METRIC_DEADLINE`]; returns that scrape.
fn scrape_until(addr: &str, series: &str, value: f64) -> BTreeMap<String, f64> {
    let start = Instant::now();
    let max_scrapes = METRIC_DEADLINE.as_millis() / POLL.as_millis() + 1;
    let mut samples = BTreeMap::new();
    for _ in 0..max_scrapes {
        samples = scrape(addr);
        if samples.get(series) == Some(&value) || start.elapsed() > METRIC_DEADLINE {
            break;
        }
        std::thread::sleep(POLL);
    }
    assert_eq!(
        samples.get(series),
        Some(&value),
        "{series} did not reach {value} within {} s: {samples:#?}",
        METRIC_DEADLINE.as_secs()
    );
    samples
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[test]
fn metrics_count_a_replication() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    let data = make_image(&source);
    fs::write(&target, vec![TARGET_FILL; IMAGE_SIZE]).unwrap();
    let args = receiver_args(&pki, &[("d0", &target)], &["--metrics", "127.0.0.1:0"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut receiver = Receiver::start(&refs, true);
    let addr = metrics_addr(&receiver.log());

    // Before any session: every metric there, at zero.
    let before = scrape(&addr);
    for series in [
        "blockrep_receiver_sessions_active",
        "blockrep_receiver_sessions_total{outcome=\"succeeded\"}",
        "blockrep_receiver_sessions_total{outcome=\"failed\"}",
        "blockrep_receiver_connections_total",
        "blockrep_receiver_bytes_received_total",
        "blockrep_receiver_bytes_written_total",
        "blockrep_receiver_chunks_total{encoding=\"raw\"}",
        "blockrep_receiver_chunks_total{encoding=\"lz4\"}",
        "blockrep_receiver_chunks_total{encoding=\"zero\"}",
        "blockrep_receiver_write_seconds_count",
        "blockrep_receiver_sync_seconds_count",
    ] {
        assert_eq!(metric(&before, series), 0.0, "{series} before any session");
    }
    assert!(metric(&before, "blockrep_receiver_uptime_seconds") >= 0.0);
    assert_eq!(
        metric(
            &before,
            "blockrep_receiver_write_seconds_bucket{le=\"+Inf\"}"
        ),
        0.0
    );

    let out = send(&receiver.addr, &pki, &[("d0", &source)]);
    assert!(
        out.status.success(),
        "send failed: {}\n{}\n{}",
        out.status,
        out.stderr,
        receiver.log()
    );
    let s = summary(&out);
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["sent_bytes"].as_u64(), Some(IMAGE_SIZE as u64), "{s}");
    assert_eq!(fs::read(&target).unwrap(), data, "the target differs");

    let m = scrape_until(
        &addr,
        "blockrep_receiver_sessions_total{outcome=\"succeeded\"}",
        1.0,
    );
    let v = |series: &str| metric(&m, series);
    assert_eq!(
        v("blockrep_receiver_sessions_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(v("blockrep_receiver_sessions_active"), 0.0);
    assert_eq!(v("blockrep_receiver_connections_total"), 1.0);
    assert_eq!(v("blockrep_receiver_handshake_failures_total"), 0.0);
    // Every raw byte the sender sent was written, zero chunks (zeroed on the target) included.
    assert_eq!(
        v("blockrep_receiver_bytes_written_total"),
        s["sent_bytes"].as_u64().unwrap() as f64
    );
    // Payload off the wire: less than the raw bytes (zeros and text shrink), less than what
    // the sender wrote to the connection (headers too), more than the random MiB.
    let received = v("blockrep_receiver_bytes_received_total");
    assert!(
        received > (1 << 20) as f64,
        "bytes_received_total {received}"
    );
    assert!(
        received < IMAGE_SIZE as f64,
        "bytes_received_total {received}"
    );
    assert!(
        received < s["wire_bytes"].as_u64().unwrap() as f64,
        "bytes_received_total {received} vs {s}"
    );
    let chunks = IMAGE_SIZE.div_ceil(BLOCK as usize) as f64;
    let (raw, lz4, zero) = (
        v("blockrep_receiver_chunks_total{encoding=\"raw\"}"),
        v("blockrep_receiver_chunks_total{encoding=\"lz4\"}"),
        v("blockrep_receiver_chunks_total{encoding=\"zero\"}"),
    );
    assert_eq!(raw + lz4 + zero, chunks, "raw {raw} lz4 {lz4} zero {zero}");
    assert_eq!(
        zero * BLOCK as f64,
        s["zero_bytes"].as_u64().unwrap() as f64,
        "zero chunks vs the sender's zero bytes: {s}"
    );
    assert!(
        zero >= 16.0,
        "the zero MiB was not sent as zero chunks: {zero}"
    );
    assert!(raw >= 16.0, "the random MiB was not sent raw: {raw}");
    assert!(lz4 >= 1.0, "nothing was compressed: {lz4}");
    // One write observed per chunk; at least one fdatasync; histograms consistent.
    assert_eq!(v("blockrep_receiver_write_seconds_count"), chunks);
    assert_eq!(
        v("blockrep_receiver_write_seconds_bucket{le=\"+Inf\"}"),
        chunks
    );
    assert!(v("blockrep_receiver_write_seconds_sum") > 0.0);
    assert!(v("blockrep_receiver_sync_seconds_count") >= 1.0);
    let mut last = 0.0;
    for le in ["0.0001", "0.001", "0.01", "0.1", "1", "10", "+Inf"] {
        let n = v(&format!(
            "blockrep_receiver_write_seconds_bucket{{le=\"{le}\"}}"
        ));
        assert!(n >= last, "buckets are not cumulative at le={le}");
        last = n;
    }
    assert!(
        m.keys()
            .all(|k| !k.starts_with("blockrep_receiver_errors_total")),
        "errors after a clean session: {m:#?}"
    );

    // Anything but GET /metrics: 404; a request that never ends: 431; both closed.
    for path in ["/", "/metric", "/metrics/x", "/favicon.ico"] {
        let answer = get(&addr, path);
        assert_eq!(answer.status, 404, "GET {path}");
    }
    let post = http(
        &addr,
        format!("POST /metrics HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    assert_eq!(post.status, 404, "POST /metrics");
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    assert_eq!(http(&addr, huge.as_bytes()).status, 431, "a 16 KiB head");
    assert!(receiver.is_running(), "{}", receiver.log());
}

#[test]
fn failed_sessions_count_their_error_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    make_image(&source);
    fs::write(&target, vec![TARGET_FILL; IMAGE_SIZE]).unwrap();
    let args = receiver_args(&pki, &[("d0", &target)], &["--metrics", "127.0.0.1:0"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut receiver = Receiver::start(&refs, true);
    let addr = metrics_addr(&receiver.log());

    // A disk the receiver does not have, twice: SMS.2013 each time.
    for _ in 0..2 {
        let out = send(&receiver.addr, &pki, &[("nope", &source)]);
        assert!(!out.status.success(), "a send to an unknown disk succeeded");
        assert!(out.stderr.contains("error SMS.2013:"), "{}", out.stderr);
    }
    let m = scrape_until(
        &addr,
        "blockrep_receiver_sessions_total{outcome=\"failed\"}",
        2.0,
    );
    assert_eq!(
        metric(&m, "blockrep_receiver_errors_total{code=\"SMS.2013\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "blockrep_receiver_sessions_total{outcome=\"succeeded\"}"
        ),
        0.0
    );
    assert_eq!(metric(&m, "blockrep_receiver_bytes_written_total"), 0.0);

    // Not TLS at all: a connection that never becomes a session.
    let mut tcp = TcpStream::connect(&receiver.addr).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = tcp.read_to_end(&mut Vec::new());
    let m = scrape_until(&addr, "blockrep_receiver_handshake_failures_total", 1.0);
    assert_eq!(metric(&m, "blockrep_receiver_connections_total"), 3.0);
    assert_eq!(
        metric(&m, "blockrep_receiver_sessions_total{outcome=\"failed\"}"),
        2.0,
        "a connection that never said HELLO is not a session"
    );
    assert!(receiver.is_running(), "{}", receiver.log());
}

// ---------------------------------------------------------------------------------------------
// JSON logs
// ---------------------------------------------------------------------------------------------

/// The `fields.message` of a JSON log line, if it is one.
fn message(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    Some(v["fields"]["message"].as_str()?.to_owned())
}

/// A receiver started with `args` (which say where to listen and to log JSON), once its JSON
/// line says where it listens.
fn start_json(args: &[String]) -> Receiver {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Receiver::start_with(&refs, false, |line| {
        message(line)?
            .strip_prefix("blockrep-receiver listening on ")
            .map(str::to_owned)
    })
}

/// Every line is one JSON object with a timestamp, a level, and fields with a message.
fn assert_json_lines(lines: &[String], who: &str) -> Vec<Value> {
    assert!(!lines.is_empty(), "{who} logged nothing");
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{who}: a stderr line is not JSON ({e}): {line}"));
            assert!(v.is_object(), "{who}: not an object: {line}");
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                    .contains(&v["level"].as_str().unwrap_or_default()),
                "{who}: level in {line}"
            );
            assert!(v["timestamp"].is_string(), "{who}: timestamp in {line}");
            assert!(
                v["fields"]["message"].is_string(),
                "{who}: fields.message in {line}"
            );
            v
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let source = tmp.path().join("source.img");
    let target = tmp.path().join("target.img");
    let data = make_image(&source);
    fs::write(&target, vec![TARGET_FILL; IMAGE_SIZE]).unwrap();
    let args = receiver_args(
        &pki,
        &[("d0", &target)],
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
    );
    let receiver = start_json(&args);
    // A refused session (a warning) and a good one (info lines), then SIGTERM.
    let out = send(&receiver.addr, &pki, &[("nope", &source)]);
    assert!(out.stderr.contains("error SMS.2013:"), "{}", out.stderr);

    // The sender logs JSON too, from the environment alone.
    let mut cmd = Command::new(SEND);
    cmd.args(["send", "--to", &receiver.addr, "--ca", p(&pki.ca)])
        .args(["--cert", p(&pki.client_cert), "--key", p(&pki.client_key)])
        .args(["--mode", "full", "--progress", "none"])
        .args(["--disk", &format!("d0={}", p(&source))])
        .env("RUST_LOG", "info")
        .env("BLOCKREP_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut sender = ChildGuard(cmd.spawn().expect("start the sender"));
    let stderr = slurp(sender.0.stderr.take().expect("piped stderr"));
    let status = wait_exit(&mut sender.0, PROCESS_DEADLINE, "sender");
    let stderr = stderr.join().expect("stderr reader");
    assert!(status.success(), "send failed: {status}\n{stderr}");
    // Its log lines are JSON; the CLI's own closing line ("done: ...") is not a log line.
    let (json, plain): (Vec<String>, Vec<String>) = stderr
        .lines()
        .map(str::to_owned)
        .partition(|l| l.starts_with('{'));
    assert_json_lines(&json, "blockrep send with BLOCKREP_LOG_FORMAT=json");
    for line in &plain {
        let text_log = line.len() > 20
            && line.as_bytes()[4] == b'-'
            && line.as_bytes()[10] == b'T'
            && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .iter()
                .any(|l| line.contains(&format!(" {l} ")));
        assert!(
            !text_log,
            "a text log line with BLOCKREP_LOG_FORMAT=json: {line}"
        );
    }
    assert_eq!(fs::read(&target).unwrap(), data, "the target differs");

    let lines = receiver.terminate();
    let logs = assert_json_lines(&lines, "blockrep-receiver --log-format json");
    let find = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        logs.iter()
            .find(|v| pred(v))
            .unwrap_or_else(|| panic!("no {what} in:\n{}", lines.join("\n")))
            .clone()
    };
    let refused = find(
        &|v| {
            v["level"] == "WARN"
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("SMS.2013"))
        },
        "warning about the refused session",
    );
    assert!(refused["fields"]["peer"].is_string(), "{refused}");
    let ended = find(
        &|v| v["fields"]["message"] == "session ended",
        "session ended line",
    );
    assert_eq!(ended["fields"]["complete"], true, "{ended}");
    assert_eq!(
        ended["fields"]["bytes"].as_u64(),
        Some(IMAGE_SIZE as u64),
        "{ended}"
    );
    assert!(ended["target"].is_string(), "{ended}");
    let stopped = find(
        &|v| v["fields"]["message"] == "receiver stopped",
        "receiver stopped line",
    );
    assert_eq!(stopped["fields"]["succeeded"], 1, "{stopped}");
    assert_eq!(stopped["fields"]["failed"], 1, "{stopped}");
    // No metrics unless asked for.
    assert!(
        !lines.iter().any(|l| l.contains("metrics on")),
        "metrics served without --metrics:\n{}",
        lines.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------------------------

/// The one stderr line of a receiver that refused to start, checked to be `error CODE: ...`.
fn refusal(args: &[&str], code: &str) -> String {
    let out = run(Command::new(RECEIVER)
        .args(args)
        .env_remove("BLOCKREP_LOG_FORMAT"));
    assert!(!out.status.success(), "the receiver started with {args:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr:\n{}",
        out.stderr
    );
    assert!(
        lines[0].starts_with(&format!("error {code}: ")),
        "expected error {code}: {}",
        lines[0]
    );
    lines[0].to_owned()
}

#[test]
fn config_errors_name_the_file_the_line_and_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("listne = \"127.0.0.1:8900\"\n", 1, "listne"),
        (
            "cert = \"/etc/blockrep/server.pem\"\n\nmax_sessions = \"many\"\n",
            3,
            "max_sessions",
        ),
        ("idle_timeout = -5\n", 1, "idle_timeout"),
        ("log_format = \"xml\"\n", 1, "log_format"),
        ("metrics = \"localhost\"\n", 1, "metrics"),
        ("once = \"yes\"\n", 1, "once"),
        ("[disks]\nd0 = 5\n", 2, "disks.d0"),
    ];
    for (i, (text, line, key)) in cases.into_iter().enumerate() {
        let file = tmp.path().join(format!("receiver{i}.toml"));
        fs::write(&file, text).unwrap();
        let err = refusal(&["--config", p(&file)], "SMS.1908");
        for needle in [
            p(&file).to_owned(),
            format!("line {line}:"),
            format!("`{key}`"),
            "--help".to_owned(),
        ] {
            assert!(err.contains(&needle), "{text:?}: no {needle:?} in: {err}");
        }
    }
    // The unknown key is told together with the keys there are.
    let file = tmp.path().join("receiver0.toml");
    let err = refusal(&["--config", p(&file)], "SMS.1908");
    assert!(err.contains("unknown key `listne`"), "{err}");
    assert!(err.contains("`listen`"), "{err}");
    let file = tmp.path().join("receiver1.toml");
    let err = refusal(&["--config", p(&file)], "SMS.1908");
    assert!(err.contains("expected a whole number"), "{err}");
    // A file that is not there.
    let missing = tmp.path().join("missing.toml");
    let err = refusal(&["--config", p(&missing)], "SMS.1908");
    assert!(err.contains(p(&missing)), "{err}");
}

/// The keys the receiver accepts, as its error for an unknown key lists them.
fn accepted_keys(dir: &Path) -> Vec<String> {
    let file = dir.join("unknown.toml");
    fs::write(&file, "no_such_key = 1\n").unwrap();
    let err = refusal(&["--config", p(&file)], "SMS.1908");
    let list = err
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("the keys are not listed: {err}"))
        .1;
    let keys: Vec<String> = list
        .split(';')
        .next()
        .unwrap_or_default()
        .split(", ")
        .map(|k| k.trim().trim_matches('`').to_owned())
        .collect();
    assert!(keys.len() >= 10, "{keys:?} from {err}");
    keys
}

#[test]
fn example_config_has_every_key_and_loads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let example_path = docs.join("receiver.toml");
    let example = fs::read_to_string(&example_path).expect("docs/receiver.toml");

    // HARDENING.md shows the same file.
    let hardening = fs::read_to_string(docs.join("HARDENING.md")).expect("docs/HARDENING.md");
    let shown = hardening
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(b, _)| b))
        .find(|b| b.starts_with("# /etc/blockrep/receiver.toml"))
        .expect("HARDENING.md shows receiver.toml in a ```toml block");
    assert_eq!(shown, example, "HARDENING.md and docs/receiver.toml differ");

    // Every key the receiver accepts is in the example and in --help, and nothing else.
    let keys = accepted_keys(tmp.path());
    let table: toml::Table = toml::from_str(&example).expect("the example is TOML");
    let mut in_example: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut accepted: Vec<&str> = keys.iter().map(String::as_str).collect();
    in_example.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(
        in_example, accepted,
        "docs/receiver.toml vs the receiver's keys"
    );
    let help = run_ok(Command::new(RECEIVER).arg("--help")).stdout;
    for key in &keys {
        let documented = if key == "disks" {
            help.contains("[disks]")
        } else {
            help.contains(&format!("{key} = "))
        };
        assert!(documented, "--help does not show the key {key}:\n{help}");
        if key != "disks" {
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(help.contains(&flag), "--help has no flag {flag}");
        }
    }

    // Loaded by the receiver itself: flags win, so a missing certificate (and a state
    // directory of the test's own) shows the file was read and accepted up to the
    // certificates, the first thing it opens.
    let missing = tmp.path().join("missing.pem");
    let state = tmp.path().join("state");
    let err = refusal(
        &[
            "--config",
            p(&example_path),
            "--cert",
            p(&missing),
            "--key",
            p(&missing),
            "--client-ca",
            p(&missing),
            "--state-dir",
            p(&state),
        ],
        "SMS.3301",
    );
    assert!(err.contains(p(&missing)), "{err}");
    assert!(
        !state.exists(),
        "the state directory was made before the certificates"
    );
}

#[test]
fn config_file_sets_metrics_and_log_format() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = blockrep_certs(&tmp.path().join("certs"));
    let target = tmp.path().join("target.img");
    fs::write(&target, vec![TARGET_FILL; 64 * 1024]).unwrap();
    let config = tmp.path().join("receiver.toml");
    fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             cert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
             metrics = \"127.0.0.1:0\"\n\
             log_format = \"json\"\n\
             [disks]\nd0 = \"{}\"\n",
            p(&pki.server_cert),
            p(&pki.server_key),
            p(&pki.ca),
            p(&target)
        ),
    )
    .unwrap();
    let mut receiver = start_json(&["--config".into(), p(&config).into()]);
    let log = receiver.log();
    let addr = log
        .lines()
        .find_map(|l| {
            message(l)?
                .strip_prefix("blockrep-receiver metrics on ")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no metrics line:\n{log}"));
    let m = scrape(&addr);
    assert_eq!(metric(&m, "blockrep_receiver_sessions_active"), 0.0);
    let lines = receiver.terminate();
    assert_json_lines(&lines, "a receiver with log_format = \"json\"");

    // The flag wins over the file.
    let args = [
        "--config".to_owned(),
        p(&config).to_owned(),
        "--log-format".to_owned(),
        "text".to_owned(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut receiver = Receiver::start(&refs, false);
    let log = receiver.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("blockrep-receiver metrics on ")),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// The systemd unit
// ---------------------------------------------------------------------------------------------

#[test]
fn systemd_unit_verifies() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let unit = fs::read_to_string(docs.join("blockrep-receiver.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/blockrep-receiver --config /etc/blockrep/receiver.toml",
        "User=blockrep",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/blockrep",
        "StateDirectory=blockrep",
        "DevicePolicy=closed",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(line), "the unit has no {line:?}");
    }
    let analyze = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !analyze.is_ok_and(|s| s.success()) {
        eprintln!("systemd-analyze is not installed: the unit was not verified");
        return;
    }
    // Verified as installed, with this build's receiver where the unit expects its binary.
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("blockrep-receiver.service");
    fs::write(
        &copy,
        unit.replace("/usr/local/bin/blockrep-receiver", RECEIVER),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    assert!(
        out.status.success() && out.stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
}
