//! Writes a follower forwards to its group's leader, sent in batches.
//!
//! Each group has one sending task with one call in flight. It takes
//! whatever writes queued while the last call was out (up to a count and a
//! size) and sends them in one `ForwardBatch` call; the leader proposes them
//! as consecutive entries in one message to its Raft core. A write that
//! arrives while no call is out goes at once, alone: batching costs no
//! latency when the load is light, and under load the batches grow with it.
//! One call in flight gave the most writes per second on 3 nodes (put-64,
//! 8 s runs, release, 2 cores: 8,158 to 9,467 req/s; 7,956 and 8,223 with
//! two calls in flight; 7,053 to 7,550 with four): every call saved is CPU
//! for the writes.
//!
//! The answers keep the exactly-once rule of single forwarding: a call the
//! peer provably never acted on (`CallError::Unreachable`, or a batch the
//! leader refused whole as not leader) may be sent again by the caller;
//! after any other failure every write of the batch is of unknown outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::group::GroupError;
use super::network::{CallError, Method, Peers};
use super::types::{GroupId, NodeId, Request, Response};

/// What a forwarded write came back with.
pub type Forwarded = Result<Result<Response, GroupError>, CallError>;

/// Most writes in one batch.
const MAX_BATCH_WRITES: usize = 256;
/// Most encoded bytes in one batch (a single larger write goes alone); far
/// under the transport's message limit.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Counters of this node's forwarding, for `/metrics`.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Writes sent to a leader.
    pub writes: AtomicU64,
    /// Calls that carried them.
    pub batches: AtomicU64,
}

/// One queued write and where its answer goes.
struct Pending {
    leader: NodeId,
    request: Request,
    bytes: usize,
    deadline: Instant,
    answer: oneshot::Sender<Forwarded>,
}

/// The forwarding queue of one group; its task ends when this is dropped.
pub struct ForwardBatcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl ForwardBatcher {
    /// Starts the sending task of `group`.
    pub fn start(group: GroupId, peers: Arc<Peers>) -> ForwardBatcher {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(group, peers, pending));
        ForwardBatcher { queue }
    }

    /// Forwards `request` to `leader` and waits at most `timeout` for its
    /// answer (after which its outcome is unknown: it may have been sent).
    pub async fn forward(&self, leader: NodeId, request: Request, timeout: Duration) -> Forwarded {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            leader,
            bytes: bincode::serialized_size(&request).map_or(0, |n| n as usize),
            request,
            deadline: Instant::now() + timeout,
            answer,
        };
        if self.queue.send(pending).is_err() {
            return Err(CallError::Unreachable("the group is stopping".into()));
        }
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(forwarded)) => forwarded,
            Ok(Err(_)) => Err(CallError::Lost("the forwarding task stopped".into())),
            Err(_) => Err(CallError::Timeout),
        }
    }
}

