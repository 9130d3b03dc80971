//! What the native API sends and takes, as types: the handlers serialise
//! the response types, and `GET /openapi.json` is derived from all of them,
//! so the document cannot drift from the answers. `keyward … --json` prints
//! the same types (made by [`crate::key_view`] and its siblings).
//!
//! Request bodies are read into the (crate-private) request types here,
//! refusing unknown fields and naming the JSON path of a mistake: the types
//! the document describes are the ones the handlers read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::body::Patch;

/// `value` as JSON. Serialising these types cannot fail: every map key is
/// a string and no `Serialize` impl here returns an error.
pub(crate) fn value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

// ---- responses ---------------------------------------------------------------

/// A key. Never its token or hash.
#[derive(Serialize, ToSchema)]
pub struct Key {
    /// The key's public id.
    pub id: String,
    /// Its workspace.
    pub workspace_id: String,
    /// Its name.
    pub name: String,
    /// The first characters of the token, to recognise it by.
    pub start: String,
    /// Whether it may be used now.
    pub status: KeyStatus,
    /// RFC 3339.
    pub created_at: String,
    /// Who created it (`key:<id>`, `cli`, ...).
    pub created_by: String,
    #[schema(required = true)]
    /// When it was last verified successfully (RFC 3339).
    pub last_used_at: Option<String>,
    #[schema(required = true)]
    /// When it expires (RFC 3339); `null`: never.
    pub expires_at: Option<String>,
    #[schema(required = true)]
    /// When it was revoked (RFC 3339).
    pub revoked_at: Option<String>,
    /// Whether it is disabled.
    pub disabled: bool,
    /// What it may do.
    pub permissions: Vec<String>,
    /// Where it may be used from.
    pub ip_rules: Vec<IpRule>,
    /// Its limits.
    pub limits: Limits,
    /// Tools the key may call; empty: every tool.
    pub tools: Vec<String>,
    /// The caller's own data.
    #[schema(required = true, value_type = Option<Object>)]
    pub meta: Option<Value>,
    #[schema(required = true)]
    /// Credits left; `null`: unlimited.
    pub credits_remaining: Option<u64>,
    /// Issued elsewhere and imported by hash or token.
    pub imported: bool,
    /// The APIMall serial (`POST /api/v1/keys`), if any.
    #[schema(required = true)]
    pub serial: Option<u64>,
    /// Whether a signing key also authenticates as a bearer token.
    pub bearer: bool,
    /// Present for signing keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub signing: Option<SigningUser>,
}

/// A key's state.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked for good.
    Revoked,
    /// Disabled (or its workspace's plan inactive).
    Disabled,
}

impl From<keyward_core::policy::Status> for KeyStatus {
    fn from(s: keyward_core::policy::Status) -> Self {
        match s {
            keyward_core::policy::Status::Active => Self::Active,
            keyward_core::policy::Status::Expired => Self::Expired,
            keyward_core::policy::Status::Revoked => Self::Revoked,
            _ => Self::Disabled,
        }
    }
}

/// The user a signing key signs as.
#[derive(Serialize, ToSchema)]
pub struct SigningUser {
    /// The user id it signs as.
    pub user_id: String,
}

/// An IP rule: `allow` or `deny` a CIDR.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRule {
    /// Allow or deny.
    pub action: IpAction,
    /// e.g. `10.0.0.0/8` or `2001:db8::/32`.
    pub cidr: String,
}

/// What an IP rule does.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpAction {
    /// Let the network in.
    Allow,
    /// Keep the network out.
    Deny,
}

/// Limits as stored; absent parts are not limited.
#[derive(Serialize, ToSchema, Default)]
pub struct Limits {
    /// The rate named `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rate: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    /// Every rate limit, by name.
    pub rates: Option<Vec<NamedRate>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    /// Least time between two calls.
    pub cooldown_ms: Option<u64>,
    /// Calls per UTC day.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub daily: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    /// Calls in flight.
    pub concurrency: Option<Concurrency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    /// A credit budget.
    pub credits: Option<CreditsView>,
}

