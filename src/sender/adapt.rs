//! Compression that pays: per chunk, whether to try lz4.
//!
//! lz4 costs about 2-3 ms of a core per MiB of real files and saves half of it or more on the
//! wire. That pays on a link slower than the encoders (a WAN, a rate limit), and costs
//! throughput where the link is faster than they are (a LAN, loopback, a CPU shared with
//! other work). So the encoders try lz4 on a share `p` of the chunks, set from what is
//! measured while the transfer runs:
//!
//! - `c_z` and `c_h`, the encoders' seconds per raw byte with and without lz4 (wall time of
//!   each encode, so a CPU shared with other work shows as a slower encoder);
//! - `r`, the recent ratio of compressed to raw bytes;
//! - `L`, the link's rate: wire bytes per second of time the sending loop spent writing them
//!   (socket, TLS, rate limit included; time waiting for chunks excluded).
//!
//! With `E` encoders, they deliver `E / (p c_z + (1 - p) c_h)` raw bytes per second and the
//! link carries `L / (p r + 1 - p)`; the best share is where the two meet,
//! `p = (E - L c_h) / (E (1 - r) + L (c_z - c_h))`, all compression when the encoders keep up
//! with the link anyway, none when even uncompressed chunks saturate the link. It is kept in
//! eighths of the chunks, spread evenly, and recomputed every [`WINDOW`].
//!
//! Apart from that, data that does not compress (recent chunks saved under 3%: media,
//! encrypted or already compressed files) is tried only one chunk in 16, to notice when it
//! starts compressing again.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// How often the share is recomputed, and the least writing time that counts as a sample.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// The share's unit: eighths of the chunks.
const SLOTS: u32 = 8;
/// A ratio (compressed / raw, in 1/1024) at or above which data counts as incompressible.
const INCOMPRESSIBLE: u32 = 993;
/// How often incompressible data is still tried.
const PROBE_EVERY: u64 = 16;
/// Encoding costs before any is measured, picoseconds per byte: lz4 on real files about
/// 0.4 GB/s, blake3 alone about 4 GB/s.
const GUESS_LZ4: u64 = 2500;
const GUESS_HASH: u64 = 250;

/// How the sender compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Try lz4 where it pays, from the measured speeds of the link and the encoders (the
    /// default).
    #[default]
    Auto,
    /// Try lz4 on every chunk that is not all zeros.
    Always,
    /// Never compress (zero chunks are still sent as such).
    Never,
}

/// An average of recent samples, shared between threads (racing updates lose a sample).
#[derive(Debug)]
struct Average(AtomicU64);

