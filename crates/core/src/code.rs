//! Verdict codes (SPEC §4): the stable outcome of a verification, its
//! string and its HTTP status. A leaf: it uses nothing else in the crate.

use core::fmt;

use serde::{Deserialize, Serialize};

/// The stable outcome of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Code {
    /// The request may pass.
    Valid,
    /// No credential, or one that cannot be a key.
    Malformed,
    /// Well-formed but unknown.
    NotFound,
    /// Past `expires_at`.
    Expired,
    /// Revoked.
    Revoked,
    /// Disabled (can be re-enabled).
    Disabled,
    /// The workspace plan has no API access.
    PlanInactive,
    /// Client IP refused by the key's or the workspace's rules.
    IpDenied,
    /// Lacks a required permission or the tool's permission.
    InsufficientPermissions,
    /// The tool exists but is disabled.
    ToolDisabled,
    /// No such tool.
    UnknownTool,
    /// A rate window is full.
    RateLimited,
    /// Called again before the cooldown elapsed.
    Cooldown,
    /// The daily limit is reached.
    DailyLimit,
    /// Too many jobs in flight.
    ConcurrencyLimit,
    /// Remaining credits do not cover the call.
    UsageExhausted,
    /// HMAC mismatch.
    InvalidSignature,
    /// Nonce not acceptable under the key's replay policy.
    NonceReused,
    /// The store could not make the call's change durable (a strict-mode
    /// charge, a signed login's session); nothing was charged or minted.
    StoreUnavailable,
}

impl Code {
    /// Every code, in SPEC order.
    pub const ALL: [Code; 19] = [
        Code::Valid,
        Code::Malformed,
        Code::NotFound,
        Code::Expired,
        Code::Revoked,
        Code::Disabled,
        Code::PlanInactive,
        Code::IpDenied,
        Code::InsufficientPermissions,
        Code::ToolDisabled,
        Code::UnknownTool,
        Code::RateLimited,
        Code::Cooldown,
        Code::DailyLimit,
        Code::ConcurrencyLimit,
        Code::UsageExhausted,
        Code::InvalidSignature,
        Code::NonceReused,
        Code::StoreUnavailable,
    ];

    /// The stable string, e.g. `RATE_LIMITED`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::Malformed => "MALFORMED",
            Code::NotFound => "NOT_FOUND",
            Code::Expired => "EXPIRED",
            Code::Revoked => "REVOKED",
            Code::Disabled => "DISABLED",
            Code::PlanInactive => "PLAN_INACTIVE",
            Code::IpDenied => "IP_DENIED",
            Code::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            Code::ToolDisabled => "TOOL_DISABLED",
            Code::UnknownTool => "UNKNOWN_TOOL",
            Code::RateLimited => "RATE_LIMITED",
            Code::Cooldown => "COOLDOWN",
            Code::DailyLimit => "DAILY_LIMIT",
            Code::ConcurrencyLimit => "CONCURRENCY_LIMIT",
            Code::UsageExhausted => "USAGE_EXHAUSTED",
            Code::InvalidSignature => "INVALID_SIGNATURE",
            Code::NonceReused => "NONCE_REUSED",
            Code::StoreUnavailable => "STORE_UNAVAILABLE",
        }
    }

    /// Parses the stable string.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The HTTP status this code maps to.
    pub const fn http_status(self) -> u16 {
        match self {
            Code::Valid => 200,
            Code::Malformed
            | Code::NotFound
            | Code::Expired
            | Code::Revoked
            | Code::InvalidSignature
            | Code::NonceReused => 401,
            Code::Disabled
            | Code::PlanInactive
            | Code::IpDenied
            | Code::InsufficientPermissions
            | Code::ToolDisabled => 403,
            Code::UnknownTool => 404,
            Code::RateLimited | Code::Cooldown | Code::DailyLimit | Code::ConcurrencyLimit | Code::UsageExhausted => {
                429
            }
            Code::StoreUnavailable => 503,
        }
    }

    /// Whether this is [`Code::Valid`].
    pub const fn is_valid(self) -> bool {
        matches!(self, Code::Valid)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let table: Vec<(&str, u16)> = Code::ALL.iter().map(|c| (c.as_str(), c.http_status())).collect();
        assert_eq!(
            table,
            [
                ("VALID", 200),
                ("MALFORMED", 401),
                ("NOT_FOUND", 401),
                ("EXPIRED", 401),
                ("REVOKED", 401),
                ("DISABLED", 403),
                ("PLAN_INACTIVE", 403),
                ("IP_DENIED", 403),
                ("INSUFFICIENT_PERMISSIONS", 403),
                ("TOOL_DISABLED", 403),
                ("UNKNOWN_TOOL", 404),
                ("RATE_LIMITED", 429),
                ("COOLDOWN", 429),
                ("DAILY_LIMIT", 429),
                ("CONCURRENCY_LIMIT", 429),
                ("USAGE_EXHAUSTED", 429),
                ("INVALID_SIGNATURE", 401),
                ("NONCE_REUSED", 401),
                ("STORE_UNAVAILABLE", 503),
            ]
        );
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
        assert_eq!(Code::parse("valid"), None);
    }
}
