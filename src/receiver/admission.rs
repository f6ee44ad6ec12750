//! Which disks a session may open: the configured ones, not in use by another session, at
//! least as large as their sources; and whether a session may be taken up again by this
//! client with these disks.

use std::sync::Arc;

use blockrep_disk::TargetDisk;
use blockrep_proto::ReceiverSession;
use tracing::{info, warn};

use super::journal::{self, DiskLayout};
use super::Shared;
use crate::Error;

/// Marks disks as in use by one session; released on drop.
pub(super) struct DiskClaim<'a> {
    shared: &'a Shared,
    ids: Vec<String>,
}

impl Drop for DiskClaim<'_> {
    fn drop(&mut self) {
        let mut busy = self
            .shared
            .busy_disks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            busy.remove(id);
        }
    }
}

/// Checks the announced disks against the configuration and opens the targets.
pub(super) fn open_targets<'a>(
    shared: &'a Shared,
    session: &ReceiverSession,
) -> Result<(Vec<Arc<TargetDisk>>, DiskClaim<'a>), Error> {
    let mut claim = DiskClaim {
        shared,
        ids: Vec::new(),
    };
    let mut targets = Vec::new();
    for disk in session.disks() {
        let Some(path) = shared.config.disks.get(&disk.id) else {
            let known: Vec<&str> = shared.config.disks.keys().map(String::as_str).collect();
            return Err(Error::UnknownDisk {
                disk: disk.id.clone(),
                configured: known.join(", "),
            });
        };
        let fresh = shared
            .busy_disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(disk.id.clone());
        if !fresh {
            return Err(Error::DiskBusy {
                disk: disk.id.clone(),
            });
        }
        claim.ids.push(disk.id.clone());
        let mut target = TargetDisk::open(path)?;
        if target.size() < disk.size && target.kind() == blockrep_disk::DiskKind::File {
            // An image file grows (sparse) to the source's size: a target made too small, or
            // cut short since, is then written, compared and repaired like any other.
            warn!(
                disk = %disk.id,
                "target file {} is {} bytes, the source {}: growing it",
                path.display(),
                target.size(),
                disk.size
            );
            let grown = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(disk.size));
            if let Err(e) = grown {
                warn!(disk = %disk.id, "cannot grow {}: {e}", path.display());
            }
            target = TargetDisk::open(path)?;
        }
        if target.size() < disk.size {
            return Err(Error::DiskSize {
                disk: disk.id.clone(),
                source_size: disk.size,
                target: target.size(),
            });
        }
        if let Some(why) = target.direct_unavailable() {
            info!(
                disk = %disk.id,
                "writing {} through the page cache, since {why}",
                path.display()
            );
        }
        targets.push(Arc::new(target));
    }
    Ok((targets, claim))
}

pub(super) fn layout(disks: &[blockrep_proto::DiskAnnounce]) -> Vec<DiskLayout> {
    disks
        .iter()
        .map(|d| DiskLayout {
            id: d.id.clone(),
            size: d.size,
            block_size: d.block_size,
        })
        .collect()
}

/// Only the client that started a session may take it up again, and only with its disks.
pub(super) fn check_resumable(
    l: &journal::Loaded,
    session_id: &str,
    client: [u8; 32],
    disks: &[blockrep_proto::DiskAnnounce],
) -> Result<(), Error> {
    check_same(l.header.client, &l.header.disks, session_id, client, disks)
}

/// `client` is the client that started session `session_id` (`started_by`).
pub(super) fn check_owner(
    started_by: [u8; 32],
    session_id: &str,
    client: [u8; 32],
) -> Result<(), Error> {
    if started_by != client {
        return Err(Error::SessionOwner {
            session: session_id.into(),
        });
    }
    Ok(())
}

/// `client` with `disks` is the client that started session `session_id` (`started_by`),
/// with its disks (`started_with`).
pub(super) fn check_same(
    started_by: [u8; 32],
    started_with: &[DiskLayout],
    session_id: &str,
    client: [u8; 32],
    disks: &[blockrep_proto::DiskAnnounce],
) -> Result<(), Error> {
    check_owner(started_by, session_id, client)?;
    let now = layout(disks);
    if started_with != now {
        let describe = |l: &[DiskLayout]| {
            l.iter()
                .map(|d| format!("{} ({} bytes, block {})", d.id, d.size, d.block_size))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::SessionLayout {
            session: session_id.into(),
            journal: describe(started_with),
            hello: describe(&now),
        });
    }
    Ok(())
}
