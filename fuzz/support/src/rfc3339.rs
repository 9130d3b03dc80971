//! The `rfc3339` target: `UnixMillis::parse_rfc3339` and `to_rfc3339`.

use keyward_core::UnixMillis;
use keyward_core::time::DAY_MS;

use crate::input::{Input, Seed, lossy};

/// The last instant `to_rfc3339` writes with a four-digit year:
/// 9999-12-31T23:59:59.999Z. Later ones have more digits, which RFC 3339
/// (and the parser) do not allow.
pub(crate) const LAST_FOUR_DIGIT_YEAR: u64 = 253_402_300_799_999;

/// A date-time built field by field, possibly out of range, written as RFC
/// 3339 text and checked against [`Fields::instant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// Digits of the fraction: 0 for none, up to 10 (one too many).
    pub frac_digits: u8,
    /// The fraction's value (taken modulo `10^frac_digits`).
    pub frac: u64,
    /// `None` for `Z`, else `(sign, hours, minutes)`.
    pub offset: Option<(bool, u8, u8)>,
    /// Upper- or lower-case `T` and `Z`.
    pub lower: bool,
}

impl Fields {
    fn read(input: &mut Input<'_>) -> Self {
        let year = input.u16() % 10_000;
        let (month, day) = (input.u8() % 14, input.u8() % 33);
        let (hour, minute, second) = (input.u8() % 25, input.u8() % 61, input.u8() % 61);
        let frac_digits = input.u8() % 11;
        let frac = input.u64();
        let sel = input.u8();
        let offset = (sel & 1 != 0).then(|| (sel & 2 != 0, input.u8() % 25, input.u8() % 61));
        Self { year, month, day, hour, minute, second, frac_digits, frac, offset, lower: sel & 4 != 0 }
    }

    pub(crate) fn write(&self, s: &mut Seed) {
        s.u16(self.year).u8(self.month).u8(self.day).u8(self.hour).u8(self.minute).u8(self.second);
        s.u8(self.frac_digits).u64(self.frac);
        let lower = if self.lower { 4 } else { 0 };
        match self.offset {
            None => s.u8(lower),
            Some((plus, h, m)) => s.u8(1 | if plus { 2 } else { 0 } | lower).u8(h).u8(m),
        };
    }

    /// The fraction's digits, zero-padded.
    fn fraction(&self) -> String {
        let n = u32::from(self.frac_digits);
        let value = self.frac % 10u64.pow(n);
        format!("{value:0width$}", width = n as usize)
    }

