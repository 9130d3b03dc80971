//! What one call costs: credits, and the rate limits it names with their
//! costs and any numbers of its own.

/// Name of the [`RateCost`] entry that sets the cost of every auto-applied
/// limit the call does not name (not a valid rate-limit name, so it cannot
/// clash with one).
pub const AUTO_APPLIED: &str = "*";

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
    pub(super) fn named(&self, name: &str) -> Option<&RateCost<'_>> {
        self.rates.iter().find(|r| r.name == name)
    }

    pub(super) fn auto_cost(&self) -> u64 {
        self.named(AUTO_APPLIED).map_or(u64::from(self.credits > 0), |r| r.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::limits::tests::{adhoc_call, code_at, one, rate};
    use crate::limits::{Gcra, Limits, RateLimit, Scope, UsageState, charge};
    use crate::time::UnixMillis;

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

    mod props {
        use proptest::prelude::*;

        use super::*;

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
}
