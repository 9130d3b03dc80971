//! The exported snapshot (SPEC §6 "Snapshot"): everything verification needs,
//! nothing secret, authenticated with HMAC-SHA256.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 6 | magic `KWSNAP` |
//! | 2 | format version (1) |
//! | 8 | body length `n` |
//! | n | body: postcard of [`Snapshot`] |
//! | 32 | HMAC-SHA256 under the snapshot key of every byte before it |

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ip::{self, IpRules};
use crate::limits::Limits;
use crate::policy::{KeyPolicy, ToolPolicy, WorkspacePolicy};
use crate::time::UnixMillis;

type HmacSha256 = hmac::Hmac<Sha256>;

/// First bytes of every snapshot.
pub const MAGIC: &[u8; 6] = b"KWSNAP";
/// Format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Shortest accepted snapshot key.
pub const MIN_KEY_LEN: usize = 16;
const HEADER_LEN: usize = 6 + 2 + 8;
const TAG_LEN: usize = 32;

/// Everything verification needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was exported.
    pub created_at: UnixMillis,
    /// Workspaces.
    pub workspaces: Vec<WorkspacePolicy>,
    /// Tools of every workspace.
    pub tools: Vec<ToolPolicy>,
    /// Keys (revoked ones included, so they answer `REVOKED`).
    pub keys: Vec<KeyPolicy>,
}

/// Why a snapshot was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The snapshot key is shorter than 16 bytes.
    #[error("snapshot key must be at least {MIN_KEY_LEN} bytes")]
    WeakKey,
    /// Shorter than its header says (cut off in transit or on disk).
    #[error("snapshot is truncated: expected {expected} bytes, got {actual}")]
    Truncated {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// Does not start with `KWSNAP`.
    #[error("not a keyward snapshot (bad magic)")]
    NotASnapshot,
    /// A format version this build does not read.
    #[error("snapshot format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    Version(u16),
    /// The MAC does not match: the bytes were changed, or the key is wrong.
    #[error("snapshot authentication failed: it was modified or the key is wrong")]
    Tampered,
    /// Authentic but undecodable (written by a buggy exporter).
    #[error("snapshot body is corrupt")]
    Corrupt,
}

fn mac(key: &[u8]) -> Result<HmacSha256, SnapshotError> {
    if key.len() < MIN_KEY_LEN {
        return Err(SnapshotError::WeakKey);
    }
    HmacSha256::new_from_slice(key).map_err(|_| SnapshotError::WeakKey)
}

/// A snapshot's parts, borrowed: the body of [`Snapshot`] holding them,
/// byte for byte (postcard writes a slice of references as it writes a
/// vector of the values), without a copy of every key to encode it.
#[derive(Serialize)]
struct Parts<'a> {
    created_at: UnixMillis,
    workspaces: &'a [WorkspacePolicy],
    tools: &'a [ToolPolicy],
    keys: &'a [&'a KeyPolicy],
}

/// postcard's output into a buffer that already holds the header (its own
/// `AllocVec` starts empty; `to_extend` pushes byte by byte).
struct Output(Vec<u8>);

impl postcard::ser_flavors::Flavor for Output {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Bytes of body to reserve per key before encoding (a typical key record
/// is 80 to 130 bytes): the buffer then rarely grows.
const BODY_BYTES_PER_KEY: usize = 128;

impl Snapshot {
    /// Encodes and authenticates.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, SnapshotError> {
        let keys: Vec<&KeyPolicy> = self.keys.iter().collect();
        Self::encode_parts(self.created_at, &self.workspaces, &self.tools, &keys, key)
    }

    /// Encodes and authenticates the snapshot of these parts, as
    /// [`Snapshot::encode`] would with them in a `Snapshot`, without owning
    /// the keys: an exporter lends the records it holds.
    pub fn encode_parts(
        created_at: UnixMillis,
        workspaces: &[WorkspacePolicy],
        tools: &[ToolPolicy],
        keys: &[&KeyPolicy],
        key: &[u8],
    ) -> Result<Vec<u8>, SnapshotError> {
        let mut m = mac(key)?;
        let parts = Parts { created_at, workspaces, tools, keys };
        let mut out = Vec::with_capacity(HEADER_LEN + keys.len().saturating_mul(BODY_BYTES_PER_KEY) + 4096);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        // The body's length, filled in once the body is written.
        out.extend_from_slice(&[0; 8]);
        let mut out = postcard::serialize_with_flavor(&parts, Output(out)).map_err(|_| SnapshotError::Corrupt)?;
        let body_len = (out.len() - HEADER_LEN) as u64;
        if let Some(len) = out.get_mut(HEADER_LEN - 8..HEADER_LEN) {
            len.copy_from_slice(&body_len.to_le_bytes());
        }
        m.update(&out);
        out.extend_from_slice(&m.finalize().into_bytes());
        Ok(out)
    }

    /// Checks the MAC, then decodes.
    pub fn decode(bytes: &[u8], key: &[u8]) -> Result<Self, SnapshotError> {
        let mut m = mac(key)?;
        let Frame { signed, body, tag } = frame(bytes)?;
        m.update(signed);
        m.verify_slice(tag).map_err(|_| SnapshotError::Tampered)?;
        decode_body(body)
    }
}

/// A snapshot's parts: what the MAC covers (header and body), the body,
/// and the MAC.
struct Frame<'a> {
    signed: &'a [u8],
    body: &'a [u8],
    tag: &'a [u8],
}

