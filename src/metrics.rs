//! The receiver's metrics: counters kept in atomics while it runs, and a small HTTP server
//! that answers `GET /metrics` with them in the Prometheus text exposition format (0.0.4).
//!
//! Nothing on the data path takes a lock: a chunk written is a few relaxed atomic additions.
//! The only map (sessions' error codes) is touched once per session, and holds at most
//! [`MAX_ERROR_CODES`] codes, so a sender that makes up codes cannot grow it.
//!
//! The HTTP server is deliberately minimal: one request per connection, read within
//! [`HTTP_DEADLINE`] and [`MAX_REQUEST`] bytes; a connection never outlives its deadline, and
//! anything after the request head is discarded. Connections are served concurrently, at most
//! [`HTTP_CONNECTIONS`] at once; when all are taken, a new connection closes an old one (one
//! already answered, else the oldest still sending its request), so idle or slow clients can
//! never keep a scrape out. The endpoint has no authentication: [`serve_http`] warns when it
//! is bound beyond loopback.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blockrep_proto::Encoding;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, Id, JoinSet};

/// Every metric's name starts with this.
pub const PREFIX: &str = "blockrep_receiver_";

/// Upper bounds of the latency histograms' buckets, in seconds: 100 µs to 10 s.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Distinct error codes counted apiece; sessions ending with any other code count under
/// `code="other"`.
pub const MAX_ERROR_CODES: usize = 32;

/// Bytes of an HTTP request head read at most; a longer one is refused.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Bytes read and discarded after the answer, so closing does not reset the connection.
const LINGER_BYTES: usize = 64 * 1024;
/// Time a metrics connection has, from accept to its close.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(5);
/// Metrics connections served at once; a new one beyond them closes an old one (see
/// [`serve_http`]).
pub const HTTP_CONNECTIONS: usize = 16;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A latency histogram: per-bucket counts (the last one past the largest bound) and the sum
/// in nanoseconds.
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// `_bucket`, `_sum` and `_count` lines. The count is the buckets' total, so the `+Inf`
    /// bucket and `_count` agree even while writers race the scrape.
    fn encode(&self, out: &mut String, name: &str) {
        let mut total = 0u64;
        for (i, le) in BUCKETS.iter().enumerate() {
            total += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{PREFIX}{name}_bucket{{le=\"{le}\"}} {total}");
        }
        total += self.buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{PREFIX}{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{PREFIX}{name}_sum {sum}");
        let _ = writeln!(out, "{PREFIX}{name}_count {total}");
    }
}

/// What a receiver counts. Shared (`Arc`) by its connections and writer threads through
/// [`ReceiverConfig::metrics`](crate::ReceiverConfig::metrics); [`Metrics::exposition`]
/// renders it.
pub struct Metrics {
    started: Instant,
    sessions_active: AtomicU64,
    sessions_succeeded: AtomicU64,
    sessions_failed: AtomicU64,
    connections: AtomicU64,
    handshake_failures: AtomicU64,
    bytes_received: AtomicU64,
    bytes_written: AtomicU64,
    /// Chunks written, by encoding: raw, lz4, zero.
    chunks: [AtomicU64; 3],
    errors: Mutex<BTreeMap<String, u64>>,
    write_seconds: Histogram,
    sync_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A session counted in `sessions_active` until dropped.
pub(crate) struct ActiveSession<'a>(&'a Metrics);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.0.sessions_active.fetch_sub(1, Relaxed);
    }
}

fn encoding_index(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Raw => 0,
        Encoding::Lz4 => 1,
        Encoding::Zero => 2,
    }
}

const ENCODINGS: [&str; 3] = ["raw", "lz4", "zero"];

