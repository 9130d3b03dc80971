//! Public views and inputs, and the records stored in redb.

use std::fmt;

use keyward_core::ip::IpRules;
use keyward_core::limits::{Credits, Quota, UsageState};
use keyward_core::permission::Permission;
use keyward_core::policy::Status;
use keyward_core::signature::{NoncePolicy, NonceState};
use keyward_core::{KeyId, KeyPolicy, Limits, Prefix, Token, ToolPolicy, UnixMillis, WorkspaceId, WorkspacePolicy};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Who makes a change. Recorded in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// An operator with full rights (CLI, admin token).
    Admin,
    /// A key acting through the API; bounded by its own permissions and workspace.
    Key(KeyId),
    /// The engine itself (e.g. initial set-up).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Admin => f.write_str("admin"),
            Actor::Key(id) => write!(f, "{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// Settings of a new workspace.
#[derive(Clone, Debug)]
pub struct NewWorkspace {
    /// Display name.
    pub name: String,
    /// Prefix of its keys. By default `kw_live`.
    pub prefix: Prefix,
    /// Whether the plan includes API access. By default true.
    pub api_access: bool,
    /// Rules every key of the workspace must pass too. By default none.
    pub ip_rules: IpRules,
    /// Limits for new keys that set none. By default none.
    pub default_limits: Limits,
    /// How nodes sharing a store count its keys' limits. By default exact.
    pub limit_sync: LimitSync,
    /// How long its keys live. By default forever, unless a key says otherwise.
    pub key_ttl: KeyTtl,
}

impl NewWorkspace {
    /// A workspace with defaults and the given name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            prefix: Prefix::default_live(),
            api_access: true,
            ip_rules: IpRules::none(),
            default_limits: Limits::default(),
            limit_sync: LimitSync::Exact,
            key_ttl: KeyTtl::default(),
        }
    }
}

/// Changes to a workspace; `None` keeps a field.
#[derive(Clone, Debug, Default)]
pub struct WorkspaceUpdate {
    /// New name.
    pub name: Option<String>,
    /// New prefix (for keys created afterwards).
    pub prefix: Option<Prefix>,
    /// Plan API access on or off.
    pub api_access: Option<bool>,
    /// Workspace IP rules.
    pub ip_rules: Option<IpRules>,
    /// Default limits for new keys.
    pub default_limits: Option<Limits>,
    /// How nodes sharing a store count its keys' limits.
    pub limit_sync: Option<LimitSync>,
    /// Lifetime of keys created afterwards without an expiry; `Some(None)`
    /// clears it.
    pub default_key_ttl_ms: Option<Option<u64>>,
    /// Longest lifetime of keys, checked when a key is created or its
    /// expiry changed afterwards; `Some(None)` clears it.
    pub max_key_ttl_ms: Option<Option<u64>>,
}

/// How the nodes sharing a store (Redis) count a workspace's limits. A store
/// of one node (redb) is exact either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitSync {
    /// Every call of a key with limits is decided in the store, in one
    /// atomic step: exact across nodes, one round trip per call.
    #[default]
    Exact,
    /// Each node decides on its own copy of the counters, with no round
    /// trip, and reconciles its calls with the store every `ms`
    /// milliseconds. Between two reconciliations each node may admit what
    /// its copy still allows: see docs/cluster.md for the overshoot bound.
    Local {
        /// Milliseconds between reconciliations (at least 1).
        ms: u64,
    },
}

/// A workspace as stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// The policy verification uses.
    pub policy: WorkspacePolicy,
    /// Creation time.
    pub created_at: UnixMillis,
    /// How nodes sharing a store count its keys' limits.
    pub limit_sync: LimitSync,
    /// How long its keys live.
    pub key_ttl: KeyTtl,
}

