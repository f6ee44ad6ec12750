//! LVM2 physical volumes, recognised by their label. A PV is always sent whole (the mapping
//! of its logical volumes is not read), so only the probe lives here.
//!
//! The label (LVM2's `lib/label/label.h`), little-endian, at the start of one of the first four
//! 512-byte sectors (`pvcreate` uses sector 1):
//!
//! ```text
//!  0..8   "LABELONE"     8..16  this sector's number    16..20 CRC of bytes 20..512
//! 20..24  offset of the PV header from the label (32)   24..32 "LVM2 001"
//! ```
//!
//! The CRC is the reflected CRC-32 (polynomial 0xEDB88320) started at 0xf597a6cf, without the
//! usual final inversion.

use crate::fs::FsKind;
use crate::read::le;
use crate::{corrupt, MetaError, Region};

/// The label sector's size.
const LABEL_SECTOR: u64 = 512;
/// How many sectors from the start may hold the label.
const LABEL_SCAN_SECTORS: u64 = 4;
/// The label's signature.
const LABEL_ID: &[u8] = b"LABELONE";
/// The label type of an LVM2 PV.
const LABEL_TYPE_LVM2: &[u8] = b"LVM2 001";
/// Where the CRC'd part of the label starts.
const CRC_FROM: usize = 20;
/// LVM2's CRC seed.
const CRC_INITIAL: u32 = 0xf597_a6cf;
/// The size of the label header; the PV header follows it.
const LABEL_HEADER_LEN: u32 = 32;
/// The size of a PV header without its area lists (UUID + device size).
const PV_HEADER_MIN: u32 = 40;

/// LVM2's CRC: the standard reflected CRC-32 without the final inversion, from `seed`.
fn lvm_crc(seed: u32, bytes: &[u8]) -> u32 {
    // crc32fast finalizes with an inversion and treats its start value as a finalized CRC,
    // so inverting on both sides gives the raw register LVM2 stores.
    let mut h = crc32fast::Hasher::new_with_initial(!seed);
    h.update(bytes);
    !h.finalize()
}

