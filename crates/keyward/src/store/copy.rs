//! Copying everything one store holds into another, empty one: how a
//! deployment moves from its redb file to Redis, back, or to a new file
//! (`keyward store copy`; `docs/cluster.md`, "Moving over").
//!
//! The source is only read. A redb source is opened read-only, which redb
//! refuses while an engine holds the file (and an engine cannot open it
//! while the copy runs), so nothing writes it meanwhile. A Redis source can
//! still be written by its nodes: the copy detects an audited change that
//! lands while it reads and fails rather than leave a copy of no one
//! instant; counters and sessions written meanwhile are not detected, so
//! stop the nodes first for an exact copy.
//!
//! The audit log is copied first, in order, so the destination numbers each
//! event as the source did; then the records. Neither ever goes into one
//! batch whole: every commit holds at most [`BATCH`] changes.

use std::fmt;
use std::path::{Path, PathBuf};

use super::redb::{RedbReader, RedbStore};
#[cfg(feature = "redis")]
use super::redis::{RedisStore, shown};
use super::{AuditDraft, Batch, Change, Loaded, Store};
use crate::error::{Error, Result};
use crate::model::{AuditEvent, Page};

/// Changes per commit, at most.
const BATCH: usize = 1000;

/// Where a store lives.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// A redb file, as [`EngineBuilder::open`](crate::EngineBuilder::open) opens.
    Redb(PathBuf),
    /// A Redis database (any URL
    /// [`EngineBuilder::open_redis`](crate::EngineBuilder::open_redis)
    /// opens), with the CA certificate (PEM) to trust over TLS, if not the
    /// system's roots.
    #[cfg(feature = "redis")]
    Redis {
        /// Its URL.
        url: String,
        /// A CA certificate, PEM.
        ca: Option<Vec<u8>>,
    },
}

impl StoreLocation {
    /// A Redis database at `url`, trusting the system's roots over TLS.
    #[cfg(feature = "redis")]
    pub fn redis(url: impl Into<String>) -> Self {
        Self::Redis { url: url.into(), ca: None }
    }

    /// Whether both name the same store (a file under two paths included).
    fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Redb(a), Self::Redb(b)) => {
                a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
            }
            #[cfg(feature = "redis")]
            (Self::Redis { url: a, .. }, Self::Redis { url: b, .. }) => a == b,
            #[cfg(feature = "redis")]
            _ => false,
        }
    }
}

/// The path, or the URL without its password.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redb(path) => write!(f, "{}", path.display()),
            #[cfg(feature = "redis")]
            Self::Redis { url, .. } => f.write_str(&shown(url)),
        }
    }
}

/// Never shows a password of the URL.
impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redb(path) => f.debug_tuple("Redb").field(path).finish(),
            #[cfg(feature = "redis")]
            Self::Redis { url, .. } => f.debug_tuple("Redis").field(&shown(url)).finish(),
        }
    }
}

/// What a copy wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// Workspaces.
    pub workspaces: u64,
    /// Tools.
    pub tools: u64,
    /// Keys, of every status.
    pub keys: u64,
    /// Usage records (counters and totals; a rotated key shares its
    /// successor's).
    pub usage: u64,
    /// Nonce histories of signing identities.
    pub nonces: u64,
    /// Sessions of signed logins (expired ones included; an engine drops
    /// those when it opens the copy).
    pub sessions: u64,
    /// Audit events copied, each under its sequence number in the source
    /// (a Redis destination numbers a trimmed log's events from 1).
    pub audit_events: u64,
    /// Commits to the destination, each of at most 1,000 changes.
    pub commits: u64,
}

/// What a copy is copying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyStage {
    /// The audit log, oldest event first (its length is not known ahead).
    Audit,
    /// Workspaces, tools, keys, counters, nonces and sessions.
    Records,
}

/// Where a copy stands: handed to the callback of [`copy_store`] when a
/// stage begins and after each commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyProgress {
    /// The stage.
    pub stage: CopyStage,
    /// Items of this stage committed so far.
    pub done: u64,
    /// Items of this stage in all, once known (records: after the source
    /// was read; audit events: never).
    pub total: Option<u64>,
}

