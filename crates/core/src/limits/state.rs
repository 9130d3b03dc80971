//! The counters of one scope: GCRA timestamps, today's count, leases and
//! the credit balance.

use serde::{Deserialize, Serialize};

use super::Credits;
use super::calendar::last_refill_boundary;
use super::lease::{Lease, LeaseId};
use crate::time::UnixMillis;

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

    /// Current credit balance under `policy` at `now` (refill applied).
    pub fn credits_at(&self, policy: &Credits, now: UnixMillis) -> u64 {
        effective_credits(self.credits, policy, now).remaining
    }
}

/// The balance under `policy` at `now`: the stored one (or a fresh one),
/// refilled if a refill boundary passed since.
pub(super) fn effective_credits(balance: Option<CreditBalance>, policy: &Credits, now: UnixMillis) -> CreditBalance {
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
