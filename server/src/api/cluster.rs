//! `regatta.v1.Cluster` (Regatta 0.5, `features/cluster_api.feature`): the local
//! cluster's members, from its Raft membership (Regatta 0.5 gossips; no
//! gossip port is needed here), and this node's status per table. Served on
//! leader and follower clusters alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost_types::value::Kind;
use prost_types::{Struct, Value};
use regatta_proto::regatta::v1::cluster_server::Cluster;
use regatta_proto::regatta::v1::{
    Member, MemberListRequest, MemberListResponse, StatusRequest, StatusResponse, TableStatus,
};
use tonic::{Request, Response, Status};

use crate::cluster::Node;

pub struct ClusterService {
    node: Arc<Node>,
    cluster_name: String,
    /// Every setting by flag name, tokens masked (`cli::parse`).
    settings: BTreeMap<String, Option<String>>,
}

impl ClusterService {
    pub fn new(
        node: Arc<Node>,
        cluster_name: String,
        settings: BTreeMap<String, Option<String>>,
    ) -> Self {
        ClusterService {
            node,
            cluster_name,
            settings,
        }
    }

    fn config(&self) -> Struct {
        let fields = self
            .settings
            .iter()
            .map(|(flag, value)| {
                let kind = match value {
                    Some(value) => Kind::StringValue(value.clone()),
                    None => Kind::NullValue(0),
                };
                (flag.clone(), Value { kind: Some(kind) })
            })
            .collect();
        Struct { fields }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let members = self
            .node
            .members()
            .into_iter()
            .map(|member| Member {
                id: member.id.to_string(),
                name: member.name,
                peer_ur_ls: vec![member.peer_url],
                client_ur_ls: member.client_url.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(MemberListResponse {
            cluster: self.cluster_name.clone(),
            members,
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let with_config = request.into_inner().config;
        let mut tables = std::collections::HashMap::new();
        let mut errors = Vec::new();
        for name in self.node.tables().into_keys() {
            let shown = String::from_utf8_lossy(&name).into_owned();
            let status = match self.node.status(&name) {
                Ok(status) => status,
                Err(err) => {
                    errors.push(format!("{shown}: {err}"));
                    continue;
                }
            };
            let bytes = self.node.table_bytes(&name).unwrap_or_else(|err| {
                errors.push(format!("{shown}: size unknown: {err}"));
                Default::default()
            });
            tables.insert(
                shown,
                TableStatus {
                    log_size: i64::try_from(bytes.log).unwrap_or(i64::MAX),
                    db_size: i64::try_from(bytes.data).unwrap_or(i64::MAX),
                    leader: status.leader.unwrap_or(0).to_string(),
                    raft_index: status.last_log_index,
                    raft_term: status.info.raft_term,
                    raft_applied_index: status.applied_index,
                },
            );
        }
        Ok(Response::new(StatusResponse {
            id: self.node.id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            info: String::new(),
            tables,
            config: with_config.then(|| self.config()),
            errors,
        }))
    }
}
