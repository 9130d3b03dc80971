//! Opening the database, the in-memory index, and the write-behind flusher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use dashmap::DashMap;
use keyward_core::{
    KeyId, KeyPolicy, NonceState, RateLimit, UnixMillis, UsageState, WorkspaceId, decode_record, encode_record,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableHandle, WriteTransaction};

use crate::clock::{Clock, CounterClock};
use crate::error::{Error, Result};
use crate::model::{KeyRecord, SessionRecord, ToolRecord, UsageRecord, Workspace};
use crate::tables::{
    AUDIT, KEYS, MAGIC, MAGIC_KEY, META, SCHEMA_KEY, SCHEMA_VERSION, SESSIONS, TOOLS, USAGE, WORKSPACES,
};

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
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// Shards of the key maps (a power of two).
const SHARDS: usize = 256;

pub(crate) type DigestMap<V> = DashMap<[u8; 32], V, BuildHasherDefault<DigestHasher>>;

/// Counters of one key (shared by a rotated key and its successor).
///
/// Verification writes them on every call, so each key's sit on cache lines
/// of their own: two threads verifying two keys never contend for a line
/// (128 bytes: the pair of lines x86 prefetches together).
#[repr(align(128))]
pub(crate) struct UsageCell {
    /// Key id the counters are stored under.
    pub owner: KeyId,
    pub state: Mutex<KeyCounters>,
    /// Last successful verification, Unix ms; 0 = never.
    pub last_used: AtomicU64,
    pub valid: AtomicU64,
    pub refused: AtomicU64,
    /// Set when something changed since the last flush.
    pub dirty: AtomicBool,
}

#[derive(Default)]
pub(crate) struct KeyCounters {
    pub key: UsageState,
    pub tools: HashMap<String, (UsageState, UsageState)>,
    pub nonce: NonceState,
    pub mint: UsageState,
}

impl UsageCell {
    pub(crate) fn from_record(owner: KeyId, rec: UsageRecord) -> Self {
        let counters = KeyCounters {
            key: rec.key,
            tools: rec.tools.into_iter().map(|(t, a, b)| (t, (a, b))).collect(),
            nonce: rec.nonce,
            mint: rec.mint,
        };
        Self {
            owner,
            state: Mutex::new(counters),
            last_used: AtomicU64::new(rec.last_used_at.map_or(0, UnixMillis::get)),
            valid: AtomicU64::new(rec.valid),
            refused: AtomicU64::new(rec.refused),
            dirty: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, KeyCounters> {
        // A panic while holding this lock cannot leave the counters half
        // written (every update is a plain assignment), so poisoning is ignored.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn mark_dirty(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Release);
        }
    }

    pub(crate) fn to_record(&self) -> UsageRecord {
        let c = self.lock();
        self.record_with(&c)
    }

    /// The record of these counters, for a caller already holding the lock.
    pub(crate) fn record_with(&self, c: &KeyCounters) -> UsageRecord {
        let last = self.last_used.load(Ordering::Acquire);
        UsageRecord {
            key: c.key.clone(),
            tools: c.tools.iter().map(|(t, (a, b))| (t.clone(), a.clone(), b.clone())).collect(),
            nonce: c.nonce.clone(),
            mint: c.mint.clone(),
            last_used_at: (last != 0).then_some(UnixMillis(last)),
            valid: self.valid.load(Ordering::Acquire),
            refused: self.refused.load(Ordering::Acquire),
        }
    }
}

/// A key in memory: its record (immutable; replaced on change) and counters.
pub(crate) struct LiveKey {
    pub record: KeyRecord,
    pub usage: Arc<UsageCell>,
    /// Whether any limit applies to this key at all (key, tool or key×tool):
    /// when false the hot path never takes the counters' lock.
    pub has_key_limits: bool,
    /// The key's workspace, set when the key is indexed. Verification reads
    /// it through this pointer: no map lookup, no shared lock.
    pub workspace: Option<Arc<WorkspaceSlot>>,
}

impl LiveKey {
    pub(crate) fn new(record: KeyRecord, usage: Arc<UsageCell>) -> Self {
        let has_key_limits = !record.policy.limits.is_empty() || !record.policy.tool_limits.is_empty();
        Self { record, usage, has_key_limits, workspace: None }
    }