    fn text(&self) -> String {
        let (t, z) = if self.lower { ('t', "z") } else { ('T', "Z") };
        let mut out = format!(
            "{:04}-{:02}-{:02}{t}{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.frac_digits > 0 {
            out.push('.');
            out.push_str(&self.fraction());
        }
        match self.offset {
            None => out.push_str(z),
            Some((plus, h, m)) => out.push_str(&format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
        }
        out
    }

    /// The instant, computed independently of keyward-core: whole days by
    /// counting leap years before the year and month lengths within it, the
    /// milliseconds from the first three digits of the fraction, the offset
    /// subtracted. `None` for an out-of-range field, more than 9 fraction
    /// digits, or an instant before 1970.
    fn instant(&self) -> Option<u64> {
        let leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let (y, mo, d) = (i64::from(self.year), usize::from(self.month), i64::from(self.day));
        let month_len = [31, if leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if !(1..=12).contains(&mo) || d < 1 || d > month_len[mo - 1] {
            return None;
        }
        if self.hour > 23 || self.minute > 59 || self.second > 59 || self.frac_digits > 9 {
            return None;
        }
        let offset_min = match self.offset {
            None => 0,
            Some((_, h, m)) if h > 23 || m > 59 => return None,
            Some((plus, h, m)) => (i64::from(h) * 60 + i64::from(m)) * if plus { 1 } else { -1 },
        };
        // Days from 0001-01-01 to January 1st of `y` (year 0 counts as leap).
        let before = |y: i64| {
            let p = y - 1;
            365 * p + p.div_euclid(4) - p.div_euclid(100) + p.div_euclid(400)
        };
        let days = before(y) - before(1970) + month_len[..mo - 1].iter().sum::<i64>() + d - 1;
        let seconds = ((days * 24 + i64::from(self.hour)) * 60 + i64::from(self.minute) - offset_min) * 60
            + i64::from(self.second);
        let ms: i64 = format!("{:0<3}", self.fraction()).get(..3).and_then(|t| t.parse().ok()).unwrap_or(0);
        u64::try_from(seconds * 1000 + ms).ok()
    }
}

/// `parse_rfc3339(to_rfc3339(t)) == t` where `t` has a four-digit year, and
/// what `to_rfc3339` writes has the one fixed shape.
fn check_written(t: UnixMillis) {
    let text = t.to_rfc3339();
    if t.get() <= LAST_FOUR_DIGIT_YEAR {
        assert_eq!(text.len(), 24, "{text}");
        assert_eq!(UnixMillis::parse_rfc3339(&text), Some(t), "{text}");
        let (y, m, d) = t.date();
        assert_eq!(text[..10], format!("{y:04}-{m:02}-{d:02}"));
        assert_eq!(UnixMillis::from_date(y, m, d), UnixMillis(t.get() - t.get() % DAY_MS));
    } else {
        assert_eq!(UnixMillis::parse_rfc3339(&text), None, "{text} has a five-digit year");
    }
}

/// `rfc3339` target: RFC 3339 time stamps.
///
/// Input: an instant (u64 ms), a date-time field by field, then arbitrary
/// text. The instant round-trips through `to_rfc3339` and `parse_rfc3339`; the
/// fields, written as text, parse to what an independent calculation gives
/// (or are refused when out of range or before 1970); arbitrary text never
/// panics, and whatever it parses to round-trips in canonical form, also with
/// `t` and `z` in lower case.
pub fn rfc3339(data: &[u8]) {
    let mut input = Input::new(data);
    check_written(UnixMillis(input.u64()));

    let fields = Fields::read(&mut input);
    let text = fields.text();
    let got = UnixMillis::parse_rfc3339(&text);
    assert_eq!(got.map(UnixMillis::get), fields.instant(), "{text}");
    if let Some(t) = got {
        check_written(t);
    }

    let raw = lossy(input.rest());
    if let Some(t) = UnixMillis::parse_rfc3339(&raw) {
        check_written(t);
        assert_eq!(UnixMillis::parse_rfc3339(&raw.to_ascii_lowercase()), Some(t), "{raw}");
        assert_eq!(UnixMillis::parse_rfc3339(&raw.to_ascii_uppercase()), Some(t), "{raw}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text_fields: (u16, u8, u8, u8, u8, u8), frac: (u8, u64), offset: Option<(bool, u8, u8)>) -> Fields {
        let (year, month, day, hour, minute, second) = text_fields;
        let (frac_digits, frac) = frac;
        Fields { year, month, day, hour, minute, second, frac_digits, frac, offset, lower: false }
    }

    /// The reference agrees with the dates keyward-core's own tests know.
    #[test]
    fn reference_knows_the_calendar() {
        let f = fields((2024, 3, 1, 10, 0, 0), (0, 0), None);
        assert_eq!((f.text().as_str(), f.instant()), ("2024-03-01T10:00:00Z", Some(1_709_287_200_000)));
        let f = fields((2024, 3, 1, 5, 30, 0), (2, 5), Some((false, 4, 30)));
        assert_eq!((f.text().as_str(), f.instant()), ("2024-03-01T05:30:00.05-04:30", Some(1_709_287_200_050)));
        assert_eq!(fields((1970, 1, 1, 0, 0, 0), (9, 123_456_789), None).instant(), Some(123));
        assert_eq!(fields((1969, 12, 31, 23, 59, 59), (0, 0), None).instant(), None);
        assert_eq!(fields((1969, 12, 31, 23, 59, 59), (0, 0), Some((false, 0, 1))).instant(), Some(59_000));
        assert_eq!(fields((2023, 2, 29, 0, 0, 0), (0, 0), None).instant(), None);
        assert_eq!(fields((2000, 2, 29, 0, 0, 0), (0, 0), None).instant(), Some(951_782_400_000));
        assert_eq!(fields((1900, 2, 29, 0, 0, 0), (0, 0), None).instant(), None);
        assert_eq!(fields((9999, 12, 31, 23, 59, 59), (3, 999), None).instant(), Some(LAST_FOUR_DIGIT_YEAR));
        assert_eq!(UnixMillis(LAST_FOUR_DIGIT_YEAR).to_rfc3339(), "9999-12-31T23:59:59.999Z");
    }
}
