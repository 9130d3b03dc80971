//! The hot path: verification, leases, signed authentication and sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use keyward_core::credentials::{Credential, SignedHeaders};
use keyward_core::decision::{KeyIndex, admit, decide_without_workspace};
use keyward_core::limits::{Cost, LeaseId, LeaseScope, RateReport, Scope, UsageState, charge, peek, rate_report};
use keyward_core::query::PermissionQuery;
use keyward_core::{
    Call, Code, KeyHash, KeyId, Limits, Prefix, Request as CoreRequest, Token, ToolLookup, UnixMillis, Usage, Verdict,
    WorkspaceId, decide, signature, token,
};

use crate::audit::audit;
use crate::engine::{Engine, Inner, KeyCounters, LiveKey};
use crate::error::{Error, Result};
use crate::local::Admitted;
use crate::model::LimitSync;
use crate::model::{Actor, AuditAction, KeyInfo, Session, SessionRecord};
use crate::rng::os_rng;
use crate::store::{Change, Charged};
use crate::validate::derive_api_secret;
use crate::writer::LeafGuard;

/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "kw_session";

/// What a request asks for, besides its credential.
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    /// Client address. With IP rules in place an unknown address is refused.
    pub ip: Option<IpAddr>,
    /// Tool being called.
    pub tool: Option<&'a str>,
    /// Permissions required, all of them.
    pub permissions: &'a [&'a str],
    /// What the call costs. By default 1 credit.
    pub cost: Cost<'a>,
}

/// What [`Engine::verify_with`] checks beyond a [`Request`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Checks<'a> {
    /// Only keys of this workspace are found: a key of another one verifies
    /// as `NOT_FOUND` and is neither charged nor described. By default any.
    pub workspace: Option<WorkspaceId>,
    /// A query the key's permissions must satisfy, checked at the
    /// permissions step (`INSUFFICIENT_PERMISSIONS`). By default none.
    pub permission_query: Option<&'a PermissionQuery>,
}

/// A verdict with the key's details, for callers that show them.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The verdict.
    pub verdict: Verdict,
    /// The key, once found.
    pub key: Option<KeyInfo>,
    /// The key's rate limits the call applied (auto-applied, named and
    /// ad-hoc), with their figures after it. Filled by
    /// [`Engine::verify_with`] only.
    pub rates: Vec<RateReport>,
}

/// Concurrency leases held by a verified call; released on drop.
#[must_use = "dropping the guard releases the leases at once"]
pub struct LeaseGuard {
    engine: Engine,
    key: KeyId,
    tool: Option<String>,
    /// Holds the leases to release (`verdict.leases`).
    verdict: Verdict,
}

impl LeaseGuard {
    /// The verdict of the call that took the leases.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Releases now (same as dropping).
    pub fn release(self) {}
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.verdict.leases.is_empty() {
            self.engine.release(self.key, self.tool.as_deref(), &self.verdict.leases);
        }
    }
}

/// The live keys by hash. A key is cloned out of the map: no map guard is
/// held while deciding (lock order, see `writer`).
impl KeyIndex for Inner {
    type Key = Arc<LiveKey>;

    fn by_hash(&self, hash: &KeyHash) -> Option<Arc<LiveKey>> {
        self.keys.by_hash(&hash.0)
    }

    fn imported(&self, key: &Arc<LiveKey>) -> bool {
        key.policy().imported
    }

    fn any_imported(&self) -> bool {
        self.any_imported.load(Ordering::Acquire)
    }
}

impl Inner {
    /// Format check and lookup of an API key: [`keyward_core::decision::lookup`].
    fn lookup(&self, raw: &str) -> Result<Arc<LiveKey>, Code> {
        keyward_core::decision::lookup(self, raw)
    }

    /// [`Inner::lookup`] of a token sent as a bearer credential (not a
    /// signed request): a key with a signing identity is refused as
    /// `INVALID_SIGNATURE` unless it was made a bearer key too. The key is
    /// returned with the refusal so the verdict can name it.
    fn lookup_bearer(&self, raw: &str) -> Result<Arc<LiveKey>, (Code, Option<Arc<LiveKey>>)> {
        let live = self.lookup(raw).map_err(|code| (code, None))?;
        if live.is_bearer() { Ok(live) } else { Err((Code::InvalidSignature, Some(live))) }
    }

