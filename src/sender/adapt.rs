//! Compression that pays: per chunk, whether to try lz4.
//!
//! lz4 costs about 2-3 ms of a core per MiB of real files and saves half of it or more on the
//! wire. That pays on a link slower than the encoders, and costs throughput on a link faster
//! than they are (a LAN, loopback), or on data that does not compress. So the encoders try
//! lz4 on a share of the chunks (the *level*, in eighths), which the sending loop adjusts
//! from what it sees between the stages every [`WINDOW`] chunks:
//!
//! - the encoded queue mostly full: the link (or a rate limit) is the bottleneck, and the
//!   encoders have time to spare: compress more;
//! - the encoded queue mostly empty while chunks wait for encoders: the encoders are the
//!   bottleneck: compress less;
//! - both queues mostly empty: reading is the bottleneck, and compressing is free: compress
//!   more.
//!
//! Apart from that, data that does not compress (recent chunks saved under 3%: media,
//! encrypted or already compressed files) is tried only one chunk in 16, to notice when it
//! starts compressing again.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Chunks per level decision.
pub(crate) const WINDOW: u32 = 32;
/// The level's unit: eighths of the chunks.
const SLOTS: u32 = 8;
/// A ratio (compressed / raw, in 1/1024) at or above which data counts as incompressible.
const INCOMPRESSIBLE: u32 = 993;
/// How often incompressible data is still tried.
const PROBE_EVERY: u64 = 16;

/// How the sender compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Try lz4 where it pays, adapting to the link and the data (the default).
    #[default]
    Auto,
    /// Try lz4 on every chunk that is not all zeros.
    Always,
    /// Never compress (zero chunks are still sent as such).
    Never,
}

/// The encoders' shared decision, adjusted by the sending loop.
#[derive(Debug)]
pub(crate) struct Adaptive {
    mode: Compression,
    /// Eighths of the chunks lz4 is tried on, 0..=SLOTS.
    level: AtomicU32,
    /// Chunks decided, for spreading the level evenly.
    decided: AtomicU64,
    /// Recent ratio of compressed to raw bytes, in 1/1024, over chunks tried.
    ratio: AtomicU32,
    /// Chunks tried and skipped, for the summary.
    pub tried: AtomicU64,
    pub skipped: AtomicU64,
}

impl Adaptive {
    pub fn new(mode: Compression) -> Self {
        Self {
            mode,
            level: AtomicU32::new(SLOTS),
            decided: AtomicU64::new(0),
            ratio: AtomicU32::new(512),
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
            Compression::Auto if self.ratio.load(Relaxed) >= INCOMPRESSIBLE => {
                n.is_multiple_of(PROBE_EVERY)
            }
            // Spread: `level` of every SLOTS consecutive chunks.
            Compression::Auto => (n * level) % u64::from(SLOTS) < level,
        };
        let counter = if yes { &self.tried } else { &self.skipped };
        counter.fetch_add(1, Relaxed);
        yes
    }

    /// After trying lz4 on a chunk of `raw` bytes that came to `compressed` bytes (`raw`
    /// when it did not shrink).
    pub fn tried(&self, raw: usize, compressed: usize) {
        if raw == 0 {
            return;
        }
        let r = (compressed.min(raw) * 1024 / raw) as u32;
        // An average over about the last 8 chunks tried; racing updates lose one sample.
        let old = self.ratio.load(Relaxed);
        self.ratio.store((old * 7 + r) / 8, Relaxed);
    }

    /// Adjusts the level from a window of observations (see the module's doc).
    pub fn observe(&self, w: &Pressure) {
        if self.mode != Compression::Auto || w.chunks == 0 {
            return;
        }
        let level = self.level.load(Relaxed);
        let next = match w.verdict() {
            Bottleneck::Link | Bottleneck::Reading => (level + 1).min(SLOTS),
            Bottleneck::Encoders => level.saturating_sub(1),
            Bottleneck::Unclear => level,
        };
        self.level.store(next, Relaxed);
    }

