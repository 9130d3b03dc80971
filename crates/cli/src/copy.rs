//! `keyward store copy --from SRC --to DST`: everything one store holds into
//! an empty one (`keyward::copy_store`), and the source's master and
//! snapshot keys to where the destination's nodes read them.
//!
//! No store holds those keys: a redb file keeps them beside it in
//! `<db>.secrets`, the nodes of a Redis store take them from `--secrets
//! FILE` or the environment. So a copy into a redb file writes the source's
//! keys to `<dst>.secrets`; a copy from a redb file into Redis writes them
//! to `--secrets FILE` (unless the environment gives both, as it then must
//! to every node); a copy from Redis reads them from `--secrets FILE` or the
//! environment. Between two Redis databases nothing moves. A keys file that
//! is there already must hold the same keys. Everything about the keys is
//! checked before anything is copied, and the file is written once the copy
//! succeeded.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use keyward::{CopyError, CopyProgress, CopyReport, CopyStage, StoreLocation};
use serde_json::json;

use crate::secrets::{self, Secrets};
use crate::{Fail, Out, Place, STORE_URL, redis_url, table};

pub(crate) fn run(from: &str, to: &str, secrets: Option<&Path>, ca: Option<Vec<u8>>, json: bool) -> Out {
    let (from, to) = (place("--from", from, ca.clone())?, place("--to", to, ca)?);
    let keys = plan_keys(&from, &to, secrets)?;
    let (from, to) = (location(&from), location(&to));
    let bar = (!json && std::io::stderr().is_terminal()).then(ProgressBar::new_spinner);
    if let Some(bar) = &bar {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    let copied = keyward::copy_store(&from, &to, |p| {
        if let Some(bar) = &bar {
            show(bar, p);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = copied.map_err(failure)?;
    if let Keys::File(k) = &keys
        && k.write
    {
        secrets::write(&k.path, &k.keys).map_err(|Fail(code, e)| {
            Fail(code, format!("copied {from} to {to}, but the keys were not written: {e}"))
        })?;
    }
    let keys_at = match &keys {
        Keys::File(k) => Some(k.path.display().to_string()),
        Keys::Nowhere(_) => None,
    };
    if json {
        println!(
            "{}",
            json!({"from": from.to_string(), "to": to.to_string(), "workspaces": report.workspaces,
                "tools": report.tools, "keys": report.keys, "usage": report.usage, "nonces": report.nonces,
                "sessions": report.sessions, "audit_events": report.audit_events, "commits": report.commits,
                "secrets": keys_at})
        );
    } else {
        println!("copied {from} to {to} in {} commits", report.commits);
        print_counts(&report);
        match &keys {
            Keys::File(k) if k.write => println!("master and snapshot keys: wrote {} (mode 0600)", k.path.display()),
            Keys::File(k) => println!("master and snapshot keys: {} holds them already", k.path.display()),
            Keys::Nowhere(why) => println!("master and snapshot keys: not moved: {why}"),
        }
    }
    Ok(0)
}

/// `text` as `flag` gave it: a redb file, or a Redis URL.
fn place(flag: &str, text: &str, ca: Option<Vec<u8>>) -> Result<Place, Fail> {
    if text.contains("://") {
        let url = redis_url(flag, text.to_owned(), &format!("a redb file or {STORE_URL}"))?;
        Ok(Place::Redis { url, secrets: None, ca })
    } else if text.is_empty() {
        Err(Fail(2, format!("{flag}: expected a redb file or {STORE_URL}")))
    } else {
        Ok(Place::File(PathBuf::from(text), None))
    }
}

fn location(place: &Place) -> StoreLocation {
    match place {
        Place::File(path, _) => StoreLocation::Redb(path.clone()),
        Place::Redis { url, ca, .. } => StoreLocation::Redis { url: url.clone(), ca: ca.clone() },
    }
}

/// Where the source's master and snapshot keys go.
enum Keys {
    /// Into the file the destination's nodes read them from.
    File(KeysFile),
    /// Nowhere, for this reason.
    Nowhere(&'static str),
}

/// The keys file the destination's nodes will read.
struct KeysFile {
    path: PathBuf,
    keys: Secrets,
    /// False when it is there already, with these keys.
    write: bool,
}

/// Where the source's keys go (see the module docs).
fn plan_keys(from: &Place, to: &Place, secrets: Option<&Path>) -> Result<Keys, Fail> {
    match (from, to) {
        (Place::File(src, _), Place::File(dst, _)) => {
            if secrets.is_some() {
                return Err(Fail(
                    2,
                    "--secrets: neither store is Redis; a redb file keeps its keys beside it (<db>.secrets)".into(),
                ));
            }
            let keys = secrets::beside(src)?;
            if keys.master_key.is_none() && keys.snapshot_key.is_none() {
                return Ok(Keys::Nowhere("the source has none"));
            }
            keys_file("--to", secrets::path_for(dst), keys).map(Keys::File)
        }
        (Place::File(src, _), Place::Redis { .. }) => {
            let keys = secrets::beside(src)?;
            if keys.master_key.is_none() || keys.snapshot_key.is_none() {
                return Err(Fail(
                    2,
                    format!(
                        "--from {}: its master and snapshot keys are needed by the nodes of a Redis store, and {} \
                         (or KEYWARD_MASTER_KEY and KEYWARD_SNAPSHOT_KEY) does not hold both",
                        src.display(),
                        secrets::path_for(src).display()
                    ),
                ));
            }
            match secrets {
                Some(file) => keys_file("--secrets", file.to_path_buf(), keys).map(Keys::File),
                // Every node takes them from its environment, as this copy did.
                None if secrets::both_in_env()? => {
                    Ok(Keys::Nowhere("the nodes take them from KEYWARD_MASTER_KEY and KEYWARD_SNAPSHOT_KEY"))
                }
                None => Err(Fail(
                    2,
                    format!(
                        "--secrets FILE is needed: where to write the master and snapshot keys of {} for the nodes \
                         of {} (a shared store never holds them), unless KEYWARD_MASTER_KEY and \
                         KEYWARD_SNAPSHOT_KEY give them",
                        src.display(),
                        location(to)
                    ),
                )),
            }
        }
        (Place::Redis { .. }, Place::File(dst, _)) => {
            let keys = secrets::for_store(secrets, false)?;
            keys_file("--to", secrets::path_for(dst), keys).map(Keys::File)
        }
        (Place::Redis { .. }, Place::Redis { .. }) => match secrets {
            Some(_) => Err(Fail(
                2,
                "--secrets: both stores are Redis, whose nodes keep the keys they have; no keys are copied".into(),
            )),
            None => Ok(Keys::Nowhere("both stores are Redis, whose nodes keep the keys they have")),
        },
    }
}

/// `path` for `keys`: to be written, or there already with the same keys.
fn keys_file(flag: &str, path: PathBuf, keys: Secrets) -> Result<KeysFile, Fail> {
    if !path.exists() {
        return Ok(KeysFile { path, keys, write: true });
    }
    if secrets::read(&path)? != keys {
        return Err(Fail(
            2,
            format!(
                "{flag}: {} holds other keys than the source's: move it away first; nothing was copied",
                path.display()
            ),
        ));
    }
    Ok(KeysFile { path, keys, write: false })
}

/// Draws `p` on the progress bar.
fn show(bar: &ProgressBar, p: CopyProgress) {
    match (p.stage, p.total) {
        // The records' stage begins: a bar of known length from here on.
        (CopyStage::Records, Some(total)) if bar.length() != Some(total) => {
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ({eta} left)") {
                bar.set_style(style);
            }
            bar.set_length(total);
            bar.set_message("records");
        }
        (CopyStage::Audit, _) => bar.set_message("audit events"),
        _ => {}
    }
    bar.set_position(p.done);
}

fn print_counts(r: &CopyReport) {
    table::print(
        &["WORKSPACES", "TOOLS", "KEYS", "USAGE", "NONCES", "SESSIONS", "AUDIT EVENTS"],
        &[[r.workspaces, r.tools, r.keys, r.usage, r.nonces, r.sessions, r.audit_events]
            .iter()
            .map(u64::to_string)
            .collect()],
    );
}

/// The message of a failed copy, naming the flag of the store at fault.
fn failure(e: CopyError) -> Fail {
    Fail(2, message(e))
}

fn message(e: CopyError) -> String {
    let untouched = "nothing was copied";
    match e {
        CopyError::SameStore(s) => format!("--from and --to are the same store ({s}); {untouched}"),
        CopyError::Source { store, error } => format!("--from {store}: {error}; {untouched}"),
        CopyError::SourceEmpty(store) => format!("--from {store}: holds no keyward data; {untouched}"),
        CopyError::Destination { store, error } => format!("--to {store}: {error}; {untouched}"),
        CopyError::DestinationNotEmpty { store, found } => {
            format!("--to {store}: already holds keyward data ({found}); copy only into an empty store; {untouched}")
        }
        CopyError::SourceChanged { store, events } => format!(
            "--from {store}: changed while it was copied ({events} audit events after the copied ones): stop what \
             writes it, then copy again; {untouched}"
        ),
        CopyError::Interrupted { store, cause } => {
            let cause = message(*cause);
            let cause = cause.strip_suffix(&format!("; {untouched}")).unwrap_or(&cause);
            format!("{cause}; --to {store} now holds part of the copy: empty it before copying into it again")
        }
        other => other.to_string(),
    }
}
