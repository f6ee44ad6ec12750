//! Progress figures, with the migration service's field names.
//!
//! How each figure is computed (also in README.md):
//! - `replicatesize`: raw bytes the receiver has acknowledged as durable (written and
//!   fdatasync'ed), so it never runs ahead of what the target really holds;
//! - `totalsize`: raw bytes this round will send (the whole plan);
//! - `progress`: `100 * replicatesize / totalsize` (100 for an empty plan);
//! - `migrate_speed`: bytes really written to the sockets (after compression and TLS), in
//!   Mbit/s (10^6 bits), over the last 5 seconds (since the start when shorter, but never over
//!   less than one second, so a transfer's first milliseconds do not read as a huge rate);
//! - `compress_rate`: percent of the raw bytes sent that compression and zero elimination kept
//!   off the wire: `100 * (1 - wire / raw sent)`, 0 before anything was sent;
//! - `remain_time`: seconds left at the acknowledged raw rate over the last 5 seconds;
//! - `agent_cpu_usage`: percent of the machine's CPU (all its cores) this process used over
//!   the same window; `agent_mem_usage`: its resident memory now, in MB (10^6 bytes);
//!   `agent_disk_io`: MB/s it read from and wrote to storage over the window (see
//!   [`crate::usage`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::usage::Usage;

/// The window over which rates are measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// The shortest span a rate is computed over, in seconds.
const MIN_RATE_SPAN: f64 = 1.0;

/// Counters shared by the pipeline stages; cheap to update from any thread.
#[derive(Debug)]
pub struct Progress {
    subtask: Mutex<&'static str>,
    start: Instant,
    pub(crate) total: AtomicU64,
    pub(crate) read: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) wire: AtomicU64,
    pub(crate) zero: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) received: Arc<AtomicU64>,
    /// Bytes written to the sockets (ciphertext), from the task's throttle.
    socket: Mutex<Arc<AtomicU64>>,
    /// False until the round knows its plan (a delta round compares digests first).
    pub(crate) planned: std::sync::atomic::AtomicBool,
    /// Earlier readings: socket bytes, acknowledged bytes, the process's usage.
    samples: Mutex<VecDeque<(u64, u64, Usage)>>,
}

/// A snapshot of a transfer's progress. The first seven fields are the service's.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProgressSnapshot {
    /// `MIGRATE_LINUX_BLOCK` for a full round, `SYNC_LINUX_BLOCK` for a sync round.
    pub subtask_name: &'static str,
    /// 0 to 100.
    pub progress: f64,
    /// Raw bytes durable on the target.
    pub replicatesize: u64,
    /// Raw bytes in this round.
    pub totalsize: u64,
    /// Wire rate over the last 5 s, Mbit/s.
    pub migrate_speed: f64,
    /// Percent of raw bytes kept off the wire.
    pub compress_rate: f64,
    /// Estimated seconds left.
    pub remain_time: u64,
    /// Raw bytes read from the source disks.
    pub read_bytes: u64,
    /// Raw bytes sent (in DATA frames).
    pub sent_bytes: u64,
    /// Bytes written to the connection (frame headers and payloads).
    pub wire_bytes: u64,
    /// Raw bytes sent as zero chunks (no payload).
    pub zero_bytes: u64,
    /// Bytes of frames received from the receiver (acknowledgements, digests).
    pub received_bytes: u64,
    /// Seconds since the transfer started.
    pub elapsed: f64,
    /// Percent of the machine's CPU this process used over the last 5 s (50 on 2 cores is
    /// one core busy).
    pub agent_cpu_usage: f64,
    /// This process's resident memory, MB.
    pub agent_mem_usage: f64,
    /// Storage read and written by this process over the last 5 s, MB/s.
    pub agent_disk_io: f64,
}

impl Progress {
    /// Counters at zero for a round named `subtask` (`MIGRATE_LINUX_BLOCK`, ...).
    pub fn new(subtask: &'static str) -> Self {
        let usage = Usage::now();
        let start = usage.at;
        Self {
            subtask: Mutex::new(subtask),
            start,
            total: AtomicU64::new(0),
            read: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            wire: AtomicU64::new(0),
            zero: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            received: Arc::default(),
            socket: Mutex::default(),
            planned: std::sync::atomic::AtomicBool::new(false),
            samples: Mutex::new(VecDeque::from([(0, 0, usage)])),
        }
    }