impl Average {
    fn new(v: u64) -> Self {
        Self(AtomicU64::new(v))
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Over about the last 8 samples.
    fn add(&self, sample: u64) {
        let old = self.0.load(Relaxed);
        self.0.store((old * 7 + sample) / 8, Relaxed);
    }
}

/// The encoders' shared decision, set by the sending loop.
#[derive(Debug)]
pub(crate) struct Adaptive {
    mode: Compression,
    encoders: usize,
    /// Eighths of the chunks lz4 is tried on, 0..=SLOTS.
    level: AtomicU32,
    /// Chunks decided, for spreading the level evenly.
    decided: AtomicU64,
    /// Recent ratio of compressed to raw bytes, in 1/1024, over chunks tried.
    ratio: Average,
    /// Encoding costs, picoseconds per raw byte: with lz4, and without.
    cost_lz4: Average,
    cost_hash: Average,
    /// Chunks tried and skipped, for the summary.
    pub tried: AtomicU64,
    pub skipped: AtomicU64,
}

impl Adaptive {
    pub fn new(mode: Compression, encoders: usize) -> Self {
        Self {
            mode,
            encoders: encoders.max(1),
            level: AtomicU32::new(SLOTS),
            decided: AtomicU64::new(0),
            ratio: Average::new(512),
            cost_lz4: Average::new(GUESS_LZ4),
            cost_hash: Average::new(GUESS_HASH),
            tried: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether to try lz4 on the next chunk.
    pub fn try_next(&self) -> bool {
        let n = self.decided.fetch_add(1, Relaxed);
        let level = u64::from(self.level.load(Relaxed));
        let yes = match self.mode {
            Compression::Always => true,
            Compression::Never => false,
            Compression::Auto if self.ratio.get() >= u64::from(INCOMPRESSIBLE) => {
                n.is_multiple_of(PROBE_EVERY)
            }
            // Spread: `level` of every SLOTS consecutive chunks.
            Compression::Auto => (n * level) % u64::from(SLOTS) < level,
        };
        let counter = if yes { &self.tried } else { &self.skipped };
        counter.fetch_add(1, Relaxed);
        yes
    }

    /// After encoding a chunk (not all zeros) of `raw` bytes in `took`: with lz4, to
    /// `compressed` bytes (`raw` when it did not shrink), or without (`None`).
    pub fn encoded(&self, raw: usize, compressed: Option<usize>, took: Duration) {
        if raw == 0 {
            return;
        }
        let cost = (took.as_nanos() * 1000 / raw as u128).min(u128::from(u32::MAX)) as u64;
        match compressed {
            Some(c) => {
                self.ratio.add((c.min(raw) * 1024 / raw) as u64);
                self.cost_lz4.add(cost);
            }
            None => self.cost_hash.add(cost),
        }
    }

    /// Sets the share from the link's measured rate, `wire` bytes written in `writing`.
    pub fn link(&self, wire: u64, writing: Duration) {
        if self.mode != Compression::Auto || writing.is_zero() {
            return;
        }
        let link = wire as f64 / writing.as_secs_f64();
        let p = best_share(
            self.encoders as f64,
            self.cost_lz4.get() as f64 * 1e-12,
            self.cost_hash.get() as f64 * 1e-12,
            self.ratio.get() as f64 / 1024.0,
            link,
        );
        tracing::trace!(
            link_mb_s = link / 1e6,
            lz4_mb_s = 1e6 / self.cost_lz4.get() as f64,
            hash_mb_s = 1e6 / self.cost_hash.get() as f64,
            ratio = self.ratio.get() as f64 / 1024.0,
            share = p,
            "compression"
        );
        self.level
            .store((p * f64::from(SLOTS)).round() as u32, Relaxed);
    }

    #[cfg(test)]
    fn level(&self) -> u32 {
        self.level.load(Relaxed)
    }
}

/// The share of chunks to compress (0..=1) where `encoders` encoders costing `c_z` (lz4) or
/// `c_h` (hash only) seconds per byte and a link of `link` bytes per second, with lz4
/// shrinking data to `ratio`, deliver the most; see the module's doc.
fn best_share(encoders: f64, c_z: f64, c_h: f64, ratio: f64, link: f64) -> f64 {
    let saved = 1.0 - ratio;
    let extra = (c_z - c_h).max(0.0);
    if saved <= 0.0 {
        return 0.0;
    }
    if extra == 0.0 {
        return 1.0;
    }
    let over = encoders * saved + link * extra;
    ((encoders - link * c_h) / over).clamp(0.0, 1.0)
}

/// What the sending loop measures of the link: wire bytes and the time spent writing them.
#[derive(Debug, Default)]
pub(crate) struct LinkMeter {
    wire: u64,
    writing: Duration,
}

impl LinkMeter {
    /// Notes `wire` bytes written in `took`; every [`WINDOW`] of writing, updates the share.
    pub fn wrote(&mut self, adaptive: &Adaptive, wire: u64, took: Duration) {
        self.wire += wire;
        self.writing += took;
        if self.writing >= WINDOW {
            adaptive.link(self.wire, self.writing);
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(a: &Adaptive, n: usize) -> usize {
        (0..n).filter(|_| a.try_next()).count()
    }

    const GB: f64 = 1e9;

    #[test]
    fn the_share_balances_encoders_and_link() {
        // Two encoders, lz4 at 0.4 GB/s and hashing at 4 GB/s each, halving the data.
        let best = |link| best_share(2.0, 1.0 / (0.4 * GB), 1.0 / (4.0 * GB), 0.5, link);
        // A WAN: compress everything (the encoders deliver 0.8 GB/s, far above the link).
        assert_eq!(best(0.05 * GB), 1.0);
        assert_eq!(best(0.4 * GB), 1.0);
        // A link faster than compression: part of it, where both deliver the same.
        let p = best(1.2 * GB);
        assert!(p > 0.0 && p < 1.0, "{p}");
        let enc = 2.0 / (p / (0.4 * GB) + (1.0 - p) / (4.0 * GB));
        let link = 1.2 * GB / (p * 0.5 + 1.0 - p);
        assert!((enc - link).abs() / link < 1e-9, "{enc} {link}");
        // A link faster than even hashing alone: no compression.
        assert_eq!(best(10.0 * GB), 0.0);
        // Data that does not shrink: never worth it; compression that costs nothing: always.
        assert_eq!(best_share(2.0, 1e-9, 1e-10, 1.0, 0.01 * GB), 0.0);
        assert_eq!(best_share(2.0, 1e-10, 1e-10, 0.5, 10.0 * GB), 1.0);
    }

    #[test]
    fn the_level_follows_the_measurements() {
        let a = Adaptive::new(Compression::Auto, 2);
        assert_eq!(share(&a, 64), 64, "starts compressing everything");
        // Encoders measured at 0.4 GB/s with lz4 (halving), 4 GB/s without.
        for _ in 0..32 {
            a.encoded(1 << 20, Some(1 << 19), Duration::from_micros(2621));
            a.encoded(1 << 20, None, Duration::from_micros(262));
        }
        let mut meter = LinkMeter::default();
        // A fast link: 1.2 GB/s.
        for _ in 0..20 {
            meter.wrote(&a, 12_000_000, Duration::from_millis(10));
        }
        let level = a.level();
        assert!(level > 0 && level < SLOTS, "{level}");
        assert_eq!(share(&a, 64), 8 * level as usize, "spread evenly");
        // A slow one: 100 MB/s.
        for _ in 0..20 {
            meter.wrote(&a, 1_000_000, Duration::from_millis(10));
        }
        assert_eq!(a.level(), SLOTS);
        // Less than a window of writing changes nothing yet.
        meter.wrote(&a, 1_000_000_000, Duration::from_millis(50));
        assert_eq!(a.level(), SLOTS);
    }

    #[test]
    fn incompressible_data_is_only_probed() {
        let a = Adaptive::new(Compression::Auto, 2);
        for _ in 0..40 {
            a.encoded(1 << 20, Some(1 << 20), Duration::from_millis(1));
        }
        assert_eq!(share(&a, 160), 10, "one chunk in 16");
        // It starts compressing again: back to the level.
        for _ in 0..40 {
            a.encoded(1 << 20, Some(300_000), Duration::from_millis(1));
        }
        assert_eq!(share(&a, 64), 64);
    }

    #[test]
    fn fixed_modes_ignore_what_they_see() {
        let always = Adaptive::new(Compression::Always, 2);
        let never = Adaptive::new(Compression::Never, 2);
        for a in [&always, &never] {
            for _ in 0..20 {
                a.encoded(1 << 20, Some(1 << 20), Duration::from_millis(3));
                a.link(10_000_000_000, Duration::from_secs(1));
            }
        }
        assert_eq!(share(&always, 50), 50);
        assert_eq!(share(&never, 50), 0);
        assert_eq!(always.tried.load(Relaxed), 50);
        assert_eq!(never.skipped.load(Relaxed), 50);
    }
}
