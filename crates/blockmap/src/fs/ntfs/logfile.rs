//! Whether $LogFile is clean: a log with unapplied transactions makes $Bitmap untrustworthy.
//!
//! NTFS writes a transaction to the log before it updates metadata such as $Bitmap. After an
//! unclean shutdown (or on a volume still mounted, or hibernated by Windows' Fast Startup),
//! the log may allocate clusters that $Bitmap on disk still shows as free; replaying it on the
//! target would then point files at clusters this map did not send. So the map only trusts
//! $Bitmap when the log is clean, as ntfs-3g does before mounting read-write.
//!
//! The log starts with two restart pages ("RSTR", multi-sector protected) at offset 0 and at
//! the system page size; the one with the newer `current_lsn` counts. Its restart area says
//! the volume is clean when no log client is in use or the "volume is clean" flag is set. A
//! log that ntfs-3g or mkntfs emptied is all 0xFF bytes, which is clean too.

use super::record::apply_fixups;
use super::runlist::{self, Run};
use crate::read::le;
use crate::{corrupt, MetaError, Region};

/// Largest restart page accepted (Windows uses 4 KiB, 64 KiB on some large-page systems).
const MAX_PAGE: u64 = 64 << 10;
/// Bytes of an emptied log checked for the all-0xFF pattern (both restart page slots).
const EMPTY_CHECK: u64 = 8 << 10;
/// No client in the in-use list.
const NO_CLIENT: u16 = 0xFFFF;
/// Restart area flag: the volume was dismounted cleanly.
const VOLUME_IS_CLEAN: u16 = 0x0002;

/// A valid restart page's verdict.
struct Restart {
    /// Its size: the second restart page follows the first this far in.
    page: u64,
    current_lsn: u64,
    clean: bool,
}

/// Reads and checks the restart page at `offset` of the log. `Ok(None)`: not a restart page.
fn restart_page(
    region: &Region,
    runs: &[Run],
    cluster: u64,
    size: u64,
    offset: u64,
) -> Result<Option<Restart>, MetaError> {
    let mut head = [0u8; 0x20];
    runlist::read(region, runs, cluster, offset, &mut head, "$LogFile")?;
    match &head[0..4] {
        b"RSTR" => {}
        b"CHKD" => {
            return Err(MetaError::Unsupported(
                "ntfs $LogFile: restart page marked by chkdsk (\"CHKD\"); the log state is unknown"
                    .into(),
            ))
        }
        _ => return Ok(None),
    }
    let page = u64::from(le::u32(&head, 0x10)?);
    let major = le::u16(&head, 0x1C)?;
    if !page.is_power_of_two()
        || !(512..=MAX_PAGE).contains(&page)
        || offset.checked_add(page).is_none_or(|end| end > size)
    {
        return Err(corrupt!(
            "ntfs $LogFile: restart page at {offset} says its page size is {page} bytes"
        ));
    }
    if major != 1 && major != 2 {
        return Err(MetaError::Unsupported(format!(
            "ntfs $LogFile: restart page version {major} (1 and 2 are known)"
        )));
    }
    let mut buf = vec![0u8; page as usize]; // page <= MAX_PAGE
    runlist::read(region, runs, cluster, offset, &mut buf, "$LogFile")?;
    apply_fixups(&mut buf, 0x1E, "$LogFile restart page")?;
    let area = usize::from(le::u16(&buf, 0x18)?);
    if !area.is_multiple_of(8) || area < 0x1E || area + 0x10 > buf.len() {
        return Err(corrupt!(
            "ntfs $LogFile: restart area at {area} of a {page}-byte restart page"
        ));
    }
    let in_use = le::u16(&buf, area + 0x0C)?;
    let flags = le::u16(&buf, area + 0x0E)?;
    Ok(Some(Restart {
        page,
        current_lsn: le::u64(&buf, area)?,
        clean: in_use == NO_CLIENT || flags & VOLUME_IS_CLEAN != 0,
    }))
}

