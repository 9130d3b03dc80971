//! keyward-core: every decision keyward makes, as pure functions.
//!
//! Tokens, IP rules, permissions, quotas, signatures, credential parsing,
//! verdicts and the snapshot format live here, free of I/O: time arrives as a
//! [`UnixMillis`] argument and randomness through a caller-supplied
//! [`rand_core::CryptoRng`]. The storage engine, the HTTP server and the WASM
//! verifier are thin adapters around this crate, so they all decide alike.
//!
//! ```
//! use keyward_core::{
//!     decide, Call, Code, Cost, IpRule, IpRules, KeyId, KeyPolicy, Limits, Permission, Prefix,
//!     RateLimit, Request, Token, ToolLookup, UnixMillis, Usage, UsageState, Verdict, WorkspaceId,
//!     WorkspacePolicy,
//! };
//! # let mut rng = rand::rng();
//! // Issue a token; only its hash is kept.
//! let prefix = Prefix::parse("sk_live").unwrap();
//! let token = Token::generate(&prefix, &mut rng);
//! let workspace = WorkspacePolicy {
//!     id: WorkspaceId::generate(&mut rng),
//!     name: "acme".into(),
//!     api_access: true,
//!     prefix,
//!     ip_rules: IpRules::none(),
//!     default_limits: Limits::default(),
//! };
//! let key = KeyPolicy {
//!     id: KeyId::generate(&mut rng),
//!     workspace: workspace.id,
//!     hash: token.hash(),
//!     name: "ci".into(),
//!     revoked_at: None,
//!     expires_at: None,
//!     disabled: false,
//!     permissions: vec![Permission::parse("billing:*").unwrap()],
//!     ip_rules: IpRules(vec![IpRule::parse("allow", "10.0.0.0/8").unwrap()]),
//!     limits: Limits {
//!         rates: vec![RateLimit { name: "default".into(), limit: 2, window_ms: 1_000, auto_apply: true }],
//!         ..Limits::default()
//!     },
//!     tool_limits: vec![],
//!     tools: vec![],
//!     meta: String::new(),
//!     imported: false,
//! };
//!
//! // Decide requests at an explicit time.
//! let mut counters = UsageState::default();
//! let mut verdict = Verdict::bare(Code::Valid);
//! let mut ask = |ip: &str, t: u64| {
//!     let request = Request {
//!         ip: Some(ip.parse().unwrap()),
//!         permissions: &["billing:read"],
//!         now: UnixMillis(t),
//!         ..Request::default()
//!     };
//!     let call = Call { key: &key, workspace: &workspace, tool: ToolLookup::NotRequested, request: &request };
//!     let usage = Usage { key: &mut counters, tool: None, key_tool: None };
//!     decide(&mut verdict, &call, usage); // sets every field of the verdict
//!     verdict.code
//! };
//! assert_eq!(ask("10.1.2.3", 0), Code::Valid);
//! assert_eq!(ask("192.0.2.1", 0), Code::IpDenied); // refused calls charge nothing
//! assert_eq!(ask("10.1.2.3", 0), Code::Valid);
//! assert_eq!(ask("10.1.2.3", 0), Code::RateLimited);
//! assert_eq!(ask("10.1.2.3", 500), Code::Valid);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Attacker input yields an error, never a panic (STYLE.md, "Errors"): outside
// tests, every unwrap, expect, panic or unchecked index is either rewritten or
// carries a scoped `allow` with a comment stating why it cannot fire. These
// are crate attributes rather than a `[lints]` table so they bind this crate
// only, and the unit tests (`cfg(test)`) stay free to unwrap and index; the
// integration tests in `tests/` are separate crates and do not see them.
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

// The modules form a one-way chain: each uses only the modules listed before
// it (read every `use crate::` line to check), and the groups of `mod` lines
// below are the same order in layers.
//
//   time, base62, hex, code, ip, permission, credentials    (nothing from the crate)
//   id        → base62, time
//   token     → base62, hex
//   query     → permission
//   path      → credentials
//   limits    → code, time
//   policy    → id, ip, limits, permission, time, token
//   verdict   → code, id, limits
//   signature → code, hex, time
//   snapshot  → ip, limits, policy, time
//   decide    → code, limits, permission, policy, query, time, token, verdict
//   local     → code, decide, id, limits, policy, snapshot, token, verdict

// Leaves.
mod base62;
mod code;
mod credentials;
pub mod hex;
mod ip;
mod permission;
mod time;

// Identifiers, tokens, permission queries and quotas.
mod id;
mod limits;
mod path;
mod query;
mod token;

// Records and verdicts.
mod policy;
mod signature;
mod verdict;

// Snapshots and decisions.
mod decide;
mod snapshot;

// The self-contained verifier.
mod local;

pub use code::Code;
pub use credentials::{
    Credential, CredentialError, MAX_HEADER_VALUE, MAX_TOOL_LEN, SignedHeaders, ToolNameError, check_tool_name,
    parse as parse_credentials, tool_from_path,
};
pub use decide::{Call, KeyIndex, Request, ToolLookup, Usage, admit, decide, format_check, lookup, quota_of, release};
pub use id::{IdError, KeyId, WorkspaceId};
pub use ip::{IpRule, IpRuleError, IpRules, parse_cidr};
pub use limits::{
    AUTO_APPLIED, Concurrency, Cost, CreditBalance, Credits, DailyCount, Gcra, Grant, Lease, LeaseId, LeaseScope,
    Limits, LimitsError, MAX_AD_HOC_RATES, Quota, RateCost, RateLimit, RateReport, RateStatus, Refill, RefillInterval,
    Refusal, Scope, UsageState, charge, last_refill_boundary, next_refill_boundary, peek, rate_report, valid_rate_name,
};
pub use local::{Checked, LocalVerifier};
pub use path::{GatewayPath, PathError, canonical_path, gateway_tool};
pub use permission::{Permission, PermissionError, first_uncovered, granted};
pub use policy::{
    KeyPolicy, MAX_NAME_LEN, RECORD_VERSION, RecordError, Status, ToolPolicy, WorkspacePolicy, decode_record,
    encode_record,
};
pub use query::{MAX_QUERY_DEPTH, MAX_QUERY_LEN, PermissionQuery, QueryError};
pub use signature::{
    ApiSecret, MAX_NONCE_LEN, NonceError, NoncePolicy, NonceState, parse_decimal_nonce, sign, sign_hex,
    verify as verify_signature,
};
pub use snapshot::{
    FORMAT_VERSION as SNAPSHOT_FORMAT_VERSION, MIN_KEY_LEN as SNAPSHOT_MIN_KEY_LEN, Snapshot, SnapshotError,
};
pub use time::{DAY_MS, UnixMillis};
pub use token::{KeyHash, Prefix, START_CHARS, Token, TokenError, check as check_token, check_foreign, start_of};
pub use verdict::Verdict;

/// Re-exported so callers name the same `CryptoRng` trait.
pub use rand_core;
