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

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::time::{DAY_MS, UnixMillis, days_in_month};

/// Most calls a rate limit may admit per window (keeps GCRA arithmetic in range).
pub const MAX_RATE_LIMIT: u64 = 1_000_000_000;
/// Longest rate-limit window: 100 years of 365.25 days.
pub const MAX_WINDOW_MS: u64 = 3_155_760_000_000;

/// Longest accepted rate-limit name.
pub const MAX_RATE_NAME_LEN: usize = 64;

/// Name of the [`RateCost`] entry that sets the cost of every auto-applied
/// limit the call does not name (not a valid rate-limit name, so it cannot
/// clash with one).
pub const AUTO_APPLIED: &str = "*";

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

/// Which counters a concurrency lease was taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaseScope {
    /// The key's own limits.
    Key,
    /// The tool's limits for this key.
    Tool,
    /// The key's limits for this tool.
    KeyTool,
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

/// One rate limit a call names: what it costs, and optionally different
/// numbers for this call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateCost<'a> {
    /// The limit's name, or [`AUTO_APPLIED`] for every auto-applied limit the
    /// call does not name.
    pub name: &'a str,
    /// Calls it counts as (0 only checks that one more would fit).
    pub cost: u64,
    /// Calls per window for this call instead of the configured `limit`.
    /// With `window_ms` also set and no limit of this name configured, an
    /// ad-hoc limit applies. 0 counts as 1.
    pub limit: Option<u64>,
    /// Window for this call instead of the configured `window_ms`. 0 counts as 1.
    pub window_ms: Option<u64>,
}

impl<'a> RateCost<'a> {
    /// The limit `name` at `cost`, with its configured numbers.
    pub const fn named(name: &'a str, cost: u64) -> Self {
        Self { name, cost, limit: None, window_ms: None }
    }

    /// The limit `name` at `cost`, as `limit` calls per `window_ms`: an
    /// override of a configured limit of that name, or an ad-hoc limit.
    pub const fn with_limit(name: &'a str, cost: u64, limit: u64, window_ms: u64) -> Self {
        Self { name, cost, limit: Some(limit), window_ms: Some(window_ms) }
    }
}

/// How much one call costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cost<'a> {
    /// Credits to take (0 only checks that some remain).
    pub credits: u64,
    /// Rate limits this call names (the first entry of a name counts).
    /// Auto-applied limits that are not named cost the [`AUTO_APPLIED`]
    /// entry's cost if there is one, else 1 (0 when `credits` is 0: a
    /// check-only call); other limits apply only when named here.
    pub rates: &'a [RateCost<'a>],
}

impl Default for Cost<'_> {
    fn default() -> Self {
        Self { credits: 1, rates: &[] }
    }
}

impl Cost<'_> {
    fn named(&self, name: &str) -> Option<&RateCost<'_>> {
        self.rates.iter().find(|r| r.name == name)
    }

    fn auto_cost(&self) -> u64 {
        self.named(AUTO_APPLIED).map_or(u64::from(self.credits > 0), |r| r.cost)
    }
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

/// Figures for `RateLimit-*` headers: the limit closest to refusing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateStatus {
    /// Position of the limit in its scope's [`Limits::rates`] (no name is
    /// copied on the hot path; look it up there). For an ad-hoc limit,
    /// `rates.len()` plus its position in the call's [`Cost::rates`].
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

/// One rate limit as a call applied it, with its figures now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateReport {
    /// Its name.
    pub name: String,
    /// Calls per window, as applied (after any override).
    pub limit: u64,
    /// Window in milliseconds, as applied.
    pub window_ms: u64,
    /// Calls left right now.
    pub remaining: u64,
    /// Milliseconds until it is fully replenished.
    pub reset_ms: u64,
    /// Whether it applies to calls that do not name it.
    pub auto_apply: bool,
    /// Whether it is an ad-hoc limit (not configured on the scope).
    pub ad_hoc: bool,
    /// Whether this limit refused the call.
    pub exceeded: bool,
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

