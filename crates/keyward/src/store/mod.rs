//! The store seam: what the engine asks of durable storage.
//!
//! The engine decides what changes (under its one [`Writer`](crate::writer::Writer)),
//! describes it as a [`Batch`], and hands the batch to a [`Store`], which
//! makes all of it durable or none of it. Only after [`Store::commit`]
//! returns `Ok` does the engine publish the change to its in-memory index.
//! A store never calls back into the engine and takes no engine lock.
//!
//! Two implementations: the embedded redb store ([`redb::RedbStore`], the
//! default) and a Redis store ([`redis::RedisStore`], feature `redis`).

pub(crate) mod copy;
pub(crate) mod redb;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(all(test, feature = "redis"))]
#[path = "../../tests/common/redis_server.rs"]
mod redis_server;
pub(crate) mod tables;

use keyward_core::signature::NonceState;
use keyward_core::{KeyId, WorkspaceId};

use crate::error::Result;
use crate::history::{Granularity, HistoryBucket, HistoryDelta};
use crate::model::{AuditAction, AuditEvent, KeyRecord, Page, SessionRecord, ToolRecord, UsageRecord, Workspace};

/// An audit event before the store numbers it.
#[derive(Clone, Debug)]
pub(crate) struct AuditDraft {
    pub at: keyward_core::UnixMillis,
    pub actor: String,
    pub action: AuditAction,
    pub workspace: Option<WorkspaceId>,
    pub target: String,
    pub detail: String,
}

impl AuditDraft {
    /// The event, numbered `seq`.
    pub(crate) fn event(&self, seq: u64) -> AuditEvent {
        AuditEvent {
            seq,
            at: self.at,
            actor: self.actor.clone(),
            action: self.action,
            workspace: self.workspace,
            target: self.target.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// One durable change.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Workspace(Workspace),
    Tool(ToolRecord),
    Key(KeyRecord),
    KeyDeleted(KeyId),
    /// Counters stored under this id (the owner of a shared cell).
    Usage(KeyId, UsageRecord),
    /// Counters stored under this id, on a shared store only if they are
    /// still at the version the engine read (else the whole batch fails
    /// with [`Error::Conflict`](crate::Error::Conflict)). A store of one
    /// node treats it as [`Change::Usage`].
    UsageAt(KeyId, u64, UsageRecord),
    /// Calls counted by this node since its last flush, added to the
    /// counters' statistics (shared stores: each node adds its own).
    UsageStats(KeyId, UsageStats),
    UsageDeleted(KeyId),
    /// A key's own nonce history (signed logins).
    Nonce(KeyId, NonceState),
    NonceDeleted(KeyId),
    Session([u8; 32], SessionRecord),
    SessionDeleted([u8; 32]),
    Audit(AuditDraft),
    /// The workspace's highest key serial handed out is at least this.
    Serial(WorkspaceId, u64),
    /// Calls to add to a key's or workspace's usage history (and its
    /// buckets past their retention to remove).
    History(HistoryDelta),
    /// A key's own token was last used at least this late.
    LastUsed(KeyId, u64),
    /// Nothing: a commit of only this tests whether the store writes again.
    Probe,
    /// Removes the oldest audit events the retention no longer keeps; the
    /// others keep their sequence numbers, and later events continue them.
    AuditTrim(AuditKeep),
    /// An empty audit log numbers its next event after this one (a copy
    /// of a trimmed log). The Redis store numbers its list from 1 and
    /// ignores it.
    AuditFrom(u64),
}

/// Which audit events a [`Change::AuditTrim`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuditKeep {
    /// Those from this time on (removed oldest first, up to the first kept).
    Since(keyward_core::UnixMillis),
    /// The last `n` (at least one).
    Last(u64),
}

/// Statistics one node adds to a key's usage record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UsageStats {
    /// Valid verifications to add.
    pub valid: u64,
    /// Refused verifications to add.
    pub refused: u64,
    /// Last valid verification seen by this node (the store keeps the latest).
    pub last_used_at: Option<keyward_core::UnixMillis>,
}

