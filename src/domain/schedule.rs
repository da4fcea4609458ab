//! Rule schedules: a cron expression that rebuilds a branch's head periodically (base-image refresh).
//!
//! kiln accepts two forms, both in UTC:
//! - the standard 5-field crontab `MIN HOUR DOM MON DOW` (`0 3 * * MON`): it fires at second 0;
//! - 6 fields with seconds first, `SEC MIN HOUR DOM MON DOW` (`*/30 * * * * *`).
//!
//! Parsing is the `cron` crate's; one thing is kiln's own: the day of week is numbered as in crontab,
//! `0`–`7` with both `0` and `7` Sunday (`1` Monday … `6` Saturday), in both forms, or written by name
//! (`SUN`–`SAT`). The crate numbers days `1`–`7` from Sunday, so numeric days are translated before
//! they reach it. Macros (`@daily`), the crate's optional 7th (year) field and anything else are refused.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::pattern::RefPattern;
use super::rules::RefKind;
use super::{FieldError, quote};

/// The longest schedule expression, in bytes.
pub const MAX_SCHEDULE_LEN: usize = 255;

/// A parsed rule schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    source: String,
    schedule: cron::Schedule,
}

impl CronSchedule {
    /// Parses a schedule (field `schedule`, codes `too_long`, `invalid_schedule`). Surrounding spaces
    /// and runs of spaces between fields are allowed.
    pub fn parse(expr: &str) -> Result<CronSchedule, FieldError> {
        let invalid = |why: String| FieldError::new("schedule", "invalid_schedule", why);
        if expr.len() > MAX_SCHEDULE_LEN {
            return Err(FieldError::new(
                "schedule",
                "too_long",
                format!(
                    "must be at most {MAX_SCHEDULE_LEN} bytes (got {})",
                    expr.len()
                ),
            ));
        }
        if expr.chars().any(char::is_control) {
            return Err(invalid(
                "must not contain control characters (fields are separated by spaces)".into(),
            ));
        }
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let mut fields: Vec<String> = match fields.len() {
            5 => std::iter::once("0")
                .chain(fields.iter().copied())
                .map(str::to_string)
                .collect(),
            6 => fields.iter().map(|f| f.to_string()).collect(),
            n => {
                return Err(invalid(format!(
                    "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 \
                     (second first); got {n} in {}",
                    quote(expr)
                )));
            }
        };
        fields[5] = crontab_weekdays(&fields[5]).map_err(invalid)?;
        let schedule = cron::Schedule::from_str(&fields.join(" ")).map_err(|e| {
            // The parser's message ends with its reason, after a copy of the (translated) expression.
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty() && l.trim() != "^")
                .unwrap_or("cannot parse it")
                .trim();
            let reason: String = reason
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            invalid(format!(
                "{} is not a valid cron expression: {reason}",
                quote(expr)
            ))
        })?;
        // An expression that can never fire (`0 0 30 2 *`) is refused: a rule would wait forever.
        if schedule.upcoming(Utc).next().is_none() {
            return Err(invalid(format!("{} never fires", quote(expr))));
        }
        Ok(CronSchedule {
            source: fields.join(" "),
            schedule,
        })
    }

    /// The first time the schedule fires strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&t).next()
    }

    /// Whether the schedule fired in `(after, until]`: a tick missed while kiln was not running.
    pub fn fired_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> bool {
        self.next_after(after).is_some_and(|t| t <= until)
    }

    /// The 6-field expression handed to the `cron` crate (day of week translated).
    pub fn normalized(&self) -> &str {
        &self.source
    }
}

/// Validates a rule's schedule: only a branch rule with an exact name (`main`) may carry one, since a
/// schedule rebuilds the head of one branch (field `schedule`, code `not_allowed`).
pub fn validate_rule_schedule(
    kind: RefKind,
    name: &str,
    schedule: &str,
) -> Result<CronSchedule, FieldError> {
    let parsed = CronSchedule::parse(schedule)?;
    let exact = matches!(RefPattern::parse(name), Ok(RefPattern::Exact(_)));
    if kind != RefKind::Branch || !exact {
        return Err(FieldError::new(
            "schedule",
            "not_allowed",
            format!(
                "only a branch rule with an exact name (like 'main') may have a schedule: it rebuilds \
                 the head of that branch (this rule builds {} {})",
                if kind == RefKind::Branch {
                    "branches"
                } else {
                    "tags"
                },
                quote(name)
            ),
        ));
    }
    Ok(parsed)
}

