//! blockrep: block-level replication of a server's disks over mutual TLS, the data plane of a
//! server-migration agent.
//!
//! The agent links this crate and calls [`sender::start`] (or the async [`sender::send`]);
//! `blockrep-receiver` runs [`receiver::serve`] on the target. The wire format and session
//! rules live in `blockrep-proto` (sans I/O), chunk encoding in `blockrep-chunk`, disk access
//! in `blockrep-disk`; this crate is the tokio/rustls driver around them and the CLI.
//!
//! A migration is one full round (`Mode::Used`: partition tables and allocated blocks, from
//! `blockrep-blockmap`) then sync rounds (`Mode::Bitmap` from a change tracker, or
//! `Mode::Delta` by comparing digests); [`Migration`] keeps what a stopped round left for the
//! next. A round obeys the time-windowed rate limits of [`SendConfig::limits`], resumes by
//! itself after a dropped connection or a receiver restart ([`SendConfig::retry`]), and can be
//! followed by a consistency check ([`sender::verify`]).
//!
//! # How an agent drives a migration
//!
//! A full round, a sync round from the change tracker, a STOP, progress and errors; the
//! receiver runs in the same process here only so that the example runs as it is
//! (`cargo test --doc`): on a real migration it is `blockrep-receiver` on the target server.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//!
//! use blockrep::{certs, tls, Control, ExtentSet, Migration, Mode, ReceiverConfig};
//! use blockrep::{SendConfig, SourceSpec, SyncChanges};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (source, target) = (dir.path().join("source.img"), dir.path().join("target.img"));
//! std::fs::write(&source, vec![7u8; 8 << 20])?; // the server's disk
//! std::fs::write(&target, vec![0u8; 8 << 20])?; // the target disk, as big
//! let pki = certs::generate(&[])?.write(&dir.path().join("pki"))?;
//!
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     // The target server (normally `blockrep-receiver --disk disk0=/dev/vdb ...`).
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let receiver = listener.local_addr()?.to_string(); // the sender's --to
//!     let server_tls = tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca)?;
//!     let disks = BTreeMap::from([("disk0".to_owned(), target.clone())]);
//!     tokio::spawn(blockrep::serve(listener, ReceiverConfig::new(server_tls, disks), std::future::pending()));
//!
//!     // The agent: one migration of one disk, in full mode (this image holds no
//!     // filesystem; `Mode::Used`, the default, reads only allocated blocks).
//!     let client_tls = tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key)?;
//!     let mut config = SendConfig::new(receiver.clone(), client_tls, vec![SourceSpec::new("disk0", &source)]);
//!     config.mode = Mode::Full;
//!     config.session_id = "task-42".into(); // the same id resumes after an agent restart
//!     let mut migration = Migration::new(config);
//!
//!     // The full round, with progress read by another task (the service's field names).
//!     let control = Control::new();
//!     let watch = control.clone();
//!     let reporter = tokio::spawn(async move {
//!         loop {
//!             let p = watch.progress();
//!             println!("{} {:.0}% {} of {} bytes", p.subtask_name, p.progress, p.replicatesize, p.totalsize);
//!             if p.progress >= 100.0 { break; }
//!             tokio::time::sleep(Duration::from_millis(50)).await;
//!         }
//!     });
//!     let full = migration.full_round(control).await?;
//!     assert!(full.complete && full.acked_bytes == 8 << 20);
//!     reporter.await?;
//!
//!     // The server kept running: the change tracker saw 64 KiB written at 1 MiB.
//!     let mut disk = std::fs::read(&source)?;
//!     disk[1 << 20..(1 << 20) + (64 << 10)].fill(9);
//!     std::fs::write(&source, &disk)?;
//!     let changed = BTreeMap::from([("disk0".to_owned(), ExtentSet::range(1 << 20, 64 << 10))]);
//!
//!     // A STOP (the service's operation): the round ends cleanly, what it did not make
//!     // durable stays pending for the next round, nothing is lost.
//!     let control = Control::new();
//!     control.stop();
//!     let stopped = migration.sync_round(SyncChanges::Bitmap(changed), control).await?;
//!     assert!(!stopped.complete);
//!     assert_eq!(migration.pending()["disk0"].total(), 64 << 10);
//!
//!     // The next sync round sends what is pending (no new changes here).
//!     let sync = migration.sync_round(SyncChanges::Bitmap(BTreeMap::new()), Control::new()).await?;
//!     assert!(sync.complete && sync.acked_bytes == 64 << 10);
//!     assert_eq!(std::fs::read(&target)?, disk);
//!
//!     // Errors carry the service's code and say what to do: a disk the receiver does not
//!     // have is refused in the handshake.
//!     let client_tls = tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key)?;
//!     let wrong = SendConfig::new(receiver, client_tls, vec![SourceSpec::new("disk9", &source)]);
//!     let error = blockrep::send(wrong, Control::new()).await.unwrap_err();
//!     assert!(error.code().starts_with("SMS.") && !error.retryable());
//!     eprintln!("{}", error.user_line()); // "error SMS.xxxx: ... what and why"
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
// No unsafe code: the system calls go through nix's safe wrappers (the one exception,
// netcheck's TCP_INFO, is allowed where it is and says why). The unit tests are exempt only
// until receiver::journal's test asks nix::unistd::geteuid instead of libc.
#![deny(unsafe_code)]

pub mod certs;
pub mod cli;
pub mod demo;
mod digests;
pub mod error;
mod framed;
pub mod metrics;
pub mod migration;
pub mod netcheck;
pub mod progress;
pub mod receiver;
pub mod sender;
pub mod size;
pub mod throttle;
pub mod tls;
pub mod usage;

pub use blockrep_blockmap::ExtentSet;
pub use error::{codes, Error};
pub use metrics::Metrics;
pub use migration::{Migration, SyncChanges};
pub use progress::{Progress, ProgressSnapshot};
pub use receiver::{serve, ReceiverConfig, ServeOutcome, SessionReport};
pub use sender::{
    send, start, Control, Mode, Retry, SendConfig, SendHandle, SendSummary, SourceSpec,
};

/// The receiver's default TCP port.
pub const DEFAULT_PORT: u16 = 8900;

/// This build's version, sent in HELLO and WELCOME.
pub const VERSION: &str = concat!("blockrep/", env!("CARGO_PKG_VERSION"));
