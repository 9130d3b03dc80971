//! Building the in-memory index from what a store loaded, on every core.
//!
//! The keys are split into as many runs of ids as there are cores; each
//! thread decodes its run's records (a redb store hands them over encoded),
//! makes their counters, nonce histories and activity from the records of
//! the same ids (every table comes sorted by id: a merge, no map per key),
//! and inserts them into the index, whose maps are sized for the key count
//! before the first insert.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use keyward_core::signature::NonceState;
use keyward_core::{KeyId, WorkspaceId};

use crate::engine::{Inner, LiveKey, LiveWorkspace, UsageCell, WorkspaceSlot};
use crate::error::{Error, Result};
use crate::model::{KeyRecord, ToolRecord, UsageRecord};
use crate::store::{EncodedRun, Loaded, LoadedKeys};
use crate::writer::LeafGuard;

/// Keys per thread below which one thread builds the index alone.
const MIN_KEYS_PER_THREAD: usize = 20_000;

/// One run of keys, with the records of the ids it spans.
struct Part<K> {
    /// Its place among the runs, and how many there are.
    run: (usize, usize),
    keys: K,
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

/// What a run leaves for the end of the open.
#[derive(Default)]
struct RunDone {
    /// Highest key serial per workspace.
    serials: HashMap<WorkspaceId, u64>,
    sharers: Vec<Sharer>,
    /// Counters stored under an id no key has (the successor of a key in
    /// its rotation grace was deleted).
    orphans: Vec<(KeyId, UsageRecord)>,
}

/// Sorts records by id, unless they already are (a redb store's are).
fn sort_by_id<T>(v: &mut [(KeyId, T)]) {
    if !v.is_sorted_by_key(|(id, _)| *id) {
        v.sort_unstable_by_key(|(id, _)| *id);
    }
}

/// Takes from `v` (sorted by id) the records of ids after `last` (all of
/// them if `None`).
fn split_after<T>(v: &mut Vec<(KeyId, T)>, last: Option<KeyId>) -> Vec<(KeyId, T)> {
    match last {
        Some(b) => {
            let n = v.partition_point(|(id, _)| *id <= b);
            v.split_off(n)
        }
        None => std::mem::take(v),
    }
}

/// Threads to index `n` keys with.
fn threads_for(n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    cores.min(n / MIN_KEYS_PER_THREAD).max(1)
}

/// Encoded records `from..to` of a run (see [`EncodedRun`]).
fn decode_range<'a>(
    bytes: &'a [u8],
    ends: &'a [usize],
    from: usize,
    to: usize,
) -> impl Iterator<Item = Result<KeyRecord>> + 'a {
    (from..to).map(move |i| {
        let start = if i == 0 { 0 } else { ends.get(i - 1).copied().unwrap_or(0) };
        let end = ends.get(i).copied().unwrap_or(start);
        let raw = bytes.get(start..end).ok_or_else(|| Error::Corrupt("a key record's bounds".into()))?;
        Ok(KeyRecord::decode(raw)?)
    })
}

impl Inner {
    pub(crate) fn load(&self, loaded: Loaded, keys: LoadedKeys) -> Result<()> {
        let mut tools: HashMap<WorkspaceId, HashMap<String, Arc<ToolRecord>>> = HashMap::new();
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
        let (mut usage, mut nonces, mut last_used) = (loaded.usage, loaded.nonces, loaded.last_used);
        sort_by_id(&mut usage);
        sort_by_id(&mut nonces);
        sort_by_id(&mut last_used);
        let ctx = Ctx { inner: self, workspaces: &workspaces, legacy: last_used.is_empty() };

        // Runs of keys, each with the records of its ids.
        let done: Vec<Result<RunDone>> = match keys {
            LoadedKeys::Decoded(mut keys) => {
                if !keys.is_sorted_by_key(|k| k.policy.id) {
                    keys.sort_unstable_by_key(|k| k.policy.id);
                }
                let per = keys.len().div_ceil(threads_for(keys.len())).max(1);
                let mut parts = Vec::new();
                // Last run first: each split takes the tail.
                while !keys.is_empty() {
                    let run = keys.split_off(keys.len().saturating_sub(per));
                    let before = keys.last().map(|k| k.policy.id);
                    parts.push(Part {
                        run: (0, 0),
                        usage: split_after(&mut usage, before),
                        nonces: split_after(&mut nonces, before),
                        last_used: split_after(&mut last_used, before),
                        keys: run.into_iter().map(Ok),
                    });
                }
                parts.reverse();
                ctx.run_all(parts)
            }
            LoadedKeys::Encoded(runs) => {
                let runs: Vec<EncodedRun> = runs.into_iter().filter(|r| !r.ends.is_empty()).collect();
                // The id each run ends with: its last record, decoded here.
                let mut lasts = Vec::with_capacity(runs.len());
                for r in &runs {
                    let n = r.ends.len();
                    let last = decode_range(&r.bytes, &r.ends, n - 1, n).next().transpose()?;
                    lasts.push(last.map(|k| k.policy.id));
                }
                let mut parts = Vec::with_capacity(runs.len());
                for (i, r) in runs.iter().enumerate().rev() {
                    let before = i.checked_sub(1).and_then(|j| lasts.get(j).copied().flatten());
                    parts.push(Part {
                        run: (0, 0),
                        usage: split_after(&mut usage, before),
                        nonces: split_after(&mut nonces, before),
                        last_used: split_after(&mut last_used, before),
                        keys: decode_range(&r.bytes, &r.ends, 0, r.ends.len()),
                    });
                }
                parts.reverse();
                ctx.run_all(parts)
            }
        };

        let mut serials: HashMap<WorkspaceId, u64> = loaded.serials.into_iter().collect();
        let mut sharers = Vec::new();
        let mut orphans: HashMap<KeyId, UsageRecord> = HashMap::new();
        for run in done {
            let run = run?;
            for (ws, n) in run.serials {
                let high = serials.entry(ws).or_default();
                *high = (*high).max(n);
            }
            sharers.extend(run.sharers);
            orphans.extend(run.orphans);
        }
        *LeafGuard::lock(&self.serials) = serials;

        // Keys in a rotation grace, now that every owner is indexed.
        let mut cells: HashMap<KeyId, Arc<UsageCell>> = HashMap::new();
        for Sharer { rec, nonce, used } in sharers {
            let owner = rec.usage_owner.unwrap_or(rec.policy.id);
            let cell = match self.keys.get(&owner) {
                Some(k) => Arc::clone(&k.usage),
                None => Arc::clone(cells.entry(owner).or_insert_with(|| {
                    let stored = orphans.remove(&owner).unwrap_or_default();
                    Arc::new(UsageCell::from_record(owner, stored, self.shared))
                })),
            };
            let id = rec.policy.id;
            cell.joined.store(true, Ordering::Release);
            let mut live = LiveKey::new(rec, cell);
            if let (Some(slot), Some(state)) = (&live.nonce, nonce) {
                *LeafGuard::lock(slot) = state;
            }
            live.home = Some(UsageCell::home(id, used, self.shared));
            self.index_key(live);
        }
        for (hash, rec) in loaded.sessions {
            self.sessions.insert(hash, rec);
        }
        Ok(())
    }
}

