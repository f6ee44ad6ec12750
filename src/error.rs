//! The error a migration agent reports upward: every variant maps to a service error code.

use std::path::PathBuf;

use blockrep_chunk::ChunkError;
use blockrep_disk::DiskError;
use blockrep_proto::ProtocolError;

/// Service error codes (the migration service's `SMS.xxxx`): those of `blockrep-codes`, the
/// one home every crate of the workspace takes them from (`codes::ALL` lists them all).
pub mod codes {
    pub use blockrep_codes::*;
}

/// Why a transfer or a receiver failed. [`Error::code`] is the service error code to report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The receiver cannot be reached (`SMS.1807`).
    #[error("cannot connect to the target {addr}: {reason}; check that blockrep-receiver runs there and that its port is open")]
    Connect {
        /// The address tried.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The TLS handshake or the peer's certificate check failed (`SMS.0304`).
    #[error("TLS authentication with {peer} failed: {reason}")]
    Tls {
        /// The peer's address.
        peer: String,
        /// What went wrong, from rustls.
        reason: String,
    },
    /// A certificate, key or CA file cannot be loaded (`SMS.3301`).
    #[error("cannot load the {what} from {path}: {reason}")]
    Certificate {
        /// Which file: "CA certificate", "certificate chain", "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A source or target disk cannot be opened, read or written (its own code).
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A target disk of a session, named by its id, cannot be written or flushed (its own
    /// code: `SMS.2007`, `SMS.0519`).
    #[error("target disk {disk}: {source}")]
    TargetDisk {
        /// The disk id.
        disk: String,
        /// What failed.
        source: DiskError,
    },
    /// A received chunk failed its checks; nothing was written for it (`SMS.2009`/`SMS.2011`).
    #[error("chunk of disk {disk} at offset {offset}: {source}; nothing was written for it")]
    Chunk {
        /// The disk id.
        disk: String,
        /// The chunk's offset.
        offset: u64,
        /// What failed.
        source: ChunkError,
    },
    /// The peer broke the protocol (`SMS.2011`).
    #[error("the peer broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer ended the session with an error; its code is passed on unchanged.
    #[error("the {side} reported: {message}")]
    Peer {
        /// "receiver" or "sender".
        side: &'static str,
        /// The peer's code.
        code: String,
        /// The peer's message (control characters removed).
        message: String,
    },
    /// The connection failed or timed out during the transfer (`SMS.1908`).
    #[error("data transmission failed: {0}")]
    Transport(String),
    /// A target is smaller than its source (`SMS.1504`).
    #[error("target disk {disk} is {target} bytes, smaller than the {source_size}-byte source; use a target at least as large")]
    DiskSize {
        /// The disk id.
        disk: String,
        /// The source size.
        source_size: u64,
        /// The target size.
        target: u64,
    },
    /// A sender named a disk id the receiver was not configured with (`SMS.2013`).
    #[error("disk id {disk:?} is not one this receiver writes (it writes: {configured}); check the sender's --disk ids")]
    UnknownDisk {
        /// The id asked for.
        disk: String,
        /// The ids configured, comma-separated.
        configured: String,
    },
    /// Another session is writing the disk (`SMS.2013`).
    #[error("disk {disk:?} is being written by another session; one session per disk at a time")]
    DiskBusy {
        /// The disk id.
        disk: String,
    },
    /// The session id was started by another client certificate (`SMS.0304`).
    #[error("session {session:?} was started by another client certificate; only that client can resume it (use a new --session id)")]
    SessionOwner {
        /// The session id.
        session: String,
    },
    /// The client's certificate is from the client CA, but the receiver does not let this
    /// client in, or not onto a disk it asked for (`SMS.0304`).
    #[error("this client is not allowed: {why}")]
    ClientNotAllowed {
        /// Which rule refused it.
        why: String,
    },
    /// A verification of a session the receiver does not know (`SMS.1511`).
    #[error("the receiver has no session {session:?} to verify (nothing was migrated under this id there, or its journal was cleaned up); give the migration's --session id")]
    UnknownSession {
        /// The session id.
        session: String,
    },
    /// Another stream of a session that is not open here (`SMS.1908`, retryable).
    #[error("the receiver has no open session {session:?} for another stream to join (its first connection ended); the transfer reconnects")]
    NotOpen {
        /// The session id.
        session: String,
    },
    /// The session id was started with other disks (`SMS.1504`).
    #[error("session {session:?} was started with {journal}, but this sender announces {hello}; resume it with the same disks, or use a new --session id")]
    SessionLayout {
        /// The session id.
        session: String,
        /// The disks the session was started with.
        journal: String,
        /// The disks announced now.
        hello: String,
    },
    /// The receiver runs as many sessions as it may (`SMS.1908`).
    #[error("the receiver is busy with {sessions} sessions; retry later")]
    Busy {
        /// The session limit.
        sessions: usize,
    },
    /// The measured wire rate exceeded the limit by more than the over-speed threshold; the
    /// transfer stopped cleanly as a protection and can resume (`SMS.1908`).
    #[error("{0}; the transfer stopped as a protection and can be resumed")]
    OverSpeed(blockrep_rate::OverSpeed),
    /// Speed-limit rules that cannot be used (`SMS.6405`).
    #[error("speed limit rules: {0}")]
    Rules(#[from] blockrep_rate::RuleError),
    /// A consistency check could not be done (`SMS.1511`), with the reason.
    #[error("could not verify: {0}")]
    Verify(String),
    /// The configuration or arguments are not usable (`SMS.1908`: the transfer cannot run).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// The service error code for this error, to be reported unchanged.
    pub fn code(&self) -> &str {
        match self {
            Self::Connect { .. } => codes::CONNECT,
            Self::Tls { .. } => codes::TLS,
            Self::Certificate { .. } => codes::CERTIFICATE,
            Self::Disk(e) | Self::TargetDisk { source: e, .. } => e.code(),
            Self::Chunk { source, .. } => source.code(),
            Self::Protocol(_) => codes::RECEIVE,
            Self::Peer { code, .. } => code,
            Self::Transport(_) => codes::TRANSMISSION,
            Self::DiskSize { .. } | Self::SessionLayout { .. } => codes::DISK_SIZE,
            Self::SessionOwner { .. } | Self::ClientNotAllowed { .. } => codes::TLS,
            Self::UnknownDisk { .. } | Self::DiskBusy { .. } => codes::OPEN_DISK,
            Self::Busy { .. } | Self::Config(_) | Self::OverSpeed(_) | Self::NotOpen { .. } => {
                codes::TRANSMISSION
            }
            Self::Rules(e) => e.code(),
            Self::Verify(_) | Self::UnknownSession { .. } => codes::VERIFY,
        }
    }

    /// Whether trying again later may succeed: the connection failed or dropped, or the
    /// receiver was busy or restarting. Not for what a retry would only repeat (refusals,
    /// disk errors, bad data, protection stops).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Transport(_)
            | Self::Busy { .. }
            | Self::NotOpen { .. } => true,
            Self::Peer { code, .. } => code == codes::TRANSMISSION,
            _ => false,
        }
    }

    /// The one line a user sees: `error SMS.xxxx: <what happened and what to do>`.
    pub fn user_line(&self) -> String {
        format!("error {}: {}", self.code(), self)
    }
}

/// Removes control characters from text a peer sent, so it cannot rewrite a terminal.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
