//! A session's first connection (or a verification): taking the session over from a lost
//! connection, its permit, disks and journal, then the loop of WELCOME, DATA, HASH_REQUESTs
//! and END, with writes and hashes on threads of their own.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use blockrep_disk::TargetDisk;
use blockrep_proto::ReceiverEvent;
use tokio::sync::mpsc;
use tracing::info;

use super::admission::{grow, layout, open_targets};
use super::connection::{read_error, sender_error, Conn};
use super::hasher::Hasher;
use super::live;
use super::netcheck::serve_netcheck;
use super::resume::{open_journal, verify_journal};
use super::streams::{run_joined, OpenGuard, OpenSession};
use super::writer::{write_loop, SharedJournal, WriteMsg, WriterEvent};
use super::{SessionReport, Shared};
use crate::Error;

/// DATA frames queued between a connection's reader and its writer thread.
const WRITE_QUEUE: usize = 16;

/// A connection's session: a stream joining an open one, a network check, or a session's
/// first connection (or a verification), which takes the session over from a lost
/// connection of it, takes a session permit, opens the disks and the journal, and opens the
/// session to more streams.
pub(super) async fn run_session(conn: &mut Conn, shared: &Shared) -> Result<SessionReport, Error> {
    if conn.client.join {
        return run_joined(conn, shared).await;
    }
    if conn.session.netcheck() {
        let report = serve_netcheck(conn, shared).await;
        return finish_session(conn, report).await;
    }
    let (session_id, cert, verify) = (
        conn.session_id.clone(),
        conn.client.cert,
        conn.client.verify,
    );
    // First take the session over from an earlier connection of it (a sender reconnecting
    // before this receiver noticed the old connection died), then count it.
    // A verification runs beside its session, not in its place.
    let key = if verify {
        format!("{session_id}#verify")
    } else {
        session_id.clone()
    };
    let live = shared.live.register(&key, cert).await?;
    let Ok(_session_permit) = shared.sessions.clone().try_acquire_owned() else {
        return Err(Error::Busy {
            sessions: shared.config.max_sessions,
        });
    };
    let _active = shared.config.metrics.session_active();
    let (mut targets, growth, claim) = open_targets(shared, &conn.session, &conn.client)?;
    let (held, journal) = match &shared.journals {
        Some(dir) => {
            let (dir, id, disks) = (
                dir.clone(),
                session_id.clone(),
                conn.session.disks().to_vec(),
            );
            tokio::task::spawn_blocking(move || {
                if verify {
                    verify_journal(&dir, &id, cert, &disks)
                } else {
                    open_journal(&dir, &id, cert, &disks)
                }
            })
            .await
            .map_err(|e| Error::Transport(format!("reading the session journal failed: {e}")))??
        }
        None => (vec![Vec::new(); targets.len()], None),
    };
    grow(&conn.session, &mut targets, growth)?;
    let journal: SharedJournal = Arc::new(Mutex::new(journal));
    // Open to more streams of the same client, before the sender hears WELCOME.
    let open = (!verify).then(|| {
        let open = Arc::new(OpenSession {
            client: cert,
            disks: layout(conn.session.disks()),
            targets: targets.clone(),
            journal: journal.clone(),
        });
        let mut map = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(session_id.clone(), open.clone());
        OpenGuard {
            shared,
            id: session_id.clone(),
            open,
        }
    });
    let stream = Stream {
        live: &live,
        targets,
        held,
        journal: Some(journal),
        finishes: true,
        verify,
    };
    let report = serve_session(conn, shared, stream).await;
    // The disks are released before DONE, so the sender's next round finds them free.
    drop(open);
    drop(claim);
    finish_session(conn, report).await
}

/// What a connection's session works with.
pub(super) struct Stream<'a> {
    pub live: &'a live::Registration<'a>,
    pub targets: Vec<Arc<TargetDisk>>,
    /// What the session holds already, per disk, for the WELCOME.
    pub held: Vec<Vec<blockrep_proto::Extent>>,
    pub journal: Option<SharedJournal>,
    /// Whether this connection's complete END finishes the session's journal.
    pub finishes: bool,
    pub verify: bool,
}

/// After a session's frames: DONE, with what was written.
pub(super) async fn finish_session(
    conn: &mut Conn,
    report: Result<SessionReport, Error>,
) -> Result<SessionReport, Error> {
    let report = report?;
    let done = conn.session.done(report.data_bytes, report.zero_bytes);
    conn.send(&done, "DONE").await?;
    Ok(report)
}