/// Translates a crontab day-of-week field (`0`–`7`, `0`/`7` Sunday) to the `cron` crate's numbering
/// (`1`–`7` from Sunday): numeric items become explicit lists of days; names, `*` and `?` pass through.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    let mut out: Vec<String> = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let bounds = match range.split_once('-') {
            Some((a, b)) if numeric(a) && numeric(b) => Some((a, b)),
            None if numeric(range) => Some((range, range)),
            None if range == "*" && step.is_some() => Some(("0", "6")),
            _ => None,
        };
        let Some((a, b)) = bounds else {
            // Names (MON-FRI), `*`, `?`: the crate's syntax and meaning are crontab's.
            out.push(item.to_string());
            continue;
        };
        let day = |s: &str| -> Result<u32, String> {
            s.parse::<u32>().ok().filter(|d| *d <= 7).ok_or_else(|| {
                format!(
                    "day of week {} is out of range: 0-7 (0 and 7 are Sunday) or SUN-SAT",
                    quote(s)
                )
            })
        };
        let (a, b) = (day(a)?, day(b)?);
        if a > b {
            return Err(format!("day-of-week range {} runs backwards", quote(range)));
        }
        let step =
            match step {
                None => 1,
                Some(s) => s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("day-of-week step {} is not a positive number", quote(s))
                })?,
            };
        // A single day with a step (`1/2`) means from that day to the end of the week, as in crontab.
        let end = if step > 1 && a == b { 7 } else { b };
        for d in (a..=end).step_by(step as usize) {
            let ordinal = (d % 7 + 1).to_string();
            if !out.contains(&ordinal) {
                out.push(ordinal);
            }
        }
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    /// 2026-11-27 is a Friday.
    const FRIDAY: (i32, u32, u32) = (2026, 11, 27);

    #[test]
    fn five_and_six_field_forms() {
        let from = at(FRIDAY.0, FRIDAY.1, FRIDAY.2, 10, 0, 30);
        // (expression, next fire after Friday 10:00:30 UTC)
        let cases: &[(&str, DateTime<Utc>)] = &[
            ("*/2 * * * * *", at(2026, 11, 27, 10, 0, 32)),
            ("0 * * * * *", at(2026, 11, 27, 10, 1, 0)),
            ("* * * * *", at(2026, 11, 27, 10, 1, 0)),
            ("15 3 * * *", at(2026, 11, 28, 3, 15, 0)),
            ("  15   3 * *  * ", at(2026, 11, 28, 3, 15, 0)),
            ("0 0 1 * *", at(2026, 12, 1, 0, 0, 0)),
            ("30 0 12 * * *", at(2026, 11, 27, 12, 0, 30)),
            // Day of week as in crontab: 1 is Monday, 0 and 7 Sunday, in both forms.
            ("0 3 * * 1", at(2026, 11, 30, 3, 0, 0)),
            ("0 3 * * MON", at(2026, 11, 30, 3, 0, 0)),
            ("0 0 3 * * 1", at(2026, 11, 30, 3, 0, 0)),
            ("0 3 * * 0", at(2026, 11, 29, 3, 0, 0)),
            ("0 3 * * 7", at(2026, 11, 29, 3, 0, 0)),
            ("0 3 * * 6", at(2026, 11, 28, 3, 0, 0)),
            ("0 3 * * 1-5", at(2026, 11, 30, 3, 0, 0)),
            ("0 12 * * 1-5", at(2026, 11, 27, 12, 0, 0)),
            ("0 3 * * 6,0", at(2026, 11, 28, 3, 0, 0)),
            ("0 3 * * 0-7/7", at(2026, 11, 29, 3, 0, 0)),
            ("0 3 * * SAT,SUN", at(2026, 11, 28, 3, 0, 0)),
        ];
        for (expr, want) in cases {
            let s = CronSchedule::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
            assert_eq!(s.next_after(from), Some(*want), "{expr:?}");
        }
    }

    #[test]
    fn weekday_translation_table() {
        let cases: &[(&str, &str)] = &[
            ("*", "*"),
            ("?", "?"),
            ("MON-FRI", "MON-FRI"),
            ("0", "1"),
            ("7", "1"),
            ("1", "2"),
            ("6", "7"),
            ("1-5", "2,3,4,5,6"),
            ("5-7", "6,7,1"),
            ("0,7", "1"),
            ("*/2", "1,3,5,7"),
            ("1/3", "2,5,1"),
            ("MON,3", "MON,4"),
        ];
        for (field, want) in cases {
            assert_eq!(crontab_weekdays(field).as_deref(), Ok(*want), "{field:?}");
        }
        for bad in ["8", "1-9", "5-1", "*/0", "1/x"] {
            assert!(crontab_weekdays(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_expressions_name_the_field_and_the_reason() {
        // (expression, code, words in the message)
        let cases: &[(&str, &str, &str)] = &[
            ("", "invalid_schedule", "got 0"),
            ("* * * *", "invalid_schedule", "5 fields"),
            ("0 0 0 1 1 * 2030", "invalid_schedule", "got 7"),
            ("@daily", "invalid_schedule", "got 1"),
            (
                "61 * * * *",
                "invalid_schedule",
                "not a valid cron expression",
            ),
            (
                "* 25 * * *",
                "invalid_schedule",
                "not a valid cron expression",
            ),
            (
                "x * * * *",
                "invalid_schedule",
                "not a valid cron expression",
            ),
            ("0 0 * * 8", "invalid_schedule", "out of range"),
            ("0 0 * * 5-1", "invalid_schedule", "backwards"),
            (
                "0 0 * * FUNDAY",
                "invalid_schedule",
                "not a valid cron expression",
            ),
            ("0 0 30 2 *", "invalid_schedule", "never fires"),
            ("0 0\n* * *", "invalid_schedule", "control characters"),
        ];
        for (expr, code, words) in cases {
            let e = CronSchedule::parse(expr).unwrap_err();
            assert_eq!((e.field, e.code), ("schedule", *code), "{expr:?}");
            assert!(e.message.contains(words), "{expr:?}: {}", e.message);
        }
        let long = format!("0 0 * * {}", "MON,".repeat(100));
        assert_eq!(CronSchedule::parse(&long).unwrap_err().code, "too_long");
    }

    #[test]
    fn only_exact_branch_rules_have_schedules() {
        assert!(validate_rule_schedule(RefKind::Branch, "main", "0 3 * * *").is_ok());
        assert!(validate_rule_schedule(RefKind::Branch, "release/1.x", "0 3 * * *").is_ok());
        for (kind, name) in [
            (RefKind::Branch, "release-*"),
            (RefKind::Branch, "/^main$/"),
            (RefKind::Tag, "v1.0"),
            (RefKind::Tag, "v*"),
        ] {
            let e = validate_rule_schedule(kind, name, "0 3 * * *").unwrap_err();
            assert_eq!(
                (e.field, e.code),
                ("schedule", "not_allowed"),
                "{kind} {name}"
            );
            assert!(e.message.contains("exact name"), "{}", e.message);
        }
        // A bad expression is reported as such, whatever the rule.
        let e = validate_rule_schedule(RefKind::Tag, "v*", "nope").unwrap_err();
        assert_eq!(e.code, "invalid_schedule");
    }

    #[test]
    fn missed_ticks() {
        let hourly = CronSchedule::parse("0 * * * *").unwrap();
        let t = at(2026, 11, 27, 10, 30, 0);
        assert!(hourly.fired_between(t, at(2026, 11, 27, 11, 0, 0)));
        assert!(hourly.fired_between(t, at(2026, 11, 28, 0, 0, 0)));
        assert!(!hourly.fired_between(t, at(2026, 11, 27, 10, 59, 59)));
        assert!(!hourly.fired_between(at(2026, 11, 27, 11, 0, 0), at(2026, 11, 27, 11, 0, 0)));
        assert_eq!(hourly.normalized(), "0 0 * * * *");
    }
}