pub fn probe(region: &Region) -> Result<Option<FsKind>, MetaError> {
    for sector in 0..LABEL_SCAN_SECTORS {
        let at = sector * LABEL_SECTOR;
        if region.check("an LVM2 label", at, LABEL_SECTOR).is_err() {
            break;
        }
        let mut buf = [0u8; LABEL_SECTOR as usize];
        region.read("an LVM2 label", &mut buf, at)?;
        if buf.get(..LABEL_ID.len()) != Some(LABEL_ID) {
            continue;
        }
        if buf.get(24..32) != Some(LABEL_TYPE_LVM2) {
            // A label of another kind (LVM1's is not "LABELONE"): not ours.
            return Ok(None);
        }
        let sector_field = le::u64(&buf, 8)?;
        if sector_field != sector {
            return Err(corrupt!(
                "LVM2 label in sector {sector} says it is in sector {sector_field}"
            ));
        }
        let stored = le::u32(&buf, 16)?;
        let crc = lvm_crc(CRC_INITIAL, buf.get(CRC_FROM..).unwrap_or(&[]));
        if stored != crc {
            return Err(corrupt!(
                "LVM2 label in sector {sector}: CRC is 0x{stored:08x} but its bytes give 0x{crc:08x}"
            ));
        }
        let offset = le::u32(&buf, 20)?;
        if offset < LABEL_HEADER_LEN || offset.saturating_add(PV_HEADER_MIN) > LABEL_SECTOR as u32 {
            return Err(corrupt!(
                "LVM2 label in sector {sector}: PV header offset {offset} is outside the label sector"
            ));
        }
        return Ok(Some(FsKind::LvmPv));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{expect_corrupt, Rng};
    use crate::ReadAt;

    /// LVM2's own CRC, written as LVM2 documents it (a nibble table for the reflected
    /// polynomial, no final inversion), to check the crc32fast-based version against.
    fn reference_crc(mut crc: u32, bytes: &[u8]) -> u32 {
        let table: [u32; 16] = core::array::from_fn(|i| {
            let mut c = i as u32;
            for _ in 0..4 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
            c
        });
        for &b in bytes {
            crc ^= u32::from(b);
            crc = (crc >> 4) ^ table[(crc & 0xf) as usize];
            crc = (crc >> 4) ^ table[(crc & 0xf) as usize];
        }
        crc
    }

    /// A PV label in `sector` as pvcreate writes it: label header, then the PV header (UUID,
    /// device size, an empty data-area list).
    fn pv(size: usize, sector: u64) -> Vec<u8> {
        let mut b = vec![0u8; size];
        let s = (sector * LABEL_SECTOR) as usize;
        let l = &mut b[s..s + LABEL_SECTOR as usize];
        l[..8].copy_from_slice(LABEL_ID);
        l[8..16].copy_from_slice(&sector.to_le_bytes());
        l[20..24].copy_from_slice(&LABEL_HEADER_LEN.to_le_bytes());
        l[24..32].copy_from_slice(LABEL_TYPE_LVM2);
        l[32..64].copy_from_slice(b"f1yIsQ7Vm0c5gDgRzSnTtZ8KQe3FQ0aT");
        l[64..72].copy_from_slice(&(size as u64).to_le_bytes());
        seal(l);
        b
    }

    fn seal(label: &mut [u8]) {
        let crc = reference_crc(CRC_INITIAL, &label[CRC_FROM..]);
        label[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    fn probe_bytes(b: &dyn ReadAt) -> Result<Option<FsKind>, MetaError> {
        probe(&Region::whole(b))
    }

    #[test]
    fn crc_matches_lvm2s_algorithm() {
        let data: Vec<u8> = (0..492u32).map(|i| (i * 31 + 7) as u8).collect();
        assert_eq!(
            lvm_crc(CRC_INITIAL, &data),
            reference_crc(CRC_INITIAL, &data)
        );
        assert_eq!(lvm_crc(CRC_INITIAL, &[]), CRC_INITIAL);
        assert_eq!(lvm_crc(0, b"abc"), reference_crc(0, b"abc"));
    }

    #[test]
    fn finds_labels_in_the_first_four_sectors() {
        for sector in 0..LABEL_SCAN_SECTORS {
            let b = pv(1 << 20, sector);
            assert_eq!(
                probe_bytes(&b).unwrap(),
                Some(FsKind::LvmPv),
                "sector {sector}"
            );
            assert_eq!(
                crate::fs::probe(&Region::whole(&b)).unwrap(),
                Some(FsKind::LvmPv)
            );
        }
        // Sector 4 is past where LVM2 looks.
        let mut b = vec![0u8; 1 << 20];
        b[2048..2560].copy_from_slice(&pv(4096, 1)[512..1024]);
        assert_eq!(probe_bytes(&b).unwrap(), None);
    }

    #[test]
    fn a_pv_is_sent_whole() {
        let b = pv(4 << 20, 1);
        let region = Region::whole(&b);
        let used = crate::fs::used(FsKind::LvmPv, &region).unwrap();
        assert_eq!(used.total(), 4 << 20);
        let m = crate::map_disk(&b);
        assert_eq!(m.partitions[0].fs, Some(FsKind::LvmPv));
        assert_eq!(m.used.total(), 4 << 20);
    }

    #[test]
    fn rejects_bad_labels() {
        let mut b = pv(1 << 20, 1);
        b[512 + 40] ^= 1;
        expect_corrupt(probe_bytes(&b), "CRC is");
        let mut b = pv(1 << 20, 1);
        b[512 + 8] = 2;
        expect_corrupt(probe_bytes(&b), "says it is in sector 2");
        let mut b = pv(1 << 20, 1);
        b[512 + 20..512 + 24].copy_from_slice(&500u32.to_le_bytes());
        seal(&mut b[512..1024]);
        expect_corrupt(probe_bytes(&b), "PV header offset 500");
        // Another label type is not an LVM2 PV.
        let mut b = pv(1 << 20, 1);
        b[512 + 24..512 + 32].copy_from_slice(b"LVM1 001");
        seal(&mut b[512..1024]);
        assert_eq!(probe_bytes(&b).unwrap(), None);
    }

    #[test]
    fn small_or_empty_regions_are_not_pvs() {
        assert_eq!(probe_bytes(&vec![0u8; 100]).unwrap(), None);
        assert_eq!(probe_bytes(&vec![0u8; 1 << 20]).unwrap(), None);
        // A label cut off by the region's end.
        let b = pv(1 << 20, 1);
        assert_eq!(probe_bytes(&b[..800].to_vec()).unwrap(), None);
    }

    #[test]
    fn random_corruption_never_panics() {
        let mut b = pv(1 << 16, 1);
        let mut rng = Rng(0x0bad_5eed_dead_beef);
        for _ in 0..2000 {
            let at = 512 + rng.next() as usize % 80;
            let bit = 1u8 << (rng.next() % 8);
            b[at] ^= bit;
            let _ = probe_bytes(&b);
            b[at] ^= bit;
        }
        assert_eq!(probe_bytes(&b).unwrap(), Some(FsKind::LvmPv));
    }
}
