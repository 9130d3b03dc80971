//! Quotas (SPEC §2 "limits"): rate, cooldown, daily limit, concurrency, credits.
//!
//! # Rate limits are GCRA
//! A rate limit of `limit` calls per `window_ms` is a generic cell rate
//! algorithm (the virtual-scheduling form of a token bucket): one
//! timestamp per limit, the *theoretical arrival time* (TAT). A call is
//! admitted when, after adding its cost, the TAT is at most one window ahead of
//! now. We chose it over a sliding window because it is smooth (a client that
//! spent its burst regains one call every `window/limit` instead of waiting for
//! the window edge), keeps O(1) state that serialises to a few bytes, and gives
//! an exact retry-after. To stay exact when `window_ms` is not a multiple of
//! `limit`, time is counted in units of `1/limit` ms, so all arithmetic is on
//! integers.
//!
//! # All or nothing
//! [`charge`] first checks every limit of every scope without writing, and
//! writes only when all of them pass: a refused call consumes nothing.
//!
//! # Named, auto-applied and ad-hoc limits
//! An auto-applied limit counts every call; any other limit counts only the
//! calls that name it in [`Cost::rates`], each at the cost it gives. A named
//! entry may also override the limit's `limit` and window for that call, and
//! an entry with both overrides applies an *ad-hoc* limit of that name even
//! when the scope has none configured: its counter lives in the first scope's
//! [`UsageState`] next to the configured ones (at most [`MAX_AD_HOC_RATES`] of
//! them at once), so the next call that names it with the same numbers sees
//! the calls before it.
//!
//! Each function takes `now`; nothing here reads a clock.
//!
//! # Layout
//! Each submodule holds one concern, and each uses only the ones listed
//! before it:
//! - this module: the policy types ([`Limits`] and its parts) and their validation;
//! - `lease`: concurrency leases and the scope they were taken from;
//! - `calendar`: when credits refill (UTC days and months);
//! - `state`: the counters one scope keeps ([`UsageState`]);
//! - `cost`: what one call costs;
//! - `report`: the figures a call reports ([`Quota`], [`RateStatus`], [`RateReport`]);
//! - `gcra`: the rate-limit arithmetic;
//! - `charge`: the rate limits a call applies, and checking and charging
//!   every limit of a call, all or nothing.

use serde::{Deserialize, Serialize};

mod calendar;
mod charge;
mod cost;
mod gcra;
mod lease;
mod report;
mod state;

pub(crate) use charge::charge_into;
pub use charge::{Grant, Refusal, Scope, charge, peek, rate_report};
pub use cost::{AUTO_APPLIED, Cost, RateCost};
pub use lease::{Lease, LeaseId, LeaseScope};
pub use report::{Quota, RateReport, RateStatus};
pub use state::{CreditBalance, DailyCount, Gcra, UsageState};

/// Most calls a rate limit may admit per window (keeps GCRA arithmetic in range).
pub const MAX_RATE_LIMIT: u64 = 1_000_000_000;
/// Longest rate-limit window: 100 years of 365.25 days.
pub const MAX_WINDOW_MS: u64 = 3_155_760_000_000;

/// Longest accepted rate-limit name.
pub const MAX_RATE_NAME_LEN: usize = 64;

/// Most ad-hoc rate limits (see [`RateCost`]) whose counters one scope holds
/// at once. A call that would need more is refused as `RATE_LIMITED` until
/// one of them has fully replenished; limits are never forgotten early.
pub const MAX_AD_HOC_RATES: usize = 16;

/// One named rate limit: `limit` calls per `window_ms`, smooth (GCRA).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Name, unique within one [`Limits`]; `"default"` when there is only one.
    pub name: String,
    /// Calls admitted per window (also the burst size). At least 1.
    pub limit: u64,
    /// Window length in milliseconds. At least 1.
    pub window_ms: u64,
    /// Whether the limit applies to every call, or only to calls that name it.
    pub auto_apply: bool,
}

/// When credits are topped up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefillInterval {
    /// At every UTC midnight.
    Daily,
    /// At UTC midnight of the given day of each month (1–31; in shorter months,
    /// on the month's last day).
    Monthly {
        /// Day of the month, 1–31.
        day: u8,
    },
}

/// Credits refill: remaining is set back to `amount` at each interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    /// When.
    pub interval: RefillInterval,
    /// Remaining credits right after a refill.
    pub amount: u64,
}

/// A concurrency limit: at most `max` leases alive at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    /// Jobs in flight at most. At least 1.
    pub max: u32,
    /// A lease not released after this long frees itself.
    pub lease_ms: u64,
}

/// Credits policy. The current balance lives in [`UsageState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credits {
    /// Balance when the state is first created.
    pub initial: u64,
    /// Optional refill; `None` means never.
    pub refill: Option<Refill>,
}

