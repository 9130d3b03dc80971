//! The embedded store: one redb file (or a caller's [`StorageBackend`]).
//!
//! redb can panic on some damaged files instead of returning an error, and
//! after a failed write it refuses every later one until the database is
//! opened again. This store contains the panics (a damaged file gives
//! `Error::Corrupt`, never a crash) and, after a failed commit, reopens the
//! database before the next one, so the engine recovers when the disk does.

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use keyward_core::policy::{decode_record, encode_record};
use keyward_core::signature::NonceState;
use keyward_core::{Code, KeyId, WorkspaceId};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageBackend, TableHandle, WriteTransaction,
};

use super::tables::{
    AUDIT, AUDIT_HIGH_KEY, HISTORY, KEYS, LAST_USED, MAGIC, MAGIC_KEY, META, NONCES, SCHEMA_KEY, SCHEMA_VERSION,
    SERIALS, SESSIONS, TOOLS, USAGE, WORKSPACES,
};
use super::{AuditKeep, Batch, Change, EncodedRun, Loaded, LoadedKeys, Store};
use crate::error::{Error, Result};
use crate::history::{self, Granularity, HistoryBucket, HistoryDelta};
use crate::model::{AuditEvent, KeyRecord, Page, SessionRecord, ToolRecord, UsageRecord, Workspace};

/// How to open the database again after a failed write.
enum Source {
    /// A file, opened with this read cache (bytes).
    File(PathBuf, usize),
    Backend(Box<dyn Fn() -> Result<Database> + Send + Sync>),
}

/// The database handle. redb can panic while dropping a handle to a damaged
/// file; dropping through this wrapper contains that, so closing an engine on
/// a bad file never takes the host process down.
struct Db<D = Database>(Option<D>);

impl<D> Drop for Db<D> {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
        }
    }
}

/// The redb store.
pub(crate) struct RedbStore {
    source: Source,
    label: String,
    /// `None` after a failed write, until it is opened again.
    db: RwLock<Db>,
    /// Opened without a page cache, to be opened again with its cache once
    /// the index is loaded ([`RedbStore::open_for_index`]).
    uncached: std::sync::atomic::AtomicBool,
}

impl RedbStore {
    /// Opens (or creates, with mode 0600) the file at `path`, with a page
    /// cache of at most `cache` bytes.
    pub(crate) fn open(path: &Path, cache: usize) -> Result<Self> {
        let label = path.display().to_string();
        let db = contain(&label, || open_file(path, cache))?;
        Self::init(Source::File(path.to_path_buf(), cache), label, db)
    }

    /// Opens a database on `backend`; `reopen` gives a fresh handle on the
    /// same storage after a failed write.
    pub(crate) fn open_backend<B: StorageBackend + Clone>(backend: B, cache: usize) -> Result<Self> {
        let label = "storage backend".to_owned();
        let make = move || {
            redb::Builder::new()
                .set_cache_size(cache)
                .create_with_backend(backend.clone())
                .map_err(|e| open_error("storage backend", e))
        };
        let db = contain(&label, &make)?;
        Self::init(Source::Backend(Box::new(make)), label, db)
    }

    /// [`RedbStore::open`] for an engine: the file is opened without a page
    /// cache until [`Store::load_index`] has read every record, then again
    /// with a cache of `cache` bytes. The load reads every page of the key
    /// tables once; a cache would keep them all (about 200 bytes per key),
    /// though verification never reads the file. Between the two opens
    /// another process could take the file: the open then fails
    /// ([`Error::InUse`]).
    pub(crate) fn open_for_index(path: &Path, cache: usize) -> Result<Self> {
        let label = path.display().to_string();
        let db = contain(&label, || open_file(path, 0))?;
        let store = Self::init(Source::File(path.to_path_buf(), cache), label, db)?;
        store.uncached.store(cache > 0, std::sync::atomic::Ordering::Relaxed);
        Ok(store)
    }

    fn init(source: Source, label: String, db: Database) -> Result<Self> {
        let store = Self { source, label, db: RwLock::new(Db(Some(db))), uncached: Default::default() };
        store.run(init_schema)?;
        Ok(store)
    }

