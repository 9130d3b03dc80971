//! Opening the store, the in-memory index, and the write-behind flusher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use dashmap::DashMap;
use keyward_core::limits::{RateLimit, UsageState};
use keyward_core::signature::NonceState;
use keyward_core::{KeyId, KeyPolicy, UnixMillis, WorkspaceId};
use redb::StorageBackend;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, CounterClock};
use crate::error::{Error, Result};
use crate::history::{self, Activity};
use crate::index::Keys;
use crate::model::{KeyRecord, SessionRecord, SigningRecord, ToolRecord, UsageRecord, Workspace};
use crate::store::redb::RedbStore;
use crate::store::{AuditKeep, Batch, Change, Followed, Loaded, Store, UNREAD, UsageStats};
use crate::writer::{LeafGuard, Writer};

/// Hasher for maps keyed by SHA-256 output: the bytes are already uniform and
/// not chosen by an attacker (finding a token with a chosen hash prefix is a
/// preimage attack), so the first eight bytes are a perfect hash.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Arrays hash as their bytes; fold whatever arrives (the length prefix
        // of slices included) so this stays correct for any key type.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (w, b) in word.iter_mut().zip(chunk) {
                *w = *b;
            }
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

pub(crate) type DigestMap<V> = DashMap<[u8; 32], V, BuildHasherDefault<DigestHasher>>;

/// Counters and statistics of one key (shared by a rotated key and its
/// successor).
///
/// Every key has one, but most of it is allocated only when used: the
/// limits' counters ([`KeyCounters`]) when a call is first charged (a key
/// with limits of its own, a limited tool, an ad-hoc rate, a signed login),
/// and the shared store's bookkeeping ([`SyncState`]) on a shared store. A
/// key without limits carries the statistics every verification writes,
/// the owner and the gate.
pub(crate) struct UsageCell {
    /// Last successful verification, Unix ms; 0 = never.
    pub last_used: AtomicU64,
    pub valid: AtomicU64,
    pub refused: AtomicU64,
    /// Set when something changed since the last flush.
    pub dirty: AtomicBool,
    /// The usage history and last use of the key that made this cell (see
    /// [`LiveKey::activity`]): verification writes it beside the
    /// statistics, on the same allocation.
    pub activity: Activity,
    /// Whether the key whose activity this is waits in [`Inner::dirty`].
    queued: AtomicBool,
    /// Set once a second key counts on these counters (a rotation); never
    /// cleared.
    pub joined: AtomicBool,
    /// Level 1 of the lock order (see `writer`): serialises the calls that
    /// must commit a change of these counters before anyone else changes
    /// them (strict credits, credit changes, signed logins).
    pub gate: Mutex<()>,
    /// The limits' counters, once a call needed them (a leaf lock).
    state: Mutex<Option<Box<KeyCounters>>>,
    /// Key id the counters are stored under (a leaf lock: a rotation hands
    /// the counters to the successor without copying them).
    owner: Mutex<KeyId>,
    /// On a shared store: what this node knows of the store's copy.
    sync: OnceLock<Box<SyncState>>,
}

/// What a node keeps of a key's counters in a shared store.
pub(crate) struct SyncState {
    /// The version of the counters this node last read or wrote there
    /// ([`UNREAD`] before that). Changed under the gate.
    pub version: AtomicU64,
    /// The totals already added to the store's statistics (each node adds
    /// what it counted since).
    flushed_valid: AtomicU64,
    flushed_refused: AtomicU64,
    /// [`LimitSync::Local`](crate::LimitSync): the store's counters as of
    /// the last reconciliation (at `version`), and when that was (ms since
    /// the engine opened; 0: never). Changed under the gate.
    pub base: Mutex<Option<KeyCounters>>,
    pub synced_at: AtomicU64,
}

impl SyncState {
    fn new(valid: u64, refused: u64) -> Self {
        Self {
            version: AtomicU64::new(UNREAD),
            flushed_valid: AtomicU64::new(valid),
            flushed_refused: AtomicU64::new(refused),
            base: Mutex::new(None),
            synced_at: AtomicU64::new(0),
        }
    }
}

#[derive(Clone, Default)]
pub(crate) struct KeyCounters {
    pub key: UsageState,
    pub tools: HashMap<String, (UsageState, UsageState)>,
    pub mint: UsageState,
    /// [`LimitSync::Local`](crate::LimitSync): calls admitted on these
    /// counters since they were last reconciled with the shared store.
    pub pending: Vec<crate::local::Admitted>,
}

impl KeyCounters {
    /// The counters of a stored record (its statistics aside).
    pub(crate) fn stored(rec: UsageRecord) -> Self {
        Self {
            key: rec.key,
            tools: rec.tools.into_iter().map(|(t, a, b)| (t, (a, b))).collect(),
            mint: rec.mint,
            pending: Vec::new(),
        }
    }

    /// Whether these are the counters of a key never charged.
    fn is_empty(&self) -> bool {
        self.key == UsageState::default()
            && self.tools.is_empty()
            && self.mint == UsageState::default()
            && self.pending.is_empty()
    }
}

/// A cell's counters under their lock: created (empty) on first use.
pub(crate) struct CountersGuard<'a>(LeafGuard<'a, Option<Box<KeyCounters>>>);

impl std::ops::Deref for CountersGuard<'_> {
    type Target = KeyCounters;
    fn deref(&self) -> &KeyCounters {
        // Invariant: `UsageCell::lock` filled the option before making the guard.
        self.0.as_deref().unwrap_or_else(|| unreachable!("counters are created before they are lent"))
    }
}

impl std::ops::DerefMut for CountersGuard<'_> {
    fn deref_mut(&mut self) -> &mut KeyCounters {
        self.0.get_or_insert_with(Box::default)
    }
}

