//! `regatta.v1.Tables` (Regatta 0.5, `features/tables_api.feature`): tables created and
//! deleted at run time through the metadata group, listed from this node's
//! catalogue. Behind `--tables.token` (the interceptor, checked before
//! anything else); on a follower cluster only List is served.

use std::sync::Arc;

use regatta_proto::regatta::v1::tables_server::Tables;
use regatta_proto::regatta::v1::{
    CreateTableRequest, CreateTableResponse, DeleteTableRequest, DeleteTableResponse,
    ListTablesRequest, ListTablesResponse, TableInfo,
};
use tonic::{Request, Response, Status};

use super::maintenance::MaintenanceRole;
use super::status::{Error, TABLE_NOT_FOUND};
use crate::cluster::{self, Node};

pub struct TablesService {
    node: Arc<Node>,
    role: MaintenanceRole,
}

impl TablesService {
    pub fn new(node: Arc<Node>, role: MaintenanceRole) -> Self {
        TablesService { node, role }
    }

    /// Regatta 0.5's answer on a follower cluster for Create and Delete.
    fn leader_only(&self, method: &str) -> Result<(), Status> {
        match self.role {
            MaintenanceRole::Leader => Ok(()),
            MaintenanceRole::Follower => Err(Error::Unimplemented(format!(
                "method {method} not implemented for follower"
            ))
            .into()),
        }
    }
}

#[tonic::async_trait]
impl Tables for TablesService {
    async fn create(
        &self,
        request: Request<CreateTableRequest>,
    ) -> Result<Response<CreateTableResponse>, Status> {
        self.leader_only("Create")?;
        let timeout = super::kv::deadline(&request);
        let name = request.into_inner().name;
        let id = self
            .node
            .create_new_table(name.as_bytes(), timeout)
            .await
            .map_err(Error::from)?;
        tracing::info!(table = %name, shard = id, "table created through the Tables API");
        Ok(Response::new(CreateTableResponse { id: id.to_string() }))
    }

    async fn delete(
        &self,
        request: Request<DeleteTableRequest>,
    ) -> Result<Response<DeleteTableResponse>, Status> {
        self.leader_only("Delete")?;
        let timeout = super::kv::deadline(&request);
        let name = request.into_inner().name;
        match self
            .node
            .delete_existing_table(name.as_bytes(), timeout)
            .await
        {
            Ok(()) => {}
            // Regatta 0.5 answers an unknown name as a bad argument here,
            // unlike KV calls (NotFound).
            Err(cluster::Error::TableNotFound) => {
                return Err(Error::InvalidArgument(TABLE_NOT_FOUND).into())
            }
            Err(err) => return Err(Error::from(err).into()),
        }
        tracing::info!(table = %name, "table deleted through the Tables API");
        Ok(Response::new(DeleteTableResponse {}))
    }

    async fn list(
        &self,
        _request: Request<ListTablesRequest>,
    ) -> Result<Response<ListTablesResponse>, Status> {
        // The catalogue is keyed by name bytes: already sorted by name.
        let tables = self
            .node
            .tables()
            .into_iter()
            .map(|(name, id)| TableInfo {
                name: String::from_utf8_lossy(&name).into_owned(),
                id: id.to_string(),
                config: None,
            })
            .collect();
        Ok(Response::new(ListTablesResponse { tables }))
    }
}
