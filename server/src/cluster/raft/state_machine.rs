//! openraft's state machine over a storage [`Table`]: the applied log id and
//! membership are stored in the same write batch as the data they cover.
//! One type serves table groups and the metadata group (whose table holds
//! the catalogue).

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use prost::Message;
use regatta_proto::mvcc::v1::Command;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{
    Entry, GroupId, LogId, Request, Response, RestoreStep, Snapshot, SnapshotData, SnapshotMeta,
    StoredMembership, TypeConfig,
};
use crate::cluster::catalogue;
use crate::storage::{Install, Storage, Table};

/// Raft bookkeeping stored with the data (`raft_state` of the table).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RaftState {
    /// The group the data belongs to: a table deleted and created again gets
    /// a new shard id, and data of the old one must not be taken for it.
    #[serde(default)]
    group: GroupId,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

fn sm_err(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(err)
}

fn read_err(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(err)
}

/// The last snapshot built or installed, shared between the state machine
/// and its snapshot builders (openraft fetches the bytes again to send them).
type CurrentSnapshot = Arc<Mutex<Option<(SnapshotMeta, Arc<Vec<u8>>)>>>;

/// The state machine of one group.
pub struct GroupStateMachine {
    storage: Arc<Storage>,
    table: Table,
    state: RaftState,
    /// The last snapshot built or installed, shared with snapshot builders.
    current: CurrentSnapshot,
    /// The applied index, for readers waiting on a read index.
    applied: watch::Sender<u64>,
}

impl GroupStateMachine {
    /// Opens the state machine of `group` over storage table `name`. Data
    /// left by an older group of the same name is dropped first.
    pub fn open(
        storage: Arc<Storage>,
        name: &[u8],
        group: GroupId,
    ) -> io::Result<(Self, watch::Receiver<u64>)> {
        let mut table = storage.create_table(name).map_err(sm_err)?;
        let mut state: RaftState = match table.raft_state().map_err(read_err)? {
            Some(raw) => serde_json::from_slice(&raw).map_err(read_err)?,
            None => RaftState::default(),
        };
        if state.last_applied.is_some() && state.group != group {
            tracing::info!(
                group,
                old_group = state.group,
                "dropping data of an older table of the same name"
            );
            storage.drop_table(name).map_err(sm_err)?;
            table = storage.create_table(name).map_err(sm_err)?;
            state = RaftState::default();
        }
        state.group = group;
        let (applied, applied_rx) = watch::channel(state.last_applied.map_or(0, |id| id.index));
        Ok((
            GroupStateMachine {
                storage,
                table,
                state,
                current: Arc::default(),
                applied,
            },
            applied_rx,
        ))
    }

    fn apply_one(&mut self, entry: Entry) -> io::Result<Response> {
        let index = entry.log_id.index;
        self.state.last_applied = Some(entry.log_id);
        if let EntryPayload::Membership(membership) = &entry.payload {
            self.state.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
        }
        let raft_state = serde_json::to_vec(&self.state).map_err(sm_err)?;
        let mut response = Response::default();
        match entry.payload {
            EntryPayload::Normal(Request::Table(bytes)) => {
                match Command::decode(bytes.as_slice()) {
                    Ok(command) => {
                        let applied = self
                            .table
                            .apply_entry(index, Some(&command), Some(&raft_state))
                            .map_err(sm_err)?;
                        response.command_result = applied.result.encode_to_vec();
                        response.txn_succeeded = applied.txn_succeeded;
                    }
                    Err(err) => {
                        // The API encodes what it proposes, so this is a bug; apply
                        // nothing, deterministically, on every replica.
                        tracing::error!(index, error = %err, "undecodable command in the log");
                        self.table
                            .apply_entry(index, None, Some(&raft_state))
                            .map_err(sm_err)?;
                    }
                }
            }
            EntryPayload::Normal(Request::Restore(step)) => {
                response.restore_open = Some(
                    self.apply_restore(index, step, &raft_state)
                        .map_err(sm_err)?,
                );
            }
            EntryPayload::Normal(Request::Meta(command)) => {
                response.shard_id =
                    catalogue::apply(&self.table, index, &command, &raft_state).map_err(sm_err)?;
            }
            EntryPayload::Blank | EntryPayload::Membership(_) => {
                self.table
                    .apply_entry(index, None, Some(&raft_state))
                    .map_err(sm_err)?;
            }
        }
        Ok(response)
    }
}

