//! GCRA arithmetic: one rate limit's check and charge, on integers (see the
//! `limits` module docs).

use super::report::RateStatus;
use super::state::{Gcra, UsageState};
use crate::time::UnixMillis;

pub(super) fn gcra_of(state: &UsageState, name: &str) -> Gcra {
    state.rates.iter().find(|(n, _)| n == name).map(|(_, g)| *g).unwrap_or_default()
}

/// TAT in units of `1/limit` ms, rescaled if the limit changed since it was stored.
fn scaled_tat(g: Gcra, limit: u64) -> u128 {
    if g.scale == limit || g.scale == 0 {
        g.tat
    } else {
        // Round up: a limit change never hands out extra calls.
        g.tat.saturating_mul(u128::from(limit)).div_ceil(u128::from(g.scale))
    }
}

pub(super) struct GcraStep {
    /// Whether it fits.
    pub(super) fits: bool,
    pub(super) status: RateStatus,
    pub(super) retry_after_ms: u64,
}

/// One GCRA check of `limit` calls per `window_ms` (both at least 1).
///
/// Everything after the first line works on `ahead`, the booked time beyond
/// `now` (in units of `1/limit` ms), which is at most the capacity `limit ×
/// window`: it fits u64 for any limit and window a caller is likely to set,
/// whatever the date, and u128 division is several times slower than u64.
/// Inlined: its figures go straight into the quota.
#[inline]
pub(super) fn gcra_step(index: usize, limit: u64, window_ms: u64, g: Gcra, now: UnixMillis, cost: u64) -> GcraStep {
    let limit = limit.max(1);
    let w = window_ms.max(1);
    // Cannot overflow: both factors are below 2^64.
    let now_s = u128::from(now.get()) * u128::from(limit);
    let ahead = scaled_tat(g, limit).saturating_sub(now_s);
    match gcra_step_u64(index, limit, w, ahead, cost) {
        Some(step) => step,
        None => gcra_step_wide(index, limit, w, ahead, cost),
    }
}

/// [`gcra_step`] in u128, for figures past u64.
#[cold]
#[inline(never)]
fn gcra_step_wide(index: usize, limit: u64, w: u64, ahead: u128, cost: u64) -> GcraStep {
    // `validate` bounds limit and window so none of this can overflow; the
    // saturation keeps decoded (unvalidated) data from panicking.
    let l = u128::from(limit);
    let w = u128::from(w);
    let capacity = l.saturating_mul(w);
    // Cost 0 checks that one call would fit, without taking it.
    let probe = ahead.saturating_add(u128::from(cost.max(1)).saturating_mul(w));
    let fits = probe <= capacity;
    let new_ahead = if fits { ahead.saturating_add(u128::from(cost).saturating_mul(w)) } else { ahead };
    let remaining = u64::try_from((capacity.saturating_sub(new_ahead) / w).min(l)).unwrap_or(u64::MAX);
    let reset_ms = u64::try_from(new_ahead.div_ceil(l)).unwrap_or(u64::MAX);
    let retry_after_ms = if fits { 0 } else { u64::try_from((probe - capacity).div_ceil(l)).unwrap_or(u64::MAX) };
    GcraStep { fits, status: RateStatus { index, limit, remaining, reset_ms }, retry_after_ms }
}

/// [`gcra_step`] from `ahead` in u64, or `None` when a figure would not fit.
#[inline]
fn gcra_step_u64(index: usize, limit: u64, w: u64, ahead: u128, cost: u64) -> Option<GcraStep> {
    let ahead = u64::try_from(ahead).ok()?;
    let capacity = limit.checked_mul(w)?;
    let probe = ahead.checked_add(cost.max(1).checked_mul(w)?)?;
    let fits = probe <= capacity;
    let new_ahead = if fits { ahead.checked_add(cost.checked_mul(w)?)? } else { ahead };
    let remaining = ((capacity - new_ahead.min(capacity)) / w).min(limit);
    let reset_ms = new_ahead.div_ceil(limit);
    let retry_after_ms = if fits { 0 } else { (probe - capacity).div_ceil(limit) };
    Some(GcraStep { fits, status: RateStatus { index, limit, remaining, reset_ms }, retry_after_ms })
}

/// The TAT after charging `cost` to a limit [`gcra_step`] found fitting
/// (no division: the status is not needed again).
pub(super) fn gcra_charged(limit: u64, window_ms: u64, g: Gcra, now: UnixMillis, cost: u64) -> u128 {
    let limit = limit.max(1);
    let now_s = u128::from(now.get()) * u128::from(limit);
    scaled_tat(g, limit).max(now_s).saturating_add(u128::from(cost).saturating_mul(u128::from(window_ms.max(1))))
}

/// Whether a counter still holds booked time (else it equals a fresh one).
pub(super) fn live(g: &Gcra, now: UnixMillis) -> bool {
    g.tat > u128::from(now.get()) * u128::from(g.scale.max(1))
}

