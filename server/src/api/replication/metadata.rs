//! `Metadata.Get`: the leader cluster's tables, sorted by name
//! (`features/replication_protocol.feature`).

use std::sync::Arc;

use regatta_proto::replication::v1::metadata_server::Metadata;
use regatta_proto::replication::v1::{table, MetadataRequest, MetadataResponse, Table};
use tonic::{Request, Response, Status};

use crate::api::status::Error;
use crate::cluster::Node;

pub struct MetadataService {
    /// `None` where the role does not serve the call (a follower's
    /// maintenance listener): it answers `Unimplemented`
    /// (`features/maintenance.feature`, `docs/contract-notes.md`).
    node: Option<Arc<Node>>,
}

impl MetadataService {
    pub fn new(node: Arc<Node>) -> Self {
        MetadataService { node: Some(node) }
    }

    pub fn unserved() -> Self {
        MetadataService { node: None }
    }
}

#[tonic::async_trait]
impl Metadata for MetadataService {
    async fn get(
        &self,
        _request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let Some(node) = &self.node else {
            return Err(Error::Unimplemented("method Get not implemented".into()).into());
        };
        // The catalogue is a BTreeMap keyed by name: already sorted.
        let tables = node
            .tables()
            .into_iter()
            .map(|(name, shard_id)| Table {
                name: String::from_utf8_lossy(&name).into_owned(),
                r#type: table::Type::Replicated as i32,
                shard_id,
            })
            .collect();
        Ok(Response::new(MetadataResponse { tables }))
    }
}
