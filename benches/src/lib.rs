//! Shared set-up of keyward's criterion benches and of `keyward-loadgen`.
//!
//! Every figure in `docs/benchmarks.md` comes from this package: the benches
//! in `benches/` (run with `cargo bench -p keyward-benches`) and the load
//! generator in `src/bin/keyward-loadgen.rs`. The keys they verify are built
//! here, so the benches and the load generator measure the same kinds of key.
//! [`http`] holds what the load generator's HTTP scenario adds: a `keyward
//! serve` child process on loopback and a small keep-alive HTTP/1.1 client;
//! [`Fixture::redis`] puts the same fixture on a Redis store.
//!
//! ```
//! use keyward::Request;
//! use keyward_benches::{Fixture, client_ip, key_with_ip_rule_and_rate};
//! use keyward_core::Code;
//!
//! let fx = Fixture::open().unwrap();
//! let key = fx.key(key_with_ip_rule_and_rate("bench")).unwrap();
//! let req = Request { ip: Some(client_ip()), ..Request::default() };
//! assert_eq!(fx.engine.verify(key.token.expose(), &req).code, Code::Valid);
//! ```
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
#![deny(missing_docs)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use keyward::{Actor, CreatedKey, Engine, EngineBuilder, LimitSync, NewKey, NewWorkspace};
use keyward_core::ip::{IpRule, IpRules};
use keyward_core::limits::RateLimit;
use keyward_core::{Limits, Prefix, Token, WorkspaceId};
use tempfile::TempDir;

pub mod http;
pub mod store;

/// The allow rule of [`key_with_ip_rule_and_rate`].
pub const ALLOWED_CIDR: &str = "10.0.0.0/8";

/// A client address inside [`ALLOWED_CIDR`].
pub fn client_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
}

/// An engine on a fresh database, with one workspace: a redb file in a
/// temporary directory (removed when the fixture is dropped), or a Redis
/// store ([`Fixture::redis`]).
pub struct Fixture {
    /// The engine. Declared before the directory so it closes first.
    pub engine: Engine,
    /// The workspace keys are created in.
    pub ws: WorkspaceId,
    /// The redb file's directory; `None` on Redis.
    dir: Option<TempDir>,
}

impl Fixture {
    /// Default options, database in the system's temporary directory.
    pub fn open() -> keyward::Result<Self> {
        Self::with(Engine::builder(), None)
    }

    /// The given options, database in a temporary directory under `parent`
    /// (the system's temporary directory when `None`).
    pub fn with(builder: EngineBuilder, parent: Option<&Path>) -> keyward::Result<Self> {
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .map_err(|e| keyward::Error::Io(e.to_string()))?;
        let engine = builder.open(dir.path().join("bench.redb"))?;
        Self::on(engine, Some(dir))
    }

    /// The given options, on the Redis store at `url` (`redis://HOST:PORT/DB`),
    /// which should hold no keyward data yet. The workspace counts its limits
    /// exactly across nodes ([`LimitSync::Exact`]): every call of a limited
    /// key is charged in Redis. Nothing is removed from Redis on drop.
    pub fn redis(builder: EngineBuilder, url: &str) -> keyward::Result<Self> {
        let engine = builder.open_redis(url)?;
        Self::on(engine, None)
    }

    /// Closes the engine and opens its redb file again with `builder`;
    /// returns the fixture and how long the open took. Refused on Redis.
    pub fn reopen(self, builder: EngineBuilder) -> keyward::Result<(Self, std::time::Duration)> {
        let Fixture { engine, ws, dir } = self;
        let Some(dir) = dir else {
            return Err(keyward::Error::Io("only a redb fixture can be opened again".into()));
        };
        engine.close()?;
        // The file admits one engine: the old one must be gone first.
        drop(engine);
        let t0 = std::time::Instant::now();
        let engine = builder.open(dir.path().join("bench.redb"))?;
        let took = t0.elapsed();
        Ok((Self { engine, ws, dir: Some(dir) }, took))
    }

    fn on(engine: Engine, dir: Option<TempDir>) -> keyward::Result<Self> {
        let spec = NewWorkspace { limit_sync: LimitSync::Exact, ..NewWorkspace::named("bench") };
        let ws = engine.create_workspace(spec, &Actor::Admin)?.policy.id;
        Ok(Self { engine, ws, dir })
    }