/// `limit` calls per `window_ms`.
#[derive(Serialize, ToSchema)]
pub struct Rate {
    /// Calls per window.
    pub limit: u64,
    /// The window.
    pub window_ms: u64,
}

/// A named rate limit.
#[derive(Serialize, ToSchema)]
pub struct NamedRate {
    /// Its name (`default` is charged on every call).
    pub name: String,
    /// Calls per window.
    pub limit: u64,
    /// The window.
    pub window_ms: u64,
    /// Charged on every call, not only when named.
    pub auto_apply: bool,
}

/// At most `max` calls in flight, each lease held up to `lease_ms`.
#[derive(Serialize, ToSchema)]
pub struct Concurrency {
    /// Most calls in flight.
    pub max: u32,
    /// How long a lease is held at most.
    pub lease_ms: u64,
}

/// A credit budget.
#[derive(Serialize, ToSchema)]
pub struct CreditsView {
    /// Credits given at creation.
    pub initial: u64,
    #[schema(required = true)]
    /// How credits refill; `null`: they do not.
    pub refill: Option<RefillView>,
}

/// How credits refill.
#[derive(Serialize, ToSchema)]
pub struct RefillView {
    /// When.
    pub interval: RefillInterval,
    /// Credits given at each refill.
    pub amount: u64,
    /// Day of the month (monthly refills only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 31)]
    pub day: Option<u8>,
}

/// When credits refill.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefillInterval {
    /// Every UTC day.
    Daily,
    /// Every month, on `day`.
    Monthly,
}

/// A key just created (`POST /v1/api-keys`, each item of a batch): the key
/// and, shown this once, its secret and (signing keys) signing secrets.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    /// The key.
    pub key: Key,
    /// The token (absent for a key imported by hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
    /// Signing keys: the secret requests are signed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub api_secret: Option<String>,
    /// Signing keys: the user they sign as.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_id: Option<String>,
    /// Signing keys: the last nonce used.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub nonce: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    /// Signing keys: how nonces must advance.
    pub nonce_policy: Option<NoncePolicy>,
}

/// How a signing key's nonces must advance.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NoncePolicy {
    /// Each nonce above the last.
    Monotonic,
    /// Each nonce unused within a window.
    Unique,
}

/// A rotated key: the new key, its secret, and the key it replaces.
#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    #[serde(flatten)]
    /// The new key.
    pub key: Key,
    /// Its token, shown this once.
    pub secret: String,
    /// The id of the old key (valid for `grace_seconds` more).
    pub rotated_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    /// Signing keys: the secret requests are signed with.
    pub api_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    /// Signing keys: the user they sign as.
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    /// Signing keys: the last nonce used.
    pub nonce: Option<u64>,
}

/// A page of keys.
#[derive(Serialize, ToSchema)]
pub struct KeyPage {
    /// The keys.
    pub items: Vec<Key>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The keys of a batch, in the order of their specs.
#[derive(Serialize, ToSchema)]
pub struct CreatedKeys {
    /// The keys.
    pub items: Vec<CreatedKey>,
}

/// A deleted key.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// The key's id.
    pub id: String,
    /// `true`.
    pub deleted: bool,
}

/// A key's usage.
#[derive(Serialize, ToSchema)]
pub struct Usage {
    /// The key's id.
    pub id: String,
    #[schema(required = true)]
    /// Last successful verification (RFC 3339).
    pub last_used_at: Option<String>,
    /// Calls accepted.
    pub valid: u64,
    /// Calls refused.
    pub refused: u64,
    #[schema(required = true)]
    /// Credits left; `null`: unlimited.
    pub credits_remaining: Option<u64>,
    #[schema(required = true)]
    /// Calls today (UTC); `null`: no daily limit.
    pub daily_used: Option<u64>,
    #[schema(required = true)]
    /// Calls left today; `null`: no daily limit.
    pub daily_remaining: Option<u64>,
    #[schema(required = true)]
    /// Where the `default` rate limit stands.
    pub rate: Option<RateState>,
}

/// Where a rate limit stands.
#[derive(Serialize, ToSchema)]
pub struct RateState {
    /// Calls per window.
    pub limit: u64,
    /// Calls left in this window.
    pub remaining: u64,
    /// Milliseconds until the window resets.
    pub reset_ms: u64,
}

