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
//! Each function takes `now`; nothing here reads a clock.

use serde::{Deserialize, Serialize};

use crate::time::{DAY_MS, UnixMillis, days_in_month};
use crate::verdict::Code;

/// Longest accepted rate-limit name.
pub const MAX_RATE_NAME_LEN: usize = 64;

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
            if self.rates[..i].iter().any(|o| o.name == r.name) {
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

/// GCRA state of one rate limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gcra {
    /// Theoretical arrival time in units of `1/scale` ms.
    pub tat: u128,
    /// The `limit` the TAT was computed with (its unit).
    pub scale: u64,
}

/// Counter of one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyCount {
    /// Days since the epoch that `used` counts.
    pub day: u64,
    /// Granted calls on that day.
    pub used: u64,
}

/// Identifies one concurrency lease within a key's usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub u64);

/// A job in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// When it frees itself if not released.
    pub expires_at: UnixMillis,
}

/// Credits balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBalance {
    /// Credits left.
    pub remaining: u64,
    /// Last time a refill was applied (or the balance was created).
    pub refilled_at: UnixMillis,
}

/// The mutable counters of one scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageState {
    /// GCRA state by rate-limit name.
    pub rates: Vec<(String, Gcra)>,
    /// Last granted call, for the cooldown.
    pub last_granted: Option<UnixMillis>,
    /// Today's count.
    pub daily: DailyCount,
    /// Leases alive (possibly expired; pruned lazily).
    pub leases: Vec<Lease>,
    /// Next lease id to hand out.
    pub next_lease: u64,
    /// Credits balance, created from [`Credits::initial`] on first use.
    pub credits: Option<CreditBalance>,
}

impl UsageState {
    /// Releases a lease. Returns whether it was held.
    pub fn release(&mut self, lease: LeaseId) -> bool {
        let before = self.leases.len();
        self.leases.retain(|l| l.id != lease);
        self.leases.len() != before
    }

    /// Leases still alive at `now`.
    pub fn leases_alive(&self, now: UnixMillis) -> usize {
        self.leases.iter().filter(|l| l.expires_at > now).count()
    }

    /// Current credit balance under `policy` at `now` (refill applied).
    pub fn credits_at(&self, policy: &Credits, now: UnixMillis) -> u64 {
        effective_credits(self.credits, policy, now).remaining
    }
}

/// How much one call costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cost<'a> {
    /// Credits to take (0 only checks that some remain).
    pub credits: u64,
    /// Rate limits this call names, with their cost. Auto-applied limits that
    /// are not named cost 1 (0 when `credits` is 0); other limits apply only
    /// when named here.
    pub rates: &'a [(&'a str, u64)],
}

impl Default for Cost<'_> {
    fn default() -> Self {
        Self { credits: 1, rates: &[] }
    }
}

impl Cost<'_> {
    fn rate_cost(&self, rate: &RateLimit) -> Option<u64> {
        match self.rates.iter().find(|(n, _)| *n == rate.name) {
            Some(&(_, c)) => Some(c),
            // A check-only call (no credits) charges auto-applied limits nothing.
            None if rate.auto_apply => Some(u64::from(self.credits > 0)),
            None => None,
        }
    }
}

/// Figures for `RateLimit-*` headers: the limit closest to refusing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateStatus {
    /// Position of the limit in its scope's [`Limits::rates`] (no name is
    /// copied on the hot path; look it up there).
    pub index: usize,
    /// Its limit.
    pub limit: u64,
    /// Calls left right now.
    pub remaining: u64,
    /// Milliseconds until the limit is fully replenished.
    pub reset_ms: u64,
}

/// Quota figures reported with a verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Credits left after the call (smallest across scopes).
    pub credits_remaining: Option<u64>,
    /// Daily calls left after the call (smallest across scopes).
    pub daily_remaining: Option<u64>,
    /// The tightest rate limit.
    pub rate: Option<RateStatus>,
}