    pub(crate) fn policy(&self) -> &KeyPolicy {
        &self.record.policy
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
    pub master_key: Option<Arc<zeroize::Zeroizing<Vec<u8>>>>,
    pub snapshot_key: Option<Arc<zeroize::Zeroizing<Vec<u8>>>>,
    pub strict_credits: bool,
    pub session_ttl_ms: u64,
    pub session_mint_limit: RateLimit,
}

/// The database handle. redb can panic while dropping a handle to a damaged
/// file; dropping through this wrapper contains that, so closing an engine on
/// a bad file never takes the host process down.
pub(crate) struct Db(Option<Database>);

impl std::ops::Deref for Db {
    type Target = Database;
    fn deref(&self) -> &Database {
        // Invariant: the option is `Some` from construction until `drop`.
        #[allow(clippy::expect_used)]
        self.0.as_ref().expect("database handle present until drop")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
        }
    }
}

pub(crate) struct Inner {
    pub db: Db,
    pub path: PathBuf,
    pub opts: Options,
    pub by_hash: DigestMap<Arc<LiveKey>>,
    pub by_id: DashMap<KeyId, Arc<LiveKey>>,
    pub workspaces: DashMap<WorkspaceId, Arc<WorkspaceSlot>>,
    pub sessions: DigestMap<SessionRecord>,
    pub any_imported: AtomicBool,
    /// Serialises admin writes so the in-memory index changes in commit order.
    pub write_lock: Mutex<()>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The keyward engine: one redb file, an in-memory index, and the decisions of
/// `keyward-core`. Cheap to share: wrap it in an `Arc` or use [`Engine::clone`].
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    flusher: Arc<FlusherHandle>,
}

struct FlusherHandle {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FlusherHandle {
    fn drop(&mut self) {
        stop_flusher(&self.inner, &self.thread);
        // A final flush; errors cannot be reported from drop.
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

    /// Opens (or creates, with mode 0600) the database at `path`.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Engine> {
        if self.opts.master_key.as_ref().is_some_and(|k| k.len() < 32) {
            return Err(Error::invalid("master_key", "must be at least 32 bytes"));
        }
        if self.opts.snapshot_key.as_ref().is_some_and(|k| k.len() < keyward_core::SNAPSHOT_MIN_KEY_LEN) {
            return Err(Error::invalid("snapshot_key", "must be at least 16 bytes"));
        }
        let path = path.as_ref().to_path_buf();
        // redb can panic on some damaged files instead of returning an error;
        // a damaged file must give a clear error, so contain that here.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.open_inner(path.clone())));
        let inner = match opened {
            Ok(result) => result?,
            Err(_) => return Err(Error::Corrupt(format!("{}: the storage engine could not read it", path.display()))),
        };
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("keyward-flush".into())
            .spawn(move || worker.flush_loop())
            .map_err(|e| Error::Io(e.to_string()))?;
        let flusher = Arc::new(FlusherHandle { inner: Arc::clone(&inner), thread: Mutex::new(Some(thread)) });
        Ok(Engine { inner, flusher })
    }

