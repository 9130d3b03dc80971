//! Concurrency leases: a job in flight, its id, and which scope's counters
//! it was taken from.

use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

/// Identifies one concurrency lease within a key's usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub u64);

/// A job in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// When it frees itself if not released.
    pub expires_at: UnixMillis,
}

/// Which counters a concurrency lease was taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaseScope {
    /// The key's own limits.
    Key,
    /// The tool's limits for this key.
    Tool,
    /// The key's limits for this tool.
    KeyTool,
}
