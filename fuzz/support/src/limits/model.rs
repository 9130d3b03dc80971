//! The reference model of docs/limits.md for the `limits` target, written
//! from the documentation rather than from `keyward_core::limits`: GCRA kept
//! as "how far ahead" in `1/limit` ms units in u128, plain counters for the
//! rest.

use keyward_core::limits::{Cost, Grant, LeaseId, RateCost, Refusal, Scope, UsageState, charge};
use keyward_core::time::DAY_MS;
use keyward_core::{Code, Limits, UnixMillis};

use super::{LimitsCase, LimitsOp, OTHER_RATE_NAME, RATE_NAME};

/// `limits` target: a [`LimitsCase`] read from the bytes, run through
/// `keyward_core::limits::charge` and the reference model side by side.
///
/// They must agree exactly on every call; a refused call consumes nothing; a
/// live lease is held until released, and none is released twice.
pub fn limits(data: &[u8]) {
    run(&LimitsCase::read(data));
}

/// What one call came to, as both sides report it.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    code: Code,
    retry_after_ms: Option<u64>,
    credits_remaining: Option<u64>,
    daily_remaining: Option<u64>,
    /// The rate limit's `(remaining, reset_ms)`, when the call was subject to it.
    rate: Option<(u64, u64)>,
    lease: Option<u64>,
}

impl Outcome {
    fn refuse(mut self, code: Code, retry_after_ms: Option<u64>) -> Self {
        self.code = code;
        self.retry_after_ms = retry_after_ms;
        self
    }
}

fn observed(result: Result<Grant, Refusal>, limits: &Limits) -> Outcome {
    let (code, retry_after_ms, quota, lease) = match result {
        Ok(g) => {
            assert!(g.leases.len() <= 1 && g.leases.iter().all(|&(scope, _)| scope == 0), "{:?}", g.leases);
            (Code::Valid, None, g.quota, g.leases.first().map(|&(_, id)| id.0))
        }
        Err(r) => (r.code, r.retry_after_ms, r.quota, None),
    };
    if let Some(s) = &quota.rate {
        assert_eq!((s.index, s.limit), (0, limits.rates[0].limit));
    }
    Outcome {
        code,
        retry_after_ms,
        credits_remaining: quota.credits_remaining,
        daily_remaining: quota.daily_remaining,
        rate: quota.rate.map(|s| (s.remaining, s.reset_ms)),
        lease,
    }
}