impl Workspace {
    /// Decodes a stored workspace, also as written before `key_ttl` (then
    /// none) or `limit_sync` (then exact) existed.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, keyward_core::policy::RecordError> {
        #[derive(Deserialize)]
        struct BeforeSync {
            policy: WorkspacePolicy,
            created_at: UnixMillis,
        }
        #[derive(Deserialize)]
        struct BeforeTtl {
            policy: WorkspacePolicy,
            created_at: UnixMillis,
            limit_sync: LimitSync,
        }
        keyward_core::policy::decode_record::<Self>(bytes)
            .or_else(|e| {
                let BeforeTtl { policy, created_at, limit_sync } =
                    keyward_core::policy::decode_record(bytes).map_err(|_| e)?;
                Ok(Self { policy, created_at, limit_sync, key_ttl: KeyTtl::default() })
            })
            .or_else(|e: keyward_core::policy::RecordError| {
                let BeforeSync { policy, created_at } = keyward_core::policy::decode_record(bytes).map_err(|_| e)?;
                Ok(Self { policy, created_at, limit_sync: LimitSync::Exact, key_ttl: KeyTtl::default() })
            })
    }
}

impl fmt::Display for LimitSync {
    /// `exact`, or `local:MS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitSync::Exact => f.write_str("exact"),
            LimitSync::Local { ms } => write!(f, "local:{ms}"),
        }
    }
}

impl std::str::FromStr for LimitSync {
    type Err = String;

    /// `exact`, or `local:MS`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "exact" => Ok(LimitSync::Exact),
            Some(("local", ms)) => match ms.parse() {
                Ok(ms) => Ok(LimitSync::Local { ms }),
                Err(_) => Err(format!("`{ms}` is not a number of milliseconds")),
            },
            _ => Err("expected `exact` or `local:MS`".into()),
        }
    }
}

/// How long a workspace's keys live: a key's lifetime is the time from its
/// creation to its expiry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTtl {
    /// Lifetime of a key created without an expiry. By default none: such
    /// a key never expires (unless `max_ms` is set, which then applies).
    pub default_ms: Option<u64>,
    /// Longest lifetime a key may have: a later expiry is refused, and a
    /// key created without one expires after it. By default none.
    pub max_ms: Option<u64>,
}

impl KeyTtl {
    /// Longest lifetime either setting may name: 100 years.
    pub const MAX_MS: u64 = 100 * 365 * 86_400_000;
}

/// A signing identity to attach to a new key (SPEC §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSigning {
    /// The owner's user id, sent as `UserId`.
    pub user_id: String,
    /// Replay protection. By default `Monotonic`.
    pub nonce_policy: NoncePolicy,
}

/// Settings of a new key.
#[derive(Clone, Debug, Default)]
pub struct NewKey {
    /// 1–128 characters, required.
    pub name: String,
    /// Expiry. `None`: never (unless `expire_now`).
    pub expires_at: Option<UnixMillis>,
    /// Create the key already expired.
    pub expire_now: bool,
    /// Permissions; bounded by the creator's when the creator is a key.
    pub permissions: Vec<Permission>,
    /// IP rules of the key.
    pub ip_rules: IpRules,
    /// Limits; `None` takes the workspace's default limits.
    pub limits: Option<Limits>,
    /// Limits per tool for this key.
    pub tool_limits: Vec<(String, Limits)>,
    /// Tools the key may call; empty means all.
    pub tools: Vec<String>,
    /// Metadata (a JSON object).
    pub meta: Option<serde_json::Value>,
    /// Optional signing identity.
    pub signing: Option<NewSigning>,
    /// A key with a signing identity also works as a bearer credential
    /// (`Authorization: Bearer`, `X-API-Key`, `/v1/verify`). By default it
    /// does not: it only authenticates signed requests, so a leaked token
    /// alone is no use. Meaningless without `signing` (keys without a
    /// signing identity are always bearer keys).
    pub bearer: bool,
    /// Start disabled.
    pub disabled: bool,
    /// Prefix of this key's token. By default the workspace's.
    pub prefix: Option<Prefix>,
    /// The owner's id in the caller's own system (letters, digits, `_ . -`;
    /// 1–255). By default none.
    pub external_id: Option<String>,
    /// Role labels (same characters as permissions, 1–128 each, at most 64,
    /// no repeats). They do not grant permissions. By default none.
    pub roles: Vec<String>,
}

