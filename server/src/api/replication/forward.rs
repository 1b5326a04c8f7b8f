//! `forward.v1.Forward.Writes` on the leader cluster's replication listener:
//! the writes of a follower node, many to a message over one stream (its
//! follower side: `replication/forward_stream.rs`). Each is made exactly as
//! the `regatta.v1.KV` call of its method makes it, so validation, errors,
//! deadlines and metrics are those of the KV API; what the stream saves is
//! an HTTP/2 stream, its headers and two task hand-offs per write, which on
//! 2 cores was most of what a forwarded write cost beyond a direct one.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use regatta_proto::forward::v1::forward_server::Forward;
use regatta_proto::forward::v1::{Method, Result as WriteResult, ResultBatch, Write, WriteBatch};
use regatta_proto::regatta::v1::kv_server::Kv;
use regatta_proto::regatta::v1::{DeleteRangeRequest, PutRequest, TxnRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::api::KvService;
use crate::storage::MAX_MESSAGE_BYTES;

/// Results taken together into one message, at most; a message also
/// stops growing past the KV API's largest message (each response is at
/// most that), so one is at most twice as large: `MAX_FORWARD_MESSAGE_BYTES`.
const MAX_RESULTS_PER_MESSAGE: usize = 256;

/// The largest message either side of the stream sends.
pub const MAX_FORWARD_MESSAGE_BYTES: usize = 3 * MAX_MESSAGE_BYTES;

pub struct ForwardService {
    kv: Arc<KvService>,
}

impl ForwardService {
    /// `kv`: the leader's own KV service (writes made locally).
    pub fn new(kv: Arc<KvService>) -> ForwardService {
        ForwardService { kv }
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    type WritesStream = Pin<Box<dyn Stream<Item = Result<ResultBatch, Status>> + Send>>;

    async fn writes(
        &self,
        request: Request<Streaming<WriteBatch>>,
    ) -> Result<Response<Self::WritesStream>, Status> {
        let incoming = request.into_inner();
        let (outgoing, stream) = mpsc::channel::<Result<ResultBatch, Status>>(64);
        tokio::spawn(serve(self.kv.clone(), incoming, outgoing));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }
}

/// Reads batches and starts each write at once: the writes of a batch run
/// concurrently, as separate KV calls would, so the Raft groups take them
/// together. Results go back as they complete, those completed together
/// in one message; the stream ends once every write started is answered.
/// One task polls every write of the stream: a task and a channel hand-off
/// per write cost more, on 2 cores, than the writes' own work here.
async fn serve(
    kv: Arc<KvService>,
    mut incoming: Streaming<WriteBatch>,
    outgoing: mpsc::Sender<Result<ResultBatch, Status>>,
) {
    let mut running = FuturesUnordered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            // Answers first: they free the follower's callers.
            biased;
            Some(first) = running.next(), if !running.is_empty() => {
                let mut bytes = response_len(&first);
                let mut results = vec![first];
                while results.len() < MAX_RESULTS_PER_MESSAGE && bytes < MAX_MESSAGE_BYTES {
                    match running.next().now_or_never() {
                        Some(Some(next)) => {
                            bytes += response_len(&next);
                            results.push(next);
                        }
                        _ => break,
                    }
                }
                if outgoing.send(Ok(ResultBatch { results })).await.is_err() {
                    return; // The follower went away.
                }
            }
            message = incoming.message(), if reading => match message {
                Ok(Some(batch)) => {
                    for write in batch.writes {
                        running.push(make_owned(kv.clone(), write));
                    }
                }
                // The follower ended its side: results still come.
                Ok(None) => reading = false,
                Err(status) => {
                    let _ = outgoing.send(Err(status)).await;
                    reading = false;
                }
            },
            else => return,
        }
    }
}

fn response_len(result: &WriteResult) -> usize {
    result.response.len()
}

async fn make_owned(kv: Arc<KvService>, write: Write) -> WriteResult {
    make(&kv, write).await
}

/// Makes one write as its KV call would, and answers it.
async fn make(kv: &KvService, write: Write) -> WriteResult {
    let timeout = (write.timeout_ms > 0).then(|| Duration::from_millis(write.timeout_ms));
    let answer = match Method::try_from(write.method) {
        Ok(Method::Put) => call(&write.request, timeout, |r: Request<PutRequest>| kv.put(r)).await,
        Ok(Method::DeleteRange) => {
            call(&write.request, timeout, |r: Request<DeleteRangeRequest>| {
                kv.delete_range(r)
            })
            .await
        }
        Ok(Method::Txn) => call(&write.request, timeout, |r: Request<TxnRequest>| kv.txn(r)).await,
        Ok(Method::Unspecified) | Err(_) => Err(Status::invalid_argument(format!(
            "unknown forwarded method {}",
            write.method
        ))),
    };
    match answer {
        Ok(response) => WriteResult {
            id: write.id,
            code: Code::Ok as i32,
            message: String::new(),
            response,
        },
        Err(status) => WriteResult {
            id: write.id,
            code: status.code() as i32,
            message: status.message().to_string(),
            response: Vec::new(),
        },
    }
}

/// Decodes the request, calls the KV method with the write's deadline and
/// encodes its answer.
async fn call<Req, Resp, F, Fut>(
    bytes: &[u8],
    timeout: Option<Duration>,
    method: F,
) -> Result<Vec<u8>, Status>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
{
    let decoded = Req::decode(bytes)
        .map_err(|err| Status::invalid_argument(format!("undecodable forwarded request: {err}")))?;
    let mut request = Request::new(decoded);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    Ok(method(request).await?.into_inner().encode_to_vec())
}