/// Splits the frame, checking magic, version and length.
fn frame(bytes: &[u8]) -> Result<Frame<'_>, SnapshotError> {
    let short = |expected: u64| SnapshotError::Truncated { expected, actual: bytes.len() as u64 };
    let Some((magic, rest)) = bytes.split_first_chunk::<6>() else {
        return if MAGIC.starts_with(bytes) {
            Err(short((HEADER_LEN + TAG_LEN) as u64))
        } else {
            Err(SnapshotError::NotASnapshot)
        };
    };
    if magic != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let Some((version, rest)) = rest.split_first_chunk::<2>() else {
        return Err(short((HEADER_LEN + TAG_LEN) as u64));
    };
    let Some((len, rest)) = rest.split_first_chunk::<8>() else {
        return Err(short((HEADER_LEN + TAG_LEN) as u64));
    };
    let version = u16::from_le_bytes(*version);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    let body_len = u64::from_le_bytes(*len);
    let expected = (HEADER_LEN as u64 + TAG_LEN as u64).saturating_add(body_len);
    if (bytes.len() as u64) < expected {
        return Err(short(expected));
    }
    if (bytes.len() as u64) > expected {
        return Err(SnapshotError::Tampered);
    }
    // Exactly `body_len` bytes and the tag remain: both splits succeed.
    let body_len = usize::try_from(body_len).map_err(|_| short(expected))?;
    let (body, tag) = rest.split_at_checked(body_len).ok_or_else(|| short(expected))?;
    let signed = bytes.split_at_checked(HEADER_LEN + body_len).map_or(bytes, |(signed, _)| signed);
    Ok(Frame { signed, body, tag })
}

fn decode_body(body: &[u8]) -> Result<Snapshot, SnapshotError> {
    match postcard::take_from_bytes::<Snapshot>(body) {
        Ok((snap, [])) if snap.is_well_formed() => Ok(snap),
        _ => Err(SnapshotError::Corrupt),
    }
}