fn sat(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// GCRA kept relative to the last time it was charged, so no quantity can
/// exceed `limit × window` and u128 never overflows. Units are `1/limit` ms.
struct Rate {
    limit: u128,
    window: u128,
    auto_apply: bool,
    /// How far the theoretical arrival time ran ahead of `at`.
    ahead: u128,
    at: u64,
}

impl Rate {
    fn ahead_at(&self, now: u64) -> u128 {
        self.ahead.saturating_sub(u128::from(now - self.at) * self.limit)
    }
}

/// The reference: every limit as docs/limits.md states it, in the plainest form.
struct Model {
    rate: Option<Rate>,
    cooldown_ms: Option<u64>,
    last_granted: Option<u64>,
    daily: Option<u64>,
    /// `(day, calls granted that day)`.
    today: (u64, u64),
    /// `(max, lease_ms)`.
    concurrency: Option<(usize, u64)>,
    /// `(id, expires_at)` of leases not released (expired ones included).
    leases: Vec<(u64, u64)>,
    next_lease: u64,
    /// `(initial, daily refill amount)`.
    credits: Option<(u64, Option<u64>)>,
    /// `(remaining, when it was created or last refilled)`.
    balance: Option<(u64, u64)>,
}

impl Model {
    fn new(l: &Limits) -> Self {
        Model {
            rate: l.rates.first().map(|r| Rate {
                limit: r.limit.into(),
                window: r.window_ms.into(),
                auto_apply: r.auto_apply,
                ahead: 0,
                at: 0,
            }),
            cooldown_ms: l.cooldown_ms,
            last_granted: None,
            daily: l.daily,
            today: (0, 0),
            concurrency: l.concurrency.map(|c| (c.max as usize, c.lease_ms)),
            leases: Vec::new(),
            next_lease: 0,
            credits: l.credits.map(|c| (c.initial, c.refill.map(|r| r.amount))),
            balance: None,
        }
    }

    /// One call. Checks run rate → cooldown → daily → concurrency → credits;
    /// the first refusal wins and nothing is charged; cost 0 only checks.
    fn call(&mut self, now: u64, credits: u64, named: Option<(bool, u64)>) -> Outcome {
        let counted = credits > 0;
        let mut out = Outcome {
            code: Code::Valid,
            retry_after_ms: None,
            credits_remaining: None,
            daily_remaining: None,
            rate: None,
            lease: None,
        };
        let day = now / DAY_MS;
        let next_midnight = (day + 1).saturating_mul(DAY_MS);
        // The balance exists from the first call that reaches the limits, even
        // one refused before the credits check, so the refill it promises comes.
        if let (Some((initial, _)), None) = (self.credits, self.balance) {
            self.balance = Some((initial, now));
        }

        // Rate: admitted iff max(TAT, now) + cost × window/limit − now ≤ window.
        let mut booked = None;
        if let Some(r) = &self.rate {
            // A named limit costs what the call says; an auto-applied one costs
            // 1, or 0 for a check-only call; any other does not apply.
            let cost = match named {
                Some((true, c)) => Some(c),
                _ if r.auto_apply => Some(u64::from(counted)),
                _ => None,
            };
            if let Some(c) = cost {
                let capacity = r.limit * r.window;
                let ahead = r.ahead_at(now);
                // Cost 0 checks that one call would fit.
                let need = u128::from(c.max(1)) * r.window;
                let fits = need <= capacity - ahead;
                let after = if fits { ahead + u128::from(c) * r.window } else { ahead };
                out.rate = Some((sat((capacity - after) / r.window), sat(after.div_ceil(r.limit))));
                if !fits {
                    let wait = (need - (capacity - ahead)).div_ceil(r.limit);
                    return out.refuse(Code::RateLimited, Some(sat(wait)));
                }
                booked = Some(after);
            }
        }

        if let (Some(gap), Some(last)) = (self.cooldown_ms, self.last_granted) {
            let ready = last.saturating_add(gap);
            if now < ready {
                return out.refuse(Code::Cooldown, Some(ready - now));
            }
        }

        if let Some(max) = self.daily {
            let used = if self.today.0 == day { self.today.1 } else { 0 };
            if used >= max {
                out.daily_remaining = Some(0);
                return out.refuse(Code::DailyLimit, Some(next_midnight - now));
            }
            out.daily_remaining = Some(max - used - u64::from(counted));
        }

        if let Some((max, _)) = self.concurrency {
            let alive: Vec<u64> = self.leases.iter().map(|l| l.1).filter(|&e| e > now).collect();
            if alive.len() >= max {
                let soonest = alive.iter().min().map_or(0, |&e| e - now);
                return out.refuse(Code::ConcurrencyLimit, Some(soonest));
            }
        }

        let mut balance = None;
        if let Some((initial, refill)) = self.credits {
            // Refill: back to `amount` at each UTC midnight after the last one.
            let (remaining, since) = match (self.balance, refill) {
                (None, _) => (initial, now),
                (Some((_, since)), Some(amount)) if since / DAY_MS < day => (amount, now),
                (Some(b), _) => b,
            };
            if remaining == 0 || remaining < credits {
                out.credits_remaining = Some(remaining);
                // The balance exists from the first call that consults it, so
                // the refill that retry-after promises does come.
                self.balance = Some((remaining, since));
                return out.refuse(Code::UsageExhausted, refill.map(|_| next_midnight - now));
            }
            out.credits_remaining = Some(remaining - credits);
            balance = Some((remaining - credits, since));
        }

        // Admitted: charge everything.
        if let (Some(r), Some(after)) = (&mut self.rate, booked) {
            r.ahead = after;
            r.at = now;
        }
        if balance.is_some() {
            self.balance = balance;
        }
        if counted {
            if self.cooldown_ms.is_some() {
                self.last_granted = Some(now);
            }
            if self.daily.is_some() {
                if self.today.0 != day {
                    self.today = (day, 0);
                }
                self.today.1 += 1;
            }
            if let Some((_, lease_ms)) = self.concurrency {
                let id = self.next_lease;
                self.next_lease = id.wrapping_add(1);
                self.leases.push((id, now.saturating_add(lease_ms)));
                out.lease = Some(id);
            }
        }
        out
    }
}

fn run(case: &LimitsCase) {
    let limits = &case.limits;
    assert_eq!(limits.validate(), Ok(()), "cases are valid by construction");
    let mut model = Model::new(limits);
    let mut state = UsageState::default();
    let mut now = case.start;
    let mut granted: Vec<u64> = Vec::new();
    for op in &case.ops {
        match *op {
            LimitsOp::Call { dt_ms, credits, named } => {
                now = now.plus(dt_ms);
                let names: Vec<RateCost<'_>> = named
                    .map(|(ours, c)| RateCost::named(if ours { RATE_NAME } else { OTHER_RATE_NAME }, c))
                    .into_iter()
                    .collect();
                let cost = Cost { credits, rates: &names };
                let before = state.clone();
                let got = observed(charge(&mut [Scope { limits, state: &mut state }], now, &cost), limits);
                let want = model.call(now.get(), credits, named);
                assert_eq!(got, want, "{now:?} {cost:?}\nlimits: {limits:?}\ncounters before: {before:?}");
                if got.code != Code::Valid {
                    assert_unchanged(limits, &before, &state, now);
                }
                granted.extend(got.lease);
            }
            LimitsOp::Release { nth } => {
                let id = match granted.len() {
                    0 => u64::MAX - u64::from(nth), // never handed out
                    n => granted[usize::from(nth) % n],
                };
                let held = model.leases.iter().position(|l| l.0 == id);
                let released = state.release(LeaseId(id));
                // An expired lease may already have been pruned; a live one must be held.
                if held.is_some_and(|i| model.leases[i].1 > now.get()) {
                    assert!(released, "live lease {id} was not held");
                }
                if held.is_none() {
                    assert!(!released, "lease {id} released twice, or never granted");
                }
                if let Some(i) = held {
                    model.leases.remove(i);
                }
            }
        }
    }
}

/// A refused call consumes nothing. Creating a credits balance, or applying a
/// due refill to it, is not consumption: compare the balance as it reads.
fn assert_unchanged(limits: &Limits, before: &UsageState, after: &UsageState, now: UnixMillis) {
    let mut after = after.clone();
    if let Some(policy) = &limits.credits {
        assert_eq!(after.credits_at(policy, now), before.credits_at(policy, now), "a refused call took credits");
        after.credits = before.credits;
    }
    assert_eq!(&after, before, "a refused call changed the counters");
}
