//! Keys: create, import, read, update, revoke, delete, credits.
//!
//! Every change plans under the writer from the key as memory holds it
//! then (see `writer`), commits the record with its audit event, and only
//! then publishes the new version to the index.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use keyward_core::limits::CreditBalance;
use keyward_core::permission::{Permission, first_uncovered};
use keyward_core::signature::NoncePolicy;
use keyward_core::{KeyHash, KeyId, KeyPolicy, Token, UnixMillis, WorkspaceId};

use crate::audit::audit;
use crate::engine::{Engine, Inner, KeyCounters, LiveKey, UsageCell};
use crate::error::{Error, Result};
use crate::model::{
    Actor, AuditAction, CreatedKey, CreditChange, ImportKey, KeyInfo, KeyRecord, KeyTtl, KeyUpdate, KeyUsageReport,
    NewKey, NewSigning, Page, SigningRecord, SigningSecrets, UsageRecord, Workspace,
};
use crate::rng::os_rng;
use crate::store::{Batch, Change};
use crate::validate::{
    Changes, MAX_PAGE, decode_meta, derive_api_secret, encode_meta, validate_external_id, validate_limits,
    validate_name, validate_roles, validate_tools, validate_user_id,
};
use crate::writer::LeafGuard;

impl Inner {
    pub(crate) fn key_info(&self, live: &LiveKey, now: UnixMillis) -> KeyInfo {
        let p = live.policy();
        let credits_remaining = p.limits.credits.as_ref().map(|c| live.usage.read(|u| u.key.credits_at(c, now)));
        let last = live.activity().last_used.load(Ordering::Acquire);
        let d = live.details();
        KeyInfo {
            id: p.id,
            workspace: p.workspace,
            name: p.name.clone(),
            start: d.start,
            status: p.status(now),
            created_at: live.created_at,
            created_by: d.created_by,
            last_used_at: (last != 0).then_some(UnixMillis(last)),
            expires_at: p.expires_at,
            revoked_at: p.revoked_at,
            disabled: p.disabled,
            permissions: p.permissions.clone(),
            ip_rules: p.ip_rules.clone(),
            limits: p.limits.clone(),
            tool_limits: p.tool_limits.clone(),
            tools: p.tools.clone(),
            meta: decode_meta(&p.meta),
            signing_user_id: d.signing.map(|s| s.user_id),
            bearer: live.is_bearer(),
            imported: p.imported,
            credits_remaining,
            external_id: d.external_id,
            roles: d.roles,
            serial: d.serial,
        }
    }

    /// The acting key, if the actor is one, checked to be in `ws`.
    pub(crate) fn acting_key(&self, actor: &Actor, ws: WorkspaceId) -> Result<Option<Arc<LiveKey>>> {
        match actor {
            Actor::Key(id) => {
                let k = self.key(*id)?;
                if k.policy().workspace != ws {
                    return Err(Error::not_found("workspace", ws));
                }
                Ok(Some(k))
            }
            _ => Ok(None),
        }
    }

    /// A key `actor` may change: visible to it, and (for a key actor) with
    /// no permission the actor lacks (see `bounds`).
    pub(crate) fn touchable_key(&self, actor: &Actor, id: KeyId) -> Result<Arc<LiveKey>> {
        let k = self.visible_key(actor, id)?;
        if let Actor::Key(a) = actor {
            crate::bounds::may_touch(self.key(*a)?.policy(), k.policy())?;
        }
        Ok(k)
    }

    /// A key, as visible to `actor` (keys see only their own workspace).
    pub(crate) fn visible_key(&self, actor: &Actor, id: KeyId) -> Result<Arc<LiveKey>> {
        let k = self.key(id)?;
        if let Actor::Key(a) = actor {
            let own = self.key(*a)?.policy().workspace;
            if own != k.policy().workspace {
                return Err(Error::not_found("key", id));
            }
        }
        Ok(k)
    }

    pub(crate) fn check_grant(acting: Option<&LiveKey>, wanted: &[Permission]) -> Result<()> {
        if let Some(p) = acting.and_then(|k| first_uncovered(&k.policy().permissions, wanted)) {
            return Err(Error::InsufficientPermissions(format!("cannot grant `{p}`: the acting key lacks it")));
        }
        Ok(())
    }

