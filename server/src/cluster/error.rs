//! Errors of the cluster layer.

/// What the cluster layer reports upward; the API maps each kind to one
/// gRPC code in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such table in the catalogue (or not yet running on this node).
    #[error("table not found")]
    TableNotFound,
    /// A table of that name exists already (the Tables API's Create).
    #[error("table already exists")]
    TableExists,
    /// A name no table may have (`table_name::check`); the message is the
    /// client's.
    #[error("{0}")]
    InvalidTableName(&'static str),
    /// A retryable condition: no leader yet, leader changed, no quorum,
    /// timeout inside the cluster, shutting down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The leader's disk is below its reserve; the message names the disk.
    #[error("{0}")]
    NoSpace(String),
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// A command stream to restore is not in the command-stream format.
    #[error("malformed command stream: {0}")]
    MalformedStream(String),
    /// Starting the node failed (disk, address, configuration).
    #[error("startup: {0}")]
    Startup(String),
}

impl Error {
    /// Whether the client may retry (behaviour.md §2.1: `Unavailable`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
