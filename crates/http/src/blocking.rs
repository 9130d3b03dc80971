//! Engine calls that may block, kept off the async workers.
//!
//! A change commits before it returns (an fsync, or a round trip to a
//! shared store); so does a strict-mode credit charge. Run on a Tokio
//! worker, two slow commits would stall every request of a two-worker
//! runtime. Changes run on the blocking threads ([`off_workers`]), and the
//! worker serves other requests while they commit. A verification that may
//! commit (strict credits only) runs through [`blocking`], which first hands
//! the worker's other tasks to another worker.

use keyward::Engine;
use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which may block and borrows from the caller, without holding
/// up the runtime's other tasks.
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

/// Runs an engine change on the runtime's blocking threads and waits for it
/// without occupying a worker: the worker goes on serving other requests
/// while the change commits.
pub(crate) async fn off_workers<T: Send + 'static>(
    engine: &Engine,
    f: impl FnOnce(&Engine) -> keyward::Result<T> + Send + 'static,
) -> keyward::Result<T> {
    let engine = engine.clone();
    match tokio::task::spawn_blocking(move || f(&engine)).await {
        Ok(result) => result,
        Err(e) => Err(keyward::Error::Storage(format!("the change did not finish: {e}"))),
    }
}

/// [`off_workers`] for a change that writes an audit event (an admin
/// call): the event's sequence number goes to the request's log line.
pub(crate) async fn audited<T: Send + 'static>(
    engine: &Engine,
    f: impl FnOnce(&Engine) -> keyward::Result<T> + Send + 'static,
) -> keyward::Result<T> {
    let (out, seq) = off_workers(engine, move |e| {
        let (out, seq) = e.audited(f);
        out.map(|v| (v, seq))
    })
    .await?;
    crate::envelope::note_audit_seq(seq);
    Ok(out)
}

/// A signed login ([`Engine::authenticate_user`]), off the workers: it
/// commits the session and the key's nonce history before it answers.
pub(crate) async fn login(
    engine: &Engine,
    signed: keyward_core::credentials::SignedHeaders,
    ip: Option<std::net::IpAddr>,
) -> Result<keyward::Session, Box<keyward_core::Verdict>> {
    match off_workers(engine, move |e| Ok(e.authenticate_user(&signed, ip))).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Box::new(keyward_core::Verdict::bare(keyward_core::Code::StoreUnavailable))),
    }
}
