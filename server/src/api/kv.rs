//! `regatta.v1.KV` (`features/kv_*.feature`): read-write on a leader-cluster
//! node; on a follower-cluster node, reads from its copy and writes forwarded
//! to the leader cluster or refused (`features/follower_writes.feature`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::response_op::Response as OpResponse;
use regatta_proto::mvcc::v1::{Command, KeyValue, Txn};
use regatta_proto::regatta::v1::kv_server::Kv;
use regatta_proto::regatta::v1::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::metrics::ApiMetrics;
use super::status::Error;
use super::stream_producer::Producer;
use super::validate;
use crate::cluster::{Consistency, GroupInfo, Node};
use crate::replication::forward::WriteForwarder;
use crate::storage::{is_read_only, MessageSizes, RangeQuery};

/// Deadline of a KV call that brings none (`docs/operations.md`, "Settings").
pub const DEFAULT_KV_DEADLINE: Duration = Duration::from_secs(5);

/// The KV service of a node.
pub struct KvService {
    node: Arc<Node>,
    metrics: Arc<ApiMetrics>,
    writes: Writes,
}

/// Where a node's writes go.
pub enum Writes {
    /// A leader-cluster node: through the table's own Raft group.
    Local,
    /// A follower-cluster node with `--replication.forward-writes=false`:
    /// refused before any other check (`features/replication.feature`, "A
    /// follower refuses writes before any other check, with Regatta's messages").
    Refused,
    /// A follower-cluster node: to the leader cluster, answered once this
    /// node's copy holds the write (`features/follower_writes.feature`).
    Forwarded(Arc<WriteForwarder>),
}

impl KvService {
    pub fn new(node: Arc<Node>, metrics: Arc<ApiMetrics>) -> Self {
        KvService::with_writes(node, metrics, Writes::Local)
    }

    pub fn with_writes(node: Arc<Node>, metrics: Arc<ApiMetrics>, writes: Writes) -> Self {
        KvService {
            node,
            metrics,
            writes,
        }
    }

    fn observe<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe(method, code, started.elapsed());
    }

    fn exists(&self) -> impl Fn(&[u8]) -> bool + '_ {
        |table: &[u8]| self.node.tables().contains_key(table)
    }
}

/// Whether every op of both branches is a range (checked before validation:
/// a follower refuses writes before any other check).
fn txn_is_read_only(request: &TxnRequest) -> bool {
    use regatta_proto::mvcc::v1::request_op::Request as Op;
    request
        .success
        .iter()
        .chain(&request.failure)
        .all(|op| matches!(op.request, Some(Op::RequestRange(_))))
}

fn header(info: GroupInfo, revision: u64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        shard_id: info.shard_id,
        replica_id: info.replica_id,
        revision,
        raft_term: info.raft_term,
        raft_leader_id: info.raft_leader_id,
    })
}

/// The longest deadline a call is given, whatever it asks: deadlines are
/// added to clocks, and a sum past the clock's range panics (the wire
/// fuzzer's first finding).
const LONGEST_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The client's deadline (`grpc-timeout`), or the default; at most a day.
pub(super) fn deadline<T>(request: &Request<T>) -> Duration {
    deadline_or(request, DEFAULT_KV_DEADLINE)
}

/// How long before the client's deadline a call that has to give up
/// answers: a tenth of the deadline, at most this. Answering when the
/// client's own timer fires would race it, and the client would read its
/// timer's `DeadlineExceeded` instead of the reason (`Unavailable`: no
/// quorum, no leader in time; `cluster_faults.feature`).
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// The time the call has: the client's deadline less [`ANSWER_MARGIN`], or
/// `default` when it sets none.
pub(super) fn deadline_or<T>(request: &Request<T>, default: Duration) -> Duration {
    let asked = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    match asked {
        Some(deadline) => {
            let deadline = deadline.min(LONGEST_DEADLINE);
            deadline - (deadline / 10).min(ANSWER_MARGIN)
        }
        None => default,
    }
}

/// gRPC's `TimeoutValue TimeoutUnit`: at most 8 digits, then one unit
/// letter; anything else is no deadline at all (the default applies).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// What a Range or IterateRange request asks of the table.
fn range_query(request: &RangeRequest) -> RangeQuery {
    RangeQuery {
        key: request.key.clone(),
        range_end: request.range_end.clone(),
        limit: request.limit.max(0) as u64,
        keys_only: request.keys_only,
        count_only: request.count_only,
        min_mod_revision: request.min_mod_revision.max(0) as u64,
        max_mod_revision: request.max_mod_revision.max(0) as u64,
        min_create_revision: request.min_create_revision.max(0) as u64,
        max_create_revision: request.max_create_revision.max(0) as u64,
    }
}

/// The messages of one IterateRange call.
type RangeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<RangeResponse, Status>> + Send>>;

impl KvService {
    async fn write(
        &self,
        table: &[u8],
        command: Command,
        timeout: Duration,
    ) -> Result<(crate::cluster::Written, GroupInfo), Error> {
        Ok(self.node.write(table, &command, timeout).await?)
    }
}

