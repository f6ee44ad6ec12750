//! CRC-32C (Castagnoli): the checksum of XFS v5 metadata and of ext4's `metadata_csum`.
//!
//! `crc32fast` (a dependency of this crate) computes plain CRC-32 (IEEE), a different
//! polynomial, so this small table-driven version lives here.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// One byte's step of the CRC, for every byte value.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Continues a CRC-32C over `bytes`, from a running state: the raw step, with no pre- or
/// post-inversion (ext4 chains it from its own seeds; XFS inverts around it).
pub fn update(mut state: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        // The index is masked to 0..=255, so it is always inside the table.
        state = TABLE[((state ^ u32::from(b)) & 0xff) as usize] ^ (state >> 8);
    }
    state
}

/// The standard CRC-32C of `bytes` (initial value and final xor all ones).
#[cfg(test)]
pub fn crc32c(bytes: &[u8]) -> u32 {
    !update(!0, bytes)
}

/// The CRC-32C of `bytes` computed as if the 4 bytes at `at` were zero: how XFS checksums a
/// structure that holds its own checksum.
pub fn crc32c_without(bytes: &[u8], at: usize) -> u32 {
    let mut crc = Crc32c::new();
    crc.update_without(bytes, at);
    crc.finish()
}

/// True when the little-endian CRC-32C stored at `at` matches the rest of `bytes` (XFS stores
/// its metadata checksums little-endian, unlike every other field).
pub fn verify(bytes: &[u8], at: usize) -> bool {
    match bytes.get(at..at.saturating_add(4)) {
        Some(&[a, b, c, d]) => {
            crate::checksum_ok(u32::from_le_bytes([a, b, c, d]), crc32c_without(bytes, at))
        }
        _ => false,
    }
}

/// A running CRC-32C over pieces, for structures checksummed in parts (log records).
pub struct Crc32c(u32);

impl Crc32c {
    pub fn new() -> Self {
        Self(!0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = update(self.0, bytes);
    }

    /// Like [`Crc32c::update`], with the 4 bytes at `at` counted as zero.
    pub fn update_without(&mut self, bytes: &[u8], at: usize) {
        let split = at.min(bytes.len());
        let (head, rest) = bytes.split_at(split);
        self.update(head);
        let field = rest.len().min(4);
        self.update(&[0u8; 4][..field]);
        self.update(rest.get(field..).unwrap_or(&[]));
    }

    pub fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // The check value of CRC-32C (RFC 3720 appendix B.4 and the CRC catalogue).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros, and of 0xff.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn checksum_field_counts_as_zero() {
        let mut b = b"0123456789abcdef".to_vec();
        let crc = crc32c_without(&b, 4);
        b[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(crc, crc32c(&b));
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(verify(&b, 4));
        b[10] ^= 1;
        assert!(!verify(&b, 4));
        assert!(
            !verify(&b, 14),
            "a field running past the end never verifies"
        );
        let mut running = Crc32c::new();
        running.update(&b[..3]);
        running.update_without(&b[3..], 1);
        assert_eq!(running.finish(), crc32c_without(&b, 4));
    }
}
