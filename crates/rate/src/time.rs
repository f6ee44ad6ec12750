//! Times of day, as the rules write them, and the local minute the driver selects a window by.

use std::fmt;

use crate::consts::MINUTES_PER_DAY;

/// A time of day in minutes since local midnight, 0..=1440 (1440 only as an end: midnight at
/// the end of the day). Written `H:MM`; 1440 is written `24:00`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// Midnight at the start of the day, `0:00`.
    pub const MIDNIGHT: TimeOfDay = TimeOfDay(0);
    /// Midnight at the end of the day, `24:00`: only meaningful as the end of a window.
    pub const END_OF_DAY: TimeOfDay = TimeOfDay(MINUTES_PER_DAY);

    /// The time `minutes` after midnight, or `None` above 1440.
    pub const fn new(minutes: u16) -> Option<TimeOfDay> {
        if minutes <= MINUTES_PER_DAY {
            Some(TimeOfDay(minutes))
        } else {
            None
        }
    }

    /// `hours:minutes`, with hours 0..=23 and minutes 0..=59, or 24:00.
    pub const fn from_hm(hours: u8, minutes: u8) -> Option<TimeOfDay> {
        if (hours <= 23 && minutes <= 59) || (hours == 24 && minutes == 0) {
            Some(TimeOfDay(hours as u16 * 60 + minutes as u16))
        } else {
            None
        }
    }

    /// Minutes since midnight.
    pub const fn minutes(self) -> u16 {
        self.0
    }

    /// Parses `H:MM` or `HH:MM` (hours 0..=23, minutes 00..=59, exactly two minute digits) or
    /// `24:00`. Whether `24:00` is allowed where it appears is the caller's decision. No
    /// whitespace, no sign.
    pub fn parse(text: &str) -> Option<TimeOfDay> {
        let (h, m) = text.split_once(':')?;
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !(1..=2).contains(&h.len()) || m.len() != 2 || !digits(h) || !digits(m) {
            return None;
        }
        // At most two ASCII digits each: these cannot fail or overflow.
        let h: u8 = h.parse().ok()?;
        let m: u8 = m.parse().ok()?;
        TimeOfDay::from_hm(h, m)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// The local minute of the day (0..1440) at `unix_secs` (seconds since the Unix epoch, UTC)
/// for a local time zone that is `utc_offset_secs` ahead of UTC at that instant (e.g.
/// `tm_gmtoff` from `localtime_r`, which already includes daylight saving time).
///
/// This is what the driver passes to [`Rules::limit_at`](crate::Rules::limit_at). Windows
/// are selected by local wall time, so when the offset changes (a DST change) or the wall clock
/// is set, the next call simply lands in another window. Tokens are refilled by the monotonic
/// time given to [`TokenBucket`](crate::TokenBucket), which neither jumps nor goes back, so a
/// wall-clock jump switches windows and never releases a burst.
pub fn local_minute(unix_secs: i64, utc_offset_secs: i32) -> u16 {
    let local = i128::from(unix_secs) + i128::from(utc_offset_secs);
    // rem_euclid: times before 1970 (or a negative local time) still land in 0..86400.
    (local.rem_euclid(86_400) / 60) as u16
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_h_mm_and_hh_mm() {
        assert_eq!(TimeOfDay::parse("0:00"), Some(TimeOfDay(0)));
        assert_eq!(TimeOfDay::parse("00:00"), Some(TimeOfDay(0)));
        assert_eq!(TimeOfDay::parse("8:00"), Some(TimeOfDay(480)));
        assert_eq!(TimeOfDay::parse("08:05"), Some(TimeOfDay(485)));
        assert_eq!(TimeOfDay::parse("23:59"), Some(TimeOfDay(1439)));
        assert_eq!(TimeOfDay::parse("24:00"), Some(TimeOfDay::END_OF_DAY));
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "", "24:01", "25:00", "7:60", "7:5", "7:005", "007:05", "ab:cd", "-1:00", "+1:00",
            "1:-0", " 7:00", "7:00 ", "7", "7:", ":00", "7.00", "7:00:00", "٣:00",
        ] {
            assert_eq!(TimeOfDay::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn displays_as_the_service_writes() {
        assert_eq!(TimeOfDay(0).to_string(), "0:00");
        assert_eq!(TimeOfDay(485).to_string(), "8:05");
        assert_eq!(TimeOfDay(1439).to_string(), "23:59");
        assert_eq!(TimeOfDay::END_OF_DAY.to_string(), "24:00");
        assert_eq!(TimeOfDay::new(1441), None);
        assert_eq!(TimeOfDay::from_hm(24, 1), None);
    }

    #[test]
    fn local_minute_follows_the_offset() {
        // 2024-03-31 00:59:59 UTC, the last second of CET (+1 h): local 01:59.
        let before = 1_711_846_799;
        assert_eq!(local_minute(before, 3600), 60 + 59);
        // One second later CEST (+2 h) begins: local 03:00, the hour 02:xx does not exist.
        assert_eq!(local_minute(before + 1, 7200), 3 * 60);
        // Fall back, 2024-10-27 00:59:59 UTC: local 02:59 CEST, then 02:00 CET again.
        let before = 1_729_990_799;
        assert_eq!(local_minute(before, 7200), 2 * 60 + 59);
        assert_eq!(local_minute(before + 1, 3600), 2 * 60);
        // Before 1970 and west of UTC still give a minute of the day.
        assert_eq!(local_minute(-60, 0), 1439);
        assert_eq!(local_minute(0, -5 * 3600), 19 * 60);
        assert!(local_minute(i64::MAX, i32::MAX) < MINUTES_PER_DAY);
    }

    proptest! {
        #[test]
        fn display_parses_back(m in 0u16..=MINUTES_PER_DAY) {
            let t = TimeOfDay::new(m).unwrap();
            prop_assert_eq!(TimeOfDay::parse(&t.to_string()), Some(t));
        }

        #[test]
        fn local_minute_is_a_minute_of_the_day(secs in any::<i64>(), off in any::<i32>()) {
            prop_assert!(local_minute(secs, off) < MINUTES_PER_DAY);
        }
    }
}