impl Metrics {
    /// All zero; uptime counts from now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            sessions_active: AtomicU64::new(0),
            sessions_succeeded: AtomicU64::new(0),
            sessions_failed: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            chunks: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: Mutex::new(BTreeMap::new()),
            write_seconds: Histogram::new(),
            sync_seconds: Histogram::new(),
        }
    }

    /// A TCP connection was accepted.
    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    /// A connection ended before it became a session (TLS, timeout, no valid HELLO).
    pub(crate) fn handshake_failed(&self) {
        self.handshake_failures.fetch_add(1, Relaxed);
    }

    /// A session holds one of the receiver's session slots until the guard is dropped.
    pub(crate) fn session_active(&self) -> ActiveSession<'_> {
        self.sessions_active.fetch_add(1, Relaxed);
        ActiveSession(self)
    }

    /// A session ended: well, or not (with the error code it reported, if it failed with one).
    pub(crate) fn session_ended(&self, succeeded: bool, code: Option<&str>) {
        if succeeded {
            self.sessions_succeeded.fetch_add(1, Relaxed);
        } else {
            self.sessions_failed.fetch_add(1, Relaxed);
        }
        if let Some(code) = code {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            let key = if errors.contains_key(code) || errors.len() < MAX_ERROR_CODES {
                code
            } else {
                "other"
            };
            *errors.entry(key.to_owned()).or_insert(0) += 1;
        }
    }

    /// A DATA frame's payload came off the wire.
    pub(crate) fn received(&self, payload_len: usize) {
        self.bytes_received.fetch_add(payload_len as u64, Relaxed);
    }

    /// A chunk of `raw_len` bytes was written to a target (bytes, or zeroed), taking `took`.
    pub(crate) fn written(&self, encoding: Encoding, raw_len: u32, took: Duration) {
        self.bytes_written.fetch_add(u64::from(raw_len), Relaxed);
        self.chunks[encoding_index(encoding)].fetch_add(1, Relaxed);
        self.write_seconds.observe(took);
    }

    /// A target was fdatasync'ed, taking `took`.
    pub(crate) fn synced(&self, took: Duration) {
        self.sync_seconds.observe(took);
    }

    /// Raw bytes written to the targets so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Relaxed)
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn exposition(&self) -> String {
        let mut out = String::with_capacity(4096);
        head(
            &mut out,
            "build_info",
            "gauge",
            "Always 1; the version label is this build's.",
        );
        let _ = writeln!(
            out,
            "{PREFIX}build_info{{version=\"{}\"}} 1",
            escape(env!("CARGO_PKG_VERSION"))
        );
        one(
            &mut out,
            "uptime_seconds",
            "gauge",
            "Seconds since the receiver started.",
            format_args!("{:.3}", self.started.elapsed().as_secs_f64()),
        );
        one(
            &mut out,
            "sessions_active",
            "gauge",
            "Sessions running now (verifications included, more streams of a session not).",
            self.sessions_active.load(Relaxed),
        );
        head(
            &mut out,
            "sessions_total",
            "counter",
            "Sessions ended, by outcome: succeeded (the sender sent all it planned and all of it \
             is durable) or failed (an error, or a sender that stopped before the end).",
        );
        for (outcome, n) in [
            ("succeeded", &self.sessions_succeeded),
            ("failed", &self.sessions_failed),
        ] {
            let _ = writeln!(
                out,
                "{PREFIX}sessions_total{{outcome=\"{outcome}\"}} {}",
                n.load(Relaxed)
            );
        }
        head(
            &mut out,
            "errors_total",
            "counter",
            "Sessions that ended with an error, by the service error code reported.",
        );
        {
            let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            for (code, n) in errors.iter() {
                let _ = writeln!(out, "{PREFIX}errors_total{{code=\"{}\"}} {n}", escape(code));
            }
        }
        one(
            &mut out,
            "connections_total",
            "counter",
            "TCP connections accepted (including those refused or closed later).",
            self.connections.load(Relaxed),
        );
        one(
            &mut out,
            "handshake_failures_total",
            "counter",
            "Connections that never became a session: TLS failure or timeout, no valid HELLO.",
            self.handshake_failures.load(Relaxed),
        );
        one(
            &mut out,
            "bytes_received_total",
            "counter",
            "Bytes of DATA payload received (compressed as sent, before decompression).",
            self.bytes_received.load(Relaxed),
        );
        one(
            &mut out,
            "bytes_written_total",
            "counter",
            "Raw bytes written to the targets, zero chunks (zeroed or hole-punched) included.",
            self.bytes_written.load(Relaxed),
        );
        head(
            &mut out,
            "chunks_total",
            "counter",
            "Chunks written to the targets, by their encoding on the wire.",
        );
        for (i, encoding) in ENCODINGS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{PREFIX}chunks_total{{encoding=\"{encoding}\"}} {}",
                self.chunks[i].load(Relaxed)
            );
        }
        head(
            &mut out,
            "write_seconds",
            "histogram",
            "Time to write one chunk to its target (pwrite or O_DIRECT write, or zeroing).",
        );
        self.write_seconds.encode(&mut out, "write_seconds");
        head(
            &mut out,
            "sync_seconds",
            "histogram",
            "Time of one fdatasync of a target.",
        );
        self.sync_seconds.encode(&mut out, "sync_seconds");
        out
    }
}

