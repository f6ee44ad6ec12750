//! Over-speed protection: the rate really written to the sockets, over a sliding window.

use std::fmt;
use std::time::Duration;

use crate::consts::{MONITOR_SLOT, MONITOR_SLOTS, OVER_SPEED_WINDOW};
use crate::rules::Limit;

/// Measures the bytes really written (independently of the [`TokenBucket`](crate::TokenBucket))
/// over a sliding window of 5 s, and judges them against the limit.
///
/// Bytes are counted in 100 ms slots (51 of them: memory is fixed, about 450 bytes). The
/// window is the current, partly elapsed slot plus the 50 before it, so it is between 5.0 and
/// 5.1 s long; the rate is the exact byte count in it divided by its exact length. Time is the
/// same monotonic `now` the bucket gets; going backwards counts as no time passing.
#[derive(Clone, Debug)]
pub struct OverSpeedMonitor {
    /// Bytes per slot; slot number `k` (`now / MONITOR_SLOT`) lives at `k % MONITOR_SLOTS`.
    slots: [u64; MONITOR_SLOTS],
    /// The newest slot number written or cleared; the ring holds slots `head - 50 ..= head`.
    head: u64,
    /// Creation or the last reset: nothing before it counts.
    since: Duration,
    /// The latest `now` seen.
    latest: Duration,
}

/// The evidence that the wire rate exceeded the limit by more than the threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverSpeed {
    /// The rate measured over the last 5 s, in bytes per second.
    pub measured_bytes_per_sec: f64,
    /// The limit in force, in bytes per second.
    pub limit_bytes_per_sec: u64,
    /// How far above the limit the rate may go, in percent.
    pub threshold_percent: f64,
}

impl fmt::Display for OverSpeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mbps = |bytes_per_sec: f64| bytes_per_sec * 8.0 / 1e6;
        write!(
            f,
            "the wire rate over the last {} s was {:.2} Mbit/s, more than {}% above the limit \
             of {:.2} Mbit/s",
            OVER_SPEED_WINDOW.as_secs(),
            mbps(self.measured_bytes_per_sec),
            self.threshold_percent,
            mbps(self.limit_bytes_per_sec as f64),
        )
    }
}

impl OverSpeedMonitor {
    /// An empty history starting at `now`.
    pub fn new(now: Duration) -> Self {
        OverSpeedMonitor {
            slots: [0; MONITOR_SLOTS],
            head: slot_of(now),
            since: now,
            latest: now,
        }
    }

    /// Counts `bytes` written at `now`.
    pub fn record(&mut self, bytes: u64, now: Duration) {
        let now = now.max(self.latest);
        self.latest = now;
        let slot = slot_of(now);
        self.advance(slot);
        let count = &mut self.slots[ring(slot)];
        *count = count.saturating_add(bytes);
    }

    /// Bytes per second over the last 5 s (5.0 to 5.1 s, see the type's docs), or since
    /// creation or the last reset if that is shorter; 0 when no time has passed.
    pub fn rate(&self, now: Duration) -> f64 {
        let now = now.max(self.latest);
        let slot = slot_of(now);
        let first = slot.saturating_sub(MONITOR_SLOTS as u64 - 1);
        // Slots after `head` have not been written yet; those the ring holds start at
        // head - 50 <= first (now >= latest, so slot >= head).
        let bytes: u128 = (first..=self.head.min(slot))
            .map(|k| u128::from(self.slots[ring(k)]))
            .sum();
        let start = self.since.max(slot_start(first));
        let span = now.saturating_sub(start);
        if span.is_zero() {
            return 0.0;
        }
        bytes as f64 / span.as_secs_f64()
    }

    /// When the rate measured over a full 5 s window exceeds
    /// `limit.bytes_per_sec × (1 + threshold / 100)`, the evidence. Never judges before 5 s
    /// have passed since creation or [`reset`](Self::reset); `None` when the limit is
    /// unlimited or has no threshold.
    pub fn check(&self, limit: Limit, now: Duration) -> Option<OverSpeed> {
        let limit_bytes_per_sec = limit.bytes_per_sec?;
        let threshold_percent = limit.over_speed_threshold?;
        let now = now.max(self.latest);
        if now.saturating_sub(self.since) < OVER_SPEED_WINDOW {
            return None;
        }
        let measured_bytes_per_sec = self.rate(now);
        let allowed = limit_bytes_per_sec as f64 * (1.0 + threshold_percent / 100.0);
        (measured_bytes_per_sec > allowed).then_some(OverSpeed {
            measured_bytes_per_sec,
            limit_bytes_per_sec,
            threshold_percent,
        })
    }

    /// Forgets the history (after a rule change: the new limit is judged on new traffic only,
    /// after a full window of it).
    pub fn reset(&mut self, now: Duration) {
        let now = now.max(self.latest);
        *self = OverSpeedMonitor::new(now);
    }

