//! openraft's state machine over a storage [`Table`]: the applied log id and
//! membership are stored in the same write batch as the data they cover.
//! One type serves table groups and the metadata group (whose table holds
//! the catalogue).

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use prost::Message;
use regatta_proto::mvcc::v1::Command;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::blocking;
use super::failure::{DiskHealth, StorageFailure};
use super::snapshot_file::{self, SnapshotDir, SnapshotFile};
use super::types::{
    Entry, GroupId, LogId, Request, Response, RestoreStep, Snapshot, SnapshotData, SnapshotMeta,
    StoredMembership, TypeConfig,
};
use crate::cluster::catalogue;
use crate::storage::{Install, Space, Storage, Table};

/// Raft bookkeeping stored with the data (`raft_state` of the table).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RaftState {
    /// The group the data belongs to: a table deleted and created again gets
    /// a new shard id, and data of the old one must not be taken for it.
    #[serde(default)]
    group: GroupId,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Index of the last snapshot installed from a leader. openraft keeps
    /// the local log when it is shorter than the snapshot, so entries at or
    /// below this index may be another term's, never committed, until the
    /// purge behind the snapshot removes them: they are never read as
    /// committed (`table_log.rs`).
    #[serde(default)]
    installed: Option<u64>,
}

fn sm_err(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(err)
}

fn read_err(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(err)
}

/// Reports a failed write of the state machine to the node (which stops),
/// unless the table itself is gone: a group whose table was dropped (the
/// table deleted, or deleted and created again) can still be applying when
/// its storage goes. The group stops either way; the node goes on.
fn failed(failure: &StorageFailure, what: &str, err: io::Error) -> io::Error {
    let table_gone = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<crate::storage::Error>())
        .is_some_and(|inner| matches!(inner, crate::storage::Error::TableNotFound));
    if table_gone {
        tracing::info!(%what, "the table was dropped under its group");
        return err;
    }
    failure.record(what, err)
}

/// The last snapshot built or installed, shared between the state machine
/// and its snapshot builders (openraft opens the file again to send it).
type CurrentSnapshot = Arc<Mutex<Option<(SnapshotMeta, PathBuf)>>>;

/// Makes the snapshot at `path` the current one; removes the file of the
/// one it replaces.
fn set_current(current: &CurrentSnapshot, meta: SnapshotMeta, path: PathBuf) {
    let old = current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace((meta, path.clone()));
    if let Some((_, old)) = old {
        if old != path {
            snapshot_file::remove(&old);
        }
    }
}

/// The file name of the current snapshot described by `meta`.
fn current_path(snapshots: &SnapshotDir, meta: &SnapshotMeta) -> PathBuf {
    let (index, term) = meta
        .last_log_id
        .map_or((0, 0), |id| (id.index, id.leader_id.term));
    snapshots.current(index, term)
}

/// Bytes buffered while a snapshot is written to its file.
const WRITE_BUFFER: usize = 1024 * 1024;

/// The state machine of one group.
pub struct GroupStateMachine {
    storage: Arc<Storage>,
    table: Table,
    state: RaftState,
    /// The last snapshot built or installed, shared with snapshot builders.
    current: CurrentSnapshot,
    /// Where this group's snapshot files are.
    snapshots: SnapshotDir,
    /// The applied index, for readers waiting on a read index.
    applied: watch::Sender<u64>,
    /// `RaftState::installed` (0 for none), for readers of the log.
    installed: watch::Sender<u64>,
    /// Where a failed write is reported (the node stops), and whether the
    /// disk has room for a snapshot.
    health: DiskHealth,
}

/// What a group's state machine publishes as it goes.
pub struct Published {
    /// The applied index.
    pub applied: watch::Receiver<u64>,
    /// Index of the last snapshot installed from a leader (0: none); log
    /// entries at or below it are not to be trusted.
    pub installed: watch::Receiver<u64>,
}