    #[cfg(test)]
    fn level(&self) -> u32 {
        self.level.load(Relaxed)
    }
}

/// What the sending loop saw over a window of chunks: how full the queues between the stages
/// were when it took each chunk.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pressure {
    pub chunks: u32,
    /// Chunks taken with the encoded queue at least half full.
    pub encoded_full: u32,
    /// Chunks taken with the encoded queue empty.
    pub encoded_empty: u32,
    /// Chunks taken with at least one read chunk waiting for an encoder.
    pub jobs_waiting: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Bottleneck {
    Link,
    Encoders,
    Reading,
    Unclear,
}

impl Pressure {
    /// Notes one chunk taken, with the queues' fill then.
    pub fn note(&mut self, encoded: usize, encoded_capacity: usize, jobs: usize) {
        self.chunks += 1;
        if encoded * 2 >= encoded_capacity {
            self.encoded_full += 1;
        }
        if encoded == 0 {
            self.encoded_empty += 1;
        }
        if jobs > 0 {
            self.jobs_waiting += 1;
        }
    }

    fn verdict(&self) -> Bottleneck {
        let most = |n: u32| n * 2 > self.chunks;
        if most(self.encoded_full) {
            Bottleneck::Link
        } else if most(self.encoded_empty) && most(self.jobs_waiting) {
            Bottleneck::Encoders
        } else if most(self.encoded_empty) {
            Bottleneck::Reading
        } else {
            Bottleneck::Unclear
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(encoded: usize, jobs: usize) -> Pressure {
        let mut p = Pressure::default();
        for _ in 0..WINDOW {
            p.note(encoded, 8, jobs);
        }
        p
    }

    fn share(a: &Adaptive, n: usize) -> usize {
        (0..n).filter(|_| a.try_next()).count()
    }

    #[test]
    fn the_level_follows_the_bottleneck() {
        let a = Adaptive::new(Compression::Auto);
        assert_eq!(share(&a, 64), 64, "starts compressing everything");
        // Encoders behind a fast link: down a step per window, to nothing.
        for expected in (0..SLOTS).rev() {
            a.observe(&window(0, 4));
            assert_eq!(a.level(), expected);
        }
        a.observe(&window(0, 4));
        assert_eq!(a.level(), 0);
        assert_eq!(share(&a, 64), 0);
        // The link backs up: up again.
        a.observe(&window(6, 4));
        assert_eq!(a.level(), 1);
        assert_eq!(share(&a, 64), 8, "one in eight, spread evenly");
        // Reading is the bottleneck: compression is free.
        a.observe(&window(0, 0));
        assert_eq!(a.level(), 2);
        assert_eq!(share(&a, 64), 16);
        // In between: no change.
        a.observe(&window(2, 4));
        assert_eq!(a.level(), 2);
        for _ in 0..20 {
            a.observe(&window(8, 8));
        }
        assert_eq!(a.level(), SLOTS);
    }

    #[test]
    fn incompressible_data_is_only_probed() {
        let a = Adaptive::new(Compression::Auto);
        for _ in 0..40 {
            a.tried(1 << 20, 1 << 20);
        }
        assert_eq!(share(&a, 160), 10, "one chunk in 16");
        // It starts compressing again: back to the level.
        for _ in 0..40 {
            a.tried(1 << 20, 300_000);
        }
        assert_eq!(share(&a, 64), 64);
    }

    #[test]
    fn fixed_modes_ignore_what_they_see() {
        let always = Adaptive::new(Compression::Always);
        let never = Adaptive::new(Compression::Never);
        for a in [&always, &never] {
            for _ in 0..20 {
                a.observe(&window(0, 4));
                a.tried(1 << 20, 1 << 20);
            }
        }
        assert_eq!(share(&always, 50), 50);
        assert_eq!(share(&never, 50), 0);
        assert_eq!(always.tried.load(Relaxed), 50);
        assert_eq!(never.skipped.load(Relaxed), 50);
    }
}
