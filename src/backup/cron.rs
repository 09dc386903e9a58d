//! BACKUP_SCHEDULE: classic five-field cron (minute, hour, day of month,
//! month, day of week) and the `@daily`-style shorthands, evaluated in UTC,
//! as Spilo's crontab did.

use super::calendar::{self, Date, SECONDS_PER_DAY};

/// A parsed schedule: the set of each field as a bit mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// Bit 0 = Sunday.
    days_of_week: u64,
    /// Cron's rule: when both day fields are restricted (neither starts
    /// with `*`), a day matches when either does.
    either_day: bool,
}

/// One field's range and names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
/// Names are numbered from `min`: jan = 1.
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 7 is Sunday as well as 0.
const DAY_OF_WEEK: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A whole Gregorian cycle: a schedule that matches no minute in it never
/// matches (February 30th).
const SEARCH_DAYS: i64 = 146_097;

impl Schedule {
    /// Parses a schedule; the error is a one-line reason.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix('@') {
            let fields = match name.to_ascii_lowercase().as_str() {
                "hourly" => "0 * * * *",
                "daily" | "midnight" => "0 0 * * *",
                "weekly" => "0 0 * * 0",
                "monthly" => "0 0 1 * *",
                "yearly" | "annually" => "0 0 1 1 *",
                _ => {
                    return Err(format!(
                        "@{name} is not one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually"
                    ));
                }
            };
            return Schedule::parse(fields);
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "{} fields instead of five (minute hour day-of-month month day-of-week)",
                fields.len()
            ));
        };
        let mut days_of_week = parse_field(dow, &DAY_OF_WEEK)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        Ok(Schedule {
            minutes: parse_field(minute, &MINUTE)?,
            hours: parse_field(hour, &HOUR)?,
            days_of_month: parse_field(dom, &DAY_OF_MONTH)?,
            months: parse_field(month, &MONTH)?,
            days_of_week,
            either_day: !dom.starts_with('*') && !dow.starts_with('*'),
        })
    }

    /// The first minute strictly after `unix_seconds` that the schedule
    /// matches (UTC), or None when no day in a whole Gregorian cycle does.
    pub fn next_after(&self, unix_seconds: i64) -> Option<i64> {
        let start = unix_seconds
            .div_euclid(60)
            .checked_add(1)?
            .checked_mul(60)?;
        let first_day = start.div_euclid(SECONDS_PER_DAY);
        let first_minute = start.rem_euclid(SECONDS_PER_DAY) / 60;
        (first_day..first_day.checked_add(SEARCH_DAYS)?)
            .filter(|&day| self.matches_day(day))
            .find_map(|day| {
                let from = if day == first_day { first_minute } else { 0 };
                (from..24 * 60)
                    .find(|minute| {
                        bit(self.hours, (minute / 60) as u32)
                            && bit(self.minutes, (minute % 60) as u32)
                    })
                    .map(|minute| day * SECONDS_PER_DAY + minute * 60)
            })
    }

    fn matches_day(&self, day: i64) -> bool {
        let Date {
            month, day: dom, ..
        } = calendar::civil_from_days(day);
        if !bit(self.months, month) {
            return false;
        }
        let by_dom = bit(self.days_of_month, dom);
        let by_dow = bit(self.days_of_week, calendar::weekday(day));
        if self.either_day {
            by_dom || by_dow
        } else {
            by_dom && by_dow
        }
    }
}

fn bit(mask: u64, n: u32) -> bool {
    mask & (1 << n) != 0
}

/// A comma-separated list of `*`, `a`, `a-b`, each optionally `/step`.
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    text.split(',')
        .try_fold(0, |mask, item| Ok(mask | parse_item(item, field)?))
}

fn parse_item(item: &str, field: &Field) -> Result<u64, String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let step: u32 = step
                .parse()
                .map_err(|_| format!("{} step {step:?} is not a number", field.name))?;
            if step == 0 {
                return Err(format!("{} step is 0", field.name));
            }
            (range, Some(step))
        }
        None => (item, None),
    };
    let (low, high) = if range == "*" {
        (field.min, field.max)
    } else if let Some((low, high)) = range.split_once('-') {
        let (low, high) = (value(low, field)?, value(high, field)?);
        if low > high {
            return Err(format!("{} range {range} is backwards", field.name));
        }
        (low, high)
    } else {
        let low = value(range, field)?;
        // `a/n` runs from a to the end, as in Vixie cron.
        (low, if step.is_some() { field.max } else { low })
    };
    let step = step.unwrap_or(1) as usize;
    Ok((low..=high).step_by(step).fold(0, |mask, n| mask | 1 << n))
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|name| *name == lower) {
        // Names are at most twelve: the index fits.
        return Ok(field.min + index as u32);
    }
    let n: u32 = text.parse().map_err(|_| {
        format!(
            "{} {text:?} is not a number{}",
            field.name,
            names_hint(field)
        )
    })?;
    if n < field.min || n > field.max {
        return Err(format!(
            "{} {n} is out of {}-{}",
            field.name, field.min, field.max
        ));
    }
    Ok(n)
}

