//! The accept loop: connections taken within their budget, each on a task of its own, journals
//! cleaned, shutdown, and how each connection ended.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::connection::handle_connection;
use super::journal::JournalDir;
use super::{live, ReceiverConfig, ServeOutcome, SessionReport, Shared};
use crate::error::codes;
use crate::metrics::Metrics;
use crate::Error;

/// How a connection ended.
pub(super) enum Ended {
    /// It never became a session (handshake failure, garbage, timeout before HELLO).
    NoSession,
    /// A session's first connection, or a verification.
    Session(Result<SessionReport, Error>),
    /// Another stream of a session.
    Stream(Result<SessionReport, Error>),
    /// A network check: counted in the metrics, not as the session `once` waits for.
    Check(Result<SessionReport, Error>),
}

/// Runs a receiver on `listener` until `shutdown` resolves (then finishes in-flight writes,
/// acknowledges what is durable, tells the senders, and returns), or, with `once`, until the
/// first session ends.
pub async fn serve(
    listener: TcpListener,
    config: ReceiverConfig,
    shutdown: impl Future<Output = ()>,
) -> ServeOutcome {
    let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let journals = config.state_dir.as_deref().and_then(|dir| {
        JournalDir::open(dir)
            .map_err(|e| warn!("{e}; sessions will not be resumable after a restart"))
            .ok()
    });
    let shared = Arc::new(Shared {
        acceptor: TlsAcceptor::from(config.tls.clone()),
        sessions: Arc::new(Semaphore::new(config.max_sessions.max(1))),
        busy_disks: Mutex::new(HashSet::new()),
        live: live::Live::default(),
        journals,
        open: Mutex::new(HashMap::new()),
        config,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut outcome = ServeOutcome::default();
    tokio::pin!(shutdown);
    let mut clean = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = clean.tick() => {
                if let Some(dir) = &shared.journals {
                    let (dir, keep) = (dir.clone(), shared.config.journal_retention);
                    tokio::task::spawn_blocking(move || clean_journals(&dir, keep));
                }
            }
            _ = &mut shutdown => {
                info!("shutting down: finishing in-flight writes");
                break;
            }
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                shared.config.metrics.connection();
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    warn!(%peer, "too many connections; closing this one");
                    continue;
                };
                let (shared, stop_rx) = (shared.clone(), stop_rx.clone());
                tasks.spawn(async move {
                    let r = handle_connection(tcp, peer, shared, stop_rx).await;
                    drop(permit);
                    r
                });
            }
            Some(joined) = tasks.join_next() => {
                if let Some(result) = record(&mut outcome, &shared.config.metrics, joined) {
                    if shared.config.once {
                        outcome.first = Some(result);
                        break;
                    }
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        record(&mut outcome, &shared.config.metrics, joined);
    }
    outcome
}

/// Deletes the journals of sessions finished longer ago than `keep`.
fn clean_journals(dir: &JournalDir, keep: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match dir.clean(keep, now) {
        Ok(0) => {}
        Ok(n) => info!(
            "removed {n} journals of sessions finished more than {} s ago",
            keep.as_secs()
        ),
        Err(e) => warn!("{e}"),
    }
}

/// Counts how a connection ended, in `outcome` and in the metrics.
fn record(
    outcome: &mut ServeOutcome,
    metrics: &Metrics,
    joined: Result<Ended, tokio::task::JoinError>,
) -> Option<Result<SessionReport, String>> {
    match joined {
        Ok(Ended::Session(Ok(report))) => {
            outcome.succeeded += u64::from(report.complete);
            outcome.failed += u64::from(!report.complete);
            metrics.session_ended(report.complete, None);
            Some(Ok(report))
        }
        Ok(Ended::Session(Err(e))) => {
            outcome.failed += 1;
            metrics.session_ended(false, Some(e.code()));
            Some(Err(e.user_line()))
        }
        Ok(Ended::Check(r)) => {
            let code = r.as_ref().err().map(Error::code);
            metrics.session_ended(r.is_ok(), code);
            None
        }
        Ok(Ended::Stream(r)) => {
            if let Ok(report) = r {
                outcome.streams += 1;
                outcome.stream_bytes += report.bytes;
            }
            None
        }
        Ok(Ended::NoSession) => {
            metrics.handshake_failed();
            None
        }
        Err(e) => {
            warn!("a connection task failed: {e}");
            outcome.failed += 1;
            metrics.session_ended(false, Some(codes::RECEIVE));
            Some(Err(format!(
                "error {}: internal failure: {e}",
                codes::RECEIVE
            )))
        }
    }
}