    fn open_inner(self, path: PathBuf) -> Result<Arc<Inner>> {
        let db = Db(Some(open_db(&path)?));
        let inner = Arc::new(Inner {
            db,
            path,
            opts: self.opts,
            // Many shards: two verifications rarely share a shard lock's cache line.
            by_hash: DigestMap::with_capacity_and_hasher_and_shard_amount(0, Default::default(), SHARDS),
            by_id: DashMap::with_capacity_and_hasher_and_shard_amount(0, Default::default(), SHARDS),
            workspaces: DashMap::new(),
            sessions: DigestMap::default(),
            any_imported: AtomicBool::new(false),
            write_lock: Mutex::new(()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        inner.init_schema()?;
        inner.load()?;
        Ok(inner)
    }
}

fn open_db(path: &Path) -> Result<Database> {
    let shown = path.display().to_string();
    let exists = path.exists();
    if !exists {
        create_private_file(path)?;
    } else if path.is_dir() {
        return Err(Error::Io(format!("{shown} is a directory")));
    }
    let result = Database::builder().create(path);
    match result {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::InUse(shown)),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
            // redb reports a file that is not a redb database as an I/O error
            // of kind InvalidData.
            if e.kind() == std::io::ErrorKind::InvalidData {
                Err(Error::Corrupt(format!("{shown}: {e}")))
            } else {
                Err(Error::Io(format!("{shown}: {e}")))
            }
        }
        Err(e) => Err(Error::Corrupt(format!("{shown}: {e}"))),
    }
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(drop)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
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

    /// Flushes and stops the background writer. The engine stays usable, but
    /// counters are then written only by [`Engine::flush`] and on drop.
    pub fn close(&self) -> Result<()> {
        stop_flusher(&self.inner, &self.flusher.thread);
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
}

impl Inner {
    pub(crate) fn now(&self) -> UnixMillis {
        self.opts.clock.now()
    }

    fn init_schema(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(table_err)?;
            let magic = meta.get(MAGIC_KEY)?.map(|v| v.value().to_vec());
            let version = meta.get(SCHEMA_KEY)?.map(|v| v.value().to_vec());
            match (magic, version) {
                (None, None) => {
                    // A new file, or a redb file that is not ours: refuse the latter.
                    let foreign = txn.list_tables()?.any(|t| t.name() != META.name());
                    if foreign {
                        return Err(Error::Corrupt("a redb database, but not a keyward one".into()));
                    }
                    meta.insert(MAGIC_KEY, MAGIC)?;
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
                (Some(m), Some(v)) if m == MAGIC => {
                    let found = <[u8; 4]>::try_from(v.as_slice())
                        .map(u32::from_le_bytes)
                        .map_err(|_| Error::Corrupt("bad schema version record".into()))?;
                    if found > SCHEMA_VERSION {
                        return Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION });
                    }
                    // Upgrade path: each older version gets a migration step
                    // here, run in this transaction. Version 1 is the first.
                }
                _ => return Err(Error::Corrupt("missing or foreign meta records".into())),
            }
            for def in [WORKSPACES, KEYS, USAGE] {
                txn.open_table(def).map_err(table_err)?;
            }
            txn.open_table(TOOLS).map_err(table_err)?;
            txn.open_table(SESSIONS).map_err(table_err)?;
            txn.open_table(AUDIT).map_err(table_err)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn load(&self) -> Result<()> {
        let txn = self.db.begin_read()?;
        let ws_table = txn.open_table(WORKSPACES).map_err(table_err)?;
        for row in ws_table.iter()? {
            let (_, v) = row?;
            let ws: Workspace = decode_record(v.value())?;
            self.workspaces.insert(ws.policy.id, WorkspaceSlot::new(LiveWorkspace { ws, tools: HashMap::new() }));
        }
        let tools = txn.open_table(TOOLS).map_err(table_err)?;
        for row in tools.iter()? {
            let (_, v) = row?;
            let tool: ToolRecord = decode_record(v.value())?;
            let ws_id = tool.policy.workspace;
            let Some(slot) = self.workspaces.get(&ws_id) else {
                return Err(Error::Corrupt(format!("tool {} of missing workspace {ws_id}", tool.policy.name)));
            };
            let mut live = LiveWorkspace::clone(&slot.current.load());
            live.tools.insert(tool.policy.name.clone(), Arc::new(tool));
            slot.current.store(Arc::new(live));
        }
        let usage_table = txn.open_table(USAGE).map_err(table_err)?;
        let mut cells: HashMap<KeyId, Arc<UsageCell>> = HashMap::new();
        for row in usage_table.iter()? {
            let (k, v) = row?;
            let id = KeyId(*k.value());
            cells.insert(id, Arc::new(UsageCell::from_record(id, decode_record(v.value())?)));
        }
        let keys = txn.open_table(KEYS).map_err(table_err)?;
        let mut records = Vec::new();
        for row in keys.iter()? {
            let (_, v) = row?;
            records.push(decode_record::<KeyRecord>(v.value())?);
        }
        for rec in records {
            let owner = rec.usage_owner.unwrap_or(rec.policy.id);
            let cell = cells
                .entry(owner)
                .or_insert_with(|| Arc::new(UsageCell::from_record(owner, UsageRecord::default())))
                .clone();
            self.index_key(LiveKey::new(rec, cell));
        }
        let sessions = txn.open_table(SESSIONS).map_err(table_err)?;
        for row in sessions.iter()? {
            let (k, v) = row?;
            self.sessions.insert(*k.value(), decode_record(v.value())?);
        }
        Ok(())
    }

    pub(crate) fn index_key(&self, mut live: LiveKey) {
        if live.record.policy.imported {
            self.any_imported.store(true, Ordering::Release);
        }
        live.workspace = self.workspaces.get(&live.record.policy.workspace).map(|s| Arc::clone(&s));
        let live = Arc::new(live);
        self.by_hash.insert(live.record.policy.hash.0, Arc::clone(&live));
        self.by_id.insert(live.record.policy.id, live);
    }

    pub(crate) fn unindex_key(&self, id: KeyId) {
        if let Some((_, live)) = self.by_id.remove(&id) {
            self.by_hash.remove(&live.record.policy.hash.0);
        }
    }

    /// Runs `f` in a write transaction under the admin write lock and commits.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // As on open: a damaged file must give an error, not a panic.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let txn = self.db.begin_write()?;
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        }))
        .unwrap_or_else(|_| Err(Error::Corrupt("the storage engine failed while writing".into())))
    }