impl Snapshot {
    /// Whether every policy holds values the engine's own validation would
    /// accept. An authentic snapshot from a buggy exporter is refused rather
    /// than verified with, say, a zero-length rate window.
    fn is_well_formed(&self) -> bool {
        let limits_ok = |l: &Limits| l.validate().is_ok();
        let rules_ok = |r: &IpRules| r.0.iter().all(|rule| ip::is_canonical(&rule.net()));
        self.workspaces.iter().all(|w| limits_ok(&w.default_limits) && rules_ok(&w.ip_rules))
            && self.tools.iter().all(|t| limits_ok(&t.limits))
            && self.keys.iter().all(|k| {
                limits_ok(&k.limits) && k.tool_limits.iter().all(|(_, l)| limits_ok(l)) && rules_ok(&k.ip_rules)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::WorkspaceId;
    use crate::ip::IpRules;
    use crate::limits::Limits;
    use crate::token::Prefix;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sample() -> Snapshot {
        Snapshot {
            created_at: UnixMillis(1_709_287_200_000),
            workspaces: vec![WorkspacePolicy {
                id: WorkspaceId([9; 16]),
                name: "acme".into(),
                api_access: true,
                prefix: Prefix::default_live(),
                ip_rules: IpRules::none(),
                default_limits: Limits::default(),
            }],
            tools: vec![],
            keys: vec![],
        }
    }

    #[test]
    fn round_trip() {
        let bytes = sample().encode(KEY).unwrap();
        assert_eq!(&bytes[..6], b"KWSNAP");
        assert_eq!(Snapshot::decode(&bytes, KEY), Ok(sample()));
    }

    /// The body is postcard of the `Snapshot` itself, keys included, and the
    /// header gives its length: lending the keys changes no byte.
    #[test]
    fn the_body_is_the_snapshot_in_postcard() {
        let mut snapshot = sample();
        for i in 0..3u8 {
            snapshot.keys.push(KeyPolicy {
                id: crate::id::KeyId([i; 16]),
                workspace: WorkspaceId([9; 16]),
                hash: crate::token::KeyHash([i; 32]),
                name: format!("key {i}"),
                revoked_at: None,
                expires_at: Some(UnixMillis(1_800_000_000_000)),
                disabled: i == 2,
                permissions: vec![crate::permission::Permission::parse("billing:*").unwrap()],
                ip_rules: IpRules::none(),
                limits: Limits::default(),
                tool_limits: vec![],
                tools: vec!["gl_ping".into()],
                meta: String::new(),
                imported: false,
            });
        }
        let bytes = snapshot.encode(KEY).unwrap();
        let body = postcard::to_allocvec(&snapshot).unwrap();
        assert_eq!(&bytes[8..16], &(body.len() as u64).to_le_bytes());
        assert_eq!(&bytes[16..bytes.len() - 32], &body[..]);
        let keys: Vec<&KeyPolicy> = snapshot.keys.iter().collect();
        let parts =
            Snapshot::encode_parts(snapshot.created_at, &snapshot.workspaces, &snapshot.tools, &keys, KEY).unwrap();
        assert_eq!(parts, bytes);
        assert_eq!(Snapshot::decode(&bytes, KEY), Ok(snapshot));
    }

    #[test]
    fn refusals() {
        let bytes = sample().encode(KEY).unwrap();
        assert_eq!(sample().encode(b"short"), Err(SnapshotError::WeakKey));
        assert_eq!(Snapshot::decode(&bytes, b"another key of 32 bytes........."), Err(SnapshotError::Tampered));
        let n = bytes.len() as u64;
        assert_eq!(
            Snapshot::decode(&bytes[..bytes.len() - 1], KEY),
            Err(SnapshotError::Truncated { expected: n, actual: n - 1 })
        );
        assert_eq!(Snapshot::decode(&bytes[..10], KEY), Err(SnapshotError::Truncated { expected: 48, actual: 10 }));
        assert_eq!(Snapshot::decode(b"KW", KEY), Err(SnapshotError::Truncated { expected: 48, actual: 2 }));
        assert_eq!(Snapshot::decode(b"PK\x03\x04 zip file", KEY), Err(SnapshotError::NotASnapshot));
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(Snapshot::decode(&flipped, KEY), Err(SnapshotError::Tampered));
        let mut v2 = bytes.clone();
        v2[6] = 2;
        assert_eq!(Snapshot::decode(&v2, KEY), Err(SnapshotError::Version(2)));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Snapshot::decode(&longer, KEY), Err(SnapshotError::Tampered));
    }

    /// Found by the `snapshot` fuzz target: an authentic snapshot with a zero
    /// rate window made verification divide by zero. Such policies are refused.
    #[test]
    fn invalid_policies_are_corrupt() {
        let mut zero = sample();
        zero.workspaces[0].default_limits.rates.push(crate::limits::RateLimit {
            name: "default".into(),
            limit: 1,
            window_ms: 0,
            auto_apply: true,
        });
        assert_eq!(Snapshot::decode(&zero.encode(KEY).unwrap(), KEY), Err(SnapshotError::Corrupt));
        let mut host_bits = sample();
        host_bits.workspaces[0].ip_rules.0.push(crate::ip::IpRule::Deny("10.0.0.1/8".parse().unwrap()));
        assert_eq!(Snapshot::decode(&host_bits.encode(KEY).unwrap(), KEY), Err(SnapshotError::Corrupt));
    }
}
