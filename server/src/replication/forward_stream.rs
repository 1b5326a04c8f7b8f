//! The follower side of `forward.v1.Forward.Writes`: one stream per
//! follower node to the leader cluster, carrying the node's forwarded
//! writes many to a message (those waiting when the last message left go
//! in the next), and their answers back. The leader side is
//! `api/replication/forward.rs`.
//!
//! A stream is opened for the first write and kept. A leader that answers
//! `Unimplemented` (Regatta) does not serve it: callers then make one
//! `regatta.v1.KV` call per write, and the stream is tried again after
//! `RETRY_UNSUPPORTED`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regatta_proto::forward::v1::forward_client::ForwardClient;
use regatta_proto::forward::v1::{Method, Result as WriteResult, Write, WriteBatch};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

use crate::api::replication::MAX_FORWARD_MESSAGE_BYTES;

/// Why a write given to the stream has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The leader cluster does not serve the stream: use `regatta.v1.KV`.
    Unsupported,
    /// No stream could be opened: the write was not sent.
    NotSent(String),
    /// Sent, and the stream broke before its answer came: it may or may
    /// not have been made.
    Lost(String),
}

/// A write's answer: the status code and message of its KV call, and its
/// encoded response when the code is OK.
pub type Answer = (Code, String, Vec<u8>);

/// Where a write's answer, or why it has none, goes.
type Waiter = oneshot::Sender<Result<Answer, StreamError>>;

/// How long callers use `regatta.v1.KV` after the leader cluster answered
/// that it does not serve the stream, before it is tried again.
const RETRY_UNSUPPORTED: Duration = Duration::from_secs(60);
/// Writes taken together into one message, at most; a message also stops
/// growing past a quarter of the largest one (a single write may be larger).
const MAX_WRITES_PER_MESSAGE: usize = 256;
const MAX_BATCH_BYTES: usize = MAX_FORWARD_MESSAGE_BYTES / 4;
/// Turns the stream's task lets other tasks run before it takes a batch,
/// at most (each a few microseconds).
const MAX_YIELDS: usize = 4;

struct Queued {
    method: Method,
    request: Vec<u8>,
    timeout: Duration,
    answer: Waiter,
}

pub struct WriteStream {
    queue: mpsc::UnboundedSender<Queued>,
    unsupported: Arc<AtomicBool>,
}

impl WriteStream {
    /// Starts the task that keeps the stream on `leader` (the channel to
    /// the leader cluster's replication listener).
    pub fn start(leader: Channel) -> WriteStream {
        let (queue, queued) = mpsc::unbounded_channel();
        let unsupported = Arc::new(AtomicBool::new(false));
        let client = ForwardClient::new(leader)
            .max_decoding_message_size(MAX_FORWARD_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_FORWARD_MESSAGE_BYTES);
        tokio::spawn(drive(client, queued, unsupported.clone()));
        WriteStream { queue, unsupported }
    }

    /// Whether writes go on the stream now (else through `regatta.v1.KV`).
    pub fn serves(&self) -> bool {
        !self.unsupported.load(Ordering::Relaxed)
    }

