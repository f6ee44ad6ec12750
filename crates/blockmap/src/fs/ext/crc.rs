//! The two checksums ext4 uses: CRC32C (Castagnoli) for `metadata_csum`, and the older
//! CRC16 (the kernel's `crc16`, polynomial 0x8005 reflected) for `gdt_csum` descriptors.
//!
//! Both are the raw update step: no pre- or post-inversion, because ext4 chains them with
//! its own seeds (`~0`, the filesystem UUID, the group number).

/// Continues a CRC32C over `data` from `crc` (ext4's `ext4_chksum`): the crate's shared
/// CRC-32C step, which XFS uses too.
pub use crate::crc32c::update as crc32c;

/// CRC16 table, reflected polynomial 0xA001 (0x8005).
static CRC16: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// Continues a CRC16 over `data` from `crc` (the kernel's `crc16`).
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc = CRC16[((crc ^ u16::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_values() {
        // CRC-32C check value (init and final xor ~0).
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        // CRC-16/ARC check value (init 0, no final xor): the kernel's crc16.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
        // Chaining equals one pass.
        assert_eq!(
            crc32c(crc32c(7, b"1234"), b"56789"),
            crc32c(7, b"123456789")
        );
    }
}