/// `# HELP` and `# TYPE` lines.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

/// A metric without labels: its `# HELP`, `# TYPE` and value.
fn one(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{PREFIX}{name} {value}");
}

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Whether a metrics endpoint bound to `ip` can be reached from other machines (anything but
/// a loopback address, an IPv4-mapped one included), so that [`serve_http`] warns.
pub fn beyond_loopback(ip: IpAddr) -> bool {
    !ip.to_canonical().is_loopback()
}

/// Where a metrics connection is: reading its request, writing the answer, or done (the
/// lingering close).
const READING: u8 = 0;
const ANSWERING: u8 = 1;
const ANSWERED: u8 = 2;

/// An open metrics connection, in accept order.
struct Open {
    id: Id,
    task: AbortHandle,
    phase: Arc<AtomicU8>,
}

/// Which open connection (an index in accept order, given their phases) a new one replaces
/// when all slots are taken: the oldest already answered (it is only lingering), else the
/// oldest still reading its request (idle or slow), else the oldest.
fn victim(phases: impl Iterator<Item = u8> + Clone) -> usize {
    let oldest = |wanted: u8| phases.clone().position(|p| p == wanted);
    oldest(ANSWERED).or_else(|| oldest(READING)).unwrap_or(0)
}

/// Answers metrics requests on `listener` until the task running it is dropped (which closes
/// every connection it has open).
///
/// Each connection is served by its own task, within [`HTTP_DEADLINE`]; at most
/// [`HTTP_CONNECTIONS`] are open at once, and a connection accepted beyond them closes the one
/// [`victim`] picks, so a client that connects and sends nothing (or sends slowly) holds a
/// slot only until newer clients need it. Warns at start when the listener is bound beyond
/// loopback: the endpoint has no authentication.
pub async fn serve_http(listener: TcpListener, metrics: Arc<Metrics>) {
    if let Ok(local) = listener.local_addr() {
        if beyond_loopback(local.ip()) {
            tracing::warn!(
                "metrics endpoint on {local} is reachable from other machines and has no \
                 authentication: bind it to 127.0.0.1 (metrics = \"127.0.0.1:{}\") or allow \
                 only the monitoring host in the firewall",
                local.port()
            );
        }
    }
    let mut tasks = JoinSet::new();
    let mut open: VecDeque<Open> = VecDeque::with_capacity(HTTP_CONNECTIONS);
    loop {
        tokio::select! {
            Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match ended {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.retain(|c| c.id != id);
            }
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        tracing::warn!("metrics: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if open.len() >= HTTP_CONNECTIONS {
                    let i = victim(open.iter().map(|c| c.phase.load(Relaxed)));
                    if let Some(old) = open.remove(i) {
                        old.task.abort();
                    }
                }
                let phase = Arc::new(AtomicU8::new(READING));
                let (metrics, in_task) = (metrics.clone(), phase.clone());
                let task = tasks.spawn(async move {
                    let _ = tokio::time::timeout(HTTP_DEADLINE, answer(tcp, &metrics, &in_task))
                        .await;
                });
                open.push_back(Open {
                    id: task.id(),
                    task,
                    phase,
                });
            }
        }
    }
}

