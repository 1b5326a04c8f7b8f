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
    /// A member change the cluster refuses (`node/membership.rs`).
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// Starting the node failed (disk, address, configuration).
    #[error("startup: {0}")]
    Startup(String),
}

/// Why an operator's member change is refused; the messages are the
/// client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("node id must be greater than 0")]
    ZeroId,
    #[error("the new member's raft address must not be empty")]
    NoAddress,
    #[error("node {0} was removed from the cluster and its id is never used again: start the new node under a new id")]
    Removed(u64),
    #[error("node {id} is already a member, at {address}")]
    AlreadyMember { id: u64, address: String },
    #[error("node {0} is not a member")]
    NotMember(u64),
    #[error("node {0} is the cluster's last member")]
    LastMember(u64),
}

impl Error {
    /// Whether the client may retry: `Unavailable` (`docs/contract-notes.md`,
    /// "Errors a client may retry").
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