    fn handle(&self) -> RwLockReadGuard<'_, Db> {
        // Poisoning: a panic inside redb is contained where it happens; the
        // handle itself is still whole (or None).
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the open database, containing a panic of redb's.
    fn run<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let guard = self.handle();
        let Some(db) = guard.0.as_ref() else {
            return Err(Error::Storage(format!("{}: not open after a failed write", self.label)));
        };
        contain(&self.label, || f(db))
    }

    /// After a failed write redb refuses further writes on this handle:
    /// drop it and open the storage again.
    fn reopen(&self) -> Result<()> {
        let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
        *guard = Db(None);
        let db = match &self.source {
            Source::File(path, cache) => contain(&self.label, || open_file(path, *cache))?,
            Source::Backend(make) => contain(&self.label, make)?,
        };
        *guard = Db(Some(db));
        Ok(())
    }
}

/// Runs `f`, turning a panic into `Error::Corrupt`.
fn contain<T>(label: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::Corrupt(format!("{label}: the storage engine failed"))))
}

fn open_file(path: &Path, cache: usize) -> Result<Database> {
    let shown = path.display().to_string();
    if !path.exists() {
        create_private_file(path)?;
    } else if path.is_dir() {
        return Err(Error::Io(format!("{shown} is a directory")));
    }
    Database::builder().set_cache_size(cache).create(path).map_err(|e| open_error(&shown, e))
}

fn open_error(shown: &str, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse(shown.to_owned()),
        // redb reports a file that is not a redb database as an I/O error of
        // kind InvalidData.
        redb::DatabaseError::Storage(redb::StorageError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            Error::Corrupt(format!("{shown}: {e}"))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(e)) => Error::Io(format!("{shown}: {e}")),
        e => Error::Corrupt(format!("{shown}: {e}")),
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

fn table_err(e: redb::TableError) -> Error {
    Error::Storage(e.to_string())
}

fn init_schema(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
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
                if found < 2 {
                    migrate_nonces(&txn)?;
                }
                if found < SCHEMA_VERSION {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
            }
            _ => return Err(Error::Corrupt("missing or foreign meta records".into())),
        }
        for def in [WORKSPACES, KEYS, USAGE, NONCES] {
            txn.open_table(def).map_err(table_err)?;
        }
        txn.open_table(TOOLS).map_err(table_err)?;
        txn.open_table(SESSIONS).map_err(table_err)?;
        txn.open_table(AUDIT).map_err(table_err)?;
        txn.open_table(SERIALS).map_err(table_err)?;
        txn.open_table(HISTORY).map_err(table_err)?;
        txn.open_table(LAST_USED).map_err(table_err)?;
    }
    txn.commit()?;
    Ok(())
}

/// Version 1 → 2: nonce histories move from the (shared) usage record to
/// one record per key. A key that shared its successor's counters during a
/// rotation grace takes a copy of the shared history, so nothing recorded
/// can replay.
fn migrate_nonces(txn: &WriteTransaction) -> Result<()> {
    let mut shared: Vec<(KeyId, NonceState)> = Vec::new();
    {
        let usage = txn.open_table(USAGE).map_err(table_err)?;
        for row in usage.iter()? {
            let (k, v) = row?;
            let rec: UsageRecord = decode_record(v.value())?;
            if rec.nonce != NonceState::default() {
                shared.push((KeyId(*k.value()), rec.nonce));
            }
        }
    }
    let mut owners: Vec<(KeyId, KeyId)> = Vec::new();
    {
        let keys = txn.open_table(KEYS).map_err(table_err)?;
        for row in keys.iter()? {
            let (_, v) = row?;
            let rec = KeyRecord::decode(v.value())?;
            owners.push((rec.policy.id, rec.usage_owner.unwrap_or(rec.policy.id)));
        }
    }
    let mut nonces = txn.open_table(NONCES).map_err(table_err)?;
    for (key, owner) in owners {
        if let Some((_, state)) = shared.iter().find(|(o, _)| *o == owner) {
            nonces.insert(&key.0, encode_record(state).as_slice())?;
        }
    }
    Ok(())
}

