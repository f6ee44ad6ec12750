//! Rate limits on the socket: the task's speed rules, one token bucket shared by every stream
//! of a task, and the over-speed monitor, around `blockrep-rate` (which has no clock).
//!
//! Windows are chosen by local wall time (checked at most once a second, so a new rule or a
//! window boundary applies within a second); tokens are refilled by the monotonic clock, so a
//! wall-clock jump or a DST change switches windows and never releases a burst.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use blockrep_rate::{Limit, OverSpeed, OverSpeedMonitor, Rules, TokenBucket};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often the wall clock is consulted for the window in force.
const WINDOW_CHECK: Duration = Duration::from_secs(1);
/// Largest single write: TLS records are 16 KiB, so a piece is at most a few records.
const MAX_PIECE: u64 = 64 << 10;
/// Smallest single write when limited.
const MIN_PIECE: u64 = 1 << 10;

/// The local minute of the day, 0..1440.
fn local_minute() -> u16 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    (now.hour() * 60 + now.minute()) as u16
}

struct State {
    rules: Rules,
    limit: Limit,
    bucket: Option<TokenBucket>,
    monitor: OverSpeedMonitor,
    checked: Duration,
    over: Option<OverSpeed>,
}

/// A task's rate limit and over-speed protection, shared by all its connections.
pub struct Throttle {
    /// Monotonic time since the throttle was made.
    clock: Box<dyn Fn() -> Duration + Send + Sync>,
    minute: Box<dyn Fn() -> u16 + Send + Sync>,
    state: Mutex<State>,
    /// Bytes written to the sockets, whatever the limit.
    written: Arc<AtomicU64>,
}

impl Throttle {
    /// A throttle applying `rules` by local time.
    pub fn new(rules: Rules) -> Arc<Self> {
        let origin = Instant::now();
        Self::with_clocks(
            rules,
            Box::new(move || origin.elapsed()),
            Box::new(local_minute),
        )
    }

    /// A throttle with its monotonic clock and its "local minute of the day" given (tests).
    pub fn with_clocks(
        rules: Rules,
        clock: Box<dyn Fn() -> Duration + Send + Sync>,
        minute: Box<dyn Fn() -> u16 + Send + Sync>,
    ) -> Arc<Self> {
        let limit = rules.limit_at(minute());
        let state = State {
            rules,
            limit,
            bucket: None,
            monitor: OverSpeedMonitor::new(Duration::ZERO),
            checked: Duration::ZERO,
            over: None,
        };
        let t = Arc::new(Self {
            clock,
            minute,
            state: Mutex::new(state),
            written: Arc::default(),
        });
        t.apply(t.now(), true);
        t
    }

    fn now(&self) -> Duration {
        (self.clock)()
    }

    /// Re-reads the window in force; `force` also resets the monitor (a new rule set).
    fn apply(&self, now: Duration, force: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let limit = s.rules.limit_at((self.minute)());
        s.checked = now;
        if limit == s.limit && !force {
            return;
        }
        s.limit = limit;
        match limit.bytes_per_sec {
            None => s.bucket = None,
            Some(rate) => {
                let piece = piece_for(rate);
                match &mut s.bucket {
                    Some(b) => b.set_rate(rate, now),
                    None => s.bucket = Some(TokenBucket::new(rate, piece, now)),
                }
            }
        }
        // The new limit is judged on new traffic only.
        s.monitor.reset(now);
        s.over = None;
    }

    /// New rules, in force from now on (a live rule change).
    pub fn set_rules(&self, rules: Rules) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).rules = rules;
        self.apply(self.now(), true);
    }

    /// The limit in force.
    pub fn limit(&self) -> Limit {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).limit
    }

    /// The over-speed evidence, once the protection has tripped.
    pub fn over_speed(&self) -> Option<OverSpeed> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).over
    }

    /// Bytes written to the sockets so far.
    pub fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// Measured socket rate over the last 5 s, bytes/s.
    pub fn measured_rate(&self) -> f64 {
        let now = self.now();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .monitor
            .rate(now)
    }

    /// Permission to write up to `want` bytes now: how many, or how long to wait.
    fn grant(&self, want: usize) -> Result<usize, Duration> {
        let now = self.now();
        let stale = {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            now.saturating_sub(s.checked) >= WINDOW_CHECK
        };
        if stale {
            self.apply(now, false);
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut s.bucket {
            None => Ok(want),
            Some(bucket) => {
                let n = (want as u64).min(piece_for(bucket.rate())).max(1);
                bucket.take(n, now).map(|()| n as usize)
            }
        }
    }

    /// After a write of `written` of `granted` bytes.
    fn wrote(&self, granted: usize, written: usize) {
        let now = self.now();
        self.written.fetch_add(written as u64, Relaxed);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = &mut s.bucket {
            b.refund(granted.saturating_sub(written) as u64);
        }
        s.monitor.record(written as u64, now);
        if s.over.is_none() {
            let limit = s.limit;
            s.over = s.monitor.check(limit, now);
        }
    }
}