/// WELCOME, then DATA, HASH_REQUESTs and END until the session ends; writes and hashes on
/// threads of their own.
pub(super) async fn serve_session(
    conn: &mut Conn,
    shared: &Shared,
    stream: Stream<'_>,
) -> Result<SessionReport, Error> {
    let Stream {
        live,
        targets,
        held,
        journal,
        finishes,
        verify,
    } = stream;
    let (peer, session_id) = (conn.peer(), conn.session_id.clone());
    let welcome = conn.session.accept(crate::VERSION, held);
    conn.send(&welcome, "WELCOME").await?;

    let ids: Vec<String> = conn.session.disks().iter().map(|d| d.id.clone()).collect();
    let mut hasher = Hasher::new(targets.clone());
    let (data_tx, data_rx) = mpsc::channel::<WriteMsg>(WRITE_QUEUE);
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let metrics = shared.config.metrics.clone();
    let writer = thread::Builder::new()
        .name("blockrep-write".into())
        .spawn(move || write_loop(targets, ids, data_rx, event_tx, journal, finishes, metrics))
        .map_err(|e| Error::Transport(format!("cannot start a writer thread: {e}")))?;
    let mut data_tx = Some(data_tx);
    let mut complete = None;
    let idle = shared.config.idle_timeout;
    let mut last_frame = Instant::now();
    let result = loop {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(WriterEvent::Durable { frames, bytes }) => {
                    if let Some(ack) = conn.session.durable(frames, bytes) {
                        conn.send(&ack, "ACK").await?;
                    }
                }
                Some(WriterEvent::Finished { data_bytes, zero_bytes }) => {
                    let Some(complete) = complete else {
                        break Err(Error::Transport("the receiver is shutting down; the transfer can resume later".into()));
                    };
                    let (frames, bytes) = conn.session.received();
                    break Ok(SessionReport { session_id: session_id.clone(), peer, complete, frames, bytes, data_bytes, zero_bytes });
                }
                Some(WriterEvent::Failed(e)) => break Err(e),
                None => break Err(Error::Transport("the writer thread ended unexpectedly".into())),
            },
            answer = hasher.next(), if hasher.pending() => {
                let Some(answer) = answer else {
                    break Err(Error::Transport("the hashing threads ended unexpectedly".into()));
                };
                let answer = match answer {
                    Ok(a) => a,
                    Err(e) => break Err(e),
                };
                let frame = conn.session.hashes(answer);
                conn.send(&frame, "HASHES").await?;
            }
            _ = conn.stop.changed(), if data_tx.is_some() && complete.is_none() => {
                // Shutdown: write what is queued, sync, acknowledge, then tell the sender.
                data_tx = None;
            }
            _ = live.cancelled(), if data_tx.is_some() => {
                // The sender reconnected: finish the writes queued here, then make way.
                info!(%peer, session = %session_id, "the session continues on a new connection");
                data_tx = None;
                complete = None;
            }
            frame = conn.reader.read_frame(), if data_tx.is_some() => {
                last_frame = Instant::now();
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break Err(Error::Transport(format!("the sender {peer} closed the connection mid-session"))),
                    Err(e) => break Err(read_error(e, peer)),
                };
                match conn.session.handle_frame(frame) {
                    Ok(ReceiverEvent::Data(_)) if verify => {
                        break Err(Error::Protocol(blockrep_proto::ProtocolError::Unexpected {
                            frame: blockrep_proto::FrameType::Data,
                            state: "verifying (a verification writes nothing)",
                        }));
                    }
                    Ok(ReceiverEvent::Data(data)) => {
                        shared.config.metrics.received(data.payload.len());
                        if let Some(tx) = &data_tx {
                            // A closed queue means the writer failed; its event says why.
                            let _ = tx.send(WriteMsg::Data(data)).await;
                        }
                    }
                    Ok(ReceiverEvent::End(end)) => {
                        complete = Some(end.complete);
                        if let Some(tx) = data_tx.take() {
                            let _ = tx.send(WriteMsg::End { complete: end.complete }).await;
                        }
                    }
                    Ok(ReceiverEvent::PeerError(e)) => break Err(sender_error(e)),
                    Ok(ReceiverEvent::HashRequest(req)) => {
                        hasher.submit(req);
                    }
                    Ok(ReceiverEvent::Hello(_)) => unreachable!("the session refuses a second HELLO"),
                    Ok(ReceiverEvent::Ping(_)) => unreachable!("PINGs come only in network checks, served by serve_netcheck"),
                    Err(e) => break Err(e.into()),
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(last_frame + idle)), if data_tx.is_some() && !hasher.pending() => {
                break Err(Error::Transport(format!("no frame from the sender {peer} for {} s; closing", idle.as_secs())));
            }
        }
    };
    // On every path the writer drains its queue and syncs before the session is reported.
    drop(data_tx);
    drop(events);
    let _ = tokio::task::spawn_blocking(move || {
        drop(hasher); // joins its threads, which may be mid-request
        writer.join()
    })
    .await;
    result
}