impl UsageCell {
    /// The cell of a stored usage record. On a shared store (`shared`) the
    /// record's statistics count as already added to the store's.
    pub(crate) fn from_record(owner: KeyId, rec: UsageRecord, shared: bool) -> Self {
        let last_used_at = rec.last_used_at;
        let (valid, refused) = (rec.valid, rec.refused);
        let counters = KeyCounters::stored(rec);
        let sync = OnceLock::new();
        if shared {
            let _ = sync.set(Box::new(SyncState::new(valid, refused)));
        }
        Self {
            last_used: AtomicU64::new(last_used_at.map_or(0, UnixMillis::get)),
            valid: AtomicU64::new(valid),
            refused: AtomicU64::new(refused),
            dirty: AtomicBool::new(false),
            activity: Activity::default(),
            queued: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            gate: Mutex::new(()),
            state: Mutex::new((!counters.is_empty()).then(|| Box::new(counters))),
            owner: Mutex::new(owner),
            sync,
        }
    }

    /// A cell that only keeps a key's activity, last used at `used` (0:
    /// never): the key counts on another key's counters (a rotation).
    pub(crate) fn home(id: KeyId, used: u64, shared: bool) -> Arc<Self> {
        let cell = Self::from_record(id, UsageRecord::default(), shared);
        cell.activity.last_used.store(used, Ordering::Relaxed);
        Arc::new(cell)
    }

    /// The shared store's bookkeeping (made on first use).
    pub(crate) fn sync(&self) -> &SyncState {
        self.sync.get_or_init(|| {
            Box::new(SyncState::new(self.valid.load(Ordering::Acquire), self.refused.load(Ordering::Acquire)))
        })
    }

    /// Takes the counters another node left in a shared store, at `version`.
    /// Called under the gate.
    pub(crate) fn adopt(&self, rec: Option<Box<UsageRecord>>, version: u64) {
        let stored = KeyCounters::stored(rec.map(|r| *r).unwrap_or_default());
        let mut c = LeafGuard::lock(&self.state);
        // Calls waiting to be reconciled stay (local mode).
        let pending = c.as_mut().map(|c| std::mem::take(&mut c.pending)).unwrap_or_default();
        let next = KeyCounters { pending, ..stored };
        *c = (!next.is_empty() || c.is_some()).then(|| Box::new(next));
        drop(c);
        self.sync().version.store(version, Ordering::Release);
    }

    /// What this node counted since its last flush to a shared store.
    pub(crate) fn unflushed_stats(&self) -> UsageStats {
        let last = self.last_used.load(Ordering::Acquire);
        let sync = self.sync();
        UsageStats {
            valid: self.valid.load(Ordering::Acquire).saturating_sub(sync.flushed_valid.load(Ordering::Acquire)),
            refused: self.refused.load(Ordering::Acquire).saturating_sub(sync.flushed_refused.load(Ordering::Acquire)),
            last_used_at: (last != 0).then_some(UnixMillis(last)),
        }
    }

    /// Notes `stats` as added to the shared store.
    pub(crate) fn flushed(&self, stats: &UsageStats) {
        let sync = self.sync();
        sync.flushed_valid.fetch_add(stats.valid, Ordering::AcqRel);
        sync.flushed_refused.fetch_add(stats.refused, Ordering::AcqRel);
    }

    /// The counters (a leaf lock), created empty if the key had none.
    pub(crate) fn lock(&self) -> CountersGuard<'_> {
        let mut c = LeafGuard::lock(&self.state);
        if c.is_none() {
            *c = Some(Box::default());
        }
        CountersGuard(c)
    }

    /// Reads the counters without creating them: `f` sees empty ones if
    /// the key has none.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&KeyCounters) -> T) -> T {
        let c = LeafGuard::lock(&self.state);
        match c.as_deref() {
            Some(c) => f(c),
            None => f(&KeyCounters::default()),
        }
    }

    /// Whether the counters exist (a call needed them).
    #[cfg(test)]
    pub(crate) fn has_counters(&self) -> bool {
        LeafGuard::lock(&self.state).is_some()
    }

    /// Whether calls wait to be reconciled (local mode).
    pub(crate) fn has_pending(&self) -> bool {
        LeafGuard::lock(&self.state).as_ref().is_some_and(|c| !c.pending.is_empty())
    }

    /// A key left without limits of its own: its key-wide counters go (a
    /// limit set again later starts from nothing), and the allocation with
    /// them if nothing else is kept (a limited tool's counters, leases, the
    /// session mint's, calls waiting to be reconciled). Returns whether
    /// anything changed.
    pub(crate) fn drop_key_counters(&self) -> bool {
        let mut c = LeafGuard::lock(&self.state);
        let Some(counters) = c.as_mut() else { return false };
        // Leases in flight stay releasable.
        let leases = counters.key.leases.clone();
        let next_lease = if leases.is_empty() { 0 } else { counters.key.next_lease };
        let kept = UsageState { leases, next_lease, ..UsageState::default() };
        let changed = counters.key != kept;
        counters.key = kept;
        if counters.is_empty() {
            *c = None;
        }
        changed
    }

    /// Takes the gate (level 1 of the lock order).
    pub(crate) fn gate(&self) -> MutexGuard<'_, ()> {
        // The gate guards no data: poisoning means nothing.
        self.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn owner(&self) -> KeyId {
        *LeafGuard::lock(&self.owner)
    }

    /// Hands the counters to another key; called only under the writer.
    pub(crate) fn set_owner(&self, id: KeyId) {
        *LeafGuard::lock(&self.owner) = id;
    }

    /// Notes a change to flush. The key must then be queued
    /// ([`Inner::touched`]): the flusher reads the queue, not every cell.
    pub(crate) fn mark_dirty(&self) {
        // Sequentially consistent with the queue's flag (see `Inner::touched`).
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    /// The record of these counters now.
    pub(crate) fn to_record(&self) -> UsageRecord {
        self.read(|c| self.record_with(c))
    }

    /// The record of counters `c` with this cell's totals.
    pub(crate) fn record_with(&self, c: &KeyCounters) -> UsageRecord {
        let last = self.last_used.load(Ordering::Acquire);
        UsageRecord {
            key: c.key.clone(),
            tools: c.tools.iter().map(|(t, (a, b))| (t.clone(), a.clone(), b.clone())).collect(),
            // Nonce histories are kept per key (the `nonces` table).
            nonce: NonceState::default(),
            mint: c.mint.clone(),
            last_used_at: (last != 0).then_some(UnixMillis(last)),
            valid: self.valid.load(Ordering::Acquire),
            refused: self.refused.load(Ordering::Acquire),
        }
    }
}

