//! openraft type configuration, declared once; other modules use the short
//! aliases below instead of spelling out generic parameters.

use openraft::type_config::alias;
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
    /// Creates a table only if absent (Tables API): the response's shard id
    /// is set only when this entry created it. (New variants go last: the
    /// log holds these by position.)
    CreateNewTable { name: Vec<u8> },
    /// Deletes a table only if present (Tables API): the response's shard
    /// id is the deleted table's, unset when there was none.
    DeleteExistingTable { name: Vec<u8> },
    /// On a follower cluster: creates a table (a no-op when it exists) as
    /// the copy of the leader cluster's shard `origin`.
    CreateCopy { name: Vec<u8>, origin: u64 },
    /// On a follower cluster: records that an existing table copies the
    /// leader cluster's shard `origin` (tables created before origins were
    /// kept); a no-op when the table does not exist.
    RecordOrigin { name: Vec<u8>, origin: u64 },
    /// Records node `id`, reached at Raft address `address`, as a member
    /// every group is to count as a voter (`node/membership.rs`). Refused
    /// (the response's shard id unset) when `id` was removed before: ids
    /// are never reused. Otherwise the response's shard id is `id`.
    AddMember { id: NodeId, address: String },
    /// Records node `id` as removed: every group is to stop counting it,
    /// and its id is never taken again.
    RemoveMember { id: NodeId },
}

/// What applying an entry produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Serialized `mvcc.v1.CommandResult` of a table write.
    #[serde(with = "serde_bytes")]
    pub command_result: Vec<u8>,
    /// For a TXN: whether its compares held.
    pub txn_succeeded: Option<bool>,
    /// For a catalogue change: the table's shard id, if it exists afterwards
    /// (`CreateNewTable`, `DeleteExistingTable`: see there).
    pub shard_id: Option<GroupId>,
    /// For a restore step: whether the restore it names was open.
    pub restore_open: Option<bool>,
}

impl std::fmt::Display for Request {
    /// What a log line needs: the kind and size, never the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Table(command) => write!(f, "table write ({} bytes)", command.len()),
            Request::Meta(MetaCommand::CreateTable { .. }) => f.write_str("create table"),
            Request::Meta(MetaCommand::DeleteTable { .. }) => f.write_str("delete table"),
            Request::Meta(MetaCommand::CreateNewTable { .. }) => f.write_str("create new table"),
            Request::Meta(MetaCommand::DeleteExistingTable { .. }) => {
                f.write_str("delete existing table")
            }
            Request::Meta(MetaCommand::CreateCopy { origin, .. }) => {
                write!(f, "create copy of leader shard {origin}")
            }
            Request::Meta(MetaCommand::RecordOrigin { origin, .. }) => {
                write!(f, "record origin leader shard {origin}")
            }
            Request::Meta(MetaCommand::AddMember { id, address }) => {
                write!(f, "add member {id} at {address}")
            }
            Request::Meta(MetaCommand::RemoveMember { id }) => write!(f, "remove member {id}"),
            Request::Restore(RestoreStep::Begin { id }) => write!(f, "restore {id} begin"),
            Request::Restore(RestoreStep::Batch { id, records }) => {
                write!(f, "restore {id} batch ({} bytes)", records.len())
            }
            Request::Restore(RestoreStep::Commit { id, .. }) => write!(f, "restore {id} commit"),
            Request::Restore(RestoreStep::Abort { id }) => write!(f, "restore {id} abort"),
            Request::Restore(RestoreStep::ResetLeaderIndex) => f.write_str("reset leader index"),
        }
    }
}

openraft::declare_raft_types!(
    /// Regatta's Raft types: one configuration for the metadata group and every table group.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// What a snapshot is carried in: a file (`snapshot_file.rs`).
pub type SnapshotData = super::snapshot_file::SnapshotFile;

pub type Raft = openraft::Raft<TypeConfig, super::state_machine::GroupStateMachine>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type StorageError = openraft::StorageError<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type RaftError<E = openraft::errors::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
pub type CheckIsLeaderError = openraft::errors::LinearizableReadError<TypeConfig>;
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