/// Adds a delta's calls to the minute, hour and day buckets of its subject,
/// and removes that subject's buckets past their retention.
fn add_history(txn: &WriteTransaction, delta: &HistoryDelta) -> Result<()> {
    let mut t = txn.open_table(HISTORY).map_err(table_err)?;
    let subject = &delta.subject;
    for g in Granularity::ALL {
        let mut buckets: Vec<HistoryBucket> = Vec::new();
        for &(start, code, n) in &delta.counts {
            history::add(&mut buckets, g.start_of(start), code, n);
        }
        for b in buckets {
            let key = (subject, g.tag(), b.start.get());
            let mut counts: Vec<(Code, u64)> = match t.get(key)? {
                Some(v) => decode_record(v.value())?,
                None => Vec::new(),
            };
            for (code, n) in b.counts {
                history::add_count(&mut counts, code, n);
            }
            t.insert(key, encode_record(&counts).as_slice())?;
        }
        let cutoff = delta.now.get().saturating_sub(g.retention_ms());
        t.retain_in((subject, g.tag(), 0)..(subject, g.tag(), g.start_of(cutoff)), |_, _| false)?;
    }
    Ok(())
}

/// The highest audit sequence number handed out before the last trim (0
/// if none was).
fn audit_high(txn: &WriteTransaction) -> Result<u64> {
    let meta = txn.open_table(META).map_err(table_err)?;
    let high = meta.get(AUDIT_HIGH_KEY)?.map(|v| v.value().to_vec());
    match high {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| Error::Corrupt("bad audit sequence record".into())),
    }
}

/// Removes the oldest audit events `keep` does not keep. The highest
/// sequence number is noted first, so an emptied log continues after it.
fn trim_audit(txn: &WriteTransaction, audit: &mut redb::Table<'_, u64, &[u8]>, keep: AuditKeep) -> Result<()> {
    let Some(last) = audit.last()?.map(|(k, _)| k.value()) else { return Ok(()) };
    txn.open_table(META).map_err(table_err)?.insert(AUDIT_HIGH_KEY, last.to_le_bytes().as_slice())?;
    // The first sequence number kept.
    let first_kept = match keep {
        AuditKeep::Last(n) => last.saturating_sub(n.max(1)).saturating_add(1),
        AuditKeep::Since(at) => {
            let mut first = last.saturating_add(1);
            for row in audit.iter()? {
                let (k, v) = row?;
                let ev: AuditEvent = decode_record(v.value())?;
                if ev.at >= at {
                    first = k.value();
                    break;
                }
            }
            first
        }
    };
    audit.retain_in(..first_kept, |_, _| false)?;
    Ok(())
}

/// Buckets of `subject` at `g` starting in `from..to`.
fn read_history(
    db: &impl ReadableDatabase,
    subject: [u8; 16],
    g: Granularity,
    from: u64,
    to: u64,
) -> Result<Vec<HistoryBucket>> {
    let txn = db.begin_read()?;
    let t = match txn.open_table(HISTORY) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(table_err(e)),
    };
    let mut out = Vec::new();
    for row in t.range((&subject, g.tag(), from)..(&subject, g.tag(), to))? {
        let (k, v) = row?;
        let (_, _, start) = k.value();
        out.push(HistoryBucket { start: keyward_core::UnixMillis(start), counts: decode_record(v.value())? });
    }
    Ok(out)
}

