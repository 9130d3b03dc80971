//! The loaded snapshot, indexed for the edge, with its counters.
//!
//! The same steps as keyward-core's [`LocalVerifier`] (the tests below
//! check the two agree call for call): keyward-core's [`lookup`] over this
//! index, then its [`decide`]. What differs is the index, which `verify` spent a fifth of its
//! time in: `LocalVerifier` hashes a token's SHA-256, its key's workspace id
//! and its key number with SipHash, and allocates to look a tool up. Here
//! the maps hash ids by their first 8 bytes, and counters sit in a vector by
//! key number.
//!
//! Hashing an id by its own bytes cannot be turned against the tables: their
//! contents come from the authenticated snapshot, and a lookup for a token is
//! keyed by its SHA-256, which a client cannot steer (nor would steering
//! where a probe starts lengthen it). Tool names come from requests, so that
//! map keeps the standard hasher.
//!
//! [`LocalVerifier`]: keyward_core::LocalVerifier

use core::hash::{BuildHasherDefault, Hasher};
use std::collections::HashMap;

use keyward_core::decision::{KeyIndex, decide_without_workspace, lookup};
use keyward_core::limits::{Quota, UsageState};
use keyward_core::snapshot::SnapshotError;
use keyward_core::{Call, Code, KeyHash, Request, Snapshot, ToolLookup, Usage, Verdict, WorkspaceId, decide};

/// Hashes a digest or random id by its first 8 bytes.
#[derive(Default)]
struct Prefix(u64);

impl Hasher for Prefix {
    fn finish(&self) -> u64 {
        // Spreads the bits over the whole word: the table takes its buckets
        // from the low bits and its tags from the high ones.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        // An array hashes as its length (`write_usize`), then its bytes.
        let mut word = [0u8; 8];
        for (w, b) in word.iter_mut().zip(bytes) {
            *w = *b;
        }
        self.0 = self.0.rotate_left(32) ^ u64::from_le_bytes(word);
    }

    fn write_usize(&mut self, _: usize) {}
}

type ById<K, V> = HashMap<K, V, BuildHasherDefault<Prefix>>;

/// The first 8 bytes of a hash.
fn prefix(hash: &[u8; 32]) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *hash;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// A key's counters: its own, and per tool number (the tool's limits, the
/// key×tool limits). `LocalVerifier` keys them by tool name; a key only
/// reaches the tools of its workspace, where names and numbers are one to one.
#[derive(Default)]
struct KeyUsage {
    key: UsageState,
    tools: ById<u32, (UsageState, UsageState)>,
}

/// What a verification found, besides the verdict's code and figures.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decided {
    pub(crate) code: Code,
    /// The key's position in the snapshot, once it was found.
    pub(crate) key: Option<usize>,
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) quota: Quota,
}

impl Decided {
    fn bare(code: Code) -> Self {
        Self { code, key: None, retry_after_ms: None, quota: Quota::default() }
    }

    /// The verdict on the key at position `key`.
    fn of(key: usize, v: Verdict) -> Self {
        Self { code: v.code, key: Some(key), retry_after_ms: v.retry_after_ms, quota: v.quota }
    }
}

/// A snapshot, its indexes and the counters of its keys.
pub(crate) struct Index {
    snapshot: Snapshot,
    /// Key numbers by the first 8 bytes of their hash; a hit is confirmed
    /// against the whole hash. Shorter entries than the 32-byte hash keep
    /// more of the table in cache.
    by_hash: ById<u64, u32>,
    workspaces: ById<WorkspaceId, u32>,
    /// Tools by workspace, then by name.
    tools: ById<WorkspaceId, HashMap<String, u32>>,
    any_imported: bool,
    /// By key number: 1 + the key's place in `counters`, or 0 before its
    /// first verification.
    usage: Vec<u32>,
    /// Counters in the order keys were first verified: one block, rather
    /// than one allocation per key, keeps a call's memory together.
    counters: Vec<KeyUsage>,
}

impl Index {
    /// Authenticates, decodes and indexes a snapshot.
    pub(crate) fn load(bytes: &[u8], snapshot_key: &[u8]) -> Result<Self, SnapshotError> {
        Ok(Self::new(Snapshot::decode(bytes, snapshot_key)?))
    }