/// Calls by verdict code over time.
#[derive(Serialize, ToSchema)]
pub struct History {
    /// The size of the buckets.
    pub granularity: Granularity,
    /// RFC 3339.
    pub from: String,
    /// RFC 3339.
    pub to: String,
    /// The buckets, oldest first.
    pub buckets: Vec<Bucket>,
}

/// The size of a history bucket.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// A minute.
    Minute,
    /// An hour.
    Hour,
    /// A UTC day.
    Day,
}

/// One bucket of a history.
#[derive(Serialize, ToSchema)]
pub struct Bucket {
    /// RFC 3339.
    pub start: String,
    /// Calls by verdict code (`VALID`, `RATE_LIMITED`, ...); codes never seen are left out.
    pub counts: BTreeMap<String, u64>,
}

/// A page of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// The events, oldest first.
    pub items: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One audit event.
#[derive(Serialize, ToSchema)]
pub struct AuditEvent {
    /// Its place in the log; pass the last as `cursor`.
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    /// Who (`admin`, `cli`, `system` or `key:<id>`).
    pub actor: String,
    /// e.g. `key.created`.
    pub action: String,
    /// The id or name acted on.
    pub target: String,
    /// Extra facts.
    pub detail: String,
}

/// A tool the gateway serves.
#[derive(Serialize, ToSchema)]
pub struct Tool {
    /// Its name, the path segment after `/api/v2/`.
    pub name: String,
    /// Whether it may be called.
    pub enabled: bool,
    /// The permission a key needs to call it.
    #[schema(required = true)]
    pub permission: Option<String>,
    #[schema(required = true)]
    /// Least time between two calls of a key.
    pub cooldown_ms: Option<u64>,
    #[schema(required = true)]
    /// Calls per key and UTC day.
    pub daily_limit: Option<u64>,
    /// Where calls are forwarded; `null`: the gateway answers 501.
    #[schema(required = true)]
    pub upstream: Option<String>,
    /// How long the upstream may take.
    pub timeout_ms: u64,
}

/// The tools of a workspace.
#[derive(Serialize, ToSchema)]
pub struct ToolList {
    /// The tools.
    pub items: Vec<Tool>,
}

/// A workspace. Key lifetimes are in seconds.
#[derive(Serialize, ToSchema)]
pub struct Workspace {
    /// The workspace's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether its keys may call the API at all.
    pub api_access: bool,
    /// What its tokens start with.
    pub prefix: String,
    /// Where its keys may be used from.
    pub ip_rules: Vec<IpRule>,
    /// Limits given to its new keys.
    pub default_limits: Limits,
    /// How limits are shared between servers.
    pub limit_sync: String,
    #[schema(required = true)]
    /// Lifetime (seconds) of keys created without an expiry.
    pub default_key_ttl: Option<u64>,
    #[schema(required = true)]
    /// Longest lifetime (seconds) of a key.
    pub max_key_ttl: Option<u64>,
    /// RFC 3339.
    pub created_at: String,
}

/// The verdict on a key (`POST /v1/verify`).
#[derive(Serialize, ToSchema)]
pub struct VerifyResult {
    /// Whether the key may be used.
    pub valid: bool,
    #[schema(value_type = VerdictCode)]
    /// Why (`VALID` when it may).
    pub code: &'static str,
    #[schema(required = true)]
    /// The key's id, when found.
    pub key_id: Option<String>,
    #[schema(required = true)]
    /// Its workspace, when found.
    pub workspace_id: Option<String>,
    #[schema(required = true)]
    /// The key's name.
    pub name: Option<String>,
    #[schema(required = true)]
    /// The key's permissions.
    pub permissions: Option<Vec<String>>,
    #[schema(required = true, value_type = Option<Object>)]
    /// The caller's own data.
    pub meta: Option<Value>,
    #[schema(required = true)]
    /// When the key expires (RFC 3339).
    pub expires_at: Option<String>,
    /// Credits left.
    #[schema(required = true)]
    pub remaining: Option<u64>,
    #[schema(required = true)]
    /// When to try again, after a refusal for a limit.
    pub retry_after_ms: Option<u64>,
    #[schema(required = true)]
    /// Where the `default` rate limit stands.
    pub ratelimit: Option<RateState>,
    /// With `"hold": true` on a valid key: release it with `POST /v1/leases/{lease_id}/release`.
    #[schema(required = true)]
    pub lease_id: Option<String>,
}