/// Milliseconds until a live counter holds no booked time.
pub(super) fn free_in(g: &Gcra, now: UnixMillis) -> u64 {
    let unit = u128::from(g.scale.max(1));
    u64::try_from(g.tat.saturating_sub(u128::from(now.get()) * unit).div_ceil(unit)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::limits::tests::{code_at, one, rate};
    use crate::limits::{LimitsError, MAX_RATE_LIMIT, MAX_WINDOW_MS};

    #[test]
    fn gcra_sequence_exact() {
        // 3 per second: burst of 3, then one every 333⅓ ms.
        let l = rate(3, 1000);
        let mut s = UsageState::default();
        assert_eq!(code_at(&l, &mut s, 0), (Code::Valid, None));
        assert_eq!(code_at(&l, &mut s, 0), (Code::Valid, None));
        assert_eq!(code_at(&l, &mut s, 0), (Code::Valid, None));
        assert_eq!(code_at(&l, &mut s, 0), (Code::RateLimited, Some(334)));
        assert_eq!(code_at(&l, &mut s, 333), (Code::RateLimited, Some(1)));
        assert_eq!(code_at(&l, &mut s, 334), (Code::Valid, None));
        // TAT is now 4000/3 ms = 1333⅓; the next fits at 666⅔ → 667.
        assert_eq!(code_at(&l, &mut s, 666), (Code::RateLimited, Some(1)));
        assert_eq!(code_at(&l, &mut s, 667), (Code::Valid, None));
        // After a long pause the full burst is back.
        for _ in 0..3 {
            assert_eq!(code_at(&l, &mut s, 10_000).0, Code::Valid);
        }
        assert_eq!(code_at(&l, &mut s, 10_000), (Code::RateLimited, Some(334)));
    }

    #[test]
    fn gcra_reports_remaining_and_reset() {
        let l = rate(10, 60_000);
        let mut s = UsageState::default();
        let g = one(&l, &mut s, 1_000).unwrap();
        assert_eq!(g.quota.rate, Some(RateStatus { index: 0, limit: 10, remaining: 9, reset_ms: 6_000 }));
        for _ in 0..9 {
            one(&l, &mut s, 1_000).unwrap();
        }
        let r = one(&l, &mut s, 1_000).unwrap_err();
        assert_eq!(r.code, Code::RateLimited);
        assert_eq!(r.retry_after_ms, Some(6_000));
        assert_eq!(r.quota.rate.unwrap().remaining, 0);
    }

    /// The u64 fast path and the u128 one agree wherever both apply,
    /// and the charged TAT is the one the step checked.
    #[test]
    fn gcra_u64_matches_u128() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            // Limits up to 10^9 per window: now × limit overflows u64 for
            // the larger ones, which the fast path must not mind.
            let limit = if next() % 2 == 0 { next() % 2_000 + 1 } else { next() % MAX_RATE_LIMIT + 1 };
            let w = next() % 100_000 + 1;
            let now = UnixMillis(1_700_000_000_000 + next() % 1_000_000);
            let l = u128::from(limit);
            let wd = u128::from(w);
            let now_s = u128::from(now.get()) * l;
            let g = Gcra { tat: now_s + u128::from(next()) % (2 * l * wd), scale: limit };
            let cost = next() % 5;
            let fast = gcra_step_u64(0, limit, w, g.tat.saturating_sub(now_s), cost).unwrap();
            let base = g.tat.max(now_s);
            let probe = base + u128::from(cost.max(1)) * wd;
            let fits = probe - now_s <= l * wd;
            let new_tat = if fits { base + u128::from(cost) * wd } else { base };
            let remaining = ((l * wd).saturating_sub(new_tat - now_s) / wd).min(l) as u64;
            let reset_ms = (new_tat - now_s).div_ceil(l) as u64;
            let retry = if fits { 0 } else { (probe - now_s - l * wd).div_ceil(l) as u64 };
            assert_eq!(
                (fast.fits, fast.status.remaining, fast.status.reset_ms, fast.retry_after_ms),
                (fits, remaining, reset_ms, retry)
            );
            assert_eq!(gcra_step(0, limit, w, g, now, cost).status, fast.status);
            let wide = gcra_step_wide(0, limit, w, g.tat.saturating_sub(now_s), cost);
            assert_eq!((wide.fits, wide.status, wide.retry_after_ms), (fast.fits, fast.status, fast.retry_after_ms));
            if fits {
                assert_eq!(gcra_charged(limit, w, g, now, cost), new_tat);
            }
        }
    }

    /// Found by fuzzing: huge limits and decoded zero windows never panic.
    #[test]
    fn extreme_rates_are_refused_or_saturate() {
        let huge = rate(u64::MAX, u64::MAX);
        assert_eq!(huge.validate(), Err(LimitsError::RateTooLarge("default".into())));
        let mut s = UsageState::default();
        assert_eq!(code_at(&huge, &mut s, u64::MAX).0, Code::Valid);
        let zero = rate(0, 0);
        let mut s = UsageState::default();
        assert_eq!(code_at(&zero, &mut s, 5).0, Code::Valid);
        assert_eq!(code_at(&zero, &mut s, 5).0, Code::RateLimited);
        assert_eq!(rate(MAX_RATE_LIMIT, MAX_WINDOW_MS).validate(), Ok(()));
    }

    #[test]
    fn limit_change_keeps_booked_time() {
        let mut s = UsageState::default();
        let l3 = rate(3, 1000);
        for _ in 0..3 {
            one(&l3, &mut s, 0).unwrap();
        }
        // The TAT is one second ahead; under 6/s that is still a full window,
        // so the next call waits one new emission interval (166⅔ ms → 167).
        let l6 = rate(6, 1000);
        assert_eq!(code_at(&l6, &mut s, 0), (Code::RateLimited, Some(167)));
        assert_eq!(code_at(&l6, &mut s, 167), (Code::Valid, None));
        // Lowering the limit rounds the TAT up: never a free call.
        let l4 = rate(4, 1000);
        assert_eq!(code_at(&l4, &mut s, 167).0, Code::RateLimited);
    }
}