    fn lookup_session(&self, raw: &str, now: UnixMillis) -> Result<Arc<LiveKey>, Code> {
        token::check(raw).map_err(|_| Code::Malformed)?;
        let Some(session) = self.sessions.get(&KeyHash::of(raw).0) else {
            return Err(Code::NotFound);
        };
        if now >= session.expires_at {
            return Err(Code::Expired);
        }
        let key_id = session.key_id;
        drop(session);
        self.keys.get(&key_id).ok_or(Code::NotFound)
    }

    /// Decides for a found key into `v` (every field set). With `report`,
    /// also lists the key's rate limits the call applied, from the counters
    /// right after the decision.
    fn decide_for(
        &self,
        v: &mut Verdict,
        live: &Arc<LiveKey>,
        req: &Request<'_>,
        now: UnixMillis,
        query: Option<&PermissionQuery>,
        report: Option<&mut Vec<RateReport>>,
    ) {
        let policy = live.policy();
        if self.shared && self.reach.stale.load(Ordering::Relaxed) {
            // The shared store has not answered for the stale window: a
            // revocation made on another node may have been missed.
            store_unavailable(v, policy);
            return;
        }
        let Some(ws) = live.workspace.as_ref().map(|slot| slot.current.load()) else {
            decide_without_workspace(v, policy);
            return;
        };
        let tool = req.tool.map(|name| ws.tools.get(name));
        let lookup = match tool {
            None => ToolLookup::NotRequested,
            Some(None) => ToolLookup::Unknown,
            Some(Some(t)) => ToolLookup::Found(&t.policy),
        };
        let core_req = CoreRequest {
            ip: req.ip,
            tool: req.tool,
            permissions: req.permissions,
            permission_query: query,
            cost: req.cost.clone(),
            now,
        };
        let tool_limited = matches!(lookup, ToolLookup::Found(t) if !t.limits.is_empty());
        // A call may bring an ad-hoc rate limit, kept in the key's counters.
        let ad_hoc = req.cost.rates.iter().any(|r| r.limit.is_some() && r.window_ms.is_some());
        let call = Call { key: policy, workspace: &ws.ws.policy, tool: lookup, request: &core_req };
        if !live.has_key_limits && !tool_limited && !ad_hoc {
            // No limit anywhere: nothing to charge, so no lock.
            let mut none = UsageState::default();
            decide(v, &call, Usage { key: &mut none, tool: None, key_tool: None });
        } else {
            if self.shared && !Inner::counts_locally(live, ws.ws.limit_sync) {
                // Other nodes charge these counters too: the store decides.
                self.decide_shared(v, live, &call, report);
            } else if self.shared {
                // Local mode: this node's copy decides; the call is replayed
                // on the store's counters at the next reconciliation.
                if let LimitSync::Local { ms } = ws.ws.limit_sync {
                    self.refresh_local(live, ms);
                }
                let mut c = live.usage.lock();
                decide_on(v, &call, &mut c);
                if v.is_valid() {
                    c.pending.push(Admitted::of(req, now));
                }
                report_rates(&call, v, &c, report);
            } else if self.opts.strict_credits && policy.limits.credits.is_some() && req.cost.credits > 0 {
                // Strict mode commits the balance of a call that spends
                // credits; a call that spends none (an admin caller's check)
                // changes no balance and is written behind like any rate
                // counter.
                self.decide_strict(v, live, &call, report);
            } else {
                let mut c = live.usage.lock();
                decide_on(v, &call, &mut c);
                report_rates(&call, v, &c, report);
            }
        }
        if v.is_valid() {
            if live.usage.last_used.load(Ordering::Relaxed) != now.get() {
                live.usage.last_used.store(now.get(), Ordering::Release);
            }
            live.usage.valid.fetch_add(1, Ordering::Relaxed);
        } else {
            live.usage.refused.fetch_add(1, Ordering::Relaxed);
        }
        live.usage.mark_dirty();
        live.activity().record(now, v.code);
        self.touched(live);
    }

