//! Changes: workspaces, keys, tools, credits; the audit log; snapshot export.
//!
//! Every change commits one redb transaction (the record and its audit event
//! together) and then updates the in-memory index before returning, so a
//! verification that starts after the call returns sees it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use keyward_core::{
    ApiSecret, CreditBalance, KeyHash, KeyId, KeyPolicy, Limits, NoncePolicy, Permission, Prefix, Snapshot, Status,
    Token, ToolPolicy, UnixMillis, WorkspaceId, WorkspacePolicy, check_tool_name, encode_record, first_uncovered,
};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::engine::{Engine, Inner, LiveKey, LiveWorkspace, UsageCell, WorkspaceSlot, table_err};
use crate::error::{Error, Result};
use crate::model::{
    Actor, AuditAction, AuditEvent, CreatedKey, CreditChange, ImportKey, KeyInfo, KeyRecord, KeyUpdate, KeyUsageReport,
    NewKey, NewTool, NewWorkspace, Page, SigningRecord, SigningSecrets, ToolRecord, ToolUpdate, UsageRecord, Workspace,
    WorkspaceUpdate,
};
use crate::rng::os_rng;
use crate::tables::{AUDIT, KEYS, SESSIONS, TOOLS, USAGE, WORKSPACES};

/// Largest metadata object, serialised.
pub const MAX_META_BYTES: usize = 16 * 1024;
/// Longest signing user id.
pub const MAX_USER_ID_LEN: usize = 64;
/// Most items a page holds.
pub const MAX_PAGE: usize = 100;
/// Longest external id.
pub const MAX_EXTERNAL_ID_LEN: usize = 255;
/// Longest role label.
pub const MAX_ROLE_LEN: usize = 128;
/// Most role labels on one key.
pub const MAX_ROLES: usize = 64;

fn validate_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > keyward_core::MAX_NAME_LEN {
        return Err(Error::invalid("name", format!("must be 1 to {} characters", keyward_core::MAX_NAME_LEN)));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must not contain control characters"));
    }
    if name.trim().is_empty() {
        return Err(Error::invalid("name", "must not be blank"));
    }
    Ok(())
}

fn encode_meta(meta: Option<&serde_json::Value>) -> Result<String> {
    match meta {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(v @ serde_json::Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_META_BYTES {
                return Err(Error::invalid("meta", format!("must be at most {MAX_META_BYTES} bytes")));
            }
            Ok(text)
        }
        Some(_) => Err(Error::invalid("meta", "must be a JSON object")),
    }
}

pub(crate) fn decode_meta(text: &str) -> Option<serde_json::Value> {
    if text.is_empty() { None } else { serde_json::from_str(text).ok() }
}

fn validate_limits(field: &'static str, limits: &Limits) -> Result<()> {
    limits.validate().map_err(|e| Error::invalid(field, e.to_string()))
}

fn validate_tools(tools: &[String], tool_limits: &[(String, Limits)]) -> Result<()> {
    for t in tools {
        check_tool_name(t).map_err(|e| Error::invalid("tools", format!("`{t}`: {e}")))?;
    }
    for (i, (t, l)) in tool_limits.iter().enumerate() {
        check_tool_name(t).map_err(|e| Error::invalid("tool_limits", format!("`{t}`: {e}")))?;
        if tool_limits[..i].iter().any(|(o, _)| o == t) {
            return Err(Error::invalid("tool_limits", format!("tool `{t}` appears twice")));
        }
        validate_limits("tool_limits", l)?;
    }
    Ok(())
}

fn validate_external_id(id: Option<&str>) -> Result<()> {
    match id {
        Some(id)
            if id.is_empty()
                || id.len() > MAX_EXTERNAL_ID_LEN
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) =>
        {
            Err(Error::invalid(
                "external_id",
                format!("must be 1 to {MAX_EXTERNAL_ID_LEN} characters of A-Z a-z 0-9 _ . -"),
            ))
        }
        _ => Ok(()),
    }
}

fn validate_roles(roles: &[String]) -> Result<()> {
    if roles.len() > MAX_ROLES {
        return Err(Error::invalid("roles", format!("at most {MAX_ROLES} roles")));
    }
    for (i, r) in roles.iter().enumerate() {
        let ok = !r.is_empty()
            && r.len() <= MAX_ROLE_LEN
            && r.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'));
        if !ok {
            return Err(Error::invalid(
                "roles",
                format!(
                    "`{}` must be 1 to {MAX_ROLE_LEN} characters of A-Z a-z 0-9 : . _ -",
                    r.chars().take(40).collect::<String>()
                ),
            ));
        }
        if roles[..i].contains(r) {
            return Err(Error::invalid("roles", format!("`{r}` appears twice")));
        }
    }
    Ok(())
}