/// Changes to a key; `None` keeps a field. For the `Option` fields, `Some(None)` clears.
#[derive(Clone, Debug, Default)]
pub struct KeyUpdate {
    /// New name.
    pub name: Option<String>,
    /// New expiry, or `Some(None)` for never.
    pub expires_at: Option<Option<UnixMillis>>,
    /// New permissions.
    pub permissions: Option<Vec<Permission>>,
    /// New IP rules.
    pub ip_rules: Option<IpRules>,
    /// New limits. Changing credits resets the balance to `credits.initial`.
    pub limits: Option<Limits>,
    /// New per-tool limits.
    pub tool_limits: Option<Vec<(String, Limits)>>,
    /// New allowed tools.
    pub tools: Option<Vec<String>>,
    /// New metadata, or `Some(None)` to clear.
    pub meta: Option<Option<serde_json::Value>>,
    /// Disable (true) or enable (false).
    pub disabled: Option<bool>,
    /// New external id, or `Some(None)` to clear.
    pub external_id: Option<Option<String>>,
    /// New role labels.
    pub roles: Option<Vec<String>>,
    /// New credits limit only (the other limits kept as they are then), or
    /// `Some(None)` for unlimited. Applied after `limits`.
    pub credit_limit: Option<Option<Credits>>,
    /// A change of the credit balance, applied after `limits` and
    /// `credit_limit` (which reset the balance to `initial` when they change
    /// the credits).
    pub credits: Option<CreditChange>,
}

/// How to change a key's credit balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditChange {
    /// Set the balance.
    Set(u64),
    /// Add to it (saturating).
    Increment(u64),
    /// Take from it (down to 0).
    Decrement(u64),
}

/// A key as shown to operators: never a token or hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Public id.
    pub id: KeyId,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Name.
    pub name: String,
    /// Prefix and first body characters of the token.
    pub start: String,
    /// Status now.
    pub status: Status,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Who created it (`admin`, `system` or a key id).
    pub created_by: String,
    /// Last successful verification (written behind; see the crate docs).
    pub last_used_at: Option<UnixMillis>,
    /// Expiry.
    pub expires_at: Option<UnixMillis>,
    /// Revocation time.
    pub revoked_at: Option<UnixMillis>,
    /// Whether disabled.
    pub disabled: bool,
    /// Permissions.
    pub permissions: Vec<Permission>,
    /// IP rules.
    pub ip_rules: IpRules,
    /// Limits.
    pub limits: Limits,
    /// Per-tool limits.
    pub tool_limits: Vec<(String, Limits)>,
    /// Allowed tools (empty: all).
    pub tools: Vec<String>,
    /// Metadata.
    pub meta: Option<serde_json::Value>,
    /// Signing user id, when the key has a signing identity.
    pub signing_user_id: Option<String>,
    /// Whether the token alone authenticates (`Authorization: Bearer`,
    /// `X-API-Key`): true for every key without a signing identity, and for
    /// signing keys created with [`NewKey::bearer`].
    pub bearer: bool,
    /// Imported by hash from another system.
    pub imported: bool,
    /// Credits left now, when the key has credits.
    pub credits_remaining: Option<u64>,
    /// The owner's id in the caller's own system.
    pub external_id: Option<String>,
    /// Role labels.
    pub roles: Vec<String>,
    /// The key's number in its workspace: 1, 2, … in creation order, never
    /// handed out twice (a rotated key's successor keeps it). `None` for
    /// keys created before keys were numbered.
    pub serial: Option<u64>,
}