/// A verdict code: its schema lists [`keyward_core::Code::ALL`], so the
/// document names every code the engine has and no other.
pub(crate) struct VerdictCode;

impl utoipa::PartialSchema for VerdictCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A verdict code."))
            .enum_values(Some(keyward_core::Code::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl ToSchema for VerdictCode {}

/// A released lease.
#[derive(Serialize, ToSchema)]
pub(crate) struct Released {
    pub released: bool,
}

/// A key created the APIMall way.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApimallKey {
    /// The key's serial.
    #[schema(required = true)]
    pub id: Option<u64>,
    pub title: String,
    /// Always `created`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// The token, shown once.
    pub api_key: String,
}

/// The caller of `/v1/auth` was accepted.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuthResult {
    pub key_id: String,
}

/// A signed login succeeded.
#[derive(Serialize, ToSchema)]
pub(crate) struct Session {
    pub authenticated: bool,
    /// Send as `APToken` on later calls.
    pub session_token: String,
    /// RFC 3339.
    pub expires_at: String,
    pub user_id: String,
    pub key_id: String,
}

/// The server's health.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `degraded` (with 503).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub flush_failures: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub write_failures: Option<u64>,
    /// Present (maybe `null`) when degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_unreachable_ms: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub store_stale: Option<bool>,
}

// ---- the envelope ------------------------------------------------------------

macro_rules! envelopes {
    ($($name:ident($data:ty)),* $(,)?) => {$(
        #[doc = concat!("`", stringify!($data), "` in the success envelope.")]
        #[derive(ToSchema)]
        #[allow(dead_code)] // Documentation only: `envelope::envelope` writes the envelope.
        pub(crate) struct $name {
            /// `true`.
            pub success: bool,
            pub data: $data,
            /// `req_` and 20 base62 characters, also in `X-Request-Id`.
            pub request_id: String,
        }
    )*};
}

envelopes!(
    KeyReply(Key),
    CreatedKeyReply(CreatedKey),
    RotatedKeyReply(RotatedKey),
    KeyPageReply(KeyPage),
    CreatedKeysReply(CreatedKeys),
    DeletedReply(Deleted),
    UsageReply(Usage),
    HistoryReply(History),
    AuditPageReply(AuditPage),
    ToolReply(Tool),
    ToolListReply(ToolList),
    WorkspaceReply(Workspace),
    VerifyReply(VerifyResult),
    ReleasedReply(Released),
    ApimallKeyReply(ApimallKey),
    AuthReply(AuthResult),
    SessionReply(Session),
    HealthReply(Health),
);

/// An error in the envelope.
#[derive(ToSchema)]
#[allow(dead_code)] // Documentation only: `envelope::envelope` writes the envelope.
pub(crate) struct ErrorReply {
    /// `false`.
    pub success: bool,
    pub error: ErrorBody,
    pub request_id: String,
}

/// What went wrong.
#[derive(ToSchema)]
#[allow(dead_code)] // Documentation only.
pub(crate) struct ErrorBody {
    /// A stable code: `invalid_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `rate_limited`, `timeout`, `internal`, `csrf`, `NOT_IMPLEMENTED`,
    /// `UPSTREAM_UNAVAILABLE`, `UPSTREAM_TIMEOUT`, or a verdict code
    /// (`MALFORMED`, `NOT_FOUND`, `INSUFFICIENT_PERMISSIONS`,
    /// `RATE_LIMITED`, `STORE_UNAVAILABLE`, ...).
    pub code: String,
    pub message: String,
    /// A refused batch: every refused spec.
    #[schema(nullable = false)]
    pub errors: Option<Vec<BatchError>>,
}

/// One refused spec of a batch.
#[derive(ToSchema)]
#[allow(dead_code)] // Documentation only.
pub(crate) struct BatchError {
    pub index: u64,
    pub code: String,
    /// Names the spec's path, e.g. `keys[3].permissions: ...`.
    pub message: String,
}

