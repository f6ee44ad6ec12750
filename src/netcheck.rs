//! The network check (the service's `network_check` operation, `blockrep netcheck`): against
//! a real receiver, over the same mutual TLS and through the same rate limits a transfer uses,
//! measure what a migration over this path can expect.
//!
//! 1. **Latency**: [`NetcheckConfig::pings`] small PINGs, one at a time, each answered by a
//!    PONG: the median and 99th percentile of their round trips, and the jitter (the mean
//!    difference between consecutive round trips, as RFC 3550 defines it).
//! 2. **Bandwidth**: for [`NetcheckConfig::burst`], PINGs padded to 256 KiB as fast as the
//!    link and the rate limits let them go, at most [`BURST_WINDOW`] bytes unanswered; the
//!    rate is the padding the receiver answered for over the time it took. The round trips
//!    measured meanwhile are the delay under load.
//! 3. **Loss**: the kernel's TCP counters of the connection (`TCP_INFO`), over the burst:
//!    retransmitted bytes as a share of bytes sent.
//! 4. The agent's own CPU and memory use ([`crate::usage`]) over the check.
//!
//! Then a verdict, `good`, `fair` or `poor`, with the reasons.

use std::os::fd::RawFd;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockrep_proto::consts::{VERSION_MAX, VERSION_MIN};
use blockrep_proto::{Frame, Hello, Ping, SenderEvent};
use serde::Serialize;

use crate::framed::write_frame;
use crate::sender::connect::{peer_error, read_failure, Link};
use crate::usage::Usage;
use crate::{Error, SendConfig};

/// Bytes of padding in each PING of the bandwidth burst.
pub const BURST_PING: u32 = 256 << 10;
/// Padding bytes sent and not yet answered, at most, during the burst: enough for a
/// 1 Gbit/s path with 100 ms of round trip.
pub const BURST_WINDOW: u64 = 16 << 20;

/// What to measure, and how long.
#[derive(Debug, Clone)]
pub struct NetcheckConfig {
    /// Small PINGs for the latency figures (at least 2).
    pub pings: u32,
    /// Pause between two of those PINGs.
    pub ping_interval: Duration,
    /// How long the bandwidth burst lasts.
    pub burst: Duration,
}

impl Default for NetcheckConfig {
    fn default() -> Self {
        Self {
            pings: 20,
            ping_interval: Duration::from_millis(20),
            burst: Duration::from_secs(5),
        }
    }
}

/// The result, with the service's NetworkCheckInfo field names first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetworkCheckInfo {
    /// Median round trip of a small frame on an idle connection, ms.
    pub network_delay: f64,
    /// Jitter of those round trips, ms.
    pub network_jitter: f64,
    /// Bandwidth of the burst, Mbit/s (10^6 bits), of payload over TLS.
    pub migration_speed: f64,
    /// Bytes retransmitted by TCP during the burst, percent of bytes sent.
    pub loss_percentage: f64,
    /// Percent of the machine's CPU (all cores) this process used during the check.
    pub cpu_usage: f64,
    /// This process's resident memory, MB.
    pub mem_usage: f64,
    /// `good`, `fair` or `poor`.
    pub evaluation_result: Evaluation,
    /// Why the verdict is not `good` (empty when it is).
    pub evaluation_reasons: Vec<String>,
    /// 99th percentile of the idle round trips, ms.
    pub network_delay_p99: f64,
    /// Median round trip during the burst (the delay under load), ms.
    pub loaded_delay: f64,
    /// TCP segments retransmitted during the burst.
    pub retransmissions: u64,
    /// The kernel's smoothed round-trip estimate at the end, ms.
    pub tcp_rtt: f64,
    /// Payload bytes of the burst the receiver answered for.
    pub burst_bytes: u64,
    /// How long the burst took, seconds.
    pub burst_seconds: f64,
    /// The speed limit in force at the end of the check, Mbit/s (0: none).
    pub speed_limit: f64,
}

/// The verdict.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Evaluation {
    /// Fit for a migration.
    Good,
    /// A migration works but will be slower or less steady than it could be.
    Fair,
    /// Fix the path first: a migration would be slow or keep failing.
    Poor,
}

impl Evaluation {
    /// The word printed and sent to the service.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Fair => "fair",
            Self::Poor => "poor",
        }
    }
}

