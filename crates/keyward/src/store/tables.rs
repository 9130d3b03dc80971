//! Every redb table, in one place. Values are `keyward_core::policy::encode_record`
//! bytes (a version byte, then postcard); see `docs/storage.md`.

use redb::TableDefinition;

/// `schema_version` → u32 LE.
pub(crate) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// Workspace id → `WorkspaceRecord`.
pub(crate) const WORKSPACES: TableDefinition<'_, &[u8; 16], &[u8]> = TableDefinition::new("workspaces");
/// (workspace id, tool name) → `ToolRecord`.
pub(crate) const TOOLS: TableDefinition<'_, (&[u8; 16], &str), &[u8]> = TableDefinition::new("tools");
/// Key id → `KeyRecord` (policy, hash, settings; never a token).
pub(crate) const KEYS: TableDefinition<'_, &[u8; 16], &[u8]> = TableDefinition::new("keys");
/// Counter id (the key that owns a shared cell) → `UsageRecord` (counters,
/// last_used_at, totals), written behind.
pub(crate) const USAGE: TableDefinition<'_, &[u8; 16], &[u8]> = TableDefinition::new("usage");
/// Key id → `NonceState`: each key's own replay history (signed logins),
/// committed with the session it mints. Since schema version 2.
pub(crate) const NONCES: TableDefinition<'_, &[u8; 16], &[u8]> = TableDefinition::new("nonces");
/// SHA-256 of a session token → `SessionRecord`.
pub(crate) const SESSIONS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("sessions");
/// Workspace id → the highest key serial handed out in it. A file written
/// before keys had serials has no such table: none handed out yet.
pub(crate) const SERIALS: TableDefinition<'_, &[u8; 16], u64> = TableDefinition::new("serials");
/// (key or workspace id, granularity 0 minute / 1 hour / 2 day, bucket
/// start ms) → calls by verdict code (`Vec<(Code, u64)>`), kept for the
/// granularity's retention (`crate::history`).
pub(crate) const HISTORY: TableDefinition<'_, (&[u8; 16], u8, u64), &[u8]> = TableDefinition::new("history");
/// Key id → its own token's last valid call, Unix ms (a rotated key and its
/// successor share counters, not this).
pub(crate) const LAST_USED: TableDefinition<'_, &[u8; 16], u64> = TableDefinition::new("last_used");
/// Sequence number → `AuditEvent`. Appended to; the oldest events are
/// removed by an audit retention (`AuditRetention`), the others keep their
/// numbers.
pub(crate) const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit");

/// Key of the schema version in [`META`].
pub(crate) const SCHEMA_KEY: &str = "schema_version";
/// Key of the database magic in [`META`], to tell a keyward file from another redb file.
pub(crate) const MAGIC_KEY: &str = "magic";
/// Key in [`META`] of the highest audit sequence number when the log was
/// last trimmed (u64 LE), so numbering continues after it if every event went.
pub(crate) const AUDIT_HIGH_KEY: &str = "audit_high";
/// Value under [`MAGIC_KEY`].
pub(crate) const MAGIC: &[u8] = b"keyward";
/// Schema version this build writes.
pub(crate) const SCHEMA_VERSION: u32 = 2;
