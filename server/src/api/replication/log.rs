//! `Log.Replicate`: a table's committed entries from a leader index on
//! (`features/replication_protocol.feature`, `docs/replication.md`).
//!
//! Messages hold contiguous entries within the message size; entries that
//! are not user writes travel as `DUMMY` commands so indices stay
//! contiguous; every message carries the applied index `A` in
//! `leader_index`. Without the `regatta-replicate-mode: follow` metadata the
//! stream ends once it has sent everything up to `A` (what Regatta followers
//! expect); with it, the stream stays open and pushes entries as they apply.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use regatta_proto::mvcc::v1::{command::CommandType, Command};
use regatta_proto::replication::v1::log_server::Log;
use regatta_proto::replication::v1::{
    replicate_response, ReplicateCommand, ReplicateCommandsResponse, ReplicateErrResponse,
    ReplicateError, ReplicateRequest, ReplicateResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::status::Error;
use crate::cluster::{Node, TableLogEntry, TableLogRead};

/// Request metadata that asks the leader to keep the stream open (extension).
pub const FOLLOW_MODE_HEADER: &str = "regatta-replicate-mode";
/// Default of `--replication.max-send-message-size-bytes`.
pub const MAX_SEND_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// An idle follow-mode stream sends the applied index this often, so the
/// follower sees the stream alive and knows its lag.
const FOLLOW_HEARTBEAT: Duration = Duration::from_secs(5);
/// Room left in a message for everything but the commands.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

pub struct LogService {
    node: Arc<Node>,
    max_message_bytes: usize,
}

impl LogService {
    pub fn new(node: Arc<Node>, max_message_bytes: usize) -> Self {
        LogService {
            node,
            max_message_bytes,
        }
    }
}

#[tonic::async_trait]
impl Log for LogService {
    type ReplicateStream = ReceiverStream<Result<ReplicateResponse, Status>>;

    async fn replicate(
        &self,
        request: Request<ReplicateRequest>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let follow = request
            .metadata()
            .get(FOLLOW_MODE_HEADER)
            .is_some_and(|mode| mode.as_bytes() == b"follow");
        let request = request.into_inner();
        if request.leader_index == 0 {
            return Err(Error::InvalidArgument(
                "invalid leaderIndex: leaderIndex must be greater than 0",
            )
            .into());
        }
        let applied = self
            .node
            .table_applied(&request.table)
            .map_err(Error::from)?;
        let (sender, receiver) = mpsc::channel(2);
        let stream = Replication {
            node: self.node.clone(),
            table: request.table,
            next: request.leader_index,
            follow,
            max_bytes: self
                .max_message_bytes
                .saturating_sub(MESSAGE_OVERHEAD)
                .max(1),
            sender,
        };
        tokio::spawn(stream.run(applied));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// One follower's stream.
struct Replication {
    node: Arc<Node>,
    table: Vec<u8>,
    next: u64,
    follow: bool,
    max_bytes: usize,
    sender: mpsc::Sender<Result<ReplicateResponse, Status>>,
}

impl Replication {
    async fn run(mut self, mut applied_watch: tokio::sync::watch::Receiver<u64>) {
        let mut sent_any = false;
        loop {
            // Reading the log is a RocksDB scan: keep it off the async threads.
            let node = self.node.clone();
            let (table, next, max_bytes) = (self.table.clone(), self.next, self.max_bytes);
            let read =
                tokio::task::spawn_blocking(move || node.read_table_log(&table, next, max_bytes))
                    .await;
            let (applied, outcome) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(err)) => {
                    let _ = self.sender.send(Err(Error::from(err).into())).await;
                    return;
                }
                Err(join) => {
                    let _ = self
                        .sender
                        .send(Err(Error::Internal(join.to_string()).into()))
                        .await;
                    return;
                }
            };
            let message = match outcome {
                TableLogRead::Behind => Some(error_message(ReplicateError::LeaderBehind, applied)),
                TableLogRead::Compacted => {
                    Some(error_message(ReplicateError::UseSnapshot, applied))
                }
                TableLogRead::Entries(entries) if entries.is_empty() => None,
                TableLogRead::Entries(entries) => {
                    self.next = entries.last().map_or(self.next, |e| e.index + 1);
                    Some(commands_message(&self.table, entries, applied))
                }
            };
            let ends = matches!(
                message.as_ref().and_then(|m| m.response.as_ref()),
                Some(replicate_response::Response::ErrorResponse(_))
            );
            match message {
                Some(message) => {
                    if self.sender.send(Ok(message)).await.is_err() {
                        return; // The follower went away.
                    }
                    sent_any = true;
                    if ends {
                        return;
                    }
                    if self.next <= applied {
                        continue; // More to send right away.
                    }
                }
                None if !sent_any => {
                    // Nothing new: say where the leader stands
                    // (`features/replication_protocol.feature`).
                    let idle = ReplicateResponse {
                        response: None,
                        leader_index: applied,
                    };
                    if self.sender.send(Ok(idle)).await.is_err() {
                        return;
                    }
                    sent_any = true;
                }
                None => {}
            }
            if !self.follow {
                return;
            }
            // Follow mode: wait for the next applied entry, or heartbeat.
            let waited = tokio::time::timeout(
                FOLLOW_HEARTBEAT,
                applied_watch.wait_for(|applied| *applied >= self.next),
            )
            .await
            .map(|found| found.map(|_| ()));
            match waited {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    let _ = self
                        .sender
                        .send(Err(
                            Error::NotFound(crate::api::status::TABLE_NOT_FOUND).into()
                        ))
                        .await;
                    return;
                }
                Err(_) => {
                    let heartbeat = ReplicateResponse {
                        response: None,
                        leader_index: *applied_watch.borrow(),
                    };
                    if self.sender.send(Ok(heartbeat)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn error_message(error: ReplicateError, applied: u64) -> ReplicateResponse {
    ReplicateResponse {
        response: Some(replicate_response::Response::ErrorResponse(
            ReplicateErrResponse {
                error: error as i32,
            },
        )),
        leader_index: applied,
    }
}

fn commands_message(table: &[u8], entries: Vec<TableLogEntry>, applied: u64) -> ReplicateResponse {
    let commands = entries
        .into_iter()
        .map(|entry| ReplicateCommand {
            leader_index: entry.index,
            command: Some(to_command(table, entry)),
        })
        .collect();
    ReplicateResponse {
        response: Some(replicate_response::Response::CommandsResponse(
            ReplicateCommandsResponse { commands },
        )),
        leader_index: applied,
    }
}

/// The wire command of an entry: the user's command with its leader index,
/// or a `DUMMY` that keeps indices contiguous.
fn to_command(table: &[u8], entry: TableLogEntry) -> Command {
    let decoded = entry
        .command
        .as_deref()
        .and_then(|bytes| Command::decode(bytes).ok());
    match decoded {
        Some(mut command) => {
            command.leader_index = Some(entry.index);
            command
        }
        None => Command {
            table: table.to_vec(),
            r#type: CommandType::Dummy as i32,
            leader_index: Some(entry.index),
            ..Command::default()
        },
    }
}