/// Sends batches one at a time, each with the writes queued while the
/// last was out, until the queue closes.
async fn send_batches(
    group: GroupId,
    peers: Arc<Peers>,
    mut queue: mpsc::UnboundedReceiver<Pending>,
) {
    let mut held: Option<Pending> = None;
    loop {
        let first = match held.take() {
            Some(pending) => pending,
            None => match queue.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let (batch, rest) = take_batch(first, || queue.try_recv().ok());
        held = rest;
        // Callers that stopped waiting (deadline, another leader) are not
        // sent: never sent is the one outcome that is certain.
        let batch: Vec<Pending> = batch
            .into_iter()
            .filter(|p| !p.answer.is_closed())
            .collect();
        if !batch.is_empty() {
            send_batch(&peers, group, batch).await;
        }
    }
}

/// Takes `first` and the queued writes that may go with it: same leader,
/// within the count and size limits. Returns the batch and the first
/// write that did not fit (it starts the next batch).
fn take_batch(
    first: Pending,
    mut next: impl FnMut() -> Option<Pending>,
) -> (Vec<Pending>, Option<Pending>) {
    let leader = first.leader;
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_WRITES {
        let Some(pending) = next() else {
            return (batch, None);
        };
        if pending.leader != leader || bytes + pending.bytes > MAX_BATCH_BYTES {
            return (batch, Some(pending));
        }
        bytes += pending.bytes;
        batch.push(pending);
    }
    (batch, None)
}

/// Sends one batch and hands each write its answer.
async fn send_batch(peers: &Peers, group: GroupId, batch: Vec<Pending>) {
    let leader = batch[0].leader;
    let now = Instant::now();
    let timeout = batch
        .iter()
        .map(|p| p.deadline.saturating_duration_since(now))
        .max()
        .unwrap_or_default();
    let (requests, mut answers): (Vec<Request>, Vec<oneshot::Sender<Forwarded>>) =
        batch.into_iter().map(|p| (p.request, p.answer)).unzip();
    let stats = peers.forward_stats();
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .writes
        .fetch_add(requests.len() as u64, Ordering::Relaxed);
    let reply: Result<Vec<Result<Response, GroupError>>, CallError> = tokio::select! {
        reply = peers.call(leader, group, Method::ForwardBatch, &requests, timeout) => reply,
        // Every caller stopped waiting (most often: another node leads
        // now, and this one went silent). The call is dropped, so the next
        // batch, to the new leader, does not wait for it.
        () = all_closed(&mut answers) => return,
    };
    match reply {
        Ok(results) => {
            let mut results = results.into_iter();
            for answer in answers {
                // The leader answers every write; a short answer leaves
                // the rest unknown.
                let result = results.next().map(Ok).unwrap_or_else(|| {
                    Err(CallError::Network("the leader's answer was short".into()))
                });
                let _ = answer.send(result);
            }
        }
        Err(err) => {
            for answer in answers {
                let _ = answer.send(Err(err.clone()));
            }
        }
    }
}

/// Resolves once no one waits for any of `answers`.
async fn all_closed(answers: &mut [oneshot::Sender<Forwarded>]) {
    for answer in answers {
        answer.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(leader: NodeId, bytes: usize) -> (Pending, oneshot::Receiver<Forwarded>) {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            leader,
            request: Request::Table(vec![0; bytes]),
            bytes,
            deadline: Instant::now() + Duration::from_secs(1),
            answer,
        };
        (pending, answered)
    }

    fn queue_of(items: Vec<Pending>) -> impl FnMut() -> Option<Pending> {
        let mut items = items.into_iter();
        move || items.next()
    }

    #[test]
    fn a_batch_takes_every_queued_write_for_the_same_leader() {
        let (first, _a) = pending(2, 10);
        let (rest, _answered): (Vec<_>, Vec<_>) = (0..5).map(|_| pending(2, 10)).unzip();
        let (batch, held) = take_batch(first, queue_of(rest));
        assert_eq!(batch.len(), 6);
        assert!(held.is_none());
    }

    #[test]
    fn a_write_for_another_leader_starts_the_next_batch() {
        let (first, _a) = pending(2, 10);
        let (second, _b) = pending(2, 10);
        let (other, _c) = pending(3, 10);
        let (after, _d) = pending(2, 10);
        let (batch, held) = take_batch(first, queue_of(vec![second, other, after]));
        assert_eq!(batch.len(), 2);
        assert_eq!(held.map(|p| p.leader), Some(3));
    }

    #[test]
    fn a_batch_stays_within_its_size_and_count() {
        let (first, _a) = pending(2, MAX_BATCH_BYTES / 2);
        let (second, _b) = pending(2, MAX_BATCH_BYTES / 2);
        let (third, _c) = pending(2, 1);
        let (batch, held) = take_batch(first, queue_of(vec![second, third]));
        assert_eq!(batch.len(), 2);
        assert_eq!(held.map(|p| p.bytes), Some(1));

        // A write larger than the limit still goes, alone.
        let (huge, _h) = pending(2, MAX_BATCH_BYTES * 2);
        let (small, _s) = pending(2, 1);
        let (batch, held) = take_batch(huge, queue_of(vec![small]));
        assert_eq!(batch.len(), 1);
        assert!(held.is_some());

        let (first, _a) = pending(2, 1);
        let (many, _answered): (Vec<_>, Vec<_>) =
            (0..MAX_BATCH_WRITES + 10).map(|_| pending(2, 1)).unzip();
        let (batch, held) = take_batch(first, queue_of(many));
        assert_eq!(batch.len(), MAX_BATCH_WRITES);
        // The count limit stops before taking the next one off the queue.
        assert!(held.is_none());
    }
}