impl Quota {
    fn merge_rate(&mut self, status: RateStatus) {
        let tighter = match &self.rate {
            None => true,
            Some(cur) => status.remaining < cur.remaining,
        };
        if tighter {
            self.rate = Some(status);
        }
    }
}

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

/// Checks every limit of every scope and, only if all pass, charges them.
pub fn charge(scopes: &mut [Scope<'_>], now: UnixMillis, cost: &Cost<'_>) -> Result<Grant, Refusal> {
    // Pass 1: check only. The first refusal wins, in the order rate → cooldown →
    // daily → concurrency → credits within a scope, scopes in the order given.
    let mut quota = Quota::default();
    for scope in scopes.iter() {
        if let Err(code_retry) = check_scope(scope.limits, scope.state, now, cost, &mut quota) {
            return Err(Refusal { code: code_retry.0, retry_after_ms: code_retry.1, quota });
        }
    }
    // Pass 2: every check passed; write.
    let mut grant = Grant { quota, leases: Vec::new() };
    for (i, scope) in scopes.iter_mut().enumerate() {
        if let Some(lease) = commit_scope(scope.limits, scope.state, now, cost) {
            grant.leases.push((i, lease));
        }
    }
    Ok(grant)
}

/// Checks one scope without charging it. Returns the quota figures it would leave.
pub fn peek(limits: &Limits, state: &UsageState, now: UnixMillis, cost: &Cost<'_>) -> Result<Quota, Refusal> {
    let mut quota = Quota::default();
    match check_scope(limits, state, now, cost, &mut quota) {
        Ok(()) => Ok(quota),
        Err((code, retry_after_ms)) => Err(Refusal { code, retry_after_ms, quota }),
    }
}

fn gcra_of(state: &UsageState, name: &str) -> Gcra {
    state.rates.iter().find(|(n, _)| n == name).map(|(_, g)| *g).unwrap_or_default()
}

/// TAT in units of `1/limit` ms, rescaled if the limit changed since it was stored.
fn scaled_tat(g: Gcra, limit: u64) -> u128 {
    if g.scale == limit || g.scale == 0 {
        g.tat
    } else {
        // Round up: a limit change never hands out extra calls.
        (g.tat * u128::from(limit)).div_ceil(u128::from(g.scale))
    }
}

struct GcraStep {
    /// TAT after charging `cost` (scaled).
    new_tat: u128,
    /// Whether it fits.
    fits: bool,
    status: RateStatus,
    retry_after_ms: u64,
}

fn gcra_step(index: usize, rate: &RateLimit, g: Gcra, now: UnixMillis, cost: u64) -> GcraStep {
    let l = u128::from(rate.limit);
    let w = u128::from(rate.window_ms);
    let now_s = u128::from(now.get()) * l;
    let capacity = l * w;
    let base = scaled_tat(g, rate.limit).max(now_s);
    // Cost 0 checks that one call would fit, without taking it.
    let probe = base + u128::from(cost.max(1)) * w;
    let fits = probe - now_s <= capacity;
    let new_tat = if fits { base + u128::from(cost) * w } else { base };
    let ahead = new_tat - now_s;
    let remaining = (capacity.saturating_sub(ahead) / w).min(u128::from(rate.limit)) as u64;
    let reset_ms = u64::try_from(ahead.div_ceil(l)).unwrap_or(u64::MAX);
    let retry_after_ms =
        if fits { 0 } else { u64::try_from((probe - now_s - capacity).div_ceil(l)).unwrap_or(u64::MAX) };
    GcraStep { new_tat, fits, status: RateStatus { index, limit: rate.limit, remaining, reset_ms }, retry_after_ms }
}

fn effective_credits(balance: Option<CreditBalance>, policy: &Credits, now: UnixMillis) -> CreditBalance {
    let current = balance.unwrap_or(CreditBalance { remaining: policy.initial, refilled_at: now });
    match policy.refill {
        Some(refill) => {
            let boundary = last_refill_boundary(refill.interval, now);
            if current.refilled_at < boundary {
                CreditBalance { remaining: refill.amount, refilled_at: now }
            } else {
                current
            }
        }
        None => current,
    }
}

/// Day (1-based) of the monthly refill within a given month.
fn refill_day_in(year: i64, month: u32, day: u8) -> u32 {
    u32::from(day).min(days_in_month(year, month))
}

/// The latest refill instant at or before `now`.
pub fn last_refill_boundary(interval: RefillInterval, now: UnixMillis) -> UnixMillis {
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
pub fn next_refill_boundary(interval: RefillInterval, now: UnixMillis) -> UnixMillis {
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

type Refused = (Code, Option<u64>);

fn check_scope(
    limits: &Limits,
    state: &UsageState,
    now: UnixMillis,
    cost: &Cost<'_>,
    quota: &mut Quota,
) -> Result<(), Refused> {
    for (i, rate) in limits.rates.iter().enumerate() {
        let Some(c) = cost.rate_cost(rate) else { continue };
        let step = gcra_step(i, rate, gcra_of(state, &rate.name), now, c);
        let fits = step.fits;
        let retry = step.retry_after_ms;
        quota.merge_rate(step.status);
        if !fits {
            return Err((Code::RateLimited, Some(retry)));
        }
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

fn commit_scope(limits: &Limits, state: &mut UsageState, now: UnixMillis, cost: &Cost<'_>) -> Option<LeaseId> {
    for (i, rate) in limits.rates.iter().enumerate() {
        let Some(c) = cost.rate_cost(rate) else { continue };
        let step = gcra_step(i, rate, gcra_of(state, &rate.name), now, c);
        let g = Gcra { tat: step.new_tat, scale: rate.limit };
        match state.rates.iter_mut().find(|(n, _)| *n == rate.name) {
            Some(slot) => slot.1 = g,
            None => state.rates.push((rate.name.clone(), g)),
        }
    }
    // Forget state of rate limits that no longer exist, so it cannot grow.
    if state.rates.len() > limits.rates.len() {
        state.rates.retain(|(n, _)| limits.rates.iter().any(|r| r.name == *n));
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

    fn rate(limit: u64, window_ms: u64) -> Limits {
        Limits {
            rates: vec![RateLimit { name: "default".into(), limit, window_ms, auto_apply: true }],
            ..Limits::default()
        }
    }

    fn one(limits: &Limits, state: &mut UsageState, t: u64) -> Result<Grant, Refusal> {
        charge(&mut [Scope { limits, state }], UnixMillis(t), &Cost::default())
    }

    fn code_at(limits: &Limits, state: &mut UsageState, t: u64) -> (Code, Option<u64>) {
        match one(limits, state, t) {
            Ok(_) => (Code::Valid, None),
            Err(r) => (r.code, r.retry_after_ms),
        }
    }

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

    #[test]
    fn rate_cost_and_named_limits() {
        let l = Limits {
            rates: vec![
                RateLimit { name: "tokens".into(), limit: 100, window_ms: 1_000, auto_apply: false },
                RateLimit { name: "calls".into(), limit: 2, window_ms: 1_000, auto_apply: true },
            ],
            ..Limits::default()
        };
        let mut s = UsageState::default();
        let named = [("tokens", 60u64)];
        let cost = Cost { credits: 1, rates: &named };
        assert!(charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(0), &cost).is_ok());
        // 60 more tokens would exceed 100: refused, and `calls` is not charged.
        let r = charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(0), &cost).unwrap_err();
        assert_eq!(r.code, Code::RateLimited);
        assert_eq!(r.retry_after_ms, Some(200));
        // Unnamed: only `calls` applies; it still has one left.
        assert!(one(&l, &mut s, 0).is_ok());
        assert_eq!(one(&l, &mut s, 0).unwrap_err().code, Code::RateLimited);
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
        assert_eq!(s.leases_alive(UnixMillis(10_100)), 2);
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