/// Every limit of one scope (a key, a tool, or a key×tool pair).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Named rate limits.
    pub rates: Vec<RateLimit>,
    /// Minimum gap between two granted calls.
    pub cooldown_ms: Option<u64>,
    /// Granted calls per UTC calendar day.
    pub daily: Option<u64>,
    /// Jobs in flight.
    pub concurrency: Option<Concurrency>,
    /// Remaining credits.
    pub credits: Option<Credits>,
}

/// Why a [`Limits`] value is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A rate limit with `limit` or `window_ms` of 0.
    #[error("rate limit `{0}` needs a limit and a window of at least 1")]
    ZeroRate(String),
    /// A rate limit above [`MAX_RATE_LIMIT`] calls or [`MAX_WINDOW_MS`].
    #[error("rate limit `{0}` is too large (at most {MAX_RATE_LIMIT} calls per at most {MAX_WINDOW_MS} ms)")]
    RateTooLarge(String),
    /// Two rate limits share a name.
    #[error("rate limit name `{0}` is used twice")]
    DuplicateRate(String),
    /// A rate-limit name is empty, too long or has odd characters.
    #[error("rate limit name must be 1 to {MAX_RATE_NAME_LEN} characters of A-Z a-z 0-9 . _ -")]
    RateName,
    /// `concurrency.max` of 0.
    #[error("concurrency limit must be at least 1")]
    ZeroConcurrency,
    /// A monthly refill day outside 1–31.
    #[error("monthly refill day must be 1 to 31")]
    RefillDay,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
            && self.cooldown_ms.is_none()
            && self.daily.is_none()
            && self.concurrency.is_none()
            && self.credits.is_none()
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (i, r) in self.rates.iter().enumerate() {
            if !valid_rate_name(&r.name) {
                return Err(LimitsError::RateName);
            }
            if r.limit == 0 || r.window_ms == 0 {
                return Err(LimitsError::ZeroRate(r.name.clone()));
            }
            if r.limit > MAX_RATE_LIMIT || r.window_ms > MAX_WINDOW_MS {
                return Err(LimitsError::RateTooLarge(r.name.clone()));
            }
            if self.rates.iter().take(i).any(|o| o.name == r.name) {
                return Err(LimitsError::DuplicateRate(r.name.clone()));
            }
        }
        if matches!(self.concurrency, Some(c) if c.max == 0) {
            return Err(LimitsError::ZeroConcurrency);
        }
        if let Some(Credits { refill: Some(Refill { interval: RefillInterval::Monthly { day }, .. }), .. }) =
            self.credits
            && !(1..=31).contains(&day)
        {
            return Err(LimitsError::RefillDay);
        }
        Ok(())
    }
}

/// Whether a rate-limit name is acceptable.
pub fn valid_rate_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RATE_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Helpers shared by the unit tests of every submodule.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::time::UnixMillis;

    pub(super) fn rate(limit: u64, window_ms: u64) -> Limits {
        Limits {
            rates: vec![RateLimit { name: "default".into(), limit, window_ms, auto_apply: true }],
            ..Limits::default()
        }
    }

    pub(super) fn one(limits: &Limits, state: &mut UsageState, t: u64) -> Result<Grant, Refusal> {
        charge(&mut [Scope { limits, state }], UnixMillis(t), &Cost::default())
    }

    pub(super) fn code_at(limits: &Limits, state: &mut UsageState, t: u64) -> (Code, Option<u64>) {
        match one(limits, state, t) {
            Ok(_) => (Code::Valid, None),
            Err(r) => (r.code, r.retry_after_ms),
        }
    }

    pub(super) fn adhoc_call(
        limits: &Limits,
        state: &mut UsageState,
        t: u64,
        rates: &[RateCost<'_>],
    ) -> (Code, Option<u64>) {
        match charge(&mut [Scope { limits, state }], UnixMillis(t), &Cost { credits: 1, rates }) {
            Ok(_) => (Code::Valid, None),
            Err(r) => (r.code, r.retry_after_ms),
        }
    }

    #[test]
    fn validation() {
        assert_eq!(rate(0, 1).validate(), Err(LimitsError::ZeroRate("default".into())));
        let mut dup = rate(1, 1);
        dup.rates.push(dup.rates[0].clone());
        assert_eq!(dup.validate(), Err(LimitsError::DuplicateRate("default".into())));
        let c = Limits { concurrency: Some(Concurrency { max: 0, lease_ms: 1 }), ..Limits::default() };
        assert_eq!(c.validate(), Err(LimitsError::ZeroConcurrency));
        let m = Limits {
            credits: Some(Credits {
                initial: 1,
                refill: Some(Refill { interval: RefillInterval::Monthly { day: 32 }, amount: 1 }),
            }),
            ..Limits::default()
        };
        assert_eq!(m.validate(), Err(LimitsError::RefillDay));
        assert_eq!(rate(5, 1000).validate(), Ok(()));
    }
}