/// Writes `batch` into `txn`; returns the last audit sequence number given.
fn apply(txn: &WriteTransaction, batch: &Batch) -> Result<Option<u64>> {
    // Each table opened once per commit, not once per change: a batch of
    // thousands of keys writes them into the same open table.
    let mut workspaces = txn.open_table(WORKSPACES).map_err(table_err)?;
    let mut tools = txn.open_table(TOOLS).map_err(table_err)?;
    let mut keys = txn.open_table(KEYS).map_err(table_err)?;
    let mut usage = txn.open_table(USAGE).map_err(table_err)?;
    let mut nonces = txn.open_table(NONCES).map_err(table_err)?;
    let mut sessions = txn.open_table(SESSIONS).map_err(table_err)?;
    let mut audit = txn.open_table(AUDIT).map_err(table_err)?;
    let mut audited = None;
    for change in &batch.changes {
        match change {
            Change::Workspace(ws) => {
                workspaces.insert(&ws.policy.id.0, encode_record(ws).as_slice())?;
            }
            Change::Tool(t) => {
                let key = (&t.policy.workspace.0, t.policy.name.as_str());
                tools.insert(key, encode_record(t).as_slice())?;
            }
            Change::Key(rec) => {
                keys.insert(&rec.policy.id.0, encode_record(rec).as_slice())?;
            }
            Change::KeyDeleted(id) => {
                keys.remove(&id.0)?;
                txn.open_table(LAST_USED).map_err(table_err)?.remove(&id.0)?;
                // Its history goes with it (a workspace's keeps its calls).
                let mut history = txn.open_table(HISTORY).map_err(table_err)?;
                history.retain_in((&id.0, 0, 0)..=(&id.0, u8::MAX, u64::MAX), |_, _| false)?;
            }
            Change::History(delta) => add_history(txn, delta)?,
            Change::LastUsed(id, at) => {
                let mut t = txn.open_table(LAST_USED).map_err(table_err)?;
                let seen = t.get(&id.0)?.map_or(0, |v| v.value());
                t.insert(&id.0, seen.max(*at))?;
            }
            // One node: the counters in memory are the only ones.
            Change::Usage(id, rec) | Change::UsageAt(id, _, rec) => {
                usage.insert(&id.0, encode_record(rec).as_slice())?;
            }
            Change::UsageStats(id, stats) => {
                let mut rec: UsageRecord = match usage.get(&id.0)? {
                    Some(v) => decode_record(v.value())?,
                    None => UsageRecord::default(),
                };
                rec.add_stats(stats);
                usage.insert(&id.0, encode_record(&rec).as_slice())?;
            }
            Change::UsageDeleted(id) => {
                usage.remove(&id.0)?;
            }
            Change::Nonce(id, state) => {
                nonces.insert(&id.0, encode_record(state).as_slice())?;
            }
            Change::NonceDeleted(id) => {
                nonces.remove(&id.0)?;
            }
            Change::Session(hash, rec) => {
                sessions.insert(hash, encode_record(rec).as_slice())?;
            }
            Change::SessionDeleted(hash) => {
                sessions.remove(hash)?;
            }
            Change::Probe => {}
            Change::AuditTrim(keep) => trim_audit(txn, &mut audit, *keep)?,
            Change::AuditFrom(high) => {
                if audit.last()?.is_none() && audit_high(txn)? < *high {
                    txn.open_table(META).map_err(table_err)?.insert(AUDIT_HIGH_KEY, high.to_le_bytes().as_slice())?;
                }
            }
            Change::Serial(ws, n) => {
                let mut t = txn.open_table(SERIALS).map_err(table_err)?;
                let high = t.get(&ws.0)?.map_or(0, |v| v.value());
                t.insert(&ws.0, high.max(*n))?;
            }
            Change::Audit(d) => {
                let last = match audit.last()? {
                    Some((k, _)) => k.value(),
                    // Every event trimmed: continue after the last one.
                    None => audit_high(txn)?,
                };
                let seq = last + 1;
                audit.insert(seq, encode_record(&d.event(seq)).as_slice())?;
                audited = Some(seq);
            }
        }
    }
    Ok(audited)
}

impl Store for RedbStore {
    fn commit(&self, batch: &Batch) -> Result<Option<u64>> {
        let needs_reopen = self.handle().0.is_none();
        if needs_reopen {
            self.reopen()?;
        }
        let result = self.run(|db| {
            let txn = db.begin_write()?;
            let audited = apply(&txn, batch)?;
            txn.commit()?;
            Ok(audited)
        });
        if matches!(result, Err(Error::Storage(_) | Error::Corrupt(_) | Error::Io(_))) {
            // The handle may be unusable now (redb latches I/O failures):
            // open it again before the next write. Reads keep answering
            // from memory meanwhile.
            let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
            *guard = Db(None);
        }
        result
    }

    fn load(&self) -> Result<Loaded> {
        self.run(|db| read_all(db, None))
    }

    fn load_index(&self) -> Result<(Loaded, LoadedKeys)> {
        let mut keys = Vec::new();
        let loaded = self.run(|db| read_all(db, Some(&mut keys)))?;
        if self.uncached.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.reopen()?;
        }
        Ok((loaded, LoadedKeys::Encoded(keys)))
    }

    fn audit(&self, ws: Option<WorkspaceId>, after: u64, limit: usize) -> Result<Page<AuditEvent>> {
        self.run(|db| read_audit(db, ws, after, limit))
    }

    fn history(&self, subject: [u8; 16], granularity: Granularity, from: u64, to: u64) -> Result<Vec<HistoryBucket>> {
        self.run(|db| read_history(db, subject, granularity, from, to))
    }

    fn check(&self) -> Result<usize> {
        self.run(|db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(KEYS).map_err(table_err)?;
            let mut n = 0;
            for row in t.iter()? {
                KeyRecord::decode(row?.1.value())?;
                n += 1;
            }
            Ok(n)
        })
    }
}