    /// Measures `migrate_speed` from this socket byte counter (the throttle's).
    pub fn measure_socket(&self, written: Arc<AtomicU64>) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = written;
    }

    /// Names the round being measured (`MIGRATE_LINUX_BLOCK`, `SYNC_LINUX_BLOCK`).
    pub fn set_subtask(&self, subtask: &'static str) {
        *self.subtask.lock().unwrap_or_else(|e| e.into_inner()) = subtask;
    }

    /// The figures now. Rates are measured between this call and the oldest of the earlier
    /// calls within the last 5 seconds.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let usage = Usage::now();
        let now = usage.at;
        let total = self.total.load(Relaxed);
        let acked = self.acked.load(Relaxed);
        let wire = self.wire.load(Relaxed);
        let socket = self
            .socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .load(Relaxed);
        let sent = self.sent.load(Relaxed);
        let (wire_rate, acked_rate, rates) = {
            let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            // Keep one sample older than the window so the rate always spans it.
            while samples.len() > 1 && now.duration_since(samples[1].2.at) >= RATE_WINDOW {
                samples.pop_front();
            }
            let (w0, a0, u0) = samples.front().copied().unwrap_or((0, 0, usage));
            // Never less than a second: a rate over the first milliseconds of a transfer is the
            // bucket's starting burst divided by almost nothing.
            let secs = now.duration_since(u0.at).as_secs_f64().max(MIN_RATE_SPAN);
            samples.push_back((socket, acked, usage));
            if samples.len() > 64 {
                samples.remove(1);
            }
            (
                socket.saturating_sub(w0) as f64 / secs,
                acked.saturating_sub(a0) as f64 / secs,
                usage.since(&u0),
            )
        };
        let remaining = total.saturating_sub(acked);
        ProgressSnapshot {
            subtask_name: *self.subtask.lock().unwrap_or_else(|e| e.into_inner()),
            progress: if !self.planned.load(Relaxed) {
                0.0
            } else if total == 0 {
                100.0
            } else {
                (acked as f64 * 100.0 / total as f64).min(100.0)
            },
            replicatesize: acked,
            totalsize: total,
            migrate_speed: wire_rate * 8.0 / 1e6,
            compress_rate: if sent == 0 {
                0.0
            } else {
                (100.0 * (1.0 - wire as f64 / sent as f64)).max(0.0)
            },
            remain_time: if remaining == 0 {
                0
            } else if acked_rate > 0.0 {
                (remaining as f64 / acked_rate).ceil() as u64
            } else {
                u64::MAX
            }
            .min(100 * 365 * 86_400),
            read_bytes: self.read.load(Relaxed),
            sent_bytes: sent,
            wire_bytes: wire,
            zero_bytes: self.zero.load(Relaxed),
            received_bytes: self.received.load(Relaxed),
            elapsed: now.duration_since(self.start).as_secs_f64(),
            agent_cpu_usage: rates.map_or(0.0, |r| round1(r.cpu_percent)),
            agent_mem_usage: round1(usage.rss_bytes as f64 / 1e6),
            agent_disk_io: rates.map_or(0.0, |r| round1(r.io_bytes_per_sec / 1e6)),
        }
    }
}

/// One decimal is all these figures mean.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Formats a byte count for people: `1.50 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_plan_is_not_complete() {
        let p = Progress::new("SYNC_LINUX_BLOCK");
        assert_eq!(p.snapshot().progress, 0.0);
    }

    #[test]
    fn empty_plan_is_complete() {
        let p = Progress::new("MIGRATE_LINUX_BLOCK");
        p.planned.store(true, Relaxed);
        let s = p.snapshot();
        assert_eq!(s.progress, 100.0);
        assert_eq!(s.remain_time, 0);
        assert_eq!(s.compress_rate, 0.0);
    }

    #[test]
    fn figures_follow_counters() {
        let p = Progress::new("MIGRATE_LINUX_BLOCK");
        p.planned.store(true, Relaxed);
        p.total.store(1000, Relaxed);
        p.acked.store(250, Relaxed);
        p.sent.store(500, Relaxed);
        p.wire.store(100, Relaxed);
        let s = p.snapshot();
        assert_eq!(s.progress, 25.0);
        assert_eq!(s.replicatesize, 250);
        assert_eq!(s.totalsize, 1000);
        assert!((s.compress_rate - 80.0).abs() < 1e-9);
        // This test process: some memory, a CPU share that is a percentage.
        assert!(s.agent_mem_usage >= 1.0, "{s:?}");
        assert!((0.0..=100.0).contains(&s.agent_cpu_usage), "{s:?}");
        let json = serde_json::to_value(&s).unwrap();
        for field in [
            "subtask_name",
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
            assert!(json.get(field).is_some(), "missing {field}");
        }
    }

    #[test]
    fn a_burst_in_the_first_milliseconds_is_not_a_huge_rate() {
        let p = Progress::new("MIGRATE_LINUX_BLOCK");
        let socket = Arc::new(AtomicU64::new(0));
        p.measure_socket(socket.clone());
        socket.store(200_000, Relaxed); // 200 kB within microseconds of the start
        let s = p.snapshot();
        assert!(s.migrate_speed <= 1.6 + 1e-9, "{} Mbit/s", s.migrate_speed);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
    }
}