impl GroupStateMachine {
    /// Opens the state machine of `group` over storage table `name` of
    /// `space`. Data left by an older group of the same name is dropped
    /// first.
    pub fn open(
        storage: Arc<Storage>,
        space: Space,
        name: &[u8],
        group: GroupId,
        health: DiskHealth,
    ) -> io::Result<(Self, Published)> {
        let mut table = storage.create_table_in(space, name).map_err(sm_err)?;
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
            storage.drop_table_in(space, name).map_err(sm_err)?;
            table = storage.create_table_in(space, name).map_err(sm_err)?;
            state = RaftState::default();
        }
        state.group = group;
        let snapshots = SnapshotDir::open(storage.snapshot_dir(), group)?;
        let (applied, applied_rx) = watch::channel(state.last_applied.map_or(0, |id| id.index));
        let (installed, installed_rx) = watch::channel(state.installed.unwrap_or(0));
        Ok((
            GroupStateMachine {
                storage,
                table,
                state,
                current: Arc::default(),
                snapshots,
                applied,
                installed,
                health,
            },
            Published {
                applied: applied_rx,
                installed: installed_rx,
            },
        ))
    }

    fn apply_one(&mut self, entry: Entry) -> io::Result<Response> {
        fail::fail_point!("state-machine-write", |_| Err(io::Error::other(
            "injected I/O error (failpoint state-machine-write)"
        )));
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

    /// Installs a snapshot received from the group's leader.
    async fn install(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> io::Result<()> {
        fail::fail_point!("snapshot-install", |_| Err(io::Error::other(
            "injected I/O error (failpoint snapshot-install)"
        )));
        let state = RaftState {
            group: self.state.group,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            installed: meta.last_log_id.map(|id| id.index),
        };
        let raft_state = serde_json::to_vec(&state).map_err(sm_err)?;
        let received = snapshot.path().to_path_buf();
        drop(snapshot);
        let (table, signature) = (self.table.clone(), meta.signature());
        let applied_index = meta.last_log_id.map_or(0, |id| id.index);
        let path = current_path(&self.snapshots, meta);
        let (kept, ours) = (path.clone(), self.snapshots.holds(&received));
        // Writing a whole table, read from the file as it goes: on a
        // blocking thread (see build_snapshot). The file is then kept as
        // the current snapshot, for followers that need one from here.
        blocking(move || {
            table
                .install_raft_file(
                    &received,
                    Install {
                        applied_index,
                        keep_revisions: true,
                        raft_state: Some(raft_state),
                    },
                )
                .map_err(|err| match err {
                    crate::storage::Error::TableNotFound => sm_err(err),
                    err => io::Error::other(format!("installing snapshot {signature:?}: {err}")),
                })?;
            if ours {
                snapshot_file::promote(&received, &kept)
            } else {
                // Another group's file (a test hands one over): copied.
                std::fs::copy(&received, &kept)?;
                std::fs::File::open(&kept)?.sync_all()
            }
        })
        .await?;
        self.state = state;
        set_current(&self.current, meta.clone(), path);
        // Published before the applied index, so a reader that sees the
        // new applied index also sees the floor under it.
        self.installed
            .send_replace(meta.last_log_id.map_or(0, |id| id.index));
        self.applied
            .send_replace(meta.last_log_id.map_or(0, |id| id.index));
        Ok(())
    }
}

/// Builds snapshots from a point-in-time view of the table.
pub struct SnapshotBuilder {
    failure: StorageFailure,
    storage: Arc<Storage>,
    table: Table,
    current: CurrentSnapshot,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let failure = self.failure.clone();
        self.build()
            .await
            .map_err(|err| failed(&failure, "building a snapshot", err))
    }
}

