//! The XFS superblock (`xfs_dsb`), at byte 0 of the data device: the filesystem's geometry.
//!
//! Field offsets and rules follow the XFS on-disk format ("XFS Algorithms & Data Structures",
//! chapter "Superblocks"; the kernel's `xfs_format.h`). All fields are big-endian.

use crate::crc32c;
use crate::read::be;
use crate::{corrupt, MetaError, Region};

/// `sb_magicnum`: "XFSB".
pub const SB_MAGIC: u32 = 0x5846_5342;

/// Where the v5 superblock keeps its CRC (`sb_crc`).
const SB_CRC_OFF: usize = 224;
/// The bytes of the superblock this parser reads: everything up to `sb_meta_uuid`'s end.
const SB_FIELDS_LEN: usize = 264;

/// Smallest and largest block size (`XFS_MIN_BLOCKSIZE`, `XFS_MAX_BLOCKSIZE`).
const MIN_BLOCK_SIZE: u32 = 512;
const MAX_BLOCK_SIZE: u32 = 65536;
/// Smallest and largest sector size (`XFS_MIN_SECTORSIZE`, `XFS_MAX_SECTORSIZE`).
const MIN_SECTOR_SIZE: u32 = 512;
const MAX_SECTOR_SIZE: u32 = 32768;
/// Most allocation groups accepted. XFS allows up to 2^32; mkfs makes a few to a few hundred,
/// and growing a tiny filesystem a long way gives thousands. A million AGs of the smallest
/// size would already be a 64 TiB filesystem; more is taken as corruption.
pub const MAX_AG_COUNT: u32 = 1 << 20;
/// Most bytes in one allocation group (`XFS_MAX_AG_BYTES`, 1 TiB).
const MAX_AG_BYTES: u64 = 1 << 40;
/// Most blocks in one allocation group (`XFS_MAX_AG_BLOCKS`: agbnos are 31-bit).
const MAX_AG_BLOCKS: u32 = 0x7fff_ffff;
/// Most bytes in an internal log (`XFS_MAX_LOG_BYTES`, 2 GiB).
pub const MAX_LOG_BYTES: u64 = 2 << 30;

/// `sb_versionnum & XFS_SB_VERSION_NUMBITS`: 4 (no CRCs) and 5 (CRCs) are read; 1-3 are
/// long obsolete (IRIX) and refused.
const VERSION_NUMBITS: u16 = 0x000f;

/// v5 incompatible features (`sb_features_incompat`) that leave the data device's layout and
/// free-space B+trees as this parser reads them.
const INCOMPAT_FTYPE: u32 = 1 << 0;
const INCOMPAT_SPINODES: u32 = 1 << 1;
const INCOMPAT_META_UUID: u32 = 1 << 2;
const INCOMPAT_BIGTIME: u32 = 1 << 3;
/// Set by repair tools while a repair is under way: the metadata is not to be trusted.
const INCOMPAT_NEEDSREPAIR: u32 = 1 << 4;
const INCOMPAT_NREXT64: u32 = 1 << 5;
const INCOMPAT_EXCHRANGE: u32 = 1 << 6;
const INCOMPAT_PARENT: u32 = 1 << 7;
const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NEEDSREPAIR
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;
// Not in the list on purpose: METADIR (1 << 8) and ZONED (1 << 9), whose realtime groups can
// live on the data device after the data section (`sb_rtstart`), where this parser would not
// see them as used.

/// v5 read-only-compatible features (`sb_features_ro_compat`): more B+trees, all of whose
/// blocks come out of the free-space trees, so the used map stays right.
const RO_COMPAT_KNOWN: u32 = (1 << 0) // FINOBT
    | (1 << 1) // RMAPBT
    | (1 << 2) // REFLINK
    | (1 << 3); // INOBTCNT

/// The geometry and identity of an XFS filesystem, checked for sanity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// 4 or 5 (v5 has CRCs and self-describing metadata).
    pub version: u16,
    pub block_size: u32,
    pub sector_size: u32,
    /// Blocks in the data section.
    pub dblocks: u64,
    /// Blocks in a (non-last) allocation group.
    pub agblocks: u32,
    pub agcount: u32,
    /// log2 of `agblocks`, rounded up: the split of an absolute block number into AG and block.
    pub agblklog: u8,
    /// Absolute block number (AG number << agblklog | block) of the internal log, 0 when the
    /// log is on another device.
    pub logstart: u64,
    /// Blocks in the log.
    pub logblocks: u32,
    /// `sb_uuid`: the filesystem's UUID, which log records carry.
    pub uuid: [u8; 16],
    /// The UUID that v5 metadata blocks carry (`sb_meta_uuid` when the META_UUID feature is
    /// set, else `sb_uuid`).
    pub meta_uuid: [u8; 16],
    /// `sb_features_incompat` and `sb_features_ro_compat` (v5 only; 0 on v4).
    pub incompat: u32,
    pub ro_compat: u32,
    /// `sb_inprogress`: mkfs has not finished.
    pub inprogress: u8,
}

