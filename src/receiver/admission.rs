//! Which disks a session may open: the configured ones, not in use by another session, at
//! least as large as their sources; and whether a session may be taken up again by this
//! client with these disks.

use std::sync::Arc;

use blockrep_disk::TargetDisk;
use blockrep_proto::ReceiverSession;
use tracing::{info, warn};

use super::connection::Client;
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

/// An image-file target smaller than its source, to be grown once every check passed.
pub(super) struct Growth {
    index: usize,
    size: u64,
}

/// A session's targets, the image files among them to grow, and its claim on their disks.
pub(super) type Opened<'a> = (Vec<Arc<TargetDisk>>, Vec<Growth>, DiskClaim<'a>);

/// Checks the announced disks against the configuration and this client's access, claims
/// them and opens the targets. A target smaller than its source is `SMS.1504`, unless it is an
/// image file and the receiver runs with `--grow-images`: then it is listed to [`grow`] after the session's other checks.
pub(super) fn open_targets<'a>(
    shared: &'a Shared,
    session: &ReceiverSession,
    client: &Client,
) -> Result<Opened<'a>, Error> {
    let config = &shared.config;
    // Access first, for every disk, before anything is claimed or opened: a client learns
    // nothing about a disk it may not use.
    for disk in session.disks() {
        if config.disks.contains_key(&disk.id)
            && !config.access.allows_disk(&client.identity, &disk.id)
        {
            return Err(Error::ClientNotAllowed {
                why: format!(
                    "its certificate ({}) may not use disk {:?}",
                    client.identity, disk.id
                ),
            });
        }
    }
    let mut claim = DiskClaim {
        shared,
        ids: Vec::new(),
    };
    let mut targets = Vec::new();
    let mut growth = Vec::new();
    for (index, disk) in session.disks().iter().enumerate() {
        let Some(path) = config.disks.get(&disk.id) else {
            let usable: Vec<&str> = config
                .disks
                .keys()
                .filter(|id| config.access.allows_disk(&client.identity, id))
                .map(String::as_str)
                .collect();
            return Err(Error::UnknownDisk {
                disk: disk.id.clone(),
                configured: usable.join(", "),
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
        let target = TargetDisk::open(path)?;
        if target.size() < disk.size {
            // Growing only appends zeros: a verification may grow too, and then finds the
            // missing tail as differences.
            let growable = config.grow_images && target.kind() == blockrep_disk::DiskKind::File;
            if !growable {
                return Err(Error::DiskSize {
                    disk: disk.id.clone(),
                    source_size: disk.size,
                    target: target.size(),
                });
            }
            growth.push(Growth {
                index,
                size: disk.size,
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
    Ok((targets, growth, claim))
}

/// Grows the image files listed by [`open_targets`] (sparse) to their sources' sizes and
/// opens them again: a target made too small, or cut short since, is then written, compared
/// and repaired like any other.
pub(super) fn grow(
    session: &ReceiverSession,
    targets: &mut [Arc<TargetDisk>],
    growth: Vec<Growth>,
) -> Result<(), Error> {
    for Growth { index, size } in growth {
        let id = &session.disks()[index].id;
        let path = targets[index].path().to_owned();
        warn!(
            disk = %id,
            "target file {} is {} bytes, the source {size}: growing it (--grow-images)",
            path.display(),
            targets[index].size(),
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(size))
            .map_err(|source| Error::TargetDisk {
                disk: id.clone(),
                source: blockrep_disk::DiskError::Write {
                    path: path.clone(),
                    offset: size,
                    source,
                },
            })?;
        targets[index] = Arc::new(TargetDisk::open(&path)?);
    }
    Ok(())
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
