//! Per-instance schedules: EventBridge Scheduler's schedule expressions and time zones, checked
//! offline, so that an expression Scheduler would refuse fails validation rather than the deploy.
//!
//! `"schedule": {"start": "cron(0 7 ? * MON-FRI *)", "stop": "cron(0 19 ? * MON-FRI *)",
//! "timezone": "Europe/Amsterdam"}` in stack.json starts and stops the instance through
//! EventBridge Scheduler (the deploy creates the schedules). The grammar is Scheduler's
//! ("Schedule types on EventBridge Scheduler" in its user guide):
//!
//! - `cron(minutes hours day-of-month month day-of-week year)`: exactly six fields separated by
//!   white space. Values: minutes 0-59, hours 0-23, day-of-month 1-31, month 1-12 or JAN-DEC,
//!   day-of-week 1-7 or SUN-SAT (1 is Sunday), year 1970-2199; names in any case.
//!   `,` lists, `-` ranges (a range may wrap around, `FRI-MON`, except in year), `*` every value
//!   (alone), `/` increments (`*/15`, `0/10`, `8-17/2`; not in day-of-week; at most the field's
//!   largest value). `?` only in day-of-month or day-of-week, and exactly one of the two is `?`.
//!   Day-of-month also takes `L` (last day), `LW` (last weekday) and `15W` (the weekday nearest
//!   the 15th); day-of-week takes `L` (the last day of the week), `5L` (the last Thursday) and
//!   `3#2` (the second Tuesday, weeks 1-5). These forms stand alone, not in lists or ranges.
//! - `rate(value unit)`: a positive integer and `minute`, `hour` or `day` for 1, `minutes`,
//!   `hours` or `days` otherwise, separated by one space.
//! - `at(yyyy-mm-ddThh:mm:ss)`: one time, which must be a real date and time of day.
//! - Expressions are at most 256 characters.
//! - `timezone`: an IANA time zone name (default `UTC`), from `data/time-zones.txt`, generated
//!   from tzdata by `make time-zones` and committed.
//!
//! Everything here is a pure function of strings: a value or a message. [`crate::config`] walks
//! the JSON and puts `stack.json: /instances/NAME/schedule/FIELD: ` in front of the messages.

use crate::config::did_you_mean;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Fields a `schedule` object accepts. The JSON Schema is checked against these in tests.
pub const FIELDS: &[&str] = &["start", "stop", "timezone"];

pub const DEFAULT_TIMEZONE: &str = "UTC";

/// EventBridge Scheduler's limit on `ScheduleExpression`.
pub const MAX_EXPRESSION_LEN: usize = 256;

/// The generated list of IANA time zone names (see the module documentation): a header line
/// naming the tzdata version, then one name a line, sorted bytewise.
pub const TIME_ZONES: &str = include_str!("../data/time-zones.txt");

/// The message for `"schedule": {}`.
pub const EMPTY: &str = "is empty: a schedule holds \"start\", \"stop\" or both (each cron(...), rate(...) or at(...)) and optionally \"timezone\" (an IANA time zone name, default UTC)";

/// The message for a schedule with a time zone and nothing to schedule.
pub const NOTHING: &str = "has neither \"start\" nor \"stop\": a time zone alone schedules nothing";

/// A validated `schedule`: the expressions as written (they go to EventBridge Scheduler as they
/// are) and the time zone they are evaluated in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// When to start the instance.
    pub start: Option<String>,
    /// When to stop the instance.
    pub stop: Option<String>,
    /// An IANA time zone name; [`DEFAULT_TIMEZONE`] when not written.
    pub timezone: String,
}

impl Schedule {
    /// The lifecycle actions to schedule, with their expressions: `("start", ...)` then
    /// `("stop", ...)`, each when present.
    pub fn actions(&self) -> Vec<(&'static str, &str)> {
        [("start", &self.start), ("stop", &self.stop)]
            .into_iter()
            .filter_map(|(action, e)| e.as_deref().map(|e| (action, e)))
            .collect()
    }
}

// ---------------------------------------------------------------- expressions

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    Cron(Cron),
    Rate {
        value: u32,
        unit: RateUnit,
    },
    /// A one-time schedule, in the schedule's time zone.
    At(DateTime),
}

