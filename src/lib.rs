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
//! next. Rate limits, resume across restarts and verification are later work.

pub mod certs;
pub mod cli;
pub mod demo;
mod digests;
pub mod error;
mod framed;
pub mod migration;
pub mod progress;
pub mod receiver;
pub mod sender;
pub mod size;
pub mod throttle;
pub mod tls;

pub use blockrep_blockmap::ExtentSet;
pub use error::{codes, Error};
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
