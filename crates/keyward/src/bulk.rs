//! Many keys in one commit: bulk creation and import.
//!
//! A batch is all or nothing. Every item is checked (settings, creator
//! bounds, duplicate hashes — against the store and within the batch);
//! if any is refused, nothing is written and [`Error::Batch`] lists every
//! refused item with its index, so a client fixes those and sends the same
//! batch again. Otherwise the whole batch commits in one transaction, with
//! one audit event naming every key, and only then is it published to the
//! index. One commit (one fsync) per batch instead of one per key is what
//! makes an import of a million keys take seconds, not minutes.

use std::collections::HashSet;

use keyward_core::{Token, WorkspaceId};

use crate::audit::audit;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::keys::{NewRecord, signing_secrets};
use crate::model::{Actor, AuditAction, ImportKey, KeyInfo, KeyRecord, NewKey, SigningSecrets, UsageRecord};
use crate::rng::os_rng;
use crate::store::Change;

/// Most keys [`Engine::create_keys`] takes in one call (one transaction;
/// on a Redis store, one script call that blocks the server while it runs).
pub const MAX_BATCH: usize = 10_000;

/// One key of a batch ([`Engine::create_keys`]).
#[derive(Clone, Debug)]
pub enum BatchKey {
    /// A new key: the engine mints its token, returned once in the result.
    New(NewKey),
    /// A key issued elsewhere, by its token text: the engine keeps only its
    /// SHA-256 and, as its start, the token's first characters (a third of
    /// them, at most 12, so a short token is not given away). The token
    /// skips the checksum step when verified.
    Token {
        /// The foreign token (see [`Token::parse_foreign`]).
        token: Token,
        /// The rest, as for a new key (no signing identity).
        key: NewKey,
    },
    /// A key issued elsewhere, by the SHA-256 of its token.
    Hash(ImportKey),
}

/// A key a batch created or imported.
#[derive(Debug)]
pub struct BatchCreated {
    /// The key.
    pub info: KeyInfo,
    /// The token of a key minted here (shown this once); `None` for an
    /// imported key, whose owner already holds it.
    pub token: Option<Token>,
    /// The signing secrets, if the key has a signing identity.
    pub signing: Option<SigningSecrets>,
}

impl Engine {
    /// Creates and imports `keys` in workspace `ws` in one commit, all or
    /// nothing; the results are in the order of `keys`.
    ///
    /// Each item is checked as [`Engine::create_key`] or
    /// [`Engine::import_key`] would check it, creator bounds included (when
    /// `actor` is a key); a hash already in use, or used twice in the batch,
    /// is refused. If any item is refused nothing is written, in memory or
    /// in the store, and [`Error::Batch`] names every refused item by its
    /// index. Whole-call refusals (no such workspace, plan without API
    /// access, more than [`MAX_BATCH`] keys, a failed commit) come as
    /// their own error. The batch is durable when this returns, and its
    /// audit log entry is one [`AuditAction::KeysCreated`] event listing
    /// the ids in order. An empty batch writes nothing.
    pub fn create_keys(&self, ws_id: WorkspaceId, keys: Vec<BatchKey>, actor: &Actor) -> Result<Vec<BatchCreated>> {
        let inner = &self.inner;
        let now = inner.now();
        let Some(prepared) = self.prepare_batch(ws_id, keys, actor)? else {
            return Ok(Vec::new());
        };
        let total = prepared.len();
        let created = inner.write(|batch| {
            // Numbered in order; a refused batch's numbers go unused (a gap
            // on a shared store, none on a store of one node).
            let first = inner.reserve_serials(ws_id, total as u64, batch)?;
            let planned = self.plan_batch(ws_id, &prepared, actor, now, first)?;
            let mut ids = String::with_capacity(total * 27);
            let mut imported = 0usize;
            for (record, usage) in &planned {
                if let Some(u) = usage {
                    batch.push(Change::Usage(record.policy.id, u.clone()));
                }
                batch.push(Change::Key(record.clone()));
                if !ids.is_empty() {
                    ids.push(',');
                }
                ids.push_str(&record.policy.id.to_string());
                imported += usize::from(record.policy.imported);
            }
            let target = format!("{total} keys ({imported} imported)");
            audit(batch, now, actor, AuditAction::KeysCreated, Some(ws_id), target, ids);
            Ok(move || {
                inner.note_serials(ws_id, first + total as u64 - 1);
                planned.into_iter().map(|(record, usage)| inner.publish_new(record, usage, now)).collect::<Vec<_>>()
            })
        })?;
        Ok(created
            .into_iter()
            .zip(prepared)
            .map(|(info, new)| {
                let signing = signing_secrets(inner, new.id, new.signing.as_ref());
                BatchCreated { info, token: new.token, signing }
            })
            .collect())
    }

