//! What this process uses of the machine, from the kernel: CPU time (`getrusage`), resident
//! memory (`/proc/self/statm`) and storage I/O (`/proc/self/io`). The progress figures
//! `agent_cpu_usage`, `agent_mem_usage` and `agent_disk_io`, and `netcheck`'s `cpu_usage` and
//! `mem_usage`, are rates and levels of these.

use std::time::Instant;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;
use nix::unistd::{sysconf, SysconfVar};

/// One reading of the process's counters.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// When it was taken.
    pub at: Instant,
    /// User + system CPU time of all the process's threads, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory now, in bytes.
    pub rss_bytes: u64,
    /// Bytes the process has read from and written to storage (`read_bytes + write_bytes` of
    /// `/proc/self/io`: what reached the disks, direct I/O included, page-cache hits not).
    pub io_bytes: u64,
}

impl Usage {
    /// Reads the counters now. A counter the kernel does not provide (no `/proc`, or
    /// `/proc/self/io` without task accounting) reads as 0.
    pub fn now() -> Self {
        let at = Instant::now();
        let cpu_seconds = getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |ru| {
            let secs = |t: TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(ru.user_time()) + secs(ru.system_time())
        });
        Self {
            at,
            cpu_seconds,
            rss_bytes: rss_bytes().unwrap_or(0),
            io_bytes: io_bytes().unwrap_or(0),
        }
    }

    /// The rates between `earlier` and this reading (none when no time passed).
    pub fn since(&self, earlier: &Usage) -> Option<Rates> {
        let secs = self.at.duration_since(earlier.at).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Some(Rates {
            cpu_percent: ((self.cpu_seconds - earlier.cpu_seconds).max(0.0) / secs / cpus * 100.0)
                .min(100.0),
            io_bytes_per_sec: self.io_bytes.saturating_sub(earlier.io_bytes) as f64 / secs,
        })
    }
}

/// Rates of use between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Percent of the whole machine's CPU (all the cores this process may run on) used by
    /// the process: 50 on a 2-core machine is one core busy.
    pub cpu_percent: f64,
    /// Storage bytes read and written per second.
    pub io_bytes_per_sec: f64,
}

/// Resident set size from `/proc/self/statm` (its second field, in pages).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = sysconf(SysconfVar::PAGE_SIZE).ok().flatten();
    let page = page.and_then(|p| u64::try_from(p).ok()).filter(|&p| p > 0);
    Some(pages * page.unwrap_or(4096))
}

/// `read_bytes + write_bytes` from `/proc/self/io`.
fn io_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some(field("read_bytes:")?.saturating_add(field("write_bytes:")?))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn counts_cpu_memory_and_io_of_this_process() {
        let before = Usage::now();
        assert!(before.rss_bytes > 1 << 20, "{before:?}");
        // Burn 0.1 s of CPU (however long that takes on a busy machine, within 30 s), and
        // write a file through to the disk.
        let mut x = 0u64;
        let spin = Instant::now();
        while Usage::now().cpu_seconds - before.cpu_seconds < 0.1 && spin.elapsed().as_secs() < 30 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("f")).unwrap();
        f.write_all(&vec![1u8; 4 << 20]).unwrap();
        f.sync_all().unwrap();
        let after = Usage::now();
        assert!(
            after.cpu_seconds - before.cpu_seconds >= 0.1,
            "{before:?} {after:?}"
        );
        let rates = after.since(&before).unwrap();
        assert!(
            rates.cpu_percent > 0.0 && rates.cpu_percent <= 100.0,
            "{rates:?}"
        );
        // tmpfs never reaches a disk; elsewhere the 4 MiB must be counted.
        if after.io_bytes > before.io_bytes {
            assert!(
                after.io_bytes - before.io_bytes >= 4 << 20,
                "{before:?} {after:?}"
            );
        }
        assert!(after.since(&after).is_none());
    }
}