/// A key in memory: its record (immutable; replaced on change) and counters.
///
/// Verification reads the policy, the flags and the pointers; the rest of
/// the record (start, creator, signing identity, roles, …) is read only by
/// admin calls and is kept encoded ([`KeyDetails`]), one small allocation.
pub(crate) struct LiveKey {
    policy: KeyPolicy,
    /// The record but for the policy and `created_at` (see [`KeyDetails`]).
    details: Box<[u8]>,
    pub created_at: UnixMillis,
    pub usage: Arc<UsageCell>,
    /// The key's own replay history (a leaf lock; changed only under the
    /// usage cell's gate), for a key with a signing identity (no other key
    /// takes a nonce). Kept across record changes.
    pub nonce: Option<Arc<Mutex<NonceState>>>,
    /// The key's workspace, set when the key is indexed. Verification reads
    /// it through this pointer: no map lookup, no shared lock.
    pub workspace: Option<Arc<WorkspaceSlot>>,
    /// The cell whose activity is this key's, when it is not `usage`'s (a
    /// rotation's successor counts on its predecessor's counters but has
    /// its own history). Kept across record changes.
    pub home: Option<Arc<UsageCell>>,
    /// Whether any limit applies to this key at all (key, tool or key×tool):
    /// when false the hot path never takes the counters' lock.
    pub has_key_limits: bool,
    /// Whether the key has a concurrency limit of its own or per tool.
    pub has_concurrency: bool,
    /// Whether the token works as a bearer credential ([`KeyRecord::is_bearer`]).
    bearer: bool,
}

/// A key record's fields besides the policy and `created_at`, as kept in
/// memory (encoded with postcard).
#[derive(Deserialize)]
pub(crate) struct KeyDetails {
    pub start: String,
    pub created_by: String,
    pub signing: Option<SigningRecord>,
    pub usage_owner: Option<KeyId>,
    pub external_id: Option<String>,
    pub roles: Vec<String>,
    pub bearer: bool,
    pub serial: Option<u64>,
}

/// [`KeyDetails`] borrowed from a record, to encode.
#[derive(Serialize)]
struct KeyDetailsRef<'a> {
    start: &'a str,
    created_by: &'a str,
    signing: &'a Option<SigningRecord>,
    usage_owner: Option<KeyId>,
    external_id: &'a Option<String>,
    roles: &'a [String],
    bearer: bool,
    serial: Option<u64>,
}

impl LiveKey {
    /// A key with counters `usage`, no nonce history and no activity yet.
    pub(crate) fn new(record: KeyRecord, usage: Arc<UsageCell>) -> Self {
        let p = &record.policy;
        let has_key_limits = !p.limits.is_empty() || !p.tool_limits.is_empty();
        let has_concurrency =
            p.limits.concurrency.is_some() || p.tool_limits.iter().any(|(_, l)| l.concurrency.is_some());
        let nonce = record.signing.is_some().then(Arc::default);
        let details = KeyDetailsRef {
            start: &record.start,
            created_by: &record.created_by,
            signing: &record.signing,
            usage_owner: record.usage_owner,
            external_id: &record.external_id,
            roles: &record.roles,
            bearer: record.bearer,
            serial: record.serial,
        };
        // Most fit a buffer on the stack: one allocation of the exact size.
        let mut buf = [0u8; 256];
        let details: Box<[u8]> = match postcard::to_slice(&details, &mut buf) {
            Ok(used) => Box::from(&*used),
            // Invariant: postcard fails only on a full buffer or a failing
            // writer; a Vec never fails.
            #[allow(clippy::expect_used)]
            Err(_) => postcard::to_allocvec(&details).expect("postcard into a Vec cannot fail").into_boxed_slice(),
        };
        Self {
            bearer: record.is_bearer(),
            policy: record.policy,
            details,
            created_at: record.created_at,
            usage,
            nonce,
            workspace: None,
            home: None,
            has_key_limits,
            has_concurrency,
        }
    }

    /// The same key with a changed record: same counters, same nonces, same
    /// activity.
    pub(crate) fn with_record(&self, record: KeyRecord) -> Self {
        let mut live = Self::new(record, Arc::clone(&self.usage));
        live.home.clone_from(&self.home);
        if self.nonce.is_some() {
            live.nonce.clone_from(&self.nonce);
        }
        live
    }

    pub(crate) fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// The cell that keeps this key's activity.
    pub(crate) fn home_cell(&self) -> &Arc<UsageCell> {
        self.home.as_ref().unwrap_or(&self.usage)
    }

    /// Its own token's calls since the last flush, and last use (kept
    /// across record changes; a rotation's successor has its own).
    pub(crate) fn activity(&self) -> &Activity {
        &self.home_cell().activity
    }

    /// Whether the token works as a bearer credential.
    pub(crate) fn is_bearer(&self) -> bool {
        self.bearer
    }

    /// The record's fields besides the policy.
    pub(crate) fn details(&self) -> KeyDetails {
        // Invariant: `details` was encoded from a `KeyDetailsRef` in `new`,
        // which has the same fields in the same order.
        #[allow(clippy::expect_used)]
        postcard::from_bytes(&self.details).expect("key details are encoded by LiveKey::new")
    }

    /// The whole record, as stored.
    pub(crate) fn record(&self) -> KeyRecord {
        let d = self.details();
        KeyRecord {
            policy: self.policy.clone(),
            start: d.start,
            created_at: self.created_at,
            created_by: d.created_by,
            signing: d.signing,
            usage_owner: d.usage_owner,
            external_id: d.external_id,
            roles: d.roles,
            bearer: d.bearer,
            serial: d.serial,
        }
    }
}

/// A workspace in memory with its tools.
#[derive(Clone)]
pub(crate) struct LiveWorkspace {
    pub ws: Workspace,
    pub tools: HashMap<String, Arc<ToolRecord>>,
}

/// The current version of one workspace. Keys hold the slot; a change stores
/// a new version. Reads (`load`) write no shared memory, so verifications on
/// two cores do not contend on a lock shared by the whole workspace.
pub(crate) struct WorkspaceSlot {
    pub current: arc_swap::ArcSwap<LiveWorkspace>,
}

impl WorkspaceSlot {
    pub(crate) fn new(live: LiveWorkspace) -> Arc<Self> {
        Arc::new(Self { current: arc_swap::ArcSwap::from_pointee(live) })
    }
}