/// The secrets of a signing identity, returned once.
pub struct SigningSecrets {
    /// The API secret (HMAC key), hex.
    pub api_secret: Zeroizing<String>,
    /// The owner's user id.
    pub user_id: String,
    /// The first nonce to use.
    pub nonce: u64,
    /// The replay policy.
    pub nonce_policy: NoncePolicy,
}

impl fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningSecrets")
            .field("api_secret", &"<redacted>")
            .field("user_id", &self.user_id)
            .field("nonce", &self.nonce)
            .finish()
    }
}

/// A newly created (or rotated) key: the only time its token is available.
#[derive(Debug)]
pub struct CreatedKey {
    /// The key.
    pub info: KeyInfo,
    /// The token. Hand it to its owner; it cannot be recovered.
    pub token: Token,
    /// The signing secrets, if the key has a signing identity.
    pub signing: Option<SigningSecrets>,
}

/// Settings of a key imported by hash.
#[derive(Clone, Debug, Default)]
pub struct ImportKey {
    /// SHA-256 of the foreign token.
    pub hash: Option<keyward_core::KeyHash>,
    /// The rest, as for a new key (signing is not allowed).
    pub key: NewKey,
    /// Display start (e.g. the foreign token's first characters). By default `imported`.
    pub start: Option<String>,
}

/// A tool's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTool {
    /// Name (`A-Z a-z 0-9 _ - .`, 1–64).
    pub name: String,
    /// Enabled.
    pub enabled: bool,
    /// Permission a key needs to call it.
    pub permission: Option<Permission>,
    /// Cooldown per key.
    pub cooldown_ms: Option<u64>,
    /// Daily limit per key.
    pub daily_limit: Option<u64>,
    /// Where the gateway forwards admitted calls (`http://` or `https://`
    /// URL, no query or fragment). By default none.
    pub upstream: Option<String>,
    /// How long the gateway waits for the upstream's answer. By default
    /// [`DEFAULT_UPSTREAM_TIMEOUT_MS`].
    pub timeout_ms: Option<u64>,
}

/// How long the gateway waits for a tool's upstream unless the tool says
/// otherwise: 30 seconds.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 30_000;

/// The longest upstream timeout a tool may have: an hour.
pub const MAX_UPSTREAM_TIMEOUT_MS: u64 = 3_600_000;

/// A tool: its decision policy (what edge snapshots carry) and where the
/// gateway sends its calls (which stays on the server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    /// What verification checks.
    pub policy: ToolPolicy,
    /// Where the gateway forwards admitted calls; `None`: nowhere.
    pub upstream: Option<String>,
    /// How long the gateway waits for the upstream's answer.
    pub timeout_ms: u64,
}

/// Changes to a tool; `None` keeps a field, `Some(None)` clears.
#[derive(Clone, Debug, Default)]
pub struct ToolUpdate {
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Required permission.
    pub permission: Option<Option<Permission>>,
    /// Cooldown per key.
    pub cooldown_ms: Option<Option<u64>>,
    /// Daily limit per key.
    pub daily_limit: Option<Option<u64>>,
    /// Upstream URL.
    pub upstream: Option<Option<String>>,
    /// Upstream timeout; `Some(None)` restores the default.
    pub timeout_ms: Option<Option<u64>>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// Items, newest first.
    pub items: Vec<T>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// Kinds of audited change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditAction {
    /// Workspace created.
    WorkspaceCreated,
    /// Workspace changed.
    WorkspaceUpdated,
    /// Key created.
    KeyCreated,
    /// Key imported by hash.
    KeyImported,
    /// Key settings changed.
    KeyUpdated,
    /// Key disabled.
    KeyDisabled,
    /// Key re-enabled.
    KeyEnabled,
    /// Key rotated (target is the old key; detail names the new one).
    KeyRotated,
    /// Key revoked.
    KeyRevoked,
    /// Key deleted.
    KeyDeleted,
    /// Credits changed by an operator.
    CreditsUpdated,
    /// Tool created.
    ToolCreated,
    /// Tool changed.
    ToolUpdated,
    /// A session was ended.
    SessionEnded,
    /// Keys created or imported in one batch (target: how many; detail:
    /// their ids in order, comma-separated). Last, so records written
    /// before it existed decode as they were.
    KeysCreated,
}