    /// Hands out `n` key serials of workspace `ws` (call it under the
    /// writer): the first of them. A store of one node records the highest
    /// with `batch`; call [`Inner::note_serials`] once it committed.
    pub(crate) fn reserve_serials(&self, ws: WorkspaceId, n: u64, batch: &mut Batch) -> Result<u64> {
        if let Some(last) = self.writer.store().reserve_serials(ws, n)? {
            return Ok(last.saturating_sub(n) + 1);
        }
        let high = LeafGuard::lock(&self.serials).get(&ws).copied().unwrap_or(0);
        let last = high.checked_add(n).ok_or_else(|| Error::Conflict("the workspace ran out of key serials".into()))?;
        batch.push(Change::Serial(ws, last));
        Ok(high + 1)
    }

    /// Publishes serials up to `last` of `ws` as handed out.
    pub(crate) fn note_serials(&self, ws: WorkspaceId, last: u64) {
        let mut serials = LeafGuard::lock(&self.serials);
        let high = serials.entry(ws).or_default();
        *high = (*high).max(last);
    }

    /// Whether a key other than `id` shares `cell` (a rotation grace).
    pub(crate) fn shared_by_another(&self, id: KeyId, cell: &Arc<UsageCell>) -> bool {
        self.keys.iter().any(|e| e.policy().id != id && Arc::ptr_eq(&e.usage, cell))
    }
}

/// A new key's expiry under its workspace's key lifetimes: `expire_now`
/// wins, then the expiry asked for (no later than the longest lifetime),
/// then the default lifetime, then the longest.
fn new_key_expiry(
    ttl: KeyTtl,
    asked: Option<UnixMillis>,
    expire_now: bool,
    now: UnixMillis,
) -> Result<Option<UnixMillis>> {
    if expire_now {
        return Ok(Some(now));
    }
    if asked.is_some() {
        check_lifetime(ttl, asked, now)?;
        return Ok(asked);
    }
    Ok(ttl.default_ms.or(ttl.max_ms).map(|ms| UnixMillis(now.0.saturating_add(ms))))
}

/// Refuses an expiry (`None`: never) that would let a key created at
/// `created_at` live longer than its workspace allows.
fn check_lifetime(ttl: KeyTtl, expires_at: Option<UnixMillis>, created_at: UnixMillis) -> Result<()> {
    let Some(max) = ttl.max_ms else { return Ok(()) };
    let latest = created_at.0.saturating_add(max);
    match expires_at {
        Some(e) if e.0 <= latest => Ok(()),
        Some(_) => Err(Error::invalid(
            "expires_at",
            format!("is later than the workspace allows: keys live at most {}", crate::validate::duration_text(max)),
        )),
        None => Err(Error::invalid(
            "expires_at",
            format!("is required: keys of this workspace live at most {}", crate::validate::duration_text(max)),
        )),
    }
}

/// A new key's signing identity, checked.
fn signing_record(s: &NewSigning, has_master: bool) -> Result<SigningRecord> {
    validate_user_id(&s.user_id)?;
    if !has_master {
        return Err(Error::NoMasterKey);
    }
    if let NoncePolicy::Unique { window_ms, capacity } = s.nonce_policy
        && (window_ms == 0 || capacity == 0 || capacity > 65_536)
    {
        return Err(Error::invalid("signing.nonce_policy", "unique needs a window and a capacity of 1 to 65536"));
    }
    Ok(SigningRecord { user_id: s.user_id.clone(), nonce_policy: s.nonce_policy })
}

/// Checks a new key's settings; returns its encoded metadata and signing record.
pub(crate) fn check_new_key(spec: &NewKey, has_master: bool) -> Result<(String, Option<SigningRecord>)> {
    validate_name(&spec.name)?;
    validate_tools(&spec.tools, &spec.tool_limits)?;
    if let Some(l) = &spec.limits {
        validate_limits("limits", l)?;
    }
    validate_external_id(spec.external_id.as_deref())?;
    validate_roles(&spec.roles)?;
    let meta = encode_meta(spec.meta.as_ref())?;
    let signing = spec.signing.as_ref().map(|s| signing_record(s, has_master)).transpose()?;
    Ok((meta, signing))
}

