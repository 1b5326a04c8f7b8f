//! The node's state-machine database: one RocksDB for every table.
//!
//! Each table is a column family rather than a key prefix, because the two
//! operations that must be cheap and crash-safe map onto column families
//! directly: dropping a table is one `drop_cf` (no range delete to compact
//! away), and installing a snapshot fills a fresh column family (a new
//! *generation*) and then switches the catalogue entry to it in one synced
//! write, so readers see the old content until the switch and a crash in the
//! middle leaves only an orphan that the next open removes.
//!
//! Writes are not synced one by one (`manual_wal_flush`): the Raft log is the
//! durable record, and reopening returns each table's applied index so Raft
//! replays what is missing. [`Storage::make_durable`] syncs everything before
//! the Raft log may be purged.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use super::encoding::{decode_u64, encode_u64};
use super::error::{Error, Result};
use super::replicated::ReplicatedWaiters;
use super::table::{read_state, Staging, Table, TableInner};
use super::view::DbView;

/// On-disk format of the state-machine database; bump with a reason when
/// the layout changes.
/// - 1 (2026-11-26): column family per table generation, values prefixed
///   with create/mod revisions. Format 1 databases open unchanged: the
///   server's own tables were added beside (`Space::Server`), and moving
///   one out of the user space is the cluster layer's one-off step
///   (`Storage::move_to_server_space`).
pub const FORMAT_VERSION: u64 = 1;

const FORMAT_KEY: &[u8] = b"format_version";

/// Whose a table is: the users' (any name a client sends) or the server's
/// own (the table catalogue). The spaces share nothing but the database, so
/// no user name, whatever its bytes, reaches the server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    User,
    Server,
}

impl Space {
    /// Catalogue entries in the default column family: table name ->
    /// column family name.
    fn catalog_prefix(self) -> &'static [u8] {
        match self {
            Space::User => b"catalog/",
            Space::Server => b"server-catalog/",
        }
    }

    /// Open restores: table name -> `<restore id>:<column family name>` of
    /// the staging generation being filled (see `storage/restore.rs`).
    fn staging_prefix(self) -> &'static [u8] {
        match self {
            Space::User => b"staging/",
            Space::Server => b"server-staging/",
        }
    }
}

const SPACES: [Space; 2] = [Space::User, Space::Server];
const GENERATION_PREFIX: &str = "gen-";
/// Bytes of memtable all tables together may hold before RocksDB flushes.
const MEMTABLE_BUDGET: usize = 64 * 1024 * 1024;

/// Tuning of the state-machine database.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Bytes of RocksDB block cache shared by all tables (`--storage.block-cache-size`).
    pub block_cache_size: usize,
    /// Writes stop while a data disk has less free space than this, in
    /// bytes (`--storage.min-free-space`; 0: never).
    pub min_free_space: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            block_cache_size: 16 * 1024 * 1024,
            min_free_space: 0,
        }
    }
}

/// What every table handle shares: the database and the generation counter.
pub(crate) struct Shared {
    pub(crate) db: DB,
    cf_options: Options,
    next_generation: AtomicU64,
    /// Serialises catalogue changes (create, drop, switch).
    catalog_lock: Mutex<()>,
}

/// All tables of one node.
pub struct Storage {
    shared: Arc<Shared>,
    tables: RwLock<BTreeMap<(Space, Vec<u8>), Table>>,
    /// Where Raft snapshots of the tables are kept as files.
    snapshot_dir: std::path::PathBuf,
}