fn gcra_of(state: &UsageState, name: &str) -> Gcra {
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

struct GcraStep {
    /// Whether it fits.
    fits: bool,
    status: RateStatus,
    retry_after_ms: u64,
}

/// One GCRA check of `limit` calls per `window_ms` (both at least 1).
///
/// Everything after the first line works on `ahead`, the booked time beyond
/// `now` (in units of `1/limit` ms), which is at most the capacity `limit ×
/// window`: it fits u64 for any limit and window a caller is likely to set,
/// whatever the date, and u128 division is several times slower than u64.
/// Inlined: its figures go straight into the quota.
#[inline]
fn gcra_step(index: usize, limit: u64, window_ms: u64, g: Gcra, now: UnixMillis, cost: u64) -> GcraStep {
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
fn gcra_charged(limit: u64, window_ms: u64, g: Gcra, now: UnixMillis, cost: u64) -> u128 {
    let limit = limit.max(1);
    let now_s = u128::from(now.get()) * u128::from(limit);
    scaled_tat(g, limit).max(now_s).saturating_add(u128::from(cost).saturating_mul(u128::from(window_ms.max(1))))
}

/// Whether a counter still holds booked time (else it equals a fresh one).
fn live(g: &Gcra, now: UnixMillis) -> bool {
    g.tat > u128::from(now.get()) * u128::from(g.scale.max(1))
}

/// Milliseconds until a live counter holds no booked time.
fn free_in(g: &Gcra, now: UnixMillis) -> u64 {
    let unit = u128::from(g.scale.max(1));
    u64::try_from(g.tat.saturating_sub(u128::from(now.get()) * unit).div_ceil(unit)).unwrap_or(u64::MAX)
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
        let named = [RateCost::named("tokens", 60)];
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

    fn adhoc_call(limits: &Limits, state: &mut UsageState, t: u64, rates: &[RateCost<'_>]) -> (Code, Option<u64>) {
        match charge(&mut [Scope { limits, state }], UnixMillis(t), &Cost { credits: 1, rates }) {
            Ok(_) => (Code::Valid, None),
            Err(r) => (r.code, r.retry_after_ms),
        }
    }

    #[test]
    fn ad_hoc_limit_keeps_its_counter() {
        let none = Limits::default();
        let mut s = UsageState::default();
        let search = [RateCost::with_limit("search", 1, 2, 1_000)];
        assert_eq!(adhoc_call(&none, &mut s, 0, &search), (Code::Valid, None));
        assert_eq!(adhoc_call(&none, &mut s, 0, &search), (Code::Valid, None));
        assert_eq!(adhoc_call(&none, &mut s, 0, &search), (Code::RateLimited, Some(500)));
        // A call that does not name it is not limited and leaves its counter.
        assert_eq!(code_at(&none, &mut s, 0), (Code::Valid, None));
        assert_eq!(s.rates, vec![("search".to_owned(), Gcra { tat: 2_000, scale: 2 })]);
        assert_eq!(adhoc_call(&none, &mut s, 499, &search), (Code::RateLimited, Some(1)));
        assert_eq!(adhoc_call(&none, &mut s, 500, &search), (Code::Valid, None));
        // Fully replenished (at 1 500 ms), the counter is dropped at the next commit.
        assert_eq!(code_at(&none, &mut s, 1_499), (Code::Valid, None));
        assert_eq!(s.rates.len(), 1);
        assert_eq!(code_at(&none, &mut s, 1_500), (Code::Valid, None));
        assert_eq!(s.rates, vec![]);
        // Both numbers are needed for an ad-hoc limit; a bare name is ignored.
        let partial = [RateCost { name: "search", cost: 5, limit: Some(1), window_ms: None }];
        for _ in 0..3 {
            assert_eq!(adhoc_call(&none, &mut s, 2_000, &partial), (Code::Valid, None));
        }
        assert_eq!(adhoc_call(&none, &mut s, 2_000, &[RateCost::named("search", 9)]), (Code::Valid, None));
        assert_eq!(s.rates, vec![]);
    }

    #[test]
    fn override_of_a_configured_limit() {
        let l = rate(10, 1_000);
        let mut s = UsageState::default();
        let strict = [RateCost::with_limit("default", 1, 1, 1_000)];
        assert_eq!(adhoc_call(&l, &mut s, 0, &strict), (Code::Valid, None));
        assert_eq!(adhoc_call(&l, &mut s, 0, &strict), (Code::RateLimited, Some(1_000)));
        // Back to 10/s: the booked second is a full window, so one emission
        // interval (100 ms) to wait.
        assert_eq!(code_at(&l, &mut s, 0), (Code::RateLimited, Some(100)));
        assert_eq!(code_at(&l, &mut s, 100), (Code::Valid, None));
        // Only the window: 10 per 100 ms. 1 100 ms is booked, so at 1 000 ms
        // the 100 ms window is full.
        let fast = [RateCost { name: "default", cost: 1, limit: None, window_ms: Some(100) }];
        assert_eq!(adhoc_call(&l, &mut s, 1_000, &fast), (Code::RateLimited, Some(10)));
        assert_eq!(adhoc_call(&l, &mut s, 1_100, &fast), (Code::Valid, None));
        assert_eq!(s.rates[0].1, Gcra { tat: 11_100, scale: 10 });
    }

    #[test]
    fn auto_applied_entry_prices_unnamed_limits() {
        let l = Limits {
            rates: vec![
                RateLimit { name: "calls".into(), limit: 1, window_ms: 1_000, auto_apply: true },
                RateLimit { name: "tokens".into(), limit: 5, window_ms: 1_000, auto_apply: false },
            ],
            ..Limits::default()
        };
        let mut s = UsageState::default();
        let check_only = Cost { credits: 0, rates: &[] };
        for _ in 0..3 {
            assert!(charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(0), &check_only).is_ok());
        }
        let counted = [RateCost::named(AUTO_APPLIED, 1)];
        let c = Cost { credits: 0, rates: &counted };
        assert!(charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(0), &c).is_ok());
        let r = charge(&mut [Scope { limits: &l, state: &mut s }], UnixMillis(0), &c).unwrap_err();
        assert_eq!((r.code, r.retry_after_ms), (Code::RateLimited, Some(1_000)));
        // `*` never names a configured limit, and `tokens` is not auto-applied.
        assert_eq!(s.rates, vec![("calls".to_owned(), Gcra { tat: 1_000, scale: 1 })]);
    }

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

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// An ad-hoc limit behaves exactly like a configured limit with
            /// the same numbers that every call names.
            #[test]
            fn ad_hoc_equals_configured(
                limit in 1u64..20,
                window_ms in 1u64..5_000,
                steps in proptest::collection::vec((0u64..3_000, 0u64..4, any::<bool>()), 1..60),
            ) {
                let configured = Limits {
                    rates: vec![RateLimit { name: "x".into(), limit, window_ms, auto_apply: false }],
                    ..Limits::default()
                };
                let none = Limits::default();
                let (mut a, mut b) = (UsageState::default(), UsageState::default());
                let mut now = UnixMillis(1_709_164_800_000);
                for (dt, c, named) in steps {
                    now = now.plus(dt);
                    let (by_name, by_numbers) = if named {
                        (vec![RateCost::named("x", c)], vec![RateCost::with_limit("x", c, limit, window_ms)])
                    } else {
                        (vec![], vec![])
                    };
                    let ra = charge(&mut [Scope { limits: &configured, state: &mut a }], now, &Cost { credits: 1, rates: &by_name });
                    let rb = charge(&mut [Scope { limits: &none, state: &mut b }], now, &Cost { credits: 1, rates: &by_numbers });
                    prop_assert_eq!(ra, rb, "at {:?}", now);
                    prop_assert!(b.rates.len() <= 1);
                }
            }
        }
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