// ---- request bodies ------------------------------------------------------------
//
// The handlers read bodies into these types with `crate::body::parse`:
// unknown fields are refused, and an error names the JSON path of the value
// it concerns. Checks serde cannot make (a CIDR, a permission's grammar, a
// range) are made when a value is turned into the engine's
// (`crate::json`), naming their path the same way.

/// An RFC 3339 time (`2024-03-01T10:00:00.000Z`) or Unix milliseconds.
#[derive(Deserialize, ToSchema)]
#[serde(untagged, from = "Either<Time>")]
pub(crate) enum Time {
    Text(String),
    Millis(u64),
}

/// Reads a value that is one JSON type or another ([`Time`], [`UserId`],
/// [`ConcurrencySpec`]) by the type it has, so a mistake inside the object
/// form keeps its path (`limits.concurrency.lease`) and any other type is
/// named as unexpected. (Serde's untagged enums try each form in turn and
/// report only that none matched.)
pub(crate) struct Either<T>(T);

/// What [`Either`] reads a type from.
pub(crate) trait Forms: Sized {
    /// What the type may be, for an error message.
    const EXPECTING: &'static str;

    fn text<E: serde::de::Error>(s: String) -> Result<Self, E> {
        Err(E::invalid_type(serde::de::Unexpected::Str(&s), &Self::EXPECTING))
    }

    fn number<E: serde::de::Error>(n: u64) -> Result<Self, E> {
        Err(E::invalid_type(serde::de::Unexpected::Unsigned(n), &Self::EXPECTING))
    }

    fn object<'de, A: serde::de::MapAccess<'de>>(_: A) -> Result<Self, A::Error> {
        Err(serde::de::Error::invalid_type(serde::de::Unexpected::Map, &Self::EXPECTING))
    }
}

macro_rules! from_either {
    ($($t:ty),*) => {$(
        impl From<Either<$t>> for $t {
            fn from(e: Either<$t>) -> Self {
                e.0
            }
        }
    )*};
}

from_either!(Time, UserId, ConcurrencySpec);

impl<'de, T: Forms> Deserialize<'de> for Either<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Forms> serde::de::Visitor<'de> for V<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::EXPECTING)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
                T::text(v.to_owned())
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
                T::number(v)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::object(map)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData)).map(Either)
    }
}

impl Forms for Time {
    const EXPECTING: &'static str = "an RFC 3339 time or Unix milliseconds";

    fn text<E: serde::de::Error>(s: String) -> Result<Self, E> {
        Ok(Self::Text(s))
    }

    fn number<E: serde::de::Error>(ms: u64) -> Result<Self, E> {
        Ok(Self::Millis(ms))
    }
}

