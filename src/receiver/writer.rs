//! The writer thread of a session: verify each chunk, write it, sync in batches, and report
//! what is durable. Only what this thread reports as durable is ever acknowledged.

use std::sync::Arc;

use blockrep_chunk::Verified;
use blockrep_disk::TargetDisk;
use blockrep_proto::Data;
use tokio::sync::mpsc;

use crate::Error;

/// Unsynced bytes after which the writer syncs and acknowledges even while data keeps coming.
/// Below the sender's default window, so a sender never waits on a batch that cannot fill.
const SYNC_BATCH: u64 = 32 << 20;

/// Messages from the connection task to its writer thread.
pub(super) enum WriteMsg {
    Data(Data),
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

/// The writer thread: verify, write, sync in batches, report what is durable.
pub(super) fn write_loop(
    targets: Vec<Arc<TargetDisk>>,
    ids: Vec<String>,
    mut rx: mpsc::Receiver<WriteMsg>,
    events: mpsc::UnboundedSender<WriterEvent>,
) {
    let mut scratch = Vec::new();
    let mut dirty = vec![false; targets.len()];
    let (mut frames, mut bytes, mut unsynced) = (0u64, 0u64, 0u64);
    let (mut data_bytes, mut zero_bytes) = (0u64, 0u64);
    let sync = |dirty: &mut [bool]| -> Result<(), Error> {
        for (i, d) in dirty.iter_mut().enumerate() {
            if std::mem::take(d) {
                targets[i].sync()?;
            }
        }
        Ok(())
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => Some(msg),
            Err(mpsc::error::TryRecvError::Empty) => {
                // The sender paused or we caught up: make everything durable and say so.
                if unsynced > 0 {
                    if let Err(e) = sync(&mut dirty) {
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
        let Some(WriteMsg::Data(data)) = msg else {
            match sync(&mut dirty) {
                Ok(()) => {
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
            targets[disk].write(data.offset, &chunk)?;
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
            }
            Err(e) => {
                // Keep what is already written durable; the failed chunk was not written.
                let _ = sync(&mut dirty);
                let _ = events.send(WriterEvent::Durable { frames, bytes });
                let _ = events.send(WriterEvent::Failed(e));
                return;
            }
        }
        if unsynced >= SYNC_BATCH {
            if let Err(e) = sync(&mut dirty) {
                let _ = events.send(WriterEvent::Failed(e));
                return;
            }
            unsynced = 0;
            let _ = events.send(WriterEvent::Durable { frames, bytes });
        }
    }
}