    /// Strict mode: the charge is decided on a copy of the counters and
    /// published only once the balance is durable. The key's gate orders
    /// the charges of these counters (level 1 of the lock order), so no
    /// other charge lands between the copy and the publish; leases released
    /// meanwhile stay released.
    fn decide_strict(&self, v: &mut Verdict, live: &LiveKey, call: &Call<'_>, report: Option<&mut Vec<RateReport>>) {
        let _gate = live.usage.gate();
        let before = live.usage.lock().clone();
        let mut next = before.clone();
        decide_on(v, call, &mut next);
        report_rates(call, v, &next, report);
        if !v.is_valid() {
            // A refusal charges nothing: the copy is dropped.
            return;
        }
        let record = live.usage.record_with(&next);
        let committed = self.write(|batch| {
            batch.push(Change::Usage(live.usage.owner(), record));
            Ok(|| {
                let mut c = live.usage.lock();
                keep_releases(&mut next, &before, &c);
                *c = next;
            })
        });
        if committed.is_err() {
            // Not durable: nothing was charged; refuse rather than hand out
            // an unrecorded credit.
            v.code = Code::StoreUnavailable;
            v.retry_after_ms = Some(STORE_RETRY_MS);
            v.leases.clear();
        }
    }

    /// A shared store: the call is decided with keyward-core on this node's
    /// copy of the counters, and the store takes the result only if no
    /// other node changed them since that copy was read (one atomic step,
    /// [`Store::charge`](crate::store::Store::charge)); a refusal is
    /// confirmed the same way. If they changed, the store hands back the
    /// counters as they are, and the call is decided again on those. The
    /// key's gate (level 1 of the lock order) keeps this node's calls of
    /// one key in line, so each attempt that loses, loses to another node.
    fn decide_shared(&self, v: &mut Verdict, live: &LiveKey, call: &Call<'_>, report: Option<&mut Vec<RateReport>>) {
        let cell = &live.usage;
        let _gate = cell.gate();
        let owner = cell.owner();
        // The store is known not to answer: do not wait for it.
        let mut attempts = if self.reach.down.load(Ordering::Acquire) { 0 } else { SHARED_ATTEMPTS };
        let mut held = HeldWait::default();
        while attempts > 0 {
            attempts -= 1;
            let seen = cell.sync().version.load(Ordering::Acquire);
            let mut next = cell.lock().clone();
            decide_on(v, call, &mut next);
            let record = v.is_valid().then(|| cell.record_with(&next));
            match self.writer.store().charge(owner, seen, record.as_ref()) {
                Ok(Charged::Done(version)) => {
                    report_rates(call, v, &next, report);
                    if v.is_valid() {
                        *cell.lock() = next;
                    }
                    cell.sync().version.store(version, Ordering::Release);
                    return;
                }
                Ok(Charged::Moved(version, rec)) => cell.adopt(rec, version),
                // An admin change of these counters is landing: wait for it.
                Ok(Charged::Held) if held.wait() => attempts += 1,
                Ok(Charged::Held) | Err(_) => break,
            }
        }
        if self.opts.fail_open_limits {
            // Chosen by the operator: this node's own counters decide.
            let mut c = cell.lock();
            decide_on(v, call, &mut c);
            report_rates(call, v, &c, report);
            return;
        }
        // The store could not be reached (or never settled): nothing was
        // charged; refuse rather than admit a call no node counted.
        store_unavailable(v, call.key);
    }

    /// Reads a cell's counters from a shared store if they changed there
    /// since this node last did. Call it under the cell's gate.
    pub(crate) fn sync_cell(&self, cell: &crate::engine::UsageCell) -> Result<()> {
        if !self.shared {
            return Ok(());
        }
        let owner = cell.owner();
        for _ in 0..SHARED_ATTEMPTS {
            let seen = cell.sync().version.load(Ordering::Acquire);
            match self.writer.store().charge(owner, seen, None)? {
                // A read is never held.
                Charged::Done(_) | Charged::Held => return Ok(()),
                Charged::Moved(version, rec) => cell.adopt(rec, version),
            }
        }
        Err(Error::Conflict(MOVED.into()))
    }