    /// Sends one write (its encoded request; `timeout`: the time left to
    /// its deadline) and waits for its answer.
    pub async fn write(
        &self,
        method: Method,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, StreamError> {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            method,
            request,
            timeout,
            answer,
        };
        if self.queue.send(queued).is_err() {
            return Err(StreamError::NotSent("the node is stopping".into()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(StreamError::Lost("the stream's task ended".into())))
    }
}

/// Opens a stream when there is a write to send, carries writes and
/// answers until it breaks, and opens another for the next write.
async fn drive(
    client: ForwardClient<Channel>,
    mut queued: mpsc::UnboundedReceiver<Queued>,
    unsupported: Arc<AtomicBool>,
) {
    // An idle follower holds no stream open until its first write.
    let Some(mut first) = queued.recv().await else {
        return;
    };
    loop {
        let (outgoing, messages) = mpsc::channel::<WriteBatch>(16);
        let opened = client
            .clone()
            .writes(ReceiverStream::new(messages))
            .await
            .map(tonic::Response::into_inner);
        let mut incoming = match opened {
            Ok(incoming) => {
                unsupported.store(false, Ordering::Relaxed);
                incoming
            }
            Err(status) => {
                // Nothing was sent: the first message goes after the open.
                let error = if status.code() == Code::Unimplemented {
                    // Callers go to regatta.v1.KV from now on.
                    unsupported.store(true, Ordering::Relaxed);
                    StreamError::Unsupported
                } else {
                    StreamError::NotSent(status.message().to_string())
                };
                let _ = first.answer.send(Err(error.clone()));
                while let Ok(next) = queued.try_recv() {
                    let _ = next.answer.send(Err(error.clone()));
                }
                if error == StreamError::Unsupported {
                    tracing::info!(
                        "the leader cluster does not serve forward.v1.Forward: \
                         forwarding each write as its own regatta.v1.KV call"
                    );
                    // Writes queued by callers that looked just before the
                    // switch are sent back to regatta.v1.KV too.
                    let again = tokio::time::Instant::now() + RETRY_UNSUPPORTED;
                    loop {
                        match tokio::time::timeout_at(again, queued.recv()).await {
                            Ok(Some(late)) => {
                                let _ = late.answer.send(Err(StreamError::Unsupported));
                            }
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                    unsupported.store(false, Ordering::Relaxed);
                }
                match queued.recv().await {
                    Some(next) => first = next,
                    None => return,
                }
                continue;
            }
        };
        let mut waiting: HashMap<u64, Waiter> = HashMap::new();
        let mut next_id: u64 = 0;
        let mut carried = Some(first);
        let broken = loop {
            let write = match carried.take() {
                Some(write) => Some(write),
                None => tokio::select! {
                    write = queued.recv() => match write {
                        Some(write) => Some(write),
                        None => return,
                    },
                    message = incoming.message() => {
                        match message {
                            Ok(Some(batch)) => {
                                for result in batch.results {
                                    answer(&mut waiting, result);
                                }
                                None
                            }
                            Ok(None) => break "the leader ended the stream".to_string(),
                            Err(status) => break status.message().to_string(),
                        }
                    }
                },
            };
            let Some(write) = write else {
                continue;
            };
            // Callers woken together (by the answers of one message) queue
            // their next writes a moment later: let them, while the queue
            // grows, so that those go in one message rather than one each.
            for _ in 0..MAX_YIELDS {
                let before = queued.len();
                tokio::task::yield_now().await;
                if queued.len() == before {
                    break;
                }
            }
            let batch = take_batch(write, &mut queued, &mut waiting, &mut next_id);
            if outgoing.send(batch).await.is_err() {
                break "the stream closed".to_string();
            }
        };
        // Everything sent and unanswered may or may not have been made.
        for (_, waiter) in waiting.drain() {
            let _ = waiter.send(Err(StreamError::Lost(broken.clone())));
        }
        match queued.recv().await {
            Some(next) => first = next,
            None => return,
        }
    }
}

/// `write` and the writes queued behind it, up to a message's worth, as
/// one message; their answers wait under their ids.
fn take_batch(
    write: Queued,
    queued: &mut mpsc::UnboundedReceiver<Queued>,
    waiting: &mut HashMap<u64, Waiter>,
    next_id: &mut u64,
) -> WriteBatch {
    let mut writes = Vec::new();
    let mut bytes = 0;
    let mut add = |write: Queued, writes: &mut Vec<Write>| {
        *next_id += 1;
        bytes += write.request.len();
        waiting.insert(*next_id, write.answer);
        writes.push(Write {
            id: *next_id,
            method: write.method as i32,
            request: write.request,
            timeout_ms: u64::try_from(write.timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        });
        bytes
    };
    let mut total = add(write, &mut writes);
    while writes.len() < MAX_WRITES_PER_MESSAGE && total < MAX_BATCH_BYTES {
        match queued.try_recv() {
            Ok(next) => total = add(next, &mut writes),
            Err(_) => break,
        }
    }
    WriteBatch { writes }
}

fn answer(waiting: &mut HashMap<u64, Waiter>, result: WriteResult) {
    // A caller that gave up (its deadline) dropped its receiver.
    if let Some(waiter) = waiting.remove(&result.id) {
        let code = Code::from_i32(result.code);
        let _ = waiter.send(Ok((code, result.message, result.response)));
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Mutex;

    use futures::Stream;
    use regatta_proto::forward::v1::forward_server::{Forward, ForwardServer};
    use regatta_proto::forward::v1::ResultBatch;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;

    /// Answers every write of a message with its request bytes reversed, in
    /// the reverse order, and records how many writes each message held.
    #[derive(Default, Clone)]
    struct Mirror {
        messages: Arc<Mutex<Vec<usize>>>,
    }

    #[tonic::async_trait]
    impl Forward for Mirror {
        type WritesStream = Pin<Box<dyn Stream<Item = Result<ResultBatch, Status>> + Send>>;

        async fn writes(
            &self,
            request: Request<Streaming<WriteBatch>>,
        ) -> Result<Response<Self::WritesStream>, Status> {
            let mut incoming = request.into_inner();
            let messages = self.messages.clone();
            let (out, stream) = mpsc::channel(16);
            tokio::spawn(async move {
                while let Ok(Some(batch)) = incoming.message().await {
                    messages.lock().expect("lock").push(batch.writes.len());
                    let results = batch
                        .writes
                        .into_iter()
                        .rev()
                        .map(|write| WriteResult {
                            id: write.id,
                            code: if write.method == Method::Txn as i32 {
                                Code::FailedPrecondition as i32
                            } else {
                                0
                            },
                            message: "mirrored".into(),
                            response: write.request.into_iter().rev().collect(),
                        })
                        .collect();
                    if out.send(Ok(ResultBatch { results })).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
        }
    }

    async fn serve(forward: Option<Mirror>) -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (_, health) = tonic_health::server::health_reporter();
        let router = tonic::transport::Server::builder()
            .add_service(health)
            .add_optional_service(forward.map(ForwardServer::new));
        tokio::spawn(
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect_lazy()
    }

    #[tokio::test]
    async fn concurrent_writes_share_messages_and_each_gets_its_own_answer() {
        let mirror = Mirror::default();
        let stream = Arc::new(WriteStream::start(serve(Some(mirror.clone())).await));
        let writes: Vec<_> = (0u8..100)
            .map(|i| {
                let stream = stream.clone();
                tokio::spawn(async move {
                    let method = if i % 10 == 0 {
                        Method::Txn
                    } else {
                        Method::Put
                    };
                    let answer = stream
                        .write(method, vec![i, 1, 2], Duration::from_secs(5))
                        .await
                        .expect("answered");
                    (i, method, answer)
                })
            })
            .collect();
        for write in writes {
            let (i, method, (code, message, response)) = write.await.expect("task");
            assert_eq!(response, vec![2, 1, i], "write {i} got another's answer");
            assert_eq!(message, "mirrored");
            let expected = if method == Method::Txn {
                Code::FailedPrecondition
            } else {
                Code::Ok
            };
            assert_eq!(code, expected);
        }
        let messages = mirror.messages.lock().expect("lock").clone();
        assert_eq!(messages.iter().sum::<usize>(), 100);
        assert!(
            messages.len() < 100,
            "100 concurrent writes took {} messages",
            messages.len()
        );
        assert!(stream.serves());
    }

    #[tokio::test]
    async fn a_leader_without_the_stream_sends_writes_back_to_the_kv_api() {
        let stream = WriteStream::start(serve(None).await);
        let answer = stream
            .write(Method::Put, vec![1], Duration::from_secs(5))
            .await;
        assert_eq!(answer, Err(StreamError::Unsupported));
        assert!(!stream.serves());
    }

    #[tokio::test]
    async fn no_leader_means_not_sent() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = closed.local_addr().expect("address");
        drop(closed);
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect_lazy();
        let stream = WriteStream::start(channel);
        let answer = stream
            .write(Method::Put, vec![1], Duration::from_secs(5))
            .await;
        assert!(matches!(answer, Err(StreamError::NotSent(_))), "{answer:?}");
        assert!(stream.serves());
    }
}