impl Expression {
    /// Whether it fires more than once (`cron` and `rate`; `at` fires once).
    pub fn is_recurring(&self) -> bool {
        !matches!(self, Expression::At(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Minute,
    Hour,
    Day,
}

impl RateUnit {
    fn word(self, value: u32) -> &'static str {
        match (self, value == 1) {
            (RateUnit::Minute, true) => "minute",
            (RateUnit::Minute, false) => "minutes",
            (RateUnit::Hour, true) => "hour",
            (RateUnit::Hour, false) => "hours",
            (RateUnit::Day, true) => "day",
            (RateUnit::Day, false) => "days",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// The six fields of a cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    pub minutes: Field,
    pub hours: Field,
    pub day_of_month: Field,
    pub month: Field,
    pub day_of_week: Field,
    pub year: Field,
}

/// One field of a cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `,`-separated items (`*` is the one item [`Range::All`]).
    Items(Vec<Item>),
    /// `?`: no specific value (day-of-month or day-of-week).
    NoSpecific,
    /// `L`: the last day of the month (day-of-month) or of the week (day-of-week).
    Last,
    /// `LW` (day-of-month): the last weekday of the month.
    LastWeekday,
    /// `15W` (day-of-month): the weekday nearest that day.
    NearestWeekday(u16),
    /// `5L` (day-of-week): the last such day of the month.
    LastDayOfWeek(u16),
    /// `3#2` (day-of-week): the `week`th such day of the month.
    Nth { day: u16, week: u16 },
}

/// One item of a list: a range of values, optionally every `step`th of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub range: Range,
    pub step: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `*`
    All,
    One(u16),
    /// `from-to`, inclusive; `to` may be below `from` (it wraps around), except in year.
    Span(u16, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Minutes,
    Hours,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTH_NAMES: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl CronField {
    pub const ALL: [CronField; 6] = [
        CronField::Minutes,
        CronField::Hours,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
        CronField::Year,
    ];

    /// The name EventBridge Scheduler's documentation uses.
    pub fn name(self) -> &'static str {
        match self {
            CronField::Minutes => "minutes",
            CronField::Hours => "hours",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
            CronField::Year => "year",
        }
    }

    pub fn bounds(self) -> (u16, u16) {
        match self {
            CronField::Minutes => (0, 59),
            CronField::Hours => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (1, 7),
            CronField::Year => (1970, 2199),
        }
    }

    /// The largest increment after `/` (Quartz's rule, which Scheduler's grammar follows).
    fn max_step(self) -> u16 {
        match self {
            CronField::Year => 2199 - 1970,
            f => f.bounds().1,
        }
    }

    fn names(self) -> Option<&'static [&'static str]> {
        match self {
            CronField::Month => Some(MONTHS),
            CronField::DayOfWeek => Some(DAYS),
            _ => None,
        }
    }

    fn values(self) -> &'static str {
        match self {
            CronField::Minutes => "0-59",
            CronField::Hours => "0-23",
            CronField::DayOfMonth => "1-31",
            CronField::Month => "1-12 or JAN-DEC",
            CronField::DayOfWeek => "1-7 or SUN-SAT, 1 is Sunday",
            CronField::Year => "1970-2199",
        }
    }

    fn is_day(self) -> bool {
        matches!(self, CronField::DayOfMonth | CronField::DayOfWeek)
    }
}

/// Checks one schedule expression; the error is the whole message (it starts with the
/// expression, quoted).
pub fn check_expression(s: &str) -> Result<(), String> {
    parse(s).map(|_| ())
}

/// Parses one schedule expression (`cron(...)`, `rate(...)` or `at(...)`).
pub fn parse(s: &str) -> Result<Expression, String> {
    let fail = |why: String| format!("{s:?}: {why}");
    if s.len() > MAX_EXPRESSION_LEN {
        return Err(format!(
            "is {} characters long; EventBridge Scheduler takes at most {MAX_EXPRESSION_LEN}",
            s.len()
        ));
    }
    if s.trim() != s {
        return Err(fail("must not start or end with white space".into()));
    }
    for (kind, parse_inner) in [
        ("cron", parse_cron as fn(&str) -> Result<Expression, String>),
        ("rate", parse_rate),
        ("at", parse_at),
    ] {
        let Some(rest) = s.strip_prefix(kind).and_then(|r| r.strip_prefix('(')) else {
            continue;
        };
        let Some(inner) = rest.strip_suffix(')') else {
            return Err(fail(format!("{kind}(...) is missing its closing \")\"")));
        };
        return parse_inner(inner).map_err(fail);
    }
    let lower = s.to_ascii_lowercase();
    if let Some(kind) = ["cron(", "rate(", "at("]
        .into_iter()
        .find(|k| lower.starts_with(k))
    {
        return Err(fail(format!(
            "write {} in lowercase",
            kind.trim_end_matches('(')
        )));
    }
    let mut why = "expected cron(minutes hours day-of-month month day-of-week year), rate(value unit) or at(yyyy-mm-ddThh:mm:ss)".to_string();
    if !s.contains('(') && s.split_whitespace().count() >= 5 {
        why.push_str("; cron fields go inside cron(...), e.g. \"cron(0 7 ? * MON-FRI *)\"");
    }
    Err(fail(why))
}

fn parse_cron(inner: &str) -> Result<Expression, String> {
    let parts: Vec<&str> = inner.split_whitespace().collect();
    if parts.len() != 6 {
        let mut why = format!(
            "expected 6 fields (minutes hours day-of-month month day-of-week year), found {}",
            parts.len()
        );
        match parts.len() {
            5 => why.push_str(
                "; EventBridge Scheduler's cron ends with a year field (* for every year)",
            ),
            7 => why.push_str("; there is no seconds field"),
            _ => {}
        }
        return Err(why);
    }
    let field = |i: usize| {
        let f = CronField::ALL[i];
        parse_field(f, parts[i]).map_err(|why| format!("{}: {why}", f.name()))
    };
    let cron = Cron {
        minutes: field(0)?,
        hours: field(1)?,
        day_of_month: field(2)?,
        month: field(3)?,
        day_of_week: field(4)?,
        year: field(5)?,
    };
    match (
        cron.day_of_month == Field::NoSpecific,
        cron.day_of_week == Field::NoSpecific,
    ) {
        (false, false) => Err(
            "day-of-month and day-of-week cannot both be set; use ? in one of them".into(),
        ),
        (true, true) => Err("day-of-month and day-of-week cannot both be ?; set one of them (* in day-of-month is every day)".into()),
        _ => Ok(Expression::Cron(cron)),
    }
}

/// One cron field, as written (any case).
pub fn parse_field(f: CronField, text: &str) -> Result<Field, String> {
    let u = text.to_ascii_uppercase();
    if u == "?" {
        return if f.is_day() {
            Ok(Field::NoSpecific)
        } else {
            Err("? is allowed only in day-of-month or day-of-week".into())
        };
    }
    match f {
        CronField::DayOfMonth => {
            if u == "L" {
                return Ok(Field::Last);
            }
            if u == "LW" {
                return Ok(Field::LastWeekday);
            }
            if u == "W" {
                return Err(
                    "W needs a day: 15W is the weekday nearest the 15th, LW the last weekday"
                        .into(),
                );
            }
            if u.starts_with("L-") {
                return Err(format!(
                    "{text:?}: L takes no offset (L is the last day of the month, LW the last weekday)"
                ));
            }
            if let Some(day) = u.strip_suffix('W').filter(|d| is_number(d)) {
                let (lo, hi) = f.bounds();
                return match day.parse::<u16>() {
                    Ok(n) if (lo..=hi).contains(&n) => Ok(Field::NearestWeekday(n)),
                    _ => Err(format!("{text:?}: the day before W must be {lo}-{hi}")),
                };
            }
        }
        CronField::DayOfWeek => {
            if u == "L" {
                return Ok(Field::Last);
            }
            if !u.contains(',') {
                if let Some((day, week)) = u.split_once('#') {
                    if day.is_empty() || !is_number(week) {
                        return Err(format!(
                            "{text:?} is not day#week (e.g. 3#2, the second Tuesday of the month)"
                        ));
                    }
                    let day = value(f, day)?;
                    return match week.parse::<u16>() {
                        Ok(w) if (1..=5).contains(&w) => Ok(Field::Nth { day, week: w }),
                        _ => Err(format!("{text:?}: the week after # must be 1-5")),
                    };
                }
                if let Some(day) = u.strip_suffix('L').filter(|d| is_day_word(d)) {
                    return Ok(Field::LastDayOfWeek(value(f, day)?));
                }
            }
        }
        _ => {}
    }
    let items: Vec<&str> = text.split(',').collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(format!("{text:?} has an empty item (a stray comma?)"));
    }
    let items = items
        .into_iter()
        .map(|i| item(f, i))
        .collect::<Result<Vec<_>, _>>()?;
    let every = Item {
        range: Range::All,
        step: None,
    };
    if items.len() > 1 && items.contains(&every) {
        return Err(format!(
            "{text:?}: * is every value and cannot be listed with others"
        ));
    }
    Ok(Field::Items(items))
}

fn item(f: CronField, text: &str) -> Result<Item, String> {
    let (range, step) = match text.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (text, None),
    };
    if step.is_some() && f == CronField::DayOfWeek {
        return Err(format!(
            "{text:?}: day-of-week takes no / increments; list the days instead (e.g. MON,WED,FRI)"
        ));
    }
    let range = if range == "*" {
        Range::All
    } else if range.is_empty() {
        return Err(format!(
            "{text:?} needs a start before / (e.g. */15 or 0/15)"
        ));
    } else if range.contains('-') {
        let (from, to) = range.split_once('-').unwrap_or_default();
        if from.is_empty() || to.is_empty() || to.contains('-') {
            return Err(format!(
                "{range:?} is not a range (from-to, e.g. {})",
                example_range(f)
            ));
        }
        let (from, to) = (value(f, from)?, value(f, to)?);
        if f == CronField::Year && to < from {
            return Err(format!("{range:?} goes backwards"));
        }
        Range::Span(from, to)
    } else {
        Range::One(value(f, range)?)
    };
    let step = match step {
        None => None,
        Some(s) => {
            let max = f.max_step();
            match s.parse::<u16>() {
                Ok(n) if is_number(s) && (1..=max).contains(&n) => Some(n),
                _ => return Err(format!("the increment in {text:?} must be 1-{max}")),
            }
        }
    };
    Ok(Item { range, step })
}

fn example_range(f: CronField) -> &'static str {
    match f {
        CronField::Minutes => "0-30",
        CronField::Hours => "8-17",
        CronField::DayOfMonth => "1-15",
        CronField::Month => "JAN-MAR",
        CronField::DayOfWeek => "MON-FRI",
        CronField::Year => "2025-2030",
    }
}

/// One value of a field: a number in its bounds or (month, day-of-week) a name.
fn value(f: CronField, text: &str) -> Result<u16, String> {
    let (lo, hi) = f.bounds();
    if is_number(text) {
        return match text.parse::<u16>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(format!("{text} is out of range ({})", f.values())),
        };
    }
    let upper = text.to_ascii_uppercase();
    if let Some(names) = f.names() {
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(i as u16 + 1);
        }
    }
    if let Some(why) = misplaced(f, &upper) {
        return Err(format!("{text:?}: {why}"));
    }
    match f.names() {
        Some(names) => {
            let noun = if f == CronField::Month {
                "a month"
            } else {
                "a day of the week"
            };
            // Three-letter names are all within two edits of each other: only one edit is a typo.
            let hint = names
                .iter()
                .find(|n| strsim::damerau_levenshtein(&upper, n) == 1)
                .map(|n| format!("; did you mean {n:?}?"))
                .unwrap_or_default();
            Err(format!("{text:?} is not {noun} ({}){hint}", f.values()))
        }
        None => Err(format!("{text:?} is not a number ({})", f.values())),
    }
}

