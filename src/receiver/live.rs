//! Sessions running now, by id: a reconnecting sender takes its session over from the
//! connection it lost (which the receiver may not have noticed yet), and nobody else can.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::Error;

/// How long a new connection waits for the one it takes over to finish its writes.
const TAKEOVER_WAIT: Duration = Duration::from_secs(20);

struct Entry {
    client: [u8; 32],
    cancel: Arc<Notify>,
    token: u64,
}

/// The live sessions of a receiver.
#[derive(Default)]
pub(super) struct Live {
    map: Mutex<HashMap<String, Entry>>,
    next_token: std::sync::atomic::AtomicU64,
}

/// A session's place in [`Live`]; removed on drop. `cancelled` resolves when a new connection
/// of the same session and client takes over.
pub(super) struct Registration<'a> {
    live: &'a Live,
    id: String,
    token: u64,
    cancel: Arc<Notify>,
}

impl Registration<'_> {
    pub async fn cancelled(&self) {
        self.cancel.notified().await;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self.live.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.id).is_some_and(|e| e.token == self.token) {
            map.remove(&self.id);
        }
    }
}

impl Live {
    /// Registers session `id` for `client` (the blake3 of its certificate). If the session is
    /// live on another connection of the same client, tells that one to end and waits until
    /// it has (its writes durable, its disks released). Another client's session is refused.
    pub async fn register(&self, id: &str, client: [u8; 32]) -> Result<Registration<'_>, Error> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        let mut told = false;
        loop {
            {
                let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
                match map.get(id) {
                    Some(e) if e.client != client => {
                        return Err(Error::SessionOwner { session: id.into() })
                    }
                    Some(e) => {
                        if !told {
                            e.cancel.notify_one();
                            told = true;
                        }
                    }
                    None => {
                        let token = self
                            .next_token
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let cancel = Arc::new(Notify::new());
                        map.insert(
                            id.into(),
                            Entry {
                                client,
                                cancel: cancel.clone(),
                                token,
                            },
                        );
                        return Ok(Registration {
                            live: self,
                            id: id.into(),
                            token,
                            cancel,
                        });
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Transport(format!(
                    "session {id} is still ending on an earlier connection; try again"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_client_takes_over_another_is_refused() {
        let live = Live::default();
        let first = live.register("s1", [1; 32]).await.unwrap();
        assert!(matches!(
            live.register("s1", [2; 32]).await,
            Err(Error::SessionOwner { .. })
        ));
        // Another session id is independent.
        let _other = live.register("s2", [2; 32]).await.unwrap();
        // The same client: the first is told to end; once it has, the second gets in.
        let (second, ()) = tokio::join!(live.register("s1", [1; 32]), async {
            first.cancelled().await;
            drop(first);
        });
        let second = second.unwrap();
        drop(second);
        assert!(live.register("s1", [2; 32]).await.is_ok());
    }
}