    /// Checks `keys` as [`Engine::create_keys`] would, against the keys
    /// held now, and writes nothing: `Ok` when that call would accept them
    /// all (unless something changes meanwhile), else the same errors. An
    /// import checks its whole file this way before it writes anything.
    pub fn check_keys(&self, ws_id: WorkspaceId, keys: Vec<BatchKey>, actor: &Actor) -> Result<()> {
        let now = self.inner.now();
        if let Some(prepared) = self.prepare_batch(ws_id, keys, actor)? {
            // A dry run hands out no serial: the numbers shown are not kept.
            self.plan_batch(ws_id, &prepared, actor, now, 0)?;
        }
        Ok(())
    }

    /// The checks made before the writer: the call's, then each item's
    /// settings. `None` for an empty batch (of an existing workspace).
    fn prepare_batch(&self, ws_id: WorkspaceId, keys: Vec<BatchKey>, actor: &Actor) -> Result<Option<Vec<NewRecord>>> {
        let inner = &self.inner;
        if keys.len() > MAX_BATCH {
            return Err(Error::invalid("keys", format!("at most {MAX_BATCH} keys per batch, got {}", keys.len())));
        }
        let ws = inner.workspace(ws_id)?;
        if keys.is_empty() {
            return Ok(None);
        }
        inner.acting_key(actor, ws_id)?;
        if !ws.ws.policy.api_access {
            return Err(Error::PlanInactive);
        }
        let total = keys.len();
        let mut rng = os_rng();
        let mut refused: Vec<(usize, Error)> = Vec::new();
        let mut prepared: Vec<NewRecord> = Vec::with_capacity(total);
        for (i, item) in keys.into_iter().enumerate() {
            let (spec, imported) = match item {
                BatchKey::New(spec) => (spec, None),
                BatchKey::Token { token, key } => {
                    let start = foreign_start(token.expose());
                    (key, Some((token.hash(), start)))
                }
                BatchKey::Hash(ImportKey { hash, key, start }) => match hash {
                    Some(h) => (key, Some((h, start.unwrap_or_else(|| "imported".into())))),
                    None => {
                        refused.push((i, Error::invalid("hash", "SHA-256 of the token is required")));
                        continue;
                    }
                },
            };
            match NewRecord::prepare(inner, &ws.ws.policy, spec, imported, &mut rng) {
                Ok(p) => prepared.push(p),
                Err(e) => refused.push((i, e)),
            }
        }
        if refused.is_empty() { Ok(Some(prepared)) } else { Err(Error::Batch { total, refused }) }
    }

    /// The checks against what memory holds now (under the writer when
    /// creating): workspace, acting key, hashes, creator bounds. The
    /// records to write, in order.
    fn plan_batch(
        &self,
        ws_id: WorkspaceId,
        prepared: &[NewRecord],
        actor: &Actor,
        now: keyward_core::UnixMillis,
        first_serial: u64,
    ) -> Result<Vec<(KeyRecord, Option<UsageRecord>)>> {
        let inner = &self.inner;
        let ws = inner.workspace(ws_id)?;
        if !ws.ws.policy.api_access {
            return Err(Error::PlanInactive);
        }
        let acting = inner.acting_key(actor, ws_id)?;
        let total = prepared.len();
        let mut seen: HashSet<[u8; 32]> = HashSet::with_capacity(total);
        let mut planned = Vec::with_capacity(total);
        let mut refused: Vec<(usize, Error)> = Vec::new();
        for (i, new) in prepared.iter().enumerate() {
            if inner.keys.contains_hash(&new.hash.0) || !seen.insert(new.hash.0) {
                refused.push((i, Error::AlreadyExists { kind: "key", id: "with this hash".into() }));
                continue;
            }
            match new.record(&ws.ws, acting.as_deref(), actor, now, first_serial + i as u64) {
                Ok(r) => planned.push(r),
                Err(e) => refused.push((i, e)),
            }
        }
        if refused.is_empty() { Ok(planned) } else { Err(Error::Batch { total, refused }) }
    }
}

/// The display start of a foreign token: its first third, at most 12
/// characters. (A native token's start, prefix and four body characters,
/// could be the whole of a short foreign one.)
fn foreign_start(raw: &str) -> String {
    let n = (raw.chars().count() / 3).min(12);
    raw.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_foreign_start_shows_at_most_a_third() {
        assert_eq!(super::foreign_start("sk_live_foreign_1"), "sk_li");
        assert_eq!(super::foreign_start("sk_live_4eC39HqLyjWDarjtT1zdp7dc"), "sk_live_4e");
        assert_eq!(super::foreign_start(&"a".repeat(200)), "a".repeat(12));
        assert_eq!(super::foreign_start("ab"), "");
    }
}
