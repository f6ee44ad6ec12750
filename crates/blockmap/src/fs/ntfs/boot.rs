//! The NTFS boot sector: sector and cluster sizes, the volume's length, where the MFT is.
//!
//! Offsets (all little-endian): 0x03 OEM id "NTFS    ", 0x0B bytes per sector, 0x0D sectors
//! per cluster, 0x0E..0x24 FAT-era fields that must be zero, 0x28 total sectors (the backup
//! boot sector, one sector past them, is not counted), 0x30 LCN of $MFT, 0x38 LCN of
//! $MFTMirr, 0x40 MFT record size, 0x1FE the 0x55AA signature.

use crate::read::le;
use crate::{corrupt, MetaError};

/// The OEM id that names an NTFS boot sector. Must not change.
pub const OEM_ID: &[u8; 8] = b"NTFS    ";
/// Bytes of the boot sector that hold every field read here.
pub const BOOT_SECTOR_LEN: usize = 512;
/// Largest cluster: Windows 10 1709 and later format up to 2 MiB clusters.
const MAX_CLUSTER: u64 = 2 << 20;
/// Largest MFT record accepted (Windows uses 1 KiB, or 4 KiB on 4Kn disks); records are
/// read whole into memory.
pub const MAX_RECORD: u64 = 64 << 10;
/// Fixups work in 512-byte strides, so a record is at least one stride.
pub const MIN_RECORD: u64 = 512;

/// A checked boot sector.
#[derive(Debug, Clone)]
pub struct Boot {
    /// Bytes per sector.
    pub sector: u64,
    /// Bytes per cluster.
    pub cluster: u64,
    /// Sectors in the volume, without the backup boot sector.
    pub total_sectors: u64,
    /// Clusters in the volume (the whole clusters in `total_sectors`): what $Bitmap maps.
    pub clusters: u64,
    /// First cluster of $MFT.
    pub mft_lcn: u64,
    /// First cluster of $MFTMirr.
    pub mftmirr_lcn: u64,
    /// Bytes per MFT record.
    pub record: u64,
}

/// True when the sector carries NTFS's OEM id and the boot signature.
pub fn is_ntfs(b: &[u8]) -> bool {
    b.get(3..11) == Some(&OEM_ID[..]) && b.get(510..512) == Some(&[0x55, 0xAA][..])
}

/// Parses and checks a boot sector already known to carry NTFS's OEM id.
pub fn parse(b: &[u8]) -> Result<Boot, MetaError> {
    let byte = |at: usize| {
        b.get(at)
            .copied()
            .ok_or_else(|| corrupt!("ntfs boot sector: too short"))
    };
    let sector = u64::from(le::u16(b, 0x0B)?);
    if !sector.is_power_of_two() || !(512..=4096).contains(&sector) {
        return Err(corrupt!(
            "ntfs boot sector: {sector} bytes per sector (must be a power of two, 512 to 4096)"
        ));
    }
    // Sectors per cluster: 1..=0x80 literally; above 0x80 the byte is a negative shift,
    // 2^(256 - value) sectors (Windows 10 1709's large clusters).
    let spc_byte = byte(0x0D)?;
    let sectors_per_cluster: u64 = match spc_byte {
        0 => 0,
        1..=0x80 => u64::from(spc_byte),
        _ => {
            let shift = 256 - u32::from(spc_byte);
            1u64.checked_shl(shift).filter(|_| shift < 32).unwrap_or(0)
        }
    };
    let cluster = sectors_per_cluster.saturating_mul(sector);
    if !sectors_per_cluster.is_power_of_two() || cluster > MAX_CLUSTER {
        return Err(corrupt!(
            "ntfs boot sector: sectors per cluster byte {spc_byte:#04x} gives {sectors_per_cluster} sectors of {sector} bytes (clusters are powers of two up to {MAX_CLUSTER} bytes)"
        ));
    }
    // The FAT fields NTFS leaves zero: reserved sectors, FAT count, root entries, 16-bit
    // total sectors, FAT size, 32-bit total sectors.
    let zero_fields = [
        u64::from(le::u16(b, 0x0E)?),
        u64::from(byte(0x10)?),
        u64::from(le::u16(b, 0x11)?),
        u64::from(le::u16(b, 0x13)?),
        u64::from(le::u16(b, 0x16)?),
        u64::from(le::u32(b, 0x20)?),
    ];
    if zero_fields.iter().any(|&v| v != 0) {
        return Err(corrupt!(
            "ntfs boot sector: FAT fields at 0x0E..0x24 are not zero ({zero_fields:?})"
        ));
    }
    let total_sectors = le::u64(b, 0x28)?;
    let clusters = total_sectors / sectors_per_cluster;
    if clusters == 0 {
        return Err(corrupt!(
            "ntfs boot sector: {total_sectors} sectors hold no whole cluster"
        ));
    }
    let mft_lcn = le::u64(b, 0x30)?;
    let mftmirr_lcn = le::u64(b, 0x38)?;
    for (name, lcn) in [("$MFT", mft_lcn), ("$MFTMirr", mftmirr_lcn)] {
        if lcn == 0 || lcn >= clusters {
            return Err(corrupt!(
                "ntfs boot sector: {name} at cluster {lcn}, outside clusters 1..{clusters}"
            ));
        }
    }
    let record = record_size(byte(0x40)?, cluster)
        .filter(|r| r.is_power_of_two() && (MIN_RECORD..=MAX_RECORD).contains(r))
        .ok_or_else(|| {
            corrupt!(
                "ntfs boot sector: MFT record size byte {:#04x} (with {cluster}-byte clusters) is not a power of two from {MIN_RECORD} to {MAX_RECORD} bytes",
                b.get(0x40).copied().unwrap_or(0)
            )
        })?;
    Ok(Boot {
        sector,
        cluster,
        total_sectors,
        clusters,
        mft_lcn,
        mftmirr_lcn,
        record,
    })
}

