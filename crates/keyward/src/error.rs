//! The engine's one error type.

use keyward_core::Code;

/// Everything an engine call can fail with. Storage errors are wrapped, never
/// leaked: callers do not match on redb types.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another `Engine` in this one) holds the database.
    #[error("database {0} is in use by another process (is `keyward serve` running?)")]
    InUse(String),
    /// The file is not a keyward database, or it is damaged.
    #[error("database is corrupt or not a keyward database: {0}")]
    Corrupt(String),
    /// Written by a newer keyward.
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade keyward")]
    SchemaTooNew {
        /// Version in the file.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// An I/O error opening or creating the file.
    #[error("I/O error: {0}")]
    Io(String),
    /// A storage error while reading or writing.
    #[error("storage error: {0}")]
    Storage(String),
    /// No such workspace, key or tool (or not visible to the caller).
    #[error("{kind} not found: {id}")]
    NotFound {
        /// `workspace`, `key`, `tool` or `session`.
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// A tool with that name already exists in the workspace.
    #[error("{kind} already exists: {id}")]
    AlreadyExists {
        /// What kind of thing.
        kind: &'static str,
        /// Its id or name.
        id: String,
    },
    /// The change does not apply to the thing as it is now (for example a
    /// key that was already rotated); nothing was changed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A field of the request is invalid; nothing was changed.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The acting key lacks a permission it tried to use or hand out.
    #[error("insufficient permissions: {0}")]
    InsufficientPermissions(String),
    /// The workspace plan has no API access.
    #[error("workspace plan has no API access")]
    PlanInactive,
    /// Signing identities need a master key (`EngineBuilder::master_key`).
    #[error("no master key configured: signing identities cannot be created or checked")]
    NoMasterKey,
    /// Snapshot export needs a snapshot key (`EngineBuilder::snapshot_key`).
    #[error("no snapshot key configured")]
    NoSnapshotKey,
    /// A signed authentication was refused with this verdict code.
    #[error("authentication refused: {0}")]
    Refused(Code),
    /// Some keys of a batch ([`Engine::create_keys`](crate::Engine::create_keys))
    /// were refused; nothing of the batch was written.
    #[error("{}", batch_message(*.total, .refused))]
    Batch {
        /// Keys in the batch.
        total: usize,
        /// Each refused key's index in the batch and why, in order.
        refused: Vec<(usize, Error)>,
    },
}

fn batch_message(total: usize, refused: &[(usize, Error)]) -> String {
    let mut m = format!("{} of {total} keys refused, none written", refused.len());
    if let Some((i, e)) = refused.first() {
        m.push_str(&format!("; key {i}: {e}"));
    }
    m
}

impl Error {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }

    pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Self::NotFound { kind, id: id.to_string() }
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(redb::StorageError, redb::TransactionError, redb::TableError, redb::CommitError);

impl From<keyward_core::policy::RecordError> for Error {
    fn from(e: keyward_core::policy::RecordError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
