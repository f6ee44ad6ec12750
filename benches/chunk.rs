//! Throughput of chunk encoding (zero check, lz4, blake3) and verification, on inputs that
//! look like disk contents: random (encrypted or already compressed data), text, binaries,
//! zeros (unused space) and a mix of them.
//!
//! `cargo bench --bench chunk`; about two minutes on two cores.

use std::hint::black_box;
use std::time::Duration;

use blockrep_chunk::{encode, is_zero, verify, Encoding};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

const SIZES: [(usize, &str); 2] = [(64 << 10, "64KiB"), (1 << 20, "1MiB")];

/// xorshift64*: deterministic, so every run measures the same bytes.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for piece in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            piece.copy_from_slice(&word[..piece.len()]);
        }
    }
}

fn random(len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut buf = vec![0; len];
    rng.fill(&mut buf);
    buf
}

/// English-like prose: common words, varied punctuation, numbers and line lengths.
fn text(len: usize, rng: &mut Rng) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "was",
        "with",
        "be",
        "by",
        "on",
        "not",
        "he",
        "this",
        "are",
        "or",
        "his",
        "from",
        "at",
        "which",
        "but",
        "have",
        "an",
        "had",
        "they",
        "you",
        "were",
        "their",
        "one",
        "all",
        "we",
        "can",
        "her",
        "has",
        "there",
        "been",
        "if",
        "more",
        "when",
        "will",
        "would",
        "who",
        "so",
        "no",
        "server",
        "migration",
        "replication",
        "configuration",
        "kernel",
        "filesystem",
        "database",
        "transaction",
        "network",
        "interface",
        "request",
        "response",
        "timeout",
    ];
    let mut buf = Vec::with_capacity(len + 32);
    while buf.len() < len {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        if rng.below(9) == 0 {
            let mut capital = word.as_bytes().to_vec();
            capital[0] = capital[0].to_ascii_uppercase();
            buf.extend_from_slice(&capital);
        } else {
            buf.extend_from_slice(word.as_bytes());
        }
        if rng.below(23) == 0 {
            buf.extend_from_slice(rng.below(100_000).to_string().as_bytes());
        }
        buf.extend_from_slice(match rng.below(40) {
            0..=2 => b", ",
            3 => b". ",
            4 => b".\n",
            5 => b"; ",
            _ => b" ",
        });
    }
    buf.truncate(len);
    buf
}

/// Something like an x86-64 executable or a database page: instruction-ish byte sequences,
/// little-endian small integers, repeated fixed-size records with incrementing pointers, and
/// some high-entropy stretches.
fn binary(len: usize, rng: &mut Rng) -> Vec<u8> {
    const OPCODES: &[&[u8]] = &[
        &[0x48, 0x89, 0xe5],
        &[0x55],
        &[0x48, 0x83, 0xec, 0x20],
        &[0xe8],
        &[0x48, 0x8b, 0x45, 0xf8],
        &[0xc3],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x31, 0xc0],
        &[0x74],
        &[0x89, 0x45, 0xfc],
    ];
    let mut buf = Vec::with_capacity(len + 256);
    let mut pointer = 0x5555_5555_4000u64;
    while buf.len() < len {
        match rng.below(10) {
            0..=3 => {
                for _ in 0..rng.below(32) + 1 {
                    buf.extend_from_slice(OPCODES[rng.below(OPCODES.len() as u64) as usize]);
                    if rng.below(3) == 0 {
                        buf.extend_from_slice(&(rng.below(4096) as u32).to_le_bytes());
                    }
                }
            }
            4..=5 => {
                for _ in 0..rng.below(64) + 1 {
                    buf.extend_from_slice(&(rng.below(300) as u32).to_le_bytes());
                }
            }
            6..=8 => {
                let kind = rng.below(4) as u32;
                for i in 0..rng.below(16) + 1 {
                    buf.extend_from_slice(&pointer.to_le_bytes());
                    buf.extend_from_slice(&kind.to_le_bytes());
                    buf.extend_from_slice(&(i as u32).to_le_bytes());
                    buf.extend_from_slice(&[0; 16]);
                    pointer += 32;
                }
            }
            _ => {
                let mut noise = vec![0; rng.below(256) as usize + 16];
                rng.fill(&mut noise);
                buf.extend_from_slice(&noise);
            }
        }
    }
    buf.truncate(len);
    buf
}

/// A partly used filesystem: runs of zeros, text, binary and random data.
fn mixed(len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let run = (rng.below(16) as usize + 1) * 4096;
        let piece = match rng.below(4) {
            0 => vec![0; run],
            1 => text(run, rng),
            2 => binary(run, rng),
            _ => random(run, rng),
        };
        buf.extend_from_slice(&piece);
    }
    buf.truncate(len);
    buf
}

fn inputs(len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    vec![
        ("random", random(len, &mut rng)),
        ("text", text(len, &mut rng)),
        ("binary", binary(len, &mut rng)),
        ("zeros", vec![0; len]),
        ("mixed", mixed(len, &mut rng)),
    ]
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
    let mut group = configure(c, "encode");
    for (len, size) in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        for (kind, raw) in inputs(len) {
            let mut compressed = Vec::new();
            group.bench_with_input(BenchmarkId::new(kind, size), &raw, |b, raw| {
                b.iter(|| encode(black_box(raw), &mut compressed))
            });
        }
    }
    group.finish();
}

fn bench_verify(c: &mut Criterion) {
    let mut group = configure(c, "verify");
    for (len, size) in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        for (kind, raw) in inputs(len) {
            let mut compressed = Vec::new();
            let encoded = encode(&raw, &mut compressed);
            let payload: Vec<u8> = match encoded.encoding {
                Encoding::Raw => raw.clone(),
                Encoding::Lz4 => compressed[..encoded.payload_len].to_vec(),
                Encoding::Zero => Vec::new(),
            };
            let mut scratch = Vec::new();
            group.bench_with_input(BenchmarkId::new(kind, size), &payload, |b, payload| {
                b.iter(|| {
                    let verified = verify(
                        encoded.encoding,
                        len,
                        &encoded.digest,
                        black_box(payload),
                        &mut scratch,
                    )
                    .expect("an encoded chunk verifies");
                    verified.len()
                })
            });
        }
    }
    group.finish();
}

fn bench_is_zero(c: &mut Criterion) {
    let mut group = configure(c, "is_zero");
    let len = 1 << 20;
    group.throughput(Throughput::Bytes(len as u64));
    let zeros = vec![0u8; len];
    let mut last_byte_set = zeros.clone();
    last_byte_set[len - 1] = 1;
    for (kind, buf) in [("zeros", &zeros), ("nonzero_at_end", &last_byte_set)] {
        group.bench_with_input(BenchmarkId::new(kind, "1MiB"), buf, |b, buf| {
            b.iter(|| is_zero(black_box(buf)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_verify, bench_is_zero);
criterion_main!(benches);
