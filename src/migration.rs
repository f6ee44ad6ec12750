//! The migration's shape: one full round, then any number of sync rounds.
//!
//! Each round is one [`send`](crate::send) with its own progress (`MIGRATE_LINUX_BLOCK`, then
//! `SYNC_LINUX_BLOCK`) and summary. What a round planned but did not make durable — because
//! of a STOP or an error — is remembered and sent by the next round, so stopping between or
//! during rounds never loses a change.
//!
//! Every round is its own session on the receiver (`<session id>.r<round>`): a receiver's
//! journal of a finished round must never make a later round skip what changed since. Within
//! a round, a lost connection is resumed by [`send`](crate::send) itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use blockrep_blockmap::ExtentSet;

use crate::sender::{send, Control, Mode, SendConfig, SendSummary};
use crate::Error;

/// What a sync round sends.
#[derive(Debug, Clone)]
pub enum SyncChanges {
    /// Per disk id, the byte ranges the change tracker marked since the last round. A disk
    /// missing from the map had no changes.
    Bitmap(BTreeMap<String, ExtentSet>),
    /// No tracker (lost, or the agent restarted): compare digests over the whole disks.
    Delta,
}

/// A migration: the disks, the receiver, and what earlier rounds left undone.
pub struct Migration {
    base: SendConfig,
    /// Per disk id: planned by an earlier round and not durable on the target.
    pending: BTreeMap<String, ExtentSet>,
    /// A full round ran far enough that `pending` describes what it left.
    full_round_accounted: bool,
    rounds: u64,
}

impl Migration {
    /// A migration of `base.disks` to `base.target`. `base.mode` chooses the full round's
    /// mode (`Used` or `Full`; anything else means `Used`).
    pub fn new(base: SendConfig) -> Self {
        Self {
            base,
            pending: BTreeMap::new(),
            full_round_accounted: false,
            rounds: 0,
        }
    }

    /// Per disk id, what earlier rounds planned and did not make durable.
    pub fn pending(&self) -> &BTreeMap<String, ExtentSet> {
        &self.pending
    }

    /// Rounds run so far (successful or not).
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Counts a round that starts; returns its session id.
    fn next_round(&mut self) -> String {
        self.rounds += 1;
        crate::sender::derived_session_id(&self.base.session_id, &format!(".r{}", self.rounds))
    }

    fn remember(&mut self, summary: &SendSummary) {
        self.pending = summary.remaining.iter().cloned().collect();
    }

    /// The full round: every used (or every) block of every disk.
    pub async fn full_round(&mut self, control: Arc<Control>) -> Result<SendSummary, Error> {
        let mut config = self.base.clone();
        config.session_id = self.next_round();
        if config.mode != Mode::Full {
            config.mode = Mode::Used;
        }
        let summary = send(config, control).await?;
        self.remember(&summary);
        self.full_round_accounted = true;
        Ok(summary)
    }

    /// A sync round: the changes given, plus whatever earlier rounds left. A bitmap round needs
    /// a full round first (a delta round does not: it compares whole disks).
    pub async fn sync_round(
        &mut self,
        changes: SyncChanges,
        control: Arc<Control>,
    ) -> Result<SendSummary, Error> {
        let mut config = self.base.clone();
        let mut planned = BTreeMap::new();
        match changes {
            SyncChanges::Delta => config.mode = Mode::Delta,
            SyncChanges::Bitmap(mut changed) => {
                if !self.full_round_accounted {
                    return Err(Error::Config(
                        "a bitmap round needs a finished or stopped full round first; run the full round (or a delta round)".into(),
                    ));
                }
                if let Some(id) = changed
                    .keys()
                    .find(|id| !config.disks.iter().any(|d| &d.id == *id))
                {
                    return Err(Error::Config(format!(
                        "changes given for disk {id:?}, which is not in this migration"
                    )));
                }
                config.mode = Mode::Bitmap;
                for disk in &mut config.disks {
                    let mut set = changed.remove(&disk.id).unwrap_or_default();
                    if let Some(left) = self.pending.get(&disk.id) {
                        set.union(left);
                    }
                    planned.insert(disk.id.clone(), set.clone());
                    disk.changed = Some(set);
                }
            }
        }
        config.session_id = self.next_round();
        match send(config.clone(), control).await {
            Ok(summary) => {
                self.remember(&summary);
                if config.mode == Mode::Delta {
                    // A delta round compared everything: what the full round left is covered.
                    self.full_round_accounted = true;
                }
                Ok(summary)
            }
            Err(e) => {
                // What became durable is unknown: the next round sends all of this one again.
                if config.mode == Mode::Bitmap {
                    self.pending = planned;
                }
                Err(e)
            }
        }
    }
}
