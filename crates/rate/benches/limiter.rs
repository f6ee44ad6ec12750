//! The limiter's hot path: per write, one `take` on the bucket and one `record` on the
//! over-speed monitor; per clock check, one `limit_at`. These run on the reactor thread, so
//! they must cost next to nothing against the write they pace.
//!
//! `cargo bench -p blockrep-rate --bench limiter`; a few seconds.

use std::hint::black_box;
use std::time::Duration;

use blockrep_rate::{OverSpeedMonitor, Rules, TokenBucket};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const WRITE: u64 = 16 * 1024;
/// 800 Mbit/s in bytes per second.
const RATE: u64 = 100_000_000;

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_16KiB");
    group.throughput(Throughput::Bytes(WRITE));
    // A steady sender: the clock moves exactly one write's worth of time, so every take is
    // granted.
    let step = Duration::from_nanos(WRITE * 1_000_000_000 / RATE);
    group.bench_function("take_record", |b| {
        let mut bucket = TokenBucket::new(RATE, WRITE, Duration::ZERO);
        let mut monitor = OverSpeedMonitor::new(Duration::ZERO);
        let mut now = Duration::ZERO;
        b.iter(|| {
            now += step;
            if bucket.take(black_box(WRITE), now).is_ok() {
                monitor.record(WRITE, now);
            }
        })
    });
    // A sender ahead of its limit: every take is refused and computes the wait.
    group.bench_function("take_refused", |b| {
        let mut bucket = TokenBucket::new(RATE, WRITE, Duration::ZERO);
        while bucket.take(WRITE, Duration::ZERO).is_ok() {}
        b.iter(|| black_box(bucket.take(black_box(WRITE), Duration::ZERO)))
    });
    group.finish();
}

fn limit_at(c: &mut Criterion) {
    let mut group = c.benchmark_group("limit_at");
    group.throughput(Throughput::Elements(1440));
    let service = Rules::parse("0:00-8:00=20,8:00-15:00=50,15:00-23:59=25").unwrap();
    // 48 half-hour windows: a busy schedule.
    let busy: Vec<String> = (0..48)
        .map(|i| {
            format!(
                "{}:{:02}-{}:{:02}={}",
                i / 2,
                i % 2 * 30,
                (i + 1) / 2,
                (i + 1) % 2 * 30,
                i + 1
            )
        })
        .collect();
    let busy = Rules::parse(&busy.join(","))
        .unwrap()
        .with_defaults(5, Some(10.0));
    for (name, rules) in [
        ("3_rules_per_minute", &service),
        ("48_rules_per_minute", &busy),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for minute in 0..1440 {
                    black_box(rules.limit_at(black_box(minute)));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path, limit_at);
criterion_main!(benches);
