//! The `limits` target: differential, `keyward_core::limits::charge` on one scope
//! against an independent reference model of docs/limits.md ([`model`]).
//!
//! Both see the same random sequence of calls (time step, credits, optionally
//! a named rate cost) and lease releases, and must agree exactly on admit or
//! refuse, the refusal code, retry-after, the lease handed out, and the quota
//! figures (credits and daily remaining, the rate limit's remaining and reset).

use keyward_core::limits::{Concurrency, Credits, RateLimit, Refill, RefillInterval};
use keyward_core::{Limits, UnixMillis};

use crate::FUZZ_EPOCH;
use crate::input::{Input, Seed};

mod model;

pub use model::limits;

/// Most calls a rate limit may admit per window, as `LimitsError::RateTooLarge` states.
const MAX_RATE_LIMIT: u64 = 1_000_000_000;
/// Longest rate-limit window (100 years of 365.25 days), as `LimitsError::RateTooLarge` states.
const MAX_WINDOW_MS: u64 = 3_155_760_000_000;

/// Name of the one rate limit a [`LimitsCase`] configures.
pub const RATE_NAME: &str = "default";
/// A rate-limit name no [`LimitsCase`] configures (a call may still name it).
pub const OTHER_RATE_NAME: &str = "other";

/// A case for the `limits` differential target: one scope's limits, a start
/// time, and a sequence of operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsCase {
    /// The limits, valid by construction.
    pub limits: Limits,
    /// When the first call happens (before its own `dt_ms`).
    pub start: UnixMillis,
    /// What happens, in order.
    pub ops: Vec<LimitsOp>,
    /// Whether numbers were read at full width (u64) rather than small.
    pub wide: bool,
}

/// One step of a [`LimitsCase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitsOp {
    /// Advance the clock by `dt_ms`, then charge a call.
    Call {
        /// Milliseconds since the previous operation.
        dt_ms: u64,
        /// Credits the call costs (0 only checks).
        credits: u64,
        /// A rate limit the call names: `(true, cost)` names [`RATE_NAME`],
        /// `(false, cost)` names [`OTHER_RATE_NAME`].
        named: Option<(bool, u64)>,
    },
    /// Release the `nth` lease granted so far (modulo their number).
    Release {
        /// Which lease.
        nth: u8,
    },
}

const MAX_LIMITS_OPS: usize = 256;

mod flag {
    pub const RATE: u8 = 1;
    pub const COOLDOWN: u8 = 2;
    pub const DAILY: u8 = 4;
    pub const CONCURRENCY: u8 = 8;
    pub const CREDITS: u8 = 16;
    pub const REFILL: u8 = 32;
    pub const AUTO_APPLY: u8 = 64;
    pub const WIDE: u8 = 128;
}

