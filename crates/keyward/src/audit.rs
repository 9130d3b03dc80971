//! The audit log, snapshots and read-only figures.

use std::sync::Arc;

use keyward_core::policy::Status;
use keyward_core::{KeyId, KeyPolicy, Snapshot, ToolPolicy, UnixMillis, WorkspaceId, WorkspacePolicy};

use crate::engine::{Engine, LiveKey};
use crate::error::{Error, Result};
use crate::model::{Actor, AuditAction, AuditEvent, Page};
use crate::store::{AuditDraft, Batch, Change};
use crate::validate::MAX_PAGE;

/// Adds an audit event to a batch: it is stored with the change it records.
pub(crate) fn audit(
    batch: &mut Batch,
    at: UnixMillis,
    actor: &Actor,
    action: AuditAction,
    workspace: Option<WorkspaceId>,
    target: impl Into<String>,
    detail: impl Into<String>,
) {
    batch.push(Change::Audit(AuditDraft {
        at,
        actor: actor.to_string(),
        action,
        workspace,
        target: target.into(),
        detail: detail.into(),
    }));
}

impl Engine {
    /// Audit events after sequence number `after` (0 for the start), oldest
    /// first, optionally only those of one workspace.
    pub fn audit(&self, ws: Option<WorkspaceId>, after: u64, limit: usize) -> Result<Page<AuditEvent>> {
        self.inner.writer.store().audit(ws, after, limit.clamp(1, MAX_PAGE))
    }

    /// Runs `f` on this engine and returns, with its result, the sequence
    /// number of the last audit event its changes wrote (`None` when they
    /// wrote none), so that a request log can name the event an admin call
    /// wrote. Changes made by other threads meanwhile are not counted.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let engine = keyward::Engine::open(dir.path().join("k.redb")).unwrap();
    /// let (ws, seq) =
    ///     engine.audited(|e| e.create_workspace(keyward::NewWorkspace::named("w"), &keyward::Actor::Admin));
    /// let event = &engine.audit(None, 0, 100).unwrap().items[0];
    /// assert_eq!((seq, event.action.as_str()), (Some(event.seq), "workspace.created"));
    /// # drop(ws);
    /// ```
    pub fn audited<T>(&self, f: impl FnOnce(&Self) -> T) -> (T, Option<u64>) {
        crate::writer::audited(|| f(self))
    }

    /// Everything verification at the edge needs, nothing secret: every
    /// bearer key (signing keys not created with `bearer` are left out).
    pub fn snapshot(&self) -> Snapshot {
        let (workspaces, tools) = self.snapshot_policies();
        let keys = self.snapshot_keys().iter().map(|(_, k)| k.policy().clone()).collect();
        Snapshot { created_at: self.inner.now(), workspaces, tools, keys }
    }

    /// The snapshot, encoded and authenticated with the snapshot key. The
    /// key records are encoded where they are held, not copied first.
    pub fn export_snapshot(&self) -> Result<Vec<u8>> {
        let key = self.inner.opts.snapshot_key.as_ref().ok_or(Error::NoSnapshotKey)?;
        let (workspaces, tools) = self.snapshot_policies();
        let held = self.snapshot_keys();
        let keys: Vec<&KeyPolicy> = held.iter().map(|(_, k)| k.policy()).collect();
        Snapshot::encode_parts(self.inner.now(), &workspaces, &tools, &keys, key)
            .map_err(|e| Error::invalid("snapshot_key", e.to_string()))
    }

    /// Every workspace and tool of a snapshot, in its order.
    fn snapshot_policies(&self) -> (Vec<WorkspacePolicy>, Vec<ToolPolicy>) {
        let mut workspaces: Vec<WorkspacePolicy> = Vec::new();
        let mut tools: Vec<ToolPolicy> = Vec::new();
        for slot in self.inner.workspaces.iter() {
            let w = slot.current.load();
            workspaces.push(w.ws.policy.clone());
            tools.extend(w.tools.values().map(|t| t.policy.clone()));
        }
        workspaces.sort_by_key(|w| w.id);
        tools.sort_by(|a, b| (a.workspace, &a.name).cmp(&(b.workspace, &b.name)));
        (workspaces, tools)
    }

    /// The keys of a snapshot, by id. A signing key that is no bearer key
    /// cannot pass at the edge, which reads tokens alone: it is left out
    /// (the edge answers NOT_FOUND). Sorted by the id held beside each key,
    /// so the sort reads no key.
    fn snapshot_keys(&self) -> Vec<(KeyId, Arc<LiveKey>)> {
        let mut keys: Vec<(KeyId, Arc<LiveKey>)> = Vec::with_capacity(self.inner.keys.len());
        keys.extend(self.inner.keys.iter().filter(|k| k.is_bearer()).map(|k| (k.policy().id, Arc::clone(&k))));
        keys.sort_unstable_by_key(|(id, _)| *id);
        keys
    }

    /// Number of keys (all statuses).
    pub fn key_count(&self) -> usize {
        self.inner.keys.len()
    }

    /// Number of keys usable now.
    pub fn live_key_count(&self) -> usize {
        let now = self.inner.now();
        self.inner.keys.iter().filter(|k| k.policy().status(now) == Status::Active).count()
    }

    /// Number of sessions held (expired ones included until they are purged).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Verifies that the database reads back: every key record decodes.
    /// Returns the number of keys.
    pub fn check(&self) -> Result<usize> {
        self.inner.writer.store().check()
    }
}