/// Keys per run below which the key table is read as one run.
const MIN_KEYS_PER_RUN: usize = 20_000;

type KeyTable = redb::ReadOnlyTable<&'static [u8; 16], &'static [u8]>;

/// The key records, encoded, in runs of ids read on every core. The runs
/// split the ids between the first and the last in equal shares: key ids
/// begin with their creation time and end with random bits (and older ones
/// are random throughout), so equal shares hold about as many keys unless
/// the keys were made at very uneven rates.
fn read_key_runs(keys: &KeyTable, n: usize) -> Result<Vec<EncodedRun>> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let runs = cores.min(n / MIN_KEYS_PER_RUN).clamp(1, 256);
    let first = keys.first()?.map_or(0, |(id, _)| u128::from_be_bytes(*id.value()));
    let last = keys.last()?.map_or(0, |(id, _)| u128::from_be_bytes(*id.value()));
    let step = last.saturating_sub(first) / runs as u128;
    // Run `i` holds the ids from `start(i)` (none: the first) to `start(i + 1)`.
    let start = |i: usize| -> Option<[u8; 16]> {
        (i > 0 && i < runs).then(|| first.saturating_add(step.saturating_mul(i as u128)).to_be_bytes())
    };
    let read = |i: usize| -> Result<EncodedRun> {
        let (lo, hi) = (start(i), start(i + 1));
        let rows = match (&lo, &hi) {
            (None, None) => keys.iter()?,
            (Some(lo), None) => keys.range::<&[u8; 16]>(lo..)?,
            (None, Some(hi)) => keys.range::<&[u8; 16]>(..hi)?,
            (Some(lo), Some(hi)) => keys.range::<&[u8; 16]>(lo..hi)?,
        };
        let mut run = EncodedRun { bytes: Vec::with_capacity(n / runs * 128), ends: Vec::with_capacity(n / runs) };
        for row in rows {
            run.bytes.extend_from_slice(row?.1.value());
            run.ends.push(run.bytes.len());
        }
        Ok(run)
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..runs).map(|i| s.spawn(move || read(i))).collect();
        let mut out = vec![read(0)?];
        for h in handles {
            out.push(h.join().unwrap_or_else(|_| Err(Error::Corrupt("the key table could not be read".into())))?);
        }
        Ok(out)
    })
}