    /// Indexes a decoded snapshot.
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        // Snapshot positions fit in u32: wasm32 cannot hold 2^32 keys.
        let mut by_hash = ById::with_capacity_and_hasher(snapshot.keys.len(), Default::default());
        for (i, k) in snapshot.keys.iter().enumerate() {
            // Keys with equal prefixes (one in 2^64 pairs) keep the first;
            // `by_hash` then finds the others by scanning.
            by_hash.entry(prefix(&k.hash.0)).or_insert(i as u32);
        }
        let workspaces = snapshot.workspaces.iter().enumerate().map(|(i, w)| (w.id, i as u32)).collect();
        let mut tools: ById<WorkspaceId, HashMap<String, u32>> = ById::default();
        for (i, t) in snapshot.tools.iter().enumerate() {
            tools.entry(t.workspace).or_default().insert(t.name.clone(), i as u32);
        }
        let any_imported = snapshot.keys.iter().any(|k| k.imported);
        let usage = vec![0; snapshot.keys.len()];
        Self { snapshot, by_hash, workspaces, tools, any_imported, usage, counters: Vec::new() }
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Verifies a raw token for a request, charging this index's counters:
    /// `LocalVerifier::verify`'s steps.
    pub(crate) fn verify(&mut self, raw: &str, req: &Request<'_>) -> Decided {
        let idx = match lookup(self, raw) {
            Ok(i) => i,
            Err(code) => return Decided::bare(code),
        };
        // The positions in the indexes are the snapshot's own, so none of the
        // `get`s below misses; if one did, it would refuse, not panic.
        let Some(key) = self.snapshot.keys.get(idx) else { return Decided::bare(Code::NotFound) };
        let mut v = Verdict::bare(Code::Valid);
        let Some(workspace) =
            self.workspaces.get(&key.workspace).and_then(|&w| self.snapshot.workspaces.get(w as usize))
        else {
            decide_without_workspace(&mut v, key);
            return Decided::of(idx, v);
        };
        let found = req.tool.and_then(|name| {
            let i = *self.tools.get(&key.workspace)?.get(name)?;
            Some((i, self.snapshot.tools.get(i as usize)?))
        });
        // `number` is the found tool's; without one it is never read.
        let (tool, number) = match (req.tool, found) {
            (None, _) => (ToolLookup::NotRequested, 0),
            (Some(_), None) => (ToolLookup::Unknown, 0),
            (Some(_), Some((i, t))) => (ToolLookup::Found(t), i),
        };
        let Some(slot) = self.usage.get_mut(idx) else { return Decided::bare(Code::NotFound) };
        if *slot == 0 {
            self.counters.push(KeyUsage::default());
            // At most one entry per key, and key numbers fit in u32.
            *slot = self.counters.len() as u32;
        }
        let Some(KeyUsage { key: own, tools }) = self.counters.get_mut((*slot as usize).saturating_sub(1)) else {
            return Decided::bare(Code::NotFound);
        };
        let call = Call { key, workspace, tool, request: req };
        // `Usage::of` asks for a tool's counters only when the tool was
        // found, and then by its name: this index keeps them by number.
        let usage = Usage::of(&call, own, |_| tools.entry(number).or_default());
        decide(&mut v, &call, usage);
        Decided::of(idx, v)
    }
}

/// Keys by number. Format and lookup are keyward-core's [`lookup`], with
/// `LocalVerifier`'s rules; only the search differs.
impl KeyIndex for Index {
    type Key = usize;

    fn by_hash(&self, hash: &KeyHash) -> Option<usize> {
        let i = *self.by_hash.get(&prefix(&hash.0))? as usize;
        // Compared as arrays, as a map keyed by the whole hash compares its
        // keys (`LocalVerifier`'s does): `KeyHash`'s own `==` is
        // constant-time, which nothing here needs (the digest of a secret is
        // not one) and which costs a few hundred ns in WebAssembly.
        if self.snapshot.keys.get(i).is_some_and(|k| k.hash.0 == hash.0) {
            return Some(i);
        }
        // Another key with the same first 8 bytes (see `new`).
        self.snapshot.keys.iter().position(|k| k.hash.0 == hash.0)
    }

    fn imported(&self, &key: &usize) -> bool {
        self.snapshot.keys.get(key).is_some_and(|k| k.imported)
    }

    fn any_imported(&self) -> bool {
        self.any_imported
    }
}

#[cfg(test)]
mod tests {
    use keyward_core::limits::Cost;
    use keyward_core::{LocalVerifier, ToolPolicy, UnixMillis};
    use keyward_wasm_fixtures as fx;

    use super::*;

