//! blockrep: block-level replication of a server's disks over mutual TLS, the data plane of a
//! server-migration agent.
//!
//! The agent links this crate and calls [`sender::start`] (or the async [`sender::send`]);
//! `blockrep-receiver` runs [`receiver::serve`] on the target. The wire format and session
//! rules live in `blockrep-proto` (sans I/O), chunk encoding in `blockrep-chunk`, disk access
//! in `blockrep-disk`; this crate is the tokio/rustls driver around them and the CLI.
//!
//! What it does not do (yet): used-block maps, change bitmaps, hash deltas, rate limits,
//! resume and verification are later work; `Mode::Used` reads every block.

pub mod certs;
pub mod cli;
pub mod demo;
mod digests;
pub mod error;
mod framed;
pub mod progress;
pub mod receiver;
pub mod sender;
pub mod size;
pub mod tls;

pub use error::{codes, Error};
pub use progress::{Progress, ProgressSnapshot};
pub use receiver::{serve, ReceiverConfig, ServeOutcome, SessionReport};
pub use sender::{send, start, Control, Mode, SendConfig, SendHandle, SendSummary, SourceSpec};

/// The receiver's default TCP port.
pub const DEFAULT_PORT: u16 = 8900;

/// This build's version, sent in HELLO and WELCOME.
pub const VERSION: &str = concat!("blockrep/", env!("CARGO_PKG_VERSION"));
