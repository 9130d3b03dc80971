//! The verdict a decision returns.

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::id::{KeyId, WorkspaceId};
use crate::limits::{LeaseId, LeaseScope, Quota};

/// The answer to one verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// What was decided.
    pub code: Code,
    /// The key, once it was found.
    pub key_id: Option<KeyId>,
    /// The key's workspace, once the key was found.
    pub workspace_id: Option<WorkspaceId>,
    /// Milliseconds until retrying can succeed, for the 429 codes that know it.
    pub retry_after_ms: Option<u64>,
    /// Quota figures after this call (or at refusal).
    pub quota: Quota,
    /// Concurrency leases taken by this call, to be released when the job ends.
    pub leases: Vec<(LeaseScope, LeaseId)>,
}

impl Verdict {
    /// A verdict with only a code (no key known).
    pub fn bare(code: Code) -> Self {
        Self {
            code,
            key_id: None,
            workspace_id: None,
            retry_after_ms: None,
            quota: Quota::default(),
            leases: Vec::new(),
        }
    }

    /// Whether the request may pass.
    pub fn is_valid(&self) -> bool {
        self.code.is_valid()
    }
}
