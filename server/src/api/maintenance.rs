//! `maintenance.v1.Maintenance` on `--maintenance.address`
//! (`features/maintenance.feature`, `docs/backups.md`): Backup and Restore on
//! a leader cluster, Reset on a follower cluster; the RPC a role does not
//! serve answers `Unimplemented` "method <Name> not implemented"
//! (`docs/contract-notes.md`, "Who serves what"). The bearer-token check is
//! [`TokenCheck`], an interceptor that guards unary and streaming calls alike.

use std::sync::Arc;
use std::time::Duration;

use regatta_proto::maintenance::v1::maintenance_server::Maintenance;
use regatta_proto::maintenance::v1::restore_message::Data;
use regatta_proto::maintenance::v1::{
    BackupRequest, ResetRequest, ResetResponse, RestoreMessage, RestoreResponse,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::api::replication::{chunked_copy, ChunkStream};
use crate::api::status::Error;
use crate::cluster::{self, Consistency, Node, RestoreStep};
use crate::storage::Trailer;

/// How long one step of a restore or reset may wait for the table's group.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which calls this node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceRole {
    Leader,
    Follower,
}

pub struct MaintenanceService {
    node: Arc<Node>,
    role: MaintenanceRole,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>, role: MaintenanceRole) -> Self {
        MaintenanceService { node, role }
    }

    fn serve_only(&self, role: MaintenanceRole, method: &str) -> Result<(), Status> {
        if self.role == role {
            Ok(())
        } else {
            Err(Error::Unimplemented(format!("method {method} not implemented")).into())
        }
    }

    /// Restores from `stream` (its info already read) into `table`.
    async fn restore_into(
        &self,
        table: &[u8],
        mut stream: Streaming<RestoreMessage>,
    ) -> Result<u64, Error> {
        let restore = self.node.begin_restore(table, STEP_TIMEOUT).await?;
        let (chunk_tx, chunk_rx) = mpsc::channel::<Vec<u8>>(4);
        let upload = async move {
            while let Some(message) = stream.message().await? {
                match message.data {
                    Some(Data::Chunk(chunk)) => {
                        if chunk_tx.send(chunk.data).await.is_err() {
                            break; // The restore stopped reading; it says why.
                        }
                    }
                    _ => return Err(Status::invalid_argument("chunk expected")),
                }
            }
            Ok(())
        };
        let (uploaded, filled) = tokio::join!(upload, restore.fill(chunk_rx, || {}));
        let outcome = match (uploaded, filled) {
            (Err(status), _) => Err(status_error(status)),
            (Ok(()), Err(cluster::Error::MalformedStream(reason))) => Err(Error::InvalidStream(
                format!("malformed backup stream: {reason}"),
            )),
            (Ok(()), Err(err)) => Err(err.into()),
            (Ok(()), Ok(filled)) => Ok(filled.records),
        };
        match outcome {
            Ok(records) => {
                restore.commit(None).await?;
                Ok(records)
            }
            Err(err) => {
                restore.abort().await;
                Err(err)
            }
        }
    }
}

/// A status the client stream ended with (its own error, or a refusal made
/// while reading it) as an API error.
fn status_error(status: Status) -> Error {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument => Error::InvalidStream(status.message().to_string()),
        // What gRPC says of a message that does not decode (Internal) or
        // is over the size limit (ResourceExhausted): the same bytes will
        // never do, so not Unavailable, which invites a retry (found by
        // the wire fuzzer).
        Code::Internal | Code::ResourceExhausted => {
            Error::InvalidStream(format!("malformed restore stream: {}", status.message()))
        }
        _ => Error::Unavailable(format!("reading the restore stream: {}", status.message())),
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type BackupStream = ChunkStream;

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        self.serve_only(MaintenanceRole::Leader, "Backup")?;
        let wait = crate::api::kv::deadline(&request);
        let table = request.into_inner().table;
        // A backup holds every write acknowledged before it began, on
        // whichever node it is taken (a follower may not have applied the
        // last ones yet: `.ci/run` once saw 48 of 50 keys).
        let (data, _) = self
            .node
            .read(&table, Consistency::Linearizable, STEP_TIMEOUT)
            .await
            .map_err(Error::from)?;
        tracing::info!(table = %String::from_utf8_lossy(&table), "backup started");
        Ok(Response::new(
            chunked_copy(data, Trailer::None, wait).await?,
        ))
    }

    async fn restore(
        &self,
        request: Request<Streaming<RestoreMessage>>,
    ) -> Result<Response<RestoreResponse>, Status> {
        self.serve_only(MaintenanceRole::Leader, "Restore")?;
        let mut stream = request.into_inner();
        let table = match stream.message().await? {
            Some(RestoreMessage {
                data: Some(Data::Info(info)),
            }) => info.table,
            _ => {
                return Err(Status::invalid_argument(
                    "first message should contain info",
                ))
            }
        };
        let name = String::from_utf8_lossy(&table).into_owned();
        if table.is_empty() {
            return Err(Error::InvalidArgument("table must be set").into());
        }
        let created = if self.node.table(&table).is_err() {
            self.node
                .create_table(&table, STEP_TIMEOUT)
                .await
                .map_err(Error::from)?;
            true
        } else {
            false
        };
        match self.restore_into(&table, stream).await {
            Ok(records) => {
                tracing::info!(table = %name, records, created, "table restored");
                Ok(Response::new(RestoreResponse {}))
            }
            Err(err) => {
                tracing::warn!(table = %name, error = %err, "restore failed; the table is unchanged");
                if created {
                    // Nothing was there before: leave nothing behind.
                    if let Err(err) = self.node.delete_table(&table, STEP_TIMEOUT).await {
                        tracing::warn!(table = %name, error = %err, "could not remove the table a failed restore created");
                    }
                }
                Err(err.into())
            }
        }
    }

    async fn reset(
        &self,
        request: Request<ResetRequest>,
    ) -> Result<Response<ResetResponse>, Status> {
        self.serve_only(MaintenanceRole::Follower, "Reset")?;
        let request = request.into_inner();
        let tables = if request.reset_all {
            self.node.tables().into_keys().collect()
        } else if request.table.is_empty() {
            return Err(Error::InvalidArgument("table must be set").into());
        } else {
            self.node.table(&request.table).map_err(Error::from)?;
            vec![request.table]
        };
        for table in tables {
            self.node
                .restore(&table, RestoreStep::ResetLeaderIndex, STEP_TIMEOUT)
                .await
                .map_err(Error::from)?;
            tracing::info!(table = %String::from_utf8_lossy(&table), "table reset: it will be copied again from the leader cluster");
        }
        Ok(Response::new(ResetResponse {}))
    }
}

