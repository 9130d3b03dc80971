//! keyward: an embedded API-key authentication engine.
//!
//! Issue API keys, keep only their SHA-256 hashes in one redb file, and
//! decide in well under a microsecond whether a request may pass: key valid,
//! not expired or revoked, client IP allowed, permitted for the tool it calls,
//! within its rate limit, cooldown, daily limit, concurrency and credits.
//! Every decision is made by [`keyward_core`]; this crate stores and indexes.
//!
//! ```
//! use keyward::{Actor, Engine, NewKey, NewWorkspace, Request};
//! use keyward_core::Code;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::open(dir.path().join("keys.redb")).unwrap();
//! let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap();
//!
//! let created = engine
//!     .create_key(ws.policy.id, NewKey { name: "ci".into(), ..NewKey::default() }, &Actor::Admin)
//!     .unwrap();
//! let token = created.token.expose(); // shown once, never stored
//!
//! assert_eq!(engine.verify(token, &Request::default()).code, Code::Valid);
//! engine.revoke_key(created.info.id, &Actor::Admin).unwrap();
//! assert_eq!(engine.verify(token, &Request::default()).code, Code::Revoked);
//! ```
//!
//! # Durability and the write-behind bound
//! Every change (create, update, revoke, rotate, delete, tools, workspaces)
//! is committed to disk, with its audit event, before the call returns, and is
//! visible to every verification that starts afterwards: the in-memory index
//! is updated in the same call, after the commit succeeded (a failed commit
//! changes nothing and returns [`Error::Storage`]); there is no cache TTL.
//! The lock order that keeps this free of deadlocks is documented in
//! `docs/storage.md`; [`Engine::health`] reports failing commits.
//!
//! Counters (rate, cooldown, daily, concurrency, credits), `last_used_at` and
//! usage totals live in memory and are written behind every flush interval
//! (by default 1 second), on [`Engine::flush`], [`Engine::close`] and drop. A
//! crash (power loss, SIGKILL) loses at most the counter changes of the last
//! interval: calls admitted in that window may be admitted again after a
//! restart. Nonce high-water marks are committed with the session they mint,
//! so a crash never lets a nonce be replayed. [`EngineBuilder::strict_credits`]
//! persists credit balances before `verify` returns, for keys that have them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Attacker input yields an error, never a panic (STYLE.md, "Errors"): outside
// tests, every unwrap, expect, panic or unchecked index is either rewritten or
// carries a scoped `allow` with a comment stating why it cannot fire.
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod audit;
mod bounds;
mod bulk;
mod clock;
mod engine;
mod error;
mod history;
mod index;
mod keys;
mod local;
mod model;
mod open;
mod rng;
mod rotation;
mod store;
mod validate;
mod verify;
mod workspaces;
mod writer;

pub use bulk::{BatchCreated, BatchKey, MAX_BATCH};
pub use clock::{Clock, CounterClock, ManualClock, SystemClock};
pub use engine::{AuditRetention, Engine, EngineBuilder, Health};
pub use error::{Error, Result};
pub use history::{Granularity, HistoryBucket};
pub use model::{
    Actor, AuditAction, AuditEvent, CreatedKey, CreditChange, DEFAULT_UPSTREAM_TIMEOUT_MS, ImportKey, KeyInfo, KeyTtl,
    KeyUpdate, KeyUsageReport, LimitSync, MAX_UPSTREAM_TIMEOUT_MS, NewKey, NewSigning, NewTool, NewWorkspace, Page,
    Session, SigningSecrets, Tool, ToolUpdate, Workspace, WorkspaceUpdate,
};
pub use store::copy::{CopyError, CopyProgress, CopyReport, CopyStage, StoreLocation, copy_store};
pub use validate::{
    MAX_EXTERNAL_ID_LEN, MAX_META_BYTES, MAX_PAGE, MAX_ROLE_LEN, MAX_ROLES, MAX_UPSTREAM_LEN, MAX_USER_ID_LEN,
};
pub use verify::{Checks, LeaseGuard, Request, SESSION_PREFIX, Verification};

pub use keyward_core;
