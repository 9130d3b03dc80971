//! The figures a call reports: credits and daily calls left, and the rate
//! limits' state.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::{Cost, Limits};

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
    pub(super) fn merge_rate(&mut self, status: RateStatus) {
        let tighter = match &self.rate {
            None => true,
            Some(cur) => status.remaining < cur.remaining,
        };
        if tighter {
            self.rate = Some(status);
        }
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
