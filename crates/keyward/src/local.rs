//! [`LimitSync::Local`]: on a shared store, a workspace's limited keys are
//! decided on each node's own copy of their counters, with no round trip,
//! and each node's calls are reconciled with the store's counters every
//! `ms` milliseconds.
//!
//! A node remembers the calls it admitted since the last reconciliation.
//! Reconciling replays them, with keyward-core's arithmetic, on the store's
//! counters as they are then (other nodes' calls included), and stores the
//! result only if no other node changed them meanwhile (the same atomic
//! step as an exact charge); the node's copy becomes that result. A
//! replayed call the store's counters refuse was admitted by this node
//! alone: it counts in [`Health::local_overshoot`](crate::Health).
//!
//! Concurrency limits are never counted locally (a lease must be released
//! where it was taken): keys with one are decided exactly.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keyward_core::limits::{Cost, RateCost};
use keyward_core::{Call, Code, Request as CoreRequest, ToolLookup, UnixMillis, Verdict};

use crate::engine::{Inner, KeyCounters, LiveKey};
use crate::model::LimitSync;
use crate::store::{Charged, UNREAD};
use crate::verify::{Request, decide_on};
use crate::writer::LeafGuard;

/// One call admitted on a node's own counters, kept to be replayed on the
/// store's.
#[derive(Clone, Debug)]
pub(crate) struct Admitted {
    at: UnixMillis,
    ip: Option<IpAddr>,
    tool: Option<Box<str>>,
    credits: u64,
    rates: Box<[RateCall]>,
}

/// A [`RateCost`] a call named, owned: (name, cost, limit, window_ms).
type RateCall = (Box<str>, u64, Option<u64>, Option<u64>);

impl Admitted {
    pub(crate) fn of(req: &Request<'_>, at: UnixMillis) -> Self {
        Self {
            at,
            ip: req.ip,
            tool: req.tool.map(Box::from),
            credits: req.cost.credits,
            rates: req.cost.rates.iter().map(|r| (Box::from(r.name), r.cost, r.limit, r.window_ms)).collect(),
        }
    }
}

/// Keys reconciled in one round trip at most.
const RECONCILE_BATCH: usize = 256;

/// A key's reconciliation in progress.
struct Reconciling<'a> {
    live: &'a LiveKey,
    /// The calls to replay (the cell's waiting calls when it began).
    calls: Vec<Admitted>,
    /// The store's counters as last read, if known.
    base: Option<KeyCounters>,
    /// Their version ([`UNREAD`]: not read yet).
    seen: u64,
    /// `base` with `calls` replayed.
    next: KeyCounters,
    /// Calls `base` refused.
    refused: usize,
}

/// How often the reconciler looks for counters to reconcile when no
/// workspace asks for less.
const IDLE_TICK: Duration = Duration::from_millis(100);

impl Inner {
    /// Whether calls of `live` (in a workspace syncing `sync`) are decided
    /// on this node's own counters: local mode, and no concurrency limit.
    pub(crate) fn counts_locally(live: &LiveKey, sync: LimitSync) -> bool {
        matches!(sync, LimitSync::Local { .. }) && !live.has_concurrency
    }

    /// Milliseconds since the engine opened.
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Before a local decision: counters not reconciled for `ms` and with
    /// no call waiting are read from the store first (a node that has not
    /// served a key for a while would otherwise decide on an old copy). A
    /// store that does not answer leaves the copy as it is.
    pub(crate) fn refresh_local(&self, live: &LiveKey, ms: u64) {
        let cell = &live.usage;
        let synced = cell.sync().synced_at.load(Ordering::Acquire);
        if synced != 0 && self.elapsed_ms().saturating_sub(synced) < ms {
            return;
        }
        if self.reach.down.load(Ordering::Acquire) || cell.has_pending() {
            return;
        }
        let _gate = cell.gate();
        if self.sync_cell(cell).is_ok() {
            let copy = cell.lock().clone();
            // A call admitted meanwhile is not in the store's counters.
            if copy.pending.is_empty() {
                *LeafGuard::lock(&cell.sync().base) = Some(copy);
                cell.sync().synced_at.store(self.elapsed_ms(), Ordering::Release);
            }
        }
    }

    /// Replays `call` on counters `c`; returns whether they admit it.
    fn replay(&self, live: &LiveKey, call: &Admitted, c: &mut KeyCounters) -> bool {
        let Some(ws) = live.workspace.as_ref().map(|slot| slot.current.load()) else { return false };
        let tool = call.tool.as_deref();
        let found = tool.map(|name| ws.tools.get(name));
        let lookup = match &found {
            None => ToolLookup::NotRequested,
            Some(None) => ToolLookup::Unknown,
            Some(Some(t)) => ToolLookup::Found(&t.policy),
        };
        let rates: Vec<RateCost<'_>> = call
            .rates
            .iter()
            .map(|(name, cost, limit, window_ms)| RateCost { name, cost: *cost, limit: *limit, window_ms: *window_ms })
            .collect();
        let req = CoreRequest {
            ip: call.ip,
            tool,
            permissions: &[],
            permission_query: None,
            cost: Cost { credits: call.credits, rates: &rates },
            now: call.at,
        };
        let mut v = Verdict::bare(Code::Valid);
        decide_on(&mut v, &Call { key: live.policy(), workspace: &ws.ws.policy, tool: lookup, request: &req }, c);
        v.is_valid()
    }

