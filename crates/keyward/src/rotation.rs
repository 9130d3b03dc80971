//! Rotation: a new token (and id) now, the old one for a grace period.
//!
//! The successor takes the old key's counters over without copying them:
//! both keys point at the same counter cell, whose owner becomes the
//! successor, so a call admitted during the rotation is counted once and
//! credits cannot be spent twice. Each key keeps its own nonce history: the
//! successor starts with none, and the old key's recorded logins stay
//! refused during the grace.
//!
//! A key is rotated once. Rotating it again (a client retrying a rotation
//! whose answer it lost, say) is refused with [`Error::Conflict`] naming the
//! successor: exactly one successor is ever active. Rotate the successor to
//! get another token.

use std::sync::Arc;

use keyward_core::policy::Status;
use keyward_core::{KeyId, KeyPolicy, Token};

use crate::audit::audit;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::keys::signing_secrets;
use crate::model::{Actor, AuditAction, CreatedKey, KeyRecord};
use crate::rng::os_rng;
use crate::store::Change;
use crate::validate::prefix_of_start;

impl Engine {
    /// Rotates a key: a new token (and id) now, with the same settings and
    /// counters; the old token keeps working for `grace_ms` (never past its
    /// own expiry), then expires.
    ///
    /// Refused for a revoked, expired or imported key, and with
    /// [`Error::Conflict`] for a key already rotated.
    pub fn rotate_key(&self, id: KeyId, grace_ms: u64, actor: &Actor) -> Result<CreatedKey> {
        let inner = &self.inner;
        let cell = Arc::clone(&inner.visible_key(actor, id)?.usage);
        let mut rng = os_rng();
        let now = inner.now();
        let new_id = KeyId::generate_at(now, &mut rng);
        // Level 1 before the writer: the counters handed over are the ones
        // stored, on a shared store too.
        let _gate = cell.gate();
        let (info, token, signing) = inner.retry_moved(Some(&cell), || {
            inner.write(|batch| {
                // Everything is read again here, under the writer: a revoke or a
                // delete that landed since the call began is seen, not undone.
                let old = inner.touchable_key(actor, id)?;
                let old_record = old.record();
                let p = old.policy();
                match p.status(now) {
                    Status::Revoked => return Err(Error::invalid("key", "a revoked key cannot be rotated")),
                    Status::Expired => return Err(Error::invalid("key", "an expired key cannot be rotated")),
                    _ => {}
                }
                if !inner.workspace(p.workspace)?.ws.policy.api_access {
                    return Err(Error::PlanInactive);
                }
                if p.imported {
                    return Err(Error::invalid("key", "an imported key cannot be rotated; create a new key instead"));
                }
                if let Some(successor) = old_record.usage_owner {
                    return Err(Error::Conflict(format!(
                        "key {id} was already rotated (its successor is {successor}); rotate that key instead"
                    )));
                }
                // The successor holds exactly the old key's permissions: a
                // narrower key cannot rotate a broader one and read its token.
                let acting = inner.acting_key(actor, p.workspace)?;
                crate::engine::Inner::check_grant(acting.as_deref(), &p.permissions)?;
                let prefix = match prefix_of_start(&old_record.start) {
                    Some(prefix) => prefix,
                    None => inner.workspace(p.workspace)?.ws.policy.prefix.clone(),
                };
                let token = Token::generate(&prefix, &mut rng);
                let successor = KeyRecord {
                    policy: KeyPolicy {
                        id: new_id,
                        hash: token.hash(),
                        revoked_at: None,
                        imported: false,
                        ..p.clone()
                    },
                    start: token.start(),
                    created_at: now,
                    created_by: actor.to_string(),
                    signing: old_record.signing.clone(),
                    usage_owner: None,
                    external_id: old_record.external_id.clone(),
                    roles: old_record.roles.clone(),
                    bearer: old_record.bearer,
                    // The successor is the same key to the workspace's
                    // people: it keeps the number.
                    serial: old_record.serial,
                };
                let grace_end = now.plus(grace_ms);
                let mut old_rec = old_record;
                old_rec.policy.expires_at = Some(old_rec.policy.expires_at.map_or(grace_end, |e| e.min(grace_end)));
                old_rec.usage_owner = Some(new_id);
                // Keys still in the grace of an earlier rotation share these
                // counters too: they follow them to the new owner.
                let mut sharers: Vec<_> = inner
                    .keys
                    .iter()
                    .filter(|e| e.policy().id != id && Arc::ptr_eq(&e.usage, &old.usage))
                    .map(|e| Arc::clone(&e))
                    .collect();
                sharers.sort_by_key(|k| k.policy().id);
                let sharer_records: Vec<KeyRecord> =
                    sharers.iter().map(|k| KeyRecord { usage_owner: Some(new_id), ..k.record() }).collect();
                let counters = old.usage.to_record();
                batch.push(Change::Key(successor.clone()));
                batch.push(Change::Key(old_rec.clone()));
                for r in &sharer_records {
                    batch.push(Change::Key(r.clone()));
                }
                if inner.shared {
                    // Only if no other node charged them since they were read.
                    batch.push(inner.counters_change(&old.usage, counters.clone()));
                }
                batch.push(Change::UsageDeleted(old.usage.owner()));
                batch.push(Change::Usage(new_id, counters));
                audit(
                    batch,
                    now,
                    actor,
                    AuditAction::KeyRotated,
                    Some(p.workspace),
                    id.to_string(),
                    format!("new={new_id} grace_ms={grace_ms}"),
                );
                Ok(move || {
                    let cell = Arc::clone(&old.usage);
                    cell.set_owner(new_id);
                    cell.joined.store(true, std::sync::atomic::Ordering::Release);
                    // Counters changed since the copy above are written by the
                    // next flush, under the new owner.
                    cell.mark_dirty();
                    inner.touched(&old);
                    let signing = successor.signing.clone();
                    let mut live = crate::engine::LiveKey::new(successor, Arc::clone(&cell));
                    // The counters are the old key's, with its activity: the
                    // successor keeps its own.
                    live.home = Some(crate::engine::UsageCell::home(new_id, 0, inner.shared));
                    let info = inner.key_info(&live, now);
                    inner.index_key(live);
                    inner.index_key(old.with_record(old_rec));
                    for (k, r) in sharers.iter().zip(sharer_records) {
                        inner.index_key(k.with_record(r));
                    }
                    (info, token, signing)
                })
            })
        })?;
        let signing = signing_secrets(inner, new_id, signing.as_ref());
        Ok(CreatedKey { info, token, signing })
    }
}
