//! Speed-limit rules by time of day, and the limit in force at a minute.

use std::fmt;

use crate::consts::{BYTES_PER_SEC_PER_MBPS, MAX_RULES, MAX_SPEED_MBPS, MINUTES_PER_DAY};
use crate::error::RuleError;
use crate::time::TimeOfDay;

/// One window of the day and its speed limit.
///
/// The window runs from `start` (inclusive) to `end` (exclusive), in local time. When `end` is
/// before `start` it crosses midnight (`22:00`-`6:00`). An `end` of `24:00` (or `0:00` with
/// another start) is midnight at the end of the day.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The first minute of the window (0..1440).
    pub start: TimeOfDay,
    /// The minute after the last one of the window (1440 = midnight).
    pub end: TimeOfDay,
    /// Mbit/s (10^6 bits/s), 0 = unlimited.
    pub speed_mbps: u32,
    /// Over-speed protection in percent above the limit; `None` = the task-wide threshold.
    pub over_speed_threshold: Option<f64>,
}

impl Rule {
    /// Whether `minute` (0..1440) lies in this window.
    pub fn contains(&self, minute: u16) -> bool {
        let (start, end) = (self.start.minutes(), self.end.minutes());
        if start < end {
            (start..end).contains(&minute)
        } else {
            minute >= start || minute < end
        }
    }

    /// The window's minutes in order from `start` (across midnight if it crosses it).
    fn minutes(&self) -> impl Iterator<Item = u16> {
        let (start, end) = (self.start.minutes(), self.end.minutes());
        let (first, second) = if start < end {
            (start..end, 0..0)
        } else {
            (start..MINUTES_PER_DAY, 0..end)
        };
        first.chain(second)
    }
}

/// Shorthand form (`8:00-15:00=50`), with the threshold in words when there is one.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}={}", self.start, self.end, self.speed_mbps)?;
        if let Some(t) = self.over_speed_threshold {
            write!(f, " (over-speed threshold {t}%)")?;
        }
        Ok(())
    }
}

/// The limit in force at some time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Bytes per second, `None` = unlimited.
    pub bytes_per_sec: Option<u64>,
    /// Percent, `None` = no protection.
    pub over_speed_threshold: Option<f64>,
}

impl Limit {
    /// No limit and no protection.
    pub const UNLIMITED: Limit = Limit {
        bytes_per_sec: None,
        over_speed_threshold: None,
    };

    /// `mbps` Mbit/s (0 = unlimited) in bytes per second: `mbps * 1_000_000 / 8`, exact.
    pub fn from_mbps(mbps: u32, over_speed_threshold: Option<f64>) -> Limit {
        Limit {
            bytes_per_sec: (mbps > 0).then(|| u64::from(mbps) * BYTES_PER_SEC_PER_MBPS),
            over_speed_threshold,
        }
    }

    /// The rate to give a [`TokenBucket`](crate::TokenBucket): bytes per second, 0 = unlimited.
    pub fn bucket_rate(&self) -> u64 {
        self.bytes_per_sec.unwrap_or(0)
    }
}

/// A validated set of speed-limit rules: windows that do not overlap, and the limit that
/// applies outside all of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    rules: Vec<Rule>,
    default_mbps: u32,
    default_threshold: Option<f64>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::unlimited()
    }
}

impl Rules {
    /// Rules built in code, checked as the parsers check them. Errors quote each rule in its
    /// shorthand form. No rules is allowed (the defaults apply all day).
    pub fn new(rules: Vec<Rule>) -> Result<Rules, RuleError> {
        let texts = rules.iter().map(Rule::to_string).collect();
        Rules::validated(rules, texts)
    }