/// The message for a special character (`?`, `L`, `W`, `#`) where the field does not take it,
/// or inside a list or range; `None` when `upper` has none of their shapes.
fn misplaced(f: CronField, upper: &str) -> Option<String> {
    let alone_dom =
        "L, LW and 15W stand alone in day-of-month: they cannot be listed or used in ranges";
    let alone_dow =
        "L, 5L and 3#2 stand alone in day-of-week: they cannot be listed or used in ranges";
    let only_w = "W is allowed only in day-of-month (15W: the weekday nearest the 15th)";
    let only_l = "L is allowed only in day-of-month or day-of-week";
    let why = if upper.contains('?') {
        if f.is_day() {
            "? stands alone: it cannot be listed with other values"
        } else {
            "? is allowed only in day-of-month or day-of-week"
        }
    } else if upper.contains('#') {
        match f {
            CronField::DayOfWeek => alone_dow,
            _ => "# is allowed only in day-of-week (3#2: the second Tuesday of the month)",
        }
    } else if upper == "L" {
        match f {
            CronField::DayOfMonth => alone_dom,
            CronField::DayOfWeek => alone_dow,
            _ => only_l,
        }
    } else if upper.strip_suffix('L').is_some_and(is_day_word) {
        match f {
            CronField::DayOfWeek => alone_dow,
            CronField::DayOfMonth => "5L (the last Thursday of the month) is allowed only in day-of-week; in day-of-month L alone is the last day",
            _ => only_l,
        }
    } else if upper == "LW" || upper.strip_suffix('W').is_some_and(is_number) {
        match f {
            CronField::DayOfMonth => alone_dom,
            _ => only_w,
        }
    } else {
        return None;
    };
    Some(why.to_string())
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A day-of-week value's shape (a number or a three-letter day name), as before `L`.
fn is_day_word(s: &str) -> bool {
    is_number(s) || DAYS.contains(&s)
}

fn parse_rate(inner: &str) -> Result<Expression, String> {
    let shape = "expected rate(value unit), e.g. rate(5 minutes) or rate(1 hour)";
    let Some((value, unit)) = inner.split_once(' ') else {
        return Err(shape.into());
    };
    if value.is_empty() || unit.is_empty() || unit.contains(char::is_whitespace) {
        return Err(format!("{shape}, with one space"));
    }
    if !is_number(value) {
        return Err(format!(
            "the value must be a positive integer, found {value:?}"
        ));
    }
    let Ok(n) = value.parse::<u32>() else {
        return Err(format!("the value {value} is too large"));
    };
    if n == 0 {
        return Err("the value must be a positive integer (1 or more), found 0".into());
    }
    let parsed = |u: &str| match u {
        "minute" => Some((RateUnit::Minute, false)),
        "minutes" => Some((RateUnit::Minute, true)),
        "hour" => Some((RateUnit::Hour, false)),
        "hours" => Some((RateUnit::Hour, true)),
        "day" => Some((RateUnit::Day, false)),
        "days" => Some((RateUnit::Day, true)),
        _ => None,
    };
    let lower = unit.to_ascii_lowercase();
    let Some((u, plural)) = parsed(unit) else {
        if let Some((u, _)) = parsed(&lower) {
            return Err(format!(
                "write the unit in lowercase: rate({n} {})",
                u.word(n)
            ));
        }
        let units = "the unit must be minute(s), hour(s) or day(s)";
        if lower.starts_with("week") {
            return Err(format!(
                "{units}; a week is rate({} days)",
                u64::from(n) * 7
            ));
        }
        if lower.starts_with("sec") {
            return Err(format!(
                "{units}; EventBridge Scheduler's smallest unit is the minute"
            ));
        }
        return Err(format!("{units}, found {unit:?}"));
    };
    if n == 1 && plural {
        return Err(format!(
            "a value of 1 takes the singular unit: rate(1 {})",
            u.word(1)
        ));
    }
    if n != 1 && !plural {
        return Err(format!(
            "a value other than 1 takes the plural unit: rate({value} {})",
            u.word(n)
        ));
    }
    Ok(Expression::Rate { value: n, unit: u })
}

fn parse_at(inner: &str) -> Result<Expression, String> {
    let b = inner.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shaped = b.len() == 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shaped {
        let mut why = "expected at(yyyy-mm-ddThh:mm:ss), e.g. at(2030-06-01T09:00:00)".to_string();
        if inner.ends_with('Z') || inner.get(19..).is_some_and(|t| t.starts_with(['+', '-'])) {
            why.push_str(", without Z or an offset: the schedule's \"timezone\" applies");
        } else if inner.get(10..11) == Some(" ") {
            why.push_str(", with a T between date and time");
        } else if b.len() == 16 {
            why.push_str(", with seconds");
        }
        return Err(why);
    }
    let num = |r: std::ops::Range<usize>| inner[r].parse::<u16>().unwrap_or(0);
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let (hour, minute, second) = (num(11..13), num(14..16), num(17..19));
    let date = &inner[..10];
    if !(1..=12).contains(&month) {
        return Err(format!("{date} is not a date: there is no month {month}"));
    }
    let last = days_in_month(year, month);
    if !(1..=last).contains(&day) {
        return Err(format!(
            "{date} is not a date: {} {year} has {last} days",
            MONTH_NAMES[usize::from(month) - 1]
        ));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!(
            "{} is not a time of day (00:00:00 to 23:59:59)",
            &inner[11..]
        ));
    }
    Ok(Expression::At(DateTime {
        year,
        month: month as u8,
        day: day as u8,
        hour: hour as u8,
        minute: minute as u8,
        second: second as u8,
    }))
}