impl Superblock {
    /// True on v5 filesystems: metadata carries CRCs, UUIDs, owners and block numbers.
    pub fn has_crc(&self) -> bool {
        self.version == 5
    }

    /// Reads and checks the primary superblock. `Ok(None)` when byte 0 does not hold the XFS
    /// magic; an error when it does but the rest is not a sane superblock.
    pub fn read(region: &Region) -> Result<Option<Self>, MetaError> {
        let mut head = [0u8; SB_FIELDS_LEN];
        if region.len() < SB_FIELDS_LEN as u64 {
            return Ok(None);
        }
        region.read("the xfs superblock", &mut head, 0)?;
        if be::u32(&head, 0)? != SB_MAGIC {
            return Ok(None);
        }
        let sb = Self::decode(&head)?;
        if sb.has_crc() {
            let sector = region.read_vec(
                "the xfs superblock sector",
                0,
                sb.sector_size as usize, // at most MAX_SECTOR_SIZE, checked in decode
            )?;
            if !crc32c::verify(&sector, SB_CRC_OFF) {
                return Err(corrupt!(
                    "xfs superblock: CRC mismatch (stored {:#010x})",
                    crate::read::le::u32(&sector, SB_CRC_OFF)?
                ));
            }
        }
        Ok(Some(sb))
    }

