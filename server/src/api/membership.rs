//! `membership.v1.Membership` on the maintenance listener: adding and
//! removing members (`cluster/node/membership.rs`), behind the maintenance
//! token.

use std::sync::Arc;
use std::time::Duration;

use regatta_proto::membership::v1::membership_server::Membership;
use regatta_proto::membership::v1::{AddMemberRequest, MemberChangeResponse, RemoveMemberRequest};
use tonic::{Request, Response, Status};

use crate::api::status::Error;
use crate::cluster::Node;

/// How long a change may wait for its groups when the call sets no deadline.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

pub struct MembershipService {
    node: Arc<Node>,
}

impl MembershipService {
    pub fn new(node: Arc<Node>) -> Self {
        MembershipService { node }
    }

    /// The answer once the change is recorded: waits for the groups here
    /// when asked to, up to `timeout`.
    async fn answer(&self, wait: bool, timeout: Duration) -> Result<MemberChangeResponse, Error> {
        if wait {
            if let Err(changing) = self.node.wait_members_settled(timeout).await {
                return Err(Error::DeadlineExceeded(format!(
                    "the change is recorded and goes on: {} of this node's groups have not changed their voters yet",
                    changing.len()
                )));
            }
        }
        let voters = self.node.wanted_voters_ids()?;
        let changing = self.node.groups_changing_members()?;
        Ok(MemberChangeResponse {
            voters,
            groups_changing: u32::try_from(changing.len()).unwrap_or(u32::MAX),
        })
    }
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let timeout = super::kv::deadline_or(&request, DEFAULT_WAIT);
        let started = tokio::time::Instant::now();
        let AddMemberRequest { id, address, wait } = request.into_inner();
        self.node
            .add_member(id, &address, timeout)
            .await
            .map_err(Error::from)?;
        tracing::info!(id, %address, "member added");
        let left = timeout.saturating_sub(started.elapsed());
        Ok(Response::new(self.answer(wait, left).await?))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let timeout = super::kv::deadline_or(&request, DEFAULT_WAIT);
        let started = tokio::time::Instant::now();
        let RemoveMemberRequest { id, wait } = request.into_inner();
        self.node
            .remove_member(id, timeout)
            .await
            .map_err(Error::from)?;
        tracing::info!(id, "member removed");
        let left = timeout.saturating_sub(started.elapsed());
        Ok(Response::new(self.answer(wait, left).await?))
    }
}
