//! The server side of the internal Raft transport: routes each message to
//! its group. Served on `--raft.listen-address` only, never on the API port.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use regatta_proto::internal::raft::v1::raft_server::Raft as RaftService;
use regatta_proto::internal::raft::v1::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::group::{Group, Groups};
use super::types::{NodeId, Request as Proposal, TypeConfig};

/// Routes internal messages to the groups of this node.
pub struct InternalService {
    pub self_id: NodeId,
    pub groups: Arc<Groups>,
}

impl InternalService {
    fn route<Req: DeserializeOwned>(
        &self,
        message: &RaftMessage,
    ) -> Result<(Arc<Group>, Req), Status> {
        if message.to != self.self_id {
            // A peer whose address map points at the wrong node must not be answered.
            return Err(Status::failed_precondition(format!(
                "message for node {} reached node {}",
                message.to, self.self_id
            )));
        }
        let group = self.groups.get(message.group_id).ok_or_else(|| {
            Status::not_found(format!("group {} is not running here", message.group_id))
        })?;
        let request = bincode::deserialize(&message.payload)
            .map_err(|err| Status::invalid_argument(format!("undecodable payload: {err}")))?;
        Ok((group, request))
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

#[tonic::async_trait]
impl RaftService for InternalService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, rpc): (_, AppendEntriesRequest<TypeConfig>) = self.route(&message)?;
        self.reply(&message, &group.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, rpc): (_, VoteRequest<NodeId>) = self.route(&message)?;
        self.reply(&message, &group.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, rpc): (_, InstallSnapshotRequest<TypeConfig>) = self.route(&message)?;
        self.reply(&message, &group.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let (group, proposal): (_, Proposal) = self.route(&message)?;
        // Served only as leader: a forwarded write is never forwarded again.
        self.reply(&message, &group.write_local(proposal).await)
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
