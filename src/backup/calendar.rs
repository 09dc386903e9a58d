//! UTC calendar arithmetic on unix seconds, enough for cron and for
//! printing times: no time zone database, no crate. Days become dates by
//! Howard Hinnant's `civil_from_days` (proleptic Gregorian calendar; the
//! tests check it against its inverse).

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Date {
    pub(crate) year: i64,
    /// 1-12.
    pub(crate) month: u32,
    /// 1-31.
    pub(crate) day: u32,
}

pub(crate) const SECONDS_PER_DAY: i64 = 86_400;

/// The date `days` after 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction: day 1-31, month 1-12.
    Date {
        year,
        month: month as u32,
        day: day as u32,
    }
}

/// Days since 1970-01-01 of `date`.
pub(crate) fn days_from_civil(date: Date) -> i64 {
    let month = i64::from(date.month);
    let year = if month <= 2 { date.year - 1 } else { date.year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(date.day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Day of the week of `days` after 1970-01-01 (a Thursday): 0 = Sunday.
pub(crate) fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// `unix_seconds` as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn format_utc(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(SECONDS_PER_DAY);
    let seconds = unix_seconds.rem_euclid(SECONDS_PER_DAY);
    let date = civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date.year,
        date.month,
        date.day,
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i64, month: u32, day: u32) -> Date {
        Date { year, month, day }
    }

    #[test]
    fn known_days() {
        assert_eq!(days_from_civil(date(1970, 1, 1)), 0);
        assert_eq!(days_from_civil(date(2000, 3, 1)), 11_017);
        assert_eq!(days_from_civil(date(1969, 12, 31)), -1);
        assert_eq!(civil_from_days(19_782), date(2024, 2, 29));
        assert_eq!(weekday(0), 4);
        assert_eq!(weekday(19_782), 4); // 2024-02-29 was a Thursday
        assert_eq!(weekday(-1), 3);
    }

    #[test]
    fn round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(7) {
            assert_eq!(days_from_civil(civil_from_days(days)), days);
        }
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(1_796_205_412), "2026-12-02 09:56:52");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59");
    }
}
