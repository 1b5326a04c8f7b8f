//! Replacing a table's whole content through its Raft group: a command
//! stream (`docs/contract-notes.md`, "Command streams") arriving chunk by
//! chunk becomes a restore carried by the log (`storage/restore.rs`):
//! begin, batches of about 1 MiB of records, commit. Every replica ends with
//! the same content and readers see the old content until the commit. Used
//! by follower recovery by snapshot and by the maintenance `Restore`.
//!
//! The stream is decoded on a blocking thread between two small channels,
//! so at most a few chunks and batches are in memory at once.

use std::io::{self, Read};
use std::time::Duration;

use prost::Message;
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};
use tokio::sync::mpsc;

use super::error::{Error, Result};
use super::node::Node;
use super::raft::types::RestoreStep;
use crate::storage::stream::{CommandStreamReader, Record};

/// Records per batch entry, by size (keys + values).
const BATCH_BYTES: usize = 1024 * 1024;

/// What a filled restore read from its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filled {
    pub records: u64,
    /// The trailing DUMMY's leader index, if the stream had one.
    pub leader_index: Option<u64>,
}

/// An open restore of one table (begun, not yet committed).
pub struct TableRestore<'a> {
    node: &'a Node,
    table: Vec<u8>,
    id: u64,
    timeout: Duration,
}

/// What the decoding thread hands to the proposer.
enum Decoded {
    Batch(Vec<KeyValue>),
    End(Option<u64>),
    Malformed(String),
}

impl Node {
    /// Opens a restore of `table` (replacing any restore still open there).
    /// Each step waits at most `timeout` for the group.
    pub async fn begin_restore(&self, table: &[u8], timeout: Duration) -> Result<TableRestore<'_>> {
        let restore = TableRestore {
            node: self,
            table: table.to_vec(),
            id: rand::random::<u64>(),
            timeout,
        };
        restore.step(RestoreStep::Begin { id: restore.id }).await?;
        Ok(restore)
    }
}

impl TableRestore<'_> {
    async fn step(&self, step: RestoreStep) -> Result<()> {
        if self.node.restore(&self.table, step, self.timeout).await? {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "the restore was replaced or ended by another one".into(),
            ))
        }
    }

    /// Adds every record of the command stream read from `chunks`; calls
    /// `progress` after each batch. A malformed stream is
    /// `Error::MalformedStream` (the restore stays open: abort it).
    pub async fn fill(
        &self,
        chunks: mpsc::Receiver<Vec<u8>>,
        mut progress: impl FnMut(),
    ) -> Result<Filled> {
        let (batch_tx, mut batch_rx) = mpsc::channel::<Decoded>(2);
        let decoder = tokio::task::spawn_blocking(move || decode(chunks, batch_tx));
        let mut filled = Filled::default();
        let outcome = loop {
            let Some(decoded) = batch_rx.recv().await else {
                break Err(Error::Unavailable("the stream decoder stopped".into()));
            };
            match decoded {
                Decoded::Batch(records) => {
                    filled.records += records.len() as u64;
                    let batch = Command {
                        table: self.table.clone(),
                        r#type: CommandType::PutBatch as i32,
                        batch: records,
                        ..Command::default()
                    };
                    let step = RestoreStep::Batch {
                        id: self.id,
                        records: batch.encode_to_vec(),
                    };
                    if let Err(err) = self.step(step).await {
                        break Err(err);
                    }
                    progress();
                }
                Decoded::End(leader_index) => {
                    filled.leader_index = leader_index;
                    break Ok(filled);
                }
                Decoded::Malformed(reason) => break Err(Error::MalformedStream(reason)),
            }
        };
        // Stops the decoder if it is still going; its end stops the feeder.
        drop(batch_rx);
        let _ = decoder.await;
        outcome
    }

    /// Makes the restored content the table's, with `leader_index` as the
    /// stored leader index (a follower cluster's `L`; `None` elsewhere).
    pub async fn commit(self, leader_index: Option<u64>) -> Result<()> {
        self.step(RestoreStep::Commit {
            id: self.id,
            leader_index,
        })
        .await
    }

    /// Throws the restore away (best effort: a later begin replaces it anyway).
    pub async fn abort(self) {
        let step = RestoreStep::Abort { id: self.id };
        if let Err(err) = self.node.restore(&self.table, step, self.timeout).await {
            tracing::debug!(error = %err, "could not abort a restore");
        }
    }
}

/// Decodes chunks into record batches (runs on a blocking thread).
fn decode(chunks: mpsc::Receiver<Vec<u8>>, out: mpsc::Sender<Decoded>) {
    let input = ChunkReader {
        chunks,
        current: io::Cursor::new(Vec::new()),
    };
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    let mut leader_index = None;
    for record in CommandStreamReader::new(input) {
        match record {
            Ok(Record::Data(kv)) => {
                batch_bytes += kv.key.len() + kv.value.len() + 16;
                batch.push(kv);
                if batch_bytes >= BATCH_BYTES {
                    batch_bytes = 0;
                    let full = Decoded::Batch(std::mem::take(&mut batch));
                    if out.blocking_send(full).is_err() {
                        return;
                    }
                }
            }
            Ok(Record::Trailer {
                leader_index: index,
                ..
            }) => leader_index = index,
            Err(err) => {
                let _ = out.blocking_send(Decoded::Malformed(err.to_string()));
                return;
            }
        }
    }
    if !batch.is_empty() && out.blocking_send(Decoded::Batch(batch)).is_err() {
        return;
    }
    let _ = out.blocking_send(Decoded::End(leader_index));
}

/// The received chunks as one byte stream.
struct ChunkReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    current: io::Cursor<Vec<u8>>,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let read = self.current.read(buf)?;
            if read > 0 || buf.is_empty() {
                return Ok(read);
            }
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = io::Cursor::new(chunk),
                None => return Ok(0),
            }
        }
    }
}