/// What a conditional write of one cell's counters found (see
/// [`Store::charge`]).
#[derive(Debug)]
pub(crate) enum Charged {
    /// The counters were at the version read: the write (if any) landed.
    /// Their version now.
    Done(u64),
    /// Another node changed them since: their version and record now.
    Moved(u64, Option<Box<UsageRecord>>),
    /// Held for an admin change ([`Store::hold`]): a write waits.
    Held,
}

/// The version of counters a node has not read from a shared store yet:
/// no stored version equals it, so the first charge reads them.
pub(crate) const UNREAD: u64 = u64::MAX;

/// Changes committed together: all of them or none.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub changes: Vec<Change>,
}

impl Batch {
    pub(crate) fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Everything a store holds, read once when the engine opens.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub workspaces: Vec<Workspace>,
    pub tools: Vec<ToolRecord>,
    pub keys: Vec<KeyRecord>,
    pub usage: Vec<(KeyId, UsageRecord)>,
    pub nonces: Vec<(KeyId, NonceState)>,
    pub sessions: Vec<([u8; 32], SessionRecord)>,
    /// Each workspace's highest key serial handed out.
    pub serials: Vec<(WorkspaceId, u64)>,
    /// Each key's own last valid call (keys never used have none).
    pub last_used: Vec<(KeyId, u64)>,
}

/// The key records of a load for the index ([`Store::load_index`]).
pub(crate) enum LoadedKeys {
    /// Decoded, in any order.
    Decoded(Vec<KeyRecord>),
    /// Encoded as stored, in runs of ids one after the other, each in id
    /// order.
    Encoded(Vec<EncodedRun>),
}

/// Encoded key records, in id order: record `i` is `bytes[ends[i - 1]..ends[i]]`
/// (from 0 for the first).
#[derive(Default)]
pub(crate) struct EncodedRun {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
}

impl LoadedKeys {
    /// How many.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Decoded(keys) => keys.len(),
            Self::Encoded(runs) => runs.iter().map(|r| r.ends.len()).sum(),
        }
    }
}

/// Records the change stream named, to be read ([`Store::read_followed`]).
#[derive(Debug)]
pub(crate) struct Touched {
    /// (table, field) pairs.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Everything must be read again (the stream lost entries for this node).
    pub everything: bool,
    /// The stream's place after them: (entry id, entries added up to it).
    pub cursor: (String, u64),
}

/// A record another node changed, as the store holds it now (`None`:
/// deleted). Counters are not followed: each node counts its own calls.
#[derive(Debug)]
pub(crate) enum Followed {
    Workspace(WorkspaceId, Option<Workspace>),
    Tool(WorkspaceId, String, Option<ToolRecord>),
    Key(KeyId, Option<Box<KeyRecord>>),
    Nonce(KeyId, Option<NonceState>),
    Session([u8; 32], Option<SessionRecord>),
    /// The store dropped changes this node had not read yet (the change
    /// stream was trimmed past it): everything, read again.
    Reload(Box<Loaded>),
}

