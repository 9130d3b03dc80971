//! Charging a call: the rate limits it applies in each scope, then every
//! limit of every scope checked first, and only if all pass are the
//! counters written. Also the check-only [`peek`] and
//! the per-limit [`rate_report`] read after a charge.

use super::calendar::next_refill_boundary;
use super::cost::Cost;
use super::gcra::{free_in, gcra_charged, gcra_of, gcra_step, live};
use super::lease::{Lease, LeaseId};
use super::report::{Quota, RateReport};
use super::state::{CreditBalance, DailyCount, Gcra, UsageState, effective_credits};
use super::{Limits, MAX_AD_HOC_RATES, valid_rate_name};
use crate::code::Code;
use crate::time::UnixMillis;

/// A refusal by a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `RATE_LIMITED`, `COOLDOWN`, `DAILY_LIMIT`, `CONCURRENCY_LIMIT` or `USAGE_EXHAUSTED`.
    pub code: Code,
    /// Time until a retry can pass, when known.
    pub retry_after_ms: Option<u64>,
    /// Figures at refusal.
    pub quota: Quota,
}

/// One scope's limits and its counters.
#[derive(Debug)]
pub struct Scope<'a> {
    /// The policy.
    pub limits: &'a Limits,
    /// The counters, updated only when the whole call is admitted.
    pub state: &'a mut UsageState,
}

/// What an admitted call took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Figures after the call.
    pub quota: Quota,
    /// Concurrency leases taken, one per scope with a concurrency limit.
    pub leases: Vec<(usize, LeaseId)>,
}

/// A rate limit as one call applies it.
#[derive(Clone, Copy, Debug)]
struct Applied<'r> {
    /// Position in the scope's `rates`, or `rates.len()` + position in the
    /// cost's `rates` for an ad-hoc limit.
    index: usize,
    name: &'r str,
    limit: u64,
    window_ms: u64,
    cost: u64,
    auto_apply: bool,
    ad_hoc: bool,
}

/// The rate limits a call with `cost` applies in a scope: configured ones it
/// names or that auto-apply, then (in the scope holding them) ad-hoc ones.
fn applied<'r>(limits: &'r Limits, cost: &'r Cost<'r>, ad_hoc: bool) -> impl Iterator<Item = Applied<'r>> + 'r {
    let configured = limits.rates.iter().enumerate().filter_map(move |(index, rate)| {
        let named = cost.named(&rate.name);
        let c = match named {
            Some(r) => r.cost,
            None if rate.auto_apply => cost.auto_cost(),
            None => return None,
        };
        Some(Applied {
            index,
            name: &rate.name,
            limit: named.and_then(|r| r.limit).unwrap_or(rate.limit).max(1),
            window_ms: named.and_then(|r| r.window_ms).unwrap_or(rate.window_ms).max(1),
            cost: c,
            auto_apply: rate.auto_apply,
            ad_hoc: false,
        })
    });
    let extra = cost.rates.iter().enumerate().filter(move |_| ad_hoc).filter_map(move |(j, r)| {
        let (Some(limit), Some(window_ms)) = (r.limit, r.window_ms) else { return None };
        let first = !cost.rates.iter().take(j).any(|o| o.name == r.name);
        let fresh = !limits.rates.iter().any(|c| c.name == r.name);
        (first && fresh && valid_rate_name(r.name)).then_some(Applied {
            index: limits.rates.len() + j,
            name: r.name,
            limit: limit.max(1),
            window_ms: window_ms.max(1),
            cost: r.cost,
            auto_apply: false,
            ad_hoc: true,
        })
    });
    configured.chain(extra)
}