/// Runs the check against `config.target` (its TLS, server name, timeouts and rate limits;
/// its disks are ignored).
pub async fn netcheck(
    config: &SendConfig,
    check: &NetcheckConfig,
) -> Result<NetworkCheckInfo, Error> {
    let before = Usage::now();
    let hello = Hello {
        version_min: VERSION_MIN,
        version_max: VERSION_MAX,
        session_id: config.session_id.clone(),
        agent_version: crate::VERSION.into(),
        disks: Vec::new(),
        verify: false,
        join: false,
        netcheck: true,
    };
    let mut link = Link::open(config, hello, Arc::new(AtomicU64::new(0))).await?;
    let start = Instant::now();
    let nanos = move || start.elapsed().as_nanos() as u64;

    // 1. Latency, one PING at a time.
    let mut idle = Vec::with_capacity(check.pings as usize);
    for seq in 0..u64::from(check.pings.max(2)) {
        let ping = Ping {
            seq,
            time: nanos(),
            pad: 0,
        };
        let frame = link.session.ping(ping);
        send(&mut link, &frame).await?;
        let pong = next_pong(&mut link, config.io_timeout).await?;
        idle.push(ms(nanos().saturating_sub(pong.time)));
        tokio::time::sleep(check.ping_interval).await;
    }

    // 2. The burst, and 3. the kernel's counters over it.
    let tcp_before = tcp_info(link.fd);
    let burst_start = Instant::now();
    let (mut sent, mut answered, mut seq) = (0u64, 0u64, u64::from(check.pings.max(2)));
    let mut loaded = Vec::new();
    let mut last_answer = burst_start;
    loop {
        let sending = burst_start.elapsed() < check.burst;
        if sending && sent - answered < BURST_WINDOW {
            let ping = Ping {
                seq,
                time: nanos(),
                pad: BURST_PING,
            };
            seq += 1;
            let frame = link.session.ping(ping);
            send(&mut link, &frame).await?;
            sent += u64::from(BURST_PING);
            // Take the answers that are already here without waiting.
            while let Ok(r) = link.frames.try_recv() {
                let frame = frame_of(&link, Some(r))?;
                let pong = pong_of(&mut link, frame)?;
                answered += u64::from(pong.pad);
                loaded.push(ms(nanos().saturating_sub(pong.time)));
                last_answer = Instant::now();
            }
            continue;
        }
        if answered >= sent {
            break;
        }
        let pong = next_pong(&mut link, config.io_timeout).await?;
        answered += u64::from(pong.pad);
        loaded.push(ms(nanos().saturating_sub(pong.time)));
        last_answer = Instant::now();
    }
    let burst_seconds = last_answer.duration_since(burst_start).as_secs_f64();
    let tcp_after = tcp_info(link.fd);

    // End the session cleanly: END, then DONE.
    let end = link.session.end(true);
    send(&mut link, &end).await?;
    loop {
        let r = recv(&mut link, config.io_timeout).await?;
        match link.session.handle_frame(r)? {
            SenderEvent::Done(_) => break,
            SenderEvent::PeerError(e) => return Err(peer_error(e)),
            _ => {}
        }
    }
    let usage = Usage::now();

    let (loss, retransmissions, tcp_rtt) = match (tcp_before, tcp_after) {
        (Some(a), Some(b)) => (
            b.loss_percent_since(&a),
            u64::from(b.total_retrans.saturating_sub(a.total_retrans)),
            f64::from(b.rtt_us) / 1000.0,
        ),
        _ => (0.0, 0, 0.0),
    };
    let mbps = if burst_seconds > 0.0 {
        answered as f64 * 8.0 / 1e6 / burst_seconds
    } else {
        0.0
    };
    let limit = config.limits.limit().bytes_per_sec;
    let mut info = NetworkCheckInfo {
        network_delay: round2(percentile(&idle, 50.0)),
        network_jitter: round2(jitter(&idle)),
        migration_speed: round2(mbps),
        loss_percentage: round2(loss),
        cpu_usage: round2(usage.since(&before).map_or(0.0, |r| r.cpu_percent)),
        mem_usage: round2(usage.rss_bytes as f64 / 1e6),
        evaluation_result: Evaluation::Good,
        evaluation_reasons: Vec::new(),
        network_delay_p99: round2(percentile(&idle, 99.0)),
        loaded_delay: round2(percentile(&loaded, 50.0)),
        retransmissions,
        tcp_rtt: round2(tcp_rtt),
        burst_bytes: answered,
        burst_seconds: round2(burst_seconds),
        speed_limit: limit.map_or(0.0, |b| round2(b as f64 * 8.0 / 1e6)),
    };
    (info.evaluation_result, info.evaluation_reasons) = evaluate(&info);
    Ok(info)
}