    /// On a shared store, reads a limited key's counters there before they
    /// are shown (they may have changed on another node).
    pub(crate) fn read_counters(&self, live: &LiveKey) -> Result<()> {
        if self.shared && live.has_key_limits {
            let _gate = live.usage.gate();
            self.sync_cell(&live.usage)?;
        }
        if self.shared {
            // Other nodes' calls count too: the latest any node recorded.
            if let Some(at) = self.writer.store().last_used(live.policy().id)? {
                live.activity().last_used.fetch_max(at, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Runs an admin change of a key's counters (`once`: read, plan,
    /// commit) until it lands: on a shared store the change is committed
    /// only if no other node charged the counters since they were read
    /// ([`Inner::counters_change`]), and is planned again on them if one did.
    pub(crate) fn retry_moved<T>(
        &self,
        cell: Option<&crate::engine::UsageCell>,
        mut once: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        for _ in 0..SHARED_ATTEMPTS {
            let held = cell.filter(|_| self.shared);
            if let Some(cell) = held {
                // Other nodes' charges wait while this change lands (which
                // lifts the hold), so a stream of them cannot starve it.
                self.writer.store().hold(cell.owner(), HOLD_MS)?;
                self.sync_cell(cell)?;
            }
            match once() {
                Err(Error::Conflict(m)) if self.shared && m == MOVED => {}
                Ok(v) => return Ok(v),
                Err(e) => {
                    // Refused, or not stored: nothing lands, so lift the hold.
                    if let Some(cell) = held {
                        let _ = self.writer.store().hold(cell.owner(), 0);
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::Conflict(MOVED.into()))
    }

    /// The change that stores `record` as the counters of `cell`: on a
    /// shared store, only if they are still at the version this node read
    /// (call [`Inner::sync_cell`] under the gate first; after the commit
    /// the cell's version is unknown until the next charge reads it).
    pub(crate) fn counters_change(&self, cell: &crate::engine::UsageCell, record: crate::model::UsageRecord) -> Change {
        if self.shared {
            let seen = cell.sync().version.swap(crate::store::UNREAD, Ordering::AcqRel);
            Change::UsageAt(cell.owner(), seen, record)
        } else {
            Change::Usage(cell.owner(), record)
        }
    }

    /// A lookup's outcome decided, with the key's details; with `rates`,
    /// also the rate limits the call applied.
    fn verification(
        &self,
        found: Result<Arc<LiveKey>, Code>,
        req: &Request<'_>,
        now: UnixMillis,
        query: Option<&PermissionQuery>,
        rates: bool,
    ) -> Verification {
        let mut verdict = Verdict::bare(Code::Valid);
        match found {
            Ok(live) => {
                let mut applied = Vec::new();
                self.decide_for(&mut verdict, &live, req, now, query, rates.then_some(&mut applied));
                Verification { verdict, key: Some(self.key_info(&live, now)), rates: applied }
            }
            Err(code) => {
                verdict.code = code;
                Verification { verdict, key: None, rates: Vec::new() }
            }
        }
    }
}

/// A refusal before any decision, naming the key when it is known.
fn refused(code: Code, live: Option<&LiveKey>) -> Verdict {
    let mut v = Verdict::bare(code);
    if let Some(live) = live {
        v.key_id = Some(live.policy().id);
        v.workspace_id = Some(live.policy().workspace);
    }
    v
}

/// How long to wait before retrying a call the store could not make durable.
const STORE_RETRY_MS: u64 = 1_000;

/// Why a change of counters on a shared store did not land: another node
/// charged them first (the change is planned again).
pub(crate) const MOVED: &str = "the key's counters changed on another node; try again";

/// How long an admin change holds a key's counters on a shared store at
/// most (it lifts the hold when it lands).
const HOLD_MS: u64 = 250;

/// How long a charge waits, in all, for held counters.
const HELD_WAIT: std::time::Duration = std::time::Duration::from_millis(400);

/// A charge's wait for counters held by an admin change.
#[derive(Default)]
struct HeldWait(Option<std::time::Instant>);

impl HeldWait {
    /// Waits a little; false once the charge has waited [`HELD_WAIT`].
    fn wait(&mut self) -> bool {
        let since = *self.0.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= HELD_WAIT {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
        true
    }
}

/// Attempts of one charge on a shared store before it is refused. Each
/// failed attempt means another node's charge landed.
const SHARED_ATTEMPTS: usize = 64;

/// Refuses a found key's call: the store cannot decide it now.
fn store_unavailable(v: &mut Verdict, policy: &keyward_core::KeyPolicy) {
    *v = Verdict::bare(Code::StoreUnavailable);
    v.key_id = Some(policy.id);
    v.workspace_id = Some(policy.workspace);
    v.retry_after_ms = Some(STORE_RETRY_MS);
}

/// Decides a call of a key with limits into `v` on counters `c` (this
/// node's, a copy of them, or the shared store's), charging them if the call
/// is admitted.
pub(crate) fn decide_on(v: &mut Verdict, call: &Call<'_>, c: &mut KeyCounters) {
    let KeyCounters { key, tools, .. } = c;
    decide(v, call, Usage::of(call, key, |name| tool_counters(tools, name)));
}

/// The counters kept for tool `name` (under the tool's limits, then the
/// key×tool limits), made on the tool's first call. The name is copied
/// only then: a call of a tool that has counters allocates nothing.
// The entry is inserted just above when it is missing, so `get_mut` finds it.
#[allow(clippy::expect_used)]
fn tool_counters<'a>(
    tools: &'a mut HashMap<String, (UsageState, UsageState)>,
    name: &str,
) -> &'a mut (UsageState, UsageState) {
    if !tools.contains_key(name) {
        tools.insert(name.to_owned(), Default::default());
    }
    tools.get_mut(name).expect("inserted above when missing")
}

/// Into `out` (when asked for): the key's rate limits `call` applied, from
/// counters `c` right after verdict `v`.
fn report_rates(call: &Call<'_>, v: &Verdict, c: &KeyCounters, out: Option<&mut Vec<RateReport>>) {
    if let Some(out) = out {
        let limited = v.code == Code::RateLimited;
        let req = call.request;
        *out = rate_report(&call.key.limits, &c.key, req.now, &req.cost, true, limited);
    }
}

/// Releases `leases` in counters `c`. Returns whether all were held.
fn release_in(c: &mut KeyCounters, tool: Option<&str>, leases: &[(LeaseScope, LeaseId)]) -> bool {
    let mut all = true;
    for &(scope, id) in leases {
        let (t, kt) = match tool.and_then(|n| c.tools.get_mut(n)) {
            Some((t, kt)) => (Some(t), Some(kt)),
            None => (None, None),
        };
        all &= keyward_core::decision::release(Usage { key: &mut c.key, tool: t, key_tool: kt }, scope, id);
    }
    all
}

/// Leases held in counters `c`, in every scope.
fn lease_count(c: &KeyCounters) -> usize {
    c.key.leases.len() + c.tools.values().map(|(t, kt)| t.leases.len() + kt.leases.len()).sum::<usize>()
}

impl Inner {
    /// [`Engine::release`] on a shared store: the leases are released in
    /// the store's counters, whichever node took them. A release the store
    /// cannot record is reported as not held (the lease then frees itself
    /// when its TTL passes).
    fn release_shared(&self, live: &LiveKey, tool: Option<&str>, leases: &[(LeaseScope, LeaseId)]) -> bool {
        let cell = &live.usage;
        let _gate = cell.gate();
        let owner = cell.owner();
        let mut held = HeldWait::default();
        let mut attempts = SHARED_ATTEMPTS;
        while attempts > 0 {
            attempts -= 1;
            let seen = cell.sync().version.load(Ordering::Acquire);
            let mut next = cell.lock().clone();
            let before = lease_count(&next);
            let all = release_in(&mut next, tool, leases);
            let released = lease_count(&next) != before;
            let record = released.then(|| cell.record_with(&next));
            match self.writer.store().charge(owner, seen, record.as_ref()) {
                Ok(Charged::Done(version)) => {
                    if released {
                        *cell.lock() = next;
                    }
                    cell.sync().version.store(version, Ordering::Release);
                    return all;
                }
                Ok(Charged::Moved(version, rec)) => cell.adopt(rec, version),
                Ok(Charged::Held) if held.wait() => attempts += 1,
                Ok(Charged::Held) | Err(_) => return false,
            }
        }
        false
    }
}

/// Leases of a call, by the counters they were taken from.
type Leases = Vec<(LeaseScope, LeaseId)>;

/// The parts of an id made by [`Engine::hold`]: `{key}.{leases}.{tool}`,
/// leases as `k3-t7-kt9` (scope, then id).
fn parse_held(text: &str) -> Option<(KeyId, Leases, Option<&str>)> {
    let mut parts = text.splitn(3, '.');
    let key = KeyId::parse(parts.next()?).ok()?;
    let mut leases = Vec::new();
    for one in parts.next()?.split('-') {
        let (scope, n) = if let Some(n) = one.strip_prefix("kt") {
            (LeaseScope::KeyTool, n)
        } else if let Some(n) = one.strip_prefix('k') {
            (LeaseScope::Key, n)
        } else {
            (LeaseScope::Tool, one.strip_prefix('t')?)
        };
        leases.push((scope, LeaseId(n.parse().ok()?)));
    }
    let tool = parts.next()?;
    if leases.is_empty() || leases.len() > 3 {
        return None;
    }
    Some((key, leases, (!tool.is_empty()).then_some(tool)))
}

/// Drops from `next` (planned from `before`) the leases released since, as
/// `now` shows.
fn keep_releases(next: &mut KeyCounters, before: &KeyCounters, now: &KeyCounters) {
    fn one(next: &mut UsageState, before: &UsageState, now: &UsageState) {
        next.leases.retain(|l| now.leases.iter().any(|n| n.id == l.id) || !before.leases.iter().any(|b| b.id == l.id));
    }
    one(&mut next.key, &before.key, &now.key);
    for (name, (t, kt)) in &mut next.tools {
        if let (Some((bt, bkt)), Some((nt, nkt))) = (before.tools.get(name), now.tools.get(name)) {
            one(t, bt, nt);
            one(kt, bkt, nkt);
        }
    }
}

impl Engine {
    /// Verifies an API key for a request. Never fails: every problem is a
    /// verdict code (SPEC §4).
    pub fn verify(&self, token: &str, req: &Request<'_>) -> Verdict {
        let inner = &self.inner;
        // The verdict is decided where it is returned: no copy of it moves
        // up the calls (it is most of what a valid verification writes).
        match inner.lookup_bearer(token) {
            Ok(live) => {
                let mut v = Verdict::bare(Code::Valid);
                inner.decide_for(&mut v, &live, req, inner.now(), None, None);
                v
            }
            Err((code, live)) => refused(code, live.as_deref()),
        }
    }

    /// Verifies a session token (from `aptoken`) like a key: the session must
    /// exist and be unexpired, then its key is checked as usual.
    pub fn verify_session(&self, token: &str, req: &Request<'_>) -> Verdict {
        let inner = &self.inner;
        let now = inner.now();
        let mut v = Verdict::bare(Code::Valid);
        match inner.lookup_session(token, now) {
            Ok(live) => inner.decide_for(&mut v, &live, req, now, None, None),
            Err(code) => v.code = code,
        }
        v
    }

    /// Verifies whatever credential a request carried. The signed header set
    /// is only for [`Engine::authenticate_user`] and is refused here as `MALFORMED`.
    pub fn verify_credential(&self, credential: &Credential, req: &Request<'_>) -> Verdict {
        match credential {
            Credential::ApiKey(k) => self.verify(k, req),
            Credential::Session(s) => self.verify_session(s, req),
            _ => Verdict::bare(Code::Malformed),
        }
    }

    /// Like [`Engine::verify_credential`], also returning the key's details.
    pub fn verify_detailed(&self, credential: &Credential, req: &Request<'_>) -> Verification {
        let inner = &self.inner;
        let now = inner.now();
        let found = match credential {
            Credential::ApiKey(k) => inner.lookup_bearer(k).map_err(|(code, _)| code),
            Credential::Session(s) => inner.lookup_session(s, now),
            _ => Err(Code::Malformed),
        };
        inner.verification(found, req, now, None, false)
    }

    /// Verifies an API key with extra [`Checks`], returning the key's details
    /// and every rate limit the call applied (Unkey's `verifyKey`).
    ///
    /// Leases the call took are not held: release them with
    /// [`Engine::release`] if the key has a concurrency limit.
    pub fn verify_with(&self, token: &str, req: &Request<'_>, checks: &Checks<'_>) -> Verification {
        let inner = &self.inner;
        let now = inner.now();
        // A key of another workspace is not found: neither charged nor described.
        let ours = |live: &LiveKey| checks.workspace.is_none_or(|w| live.policy().workspace == w);
        let found = match inner.lookup_bearer(token) {
            Ok(live) if ours(&live) => Ok(live),
            Err((code, Some(live))) if ours(&live) => Err(code),
            Ok(_) | Err((_, Some(_))) => Err(Code::NotFound),
            Err((code, None)) => Err(code),
        };
        inner.verification(found, req, now, checks.permission_query, true)
    }

    /// The key a token belongs to, without verifying or charging anything.
    /// `None` for a malformed or unknown token.
    pub fn find_key(&self, token: &str) -> Option<KeyInfo> {
        let inner = &self.inner;
        let live = inner.lookup(token).ok()?;
        Some(inner.key_info(&live, inner.now()))
    }

    /// Verifies and holds the concurrency leases the call took until the
    /// returned guard is dropped (or the lease TTL passes). A refusal is `Err`.
    pub fn acquire(&self, credential: &Credential, req: &Request<'_>) -> Result<LeaseGuard, Box<Verdict>> {
        let verdict = self.verify_credential(credential, req);
        if !verdict.is_valid() {
            return Err(Box::new(verdict));
        }
        let key = verdict.key_id.ok_or_else(|| Box::new(verdict.clone()))?;
        Ok(LeaseGuard { engine: self.clone(), key, tool: req.tool.map(str::to_owned), verdict })
    }

    /// Releases leases taken by a verification. Returns whether all were held.
    pub fn release(&self, key: KeyId, tool: Option<&str>, leases: &[(LeaseScope, LeaseId)]) -> bool {
        let Ok(live) = self.inner.key(key) else { return false };
        if self.inner.shared {
            return self.inner.release_shared(&live, tool, leases);
        }
        let all = release_in(&mut live.usage.lock(), tool, leases);
        live.usage.mark_dirty();
        self.inner.touched(&live);
        all
    }

    /// Keeps the concurrency leases of a valid verification past the call
    /// and names them: the id [`Engine::release_held`] takes. `None` when
    /// the call took no lease (no concurrency limit applies).
    ///
    /// The id says which key, tool and leases it holds; the leases themselves
    /// live in the key's counters, so on a shared store any node releases
    /// them, and they free themselves when their TTL passes as any lease does.
    pub fn hold(&self, verdict: &Verdict, tool: Option<&str>) -> Option<String> {
        let key = verdict.key_id?;
        if verdict.leases.is_empty() {
            return None;
        }
        let leases: Vec<String> = verdict
            .leases
            .iter()
            .map(|(scope, id)| {
                let s = match scope {
                    LeaseScope::Key => "k",
                    LeaseScope::Tool => "t",
                    LeaseScope::KeyTool => "kt",
                };
                format!("{s}{}", id.0)
            })
            .collect();
        Some(format!("{key}.{}.{}", leases.join("-"), tool.unwrap_or("")))
    }

    /// Releases leases kept by [`Engine::hold`] for a key of workspace `ws`.
    /// `NotFound` when the id is not one, names another workspace's key, or
    /// its leases were released already or expired. On a shared store this
    /// is a round trip: call it off async workers.
    pub fn release_held(&self, ws: WorkspaceId, lease_id: &str) -> Result<()> {
        let gone = || Error::not_found("lease", lease_id.chars().take(200).collect::<String>());
        let (key, leases, tool) = parse_held(lease_id).ok_or_else(gone)?;
        match self.inner.key(key) {
            Ok(live) if live.policy().workspace == ws => {}
            _ => return Err(gone()),
        }
        if self.release(key, tool, &leases) { Ok(()) } else { Err(gone()) }
    }

    /// The signed scheme (SPEC §5): checks the key, the user id, the HMAC and
    /// the nonce, then mints a session. The key's new nonce history and the
    /// session are committed together before either is used; a login the
    /// store cannot record is refused as `STORE_UNAVAILABLE` and changes
    /// nothing.
    pub fn authenticate_user(&self, headers: &SignedHeaders, ip: Option<IpAddr>) -> Result<Session, Box<Verdict>> {
        let inner = &self.inner;
        let now = inner.now();
        let live = inner.lookup(&headers.api_key).map_err(|code| Box::new(Verdict::bare(code)))?;
        let policy = live.policy();
        let mut base = Verdict::bare(Code::Valid);
        base.key_id = Some(policy.id);
        base.workspace_id = Some(policy.workspace);
        let fail = |code: Code| {
            let mut v = Box::new(base.clone());
            v.code = code;
            v
        };
        let Some(ws) = live.workspace.as_ref().map(|slot| slot.current.load_full()) else {
            return Err(fail(Code::PlanInactive));
        };
        admit(policy, &ws.ws.policy, ip, now).map_err(fail)?;
        let details = live.details();
        let (Some(signing), Some(master)) = (&details.signing, &inner.opts.master_key) else {
            return Err(fail(Code::InvalidSignature));
        };
        // Constant-time comparison is not needed for the user id: it is not secret.
        if signing.user_id != headers.user_id {
            return Err(fail(Code::InvalidSignature));
        }
        let secret = derive_api_secret(master, policy.id);
        signature::verify(&secret, &headers.nonce, &headers.user_id, &headers.api_key, &headers.signature)
            .map_err(fail)?;

        // Level 1 of the lock order: this key's logins (and those of a key
        // sharing its counters) run one at a time from the nonce check to
        // the publish, so two logins with one nonce cannot both pass.
        let _gate = live.usage.gate();
        let Some(history) = &live.nonce else {
            return Err(fail(Code::InvalidSignature));
        };
        let mut nonce = LeafGuard::lock(history).clone();
        nonce.check(signing.nonce_policy, &headers.nonce, now).map_err(fail)?;
        let mint_limits = Limits { rates: vec![inner.opts.session_mint_limit.clone()], ..Limits::default() };
        let cost = Cost::default();
        let mut mint = live.usage.lock().mint.clone();
        if let Err(r) = peek(&mint_limits, &mint, now, &cost) {
            let mut v = fail(Code::RateLimited);
            v.retry_after_ms = r.retry_after_ms;
            return Err(v);
        }
        nonce.accept(signing.nonce_policy, &headers.nonce, now);
        charge(&mut [Scope { limits: &mint_limits, state: &mut mint }], now, &cost).map_err(|r| fail(r.code))?;

        let prefix = Prefix::parse(SESSION_PREFIX).map_err(|_| fail(Code::Malformed))?;
        let token = Token::generate(&prefix, &mut os_rng());
        let hash = token.hash();
        let id = policy.id;
        let expires_at = now.plus(inner.opts.session_ttl_ms);
        let record = SessionRecord { key_id: id, created_at: now, expires_at };
        let minted = inner.write(|batch| {
            // Read again under the writer: a revoke, disable or delete that
            // landed since the checks above refuses the login.
            let current = inner.key(id).map_err(|_| Error::Refused(Code::NotFound))?;
            let ws = current.workspace.as_ref().map(|slot| slot.current.load_full());
            let ws = ws.ok_or(Error::Refused(Code::PlanInactive))?;
            admit(current.policy(), &ws.ws.policy, ip, now).map_err(Error::Refused)?;
            batch.push(Change::Session(hash.0, record.clone()));
            batch.push(Change::Nonce(id, nonce.clone()));
            Ok(move || {
                if let Some(history) = &current.nonce {
                    *LeafGuard::lock(history) = nonce;
                }
                current.usage.lock().mint = mint;
                current.usage.mark_dirty();
                inner.touched(&current);
                inner.sessions.insert(hash.0, record);
            })
        });
        match minted {
            Ok(()) => {}
            Err(Error::Refused(code)) => return Err(fail(code)),
            Err(_) => {
                let mut v = fail(Code::StoreUnavailable);
                v.retry_after_ms = Some(STORE_RETRY_MS);
                return Err(v);
            }
        }
        Ok(Session { token, key_id: id, user_id: signing.user_id.clone(), expires_at })
    }

    /// Ends a session: its token is refused from now on. Returns whether it existed.
    pub fn end_session(&self, token: &str) -> Result<bool> {
        if keyward_core::token::check(token).is_err() {
            return Ok(false);
        }
        let hash = KeyHash::of(token).0;
        let inner = &self.inner;
        let now = inner.now();
        inner.write(|batch| {
            let ended = inner.sessions.get(&hash).map(|s| s.key_id);
            if let Some(key_id) = ended {
                let ws = inner.key(key_id).ok().map(|k| k.policy().workspace);
                batch.push(Change::SessionDeleted(hash));
                audit(batch, now, &Actor::Key(key_id), AuditAction::SessionEnded, ws, key_id.to_string(), "");
            }
            Ok(move || {
                if ended.is_some() {
                    inner.sessions.remove(&hash);
                }
                ended.is_some()
            })
        })
    }

    /// Removes expired sessions from memory and disk. Returns how many. The
    /// engine does this itself when it opens and every session purge
    /// interval ([`EngineBuilder::session_purge_interval`](crate::EngineBuilder::session_purge_interval)).
    pub fn purge_expired_sessions(&self) -> Result<usize> {
        self.inner.purge_expired_sessions()
    }
}

impl Inner {
    pub(crate) fn purge_expired_sessions(&self) -> Result<usize> {
        let now = self.now();
        self.write(|batch| {
            let expired: Vec<[u8; 32]> =
                self.sessions.iter().filter(|s| now >= s.value().expires_at).map(|s| *s.key()).collect();
            for h in &expired {
                batch.push(Change::SessionDeleted(*h));
            }
            Ok(move || {
                for h in &expired {
                    self.sessions.remove(h);
                }
                expired.len()
            })
        })
    }
}