fn names_hint(field: &Field) -> String {
    match (field.names.first(), field.names.last()) {
        (Some(first), Some(last)) => format!(" or a name {first}..{last}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::calendar::format_utc;

    /// 2026-12-02 09:56:52 UTC, a Wednesday.
    const NOW: i64 = 1_796_205_412;

    fn next(schedule: &str, after: i64) -> String {
        let next = Schedule::parse(schedule)
            .unwrap()
            .next_after(after)
            .unwrap();
        format_utc(next)
    }

    fn error(schedule: &str) -> String {
        Schedule::parse(schedule).unwrap_err()
    }

    #[test]
    fn next_times() {
        assert_eq!(next("00 01 * * *", NOW), "2026-12-03 01:00:00");
        assert_eq!(next("* * * * *", NOW), "2026-12-02 09:57:00");
        assert_eq!(next("*/15 * * * *", NOW), "2026-12-02 10:00:00");
        assert_eq!(next("57 9 * * *", NOW), "2026-12-02 09:57:00");
        assert_eq!(next("56 9 * * *", NOW), "2026-12-03 09:56:00");
        assert_eq!(next("0 0 1 jan *", NOW), "2027-01-01 00:00:00");
        assert_eq!(next("30 2 * * sun", NOW), "2026-12-06 02:30:00");
        assert_eq!(next("30 2 * * 7", NOW), "2026-12-06 02:30:00");
        assert_eq!(next("0 12 * * MON-fri", NOW), "2026-12-02 12:00:00");
        assert_eq!(next("0 0 * * 5-7", NOW), "2026-12-04 00:00:00");
        assert_eq!(next("0 0 29 2 *", NOW), "2028-02-29 00:00:00");
        assert_eq!(next("0 0 29 2 *", 4_107_542_400), "2104-02-29 00:00:00"); // after 2100-03-01
        assert_eq!(next("0 8-18/4 * * *", NOW), "2026-12-02 12:00:00");
        assert_eq!(next("5,10/20 * * * *", NOW), "2026-12-02 10:05:00");
    }

    #[test]
    fn strictly_after_the_minute() {
        let at = 1_796_205_420; // 09:57:00 exactly
        assert_eq!(next("57 9 * * *", at), "2026-12-03 09:57:00");
        assert_eq!(next("* * * * *", at - 1), "2026-12-02 09:57:00");
    }

    #[test]
    fn either_day_when_both_are_restricted() {
        // The 13th or a Friday, whichever comes first.
        assert_eq!(next("0 0 13 * fri", NOW), "2026-12-04 00:00:00");
        assert_eq!(next("0 0 3 * fri", NOW), "2026-12-03 00:00:00");
        // A `*` start keeps the other field alone in charge.
        assert_eq!(next("0 0 */1 * fri", NOW), "2026-12-04 00:00:00");
        assert_eq!(next("0 0 13 * *", NOW), "2026-12-13 00:00:00");
    }

    #[test]
    fn shorthands() {
        assert_eq!(next("@hourly", NOW), "2026-12-02 10:00:00");
        assert_eq!(next("@daily", NOW), "2026-12-03 00:00:00");
        assert_eq!(next("@MIDNIGHT", NOW), "2026-12-03 00:00:00");
        assert_eq!(next("@weekly", NOW), "2026-12-06 00:00:00");
        assert_eq!(next("@monthly", NOW), "2027-01-01 00:00:00");
        assert_eq!(next("@yearly", NOW), "2027-01-01 00:00:00");
        assert_eq!(next("@annually", NOW), "2027-01-01 00:00:00");
    }

    #[test]
    fn never() {
        let feb30 = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(feb30.next_after(NOW), None);
        assert_eq!(feb30.next_after(i64::MAX), None);
    }

    #[test]
    fn reasons() {
        assert_eq!(error("61 * * * *"), "minute 61 is out of 0-59");
        assert_eq!(error("0 24 * * *"), "hour 24 is out of 0-23");
        assert_eq!(error("0 0 0 * *"), "day of month 0 is out of 1-31");
        assert_eq!(error("0 0 * 13 *"), "month 13 is out of 1-12");
        assert_eq!(error("0 0 * * 8"), "day of week 8 is out of 0-7");
        assert_eq!(
            error("0 0 * foo *"),
            "month \"foo\" is not a number or a name jan..dec"
        );
        assert_eq!(error("0 0 * * 5-1"), "day of week range 5-1 is backwards");
        assert_eq!(error("*/0 * * * *"), "minute step is 0");
        assert_eq!(error("*/x * * * *"), "minute step \"x\" is not a number");
        assert_eq!(
            error("0 1 * *"),
            "4 fields instead of five (minute hour day-of-month month day-of-week)"
        );
        assert_eq!(
            error(""),
            "0 fields instead of five (minute hour day-of-month month day-of-week)"
        );
        assert!(error("@reboot").starts_with("@reboot is not one of"));
        assert_eq!(error("1,,2 * * * *"), "minute \"\" is not a number");
    }
}