    /// Reconciles keys' counters with the store (see the module docs), all
    /// of them in one round trip per attempt. Keys the store's counters
    /// keep moving under, or a store that does not answer, leave their
    /// calls waiting for the next tick.
    fn reconcile(&self, lives: &[Arc<LiveKey>]) {
        // Level 1 of the lock order, for each cell (no other path holds two
        // gates, so taking several here cannot deadlock).
        let _gates: Vec<_> = lives.iter().map(|l| l.usage.gate()).collect();
        let mut work: Vec<Reconciling<'_>> = lives
            .iter()
            .filter_map(|live| {
                let calls = live.usage.lock().pending.clone();
                if calls.is_empty() {
                    return None;
                }
                let base = LeafGuard::lock(&live.usage.sync().base).take();
                let seen = if base.is_some() { live.usage.sync().version.load(Ordering::Acquire) } else { UNREAD };
                Some(Reconciling { live, calls, base, seen, next: KeyCounters::default(), refused: 0 })
            })
            .collect();
        for _ in 0..8 {
            if work.is_empty() {
                return;
            }
            let mut records = Vec::with_capacity(work.len());
            for r in &mut work {
                r.next = r.base.clone().unwrap_or_default();
                r.refused = r.calls.iter().filter(|call| !self.replay(r.live, call, &mut r.next)).count();
                // Not read yet: read, then replay on what was read.
                records.push((r.seen != UNREAD).then(|| r.live.usage.record_with(&r.next)));
            }
            let cells: Vec<_> =
                work.iter().zip(&records).map(|(r, rec)| (r.live.usage.owner(), r.seen, rec.as_ref())).collect();
            let Ok(outcomes) = self.writer.store().charge_many(&cells) else { break };
            let mut again = Vec::new();
            for (mut r, outcome) in work.into_iter().zip(outcomes) {
                match outcome {
                    Charged::Done(version) => self.reconciled(r, version),
                    Charged::Moved(version, rec) => {
                        r.base = Some(KeyCounters::stored(rec.map(|b| *b).unwrap_or_default()));
                        r.seen = version;
                        again.push(r);
                    }
                    // An admin change is landing: try again after it.
                    Charged::Held => again.push(r),
                }
            }
            work = again;
        }
        // Not settled: the calls stay waiting; keep what was read.
        for r in work {
            if r.seen != UNREAD {
                r.live.usage.sync().version.store(r.seen, Ordering::Release);
                *LeafGuard::lock(&r.live.usage.sync().base) = r.base;
            }
        }
    }

    /// Publishes a reconciliation the store took at `version`: the copy
    /// becomes the store's counters, plus the calls admitted since the
    /// reconciliation began (they stay waiting for the next one).
    fn reconciled(&self, r: Reconciling<'_>, version: u64) {
        let cell = &r.live.usage;
        let mut c = cell.lock();
        let done = r.calls.len().min(c.pending.len());
        let later: Vec<Admitted> = c.pending.split_off(done);
        let mut local = r.next.clone();
        for call in &later {
            self.replay(r.live, call, &mut local);
        }
        local.pending = later;
        *c = local;
        drop(c);
        *LeafGuard::lock(&cell.sync().base) = Some(r.next);
        cell.sync().version.store(version, Ordering::Release);
        cell.sync().synced_at.store(self.elapsed_ms(), Ordering::Release);
        self.overshoot.fetch_add(r.refused as u64, Ordering::Relaxed);
    }

    /// Reconciles every key with calls waiting whose workspace's interval
    /// has passed (all of them with `due_only` false); returns the shortest
    /// interval of a local-mode workspace, if any.
    fn reconcile_due(&self, due_only: bool) -> Option<Duration> {
        let mut shortest: Option<u64> = None;
        for slot in self.workspaces.iter() {
            if let LimitSync::Local { ms } = slot.current.load().ws.limit_sync {
                shortest = Some(shortest.map_or(ms, |s| s.min(ms)));
            }
        }
        let shortest = shortest?;
        let now = self.elapsed_ms();
        // Each cell once (a key in its rotation grace shares its
        // successor's), with calls waiting, and due.
        let mut due: Vec<Arc<LiveKey>> = Vec::new();
        for e in self.keys.iter() {
            let live = &*e;
            let ms = match live.workspace.as_ref().map(|s| s.current.load().ws.limit_sync) {
                Some(LimitSync::Local { ms }) => ms,
                _ => 0,
            };
            let cell = &live.usage;
            if (due_only && now.saturating_sub(cell.sync().synced_at.load(Ordering::Acquire)) < ms)
                || !cell.has_pending()
                || due.iter().any(|d| Arc::ptr_eq(&d.usage, cell))
            {
                continue;
            }
            due.push(Arc::clone(live));
        }
        for chunk in due.chunks(RECONCILE_BATCH) {
            self.reconcile(chunk);
        }
        Some(Duration::from_millis(shortest.max(1)))
    }

    /// Reconciles every key with calls waiting (when the engine closes).
    pub(crate) fn reconcile_all(&self) {
        if self.shared {
            self.reconcile_due(false);
        }
    }

    /// Reconciles local-mode counters until the engine stops.
    pub(crate) fn reconcile_loop(self: Arc<Self>) {
        let mut tick = IDLE_TICK;
        let mut stopped = self.stop_guard();
        loop {
            if *stopped {
                return;
            }
            let (guard, _) = self.wake.wait_timeout(stopped, tick).unwrap_or_else(std::sync::PoisonError::into_inner);
            stopped = guard;
            if *stopped {
                return;
            }
            drop(stopped);
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reconcile_due(true)));
            tick = next.ok().flatten().map_or(IDLE_TICK, |t| (t / 2).clamp(Duration::from_millis(1), IDLE_TICK));
            stopped = self.stop_guard();
        }
    }
}
