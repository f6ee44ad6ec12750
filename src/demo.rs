//! `blockrep demo`: the whole job on an embedded example, on loopback, in one command.
//!
//! Makes a disk image with mixed content (random, text, zeros, a hole) in a temporary
//! directory, a target pre-filled with a pattern (so zero chunks must really be zeroed), fresh
//! certificates, a receiver on 127.0.0.1, replicates the image over mutual TLS and checks the
//! target is identical. No root needed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::progress::human_bytes;
use crate::{certs, receiver, sender, tls, Error, ReceiverConfig, SendConfig, SourceSpec};

const MIB: u64 = 1 << 20;
/// Not a multiple of the chunk size, on purpose.
const IMAGE_SIZE: u64 = 96 * MIB + 12_345;

/// A small deterministic generator, so the demo image is the same on every run.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Fills `buf` with English-like text that compresses the way logs and configs do.
pub(crate) fn fill_text(buf: &mut [u8], rng: &mut XorShift) {
    const WORDS: &[&str] = &[
        "the",
        "disk",
        "server",
        "migration",
        "block",
        "replica",
        "kernel",
        "service",
        "log",
        "config",
        "error",
        "request",
        "user",
        "data",
        "network",
        "storage",
        "daemon",
        "started",
        "completed",
        "GET",
        "/var/lib",
        "200",
        "404",
        "session",
        "timeout",
        "2026-11-22",
    ];
    let mut pick = [0u8; 8];
    let mut pos = 0;
    while pos < buf.len() {
        rng.fill(&mut pick);
        let word = WORDS[usize::from(pick[0]) % WORDS.len()];
        let sep: &[u8] = if pick[1] % 11 == 0 { b"\n" } else { b" " };
        for &b in word.as_bytes().iter().chain(sep) {
            if pos == buf.len() {
                break;
            }
            buf[pos] = b;
            pos += 1;
        }
    }
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let msg = format!("{what} {}", path.display());
    move |e| Error::Config(format!("{msg}: {e}"))
}

/// Writes the demo source image: random, text, explicit zeros, a hole, then a mix.
pub fn make_image(path: &Path) -> Result<u64, Error> {
    let f = File::create(path).map_err(io("cannot create", path))?;
    f.set_len(IMAGE_SIZE).map_err(io("cannot size", path))?;
    let mut rng = XorShift::new(0x5eed);
    let mut buf = vec![0u8; MIB as usize];
    let put = |offset: u64, buf: &[u8]| {
        f.write_all_at(buf, offset)
            .map_err(io("cannot write", path))
    };
    for i in 0..24 {
        rng.fill(&mut buf);
        put(i * MIB, &buf)?;
    }
    for i in 24..48 {
        fill_text(&mut buf, &mut rng);
        put(i * MIB, &buf)?;
    }
    buf.fill(0);
    for i in 48..60 {
        put(i * MIB, &buf)?;
    }
    // 60..80 MiB stays a hole.
    for i in 80..96 {
        rng.fill(&mut buf);
        fill_text(&mut buf[..(i as usize % 4) * 256 * 1024], &mut rng);
        put(i * MIB, &buf)?;
    }
    let mut tail = vec![0u8; (IMAGE_SIZE - 96 * MIB) as usize];
    fill_text(&mut tail, &mut rng);
    put(96 * MIB, &tail)?;
    Ok(IMAGE_SIZE)
}

/// Writes a target of `size` bytes filled with a pattern that matches nothing in the source.
fn make_target(path: &Path, size: u64) -> Result<(), Error> {
    let f = File::create(path).map_err(io("cannot create", path))?;
    let pattern = vec![0xa5u8; MIB as usize];
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(MIB) as usize;
        f.write_all_at(&pattern[..n], offset)
            .map_err(io("cannot write", path))?;
        offset += n as u64;
    }
    Ok(())
}

/// Compares two files byte for byte; returns the first differing offset.
pub fn first_difference(a: &Path, b: &Path) -> Result<Option<u64>, Error> {
    let mut fa = File::open(a).map_err(io("cannot open", a))?;
    let mut fb = File::open(b).map_err(io("cannot open", b))?;
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io("cannot read", a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io("cannot read", b))?;
        if let Some(i) = ba[..na.min(nb)]
            .iter()
            .zip(&bb[..na.min(nb)])
            .position(|(x, y)| x != y)
        {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + na.min(nb) as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Runs the demo, printing what happens to `out`. Returns an error if anything fails or the
/// target differs.
pub fn run(out: &mut dyn Write) -> Result<(), Error> {
    let dir = tempfile::tempdir()
        .map_err(|e| Error::Config(format!("cannot make a temporary directory: {e}")))?;
    let p = |s: &str| dir.path().join(s);
    let say = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
    };
    say(out, format!("blockrep demo in {}", dir.path().display()));
    let size = make_image(&p("source.img"))?;
    make_target(&p("target.img"), size)?;
    say(
        out,
        format!(
            "  source image: {} ({size} bytes): random, text, zeros, a hole, a mix",
            human_bytes(size)
        ),
    );
    say(out, "  target image: same size, filled with 0xa5".into());
    let files = certs::generate(&[])?.write(&p("certs"))?;
    say(
        out,
        format!(
            "  certificates: a fresh CA, server and client in {}",
            p("certs").display()
        ),
    );

    let server_tls = tls::server_config(&files.server_cert, &files.server_key, &files.ca)?;
    let client_tls = tls::client_config(&files.ca, &files.client_cert, &files.client_key)?;
    let mut disks = BTreeMap::new();
    disks.insert("disk0".to_owned(), p("target.img"));
    let mut rconfig = ReceiverConfig::new(server_tls, disks);
    rconfig.once = true;
    rconfig.check_disks()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;
    let started = Instant::now();
    let summary = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Config(format!("cannot listen on 127.0.0.1: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Config(e.to_string()))?;
        let server = tokio::spawn(receiver::serve(listener, rconfig, std::future::pending()));
        let mut config = SendConfig::new(
            addr.to_string(),
            client_tls,
            vec![SourceSpec::new("disk0", p("source.img"))],
        );
        config.mode = sender::Mode::Full;
        config.session_id = "demo".into();
        let summary = sender::send(config, sender::Control::new()).await?;
        let outcome = server.await.map_err(|e| Error::Transport(e.to_string()))?;
        match outcome.first {
            Some(Ok(report)) if report.complete => Ok(summary),
            other => Err(Error::Transport(format!(
                "the receiver's session did not succeed: {other:?}"
            ))),
        }
    })?;
    let secs = started.elapsed().as_secs_f64();
    say(
        out,
        format!(
            "  replicated over mutual TLS on 127.0.0.1 in {secs:.2} s ({:.0} MB/s)",
            size as f64 / secs / 1e6
        ),
    );
    say(
        out,
        format!(
        "  read {}, sent {} on the wire ({:.1}% saved by lz4 and zero chunks), {} as zero chunks",
        human_bytes(summary.read_bytes),
        human_bytes(summary.wire_bytes),
        100.0 * (1.0 - summary.wire_bytes as f64 / summary.sent_bytes.max(1) as f64),
        human_bytes(summary.zero_bytes),
    ),
    );
    match first_difference(&p("source.img"), &p("target.img"))? {
        None => {
            say(out, "  target is byte-identical to the source: OK".into());
            Ok(())
        }
        Some(at) => Err(Error::Transport(format!(
            "the target differs from the source at byte {at}"
        ))),
    }
}
