//! Time as a value: keyward-core never reads a clock.

use serde::{Deserialize, Serialize};

/// Milliseconds in one UTC day.
pub const DAY_MS: u64 = 86_400_000;

/// A point in time: milliseconds since the Unix epoch, UTC.
///
/// Every decision takes `now` as one of these, so the same inputs always give
/// the same verdict, in tests and at the edge alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The epoch itself.
    pub const ZERO: Self = Self(0);

    /// Milliseconds since the epoch.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Number of whole UTC days since the epoch.
    pub const fn day(self) -> u64 {
        self.0 / DAY_MS
    }

    /// The next UTC midnight strictly after `self`.
    pub const fn next_midnight(self) -> Self {
        Self((self.day() + 1).saturating_mul(DAY_MS))
    }

    /// `self + ms`, saturating.
    pub const fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `self` until `later`, or 0 if `later` is not after it.
    pub const fn until(self, later: Self) -> u64 {
        later.0.saturating_sub(self.0)
    }

    /// The UTC calendar date `(year, month 1–12, day 1–31)` of this instant.
    pub fn date(self) -> (i64, u32, u32) {
        civil_from_days(self.day() as i64)
    }

    /// Midnight UTC at the start of the given calendar date.
    ///
    /// Dates before the epoch give [`UnixMillis::ZERO`].
    pub fn from_date(year: i64, month: u32, day: u32) -> Self {
        let days = days_from_civil(year, month, day);
        Self(u64::try_from(days).unwrap_or(0).saturating_mul(DAY_MS))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Number of days in a month of the proleptic Gregorian calendar.
pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            if leap { 29 } else { 28 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(UnixMillis(0).date(), (1970, 1, 1));
        // 2024-03-01T10:00:00Z = 1709287200000
        assert_eq!(UnixMillis(1_709_287_200_000).date(), (2024, 3, 1));
        assert_eq!(UnixMillis::from_date(2024, 2, 29), UnixMillis(1_709_164_800_000));
        assert_eq!(UnixMillis::from_date(2000, 1, 1), UnixMillis(946_684_800_000));
    }

    #[test]
    fn round_trip_days() {
        for z in [-1_000_000i64, -1, 0, 1, 59, 365, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "day {z}");
        }
    }

    #[test]
    fn next_midnight_is_strictly_after() {
        assert_eq!(UnixMillis(0).next_midnight(), UnixMillis(DAY_MS));
        assert_eq!(UnixMillis(DAY_MS - 1).next_midnight(), UnixMillis(DAY_MS));
        assert_eq!(UnixMillis(DAY_MS).next_midnight(), UnixMillis(2 * DAY_MS));
    }

    #[test]
    fn month_lengths() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2023, 2), 28);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2024, 4), 30);
    }
}