impl Storage {
    /// Opens (or creates) the database in `dir`, removing any half-installed
    /// generation a crash left behind.
    pub fn open(dir: &Path, options: &StorageOptions) -> Result<Storage> {
        std::fs::create_dir_all(dir)?;
        let cf_options = table_options(options);
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_manual_wal_flush(true);
        db_options.set_max_background_jobs(2);
        // One memtable budget for every table (and staging copy) together,
        // so memory does not grow with the number or size of tables.
        db_options.set_db_write_buffer_size(MEMTABLE_BUDGET);
        // Table writes are not synced one by one: the Raft log is replayed
        // over whatever a crash cut off the end of this WAL. A record that
        // fails its checksum anywhere else refuses the start.
        db_options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        let opening = |source| Error::Open {
            dir: dir.display().to_string(),
            source,
        };
        let existing = match DB::list_cf(&db_options, dir) {
            Ok(names) => names,
            // A new directory; with a CURRENT file, what names the column
            // families is unreadable, and opening without them would fail
            // with a less helpful message.
            Err(_) if !dir.join("CURRENT").exists() => {
                vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()]
            }
            Err(err) => return Err(opening(err)),
        };
        let descriptors = existing
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options.clone()));
        let db = DB::open_cf_descriptors(&db_options, dir, descriptors).map_err(opening)?;
        check_format(&db)?;

        let catalog = read_catalog(&db)?;
        let mut staging = read_staging(&db)?;
        staging.retain(|table, _| catalog.contains_key(table));
        let referenced: HashSet<&str> = catalog
            .values()
            .map(String::as_str)
            .chain(staging.values().map(|open| open.cf_name.as_str()))
            .collect();
        let mut max_generation = 0;
        for name in &existing {
            if let Some(number) = generation_number(name) {
                max_generation = max_generation.max(number);
                if !referenced.contains(name.as_str()) {
                    tracing::info!(column_family = %name, "removing orphaned table generation");
                    db.drop_cf(name)?;
                }
            }
        }
        let shared = Arc::new(Shared {
            db,
            cf_options,
            next_generation: AtomicU64::new(max_generation + 1),
            catalog_lock: Mutex::new(()),
        });
        let mut tables = BTreeMap::new();
        for (name, cf_name) in catalog {
            let state = {
                let cf = shared.db.cf_handle(&cf_name).ok_or_else(|| {
                    // RocksDB lists column families from its MANIFEST; one
                    // the catalogue (itself in the data) names but the
                    // MANIFEST lacks means a damaged or replaced MANIFEST.
                    Error::Corrupt(format!(
                        "catalogue names missing column family {cf_name}: the MANIFEST in {} is damaged or not this data's",
                        dir.display()
                    ))
                })?;
                read_state(&DbView {
                    db: &shared.db,
                    cf: &cf,
                    snapshot: None,
                })?
            };
            let leader_index = state.leader_index;
            let inner = TableInner {
                space: name.0,
                name: name.1.clone(),
                cf_name: RwLock::new(cf_name),
                published: RwLock::new(state.clone()),
                writer: Mutex::new(state),
                staging: Mutex::new(staging.remove(&name)),
                dropped: AtomicBool::new(false),
                replicated: ReplicatedWaiters::starting_at(leader_index),
            };
            tables.insert(
                name,
                Table {
                    shared: shared.clone(),
                    inner: Arc::new(inner),
                },
            );
        }
        Ok(Storage {
            shared,
            tables: RwLock::new(tables),
            snapshot_dir: dir.join("snapshots"),
        })
    }

    /// The directory for Raft snapshot files, beside the data (RocksDB
    /// leaves unknown subdirectories alone).
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    /// The user table named `name`, if it exists.
    pub fn table(&self, name: &[u8]) -> Option<Table> {
        self.table_in(Space::User, name)
    }

    /// The table named `name` in `space`, if it exists.
    pub fn table_in(&self, space: Space, name: &[u8]) -> Option<Table> {
        self.read_tables().get(&(space, name.to_vec())).cloned()
    }

    /// Names of every user table, ascending.
    pub fn table_names(&self) -> Vec<Vec<u8>> {
        self.read_tables()
            .keys()
            .filter(|(space, _)| *space == Space::User)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Creates an empty user table; an existing one is returned unchanged.
    pub fn create_table(&self, name: &[u8]) -> Result<Table> {
        self.create_table_in(Space::User, name)
    }

    /// Creates an empty table in `space`; an existing one is returned unchanged.
    pub fn create_table_in(&self, space: Space, name: &[u8]) -> Result<Table> {
        let mut tables = self
            .tables
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (space, name.to_vec());
        if let Some(table) = tables.get(&key) {
            return Ok(table.clone());
        }
        let cf_name = self.shared.create_generation()?;
        {
            let _catalog = self.shared.lock_catalog();
            let mut batch = WriteBatch::default();
            batch.put(catalog_key(space, name), cf_name.as_bytes());
            self.shared.write_synced(batch)?;
        }
        let table = Table {
            shared: self.shared.clone(),
            inner: Arc::new(TableInner {
                space,
                name: name.to_vec(),
                cf_name: RwLock::new(cf_name),
                writer: Mutex::new(Default::default()),
                published: RwLock::new(Default::default()),
                staging: Mutex::new(None),
                dropped: AtomicBool::new(false),
                replicated: Default::default(),
            }),
        };
        tables.insert(key, table.clone());
        Ok(table)
    }

    /// Removes a user table and its data; dropping a missing table is a no-op.
    pub fn drop_table(&self, name: &[u8]) -> Result<()> {
        self.drop_table_in(Space::User, name)
    }

    /// Removes a table of `space` and its data; a missing table is a no-op.
    pub fn drop_table_in(&self, space: Space, name: &[u8]) -> Result<()> {
        let mut tables = self
            .tables
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(table) = tables.remove(&(space, name.to_vec())) else {
            return Ok(());
        };
        // Wait for a running apply or install, then refuse later ones.
        let _writer = table
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        table.inner.dropped.store(true, Ordering::Release);
        let staging = table.inner.take_staging();
        let _catalog = self.shared.lock_catalog();
        let mut batch = WriteBatch::default();
        batch.delete(catalog_key(space, name));
        batch.delete(staging_key(space, name));
        self.shared.write_synced(batch)?;
        if let Some(staging) = staging {
            self.shared.discard_generation(&staging.cf_name);
        }
        let cf_name = table
            .inner
            .cf_name
            .read()
            .map(|name| name.clone())
            .unwrap_or_default();
        self.shared.db.drop_cf(&cf_name)?;
        Ok(())
    }

    /// Moves user table `user_name` to the server's space as `server_name`,
    /// data and all, in one synced write; nothing happens when there is no
    /// such user table or the server table exists already. For data written
    /// before the spaces were split, when the server kept its own state
    /// under a user name.
    pub fn move_to_server_space(&self, user_name: &[u8], server_name: &[u8]) -> Result<bool> {
        let mut tables = self
            .tables
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let server_key = (Space::Server, server_name.to_vec());
        if tables.contains_key(&server_key) {
            return Ok(false);
        }
        let Some(table) = tables.remove(&(Space::User, user_name.to_vec())) else {
            return Ok(false);
        };
        let writer = table
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let cf_name = table
            .inner
            .cf_name
            .read()
            .map(|name| name.clone())
            .unwrap_or_default();
        let staging = table.inner.take_staging();
        {
            let _catalog = self.shared.lock_catalog();
            let mut batch = WriteBatch::default();
            batch.delete(catalog_key(Space::User, user_name));
            batch.delete(staging_key(Space::User, user_name));
            batch.put(catalog_key(Space::Server, server_name), cf_name.as_bytes());
            put_staging(&mut batch, Space::Server, server_name, staging.as_ref());
            self.shared.write_synced(batch)?;
        }
        let moved = Table {
            shared: self.shared.clone(),
            inner: Arc::new(TableInner {
                space: Space::Server,
                name: server_name.to_vec(),
                cf_name: RwLock::new(cf_name),
                published: RwLock::new(writer.clone()),
                writer: Mutex::new(writer.clone()),
                staging: Mutex::new(staging),
                dropped: AtomicBool::new(false),
                replicated: ReplicatedWaiters::starting_at(writer.leader_index),
            }),
        };
        drop(writer);
        table.inner.dropped.store(true, Ordering::Release);
        tables.insert(server_key, moved);
        Ok(true)
    }

    /// Applies `command` as Raft entry `index` of `table` (see [`Table::apply_entry`]).
    pub fn apply(
        &self,
        table: &[u8],
        index: u64,
        command: &regatta_proto::mvcc::v1::Command,
    ) -> Result<super::ApplyResult> {
        self.table(table)
            .ok_or(Error::TableNotFound)?
            .apply(index, command)
    }

    /// Makes every applied write of every table durable (one WAL sync).
    /// Call before purging the Raft log up to what has been applied.
    pub fn make_durable(&self) -> Result<()> {
        self.shared.db.flush_wal(true)?;
        Ok(())
    }

    /// RocksDB figures for operators: (metric name, help, value).
    pub fn rocksdb_stats(&self) -> Vec<(&'static str, &'static str, u64)> {
        let db = &self.shared.db;
        let db_wide = |property: &str| {
            db.property_int_value(property)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let per_table = |property: &str| -> u64 {
            self.read_tables()
                .values()
                .filter_map(|table| {
                    let name = table.inner.cf_name.read().ok()?.clone();
                    let cf = db.cf_handle(&name)?;
                    db.property_int_value_cf(&cf, property).ok().flatten()
                })
                .sum()
        };
        vec![
            (
                "regatta_rocksdb_block_cache_usage_bytes",
                "Bytes in the shared block cache.",
                db_wide("rocksdb.block-cache-usage"),
            ),
            (
                "regatta_rocksdb_block_cache_capacity_bytes",
                "Capacity of the shared block cache.",
                db_wide("rocksdb.block-cache-capacity"),
            ),
            (
                "regatta_rocksdb_running_compactions",
                "Compactions running now.",
                db_wide("rocksdb.num-running-compactions"),
            ),
            (
                "regatta_rocksdb_pending_compaction_bytes",
                "Bytes compaction estimates it still has to rewrite, all tables.",
                per_table("rocksdb.estimate-pending-compaction-bytes"),
            ),
            (
                "regatta_rocksdb_sst_files_bytes",
                "Size of the SST files of all tables.",
                per_table("rocksdb.total-sst-files-size"),
            ),
            (
                "regatta_rocksdb_memtable_bytes",
                "Size of the memtables of all tables.",
                per_table("rocksdb.cur-size-all-mem-tables"),
            ),
            (
                "regatta_rocksdb_estimated_keys",
                "Estimated number of keys in all tables.",
                per_table("rocksdb.estimate-num-keys"),
            ),
        ]
    }

    fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(Space, Vec<u8>), Table>> {
        self.tables
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Shared {
    fn lock_catalog(&self) -> std::sync::MutexGuard<'_, ()> {
        self.catalog_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `batch` and syncs the WAL: catalogue changes must survive a crash.
    fn write_synced(&self, batch: WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        // With manual WAL flushing a synced write alone may leave the buffer unflushed.
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Creates a new, empty column family for a table generation.
    pub(crate) fn create_generation(&self) -> Result<String> {
        let number = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let name = format!("{GENERATION_PREFIX}{number:012}");
        self.db.create_cf(&name, &self.cf_options)?;
        Ok(name)
    }

    /// Points the table at `new_cf` and sets its staging generation to
    /// `staging` in one synced write, then drops the generations no longer
    /// named (the old current one, a replaced staging one). The caller holds
    /// the table's writer lock.
    pub(crate) fn switch_generation(
        &self,
        table: &TableInner,
        new_cf: &str,
        staging: Option<Staging>,
    ) -> Result<()> {
        let old_cf = {
            let _catalog = self.lock_catalog();
            let mut batch = WriteBatch::default();
            batch.put(catalog_key(table.space, &table.name), new_cf.as_bytes());
            put_staging(&mut batch, table.space, &table.name, staging.as_ref());
            self.write_synced(batch)?;
            let mut current = table
                .cf_name
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::replace(&mut *current, new_cf.to_string())
        };
        let old_staging = std::mem::replace(
            &mut *table
                .staging
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            staging.clone(),
        );
        let kept = |cf: &str| cf == new_cf || staging.as_ref().is_some_and(|s| s.cf_name == cf);
        for cf in std::iter::once(old_cf).chain(old_staging.map(|s| s.cf_name)) {
            if !kept(&cf) {
                // The catalogue no longer names it, so at worst the next open removes it.
                self.discard_generation(&cf);
            }
        }
        Ok(())
    }

    /// Records (or with `None` forgets) the table's staging generation, in
    /// one synced write: a staging generation must survive a restart for the
    /// rest of its restore to be replayed into it.
    pub(crate) fn record_staging(
        &self,
        table: &TableInner,
        staging: Option<&Staging>,
    ) -> Result<()> {
        let _catalog = self.lock_catalog();
        let mut batch = WriteBatch::default();
        put_staging(&mut batch, table.space, &table.name, staging);
        self.write_synced(batch)
    }

    /// Drops a generation that never became current.
    pub(crate) fn discard_generation(&self, cf_name: &str) {
        if let Err(err) = self.db.drop_cf(cf_name) {
            tracing::warn!(column_family = cf_name, error = %err, "could not drop discarded table generation");
        }
    }
}

fn table_options(options: &StorageOptions) -> Options {
    let mut cf_options = Options::default();
    let mut block = rocksdb::BlockBasedOptions::default();
    block.set_block_cache(&rocksdb::Cache::new_lru_cache(options.block_cache_size));
    block.set_bloom_filter(10.0, false);
    cf_options.set_block_based_table_factory(&block);
    cf_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    cf_options
}

fn check_format(db: &DB) -> Result<()> {
    match db.get(FORMAT_KEY)? {
        None => {
            db.put(FORMAT_KEY, encode_u64(FORMAT_VERSION))?;
            db.flush_wal(true)?;
            Ok(())
        }
        Some(raw) => {
            let found = decode_u64(&raw, "format version")?;
            if found == FORMAT_VERSION {
                Ok(())
            } else {
                Err(Error::UnsupportedFormat {
                    found,
                    supported: FORMAT_VERSION,
                })
            }
        }
    }
}

fn catalog_key(space: Space, table: &[u8]) -> Vec<u8> {
    [space.catalog_prefix(), table].concat()
}

fn staging_key(space: Space, table: &[u8]) -> Vec<u8> {
    [space.staging_prefix(), table].concat()
}

fn put_staging(batch: &mut WriteBatch, space: Space, table: &[u8], staging: Option<&Staging>) {
    match staging {
        Some(staging) => batch.put(
            staging_key(space, table),
            format!("{}:{}", staging.id, staging.cf_name).as_bytes(),
        ),
        None => batch.delete(staging_key(space, table)),
    }
}

/// A table of one space, by name.
type SpaceName = (Space, Vec<u8>);

/// Every space's entries under its prefix, keyed by (space, table name).
fn read_prefixed(
    db: &DB,
    prefix: impl Fn(Space) -> &'static [u8],
) -> Result<Vec<(SpaceName, Vec<u8>)>> {
    let mut entries = Vec::new();
    for space in SPACES {
        let prefix = prefix(space);
        for item in db.prefix_iterator(prefix) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            entries.push(((space, key[prefix.len()..].to_vec()), value.to_vec()));
        }
    }
    Ok(entries)
}

fn read_staging(db: &DB) -> Result<BTreeMap<(Space, Vec<u8>), Staging>> {
    let mut open = BTreeMap::new();
    for (table, value) in read_prefixed(db, Space::staging_prefix)? {
        let staging = std::str::from_utf8(&value)
            .ok()
            .and_then(|value| value.split_once(':'))
            .and_then(|(id, cf_name)| {
                Some(Staging {
                    id: id.parse().ok()?,
                    cf_name: cf_name.to_string(),
                })
            })
            .ok_or_else(|| Error::Corrupt("staging entry is not <id>:<column family>".into()))?;
        open.insert(table, staging);
    }
    Ok(open)
}

fn read_catalog(db: &DB) -> Result<BTreeMap<(Space, Vec<u8>), String>> {
    let mut catalog = BTreeMap::new();
    for (table, value) in read_prefixed(db, Space::catalog_prefix)? {
        let cf_name = String::from_utf8(value)
            .map_err(|_| Error::Corrupt("catalogue entry is not UTF-8".to_string()))?;
        catalog.insert(table, cf_name);
    }
    Ok(catalog)
}

fn generation_number(cf_name: &str) -> Option<u64> {
    cf_name.strip_prefix(GENERATION_PREFIX)?.parse().ok()
}
