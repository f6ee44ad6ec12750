//! Every number that defines the rules' meaning and the limiter's behaviour, in one place.
//! The speed unit, the rule limits and the error code are the service's and must not change.

use std::time::Duration;

/// The service's error code for speed-limit rules it cannot accept (a bad time, speed,
/// threshold, overlapping windows, ...). Every [`RuleError`](crate::RuleError) carries it.
pub const ERROR_CODE: &str = blockrep_codes::RULES;

/// The highest `speed` a rule may give, in Mbit/s (the service's limit).
pub const MAX_SPEED_MBPS: u32 = 10_000;

/// Bytes per second in one Mbit/s: 10^6 bits / 8.
pub const BYTES_PER_SEC_PER_MBPS: u64 = 1_000_000 / 8;

/// Minutes in a day; a [`TimeOfDay`](crate::TimeOfDay) runs from 0 to this (as an end only).
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// The most rules one set may hold: windows may not overlap and a window is at least one
/// minute long, so more than one per minute of the day cannot be valid.
pub const MAX_RULES: usize = MINUTES_PER_DAY as usize;

/// How long a rule's text may be when an error quotes it; longer text is cut.
pub const MAX_QUOTED_RULE: usize = 120;

/// A token bucket holds this much time's worth of tokens (or one request, if that is more):
/// the largest burst after idleness.
pub const BURST_WINDOW: Duration = Duration::from_millis(100);

/// Over-speed protection judges the wire rate over a sliding window this long.
pub const OVER_SPEED_WINDOW: Duration = Duration::from_secs(5);

/// The over-speed monitor counts bytes in slots this long.
pub const MONITOR_SLOT: Duration = Duration::from_millis(100);

/// Slots the over-speed monitor keeps: a whole window of them plus the current, partly
/// filled one, so that the window it measures is never shorter than [`OVER_SPEED_WINDOW`].
pub const MONITOR_SLOTS: usize =
    (OVER_SPEED_WINDOW.as_nanos() / MONITOR_SLOT.as_nanos()) as usize + 1;