    /// Runs the same calls through this index and keyward-core's
    /// `LocalVerifier` and requires the same verdicts, counters included.
    #[test]
    fn agrees_with_local_verifier() {
        let f = fx::build(20);
        let mut snapshot = f.snapshot.clone();
        // Situations the fixture lacks: a key whose workspace is not in the
        // snapshot, a key not imported whose hash is a foreign token's, and
        // key×tool limits on two tools of one key.
        let n = snapshot.keys.len();
        snapshot.keys[n - 1].workspace = WorkspaceId([7; 16]);
        snapshot.keys[n - 2].hash = KeyHash::of("foreign-but-not-imported");
        let key_tool = snapshot.keys.iter_mut().find(|k| k.id == f.key_id("key_tool")).unwrap();
        key_tool.tool_limits.push(("slow_tool".into(), keyward_core::Limits { daily: Some(1), ..Default::default() }));
        let mut index = Index::new(snapshot.clone());
        let mut local = LocalVerifier::new(snapshot.clone());
        let mut tokens: Vec<String> = f.tokens.iter().map(|(_, t)| t.clone()).collect();
        tokens.extend(f.bulk_tokens.iter().take(3).cloned());
        tokens.extend(f.bulk_tokens.iter().skip(18).cloned());
        tokens.extend(["kw_live_x", "", "legacy-key-9999999999", "foreign-but-not-imported"].map(String::from));
        let tools = [None, Some("gl_ping"), Some("legacy"), Some("admin_tool"), Some("slow_tool"), Some("nope")];
        let ips = [None, Some("10.1.2.3".parse().unwrap()), Some("203.0.113.9".parse().unwrap())];
        let mut seen = Vec::new();
        let mut compare = |token: &str, req: &Request<'_>, what: &str| {
            let mine = index.verify(token, req);
            let checked = local.verify(token, req);
            let theirs = Decided {
                code: checked.verdict.code,
                key: checked.key.map(|k| snapshot.keys.iter().position(|o| o.id == k.id).unwrap()),
                retry_after_ms: checked.verdict.retry_after_ms,
                quota: checked.verdict.quota,
            };
            assert_eq!(mine, theirs, "{what}");
            if !seen.contains(&mine.code) {
                seen.push(mine.code);
            }
        };
        // One key's counters per tool are apart: slow_tool's cooldown and
        // key_tool's daily gl_ping do not see the other tool's calls.
        for (name, tool, later) in [
            ("valid", "slow_tool", 0),
            ("valid", "gl_ping", 0),
            ("valid", "slow_tool", 10),
            ("valid", "gl_ping", 10),
            ("key_tool", "slow_tool", 0),
            ("key_tool", "gl_ping", 0),
            ("key_tool", "slow_tool", 2_000),
            ("key_tool", "gl_ping", 2_000),
        ] {
            let req = Request { tool: Some(tool), now: UnixMillis(fx::CREATED_AT + later), ..Request::default() };
            compare(f.token(name), &req, &format!("{name} {tool} +{later}"));
        }
        for step in 0..60u64 {
            // Several calls at a few times, so limits fill and refill.
            let now = UnixMillis(fx::CREATED_AT + step / 4 * 700);
            for (t, token) in tokens.iter().enumerate().flat_map(|c| [c; 3]) {
                let tool = tools[(t + step as usize) % tools.len()];
                let permissions: &[&str] = if step % 5 == 0 { &["keys:read"] } else { &[] };
                let req = Request {
                    ip: ips[(t + step as usize / 3) % ips.len()],
                    tool,
                    permissions,
                    permission_query: None,
                    cost: Cost { credits: step % 7, rates: &[] },
                    now,
                };
                compare(token, &req, &format!("step {step}, token {t} ({token:?}), tool {tool:?}"));
            }
        }
        // Every code a snapshot can give, so every path was compared.
        let mut missing: Vec<&str> = Code::ALL.iter().filter(|c| !seen.contains(c)).map(|c| c.as_str()).collect();
        missing.sort_unstable();
        assert_eq!(missing, ["INVALID_SIGNATURE", "NONCE_REUSED", "STORE_UNAVAILABLE"]);
    }

    #[test]
    fn indexes_tools_by_workspace() {
        let f = fx::build(0);
        let index = Index::new(f.snapshot.clone());
        let tool = |ws: &str, name: &str| -> Option<&ToolPolicy> {
            let i = *index.tools.get(&f.workspace_id(ws))?.get(name)?;
            Some(&index.snapshot.tools[i as usize])
        };
        assert_eq!(tool("acme", "legacy").map(|t| t.enabled), Some(false));
        assert!(tool("acme", "nope").is_none());
        assert!(tool("office", "gl_ping").is_some());
        assert!(tool("office", "legacy").is_none());
    }
}
