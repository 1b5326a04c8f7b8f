//! Restores carried by the Raft log: a table's new content arrives as a
//! sequence of log entries (begin, batches of records, commit) that every
//! replica applies into a *staging* generation, and the commit switches the
//! table to it in one catalogue write. Readers see the old content until
//! then; an abort, or a new begin, throws the staging generation away.
//!
//! Each step names the restore by an id chosen by whoever began it, so the
//! batches of a restore that was replaced change nothing. Like every entry,
//! a step at or below the applied index was applied before and is skipped.
//!
//! A Raft snapshot taken while a restore is open carries the staging
//! content too ([`Table::export_raft`]), so a replica that catches up by
//! snapshot can still apply the rest of the restore.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use regatta_proto::mvcc::v1::KeyValue;
use rocksdb::WriteBatch;

use super::encoding::{data_key, encode_value, Stored, META_RAFT_STATE};
use super::error::{Error, Result};
use super::stream::CommandStreamWriter;
use super::table::{put_state, Install, Installed, Staging, Table, TableState, Trailer};
use super::view::DbView;

/// Leads a Raft snapshot that carries an open restore's staging content.
const ENVELOPE_MAGIC: &[u8; 8] = b"RGSNAP\x00\x01";

/// Read buffer of a snapshot file being installed.
const READ_BUFFER: usize = 1024 * 1024;

impl Table {
    /// The id of the restore open on this table, if any.
    pub fn open_restore(&self) -> Option<u64> {
        self.inner.staging().map(|staging| staging.id)
    }

    /// Opens restore `id` as entry `index`: an empty staging generation
    /// (replacing any restore still open).
    pub fn restore_begin(&self, index: u64, id: u64, raft_state: Option<&[u8]>) -> Result<()> {
        let mut state = self.lock_writer();
        if applied_before(&state, index) {
            return Ok(());
        }
        let cf_name = self.shared.create_generation()?;
        let staging = Staging { id, cf_name };
        if let Err(err) = self.shared.record_staging(&self.inner, Some(&staging)) {
            self.shared.discard_generation(&staging.cf_name);
            return Err(err);
        }
        if let Some(replaced) = self.inner.take_staging() {
            self.shared.discard_generation(&replaced.cf_name);
        }
        self.inner.set_staging(Some(staging));
        self.advance(&mut state, index, raft_state, WriteBatch::default())
    }