/// Why [`copy_store`] failed. Unless it is [`CopyError::Interrupted`], the
/// destination holds nothing of the copy: a redb file the copy created is
/// removed again, whenever it failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The source and the destination are the same store.
    #[error("{0} is both the source and the destination")]
    SameStore(String),
    /// The source could not be opened or read: missing, held by an engine
    /// ([`Error::InUse`]), unreachable, damaged, or a redb file that needs
    /// the upgrade or crash recovery an engine makes when it opens it.
    #[error("source {store}: {error}")]
    Source {
        /// The source, its password removed.
        store: String,
        /// What failed.
        error: Error,
    },
    /// The source holds no keyward data.
    #[error("source {0} holds no keyward data")]
    SourceEmpty(String),
    /// The destination could not be opened, read or written.
    #[error("destination {store}: {error}")]
    Destination {
        /// The destination, its password removed.
        store: String,
        /// What failed.
        error: Error,
    },
    /// The destination already holds keyward data.
    #[error("destination {store} already holds keyward data ({found}); copy only into an empty store")]
    DestinationNotEmpty {
        /// The destination, its password removed.
        store: String,
        /// What it holds, e.g. `1 workspace, 3 keys, an audit log`.
        found: String,
    },
    /// Audit events arrived in the source while it was copied: the records
    /// read may not match the log. Stop whatever writes the source, empty
    /// the destination, and copy again.
    #[error("source {store} changed while it was copied ({events} audit events after the copied ones)")]
    SourceChanged {
        /// The source, its password removed.
        store: String,
        /// Events after the last one copied.
        events: u64,
    },
    /// The copy failed after part of it was committed to a destination it
    /// did not create (a Redis database, or an empty redb file that was
    /// there before): empty it before copying into it again.
    #[error("{cause}; destination {store} now holds part of the copy: empty it before copying into it again")]
    Interrupted {
        /// The destination, its password removed.
        store: String,
        /// Why the copy stopped.
        cause: Box<CopyError>,
    },
}

/// Copies everything the store at `from` holds (workspaces, tools, keys,
/// usage counters, nonce histories, sessions and the whole audit log, each
/// event under its sequence number) into the empty store at `to`, which is
/// created if it is a redb file that does not exist yet. Keys keep their
/// tokens (only SHA-256 hashes are stored, and copied).
///
/// `progress` is called when a stage begins and after each commit, of at
/// most 1,000 changes each. `from` is only read: a redb source must not be
/// open in an engine (it is refused as [`Error::InUse`] if it is), and a
/// Redis source should not be written while it is copied (an audited change
/// made meanwhile fails the copy with [`CopyError::SourceChanged`]).
///
/// A destination that already holds keyward data is refused, and so is a
/// source that holds none, before anything is written. The master and
/// snapshot keys are not in any store: the destination's engines need the
/// source's.
///
/// ```
/// use keyward::{Actor, Engine, NewWorkspace, StoreLocation, copy_store};
///
/// let dir = tempfile::tempdir().unwrap();
/// let (from, to) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
/// let engine = Engine::open(&from).unwrap();
/// engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap();
/// drop(engine); // the source must not be open while it is copied
///
/// let report = copy_store(&StoreLocation::Redb(from), &StoreLocation::Redb(to.clone()), |_| {}).unwrap();
/// assert_eq!((report.workspaces, report.audit_events), (1, 1));
/// assert_eq!(Engine::open(&to).unwrap().workspaces().len(), 1);
/// ```
pub fn copy_store(
    from: &StoreLocation,
    to: &StoreLocation,
    mut progress: impl FnMut(CopyProgress),
) -> Result<CopyReport, CopyError> {
    if from.same_as(to) {
        return Err(CopyError::SameStore(to.to_string()));
    }
    let source = Source::open(from)?;
    if source.is_empty().map_err(source.failed())? {
        return Err(CopyError::SourceEmpty(from.to_string()));
    }
    let dest = Destination::open(to)?;
    let mut report = CopyReport::default();
    match copy(&source, &dest, &mut report, &mut progress) {
        Ok(()) => Ok(report),
        Err(cause) => Err(dest.abandon(cause, report.commits > 0)),
    }
}

/// The store copied from: read, never written.
enum Source {
    Redb(RedbReader, String),
    #[cfg(feature = "redis")]
    Redis(Box<RedisStore>, String),
}

impl Source {
    fn open(at: &StoreLocation) -> Result<Self, CopyError> {
        let label = at.to_string();
        let failed = |error| CopyError::Source { store: label.clone(), error };
        match at {
            StoreLocation::Redb(path) => Ok(Self::Redb(RedbReader::open(path).map_err(failed)?, label)),
            #[cfg(feature = "redis")]
            StoreLocation::Redis { url, ca } => {
                // Opening a Redis store writes the meta record into an empty
                // database: look first.
                if !RedisStore::provisioned(url, ca.as_deref()).map_err(failed)? {
                    return Err(CopyError::SourceEmpty(label));
                }
                Ok(Self::Redis(Box::new(RedisStore::open(url, ca.as_deref()).map_err(failed)?), label))
            }
        }
    }

    fn label(&self) -> &str {
        match self {
            Self::Redb(_, label) => label,
            #[cfg(feature = "redis")]
            Self::Redis(_, label) => label,
        }
    }