/// Checks that the log (its data runs and size) holds no unapplied transactions.
pub fn check_clean(
    region: &Region,
    runs: &[Run],
    cluster: u64,
    size: u64,
) -> Result<(), MetaError> {
    if size < EMPTY_CHECK {
        return Err(corrupt!("ntfs $LogFile: only {size} bytes"));
    }
    let first = restart_page(region, runs, cluster, size, 0)?;
    let Some(first) = first else {
        let mut head = vec![0u8; EMPTY_CHECK as usize];
        runlist::read(region, runs, cluster, 0, &mut head, "$LogFile")?;
        if head.iter().all(|&b| b == 0xFF) {
            return Ok(());
        }
        return Err(corrupt!(
            "ntfs $LogFile: starts with neither a restart page nor an emptied log"
        ));
    };
    // The second restart page follows the first, one system page further.
    let second = restart_page(region, runs, cluster, size, first.page).unwrap_or(None);
    let newest = match second {
        Some(s) if s.current_lsn > first.current_lsn => s,
        _ => first,
    };
    if newest.clean {
        Ok(())
    } else {
        Err(MetaError::Unsupported(
            "ntfs $LogFile holds transactions not yet applied (the volume is mounted, was not \
             shut down cleanly, or is hibernated by Windows Fast Startup): $Bitmap may miss \
             clusters the log allocates"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::ntfs::record::tests::protect;

    /// A 16 KiB log of 4 KiB clusters at cluster 1 of a disk, with restart pages of
    /// `page` bytes whose restart areas say (current_lsn, client_in_use_list, flags).
    fn log(page: usize, pages: [(u64, u16, u16); 2]) -> Vec<u8> {
        let mut disk = vec![0xFFu8; 5 * 4096];
        for (i, (lsn, in_use, flags)) in pages.into_iter().enumerate() {
            let mut p = vec![0u8; page];
            p[0..4].copy_from_slice(b"RSTR");
            p[4..6].copy_from_slice(&0x1Eu16.to_le_bytes());
            p[6..8].copy_from_slice(&((page / 512 + 1) as u16).to_le_bytes());
            p[0x10..0x14].copy_from_slice(&(page as u32).to_le_bytes());
            p[0x14..0x18].copy_from_slice(&4096u32.to_le_bytes());
            p[0x18..0x1A].copy_from_slice(&0x40u16.to_le_bytes());
            p[0x1A..0x1C].copy_from_slice(&1u16.to_le_bytes());
            p[0x1C..0x1E].copy_from_slice(&1u16.to_le_bytes());
            p[0x40..0x48].copy_from_slice(&lsn.to_le_bytes());
            p[0x4C..0x4E].copy_from_slice(&in_use.to_le_bytes());
            p[0x4E..0x50].copy_from_slice(&flags.to_le_bytes());
            protect(&mut p);
            let at = 4096 + i * page;
            disk[at..at + page].copy_from_slice(&p);
        }
        disk
    }

    fn check(disk: &impl crate::ReadAt) -> Result<(), MetaError> {
        let runs = [Run {
            vcn: 0,
            lcn: 1,
            len: 4,
        }];
        check_clean(&Region::whole(disk), &runs, 4096, 16384)
    }

    #[test]
    fn emptied_log_is_clean() {
        assert!(check(&vec![0xFFu8; 5 * 4096]).is_ok());
        let mut d = vec![0xFFu8; 5 * 4096];
        d[4096 + 5000] = 0;
        assert!(matches!(check(&d), Err(MetaError::Corrupt(_))));
    }

    #[test]
    fn restart_area_decides() {
        assert!(check(&log(4096, [(10, NO_CLIENT, 0), (9, 0, 0)])).is_ok());
        assert!(check(&log(4096, [(10, 0, VOLUME_IS_CLEAN), (9, 0, 0)])).is_ok());
        let dirty = check(&log(4096, [(10, 0, 0), (9, NO_CLIENT, 0)]));
        assert!(matches!(dirty, Err(MetaError::Unsupported(_))), "{dirty:?}");
        // The newer of the two pages counts.
        let dirty = check(&log(4096, [(10, NO_CLIENT, 0), (11, 0, 0)]));
        assert!(matches!(dirty, Err(MetaError::Unsupported(_))));
        assert!(check(&log(2048, [(10, 0, 0), (11, NO_CLIENT, 0)])).is_ok());
    }

    #[test]
    fn rejects_torn_restart_page_and_chkdsk() {
        let mut d = log(4096, [(10, NO_CLIENT, 0), (9, NO_CLIENT, 0)]);
        d[4096 + 1022] ^= 1;
        assert!(matches!(check(&d), Err(MetaError::Corrupt(m)) if m.contains("fixup")));
        let mut d = log(4096, [(10, NO_CLIENT, 0), (9, NO_CLIENT, 0)]);
        d[4096..4100].copy_from_slice(b"CHKD");
        assert!(matches!(check(&d), Err(MetaError::Unsupported(_))));
        let mut d = log(4096, [(10, NO_CLIENT, 0), (9, NO_CLIENT, 0)]);
        d[4096 + 0x10..4096 + 0x14].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert!(matches!(check(&d), Err(MetaError::Corrupt(_))));
    }
}