/// The signing secrets of a key just created, shown once.
pub(crate) fn signing_secrets(inner: &Inner, id: KeyId, signing: Option<&SigningRecord>) -> Option<SigningSecrets> {
    let (s, master) = (signing?, inner.opts.master_key.as_ref()?);
    let secret = derive_api_secret(master, id);
    Some(SigningSecrets {
        api_secret: zeroize::Zeroizing::new(String::from_utf8_lossy(secret.expose()).into_owned()),
        user_id: s.user_id.clone(),
        nonce: 1,
        nonce_policy: s.nonce_policy,
    })
}

/// Applies a credit change to counters `c` at `now`; returns the new balance.
fn apply_credits(
    c: &mut KeyCounters,
    policy: &keyward_core::limits::Credits,
    change: CreditChange,
    now: UnixMillis,
) -> u64 {
    let current = c.key.credits_at(policy, now);
    let next = match change {
        CreditChange::Set(v) => v,
        CreditChange::Increment(v) => current.saturating_add(v),
        CreditChange::Decrement(v) => current.saturating_sub(v),
    };
    c.key.credits = Some(CreditBalance { remaining: next, refilled_at: now });
    next
}

/// What an update does to the credit balance: a reset to the new limits'
/// `initial` (or to none), then a change.
struct CreditStep {
    reset: Option<Option<keyward_core::limits::Credits>>,
    change: Option<(keyward_core::limits::Credits, CreditChange)>,
}

impl CreditStep {
    fn is_empty(&self) -> bool {
        self.reset.is_none() && self.change.is_none()
    }

    fn apply(&self, c: &mut KeyCounters, now: UnixMillis) {
        if let Some(policy) = self.reset {
            c.key.credits = policy.map(|p| CreditBalance { remaining: p.initial, refilled_at: now });
        }
        if let Some((policy, change)) = self.change {
            apply_credits(c, &policy, change, now);
        }
    }
}

/// A new key checked outside the writer: its id, token (when minted here),
/// hash and settings. [`NewRecord::record`] makes its record under the writer.
pub(crate) struct NewRecord {
    pub id: KeyId,
    pub token: Option<Token>,
    pub hash: KeyHash,
    start: String,
    meta: String,
    pub signing: Option<SigningRecord>,
    spec: NewKey,
}

impl NewRecord {
    /// Checks `spec` and mints its id (and its token unless `imported`
    /// gives the hash and display start of a key issued elsewhere).
    pub(crate) fn prepare(
        inner: &Inner,
        ws: &keyward_core::WorkspacePolicy,
        spec: NewKey,
        imported: Option<(KeyHash, String)>,
        rng: &mut (impl rand_core::CryptoRng + ?Sized),
    ) -> Result<Self> {
        let (meta, signing) = check_new_key(&spec, inner.opts.master_key.is_some())?;
        if imported.is_some() && spec.signing.is_some() {
            return Err(Error::invalid("signing", "imported keys cannot have a signing identity"));
        }
        let id = KeyId::generate_at(inner.now(), rng);
        let (token, hash, start) = match imported {
            Some((hash, start)) => {
                if start.len() > 32 || start.chars().any(char::is_control) {
                    return Err(Error::invalid("start", "must be at most 32 characters without control characters"));
                }
                (None, hash, start)
            }
            None => {
                let prefix = spec.prefix.as_ref().unwrap_or(&ws.prefix);
                let t = Token::generate(prefix, rng);
                let (h, s) = (t.hash(), t.start());
                (Some(t), h, s)
            }
        };
        Ok(Self { id, token, hash, start, meta, signing, spec })
    }