impl SnapshotBuilder {
    async fn build(&mut self) -> io::Result<Snapshot> {
        fail::fail_point!("snapshot-build", |_| Err(io::Error::other(
            "injected I/O error (failpoint snapshot-build)"
        )));
        // A WAL sync and a scan of the whole table, written to a file as it
        // is read: on a blocking thread, so the runtime's workers keep
        // serving other tables.
        let (storage, table) = (self.storage.clone(), self.table.clone());
        let part = self.snapshots.part("build");
        let written = part.clone();
        let raft_state = blocking(move || {
            // The log is purged up to this snapshot next: what it covers must be on disk.
            storage.make_durable().map_err(sm_err)?;
            let file = std::fs::File::create_new(&written)?;
            let out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
            let (_, raft_state, out) = table.export_raft_to(out).map_err(read_err)?;
            out.into_inner().map_err(|err| err.into_error())?;
            Ok(raft_state)
        })
        .await;
        let raft_state = match raft_state {
            Ok(raft_state) => raft_state,
            Err(err) => {
                snapshot_file::remove(&part);
                return Err(err);
            }
        };
        let state: RaftState = match raft_state {
            Some(raw) => serde_json::from_slice(&raw).map_err(read_err)?,
            None => RaftState::default(),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership,
        };
        let path = current_path(&self.snapshots, &meta);
        let promoted = path.clone();
        blocking(move || snapshot_file::promote(&part, &promoted)).await?;
        let snapshot = SnapshotFile::open(&path).await?;
        set_current(&self.current, meta.clone(), path);
        Ok(Snapshot { meta, snapshot })
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
            let response = self.apply_one(entry).map_err(|err| {
                failed(
                    &self.health.failure,
                    &format!("applying log entry {index}"),
                    err,
                )
            })?;
            // Published before the writer hears back: a write acknowledged
            // is one a read index on this node already covers.
            self.applied.send_replace(index);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        // A snapshot file is a copy of the table: not while the disk is
        // below its reserve. openraft asks again later; the log keeps
        // everything meanwhile.
        if let Some(reason) = self.health.space.refusal().filter(|_| !force) {
            tracing::warn!(%reason, "snapshot deferred");
            return None;
        }
        #[allow(deprecated)]
        Some(self.get_snapshot_builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            failure: self.health.failure.clone(),
            storage: self.storage.clone(),
            table: self.table.clone(),
            current: self.current.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let failure = self.health.failure.clone();
        self.install(meta, snapshot)
            .await
            .map_err(|err| failed(&failure, "installing a snapshot", err))
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        // A build finishing now may replace (and remove) the file between
        // the look and the open: look again.
        for _ in 0..3 {
            let current = self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some((meta, path)) = current else {
                return Ok(None);
            };
            match SnapshotFile::open(&path).await {
                Ok(snapshot) => return Ok(Some(Snapshot { meta, snapshot })),
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::other("the current snapshot kept being replaced"))
    }
}

/// Snapshots arrive in chunks over the InstallSnapshot RPC (openraft-legacy's
/// receiver), written to a file as they come.
impl SnapshotReceiverFactory<TypeConfig> for GroupStateMachine {
    type SnapshotReceiver = SnapshotData;

    async fn begin_receiving_snapshot(&mut self) -> io::Result<SnapshotData> {
        // One transfer at a time: what is left of earlier ones was given up.
        self.snapshots.remove_parts("receive");
        SnapshotFile::create(&self.snapshots.part("receive")).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::testing::common::log_id;

    use super::*;
    use crate::storage::StorageOptions;

    /// A snapshot installed at index 50 sets the floor under which the
    /// local log is not trusted, for readers now and after a restart.
    #[tokio::test]
    async fn an_installed_snapshot_is_the_floor_of_the_trusted_log() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let open_storage = || {
            Arc::new(
                Storage::open(&dir.path().join("sm"), &StorageOptions::default()).expect("storage"),
            )
        };
        let storage = open_storage();
        let (mut source, _) = GroupStateMachine::open(
            storage.clone(),
            Space::User,
            b"source",
            10001,
            DiskHealth::default(),
        )
        .expect("source");
        let built = source
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        let (mut target, published) = GroupStateMachine::open(
            storage.clone(),
            Space::User,
            b"target",
            10002,
            DiskHealth::default(),
        )
        .expect("target");
        assert_eq!(*published.installed.borrow(), 0, "nothing installed yet");
        let meta = SnapshotMeta {
            last_log_id: Some(log_id::<TypeConfig>(3, 1, 50)),
            last_membership: built.meta.last_membership.clone(),
        };
        target
            .install_snapshot(&meta, built.snapshot)
            .await
            .expect("install");
        assert_eq!(*published.installed.borrow(), 50);
        assert_eq!(*published.applied.borrow(), 50);
        drop((source, target, published));
        drop(storage);

        let (_, reopened) = GroupStateMachine::open(
            open_storage(),
            Space::User,
            b"target",
            10002,
            DiskHealth::default(),
        )
        .expect("reopen");
        assert_eq!(*reopened.installed.borrow(), 50, "kept across a restart");
    }

    /// A group still applying when its table is dropped (deleted, or
    /// deleted and created again) fails that apply, but the node goes on:
    /// found by the wire fuzzer, which stopped a node this way.
    #[tokio::test]
    async fn a_table_dropped_under_its_group_stops_the_group_not_the_node() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let storage = Arc::new(
            Storage::open(&dir.path().join("sm"), &StorageOptions::default()).expect("storage"),
        );
        let health = DiskHealth::default();
        let failures = health.failure.subscribe();
        let (mut machine, _) =
            GroupStateMachine::open(storage.clone(), Space::User, b"gone", 10001, health)
                .expect("open");
        storage.drop_table_in(Space::User, b"gone").expect("drop");
        let entry = Entry {
            log_id: log_id::<TypeConfig>(1, 1, 1),
            payload: EntryPayload::Blank,
        };
        let applied = machine
            .apply(futures::stream::iter(vec![Ok((entry, None))]))
            .await;
        assert!(applied.is_err(), "nothing to apply to");
        assert!(failures.borrow().is_none(), "not a storage failure");
    }
}