    /// Adds `records` to restore `id` as entry `index`; each key gets the
    /// entry's index as its revisions. Returns whether restore `id` is open.
    pub fn restore_batch(
        &self,
        index: u64,
        id: u64,
        records: &[KeyValue],
        raft_state: Option<&[u8]>,
    ) -> Result<bool> {
        let mut state = self.lock_writer();
        if applied_before(&state, index) {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let open = self.staging_named(id);
        if let Some(staging) = &open {
            let cf = self.generation(&staging.cf_name)?;
            for kv in records.iter().filter(|kv| !kv.key.is_empty()) {
                let stored = Stored {
                    create_revision: index,
                    mod_revision: index,
                    value: kv.value.clone(),
                };
                batch.put_cf(&cf, data_key(&kv.key), encode_value(&stored));
            }
        }
        self.advance(&mut state, index, raft_state, batch)?;
        Ok(open.is_some())
    }

    /// Ends restore `id` as entry `index`: the staging generation becomes the
    /// table's content, at revision `index`, with the stored leader index
    /// set to `leader_index`. Returns whether restore `id` was open (if not,
    /// nothing but the applied index changes).
    pub fn restore_commit(
        &self,
        index: u64,
        id: u64,
        leader_index: Option<u64>,
        raft_state: Option<&[u8]>,
    ) -> Result<bool> {
        let mut state = self.lock_writer();
        if applied_before(&state, index) {
            return Ok(false);
        }
        let Some(staging) = self.staging_named(id) else {
            self.advance(&mut state, index, raft_state, WriteBatch::default())?;
            return Ok(false);
        };
        let next = TableState {
            applied_index: index,
            revision: index,
            leader_index,
        };
        {
            let cf = self.generation(&staging.cf_name)?;
            let mut batch = WriteBatch::default();
            put_state(&mut batch, &cf, &next);
            if let Some(raft_state) = raft_state {
                batch.put_cf(&cf, META_RAFT_STATE, raft_state);
            }
            self.db().write(batch)?;
        }
        self.shared
            .switch_generation(&self.inner, &staging.cf_name, None)?;
        *state = next;
        Ok(true)
    }

    /// Throws restore `id` away as entry `index`. Returns whether it was open.
    pub fn restore_abort(&self, index: u64, id: u64, raft_state: Option<&[u8]>) -> Result<bool> {
        let mut state = self.lock_writer();
        if applied_before(&state, index) {
            return Ok(false);
        }
        let open = self.staging_named(id);
        if let Some(staging) = &open {
            self.shared.record_staging(&self.inner, None)?;
            self.inner.set_staging(None);
            self.shared.discard_generation(&staging.cf_name);
        }
        self.advance(&mut state, index, raft_state, WriteBatch::default())?;
        Ok(open.is_some())
    }

    /// Forgets the stored leader index `L` as entry `index`, keeping the
    /// content (a follower's table to be copied again).
    pub fn reset_leader_index(&self, index: u64, raft_state: Option<&[u8]>) -> Result<()> {
        let mut state = self.lock_writer();
        if applied_before(&state, index) {
            return Ok(());
        }
        state.leader_index = None;
        self.advance(&mut state, index, raft_state, WriteBatch::default())
    }

    /// A Raft snapshot of the table: the current content with its stored
    /// leader index and revision, plus the staging content of an open
    /// restore, all from one point in time. Also returns the state and the
    /// Raft bookkeeping of that point.
    pub fn export_raft(&self) -> Result<(TableState, Option<Vec<u8>>, Vec<u8>)> {
        let (state, raft_state, out) = self.export_raft_to(std::io::Cursor::new(Vec::new()))?;
        Ok((state, raft_state, out.into_inner()))
    }

    /// As [`Table::export_raft`], written to `out` as it is read (a file:
    /// memory does not grow with the table).
    pub fn export_raft_to<W: Write + Seek>(
        &self,
        mut out: W,
    ) -> Result<(TableState, Option<Vec<u8>>, W)> {
        // Under the writer lock the staging generation cannot change while
        // the point in time is taken.
        let (cf, staging, snapshot) = {
            let _writer = self.lock_writer();
            let cf = self.cf()?;
            let staging = match self.inner.staging() {
                Some(staging) => Some((staging.id, self.generation(&staging.cf_name)?)),
                None => None,
            };
            (cf, staging, self.db().snapshot())
        };
        let view = DbView {
            db: self.db(),
            cf: &cf,
            snapshot: Some(&snapshot),
        };
        let Some((id, staging_cf)) = staging else {
            return self.export_view(&view, out, Trailer::LeaderIndex);
        };
        // The envelope: magic, the main stream's length (filled in once
        // known), the main stream, the restore's id, the staging stream.
        out.write_all(ENVELOPE_MAGIC)?;
        out.write_all(&[0; 8])?;
        let (state, raft_state, mut out) = self.export_view(&view, out, Trailer::LeaderIndex)?;
        let end = out.stream_position()?;
        let main_len = end - ENVELOPE_MAGIC.len() as u64 - 8;
        out.seek(SeekFrom::Start(ENVELOPE_MAGIC.len() as u64))?;
        out.write_all(&main_len.to_le_bytes())?;
        out.seek(SeekFrom::Start(end))?;
        out.write_all(&id.to_le_bytes())?;
        let staging_view = DbView {
            db: self.db(),
            cf: &staging_cf,
            snapshot: Some(&snapshot),
        };
        let mut writer = CommandStreamWriter::new(out);
        self.write_records(&staging_view, &mut writer)?;
        let mut out = writer.finish()?;
        out.flush()?;
        Ok((state, raft_state, out))
    }

    /// Installs a Raft snapshot made by [`Table::export_raft`] (or a plain
    /// command stream), atomically, open restore included.
    pub fn install_raft(&self, bytes: &[u8], install: Install) -> Result<Installed> {
        let (main, staging) = split_envelope(bytes)?;
        self.install_generations(main, staging, install)
    }

    /// As [`Table::install_raft`], reading the snapshot from the file at
    /// `path` as it goes (memory does not grow with the table).
    pub fn install_raft_file(&self, path: &Path, install: Install) -> Result<Installed> {
        let open = |at: u64| -> Result<BufReader<File>> {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(at))?;
            Ok(BufReader::with_capacity(READ_BUFFER, file))
        };
        let mut head = open(0)?;
        let mut magic = [0; ENVELOPE_MAGIC.len()];
        let enveloped = match head.read_exact(&mut magic) {
            Ok(()) => &magic == ENVELOPE_MAGIC,
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(err) => return Err(err.into()),
        };
        if !enveloped {
            return self.install_generations(open(0)?, None::<(u64, &[u8])>, install);
        }
        let malformed = || Error::MalformedStream("truncated snapshot envelope".into());
        let mut word = [0; 8];
        head.read_exact(&mut word).map_err(|_| malformed())?;
        let main_len = u64::from_le_bytes(word);
        let main_at = (ENVELOPE_MAGIC.len() + 8) as u64;
        let staging_at = main_at.checked_add(main_len).ok_or_else(malformed)?;
        let mut staging = open(staging_at)?;
        staging.read_exact(&mut word).map_err(|_| malformed())?;
        let id = u64::from_le_bytes(word);
        let main = open(main_at)?.take(main_len);
        self.install_generations(main, Some((id, staging)), install)
    }

