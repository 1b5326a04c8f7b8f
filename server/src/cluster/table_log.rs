//! Reading a table's committed Raft log for cross-cluster replication
//! (`features/replication_protocol.feature`): what `Log.Replicate` sends to
//! follower clusters.
//!
//! Only applied entries are read (applied implies committed), so a follower
//! never sees an entry this cluster could still lose. The caller converts
//! entries to wire commands; this layer says which entries are user writes.

use tokio::sync::watch;

use super::error::{Error, Result};
use super::node::Node;
use super::raft::types::{Request, RestoreStep};

/// One entry of a table's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLogEntry {
    /// The entry's Raft index: the leader index followers store.
    pub index: u64,
    /// The serialized `mvcc.v1.Command` of a user write; `None` for entries
    /// that are not (leader no-ops, membership changes).
    pub command: Option<Vec<u8>>,
}

/// The answer to "entries from index `from` on".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableLogRead {
    /// Contiguous entries starting at `from` (empty when nothing new).
    Entries(Vec<TableLogEntry>),
    /// `from` is no longer in the log, or the table's content was restored
    /// wholesale since: the reader needs a snapshot.
    Compacted,
    /// `from` is beyond the next entry this replica will apply.
    Behind,
}

/// Entries read per RocksDB scan while filling a batch.
const SCAN_BATCH: u64 = 256;

impl Node {
    /// The applied index of `table` on this replica, as it changes.
    pub fn table_applied(&self, table: &[u8]) -> Result<watch::Receiver<u64>> {
        Ok(self.table_group(table)?.applied.clone())
    }

    /// Reads applied entries of `table` from index `from` (> 0) on, up to
    /// about `max_bytes` of commands (at least one entry when there is one).
    /// Returns the applied index the read saw with the outcome.
    pub fn read_table_log(
        &self,
        table: &[u8],
        from: u64,
        max_bytes: usize,
    ) -> Result<(u64, TableLogRead)> {
        let group = self.table_group(table)?;
        let applied = *group.applied.borrow();
        if applied.saturating_add(1) < from {
            return Ok((applied, TableLogRead::Behind));
        }
        if from > applied {
            return Ok((applied, TableLogRead::Entries(Vec::new())));
        }
        let log = self.log_db().group(group.id);
        let purged = log.last_purged_index().map_err(storage_error)?;
        // Entries up to an installed snapshot may be another term's until
        // the purge behind it has run (see `raft/state_machine.rs`).
        let installed = *group.installed.borrow();
        if purged.unwrap_or(0).max(installed) >= from {
            return Ok((applied, TableLogRead::Compacted));
        }
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        'scan: while next <= applied {
            let end = (next + SCAN_BATCH).min(applied + 1);
            let batch = log.requests(next, end).map_err(storage_error)?;
            for (index, request) in batch {
                if index != next {
                    // Purged between the check and the scan.
                    if entries.is_empty() {
                        return Ok((applied, TableLogRead::Compacted));
                    }
                    break 'scan;
                }
                let command = match request {
                    Some(Request::Table(command)) => Some(command),
                    // The content was replaced wholesale here: a reader from
                    // before this entry needs a snapshot taken after it.
                    Some(Request::Restore(RestoreStep::Commit { .. })) => {
                        if entries.is_empty() {
                            return Ok((applied, TableLogRead::Compacted));
                        }
                        break 'scan;
                    }
                    Some(Request::Meta(_) | Request::Restore(_)) | None => None,
                };
                let size = command.as_ref().map_or(16, |c| c.len() + 16);
                if !entries.is_empty() && bytes + size > max_bytes {
                    break 'scan;
                }
                bytes += size;
                entries.push(TableLogEntry { index, command });
                next += 1;
            }
            if next < end {
                // The scan ended early (size bound, or entries missing).
                if entries.is_empty() {
                    return Ok((applied, TableLogRead::Compacted));
                }
                break;
            }
        }
        Ok((applied, TableLogRead::Entries(entries)))
    }
}

fn storage_error(err: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("reading the log: {err}"))
}
