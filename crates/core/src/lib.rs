//! keyward-core: every decision keyward makes, as pure functions.
//!
//! Tokens, IP rules, permissions, quotas, signatures, credential parsing,
//! verdicts and the snapshot format live here, free of I/O: time arrives as a
//! [`UnixMillis`] argument and randomness through a caller-supplied
//! [`rand_core::CryptoRng`]. The storage engine, the HTTP server and the WASM
//! verifier are thin adapters around this crate, so they all decide alike.
//!
//! The types a caller meets first are at the root; the rest is in the public
//! modules, by topic: [`limits`] (quotas and their counters), [`ip`],
//! [`permission`] and [`query`] (what a key may do), [`token`] and [`id`],
//! [`credentials`] and [`path`] (reading a request), [`signature`] (signed
//! requests and their nonces), [`policy`] (the stored records),
//! [`snapshot`], [`decision`] (the steps of a verification), [`local`] (the
//! verifier at the edge), [`time`] and [`hex`].
//!
//! ```
//! use keyward_core::ip::{IpRule, IpRules};
//! use keyward_core::limits::{RateLimit, UsageState};
//! use keyward_core::permission::Permission;
//! use keyward_core::{
//!     decide, Call, Code, KeyId, KeyPolicy, Limits, Prefix, Request, Token, ToolLookup, UnixMillis, Usage,
//!     Verdict, WorkspaceId, WorkspacePolicy,
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
//   decision  → code, limits, permission, policy, query, time, token, verdict
//   local     → code, decision, id, limits, policy, snapshot, token, verdict

// Leaves.
mod base62;
mod code;
pub mod credentials;
pub mod hex;
pub mod ip;
pub mod permission;
pub mod time;

// Identifiers, tokens, permission queries and quotas.
pub mod id;
pub mod limits;
pub mod path;
pub mod query;
pub mod token;

// Records and verdicts.
pub mod policy;
pub mod signature;
mod verdict;

// Snapshots and decisions.
pub mod decision;
pub mod snapshot;

// The self-contained verifier.
pub mod local;

pub use code::Code;
pub use decision::{Call, Request, ToolLookup, Usage, decide};
pub use id::{KeyId, WorkspaceId};
pub use limits::Limits;
pub use local::LocalVerifier;
pub use policy::{KeyPolicy, ToolPolicy, WorkspacePolicy};
pub use snapshot::Snapshot;
pub use time::UnixMillis;
pub use token::{KeyHash, Prefix, Token};
pub use verdict::Verdict;

/// Re-exported so callers name the same `CryptoRng` trait.
pub use rand_core;
