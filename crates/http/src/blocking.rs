//! Engine calls that may block, kept off the async workers.
//!
//! A change commits before it returns (an fsync, or a round trip to a
//! shared store); so does a strict-mode credit charge. Run on a Tokio
//! worker, two slow commits would stall every request of a two-worker
//! runtime. [`blocking`] first hands the worker's other tasks to a new
//! worker (`tokio::task::block_in_place`), so verifications keep being
//! answered while the commit waits.

use keyward::Engine;
use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which may block, without holding up the runtime's other tasks.
///
/// On a current-thread runtime there is no other worker to hand tasks to;
/// `f` then runs in place (embed the router in a multi-thread runtime, as
/// `keyward serve` does, to keep verifying while a change commits).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs a verification: in place when it cannot block, through
/// [`blocking`] when the engine commits some charges (strict credits).
pub(crate) fn verifying<T>(engine: &Engine, f: impl FnOnce() -> T) -> T {
    if engine.verify_may_block() { blocking(f) } else { f() }
}