/// What the threads of an open share.
struct Ctx<'a> {
    inner: &'a Inner,
    workspaces: &'a HashMap<WorkspaceId, Arc<WorkspaceSlot>>,
    /// A store written before each token kept its own last use has none:
    /// a key's is then its counters' (as it was shown before).
    legacy: bool,
}

impl Ctx<'_> {
    /// Indexes every part, one thread each (the first on this thread).
    fn run_all<K>(&self, parts: Vec<Part<K>>) -> Vec<Result<RunDone>>
    where
        K: Iterator<Item = Result<KeyRecord>> + Send,
    {
        let n = parts.len();
        std::thread::scope(|s| {
            let mut parts = parts.into_iter().enumerate().map(|(i, part)| Part { run: (i, n), ..part });
            let mine = parts.next();
            let handles: Vec<_> = parts.map(|part| s.spawn(move || self.index(part))).collect();
            let mut done = Vec::with_capacity(handles.len() + 1);
            done.extend(mine.map(|part| self.index(part)));
            for h in handles {
                done.push(h.join().unwrap_or_else(|_| Err(Error::Corrupt("the index build failed".into()))));
            }
            done
        })
    }

    /// Indexes one run of keys (in id order).
    fn index<K>(&self, part: Part<K>) -> Result<RunDone>
    where
        K: Iterator<Item = Result<KeyRecord>>,
    {
        let inner = self.inner;
        let shared = inner.shared;
        let mut usage = part.usage.into_iter().peekable();
        let mut nonces = part.nonces.into_iter().peekable();
        let mut last_used = part.last_used.into_iter().peekable();
        let mut done = RunDone::default();
        let mut any_imported = false;
        let mut previous: Option<KeyId> = None;
        // Each with room for its order in the maps (see `Keys::insert_new`).
        let mut built: Vec<(usize, Arc<LiveKey>)> = Vec::with_capacity(part.keys.size_hint().0);
        for rec in part.keys {
            let rec = rec?;
            let id = rec.policy.id;
            if previous.is_some_and(|p| p >= id) {
                return Err(Error::Corrupt("key records out of id order".into()));
            }
            previous = Some(id);
            if let Some(n) = rec.serial {
                let high = done.serials.entry(rec.policy.workspace).or_default();
                *high = (*high).max(n);
            }
            done.orphans.extend(std::iter::from_fn(|| usage.next_if(|(o, _)| *o < id)));
            let stored = usage.next_if(|(o, _)| *o == id).map(|(_, u)| u);
            while nonces.next_if(|(o, _)| *o < id).is_some() {}
            let nonce = nonces.next_if(|(o, _)| *o == id).map(|(_, n)| n);
            while last_used.next_if(|(o, _)| *o < id).is_some() {}
            let used = last_used.next_if(|(o, _)| *o == id).map(|(_, t)| t);
            if rec.usage_owner.is_some() {
                // Its own stored counters (if any) are no one's.
                done.orphans.extend(stored.map(|u| (id, u)));
                done.sharers.push(Sharer { rec, nonce, used: used.unwrap_or(0) });
                continue;
            }
            let cell = Arc::new(UsageCell::from_record(id, stored.unwrap_or_default(), shared));
            let used = used.unwrap_or_else(|| if self.legacy { cell.last_used.load(Ordering::Acquire) } else { 0 });
            cell.activity.last_used.store(used, Ordering::Relaxed);
            let mut live = LiveKey::new(rec, cell);
            if let (Some(slot), Some(state)) = (&live.nonce, nonce) {
                *LeafGuard::lock(slot) = state;
            }
            any_imported |= live.policy().imported;
            live.workspace = self.workspaces.get(&live.policy().workspace).map(Arc::clone);
            built.push((0, Arc::new(live)));
        }
        inner.keys.insert_new(&mut built, part.run.0, part.run.1);
        done.orphans.extend(usage);
        if any_imported {
            inner.any_imported.store(true, Ordering::Release);
        }
        Ok(done)
    }
}