    /// Makes `slot` the newest, clearing the slots it passes over.
    fn advance(&mut self, slot: u64) {
        if slot <= self.head {
            return;
        }
        if slot - self.head >= MONITOR_SLOTS as u64 {
            self.slots = [0; MONITOR_SLOTS];
        } else {
            for k in self.head + 1..=slot {
                self.slots[ring(k)] = 0;
            }
        }
        self.head = slot;
    }
}

fn slot_of(now: Duration) -> u64 {
    // A u64 of 100 ms slots covers 58 billion years; saturate past that.
    u64::try_from(now.as_nanos() / MONITOR_SLOT.as_nanos()).unwrap_or(u64::MAX)
}

fn slot_start(slot: u64) -> Duration {
    let nanos = u128::from(slot) * MONITOR_SLOT.as_nanos();
    u64::try_from(nanos / 1_000_000_000)
        .map(|secs| Duration::new(secs, (nanos % 1_000_000_000) as u32))
        .unwrap_or(Duration::MAX)
}

fn ring(slot: u64) -> usize {
    (slot % MONITOR_SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::bucket::TokenBucket;

    const MBPS: u64 = 125_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limit(mbps: u64, threshold: Option<f64>) -> Limit {
        Limit {
            bytes_per_sec: Some(mbps * MBPS),
            over_speed_threshold: threshold,
        }
    }

    /// Feeds `bytes_per_sec` in 1 ms writes from `from` to `to`.
    fn feed(m: &mut OverSpeedMonitor, bytes_per_sec: u64, from: Duration, to: Duration) {
        let mut t = from;
        while t < to {
            t += ms(1);
            m.record(bytes_per_sec / 1000, t);
        }
    }

    /// Traffic the bucket did not pace, at twice the limit: over speed once a full window of
    /// it has been seen, and not before.
    #[test]
    fn unpaced_traffic_is_caught_after_the_window() {
        let l = limit(80, Some(50.0));
        let mut m = OverSpeedMonitor::new(Duration::ZERO);
        let mut t = Duration::ZERO;
        let mut caught = None;
        while t < Duration::from_secs(6) {
            t += ms(1);
            m.record(2 * 80 * MBPS / 1000, t);
            if t < OVER_SPEED_WINDOW {
                assert_eq!(m.check(l, t), None, "judged at {t:?}");
            } else if caught.is_none() {
                caught = m.check(l, t).map(|o| (t, o));
            }
        }
        let (at, o) = caught.expect("not caught");
        assert_eq!(at, OVER_SPEED_WINDOW);
        assert_eq!(o.limit_bytes_per_sec, 10_000_000);
        assert_eq!(o.threshold_percent, 50.0);
        assert!(
            (o.measured_bytes_per_sec / 20e6 - 1.0).abs() < 1e-9,
            "{o:?}"
        );
        let msg = o.to_string();
        assert!(
            msg.contains("160.00 Mbit/s")
                && msg.contains("50% above")
                && msg.contains("80.00 Mbit/s"),
            "{msg}"
        );
    }

    /// A burst that the average hides from a shorter look: 4 s idle then 1 s at 10× is 2×
    /// over the window.
    #[test]
    fn a_burst_counts_over_the_whole_window() {
        let l = limit(8, Some(50.0));
        let mut m = OverSpeedMonitor::new(Duration::ZERO);
        feed(&mut m, 10 * 8 * MBPS, ms(4000), ms(5000));
        let o = m.check(l, ms(5000)).expect("not caught");
        assert!((o.measured_bytes_per_sec / 2e6 - 1.0).abs() < 1e-9, "{o:?}");
    }

    #[test]
    fn just_under_the_threshold_is_fine() {
        let l = limit(80, Some(5.0));
        let mut m = OverSpeedMonitor::new(Duration::ZERO);
        feed(&mut m, 80 * MBPS * 104 / 100, Duration::ZERO, ms(30_000));
        assert_eq!(m.check(l, ms(30_000)), None);
        // 1 ms writes: the window holds 5000 or 5001 of them.
        assert!((m.rate(ms(30_000)) / (80.0 * 1.04 * 125_000.0) - 1.0).abs() < 1e-3);
        // At 6% it is caught.
        feed(&mut m, 80 * MBPS * 106 / 100, ms(30_000), ms(36_000));
        assert!(m.check(l, ms(36_000)).is_some());
    }

    #[test]
    fn no_judgement_without_a_limit_or_threshold() {
        let mut m = OverSpeedMonitor::new(Duration::ZERO);
        feed(&mut m, 1_000_000_000, Duration::ZERO, ms(6000));
        assert_eq!(m.check(Limit::UNLIMITED, ms(6000)), None);
        assert_eq!(
            m.check(
                Limit {
                    bytes_per_sec: None,
                    over_speed_threshold: Some(0.0)
                },
                ms(6000)
            ),
            None
        );
        assert_eq!(m.check(limit(1, None), ms(6000)), None);
        assert!(m.check(limit(1, Some(0.0)), ms(6000)).is_some());
    }

    /// A bucket-paced sender is never judged over speed. Its only excess is the bucket's first
    /// burst (100 ms of tokens; one 16 KiB write at 1 Mbit/s), 2% of a 5 s window (2.6% at
    /// 1 Mbit/s, plus one write of granularity), so a threshold of 3% (3.5%) passes; a 0%
    /// threshold would rightly count that burst.
    #[test]
    fn paced_traffic_passes() {
        for mbps in [1, 8, 80, 800] {
            let rate = mbps * MBPS;
            let chunk = 16 * 1024;
            let mut b = TokenBucket::new(rate, chunk, Duration::ZERO);
            let mut m = OverSpeedMonitor::new(Duration::ZERO);
            let mut now = Duration::ZERO;
            while now < Duration::from_secs(20) {
                match b.take(chunk, now) {
                    Ok(()) => m.record(chunk, now),
                    Err(wait) => now += wait,
                }
                assert_eq!(
                    m.check(limit(mbps, Some(if mbps == 1 { 3.5 } else { 3.0 })), now),
                    None,
                    "{mbps} at {now:?}"
                );
            }
        }
    }

    #[test]
    fn reset_clears_history() {
        let l = limit(8, Some(10.0));
        let mut m = OverSpeedMonitor::new(Duration::ZERO);
        feed(&mut m, 5 * 8 * MBPS, Duration::ZERO, ms(6000));
        assert!(m.check(l, ms(6000)).is_some());
        m.reset(ms(6000));
        assert_eq!(m.rate(ms(6000)), 0.0);
        assert_eq!(m.rate(ms(7000)), 0.0);
        assert_eq!(m.check(l, ms(10_999)), None);
        // Within the limit after the reset: judged on the new traffic only.
        feed(&mut m, 8 * MBPS, ms(6000), ms(12_000));
        assert_eq!(m.check(l, ms(12_000)), None);
        assert!((m.rate(ms(12_000)) / 1e6 - 1.0).abs() < 1e-3);
    }

    #[test]
    fn rate_is_exact_over_a_short_history() {
        let mut m = OverSpeedMonitor::new(ms(10_050));
        assert_eq!(m.rate(ms(10_050)), 0.0);
        m.record(1_000, ms(10_300));
        assert!((m.rate(ms(10_550)) - 2_000.0).abs() < 1e-9);
        // Old traffic leaves the window: 51 slots later nothing is left of it.
        assert_eq!(m.rate(ms(10_300 + 5_200)), 0.0);
        m.record(500, ms(20_000));
        assert!((m.rate(ms(20_100)) - 500.0 / 5.0).abs() < 1e-9);
    }

    #[test]
    fn time_going_backwards() {
        let mut m = OverSpeedMonitor::new(ms(10_000));
        m.record(1_000, ms(11_000));
        m.record(1_000, ms(1_000));
        assert!((m.rate(ms(12_000)) - 1_000.0).abs() < 1e-9);
        assert!((m.rate(ms(0)) - 2_000.0).abs() < 1e-9);
        m.reset(ms(0));
        assert_eq!(m.check(limit(1, Some(0.0)), ms(15_999)), None);
    }

    #[test]
    fn memory_is_bounded() {
        assert!(std::mem::size_of::<OverSpeedMonitor>() <= 512);
        let mut m = OverSpeedMonitor::new(Duration::ZERO);
        // A day of 1 ms writes at 10 Gbit/s: same size, still exact.
        let mut t = Duration::ZERO;
        for _ in 0..86_400_000 / 7 {
            t += ms(7);
            m.record(8_750_000, t);
        }
        assert!((m.rate(t) / 1.25e9 - 1.0).abs() < 0.01);
        m.record(u64::MAX, t);
        m.record(u64::MAX, t);
        assert!(m.rate(t).is_finite());
        let _ = m.check(limit(1, Some(0.0)), Duration::MAX);
        m.record(1, Duration::MAX);
        assert!(m.rate(Duration::MAX) >= 0.0);
    }

    proptest! {
        /// The rate is the exact count of bytes in the window over its length, by brute force.
        #[test]
        fn rate_matches_brute_force(
            writes in prop::collection::vec((0u64..300, 0u64..1_000_000), 1..200),
            look in 0u64..6000,
        ) {
            let mut m = OverSpeedMonitor::new(Duration::ZERO);
            let mut t = Duration::ZERO;
            let mut log = Vec::new();
            for (dt, n) in writes {
                t += ms(dt);
                m.record(n, t);
                log.push((t, n));
            }
            let now = t + ms(look);
            let slot = slot_of(now);
            let start = slot_start(slot.saturating_sub(50));
            let bytes: u64 = log.iter().filter(|(w, _)| *w >= start).map(|(_, n)| n).sum();
            let span = (now - start).as_secs_f64();
            let expected = if span == 0.0 { 0.0 } else { bytes as f64 / span };
            prop_assert!((m.rate(now) - expected).abs() <= expected * 1e-12);
            let span = now - start;
            prop_assert!(span >= OVER_SPEED_WINDOW.min(now));
            prop_assert!(span < OVER_SPEED_WINDOW + MONITOR_SLOT);
        }
    }
}
