//! Writes sent to a follower cluster (`features/follower_writes.feature`): forwarded to the
//! leader cluster over the replication connection (the leader serves
//! `regatta.v1.KV` on its replication listener), answered once this node's
//! copy of the table holds them, so a client reads its write here next.
//!
//! The writes go many to a message over one stream (`forward_stream.rs`)
//! where the leader serves it, else one `regatta.v1.KV` call each.
//!
//! The caller's deadline bounds everything; the answer leaves a little
//! before it, so the client hears what happened instead of its own timer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use regatta_proto::forward::v1::Method;
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, ResponseHeader, TxnRequest,
    TxnResponse,
};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::forward_stream::{StreamError, WriteStream};
use crate::cluster::Node;

/// Why a forwarded write has no answer to pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The leader cluster refused it: its code and message.
    #[error("leader error: {message}")]
    Leader { code: Code, message: String },
    /// No connection to the leader cluster until the deadline: the write
    /// was never sent, so it was not made.
    #[error("leader cluster unreachable: {0}")]
    Unreachable(String),
    /// Sent, but no answer came in time: it may or may not have been made.
    #[error("no answer from the leader cluster in time")]
    NoAnswer,
    /// Sent, and the connection broke before the answer: it may or may
    /// not have been made.
    #[error("connection to the leader cluster lost: {0}")]
    ConnectionLost(String),
    /// Committed on the leader cluster at `revision`; this copy did not
    /// hold it by the deadline.
    #[error("committed at revision {revision}, not yet replicated")]
    NotReplicated { revision: u64 },
}

/// The follower node's way to write through the leader cluster.
pub struct WriteForwarder {
    leader: KvClient<Channel>,
    stream: WriteStream,
    node: Arc<Node>,
}

/// First and longest pause between attempts to connect.
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_LONGEST: Duration = Duration::from_millis(500);

/// How long before the client's deadline the answer leaves: a tenth of it,
/// at most this.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

impl WriteForwarder {
    /// `leader`: the channel to the leader cluster's replication listener
    /// (the one the replication workers use).
    pub fn new(node: Arc<Node>, leader: Channel) -> WriteForwarder {
        WriteForwarder {
            stream: WriteStream::start(leader.clone()),
            leader: KvClient::new(leader),
            node,
        }
    }

    pub async fn put(
        &self,
        request: PutRequest,
        timeout: Duration,
    ) -> Result<PutResponse, ForwardError> {
        let table = request.table.clone();
        self.forward(
            &table,
            Method::Put,
            request,
            timeout,
            |mut kv, request| async move { kv.put(request).await },
        )
        .await
    }

    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
        timeout: Duration,
    ) -> Result<DeleteRangeResponse, ForwardError> {
        let table = request.table.clone();
        self.forward(
            &table,
            Method::DeleteRange,
            request,
            timeout,
            |mut kv, request| async move { kv.delete_range(request).await },
        )
        .await
    }

    pub async fn txn(
        &self,
        request: TxnRequest,
        timeout: Duration,
    ) -> Result<TxnResponse, ForwardError> {
        let table = request.table.clone();
        self.forward(
            &table,
            Method::Txn,
            request,
            timeout,
            |mut kv, request| async move { kv.txn(request).await },
        )
        .await
    }

    /// Sends `request` (on the stream, else with `call`) until it is sent
    /// once (a failed connect sent nothing, so it is tried again), then
    /// waits for this node's copy of `table` to reach the leader's revision.
    async fn forward<Req, Resp, F, Fut>(
        &self,
        table: &[u8],
        method: Method,
        request: Req,
        timeout: Duration,
        call: F,
    ) -> Result<Resp, ForwardError>
    where
        Req: Clone + Message,
        Resp: Revisioned + Message + Default,
        F: Fn(KvClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let answer_by = Instant::now() + timeout - (timeout / 10).min(ANSWER_MARGIN);
        let mut pause = RETRY_FIRST;
        let encoded = request.encode_to_vec();
        let answer = loop {
            let remaining = answer_by.saturating_duration_since(Instant::now());
            let sent = if self.stream.serves() {
                let written = self.stream.write(method, encoded.clone(), remaining);
                match tokio::time::timeout_at(answer_by, written).await {
                    Err(_) => return Err(ForwardError::NoAnswer),
                    Ok(Ok((Code::Ok, _, response))) => match Resp::decode(response.as_slice()) {
                        Ok(answer) => Ok(answer),
                        Err(err) => {
                            return Err(ForwardError::ConnectionLost(format!(
                                "undecodable answer: {err}"
                            )))
                        }
                    },
                    Ok(Ok((code, message, _))) => Err(Status::new(code, message)),
                    Ok(Err(StreamError::Lost(why))) => {
                        return Err(ForwardError::ConnectionLost(why))
                    }
                    Ok(Err(StreamError::NotSent(why))) => Err(not_sent(why)),
                    // The leader cluster does not serve the stream.
                    Ok(Err(StreamError::Unsupported)) => continue,
                }
            } else {
                let mut sent = tonic::Request::new(request.clone());
                sent.set_timeout(remaining);
                match tokio::time::timeout_at(answer_by, call(self.leader.clone(), sent)).await {
                    Ok(answer) => answer.map(tonic::Response::into_inner),
                    Err(_) => return Err(ForwardError::NoAnswer),
                }
            };
            match sent {
                Ok(answer) => break answer,
                Err(status) if never_sent(&status) => {
                    if Instant::now() + pause >= answer_by {
                        return Err(ForwardError::Unreachable(status.message().to_string()));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_LONGEST);
                }
                Err(status) => return Err(outcome_unknown_or_refused(status)),
            }
        };
        let revision = answer.revision();
        if self.node.wait_replicated(table, revision, answer_by).await {
            Ok(answer)
        } else {
            Err(ForwardError::NotReplicated { revision })
        }
    }
}

