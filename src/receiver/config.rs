//! How a receiver runs: its TLS, its target disks, its limits, and the checks at start.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blockrep_disk::TargetDisk;

use super::identity::ClientAccess;
use super::journal::JournalDir;
use crate::metrics::Metrics;
use crate::Error;

/// How a receiver runs.
#[derive(Clone)]
pub struct ReceiverConfig {
    /// TLS configuration: certificate, key, and the CA clients must be issued by.
    pub tls: Arc<rustls::ServerConfig>,
    /// The only targets that can ever be written: disk id to path.
    pub disks: BTreeMap<String, PathBuf>,
    /// Stop after the first session (a connection that got past TLS and sent a HELLO).
    pub once: bool,
    /// Sessions at once; more are refused with a "busy" error.
    pub max_sessions: usize,
    /// Connections at once, including those still in the handshake; more are closed at once.
    pub max_connections: usize,
    /// Time a new connection has to finish TLS and send its HELLO.
    pub handshake_timeout: Duration,
    /// Time a session may go without a frame from its sender.
    pub idle_timeout: Duration,
    /// Where session journals are kept (what is durable per session), so a sender that
    /// reconnects after this receiver restarted is not asked again for what it already sent.
    /// `None`: no journals; a restarted receiver then takes every session from the start.
    pub state_dir: Option<PathBuf>,
    /// How long the journal of a finished session is kept (a late retry of it is then told it
    /// is all there).
    pub journal_retention: Duration,
    /// Which clients of the client CA may use the receiver, and each disk.
    pub access: ClientAccess,
    /// Whether an image-file target smaller than its source may be grown to the source's size
    /// (after every other check of the session passed). Off: such a target is `SMS.1504`.
    pub grow_images: bool,
    /// Where sessions, bytes, chunks, errors and write and sync latencies are counted (see
    /// [`crate::metrics`]); share it to read them while the receiver runs.
    pub metrics: Arc<Metrics>,
}

impl ReceiverConfig {
    /// A configuration with the defaults: 16 sessions, 64 connections, 10 s to say HELLO,
    /// 60 s idle.
    pub fn new(tls: Arc<rustls::ServerConfig>, disks: BTreeMap<String, PathBuf>) -> Self {
        Self {
            tls,
            disks,
            once: false,
            max_sessions: 16,
            max_connections: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            state_dir: None,
            journal_retention: Duration::from_secs(7 * 24 * 3600),
            access: ClientAccess::default(),
            grow_images: false,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Checks that every configured target can be opened for writing and that the state
    /// directory (if any) is usable, so a bad path fails at start, not at the first session.
    pub fn check_disks(&self) -> Result<(), Error> {
        if let Some(dir) = &self.state_dir {
            JournalDir::open(dir)?;
        }
        if self.disks.is_empty() {
            return Err(Error::Config(
                "no --disk ID=PATH given: the receiver would have nothing to write".into(),
            ));
        }
        for id in self.access.disks.keys() {
            if !self.disks.contains_key(id) {
                return Err(Error::Config(format!(
                    "client rules are given for disk id {id:?}, which is not a --disk of this receiver"
                )));
            }
        }
        // The same file or device under two ids would let two sessions write it at once.
        let mut seen: Vec<(&str, &std::path::Path, (u64, u64))> = Vec::new();
        for (id, path) in &self.disks {
            TargetDisk::open(path)?;
            let meta = std::fs::metadata(path).map_err(|e| {
                Error::Config(format!(
                    "target disk {id}: cannot stat {}: {e}",
                    path.display()
                ))
            })?;
            let node = if meta.file_type().is_block_device() {
                (u64::MAX, meta.rdev())
            } else {
                (meta.dev(), meta.ino())
            };
            if let Some((other, other_path, _)) = seen.iter().find(|(_, _, n)| *n == node) {
                return Err(Error::Config(format!(
                    "disk ids {other:?} ({}) and {id:?} ({}) are the same target; give each target one id",
                    other_path.display(),
                    path.display()
                )));
            }
            seen.push((id, path, node));
        }
        Ok(())
    }
}