/// Stored pairs a Range may visit on a runtime worker (a few hundred
/// microseconds at most) before it is handed to a blocking thread.
const INLINE_SCAN_PAIRS: usize = 1_000;

/// Runs a read on a blocking thread when it `scans` a range of keys, which
/// may take long (a `count_only` over a million keys) and must not stall
/// the runtime worker other tables' calls share; a point read stays here,
/// where the hop would cost more than the read.
async fn off_the_runtime<T: Send + 'static>(
    scans: bool,
    read: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    if !scans {
        return Ok(read());
    }
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|err| Error::Internal(format!("a read task failed: {err}")).into())
}

/// Whether a read-only Txn reads a range of keys (not single keys only).
fn txn_scans(txn: &Txn) -> bool {
    use regatta_proto::mvcc::v1::request_op::Request as Op;
    txn.success.iter().chain(&txn.failure).any(
        |op| matches!(&op.request, Some(Op::RequestRange(range)) if !range.range_end.is_empty()),
    )
}

impl KvService {
    /// What Range and IterateRange share: the deadline, the checks of
    /// `features/kv_validation.feature`, the consistency asked for and the query.
    fn checked_read(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<(Duration, RangeRequest, Consistency, RangeQuery), Status> {
        let timeout = deadline(&request);
        let request = request.into_inner();
        validate::range(&request, &self.exists())?;
        let consistency = if request.linearizable {
            Consistency::Linearizable
        } else {
            Consistency::Serializable
        };
        let query = range_query(&request);
        Ok((timeout, request, consistency, query))
    }

    async fn range_inner(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let (timeout, request, consistency, query) = self.checked_read(request)?;
        let (data, info) = self
            .node
            .read(&request.table, consistency, timeout)
            .await
            .map_err(Error::from)?;
        // A short scan is read here; one that turns out long is read again
        // on a blocking thread (`off_the_runtime`), at a revision no older.
        let short = match query.range_end.is_empty() {
            true => Some(data.range(&query).map_err(Error::from)?),
            false => data
                .range_within(&query, INLINE_SCAN_PAIRS)
                .map_err(Error::from)?,
        };
        let found = match short {
            Some(found) => found,
            None => off_the_runtime(true, move || data.range(&query))
                .await?
                .map_err(Error::from)?,
        };
        Ok(Response::new(RangeResponse {
            header: header(info, found.revision),
            kvs: found.value.kvs,
            more: found.value.more,
            count: found.value.count as i64,
        }))
    }

    /// IterateRange (`features/kv_iterate_range.feature`): Range's checks, then one
    /// point-in-time view streamed in messages under 4 MiB. The view is read
    /// on a blocking thread that hands over one message at a time, so the
    /// server holds at most a couple ahead of the client; a client that goes
    /// away closes the channel, which ends the thread and frees the view.
    /// Streams take turns to produce, and one whose client stops reading
    /// ends (`stream_producer.rs`).
    async fn iterate_range_inner(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeStream>, Status> {
        let (timeout, request, consistency, query) = self.checked_read(request)?;
        let started = Instant::now();
        // The deadline covers the wait for a turn and opening the view only;
        // the stream runs as long as the client reads.
        let (mut producer, stream) = Producer::start(timeout).await?;
        let (data, info) = self
            .node
            .read(
                &request.table,
                consistency,
                timeout.saturating_sub(started.elapsed()),
            )
            .await
            .map_err(Error::from)?;
        tokio::task::spawn_blocking(move || {
            let streamed = data.iterate(&query, MessageSizes::STREAM, |found, revision| {
                let more = found.more;
                let message = RangeResponse {
                    header: header(info, revision),
                    kvs: found.kvs,
                    more,
                    count: found.count as i64,
                };
                producer.send(Ok(message), more)
            });
            if let Err(err) = streamed {
                producer.send(Err(Status::from(Error::from(err))), false);
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn put_inner(
        &self,
        request: Request<PutRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        let timeout = deadline(&request);
        let request = request.into_inner();
        match &self.writes {
            Writes::Local => {}
            Writes::Refused => {
                return Err(
                    Error::Unimplemented("method Put not implemented for follower".into()).into(),
                )
            }
            Writes::Forwarded(leader) => {
                let answer = leader.put(request, timeout).await.map_err(Error::from)?;
                return Ok(Response::new(answer));
            }
        }
        validate::put(&request, &self.exists())?;
        let command = Command {
            table: request.table.clone(),
            r#type: CommandType::Put as i32,
            kv: Some(KeyValue {
                key: request.key,
                value: request.value,
                ..KeyValue::default()
            }),
            prev_kvs: request.prev_kv,
            ..Command::default()
        };
        let (written, info) = self.write(&request.table, command, timeout).await?;
        let prev_kv = written
            .result
            .responses
            .into_iter()
            .find_map(|op| match op.response {
                Some(OpResponse::ResponsePut(put)) => put.prev_kv,
                _ => None,
            });
        Ok(Response::new(PutResponse {
            header: header(info, written.result.revision),
            prev_kv,
        }))
    }

    async fn delete_range_inner(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let timeout = deadline(&request);
        let request = request.into_inner();
        match &self.writes {
            Writes::Local => {}
            Writes::Refused => {
                return Err(Error::Unimplemented(
                    "method DeleteRange not implemented for follower".into(),
                )
                .into())
            }
            Writes::Forwarded(leader) => {
                let answer = leader
                    .delete_range(request, timeout)
                    .await
                    .map_err(Error::from)?;
                return Ok(Response::new(answer));
            }
        }
        validate::delete_range(&request, &self.exists())?;
        let command = Command {
            table: request.table.clone(),
            r#type: CommandType::Delete as i32,
            kv: Some(KeyValue {
                key: request.key,
                ..KeyValue::default()
            }),
            range_end: Some(request.range_end).filter(|end| !end.is_empty()),
            prev_kvs: request.prev_kv,
            ..Command::default()
        };
        let (written, info) = self.write(&request.table, command, timeout).await?;
        let (deleted, prev_kvs) = written
            .result
            .responses
            .into_iter()
            .find_map(|op| match op.response {
                Some(OpResponse::ResponseDeleteRange(delete)) => {
                    Some((delete.deleted, delete.prev_kvs))
                }
                _ => None,
            })
            .unwrap_or_default();
        Ok(Response::new(DeleteRangeResponse {
            header: header(info, written.result.revision),
            deleted,
            prev_kvs,
        }))
    }

    async fn txn_inner(
        &self,
        request: Request<TxnRequest>,
    ) -> Result<Response<TxnResponse>, Status> {
        let timeout = deadline(&request);
        let request = request.into_inner();
        if !txn_is_read_only(&request) {
            match &self.writes {
                Writes::Local => {}
                Writes::Refused => {
                    return Err(Error::Unimplemented(
                        "writable Txn not implemented for follower".into(),
                    )
                    .into())
                }
                Writes::Forwarded(leader) => {
                    let answer = leader.txn(request, timeout).await.map_err(Error::from)?;
                    return Ok(Response::new(answer));
                }
            }
        }
        validate::txn(&request, &self.exists())?;
        let txn = Txn {
            compare: request.compare,
            success: request.success,
            failure: request.failure,
        };
        if is_read_only(&txn) {
            // Read-only: never logged, but linearizable (`features/kv_txn.feature`).
            let (data, info) = self
                .node
                .read(&request.table, Consistency::Linearizable, timeout)
                .await
                .map_err(Error::from)?;
            let scans = txn_scans(&txn);
            let outcome = off_the_runtime(scans, move || data.txn_read(&txn))
                .await?
                .map_err(Error::from)?;
            return Ok(Response::new(TxnResponse {
                header: header(info, outcome.revision),
                succeeded: outcome.value.succeeded,
                responses: outcome.value.responses,
            }));
        }
        let command = Command {
            table: request.table.clone(),
            r#type: CommandType::Txn as i32,
            txn: Some(txn),
            ..Command::default()
        };
        let (written, info) = self.write(&request.table, command, timeout).await?;
        Ok(Response::new(TxnResponse {
            header: header(info, written.result.revision),
            succeeded: written.txn_succeeded.unwrap_or_default(),
            responses: written.result.responses,
        }))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let started = Instant::now();
        let result = self.range_inner(request).await;
        self.observe("Range", started, &result);
        result
    }

    type IterateRangeStream = RangeStream;

    async fn iterate_range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeStream>, Status> {
        let started = Instant::now();
        let result = self.iterate_range_inner(request).await;
        // Observed when the stream opens (or is refused), not when it ends.
        self.observe("IterateRange", started, &result);
        result
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let started = Instant::now();
        let result = self.put_inner(request).await;
        self.observe("Put", started, &result);
        result
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let started = Instant::now();
        let result = self.delete_range_inner(request).await;
        self.observe("DeleteRange", started, &result);
        result
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let started = Instant::now();
        let result = self.txn_inner(request).await;
        self.observe("Txn", started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("+5S"), None);
        // Past gRPC's 8 digits (the fuzzer's `18446744073709551615H`, which
        // once overflowed `Instant + Duration`).
        assert_eq!(parse_grpc_timeout("18446744073709551615H"), None);
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn a_deadline_is_at_most_a_day() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "99999999H".parse().expect("header"));
        assert_eq!(deadline(&request), LONGEST_DEADLINE - ANSWER_MARGIN);
    }

    #[test]
    fn a_call_gives_up_before_the_clients_deadline() {
        let with = |timeout: &str| {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert("grpc-timeout", timeout.parse().expect("header"));
            deadline(&request)
        };
        assert_eq!(with("3S"), Duration::from_millis(2750));
        assert_eq!(with("1000m"), Duration::from_millis(900));
        assert_eq!(deadline(&Request::new(())), DEFAULT_KV_DEADLINE);
    }
}