pub fn is_leap_year(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Days in `month` (1-12) of `year`.
pub fn days_in_month(year: u16, month: u16) -> u16 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An error when `start` and `stop` are the same expression (they would fire together).
pub fn check_start_stop(start: &str, stop: &str) -> Result<(), String> {
    if start == stop {
        return Err(format!(
            "{stop:?} is the same as \"start\": the instance would be started and stopped at the same moment"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- time zones

/// The embedded IANA time zone names, sorted bytewise.
pub fn time_zones() -> &'static [&'static str] {
    static ZONES: OnceLock<Vec<&'static str>> = OnceLock::new();
    ZONES.get_or_init(|| {
        TIME_ZONES
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// The tzdata release the list was generated from (its header line), e.g. `2025b`.
pub fn tzdata_version() -> &'static str {
    TIME_ZONES
        .lines()
        .next()
        .and_then(|l| l.split("tzdata ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
}

pub fn is_time_zone(s: &str) -> bool {
    time_zones().binary_search(&s).is_ok()
}

/// Checks a `timezone`; the error is the message, with a "did you mean" for a close name.
pub fn check_timezone(s: &str) -> Result<(), String> {
    if is_time_zone(s) {
        return Ok(());
    }
    let not = format!("{s:?} is not an IANA time zone name");
    if let Some(etc) = fixed_offset_zone(s) {
        return Err(format!(
            "{not}; for a fixed offset from UTC use {etc:?} (Etc/ names invert the sign), or better the place's zone, e.g. \"Europe/Amsterdam\""
        ));
    }
    if let Some(hint) = suggest_time_zone(s) {
        return Err(format!("{not}; did you mean {hint:?}?"));
    }
    Err(format!(
        "{not} (e.g. \"Europe/Amsterdam\", \"America/New_York\" or \"UTC\")"
    ))
}

/// The zone `s` most likely means: the same name in another case or with spaces for `_`, a
/// city without its region (`Amsterdam`), or a close spelling of a `Region/City` name
/// (`Europe/Amsterdm`). Short names without `/` get no spelling hint: `PST` is one edit from
/// `EST` and `MST`, and means neither.
pub fn suggest_time_zone(s: &str) -> Option<&'static str> {
    let zones = time_zones();
    let wanted = s.trim().replace(' ', "_");
    if wanted.is_empty() {
        return None;
    }
    if let Some(z) = zones.iter().find(|z| z.eq_ignore_ascii_case(&wanted)) {
        return Some(z);
    }
    if !wanted.contains('/') {
        return zones
            .iter()
            .find(|z| {
                z.rsplit_once('/')
                    .is_some_and(|(_, city)| city.eq_ignore_ascii_case(&wanted))
            })
            .copied();
    }
    // did_you_mean's threshold, 2 or a quarter of the name, bounds the length difference too:
    // comparing only names of about the right length gives the same answer, ~10 times faster.
    let len = wanted.chars().count();
    let near: Vec<&'static str> = zones
        .iter()
        .filter(|z| z.len().abs_diff(len) <= 2.max(z.len() / 4))
        .copied()
        .collect();
    did_you_mean(&wanted, &near)
}

/// `+02:00`, `UTC+2`, `GMT-5` and the like: the `Etc/GMT∓h` zone with that fixed offset.
fn fixed_offset_zone(s: &str) -> Option<&'static str> {
    let upper = s.trim().to_ascii_uppercase();
    let rest = ["UTC", "GMT"]
        .iter()
        .find_map(|p| upper.strip_prefix(p))
        .unwrap_or(&upper);
    let (sign, rest) = match rest.as_bytes().first()? {
        b'+' => ('-', &rest[1..]),
        b'-' => ('+', &rest[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "00"));
    if !is_number(hours) || hours.len() > 2 || minutes != "00" {
        return None;
    }
    let h: u8 = hours.parse().ok()?;
    let name = if h == 0 {
        "Etc/UTC".to_string()
    } else {
        format!("Etc/GMT{sign}{h}")
    };
    time_zones().iter().find(|z| **z == name).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        parse(s).expect_err(s)
    }

    fn cron(s: &str) -> Cron {
        match parse(s) {
            Ok(Expression::Cron(c)) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn items(list: &[(Range, Option<u16>)]) -> Field {
        Field::Items(
            list.iter()
                .map(|&(range, step)| Item { range, step })
                .collect(),
        )
    }

    fn all() -> Field {
        items(&[(Range::All, None)])
    }

    #[test]
    fn the_design_example_parses() {
        let c = cron("cron(0 7 ? * MON-FRI *)");
        assert_eq!(
            c,
            Cron {
                minutes: items(&[(Range::One(0), None)]),
                hours: items(&[(Range::One(7), None)]),
                day_of_month: Field::NoSpecific,
                month: all(),
                day_of_week: items(&[(Range::Span(2, 6), None)]),
                year: all(),
            }
        );
        assert!(parse("cron(0 19 ? * MON-FRI *)").is_ok());
    }

    #[test]
    fn valid_cron_expressions() {
        for s in [
            // From EventBridge Scheduler's documentation.
            "cron(0 10 * * ? *)",
            "cron(15 12 * * ? *)",
            "cron(0 18 ? * MON-FRI *)",
            "cron(0 8 1 * ? *)",
            "cron(0/15 * * * ? *)",
            "cron(0/10 * ? * MON-FRI *)",
            "cron(0/5 8-17 ? * MON-FRI *)",
            "cron(0 9 ? * 2#1 *)",
            "cron(0 0 L * ? *)",
            "cron(0 0 LW * ? *)",
            "cron(0 0 15W * ? *)",
            "cron(0 0 ? * 5L *)",
            "cron(0 0 ? * 3#2 *)",
            // Every wildcard in every field that takes it.
            "cron(*/5 * * * ? *)",
            "cron(1-59/2 0-23/3 1-31/5 1-12/2 ? 1970-2199/10)",
            "cron(0,15,30,45 6,18 1,15 JAN,JUL ? 2025,2030)",
            "cron(0 8-17/2,20 ? * 1,3,5-7 *)",
            "cron(0 0 ? JAN-MAR/2 SUN-SAT *)",
            "cron(0 0 ? * FRI-MON *)",
            "cron(0 22-2 * * ? *)",
            "cron(0 0 ? * SATL *)",
            "cron(0 0 ? * FRI#5 *)",
            "cron(0 0 ? * L 2025-2030)",
            "cron(0 0 31 DEC ? 2199)",
            "cron(59 23 * * ? 1970)",
            // Names in any case, leading zeros, several spaces.
            "cron(0 9 ? * mon-fri *)",
            "cron(0 9 ? jan Mon *)",
            "cron(05 07 ? * 2 *)",
            "cron(0  7 ?  * MON *)",
            "cron(0 0 lw * ? *)",
            "cron(0-15/1 8-8 ? * 2,3,4,5,6,7 *)",
            "cron(30-30 13-13 ? * 2,4,6 *)",
            "cron(1-31/30 1-1 ? * 1,7 *)",
            "cron(*/59 */23 */31 */12 ? *)",
        ] {
            assert!(parse(s).is_ok(), "{s}: {:?}", parse(s));
        }
    }

    #[test]
    fn cron_fields_parse_to_plain_data() {
        let c = cron("cron(5/10 8-17/2,20 LW JAN-MAR/2 ? 2025-2030)");
        assert_eq!(c.minutes, items(&[(Range::One(5), Some(10))]));
        assert_eq!(
            c.hours,
            items(&[(Range::Span(8, 17), Some(2)), (Range::One(20), None)])
        );
        assert_eq!(c.day_of_month, Field::LastWeekday);
        assert_eq!(c.month, items(&[(Range::Span(1, 3), Some(2))]));
        assert_eq!(c.day_of_week, Field::NoSpecific);
        assert_eq!(c.year, items(&[(Range::Span(2025, 2030), None)]));

        let f = |field, text| parse_field(field, text).unwrap();
        assert_eq!(f(CronField::DayOfMonth, "L"), Field::Last);
        assert_eq!(f(CronField::DayOfMonth, "15W"), Field::NearestWeekday(15));
        assert_eq!(f(CronField::DayOfMonth, "1w"), Field::NearestWeekday(1));
        assert_eq!(f(CronField::DayOfWeek, "L"), Field::Last);
        assert_eq!(f(CronField::DayOfWeek, "5L"), Field::LastDayOfWeek(5));
        assert_eq!(f(CronField::DayOfWeek, "friL"), Field::LastDayOfWeek(6));
        assert_eq!(
            f(CronField::DayOfWeek, "3#2"),
            Field::Nth { day: 3, week: 2 }
        );
        assert_eq!(
            f(CronField::DayOfWeek, "SUN#1"),
            Field::Nth { day: 1, week: 1 }
        );
        assert_eq!(f(CronField::DayOfWeek, "?"), Field::NoSpecific);
        assert_eq!(
            f(CronField::DayOfWeek, "SUN,sat"),
            items(&[(Range::One(1), None), (Range::One(7), None)])
        );
        assert_eq!(f(CronField::Month, "dec"), items(&[(Range::One(12), None)]));
        assert_eq!(
            f(CronField::Month, "NOV-FEB"),
            items(&[(Range::Span(11, 2), None)])
        );
        assert_eq!(
            f(CronField::Minutes, "*/15"),
            items(&[(Range::All, Some(15))])
        );
    }

    #[test]
    fn the_question_mark_rule() {
        assert_eq!(
            err("cron(0 7 * * MON-FRI *)"),
            r#""cron(0 7 * * MON-FRI *)": day-of-month and day-of-week cannot both be set; use ? in one of them"#
        );
        assert_eq!(
            err("cron(0 7 1 * 2 *)"),
            r#""cron(0 7 1 * 2 *)": day-of-month and day-of-week cannot both be set; use ? in one of them"#
        );
        assert_eq!(
            err("cron(0 7 L * L *)"),
            r#""cron(0 7 L * L *)": day-of-month and day-of-week cannot both be set; use ? in one of them"#
        );
        assert_eq!(
            err("cron(0 7 ? * ? *)"),
            r#""cron(0 7 ? * ? *)": day-of-month and day-of-week cannot both be ?; set one of them (* in day-of-month is every day)"#
        );
        for (s, field) in [
            ("cron(? 7 * * ? *)", "minutes"),
            ("cron(0 ? * * ? *)", "hours"),
            ("cron(0 7 * ? ? *)", "month"),
            ("cron(0 7 * * ? ?)", "year"),
        ] {
            assert_eq!(
                err(s),
                format!("{s:?}: {field}: ? is allowed only in day-of-month or day-of-week")
            );
        }
        assert_eq!(
            err("cron(0 7 ?,1 * ? *)"),
            r#""cron(0 7 ?,1 * ? *)": day-of-month: "?": ? stands alone: it cannot be listed with other values"#
        );
    }

    #[test]
    fn field_count() {
        assert_eq!(
            err("cron(0 7 * * ?)"),
            r#""cron(0 7 * * ?)": expected 6 fields (minutes hours day-of-month month day-of-week year), found 5; EventBridge Scheduler's cron ends with a year field (* for every year)"#
        );
        assert_eq!(
            err("cron(0 0 7 * * ? *)"),
            r#""cron(0 0 7 * * ? *)": expected 6 fields (minutes hours day-of-month month day-of-week year), found 7; there is no seconds field"#
        );
        assert_eq!(
            err("cron()"),
            r#""cron()": expected 6 fields (minutes hours day-of-month month day-of-week year), found 0"#
        );
    }

    #[test]
    fn ranges_per_field() {
        for (s, message) in [
            ("cron(60 7 ? * MON *)", "minutes: 60 is out of range (0-59)"),
            ("cron(0 24 ? * MON *)", "hours: 24 is out of range (0-23)"),
            (
                "cron(0 7 0 * ? *)",
                "day-of-month: 0 is out of range (1-31)",
            ),
            (
                "cron(0 7 32 * ? *)",
                "day-of-month: 32 is out of range (1-31)",
            ),
            (
                "cron(0 7 1 13 ? *)",
                "month: 13 is out of range (1-12 or JAN-DEC)",
            ),
            (
                "cron(0 7 1 0 ? *)",
                "month: 0 is out of range (1-12 or JAN-DEC)",
            ),
            (
                "cron(0 7 ? * 0 *)",
                "day-of-week: 0 is out of range (1-7 or SUN-SAT, 1 is Sunday)",
            ),
            (
                "cron(0 7 ? * 8 *)",
                "day-of-week: 8 is out of range (1-7 or SUN-SAT, 1 is Sunday)",
            ),
            (
                "cron(0 7 1 * ? 1969)",
                "year: 1969 is out of range (1970-2199)",
            ),
            (
                "cron(0 7 1 * ? 2200)",
                "year: 2200 is out of range (1970-2199)",
            ),
            (
                "cron(0 7 1 * ? 99999999)",
                "year: 99999999 is out of range (1970-2199)",
            ),
            ("cron(0 7-25 ? * MON *)", "hours: 25 is out of range (0-23)"),
            (
                "cron(0,61 7 ? * MON *)",
                "minutes: 61 is out of range (0-59)",
            ),
            (
                "cron(0 7 ? * MON-9 *)",
                "day-of-week: 9 is out of range (1-7 or SUN-SAT, 1 is Sunday)",
            ),
            (
                "cron(x 7 ? * MON *)",
                r#"minutes: "x" is not a number (0-59)"#,
            ),
            (
                "cron(0 -1 ? * MON *)",
                r#"hours: "-1" is not a range (from-to, e.g. 8-17)"#,
            ),
            (
                "cron(0 1-2-3 ? * MON *)",
                r#"hours: "1-2-3" is not a range (from-to, e.g. 8-17)"#,
            ),
            (
                "cron(0 7- ? * MON *)",
                r#"hours: "7-" is not a range (from-to, e.g. 8-17)"#,
            ),
            (
                "cron(0 7 ? JANUARY MON *)",
                r#"month: "JANUARY" is not a month (1-12 or JAN-DEC)"#,
            ),
            (
                "cron(0 7 ? * MONDAY *)",
                r#"day-of-week: "MONDAY" is not a day of the week (1-7 or SUN-SAT, 1 is Sunday)"#,
            ),
            (
                "cron(0 7 ? * MON-FRY *)",
                r#"day-of-week: "FRY" is not a day of the week (1-7 or SUN-SAT, 1 is Sunday); did you mean "FRI"?"#,
            ),
            (
                "cron(0 7 ? OKT * *)",
                r#"month: "OKT" is not a month (1-12 or JAN-DEC); did you mean "OCT"?"#,
            ),
            (
                "cron(0 7 ? * JAN *)",
                r#"day-of-week: "JAN" is not a day of the week (1-7 or SUN-SAT, 1 is Sunday)"#,
            ),
            (
                "cron(0 MON ? * * *)",
                r#"hours: "MON" is not a number (0-23)"#,
            ),
            (
                "cron(0 7 1 * ? 2030-2025)",
                r#"year: "2030-2025" goes backwards"#,
            ),
        ] {
            assert_eq!(err(s), format!("{s:?}: {message}"));
        }
    }

    #[test]
    fn lists_and_wildcards() {
        for (s, message) in [
            (
                "cron(0,,30 7 ? * MON *)",
                r#"minutes: "0,,30" has an empty item (a stray comma?)"#,
            ),
            (
                "cron(0, 7 ? * MON *)",
                r#"minutes: "0," has an empty item (a stray comma?)"#,
            ),
            (
                "cron(0 7, ? * MON *)",
                r#"hours: "7," has an empty item (a stray comma?)"#,
            ),
            (
                "cron(*,5 7 ? * MON *)",
                r#"minutes: "*,5": * is every value and cannot be listed with others"#,
            ),
            (
                "cron(*-5 7 ? * MON *)",
                r#"minutes: "*" is not a number (0-59)"#,
            ),
        ] {
            assert_eq!(err(s), format!("{s:?}: {message}"));
        }
    }

    #[test]
    fn increments() {
        for (s, message) in [
            (
                "cron(*/60 * * * ? *)",
                r#"minutes: the increment in "*/60" must be 1-59"#,
            ),
            (
                "cron(*/0 * * * ? *)",
                r#"minutes: the increment in "*/0" must be 1-59"#,
            ),
            (
                "cron(0 */24 * * ? *)",
                r#"hours: the increment in "*/24" must be 1-23"#,
            ),
            (
                "cron(0 0 1/32 * ? *)",
                r#"day-of-month: the increment in "1/32" must be 1-31"#,
            ),
            (
                "cron(0 0 1 1/13 ? *)",
                r#"month: the increment in "1/13" must be 1-12"#,
            ),
            (
                "cron(0 0 1 1 ? 1970/230)",
                r#"year: the increment in "1970/230" must be 1-229"#,
            ),
            (
                "cron(5/ * * * ? *)",
                r#"minutes: the increment in "5/" must be 1-59"#,
            ),
            (
                "cron(5/x * * * ? *)",
                r#"minutes: the increment in "5/x" must be 1-59"#,
            ),
            (
                "cron(5/+2 * * * ? *)",
                r#"minutes: the increment in "5/+2" must be 1-59"#,
            ),
            (
                "cron(5/2/3 * * * ? *)",
                r#"minutes: the increment in "5/2/3" must be 1-59"#,
            ),
            (
                "cron(/5 * * * ? *)",
                r#"minutes: "/5" needs a start before / (e.g. */15 or 0/15)"#,
            ),
            (
                "cron(0 0 ? * MON/2 *)",
                r#"day-of-week: "MON/2": day-of-week takes no / increments; list the days instead (e.g. MON,WED,FRI)"#,
            ),
            (
                "cron(0 0 ? * */2 *)",
                r#"day-of-week: "*/2": day-of-week takes no / increments; list the days instead (e.g. MON,WED,FRI)"#,
            ),
        ] {
            assert_eq!(err(s), format!("{s:?}: {message}"));
        }
    }

    #[test]
    fn l_w_and_hash() {
        for (s, message) in [
            // W: day-of-month only, after a day or L.
            ("cron(0 0 32W * ? *)", r#"day-of-month: "32W": the day before W must be 1-31"#),
            ("cron(0 0 0W * ? *)", r#"day-of-month: "0W": the day before W must be 1-31"#),
            ("cron(0 0 W * ? *)", "day-of-month: W needs a day: 15W is the weekday nearest the 15th, LW the last weekday"),
            ("cron(0 0 ? * 2W *)", r#"day-of-week: "2W": W is allowed only in day-of-month (15W: the weekday nearest the 15th)"#),
            ("cron(0 0 1 5W ? *)", r#"month: "5W": W is allowed only in day-of-month (15W: the weekday nearest the 15th)"#),
            ("cron(0 0 1,15W * ? *)", r#"day-of-month: "15W": L, LW and 15W stand alone in day-of-month: they cannot be listed or used in ranges"#),
            ("cron(0 0 1-LW * ? *)", r#"day-of-month: "LW": L, LW and 15W stand alone in day-of-month: they cannot be listed or used in ranges"#),
            // L: day-of-month (alone) and day-of-week (alone or after a day).
            ("cron(0 0 L-3 * ? *)", r#"day-of-month: "L-3": L takes no offset (L is the last day of the month, LW the last weekday)"#),
            ("cron(0 0 3L * ? *)", r#"day-of-month: "3L": 5L (the last Thursday of the month) is allowed only in day-of-week; in day-of-month L alone is the last day"#),
            ("cron(0 0 1,L * ? *)", r#"day-of-month: "L": L, LW and 15W stand alone in day-of-month: they cannot be listed or used in ranges"#),
            ("cron(L 0 1 * ? *)", r#"minutes: "L": L is allowed only in day-of-month or day-of-week"#),
            ("cron(0 0 1 L ? *)", r#"month: "L": L is allowed only in day-of-month or day-of-week"#),
            ("cron(0 0 ? * 8L *)", "day-of-week: 8 is out of range (1-7 or SUN-SAT, 1 is Sunday)"),
            ("cron(0 0 ? * 5L,6L *)", r#"day-of-week: "5L": L, 5L and 3#2 stand alone in day-of-week: they cannot be listed or used in ranges"#),
            ("cron(0 0 ? * MON-L *)", r#"day-of-week: "L": L, 5L and 3#2 stand alone in day-of-week: they cannot be listed or used in ranges"#),
            // #: day-of-week only, day 1-7, week 1-5.
            ("cron(0 0 ? * 3#6 *)", r#"day-of-week: "3#6": the week after # must be 1-5"#),
            ("cron(0 0 ? * 3#0 *)", r#"day-of-week: "3#0": the week after # must be 1-5"#),
            ("cron(0 0 ? * 8#2 *)", "day-of-week: 8 is out of range (1-7 or SUN-SAT, 1 is Sunday)"),
            ("cron(0 0 ? * #2 *)", r##"day-of-week: "#2" is not day#week (e.g. 3#2, the second Tuesday of the month)"##),
            ("cron(0 0 ? * 3# *)", r##"day-of-week: "3#" is not day#week (e.g. 3#2, the second Tuesday of the month)"##),
            ("cron(0 0 ? * 3#2,5#3 *)", r##"day-of-week: "3#2": L, 5L and 3#2 stand alone in day-of-week: they cannot be listed or used in ranges"##),
            ("cron(0 0 3#2 * ? *)", r##"day-of-month: "3#2": # is allowed only in day-of-week (3#2: the second Tuesday of the month)"##),
            ("cron(0 3#2 1 * ? *)", r##"hours: "3#2": # is allowed only in day-of-week (3#2: the second Tuesday of the month)"##),
        ] {
            assert_eq!(err(s), format!("{s:?}: {message}"));
        }
    }

    #[test]
    fn not_an_expression() {
        let any = "expected cron(minutes hours day-of-month month day-of-week year), rate(value unit) or at(yyyy-mm-ddThh:mm:ss)";
        assert_eq!(err("daily"), format!("\"daily\": {any}"));
        assert_eq!(err(""), format!("\"\": {any}"));
        assert_eq!(
            err("0 7 ? * MON-FRI *"),
            format!("\"0 7 ? * MON-FRI *\": {any}; cron fields go inside cron(...), e.g. \"cron(0 7 ? * MON-FRI *)\"")
        );
        assert_eq!(
            err("CRON(0 7 ? * MON *)"),
            r#""CRON(0 7 ? * MON *)": write cron in lowercase"#
        );
        assert_eq!(
            err("Rate(5 minutes)"),
            r#""Rate(5 minutes)": write rate in lowercase"#
        );
        assert_eq!(
            err("cron(0 7 ? * MON *"),
            r#""cron(0 7 ? * MON *": cron(...) is missing its closing ")""#
        );
        assert_eq!(
            err(" rate(5 minutes)"),
            r#"" rate(5 minutes)": must not start or end with white space"#
        );
        assert_eq!(
            err("cron (0 7 ? * MON *)"),
            format!("\"cron (0 7 ? * MON *)\": {any}")
        );
        let long = format!("cron(0 7 ? * {} *)", vec!["MON"; 70].join(","));
        assert_eq!(
            err(&long),
            format!(
                "is {} characters long; EventBridge Scheduler takes at most 256",
                long.len()
            )
        );
    }

    #[test]
    fn rate_expressions() {
        for (s, value, unit) in [
            ("rate(1 minute)", 1, RateUnit::Minute),
            ("rate(5 minutes)", 5, RateUnit::Minute),
            ("rate(1 hour)", 1, RateUnit::Hour),
            ("rate(5 hours)", 5, RateUnit::Hour),
            ("rate(1 day)", 1, RateUnit::Day),
            ("rate(30 days)", 30, RateUnit::Day),
            ("rate(10 minutes)", 10, RateUnit::Minute),
        ] {
            assert_eq!(parse(s), Ok(Expression::Rate { value, unit }), "{s}");
        }
        for (s, message) in [
            ("rate(1 hours)", "a value of 1 takes the singular unit: rate(1 hour)"),
            ("rate(1 minutes)", "a value of 1 takes the singular unit: rate(1 minute)"),
            ("rate(1 days)", "a value of 1 takes the singular unit: rate(1 day)"),
            ("rate(5 hour)", "a value other than 1 takes the plural unit: rate(5 hours)"),
            ("rate(2 minute)", "a value other than 1 takes the plural unit: rate(2 minutes)"),
            ("rate(7 day)", "a value other than 1 takes the plural unit: rate(7 days)"),
            ("rate(0 minutes)", "the value must be a positive integer (1 or more), found 0"),
            ("rate(-5 minutes)", r#"the value must be a positive integer, found "-5""#),
            ("rate(1.5 hours)", r#"the value must be a positive integer, found "1.5""#),
            ("rate(five minutes)", r#"the value must be a positive integer, found "five""#),
            ("rate(99999999999 minutes)", "the value 99999999999 is too large"),
            ("rate(5 seconds)", "the unit must be minute(s), hour(s) or day(s); EventBridge Scheduler's smallest unit is the minute"),
            ("rate(2 weeks)", "the unit must be minute(s), hour(s) or day(s); a week is rate(14 days)"),
            ("rate(5 mins)", r#"the unit must be minute(s), hour(s) or day(s), found "mins""#),
            ("rate(5 Minutes)", "write the unit in lowercase: rate(5 minutes)"),
            ("rate(1 HOURS)", "write the unit in lowercase: rate(1 hour)"),
            ("rate(5)", "expected rate(value unit), e.g. rate(5 minutes) or rate(1 hour)"),
            ("rate()", "expected rate(value unit), e.g. rate(5 minutes) or rate(1 hour)"),
            ("rate(5  minutes)", "expected rate(value unit), e.g. rate(5 minutes) or rate(1 hour), with one space"),
            ("rate(5 minutes later)", "expected rate(value unit), e.g. rate(5 minutes) or rate(1 hour), with one space"),
        ] {
            assert_eq!(err(s), format!("{s:?}: {message}"));
        }
    }

    #[test]
    fn at_expressions() {
        assert_eq!(
            parse("at(2030-06-01T09:30:15)"),
            Ok(Expression::At(DateTime {
                year: 2030,
                month: 6,
                day: 1,
                hour: 9,
                minute: 30,
                second: 15
            }))
        );
        for s in [
            "at(2028-02-29T00:00:00)",
            "at(2000-02-29T23:59:59)",
            "at(2030-12-31T12:00:00)",
            "at(2030-04-30T12:00:00)",
        ] {
            assert!(parse(s).is_ok(), "{s}");
        }
        let shape = "expected at(yyyy-mm-ddThh:mm:ss), e.g. at(2030-06-01T09:00:00)";
        for (s, message) in [
            (
                "at(2030-02-29T09:00:00)",
                "2030-02-29 is not a date: February 2030 has 28 days".to_string(),
            ),
            (
                "at(2100-02-29T09:00:00)",
                "2100-02-29 is not a date: February 2100 has 28 days".into(),
            ),
            (
                "at(2030-04-31T09:00:00)",
                "2030-04-31 is not a date: April 2030 has 30 days".into(),
            ),
            (
                "at(2030-01-32T09:00:00)",
                "2030-01-32 is not a date: January 2030 has 31 days".into(),
            ),
            (
                "at(2030-01-00T09:00:00)",
                "2030-01-00 is not a date: January 2030 has 31 days".into(),
            ),
            (
                "at(2030-13-01T09:00:00)",
                "2030-13-01 is not a date: there is no month 13".into(),
            ),
            (
                "at(2030-00-01T09:00:00)",
                "2030-00-01 is not a date: there is no month 0".into(),
            ),
            (
                "at(2030-06-01T24:00:00)",
                "24:00:00 is not a time of day (00:00:00 to 23:59:59)".into(),
            ),
            (
                "at(2030-06-01T09:60:00)",
                "09:60:00 is not a time of day (00:00:00 to 23:59:59)".into(),
            ),
            (
                "at(2030-06-01T09:00:60)",
                "09:00:60 is not a time of day (00:00:00 to 23:59:59)".into(),
            ),
            (
                "at(2030-06-01T09:00:00Z)",
                format!("{shape}, without Z or an offset: the schedule's \"timezone\" applies"),
            ),
            (
                "at(2030-06-01T09:00:00+02:00)",
                format!("{shape}, without Z or an offset: the schedule's \"timezone\" applies"),
            ),
            (
                "at(2030-06-01 09:00:00)",
                format!("{shape}, with a T between date and time"),
            ),
            ("at(2030-06-01T09:00)", format!("{shape}, with seconds")),
            ("at(2030-6-1T09:00:00)", shape.to_string()),
            ("at(tomorrow)", shape.to_string()),
            ("at()", shape.to_string()),
            ("at(2030-06-01t09:00:00)", shape.to_string()),
            ("at(2030-06-01T09:00:0١)", shape.to_string()),
        ] {
            assert_eq!(err(s), format!("{s:?}: {message}"));
        }
    }

    #[test]
    fn calendar() {
        assert!(is_leap_year(2024) && is_leap_year(2000) && is_leap_year(2400));
        assert!(!is_leap_year(2025) && !is_leap_year(1900) && !is_leap_year(2100));
        let days: Vec<u16> = (1..=12).map(|m| days_in_month(2025, m)).collect();
        assert_eq!(days, [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
        assert_eq!(days_in_month(2024, 2), 29);
    }

    #[test]
    fn recurring_or_once() {
        assert!(parse("cron(0 7 ? * MON *)").unwrap().is_recurring());
        assert!(parse("rate(1 day)").unwrap().is_recurring());
        assert!(!parse("at(2030-01-01T00:00:00)").unwrap().is_recurring());
    }

    #[test]
    fn start_and_stop_differ() {
        assert!(check_start_stop("cron(0 7 ? * * *)", "cron(0 19 ? * * *)").is_ok());
        assert_eq!(
            check_start_stop("rate(1 day)", "rate(1 day)").unwrap_err(),
            r#""rate(1 day)" is the same as "start": the instance would be started and stopped at the same moment"#
        );
    }

    #[test]
    fn schedule_actions() {
        let s = Schedule {
            start: None,
            stop: Some("cron(0 19 ? * * *)".into()),
            timezone: "UTC".into(),
        };
        assert_eq!(s.actions(), vec![("stop", "cron(0 19 ? * * *)")]);
    }

    #[test]
    fn the_time_zone_list() {
        let zones = time_zones();
        assert!(zones.len() > 500, "{}", zones.len());
        assert!(
            zones.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(zones.iter().all(|z| z.len() <= 50 && !z.is_empty()));
        assert!(!zones.contains(&"Factory"));
        assert!(tzdata_version().starts_with("20"), "{}", tzdata_version());
        for z in [
            "UTC",
            "Etc/UTC",
            "Europe/Amsterdam",
            "America/Argentina/Buenos_Aires",
            "America/New_York",
            "Asia/Kolkata",
            "Australia/Lord_Howe",
            "Etc/GMT-14",
            "Etc/GMT+12",
            "Europe/Kyiv",
            // Older names (tzdata's links) are IANA names too.
            "Europe/Kiev",
            "US/Eastern",
            "GMT",
        ] {
            assert!(is_time_zone(z), "{z}");
            assert_eq!(check_timezone(z), Ok(()));
        }
        for z in [
            "",
            "utc",
            "Europe/amsterdam",
            "Mars/Olympus",
            "CEST",
            "Europe/",
        ] {
            assert!(!is_time_zone(z), "{z}");
        }
    }

    #[test]
    fn time_zone_messages() {
        for (z, message) in [
            (
                "Europe/Amsterdm",
                r#""Europe/Amsterdm" is not an IANA time zone name; did you mean "Europe/Amsterdam"?"#,
            ),
            (
                "europe/amsterdam",
                r#""europe/amsterdam" is not an IANA time zone name; did you mean "Europe/Amsterdam"?"#,
            ),
            (
                "America/New York",
                r#""America/New York" is not an IANA time zone name; did you mean "America/New_York"?"#,
            ),
            (
                "Amsterdam",
                r#""Amsterdam" is not an IANA time zone name; did you mean "Europe/Amsterdam"?"#,
            ),
            (
                "Buenos Aires",
                r#""Buenos Aires" is not an IANA time zone name; did you mean "America/Argentina/Buenos_Aires"?"#,
            ),
            (
                "America/Buenos_Aries",
                r#""America/Buenos_Aries" is not an IANA time zone name; did you mean "America/Buenos_Aires"?"#,
            ),
            (
                "utc",
                r#""utc" is not an IANA time zone name; did you mean "UTC"?"#,
            ),
            (
                "+02:00",
                r#""+02:00" is not an IANA time zone name; for a fixed offset from UTC use "Etc/GMT-2" (Etc/ names invert the sign), or better the place's zone, e.g. "Europe/Amsterdam""#,
            ),
            (
                "UTC-5",
                r#""UTC-5" is not an IANA time zone name; for a fixed offset from UTC use "Etc/GMT+5" (Etc/ names invert the sign), or better the place's zone, e.g. "Europe/Amsterdam""#,
            ),
            (
                "Mars/Olympus_Mons",
                r#""Mars/Olympus_Mons" is not an IANA time zone name (e.g. "Europe/Amsterdam", "America/New_York" or "UTC")"#,
            ),
            (
                "",
                r#""" is not an IANA time zone name (e.g. "Europe/Amsterdam", "America/New_York" or "UTC")"#,
            ),
            (
                "PST",
                r#""PST" is not an IANA time zone name (e.g. "Europe/Amsterdam", "America/New_York" or "UTC")"#,
            ),
            (
                "+05:30",
                r#""+05:30" is not an IANA time zone name (e.g. "Europe/Amsterdam", "America/New_York" or "UTC")"#,
            ),
        ] {
            assert_eq!(check_timezone(z).unwrap_err(), message, "{z}");
        }
    }

    mod never_panics {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn on_any_text(s in "\\PC{0,40}") {
                let _ = parse(&s);
                let _ = check_timezone(&s);
            }

            #[test]
            fn on_cron_like_text(fields in "[0-9A-Za-z?*/,#-]{1,7}( [0-9A-Za-z?*/,#-]{1,7}){4,6}") {
                let s = format!("cron({fields})");
                if let Err(e) = parse(&s) {
                    prop_assert!(e.starts_with(&format!("{s:?}: ")), "{}", e);
                }
            }

            #[test]
            fn on_rate_and_at_like_text(inner in "[0-9a-zA-Z :T-]{0,22}") {
                for s in [format!("rate({inner})"), format!("at({inner})")] {
                    if let Err(e) = parse(&s) {
                        prop_assert!(e.starts_with(&format!("{s:?}: ")), "{}", e);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ through stack.json

    const APP: &str = r#"{"name":"my-app"}"#;

    fn stack(schedule: &str) -> String {
        format!(
            r#"{{"name":"jobs","instances":{{"worker":{{"image":"ami-12345678","type":"t3.micro","code":".","schedule":{schedule}}}}}}}"#
        )
    }

    fn errors(schedule: &str) -> Vec<String> {
        crate::config::parse_config(APP.as_bytes(), stack(schedule).as_bytes())
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn parsed(schedule: &str) -> Option<Schedule> {
        let c = crate::config::parse_config(APP.as_bytes(), stack(schedule).as_bytes())
            .unwrap_or_else(|e| panic!("{schedule}: {e:?}"));
        c.instances[0].schedule.clone()
    }

    #[test]
    fn the_design_example_through_stack_json() {
        assert_eq!(
            parsed(
                r#"{"start": "cron(0 7 ? * MON-FRI *)", "stop": "cron(0 19 ? * MON-FRI *)", "timezone": "Europe/Amsterdam"}"#
            ),
            Some(Schedule {
                start: Some("cron(0 7 ? * MON-FRI *)".into()),
                stop: Some("cron(0 19 ? * MON-FRI *)".into()),
                timezone: "Europe/Amsterdam".into(),
            })
        );
    }

    #[test]
    fn each_part_is_optional_and_the_zone_defaults_to_utc() {
        assert_eq!(
            parsed(r#"{"stop": "cron(0 19 ? * * *)"}"#),
            Some(Schedule {
                start: None,
                stop: Some("cron(0 19 ? * * *)".into()),
                timezone: "UTC".into(),
            })
        );
        assert_eq!(
            parsed(r#"{"start": "rate(1 day)"}"#)
                .unwrap()
                .start
                .as_deref(),
            Some("rate(1 day)")
        );
        let c = crate::config::parse_config(
            APP.as_bytes(),
            br#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"."}}}"#,
        )
        .unwrap();
        assert_eq!(c.instances[0].schedule, None);
    }

    #[test]
    fn stack_json_messages() {
        assert_eq!(
            errors(r#"{"start": "cron(0 7 * * MON-FRI *)"}"#),
            vec![
                r#"stack.json: /instances/worker/schedule/start: "cron(0 7 * * MON-FRI *)": day-of-month and day-of-week cannot both be set; use ? in one of them"#
            ]
        );
        assert_eq!(
            errors(
                r#"{"start": "rate(1 hours)", "stop": "rate(5 hour)", "timezone": "Europe/Amsterdm"}"#
            ),
            vec![
                r#"stack.json: /instances/worker/schedule/start: "rate(1 hours)": a value of 1 takes the singular unit: rate(1 hour)"#,
                r#"stack.json: /instances/worker/schedule/stop: "rate(5 hour)": a value other than 1 takes the plural unit: rate(5 hours)"#,
                r#"stack.json: /instances/worker/schedule/timezone: "Europe/Amsterdm" is not an IANA time zone name; did you mean "Europe/Amsterdam"?"#,
            ]
        );
        assert_eq!(
            errors("{}"),
            vec![format!("stack.json: /instances/worker/schedule: {EMPTY}")]
        );
        assert_eq!(
            errors(r#"{"timezone": "UTC"}"#),
            vec![format!("stack.json: /instances/worker/schedule: {NOTHING}")]
        );
        assert_eq!(
            errors(r#"{"strat": "cron(0 7 ? * * *)", "timeZone": "UTC"}"#),
            vec![
                r#"stack.json: /instances/worker/schedule/strat: unknown field "strat"; did you mean "start"?"#,
                r#"stack.json: /instances/worker/schedule/timeZone: unknown field "timeZone"; did you mean "timezone"?"#,
            ]
        );
        assert_eq!(
            errors(r#"{"stop": "rate(1 day)", "every": "day"}"#),
            vec![
                r#"stack.json: /instances/worker/schedule/every: unknown field "every" (known fields: start, stop, timezone)"#
            ]
        );
        assert_eq!(
            errors(r#"{"start": 7, "stop": null, "timezone": ["UTC"]}"#),
            vec![
                "stack.json: /instances/worker/schedule/start: expected a string, found a number",
                "stack.json: /instances/worker/schedule/stop: expected a string, found null",
                "stack.json: /instances/worker/schedule/timezone: expected a string, found a list",
            ]
        );
        assert_eq!(
            errors(r#""cron(0 7 ? * * *)""#),
            vec!["stack.json: /instances/worker/schedule: expected an object, found a string"]
        );
        assert_eq!(
            errors(r#"{"start": "rate(1 day)", "stop": "rate(1 day)"}"#),
            vec![
                r#"stack.json: /instances/worker/schedule/stop: "rate(1 day)" is the same as "start": the instance would be started and stopped at the same moment"#
            ]
        );
        assert_eq!(
            errors(r#"{"stop": "cron(0 19 ? * MON-FRI)"}"#),
            vec![
                r#"stack.json: /instances/worker/schedule/stop: "cron(0 19 ? * MON-FRI)": expected 6 fields (minutes hours day-of-month month day-of-week year), found 5; EventBridge Scheduler's cron ends with a year field (* for every year)"#
            ]
        );
    }

    #[test]
    fn a_bad_schedule_does_not_hide_other_problems() {
        let e = crate::config::parse_config(
            APP.as_bytes(),
            br#"{"name":"jobs","instances":{"worker":{"image":"nope","type":"t3.micro","code":".","schedule":{"start":"rate(0 days)"}}}}"#,
        )
        .unwrap_err();
        let e: Vec<String> = e.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            e,
            vec![
                r#"stack.json: /instances/worker/image: "nope" is not an AMI id (ami- and 8 or 17 hex digits) nor resolve:ssm:/parameter/path"#,
                r#"stack.json: /instances/worker/schedule/start: "rate(0 days)": the value must be a positive integer (1 or more), found 0"#,
            ]
        );
    }
}
