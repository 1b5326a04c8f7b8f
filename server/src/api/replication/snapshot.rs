//! `Snapshot.Stream`: a consistent copy of a table in the command-stream
//! format, in chunks of at most 1 MiB, ending with a `DUMMY` whose
//! `leader_index` is the applied index the copy reflects
//! (`features/replication_protocol.feature`, `features/snapshot.feature`).
//!
//! The copy is read from a RocksDB snapshot on a blocking thread and handed
//! over chunk by chunk, the next built only once the client took the last,
//! so memory stays constant whatever the table's size and writes go on
//! meanwhile. Copies take turns with IterateRange (`stream_producer.rs`):
//! a client that never reads holds no thread for long.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use regatta_proto::replication::v1::snapshot_server::Snapshot;
use regatta_proto::replication::v1::{SnapshotChunk, SnapshotRequest};
use tonic::{Request, Response, Status};

use crate::api::status::Error;
use crate::api::stream_producer::Producer;
use crate::cluster::Node;
use crate::storage::{Table, Trailer};

/// Largest `data` of one chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

pub struct SnapshotService {
    node: Arc<Node>,
}

impl SnapshotService {
    pub fn new(node: Arc<Node>) -> Self {
        SnapshotService { node }
    }
}

/// The chunks of a copy, as the services return them.
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshot for SnapshotService {
    type StreamStream = ChunkStream;

    async fn stream(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let wait = crate::api::kv::deadline(&request);
        let table = request.into_inner().table;
        let data = self.node.table(&table).map_err(Error::from)?;
        Ok(Response::new(
            chunked_copy(data, Trailer::AppliedIndex, wait).await?,
        ))
    }
}

/// A consistent copy of `table` as a stream of chunks of at most 1 MiB,
/// read on a blocking thread. With a trailer the last chunk is always sent
/// and carries the applied index; without one (backups) an empty table
/// sends no chunk.
/// Waits up to `wait` for a turn to produce (`ResourceExhausted` without
/// one).
pub(crate) async fn chunked_copy(
    table: Table,
    trailer: Trailer,
    wait: Duration,
) -> Result<ChunkStream, Status> {
    let (mut producer, stream) = Producer::start(wait).await?;
    tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter {
            buffer: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
            producer: &mut producer,
        };
        let failed = match table.write_snapshot(writer, trailer) {
            Ok((state, mut writer)) => {
                if trailer != Trailer::None {
                    // The last chunk carries the index the copy reflects.
                    let _ = writer.send(state.applied_index);
                } else if !writer.buffer.is_empty() {
                    let _ = writer.send(0);
                }
                return;
            }
            Err(err) => err,
        };
        // After the client went away this goes nowhere, as it should.
        producer.send(Err(Error::from(failed).into()), false);
    });
    Ok(Box::pin(stream))
}

/// Cuts the command stream into chunks and sends each as it fills.
struct ChunkWriter<'a> {
    buffer: Vec<u8>,
    producer: &'a mut Producer<SnapshotChunk>,
}

impl ChunkWriter<'_> {
    fn send(&mut self, index: u64) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES));
        let chunk = SnapshotChunk {
            len: data.len() as u64,
            data,
            index,
        };
        if self.producer.send(Ok(chunk), true) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the reader went away",
            ))
        }
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = SNAPSHOT_CHUNK_BYTES - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == SNAPSHOT_CHUNK_BYTES {
            self.send(0)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
