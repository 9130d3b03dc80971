//! The one writer: every durable change goes through [`Writer::write`].
//!
//! # Lock order
//!
//! A thread holding a lock takes only locks further down this list:
//!
//! 1. a counter cell's **gate** (`UsageCell::gate`): held across a commit by
//!    the few calls that must serialise a key's durable sequence (a signed
//!    login's nonce, a strict-mode credit charge, a credits change), and,
//!    on a shared store, across a charge of the store's counters (a round
//!    trip, not a commit: exact-mode verification, a lease release, reading
//!    the counters before showing or changing them). Only the local-mode
//!    reconciler holds several gates at once (one thread; every other
//!    holder takes one and no other), so gates cannot wait on each other;
//! 2. the **writer** (`Writer::lock`): one at a time; the only place a store
//!    transaction begins;
//! 3. **map guards** (the key and session maps' shard locks);
//! 4. **leaves**: a key's counter mutex (`UsageCell::state`), its nonce
//!    mutex, a cell's owner, a cell's last reconciled counters
//!    (`SyncState::base`), the workspaces' key serials (`Inner::serials`),
//!    the flush queue's shards (`Inner::dirty`).
//!    Nothing is taken while a leaf is held.
//!
//! So no storage transaction is ever begun while a counter mutex or a map
//! guard is held: [`Writer::write`] checks that on entry (every lock of
//! level 4 is taken through [`LeafGuard`], which counts them per thread), and
//! the flusher copies dirty counters out before it asks the store to write.
//! Verification takes at most a map guard (released before deciding) and a
//! counter mutex: it never waits for a commit, except a strict-mode charge,
//! which holds only its own key's gate; on a shared store an exact-mode
//! charge waits for one round trip under that gate, and no lock of level 2
//! to 4 is held across it.
//!
//! # Commit, then publish
//!
//! `write` runs a plan under the writer lock. The plan re-reads whatever it
//! changes from memory (no copy taken before the lock is trusted), fills a
//! [`Batch`], and returns a publish step. The batch is committed; only if the
//! commit succeeded does the publish step run, still under the writer lock,
//! so memory changes in commit order. A failed commit changes nothing, in
//! memory or in the store, and returns its error.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::store::{Batch, Store};

thread_local! {
    /// Level-4 locks this thread holds now.
    static LEAVES_HELD: Cell<u32> = const { Cell::new(0) };
}

/// A level-4 lock's guard: counts itself as held on this thread.
pub(crate) struct LeafGuard<'a, T> {
    guard: MutexGuard<'a, T>,
}

impl<'a, T> LeafGuard<'a, T> {
    /// Locks `m` as a leaf. A panic while a leaf is held cannot leave the
    /// data half written (every update under one is a plain assignment of
    /// whole values), so poisoning is ignored.
    pub(crate) fn lock(m: &'a Mutex<T>) -> Self {
        let guard = m.lock().unwrap_or_else(PoisonError::into_inner);
        LEAVES_HELD.with(|n| n.set(n.get() + 1));
        Self { guard }
    }
}

impl<T> Drop for LeafGuard<'_, T> {
    fn drop(&mut self) {
        LEAVES_HELD.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

impl<T> Deref for LeafGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for LeafGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// Whether this thread holds a level-4 lock now.
pub(crate) fn leaf_held() -> bool {
    LEAVES_HELD.with(|n| n.get() > 0)
}

/// Failures of the write path, for `/healthz` and `/metrics`.
#[derive(Default)]
pub(crate) struct Health {
    /// Commits that failed (flushes included).
    pub write_failures: AtomicU64,
    /// Flushes that failed.
    pub flush_failures: AtomicU64,
    /// Why the store is degraded; `None` when the last commit succeeded.
    pub problem: Mutex<Option<String>>,
    /// Set while the last commit failed (a cheap read of `problem`).
    pub degraded: AtomicBool,
}

impl Health {
    fn record<T>(&self, result: &Result<T>) {
        match result {
            Ok(_) => {
                if self.degraded.swap(false, Ordering::AcqRel) {
                    *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
            }
            Err(e) => {
                self.write_failures.fetch_add(1, Ordering::Relaxed);
                *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                self.degraded.store(true, Ordering::Release);
            }
        }
    }
}

/// Owns the store's write side; see the module docs for the lock order.
pub(crate) struct Writer {
    lock: Mutex<()>,
    store: Box<dyn Store>,
    pub health: Health,
}

impl Writer {
    pub(crate) fn new(store: Box<dyn Store>) -> Self {
        Self { lock: Mutex::new(()), store, health: Health::default() }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Plans a change under the writer lock, commits it, then publishes it.
    ///
    /// `plan` fills the batch from what memory holds now and returns the
    /// step that publishes the change; it runs only after the commit
    /// succeeded. An empty batch commits nothing and publishes at once.
    pub(crate) fn write<P, T>(&self, plan: impl FnOnce(&mut Batch) -> Result<P>) -> Result<T>
    where
        P: FnOnce() -> T,
    {
        if leaf_held() {
            // A lock-order violation is a bug in the engine: refuse rather
            // than risk a deadlock.
            return Err(Error::Storage("internal: a write began while a counter lock was held".into()));
        }
        // Poisoning: the guarded value is `()`; a panic in a plan leaves
        // nothing half done (nothing is published before the commit).
        let _writer = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Batch::default();
        let publish = plan(&mut batch)?;
        if leaf_held() {
            return Err(Error::Storage("internal: a write plan kept a counter lock".into()));
        }
        if !batch.is_empty()
            && let Some(seq) = self.commit(&batch)?
        {
            AUDITED.with(|a| {
                if a.get().is_some() {
                    a.set(Some(Some(seq)));
                }
            });
        }
        Ok(publish())
    }

    fn commit(&self, batch: &Batch) -> Result<Option<u64>> {
        let result = self.store.commit(batch);
        self.health.record(&result);
        result
    }
}

thread_local! {
    /// While [`audited`] runs on this thread: the sequence number of the last
    /// audit event committed since it began (`Some(None)`: none yet).
    static AUDITED: Cell<Option<Option<u64>>> = const { Cell::new(None) };
}

/// Runs `f` and returns, with its result, the sequence number of the last
/// audit event that the changes `f` made on this thread wrote. Every commit
/// runs on the thread that asked for the change (under the writer lock), so
/// the number is that of this caller's event, whatever other threads commit.
pub(crate) fn audited<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    /// Puts back an enclosing call's state, even if `f` panics; an
    /// enclosing call sees the events of the calls inside it.
    struct Restore(Option<Option<u64>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let inner = AUDITED.with(|a| a.get()).flatten();
            let outer = self.0.map(|seq| inner.or(seq));
            AUDITED.with(|a| a.set(outer));
        }
    }
    let restore = Restore(AUDITED.with(|a| a.replace(Some(None))));
    let out = f();
    let seq = AUDITED.with(|a| a.get()).flatten();
    drop(restore);
    (out, seq)
}