    /// Decodes and sanity-checks the fields (not the CRC).
    pub fn decode(b: &[u8]) -> Result<Self, MetaError> {
        let block_size = be::u32(b, 4)?;
        let dblocks = be::u64(b, 8)?;
        let logstart = be::u64(b, 48)?;
        let agblocks = be::u32(b, 84)?;
        let agcount = be::u32(b, 88)?;
        let logblocks = be::u32(b, 96)?;
        let versionnum = be::u16(b, 100)?;
        let sector_size = u32::from(be::u16(b, 102)?);
        let blocklog = byte(b, 120)?;
        let sectlog = byte(b, 121)?;
        let agblklog = byte(b, 124)?;
        let inprogress = byte(b, 126)?;
        let version = versionnum & VERSION_NUMBITS;

        if version != 4 && version != 5 {
            return Err(MetaError::Unsupported(format!(
                "xfs superblock version {version} (only 4 and 5 are read)"
            )));
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
            || !block_size.is_power_of_two()
            || block_size.trailing_zeros() != u32::from(blocklog)
        {
            return Err(corrupt!(
                "xfs superblock: block size {block_size} (log {blocklog}) is not a power of two \
                 from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
            ));
        }
        if !(MIN_SECTOR_SIZE..=MAX_SECTOR_SIZE).contains(&sector_size)
            || !sector_size.is_power_of_two()
            || sector_size.trailing_zeros() != u32::from(sectlog)
            || sector_size > block_size
        {
            return Err(corrupt!(
                "xfs superblock: sector size {sector_size} (log {sectlog}) is not a power of two \
                 from {MIN_SECTOR_SIZE} to {MAX_SECTOR_SIZE} and at most the block size {block_size}"
            ));
        }
        // Four sectors of AG headers (SB, AGF, AGI, AGFL) must leave room for data.
        let header_blocks = (4 * sector_size).div_ceil(block_size);
        if agblocks <= header_blocks
            || agblocks > MAX_AG_BLOCKS
            || u64::from(agblocks) * u64::from(block_size) > MAX_AG_BYTES
        {
            return Err(corrupt!(
                "xfs superblock: {agblocks} blocks per allocation group of {block_size} bytes is \
                 outside 1..=1 TiB or leaves no room after the AG headers"
            ));
        }
        // agblklog is log2(agblocks) rounded up.
        let want_agblklog = u32::BITS - (agblocks - 1).leading_zeros();
        if u32::from(agblklog) != want_agblklog {
            return Err(corrupt!(
                "xfs superblock: agblklog {agblklog} does not match {agblocks} blocks per AG \
                 (expected {want_agblklog})"
            ));
        }
        if agcount == 0 || agcount > MAX_AG_COUNT {
            return Err(corrupt!(
                "xfs superblock: {agcount} allocation groups is outside 1..={MAX_AG_COUNT}"
            ));
        }
        // All AGs but the last are full; the last holds the rest, at least one block.
        let full = u64::from(agcount - 1) * u64::from(agblocks);
        if dblocks <= full || dblocks > full + u64::from(agblocks) {
            return Err(corrupt!(
                "xfs superblock: {dblocks} data blocks do not fit {agcount} allocation groups of \
                 {agblocks} blocks (the last may be shorter)"
            ));
        }
        let (incompat, ro_compat) = if version == 5 {
            (be::u32(b, 216)?, be::u32(b, 212)?)
        } else {
            (0, 0)
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(field(b, 32, 16)?);
        let mut meta_uuid = uuid;
        if incompat & INCOMPAT_META_UUID != 0 {
            meta_uuid.copy_from_slice(field(b, 248, 16)?);
        }
        Ok(Self {
            version,
            block_size,
            sector_size,
            dblocks,
            agblocks,
            agcount,
            agblklog,
            logstart,
            logblocks,
            uuid,
            meta_uuid,
            incompat,
            ro_compat,
            inprogress,
        })
    }

    /// Refuses what this parser cannot map safely: features it does not know, a filesystem
    /// mkfs did not finish or one marked as needing repair.
    pub fn check_supported(&self) -> Result<(), MetaError> {
        if self.inprogress != 0 {
            return Err(corrupt!(
                "xfs superblock: sb_inprogress is {} (mkfs did not finish)",
                self.inprogress
            ));
        }
        if self.incompat & INCOMPAT_NEEDSREPAIR != 0 {
            return Err(corrupt!(
                "xfs superblock: the filesystem is marked as needing repair"
            ));
        }
        let unknown = self.incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(MetaError::Unsupported(format!(
                "xfs incompatible features {unknown:#x} (metadir/zoned or newer)"
            )));
        }
        let unknown = self.ro_compat & !RO_COMPAT_KNOWN;
        if unknown != 0 {
            return Err(MetaError::Unsupported(format!(
                "xfs read-only-compatible features {unknown:#x}"
            )));
        }
        Ok(())
    }

    /// Blocks in allocation group `agno` (the last one may be shorter).
    pub fn ag_len(&self, agno: u32) -> u32 {
        if agno.saturating_add(1) < self.agcount {
            return self.agblocks;
        }
        let before = u64::from(self.agcount.saturating_sub(1)) * u64::from(self.agblocks);
        // decode() checked 0 < dblocks - before <= agblocks.
        u32::try_from(self.dblocks.saturating_sub(before)).unwrap_or(0)
    }

    /// The byte offset of allocation group `agno` (bounded by decode's checks: agcount,
    /// agblocks and block size are all limited, so this cannot overflow).
    pub fn ag_offset(&self, agno: u32) -> u64 {
        u64::from(agno)
            .saturating_mul(u64::from(self.agblocks))
            .saturating_mul(u64::from(self.block_size))
    }

    /// Blocks at the start of every AG that hold its four header sectors.
    pub fn header_blocks(&self) -> u32 {
        (4 * self.sector_size).div_ceil(self.block_size)
    }

    /// Bytes in the data section.
    pub fn data_bytes(&self) -> Option<u64> {
        self.dblocks.checked_mul(u64::from(self.block_size))
    }
}

fn byte(b: &[u8], at: usize) -> Result<u8, MetaError> {
    b.get(at)
        .copied()
        .ok_or_else(|| corrupt!("xfs superblock too short for a field at {at}"))
}

fn field(b: &[u8], at: usize, len: usize) -> Result<&[u8], MetaError> {
    b.get(at..at.saturating_add(len))
        .ok_or_else(|| corrupt!("xfs superblock too short for a field at {at}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal v4 superblock: 4 AGs of 1000 4 KiB blocks, 512-byte sectors.
    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&SB_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&4096u32.to_be_bytes());
        b[8..16].copy_from_slice(&3500u64.to_be_bytes());
        b[84..88].copy_from_slice(&1000u32.to_be_bytes());
        b[88..92].copy_from_slice(&4u32.to_be_bytes());
        b[100..102].copy_from_slice(&0xb4a4u16.to_be_bytes());
        b[102..104].copy_from_slice(&512u16.to_be_bytes());
        b[120] = 12;
        b[121] = 9;
        b[124] = 10;
        b
    }

    #[test]
    fn decodes_geometry() {
        let sb = Superblock::decode(&sample()).unwrap();
        assert_eq!((sb.agcount, sb.agblocks, sb.dblocks), (4, 1000, 3500));
        assert_eq!((sb.ag_len(0), sb.ag_len(3)), (1000, 500));
        assert_eq!(sb.ag_offset(2), 2000 * 4096);
        assert_eq!(sb.header_blocks(), 1);
        assert!(!sb.has_crc());
    }

    #[test]
    fn rejects_insane_geometry() {
        let cases: [(usize, &[u8]); 7] = [
            (4, &3000u32.to_be_bytes()),     // block size not a power of two
            (8, &4001u64.to_be_bytes()),     // more blocks than the AGs hold
            (8, &3000u64.to_be_bytes()),     // the last AG would be empty
            (88, &0u32.to_be_bytes()),       // no AGs
            (102, &8192u16.to_be_bytes()),   // sector bigger than the block
            (124, &[11]),                    // agblklog does not match
            (100, &0xb4a3u16.to_be_bytes()), // version 3
        ];
        for (at, bytes) in cases {
            let mut b = sample();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            assert!(Superblock::decode(&b).is_err(), "field at {at}");
        }
    }

    #[test]
    fn refuses_unknown_features() {
        let mut sb = Superblock::decode(&sample()).unwrap();
        assert!(sb.check_supported().is_ok());
        sb.incompat = 1 << 8;
        assert!(matches!(
            sb.check_supported(),
            Err(MetaError::Unsupported(_))
        ));
        sb.incompat = INCOMPAT_NEEDSREPAIR;
        assert!(matches!(sb.check_supported(), Err(MetaError::Corrupt(_))));
    }
}