/// Checks every limit of every scope and, only if all pass, charges them.
pub fn charge(scopes: &mut [Scope<'_>], now: UnixMillis, cost: &Cost<'_>) -> Result<Grant, Refusal> {
    let mut quota = Quota::default();
    let mut leases = Vec::new();
    match charge_into(scopes, now, cost, &mut quota, |scope, id| leases.push((scope, id))) {
        Ok(()) => Ok(Grant { quota, leases }),
        Err((code, retry_after_ms)) => Err(Refusal { code, retry_after_ms, quota }),
    }
}

/// [`charge`] merging the figures into `quota` (which starts empty; when
/// refused, it holds the figures at the refusal) and handing each lease
/// taken, with its scope's position, to `lease`: a verdict's own fields are
/// filled without a copy.
pub(crate) fn charge_into(
    scopes: &mut [Scope<'_>],
    now: UnixMillis,
    cost: &Cost<'_>,
    quota: &mut Quota,
    mut lease: impl FnMut(usize, LeaseId),
) -> Result<(), Refused> {
    // Nothing to count (and no ad-hoc counter to tidy): the common case of a
    // key without limits.
    if cost.rates.is_empty() && scopes.iter().all(|s| s.limits.is_empty() && s.state.rates.is_empty()) {
        return Ok(());
    }
    // Pass 1: check only. The first refusal wins, in the order rate → cooldown →
    // daily → concurrency → credits within a scope, scopes in the order given.
    // Ad-hoc limits live in the first scope's counters.
    // A credit balance exists from the first call that reaches the limits, so
    // refills count from then even when that call is refused. Creating it is
    // not a charge.
    for scope in scopes.iter_mut() {
        if let (Some(policy), None) = (&scope.limits.credits, scope.state.credits) {
            scope.state.credits = Some(CreditBalance { remaining: policy.initial, refilled_at: now });
        }
    }
    for (i, scope) in scopes.iter().enumerate() {
        check_scope(scope.limits, scope.state, now, cost, quota, i == 0)?;
    }
    // Pass 2: every check passed; write.
    for (i, scope) in scopes.iter_mut().enumerate() {
        if let Some(id) = commit_scope(scope.limits, scope.state, now, cost, i == 0) {
            lease(i, id);
        }
    }
    Ok(())
}

/// Checks one scope (as the first, holding ad-hoc limits) without charging
/// it. Returns the quota figures it would leave.
pub fn peek(limits: &Limits, state: &UsageState, now: UnixMillis, cost: &Cost<'_>) -> Result<Quota, Refusal> {
    let mut quota = Quota::default();
    match check_scope(limits, state, now, cost, &mut quota, true) {
        Ok(()) => Ok(quota),
        Err((code, retry_after_ms)) => Err(Refusal { code, retry_after_ms, quota }),
    }
}

/// Every rate limit a call with `cost` applies in one scope, with figures
/// from the counters as they are now. Call it after [`charge`] on the same
/// state: `ad_hoc` says whether this is the scope holding ad-hoc limits (the
/// first one given to `charge`), and `rate_limited` whether the call was
/// refused as `RATE_LIMITED`, in which case (nothing having been charged)
/// the limits the call does not fit are marked `exceeded`.
pub fn rate_report(
    limits: &Limits,
    state: &UsageState,
    now: UnixMillis,
    cost: &Cost<'_>,
    ad_hoc: bool,
    rate_limited: bool,
) -> Vec<RateReport> {
    applied(limits, cost, ad_hoc)
        .map(|a| {
            let g = gcra_of(state, a.name);
            let fits = gcra_step(a.index, a.limit, a.window_ms, g, now, a.cost).fits;
            let status = gcra_step(a.index, a.limit, a.window_ms, g, now, 0).status;
            RateReport {
                name: a.name.to_owned(),
                limit: a.limit,
                window_ms: a.window_ms,
                remaining: status.remaining,
                reset_ms: status.reset_ms,
                auto_apply: a.auto_apply,
                ad_hoc: a.ad_hoc,
                exceeded: rate_limited && !fits,
            }
        })
        .collect()
}

/// Refuses a call that would make the scope hold more than
/// [`MAX_AD_HOC_RATES`] live ad-hoc counters.
fn ad_hoc_room(limits: &Limits, state: &UsageState, now: UnixMillis, cost: &Cost<'_>) -> Result<(), Refused> {
    if !cost.rates.iter().any(|r| r.limit.is_some() && r.window_ms.is_some()) {
        // No ad-hoc limit asked for (the usual call): nothing to count.
        return Ok(());
    }
    let wanted = applied(limits, cost, true)
        .filter(|a| a.ad_hoc && !state.rates.iter().any(|(n, g)| n == a.name && live(g, now)))
        .count();
    if wanted == 0 {
        return Ok(());
    }
    let held = state.rates.iter().filter(|(n, g)| !limits.rates.iter().any(|r| r.name == *n) && live(g, now));
    if held.clone().count() + wanted <= MAX_AD_HOC_RATES {
        return Ok(());
    }
    Err((Code::RateLimited, held.map(|(_, g)| free_in(g, now)).min()))
}

type Refused = (Code, Option<u64>);

fn check_scope(
    limits: &Limits,
    state: &UsageState,
    now: UnixMillis,
    cost: &Cost<'_>,
    quota: &mut Quota,
    ad_hoc: bool,
) -> Result<(), Refused> {
    for a in applied(limits, cost, ad_hoc) {
        let step = gcra_step(a.index, a.limit, a.window_ms, gcra_of(state, a.name), now, a.cost);
        let fits = step.fits;
        let retry = step.retry_after_ms;
        quota.merge_rate(step.status);
        if !fits {
            return Err((Code::RateLimited, Some(retry)));
        }
    }
    if ad_hoc {
        ad_hoc_room(limits, state, now, cost)?;
    }
    if let (Some(gap), Some(last)) = (limits.cooldown_ms, state.last_granted) {
        let ready = last.plus(gap);
        if now < ready {
            return Err((Code::Cooldown, Some(now.until(ready))));
        }
    }
    if let Some(max) = limits.daily {
        let used = if state.daily.day == now.day() { state.daily.used } else { 0 };
        if used >= max {
            quota.daily_remaining = Some(0);
            return Err((Code::DailyLimit, Some(now.until(now.next_midnight()))));
        }
        let left = max - used - u64::from(cost.credits > 0);
        quota.daily_remaining = Some(quota.daily_remaining.map_or(left, |q| q.min(left)));
    }
    if let Some(conc) = limits.concurrency {
        let alive = state.leases.iter().filter(|l| l.expires_at > now);
        if alive.clone().count() >= conc.max as usize {
            let soonest = alive.map(|l| l.expires_at).min().unwrap_or(now);
            return Err((Code::ConcurrencyLimit, Some(now.until(soonest))));
        }
    }
    if let Some(policy) = &limits.credits {
        let bal = effective_credits(state.credits, policy, now);
        if bal.remaining == 0 || bal.remaining < cost.credits {
            quota.credits_remaining = Some(bal.remaining);
            let retry = policy.refill.map(|r| now.until(next_refill_boundary(r.interval, now)));
            return Err((Code::UsageExhausted, retry));
        }
        let left = bal.remaining - cost.credits;
        quota.credits_remaining = Some(quota.credits_remaining.map_or(left, |q| q.min(left)));
    }
    Ok(())
}

/// Whether a call with this cost is counted (cost 0 only checks).
fn counts(cost: &Cost<'_>) -> bool {
    cost.credits > 0
}

fn commit_scope(
    limits: &Limits,
    state: &mut UsageState,
    now: UnixMillis,
    cost: &Cost<'_>,
    ad_hoc: bool,
) -> Option<LeaseId> {
    for a in applied(limits, cost, ad_hoc) {
        let charged = |g: Gcra| Gcra { tat: gcra_charged(a.limit, a.window_ms, g, now, a.cost), scale: a.limit };
        match state.rates.iter_mut().find(|(n, _)| n == a.name) {
            Some(slot) => slot.1 = charged(slot.1),
            None => state.rates.push((a.name.to_owned(), charged(Gcra::default()))),
        }
    }
    // Forget counters of limits that are not configured, so state cannot
    // grow; in the scope holding ad-hoc limits, only once they hold no
    // booked time (a fresh counter is the same), which bounds them to
    // `MAX_AD_HOC_RATES` live ones.
    if state.rates.len() > limits.rates.len() {
        state.rates.retain(|(n, g)| limits.rates.iter().any(|r| r.name == *n) || (ad_hoc && live(g, now)));
    }
    if !counts(cost) {
        if let Some(policy) = &limits.credits {
            state.credits = Some(effective_credits(state.credits, policy, now));
        }
        return None;
    }
    if limits.cooldown_ms.is_some() {
        state.last_granted = Some(now);
    }
    if limits.daily.is_some() {
        if state.daily.day != now.day() {
            state.daily = DailyCount { day: now.day(), used: 0 };
        }
        state.daily.used += 1;
    }
    let mut lease = None;
    if let Some(conc) = limits.concurrency {
        state.leases.retain(|l| l.expires_at > now);
        let id = LeaseId(state.next_lease);
        state.next_lease = state.next_lease.wrapping_add(1);
        state.leases.push(Lease { id, expires_at: now.plus(conc.lease_ms) });
        lease = Some(id);
    }
    if let Some(policy) = &limits.credits {
        let mut bal = effective_credits(state.credits, policy, now);
        bal.remaining -= cost.credits.min(bal.remaining);
        state.credits = Some(bal);
    }
    lease
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::tests::{adhoc_call, code_at, one, rate};
    use crate::limits::{Concurrency, Credits, RateCost, RateLimit, Refill, RefillInterval};
    use crate::time::DAY_MS;

    #[test]
    fn ad_hoc_counters_are_bounded() {
        let none = Limits::default();
        let mut s = UsageState::default();
        let names: Vec<String> = (0..=MAX_AD_HOC_RATES).map(|i| format!("n{i}")).collect();
        for n in &names[..MAX_AD_HOC_RATES] {
            assert_eq!(adhoc_call(&none, &mut s, 0, &[RateCost::with_limit(n, 1, 1, 1_000)]), (Code::Valid, None));
        }
        let last = [RateCost::with_limit(&names[MAX_AD_HOC_RATES], 1, 1, 1_000)];
        assert_eq!(adhoc_call(&none, &mut s, 500, &last), (Code::RateLimited, Some(500)));
        // A limit already held is not new: it is judged on its own numbers.
        assert_eq!(adhoc_call(&none, &mut s, 500, &[RateCost::with_limit("n0", 1, 4, 1_000)]), (Code::Valid, None));
        assert_eq!(s.rates.len(), MAX_AD_HOC_RATES);
        assert_eq!(adhoc_call(&none, &mut s, 1_000, &last), (Code::Valid, None));
        // Replenished counters were dropped; `n0` is booked until 1 250 ms.
        assert_eq!(s.rates.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["n0", "n16"]);
    }

    #[test]
    fn ad_hoc_limits_live_in_the_first_scope() {
        let (a, b) = (Limits::default(), rate(100, 1_000));
        let (mut sa, mut sb) = (UsageState::default(), UsageState::default());
        let adhoc = [RateCost::with_limit("x", 1, 1, 1_000)];
        let c = Cost { credits: 1, rates: &adhoc };
        charge(&mut [Scope { limits: &a, state: &mut sa }, Scope { limits: &b, state: &mut sb }], UnixMillis(0), &c)
            .unwrap();
        assert_eq!(sa.rates, vec![("x".to_owned(), Gcra { tat: 1_000, scale: 1 })]);
        assert_eq!(sb.rates.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["default"]);
    }

    #[test]
    fn rate_reports() {
        let l = Limits {
            rates: vec![
                RateLimit { name: "tokens".into(), limit: 100, window_ms: 1_000, auto_apply: false },
                RateLimit { name: "calls".into(), limit: 2, window_ms: 1_000, auto_apply: true },
            ],
            ..Limits::default()
        };
        let mut s = UsageState::default();
        let named = [RateCost::named("tokens", 60), RateCost::with_limit("burst", 1, 5, 10_000)];
        let c = Cost { credits: 1, rates: &named };
        charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(0), &c).unwrap();
        let report = |name: &str, limit, window_ms, remaining, reset_ms, auto_apply, ad_hoc, exceeded| RateReport {
            name: name.into(),
            limit,
            window_ms,
            remaining,
            reset_ms,
            auto_apply,
            ad_hoc,
            exceeded,
        };
        assert_eq!(
            rate_report(&l, &s, UnixMillis(0), &c, true, false),
            [
                report("tokens", 100, 1_000, 40, 600, false, false, false),
                report("calls", 2, 1_000, 1, 500, true, false, false),
                report("burst", 5, 10_000, 4, 2_000, false, true, false),
            ]
        );
        let before = s.clone();
        let r = charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(0), &c).unwrap_err();
        assert_eq!((r.code, r.retry_after_ms), (Code::RateLimited, Some(200)));
        assert_eq!(s, before);
        let after = rate_report(&l, &s, UnixMillis(0), &c, true, true);
        assert_eq!(
            after.iter().map(|r| (r.name.as_str(), r.exceeded)).collect::<Vec<_>>(),
            [("tokens", true), ("calls", false), ("burst", false)]
        );
        // Not the scope holding ad-hoc limits: only configured ones.
        assert_eq!(rate_report(&l, &s, UnixMillis(0), &c, false, false).len(), 2);
    }

    #[test]
    fn cooldown() {
        let l = Limits { cooldown_ms: Some(5_000), ..Limits::default() };
        let mut s = UsageState::default();
        assert_eq!(code_at(&l, &mut s, 1_000), (Code::Valid, None));
        assert_eq!(code_at(&l, &mut s, 1_001), (Code::Cooldown, Some(4_999)));
        assert_eq!(code_at(&l, &mut s, 5_999), (Code::Cooldown, Some(1)));
        assert_eq!(code_at(&l, &mut s, 6_000), (Code::Valid, None));
    }

    #[test]
    fn daily_rollover_at_utc_midnight() {
        let l = Limits { daily: Some(2), ..Limits::default() };
        let mut s = UsageState::default();
        let day = 19_782 * DAY_MS; // 2024-02-29T00:00:00Z
        assert_eq!(code_at(&l, &mut s, day + 10), (Code::Valid, None));
        assert_eq!(code_at(&l, &mut s, day + 20), (Code::Valid, None));
        assert_eq!(code_at(&l, &mut s, day + DAY_MS - 1), (Code::DailyLimit, Some(1)));
        assert_eq!(code_at(&l, &mut s, day + 3_600_000), (Code::DailyLimit, Some(DAY_MS - 3_600_000)));
        assert_eq!(code_at(&l, &mut s, day + DAY_MS), (Code::Valid, None));
        assert_eq!(s.daily, DailyCount { day: 19_783, used: 1 });
    }

    #[test]
    fn concurrency_leases() {
        let l = Limits { concurrency: Some(Concurrency { max: 2, lease_ms: 10_000 }), ..Limits::default() };
        let mut s = UsageState::default();
        let a = one(&l, &mut s, 0).unwrap().leases[0].1;
        let _b = one(&l, &mut s, 100).unwrap();
        assert_eq!(code_at(&l, &mut s, 200), (Code::ConcurrencyLimit, Some(9_800)));
        assert!(s.release(a));
        assert!(!s.release(a));
        assert_eq!(code_at(&l, &mut s, 300).0, Code::Valid);
        // Both leases expire by TTL.
        assert_eq!(code_at(&l, &mut s, 10_100).0, Code::Valid);
        let alive = s.leases.iter().filter(|l| l.expires_at > UnixMillis(10_100)).count();
        assert_eq!(alive, 2);
    }

    #[test]
    fn credits_cost_and_refill() {
        let l = Limits {
            credits: Some(Credits { initial: 3, refill: Some(Refill { interval: RefillInterval::Daily, amount: 5 }) }),
            ..Limits::default()
        };
        let mut s = UsageState::default();
        let t0 = 19_782 * DAY_MS + 1_000;
        let cost2 = Cost { credits: 2, rates: &[] };
        let g = charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(t0), &cost2).unwrap();
        assert_eq!(g.quota.credits_remaining, Some(1));
        let r = charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(t0), &cost2).unwrap_err();
        assert_eq!((r.code, r.retry_after_ms), (Code::UsageExhausted, Some(DAY_MS - 1_000)));
        // Cost 0 only checks.
        let free = Cost { credits: 0, rates: &[] };
        let g = charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(t0), &free).unwrap();
        assert_eq!(g.quota.credits_remaining, Some(1));
        assert_eq!(code_at(&l, &mut s, t0).0, Code::Valid);
        assert_eq!(code_at(&l, &mut s, t0).0, Code::UsageExhausted);
        let r = charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(t0), &free).unwrap_err();
        assert_eq!(r.code, Code::UsageExhausted);
        // Refill at midnight sets the balance to 5.
        let g = one(&l, &mut s, 19_783 * DAY_MS).unwrap();
        assert_eq!(g.quota.credits_remaining, Some(4));
    }

    /// Found by the `limits` fuzz target: a balance that starts at 0 must still
    /// refill, although no call was ever admitted to create it.
    #[test]
    fn refill_after_refused_first_call() {
        let l = Limits {
            credits: Some(Credits { initial: 0, refill: Some(Refill { interval: RefillInterval::Daily, amount: 5 }) }),
            ..Limits::default()
        };
        let mut s = UsageState::default();
        assert_eq!(code_at(&l, &mut s, 1_000), (Code::UsageExhausted, Some(DAY_MS - 1_000)));
        assert_eq!(code_at(&l, &mut s, DAY_MS).0, Code::Valid);
        assert_eq!(s.credits, Some(CreditBalance { remaining: 4, refilled_at: UnixMillis(DAY_MS) }));
    }

    #[test]
    fn all_or_nothing_across_scopes() {
        let key = rate(10, 1_000);
        let tool = Limits { daily: Some(1), ..Limits::default() };
        let mut ks = UsageState::default();
        let mut ts = UsageState::default();
        let c = Cost::default();
        charge(
            &mut [Scope { limits: &key, state: &mut ks }, Scope { limits: &tool, state: &mut ts }],
            UnixMillis(0),
            &c,
        )
        .unwrap();
        let before = ks.clone();
        let r = charge(
            &mut [Scope { limits: &key, state: &mut ks }, Scope { limits: &tool, state: &mut ts }],
            UnixMillis(1),
            &c,
        )
        .unwrap_err();
        assert_eq!(r.code, Code::DailyLimit);
        assert_eq!(ks, before, "the key's rate limit was not charged");
    }
}
