//! What verification needs to know about keys, workspaces and tools, and the
//! versioned record encoding the engine stores them in.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::id::{KeyId, WorkspaceId};
use crate::ip::IpRules;
use crate::limits::Limits;
use crate::permission::Permission;
use crate::time::UnixMillis;
use crate::token::{KeyHash, Prefix};

/// Longest key name.
pub const MAX_NAME_LEN: usize = 128;

/// A key, minus anything secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPolicy {
    /// Public id.
    pub id: KeyId,
    /// Workspace the key belongs to.
    pub workspace: WorkspaceId,
    /// SHA-256 of the token.
    pub hash: KeyHash,
    /// Display name, 1–128 characters.
    pub name: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixMillis>,
    /// When it stops working, if ever. A key is expired at `now >= expires_at`.
    pub expires_at: Option<UnixMillis>,
    /// Disabled keys are refused until re-enabled.
    pub disabled: bool,
    /// Permissions held.
    pub permissions: Vec<Permission>,
    /// The key's own IP rules (the workspace's apply too).
    pub ip_rules: IpRules,
    /// Limits on every call of the key.
    pub limits: Limits,
    /// Limits on the key's calls of one tool (key×tool).
    pub tool_limits: Vec<(String, Limits)>,
    /// Tools the key may call; empty means every tool.
    pub tools: Vec<String>,
    /// Metadata: a JSON object as text, or empty.
    pub meta: String,
    /// Imported by hash from another system: its token has no keyward
    /// checksum, so verification skips that step for it.
    pub imported: bool,
}

/// Lifecycle status of a key at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
    /// Disabled.
    Disabled,
}

impl Status {
    /// `active`, `expired`, `revoked` or `disabled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
            Status::Disabled => "disabled",
        }
    }
}

impl KeyPolicy {
    /// Status at `now`, in the order verification checks it.
    pub fn status(&self, now: UnixMillis) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if self.expires_at.is_some_and(|e| now >= e) {
            Status::Expired
        } else if self.disabled {
            Status::Disabled
        } else {
            Status::Active
        }
    }

    /// The key×tool limits for `tool`, if any.
    pub fn limits_for_tool(&self, tool: &str) -> Option<&Limits> {
        self.tool_limits.iter().find(|(t, _)| t == tool).map(|(_, l)| l)
    }
}

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspacePolicy {
    /// Public id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Whether the plan includes API access; without it keys can be neither
    /// created nor used.
    pub api_access: bool,
    /// Prefix of new keys.
    pub prefix: Prefix,
    /// Rules every key of the workspace must also pass.
    pub ip_rules: IpRules,
    /// Limits given to new keys that set none.
    pub default_limits: Limits,
}

/// A named operation keys call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPolicy {
    /// Workspace the tool belongs to.
    pub workspace: WorkspaceId,
    /// Name, e.g. `gl_ping`.
    pub name: String,
    /// Disabled tools answer `TOOL_DISABLED`.
    pub enabled: bool,
    /// Permission a key needs to call it.
    pub permission: Option<Permission>,
    /// Limits applied to each key's calls of this tool (cooldown, daily, …).
    pub limits: Limits,
}

/// Current record format version. Bump it when a stored type changes shape,
/// and teach [`decode_record`]'s callers to upgrade the old one.
pub const RECORD_VERSION: u8 = 1;

/// Why a stored record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Zero bytes.
    #[error("record is empty")]
    Empty,
    /// Written by a newer (or unknown) format.
    #[error("record format version {0} is not supported (this build reads {RECORD_VERSION})")]
    Version(u8),
    /// The bytes do not decode as the expected type.
    #[error("record is corrupt")]
    Corrupt,
}

/// Encodes a record: one version byte, then postcard.
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: postcard only fails on writer errors or sequences of unknown
    // length; a Vec writer never fails and our types have no such sequences.
    #[allow(clippy::expect_used)]
    postcard::to_extend(value, vec![RECORD_VERSION]).expect("postcard into a Vec cannot fail")
}

/// Decodes a record written by [`encode_record`]. Trailing bytes are refused.
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
    if version != RECORD_VERSION {
        return Err(RecordError::Version(version));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| RecordError::Corrupt)?;
    if rest.is_empty() { Ok(value) } else { Err(RecordError::Corrupt) }
}
