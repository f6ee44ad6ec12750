//! The receiver: accepts mutually authenticated TLS sessions and writes verified chunks to the
//! target disks it was configured with, and to nothing else.
//!
//! Per connection, a task reads frames and a pool of writer threads verifies (lz4, blake3) and
//! writes them; what is durable (fdatasync'ed) is reported and only then acknowledged. A
//! session may come over several connections (streams): the first opens it and claims its
//! disks, the others join it (HELLO JOIN) and write to the same disks and journal.
//!
//! The modules, in the order a connection meets them:
//!
//! - `accept`: [`serve`], the accept loop, connection budgets, shutdown, how connections ended;
//! - `connection`: TLS, the HELLO, and the session's end;
//! - `identity`: who the client is, and which clients may use the receiver and each disk;
//! - `admission`: which disks a session may open, and opening them;
//! - `resume`: what a session's journal says it holds already;
//! - `session`: a session's first connection, and the loop of WELCOME, DATA, HASH_REQUESTs
//!   and END;
//! - `streams`: more connections joining an open session (HELLO JOIN);
//! - `netcheck`: network checks (PING/PONG);
//! - `writer`, `hasher`, `journal`, `live`: the threads that write and hash, the journals,
//!   and the sessions running now.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

mod accept;
mod admission;
mod config;
mod connection;
mod hasher;
mod identity;
pub(crate) mod journal;
mod live;
mod netcheck;
mod resume;
mod session;
mod streams;
mod writer;

pub use accept::serve;
pub use config::ReceiverConfig;
pub use identity::{ClientAccess, ClientRule};

use journal::JournalDir;
use streams::OpenSession;

/// What one session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// The session id the sender gave.
    pub session_id: String,
    /// The sender's address.
    pub peer: SocketAddr,
    /// True when the sender sent everything it planned (END complete) and all of it is durable.
    pub complete: bool,
    /// DATA frames durable.
    pub frames: u64,
    /// Raw bytes durable.
    pub bytes: u64,
    /// Bytes written as data.
    pub data_bytes: u64,
    /// Bytes zeroed.
    pub zero_bytes: u64,
}

/// What [`serve`] did before it returned.
#[derive(Debug, Default)]
pub struct ServeOutcome {
    /// Sessions that ended well.
    pub succeeded: u64,
    /// Sessions that ended with an error.
    pub failed: u64,
    /// With `once`: the first session's result.
    pub first: Option<Result<SessionReport, String>>,
    /// More streams of sessions (HELLO JOIN) that ended well; a session's own figures are its
    /// first connection's.
    pub streams: u64,
    /// The raw bytes those streams made durable.
    pub stream_bytes: u64,
}

/// What every connection of a receiver shares.
struct Shared {
    config: ReceiverConfig,
    acceptor: TlsAcceptor,
    sessions: Arc<Semaphore>,
    busy_disks: Mutex<HashSet<String>>,
    live: live::Live,
    journals: Option<JournalDir>,
    /// Sessions open on their first connection, which more streams may join, by id.
    open: Mutex<HashMap<String, Arc<OpenSession>>>,
}