impl GroupStateMachine {
    fn apply_restore(
        &self,
        index: u64,
        step: RestoreStep,
        raft_state: &[u8],
    ) -> crate::storage::Result<bool> {
        let raft_state = Some(raft_state);
        match step {
            RestoreStep::Begin { id } => self
                .table
                .restore_begin(index, id, raft_state)
                .map(|()| true),
            RestoreStep::Batch { id, records } => {
                let records = match Command::decode(records.as_slice()) {
                    Ok(command) => command.batch,
                    Err(err) => {
                        // Proposed by this cluster's own code, so a bug: apply
                        // nothing, the same on every replica.
                        tracing::error!(index, error = %err, "undecodable restore batch in the log");
                        Vec::new()
                    }
                };
                self.table.restore_batch(index, id, &records, raft_state)
            }
            RestoreStep::Commit { id, leader_index } => {
                let committed = self
                    .table
                    .restore_commit(index, id, leader_index, raft_state)?;
                if committed {
                    tracing::info!(
                        index,
                        restore = id,
                        ?leader_index,
                        "restore committed: the table has its new content"
                    );
                }
                Ok(committed)
            }
            RestoreStep::Abort { id } => self.table.restore_abort(index, id, raft_state),
            RestoreStep::ResetLeaderIndex => self
                .table
                .reset_leader_index(index, raft_state)
                .map(|()| true),
        }
    }
}

/// Builds snapshots from a point-in-time view of the table.
pub struct SnapshotBuilder {
    storage: Arc<Storage>,
    table: Table,
    current: CurrentSnapshot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        // The log is purged up to this snapshot next: what it covers must be on disk.
        self.storage.make_durable().map_err(sm_err)?;
        let (_, raft_state, bytes) = self.table.export_raft().map_err(read_err)?;
        let state: RaftState = match raft_state {
            Some(raw) => serde_json::from_slice(&raw).map_err(read_err)?,
            None => RaftState::default(),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership,
        };
        let bytes = Arc::new(bytes);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(bytes.to_vec()),
        })
    }
}

impl RaftStateMachine<TypeConfig> for GroupStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.log_id.index;
            let response = self.apply_one(entry)?;
            // Published before the writer hears back: a write acknowledged
            // is one a read index on this node already covers.
            self.applied.send_replace(index);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            storage: self.storage.clone(),
            table: self.table.clone(),
            current: self.current.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let state = RaftState {
            group: self.state.group,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let raft_state = serde_json::to_vec(&state).map_err(sm_err)?;
        let bytes = snapshot.into_inner();
        self.table
            .install_raft(
                bytes.as_slice(),
                Install {
                    applied_index: meta.last_log_id.map_or(0, |id| id.index),
                    keep_revisions: true,
                    raft_state: Some(raft_state),
                },
            )
            .map_err(|err| {
                io::Error::other(format!("installing snapshot {:?}: {err}", meta.signature()))
            })?;
        self.state = state;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), Arc::new(bytes)));
        self.applied
            .send_replace(meta.last_log_id.map_or(0, |id| id.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(current.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Cursor::new(bytes.to_vec()),
        }))
    }
}

/// Snapshots arrive in chunks over the InstallSnapshot RPC (openraft-legacy's
/// receiver); they are gathered in memory until the last one.
impl SnapshotReceiverFactory<TypeConfig> for GroupStateMachine {
    type SnapshotReceiver = SnapshotData;

    async fn begin_receiving_snapshot(&mut self) -> io::Result<SnapshotData> {
        Ok(Cursor::new(Vec::new()))
    }
}