/// The prefix a native token's display start begins with (`start` is the
/// prefix, `_` and the first body characters).
fn prefix_of_start(start: &str) -> Option<Prefix> {
    let cut = start.len().checked_sub(1 + keyward_core::START_CHARS)?;
    Prefix::parse(start.get(..cut)?).ok()
}

fn validate_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_LEN || !user_id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Error::invalid(
            "signing.user_id",
            format!("must be 1 to {MAX_USER_ID_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// Derives the API secret of a signing identity: HMAC-SHA256(master key,
/// "keyward signing v1" ‖ key id), hex. Never stored; recomputed to verify.
pub(crate) fn derive_api_secret(master: &[u8], id: KeyId) -> ApiSecret {
    use hmac::{KeyInit, Mac};
    // Invariant: HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(master).expect("HMAC takes keys of any length");
    m.update(b"keyward signing v1");
    m.update(&id.0);
    let bytes = m.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    ApiSecret::new(hex.into_bytes())
}

/// The fields an update sets, listed in its audit event.
#[derive(Default)]
struct Changes(Vec<&'static str>);

impl Changes {
    /// Sets `slot` to `value` when the update gives one, noting `name`.
    fn set<T>(&mut self, name: &'static str, slot: &mut T, value: Option<T>) {
        if let Some(v) = value {
            *slot = v;
            self.0.push(name);
        }
    }

    /// The names, comma-separated.
    fn list(&self) -> String {
        self.0.join(",")
    }
}

pub(crate) fn append_audit(
    txn: &WriteTransaction,
    now: UnixMillis,
    actor: &Actor,
    action: AuditAction,
    workspace: Option<WorkspaceId>,
    target: String,
    detail: String,
) -> Result<()> {
    let mut t = txn.open_table(AUDIT).map_err(table_err)?;
    let seq = t.last()?.map_or(0, |(k, _)| k.value()) + 1;
    let ev = AuditEvent { seq, at: now, actor: actor.to_string(), action, workspace, target, detail };
    t.insert(seq, encode_record(&ev).as_slice())?;
    Ok(())
}

fn put_key(txn: &WriteTransaction, rec: &KeyRecord) -> Result<()> {
    let mut t = txn.open_table(KEYS).map_err(table_err)?;
    t.insert(&rec.policy.id.0, encode_record(rec).as_slice())?;
    Ok(())
}

impl Inner {
    pub(crate) fn key_info(&self, live: &LiveKey, now: UnixMillis) -> KeyInfo {
        let p = live.policy();
        let credits_remaining = p.limits.credits.as_ref().map(|c| live.usage.lock().key.credits_at(c, now));
        let last = live.usage.last_used.load(Ordering::Acquire);
        KeyInfo {
            id: p.id,
            workspace: p.workspace,
            name: p.name.clone(),
            start: live.record.start.clone(),
            status: p.status(now),
            created_at: live.record.created_at,
            created_by: live.record.created_by.clone(),
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
            signing_user_id: live.record.signing.as_ref().map(|s| s.user_id.clone()),
            imported: p.imported,
            credits_remaining,
            external_id: live.record.external_id.clone(),
            roles: live.record.roles.clone(),
        }
    }

    /// The acting key, if the actor is one, checked to be in `ws`.
    fn acting_key(&self, actor: &Actor, ws: WorkspaceId) -> Result<Option<Arc<LiveKey>>> {
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

    /// A key, as visible to `actor` (keys see only their own workspace).
    fn visible_key(&self, actor: &Actor, id: KeyId) -> Result<Arc<LiveKey>> {
        let k = self.key(id)?;
        if let Actor::Key(a) = actor {
            let own = self.key(*a)?.policy().workspace;
            if own != k.policy().workspace {
                return Err(Error::not_found("key", id));
            }
        }
        Ok(k)
    }

    fn check_grant(acting: Option<&LiveKey>, wanted: &[Permission]) -> Result<()> {
        if let Some(p) = acting.and_then(|k| first_uncovered(&k.policy().permissions, wanted)) {
            return Err(Error::InsufficientPermissions(format!("cannot grant `{p}`: the acting key lacks it")));
        }
        Ok(())
    }

    fn replace_workspace(&self, live: LiveWorkspace) {
        let id = live.ws.policy.id;
        match self.workspaces.get(&id) {
            // Keys hold the slot: storing into it updates them all at once.
            Some(slot) => slot.current.store(Arc::new(live)),
            None => {
                self.workspaces.insert(id, WorkspaceSlot::new(live));
            }
        }
    }
}

impl Engine {
    // ---- workspaces -----------------------------------------------------

    /// Creates a workspace.
    pub fn create_workspace(&self, spec: NewWorkspace, actor: &Actor) -> Result<Workspace> {
        validate_name(&spec.name)?;
        validate_limits("default_limits", &spec.default_limits)?;
        if matches!(actor, Actor::Key(_)) {
            return Err(Error::InsufficientPermissions("keys cannot create workspaces".into()));
        }
        let inner = &self.inner;
        let now = inner.now();
        let ws = Workspace {
            policy: WorkspacePolicy {
                id: WorkspaceId::generate(&mut os_rng()),
                name: spec.name,
                api_access: spec.api_access,
                prefix: spec.prefix,
                ip_rules: spec.ip_rules,
                default_limits: spec.default_limits,
            },
            created_at: now,
        };
        inner.write(|txn| {
            let mut t = txn.open_table(WORKSPACES).map_err(table_err)?;
            t.insert(&ws.policy.id.0, encode_record(&ws).as_slice())?;
            drop(t);
            append_audit(
                txn,
                now,
                actor,
                AuditAction::WorkspaceCreated,
                Some(ws.policy.id),
                ws.policy.id.to_string(),
                ws.policy.name.clone(),
            )?;
            inner.replace_workspace(LiveWorkspace { ws: ws.clone(), tools: Default::default() });
            Ok(())
        })?;
        Ok(ws)
    }

    /// A workspace by id.
    pub fn workspace(&self, id: WorkspaceId) -> Result<Workspace> {
        Ok(self.inner.workspace(id)?.ws.clone())
    }

    /// Every workspace, oldest first.
    pub fn workspaces(&self) -> Vec<Workspace> {
        let mut all: Vec<Workspace> = self.inner.workspaces.iter().map(|w| w.current.load().ws.clone()).collect();
        all.sort_by_key(|w| (w.created_at, w.policy.id));
        all
    }

    /// Changes a workspace.
    pub fn update_workspace(&self, id: WorkspaceId, update: WorkspaceUpdate, actor: &Actor) -> Result<Workspace> {
        let inner = &self.inner;
        if matches!(actor, Actor::Key(_)) {
            inner.acting_key(actor, id)?;
            return Err(Error::InsufficientPermissions("keys cannot change workspaces".into()));
        }
        if let Some(n) = &update.name {
            validate_name(n)?;
        }
        if let Some(l) = &update.default_limits {
            validate_limits("default_limits", l)?;
        }
        let now = inner.now();
        inner.write(|txn| {
            let current = inner.workspace(id)?;
            let mut live = (*current).clone();
            let p = &mut live.ws.policy;
            let mut changed = Changes::default();
            changed.set("name", &mut p.name, update.name);
            changed.set("prefix", &mut p.prefix, update.prefix);
            changed.set("api_access", &mut p.api_access, update.api_access);
            changed.set("ip_rules", &mut p.ip_rules, update.ip_rules);
            changed.set("default_limits", &mut p.default_limits, update.default_limits);
            let mut t = txn.open_table(WORKSPACES).map_err(table_err)?;
            t.insert(&id.0, encode_record(&live.ws).as_slice())?;
            drop(t);
            append_audit(txn, now, actor, AuditAction::WorkspaceUpdated, Some(id), id.to_string(), changed.list())?;
            let out = live.ws.clone();
            inner.replace_workspace(live);
            Ok(out)
        })
    }

    // ---- keys -----------------------------------------------------------

    /// Creates a key in workspace `ws`. The token is in the result and nowhere else.
    ///
    /// When `actor` is a key, the new key may hold only permissions the actor
    /// holds ([`Error::InsufficientPermissions`] otherwise).
    pub fn create_key(&self, ws: WorkspaceId, spec: NewKey, actor: &Actor) -> Result<CreatedKey> {
        let (info, token, signing) = self.insert_key(ws, spec, actor, None, None)?;
        let token = token.ok_or_else(|| Error::Storage("key creation produced no token".into()))?;
        Ok(CreatedKey { info, token, signing })
    }

    /// Imports a key issued elsewhere by the SHA-256 of its token. Its token
    /// skips the checksum step when verified.
    pub fn import_key(&self, ws: WorkspaceId, import: ImportKey, actor: &Actor) -> Result<KeyInfo> {
        let Some(hash) = import.hash else {
            return Err(Error::invalid("hash", "SHA-256 of the token is required"));
        };
        if import.key.signing.is_some() {
            return Err(Error::invalid("signing", "imported keys cannot have a signing identity"));
        }
        if self.inner.by_hash.contains_key(&hash.0) {
            return Err(Error::AlreadyExists { kind: "key", id: "with this hash".into() });
        }
        let start = import.start.unwrap_or_else(|| "imported".into());
        if start.len() > 32 || start.chars().any(char::is_control) {
            return Err(Error::invalid("start", "must be at most 32 characters without control characters"));
        }
        Ok(self.insert_key(ws, import.key, actor, Some((hash, start)), None)?.0)
    }

    fn insert_key(
        &self,
        ws_id: WorkspaceId,
        spec: NewKey,
        actor: &Actor,
        imported: Option<(KeyHash, String)>,
        rotated_from: Option<(&LiveKey, u64)>,
    ) -> Result<(KeyInfo, Option<Token>, Option<SigningSecrets>)> {
        let inner = &self.inner;
        let ws = inner.workspace(ws_id)?;
        let acting = inner.acting_key(actor, ws_id)?;
        if !ws.ws.policy.api_access {
            return Err(Error::PlanInactive);
        }
        validate_name(&spec.name)?;
        validate_tools(&spec.tools, &spec.tool_limits)?;
        if let Some(l) = &spec.limits {
            validate_limits("limits", l)?;
        }
        validate_external_id(spec.external_id.as_deref())?;
        validate_roles(&spec.roles)?;
        Inner::check_grant(acting.as_deref(), &spec.permissions)?;
        let meta = encode_meta(spec.meta.as_ref())?;
        let signing = match &spec.signing {
            Some(s) => {
                validate_user_id(&s.user_id)?;
                if inner.opts.master_key.is_none() {
                    return Err(Error::NoMasterKey);
                }
                if let NoncePolicy::Unique { window_ms, capacity } = s.nonce_policy
                    && (window_ms == 0 || capacity == 0 || capacity > 65_536)
                {
                    return Err(Error::invalid(
                        "signing.nonce_policy",
                        "unique needs a window and a capacity of 1 to 65536",
                    ));
                }
                Some(SigningRecord { user_id: s.user_id.clone(), nonce_policy: s.nonce_policy })
            }
            None => None,
        };
        let now = inner.now();
        let mut rng = os_rng();
        let id = KeyId::generate(&mut rng);
        let (token, hash, start) = match imported {
            Some((hash, start)) => (None, hash, start),
            None => {
                let t = Token::generate(spec.prefix.as_ref().unwrap_or(&ws.ws.policy.prefix), &mut rng);
                let (h, s) = (t.hash(), t.start());
                (Some(t), h, s)
            }
        };
        let expires_at = if spec.expire_now { Some(now) } else { spec.expires_at };
        let policy = KeyPolicy {
            id,
            workspace: ws_id,
            hash,
            name: spec.name,
            revoked_at: None,
            expires_at,
            disabled: spec.disabled,
            permissions: spec.permissions,
            ip_rules: spec.ip_rules,
            limits: spec.limits.unwrap_or_else(|| ws.ws.policy.default_limits.clone()),
            tool_limits: spec.tool_limits,
            tools: spec.tools,
            meta,
            imported: token.is_none(),
        };
        let record = KeyRecord {
            policy,
            start,
            created_at: now,
            created_by: actor.to_string(),
            signing,
            usage_owner: None,
            external_id: spec.external_id,
            roles: spec.roles,
        };
        let action = if token.is_none() { AuditAction::KeyImported } else { AuditAction::KeyCreated };
        let created = inner.write(|txn| {
            put_key(txn, &record)?;
            let cell = match rotated_from {
                Some((old, grace_ms)) => {
                    // The successor takes the counters over; the nonce history resets.
                    let rec = {
                        let c = old.usage.lock();
                        UsageRecord {
                            key: c.key.clone(),
                            tools: c.tools.iter().map(|(t, (a, b))| (t.clone(), a.clone(), b.clone())).collect(),
                            nonce: Default::default(),
                            mint: c.mint.clone(),
                            last_used_at: None,
                            valid: 0,
                            refused: 0,
                        }
                    };
                    let mut usage = txn.open_table(USAGE).map_err(table_err)?;
                    usage.insert(&id.0, encode_record(&rec).as_slice())?;
                    usage.remove(&old.usage.owner.0)?;
                    drop(usage);
                    let cell = Arc::new(UsageCell::from_record(id, rec));
                    let old_id = old.policy().id;
                    let grace_end = now.plus(grace_ms);
                    // Every key that shared the old counters now shares the new ones.
                    let mut sharers: Vec<KeyRecord> = inner
                        .by_id
                        .iter()
                        .filter(|e| e.record.usage_owner == Some(old.usage.owner) && *e.key() != old_id)
                        .map(|e| e.record.clone())
                        .collect();
                    let mut old_rec = old.record.clone();
                    old_rec.policy.expires_at = Some(old_rec.policy.expires_at.map_or(grace_end, |e| e.min(grace_end)));
                    sharers.push(old_rec);
                    for mut r in sharers {
                        r.usage_owner = Some(id);
                        put_key(txn, &r)?;
                        inner.index_key(LiveKey::new(r, Arc::clone(&cell)));
                    }
                    append_audit(
                        txn,
                        now,
                        actor,
                        AuditAction::KeyRotated,
                        Some(ws_id),
                        old_id.to_string(),
                        format!("new={id} grace_ms={grace_ms}"),
                    )?;
                    cell
                }
                None => {
                    append_audit(txn, now, actor, action, Some(ws_id), id.to_string(), record.policy.name.clone())?;
                    let mut usage = UsageRecord::default();
                    // Credits count from creation: a key created with 0 credits
                    // and a daily refill gets them at the next midnight.
                    if let Some(c) = record.policy.limits.credits {
                        usage.key.credits = Some(CreditBalance { remaining: c.initial, refilled_at: now });
                        let mut t = txn.open_table(USAGE).map_err(table_err)?;
                        t.insert(&id.0, encode_record(&usage).as_slice())?;
                    }
                    Arc::new(UsageCell::from_record(id, usage))
                }
            };
            let live = LiveKey::new(record, cell);
            let info = inner.key_info(&live, now);
            inner.index_key(live);
            Ok(info)
        })?;
        let signing = match (&created.signing_user_id, &inner.opts.master_key) {
            (Some(user_id), Some(master)) => {
                let secret = derive_api_secret(master, id);
                let nonce_policy =
                    self.inner.key(id)?.record.signing.as_ref().map_or(NoncePolicy::Monotonic, |s| s.nonce_policy);
                Some(SigningSecrets {
                    api_secret: zeroize::Zeroizing::new(String::from_utf8_lossy(secret.expose()).into_owned()),
                    user_id: user_id.clone(),
                    nonce: 1,
                    nonce_policy,
                })
            }
            _ => None,
        };
        Ok((created, token, signing))
    }

    /// A key by id.
    pub fn key(&self, id: KeyId) -> Result<KeyInfo> {
        let live = self.inner.key(id)?;
        Ok(self.inner.key_info(&live, self.inner.now()))
    }

    /// A key by id, as `actor` may see it (keys see only their own workspace).
    pub fn key_as(&self, id: KeyId, actor: &Actor) -> Result<KeyInfo> {
        let live = self.inner.visible_key(actor, id)?;
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
            .by_id
            .iter()
            .filter(|e| e.policy().workspace == ws)
            .filter(|e| external_id.is_none_or(|x| e.record.external_id.as_deref() == Some(x)))
            .map(|e| (e.record.created_at, e.policy().id))
            .filter(|k| after.is_none_or(|a| *k < a))
            .collect();
        rows.sort_unstable_by(|a, b| b.cmp(a));
        let more = rows.len() > limit;
        rows.truncate(limit);
        let now = self.inner.now();
        let items: Vec<KeyInfo> =
            rows.iter().filter_map(|(_, id)| self.inner.by_id.get(id).map(|k| self.inner.key_info(&k, now))).collect();
        let next_cursor = if more { rows.last().map(|(t, id)| format!("{}.{id}", t.get())) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// Changes a key. Visible to every verification that starts after this returns.
    pub fn update_key(&self, id: KeyId, update: KeyUpdate, actor: &Actor) -> Result<KeyInfo> {
        let inner = &self.inner;
        let current = inner.visible_key(actor, id)?;
        let acting = inner.acting_key(actor, current.policy().workspace)?;
        if let Some(n) = &update.name {
            validate_name(n)?;
        }
        if let Some(p) = &update.permissions {
            Inner::check_grant(acting.as_deref(), p)?;
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
        let now = inner.now();
        inner.write(|txn| {
            // Re-read under the write lock: another change may have landed.
            let current = inner.key(id)?;
            let mut rec = current.record.clone();
            let p = &mut rec.policy;
            let reset_credits = update.limits.as_ref().is_some_and(|v| v.credits != p.limits.credits);
            let action = match update.disabled {
                Some(true) if !p.disabled => AuditAction::KeyDisabled,
                Some(false) if p.disabled => AuditAction::KeyEnabled,
                _ => AuditAction::KeyUpdated,
            };
            let mut changed = Changes::default();
            changed.set("name", &mut p.name, update.name);
            changed.set("expires_at", &mut p.expires_at, update.expires_at);
            changed.set("permissions", &mut p.permissions, update.permissions);
            changed.set("ip_rules", &mut p.ip_rules, update.ip_rules);
            changed.set("limits", &mut p.limits, update.limits);
            changed.set("tool_limits", &mut p.tool_limits, update.tool_limits);
            changed.set("tools", &mut p.tools, update.tools);
            changed.set("meta", &mut p.meta, meta);
            changed.set("disabled", &mut p.disabled, update.disabled);
            changed.set("external_id", &mut rec.external_id, update.external_id);
            changed.set("roles", &mut rec.roles, update.roles);
            put_key(txn, &rec)?;
            if reset_credits {
                let usage_rec = {
                    let mut c = current.usage.lock();
                    c.key.credits =
                        rec.policy.limits.credits.map(|p| CreditBalance { remaining: p.initial, refilled_at: now });
                    drop(c);
                    current.usage.to_record()
                };
                inner.persist_usage(txn, &current.usage, &usage_rec)?;
            }
            append_audit(txn, now, actor, action, Some(rec.policy.workspace), id.to_string(), changed.list())?;
            let live = LiveKey::new(rec, Arc::clone(&current.usage));
            let info = inner.key_info(&live, now);
            inner.index_key(live);
            Ok(info)
        })
    }

    /// Revokes a key for good. Idempotent: revoking twice keeps the first time.
    pub fn revoke_key(&self, id: KeyId, actor: &Actor) -> Result<KeyInfo> {
        let inner = &self.inner;
        inner.visible_key(actor, id)?;
        let now = inner.now();
        inner.write(|txn| {
            let current = inner.key(id)?;
            let mut rec = current.record.clone();
            if rec.policy.revoked_at.is_none() {
                rec.policy.revoked_at = Some(now);
                put_key(txn, &rec)?;
                append_audit(
                    txn,
                    now,
                    actor,
                    AuditAction::KeyRevoked,
                    Some(rec.policy.workspace),
                    id.to_string(),
                    String::new(),
                )?;
            }
            let live = LiveKey::new(rec, Arc::clone(&current.usage));
            let info = inner.key_info(&live, now);
            inner.index_key(live);
            Ok(info)
        })
    }

    /// Deletes a key and its sessions.
    pub fn delete_key(&self, id: KeyId, actor: &Actor) -> Result<()> {
        let inner = &self.inner;
        inner.visible_key(actor, id)?;
        let now = inner.now();
        inner.write(|txn| {
            let current = inner.key(id)?;
            let mut keys = txn.open_table(KEYS).map_err(table_err)?;
            keys.remove(&id.0)?;
            drop(keys);
            if current.usage.owner == id {
                let mut usage = txn.open_table(USAGE).map_err(table_err)?;
                usage.remove(&id.0)?;
            }
            let doomed: Vec<[u8; 32]> =
                inner.sessions.iter().filter(|s| s.value().key_id == id).map(|s| *s.key()).collect();
            let mut sessions = txn.open_table(SESSIONS).map_err(table_err)?;
            for h in &doomed {
                sessions.remove(h)?;
            }
            drop(sessions);
            append_audit(
                txn,
                now,
                actor,
                AuditAction::KeyDeleted,
                Some(current.policy().workspace),
                id.to_string(),
                String::new(),
            )?;
            for h in &doomed {
                inner.sessions.remove(h);
            }
            inner.unindex_key(id);
            Ok(())
        })
    }

    /// Rotates a key: a new token (and id) now, with the same settings and
    /// counters; the old token keeps working for `grace_ms`, then expires.
    pub fn rotate_key(&self, id: KeyId, grace_ms: u64, actor: &Actor) -> Result<CreatedKey> {
        let old = self.inner.visible_key(actor, id)?;
        let now = self.inner.now();
        match old.policy().status(now) {
            Status::Revoked => return Err(Error::invalid("key", "a revoked key cannot be rotated")),
            Status::Expired => return Err(Error::invalid("key", "an expired key cannot be rotated")),
            _ => {}
        }
        if old.policy().imported {
            return Err(Error::invalid("key", "an imported key cannot be rotated; create a new key instead"));
        }
        let p = old.policy();
        let spec = NewKey {
            name: p.name.clone(),
            expires_at: p.expires_at,
            expire_now: false,
            permissions: p.permissions.clone(),
            ip_rules: p.ip_rules.clone(),
            limits: Some(p.limits.clone()),
            tool_limits: p.tool_limits.clone(),
            tools: p.tools.clone(),
            meta: decode_meta(&p.meta),
            signing: old
                .record
                .signing
                .as_ref()
                .map(|s| crate::model::NewSigning { user_id: s.user_id.clone(), nonce_policy: s.nonce_policy }),
            disabled: p.disabled,
            prefix: prefix_of_start(&old.record.start),
            external_id: old.record.external_id.clone(),
            roles: old.record.roles.clone(),
        };
        // The successor holds exactly the old key's permissions; `insert_key`
        // checks the actor covers them, so a narrower key cannot rotate a
        // broader one and read its new token.
        let (info, token, signing) = self.insert_key(p.workspace, spec, actor, None, Some((&old, grace_ms)))?;
        let token = token.ok_or_else(|| Error::Storage("rotation produced no token".into()))?;
        Ok(CreatedKey { info, token, signing })
    }

    /// Changes a key's credit balance.
    pub fn update_credits(&self, id: KeyId, change: CreditChange, actor: &Actor) -> Result<u64> {
        let inner = &self.inner;
        inner.visible_key(actor, id)?;
        let now = inner.now();
        inner.write(|txn| {
            let live = inner.key(id)?;
            let Some(policy) = live.policy().limits.credits else {
                return Err(Error::invalid("credits", "the key has no credits limit"));
            };
            let remaining = {
                let mut c = live.usage.lock();
                let current = c.key.credits_at(&policy, now);
                let next = match change {
                    CreditChange::Set(v) => v,
                    CreditChange::Increment(v) => current.saturating_add(v),
                    CreditChange::Decrement(v) => current.saturating_sub(v),
                };
                c.key.credits = Some(CreditBalance { remaining: next, refilled_at: now });
                next
            };
            let rec = live.usage.to_record();
            inner.persist_usage(txn, &live.usage, &rec)?;
            append_audit(
                txn,
                now,
                actor,
                AuditAction::CreditsUpdated,
                Some(live.policy().workspace),
                id.to_string(),
                format!("{change:?} -> {remaining}"),
            )?;
            Ok(remaining)
        })
    }

    /// Usage figures of a key.
    pub fn usage(&self, id: KeyId) -> Result<KeyUsageReport> {
        let live = self.inner.key(id)?;
        let now = self.inner.now();
        let c = live.usage.lock();
        let quota = keyward_core::quota_of(&live.policy().limits, &c.key, now);
        let daily_used =
            live.policy().limits.daily.map(|_| if c.key.daily.day == now.day() { c.key.daily.used } else { 0 });
        drop(c);
        let last = live.usage.last_used.load(Ordering::Acquire);
        Ok(KeyUsageReport {
            id,
            last_used_at: (last != 0).then_some(UnixMillis(last)),
            valid: live.usage.valid.load(Ordering::Acquire),
            refused: live.usage.refused.load(Ordering::Acquire),
            quota,
            daily_used,
        })
    }

    // ---- tools ----------------------------------------------------------

    /// Creates a tool in a workspace.
    pub fn create_tool(&self, ws: WorkspaceId, spec: NewTool, actor: &Actor) -> Result<ToolPolicy> {
        let inner = &self.inner;
        inner.workspace(ws)?;
        inner.acting_key(actor, ws)?;
        check_tool_name(&spec.name).map_err(|e| Error::invalid("name", e.to_string()))?;
        let limits = Limits { cooldown_ms: spec.cooldown_ms, daily: spec.daily_limit, ..Limits::default() };
        let policy =
            ToolPolicy { workspace: ws, name: spec.name, enabled: spec.enabled, permission: spec.permission, limits };
        let now = inner.now();
        inner.write(|txn| {
            let current = inner.workspace(ws)?;
            if current.tools.contains_key(&policy.name) {
                return Err(Error::AlreadyExists { kind: "tool", id: policy.name.clone() });
            }
            let rec = ToolRecord { policy: policy.clone(), created_at: now };
            let mut t = txn.open_table(TOOLS).map_err(table_err)?;
            t.insert((&ws.0, policy.name.as_str()), encode_record(&rec).as_slice())?;
            drop(t);
            append_audit(txn, now, actor, AuditAction::ToolCreated, Some(ws), policy.name.clone(), String::new())?;
            let mut live = (*current).clone();
            live.tools.insert(policy.name.clone(), Arc::new(rec));
            inner.replace_workspace(live);
            Ok(policy.clone())
        })
    }

    /// Changes a tool.
    pub fn update_tool(&self, ws: WorkspaceId, name: &str, update: ToolUpdate, actor: &Actor) -> Result<ToolPolicy> {
        let inner = &self.inner;
        inner.acting_key(actor, ws)?;
        let now = inner.now();
        inner.write(|txn| {
            let current = inner.workspace(ws)?;
            let Some(old) = current.tools.get(name) else {
                return Err(Error::not_found("tool", name));
            };
            let mut rec = (**old).clone();
            let t = &mut rec.policy;
            let mut changed = Changes::default();
            changed.set("enabled", &mut t.enabled, update.enabled);
            changed.set("permission", &mut t.permission, update.permission);
            changed.set("cooldown_ms", &mut t.limits.cooldown_ms, update.cooldown_ms);
            changed.set("daily_limit", &mut t.limits.daily, update.daily_limit);
            let mut t = txn.open_table(TOOLS).map_err(table_err)?;
            t.insert((&ws.0, name), encode_record(&rec).as_slice())?;
            drop(t);
            append_audit(txn, now, actor, AuditAction::ToolUpdated, Some(ws), name.to_owned(), changed.list())?;
            let policy = rec.policy.clone();
            let mut live = (*current).clone();
            live.tools.insert(name.to_owned(), Arc::new(rec));
            inner.replace_workspace(live);
            Ok(policy)
        })
    }

    /// Tools of a workspace, by name.
    pub fn tools(&self, ws: WorkspaceId) -> Result<Vec<ToolPolicy>> {
        let w = self.inner.workspace(ws)?;
        let mut all: Vec<ToolPolicy> = w.tools.values().map(|t| t.policy.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    // ---- audit and snapshots --------------------------------------------

    /// Audit events after sequence number `after` (0 for the start), oldest
    /// first, optionally only those of one workspace.
    pub fn audit(&self, ws: Option<WorkspaceId>, after: u64, limit: usize) -> Result<Page<AuditEvent>> {
        let limit = limit.clamp(1, MAX_PAGE);
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(AUDIT).map_err(table_err)?;
        let mut items = Vec::with_capacity(limit);
        let mut more = false;
        for row in t.range(after.saturating_add(1)..)? {
            let (_, v) = row?;
            let ev: AuditEvent = keyward_core::decode_record(v.value())?;
            if ws.is_some() && ev.workspace != ws {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(ev);
        }
        let next_cursor = if more { items.last().map(|e: &AuditEvent| e.seq.to_string()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// Everything verification needs, nothing secret.
    pub fn snapshot(&self) -> Snapshot {
        let mut workspaces: Vec<WorkspacePolicy> = Vec::new();
        let mut tools: Vec<ToolPolicy> = Vec::new();
        for slot in self.inner.workspaces.iter() {
            let w = slot.current.load();
            workspaces.push(w.ws.policy.clone());
            tools.extend(w.tools.values().map(|t| t.policy.clone()));
        }
        workspaces.sort_by_key(|w| w.id);
        tools.sort_by(|a, b| (a.workspace, &a.name).cmp(&(b.workspace, &b.name)));
        let mut keys: Vec<KeyPolicy> = self.inner.by_id.iter().map(|k| k.policy().clone()).collect();
        keys.sort_by_key(|k| k.id);
        Snapshot { created_at: self.inner.now(), workspaces, tools, keys }
    }

    /// The snapshot, encoded and authenticated with the snapshot key.
    pub fn export_snapshot(&self) -> Result<Vec<u8>> {
        let key = self.inner.opts.snapshot_key.as_ref().ok_or(Error::NoSnapshotKey)?;
        self.snapshot().encode(key).map_err(|e| Error::invalid("snapshot_key", e.to_string()))
    }

    /// Number of keys (all statuses).
    pub fn key_count(&self) -> usize {
        self.inner.by_id.len()
    }

    /// Number of keys usable now.
    pub fn live_key_count(&self) -> usize {
        let now = self.inner.now();
        self.inner.by_id.iter().filter(|k| k.policy().status(now) == Status::Active).count()
    }

    /// Verifies that the database reads back: every key record decodes.
    /// Returns the number of keys.
    pub fn check(&self) -> Result<usize> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.check_inner()))
            .unwrap_or_else(|_| Err(Error::Corrupt("the storage engine could not read it".into())))
    }

    fn check_inner(&self) -> Result<usize> {
        let txn = self.inner.db.begin_read()?;
        let t = txn.open_table(KEYS).map_err(table_err)?;
        let mut n = 0;
        for row in t.iter()? {
            let (_, v) = row?;
            keyward_core::decode_record::<KeyRecord>(v.value())?;
            n += 1;
        }
        Ok(n)
    }
}

fn parse_cursor(c: &str) -> Option<(UnixMillis, KeyId)> {
    let (t, id) = c.split_once('.')?;
    Some((UnixMillis(t.parse().ok()?), KeyId::parse(id).ok()?))
}