    fn flush_loop(self: Arc<Self>) {
        let interval = self.opts.flush_interval;
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
            // Errors are retried at the next tick: the dirty flags of cells
            // that failed to write are set again.
            let _ = self.flush();
            stopped = self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Writes every dirty usage cell in one transaction.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut batch: Vec<(KeyId, Arc<UsageCell>)> = Vec::new();
        for entry in self.by_id.iter() {
            let cell = &entry.value().usage;
            // Shared cells are written once, under their owner.
            if cell.owner == *entry.key() && cell.dirty.swap(false, Ordering::AcqRel) {
                batch.push((cell.owner, Arc::clone(cell)));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let result = (|| -> Result<()> {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(USAGE).map_err(table_err)?;
                for (id, cell) in &batch {
                    t.insert(&id.0, encode_record(&cell.to_record()).as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if result.is_err() {
            for (_, cell) in &batch {
                cell.dirty.store(true, Ordering::Release);
            }
        }
        result
    }

    /// Writes one key's counters now (strict credits, signed sessions).
    pub(crate) fn persist_usage(&self, txn: &WriteTransaction, cell: &UsageCell, record: &UsageRecord) -> Result<()> {
        let mut t = txn.open_table(USAGE).map_err(table_err)?;
        t.insert(&cell.owner.0, encode_record(record).as_slice())?;
        Ok(())
    }

    pub(crate) fn workspace(&self, id: WorkspaceId) -> Result<Arc<LiveWorkspace>> {
        self.workspaces.get(&id).map(|w| w.current.load_full()).ok_or_else(|| Error::not_found("workspace", id))
    }

    pub(crate) fn key(&self, id: KeyId) -> Result<Arc<LiveKey>> {
        self.by_id.get(&id).map(|k| Arc::clone(&k)).ok_or_else(|| Error::not_found("key", id))
    }
}

pub(crate) fn table_err(e: redb::TableError) -> Error {
    Error::Storage(e.to_string())
}
