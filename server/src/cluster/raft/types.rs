//! openraft type configuration, declared once; other modules use the short
//! aliases below instead of spelling out generic parameters.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Id of a node in a cluster (`--raft.node-id`).
pub type NodeId = u64;
/// Id of a Raft group: the metadata group or a table's shard.
pub type GroupId = u64;

/// The Raft group holding the table catalogue.
pub const METADATA_GROUP: GroupId = 1;
/// First shard id handed to a table; ids are never reused.
pub const FIRST_TABLE_SHARD: GroupId = 10001;

/// A Raft log entry's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A table write: a serialized `mvcc.v1.Command`.
    Table(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A change of the table catalogue (metadata group only).
    Meta(MetaCommand),
}

/// Changes of the table catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates a table (a no-op when it exists).
    CreateTable { name: Vec<u8> },
    /// Deletes a table (a no-op when it does not exist).
    DeleteTable { name: Vec<u8> },
}

/// What applying an entry produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Serialized `mvcc.v1.CommandResult` of a table write.
    #[serde(with = "serde_bytes")]
    pub command_result: Vec<u8>,
    /// For a TXN: whether its compares held.
    pub txn_succeeded: Option<bool>,
    /// For a catalogue change: the table's shard id, if it exists afterwards.
    pub shard_id: Option<GroupId>,
}

openraft::declare_raft_types!(
    /// Regatta's Raft types: one configuration for the metadata group and every table group.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, openraft::BasicNode>;
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, openraft::BasicNode>;
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