    /// Creates a key in the fixture's workspace (one committed transaction).
    pub fn key(&self, spec: NewKey) -> keyward::Result<CreatedKey> {
        self.engine.create_key(self.ws, spec, &Actor::Admin)
    }

    /// Creates `n` keys from `spec(i)` and returns their tokens.
    pub fn tokens(&self, n: usize, spec: impl Fn(usize) -> NewKey) -> keyward::Result<Vec<String>> {
        (0..n).map(|i| self.key(spec(i)).map(|k| k.token.expose().to_owned())).collect()
    }

    /// Like [`Fixture::tokens_in`], [`keyward::MAX_BATCH`] keys per commit
    /// ([`Engine::create_keys`]) instead of one.
    pub fn tokens_bulk(
        &self,
        ws: WorkspaceId,
        n: usize,
        spec: impl Fn(usize) -> NewKey,
    ) -> keyward::Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        let mut from = 0;
        while from < n {
            let to = n.min(from + keyward::MAX_BATCH);
            let batch = (from..to).map(|i| keyward::BatchKey::New(spec(i))).collect();
            for k in self.engine.create_keys(ws, batch, &Actor::Admin)? {
                // Invariant: keys created here (not imported) always have a token.
                let token = k.token.ok_or_else(|| keyward::Error::Storage("a created key without a token".into()))?;
                out.push(token.expose().to_owned());
            }
            from = to;
        }
        Ok(out)
    }

    /// Creates a second workspace in the same engine, whose limits sync as
    /// `sync`.
    pub fn workspace_synced(&self, sync: LimitSync) -> keyward::Result<WorkspaceId> {
        let ws = NewWorkspace { limit_sync: sync, ..NewWorkspace::named("bench-synced") };
        Ok(self.engine.create_workspace(ws, &Actor::Admin)?.policy.id)
    }

    /// Like [`Fixture::tokens`], in workspace `ws`.
    pub fn tokens_in(&self, ws: WorkspaceId, n: usize, spec: impl Fn(usize) -> NewKey) -> keyward::Result<Vec<String>> {
        (0..n)
            .map(|i| self.engine.create_key(ws, spec(i), &Actor::Admin).map(|k| k.token.expose().to_owned()))
            .collect()
    }

    /// The directory holding the redb file; `None` on Redis.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }
}

/// One auto-applied rate limit of `limit` calls per `window_ms` (GCRA, so the
/// burst is `limit` too).
pub fn rate_limit(limit: u64, window_ms: u64) -> Limits {
    Limits {
        rates: vec![RateLimit { name: "default".into(), limit, window_ms, auto_apply: true }],
        ..Limits::default()
    }
}

/// A rate limit no benchmark can reach (10⁹ calls per second), so every call
/// runs the limiter and none is refused.
pub fn unreachable_rate_limit() -> Limits {
    rate_limit(1_000_000_000, 1_000)
}

/// A key with no IP rule and no limit: the shortest valid path (no lock).
pub fn plain_key(name: impl Into<String>) -> NewKey {
    NewKey { name: name.into(), limits: Some(Limits::default()), ..NewKey::default() }
}

/// A key with an allow rule for [`ALLOWED_CIDR`] and [`unreachable_rate_limit`]:
/// the full valid path (IP check, counters' lock, GCRA) without refusals.
pub fn key_with_ip_rule_and_rate(name: impl Into<String>) -> NewKey {
    // Invariant: ALLOWED_CIDR is a constant, valid CIDR.
    #[allow(clippy::expect_used)]
    let rule = IpRule::parse("allow", ALLOWED_CIDR).expect("ALLOWED_CIDR parses");
    NewKey {
        name: name.into(),
        ip_rules: IpRules(vec![rule]),
        limits: Some(unreachable_rate_limit()),
        ..NewKey::default()
    }
}

/// A key limited to `limit` calls per `window_ms`.
pub fn rate_limited_key(name: impl Into<String>, limit: u64, window_ms: u64) -> NewKey {
    NewKey { name: name.into(), limits: Some(rate_limit(limit, window_ms)), ..NewKey::default() }
}

/// A well-formed token (right prefix, valid checksum) that no database holds.
pub fn unknown_token() -> String {
    Token::generate(&Prefix::default_live(), &mut rand::rng()).expose().to_owned()
}

/// `token` with its last character changed, so its checksum fails.
pub fn bad_checksum(token: &str) -> String {
    let mut s = token.to_owned();
    let last = s.pop();
    s.push(if last == Some('A') { 'B' } else { 'A' });
    s
}
