//! Why a set of speed-limit rules is refused.

use crate::consts::ERROR_CODE;
use crate::time::TimeOfDay;

/// Why speed-limit rules are refused. Every variant maps to the service's code `SMS.6405`
/// ([`code`](RuleError::code)), so the agent can report it upward unchanged.
///
/// Rules are counted from 0, in the order written (the index into the JSON `speed_limit`
/// array, or the position in the comma-separated shorthand). `rule_text` is the rule as the
/// operator wrote it (its JSON object, or its shorthand item), so the message points at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A start or end is not a time of day.
    #[error(
        "speed-limit rule {rule} ({rule_text}): {field} \"{text}\" is not a time of day; \
         expected H:MM or HH:MM with hours 0-23 and minutes 00-59 (24:00 only as an end)"
    )]
    BadTime {
        /// The rule's index.
        rule: usize,
        /// `start` or `end`.
        field: &'static str,
        /// The time as written.
        text: String,
        /// The rule as written.
        rule_text: String,
    },
    /// A speed is not a whole number of Mbit/s from 0 to 10000.
    #[error(
        "speed-limit rule {rule} ({rule_text}): speed {speed} is out of range; \
         expected a whole number of Mbit/s from 0 to 10000 (0 = unlimited)"
    )]
    BadSpeed {
        /// The rule's index.
        rule: usize,
        /// The speed as written.
        speed: String,
        /// The rule as written.
        rule_text: String,
    },
    /// An over-speed threshold is negative, not finite or not a number.
    #[error(
        "speed-limit rule {rule} ({rule_text}): over_speed_threshold {value} is out of range; \
         expected a percentage of 0 or more"
    )]
    BadThreshold {
        /// The rule's index.
        rule: usize,
        /// The threshold as written.
        value: String,
        /// The rule as written.
        rule_text: String,
    },
    /// Two windows share at least one minute (directly or across midnight).
    #[error(
        "speed-limit rules {a} ({a_text}) and {b} ({b_text}) overlap: both cover {minute}; \
         windows may not share a minute (a window ends just before its end time)"
    )]
    Overlap {
        /// The earlier rule's index.
        a: usize,
        /// The earlier rule as written.
        a_text: String,
        /// The later rule's index.
        b: usize,
        /// The later rule as written.
        b_text: String,
        /// The first minute of rule `b`'s window that rule `a` also covers.
        minute: TimeOfDay,
    },
    /// A window's start and end are the same time: it would be empty or the whole day.
    #[error(
        "speed-limit rule {rule} ({rule_text}): start and end are the same time, so the window \
         is either empty or the whole day; for the whole day write 0:00-24:00, otherwise give \
         a different end"
    )]
    Empty {
        /// The rule's index.
        rule: usize,
        /// The rule as written.
        rule_text: String,
    },
    /// The text is not JSON of the service's shape (the message says what is wrong).
    #[error("speed-limit rules are not valid JSON of the expected shape: {0}")]
    Json(String),
    /// A shorthand item is not `START-END=SPEED`.
    #[error(
        "speed-limit item {item} (\"{text}\") is not START-END=SPEED; expected e.g. \
         00:00-08:00=20,08:00-15:00=50"
    )]
    Shorthand {
        /// The item's index.
        item: usize,
        /// The item as written.
        text: String,
    },
    /// More rules than there are minutes in a day.
    #[error("{count} speed-limit rules; at most 1440 (one per minute of the day)")]
    TooMany {
        /// How many rules were given.
        count: usize,
    },
}

impl RuleError {
    /// The service's error code: `SMS.6405` for every way rules can be refused.
    pub fn code(&self) -> &'static str {
        ERROR_CODE
    }
}
