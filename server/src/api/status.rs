//! The one place where errors become gRPC statuses.
//!
//! ```text
//! api::Error
//! ├── InvalidArgument(msg)  -> InvalidArgument   (bad request or table name: kv_validation, tables_api features)
//! ├── InvalidStream(msg)    -> InvalidArgument   (malformed restore stream: maintenance.feature)
//! ├── NotFound(msg)         -> NotFound          (unknown table)
//! ├── Unimplemented(msg)    -> Unimplemented     (a role does not serve the call)
//! ├── Unavailable(reason)   -> Unavailable       (no leader, no quorum, timeout: retryable)
//! ├── ResourceExhausted(why) -> ResourceExhausted (the leader's disk is below its reserve, naming the
//! │                                              disk; too many streams producing at once)
//! ├── DeadlineExceeded(why) -> DeadlineExceeded  (a stream's client stopped reading)
//! ├── Internal(detail)      -> Internal          (a bug or the disk; detail logged, not sent)
//! └── Forward(err)          -> a write a follower forwarded (follower_writes.feature):
//!         Leader{code, msg}   -> code, "leader error: <msg>"
//!         NotReplicated{rev}  -> DeadlineExceeded "write committed on the leader cluster at revision <rev>, not yet replicated here"
//!         Unreachable(why)    -> DeadlineExceeded "leader cluster unreachable, the write was not made: <why>"
//!         NoAnswer            -> DeadlineExceeded "no answer from the leader cluster in time, the write may or may not have been made"
//!         ConnectionLost(why) -> Unavailable "connection to the leader cluster lost, the write may or may not have been made: <why>"
//!         ^ cluster::Error::{Unavailable, NoSpace, TableNotFound, InvalidTableName, Storage, Startup}
//!         ^ storage::Error::{TableNotFound, ...}
//! ```

use tonic::Status;

use crate::cluster;
use crate::replication::forward::ForwardError;
use crate::storage;

/// Errors the API answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(&'static str),
    #[error("{0}")]
    InvalidStream(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A member change the cluster refuses; the code depends on why.
    #[error(transparent)]
    Membership(cluster::MembershipError),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

pub const TABLE_NOT_FOUND: &str = "table not found";
pub const TABLE_EXISTS: &str = "table already exists";

impl From<cluster::Error> for Error {
    fn from(err: cluster::Error) -> Self {
        match err {
            cluster::Error::TableNotFound => Error::NotFound(TABLE_NOT_FOUND),
            cluster::Error::InvalidTableName(message) => Error::InvalidArgument(message),
            cluster::Error::TableExists => Error::InvalidArgument(TABLE_EXISTS),
            cluster::Error::Unavailable(reason) => Error::Unavailable(reason),
            cluster::Error::NoSpace(reason) => Error::ResourceExhausted(reason),
            cluster::Error::MalformedStream(reason) => Error::InvalidStream(reason),
            cluster::Error::Storage(err) => err.into(),
            cluster::Error::Membership(err) => Error::Membership(err),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<storage::Error> for Error {
    fn from(err: storage::Error) -> Self {
        match err {
            storage::Error::TableNotFound => Error::NotFound(TABLE_NOT_FOUND),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(message) => Status::invalid_argument(message),
            Error::InvalidStream(message) => Status::invalid_argument(message),
            Error::NotFound(message) => Status::not_found(message),
            Error::Unimplemented(message) => Status::unimplemented(message),
            Error::Unavailable(reason) => Status::unavailable(reason),
            Error::ResourceExhausted(reason) => Status::resource_exhausted(reason),
            Error::DeadlineExceeded(reason) => Status::deadline_exceeded(reason),
            Error::Membership(err) => {
                use cluster::MembershipError as Why;
                let message = err.to_string();
                match err {
                    Why::ZeroId | Why::NoAddress => Status::invalid_argument(message),
                    Why::Removed(_) | Why::LastMember(_) => Status::failed_precondition(message),
                    Why::AlreadyMember { .. } => Status::already_exists(message),
                    Why::NotMember(_) => Status::not_found(message),
                }
            }
            Error::Internal(detail) => {
                // Server faults are logged once, here; callers get no internals.
                tracing::error!(error = %detail, "internal error");
                Status::internal("internal error")
            }
            Error::Forward(err) => forwarded(err),
        }
    }
}

/// The answer to a write a follower forwarded to the leader cluster: the
/// leader's own errors keep their code, and every other outcome says
/// whether the write was made.
fn forwarded(err: ForwardError) -> Status {
    match err {
        ForwardError::Leader { code, message } => {
            Status::new(code, format!("leader error: {message}"))
        }
        ForwardError::NotReplicated { revision } => Status::deadline_exceeded(format!(
            "write committed on the leader cluster at revision {revision}, not yet replicated here"
        )),
        ForwardError::Unreachable(reason) => Status::deadline_exceeded(format!(
            "leader cluster unreachable, the write was not made: {reason}"
        )),
        ForwardError::NoAnswer => Status::deadline_exceeded(
            "no answer from the leader cluster in time, the write may or may not have been made",
        ),
        ForwardError::ConnectionLost(reason) => Status::unavailable(format!(
            "connection to the leader cluster lost, the write may or may not have been made: {reason}"
        )),
    }
}
