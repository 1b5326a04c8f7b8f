//! One table: apply commands at Raft indices, answer queries from a
//! consistent view, export and install snapshots.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use regatta_proto::mvcc::v1::{Command, CommandResult, Txn};
use rocksdb::{BoundColumnFamily, WriteBatch, DB};

use super::apply;
use super::encoding::{
    data_key, decode_u64, encode_u64, encode_value, Stored, DATA_END, META_APPLIED_INDEX,
    META_LEADER_INDEX, META_RAFT_STATE, META_REVISION,
};
use super::engine::Shared;
use super::error::{Error, Result};
use super::query::{self, RangeQuery, RangeResult, ResponseBudget};
use super::stream::{
    data_record, trailer_record, CommandStreamReader, CommandStreamWriter, Record,
};
use super::txn::{self, TxnOutcome};
use super::view::{DbView, Overlay};

/// Where a table stands: what the last applied entry was and what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// Index of the last Raft entry applied to the table.
    pub applied_index: u64,
    /// Index of the last applied entry that was a user write (the table's revision).
    pub revision: u64,
    /// On a follower cluster: the leader-cluster index of the last replicated entry (`L`).
    pub leader_index: Option<u64>,
}

/// The outcome of applying one entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyResult {
    pub result: CommandResult,
    /// For a TXN: whether its compares held.
    pub txn_succeeded: Option<bool>,
}

/// A read answered from one consistent view, with the revision of that view.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: u64,
}

/// What the trailing DUMMY of an exported snapshot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer {
    /// No trailer (backups).
    None,
    /// The applied index (a leader cluster's Snapshot.Stream, Raft snapshots).
    AppliedIndex,
    /// The stored leader index `L`, if any, and the revision: Raft snapshots
    /// inside a cluster (a follower cluster's `L` must travel with its data).
    LeaderIndex,
}

/// How an installed stream becomes the table's content.
#[derive(Debug, Clone, Default)]
pub struct Install {
    /// The Raft index the new content stands at.
    pub applied_index: u64,
    /// Keep the revisions recorded in the stream (our own Raft snapshots);
    /// otherwise every key gets `applied_index` (restores, cross-cluster copies).
    pub keep_revisions: bool,
    /// Opaque Raft bookkeeping to store with the new content.
    pub raft_state: Option<Vec<u8>>,
}

/// What an install did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    pub keys: u64,
    pub state: TableState,
}

pub(crate) struct TableInner {
    pub(crate) space: super::Space,
    pub(crate) name: Vec<u8>,
    /// Name of the column family holding the current generation of data.
    pub(crate) cf_name: RwLock<String>,
    /// Serialises writers (apply, install) and caches the table's state.
    pub(crate) writer: Mutex<TableState>,
    /// The state as of the last writer to finish, for readers: a snapshot
    /// install holds `writer` for as long as it takes, and must not hold
    /// up metrics, replication workers or anyone else asking.
    pub(crate) published: RwLock<TableState>,
    /// The generation an open restore fills; changed only under `writer`.
    pub(crate) staging: Mutex<Option<Staging>>,
    pub(crate) dropped: AtomicBool,
    /// Forwarded writes waiting for `leader_index` to reach theirs.
    pub(crate) replicated: super::replicated::ReplicatedWaiters,
}

/// The writer lock over the table's state; what the writer leaves is
/// published for [`Table::state`] when it lets go.
pub(super) struct WriterGuard<'a> {
    state: MutexGuard<'a, TableState>,
    published: &'a RwLock<TableState>,
    replicated: &'a super::replicated::ReplicatedWaiters,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = TableState;

    fn deref(&self) -> &TableState {
        &self.state
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut TableState {
        &mut self.state
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        let mut published = self
            .published
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *published = self.state.clone();
        drop(published);
        // After publishing: a woken writer's next read sees the new state.
        self.replicated.reached(self.state.leader_index);
    }
}