/// Declares a key spec's fields once for the API's spec and the import
/// file's, which adds fields of its own.
macro_rules! key_spec {
    ($(#[$meta:meta])* $name:ident { $($(#[$extra_meta:meta])* $extra:ident: $extra_ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            /// Required (or `title`).
            #[schema(min_length = 1, max_length = 128)]
            pub name: Option<String>,
            /// Another name for `name`.
            #[schema(min_length = 1, max_length = 128)]
            pub title: Option<String>,
            /// Create it already expired.
            pub expire_now: Option<bool>,
            pub expires_at: Option<Time>,
            /// By default the creator's own.
            pub permissions: Option<Vec<String>>,
            pub ip_rules: Option<Vec<IpRule>>,
            pub limits: Option<LimitsSpec>,
            pub tools: Option<Vec<String>>,
            /// Whether a signing key also authenticates as a bearer token.
            pub bearer: Option<bool>,
            #[schema(value_type = Option<Object>)]
            pub meta: Option<serde_json::Map<String, Value>>,
            /// Makes it a signing key.
            pub signing: Option<SigningSpec>,
            pub disabled: Option<bool>,
            $($(#[$extra_meta])* pub $extra: $extra_ty,)*
        }
    };
}

key_spec!(
    /// A new key. Unknown fields are refused.
    KeySpec {}
);

key_spec!(
    /// A line of a `keyward key import` file: a key spec, and for a key
    /// issued elsewhere its token, or the SHA-256 of it with a display start.
    ImportSpec {
        /// The key's token, issued elsewhere.
        token: Option<String>,
        /// The SHA-256 of the token, hex.
        hash: Option<String>,
        /// What the token starts with (with `hash` only).
        start: Option<String>,
    }
);

impl ImportSpec {
    /// The key spec, and what an import adds to it.
    pub(crate) fn split(self) -> (KeySpec, [Option<String>; 3]) {
        let ImportSpec {
            name,
            title,
            expire_now,
            expires_at,
            permissions,
            ip_rules,
            limits,
            tools,
            bearer,
            meta,
            signing,
            disabled,
            token,
            hash,
            start,
        } = self;
        let spec = KeySpec {
            name,
            title,
            expire_now,
            expires_at,
            permissions,
            ip_rules,
            limits,
            tools,
            bearer,
            meta,
            signing,
            disabled,
        };
        (spec, [token, hash, start])
    }
}

/// Limits to set.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSpec {
    /// The rate named `default`.
    pub rate: Option<RateSpec>,
    pub rates: Option<Vec<NamedRateSpec>>,
    pub cooldown_ms: Option<u64>,
    pub daily: Option<u64>,
    /// At most this many calls in flight, or `{max, lease_ms}`.
    pub concurrency: Option<ConcurrencySpec>,
    pub credits: Option<CreditsSpec>,
}

/// A concurrency limit: at most `max` calls in flight (a bare number: the
/// lease lasts 60 s), or `{max, lease_ms}`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged, from = "Either<ConcurrencySpec>")]
pub(crate) enum ConcurrencySpec {
    Max(u64),
    Leased(LeasedConcurrency),
}

impl Forms for ConcurrencySpec {
    const EXPECTING: &'static str = "a positive integer or {\"max\": n, \"lease_ms\": ms}";

    fn number<E: serde::de::Error>(max: u64) -> Result<Self, E> {
        Ok(Self::Max(max))
    }

    fn object<'de, A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        LeasedConcurrency::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Self::Leased)
    }
}

/// At most `max` calls in flight, each lease held up to `lease_ms`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeasedConcurrency {
    pub max: u64,
    /// By default 60000.
    pub lease_ms: Option<u64>,
}

/// `limit` calls per `window_ms`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateSpec {
    pub limit: u64,
    pub window_ms: u64,
}

/// A named rate limit.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedRateSpec {
    /// By default `default`.
    pub name: Option<String>,
    pub limit: u64,
    pub window_ms: u64,
    /// By default `true`.
    pub auto_apply: Option<bool>,
}

/// A credit budget.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreditsSpec {
    /// Credits the key starts with, as a key's `limits.credits.initial`
    /// shows them; `remaining` is accepted for the same.
    #[serde(alias = "remaining")]
    pub initial: u64,
    pub refill: Option<RefillSpec>,
}

/// How credits refill.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefillSpec {
    pub interval: RefillInterval,
    pub amount: u64,
    /// Monthly: the day of the month, by default 1.
    #[schema(minimum = 1, maximum = 31)]
    pub day: Option<u8>,
}

/// A signing key's user and nonce rule.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SigningSpec {
    pub user_id: UserId,
    /// By default `monotonic`.
    pub nonce_policy: Option<NoncePolicySpec>,
    /// With `unique`: how long a nonce is remembered; by default 600000.
    pub nonce_window_ms: Option<u64>,
}

/// A signing key's user: a string or a non-negative integer.
#[derive(Deserialize, ToSchema)]
#[serde(untagged, from = "Either<UserId>")]
pub(crate) enum UserId {
    Text(String),
    Number(u64),
}

impl Forms for UserId {
    const EXPECTING: &'static str = "a string or a non-negative integer";

    fn text<E: serde::de::Error>(s: String) -> Result<Self, E> {
        Ok(Self::Text(s))
    }

    fn number<E: serde::de::Error>(n: u64) -> Result<Self, E> {
        Ok(Self::Number(n))
    }
}

/// How a signing key's nonces must advance.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NoncePolicySpec {
    Monotonic,
    #[serde(alias = "unique_in_window")]
    Unique,
}

