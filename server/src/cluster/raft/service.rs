//! The server side of the internal Raft transport: routes each message to
//! its group. Served on `--raft.listen-address` only, never on the API port.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::errors::Fatal;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult, VoteRequest};
use openraft_legacy::network_v1::{ChunkedSnapshotReceiver, InstallSnapshotRequest};
use regatta_proto::internal::raft::v1::raft_server::Raft as RaftService;
use regatta_proto::internal::raft::v1::{NodeBeat, RaftMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::group::{Group, Groups};
use super::liveness::Liveness;
use super::network::Peers;
use super::types::{GroupId, NodeId, Request as Proposal, TypeConfig};

/// Routes internal messages to the groups of this node.
pub struct InternalService {
    pub self_id: NodeId,
    pub groups: Arc<Groups>,
    pub liveness: Arc<Liveness>,
    /// Turns true when the node shuts down. An AppendStream lasts as long
    /// as the peer's replication session, and a graceful server stop waits
    /// for every stream: they must end first.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// While this node's disk is below its reserve it takes no new log
    /// entries: the leader retries them later, and commits with the others.
    pub disk: Arc<crate::storage::DiskSpace>,
    /// The members, and the ids removed from the cluster: a removed node
    /// that comes back (its disk was not lost after all) must not campaign
    /// in groups that no longer count it.
    pub peers: Arc<Peers>,
}

impl InternalService {
    fn route<Req: DeserializeOwned>(
        &self,
        message: &RaftMessage,
    ) -> Result<(Arc<Group>, Req), Status> {
        let group = self.group_for(message.group_id, message.from, message.to)?;
        let request = bincode::deserialize(&message.payload)
            .map_err(|err| Status::invalid_argument(format!("undecodable payload: {err}")))?;
        Ok((group, request))
    }

    /// The group a message for `(group_id, to)` goes to. Both refusals
    /// happen before anything is done, which the caller relies on to know
    /// that a refused request may be sent again elsewhere.
    fn group_for(&self, group_id: GroupId, from: NodeId, to: NodeId) -> Result<Arc<Group>, Status> {
        if self.peers.is_removed(from) {
            return Err(removed(from));
        }
        if to != self.self_id {
            // A peer whose address map points at the wrong node must not be answered.
            return Err(Status::failed_precondition(format!(
                "message for node {to} reached node {}",
                self.self_id
            )));
        }
        self.groups
            .get(group_id)
            .ok_or_else(|| Status::not_found(format!("group {group_id} is not running here")))
    }

    fn reply(
        &self,
        message: &RaftMessage,
        payload: &impl Serialize,
    ) -> Result<Response<RaftMessage>, Status> {
        let payload =
            bincode::serialize(payload).map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(RaftMessage {
            group_id: message.group_id,
            from: self.self_id,
            to: message.from,
            payload,
        }))
    }
}

/// Metadata keys naming an AppendStream's group and nodes.
pub const GROUP_KEY: &str = "x-regatta-group";
pub const FROM_KEY: &str = "x-regatta-from";
pub const TO_KEY: &str = "x-regatta-to";

/// Reads `(group, from, to)` of an AppendStream from its metadata.
fn stream_route(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<(GroupId, NodeId, NodeId), Status> {
    let number = |key: &str| {
        metadata
            .get(key)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| Status::invalid_argument(format!("an AppendStream without {key}")))
    };
    Ok((number(GROUP_KEY)?, number(FROM_KEY)?, number(TO_KEY)?))
}

/// Answers of one AppendStream, one per request.
pub type AppendAnswers = Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send>>;

#[tonic::async_trait]
impl RaftService for InternalService {
    type AppendStreamStream = AppendAnswers;

    async fn append_stream(
        &self,
        request: Request<tonic::Streaming<RaftMessage>>,
    ) -> Result<Response<AppendAnswers>, Status> {
        // The stream is routed on its metadata, so it is answered (headers
        // sent) at once, before any request: the peer's `stream_append`
        // returns as soon as the stream is open, whether or not openraft
        // has anything to send yet (waiting for a first request here left
        // both ends blocked when the peer's request stream stayed empty).
        let (group_id, from, to) = stream_route(request.metadata())?;
        let group = self.group_for(group_id, from, to)?;
        let inbound = request.into_inner();
        // Both directions end when the node shuts down: the answers, and
        // the requests, which openraft's task holds until they end (an open
        // request half would keep the graceful stop waiting).
        let closed = |mut closing: tokio::sync::watch::Receiver<bool>| async move {
            let _ = closing.wait_for(|closing| *closing).await;
        };
        // A message that does not decode, or for another group, ends the
        // requests: answers must match requests one to one, in order.
        let disk = self.disk.clone();
        let rpcs = inbound
            .take_until(closed(self.closing.clone()))
            .take_while(move |message| {
                let same = matches!(message, Ok(m) if m.group_id == group_id && m.from == from && m.to == to);
                std::future::ready(same)
            })
            .map(|message| {
                message.ok().and_then(|m| {
                    bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(&m.payload).ok()
                })
            })
            .take_while(|rpc| std::future::ready(rpc.is_some()))
            .filter_map(std::future::ready)
            // Ending the stream is how it refuses: answers stay one per request.
            .take_while(move |rpc| {
                std::future::ready(rpc.entries.is_empty() || disk.refusal().is_none())
            });
        let self_id = self.self_id;
        let answers = group
            .raft
            .stream_append(rpcs)
            .take_until(closed(self.closing.clone()))
            .map(
                move |answer: Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>| {
                    let payload = bincode::serialize(&answer)
                        .map_err(|err| Status::internal(err.to_string()))?;
                    Ok(RaftMessage {
                        group_id,
                        from: self_id,
                        to: from,
                        payload,
                    })
                },
            );
        Ok(Response::new(Box::pin(answers)))
    }

    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, rpc): (_, AppendEntriesRequest<TypeConfig>) = self.route(&message)?;
        if !rpc.entries.is_empty() {
            if let Some(reason) = self.disk.refusal() {
                return Err(Status::resource_exhausted(reason));
            }
        }
        self.reply(&message, &group.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, rpc): (_, VoteRequest<TypeConfig>) = self.route(&message)?;
        self.reply(&message, &group.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, rpc): (_, InstallSnapshotRequest<TypeConfig>) = self.route(&message)?;
        if let Some(reason) = self.disk.refusal() {
            return Err(Status::resource_exhausted(reason));
        }
        self.reply(&message, &group.raft.install_snapshot(rpc).await)
    }

    async fn forward_batch(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, proposals): (_, Vec<Proposal>) = self.route(&message)?;
        // Served only as leader: a forwarded write is never forwarded again.
        // One answer per write, in order.
        self.reply(&message, &group.write_local_many(proposals).await)
    }

    async fn liveness(&self, request: Request<NodeBeat>) -> Result<Response<NodeBeat>, Status> {
        let beat = request.into_inner();
        if self.peers.is_removed(beat.from) {
            return Err(removed(beat.from));
        }
        if beat.to != self.self_id {
            return Err(Status::failed_precondition(format!(
                "beat for node {} reached node {}",
                beat.to, self.self_id
            )));
        }
        Ok(Response::new(self.liveness.receive(beat)))
    }

    async fn read_index(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, ()): (_, ()) = self.route(&message)?;
        self.reply(&message, &group.read_index_for_peer().await)
    }
}

fn removed(node: NodeId) -> Status {
    Status::permission_denied(format!(
        "node {node} was removed from this cluster; a node whose disk was replaced joins under a new id"
    ))
}