    /// Wraps an error of the source's.
    fn failed(&self) -> impl Fn(Error) -> CopyError + '_ {
        |error| CopyError::Source { store: self.label().to_owned(), error }
    }

    fn load(&self) -> Result<Loaded> {
        match self {
            Self::Redb(r, _) => r.load(),
            #[cfg(feature = "redis")]
            Self::Redis(s, _) => s.load(),
        }
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Page<AuditEvent>> {
        match self {
            Self::Redb(r, _) => r.audit(after, limit),
            #[cfg(feature = "redis")]
            Self::Redis(s, _) => s.audit(None, after, limit),
        }
    }

    fn is_empty(&self) -> Result<bool> {
        Ok(self.audit(0, 1)?.items.is_empty() && contents(&self.load()?, false).is_none())
    }
}

/// The store copied into.
struct Destination {
    store: Box<dyn Store>,
    label: String,
    /// The redb file this copy created, removed again if the copy fails.
    created: Option<PathBuf>,
}

impl Destination {
    /// Opens the store at `at`, creating a missing redb file; refuses one
    /// that holds keyward data before writing anything to it.
    fn open(at: &StoreLocation) -> Result<Self, CopyError> {
        let label = at.to_string();
        let failed = |error| CopyError::Destination { store: label.clone(), error };
        let (store, created): (Box<dyn Store>, _) = match at {
            StoreLocation::Redb(path) if path.exists() => {
                // Opening it for writing would write to it: look first.
                let reader = RedbReader::open(path).map_err(failed)?;
                let audit = reader.audit(0, 1).map_err(failed)?;
                let found = contents(&reader.load().map_err(failed)?, !audit.items.is_empty());
                if let Some(found) = found {
                    return Err(CopyError::DestinationNotEmpty { store: label.clone(), found });
                }
                drop(reader);
                (Box::new(RedbStore::open(path, crate::engine::DEFAULT_CACHE_BYTES).map_err(failed)?), None)
            }
            StoreLocation::Redb(path) => {
                let store = RedbStore::open(path, crate::engine::DEFAULT_CACHE_BYTES).map_err(failed)?;
                (Box::new(store), Some(path.clone()))
            }
            #[cfg(feature = "redis")]
            StoreLocation::Redis { url, ca } => (Box::new(RedisStore::open(url, ca.as_deref()).map_err(failed)?), None),
        };
        let dest = Self { store, label, created };
        // Also for a file just created: nothing else may have written it.
        let found = dest.contents().map_err(|e| dest.failed(e));
        match found {
            Ok(None) => Ok(dest),
            Ok(Some(found)) => {
                let label = dest.label.clone();
                Err(dest.abandon(CopyError::DestinationNotEmpty { store: label, found }, false))
            }
            Err(e) => Err(dest.abandon(e, false)),
        }
    }

    fn contents(&self) -> Result<Option<String>> {
        let audit = self.store.audit(None, 0, 1)?;
        Ok(contents(&self.store.load()?, !audit.items.is_empty()))
    }

    fn failed(&self, error: Error) -> CopyError {
        CopyError::Destination { store: self.label.clone(), error }
    }

    fn commit(&self, batch: &Batch, report: &mut CopyReport) -> Result<(), CopyError> {
        // The sequence numbers are the copied events' own.
        let _ = self.store.commit(batch).map_err(|e| self.failed(e))?;
        report.commits += 1;
        Ok(())
    }

    /// The error of a copy that failed with `cause`: a file this copy
    /// created is removed; any other destination holds part of the copy if
    /// anything was `committed`.
    fn abandon(self, cause: CopyError, committed: bool) -> CopyError {
        let Self { store, label, created } = self;
        drop(store);
        match created {
            Some(path) => match remove_file(&path) {
                Ok(()) => cause,
                Err(e) => {
                    let error = Error::Io(format!("{cause}; removing {}: {e}", path.display()));
                    let failed = CopyError::Destination { store: label.clone(), error };
                    if committed { CopyError::Interrupted { store: label, cause: Box::new(failed) } } else { failed }
                }
            },
            None if committed => CopyError::Interrupted { store: label, cause: Box::new(cause) },
            None => cause,
        }
    }
}

fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What `loaded` (and an audit log, if `audit`) holds, in words; `None`
/// when nothing.
fn contents(loaded: &Loaded, audit: bool) -> Option<String> {
    let Loaded { workspaces, tools, keys, usage, nonces, sessions, serials: _, last_used: _ } = loaded;
    let counts = [
        (workspaces.len(), "workspace", "workspaces"),
        (tools.len(), "tool", "tools"),
        (keys.len(), "key", "keys"),
        (usage.len(), "usage record", "usage records"),
        (nonces.len(), "nonce history", "nonce histories"),
        (sessions.len(), "session", "sessions"),
    ];
    let mut parts: Vec<String> = counts
        .iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect();
    if audit {
        parts.push("an audit log".into());
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The copy proper, once both stores are open and checked.
fn copy(
    source: &Source,
    dest: &Destination,
    report: &mut CopyReport,
    progress: &mut impl FnMut(CopyProgress),
) -> Result<(), CopyError> {
    let src = source.failed();

    // The audit log first, oldest event first: the destination numbers the
    // events in the order they arrive, as the source did.
    progress(CopyProgress { stage: CopyStage::Audit, done: 0, total: None });
    let mut last = 0;
    let mut copied = 0;
    loop {
        let page = source.audit(last, BATCH).map_err(&src)?;
        let mut batch = Batch::default();
        for event in page.items {
            // A log trimmed by an audit retention starts after 1: the
            // destination continues its numbering from there.
            if copied == 0 && event.seq > 1 {
                batch.push(Change::AuditFrom(event.seq - 1));
            } else if event.seq != last + 1 {
                let gap = format!("audit event {} follows event {last}", event.seq);
                return Err(src(Error::Corrupt(gap)));
            }
            last = event.seq;
            copied += 1;
            batch.push(Change::Audit(draft(event)));
        }
        if !batch.is_empty() {
            dest.commit(&batch, report)?;
            report.audit_events = copied;
            progress(CopyProgress { stage: CopyStage::Audit, done: copied, total: None });
        }
        if page.next_cursor.is_none() {
            break;
        }
    }

    // Then the records, as they are now: every change the log holds is in
    // them (a record and its event are committed together).
    let Loaded { workspaces, tools, keys, usage, nonces, sessions, serials, last_used } =
        source.load().map_err(&src)?;
    let count = |n: usize| n as u64;
    report.workspaces = count(workspaces.len());
    report.tools = count(tools.len());
    report.keys = count(keys.len());
    report.usage = count(usage.len());
    report.nonces = count(nonces.len());
    report.sessions = count(sessions.len());
    let total = report.workspaces
        + report.tools
        + report.keys
        + report.usage
        + report.nonces
        + report.sessions
        + count(serials.len())
        + count(last_used.len());
    progress(CopyProgress { stage: CopyStage::Records, done: 0, total: Some(total) });
    let changes = workspaces
        .into_iter()
        .map(Change::Workspace)
        .chain(tools.into_iter().map(Change::Tool))
        .chain(keys.into_iter().map(Change::Key))
        .chain(usage.into_iter().map(|(id, rec)| Change::Usage(id, rec)))
        .chain(nonces.into_iter().map(|(id, state)| Change::Nonce(id, state)))
        .chain(sessions.into_iter().map(|(hash, rec)| Change::Session(hash, rec)))
        .chain(serials.into_iter().map(|(ws, n)| Change::Serial(ws, n)))
        .chain(last_used.into_iter().map(|(id, at)| Change::LastUsed(id, at)));
    let mut batch = Batch::default();
    let mut done = 0;
    for change in changes {
        batch.push(change);
        if batch.changes.len() == BATCH {
            dest.commit(&std::mem::take(&mut batch), report)?;
            done += count(BATCH);
            progress(CopyProgress { stage: CopyStage::Records, done, total: Some(total) });
        }
    }
    if !batch.is_empty() {
        dest.commit(&batch, report)?;
        progress(CopyProgress { stage: CopyStage::Records, done: total, total: Some(total) });
    }

    // An event after the last one copied is a change the records read may
    // or may not hold.
    let mut events = 0;
    let mut after = last;
    loop {
        let page = source.audit(after, BATCH).map_err(&src)?;
        events += count(page.items.len());
        match page.items.last() {
            Some(e) if page.next_cursor.is_some() => after = e.seq,
            _ => break,
        }
    }
    if events > 0 {
        return Err(CopyError::SourceChanged { store: source.label().to_owned(), events });
    }

    // Read back what can be read cheaply: every key decodes, and the last
    // event has the source's number.
    let keys = dest.store.check().map_err(|e| dest.failed(e))?;
    let tail = dest.store.audit(None, last.saturating_sub(1), 2).map_err(|e| dest.failed(e))?;
    let tail: Vec<u64> = tail.items.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (last > 0).then_some(last).into_iter().collect();
    if count(keys) != report.keys || tail != expected {
        let found = format!(
            "read back {keys} keys and audit events {tail:?} at the end, after writing {} keys and {last} events",
            report.keys
        );
        return Err(dest.failed(Error::Corrupt(found)));
    }
    Ok(())
}

/// The event to append again; the destination gives it back its number.
fn draft(event: AuditEvent) -> AuditDraft {
    let AuditEvent { seq: _, at, actor, action, workspace, target, detail } = event;
    AuditDraft { at, actor, action, workspace, target, detail }
}
