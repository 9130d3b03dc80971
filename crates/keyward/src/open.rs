//! Building the in-memory index from what a store loaded, on every core.
//!
//! The keys are split into as many runs of ids as there are cores; each
//! thread makes its keys' counters, nonce histories and activity from the
//! records of the same ids (the store's tables come sorted by id: a merge,
//! no map per key) and inserts them into the index, whose maps are sized
//! for the key count before any insert.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use keyward_core::{KeyId, NonceState, WorkspaceId};

use crate::engine::{Inner, LiveKey, LiveWorkspace, UsageCell, WorkspaceSlot};
use crate::error::{Error, Result};
use crate::history::Activity;
use crate::model::{KeyRecord, UsageRecord};
use crate::store::Loaded;
use crate::writer::LeafGuard;

/// Keys per thread below which one thread builds the index alone.
const MIN_KEYS_PER_THREAD: usize = 20_000;

/// What one run of key ids brings along: the records of those ids.
struct Part {
    keys: Vec<KeyRecord>,
    usage: Vec<(KeyId, UsageRecord)>,
    nonces: Vec<(KeyId, NonceState)>,
    last_used: Vec<(KeyId, u64)>,
}

/// A key sharing another's counters (a rotation grace), indexed once every
/// owner is.
struct Sharer {
    rec: KeyRecord,
    nonce: Option<NonceState>,
    used: u64,
}

/// What the threads share while indexing.
struct Build<'a> {
    inner: &'a Inner,
    workspaces: HashMap<WorkspaceId, Arc<WorkspaceSlot>>,
    /// Ids whose counters a rotated key shares.
    wanted: HashSet<KeyId>,
    /// Their cells, as the threads make them.
    owners: Mutex<HashMap<KeyId, Arc<UsageCell>>>,
    sharers: Mutex<Vec<Sharer>>,
    /// A store written before each token kept its own last use has none:
    /// a key's is then its counters' (as it was shown before).
    legacy: bool,
}

/// Sorts records by id, unless they already are (a redb store's are).
fn by_id<T>(v: &mut [(KeyId, T)]) {
    if !v.is_sorted_by_key(|(id, _)| *id) {
        v.sort_unstable_by_key(|(id, _)| *id);
    }
}

/// Takes from `v` (sorted by id) the records of ids after `before` (all of
/// them if `None`).
fn split_after<T>(v: &mut Vec<(KeyId, T)>, before: Option<KeyId>) -> Vec<(KeyId, T)> {
    match before {
        Some(b) => {
            let n = v.partition_point(|(id, _)| *id <= b);
            v.split_off(n)
        }
        None => std::mem::take(v),
    }
}

impl Inner {
    pub(crate) fn load(&self, loaded: Loaded) -> Result<()> {
        let mut tools: HashMap<WorkspaceId, HashMap<String, Arc<crate::model::ToolRecord>>> = HashMap::new();
        let known: HashSet<WorkspaceId> = loaded.workspaces.iter().map(|w| w.policy.id).collect();
        for tool in loaded.tools {
            let ws_id = tool.policy.workspace;
            if !known.contains(&ws_id) {
                return Err(Error::Corrupt(format!("tool {} of missing workspace {ws_id}", tool.policy.name)));
            }
            tools.entry(ws_id).or_default().insert(tool.policy.name.clone(), Arc::new(tool));
        }
        let mut workspaces = HashMap::with_capacity(loaded.workspaces.len());
        for ws in loaded.workspaces {
            let id = ws.policy.id;
            let slot = WorkspaceSlot::new(LiveWorkspace { ws, tools: tools.remove(&id).unwrap_or_default() });
            self.workspaces.insert(id, Arc::clone(&slot));
            workspaces.insert(id, slot);
        }
        let mut serials: HashMap<WorkspaceId, u64> = loaded.serials.into_iter().collect();
        let mut keys = loaded.keys;
        for rec in &keys {
            if let Some(n) = rec.serial {
                let high = serials.entry(rec.policy.workspace).or_default();
                *high = (*high).max(n);
            }
        }
        *self.serials.lock().unwrap_or_else(PoisonError::into_inner) = serials;

        if !keys.is_sorted_by_key(|k| k.policy.id) {
            keys.sort_unstable_by_key(|k| k.policy.id);
        }
        let (mut usage, mut nonces, mut last_used) = (loaded.usage, loaded.nonces, loaded.last_used);
        by_id(&mut usage);
        by_id(&mut nonces);
        by_id(&mut last_used);
        let build = Build {
            inner: self,
            workspaces,
            wanted: keys.iter().filter_map(|k| k.usage_owner).collect(),
            owners: Mutex::new(HashMap::new()),
            sharers: Mutex::new(Vec::new()),
            legacy: last_used.is_empty(),
        };

        // Runs of ids, last run first (each split takes the tail).
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let threads = cores.min(keys.len() / MIN_KEYS_PER_THREAD).max(1);
        let per = keys.len().div_ceil(threads).max(1);
        let mut parts = Vec::with_capacity(threads);
        while !keys.is_empty() {
            let tail = keys.split_off(keys.len().saturating_sub(per));
            // The records of ids past the run before this one.
            let before = keys.last().map(|k| k.policy.id);
            parts.push(Part {
                usage: split_after(&mut usage, before),
                nonces: split_after(&mut nonces, before),
                last_used: split_after(&mut last_used, before),
                keys: tail,
            });
        }
        parts.reverse();
        std::thread::scope(|s| {
            let mut parts = parts.into_iter();
            let mine = parts.next();
            for part in parts {
                let build = &build;
                s.spawn(move || build.index(part));
            }
            if let Some(part) = mine {
                build.index(part);
            }
        });

        // Keys in a rotation grace, now that every owner's cell exists.
        let Build { owners, sharers, .. } = build;
        let mut owners = owners.into_inner().unwrap_or_else(PoisonError::into_inner);
        for Sharer { rec, nonce, used } in sharers.into_inner().unwrap_or_else(PoisonError::into_inner) {
            let owner = rec.usage_owner.unwrap_or(rec.policy.id);
            let cell = owners
                .entry(owner)
                .or_insert_with(|| Arc::new(UsageCell::from_record(owner, UsageRecord::default(), self.shared)));
            let live = LiveKey::new(rec, Arc::clone(cell));
            self.index_loaded(live, nonce, used);
        }
        for (hash, rec) in loaded.sessions {
            self.sessions.insert(hash, rec);
        }
        Ok(())
    }

