//! The writer thread of a session: verify each chunk, write it, sync in batches, and report
//! what is durable. Only what this thread reports as durable is ever acknowledged.

use std::sync::Arc;

use blockrep_chunk::Verified;
use blockrep_disk::TargetDisk;
use blockrep_proto::Data;
use tokio::sync::mpsc;

use super::journal::Journal;
use crate::Error;

/// Unsynced bytes after which the writer syncs and acknowledges even while data keeps coming.
/// Below the sender's default window, so a sender never waits on a batch that cannot fill.
const SYNC_BATCH: u64 = 32 << 20;

/// Messages from the connection task to its writer thread.
pub(super) enum WriteMsg {
    Data(Data),
    /// The sender's END: whether it sent everything it planned. The last message.
    End {
        complete: bool,
    },
}

/// Messages from the writer thread back.
pub(super) enum WriterEvent {
    /// The first `frames` frames (`bytes` raw bytes) are durable.
    Durable { frames: u64, bytes: u64 },
    /// The queue closed and everything written is durable.
    Finished { data_bytes: u64, zero_bytes: u64 },
    /// Writing failed; nothing after this frame was written.
    Failed(Error),
}

/// The session journal, if there is one: what is durable, recorded after each sync. A
/// journal that cannot be written is dropped with a warning; the session goes on, and a
/// resumption will just send more again.
struct Record {
    journal: Option<Journal>,
    /// Ranges written since the last sync: (disk, offset, length), adjacent ones merged.
    pending: Vec<(u16, u64, u64)>,
}

impl Record {
    fn written(&mut self, disk: u16, offset: u64, len: u64) {
        if self.journal.is_none() {
            return;
        }
        match self.pending.last_mut() {
            Some((d, o, l)) if *d == disk && *o + *l == offset => *l += len,
            _ => self.pending.push((disk, offset, len)),
        }
    }

    /// After a sync: the pending ranges are durable.
    fn synced(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if let Some(j) = &mut self.journal {
            if let Err(e) = j.record(&pending) {
                tracing::warn!("{e}; the session continues without its journal");
                self.journal = None;
            }
        }
    }

    fn finish(&mut self) {
        if let Some(j) = &mut self.journal {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(e) = j.finish(now) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// The writer thread: verify, write, sync in batches, report what is durable (and record it
/// in the session's journal before reporting it).
pub(super) fn write_loop(
    targets: Vec<Arc<TargetDisk>>,
    ids: Vec<String>,
    mut rx: mpsc::Receiver<WriteMsg>,
    events: mpsc::UnboundedSender<WriterEvent>,
    journal: Option<Journal>,
) {
    let mut scratch = Vec::new();
    let mut dirty = vec![false; targets.len()];
    let (mut frames, mut bytes, mut unsynced) = (0u64, 0u64, 0u64);
    let (mut data_bytes, mut zero_bytes) = (0u64, 0u64);
    let mut record = Record {
        journal,
        pending: Vec::new(),
    };
    let mut complete = false;
    let sync = |dirty: &mut [bool], record: &mut Record| -> Result<(), Error> {
        for (i, d) in dirty.iter_mut().enumerate() {
            if std::mem::take(d) {
                targets[i].sync().map_err(|source| Error::TargetDisk {
                    disk: ids[i].clone(),
                    source,
                })?;
            }
        }
        record.synced();
        Ok(())
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => Some(msg),
            Err(mpsc::error::TryRecvError::Empty) => {
                // The sender paused or we caught up: make everything durable and say so.
                if unsynced > 0 {
                    if let Err(e) = sync(&mut dirty, &mut record) {
                        let _ = events.send(WriterEvent::Failed(e));
                        return;
                    }
                    unsynced = 0;
                    let _ = events.send(WriterEvent::Durable { frames, bytes });
                }
                rx.blocking_recv()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        if let Some(WriteMsg::End { complete: c }) = msg {
            complete = c;
            continue;
        }
        let Some(WriteMsg::Data(data)) = msg else {
            match sync(&mut dirty, &mut record) {
                Ok(()) => {
                    if complete {
                        record.finish();
                    }
                    let _ = events.send(WriterEvent::Durable { frames, bytes });
                    let _ = events.send(WriterEvent::Finished {
                        data_bytes,
                        zero_bytes,
                    });
                }
                Err(e) => {
                    let _ = events.send(WriterEvent::Failed(e));
                }
            }
            return;
        };
        let disk = usize::from(data.disk);
        let fail = |source| Error::Chunk {
            disk: ids[disk].clone(),
            offset: data.offset,
            source,
        };
        let written = blockrep_chunk::verify(
            data.encoding,
            data.raw_len as usize,
            &data.digest,
            &data.payload,
            &mut scratch,
        )
        .map_err(fail)
        .and_then(|chunk: Verified<'_>| {
            targets[disk]
                .write(data.offset, &chunk)
                .map_err(|source| Error::TargetDisk {
                    disk: ids[disk].clone(),
                    source,
                })?;
            Ok(chunk.is_zero())
        });
        match written {
            Ok(zero) => {
                let len = u64::from(data.raw_len);
                if zero {
                    zero_bytes += len;
                } else {
                    data_bytes += len;
                }
                frames += 1;
                bytes += len;
                unsynced += len;
                dirty[disk] = true;
                record.written(data.disk, data.offset, len);
            }
            Err(e) => {
                // Keep what is already written durable; the failed chunk was not written.
                let _ = sync(&mut dirty, &mut record);
                let _ = events.send(WriterEvent::Durable { frames, bytes });
                let _ = events.send(WriterEvent::Failed(e));
                return;
            }
        }
        if unsynced >= SYNC_BATCH {
            if let Err(e) = sync(&mut dirty, &mut record) {
                let _ = events.send(WriterEvent::Failed(e));
                return;
            }
            unsynced = 0;
            let _ = events.send(WriterEvent::Durable { frames, bytes });
        }
    }
}