/// Changes to a key: absent fields stay as they are, `null` clears those
/// that say so; unknown ones are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyPatch {
    #[schema(min_length = 1, max_length = 128)]
    pub name: Option<String>,
    /// Another name for `name`.
    #[schema(min_length = 1, max_length = 128)]
    pub title: Option<String>,
    /// `null`: never expires.
    #[serde(default)]
    #[schema(value_type = Option<Time>)]
    pub expires_at: Patch<Time>,
    pub permissions: Option<Vec<String>>,
    /// `null`: none.
    #[serde(default)]
    #[schema(value_type = Option<Vec<IpRule>>)]
    pub ip_rules: Patch<Vec<IpRule>>,
    /// `null`: none.
    #[serde(default)]
    #[schema(value_type = Option<LimitsSpec>)]
    pub limits: Patch<LimitsSpec>,
    /// `null`: every tool.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub tools: Patch<Vec<String>>,
    /// `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub meta: Patch<serde_json::Map<String, Value>>,
    pub disabled: Option<bool>,
    /// `{"remaining": n}` sets the credits left.
    pub credits: Option<CreditsPatch>,
}

/// Sets the credits left.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreditsPatch {
    pub remaining: Option<u64>,
}

/// Up to 1000 key specs, created in one commit, all or nothing.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchSpec {
    #[schema(value_type = Vec<KeySpec>, min_items = 1, max_items = 1000)]
    pub keys: Vec<BatchItem>,
}

/// One spec of a batch, read on its own so that every refused spec is
/// reported, not only the first: the spec, or why it is refused (its path
/// under the item).
pub(crate) struct BatchItem(pub Result<KeySpec, crate::body::BodyError>);

impl<'de> Deserialize<'de> for BatchItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(Self(crate::body::from_value(&value)))
    }
}

/// How long the old key stays valid.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateSpec {
    /// By default 0.
    pub grace_seconds: Option<u64>,
}

/// A key the APIMall way.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApimallSpec {
    /// Not blank.
    #[schema(min_length = 1, max_length = 128)]
    pub title: String,
}

/// A new tool.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolSpec {
    /// The path segment after `/api/v2/`.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    /// By default `true`.
    pub enabled: Option<bool>,
    pub permission: Option<String>,
    pub cooldown_ms: Option<u64>,
    pub daily_limit: Option<u64>,
    /// An `http://` or `https://` URL.
    pub upstream: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// Changes to a tool: absent fields stay, `null` clears.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolPatch {
    pub enabled: Option<bool>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub permission: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<u64>)]
    pub cooldown_ms: Patch<u64>,
    #[serde(default)]
    #[schema(value_type = Option<u64>)]
    pub daily_limit: Patch<u64>,
    /// `null`: the gateway answers 501.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub upstream: Patch<String>,
    /// `null`: the default.
    #[serde(default)]
    #[schema(value_type = Option<u64>)]
    pub timeout_ms: Patch<u64>,
}

/// Changes to a workspace: absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkspacePatch {
    pub name: Option<String>,
    pub prefix: Option<String>,
    pub api_access: Option<bool>,
    pub ip_rules: Option<Vec<IpRule>>,
    pub default_limits: Option<LimitsSpec>,
    pub limit_sync: Option<String>,
    /// Seconds; `null` clears.
    #[serde(default)]
    #[schema(value_type = Option<u64>)]
    pub default_key_ttl: Patch<u64>,
    /// Seconds; `null` clears.
    #[serde(default)]
    #[schema(value_type = Option<u64>)]
    pub max_key_ttl: Patch<u64>,
}

/// A key to verify.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifySpec {
    /// The token.
    pub key: String,
    pub tool: Option<String>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// Permissions the key must hold.
    pub permissions: Option<Vec<String>>,
    /// Credits to charge; by default 1.
    pub cost: Option<u64>,
    /// Keep the concurrency leases until released.
    pub hold: Option<bool>,
}

/// The body of the built-in `gl_ping` tool.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PingSpec {
    pub ip: String,
}

/// A browser console sign-in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginSpec {
    pub key: String,
}
