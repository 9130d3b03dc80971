//! The refill calendar: the UTC instants at which credits refill.

use super::RefillInterval;
use crate::time::{DAY_MS, UnixMillis, days_in_month};

/// Day (1-based) of the monthly refill within a given month.
fn refill_day_in(year: i64, month: u32, day: u8) -> u32 {
    u32::from(day).min(days_in_month(year, month))
}

/// The latest refill instant at or before `now`.
pub(super) fn last_refill_boundary(interval: RefillInterval, now: UnixMillis) -> UnixMillis {
    match interval {
        RefillInterval::Daily => UnixMillis(now.day() * DAY_MS),
        RefillInterval::Monthly { day } => {
            let (y, m, _) = now.date();
            let this = UnixMillis::from_date(y, m, refill_day_in(y, m, day));
            if this <= now {
                this
            } else {
                let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
                UnixMillis::from_date(py, pm, refill_day_in(py, pm, day))
            }
        }
    }
}

/// The first refill instant strictly after `now`.
pub(super) fn next_refill_boundary(interval: RefillInterval, now: UnixMillis) -> UnixMillis {
    match interval {
        RefillInterval::Daily => now.next_midnight(),
        RefillInterval::Monthly { day } => {
            let (y, m, _) = now.date();
            let this = UnixMillis::from_date(y, m, refill_day_in(y, m, day));
            if this > now {
                this
            } else {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                UnixMillis::from_date(ny, nm, refill_day_in(ny, nm, day))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monthly_refill_boundaries() {
        let monthly31 = RefillInterval::Monthly { day: 31 };
        // 2024-02-10 → last boundary 2024-01-31, next 2024-02-29 (leap year, clamped).
        let t = UnixMillis::from_date(2024, 2, 10).plus(5);
        assert_eq!(last_refill_boundary(monthly31, t), UnixMillis::from_date(2024, 1, 31));
        assert_eq!(next_refill_boundary(monthly31, t), UnixMillis::from_date(2024, 2, 29));
        let on = UnixMillis::from_date(2024, 3, 1);
        let m1 = RefillInterval::Monthly { day: 1 };
        assert_eq!(last_refill_boundary(m1, on), on);
        assert_eq!(next_refill_boundary(m1, on), UnixMillis::from_date(2024, 4, 1));
        // Year wrap.
        let dec = UnixMillis::from_date(2023, 12, 20);
        let m15 = RefillInterval::Monthly { day: 15 };
        assert_eq!(next_refill_boundary(m15, dec), UnixMillis::from_date(2024, 1, 15));
        let jan = UnixMillis::from_date(2024, 1, 3);
        assert_eq!(last_refill_boundary(m15, jan), UnixMillis::from_date(2023, 12, 15));
    }
}
