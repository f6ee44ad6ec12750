//! A token bucket over bytes, driven by the caller's monotonic clock.
//!
//! Tokens are kept as an integer count of byte-nanoseconds ("nanobytes": a rate of `r`
//! bytes/s earns exactly `r` of them per nanosecond), so refilling is exact integer arithmetic:
//! a steady sender gets exactly `rate` on average over hours, with no rounding drift.

use std::time::Duration;

use crate::consts::BURST_WINDOW;

/// Nanobytes per byte.
const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A token bucket over bytes on the wire. Time is `now: Duration` since any fixed origin,
/// from a monotonic clock: the bucket never reads a clock, so a wall-clock jump or a DST
/// change cannot refill it (those only make the driver select another window, see
/// [`local_minute`](crate::local_minute)).
///
/// - Capacity (the largest burst after idleness) is `max(rate × 100 ms, min_burst)` bytes.
/// - A request of `n` bytes is granted when the bucket holds `n` tokens. A request larger
///   than the capacity could never be granted that way, so it is granted when the bucket is
///   **full**, and the bucket goes into debt by `n - capacity`: nothing more is granted until
///   the debt is repaid at `rate`. The average stays exact and no interval sees more than
///   `rate × length + max(capacity, n)` bytes.
/// - A rate of 0 is unlimited: every request is granted at once and no tokens are kept.
/// - Time going backwards (`now` before the latest `now` seen) counts as no time passing.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    /// The capacity is at least this many bytes (one chunk or write piece).
    min_burst: u64,
    /// In nanobytes.
    capacity: i128,
    /// In nanobytes, at most `capacity`; negative while a large request is being paid off.
    tokens: i128,
    /// The latest `now` seen: tokens are counted up to here.
    last: Duration,
}