/// The "clusters per record" encoding: a positive byte counts clusters, a negative one
/// (as i8) is -log2 of the size in bytes.
fn record_size(v: u8, cluster: u64) -> Option<u64> {
    let signed = v as i8;
    if signed > 0 {
        cluster.checked_mul(u64::from(v))
    } else if signed < 0 && signed > -32 {
        Some(1u64 << u32::from(signed.unsigned_abs()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot sector as mkntfs writes one for a 64 MiB volume with 4 KiB clusters.
    pub(crate) fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
        b[3..11].copy_from_slice(OEM_ID);
        b[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        b[0x0D] = 8;
        b[0x15] = 0xF8;
        b[0x28..0x30].copy_from_slice(&131071u64.to_le_bytes());
        b[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        b[0x38..0x40].copy_from_slice(&8191u64.to_le_bytes());
        b[0x40] = 0xF6; // 2^10 = 1024-byte records
        b[0x44] = 1;
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn parses_a_typical_boot_sector() {
        let b = sample();
        assert!(is_ntfs(&b));
        let boot = parse(&b).unwrap();
        assert_eq!(boot.cluster, 4096);
        assert_eq!(boot.clusters, 16383);
        assert_eq!(boot.record, 1024);
    }

    #[test]
    fn decodes_large_cluster_encoding() {
        let mut b = sample();
        b[0x38..0x40].copy_from_slice(&2u64.to_le_bytes()); // $MFTMirr inside fewer clusters
        b[0x0D] = 0x80; // 128 sectors: 64 KiB, still literal
        assert_eq!(parse(&b).unwrap().cluster, 64 << 10);
        b[0x0D] = 0xF4; // 2^12 sectors: 2 MiB
        b[0x28..0x30].copy_from_slice(&(1u64 << 22).to_le_bytes());
        assert_eq!(parse(&b).unwrap().cluster, 2 << 20);
        b[0x0D] = 0xF3; // 2^13 sectors: 4 MiB, too large
        assert!(parse(&b).is_err());
        b[0x0D] = 0x81; // 2^127: nonsense
        assert!(parse(&b).is_err());
    }

    #[test]
    fn decodes_record_size_encoding() {
        assert_eq!(record_size(0xF6, 4096), Some(1024));
        assert_eq!(record_size(0xF4, 4096), Some(4096));
        assert_eq!(record_size(2, 512), Some(1024));
        assert_eq!(record_size(0, 4096), None);
        assert_eq!(record_size(0x80, 4096), None);
    }

    #[test]
    fn rejects_bad_fields() {
        let cases: [(usize, &[u8]); 7] = [
            (0x0B, &[0x00, 0x03]), // 768 bytes per sector
            (0x0D, &[3]),          // 3 sectors per cluster
            (0x0E, &[1]),          // reserved sectors
            (0x10, &[2]),          // FAT count
            (0x28, &[0; 8]),       // no sectors
            (0x30, &[0xFF; 8]),    // $MFT outside the volume
            (0x40, &[0xFF]),       // 2-byte MFT records
        ];
        for (at, bytes) in cases {
            let mut b = sample();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            assert!(
                matches!(parse(&b), Err(MetaError::Corrupt(_))),
                "field at {at:#x}"
            );
        }
        let mut b = sample();
        b[3] = b'X';
        assert!(!is_ntfs(&b));
    }
}