/// Durable storage under the engine.
///
/// Every method may block (disk or network): the engine calls them from its
/// writer, its flusher or a caller's thread, never while it holds a counter
/// mutex or a map guard.
pub(crate) trait Store: Send + Sync + 'static {
    /// Makes every change of `batch` durable, atomically. On `Err` nothing
    /// of the batch is stored. Returns the sequence number the batch's last
    /// audit event was given, if it has one.
    fn commit(&self, batch: &Batch) -> Result<Option<u64>>;

    /// Reads everything the in-memory index is built from.
    fn load(&self) -> Result<Loaded>;

    /// [`Store::load`] for the index: the key records may come encoded,
    /// in id order (the engine decodes them on every core), and `keys` of
    /// the [`Loaded`] is then empty.
    fn load_index(&self) -> Result<(Loaded, LoadedKeys)> {
        let mut loaded = self.load()?;
        let keys = std::mem::take(&mut loaded.keys);
        Ok((loaded, LoadedKeys::Decoded(keys)))
    }

    /// Audit events after `after`, oldest first, of one workspace or all.
    fn audit(&self, ws: Option<WorkspaceId>, after: u64, limit: usize) -> Result<Page<AuditEvent>>;

    /// Reads every key record back; returns how many decoded.
    fn check(&self) -> Result<usize>;

    /// Whether other nodes may write this store (so [`Store::follow`] is
    /// worth calling). By default, no.
    fn shared(&self) -> bool {
        false
    }

    /// Drops connections that may have broken while the store was away
    /// (called when it answers again). By default, nothing.
    fn reconnect(&self) {}

    /// Counters shared by several nodes: if the counters stored under
    /// `owner` are still at version `seen`, stores `next` (nothing when
    /// `None`: the caller only confirms what it read) in one atomic step;
    /// else hands back what they are now. Only called when
    /// [`Store::shared`] is true; a store of one node is never behind.
    fn charge(&self, owner: KeyId, seen: u64, next: Option<&UsageRecord>) -> Result<Charged> {
        let mut one = self.charge_many(&[(owner, seen, next)])?;
        one.pop().ok_or_else(|| crate::error::Error::Storage("a charge without an answer".into()))
    }

    /// Holds the counters under `owner` for an admin change for at most
    /// `for_ms`: charges that would write them wait (they get
    /// [`Charged::Held`]) until a [`Change::UsageAt`] of them lands. So an
    /// admin change is not starved by a stream of charges. By default,
    /// nothing.
    fn hold(&self, owner: KeyId, for_ms: u64) -> Result<()> {
        let _ = (owner, for_ms);
        Ok(())
    }

    /// The usage history of `subject` (a key or workspace id) in buckets of
    /// `granularity` starting in `from..to`, oldest first.
    fn history(&self, subject: [u8; 16], granularity: Granularity, from: u64, to: u64) -> Result<Vec<HistoryBucket>>;

    /// A key's own last valid call as the store has it, for nodes sharing
    /// it. By default `None`: memory has the only one.
    fn last_used(&self, id: KeyId) -> Result<Option<u64>> {
        let _ = id;
        Ok(None)
    }

    /// Hands out `n` key serials of workspace `ws` in the store, for nodes
    /// sharing it: the last of them. `None` (the default, a store of one
    /// node): the engine counts them itself, and a [`Change::Serial`] in
    /// the key's batch records the highest.
    fn reserve_serials(&self, ws: WorkspaceId, n: u64) -> Result<Option<u64>> {
        let _ = (ws, n);
        Ok(None)
    }

    /// [`Store::charge`] of several cells in one round trip, each decided
    /// on its own; the answers in the same order.
    fn charge_many(&self, cells: &[(KeyId, u64, Option<&UsageRecord>)]) -> Result<Vec<Charged>> {
        Ok(cells.iter().map(|(_, seen, _)| Charged::Done(*seen)).collect())
    }

    /// What the change stream names since the last records read (or since
    /// the store was opened), waiting up to `wait` for an entry; `None`
    /// when nothing came. By default nothing.
    fn follow(&self, wait: std::time::Duration) -> Result<Option<Touched>> {
        std::thread::sleep(wait);
        Ok(None)
    }

    /// Reads the records `touched` names as the store holds them now (the
    /// engine calls this under its writer, so no change of its own lands
    /// between the read and the publish). Only when this succeeds is the
    /// stream's place moved past them. By default nothing.
    fn read_followed(&self, touched: Touched) -> Result<Vec<Followed>> {
        let _ = touched;
        Ok(Vec::new())
    }
}