impl TokenBucket {
    /// `rate` bytes/s (0 = unlimited); burst capacity = `max(rate × 100 ms, min_burst)` bytes
    /// (`min_burst` = one chunk or one write piece). Starts full.
    pub fn new(rate: u64, min_burst: u64, now: Duration) -> Self {
        let capacity = capacity(rate, min_burst);
        TokenBucket {
            rate,
            min_burst,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Changes the rate (a rule change or a window switch). Tokens earned up to `now` at the
    /// old rate are kept, capped at the new capacity, and a debt is kept (and now repaid at
    /// the new rate): the change takes effect at once, never releases a burst beyond the new
    /// capacity and never stalls longer than one request at the new rate. Coming from
    /// unlimited, the bucket starts full.
    pub fn set_rate(&mut self, rate: u64, now: Duration) {
        self.refill(now);
        let was_unlimited = self.rate == 0;
        self.rate = rate;
        self.capacity = capacity(rate, self.min_burst);
        self.tokens = if was_unlimited {
            self.capacity
        } else {
            self.tokens.min(self.capacity)
        };
    }

    /// Bytes per second; 0 = unlimited.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The largest burst after idleness, in bytes (rounded down).
    pub fn capacity(&self) -> u64 {
        u64::try_from(self.capacity / NANOS_PER_SEC).unwrap_or(u64::MAX)
    }

    /// Asks to send `n` bytes at `now`. Returns `Ok(())` and deducts when allowed, else
    /// `Err(wait)`: the time after which the same request will be granted (the caller sleeps
    /// that long and asks again). The wait is exact (rounded up to the nanosecond): asking a
    /// nanosecond earlier would be refused again.
    pub fn take(&mut self, n: u64, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        if n == 0 || self.rate == 0 {
            return Ok(());
        }
        let need = i128::from(n) * NANOS_PER_SEC;
        // A request above the capacity waits for a full bucket (see the type's docs).
        let gate = need.min(self.capacity);
        if self.tokens >= gate {
            self.tokens -= need;
            return Ok(());
        }
        // gate > tokens here, and both are within ±2^95: the difference is positive and fits.
        let missing = (gate - self.tokens) as u128;
        let wait = nanos(missing.div_ceil(u128::from(self.rate)));
        // If time went backwards, tokens are counted up to `last`: the caller must also wait
        // for its clock to get back there.
        Err(self.last.saturating_sub(now).saturating_add(wait))
    }

    /// Returns unused bytes (a write that sent fewer bytes than granted). The bucket never
    /// holds more than its capacity.
    pub fn refund(&mut self, n: u64) {
        if self.rate == 0 {
            return;
        }
        self.tokens = (self.tokens + i128::from(n) * NANOS_PER_SEC).min(self.capacity);
    }

    /// Adds the tokens earned from `last` to `now`, if `now` is later.
    fn refill(&mut self, now: Duration) {
        if now <= self.last {
            return;
        }
        let elapsed = (now - self.last).as_nanos();
        self.last = now;
        if self.rate == 0 {
            return;
        }
        // tokens <= capacity always, so the room is not negative; the product saturates
        // (a u64 rate times centuries of nanoseconds) and is then capped by the room.
        let room = (self.capacity - self.tokens) as u128;
        let earned = u128::from(self.rate).saturating_mul(elapsed).min(room);
        self.tokens += earned as i128;
    }
}

/// `max(rate × BURST_WINDOW, min_burst)` in nanobytes: at most 2^64 × 10^8, which fits.
fn capacity(rate: u64, min_burst: u64) -> i128 {
    let window = BURST_WINDOW.as_nanos() as i128;
    (i128::from(rate) * window).max(i128::from(min_burst) * NANOS_PER_SEC)
}

/// Nanoseconds as a `Duration`, saturating.
fn nanos(ns: u128) -> Duration {
    let secs = ns / NANOS_PER_SEC as u128;
    match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, (ns % NANOS_PER_SEC as u128) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rules::{Limit, Rules};
    use crate::time::local_minute;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    const MBPS: u64 = 125_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Nanobytes `rate` earns in `d`.
    fn earned(rate: u64, d: Duration) -> i128 {
        i128::from(rate) * d.as_nanos() as i128
    }

    /// A sender that asks for `chunk` bytes whenever it can and sleeps exactly the wait it is
    /// told, from `now` until `until`. Checks the contract that the same request is granted
    /// after that wait. Returns the grant times.
    fn greedy(
        b: &mut TokenBucket,
        chunk: u64,
        mut now: Duration,
        until: Duration,
    ) -> Vec<Duration> {
        let mut grants = Vec::new();
        let mut must_grant = false;
        while now < until {
            match b.take(chunk, now) {
                Ok(()) => grants.push(now),
                Err(wait) => {
                    assert!(!must_grant, "not granted after the wait it was told");
                    assert!(wait > Duration::ZERO);
                    now += wait;
                    must_grant = true;
                    continue;
                }
            }
            must_grant = false;
        }
        grants
    }

    /// The largest and smallest byte counts over windows `[t, t + d)` inside `[from, to]`.
    /// The count only changes where `t` or `t + d` crosses a grant, so the windows starting
    /// at, or a nanosecond after, a grant and those ending there cover every case.
    fn window_extremes(
        grants: &[Duration],
        chunk: u64,
        d: Duration,
        from: Duration,
        to: Duration,
    ) -> (u64, u64) {
        let count = |a: Duration| {
            let n = grants.partition_point(|&g| g < a + d) - grants.partition_point(|&g| g < a);
            n as u64 * chunk
        };
        let ns = Duration::from_nanos(1);
        let (mut most, mut least) = (0, u64::MAX);
        for &g in grants {
            let starts = [
                Some(g),
                Some(g + ns),
                g.checked_sub(d),
                (g + ns).checked_sub(d),
            ];
            for a in starts.into_iter().flatten() {
                if a >= from && a + d <= to {
                    let n = count(a);
                    most = most.max(n);
                    least = least.min(n);
                }
            }
        }
        assert!(least <= most, "no window inside");
        (most, least)
    }

    /// Over any 2 s of a steady transfer the rate is within 5% of the limit. A request is
    /// indivisible, so where 2 s hold fewer than 10 requests (1 MiB at 1 and 8 Mbit/s: 0.24
    /// and 1.9) no pacing can do that; there the window is 20 requests long instead (168 s and
    /// 21 s). The driver meets the 2 s target at low limits by taking in write pieces.
    #[test]
    fn steady_sender_gets_the_limit() {
        for mbps in [1, 8, 80, 800, 10_000] {
            for chunk in [16 * KIB, MIB] {
                let rate = mbps * MBPS;
                let mut b = TokenBucket::new(rate, chunk, Duration::ZERO);
                let period =
                    Duration::from_nanos((chunk as u128 * 1_000_000_000 / rate as u128) as u64);
                let d = if period * 10 > secs(2) {
                    period * 20
                } else {
                    secs(2)
                };
                // Warm-up: the first burst drains the bucket, then the sender is paced.
                let (from, to) = (d, d * 4);
                let grants = greedy(&mut b, chunk, Duration::ZERO, to);
                let (most, least) = window_extremes(&grants, chunk, d, from, to);
                let expected = rate as f64 * d.as_secs_f64();
                let (hi, lo) = (most as f64 / expected - 1.0, least as f64 / expected - 1.0);
                assert!(
                    hi <= 0.05 && lo >= -0.05,
                    "{mbps} Mbit/s, {chunk} B: {lo:+.4}..{hi:+.4} over {d:?}"
                );
            }
        }
    }

    /// Hours of a steady transfer at a rate that does not divide a second into whole
    /// nanoseconds per request: no drift, the total is exact to within one request.
    #[test]
    fn no_drift_over_hours() {
        for (rate, chunk) in [(3 * MBPS, 16 * KIB), (8 * MBPS, MIB), (7_777_777, 64 * KIB)] {
            let mut b = TokenBucket::new(rate, chunk, Duration::ZERO);
            let hours = secs(8 * 3600);
            let grants = greedy(&mut b, chunk, Duration::ZERO, hours);
            let granted = grants.len() as i128 * i128::from(chunk) * NANOS_PER_SEC;
            let allowed = earned(rate, hours) + b.capacity;
            assert!(granted <= allowed, "{rate}");
            assert!(
                allowed - granted <= i128::from(chunk) * NANOS_PER_SEC,
                "{rate}: {}",
                (allowed - granted) / NANOS_PER_SEC
            );
        }
    }

    #[test]
    fn capacity_is_100ms_or_one_request() {
        assert_eq!(
            TokenBucket::new(80 * MBPS, 16 * KIB, Duration::ZERO).capacity(),
            1_000_000
        );
        assert_eq!(
            TokenBucket::new(MBPS, 16 * KIB, Duration::ZERO).capacity(),
            16 * KIB
        );
        assert_eq!(
            TokenBucket::new(8 * MBPS, MIB, Duration::ZERO).capacity(),
            MIB
        );
        assert_eq!(TokenBucket::new(7, 0, Duration::ZERO).capacity(), 0);
    }

    /// After idleness the largest burst is the capacity, then the rate.
    #[test]
    fn burst_after_idleness_is_the_capacity() {
        for (mbps, chunk) in [(80, 16 * KIB), (1, MIB), (800, MIB), (1, 16 * KIB)] {
            let rate = mbps * MBPS;
            let mut b = TokenBucket::new(rate, chunk, Duration::ZERO);
            greedy(&mut b, chunk, Duration::ZERO, secs(1));
            // Idle for a minute, then send as fast as allowed.
            let start = secs(61);
            let grants = greedy(&mut b, chunk, start, start + secs(5));
            let at_once = grants.iter().filter(|&&t| t == start).count() as u64 * chunk;
            let cap = (rate / 10).max(chunk);
            assert!(
                at_once <= cap && at_once + chunk > cap,
                "{mbps}: {at_once} vs {cap}"
            );
            // Over any interval: at most rate × length + capacity.
            let grants: Vec<_> = grants.into_iter().map(|t| (t, chunk)).collect();
            assert!(max_excess(&grants, &[(Duration::ZERO, rate)]) <= i128::from(cap));
        }
    }

    /// A request larger than the capacity waits for a full bucket, is granted, and its debt
    /// delays the next grant by exactly the excess at the rate.
    #[test]
    fn request_above_capacity_goes_into_debt() {
        let mut b = TokenBucket::new(MBPS, 0, Duration::ZERO);
        assert_eq!(b.capacity(), 12_500);
        b.take(12_500, Duration::ZERO).unwrap();
        // Not full: wait for a full bucket, exactly 100 ms.
        assert_eq!(b.take(MIB, Duration::ZERO), Err(ms(100)));
        assert_eq!(b.take(MIB, ms(99)), Err(ms(1)));
        b.take(MIB, ms(100)).unwrap();
        // Debt MIB - 12_500 bytes, then 1 byte: (1_048_576 - 12_500 + 1) / 125_000 s.
        let wait = Duration::from_nanos((MIB - 12_500 + 1) * 8_000);
        assert_eq!(b.take(1, ms(100)), Err(wait));
        assert_eq!(
            b.take(1, ms(100) + wait - Duration::from_nanos(1)),
            Err(Duration::from_nanos(1))
        );
        b.take(1, ms(100) + wait).unwrap();
    }

    /// Rate changes take effect at once: no burst from tokens earned at a higher rate, and
    /// no stall beyond one request at the new rate.
    #[test]
    fn rate_change_mid_transfer() {
        let chunk = 16 * KIB;
        for (old, new) in [(80, 8), (8, 800), (800, 1), (1, 10_000), (10_000, 80)] {
            let (old, new) = (old * MBPS, new * MBPS);
            let mut b = TokenBucket::new(old, chunk, Duration::ZERO);
            let before = greedy(&mut b, chunk, Duration::ZERO, secs(3));
            let switch = secs(3);
            b.set_rate(new, switch);
            assert_eq!(b.rate(), new);
            let after = greedy(&mut b, chunk, switch, secs(9));
            let first = after[0] - switch;
            let one_request =
                Duration::from_nanos(chunk * 1_000_000_000 / new) + Duration::from_nanos(1);
            assert!(
                first <= one_request,
                "{old}->{new}: first grant after {first:?}"
            );
            // No burst: from the switch on, at most the new rate plus the one request the
            // greedy sender had partly earned.
            for (j, &t) in after.iter().enumerate() {
                let sent = (j as i128 + 1) * i128::from(chunk) * NANOS_PER_SEC;
                assert!(
                    sent <= earned(new, t - switch) + i128::from(chunk) * NANOS_PER_SEC,
                    "{old}->{new} at {t:?}"
                );
            }
            // And the new rate holds over 2 s windows once the change has settled.
            let d = secs(2).max(Duration::from_nanos(chunk * 20 * 1_000_000_000 / new));
            if switch + d * 2 <= secs(9) {
                let (most, least) = window_extremes(&after, chunk, d, switch + secs(1), secs(9));
                let expected = new as f64 * d.as_secs_f64();
                assert!(
                    (most as f64) <= expected * 1.05 && (least as f64) >= expected * 0.95,
                    "{old}->{new}"
                );
            }
            assert!(!before.is_empty());
        }
    }

    /// An idle bucket, full at a high rate, switched to a low rate: the burst is the new
    /// capacity, not the old one.
    #[test]
    fn rate_drop_caps_a_full_bucket() {
        let chunk = 16 * KIB;
        let mut b = TokenBucket::new(800 * MBPS, chunk, Duration::ZERO);
        b.set_rate(8 * MBPS, secs(60));
        assert_eq!(b.capacity(), 100_000);
        let grants = greedy(&mut b, chunk, secs(60), secs(61));
        let at_once = grants.iter().filter(|&&t| t == secs(60)).count() as u64 * chunk;
        assert_eq!(at_once, 100_000 / chunk * chunk);
        // Raising the rate does not create tokens either: they are earned from now on.
        let mut b = TokenBucket::new(8 * MBPS, chunk, Duration::ZERO);
        greedy(&mut b, chunk, Duration::ZERO, secs(1));
        b.set_rate(800 * MBPS, secs(1));
        let grants = greedy(&mut b, chunk, secs(1), secs(2));
        let at_once = grants.iter().filter(|&&t| t == secs(1)).count();
        assert!(at_once <= 1, "{at_once}");
    }

    /// A debt taken at a high rate is repaid at the new rate: at most one request's time.
    #[test]
    fn rate_change_keeps_a_debt() {
        let mut b = TokenBucket::new(80 * MBPS, 0, Duration::ZERO);
        b.take(MIB, Duration::ZERO).unwrap();
        let debt = MIB - 1_000_000;
        b.set_rate(MBPS, Duration::ZERO);
        assert_eq!(
            b.take(1, Duration::ZERO),
            Err(Duration::from_nanos((debt + 1) * 8_000))
        );
    }

    #[test]
    fn unlimited_grants_everything() {
        let mut b = TokenBucket::new(0, 16 * KIB, Duration::ZERO);
        for i in 0..1000 {
            assert_eq!(b.take(u64::MAX, Duration::from_nanos(i)), Ok(()));
        }
        b.refund(5);
        // From unlimited to a limit: a full bucket, then the rate.
        b.set_rate(8 * MBPS, secs(1));
        assert_eq!(b.take(100_000, secs(1)), Ok(()));
        assert!(b.take(1, secs(1)).is_err());
        b.set_rate(0, secs(1));
        assert_eq!(b.take(MIB, secs(1)), Ok(()));
    }

    #[test]
    fn refund_returns_unused_bytes_up_to_the_capacity() {
        let mut b = TokenBucket::new(8 * MBPS, 0, Duration::ZERO);
        b.take(100_000, Duration::ZERO).unwrap();
        b.refund(40_000);
        b.take(40_000, Duration::ZERO).unwrap();
        assert_eq!(b.take(1, Duration::ZERO), Err(Duration::from_nanos(1_000)));
        b.refund(u64::MAX);
        b.take(100_000, Duration::ZERO).unwrap();
        assert!(b.take(1, Duration::ZERO).is_err());
    }

    /// Time going backwards is no time passing: no panic, no tokens, and the wait includes
    /// the way back to the latest time seen.
    #[test]
    fn time_going_backwards() {
        let mut b = TokenBucket::new(8 * MBPS, 0, secs(10));
        b.take(100_000, secs(10)).unwrap();
        assert_eq!(b.take(1_000, secs(5)), Err(secs(5) + ms(1)));
        assert_eq!(b.take(1_000, Duration::ZERO), Err(secs(10) + ms(1)));
        b.set_rate(8 * MBPS, secs(1));
        b.refund(0);
        assert_eq!(b.take(1_000, secs(10)), Err(ms(1)));
        assert_eq!(b.take(1_000, secs(10) + ms(1)), Ok(()));
        // A bucket made "in the future" grants its one full bucket and no more.
        let mut b = TokenBucket::new(8 * MBPS, 0, secs(100));
        assert_eq!(b.take(100_000, Duration::ZERO), Ok(()));
        assert_eq!(
            b.take(1, secs(50)),
            Err(secs(50) + Duration::from_nanos(1_000))
        );
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let mut b = TokenBucket::new(u64::MAX, u64::MAX, Duration::ZERO);
        assert!(b.take(u64::MAX, Duration::MAX).is_ok());
        let _ = b.take(u64::MAX, Duration::MAX);
        b.refund(u64::MAX);
        b.set_rate(1, Duration::MAX);
        // A full bucket grants even u64::MAX bytes, into debt.
        let mut b = TokenBucket::new(1, 0, Duration::ZERO);
        b.take(u64::MAX, Duration::ZERO).unwrap();
        assert!(b.take(1, Duration::ZERO).is_err());
        b.take(u64::MAX, Duration::MAX).unwrap();
        assert_eq!(b.take(u64::MAX, Duration::ZERO), Err(Duration::MAX));
    }

    /// A grant `(time, bytes)` or a rate switch `(time, bytes per second)`.
    type Event = (Duration, u64);

    /// The driver's loop: the window is selected by local wall time, tokens by monotonic
    /// time. Returns grants and the (time, rate) of every switch.
    fn drive(
        rules: &Rules,
        chunk: u64,
        until: Duration,
        wall_minute: impl Fn(Duration) -> u16,
        idle_until: Duration,
    ) -> (Vec<Event>, Vec<Event>) {
        let mut now = Duration::ZERO;
        let mut limit: Limit = rules.limit_at(wall_minute(now));
        let mut b = TokenBucket::new(limit.bucket_rate(), chunk, now);
        let (mut grants, mut switches) = (Vec::new(), vec![(now, b.rate())]);
        while now < until {
            let l = rules.limit_at(wall_minute(now));
            if l != limit {
                limit = l;
                b.set_rate(l.bucket_rate(), now);
                switches.push((now, b.rate()));
            }
            if now < idle_until {
                now += secs(1);
                continue;
            }
            match b.take(chunk, now) {
                Ok(()) => grants.push((now, chunk)),
                // The driver re-checks the window at least once a second.
                Err(wait) => now += wait.min(secs(1)),
            }
        }
        (grants, switches)
    }

    /// The largest excess, over any interval between two grants, of the bytes granted over
    /// what the rates in force allowed, in bytes.
    fn max_excess(grants: &[Event], switches: &[Event]) -> i128 {
        // R(t): nanobytes allowed from 0 to t by the rates in force.
        let allowed = |t: Duration| {
            let mut total = 0;
            for (k, &(from, rate)) in switches.iter().enumerate() {
                let to = switches.get(k + 1).map_or(t, |s| s.0.min(t));
                if to > from {
                    total += earned(rate, to - from);
                }
            }
            total
        };
        let (mut sent, mut lowest, mut worst) = (0i128, i128::MAX, i128::MIN);
        for &(t, n) in grants {
            let r = allowed(t);
            lowest = lowest.min(sent - r);
            sent += i128::from(n) * NANOS_PER_SEC;
            worst = worst.max(sent - r - lowest);
        }
        worst / NANOS_PER_SEC
    }

    /// DST spring forward: local 1:59 is followed by 3:00. The window switches from 800 to
    /// 8 Mbit/s at the jump; the bucket, full at 800 Mbit/s after idleness, releases no more
    /// than the new capacity.
    #[test]
    fn dst_jump_switches_windows_without_a_burst() {
        let rules = Rules::from_shorthand("1:00-2:30=800,2:30-4:00=8").unwrap();
        let chunk = 16 * KIB;
        // Monotonic 0 is 2024-03-31 00:59:00 UTC (local 1:59 CET); at 60 s CEST begins.
        let epoch = 1_711_846_740;
        let wall = |now: Duration| {
            let unix = epoch + now.as_secs() as i64;
            local_minute(unix, if unix < 1_711_846_800 { 3600 } else { 7200 })
        };
        assert_eq!(wall(secs(59)), 119);
        assert_eq!(wall(secs(60)), 180);
        let (grants, switches) = drive(&rules, chunk, secs(70), wall, secs(60));
        assert_eq!(
            switches,
            vec![(Duration::ZERO, 800 * MBPS), (secs(60), 8 * MBPS)]
        );
        let at_once = grants.iter().filter(|g| g.0 == secs(60)).count() as u64 * chunk;
        assert!(at_once <= 100_000, "{at_once}");
        assert!(max_excess(&grants, &switches) <= 100_000);

        // Fall back: local 2:59 CEST is followed by 2:00 CET, from 800 back to 8 Mbit/s.
        let rules = Rules::from_shorthand("2:00-2:30=8,2:30-3:00=800").unwrap();
        let epoch = 1_729_990_740; // 2024-10-27 00:59:00 UTC, local 2:59 CEST
        let wall = |now: Duration| {
            let unix = epoch + now.as_secs() as i64;
            local_minute(unix, if unix < 1_729_990_800 { 7200 } else { 3600 })
        };
        assert_eq!((wall(secs(0)), wall(secs(60))), (179, 120));
        let (grants, switches) = drive(&rules, chunk, secs(70), wall, Duration::ZERO);
        // The switch happens at the driver's first look at the clock from 60 s on.
        assert_eq!(switches.len(), 2);
        assert_eq!((switches[0].1, switches[1].1), (800 * MBPS, 8 * MBPS));
        assert!(switches[1].0 >= secs(60) && switches[1].0 < secs(60) + ms(1));
        assert!(max_excess(&grants, &switches) <= 10_000_000);
        let after: Vec<_> = grants.iter().filter(|g| g.0 >= secs(60)).copied().collect();
        assert!(
            max_excess(&after, &switches[1..]) <= chunk as i128,
            "{}",
            max_excess(&after, &switches[1..])
        );
    }

    /// A wall clock stepped by hours, either way, while the window stays the same changes
    /// nothing: the bucket only sees monotonic time.
    #[test]
    fn wall_clock_jumps_do_not_matter() {
        let rules = Rules::from_shorthand("0:00-24:00=8").unwrap();
        let steady = |_| 600;
        let jumpy =
            |now: Duration| local_minute(now.as_secs() as i64 * 3600 - 7 * 86_400, -12 * 3600);
        let a = drive(&rules, 16 * KIB, secs(20), steady, secs(3));
        let b = drive(&rules, 16 * KIB, secs(20), jumpy, secs(3));
        assert_eq!(a, b);
        assert!(max_excess(&a.0, &a.1) <= 100_000);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Move the clock (possibly backwards) by this many microseconds, then take.
        Take(i64, u64),
        Refund(u64),
        SetRate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (-50_000i64..500_000, 1u64..3_000_000).prop_map(|(dt, n)| Op::Take(dt, n)),
            1 => (0u64..100_000).prop_map(Op::Refund),
            1 => (1u64..200_000_000).prop_map(Op::SetRate),
        ]
    }

    proptest! {
        /// Never more than rate × elapsed + capacity + n over any interval, whatever the
        /// requests, refunds and clock (which may go backwards: elapsed is monotonic time).
        #[test]
        fn never_grants_more_than_allowed(
            rate in 1u64..200_000_000,
            min_burst in 0u64..2_000_000,
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let mut b = TokenBucket::new(rate, min_burst, Duration::ZERO);
            let mut now = Duration::ZERO;
            let mut latest = Duration::ZERO;
            let mut grants = Vec::new();
            let mut switches = vec![(Duration::ZERO, rate)];
            let (mut max_cap, mut max_n) = (b.capacity(), 0);
            for op in ops {
                match op {
                    Op::Take(dt, n) => {
                        let step = Duration::from_micros(dt.unsigned_abs());
                        now = if dt >= 0 { now + step } else { now.saturating_sub(step) };
                        latest = latest.max(now);
                        if b.take(n, now).is_ok() {
                            grants.push((latest, n));
                            max_n = max_n.max(n);
                        }
                    }
                    // A refund gives back bytes granted and not sent.
                    Op::Refund(n) => {
                        let n = n.min(grants.last().map_or(0, |g| g.1));
                        b.refund(n);
                        if let Some(g) = grants.last_mut() { g.1 -= n; }
                    }
                    Op::SetRate(r) => {
                        b.set_rate(r, now);
                        switches.push((latest, r));
                        max_cap = max_cap.max(b.capacity());
                    }
                }
            }
            let excess = max_excess(&grants, &switches);
            prop_assert!(excess <= i128::from(max_cap + max_n), "{excess} > {max_cap} + {max_n}");
        }

        /// The wait returned is exact: granted after it, refused a nanosecond before.
        #[test]
        fn wait_is_exact(
            rate in 1u64..2_000_000_000,
            min_burst in 0u64..2_000_000,
            first in 0u64..4_000_000,
            n in 1u64..4_000_000,
            dt in 0u64..1_000_000,
        ) {
            let mut b = TokenBucket::new(rate, min_burst, Duration::ZERO);
            let _ = b.take(first, Duration::ZERO);
            let now = Duration::from_nanos(dt);
            if let Err(wait) = b.take(n, now) {
                let mut early = b.clone();
                prop_assert!(early.take(n, now + wait - Duration::from_nanos(1)).is_err());
                prop_assert!(b.take(n, now + wait).is_ok());
            }
        }
    }
}