    /// Checks every rule, then that no two windows share a minute. `texts[i]` is rule `i` as
    /// written, for errors.
    pub(crate) fn validated(rules: Vec<Rule>, texts: Vec<String>) -> Result<Rules, RuleError> {
        if rules.len() > MAX_RULES {
            return Err(RuleError::TooMany { count: rules.len() });
        }
        for (i, rule) in rules.iter().enumerate() {
            check_rule(i, rule, &texts[i])?;
        }
        // Who owns each minute: every minute is claimed at most once before an overlap is
        // found, so this is linear in the rules plus the minutes of a day.
        const FREE: u16 = u16::MAX;
        let mut owner = [FREE; MINUTES_PER_DAY as usize];
        for (b, rule) in rules.iter().enumerate() {
            for minute in rule.minutes() {
                let slot = &mut owner[usize::from(minute)];
                if *slot != FREE {
                    let a = usize::from(*slot);
                    return Err(RuleError::Overlap {
                        a,
                        a_text: texts[a].clone(),
                        b,
                        b_text: texts[b].clone(),
                        minute: TimeOfDay::new(minute).unwrap_or(TimeOfDay::MIDNIGHT),
                    });
                }
                // b < MAX_RULES = 1440 < FREE.
                *slot = b as u16;
            }
        }
        Ok(Rules {
            rules,
            default_mbps: 0,
            default_threshold: None,
        })
    }

    /// Outside every window: `default_mbps` (0 = unlimited; `--speed-limit-default`) and the
    /// task-wide threshold (`--over-speed-threshold`), which also applies inside a window whose
    /// rule has no threshold of its own. These are the CLI's values, which the CLI checks; a
    /// threshold that is negative or not a number is taken as no protection.
    pub fn with_defaults(self, default_mbps: u32, default_threshold: Option<f64>) -> Rules {
        Rules {
            default_mbps,
            default_threshold: default_threshold.filter(|t| valid_threshold(*t)),
            ..self
        }
    }

    /// No rules, no limit and no protection.
    pub fn unlimited() -> Rules {
        Rules {
            rules: Vec::new(),
            default_mbps: 0,
            default_threshold: None,
        }
    }

    /// The limit in force at `minute` (0..1440, minutes since local midnight; see
    /// [`local_minute`](crate::local_minute)). A window includes its start minute and excludes
    /// its end minute. A minute of 1440 or more is taken modulo a day.
    pub fn limit_at(&self, minute: u16) -> Limit {
        let minute = minute % MINUTES_PER_DAY;
        match self.rules.iter().find(|r| r.contains(minute)) {
            Some(r) => Limit::from_mbps(
                r.speed_mbps,
                r.over_speed_threshold.or(self.default_threshold),
            ),
            None => self.default_limit(),
        }
    }

    /// The limit outside every window.
    pub fn default_limit(&self) -> Limit {
        Limit::from_mbps(self.default_mbps, self.default_threshold)
    }