async fn send(link: &mut Link, frame: &Frame) -> Result<(), Error> {
    let peer = link.peer.clone();
    write_frame(&mut link.wr, frame)
        .await
        .map_err(|e| Error::Transport(format!("sending to {peer}: {e}")))
}

/// A frame from the receiver, as the link's reader task delivers them.
type Received = Option<Result<Option<Frame>, crate::framed::ReadError>>;

/// The next frame from the receiver, waiting at most `timeout`.
async fn recv(link: &mut Link, timeout: Duration) -> Result<Frame, Error> {
    match tokio::time::timeout(timeout, link.frames.recv()).await {
        Ok(r) => frame_of(link, r),
        Err(_) => Err(Error::Transport(format!(
            "no answer from {} within {} s",
            link.peer,
            timeout.as_secs()
        ))),
    }
}

fn frame_of(link: &Link, r: Received) -> Result<Frame, Error> {
    match r {
        Some(Ok(Some(frame))) => Ok(frame),
        None | Some(Ok(None)) => Err(Error::Transport(format!(
            "{} closed the connection during the network check",
            link.peer
        ))),
        Some(Err(e)) => Err(read_failure(e, &link.peer)),
    }
}

async fn next_pong(link: &mut Link, timeout: Duration) -> Result<Ping, Error> {
    let frame = recv(link, timeout).await?;
    pong_of(link, frame)
}