/// Options of an [`Engine`], set through [`EngineBuilder`].
#[derive(Clone)]
pub(crate) struct Options {
    pub clock: Arc<dyn Clock>,
    pub flush_interval: Duration,
    pub session_purge_interval: Duration,
    pub master_key: Option<Arc<zeroize::Zeroizing<Vec<u8>>>>,
    pub snapshot_key: Option<Arc<zeroize::Zeroizing<Vec<u8>>>>,
    pub strict_credits: bool,
    pub session_ttl_ms: u64,
    pub session_mint_limit: RateLimit,
    pub store_stale: Duration,
    pub fail_open_limits: bool,
    pub store_ca: Option<Vec<u8>>,
    /// redb's page cache, bytes.
    pub cache_bytes: usize,
    pub audit_retention: AuditRetention,
}

/// redb's page cache unless [`EngineBuilder::cache_mb`] says otherwise:
/// redb's own default, 1 GiB (an upper bound, filled as pages are read).
pub(crate) const DEFAULT_CACHE_BYTES: usize = 1024 * 1024 * 1024;

/// Shards of the queue of keys to flush.
const DIRTY_SHARDS: usize = 16;

/// How often the flusher applies the audit retention, at most.
const AUDIT_TRIM_EVERY: Duration = Duration::from_secs(60);

/// How long audit events are kept ([`EngineBuilder::audit_retention`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditRetention {
    /// Every event, forever (the default).
    #[default]
    Forever,
    /// Events of the last `n` days (by the engine's clock); older ones go.
    Days(u32),
    /// The last `n` events; older ones go.
    Count(u64),
}

/// Whether a shared store answers. Its follower asks it every 200 ms; the
/// flusher checks the window every flush interval.
#[derive(Default)]
pub(crate) struct Reach {
    /// Set while the store does not answer: limited calls do not wait for it.
    pub down: AtomicBool,
    /// Set once it has not answered for the stale window: keys are refused
    /// (`STORE_UNAVAILABLE`), since a revocation may have been missed.
    pub stale: AtomicBool,
    /// Since when, and why, it does not answer.
    since: Mutex<Option<(std::time::Instant, String)>>,
}

impl Reach {
    fn lost(&self, why: String, window: Duration) {
        let mut since = self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = since.get_or_insert_with(|| (std::time::Instant::now(), String::new()));
        at.1 = why;
        self.down.store(true, Ordering::Release);
        if at.0.elapsed() >= window {
            self.stale.store(true, Ordering::Release);
        }
    }

    fn check(&self, window: Duration) {
        let since = self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if since.as_ref().is_some_and(|(at, _)| at.elapsed() >= window) {
            self.stale.store(true, Ordering::Release);
        }
    }

    /// Notes an answer; returns whether the store was away until now.
    fn answered(&self) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return false;
        }
        *self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.stale.store(false, Ordering::Release);
        self.down.store(false, Ordering::Release);
        true
    }

    /// How long, and why, the store has not answered.
    fn unreachable(&self) -> Option<(u64, String)> {
        let since = self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        since.as_ref().map(|(at, why)| (u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX), why.clone()))
    }
}

pub(crate) struct Inner {
    /// Every durable change goes through it (lock order: see `writer`).
    pub writer: Writer,
    pub path: PathBuf,
    pub opts: Options,
    /// Every key, by token hash and by id.
    pub keys: Keys,
    pub workspaces: DashMap<WorkspaceId, Arc<WorkspaceSlot>>,
    pub sessions: DigestMap<SessionRecord>,
    pub any_imported: AtomicBool,
    /// Whether other nodes share the store: limited calls are then charged
    /// in the store ([`Store::charge`]), not in memory alone.
    pub shared: bool,
    /// Whether the shared store answers (always, for a store of one node).
    pub reach: Reach,
    /// When the engine opened: the clock of [`LimitSync::Local`](crate::LimitSync) reconciliations.
    pub opened: std::time::Instant,
    /// Calls admitted on a node's own counters that the shared store's
    /// counters refused when they were reconciled.
    pub overshoot: AtomicU64,
    /// Each workspace's highest key serial handed out, for a store of one
    /// node (a shared store counts them itself). Read and changed only
    /// under the writer.
    pub serials: Mutex<HashMap<WorkspaceId, u64>>,
    /// Keys with something to flush (counters, statistics, activity), in a
    /// few shards so two verifying threads rarely take the same lock. Leaf
    /// locks.
    dirty: [Mutex<Vec<Arc<LiveKey>>>; DIRTY_SHARDS],
    stop: Mutex<bool>,
    pub(crate) wake: Condvar,
}

/// The keyward engine: one store (a redb file, or Redis), an in-memory index, and the decisions of
/// `keyward-core`. Cheap to share: wrap it in an `Arc` or use [`Engine::clone`].
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    flusher: Arc<FlusherHandle>,
}

struct FlusherHandle {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The thread that follows other nodes' changes (shared stores only).
    follower: Mutex<Option<JoinHandle<()>>>,
    /// The thread that reconciles local-mode counters (shared stores only).
    reconciler: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FlusherHandle {
    fn drop(&mut self) {
        stop_flusher(&self.inner, &self.thread);
        stop_flusher(&self.inner, &self.follower);
        stop_flusher(&self.inner, &self.reconciler);
        // A final reconciliation and flush; errors cannot be reported from drop.
        self.inner.reconcile_all();
        let _ = self.inner.flush();
    }
}

fn stop_flusher(inner: &Inner, thread: &Mutex<Option<JoinHandle<()>>>) {
    if let Ok(mut stop) = inner.stop.lock() {
        *stop = true;
    }
    inner.wake.notify_all();
    let handle = thread.lock().ok().and_then(|mut t| t.take());
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// Configures and opens an [`Engine`].
#[must_use]
pub struct EngineBuilder {
    opts: Options,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            opts: Options {
                clock: Arc::new(CounterClock::new()),
                flush_interval: Duration::from_secs(1),
                session_purge_interval: Duration::from_secs(60),
                master_key: None,
                snapshot_key: None,
                strict_credits: false,
                session_ttl_ms: 24 * 3_600_000,
                session_mint_limit: RateLimit {
                    name: "session_mint".into(),
                    limit: 30,
                    window_ms: 60_000,
                    auto_apply: true,
                },
                store_stale: Duration::from_secs(5),
                fail_open_limits: false,
                store_ca: None,
                cache_bytes: DEFAULT_CACHE_BYTES,
                audit_retention: AuditRetention::Forever,
            },
        }
    }
}

