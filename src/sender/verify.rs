//! Consistency verification: does the target hold what the source holds? Both sides read
//! and digest the same ranges (the hash delta's comparison, without sending anything); the
//! ranges that differ are reported, and can be repaired by sending exactly them again.

use std::sync::Arc;
use std::time::Instant;

use blockrep_blockmap::ExtentSet;

use super::{open_and_plan, pipeline, run, send, Control, Mode, SendConfig};
use crate::Error;

/// Differences listed at most; the count and the byte total cover them all.
pub const MAX_LISTED: usize = 1000;

/// A range of a disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    /// The disk id.
    pub disk: String,
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub length: u64,
}

/// What a verification found: the service's consistency result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// True when every checked byte is the same on both sides (ranges changed during the
    /// verification aside).
    pub consistent: bool,
    /// Bytes compared.
    pub checked_bytes: u64,
    /// The ranges that differ, adjacent 4 KiB blocks merged; at most [`MAX_LISTED`].
    pub differences: Vec<Range>,
    /// How many ranges differ in all.
    pub difference_count: u64,
    /// Bytes that differ in all.
    pub differing_bytes: u64,
    /// Ranges that differ but were written on the source during the verification (by the
    /// change set given for its window): not corruption, the next sync round sends them.
    pub changed_during_verification: Vec<Range>,
    /// Ranges `--repair` sent again (and then verified).
    pub repaired_bytes: u64,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Per disk id, every differing range (for a repair).
    #[serde(skip)]
    pub differing: Vec<(String, ExtentSet)>,
}

/// Verifies `config.disks` against the receiver: `config.mode` `Used` (default) checks what a
/// used-mode round sends, `Full` every byte. `changed_during`, per disk in `config.disks`
/// order, are the ranges written on the source while the verification ran: differences there
/// are reported apart. Any failure to verify is `SMS.1511` with its reason.
pub async fn verify(
    config: SendConfig,
    control: Arc<Control>,
    changed_during: Option<Vec<ExtentSet>>,
) -> Result<Verification, Error> {
    compare(config, control, None, changed_during.as_deref())
        .await
        .map_err(|e| Error::Verify(e.user_line()))
}

/// Verifies, sends again exactly what differs (as a bitmap round), and verifies that again.
/// The result is the second verification's, with `repaired_bytes` set.
pub async fn verify_and_repair(
    config: SendConfig,
    control: Arc<Control>,
) -> Result<Verification, Error> {
    let first = verify(config.clone(), control.clone(), None).await?;
    if first.consistent {
        return Ok(first);
    }
    let mut repair = config.clone();
    repair.mode = Mode::Bitmap;
    repair.session_id = super::derived_session_id(&config.session_id, ".repair");
    for (spec, (_, set)) in repair.disks.iter_mut().zip(&first.differing) {
        spec.changed = Some(set.clone());
    }
    let sent = send(repair, Control::new())
        .await
        .map_err(|e| Error::Verify(format!("the repair failed: {}", e.user_line())))?;
    let plans: Vec<ExtentSet> = first.differing.iter().map(|(_, s)| s.clone()).collect();
    let mut second = compare(config, control, Some(plans), None)
        .await
        .map_err(|e| Error::Verify(e.user_line()))?;
    second.repaired_bytes = sent.acked_bytes;
    second.checked_bytes = first.checked_bytes;
    Ok(second)
}

async fn compare(
    mut config: SendConfig,
    control: Arc<Control>,
    plans: Option<Vec<ExtentSet>>,
    changed_during: Option<&[ExtentSet]>,
) -> Result<Verification, Error> {
    if !matches!(config.mode, Mode::Used | Mode::Full) {
        config.mode = Mode::Used;
    }
    // The HELLO names the migration's session, flagged as a verification: a receiver that
    // keeps journals checks it knows that session.
    config.validate()?;
    let started = Instant::now();
    let progress = &control.progress;
    progress.set_subtask("CONSISTENCY_CHECK");
    progress.measure_socket(config.limits.written());
    let (sources, plans) = open_and_plan(&config, plans).await?;
    let checked: u64 = plans.iter().map(ExtentSet::total).sum();
    progress
        .total
        .store(checked, std::sync::atomic::Ordering::Relaxed);
    let round = run(
        &config,
        &control,
        &sources,
        &plans,
        pipeline::Scope::Compare,
    )
    .await?;
    if !round.complete {
        return Err(Error::Transport(
            "stopped before every range was compared".into(),
        ));
    }
    let mut differences = Vec::new();
    let mut during = Vec::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut differing = Vec::new();
    for (i, (spec, found)) in config.disks.iter().zip(round.found).enumerate() {
        // The comparison works in whole 16 KiB granules; report only what was asked.
        let found = found.intersect(&plans[i]);
        let changed = changed_during
            .and_then(|c| c.get(i))
            .cloned()
            .unwrap_or_default();
        for e in found.intersect(&changed).iter() {
            during.push(Range {
                disk: spec.id.clone(),
                offset: e.offset,
                length: e.len,
            });
        }
        let corrupt = found.subtract(&changed);
        for e in corrupt.iter() {
            count += 1;
            bytes += e.len;
            if differences.len() < MAX_LISTED {
                differences.push(Range {
                    disk: spec.id.clone(),
                    offset: e.offset,
                    length: e.len,
                });
            }
        }
        differing.push((spec.id.clone(), corrupt));
    }
    Ok(Verification {
        consistent: count == 0,
        checked_bytes: checked,
        differences,
        difference_count: count,
        differing_bytes: bytes,
        changed_during_verification: during,
        repaired_bytes: 0,
        elapsed_ms: started.elapsed().as_millis() as u64,
        differing,
    })
}