/// The PONG `frame` must be, through the session's checks.
fn pong_of(link: &mut Link, frame: Frame) -> Result<Ping, Error> {
    match link.session.handle_frame(frame)? {
        SenderEvent::Pong(p) => Ok(p),
        SenderEvent::PeerError(e) => Err(peer_error(e)),
        other => Err(Error::Transport(format!(
            "{} answered a PING with {other:?}",
            link.peer
        ))),
    }
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The `p`th percentile (nearest rank) of `values`; 0 for none.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The mean absolute difference between consecutive values (RFC 3550's jitter, without its
/// smoothing); 0 for fewer than two.
fn jitter(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let sum: f64 = values.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
    sum / (values.len() - 1) as f64
}

/// The verdict and its reasons, from thresholds a block migration cares about: loss makes TCP
/// slow and connections drop, a long or unsteady round trip slows acknowledgements and
/// resumes, and the bandwidth sets the downtime. The bandwidth is judged against the speed
/// limit when one is set (a limited path is as fast as it is allowed to be).
pub fn evaluate(info: &NetworkCheckInfo) -> (Evaluation, Vec<String>) {
    let mut result = Evaluation::Good;
    let mut reasons = Vec::new();
    let mut judge = |level: Evaluation, reason: String| {
        if level as u8 > result as u8 {
            result = level;
        }
        reasons.push(reason);
    };
    match info.loss_percentage {
        l if l > 2.0 => judge(
            Evaluation::Poor,
            format!("{l:.2}% of bytes retransmitted (poor above 2%)"),
        ),
        l if l > 0.5 => judge(
            Evaluation::Fair,
            format!("{l:.2}% of bytes retransmitted (fair above 0.5%)"),
        ),
        _ => {}
    }
    match info.network_delay {
        d if d > 300.0 => judge(
            Evaluation::Poor,
            format!("round trip {d:.1} ms (poor above 300 ms)"),
        ),
        d if d > 100.0 => judge(
            Evaluation::Fair,
            format!("round trip {d:.1} ms (fair above 100 ms)"),
        ),
        _ => {}
    }
    if info.network_jitter > 30.0 {
        judge(
            Evaluation::Fair,
            format!("jitter {:.1} ms (fair above 30 ms)", info.network_jitter),
        );
    }
    let limited = info.speed_limit > 0.0;
    let (poor, fair) = if limited {
        (info.speed_limit * 0.5, info.speed_limit * 0.8)
    } else {
        (10.0, 100.0)
    };
    let what = if limited {
        format!(" against a limit of {:.0} Mbit/s", info.speed_limit)
    } else {
        String::new()
    };
    match info.migration_speed {
        s if s < poor => judge(
            Evaluation::Poor,
            format!("bandwidth {s:.1} Mbit/s{what} (poor below {poor:.0})"),
        ),
        s if s < fair => judge(
            Evaluation::Fair,
            format!("bandwidth {s:.1} Mbit/s{what} (fair below {fair:.0})"),
        ),
        _ => {}
    }
    (result, reasons)
}

/// The fields of the kernel's `struct tcp_info` used here.
#[derive(Debug, Clone, Copy)]
struct TcpInfo {
    rtt_us: u32,
    total_retrans: u32,
    /// `tcpi_bytes_sent` and `tcpi_bytes_retrans` (Linux 4.19+), when the kernel has them.
    bytes: Option<(u64, u64)>,
    segs_out: Option<u32>,
}

impl TcpInfo {
    /// Retransmitted bytes as a percentage of bytes sent since `earlier` (segments when the
    /// kernel does not count bytes).
    fn loss_percent_since(&self, earlier: &TcpInfo) -> f64 {
        let retrans = |a: u64, b: u64| b.saturating_sub(a) as f64;
        match (self.bytes, earlier.bytes, self.segs_out, earlier.segs_out) {
            (Some((sent, re)), Some((sent0, re0)), _, _) if sent > sent0 => {
                100.0 * retrans(re0, re) / retrans(sent0, sent)
            }
            (_, _, Some(out), Some(out0)) if out > out0 => {
                100.0
                    * retrans(
                        u64::from(earlier.total_retrans),
                        u64::from(self.total_retrans),
                    )
                    / retrans(u64::from(out0), u64::from(out))
            }
            _ => 0.0,
        }
    }
}

/// `getsockopt(TCP_INFO)` of `fd`, read by offset from the kernel's layout
/// (include/uapi/linux/tcp.h), so an older kernel's shorter struct gives what it has.
// The crate's one unsafe call: nix has no TCP_INFO accessor, and its generic struct getter
// panics when the kernel's struct is shorter than libc's (and libc's lacks the byte counters).
#[allow(unsafe_code)]
fn tcp_info(fd: RawFd) -> Option<TcpInfo> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and sets `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    let b = &buf[..len as usize];
    let u32_at = |at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_ne_bytes(s.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        b.get(at..at + 8)
            .map(|s| u64::from_ne_bytes(s.try_into().unwrap()))
    };
    Some(TcpInfo {
        rtt_us: u32_at(68)?,
        total_retrans: u32_at(100)?,
        bytes: u64_at(200).zip(u64_at(208)),
        segs_out: u32_at(136),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_jitter() {
        let v = [3.0, 1.0, 2.0, 10.0];
        assert_eq!(percentile(&v, 50.0), 2.0);
        assert_eq!(percentile(&v, 99.0), 10.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(jitter(&[1.0, 3.0, 2.0]), 1.5);
        assert_eq!(jitter(&[1.0]), 0.0);
    }

    fn info() -> NetworkCheckInfo {
        NetworkCheckInfo {
            network_delay: 1.0,
            network_jitter: 0.1,
            migration_speed: 900.0,
            loss_percentage: 0.0,
            cpu_usage: 10.0,
            mem_usage: 20.0,
            evaluation_result: Evaluation::Good,
            evaluation_reasons: Vec::new(),
            network_delay_p99: 2.0,
            loaded_delay: 3.0,
            retransmissions: 0,
            tcp_rtt: 1.0,
            burst_bytes: 1 << 30,
            burst_seconds: 5.0,
            speed_limit: 0.0,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(evaluate(&info()), (Evaluation::Good, vec![]));
        let lossy = NetworkCheckInfo {
            loss_percentage: 3.0,
            network_delay: 150.0,
            ..info()
        };
        let (e, reasons) = evaluate(&lossy);
        assert_eq!(e, Evaluation::Poor);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        // 40 Mbit/s is poor on an open path, good under a 40 Mbit/s limit.
        let slow = NetworkCheckInfo {
            migration_speed: 40.0,
            ..info()
        };
        assert_eq!(evaluate(&slow).0, Evaluation::Fair);
        let limited = NetworkCheckInfo {
            speed_limit: 40.0,
            migration_speed: 39.0,
            ..info()
        };
        assert_eq!(evaluate(&limited).0, Evaluation::Good);
        assert_eq!(serde_json::to_value(Evaluation::Poor).unwrap(), "poor");
    }

    #[test]
    fn tcp_info_of_a_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        use std::io::{Read, Write};
        let mut c2 = c.try_clone().unwrap();
        c2.write_all(&[7u8; 1 << 20]).unwrap();
        let mut got = vec![0u8; 1 << 20];
        s.read_exact(&mut got).unwrap();
        use std::os::fd::AsRawFd;
        let info = tcp_info(c.as_raw_fd()).expect("TCP_INFO");
        assert_eq!(info.total_retrans, 0);
        let (sent, retrans) = info.bytes.expect("a kernel with tcpi_bytes_sent");
        assert!(sent >= 1 << 20, "{info:?}");
        assert_eq!(retrans, 0);
        assert!(info.segs_out.unwrap() > 0);
        assert_eq!(tcp_info(-1).map(|_| ()), None);
    }
}
