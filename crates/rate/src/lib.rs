//! blockrep's speed limits: the service's time-of-day rules, a token bucket that paces the
//! bytes on the wire, and over-speed protection that checks what was really sent.
//!
//! - [`Rules`] parses the service's speed-limit JSON or the CLI shorthand, refuses bad rules
//!   with an error carrying the service's code `SMS.6405`, and answers which [`Limit`] is in
//!   force at a local minute of the day.
//! - [`TokenBucket`] paces bytes against a limit; a task's streams share one.
//! - [`OverSpeedMonitor`] measures the bytes really written over a sliding 5 s window,
//!   independently of the bucket, and says when they exceed the limit by more than the
//!   threshold.
//!
//! This crate does no I/O, spawns nothing and reads **no clock**: every function that needs
//! time takes it as an argument, so tests drive it with a simulated clock and are exact. The
//! driver passes two times, for two purposes:
//!
//! - the **local minute of the day** (wall clock, local time zone; see [`local_minute`]) to
//!   [`Rules::limit_at`], which selects the window;
//! - a **monotonic** `now` to [`TokenBucket`] and [`OverSpeedMonitor`], which refill tokens
//!   and measure rates.
//!
//! So a DST change or a wall-clock step only makes the next `limit_at` land in another window
//! (the driver then calls [`TokenBucket::set_rate`] and [`OverSpeedMonitor::reset`]); it never
//! refills the bucket and never releases a burst. Reading the rules file, watching it and
//! sleeping are the driver's business.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod consts;

mod bucket;
mod error;
mod monitor;
mod parse;
mod rules;
mod time;

pub use bucket::TokenBucket;
pub use error::RuleError;
pub use monitor::{OverSpeed, OverSpeedMonitor};
pub use rules::{Limit, Rule, Rules};
pub use time::{local_minute, TimeOfDay};

/// Entry points for fuzz targets; a unit test runs each on seed inputs so they run in CI.
#[cfg(any(feature = "fuzzing", test))]
pub mod fuzzing {
    use std::time::Duration;

    use crate::{OverSpeedMonitor, Rules, TokenBucket};

    /// Parses `data` as rules (either form). Must never panic. Accepted rules give a limit
    /// for every minute, at most one window holds each minute, and their shorthand parses
    /// back to the same windows.
    pub fn rules(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(rules) = Rules::parse(text) else {
            return;
        };
        for minute in 0..1440 {
            let windows = rules.rules().iter().filter(|r| r.contains(minute)).count();
            assert!(windows <= 1, "minute {minute} in {windows} windows");
            let _ = rules.limit_at(minute);
        }
        if !rules.rules().is_empty() {
            let short: Vec<String> = rules
                .rules()
                .iter()
                .map(|r| format!("{}-{}={}", r.start, r.end, r.speed_mbps))
                .collect();
            let again = Rules::from_shorthand(&short.join(",")).expect("shorthand re-parses");
            for minute in 0..1440 {
                assert_eq!(
                    again.limit_at(minute).bytes_per_sec,
                    rules.limit_at(minute).bytes_per_sec
                );
            }
        }
    }

    /// Drives a bucket and a monitor with operations decoded from `data` (the clock may go
    /// backwards). Must never panic, and after a refused request the same request must be
    /// granted once the wait it was told has passed.
    pub fn limiter(data: &[u8]) {
        let word = |b: &[u8]| b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
        let mut ops = data.chunks(9);
        let Some(first) = ops.next() else {
            return;
        };
        let mut now = Duration::from_nanos(word(first));
        let mut bucket = TokenBucket::new(word(first) >> 8, word(first) & 0xffff, now);
        let mut monitor = OverSpeedMonitor::new(now);
        for op in ops {
            let (kind, arg) = (op[0], word(&op[1..]));
            match kind % 5 {
                0 => now = now.saturating_add(Duration::from_nanos(arg)),
                1 => now = now.saturating_sub(Duration::from_nanos(arg)),
                2 => bucket.set_rate(arg, now),
                3 => bucket.refund(arg),
                _ => match bucket.take(arg, now) {
                    Ok(()) => monitor.record(arg, now),
                    // Duration::MAX is a saturated wait (a debt of 2^64 bytes at 1 byte/s).
                    Err(wait) if wait < Duration::MAX => {
                        if let Some(later) = now.checked_add(wait) {
                            assert!(bucket.take(arg, later).is_ok(), "refused after the wait");
                            now = later;
                        }
                    }
                    Err(_) => {}
                },
            }
            assert!(monitor.rate(now) >= 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz entry points on their seeds, so the seeds run in every CI.
    #[test]
    fn fuzzing_seeds() {
        // The files the `rules` fuzz target starts from (fuzz/seeds/rules), and a few inputs
        // that must be refused.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/rules");
        let mut accepted = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let seed = std::fs::read(entry.unwrap().path()).unwrap();
            fuzzing::rules(&seed);
            accepted += usize::from(Rules::parse(std::str::from_utf8(&seed).unwrap()).is_ok());
        }
        assert!(
            accepted >= 6,
            "only {accepted} seeds in {} parse",
            dir.display()
        );
        for bad in ["{", "", "8:00-7:00", "25:00-1:00=1"] {
            fuzzing::rules(bad.as_bytes());
        }
        fuzzing::rules(&[0xff, 0xfe]);
        let mut ops = vec![0, 0, 0, 0, 0, 0x98, 0x96, 0x80, 0x40];
        for (kind, arg) in [
            (4u8, 100_000u64),
            (4, 1 << 20),
            (1, 5_000_000_000),
            (4, 16_384),
            (2, 1),
            (4, 3),
            (3, 7),
            (0, 1 << 40),
            (4, 1),
        ] {
            ops.push(kind);
            ops.extend_from_slice(&arg.to_be_bytes());
        }
        fuzzing::limiter(&ops);
        fuzzing::limiter(&[]);
        fuzzing::limiter(&[4; 40]);
        // Rate 1 byte/s, then u64::MAX bytes twice: the second wait is u64::MAX seconds.
        let mut ops = vec![0, 0, 0, 0, 0, 0, 0, 1, 0];
        for _ in 0..2 {
            ops.push(4);
            ops.extend_from_slice(&u64::MAX.to_be_bytes());
        }
        fuzzing::limiter(&ops);
    }

    #[test]
    fn error_codes_are_the_services() {
        assert_eq!(consts::ERROR_CODE, "SMS.6405");
        let e = Rules::parse("nonsense").unwrap_err();
        assert_eq!(e.code(), "SMS.6405");
    }
}
