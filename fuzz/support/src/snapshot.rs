//! The `snapshot` target: the snapshot frame and body decoder, and stored
//! records.
//!
//! keyward-core offers no way to decode a snapshot without checking its MAC,
//! and this target needs none: it knows the key, so it re-seals mutated
//! frames with a correct tag to reach the body decoder through
//! [`Snapshot::decode`] itself.

use std::net::{IpAddr, Ipv4Addr};

use hmac::{KeyInit, Mac};
use keyward_core::limits::{Cost, Scope, UsageState, charge, peek};
use keyward_core::policy::{decode_record, encode_record};
use keyward_core::signature::NonceState;
use keyward_core::snapshot::{self, SnapshotError};
use keyward_core::{
    Call, Code, KeyPolicy, Limits, LocalVerifier, Request, Snapshot, ToolLookup, ToolPolicy, UnixMillis, Usage,
    Verdict, WorkspacePolicy, decide,
};
use sha2::Sha256;

use crate::seeds::sample_workspace;
use crate::{FUZZ_EPOCH, FUZZ_SNAPSHOT_KEY};

/// Keys, tools and limits exercised per decoded snapshot, at most.
const MAX_EXERCISED: usize = 8;

/// First bytes of every snapshot (the frame `crates/core/src/snapshot.rs`
/// documents: magic, u16 version, u64 body length, body, HMAC-SHA256 tag).
const MAGIC: &[u8; 6] = b"KWSNAP";
const HEADER_LEN: usize = 16;
const TAG_LEN: usize = 32;

/// A key other than [`FUZZ_SNAPSHOT_KEY`].
const OTHER_KEY: &[u8; 32] = b"not the key the snapshot is for.";