impl AuditAction {
    /// Dotted name, e.g. `key.revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::WorkspaceCreated => "workspace.created",
            AuditAction::WorkspaceUpdated => "workspace.updated",
            AuditAction::KeyCreated => "key.created",
            AuditAction::KeyImported => "key.imported",
            AuditAction::KeyUpdated => "key.updated",
            AuditAction::KeyDisabled => "key.disabled",
            AuditAction::KeyEnabled => "key.enabled",
            AuditAction::KeyRotated => "key.rotated",
            AuditAction::KeyRevoked => "key.revoked",
            AuditAction::KeyDeleted => "key.deleted",
            AuditAction::CreditsUpdated => "key.credits_updated",
            AuditAction::ToolCreated => "tool.created",
            AuditAction::ToolUpdated => "tool.updated",
            AuditAction::SessionEnded => "session.ended",
            AuditAction::KeysCreated => "keys.created",
        }
    }
}

/// One audit record. Never holds a token or secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When.
    pub at: UnixMillis,
    /// Who (`admin`, `system` or a key id).
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// The workspace concerned.
    pub workspace: Option<WorkspaceId>,
    /// The id or name acted on.
    pub target: String,
    /// Extra facts (e.g. `grace_ms=60000 new=key_…`).
    pub detail: String,
}

/// Usage figures of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUsageReport {
    /// The key.
    pub id: KeyId,
    /// Last successful verification.
    pub last_used_at: Option<UnixMillis>,
    /// Successful verifications since creation.
    pub valid: u64,
    /// Refused verifications since creation (after the key was found).
    pub refused: u64,
    /// Limits figures now (credits left, daily calls left, tightest rate).
    pub quota: Quota,
    /// Daily calls used today.
    pub daily_used: Option<u64>,
}

/// A session minted by signed authentication.
pub struct Session {
    /// The token to send as `aptoken`. Shown once.
    pub token: Token,
    /// Key it belongs to.
    pub key_id: KeyId,
    /// The signing user id.
    pub user_id: String,
    /// Expiry.
    pub expires_at: UnixMillis,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("token", &self.token)
            .field("key_id", &self.key_id)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

// ---- stored records -------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SigningRecord {
    pub user_id: String,
    pub nonce_policy: NoncePolicy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub policy: KeyPolicy,
    pub start: String,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub signing: Option<SigningRecord>,
    /// During a rotation grace the old key shares its successor's counters, so
    /// credits and limits cannot be spent twice.
    pub usage_owner: Option<KeyId>,
    /// The owner's id in the caller's own system.
    pub external_id: Option<String>,
    /// Role labels.
    pub roles: Vec<String>,
    /// A key with a signing identity that is also a bearer key. Records
    /// written before this field decode with `false` ([`KeyRecord::decode`]).
    pub bearer: bool,
    /// The key's number in its workspace (1, 2, …, in creation order, never
    /// reused). `None` for keys created before keys were numbered.
    pub serial: Option<u64>,
}

/// A key record as written before `bearer` and `serial` existed.
#[derive(Serialize, Deserialize)]
struct KeyRecordBefore {
    policy: KeyPolicy,
    start: String,
    created_at: UnixMillis,
    created_by: String,
    signing: Option<SigningRecord>,
    usage_owner: Option<KeyId>,
    external_id: Option<String>,
    roles: Vec<String>,
}

