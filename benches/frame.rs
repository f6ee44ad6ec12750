//! Throughput of the wire format: encoding and decoding DATA frames with 64 KiB and 1 MiB
//! payloads, and the small control frames (ACK, a HELLO announcing 4 disks).
//!
//! Decoding a DATA frame does not copy its payload (it becomes a view of the read buffer), so
//! its figure is the cost of the header checks, not of moving bytes. Encoding copies the
//! payload into the output buffer, as `Frame::encode` does.
//!
//! `cargo bench --bench frame`; about a minute.

use std::hint::black_box;
use std::time::Duration;

use blockrep_proto::{decode, Ack, Data, DiskAnnounce, Encoding, Frame, Hello};
use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

const SIZES: [(usize, &str); 2] = [(64 << 10, "64KiB"), (1 << 20, "1MiB")];

/// A raw chunk of `len` bytes of deterministic noise (xorshift64*).
fn data(len: usize) -> Frame {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut payload = Vec::with_capacity(len + 8);
    while payload.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        payload.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    payload.truncate(len);
    Frame::Data(Data {
        disk: 1,
        encoding: Encoding::Raw,
        offset: 37 << 30,
        raw_len: len as u32,
        digest: [0x5a; 32],
        payload: Bytes::from(payload),
    })
}

fn ack() -> Frame {
    Frame::Ack(Ack {
        frames: 1_234_567,
        bytes: 1_234_567 << 20,
    })
}

fn hello() -> Frame {
    Frame::Hello(Hello {
        version_min: 1,
        version_max: 1,
        session_id: "migrate-block-7f3c9a2e-41d8-4b6a-9c1e-2d5f8e0b6a13".into(),
        agent_version: "blockrep 0.1.0 (x86_64-unknown-linux-gnu)".into(),
        disks: ["sda", "sdb", "nvme0n1", "nvme1n1"]
            .iter()
            .enumerate()
            .map(|(i, id)| DiskAnnounce {
                id: (*id).into(),
                size: (100 << 30) * (i as u64 + 1),
                block_size: 1 << 20,
            })
            .collect(),
        verify: false,
        join: false,
        netcheck: false,
    })
}

/// Every frame benchmarked, with its name and size label.
fn frames() -> Vec<(&'static str, &'static str, Frame)> {
    let mut out: Vec<_> = SIZES
        .iter()
        .map(|&(len, size)| ("data", size, data(len)))
        .collect();
    out.push(("ack", "16B", ack()));
    out.push(("hello", "4disks", hello()));
    out
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

fn bench_encode(c: &mut Criterion) {
    let mut group = configure(c, "frame_encode");
    for (name, size, frame) in frames() {
        group.throughput(Throughput::Bytes(frame.encoded_len() as u64));
        let mut buf = BytesMut::with_capacity(frame.encoded_len());
        group.bench_with_input(BenchmarkId::new(name, size), &frame, |b, frame| {
            b.iter(|| {
                buf.clear();
                black_box(frame).encode(&mut buf);
                buf.len()
            })
        });
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = configure(c, "frame_decode");
    for (name, size, frame) in frames() {
        let mut bytes = BytesMut::new();
        frame.encode(&mut bytes);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let batch = if bytes.len() > 4096 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        group.bench_with_input(BenchmarkId::new(name, size), &bytes, |b, bytes| {
            // The copy into a fresh read buffer is setup, not measured.
            b.iter_batched_ref(
                || BytesMut::from(&bytes[..]),
                |buf| decode(buf).expect("a valid frame"),
                batch,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode);
criterion_main!(benches);
