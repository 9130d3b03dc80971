//! A self-contained verifier over a [`Snapshot`], with counters in memory.
//!
//! This is what runs at the edge: [`LocalVerifier`] loads a snapshot and
//! answers [`LocalVerifier::verify`] with a [`Checked`]. Counters live in
//! this value only: two isolates each enforce their own limits.

use std::collections::HashMap;

use crate::code::Code;
use crate::decision::{self, Call, KeyIndex, Request, ToolLookup, Usage};
use crate::id::WorkspaceId;
use crate::limits::UsageState;
use crate::policy::{KeyPolicy, ToolPolicy};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::token::KeyHash;
use crate::verdict::Verdict;

#[derive(Default)]
struct KeyUsage {
    key: UsageState,
    /// Per tool: (tool limits, key×tool limits).
    tools: HashMap<String, (UsageState, UsageState)>,
}

/// Verifies tokens against a snapshot.
pub struct LocalVerifier {
    snapshot: Snapshot,
    // Indices into `snapshot`'s lists, built once in `new`. They are read
    // with `get`, so even a stale one would answer "not found", not panic.
    by_hash: HashMap<[u8; 32], usize>,
    workspaces: HashMap<WorkspaceId, usize>,
    tools: HashMap<(WorkspaceId, String), usize>,
    any_imported: bool,
    usage: HashMap<usize, KeyUsage>,
}

/// Outcome of a local verification: the verdict and, when found, the key.
#[derive(Debug)]
pub struct Checked<'a> {
    /// The verdict.
    pub verdict: Verdict,
    /// The key, when it was found.
    pub key: Option<&'a KeyPolicy>,
}

impl LocalVerifier {
    /// Authenticates and indexes a snapshot.
    pub fn load(bytes: &[u8], snapshot_key: &[u8]) -> Result<Self, SnapshotError> {
        Ok(Self::new(Snapshot::decode(bytes, snapshot_key)?))
    }

    /// Indexes an already decoded snapshot.
    pub fn new(snapshot: Snapshot) -> Self {
        let by_hash = snapshot.keys.iter().enumerate().map(|(i, k)| (k.hash.0, i)).collect();
        let workspaces = snapshot.workspaces.iter().enumerate().map(|(i, w)| (w.id, i)).collect();
        let tools = snapshot.tools.iter().enumerate().map(|(i, t)| ((t.workspace, t.name.clone()), i)).collect();
        let any_imported = snapshot.keys.iter().any(|k| k.imported);
        Self { snapshot, by_hash, workspaces, tools, any_imported, usage: HashMap::new() }
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Finds the key a raw token names, or the verdict that refuses it before
    /// lookup (`MALFORMED`) or at lookup (`NOT_FOUND`): [`decision::lookup`].
    pub fn lookup(&self, raw: &str) -> Result<usize, Code> {
        decision::lookup(self, raw)
    }

    /// Verifies a raw token for a request, charging this verifier's counters.
    pub fn verify(&mut self, raw: &str, req: &Request<'_>) -> Checked<'_> {
        let idx = match self.lookup(raw) {
            Ok(i) => i,
            Err(code) => return Checked { verdict: Verdict::bare(code), key: None },
        };
        // `lookup` only returns indices of `snapshot.keys`, so this never misses.
        let Some(key) = self.snapshot.keys.get(idx) else {
            return Checked { verdict: Verdict::bare(Code::NotFound), key: None };
        };
        let mut verdict = Verdict::bare(Code::Valid);
        let Some(workspace) = self.workspaces.get(&key.workspace).and_then(|&w| self.snapshot.workspaces.get(w)) else {
            decision::decide_without_workspace(&mut verdict, key);
            return Checked { verdict, key: Some(key) };
        };
        let tool = find_tool(&self.tools, &self.snapshot.tools, key.workspace, req.tool);
        let call = Call { key, workspace, tool, request: req };
        let KeyUsage { key: own, tools } = self.usage.entry(idx).or_default();
        let usage = Usage::of(&call, own, |name| tools.entry(name.to_owned()).or_default());
        decision::decide(&mut verdict, &call, usage);
        Checked { verdict, key: Some(key) }
    }

    /// Number of keys in the snapshot.
    pub fn key_count(&self) -> usize {
        self.snapshot.keys.len()
    }
}

/// Keys by position in the snapshot.
impl KeyIndex for LocalVerifier {
    type Key = usize;

    fn by_hash(&self, hash: &KeyHash) -> Option<usize> {
        self.by_hash.get(&hash.0).copied()
    }

    fn imported(&self, &key: &usize) -> bool {
        self.snapshot.keys.get(key).is_some_and(|k| k.imported)
    }

    fn any_imported(&self) -> bool {
        self.any_imported
    }
}

fn find_tool<'a>(
    index: &HashMap<(WorkspaceId, String), usize>,
    tools: &'a [ToolPolicy],
    ws: WorkspaceId,
    name: Option<&str>,
) -> ToolLookup<'a> {
    let Some(name) = name else { return ToolLookup::NotRequested };
    match index.get(&(ws, name.to_owned())).and_then(|&i| tools.get(i)) {
        Some(tool) => ToolLookup::Found(tool),
        None => ToolLookup::Unknown,
    }
}