/// A generation being filled by an open restore (`storage/restore.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Staging {
    /// Chosen by whoever began the restore; later steps must name it.
    pub(crate) id: u64,
    pub(crate) cf_name: String,
}

impl TableInner {
    pub(crate) fn staging(&self) -> Option<Staging> {
        self.staging
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn set_staging(&self, staging: Option<Staging>) {
        *self
            .staging
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = staging;
    }

    pub(crate) fn take_staging(&self) -> Option<Staging> {
        self.staging
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// A handle to one table; cheap to clone.
#[derive(Clone)]
pub struct Table {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inner: Arc<TableInner>,
}

impl Table {
    pub fn name(&self) -> &[u8] {
        &self.inner.name
    }

    pub(super) fn db(&self) -> &DB {
        &self.shared.db
    }

    /// The column family of the current generation. A concurrent install may
    /// drop it between lookup and use; RocksDB keeps a dropped family readable
    /// while a handle lives, so holding the returned handle is safe.
    pub(super) fn cf(&self) -> Result<Arc<BoundColumnFamily<'_>>> {
        for _ in 0..3 {
            if self.inner.dropped.load(Ordering::Acquire) {
                return Err(Error::TableNotFound);
            }
            let name = self.current_cf_name();
            if let Some(cf) = self.db().cf_handle(&name) {
                return Ok(cf);
            }
        }
        Err(Error::TableNotFound)
    }

    /// Bytes of the table's files on disk (its SST files; memtables not
    /// yet flushed are not counted).
    pub fn disk_bytes(&self) -> Result<u64> {
        let cf = self.cf()?;
        Ok(self
            .db()
            .property_int_value_cf(&cf, "rocksdb.total-sst-files-size")?
            .unwrap_or(0))
    }

    pub(super) fn current_cf_name(&self) -> String {
        match self.inner.cf_name.read() {
            Ok(name) => name.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(super) fn lock_writer(&self) -> WriterGuard<'_> {
        WriterGuard {
            state: self
                .inner
                .writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            published: &self.inner.published,
            replicated: &self.inner.replicated,
        }
    }

    /// The state after the last applied entry (or install), without waiting
    /// for a writer at work.
    pub fn state(&self) -> TableState {
        match self.inner.published.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// On a follower cluster: `None` once this copy holds leader-cluster
    /// index `leader_index` (its `L` is at or past it), else a receiver that
    /// resolves when it does, or errs if the table is dropped first. One
    /// entry per waiter, woken by the writer that gets there.
    pub fn replicated_to(&self, leader_index: u64) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.inner.replicated.wait_for(leader_index)
    }

    /// The opaque Raft bookkeeping stored with the data, if any.
    pub fn raft_state(&self) -> Result<Option<Vec<u8>>> {
        let cf = self.cf()?;
        Ok(self.db().get_cf(&cf, META_RAFT_STATE)?)
    }

    /// Applies `command` as the Raft entry at `index`.
    pub fn apply(&self, index: u64, command: &Command) -> Result<ApplyResult> {
        self.apply_entry(index, Some(command), None)
    }

    /// Applies the entry at `index`: a command, or `None` for an entry with no
    /// user data (a leader's blank entry, a membership change). The applied
    /// index, revision, leader index and `raft_state` are written in the same
    /// batch as the data. Entries at or below the applied index (except
    /// index 0) were applied before and change nothing.
    pub fn apply_entry(
        &self,
        index: u64,
        command: Option<&Command>,
        raft_state: Option<&[u8]>,
    ) -> Result<ApplyResult> {
        let mut state = self.lock_writer();
        let cf = self.cf()?;
        // Index 0 is openraft's initial membership entry, applied before
        // anything else; an applied index of 0 cannot tell it apart.
        if index <= state.applied_index && index > 0 {
            return Ok(ApplyResult {
                result: CommandResult {
                    responses: Vec::new(),
                    revision: state.revision,
                },
                txn_succeeded: None,
            });
        }
        let view = DbView {
            db: self.db(),
            cf: &cf,
            snapshot: None,
        };
        // A replicated command (it carries a leader index) applies only as
        // the next one after the stored `L`: a worker's retry or a stale
        // worker's late proposal changes nothing, on every replica alike.
        let in_order = |command: &&Command| match command.leader_index {
            Some(leader_index) => leader_index == state.leader_index.unwrap_or(0) + 1,
            None => true,
        };
        let command = command.filter(in_order);
        let applied = match command {
            Some(command) => apply::apply(&view, command, index)?,
            None => apply::Applied::default(),
        };
        let mut next = state.clone();
        next.applied_index = index;
        if applied.is_write {
            next.revision = index;
        }
        if let Some(leader_index) = command.and_then(|command| command.leader_index) {
            next.leader_index = Some(leader_index);
        }

        let mut batch = WriteBatch::default();
        if let Some((start, end)) = &applied.changes.removed_span {
            let end = end.as_deref().map_or_else(|| DATA_END.to_vec(), data_key);
            batch.delete_range_cf(&cf, data_key(start), end);
        }
        for (key, value) in &applied.changes.writes {
            match value {
                Some(stored) => batch.put_cf(&cf, data_key(key), encode_value(stored)),
                None => batch.delete_cf(&cf, data_key(key)),
            }
        }
        put_state(&mut batch, &cf, &next);
        if let Some(raft_state) = raft_state {
            batch.put_cf(&cf, META_RAFT_STATE, raft_state);
        }
        self.db().write(batch)?;
        *state = next;
        Ok(ApplyResult {
            result: CommandResult {
                responses: applied.responses,
                revision: state.revision,
            },
            txn_succeeded: applied.txn_succeeded,
        })
    }

    /// Runs `read` against a point-in-time view of the table.
    fn with_snapshot<T>(
        &self,
        read: impl FnOnce(&DbView<'_>) -> Result<T>,
    ) -> Result<Versioned<T>> {
        let cf = self.cf()?;
        let snapshot = self.db().snapshot();
        let view = DbView {
            db: self.db(),
            cf: &cf,
            snapshot: Some(&snapshot),
        };
        let revision = read_state(&view)?.revision;
        Ok(Versioned {
            value: read(&view)?,
            revision,
        })
    }

    /// A range read (`features/kv_range.feature`) from one consistent view.
    pub fn range(&self, query: &RangeQuery) -> Result<Versioned<RangeResult>> {
        self.with_snapshot(|view| query::range(view, query, &mut ResponseBudget::default()))
    }

    /// [`Table::range`], unless it would visit more than `max_visited`
    /// stored pairs: then `None`, having read no more than that.
    pub fn range_within(
        &self,
        query: &RangeQuery,
        max_visited: usize,
    ) -> Result<Option<Versioned<RangeResult>>> {
        let found = self.with_snapshot(|view| {
            query::range_within(view, query, &mut ResponseBudget::default(), max_visited)
        })?;
        Ok(found.value.map(|value| Versioned {
            value,
            revision: found.revision,
        }))
    }

    /// Streams a range read (IterateRange) from one point-in-time view,
    /// taken now and held until the last message: `emit` gets each message
    /// and the view's revision, and returning false ends the stream.
    pub fn iterate(
        &self,
        query: &RangeQuery,
        sizes: query::MessageSizes,
        mut emit: impl FnMut(RangeResult, u64) -> bool,
    ) -> Result<()> {
        self.with_snapshot(|view| {
            let revision = read_state(view)?.revision;
            query::iterate(view, query, sizes, |message| emit(message, revision))
        })
        .map(|_| ())
    }

    /// Evaluates a read-only Txn from one consistent view. Write ops, which
    /// the API never sends here, are evaluated and then discarded.
    pub fn txn_read(&self, request: &Txn) -> Result<Versioned<TxnOutcome>> {
        debug_assert!(txn::is_read_only(request));
        self.with_snapshot(|view| {
            let mut overlay = Overlay::new(view);
            txn::run(&mut overlay, request, 0, &mut ResponseBudget::default())
        })
    }

    /// Writes a consistent copy of the table in the command-stream format:
    /// one PUT record per key, ascending, then the trailer asked for.
    /// Memory use is constant whatever the table's size.
    pub fn write_snapshot<W: Write>(&self, out: W, trailer: Trailer) -> Result<(TableState, W)> {
        let (state, _, out) = self.export(out, trailer)?;
        Ok((state, out))
    }

    /// [`Table::write_snapshot`], also returning the Raft state stored in
    /// the same point-in-time view (what a Raft snapshot's meta must match).
    pub fn export<W: Write>(
        &self,
        out: W,
        trailer: Trailer,
    ) -> Result<(TableState, Option<Vec<u8>>, W)> {
        let cf = self.cf()?;
        let snapshot = self.db().snapshot();
        let view = DbView {
            db: self.db(),
            cf: &cf,
            snapshot: Some(&snapshot),
        };
        self.export_view(&view, out, trailer)
    }

    /// Writes the content of `view` (a point-in-time view of the current
    /// generation) and the trailer asked for.
    pub(super) fn export_view<W: Write>(
        &self,
        view: &DbView<'_>,
        out: W,
        trailer: Trailer,
    ) -> Result<(TableState, Option<Vec<u8>>, W)> {
        let state = read_state(view)?;
        let raft_state = view
            .db
            .get_cf_opt(view.cf, META_RAFT_STATE, &view.read_options())?;
        let mut writer = CommandStreamWriter::new(out);
        self.write_records(view, &mut writer)?;
        let leader_index = match trailer {
            Trailer::None => None,
            Trailer::AppliedIndex => Some(Some(state.applied_index)),
            Trailer::LeaderIndex => Some(state.leader_index),
        };
        if let Some(leader_index) = leader_index {
            writer.write(&trailer_record(
                &self.inner.name,
                leader_index,
                Some(state.revision),
            ))?;
        }
        Ok((state, raft_state, writer.finish()?))
    }

    /// One PUT record per key of `view`, ascending.
    pub(super) fn write_records<W: Write>(
        &self,
        view: &DbView<'_>,
        writer: &mut CommandStreamWriter<W>,
    ) -> Result<()> {
        for item in crate::storage::view::View::scan(view, &[], None) {
            let (key, stored) = item?;
            writer.write(&data_record(&self.inner.name, txn::key_value(key, stored)))?;
        }
        Ok(())
    }

    /// Replaces the table's content with a command stream, atomically:
    /// readers see the old content until the switch, and a malformed stream
    /// changes nothing. Memory use is constant whatever the stream's size.
    pub fn install_snapshot(&self, input: impl Read, install: Install) -> Result<Installed> {
        self.install_generations(input, None::<(u64, &[u8])>, install)
    }

    /// Fills a new current generation from `input` and, when `staging` is
    /// given, a new staging generation for the open restore it names; then
    /// switches to both in one catalogue write. Any restore open here before
    /// is replaced.
    pub(super) fn install_generations(
        &self,
        input: impl Read,
        staging: Option<(u64, impl Read)>,
        install: Install,
    ) -> Result<Installed> {
        let mut state = self.lock_writer();
        if self.inner.dropped.load(Ordering::Acquire) {
            return Err(Error::TableNotFound);
        }
        let new_cf_name = self.shared.create_generation()?;
        let installed = match self.fill_generation(&new_cf_name, input, &install) {
            Ok(installed) => installed,
            Err(err) => {
                self.shared.discard_generation(&new_cf_name);
                return Err(err);
            }
        };
        let staging = match staging {
            None => None,
            Some((id, records)) => {
                let cf_name = self.shared.create_generation()?;
                let filled = self.fill_generation(
                    &cf_name,
                    records,
                    &Install {
                        keep_revisions: true,
                        raft_state: None,
                        ..install
                    },
                );
                if let Err(err) = filled {
                    self.shared.discard_generation(&cf_name);
                    self.shared.discard_generation(&new_cf_name);
                    return Err(err);
                }
                Some(Staging { id, cf_name })
            }
        };
        self.shared
            .switch_generation(&self.inner, &new_cf_name, staging)?;
        *state = installed.state.clone();
        Ok(installed)
    }

    pub(super) fn fill_generation(
        &self,
        cf_name: &str,
        input: impl Read,
        install: &Install,
    ) -> Result<Installed> {
        /// Bytes per write batch while filling; bounds memory.
        const BATCH_BYTES: usize = 4 * 1024 * 1024;
        let cf = self
            .db()
            .cf_handle(cf_name)
            .ok_or_else(|| Error::Corrupt(format!("column family {cf_name} vanished")))?;
        let mut state = TableState {
            applied_index: install.applied_index,
            revision: install.applied_index,
            leader_index: None,
        };
        let mut keys = 0u64;
        let mut batch = WriteBatch::default();
        for record in CommandStreamReader::new(input) {
            match record? {
                Record::Data(kv) => {
                    let recorded = |revision: i64| {
                        u64::try_from(revision)
                            .ok()
                            .filter(|revision| install.keep_revisions && *revision > 0)
                            .unwrap_or(install.applied_index)
                    };
                    let stored = Stored {
                        create_revision: recorded(kv.create_revision),
                        mod_revision: recorded(kv.mod_revision),
                        value: kv.value,
                    };
                    batch.put_cf(&cf, data_key(&kv.key), encode_value(&stored));
                    keys += 1;
                    if batch.size_in_bytes() >= BATCH_BYTES {
                        self.db().write(std::mem::take(&mut batch))?;
                    }
                }
                Record::Trailer {
                    leader_index,
                    revision,
                } => {
                    state.leader_index = leader_index;
                    if let Some(revision) = revision.filter(|_| install.keep_revisions) {
                        state.revision = revision;
                    }
                }
            }
        }
        put_state(&mut batch, &cf, &state);
        if let Some(raft_state) = &install.raft_state {
            batch.put_cf(&cf, META_RAFT_STATE, raft_state);
        }
        self.db().write(batch)?;
        // The new generation must be on disk before the catalogue points at it.
        self.db().flush_cf(&cf)?;
        Ok(Installed { keys, state })
    }
}

pub(super) fn put_state(
    batch: &mut WriteBatch,
    cf: &Arc<BoundColumnFamily<'_>>,
    state: &TableState,
) {
    batch.put_cf(cf, META_APPLIED_INDEX, encode_u64(state.applied_index));
    batch.put_cf(cf, META_REVISION, encode_u64(state.revision));
    match state.leader_index {
        Some(leader_index) => batch.put_cf(cf, META_LEADER_INDEX, encode_u64(leader_index)),
        None => batch.delete_cf(cf, META_LEADER_INDEX),
    }
}

/// Reads the table's state from a view (live or snapshot).
pub(crate) fn read_state(view: &DbView<'_>) -> Result<TableState> {
    let mut options = rocksdb::ReadOptions::default();
    if let Some(snapshot) = view.snapshot {
        options.set_snapshot(snapshot);
    }
    let read = |key: &[u8], what: &str| -> Result<Option<u64>> {
        view.db
            .get_pinned_cf_opt(view.cf, key, &options)?
            .map(|raw| decode_u64(&raw, what))
            .transpose()
    };
    Ok(TableState {
        applied_index: read(META_APPLIED_INDEX, "applied index")?.unwrap_or_default(),
        revision: read(META_REVISION, "revision")?.unwrap_or_default(),
        leader_index: read(META_LEADER_INDEX, "leader index")?,
    })
}