    /// The key's record, and its counters when it starts with credits,
    /// bounded by the acting key (see `bounds`). Call under the writer.
    pub(crate) fn record(
        &self,
        workspace: &Workspace,
        acting: Option<&LiveKey>,
        actor: &Actor,
        now: UnixMillis,
        serial: u64,
    ) -> Result<(KeyRecord, Option<UsageRecord>)> {
        let spec = &self.spec;
        let ws = &workspace.policy;
        Inner::check_grant(acting, &spec.permissions)?;
        let mut expires_at = new_key_expiry(workspace.key_ttl, spec.expires_at, spec.expire_now, now)?;
        // A lifetime the key did not ask for ends with its creator's.
        if let (None, Some(limit)) = (spec.expires_at, acting.and_then(|a| a.policy().expires_at)) {
            expires_at = Some(expires_at.map_or(limit, |e| e.min(limit)));
        }
        let mut record = KeyRecord {
            policy: KeyPolicy {
                id: self.id,
                workspace: ws.id,
                hash: self.hash,
                name: spec.name.clone(),
                revoked_at: None,
                expires_at,
                disabled: spec.disabled,
                permissions: spec.permissions.clone(),
                ip_rules: spec.ip_rules.clone(),
                limits: spec.limits.clone().unwrap_or_else(|| ws.default_limits.clone()),
                tool_limits: spec.tool_limits.clone(),
                tools: spec.tools.clone(),
                meta: self.meta.clone(),
                imported: self.token.is_none(),
            },
            start: self.start.clone(),
            created_at: now,
            created_by: actor.to_string(),
            signing: self.signing.clone(),
            usage_owner: None,
            external_id: spec.external_id.clone(),
            roles: spec.roles.clone(),
            bearer: spec.bearer,
            serial: Some(serial),
        };
        if let Some(a) = acting {
            // A key makes no key that can do more than itself.
            crate::bounds::carry(a.policy(), &mut record.policy, spec.limits.is_some())?;
            crate::bounds::check(a.policy(), &record.policy)?;
        }
        // Credits count from creation: a key created with 0 credits and a
        // daily refill gets them at the next midnight.
        let usage = record.policy.limits.credits.map(|c| {
            let mut usage = UsageRecord::default();
            usage.key.credits = Some(CreditBalance { remaining: c.initial, refilled_at: now });
            usage
        });
        Ok((record, usage))
    }
}

impl Inner {
    /// Indexes a key just committed; returns its view.
    pub(crate) fn publish_new(&self, record: KeyRecord, usage: Option<UsageRecord>, now: UnixMillis) -> KeyInfo {
        let id = record.policy.id;
        let cell = Arc::new(UsageCell::from_record(id, usage.unwrap_or_default(), self.shared));
        let live = LiveKey::new(record, cell);
        let info = self.key_info(&live, now);
        self.index_key(live);
        info
    }
}

impl Engine {
    /// Creates a key in workspace `ws`. The token is in the result and nowhere else.
    ///
    /// When `actor` is a key, the new key may hold only permissions the actor
    /// holds ([`Error::InsufficientPermissions`] otherwise).
    pub fn create_key(&self, ws: WorkspaceId, spec: NewKey, actor: &Actor) -> Result<CreatedKey> {
        let (info, token, signing) = self.insert_key(ws, spec, actor, None)?;
        let token = token.ok_or_else(|| Error::Storage("key creation produced no token".into()))?;
        Ok(CreatedKey { info, token, signing })
    }

    /// Imports a key issued elsewhere by the SHA-256 of its token. Its token
    /// skips the checksum step when verified.
    pub fn import_key(&self, ws: WorkspaceId, import: ImportKey, actor: &Actor) -> Result<KeyInfo> {
        let Some(hash) = import.hash else {
            return Err(Error::invalid("hash", "SHA-256 of the token is required"));
        };
        let start = import.start.unwrap_or_else(|| "imported".into());
        Ok(self.insert_key(ws, import.key, actor, Some((hash, start)))?.0)
    }

    fn insert_key(
        &self,
        ws_id: WorkspaceId,
        spec: NewKey,
        actor: &Actor,
        imported: Option<(KeyHash, String)>,
    ) -> Result<(KeyInfo, Option<Token>, Option<SigningSecrets>)> {
        let inner = &self.inner;
        if spec.bearer && spec.signing.is_none() {
            return Err(Error::invalid("bearer", "only applies to a key with a signing identity"));
        }
        // Cheap refusals first, outside the writer; checked again inside it.
        let ws = inner.workspace(ws_id)?;
        inner.acting_key(actor, ws_id)?;
        if !ws.ws.policy.api_access {
            return Err(Error::PlanInactive);
        }
        let now = inner.now();
        let new = NewRecord::prepare(inner, &ws.ws.policy, spec, imported, &mut os_rng())?;
        let id = new.id;
        let (info, new) = inner.write(|batch| {
            let ws = inner.workspace(ws_id)?;
            if !ws.ws.policy.api_access {
                return Err(Error::PlanInactive);
            }
            let acting = inner.acting_key(actor, ws_id)?;
            if inner.keys.contains_hash(&new.hash.0) {
                return Err(Error::AlreadyExists { kind: "key", id: "with this hash".into() });
            }
            let serial = inner.reserve_serials(ws_id, 1, batch)?;
            let (record, usage) = new.record(&ws.ws, acting.as_deref(), actor, now, serial)?;
            if let Some(u) = &usage {
                batch.push(Change::Usage(id, u.clone()));
            }
            batch.push(Change::Key(record.clone()));
            let action = if new.token.is_none() { AuditAction::KeyImported } else { AuditAction::KeyCreated };
            audit(batch, now, actor, action, Some(ws_id), id.to_string(), record.policy.name.clone());
            Ok(move || {
                inner.note_serials(ws_id, serial);
                (inner.publish_new(record, usage, now), new)
            })
        })?;
        let signing = signing_secrets(inner, id, new.signing.as_ref());
        Ok((info, new.token, signing))
    }