    /// The rules, in the order written.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

fn valid_threshold(t: f64) -> bool {
    t.is_finite() && t >= 0.0
}

/// The checks on one rule alone. `Rule`'s fields are public, so rules built in code get
/// them too; the parsers have already refused bad times in their own words.
fn check_rule(i: usize, rule: &Rule, text: &str) -> Result<(), RuleError> {
    if rule.start == TimeOfDay::END_OF_DAY {
        return Err(RuleError::BadTime {
            rule: i,
            field: "start",
            text: rule.start.to_string(),
            rule_text: text.to_owned(),
        });
    }
    if rule.start == rule.end {
        return Err(RuleError::Empty {
            rule: i,
            rule_text: text.to_owned(),
        });
    }
    if rule.speed_mbps > MAX_SPEED_MBPS {
        return Err(RuleError::BadSpeed {
            rule: i,
            speed: rule.speed_mbps.to_string(),
            rule_text: text.to_owned(),
        });
    }
    if let Some(t) = rule.over_speed_threshold {
        if !valid_threshold(t) {
            return Err(RuleError::BadThreshold {
                rule: i,
                value: t.to_string(),
                rule_text: text.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn t(h: u8, m: u8) -> TimeOfDay {
        TimeOfDay::from_hm(h, m).unwrap()
    }

    fn rule(start: TimeOfDay, end: TimeOfDay, speed_mbps: u32) -> Rule {
        Rule {
            start,
            end,
            speed_mbps,
            over_speed_threshold: None,
        }
    }

    #[test]
    fn mbps_to_bytes_per_sec() {
        assert_eq!(Limit::from_mbps(0, None), Limit::UNLIMITED);
        assert_eq!(Limit::from_mbps(1, None).bytes_per_sec, Some(125_000));
        assert_eq!(Limit::from_mbps(8, None).bytes_per_sec, Some(1_000_000));
        assert_eq!(
            Limit::from_mbps(10_000, None).bytes_per_sec,
            Some(1_250_000_000)
        );
        assert_eq!(Limit::UNLIMITED.bucket_rate(), 0);
    }

    #[test]
    fn window_includes_start_excludes_end() {
        let r = rule(t(8, 0), t(15, 0), 50);
        assert!(!r.contains(479));
        assert!(r.contains(480));
        assert!(r.contains(899));
        assert!(!r.contains(900));
    }

    #[test]
    fn window_crossing_midnight() {
        let r = rule(t(22, 0), t(6, 0), 5);
        assert!(r.contains(22 * 60));
        assert!(r.contains(1439));
        assert!(r.contains(0));
        assert!(r.contains(359));
        assert!(!r.contains(360));
        assert!(!r.contains(22 * 60 - 1));
        assert_eq!(r.minutes().count(), 8 * 60);
        // Ending at 0:00 is ending at midnight.
        let r = rule(t(22, 0), TimeOfDay::MIDNIGHT, 5);
        assert!(r.contains(1439) && !r.contains(0));
        assert_eq!(r.minutes().count(), 2 * 60);
    }

    #[test]
    fn limit_inside_outside_and_unlimited() {
        let rules = Rules::new(vec![
            rule(t(8, 0), t(15, 0), 50),
            rule(t(15, 0), t(16, 0), 0),
        ])
        .unwrap()
        .with_defaults(10, Some(20.0));
        assert_eq!(rules.limit_at(480), Limit::from_mbps(50, Some(20.0)));
        assert_eq!(rules.limit_at(900), Limit::from_mbps(0, Some(20.0)));
        assert_eq!(rules.limit_at(479), Limit::from_mbps(10, Some(20.0)));
        assert_eq!(rules.limit_at(960), Limit::from_mbps(10, Some(20.0)));
        // Beyond the day wraps.
        assert_eq!(rules.limit_at(1440 + 480), rules.limit_at(480));
        assert_eq!(rules.limit_at(u16::MAX), rules.limit_at(u16::MAX % 1440));
        assert_eq!(Rules::unlimited().limit_at(0), Limit::UNLIMITED);
        assert_eq!(Rules::default(), Rules::unlimited());
    }

    #[test]
    fn rule_threshold_overrides_the_task_wide_one() {
        let mut r = rule(t(8, 0), t(9, 0), 50);
        r.over_speed_threshold = Some(5.0);
        let rules = Rules::new(vec![r]).unwrap().with_defaults(0, Some(30.0));
        assert_eq!(rules.limit_at(480).over_speed_threshold, Some(5.0));
        assert_eq!(rules.limit_at(0).over_speed_threshold, Some(30.0));
        // A threshold the CLI should have refused is no protection, not a panic.
        let rules = rules.with_defaults(0, Some(f64::NAN));
        assert_eq!(rules.limit_at(0).over_speed_threshold, None);
    }

    #[test]
    fn rejects_nan_and_negative_thresholds_in_code() {
        for bad in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
            let mut r = rule(t(8, 0), t(9, 0), 50);
            r.over_speed_threshold = Some(bad);
            let e = Rules::new(vec![rule(t(0, 0), t(1, 0), 1), r]).unwrap_err();
            assert!(
                matches!(&e, RuleError::BadThreshold { rule: 1, value, .. } if *value == bad.to_string()),
                "{e}"
            );
            assert_eq!(e.code(), "SMS.6405");
        }
    }

    #[test]
    fn rejects_bad_rules_in_code() {
        let e = Rules::new(vec![rule(TimeOfDay::END_OF_DAY, t(1, 0), 1)]).unwrap_err();
        assert!(
            matches!(
                e,
                RuleError::BadTime {
                    rule: 0,
                    field: "start",
                    ..
                }
            ),
            "{e}"
        );
        let e = Rules::new(vec![rule(t(1, 0), t(1, 0), 1)]).unwrap_err();
        assert!(matches!(e, RuleError::Empty { rule: 0, .. }), "{e}");
        let e = Rules::new(vec![rule(t(1, 0), t(2, 0), 10_001)]).unwrap_err();
        assert!(matches!(e, RuleError::BadSpeed { rule: 0, .. }), "{e}");
        let many = (0..=1440).map(|_| rule(t(1, 0), t(2, 0), 1)).collect();
        let e = Rules::new(many).unwrap_err();
        assert_eq!(e, RuleError::TooMany { count: 1441 });
        // One rule per minute is the most there can be, and it is accepted.
        let all = (0..1440)
            .map(|m| {
                rule(
                    TimeOfDay::new(m).unwrap(),
                    TimeOfDay::new(m + 1).unwrap(),
                    1,
                )
            })
            .collect();
        assert_eq!(Rules::new(all).unwrap().rules().len(), 1440);
    }

    #[test]
    fn whole_day_windows() {
        let rules = Rules::new(vec![rule(t(0, 0), TimeOfDay::END_OF_DAY, 7)]).unwrap();
        for m in 0..1440 {
            assert_eq!(rules.limit_at(m), Limit::from_mbps(7, None));
        }
        // Starting at 6:00 and running round to 6:00 is refused (start == end), but 6:00-5:59
        // crossing midnight covers all but one minute.
        let rules = Rules::new(vec![rule(t(6, 0), t(5, 59), 7)]).unwrap();
        assert_eq!(rules.limit_at(5 * 60 + 59), Limit::UNLIMITED);
    }

    /// Any rule, valid or not, with times on the day's grid.
    fn any_rule() -> impl Strategy<Value = Rule> {
        (0u16..=1440, 0u16..=1440, 0u32..3)
            .prop_map(|(s, e, v)| rule(TimeOfDay::new(s).unwrap(), TimeOfDay::new(e).unwrap(), v))
    }

    proptest! {
        /// Accepted rules never share a minute, so the first match is the only match; refused
        /// rules are refused for a reason a minute-by-minute check confirms.
        #[test]
        fn overlap_check_agrees_with_brute_force(rules in prop::collection::vec(any_rule(), 0..6)) {
            let bad_rule = rules
                .iter()
                .any(|r| r.start == TimeOfDay::END_OF_DAY || r.start == r.end);
            let shared = (0..1440).any(|m| rules.iter().filter(|r| r.contains(m)).count() > 1);
            match Rules::new(rules.clone()) {
                Ok(ok) => {
                    prop_assert!(!bad_rule && !shared);
                    for m in 0..1440 {
                        let expected = rules.iter().find(|r| r.contains(m))
                            .map_or(Limit::UNLIMITED, |r| Limit::from_mbps(r.speed_mbps, None));
                        prop_assert_eq!(ok.limit_at(m), expected);
                    }
                }
                Err(RuleError::Overlap { a, b, minute, .. }) => {
                    prop_assert!(a < b);
                    prop_assert!(rules[a].contains(minute.minutes()));
                    prop_assert!(rules[b].contains(minute.minutes()));
                }
                Err(_) => prop_assert!(bad_rule),
            }
        }
    }
}
