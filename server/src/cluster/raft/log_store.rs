//! The Raft log and vote of every group of a node, in one RocksDB
//! (`--raft.node-host-dir`, or `--raft.wal-dir`).
//!
//! Appends are written unsynced (readable at once) and their `IOFlushed`
//! callbacks queued to one flusher thread, which syncs the WAL once for
//! everything queued and then completes the callbacks in order: appends of
//! concurrent groups share one fsync (group commit). Votes and truncations
//! are synced inline. One WAL orders every write, so a sync covers all
//! earlier writes of every group. openraft 0.10 does not wait for a flush
//! before it appends more (`IOFlushed`), so many appends of one group share
//! a sync too, while the leader counts its own log only once completed.
//! After a failed sync nothing is ever reported durable again: every pending
//! and later callback fails, and the groups stop.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

use super::failure::StorageFailure;
use super::types::{Entry, GroupId, LogId, Request, TypeConfig, Vote};

const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_PURGED: u8 = 3;

fn entry_key(group: GroupId, index: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = KIND_ENTRY;
    key[1..9].copy_from_slice(&group.to_be_bytes());
    key[9..].copy_from_slice(&index.to_be_bytes());
    key
}

fn meta_key(kind: u8, group: GroupId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = kind;
    key[1..].copy_from_slice(&group.to_be_bytes());
    key
}

type FlushCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// How well group commit works: appends made durable, and the WAL syncs it took.
#[derive(Debug, Default)]
pub struct FlushStats {
    pub appends: std::sync::atomic::AtomicU64,
    pub syncs: std::sync::atomic::AtomicU64,
}

/// The node's log database and its flusher.
pub struct LogDb {
    db: Arc<DB>,
    stats: Arc<FlushStats>,
    failure: StorageFailure,
    flusher: Option<mpsc::Sender<FlushCallback>>,
    flusher_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogDb {
    fn drop(&mut self) {
        // Closing the queue ends the flusher, which holds the database open.
        self.flusher.take();
        if let Some(thread) = self.flusher_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bytes of memtable the log database may hold before it flushes.
const LOG_MEMTABLE_BUDGET: usize = 64 * 1024 * 1024;

impl LogDb {
    pub fn open(dir: &Path) -> io::Result<Arc<LogDb>> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_manual_wal_flush(true);
        // Memtables of every group's log together: a bound on memory however
        // large the entries that pass through (restores write 1 MiB ones).
        options.set_db_write_buffer_size(LOG_MEMTABLE_BUDGET);
        // A record cut short at the end of the WAL is an append a crash
        // interrupted, never acknowledged: dropped. Anything else that fails
        // its checksum refuses the start (RocksDB's default would silently
        // replay up to it and drop every acknowledged entry after it).
        options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        let db = Arc::new(DB::open(&options, dir).map_err(|err| {
            let dir = dir.display().to_string();
            let suspects = crate::storage::suspects(&dir, &err);
            io::Error::other(format!("opening the Raft log in {dir}: {err}{suspects}"))
        })?);
        let (flusher, queue) = mpsc::channel::<FlushCallback>();
        let flush_db = db.clone();
        let stats = Arc::new(FlushStats::default());
        let flush_stats = stats.clone();
        let failure = StorageFailure::default();
        let flush_failure = failure.clone();
        let flusher_thread = std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || run_flusher(&flush_db, &queue, &flush_stats, &flush_failure))?;
        Ok(Arc::new(LogDb {
            db,
            stats,
            failure,
            flusher: Some(flusher),
            flusher_thread: Some(flusher_thread),
        }))
    }

    /// The log of one group.
    pub fn group(self: &Arc<Self>, group: GroupId) -> GroupLogStore {
        GroupLogStore {
            log: self.clone(),
            group,
        }
    }

    /// The node's first storage failure (this log's or a state machine's).
    pub fn failure(&self) -> &StorageFailure {
        &self.failure
    }

    /// Group-commit counters since the database was opened.
    pub fn stats(&self) -> &FlushStats {
        &self.stats
    }

    /// Approximate bytes of a group's log entries on disk (SST files).
    pub fn group_bytes(&self, group: GroupId) -> u64 {
        let (start, end) = (entry_key(group, 0), entry_key(group, u64::MAX));
        self.db
            .get_approximate_sizes(&[rocksdb::Range::new(&start, &end)])
            .first()
            .copied()
            .unwrap_or(0)
    }

    /// Removes everything a group stored (its table was dropped).
    pub fn remove_group(&self, group: GroupId) -> Result<(), rocksdb::Error> {
        let mut batch = WriteBatch::default();
        batch.delete_range(entry_key(group, 0), entry_key(group, u64::MAX));
        batch.delete(entry_key(group, u64::MAX));
        batch.delete(meta_key(KIND_VOTE, group));
        batch.delete(meta_key(KIND_PURGED, group));
        self.write_synced(batch)
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        self.db.write_opt(batch, &WriteOptions::default())?;
        self.db.flush_wal(true)
    }
}

/// Syncs the WAL once for every callback queued, then completes them in order.
fn run_flusher(
    db: &DB,
    queue: &mpsc::Receiver<FlushCallback>,
    stats: &FlushStats,
    failure: &StorageFailure,
) {
    run_flusher_with(
        || {
            fail::fail_point!("raft-log-sync", |_| Err(
                "injected I/O error (failpoint raft-log-sync)".to_string()
            ));
            db.flush_wal(true).map_err(|err| err.to_string())
        },
        queue,
        stats,
        failure,
    )
}

/// The flusher's loop over any sync (tests give a failing one).
fn run_flusher_with(
    mut sync: impl FnMut() -> Result<(), String>,
    queue: &mpsc::Receiver<FlushCallback>,
    stats: &FlushStats,
    failure: &StorageFailure,
) {
    use std::sync::atomic::Ordering::Relaxed;
    // Sticky: once a sync failed, what it should have covered may be lost,
    // and a later sync succeeding proves nothing about it.
    let mut failed: Option<String> = None;
    while let Ok(first) = queue.recv() {
        let mut pending = vec![first];
        pending.extend(queue.try_iter());
        if failed.is_none() {
            if let Err(err) = sync() {
                tracing::error!(error = %err, "syncing the Raft log failed; no append is acknowledged from now on");
                let _ = failure.record("syncing the Raft log", io::Error::other(err.clone()));
                failed = Some(err);
            }
            stats.syncs.fetch_add(1, Relaxed);
        }
        stats.appends.fetch_add(pending.len() as u64, Relaxed);
        for callback in pending {
            callback(match &failed {
                None => Ok(()),
                Some(err) => Err(io::Error::other(format!("syncing the Raft log: {err}"))),
            });
        }
    }
}

fn read_err(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(err)
}

fn write_err(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(err)
}

/// The log of one Raft group over the shared database. Cheap to clone; the
/// clone is also the group's log reader.
#[derive(Clone)]
pub struct GroupLogStore {
    log: Arc<LogDb>,
    group: GroupId,
}

impl GroupLogStore {
    fn db(&self) -> &DB {
        &self.log.db
    }

