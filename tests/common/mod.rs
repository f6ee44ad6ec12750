//! Helpers shared by the end-to-end tests: certificates, images, a receiver on 127.0.0.1:0.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blockrep::certs::{self, PkiFiles};
use blockrep::{tls, ReceiverConfig, ServeOutcome};
use tokio::sync::oneshot;

pub const MIB: u64 = 1 << 20;

/// A CA with a server and a client certificate, written to a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub files: PkiFiles,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = certs::generate(&[]).unwrap().write(dir.path()).unwrap();
        Self { dir, files }
    }

    pub fn server(&self) -> Arc<rustls::ServerConfig> {
        tls::server_config(
            &self.files.server_cert,
            &self.files.server_key,
            &self.files.ca,
        )
        .unwrap()
    }

    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        tls::client_config(
            &self.files.ca,
            &self.files.client_cert,
            &self.files.client_key,
        )
        .unwrap()
    }
}

/// A receiver running in-process on 127.0.0.1:0.
pub struct Receiver {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<ServeOutcome>>,
}

impl Receiver {
    pub async fn start(config: ReceiverConfig) -> Self {
        config.check_disks().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(blockrep::serve(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it (as SIGTERM would) and returns what it did.
    pub async fn stop(mut self) -> ServeOutcome {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task.take().unwrap())
            .await
            .expect("receiver stops within 30 s")
            .unwrap()
    }
}

pub fn receiver_config(pki: &Pki, disks: &[(&str, &Path)]) -> ReceiverConfig {
    let map: BTreeMap<String, PathBuf> = disks
        .iter()
        .map(|(id, p)| (id.to_string(), p.to_path_buf()))
        .collect();
    let mut c = ReceiverConfig::new(pki.server(), map);
    c.handshake_timeout = Duration::from_secs(5);
    c
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

pub fn text_bytes(buf: &mut [u8], seed: u64) {
    let words = [
        "alpha ",
        "disk ",
        "block ",
        "server\n",
        "migrate ",
        "log: ",
        "12345 ",
        "etc/fstab ",
    ];
    let mut x = seed | 1;
    let mut i = 0;
    while i < buf.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for &b in words[(x % words.len() as u64) as usize].as_bytes() {
            if i < buf.len() {
                buf[i] = b;
                i += 1;
            }
        }
    }
}

/// The kinds of region a test image is made of.
#[derive(Clone, Copy, Debug)]
pub enum Region {
    Random(u64),
    Text(u64),
    Zeros(u64),
    Hole(u64),
}

/// Fills a buffer from a seed.
type Fill = fn(&mut [u8], u64);

/// Writes an image of the given regions (sizes in bytes); holes stay sparse.
pub fn make_image(path: &Path, regions: &[Region], seed: u64) -> u64 {
    let f = File::create(path).unwrap();
    let mut offset = 0u64;
    for (i, r) in regions.iter().enumerate() {
        let (len, fill): (u64, Option<Fill>) = match *r {
            Region::Random(n) => (n, Some(random_bytes)),
            Region::Text(n) => (n, Some(text_bytes)),
            Region::Zeros(n) => (n, Some(|b: &mut [u8], _| b.fill(0))),
            Region::Hole(n) => (n, None),
        };
        if let Some(fill) = fill {
            let mut buf = vec![0u8; len as usize];
            fill(&mut buf, seed.wrapping_add(i as u64 * 7919));
            f.write_all_at(&buf, offset).unwrap();
        }
        offset += len;
    }
    f.set_len(offset).unwrap();
    offset
}

/// A target of `size` bytes full of 0xa5, so nothing in it matches a source by accident.
pub fn make_target(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    f.write_all_at(&vec![0xa5u8; size as usize], 0).unwrap();
}

pub fn assert_identical(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}

/// Bytes of `b` that equal `a`, counted in whole `chunk`-byte pieces at the same offsets.
pub fn matching_chunk_bytes(a: &Path, b: &Path, chunk: usize) -> u64 {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let same = x
        .chunks(chunk)
        .zip(y.chunks(chunk))
        .filter(|(p, q)| p == q)
        .count();
    same as u64 * chunk as u64
}

/// A DATA frame for disk index `disk` whose digest is that of `raw`; the payload is sent as
/// given (so a test can make it wrong).
pub fn data_frame(
    disk: u16,
    encoding: blockrep_proto::Encoding,
    offset: u64,
    raw: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let digest = blockrep_chunk::digest(raw);
    let mut v = blockrep_proto::frame::encode_data_head(
        disk,
        encoding,
        offset,
        raw.len() as u32,
        &digest,
        payload.len(),
    )
    .to_vec();
    v.extend_from_slice(payload);
    v
}

/// Same as `cmp`: the real tool agrees.
pub fn cmp(a: &Path, b: &Path) -> bool {
    std::process::Command::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

// The skip of a test that cannot run here: the disk crate's, one source for every test tree.
#[path = "../../crates/disk/src/skip.rs"]
mod skip;
#[allow(unused_imports)] // not every test crate skips
pub(crate) use skip::skip;