    fn staging_named(&self, id: u64) -> Option<Staging> {
        self.inner.staging().filter(|staging| staging.id == id)
    }

    fn generation(&self, cf_name: &str) -> Result<std::sync::Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.db()
            .cf_handle(cf_name)
            .ok_or_else(|| Error::Corrupt(format!("column family {cf_name} vanished")))
    }

    /// Writes `batch` with the applied index moved to `index` (and the Raft
    /// bookkeeping) in the current generation, in one write.
    fn advance(
        &self,
        state: &mut TableState,
        index: u64,
        raft_state: Option<&[u8]>,
        mut batch: WriteBatch,
    ) -> Result<()> {
        let cf = self.cf()?;
        let next = TableState {
            applied_index: index,
            ..state.clone()
        };
        put_state(&mut batch, &cf, &next);
        if let Some(raft_state) = raft_state {
            batch.put_cf(&cf, META_RAFT_STATE, raft_state);
        }
        self.db().write(batch)?;
        *state = next;
        Ok(())
    }
}

/// Index 0 is openraft's initial membership entry, applied before anything
/// else; every other index at or below the applied one was applied before.
fn applied_before(state: &TableState, index: u64) -> bool {
    index <= state.applied_index && index > 0
}

/// Splits a Raft snapshot into the main stream and, if it carries one, the
/// open restore's id and staging stream.
type Envelope<'a> = (&'a [u8], Option<(u64, &'a [u8])>);

fn split_envelope(bytes: &[u8]) -> Result<Envelope<'_>> {
    let Some(rest) = bytes.strip_prefix(ENVELOPE_MAGIC.as_slice()) else {
        return Ok((bytes, None));
    };
    let malformed = || Error::MalformedStream("truncated snapshot envelope".into());
    let (len, rest) = split_u64(rest).ok_or_else(malformed)?;
    let len = usize::try_from(len).map_err(|_| malformed())?;
    if rest.len() < len {
        return Err(malformed());
    }
    let (main, rest) = rest.split_at(len);
    let (id, staging) = split_u64(rest).ok_or_else(malformed)?;
    Ok((main, Some((id, staging))))
}

fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}
