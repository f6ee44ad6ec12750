//! What the end-to-end benches share.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes a file of `size` pseudo-random (incompressible) bytes, synced.
pub fn random_image(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = (size - at).min(buf.len() as u64) as usize;
        f.write_all_at(&buf[..n], at).unwrap();
        at += n as u64;
    }
    f.sync_all().unwrap();
}