    /// A write to the log failed: openraft stops the group, and the node
    /// hears of it (`failure.rs`).
    fn failed(&self, what: &str, err: io::Error) -> io::Error {
        self.log.failure.record(what, err)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, kind: u8) -> io::Result<Option<T>> {
        self.db()
            .get(meta_key(kind, self.group))
            .map_err(read_err)?
            .map(|raw| bincode::deserialize(&raw).map_err(read_err))
            .transpose()
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        let mut iter = self.db().raw_iterator();
        iter.seek_for_prev(entry_key(self.group, u64::MAX));
        match (iter.valid(), iter.key(), iter.value()) {
            (true, Some(key), Some(value))
                if key.len() == 17 && key[..9] == entry_key(self.group, 0)[..9] =>
            {
                bincode::deserialize(value).map(Some).map_err(read_err)
            }
            _ => iter.status().map(|()| None).map_err(read_err),
        }
    }

    /// The index of the last entry stored, if any (for the replication service).
    pub fn last_index(&self) -> io::Result<Option<u64>> {
        Ok(self.last_entry()?.map(|entry| entry.log_id.index))
    }

    /// The last purged log id, if any.
    fn last_purged(&self) -> io::Result<Option<LogId>> {
        self.read_meta(KIND_PURGED)
    }

    /// Index of the last entry purged after a snapshot, if any.
    pub fn last_purged_index(&self) -> io::Result<Option<u64>> {
        Ok(self.last_purged()?.map(|id| id.index))
    }

    /// The entries with index in `[start, end)` that exist, ascending, as
    /// (index, the request the entry carries; `None` for a leader's no-op
    /// or a membership change).
    pub fn requests(&self, start: u64, end: u64) -> io::Result<Vec<(u64, Option<Request>)>> {
        Ok(self
            .entries(start, end)?
            .into_iter()
            .map(|entry| {
                let request = match entry.payload {
                    EntryPayload::Normal(request) => Some(request),
                    EntryPayload::Blank | EntryPayload::Membership(_) => None,
                };
                (entry.log_id.index, request)
            })
            .collect())
    }