/// A stream that could not be opened, as the failed connect it was: the
/// write was not sent.
fn not_sent(why: String) -> Status {
    let mut status = Status::unavailable(why.clone());
    status.set_source(Arc::new(tonic::ConnectError(Box::new(
        std::io::Error::other(why),
    ))));
    status
}

/// Whether the call failed before it left: no connection could be made.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A status the leader cluster sent is its answer; one the transport made
/// up (it carries the transport's error) means the call was cut short.
fn outcome_unknown_or_refused(status: Status) -> ForwardError {
    let from_transport = std::error::Error::source(&status).is_some();
    match status.code() {
        _ if from_transport => ForwardError::ConnectionLost(status.message().to_string()),
        // The leader gave up at the deadline the forwarded call carried.
        Code::Cancelled | Code::DeadlineExceeded => ForwardError::NoAnswer,
        code => ForwardError::Leader {
            code,
            message: status.message().to_string(),
        },
    }
}

/// The leader-cluster revision a write's answer carries.
pub trait Revisioned {
    fn revision(&self) -> u64;
}

fn revision_of(header: &Option<ResponseHeader>) -> u64 {
    header.as_ref().map_or(0, |header| header.revision)
}

impl Revisioned for PutResponse {
    fn revision(&self) -> u64 {
        revision_of(&self.header)
    }
}

impl Revisioned for DeleteRangeResponse {
    fn revision(&self) -> u64 {
        revision_of(&self.header)
    }
}

impl Revisioned for TxnResponse {
    fn revision(&self) -> u64 {
        revision_of(&self.header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_from_the_leader_is_its_answer_and_one_from_the_transport_is_not() {
        let refused = outcome_unknown_or_refused(Status::not_found("table not found"));
        assert_eq!(
            refused,
            ForwardError::Leader {
                code: Code::NotFound,
                message: "table not found".into()
            }
        );
        let mut cut = Status::unavailable("connection reset");
        cut.set_source(Arc::new(std::io::Error::other("reset")));
        assert!(matches!(
            outcome_unknown_or_refused(cut),
            ForwardError::ConnectionLost(_)
        ));
        assert_eq!(
            outcome_unknown_or_refused(Status::cancelled("Timeout expired")),
            ForwardError::NoAnswer
        );
    }

    #[test]
    fn only_a_failed_connect_counts_as_never_sent() {
        let mut refused = Status::unavailable("tcp connect error");
        refused.set_source(Arc::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert!(never_sent(&refused));
        assert!(!never_sent(&Status::unavailable("no leader")));
    }
}