impl EngineBuilder {
    /// The clock. By default a [`CounterClock`](crate::CounterClock): the
    /// system time, read through the CPU's counter.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.opts.clock = Arc::new(clock);
        self
    }

    /// How often counters and `last_used_at` are written behind. By default, 1 second.
    /// This is the most usage a crash can lose; see the crate docs.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.opts.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often expired sessions are removed (they are also removed when
    /// the engine opens). By default, 60 seconds.
    pub fn session_purge_interval(mut self, interval: Duration) -> Self {
        self.opts.session_purge_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Master key from which signing identities' API secrets are derived
    /// (HMAC-SHA256 of the key id). At least 32 bytes. By default, none: signing
    /// identities are unavailable.
    pub fn master_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.opts.master_key = Some(Arc::new(zeroize::Zeroizing::new(key.into())));
        self
    }

    /// Key that authenticates exported snapshots (at least 16 bytes). By default, none.
    pub fn snapshot_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.opts.snapshot_key = Some(Arc::new(zeroize::Zeroizing::new(key.into())));
        self
    }

    /// A shared store: how long a node keeps verifying keys from memory
    /// after the store stopped answering. Past it, every key is refused
    /// with `STORE_UNAVAILABLE` until the store answers again (a revocation
    /// made meanwhile on another node cannot have been seen). By default,
    /// 5 seconds.
    pub fn store_stale(mut self, window: Duration) -> Self {
        self.opts.store_stale = window;
        self
    }

    /// A store over TLS (`rediss://`): the CA certificate (PEM) its server
    /// certificate must chain to, instead of the system's roots.
    pub fn store_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.opts.store_ca = Some(pem.into());
        self
    }

    /// A shared store: while it does not answer, decide limited calls on
    /// this node's own counters (admitting calls no other node counts)
    /// instead of refusing them with `STORE_UNAVAILABLE`. By default, off.
    pub fn fail_open_limits(mut self, open: bool) -> Self {
        self.opts.fail_open_limits = open;
        self
    }

    /// Persist credit balances before `verify` returns, for keys that have
    /// credits. By default, off: credits are written behind like other counters.
    pub fn strict_credits(mut self, strict: bool) -> Self {
        self.opts.strict_credits = strict;
        self
    }

    /// Lifetime of sessions minted by signed authentication. By default, 24 hours.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.opts.session_ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sessions a key may mint per window. By default, 30 per minute.
    pub fn session_mint_limit(mut self, limit: u64, window: Duration) -> Self {
        self.opts.session_mint_limit.limit = limit.max(1);
        self.opts.session_mint_limit.window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        self
    }

    /// The most memory, in MiB, redb's page cache may hold (pages read or
    /// written, kept for the next read). It fills as pages are read or
    /// written; the open reads every record without it (the file is opened
    /// again with the cache once the index is built). Verification never
    /// reads the file; the cache serves the audit log, usage history and
    /// writes. Not used by the Redis store. By default, 1024 MiB (redb's
    /// default).
    pub fn cache_mb(mut self, mb: u64) -> Self {
        let bytes = mb.saturating_mul(1024 * 1024);
        self.opts.cache_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self
    }

    /// How long audit events are kept. The background flusher removes
    /// older ones at most once a minute, in one write transaction, oldest
    /// first; the events kept keep their sequence numbers (audit cursors
    /// stay valid), and new events continue the numbering. The Redis store
    /// refuses any setting but [`AuditRetention::Forever`]. By default,
    /// [`AuditRetention::Forever`].
    pub fn audit_retention(mut self, keep: AuditRetention) -> Self {
        self.opts.audit_retention = keep;
        self
    }

    /// Opens (or creates, with mode 0600) the database at `path`.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Engine> {
        self.check_keys()?;
        let path = path.as_ref().to_path_buf();
        let store = RedbStore::open_for_index(&path, self.opts.cache_bytes)?;
        self.start(Box::new(store), path)
    }

    /// Opens (or creates) a database on a redb [`StorageBackend`] of the
    /// caller's, such as one that injects faults in tests. After a failed
    /// write the engine opens the backend again from a clone of it.
    pub fn open_backend<B: StorageBackend + Clone>(self, backend: B) -> Result<Engine> {
        self.check_keys()?;
        let store = RedbStore::open_backend(backend, self.opts.cache_bytes)?;
        self.start(Box::new(store), PathBuf::from("<storage backend>"))
    }

    /// Opens (or provisions) a database in Redis at `url`:
    /// `redis://[USER:PASS@]HOST:PORT/DB`, `rediss://…` (TLS),
    /// `redis+cluster://[USER:PASS@]H1:P1,H2:P2,…` (Redis Cluster) or
    /// `rediss+cluster://…`. Records, counters, sessions and the audit log
    /// live there, each change committed as one atomic script. Secrets (the
    /// master and snapshot keys) are never written to it.
    ///
    /// Several nodes may share one Redis database: each follows the others'
    /// changes of keys, workspaces, tools, sessions and nonces through a
    /// change stream, within milliseconds, and limits are counted across
    /// nodes as each workspace's [`LimitSync`](crate::LimitSync) says.
    #[cfg(feature = "redis")]
    pub fn open_redis(self, url: &str) -> Result<Engine> {
        self.check_keys()?;
        if self.opts.audit_retention != AuditRetention::Forever {
            return Err(Error::invalid(
                "audit_retention",
                "the Redis store keeps its audit log forever; trim it with Redis tools, or use a redb file",
            ));
        }
        let store = crate::store::redis::RedisStore::open(url, self.opts.store_ca.as_deref())?;
        self.start(Box::new(store), PathBuf::from(crate::store::redis::shown(url)))
    }

    fn check_keys(&self) -> Result<()> {
        if matches!(self.opts.audit_retention, AuditRetention::Days(0) | AuditRetention::Count(0)) {
            return Err(Error::invalid("audit_retention", "must keep at least one day or one event"));
        }
        if self.opts.master_key.as_ref().is_some_and(|k| k.len() < 32) {
            return Err(Error::invalid("master_key", "must be at least 32 bytes"));
        }
        if self.opts.snapshot_key.as_ref().is_some_and(|k| k.len() < keyward_core::snapshot::MIN_KEY_LEN) {
            return Err(Error::invalid("snapshot_key", "must be at least 16 bytes"));
        }
        Ok(())
    }

    fn start(self, store: Box<dyn Store>, path: PathBuf) -> Result<Engine> {
        let (loaded, keys) = store.load_index()?;
        let shared = store.shared();
        let inner = Arc::new(Inner {
            writer: Writer::new(store),
            path,
            opts: self.opts,
            keys: Keys::with_capacity(keys.len()),
            workspaces: DashMap::new(),
            sessions: DigestMap::default(),
            any_imported: AtomicBool::new(false),
            shared,
            reach: Reach::default(),
            opened: std::time::Instant::now(),
            overshoot: AtomicU64::new(0),
            serials: Mutex::new(HashMap::new()),
            dirty: std::array::from_fn(|_| Mutex::default()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        inner.load(loaded, keys)?;
        inner.purge_expired_sessions()?;
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("keyward-flush".into())
            .spawn(move || worker.flush_loop())
            .map_err(|e| Error::Io(e.to_string()))?;
        let follower = if inner.shared {
            let worker = Arc::clone(&inner);
            let t = std::thread::Builder::new()
                .name("keyward-follow".into())
                .spawn(move || worker.follow_loop())
                .map_err(|e| Error::Io(e.to_string()))?;
            Some(t)
        } else {
            None
        };
        let reconciler = if inner.shared {
            let worker = Arc::clone(&inner);
            let t = std::thread::Builder::new()
                .name("keyward-reconcile".into())
                .spawn(move || worker.reconcile_loop())
                .map_err(|e| Error::Io(e.to_string()))?;
            Some(t)
        } else {
            None
        };
        let flusher = Arc::new(FlusherHandle {
            inner: Arc::clone(&inner),
            thread: Mutex::new(Some(thread)),
            follower: Mutex::new(follower),
            reconciler: Mutex::new(reconciler),
        });
        Ok(Engine { inner, flusher })
    }
}

/// The state of the engine's write path, for health checks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Why the store is degraded, or `None` when the last commit (or flush)
    /// succeeded. While degraded, verification keeps
    /// answering from memory; changes fail and change nothing.
    pub degraded: Option<String>,
    /// Commits that failed since the engine opened (flushes included).
    pub write_failures: u64,
    /// Write-behind flushes that failed since the engine opened.
    pub flush_failures: u64,
    /// A shared store that does not answer: for how many milliseconds.
    /// `None` while it answers (and always for a store of one node).
    pub store_unreachable_ms: Option<u64>,
    /// Whether keys are refused because the shared store has not answered
    /// for longer than the stale window ([`EngineBuilder::store_stale`]).
    pub store_stale: bool,
    /// [`LimitSync::Local`](crate::LimitSync): calls this node admitted on
    /// its own counters that the store's counters refused when reconciled
    /// (the overshoot), since the engine opened.
    pub local_overshoot: u64,
}

impl Engine {
    /// Opens (or creates) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().open(path)
    }

    /// A builder for options.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Writes every pending counter now.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Removes the audit events the retention ([`EngineBuilder::audit_retention`])
    /// no longer keeps, now, instead of at the flusher's next minute.
    pub fn trim_audit(&self) -> Result<()> {
        self.inner.trim_audit()
    }

    /// Flushes and stops the background writer. The engine stays usable, but
    /// counters are then written only by [`Engine::flush`] and on drop.
    pub fn close(&self) -> Result<()> {
        stop_flusher(&self.inner, &self.flusher.thread);
        stop_flusher(&self.inner, &self.flusher.follower);
        stop_flusher(&self.inner, &self.flusher.reconciler);
        self.inner.reconcile_all();
        self.inner.flush()
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The engine's current time.
    pub fn now(&self) -> UnixMillis {
        self.inner.now()
    }

    /// Whether verification may block (strict credits are on, or the store
    /// is shared, so limited calls are charged there): async callers then
    /// verify off their runtime's workers.
    pub fn verify_may_block(&self) -> bool {
        self.inner.opts.strict_credits || self.inner.shared
    }

    /// The write path's health: failed commits and flushes, and whether the
    /// store is degraded now.
    pub fn health(&self) -> Health {
        let h = &self.inner.writer.health;
        let unreachable = self.inner.reach.unreachable();
        let degraded =
            h.degraded.load(Ordering::Acquire).then(|| h.problem.lock().ok().and_then(|p| p.clone())).flatten();
        let degraded = degraded.or_else(|| unreachable.as_ref().map(|(_, why)| why.clone()));
        Health {
            degraded,
            write_failures: h.write_failures.load(Ordering::Relaxed),
            flush_failures: h.flush_failures.load(Ordering::Relaxed),
            store_unreachable_ms: unreachable.map(|(ms, _)| ms),
            store_stale: self.inner.reach.stale.load(Ordering::Acquire),
            local_overshoot: self.inner.overshoot.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    /// The stop flag the background threads wait on.
    pub(crate) fn stop_guard(&self) -> MutexGuard<'_, bool> {
        self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn now(&self) -> UnixMillis {
        self.opts.clock.now()
    }

    pub(crate) fn index_key(&self, mut live: LiveKey) {
        if live.policy.imported {
            self.any_imported.store(true, Ordering::Release);
        }
        live.workspace = self.workspaces.get(&live.policy.workspace).map(|s| Arc::clone(&s));
        self.keys.insert(Arc::new(live));
    }

    pub(crate) fn unindex_key(&self, id: KeyId) {
        self.keys.remove(&id);
    }

    /// See [`Writer::write`]: plan under the writer, commit, then publish.
    pub(crate) fn write<P, T>(&self, plan: impl FnOnce(&mut Batch) -> Result<P>) -> Result<T>
    where
        P: FnOnce() -> T,
    {
        self.writer.write(plan)
    }

    fn flush_loop(self: Arc<Self>) {
        let interval = self.opts.flush_interval;
        let purge_every = self.opts.session_purge_interval;
        let mut last_purge = std::time::Instant::now();
        let mut last_trim: Option<std::time::Instant> = None;
        let mut stopped = self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if *stopped {
                return;
            }
            let (guard, _) =
                self.wake.wait_timeout(stopped, interval).unwrap_or_else(std::sync::PoisonError::into_inner);
            stopped = guard;
            if *stopped {
                return;
            }
            drop(stopped);
            // A panic here (a bug, or redb on a damaged file) must not stop
            // the writes behind silently: it is reported, and the next tick
            // tries again.
            let tick = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // Errors are counted in `health` and retried at the next tick:
                // the dirty flags of cells that failed to write are set again.
                self.reach.check(self.opts.store_stale);
                let _ = self.flush();
                if last_purge.elapsed() >= purge_every {
                    last_purge = std::time::Instant::now();
                    let _ = self.purge_expired_sessions();
                }
                if self.opts.audit_retention != AuditRetention::Forever
                    && last_trim.is_none_or(|t| t.elapsed() >= AUDIT_TRIM_EVERY)
                {
                    last_trim = Some(std::time::Instant::now());
                    // A failure is counted in `health`; the next minute tries again.
                    let _ = self.trim_audit();
                }
            }));
            if tick.is_err() {
                let h = &self.writer.health;
                h.flush_failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut p) = h.problem.lock() {
                    *p = Some("the background flusher panicked".into());
                }
                h.degraded.store(true, Ordering::Release);
            }
            stopped = self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Follows what other nodes commit to a shared store: each record they
    /// changed is read again and published here, under the writer (so in
    /// order with this node's own changes), until the engine stops.
    fn follow_loop(self: Arc<Self>) {
        const WAIT: Duration = Duration::from_millis(200);
        loop {
            if *self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
                return;
            }
            match self.writer.store().follow(WAIT) {
                Ok(touched) => {
                    if self.reach.answered() {
                        self.writer.store().reconnect();
                    }
                    if let Some(touched) = touched {
                        // Read under the writer: no change of this node lands
                        // between the read and the publish, so none is undone
                        // by an older copy of the same record.
                        let store = self.writer.store();
                        let read = self.write(|_| {
                            let items = store.read_followed(touched)?;
                            Ok(|| items.into_iter().for_each(|item| self.apply_followed(item)))
                        });
                        if let Err(e) = read {
                            self.reach.lost(e.to_string(), self.opts.store_stale);
                            std::thread::sleep(WAIT);
                        }
                    }
                }
                // Unreachable for now: try again after a pause; the store
                // resumes from the last change read.
                Err(e) => {
                    self.reach.lost(e.to_string(), self.opts.store_stale);
                    std::thread::sleep(WAIT);
                }
            }
        }
    }

    /// Publishes one record another node changed.
    fn apply_followed(&self, item: Followed) {
        match item {
            Followed::Reload(loaded) => self.reload(*loaded),
            Followed::Workspace(id, Some(ws)) => {
                let tools = self.workspaces.get(&id).map(|s| s.current.load().tools.clone()).unwrap_or_default();
                self.replace_workspace(LiveWorkspace { ws, tools });
            }
            // Workspaces are never deleted.
            Followed::Workspace(_, None) => {}
            Followed::Tool(ws, name, rec) => {
                if let Some(slot) = self.workspaces.get(&ws) {
                    let mut live = LiveWorkspace::clone(&slot.current.load());
                    match rec {
                        Some(r) => live.tools.insert(name, Arc::new(r)),
                        None => live.tools.remove(&name),
                    };
                    slot.current.store(Arc::new(live));
                }
            }
            Followed::Key(id, None) => self.unindex_key(id),
            Followed::Key(id, Some(rec)) => {
                let existing = self.keys.get(&id);
                // A rotated key shares its successor's counters (the
                // successor comes first in the same change).
                let shared = rec.usage_owner.and_then(|o| self.keys.get(&o).map(|k| Arc::clone(&k.usage)));
                let cell = match (shared, &existing) {
                    (Some(cell), _) => cell,
                    (None, Some(k)) => Arc::clone(&k.usage),
                    (None, None) => Arc::new(UsageCell::from_record(id, UsageRecord::default(), true)),
                };
                let live = match existing {
                    Some(k) if !Arc::ptr_eq(&k.usage, &cell) => {
                        cell.joined.store(true, Ordering::Release);
                        // Moved onto another key's counters (its successor's,
                        // in a rotation): its activity stays where it was.
                        let home = k.home.clone().or_else(|| Some(Arc::clone(&k.usage)));
                        LiveKey { usage: cell, home, ..k.with_record(*rec) }
                    }
                    Some(k) => LiveKey { usage: cell, ..k.with_record(*rec) },
                    None => {
                        let mut live = LiveKey::new(*rec, cell);
                        if live.usage.owner() != id {
                            live.usage.joined.store(true, Ordering::Release);
                            live.home = Some(UsageCell::home(id, 0, true));
                        }
                        live
                    }
                };
                self.index_key(live);
            }
            Followed::Nonce(id, state) => {
                if let Some(k) = self.keys.get(&id)
                    && let Some(nonce) = &k.nonce
                {
                    *LeafGuard::lock(nonce) = state.unwrap_or_default();
                }
            }
            Followed::Session(hash, Some(rec)) => {
                self.sessions.insert(hash, rec);
            }
            Followed::Session(hash, None) => {
                self.sessions.remove(&hash);
            }
        }
    }

    /// Replaces what this node holds with everything the store holds (the
    /// changes it missed were trimmed from the change stream). Counters are
    /// not read here: each cell reads the store's on its next charge.
    fn reload(&self, loaded: Loaded) {
        let mut tools: HashMap<WorkspaceId, HashMap<String, Arc<ToolRecord>>> = HashMap::new();
        for t in loaded.tools {
            tools.entry(t.policy.workspace).or_default().insert(t.policy.name.clone(), Arc::new(t));
        }
        for ws in loaded.workspaces {
            let tools = tools.remove(&ws.policy.id).unwrap_or_default();
            self.replace_workspace(LiveWorkspace { ws, tools });
        }
        let kept: std::collections::HashSet<KeyId> = loaded.keys.iter().map(|k| k.policy.id).collect();
        let gone: Vec<KeyId> = self.keys.iter().map(|e| e.policy().id).filter(|id| !kept.contains(id)).collect();
        for id in gone {
            self.unindex_key(id);
        }
        // Keys that own their counters first: a rotated key then finds its
        // successor's cell.
        let (owners, sharers): (Vec<_>, Vec<_>) = loaded.keys.into_iter().partition(|k| k.usage_owner.is_none());
        for rec in owners.into_iter().chain(sharers) {
            self.apply_followed(Followed::Key(rec.policy.id, Some(Box::new(rec))));
        }
        for (id, state) in loaded.nonces {
            self.apply_followed(Followed::Nonce(id, Some(state)));
        }
        let sessions: std::collections::HashSet<[u8; 32]> = loaded.sessions.iter().map(|(h, _)| *h).collect();
        self.sessions.retain(|h, _| sessions.contains(h));
        for (hash, rec) in loaded.sessions {
            self.sessions.insert(hash, rec);
        }
    }

    /// Queues `live` for the next flush, if it is not queued yet: call it
    /// after marking its counters dirty or counting a call in its activity.
    pub(crate) fn touched(&self, live: &Arc<LiveKey>) {
        // The flags are set before this load, and the flusher clears it
        // before it reads them (all sequentially consistent): either the
        // flusher sees them, or this sees the flag cleared and queues again.
        let home = live.home_cell();
        if !home.queued.load(Ordering::SeqCst) && !home.queued.swap(true, Ordering::SeqCst) {
            let [first, ..] = live.policy().hash.0;
            #[allow(clippy::indexing_slicing)] // Invariant: `% DIRTY_SHARDS` is below the array's length.
            let queue = &self.dirty[usize::from(first) % DIRTY_SHARDS];
            LeafGuard::lock(queue).push(Arc::clone(live));
        }
    }

    /// Writes every dirty usage cell and activity in one commit: those of
    /// the keys queued since the last flush ([`Inner::touched`]), not a scan
    /// of every key. The counters are copied out (each under its own lock,
    /// briefly) before the store is asked to write; while the store is
    /// degraded, an empty commit probes it.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut taken: Vec<Arc<UsageCell>> = Vec::new();
        let shared = self.shared;
        let mut sent: Vec<UsageStats> = Vec::new();
        let now = self.now();
        let mut deltas: HashMap<[u8; 16], history::HistoryDelta> = HashMap::new();
        let mut active: Vec<(Arc<UsageCell>, history::Counted)> = Vec::new();
        let mut keys: Vec<Arc<LiveKey>> = Vec::new();
        let result = self.write(|batch| {
            for shard in &self.dirty {
                let queued = std::mem::take(&mut *LeafGuard::lock(shard));
                for live in queued {
                    live.home_cell().queued.store(false, Ordering::SeqCst);
                    // A key deleted since is not written; one changed since
                    // is written as it is now.
                    keys.extend(self.keys.get(&live.policy().id));
                }
            }
            for live in &keys {
                let cell = &live.usage;
                // A cell shared by a rotated key and its successor may be
                // met twice; only the first swap takes it.
                if cell.dirty.load(Ordering::SeqCst) && cell.dirty.swap(false, Ordering::SeqCst) {
                    taken.push(Arc::clone(cell));
                }
                let home = live.home_cell();
                let activity = &home.activity;
                if activity.dirty.load(Ordering::SeqCst) && activity.dirty.swap(false, Ordering::SeqCst) {
                    let counts = activity.take();
                    let p = live.policy();
                    history::merge_into(&mut deltas, p.id.0, &counts, now);
                    history::merge_into(&mut deltas, p.workspace.0, &counts, now);
                    let used = activity.last_used.load(Ordering::Acquire);
                    if used > 0 {
                        batch.push(Change::LastUsed(p.id, used));
                    }
                    active.push((Arc::clone(home), counts));
                }
            }
            for delta in deltas.into_values() {
                batch.push(Change::History(delta));
            }
            for cell in &taken {
                if shared {
                    // The counters themselves are the store's (see
                    // `Store::charge`): only this node's statistics go.
                    let stats = cell.unflushed_stats();
                    batch.push(Change::UsageStats(cell.owner(), stats));
                    sent.push(stats);
                } else {
                    batch.push(Change::Usage(cell.owner(), cell.to_record()));
                }
            }
            if batch.is_empty() && self.writer.health.degraded.load(Ordering::Acquire) {
                batch.push(Change::Probe);
            }
            Ok(|| {
                for (cell, stats) in taken.iter().zip(&sent) {
                    cell.flushed(stats);
                }
            })
        });
        if result.is_err() {
            self.writer.health.flush_failures.fetch_add(1, Ordering::Relaxed);
            for (home, counts) in &active {
                home.activity.restore(counts);
            }
            for cell in &taken {
                cell.dirty.store(true, Ordering::SeqCst);
            }
            for live in &keys {
                self.touched(live);
            }
        }
        result
    }

    /// Removes the audit events the retention no longer keeps, in one commit.
    pub(crate) fn trim_audit(&self) -> Result<()> {
        let keep = match self.opts.audit_retention {
            AuditRetention::Forever => return Ok(()),
            AuditRetention::Days(n) => {
                let age = u64::from(n).saturating_mul(86_400_000);
                AuditKeep::Since(UnixMillis(self.now().get().saturating_sub(age)))
            }
            AuditRetention::Count(n) => AuditKeep::Last(n),
        };
        self.write(|batch| {
            batch.push(Change::AuditTrim(keep));
            Ok(|| ())
        })
    }

    pub(crate) fn workspace(&self, id: WorkspaceId) -> Result<Arc<LiveWorkspace>> {
        self.workspaces.get(&id).map(|w| w.current.load_full()).ok_or_else(|| Error::not_found("workspace", id))
    }

    pub(crate) fn key(&self, id: KeyId) -> Result<Arc<LiveKey>> {
        self.keys.get(&id).ok_or_else(|| Error::not_found("key", id))
    }
}

#[cfg(test)]
#[path = "memory_probe.rs"]
mod memory_probe;

#[cfg(test)]
#[path = "index_tests.rs"]
mod index_tests;