    /// Entries with index in `[start, end)` that exist, ascending.
    fn entries(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        if start >= end {
            return Ok(entries);
        }
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(entry_key(self.group, end).to_vec());
        let mut iter = self.db().raw_iterator_opt(options);
        iter.seek(entry_key(self.group, start));
        while iter.valid() {
            if let Some(value) = iter.value() {
                entries.push(bincode::deserialize(value).map_err(read_err)?);
            }
            iter.next();
        }
        iter.status().map_err(read_err)?;
        Ok(entries)
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(x) => x.saturating_add(1),
        Bound::Excluded(x) => *x,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for GroupLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = bounds(&range);
        self.entries(start, end)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.read_meta(KIND_VOTE)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        /// Keep AppendEntries well under the transport's message limit.
        const MAX_BYTES: usize = 8 * 1024 * 1024;
        let mut entries = self.entries(start, end)?;
        let mut bytes = 0usize;
        let mut keep = 0;
        for entry in &entries {
            bytes += bincode::serialized_size(entry).unwrap_or(0) as usize;
            if keep > 0 && bytes > MAX_BYTES {
                break;
            }
            keep += 1;
        }
        entries.truncate(keep);
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for GroupLogStore {
    type LogReader = GroupLogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = self
            .last_entry()?
            .map(|entry| entry.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(
            meta_key(KIND_VOTE, self.group),
            bincode::serialize(vote).map_err(write_err)?,
        );
        // An fsync: on a blocking thread, not a runtime worker.
        let log = self.log.clone();
        super::blocking(move || log.write_synced(batch).map_err(write_err))
            .await
            .map_err(|err| self.failed("saving a vote", err))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put(
                entry_key(self.group, entry.log_id.index),
                bincode::serialize(&entry).map_err(write_err)?,
            );
        }
        self.db()
            .write(batch)
            .map_err(|err| self.failed("appending to the Raft log", write_err(err)))?;
        let queued: FlushCallback = Box::new(move |result| callback.io_completed(result));
        self.log
            .flusher
            .as_ref()
            .and_then(|flusher| flusher.send(queued).ok())
            .ok_or_else(|| write_err(io::Error::other("the log flusher has stopped")))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        // Keeps `last_log_id` itself; `None` removes every entry.
        let first_removed = last_log_id.map_or(0, |id| id.index.saturating_add(1));
        let mut batch = WriteBatch::default();
        batch.delete_range(
            entry_key(self.group, first_removed),
            entry_key(self.group, u64::MAX),
        );
        batch.delete(entry_key(self.group, u64::MAX));
        self.log
            .write_synced(batch)
            .map_err(|err| self.failed("truncating the Raft log", write_err(err)))
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(
            meta_key(KIND_PURGED, self.group),
            bincode::serialize(&log_id).map_err(write_err)?,
        );
        batch.delete_range(
            entry_key(self.group, 0),
            entry_key(self.group, log_id.index.saturating_add(1)),
        );
        // Rides the next sync: losing a purge only keeps entries longer.
        self.db()
            .write(batch)
            .map_err(|err| self.failed("purging the Raft log", write_err(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Mutex;

    /// Queues `count` callbacks, runs the flusher over them with one sync
    /// that answers `sync`, and returns what each callback was told.
    fn flush(count: u32, sync: Result<(), String>) -> Vec<(u32, bool)> {
        let told: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
        let (sender, queue) = mpsc::channel::<FlushCallback>();
        for id in 0..count {
            let told = told.clone();
            sender
                .send(Box::new(move |r: io::Result<()>| {
                    told.lock().unwrap().push((id, r.is_ok()))
                }))
                .unwrap();
        }
        drop(sender);
        let mut sync = Some(sync);
        run_flusher_with(
            || sync.take().unwrap_or(Ok(())),
            &queue,
            &FlushStats::default(),
            &StorageFailure::default(),
        );
        let told = told.lock().unwrap().clone();
        told
    }

    #[test]
    fn callbacks_complete_in_order_after_the_sync() {
        assert_eq!(flush(3, Ok(())), vec![(0, true), (1, true), (2, true)]);
        assert_eq!(
            flush(2, Err("io error".into())),
            vec![(0, false), (1, false)]
        );
    }

    #[test]
    fn after_a_failed_sync_nothing_is_durable_again() {
        let (sender, queue) = mpsc::channel::<FlushCallback>();
        let told: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
        let stats = Arc::new(FlushStats::default());
        let mut results = vec![Err("disk gone".to_string()), Ok(())].into_iter();
        let (step_tx, step_rx) = mpsc::channel::<()>();
        let thread_stats = stats.clone();
        let failure = StorageFailure::default();
        let reported = failure.subscribe();
        let flusher = std::thread::spawn(move || {
            run_flusher_with(
                || {
                    let _ = step_rx.recv();
                    results.next().unwrap_or(Ok(()))
                },
                &queue,
                &thread_stats,
                &failure,
            )
        });
        for id in 0..2u32 {
            let told = told.clone();
            sender
                .send(Box::new(move |r: io::Result<()>| {
                    told.lock().unwrap().push((id, r.is_ok()))
                }))
                .unwrap();
        }
        step_tx.send(()).unwrap(); // the first sync fails
        while told.lock().unwrap().len() < 2 {
            std::thread::yield_now();
        }
        let told_later = told.clone();
        sender
            .send(Box::new(move |r: io::Result<()>| {
                told_later.lock().unwrap().push((2, r.is_ok()))
            }))
            .unwrap();
        step_tx.send(()).unwrap(); // a sync that would succeed is never tried
        drop(sender);
        flusher.join().unwrap();
        let told = told.lock().unwrap().clone();
        assert_eq!(told, vec![(0, false), (1, false), (2, false)]);
        assert_eq!(stats.syncs.load(Relaxed), 1, "no sync after the failure");
        assert_eq!(stats.appends.load(Relaxed), 3);
        assert_eq!(
            reported.borrow().as_deref(),
            Some("syncing the Raft log: disk gone"),
            "the node hears of the failure"
        );
    }
}
