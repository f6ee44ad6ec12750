//! The two ways rules are written: the service's JSON and the CLI shorthand.
//!
//! JSON: `{"speed_limit":[{"start":"0:00","end":"8:00","speed":20},
//! {"start":"8:00","end":"15:00","speed":50,"over_speed_threshold":50.0}]}`.
//! Shorthand: `00:00-08:00=20,08:00-15:00=50,15:00-23:59=25`.
//!
//! Both mean the same: times `H:MM` or `HH:MM` in local time (`24:00` only as an end, and an
//! end of `23:59` runs to midnight); `speed` in Mbit/s, 0 to 10000, 0 = unlimited; an optional
//! `over_speed_threshold` in percent (JSON only). Fields the service may add are ignored.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::consts::{MAX_QUOTED_RULE, MAX_RULES, MAX_SPEED_MBPS};
use crate::error::RuleError;
use crate::rules::{Rule, Rules};
use crate::time::TimeOfDay;

/// What the rules are usually written as, for messages.
const JSON_SHAPE: &str = r#"{"start":"H:MM","end":"H:MM","speed":MBITS}"#;

#[derive(Deserialize)]
struct Document<'a> {
    /// Borrowed raw so that each rule can be quoted as written. Other fields are ignored.
    #[serde(borrow)]
    speed_limit: Option<&'a RawValue>,
}

impl Rules {
    /// The service's JSON: `{"speed_limit":[{"start":"0:00","end":"8:00","speed":20},...]}`.
    /// Unknown fields are ignored; `over_speed_threshold` may be absent or `null`. A missing
    /// or non-array `speed_limit` is an error; an empty array means no windows.
    pub fn from_json(text: &str) -> Result<Rules, RuleError> {
        let doc: Document =
            serde_json::from_str(text).map_err(|e| RuleError::Json(e.to_string()))?;
        let list = doc.speed_limit.ok_or_else(|| {
            RuleError::Json(format!(
                "no \"speed_limit\" array; expected {{\"speed_limit\":[{JSON_SHAPE},...]}}"
            ))
        })?;
        let items: Vec<&RawValue> = if list.get().starts_with('[') {
            serde_json::from_str(list.get()).map_err(|e| RuleError::Json(e.to_string()))?
        } else {
            return Err(RuleError::Json(format!(
                "\"speed_limit\" is {}, not an array of rules like {JSON_SHAPE}",
                quote(list.get())
            )));
        };
        if items.len() > MAX_RULES {
            return Err(RuleError::TooMany { count: items.len() });
        }
        let mut rules = Vec::with_capacity(items.len());
        let mut texts = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let text = quote(item.get());
            rules.push(json_rule(i, item, &text)?);
            texts.push(text);
        }
        Rules::validated(rules, texts)
    }

    /// The CLI shorthand: `START-END=SPEED` items separated by commas, e.g.
    /// `00:00-08:00=20,08:00-15:00=50,15:00-23:59=25`. Whitespace around items and their parts
    /// is allowed. Empty text is refused: a rules file caught half-written must not silently
    /// lift every limit.
    pub fn from_shorthand(text: &str) -> Result<Rules, RuleError> {
        let count = text.split(',').count();
        if count > MAX_RULES {
            return Err(RuleError::TooMany { count });
        }
        let mut rules = Vec::with_capacity(count);
        let mut texts = Vec::with_capacity(count);
        for (i, item) in text.split(',').enumerate() {
            let item = item.trim();
            let text = quote(item);
            rules.push(shorthand_rule(i, item, &text)?);
            texts.push(text);
        }
        Rules::validated(rules, texts)
    }

    /// Either form: JSON if the trimmed text starts with `{`, else the shorthand.
    pub fn parse(text: &str) -> Result<Rules, RuleError> {
        if text.trim_start().starts_with('{') {
            Rules::from_json(text)
        } else {
            Rules::from_shorthand(text)
        }
    }
}

