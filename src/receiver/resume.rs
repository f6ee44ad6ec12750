//! What a session's journal says it holds already: the ranges a resuming sender need not send
//! again, and the journal the session records into.

use blockrep_blockmap::ExtentSet;
use tracing::{info, warn};

use super::admission::{check_owner, check_resumable, layout};
use super::journal::{Header, Journal, JournalDir};
use crate::Error;

/// What a session holds already, per disk, for its WELCOME.
pub(super) type Held = Vec<Vec<blockrep_proto::Extent>>;

/// A verification's journal: it holds nothing and writes no journal, but it verifies only a
/// session this receiver knows, for its client, with its disks.
pub(super) fn verify_journal(
    dir: &JournalDir,
    session_id: &str,
    client: [u8; 32],
    disks: &[blockrep_proto::DiskAnnounce],
) -> Result<(Held, Option<Journal>), Error> {
    let loaded = dir
        .load(session_id)
        .ok()
        .flatten()
        .ok_or_else(|| Error::UnknownSession {
            session: session_id.into(),
        })?;
    check_resumable(&loaded, session_id, client, disks)?;
    Ok((vec![Vec::new(); disks.len()], None))
}

/// The session's journal: what it already holds, if it is resumed (only by the client that
/// started it, with the same disks), and the journal to record into. A journal that cannot be
/// read or written is no reason to refuse the session: it then just starts from nothing.
///
/// Only an interrupted session resumes. A session whose journal says it finished is a new
/// transfer under the same id (the same command run again after the source changed): it
/// holds nothing and starts a new journal, so it sends everything it plans again; a
/// finished session is never a reason to skip data.
pub(super) fn open_journal(
    dir: &JournalDir,
    session_id: &str,
    client: [u8; 32],
    disks: &[blockrep_proto::DiskAnnounce],
) -> Result<(Held, Option<Journal>), Error> {
    let mut held = vec![Vec::new(); disks.len()];
    let loaded = dir.load(session_id).unwrap_or_else(|e| {
        warn!(session = %session_id, "{e}; starting the session afresh");
        None
    });
    let header = || Header {
        session_id: session_id.into(),
        client,
        disks: layout(disks),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let journal = match loaded {
        Some(l) if l.finished.is_some() => {
            // Still only its client may use the id; the disks may have changed since.
            check_owner(l.header.client, session_id, client)?;
            info!(
                session = %session_id,
                "the session finished earlier: this is a new transfer under its id, nothing is taken as held"
            );
            dir.create(header())
        }
        Some(l) => {
            check_resumable(&l, session_id, client, disks)?;
            // The largest ranges first, within what one WELCOME may list; the sender sends
            // whatever is not listed.
            let mut all: Vec<(usize, blockrep_proto::Extent)> = l
                .durable
                .iter()
                .enumerate()
                .flat_map(|(i, set)| {
                    set.iter().map(move |e| {
                        (
                            i,
                            blockrep_proto::Extent {
                                offset: e.offset,
                                len: e.len,
                            },
                        )
                    })
                })
                .collect();
            all.sort_by_key(|(_, e)| std::cmp::Reverse(e.len));
            all.truncate(blockrep_proto::consts::MAX_HELD_EXTENTS as usize);
            all.sort_by_key(|(i, e)| (*i, e.offset));
            for (i, e) in all {
                held[i].push(e);
            }
            info!(
                session = %session_id,
                held = l.durable.iter().map(ExtentSet::total).sum::<u64>(),
                "resuming the session from its journal"
            );
            dir.resume(&l)
        }
        None => dir.create(header()),
    };
    let journal = journal
        .map_err(|e| warn!(session = %session_id, "{e}; the session runs without a journal"))
        .ok();
    Ok((held, journal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockrep_proto::DiskAnnounce;

    fn disks(size: u64) -> Vec<DiskAnnounce> {
        vec![DiskAnnounce {
            id: "d0".into(),
            size,
            block_size: 1 << 20,
        }]
    }

    #[test]
    fn a_journal_is_resumed_only_by_its_client_with_its_disks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = JournalDir::open(tmp.path()).unwrap();
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        // A new session: nothing held, a fresh journal.
        let (held, journal) = open_journal(&dir, "s1", alice, &disks(8 << 20)).unwrap();
        assert_eq!(held, vec![Vec::new()]);
        let mut journal = journal.expect("a journal");
        journal
            .record(&[(0, 0, 1 << 20), (0, 3 << 20, 1 << 20)])
            .unwrap();
        drop(journal);
        // The same client and disks: what is durable is held.
        let (held, _) = open_journal(&dir, "s1", alice, &disks(8 << 20)).unwrap();
        let held: Vec<(u64, u64)> = held[0].iter().map(|e| (e.offset, e.len)).collect();
        assert_eq!(held, vec![(0, 1 << 20), (3 << 20, 1 << 20)]);
        // Another client certificate: refused, whatever the disks.
        let e = open_journal(&dir, "s1", bob, &disks(8 << 20)).unwrap_err();
        assert!(matches!(e, Error::SessionOwner { .. }), "{e}");
        assert_eq!(e.code(), "SMS.0304");
        // The same client with other disks: refused, saying what the session was started with.
        let e = open_journal(&dir, "s1", alice, &disks(16 << 20)).unwrap_err();
        assert!(matches!(e, Error::SessionLayout { .. }), "{e}");
        assert_eq!(e.code(), "SMS.1504");
        assert!(e.to_string().contains("d0 (8388608 bytes"), "{e}");
    }
}