/// Reads everything the in-memory index is built from, in one read
/// transaction. With `encoded`, the key records are left encoded there, in
/// runs of ids (see [`LoadedKeys::Encoded`]), not decoded.
fn read_all(db: &impl ReadableDatabase, encoded: Option<&mut Vec<EncodedRun>>) -> Result<Loaded> {
    let txn = db.begin_read()?;
    let mut out = Loaded::default();
    for row in txn.open_table(WORKSPACES).map_err(table_err)?.iter()? {
        out.workspaces.push(Workspace::decode(row?.1.value())?);
    }
    for row in txn.open_table(TOOLS).map_err(table_err)?.iter()? {
        out.tools.push(ToolRecord::decode(row?.1.value())?);
    }
    let keys = txn.open_table(KEYS).map_err(table_err)?;
    match encoded {
        Some(runs) => {
            let n = usize::try_from(keys.len()?).unwrap_or(0);
            *runs = read_key_runs(&keys, n)?;
        }
        None => {
            for row in keys.iter()? {
                out.keys.push(KeyRecord::decode(row?.1.value())?);
            }
        }
    }
    drop(keys);
    for row in txn.open_table(USAGE).map_err(table_err)?.iter()? {
        let (k, v) = row?;
        out.usage.push((KeyId(*k.value()), decode_record(v.value())?));
    }
    for row in txn.open_table(NONCES).map_err(table_err)?.iter()? {
        let (k, v) = row?;
        out.nonces.push((KeyId(*k.value()), decode_record(v.value())?));
    }
    for row in txn.open_table(SESSIONS).map_err(table_err)?.iter()? {
        let (k, v) = row?;
        out.sessions.push((*k.value(), decode_record::<SessionRecord>(v.value())?));
    }
    match txn.open_table(SERIALS) {
        Ok(t) => {
            for row in t.iter()? {
                let (k, v) = row?;
                out.serials.push((WorkspaceId(*k.value()), v.value()));
            }
        }
        // A file opened read-only, written before keys had serials.
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(table_err(e)),
    }
    match txn.open_table(LAST_USED) {
        Ok(t) => {
            for row in t.iter()? {
                let (k, v) = row?;
                out.last_used.push((KeyId(*k.value()), v.value()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(table_err(e)),
    }
    Ok(out)
}

/// Audit events after `after`, oldest first, of one workspace or all.
fn read_audit(
    db: &impl ReadableDatabase,
    ws: Option<WorkspaceId>,
    after: u64,
    limit: usize,
) -> Result<Page<AuditEvent>> {
    let txn = db.begin_read()?;
    let t = txn.open_table(AUDIT).map_err(table_err)?;
    let mut items = Vec::with_capacity(limit);
    let mut more = false;
    for row in t.range(after.saturating_add(1)..)? {
        let (_, v) = row?;
        let ev: AuditEvent = decode_record(v.value())?;
        if ws.is_some() && ev.workspace != ws {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(ev);
    }
    let next_cursor = if more { items.last().map(|e: &AuditEvent| e.seq.to_string()) } else { None };
    Ok(Page { items, next_cursor })
}

/// A keyward file opened read-only, to copy it (`store::copy`). Nothing is
/// written to it, not even an upgrade or a crash recovery: a file that needs
/// either is refused with a message that says what to do. Like
/// [`RedbStore`], it contains redb's panics.
///
/// redb refuses to open it while an engine holds the file
/// ([`Error::InUse`]), and an engine cannot open the file while it is open.
pub(crate) struct RedbReader {
    label: String,
    db: Db<redb::ReadOnlyDatabase>,
}

impl RedbReader {
    /// Opens the keyward file at `path`, which must exist.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let label = path.display().to_string();
        if path.is_dir() {
            return Err(Error::Io(format!("{label} is a directory")));
        }
        if !path.exists() {
            return Err(Error::Io(format!("{label}: no such file")));
        }
        let db = contain(&label, || {
            Database::builder().open_read_only(path).map_err(|e| match e {
                redb::DatabaseError::RepairAborted => Error::Storage(format!(
                    "{label} was not closed cleanly: open it once with keyward (any command) to recover it, \
                     then try again"
                )),
                e => open_error(&label, e),
            })
        })?;
        let reader = Self { label, db: Db(Some(db)) };
        reader.run(|db| check_schema(db, &reader.label))?;
        Ok(reader)
    }

    fn run<T>(&self, f: impl FnOnce(&redb::ReadOnlyDatabase) -> Result<T>) -> Result<T> {
        let Some(db) = self.db.0.as_ref() else {
            return Err(Error::Storage(format!("{}: not open", self.label)));
        };
        contain(&self.label, || f(db))
    }

    /// See [`Store::load`].
    pub(crate) fn load(&self) -> Result<Loaded> {
        self.run(|db| read_all(db, None))
    }

    /// See [`Store::audit`] (every workspace).
    pub(crate) fn audit(&self, after: u64, limit: usize) -> Result<Page<AuditEvent>> {
        self.run(|db| read_audit(db, None, after, limit))
    }
}

/// The meta records of a file opened read-only: ours, at this build's
/// schema version (an older file needs the upgrade an engine runs on open).
fn check_schema(db: &redb::ReadOnlyDatabase, label: &str) -> Result<()> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(Error::Corrupt(format!("{label}: a redb database, but not a keyward one")));
        }
        Err(e) => return Err(table_err(e)),
    };
    let magic = meta.get(MAGIC_KEY)?.map(|v| v.value().to_vec());
    let version = meta.get(SCHEMA_KEY)?.map(|v| v.value().to_vec());
    let (Some(magic), Some(version)) = (magic, version) else {
        return Err(Error::Corrupt(format!("{label}: missing or foreign meta records")));
    };
    if magic != MAGIC {
        return Err(Error::Corrupt(format!("{label}: missing or foreign meta records")));
    }
    let found = <[u8; 4]>::try_from(version.as_slice())
        .map(u32::from_le_bytes)
        .map_err(|_| Error::Corrupt(format!("{label}: bad schema version record")))?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    if found < SCHEMA_VERSION {
        return Err(Error::Conflict(format!(
            "{label} has schema version {found}, older than this build's ({SCHEMA_VERSION}): open it once with \
             this keyward (any command) to upgrade it, then try again"
        )));
    }
    Ok(())
}
