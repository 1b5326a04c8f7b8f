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
    /// One step of replacing a table's whole content (table groups only).
    Restore(RestoreStep),
}

/// The steps of a restore carried by the log (see `storage/restore.rs`).
/// `id` names the restore; steps of any other restore change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreStep {
    /// Opens an empty staging copy, replacing any restore still open.
    Begin { id: u64 },
    /// Adds records: a serialized `mvcc.v1.Command` whose `batch` holds them.
    Batch {
        id: u64,
        #[serde(with = "serde_bytes")]
        records: Vec<u8>,
    },
    /// Makes the staging copy the table's content; `leader_index` becomes
    /// the stored leader index (a follower cluster's `L`).
    Commit { id: u64, leader_index: Option<u64> },
    /// Throws the staging copy away.
    Abort { id: u64 },
    /// Forgets the stored leader index (a follower cluster's `L` becomes 0)
    /// and keeps the content, so the table is copied again (maintenance Reset).
    ResetLeaderIndex,
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
    /// For a restore step: whether the restore it names was open.
    pub restore_open: Option<bool>,
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