fn json_rule(i: usize, item: &RawValue, text: &str) -> Result<Rule, RuleError> {
    let fields: Map<String, Value> = serde_json::from_str(item.get()).map_err(|_| {
        RuleError::Json(format!(
            "speed-limit rule {i} ({text}) is not an object; expected {JSON_SHAPE}"
        ))
    })?;
    let missing = |name: &str| {
        RuleError::Json(format!(
            "speed-limit rule {i} ({text}) has no \"{name}\"; expected {JSON_SHAPE}"
        ))
    };
    let time = |field: &'static str| -> Result<&str, RuleError> {
        match fields.get(field) {
            None => Err(missing(field)),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(RuleError::BadTime {
                rule: i,
                field,
                text: clip(&other.to_string()),
                rule_text: text.to_owned(),
            }),
        }
    };
    let (start, end) = times(i, time("start")?, time("end")?, text)?;
    let speed = match fields.get("speed") {
        None => return Err(missing("speed")),
        Some(v) => v
            .as_u64()
            .filter(|&s| s <= u64::from(MAX_SPEED_MBPS))
            .ok_or_else(|| RuleError::BadSpeed {
                rule: i,
                speed: clip(&v.to_string()),
                rule_text: text.to_owned(),
            })?,
    };
    let over_speed_threshold = match fields.get("over_speed_threshold") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| RuleError::BadThreshold {
                    rule: i,
                    value: clip(&v.to_string()),
                    rule_text: text.to_owned(),
                })?,
        ),
    };
    Ok(Rule {
        start,
        end,
        // At most MAX_SPEED_MBPS: fits.
        speed_mbps: speed as u32,
        over_speed_threshold,
    })
}

fn shorthand_rule(i: usize, item: &str, text: &str) -> Result<Rule, RuleError> {
    let malformed = || RuleError::Shorthand {
        item: i,
        text: text.to_owned(),
    };
    // Exactly one '=' and one '-': times and speeds contain neither, so anything else is not
    // a START-END=SPEED item (and "-1:00-8:00" is not read as an empty start).
    let (range, speed) = item.split_once('=').ok_or_else(malformed)?;
    let (start, end) = range.split_once('-').ok_or_else(malformed)?;
    if speed.contains('=') || end.contains('-') {
        return Err(malformed());
    }
    let (start, end) = times(i, start.trim(), end.trim(), text)?;
    let speed = speed.trim();
    // u32::from_str would take "+5"; only digits are a speed.
    let speed_mbps = Some(speed)
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&s| s <= MAX_SPEED_MBPS)
        .ok_or_else(|| RuleError::BadSpeed {
            rule: i,
            speed: clip(speed),
            rule_text: text.to_owned(),
        })?;
    Ok(Rule {
        start,
        end,
        speed_mbps,
        over_speed_threshold: None,
    })
}

/// A window's start and end as written. `24:00` only ends a window; an end of `23:59` runs to
/// midnight. Equal times are refused before `23:59` is read as midnight: `23:59-23:59` is as
/// ambiguous as `8:00-8:00`.
fn times(
    i: usize,
    start: &str,
    end: &str,
    text: &str,
) -> Result<(TimeOfDay, TimeOfDay), RuleError> {
    let bad = |field, s: &str| RuleError::BadTime {
        rule: i,
        field,
        text: clip(s),
        rule_text: text.to_owned(),
    };
    let s = TimeOfDay::parse(start)
        .filter(|t| *t != TimeOfDay::END_OF_DAY)
        .ok_or_else(|| bad("start", start))?;
    let e = TimeOfDay::parse(end).ok_or_else(|| bad("end", end))?;
    if s == e {
        return Err(RuleError::Empty {
            rule: i,
            rule_text: text.to_owned(),
        });
    }
    let last_minute = TimeOfDay::END_OF_DAY.minutes() - 1;
    let e = if e.minutes() == last_minute {
        TimeOfDay::END_OF_DAY
    } else {
        e
    };
    Ok((s, e))
}