/// Reads one request head (bounded) and writes the answer, then closes; `phase` says how far
/// it got.
async fn answer(mut tcp: TcpStream, metrics: &Metrics, phase: &AtomicU8) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let response = loop {
        if let Some(end) = head_end(&head) {
            break respond(&head[..end], metrics);
        }
        if head.len() >= MAX_REQUEST {
            break status_only(431, "Request Header Fields Too Large");
        }
        let room = (MAX_REQUEST - head.len()).min(buf.len());
        let n = tcp.read(&mut buf[..room]).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    phase.store(ANSWERING, Relaxed);
    tcp.write_all(&response).await?;
    tcp.shutdown().await?;
    phase.store(ANSWERED, Relaxed);
    // A lingering close: read what the client still sends (the rest of a head that was too
    // long, a body) until it closes, so that closing does not reset the connection before the
    // client has read the answer. Bounded by the connection's deadline and by LINGER_BYTES.
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match tcp.read(&mut buf).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// Where the request head ends (the blank line), if it is all there.
fn head_end(head: &[u8]) -> Option<usize> {
    head.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| head.windows(2).position(|w| w == b"\n\n"))
}

/// The whole HTTP response to a request head.
fn respond(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return status_only(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return status_only(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" || !matches!(method, "GET" | "HEAD") {
        return status_only(404, "Not Found");
    }
    let body = metrics.exposition();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method == "GET" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn status_only(code: u16, reason: &str) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line is a comment or `name{labels} value`; returns the samples.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').expect("name value");
            assert!(name.starts_with(PREFIX), "{line}");
            let value = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().unwrap_or_else(|_| panic!("{line}"))
            };
            assert!(
                out.insert(name.to_owned(), value).is_none(),
                "twice: {line}"
            );
        }
        out
    }

    #[test]
    fn counts_and_histograms() {
        let m = Metrics::new();
        m.connection();
        m.connection();
        m.handshake_failed();
        {
            let _a = m.session_active();
            let s = samples(&m.exposition());
            assert_eq!(s["blockrep_receiver_sessions_active"], 1.0);
        }
        m.received(100);
        m.written(Encoding::Lz4, 4096, Duration::from_micros(50));
        m.written(Encoding::Zero, 8192, Duration::from_millis(3));
        m.written(Encoding::Raw, 1, Duration::from_secs(20));
        m.synced(Duration::from_millis(20));
        m.session_ended(true, None);
        m.session_ended(false, Some(crate::codes::OPEN_DISK));
        m.session_ended(false, Some(crate::codes::OPEN_DISK));
        m.session_ended(false, Some("a\"b\\c"));
        let s = samples(&m.exposition());
        let v = |k: &str| s.get(k).copied().unwrap_or_else(|| panic!("no {k}"));
        assert_eq!(v("blockrep_receiver_sessions_active"), 0.0);
        assert_eq!(v("blockrep_receiver_connections_total"), 2.0);
        assert_eq!(v("blockrep_receiver_handshake_failures_total"), 1.0);
        assert_eq!(v("blockrep_receiver_bytes_received_total"), 100.0);
        assert_eq!(v("blockrep_receiver_bytes_written_total"), 12289.0);
        assert_eq!(v("blockrep_receiver_chunks_total{encoding=\"raw\"}"), 1.0);
        assert_eq!(v("blockrep_receiver_chunks_total{encoding=\"lz4\"}"), 1.0);
        assert_eq!(v("blockrep_receiver_chunks_total{encoding=\"zero\"}"), 1.0);
        assert_eq!(
            v("blockrep_receiver_sessions_total{outcome=\"succeeded\"}"),
            1.0
        );
        assert_eq!(
            v("blockrep_receiver_sessions_total{outcome=\"failed\"}"),
            3.0
        );
        assert_eq!(v("blockrep_receiver_errors_total{code=\"SMS.2013\"}"), 2.0);
        assert_eq!(
            v("blockrep_receiver_errors_total{code=\"a\\\"b\\\\c\"}"),
            1.0
        );
        // 50 µs is in the first bucket, 3 ms from 0.005 on, 20 s only in +Inf.
        assert_eq!(
            v("blockrep_receiver_write_seconds_bucket{le=\"0.0001\"}"),
            1.0
        );
        assert_eq!(
            v("blockrep_receiver_write_seconds_bucket{le=\"0.0025\"}"),
            1.0
        );
        assert_eq!(
            v("blockrep_receiver_write_seconds_bucket{le=\"0.005\"}"),
            2.0
        );
        assert_eq!(v("blockrep_receiver_write_seconds_bucket{le=\"10\"}"), 2.0);
        assert_eq!(
            v("blockrep_receiver_write_seconds_bucket{le=\"+Inf\"}"),
            3.0
        );
        assert_eq!(v("blockrep_receiver_write_seconds_count"), 3.0);
        assert!((v("blockrep_receiver_write_seconds_sum") - 20.00305).abs() < 1e-9);
        assert_eq!(v("blockrep_receiver_sync_seconds_count"), 1.0);
        assert_eq!(v("blockrep_receiver_sync_seconds_bucket{le=\"0.01\"}"), 0.0);
        assert_eq!(
            v("blockrep_receiver_sync_seconds_bucket{le=\"0.025\"}"),
            1.0
        );
        assert!(v("blockrep_receiver_uptime_seconds") >= 0.0);
    }

    #[test]
    fn every_metric_has_help_and_type() {
        let text = Metrics::new().exposition();
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "no HELP for {name}"
                );
                typed.push(name.to_owned());
            }
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                typed.iter().any(|t| name == t
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(t))),
                "{name} has no TYPE"
            );
        }
    }

    #[test]
    fn error_codes_are_bounded() {
        let m = Metrics::new();
        for i in 0..100 {
            m.session_ended(false, Some(&format!("X.{i}")));
        }
        let text = m.exposition();
        let codes = text
            .lines()
            .filter(|l| l.starts_with("blockrep_receiver_errors_total{"))
            .count();
        assert_eq!(codes, MAX_ERROR_CODES + 1);
        assert!(text.contains("blockrep_receiver_errors_total{code=\"other\"} 68\n"));
    }

    #[test]
    fn warns_only_beyond_loopback() {
        for ip in ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"] {
            assert!(!beyond_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "10.0.0.7",
            "192.0.2.1",
            "fe80::1",
            "::ffff:10.0.0.7",
        ] {
            assert!(beyond_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_new_connection_replaces_an_answered_then_a_reading_one() {
        let pick = |p: &[u8]| victim(p.iter().copied());
        assert_eq!(pick(&[READING, ANSWERED, READING, ANSWERED]), 1);
        assert_eq!(pick(&[ANSWERING, READING, READING]), 1);
        assert_eq!(pick(&[ANSWERING, ANSWERING]), 0);
        assert_eq!(pick(&[READING; HTTP_CONNECTIONS]), 0);
    }

    #[test]
    fn routes() {
        let m = Metrics::new();
        let ok = String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\nHost: x", &m)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")));
        let body = ok.split_once("\r\n\r\n").unwrap().1;
        assert!(ok.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.contains("# TYPE blockrep_receiver_uptime_seconds gauge"));
        let q = String::from_utf8(respond(b"GET /metrics?x=1 HTTP/1.0", &m)).unwrap();
        assert!(q.starts_with("HTTP/1.1 200 OK\r\n"));
        let head = String::from_utf8(respond(b"HEAD /metrics HTTP/1.1", &m)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        for req in [
            &b"GET / HTTP/1.1"[..],
            b"GET /metricsx HTTP/1.1",
            b"POST /metrics HTTP/1.1",
        ] {
            let r = String::from_utf8(respond(req, &m)).unwrap();
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        }
        for req in [&b"hello"[..], b"GET /metrics", b"GET /metrics SPDY/3", b""] {
            let r = String::from_utf8(respond(req, &m)).unwrap();
            assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