/// `frame_without_tag` followed by its HMAC-SHA256 under [`FUZZ_SNAPSHOT_KEY`].
pub(crate) fn seal(frame_without_tag: &[u8]) -> Vec<u8> {
    // Invariant: HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(FUZZ_SNAPSHOT_KEY).expect("HMAC takes any key length");
    m.update(frame_without_tag);
    let mut out = frame_without_tag.to_vec();
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// A snapshot whose body is `body`, framed and authenticated correctly.
fn frame_body(body: &[u8]) -> Vec<u8> {
    let mut head = Vec::with_capacity(HEADER_LEN + body.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&snapshot::FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    head.extend_from_slice(body);
    seal(&head)
}

/// The body length a frame's header declares, if it has a header.
fn declared_body_len(frame: &[u8]) -> Option<u64> {
    let field: [u8; 8] = frame.get(8..HEADER_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(field))
}

/// Charges a fresh counter state a few times: decoded limits must be usable.
fn exercise_limits(limits: &Limits, now: UnixMillis) {
    let _ = limits.validate();
    let mut state = UsageState::default();
    for cost in [Cost { credits: 0, rates: &[] }, Cost::default(), Cost::default()] {
        let _ = peek(limits, &state, now, &cost);
        let _ = charge(&mut [Scope { limits, state: &mut state }], now, &cost);
    }
}

fn exercise_key(key: &KeyPolicy, ws: &WorkspacePolicy, tool: Option<&ToolPolicy>, now: UnixMillis) {
    let _ = key.status(now);
    let req = Request {
        ip: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
        tool: tool.map(|t| t.name.as_str()),
        permissions: &["keys:read"],
        now,
        ..Request::default()
    };
    let lookup = tool.map_or(ToolLookup::NotRequested, ToolLookup::Found);
    let (mut k, mut t, mut kt) = (UsageState::default(), UsageState::default(), UsageState::default());
    for _ in 0..2 {
        let usage = Usage { key: &mut k, tool: Some(&mut t), key_tool: Some(&mut kt) };
        let mut v = Verdict::bare(Code::Valid);
        decide(&mut v, &Call { key, workspace: ws, tool: lookup, request: &req }, usage);
        assert_eq!(v.key_id, Some(key.id));
    }
}

/// Decisions over decoded data must not panic: SPEC §7 wants a clear error,
/// never a crash, for a corrupted or foreign file.
fn exercise_snapshot(s: &Snapshot) {
    let verifier = LocalVerifier::new(s.clone());
    assert_eq!(verifier.key_count(), s.keys.len());
    for key in s.keys.iter().take(MAX_EXERCISED) {
        exercise_limits(&key.limits, s.created_at);
        if let Some(ws) = s.workspaces.iter().find(|w| w.id == key.workspace) {
            let tool = s.tools.iter().find(|t| t.workspace == key.workspace);
            exercise_key(key, ws, tool, s.created_at);
        }
    }
    for ws in s.workspaces.iter().take(MAX_EXERCISED) {
        exercise_limits(&ws.default_limits, s.created_at);
    }
    for tool in s.tools.iter().take(MAX_EXERCISED) {
        exercise_limits(&tool.limits, s.created_at);
    }
}

fn check_snapshot_round_trip(s: &Snapshot) {
    let encoded = s.encode(FUZZ_SNAPSHOT_KEY);
    let Ok(encoded) = encoded else { panic!("a decoded snapshot does not encode: {encoded:?}") };
    assert_eq!(Snapshot::decode(&encoded, FUZZ_SNAPSHOT_KEY).as_ref(), Ok(s));
    // Authenticated: another key, a changed body byte or a changed tag is refused.
    assert_eq!(Snapshot::decode(&encoded, OTHER_KEY), Err(SnapshotError::Tampered));
    for at in [HEADER_LEN, encoded.len() - 1] {
        let mut changed = encoded.clone();
        changed[at] ^= 1;
        assert_eq!(Snapshot::decode(&changed, FUZZ_SNAPSHOT_KEY), Err(SnapshotError::Tampered), "byte {at} changed");
    }
}

fn check_record<T>(bytes: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let value = decode_record::<T>(bytes).ok()?;
    assert_eq!(decode_record::<T>(&encode_record(&value)).as_ref(), Ok(&value));
    Some(value)
}

/// `snapshot` target: the snapshot frame and body decoder, and stored records.
///
/// The input is tried as a whole snapshot (authenticated with
/// [`FUZZ_SNAPSHOT_KEY`]), as the same frame with its tag recomputed, and its
/// body (or the whole input, if it is not a frame) is re-framed with a correct
/// MAC, so mutations reach the body decoder. A frame that authenticates
/// carries the MAC of every byte before its tag; a correctly sealed frame is
/// refused as tampered only for bytes past its declared length, and one built
/// around a body only as corrupt; every decoded snapshot re-encodes to itself
/// and refuses another key or a changed byte; every decoded record
/// `encode_record`s back to itself. Decoded policies are then run through
/// `decide` and `charge`, which must not panic.
pub fn snapshot(data: &[u8]) {
    if let Ok(s) = Snapshot::decode(data, FUZZ_SNAPSHOT_KEY) {
        assert_eq!(seal(&data[..data.len() - TAG_LEN]), data, "the tag covers every byte before it");
        check_snapshot_round_trip(&s);
        exercise_snapshot(&s);
    }
    // The frame with its tag recomputed.
    if data.len() >= TAG_LEN {
        let resealed = seal(&data[..data.len() - TAG_LEN]);
        match Snapshot::decode(&resealed, FUZZ_SNAPSHOT_KEY) {
            Ok(s) => check_snapshot_round_trip(&s),
            Err(SnapshotError::Tampered) => {
                let declared = declared_body_len(&resealed).map(|n| n.saturating_add((HEADER_LEN + TAG_LEN) as u64));
                assert!(declared.is_some_and(|n| n < resealed.len() as u64), "a sealed frame refused as tampered");
            }
            Err(_) => {}
        }
    }
    // The body, re-framed.
    let body = if data.len() >= HEADER_LEN + TAG_LEN && data.starts_with(MAGIC) {
        &data[HEADER_LEN..data.len() - TAG_LEN]
    } else {
        data
    };
    let framed = frame_body(body);
    let decoded = Snapshot::decode(&framed, FUZZ_SNAPSHOT_KEY);
    assert!(matches!(decoded, Ok(_) | Err(SnapshotError::Corrupt)), "a well-framed body refused with {decoded:?}");
    if let Ok(s) = decoded {
        check_snapshot_round_trip(&s);
        exercise_snapshot(&s);
    }

    // Stored records.
    let now = UnixMillis(FUZZ_EPOCH);
    let workspace = check_record::<WorkspacePolicy>(data);
    let tool = check_record::<ToolPolicy>(data);
    if let Some(key) = check_record::<KeyPolicy>(data) {
        exercise_limits(&key.limits, now);
        let ws = workspace.unwrap_or_else(|| sample_workspace(key.workspace));
        exercise_key(&key, &ws, tool.as_ref().filter(|t| t.workspace == key.workspace), now);
    } else {
        if let Some(ws) = &workspace {
            exercise_limits(&ws.default_limits, now);
        }
        if let Some(t) = &tool {
            exercise_limits(&t.limits, now);
        }
    }
    let _ = check_record::<Limits>(data);
    let _ = check_record::<UsageState>(data);
    let _ = check_record::<NonceState>(data);
}