    /// A key by id.
    pub fn key(&self, id: KeyId) -> Result<KeyInfo> {
        let live = self.inner.key(id)?;
        self.inner.read_counters(&live)?;
        Ok(self.inner.key_info(&live, self.inner.now()))
    }

    /// A key by id, as `actor` may see it (keys see only their own workspace).
    pub fn key_as(&self, id: KeyId, actor: &Actor) -> Result<KeyInfo> {
        let live = self.inner.visible_key(actor, id)?;
        self.inner.read_counters(&live)?;
        Ok(self.inner.key_info(&live, self.inner.now()))
    }

    /// Keys of a workspace, newest first, `limit` (1–100) at a time.
    pub fn list_keys(&self, ws: WorkspaceId, limit: usize, cursor: Option<&str>) -> Result<Page<KeyInfo>> {
        self.list_keys_of(ws, None, limit, cursor)
    }

    /// Like [`Engine::list_keys`], only the keys whose external id is
    /// `external_id` when it is given.
    pub fn list_keys_of(
        &self,
        ws: WorkspaceId,
        external_id: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<KeyInfo>> {
        self.inner.workspace(ws)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let after = match cursor {
            None => None,
            Some(c) => {
                Some(parse_cursor(c).ok_or_else(|| Error::invalid("cursor", "not a cursor from a previous page"))?)
            }
        };
        let mut rows: Vec<(UnixMillis, KeyId)> = self
            .inner
            .keys
            .iter()
            .filter(|e| e.policy().workspace == ws)
            .filter(|e| external_id.is_none_or(|x| e.details().external_id.as_deref() == Some(x)))
            .map(|e| (e.created_at, e.policy().id))
            .filter(|k| after.is_none_or(|a| *k < a))
            .collect();
        rows.sort_unstable_by(|a, b| b.cmp(a));
        let more = rows.len() > limit;
        rows.truncate(limit);
        let now = self.inner.now();
        let items: Vec<KeyInfo> =
            rows.iter().filter_map(|(_, id)| self.inner.key(*id).ok().map(|k| self.inner.key_info(&k, now))).collect();
        let next_cursor = if more { rows.last().map(|(t, id)| format!("{}.{id}", t.get())) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// Changes a key, every field of `update` in one commit. Visible to
    /// every verification that starts after this returns.
    pub fn update_key(&self, id: KeyId, update: KeyUpdate, actor: &Actor) -> Result<KeyInfo> {
        let inner = &self.inner;
        let current = inner.visible_key(actor, id)?;
        if let Some(n) = &update.name {
            validate_name(n)?;
        }
        if let Some(l) = &update.limits {
            validate_limits("limits", l)?;
        }
        let tools = update.tools.as_deref().unwrap_or(&current.policy().tools);
        let tool_limits = update.tool_limits.as_deref().unwrap_or(&current.policy().tool_limits);
        validate_tools(tools, tool_limits)?;
        if let Some(x) = &update.external_id {
            validate_external_id(x.as_deref())?;
        }
        if let Some(r) = &update.roles {
            validate_roles(r)?;
        }
        let meta = match &update.meta {
            Some(m) => Some(encode_meta(m.as_ref())?),
            None => None,
        };
        let touches_credits = update.limits.is_some() || update.credit_limit.is_some() || update.credits.is_some();
        // Level 1 before the writer: a credits change is ordered with
        // strict-mode charges of the same counters.
        let _gate = touches_credits.then(|| current.usage.gate());
        let now = inner.now();
        inner.retry_moved(touches_credits.then_some(&*current.usage), || {
            let (update, meta) = (update.clone(), meta.clone());
            inner.write(|batch| {
                let current = inner.touchable_key(actor, id)?;
                let acting = inner.acting_key(actor, current.policy().workspace)?;
                if let Some(p) = &update.permissions {
                    Inner::check_grant(acting.as_deref(), p)?;
                }
                let mut rec = current.record();
                let p = &mut rec.policy;
                let credits_before = p.limits.credits;
                let action = match update.disabled {
                    Some(true) if !p.disabled => AuditAction::KeyDisabled,
                    Some(false) if p.disabled => AuditAction::KeyEnabled,
                    _ => AuditAction::KeyUpdated,
                };
                let mut changed = Changes::default();
                changed.set("name", &mut p.name, update.name);
                if let Some(e) = update.expires_at {
                    let ttl = inner.workspace(p.workspace)?.ws.key_ttl;
                    check_lifetime(ttl, e, current.created_at)?;
                }
                changed.set("expires_at", &mut p.expires_at, update.expires_at);
                changed.set("permissions", &mut p.permissions, update.permissions);
                changed.set("ip_rules", &mut p.ip_rules, update.ip_rules);
                changed.set("limits", &mut p.limits, update.limits);
                changed.set("credit_limit", &mut p.limits.credits, update.credit_limit);
                changed.set("tool_limits", &mut p.tool_limits, update.tool_limits);
                changed.set("tools", &mut p.tools, update.tools);
                changed.set("meta", &mut p.meta, meta);
                changed.set("disabled", &mut p.disabled, update.disabled);
                changed.set("external_id", &mut rec.external_id, update.external_id);
                changed.set("roles", &mut rec.roles, update.roles);
                let credits_policy = rec.policy.limits.credits;
                let reset_credits = credits_policy != credits_before;
                // New limits with other credits reset the balance; a credits
                // change applies after that.
                let step = CreditStep {
                    reset: reset_credits.then_some(credits_policy),
                    change: match (update.credits, credits_policy) {
                        (Some(_), None) => return Err(Error::invalid("credits", "the key has no credits limit")),
                        (Some(change), Some(policy)) => {
                            changed.note("credits");
                            Some((policy, change))
                        }
                        (None, _) => None,
                    },
                };
                if let Some(a) = &acting {
                    // A key changes no key into one that can do more than itself.
                    crate::bounds::check(a.policy(), &rec.policy)?;
                }
                batch.push(Change::Key(rec.clone()));
                if !step.is_empty() {
                    let mut planned = current.usage.lock().clone();
                    step.apply(&mut planned, now);
                    batch.push(inner.counters_change(&current.usage, current.usage.record_with(&planned)));
                }
                audit(batch, now, actor, action, Some(rec.policy.workspace), id.to_string(), changed.list());
                Ok(move || {
                    if !step.is_empty() {
                        step.apply(&mut current.usage.lock(), now);
                        current.usage.mark_dirty();
                        inner.touched(&current);
                    }
                    let live = current.with_record(rec);
                    // Limits removed: the key-wide counters go with them,
                    // unless another key counts on them too (a rotation)
                    // or they are the shared store's.
                    if current.has_key_limits
                        && !live.has_key_limits
                        && !inner.shared
                        && !live.usage.joined.load(Ordering::Acquire)
                        && live.usage.drop_key_counters()
                    {
                        live.usage.mark_dirty();
                        inner.touched(&current);
                    }
                    let info = inner.key_info(&live, now);
                    inner.index_key(live);
                    info
                })
            })
        })
    }

    /// Revokes a key for good. Idempotent: revoking twice keeps the first time.
    pub fn revoke_key(&self, id: KeyId, actor: &Actor) -> Result<KeyInfo> {
        let inner = &self.inner;
        inner.visible_key(actor, id)?;
        let now = inner.now();
        inner.write(|batch| {
            let current = inner.touchable_key(actor, id)?;
            let mut rec = current.record();
            let revoke = rec.policy.revoked_at.is_none();
            if revoke {
                rec.policy.revoked_at = Some(now);
                batch.push(Change::Key(rec.clone()));
                audit(batch, now, actor, AuditAction::KeyRevoked, Some(rec.policy.workspace), id.to_string(), "");
            }
            Ok(move || {
                if !revoke {
                    return inner.key_info(&current, now);
                }
                let live = current.with_record(rec);
                let info = inner.key_info(&live, now);
                inner.index_key(live);
                info
            })
        })
    }

    /// Deletes a key with its sessions and nonce history.
    pub fn delete_key(&self, id: KeyId, actor: &Actor) -> Result<()> {
        let inner = &self.inner;
        inner.visible_key(actor, id)?;
        let now = inner.now();
        inner.write(|batch| {
            let current = inner.touchable_key(actor, id)?;
            batch.push(Change::KeyDeleted(id));
            batch.push(Change::NonceDeleted(id));
            // Counters shared with a key in its rotation grace stay theirs.
            if !inner.shared_by_another(id, &current.usage) {
                batch.push(Change::UsageDeleted(current.usage.owner()));
            }
            let doomed: Vec<[u8; 32]> =
                inner.sessions.iter().filter(|s| s.value().key_id == id).map(|s| *s.key()).collect();
            for h in &doomed {
                batch.push(Change::SessionDeleted(*h));
            }
            audit(batch, now, actor, AuditAction::KeyDeleted, Some(current.policy().workspace), id.to_string(), "");
            Ok(move || {
                for h in &doomed {
                    inner.sessions.remove(h);
                }
                inner.unindex_key(id);
            })
        })
    }

    /// Changes a key's credit balance. Returns the balance after the change.
    pub fn update_credits(&self, id: KeyId, change: CreditChange, actor: &Actor) -> Result<u64> {
        let inner = &self.inner;
        let live = inner.visible_key(actor, id)?;
        // Level 1 before the writer: ordered with strict-mode charges.
        let _gate = live.usage.gate();
        let now = inner.now();
        inner.retry_moved(Some(&live.usage), || {
            inner.write(|batch| {
                let live = inner.touchable_key(actor, id)?;
                let Some(policy) = live.policy().limits.credits else {
                    return Err(Error::invalid("credits", "the key has no credits limit"));
                };
                let mut planned = live.usage.lock().clone();
                let remaining = apply_credits(&mut planned, &policy, change, now);
                batch.push(inner.counters_change(&live.usage, live.usage.record_with(&planned)));
                audit(
                    batch,
                    now,
                    actor,
                    AuditAction::CreditsUpdated,
                    Some(live.policy().workspace),
                    id.to_string(),
                    format!("{change:?} -> {remaining}"),
                );
                Ok(move || {
                    // Calls admitted since the plan (not strict ones: they hold
                    // the gate) are charged on top: apply the change to the
                    // balance as it is now, and let the flusher write that.
                    let mut c = live.usage.lock();
                    let now_remaining = apply_credits(&mut c, &policy, change, now);
                    drop(c);
                    live.usage.mark_dirty();
                    inner.touched(&live);
                    now_remaining
                })
            })
        })
    }

    /// Usage figures of a key.
    ///
    /// On a shared store the limits' figures are the store's (read there
    /// first); `valid` and `refused` count the calls of every node up to
    /// this node's start, then this node's own.
    pub fn usage(&self, id: KeyId) -> Result<KeyUsageReport> {
        let live = self.inner.key(id)?;
        self.inner.read_counters(&live)?;
        let now = self.inner.now();
        let (quota, daily_used) = live.usage.read(|c| {
            let quota = keyward_core::decision::quota_of(&live.policy().limits, &c.key, now);
            let daily_used =
                live.policy().limits.daily.map(|_| if c.key.daily.day == now.day() { c.key.daily.used } else { 0 });
            (quota, daily_used)
        });
        let last = live.activity().last_used.load(Ordering::Acquire);
        Ok(KeyUsageReport {
            id,
            last_used_at: (last != 0).then_some(UnixMillis(last)),
            valid: live.usage.valid.load(Ordering::Acquire),
            refused: live.usage.refused.load(Ordering::Acquire),
            quota,
            daily_used,
        })
    }
}

fn parse_cursor(c: &str) -> Option<(UnixMillis, KeyId)> {
    let (t, id) = c.split_once('.')?;
    Some((UnixMillis(t.parse().ok()?), KeyId::parse(id).ok()?))
}