/// The bearer-token check of the maintenance listener
/// (`features/maintenance.feature`), in the order and with the messages of
/// Regatta's: a missing header or another scheme, a value without a space,
/// a wrong token. The comparison takes the same time wherever the tokens
/// differ.
#[derive(Clone)]
pub struct TokenCheck {
    token: Option<Arc<[u8]>>,
}

impl TokenCheck {
    pub fn new(token: Option<&str>) -> Self {
        TokenCheck {
            token: token.map(|token| Arc::from(token.as_bytes())),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        const UNAUTHENTICATED: &str = "Request unauthenticated with bearer";
        let value = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if value.is_empty() {
            return Err(Status::unauthenticated(UNAUTHENTICATED));
        }
        let Some((scheme, token)) = value.split_once(' ') else {
            return Err(Status::unauthenticated("Bad authorization string"));
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Status::unauthenticated(UNAUTHENTICATED));
        }
        if !constant_time_eq(token.as_bytes(), expected) {
            return Err(Status::unauthenticated("Invalid token"));
        }
        Ok(request)
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut differ = a.len() ^ b.len();
    for (i, byte) in a.iter().enumerate() {
        differ |= usize::from(byte ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    differ == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn a_restore_stream_that_cannot_be_read_as_sent_is_invalid_not_retryable() {
        let undecodable = status_error(Status::internal("failed to decode Protobuf message"));
        assert!(
            matches!(undecodable, Error::InvalidStream(_)),
            "{undecodable:?}"
        );
        let oversized = status_error(Status::resource_exhausted("message too large"));
        assert!(
            matches!(oversized, Error::InvalidStream(_)),
            "{oversized:?}"
        );
        let cut = status_error(Status::unavailable("connection reset"));
        assert!(matches!(cut, Error::Unavailable(_)), "{cut:?}");
    }

    fn check(token: Option<&str>, header: Option<&str>) -> Result<(), String> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().expect("ascii"));
        }
        TokenCheck::new(token)
            .call(request)
            .map(|_| ())
            .map_err(|status| {
                assert_eq!(status.code(), tonic::Code::Unauthenticated);
                status.message().to_string()
            })
    }

    #[test]
    fn the_token_check_answers_regattas_messages_in_regattas_order() {
        assert_eq!(check(None, None), Ok(()));
        assert_eq!(check(Some("s3cret"), Some("Bearer s3cret")), Ok(()));
        assert_eq!(check(Some("s3cret"), Some("bEaReR s3cret")), Ok(()));
        let unauthenticated = Err("Request unauthenticated with bearer".to_string());
        assert_eq!(check(Some("s3cret"), None), unauthenticated);
        assert_eq!(check(Some("s3cret"), Some("Basic s3cret")), unauthenticated);
        assert_eq!(
            check(Some("s3cret"), Some("Bearer")),
            Err("Bad authorization string".to_string())
        );
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "Bearer S3cret", "Bearer "] {
            assert_eq!(
                check(Some("s3cret"), Some(wrong)),
                Err("Invalid token".to_string()),
                "{wrong}"
            );
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(b"a", b""));
    }
}