/// Bytes per write piece at `rate`: about 10 ms of traffic, within bounds.
fn piece_for(rate: u64) -> u64 {
    (rate / 100).clamp(MIN_PIECE, MAX_PIECE)
}

/// A socket whose writes obey a [`Throttle`] and are measured by it. Below TLS, so what is
/// limited and measured is what really goes on the wire.
pub struct Paced<S> {
    inner: S,
    throttle: Arc<Throttle>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes granted by the bucket and not yet written (a write that returned Pending).
    granted: usize,
}

impl<S> Paced<S> {
    /// `inner`, with its writes paced by `throttle`.
    pub fn new(inner: S, throttle: Arc<Throttle>) -> Self {
        Self {
            inner,
            throttle,
            sleep: None,
            granted: 0,
        }
    }

    /// The socket inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        while this.granted == 0 {
            if let Some(sleep) = &mut this.sleep {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.throttle.grant(buf.len()) {
                Ok(n) => this.granted = n,
                Err(wait) => this.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        let n = this.granted.min(buf.len());
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..n]));
        let granted = std::mem::take(&mut this.granted);
        match written {
            Ok(w) => {
                this.throttle.wrote(granted, w);
                Poll::Ready(Ok(w))
            }
            Err(e) => {
                this.throttle.wrote(granted, 0);
                Poll::Ready(Err(e))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A clock the test moves by hand.
    fn fake() -> (Arc<AtomicU64>, Box<dyn Fn() -> Duration + Send + Sync>) {
        let nanos = Arc::new(AtomicU64::new(0));
        let n = nanos.clone();
        (
            nanos,
            Box::new(move || Duration::from_nanos(n.load(Relaxed))),
        )
    }

    fn rules(text: &str, threshold: Option<f64>) -> Rules {
        Rules::parse(text).unwrap().with_defaults(0, threshold)
    }

    #[test]
    fn traffic_the_bucket_did_not_pace_trips_the_protection() {
        let (nanos, clock) = fake();
        let t = Throttle::with_clocks(rules("00:00-23:59=8", Some(10.0)), clock, Box::new(|| 600));
        // 2 MB/s for 6 s against a 1 MB/s limit, written without asking the bucket.
        for step in 0..600u64 {
            nanos.store(step * 10_000_000, Relaxed);
            t.wrote(20_000, 20_000);
            if step < 500 {
                assert!(
                    t.over_speed().is_none(),
                    "judged before 5 s of traffic (step {step})"
                );
            }
        }
        let o = t
            .over_speed()
            .expect("over speed after 5 s at twice the limit");
        assert_eq!(o.limit_bytes_per_sec, 1_000_000);
        assert!(o.measured_bytes_per_sec > 1.9e6, "{o:?}");
    }

    #[test]
    fn paced_traffic_within_the_threshold_is_fine() {
        let (nanos, clock) = fake();
        let t = Throttle::with_clocks(rules("00:00-23:59=8", Some(10.0)), clock, Box::new(|| 600));
        let mut now = 0u64;
        let mut sent = 0u64;
        while now < 8_000_000_000 {
            nanos.store(now, Relaxed);
            match t.grant(16 << 10) {
                Ok(n) => {
                    t.wrote(n, n);
                    sent += n as u64;
                }
                Err(wait) => now += wait.as_nanos() as u64,
            }
        }
        assert!(t.over_speed().is_none());
        let rate = sent as f64 / 8.0;
        assert!(
            (rate - 1e6).abs() / 1e6 < 0.05,
            "{rate} bytes/s against 1e6"
        );
    }

    #[test]
    fn windows_follow_the_wall_clock_and_apply_within_a_second() {
        let (nanos, clock) = fake();
        let minute = Arc::new(AtomicU64::new(7 * 60 + 59));
        let m = minute.clone();
        let t = Throttle::with_clocks(
            rules("00:00-08:00=8,08:00-23:59=80", None),
            clock,
            Box::new(move || m.load(Relaxed) as u16),
        );
        assert_eq!(t.limit().bytes_per_sec, Some(1_000_000));
        minute.store(8 * 60, Relaxed);
        nanos.store(500_000_000, Relaxed);
        let _ = t.grant(1000);
        assert_eq!(
            t.limit().bytes_per_sec,
            Some(1_000_000),
            "checked at most once a second"
        );
        nanos.store(1_000_000_000, Relaxed);
        let _ = t.grant(1000);
        assert_eq!(
            t.limit().bytes_per_sec,
            Some(10_000_000),
            "the 08:00 window applies"
        );
        // A rule change applies at once.
        t.set_rules(rules("00:00-23:59=0", None));
        assert_eq!(t.limit().bytes_per_sec, None);
        assert_eq!(
            t.grant(1 << 20),
            Ok(1 << 20),
            "unlimited grants whole writes"
        );
    }
}
