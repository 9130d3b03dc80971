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

impl UnixMillis {
    /// RFC 3339 UTC with milliseconds, e.g. `2024-03-01T10:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        let (y, mo, d) = self.date();
        let ms_of_day = self.0 % DAY_MS;
        let (h, mi, s, ms) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }

    /// Parses RFC 3339 (`2024-03-01T10:00:00Z`, optional fraction of up to 9
    /// digits, `Z` or `±HH:MM` offset). Instants before 1970 are refused.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 20 || b.len() > 40 {
            return None;
        }
        let num = |r: core::ops::Range<usize>| -> Option<i64> {
            let part = b.get(r)?;
            if part.iter().all(u8::is_ascii_digit) { core::str::from_utf8(part).ok()?.parse().ok() } else { None }
        };
        // The separators of `YYYY-MM-DDTHH:MM:SS`; `num` checks the digits.
        let [_, _, _, _, b'-', _, _, b'-', _, _, b'T' | b't', _, _, b':', _, _, b':', ..] = b else {
            return None;
        };
        let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
        let (mo, d) = (u32::try_from(mo).ok()?, u32::try_from(d).ok()?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
            return None;
        }
        let mut i = 19;
        let mut ms = 0i64;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let digits = i - start;
            if digits == 0 || digits > 9 {
                return None;
            }
            let frac = num(start..i)?;
            ms = if digits >= 3 {
                frac / 10i64.pow(u32::try_from(digits - 3).ok()?)
            } else {
                frac * 10i64.pow(u32::try_from(3 - digits).ok()?)
            };
        }
        let offset_min = match b.get(i..)? {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let oh = i64::from(h1.wrapping_sub(b'0')) * 10 + i64::from(h2.wrapping_sub(b'0'));
                let om = i64::from(m1.wrapping_sub(b'0')) * 10 + i64::from(m2.wrapping_sub(b'0'));
                if ![h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) || oh > 23 || om > 59 {
                    return None;
                }
                let total = oh * 60 + om;
                if *sign == b'+' { total } else { -total }
            }
            _ => return None,
        };
        let days = days_from_civil(y, mo, d);
        let ms_total = ((days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60) * 1000).checked_add(ms)?;
        u64::try_from(ms_total).ok().map(Self)
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
    fn rfc3339() {
        assert_eq!(UnixMillis(1_709_287_200_000).to_rfc3339(), "2024-03-01T10:00:00.000Z");
        assert_eq!(UnixMillis(1_709_287_200_123).to_rfc3339(), "2024-03-01T10:00:00.123Z");
        assert_eq!(UnixMillis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        for (text, ms) in [
            ("2024-03-01T10:00:00Z", 1_709_287_200_000),
            ("2024-03-01T10:00:00.000Z", 1_709_287_200_000),
            ("2024-03-01T10:00:00.5Z", 1_709_287_200_500),
            ("2024-03-01T10:00:00.123456789Z", 1_709_287_200_123),
            ("2024-03-01T12:00:00+02:00", 1_709_287_200_000),
            ("2024-03-01T05:30:00-04:30", 1_709_287_200_000),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ] {
            assert_eq!(UnixMillis::parse_rfc3339(text), Some(UnixMillis(ms)), "{text}");
        }
        for bad in [
            "",
            "2024-03-01",
            "2024-03-01 10:00:00Z",
            "2024-13-01T10:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-03-01T24:00:00Z",
            "2024-03-01T10:00:00",
            "2024-03-01T10:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2024-03-01T10:00:00+2:00",
            "+024-03-01T10:00:00Z",
            "2024-03-01T10:00:00.1234567890Z",
        ] {
            assert_eq!(UnixMillis::parse_rfc3339(bad), None, "{bad}");
        }
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