impl LimitsCase {
    /// Reads a case. Format: a flag byte (rate, cooldown, daily, concurrency,
    /// credits, daily refill, auto-apply, wide), each configured limit's
    /// numbers (u64 when wide, small otherwise), the start, then operations
    /// until the input ends.
    pub fn read(data: &[u8]) -> Self {
        let mut input = Input::new(data);
        let flags = input.u8();
        let wide = flags & flag::WIDE != 0;
        let num = |input: &mut Input<'_>, small: fn(&mut Input<'_>) -> u64| {
            if wide { input.u64() } else { small(input) }
        };
        let mut limits = Limits::default();
        if flags & flag::RATE != 0 {
            // Clamped to what `Limits::validate` accepts.
            let limit = num(&mut input, |i| u64::from(i.u8())).clamp(1, MAX_RATE_LIMIT);
            let window_ms = num(&mut input, |i| u64::from(i.u16())).clamp(1, MAX_WINDOW_MS);
            let auto_apply = flags & flag::AUTO_APPLY != 0;
            limits.rates.push(RateLimit { name: RATE_NAME.into(), limit, window_ms, auto_apply });
        }
        if flags & flag::COOLDOWN != 0 {
            limits.cooldown_ms = Some(num(&mut input, |i| u64::from(i.u16())));
        }
        if flags & flag::DAILY != 0 {
            limits.daily = Some(num(&mut input, |i| u64::from(i.u8())));
        }
        if flags & flag::CONCURRENCY != 0 {
            let max = u32::try_from(num(&mut input, |i| u64::from(i.u8() % 8))).unwrap_or(u32::MAX).max(1);
            let lease_ms = num(&mut input, |i| u64::from(i.u16()));
            limits.concurrency = Some(Concurrency { max, lease_ms });
        }
        if flags & flag::CREDITS != 0 {
            let initial = num(&mut input, |i| u64::from(i.u8()));
            let refill = (flags & flag::REFILL != 0)
                .then(|| Refill { interval: RefillInterval::Daily, amount: num(&mut input, |i| u64::from(i.u8())) });
            limits.credits = Some(Credits { initial, refill });
        }
        let start = UnixMillis(num(&mut input, |i| FUZZ_EPOCH + u64::from(i.u32())));
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < MAX_LIMITS_OPS {
            let sel = input.u8();
            if sel & 7 == 7 {
                ops.push(LimitsOp::Release { nth: input.u8() });
                continue;
            }
            let dt_ms = match (sel >> 3) & 3 {
                0 => 0,
                1 => u64::from(input.u8()),
                2 => u64::from(input.u16()),
                _ => num(&mut input, |i| u64::from(i.u32())),
            };
            let credits = read_cost(&mut input, wide);
            let named = (sel & 32 != 0).then(|| (sel & 64 == 0, read_cost(&mut input, wide)));
            ops.push(LimitsOp::Call { dt_ms, credits, named });
        }
        Self { limits, start, ops, wide }
    }

    /// Writes the case in the format [`LimitsCase::read`] reads. Values that
    /// the format cannot hold (a small case with big numbers) are cut.
    pub fn write(&self) -> Vec<u8> {
        let mut s = Seed::default();
        let l = &self.limits;
        let mut flags = 0;
        let rate = l.rates.first();
        for (on, f) in [
            (rate.is_some(), flag::RATE),
            (l.cooldown_ms.is_some(), flag::COOLDOWN),
            (l.daily.is_some(), flag::DAILY),
            (l.concurrency.is_some(), flag::CONCURRENCY),
            (l.credits.is_some(), flag::CREDITS),
            (l.credits.is_some_and(|c| c.refill.is_some()), flag::REFILL),
            (rate.is_some_and(|r| r.auto_apply), flag::AUTO_APPLY),
            (self.wide, flag::WIDE),
        ] {
            if on {
                flags |= f;
            }
        }
        s.u8(flags);
        let wide = self.wide;
        let num = |s: &mut Seed, v: u64, small: fn(&mut Seed, u64)| {
            if wide {
                s.u64(v);
            } else {
                small(s, v);
            }
        };
        let u8_ = |s: &mut Seed, v: u64| {
            s.u8(v.min(255) as u8);
        };
        let u16_ = |s: &mut Seed, v: u64| {
            s.u16(v.min(65_535) as u16);
        };
        if let Some(r) = rate {
            num(&mut s, r.limit, u8_);
            num(&mut s, r.window_ms, u16_);
        }
        if let Some(c) = l.cooldown_ms {
            num(&mut s, c, u16_);
        }
        if let Some(d) = l.daily {
            num(&mut s, d, u8_);
        }
        if let Some(c) = l.concurrency {
            num(&mut s, u64::from(c.max), |s, v| {
                s.u8((v % 8) as u8);
            });
            num(&mut s, c.lease_ms, u16_);
        }
        if let Some(c) = l.credits {
            num(&mut s, c.initial, u8_);
            if let Some(r) = c.refill {
                num(&mut s, r.amount, u8_);
            }
        }
        num(&mut s, self.start.get(), |s, v| {
            s.u32(u32::try_from(v.saturating_sub(FUZZ_EPOCH)).unwrap_or(u32::MAX));
        });
        for op in &self.ops {
            match *op {
                LimitsOp::Release { nth } => {
                    s.u8(7).u8(nth);
                }
                LimitsOp::Call { dt_ms, credits, named } => {
                    let dt_kind: u8 = match dt_ms {
                        0 => 0,
                        1..=255 => 1,
                        256..=65_535 => 2,
                        _ => 3,
                    };
                    let mut sel = dt_kind << 3;
                    if let Some((ours, _)) = named {
                        sel |= 32 | if ours { 0 } else { 64 };
                    }
                    s.u8(sel);
                    match dt_kind {
                        0 => {}
                        1 => {
                            s.u8(dt_ms as u8);
                        }
                        2 => {
                            s.u16(dt_ms as u16);
                        }
                        _ => num(&mut s, dt_ms, |s, v| {
                            s.u32(u32::try_from(v).unwrap_or(u32::MAX));
                        }),
                    }
                    write_cost(&mut s, credits, wide);
                    if let Some((_, c)) = named {
                        write_cost(&mut s, c, wide);
                    }
                }
            }
        }
        s.into_bytes()
    }
}

/// A cost byte: mostly 1, often 0 (check only), sometimes 2–32 or any number.
fn read_cost(input: &mut Input<'_>, wide: bool) -> u64 {
    match input.u8() {
        0..=31 => 0,
        32..=223 => 1,
        b @ 224..=254 => u64::from(b - 222),
        255 if wide => input.u64(),
        255 => u64::from(input.u16()),
    }
}

fn write_cost(s: &mut Seed, cost: u64, wide: bool) {
    match cost {
        0 => s.u8(0),
        1 => s.u8(32),
        2..=32 => s.u8(cost as u8 + 222),
        _ if wide => s.u8(255).u64(cost),
        _ => s.u8(255).u16(u16::try_from(cost).unwrap_or(u16::MAX)),
    };
}

#[cfg(test)]
mod tests {
    use keyward_core::limits::LimitsError;

    use super::*;

    fn rate(limit: u64, window_ms: u64) -> Limits {
        Limits {
            rates: vec![RateLimit { name: RATE_NAME.into(), limit, window_ms, auto_apply: true }],
            ..Limits::default()
        }
    }

    /// Cases are clamped to exactly what `Limits::validate` accepts.
    #[test]
    fn clamps_are_the_validation_bounds() {
        assert_eq!(rate(MAX_RATE_LIMIT, MAX_WINDOW_MS).validate(), Ok(()));
        let too_large = Err(LimitsError::RateTooLarge(RATE_NAME.into()));
        assert_eq!(rate(MAX_RATE_LIMIT + 1, 1).validate(), too_large);
        assert_eq!(rate(1, MAX_WINDOW_MS + 1).validate(), too_large);
    }

    #[test]
    fn wide_cases_read_valid_limits() {
        let case = LimitsCase::read(&[0xFF; 64]);
        assert!(case.wide);
        assert_eq!(case.limits.rates[0].limit, MAX_RATE_LIMIT);
        assert_eq!(case.limits.validate(), Ok(()));
    }
}