impl KeyRecord {
    /// Decodes a stored key, also as written before `bearer` and `serial`
    /// existed (then `false`, a signing key is no bearer key, and none).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, keyward_core::policy::RecordError> {
        keyward_core::policy::decode_record::<Self>(bytes).or_else(|e| {
            let b: KeyRecordBefore = keyward_core::policy::decode_record(bytes).map_err(|_| e)?;
            Ok(Self {
                policy: b.policy,
                start: b.start,
                created_at: b.created_at,
                created_by: b.created_by,
                signing: b.signing,
                usage_owner: b.usage_owner,
                external_id: b.external_id,
                roles: b.roles,
                bearer: false,
                serial: None,
            })
        })
    }

    /// Whether the token works as a bearer credential: every key without a
    /// signing identity, and signing keys made with `bearer`.
    pub(crate) fn is_bearer(&self) -> bool {
        self.signing.is_none() || self.bearer
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ToolRecord {
    pub policy: ToolPolicy,
    pub created_at: UnixMillis,
    /// Kept beside the policy, not in it: the policy goes into edge
    /// snapshots, the upstream does not.
    pub upstream: Option<String>,
    pub timeout_ms: u64,
}

impl ToolRecord {
    /// Decodes a stored tool, also as written before upstreams existed
    /// (then without one, and the default timeout).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, keyward_core::policy::RecordError> {
        #[derive(Deserialize)]
        struct Before {
            policy: ToolPolicy,
            created_at: UnixMillis,
        }
        keyward_core::policy::decode_record::<Self>(bytes).or_else(|e| {
            let Before { policy, created_at } = keyward_core::policy::decode_record(bytes).map_err(|_| e)?;
            Ok(Self { policy, created_at, upstream: None, timeout_ms: DEFAULT_UPSTREAM_TIMEOUT_MS })
        })
    }

    /// What callers see.
    pub(crate) fn tool(&self) -> Tool {
        Tool { policy: self.policy.clone(), upstream: self.upstream.clone(), timeout_ms: self.timeout_ms }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UsageRecord {
    pub key: UsageState,
    /// (tool, the tool's limits state, the key×tool state).
    pub tools: Vec<(String, UsageState, UsageState)>,
    pub nonce: NonceState,
    pub mint: UsageState,
    pub last_used_at: Option<UnixMillis>,
    pub valid: u64,
    pub refused: u64,
}

impl UsageRecord {
    /// Adds one node's statistics.
    pub(crate) fn add_stats(&mut self, stats: &crate::store::UsageStats) {
        self.valid = self.valid.saturating_add(stats.valid);
        self.refused = self.refused.saturating_add(stats.refused);
        self.last_used_at = self.last_used_at.max(stats.last_used_at);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub key_id: KeyId,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use keyward_core::KeyHash;
    use keyward_core::policy::encode_record;

    use super::*;

    fn policy() -> KeyPolicy {
        KeyPolicy {
            id: KeyId([1; 16]),
            workspace: WorkspaceId([2; 16]),
            hash: KeyHash([3; 32]),
            name: "old".into(),
            revoked_at: None,
            expires_at: Some(UnixMillis(5)),
            disabled: false,
            permissions: vec![Permission::parse("keys:read").unwrap()],
            ip_rules: IpRules::none(),
            limits: Limits::default(),
            tool_limits: Vec::new(),
            tools: vec!["t".into()],
            meta: String::new(),
            imported: false,
        }
    }

    #[test]
    fn a_key_stored_before_bearer_and_serials_reads_as_signing_only_and_unnumbered() {
        let signing = Some(SigningRecord { user_id: "96".into(), nonce_policy: NoncePolicy::Monotonic });
        let old = KeyRecordBefore {
            policy: policy(),
            start: "kw_live_abcd".into(),
            created_at: UnixMillis(1),
            created_by: "admin".into(),
            signing: signing.clone(),
            usage_owner: None,
            external_id: Some("u-1".into()),
            roles: vec!["ops".into()],
        };
        let rec = KeyRecord::decode(&encode_record(&old)).unwrap();
        assert_eq!(
            rec,
            KeyRecord {
                policy: policy(),
                start: "kw_live_abcd".into(),
                created_at: UnixMillis(1),
                created_by: "admin".into(),
                signing,
                usage_owner: None,
                external_id: Some("u-1".into()),
                roles: vec!["ops".into()],
                bearer: false,
                serial: None,
            }
        );
        assert!(!rec.is_bearer());
        // Today's records read back as written.
        let now = KeyRecord { bearer: true, serial: Some(9), ..rec };
        assert_eq!(KeyRecord::decode(&encode_record(&now)).unwrap(), now);
        assert!(now.is_bearer());
        // A key without a signing identity is a bearer key whatever the flag.
        assert!(KeyRecord { signing: None, bearer: false, ..now.clone() }.is_bearer());
        // Neither shape: refused as corrupt, not guessed.
        assert_eq!(KeyRecord::decode(&encode_record(&now)[..5]), Err(keyward_core::policy::RecordError::Corrupt));
        let mut bytes = encode_record(&now);
        bytes.push(0);
        assert_eq!(KeyRecord::decode(&bytes), Err(keyward_core::policy::RecordError::Corrupt));
    }

    #[test]
    fn a_workspace_stored_before_key_lifetimes_or_limit_sync_reads_with_neither() {
        let policy = WorkspacePolicy {
            id: WorkspaceId([2; 16]),
            name: "acme".into(),
            api_access: true,
            prefix: Prefix::default_live(),
            ip_rules: IpRules::none(),
            default_limits: Limits::default(),
        };
        let local = LimitSync::Local { ms: 50 };
        let before_ttl = encode_record(&(policy.clone(), UnixMillis(7), local));
        let before_sync = encode_record(&(policy.clone(), UnixMillis(7)));
        let expect = |limit_sync| Workspace {
            policy: policy.clone(),
            created_at: UnixMillis(7),
            limit_sync,
            key_ttl: KeyTtl::default(),
        };
        assert_eq!(Workspace::decode(&before_ttl).unwrap(), expect(local));
        assert_eq!(Workspace::decode(&before_sync).unwrap(), expect(LimitSync::Exact));
        let now = Workspace { key_ttl: KeyTtl { default_ms: Some(1_000), max_ms: None }, ..expect(local) };
        assert_eq!(Workspace::decode(&encode_record(&now)).unwrap(), now);
    }
}

#[cfg(test)]
mod tool_record_tests {
    use keyward_core::policy::{decode_record, encode_record};
    use keyward_core::{Limits, ToolPolicy, UnixMillis, WorkspaceId};
    use serde::Serialize;

    use super::{DEFAULT_UPSTREAM_TIMEOUT_MS, ToolRecord};

    fn policy() -> ToolPolicy {
        ToolPolicy {
            workspace: WorkspaceId([7; 16]),
            name: "reports".into(),
            enabled: true,
            permission: None,
            limits: Limits { daily: Some(5), ..Limits::default() },
        }
    }

    /// A tool stored before upstreams existed still loads, without one.
    #[test]
    fn tool_record_before_upstreams() {
        #[derive(Serialize)]
        struct Before {
            policy: ToolPolicy,
            created_at: UnixMillis,
        }
        let old = encode_record(&Before { policy: policy(), created_at: UnixMillis(42) });
        assert!(decode_record::<ToolRecord>(&old).is_err(), "the old shape is not the new one");
        let rec = ToolRecord::decode(&old).unwrap();
        let want = ToolRecord {
            policy: policy(),
            created_at: UnixMillis(42),
            upstream: None,
            timeout_ms: DEFAULT_UPSTREAM_TIMEOUT_MS,
        };
        assert_eq!(rec, want);
    }

    #[test]
    fn tool_record_round_trip() {
        let rec = ToolRecord {
            policy: policy(),
            created_at: UnixMillis(1),
            upstream: Some("https://api.example.com/v1".into()),
            timeout_ms: 1500,
        };
        assert_eq!(ToolRecord::decode(&encode_record(&rec)).unwrap(), rec);
    }
}
