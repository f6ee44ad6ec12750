//! More connections of a session (HELLO JOIN): a session open on its first connection shares
//! its disks and journal with the streams of the same client that join it.

use std::sync::Arc;

use super::admission::check_same;
use super::connection::Conn;
use super::journal::DiskLayout;
use super::session::{finish_session, serve_session, Stream};
use super::writer::SharedJournal;
use super::{SessionReport, Shared};
use crate::Error;
use blockrep_disk::TargetDisk;

/// What a stream joining a session shares with the session's first connection.
pub(super) struct OpenSession {
    pub client: [u8; 32],
    pub disks: Vec<DiskLayout>,
    pub targets: Vec<Arc<TargetDisk>>,
    pub journal: SharedJournal,
}

/// A session's place among the open ones; on drop it is removed (unless a newer connection
/// of the session replaced it) and its journal closed to joined streams.
pub(super) struct OpenGuard<'a> {
    pub shared: &'a Shared,
    pub id: String,
    pub open: Arc<OpenSession>,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        if open
            .get(&self.id)
            .is_some_and(|o| Arc::ptr_eq(o, &self.open))
        {
            open.remove(&self.id);
        }
        *self.open.journal.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A stream joining the open session of its HELLO: the session's disks and journal, no
/// claim of its own.
pub(super) async fn run_joined(conn: &mut Conn, shared: &Shared) -> Result<SessionReport, Error> {
    let (peer, session_id) = (conn.peer(), conn.session_id.clone());
    let open = shared
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&session_id)
        .cloned()
        .ok_or_else(|| Error::NotOpen {
            session: session_id.clone(),
        })?;
    check_same(
        open.client,
        &open.disks,
        &session_id,
        conn.client.cert,
        conn.session.disks(),
    )?;
    // Registered under a key of its own: nothing takes a stream over.
    let live = shared
        .live
        .register(&format!("{session_id}#{peer}"), conn.client.cert)
        .await?;
    let stream = Stream {
        live: &live,
        targets: open.targets.clone(),
        held: vec![Vec::new(); open.targets.len()],
        journal: Some(open.journal.clone()),
        finishes: false,
        verify: false,
    };
    let report = serve_session(conn, shared, stream).await;
    finish_session(conn, report).await
}