/// A rule's text fit to be quoted in a message: on one line, and cut if long.
fn quote(text: &str) -> String {
    cut(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A value as written, fit to be quoted in a message: control characters escaped (spaces
/// kept: they may be what is wrong), and cut if long.
fn clip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    cut(out)
}

fn cut(mut out: String) -> String {
    if out.len() > MAX_QUOTED_RULE {
        let mut cut = MAX_QUOTED_RULE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rules::Limit;

    /// The example in the issue, as the service sends it.
    const SERVICE: &str = r#"{"speed_limit":[{"start":"0:00","end":"8:00","speed":20},{"start":"8:00","end":"15:00","speed":50,"over_speed_threshold":50.0},{"start":"15:00","end":"23:59","speed":25}]}"#;
    const SHORTHAND: &str = "00:00-08:00=20,08:00-15:00=50,15:00-23:59=25";

    fn mbps(m: u32) -> Option<u64> {
        Limit::from_mbps(m, None).bytes_per_sec
    }

    fn json(rules: &str) -> Result<Rules, RuleError> {
        Rules::from_json(&format!(r#"{{"speed_limit":[{rules}]}}"#))
    }

    #[test]
    fn parses_the_services_example() {
        let rules = Rules::from_json(SERVICE).unwrap();
        assert_eq!(rules.rules().len(), 3);
        assert_eq!(rules.rules()[2].end, TimeOfDay::END_OF_DAY);
        assert_eq!(rules.limit_at(0), Limit::from_mbps(20, None));
        assert_eq!(rules.limit_at(479).bytes_per_sec, mbps(20));
        assert_eq!(rules.limit_at(480), Limit::from_mbps(50, Some(50.0)));
        assert_eq!(rules.limit_at(899).bytes_per_sec, mbps(50));
        assert_eq!(rules.limit_at(900), Limit::from_mbps(25, None));
        // 23:59 runs to midnight: the last minute of the day is in the window.
        assert_eq!(rules.limit_at(1439), Limit::from_mbps(25, None));
    }

    #[test]
    fn shorthand_means_the_same() {
        let json = Rules::from_json(SERVICE).unwrap();
        let short = Rules::from_shorthand(SHORTHAND).unwrap();
        for m in 0..1440 {
            assert_eq!(
                json.limit_at(m).bytes_per_sec,
                short.limit_at(m).bytes_per_sec
            );
        }
        assert_eq!(Rules::parse(SHORTHAND).unwrap(), short);
        assert_eq!(Rules::parse(&format!("\n  {SERVICE}\n")).unwrap(), json);
        let spaced = Rules::from_shorthand(" 0:00 - 8:00 = 20 ,\t8:00-15:00=50 , 15:00-23:59=25\n");
        assert_eq!(spaced.unwrap(), short);
    }

    #[test]
    fn ignores_unknown_fields_and_null_threshold() {
        let rules = Rules::from_json(
            r#"{"task":"t-1","speed_limit":[{"start":"1:00","end":"2:00","speed":3,
               "over_speed_threshold":null,"id":7,"note":{"x":[1]}}],"version":2}"#,
        )
        .unwrap();
        assert_eq!(rules.limit_at(60), Limit::from_mbps(3, None));
        assert_eq!(
            Rules::from_json(r#"{"speed_limit":[]}"#).unwrap(),
            Rules::unlimited()
        );
    }

    #[test]
    fn zero_is_unlimited_and_outside_is_the_default() {
        let rules = Rules::from_shorthand("8:00-9:00=0")
            .unwrap()
            .with_defaults(8, Some(10.0));
        assert_eq!(rules.limit_at(8 * 60), Limit::from_mbps(0, Some(10.0)));
        assert_eq!(rules.limit_at(8 * 60).bytes_per_sec, None);
        assert_eq!(rules.limit_at(9 * 60), Limit::from_mbps(8, Some(10.0)));
        assert_eq!(rules.limit_at(7 * 60 + 59).bytes_per_sec, mbps(8));
        let rules = Rules::from_shorthand("8:00-9:00=5").unwrap();
        assert_eq!(rules.limit_at(0), Limit::UNLIMITED);
    }

    #[test]
    fn window_crossing_midnight() {
        let rules = Rules::from_shorthand("22:00-06:00=5,06:00-22:00=50").unwrap();
        assert_eq!(rules.limit_at(22 * 60).bytes_per_sec, mbps(5));
        assert_eq!(rules.limit_at(0).bytes_per_sec, mbps(5));
        assert_eq!(rules.limit_at(6 * 60 - 1).bytes_per_sec, mbps(5));
        assert_eq!(rules.limit_at(6 * 60).bytes_per_sec, mbps(50));
        assert_eq!(rules.limit_at(22 * 60 - 1).bytes_per_sec, mbps(50));
        // 24:00 and 0:00 both end a window at midnight.
        for end in ["24:00", "0:00", "23:59"] {
            let rules = Rules::from_shorthand(&format!("22:00-{end}=5,0:00-1:00=7")).unwrap();
            assert_eq!(rules.limit_at(1439).bytes_per_sec, mbps(5), "{end}");
            assert_eq!(rules.limit_at(0).bytes_per_sec, mbps(7), "{end}");
        }
    }

    #[test]
    fn h_mm_and_hh_mm() {
        let a = Rules::from_shorthand("7:05-9:30=1").unwrap();
        let b = Rules::from_shorthand("07:05-09:30=1").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rules()[0].start.minutes(), 425);
        assert_eq!(a.rules()[0].end.minutes(), 570);
        assert_eq!(
            json(r#"{"start":"07:05","end":"9:30","speed":1}"#).unwrap(),
            a
        );
    }

    #[test]
    fn rejects_bad_times() {
        for bad in [
            "24:01", "7:60", "7:5", "", "ab:cd", "-1:00", "25:00", " 7:00", "7",
        ] {
            let e = json(&format!(r#"{{"start":"{bad}","end":"23:00","speed":1}}"#)).unwrap_err();
            assert!(
                matches!(&e, RuleError::BadTime { rule: 0, field: "start", text, .. } if text == bad),
                "{bad:?}: {e}"
            );
            assert_eq!(e.code(), "SMS.6405");
            let e = json(&format!(
                r#"{{"start":"0:00","end":"1:00","speed":1}},{{"start":"1:00","end":"{bad}","speed":1}}"#
            ))
            .unwrap_err();
            assert!(
                matches!(
                    &e,
                    RuleError::BadTime {
                        rule: 1,
                        field: "end",
                        ..
                    }
                ),
                "{bad:?}: {e}"
            );
        }
        // 24:00 only ends a window.
        let e = Rules::from_shorthand("24:00-1:00=5").unwrap_err();
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
        // A time that is not a string.
        let e = json(r#"{"start":800,"end":"9:00","speed":1}"#).unwrap_err();
        assert!(
            matches!(&e, RuleError::BadTime { text, .. } if text == "800"),
            "{e}"
        );
        let e = Rules::from_shorthand("1:00-2:00=1, 7:60-8:00=2").unwrap_err();
        assert!(
            matches!(&e, RuleError::BadTime { rule: 1, text, .. } if text == "7:60"),
            "{e}"
        );
    }

    #[test]
    fn bad_time_message_names_the_rule() {
        let e = json(
            r#"{"start":"0:00","end":"1:00","speed":1},{"start":"7:5","end":"9:00","speed":2}"#,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("rule 1"), "{msg}");
        assert!(
            msg.contains(r#"{"start":"7:5","end":"9:00","speed":2}"#),
            "{msg}"
        );
        assert!(msg.contains("start \"7:5\""), "{msg}");
        assert!(msg.contains("H:MM or HH:MM"), "{msg}");
    }

    #[test]
    fn rejects_bad_speeds() {
        for bad in [
            "10001",
            "-1",
            "2.5",
            "\"20\"",
            "null",
            "1e3",
            "18446744073709551616",
        ] {
            let e = json(&format!(r#"{{"start":"0:00","end":"1:00","speed":{bad}}}"#)).unwrap_err();
            assert!(
                matches!(&e, RuleError::BadSpeed { rule: 0, .. }),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("0 to 10000"), "{e}");
        }
        assert!(json(r#"{"start":"0:00","end":"1:00","speed":10000}"#).is_ok());
        for bad in ["10001", "-1", "+5", "2.5", "", "x", "99999999999"] {
            let e = Rules::from_shorthand(&format!("0:00-1:00={bad}")).unwrap_err();
            assert!(
                matches!(&e, RuleError::BadSpeed { rule: 0, speed, .. } if speed == bad),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rejects_bad_thresholds() {
        for bad in ["-1", "-0.001", "\"50\"", "true", "[]"] {
            let e = json(&format!(
                r#"{{"start":"0:00","end":"1:00","speed":1,"over_speed_threshold":{bad}}}"#
            ))
            .unwrap_err();
            assert!(
                matches!(&e, RuleError::BadThreshold { rule: 0, value, .. } if value == bad),
                "{bad}: {e}"
            );
        }
        // JSON has no NaN or infinity literal: those are JSON errors (NaN from code: rules.rs).
        for bad in ["NaN", "Infinity", "1e999"] {
            let e = json(&format!(
                r#"{{"start":"0:00","end":"1:00","speed":1,"over_speed_threshold":{bad}}}"#
            ))
            .unwrap_err();
            assert!(matches!(e, RuleError::Json(_)), "{bad}: {e}");
        }
        let ok =
            json(r#"{"start":"0:00","end":"1:00","speed":1,"over_speed_threshold":0}"#).unwrap();
        assert_eq!(ok.limit_at(0).over_speed_threshold, Some(0.0));
    }

    #[test]
    fn rejects_overlaps() {
        let e = Rules::from_shorthand("0:00-8:00=20, 7:00-9:00=50").unwrap_err();
        assert_eq!(
            e,
            RuleError::Overlap {
                a: 0,
                a_text: "0:00-8:00=20".into(),
                b: 1,
                b_text: "7:00-9:00=50".into(),
                minute: TimeOfDay::from_hm(7, 0).unwrap(),
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("rules 0 (0:00-8:00=20) and 1 (7:00-9:00=50) overlap"),
            "{msg}"
        );
        assert_eq!(e.code(), "SMS.6405");
        // Across midnight, both ways round.
        let e = Rules::from_shorthand("22:00-06:00=5,05:00-07:00=9").unwrap_err();
        assert!(
            matches!(e, RuleError::Overlap { a: 0, b: 1, minute, .. } if minute.minutes() == 300),
            "{e}"
        );
        let e = Rules::from_shorthand("0:00-1:00=1,23:00-0:30=5").unwrap_err();
        assert!(
            matches!(e, RuleError::Overlap { a: 0, b: 1, minute, .. } if minute.minutes() == 0),
            "{e}"
        );
        // 23:59 runs to midnight, so a later window starting 23:59 overlaps it.
        let e = Rules::from_shorthand("15:00-23:59=25,23:59-0:00=1").unwrap_err();
        assert!(matches!(e, RuleError::Overlap { a: 0, b: 1, .. }), "{e}");
        // Windows that touch do not overlap.
        assert!(Rules::from_shorthand("0:00-8:00=20,8:00-0:00=50").is_ok());
        let e = json(
            r#"{"start":"8:00","end":"9:00","speed":1},{"start":"8:30","end":"8:45","speed":2}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"{"start":"8:00","end":"9:00","speed":1}"#),
            "{e}"
        );
    }

    #[test]
    fn rejects_start_equal_to_end() {
        for item in [
            "8:00-8:00=1",
            "08:00-8:00=1",
            "0:00-0:00=1",
            "23:59-23:59=1",
            "0:00-00:00=1",
        ] {
            let e = Rules::from_shorthand(item).unwrap_err();
            assert!(
                matches!(&e, RuleError::Empty { rule: 0, rule_text } if rule_text == item),
                "{item}: {e}"
            );
            assert!(e.to_string().contains("empty or the whole day"), "{e}");
        }
        let e = json(r#"{"start":"8:00","end":"8:00","speed":1}"#).unwrap_err();
        assert!(matches!(e, RuleError::Empty { rule: 0, .. }), "{e}");
        // The whole day is written 0:00-24:00 (or 0:00-23:59).
        for whole in ["0:00-24:00=3", "0:00-23:59=3"] {
            let rules = Rules::from_shorthand(whole).unwrap();
            assert!((0..1440).all(|m| rules.limit_at(m).bytes_per_sec == mbps(3)));
        }
    }

    #[test]
    fn rejects_bad_json() {
        for (bad, says) in [
            ("", "EOF"),
            ("{", "EOF"),
            ("[]", "expected struct"),
            (r#"{"speed_limit":[]} x"#, "trailing"),
            (r#"{}"#, "no \"speed_limit\""),
            (r#"{"speed_limit":null}"#, "no \"speed_limit\""),
            (r#"{"speed_limit":{"start":"0:00"}}"#, "not an array"),
            (r#"{"speed_limit":"0:00-8:00=20"}"#, "not an array"),
            (r#"{"speed_limit":[1]}"#, "rule 0 (1) is not an object"),
            (
                r#"{"speed_limit":[{"end":"8:00","speed":1}]}"#,
                "has no \"start\"",
            ),
            (
                r#"{"speed_limit":[{"start":"0:00","speed":1}]}"#,
                "has no \"end\"",
            ),
            (
                r#"{"speed_limit":[{"start":"0:00","end":"8:00"}]}"#,
                "has no \"speed\"",
            ),
        ] {
            let e = Rules::from_json(bad).unwrap_err();
            assert!(matches!(e, RuleError::Json(_)), "{bad}: {e}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
            assert_eq!(e.code(), "SMS.6405");
        }
    }

    #[test]
    fn rejects_bad_shorthand_items() {
        for (bad, item) in [
            ("", 0),
            ("   ", 0),
            ("0:00-8:00", 0),
            ("0:00=8:00", 0),
            ("0:00-8:00=20,", 1),
            ("0:00-8:00=20,,8:00-9:00=1", 1),
            ("0:00-8:00=20;8:00-9:00=1", 0),
            ("8:00-9:00=1,rubbish", 1),
            ("-1:00-08:00=20", 0),
            ("1:00-2:00=3=4", 0),
        ] {
            let e = Rules::from_shorthand(bad).unwrap_err();
            assert!(
                matches!(&e, RuleError::Shorthand { item: i, .. } if *i == item),
                "{bad:?}: {e}"
            );
            assert_eq!(e.code(), "SMS.6405");
        }
        let e = Rules::from_shorthand("0:00-8:00").unwrap_err();
        assert_eq!(
            e,
            RuleError::Shorthand {
                item: 0,
                text: "0:00-8:00".into()
            }
        );
        assert!(e.to_string().contains("START-END=SPEED"), "{e}");
    }

    #[test]
    fn rejects_too_many_rules() {
        let many = vec!["0:00-0:01=1"; 1441].join(",");
        assert_eq!(
            Rules::from_shorthand(&many).unwrap_err(),
            RuleError::TooMany { count: 1441 }
        );
        let many = vec![r#"{"start":"0:00","end":"0:01","speed":1}"#; 1441].join(",");
        assert_eq!(json(&many).unwrap_err(), RuleError::TooMany { count: 1441 });
    }

    #[test]
    fn quotes_are_short_and_on_one_line() {
        assert_eq!(
            quote("{\n  \"start\": \"0:00\"\n}"),
            "{ \"start\": \"0:00\" }"
        );
        let long = "é".repeat(200);
        let q = quote(&long);
        assert!(q.len() <= MAX_QUOTED_RULE + 3 && q.ends_with("..."));
        assert_eq!(clip(" 7:00\n"), " 7:00\\n");
    }

    proptest! {
        /// Rules written back in shorthand parse to the same rules.
        #[test]
        fn shorthand_round_trips(
            cuts in prop::collection::btree_set(0u16..1440, 1..8),
            speeds in prop::collection::vec(0u32..=10_000, 8),
        ) {
            let cuts: Vec<u16> = cuts.into_iter().collect();
            let mut items = Vec::new();
            for (i, pair) in cuts.windows(2).enumerate() {
                let (s, e) = (TimeOfDay::new(pair[0]).unwrap(), TimeOfDay::new(pair[1]).unwrap());
                items.push(format!("{s}-{e}={}", speeds[i]));
            }
            prop_assume!(!items.is_empty());
            let rules = Rules::from_shorthand(&items.join(",")).unwrap();
            let again: Vec<String> = rules.rules().iter().map(|r| r.to_string()).collect();
            prop_assert_eq!(Rules::from_shorthand(&again.join(",")).unwrap(), rules);
        }

        /// No text makes a parser panic.
        #[test]
        fn parse_never_panics(text in ".{0,64}") {
            let _ = Rules::parse(&text);
        }
    }
}