    /// Indexes a loaded key with its nonce history and last use.
    fn index_loaded(&self, mut live: LiveKey, nonce: Option<NonceState>, used: u64) {
        if let (Some(slot), Some(state)) = (&live.nonce, nonce) {
            *LeafGuard::lock(slot) = state;
        }
        live.activity = Arc::new(Activity::new(used));
        self.index_key(live);
    }
}

impl Build<'_> {
    /// Indexes one run of keys.
    fn index(&self, part: Part) {
        let inner = self.inner;
        let shared = inner.shared;
        let mut usage = part.usage.into_iter().peekable();
        let mut nonces = part.nonces.into_iter().peekable();
        let mut last_used = part.last_used.into_iter().peekable();
        let mut owners = Vec::new();
        let mut sharers = Vec::new();
        let mut any_imported = false;
        for rec in part.keys {
            let id = rec.policy.id;
            // Counters of ids before this one that no key owns: kept if a
            // rotated key shares them.
            while let Some((o, u)) = usage.next_if(|(o, _)| *o < id) {
                if self.wanted.contains(&o) {
                    owners.push((o, Arc::new(UsageCell::from_record(o, u, shared))));
                }
            }
            let stored = usage.next_if(|(o, _)| *o == id).map(|(_, u)| u);
            while nonces.next_if(|(o, _)| *o < id).is_some() {}
            let nonce = nonces.next_if(|(o, _)| *o == id).map(|(_, n)| n);
            while last_used.next_if(|(o, _)| *o < id).is_some() {}
            let used = last_used.next_if(|(o, _)| *o == id).map(|(_, t)| t);
            if rec.usage_owner.is_some() {
                if let Some(u) = stored.filter(|_| self.wanted.contains(&id)) {
                    owners.push((id, Arc::new(UsageCell::from_record(id, u, shared))));
                }
                sharers.push(Sharer { rec, nonce, used: used.unwrap_or(0) });
                continue;
            }
            let cell = Arc::new(UsageCell::from_record(id, stored.unwrap_or_default(), shared));
            if self.wanted.contains(&id) {
                owners.push((id, Arc::clone(&cell)));
            }
            let used = used.unwrap_or_else(|| if self.legacy { cell.last_used.load(Ordering::Acquire) } else { 0 });
            let mut live = LiveKey::new(rec, cell);
            if let (Some(slot), Some(state)) = (&live.nonce, nonce) {
                *LeafGuard::lock(slot) = state;
            }
            live.activity = Arc::new(Activity::new(used));
            any_imported |= live.policy().imported;
            live.workspace = self.workspaces.get(&live.policy().workspace).map(Arc::clone);
            inner.keys.insert(Arc::new(live));
        }
        for (o, u) in usage {
            if self.wanted.contains(&o) {
                owners.push((o, Arc::new(UsageCell::from_record(o, u, shared))));
            }
        }
        if any_imported {
            inner.any_imported.store(true, Ordering::Release);
        }
        if !owners.is_empty() {
            self.owners.lock().unwrap_or_else(PoisonError::into_inner).extend(owners);
        }
        if !sharers.is_empty() {
            self.sharers.lock().unwrap_or_else(PoisonError::into_inner).extend(sharers);
        }
    }
}
