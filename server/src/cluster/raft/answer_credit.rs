//! Keeps openraft from crediting an AppendStream answer to a later request.
//!
//! openraft 0.10.0-alpha.37 stamps each streamed AppendEntries request with
//! its send time and, for each answer, takes the send time of the *last*
//! queued request whose last log id the answer's `matching` covers
//! (`InflightAppendQueue::drain_acked`). That time says when a quorum last
//! accepted this node as leader, and ReadIndex reads trust it. An entry-less
//! request (sent when only the commit index moved) has the same last log id
//! as the request before it, so the answer to that earlier request is
//! credited with the entry-less request's later send time. A leader that was
//! paused with answers in its socket buffers then resumed: the first commit
//! it saw produced an entry-less request, an old answer was credited with its
//! send time, and a linearizable read was served from the deposed leader's
//! log (bug record in `conformance/README.md`).
//!
//! The gate between openraft and the transport keeps the two apart:
//! - an answer is withheld when a request sent after the one it answers is
//!   covered by it too; that request's own answer (or the stream's failure)
//!   follows, and answers are cumulative, so nothing is lost;
//! - no request is produced while openraft has an answer in hand and has not
//!   asked for the next one (it drains its queue in between), and an answer
//!   is not judged while a request is being produced.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::Stream;

/// One AppendStream's gate: wrap openraft's requests (before they are
/// encoded) with [`AnswerCredit::requests`] and the answers (in openraft's
/// terms, one per request, in order) with [`AnswerCredit::answers`].
pub struct AnswerCredit<K> {
    shared: Arc<Mutex<Shared<K>>>,
}

impl<K: PartialOrd> AnswerCredit<K> {
    pub fn new() -> Self {
        AnswerCredit {
            shared: Arc::new(Mutex::new(Shared {
                sent: VecDeque::new(),
                producing: false,
                delivered: false,
                producer: None,
                consumer: None,
            })),
        }
    }

    /// `last_of` gives a request's last log id.
    pub fn requests<R: Stream + Unpin>(
        &self,
        requests: R,
        last_of: fn(&R::Item) -> K,
    ) -> GatedRequests<R, K> {
        GatedRequests {
            inner: requests,
            shared: self.shared.clone(),
            last_of,
        }
    }

    /// `acked_of` gives the log id an answer acknowledges, `None` for one
    /// that acknowledges nothing (a failure, a conflict).
    pub fn answers<A: Stream + Unpin>(
        &self,
        answers: A,
        acked_of: fn(&A::Item) -> Option<K>,
    ) -> GatedAnswers<A, K> {
        GatedAnswers {
            inner: answers,
            shared: self.shared.clone(),
            acked_of,
            held: None,
        }
    }
}

impl<K: PartialOrd> Default for AnswerCredit<K> {
    fn default() -> Self {
        Self::new()
    }
}

struct Shared<K> {
    /// Last log ids of the requests produced and not yet answered, in order.
    sent: VecDeque<K>,
    /// A request is being produced (openraft stamps it inside that poll).
    producing: bool,
    /// An answer went to openraft, which has not asked for the next one.
    delivered: bool,
    producer: Option<Waker>,
    consumer: Option<Waker>,
}

fn lock<K>(shared: &Mutex<Shared<K>>) -> MutexGuard<'_, Shared<K>> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// openraft's requests, produced only while no answer is in its hands.
pub struct GatedRequests<R: Stream, K> {
    inner: R,
    shared: Arc<Mutex<Shared<K>>>,
    last_of: fn(&R::Item) -> K,
}

impl<R, K> Stream for GatedRequests<R, K>
where
    R: Stream + Unpin,
    K: PartialOrd,
{
    type Item = R::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<R::Item>> {
        {
            let mut shared = lock(&self.shared);
            if shared.delivered {
                shared.producer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            shared.producing = true;
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        let consumer = {
            let mut shared = lock(&self.shared);
            shared.producing = false;
            if let Poll::Ready(Some(request)) = &polled {
                shared.sent.push_back((self.last_of)(request));
            }
            shared.consumer.take()
        };
        if let Some(consumer) = consumer {
            consumer.wake();
        }
        polled
    }
}

/// The peer's answers, each delivered only if no later request is covered
/// by it.
pub struct GatedAnswers<A: Stream, K> {
    inner: A,
    shared: Arc<Mutex<Shared<K>>>,
    acked_of: fn(&A::Item) -> Option<K>,
    /// An answer taken from the peer while a request was being produced.
    held: Option<A::Item>,
}

impl<A, K> Stream for GatedAnswers<A, K>
where
    A: Stream + Unpin,
    A::Item: Unpin,
    K: PartialOrd,
{
    type Item = A::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<A::Item>> {
        // Asked again: openraft is done with the answer it had.
        let producer = {
            let mut shared = lock(&self.shared);
            shared.delivered = false;
            shared.producer.take()
        };
        if let Some(producer) = producer {
            producer.wake();
        }
        loop {
            let answer = match self.held.take() {
                Some(answer) => answer,
                None => match Pin::new(&mut self.inner).poll_next(cx) {
                    Poll::Ready(Some(answer)) => answer,
                    other => return other,
                },
            };
            let acked = (self.acked_of)(&answer);
            let mut shared = lock(&self.shared);
            if shared.producing {
                // Judge it once the request being produced is in `sent`.
                shared.consumer = Some(cx.waker().clone());
                drop(shared);
                self.held = Some(answer);
                return Poll::Pending;
            }
            shared.sent.pop_front();
            let covers_a_later_request = acked
                .as_ref()
                .is_some_and(|acked| shared.sent.iter().any(|last| last <= acked));
            if covers_a_later_request {
                continue;
            }
            shared.delivered = true;
            return Poll::Ready(Some(answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::StreamExt;

    /// Requests are their last log index; answers are `Some(acked index)` or
    /// `None` for a failure.
    type Gated = (
        GatedRequests<mpsc::UnboundedReceiver<u64>, u64>,
        GatedAnswers<mpsc::UnboundedReceiver<Option<u64>>, u64>,
    );

    fn gated() -> (
        mpsc::UnboundedSender<u64>,
        mpsc::UnboundedSender<Option<u64>>,
        Gated,
    ) {
        let (request_tx, request_rx) = mpsc::unbounded();
        let (answer_tx, answer_rx) = mpsc::unbounded();
        let credit = AnswerCredit::new();
        let gated = (
            credit.requests(request_rx, |last| *last),
            credit.answers(answer_rx, |answer| *answer),
        );
        (request_tx, answer_tx, gated)
    }

    fn poll<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        stream.poll_next_unpin(&mut cx)
    }

    #[test]
    fn an_answer_that_also_covers_a_later_entry_less_request_is_withheld_for_that_ones_answer() {
        let (request_tx, answer_tx, (mut requests, mut answers)) = gated();
        // Entries up to 10, then an entry-less request at 10 (only the
        // commit index moved), both sent before either is answered.
        request_tx.unbounded_send(10).unwrap();
        request_tx.unbounded_send(10).unwrap();
        assert_eq!(poll(&mut requests), Poll::Ready(Some(10)));
        assert_eq!(poll(&mut requests), Poll::Ready(Some(10)));
        // The first answer would be credited with the second's send time.
        answer_tx.unbounded_send(Some(10)).unwrap();
        assert_eq!(poll(&mut answers), Poll::Pending);
        // The second request's own answer goes through.
        answer_tx.unbounded_send(Some(10)).unwrap();
        assert_eq!(poll(&mut answers), Poll::Ready(Some(Some(10))));
    }

    #[test]
    fn answers_to_requests_with_new_entries_go_through_one_by_one() {
        let (request_tx, answer_tx, (mut requests, mut answers)) = gated();
        for last in [10, 20, 30] {
            request_tx.unbounded_send(last).unwrap();
            assert_eq!(poll(&mut requests), Poll::Ready(Some(last)));
        }
        for acked in [10, 20, 30] {
            answer_tx.unbounded_send(Some(acked)).unwrap();
            assert_eq!(poll(&mut answers), Poll::Ready(Some(Some(acked))));
        }
        // A failure is never withheld.
        assert_eq!(poll(&mut answers), Poll::Pending);
        request_tx.unbounded_send(30).unwrap();
        request_tx.unbounded_send(30).unwrap();
        assert_eq!(poll(&mut requests), Poll::Ready(Some(30)));
        assert_eq!(poll(&mut requests), Poll::Ready(Some(30)));
        answer_tx.unbounded_send(None).unwrap();
        assert_eq!(poll(&mut answers), Poll::Ready(Some(None)));
    }

    #[test]
    fn no_request_is_produced_while_openraft_holds_an_answer() {
        let (request_tx, answer_tx, (mut requests, mut answers)) = gated();
        request_tx.unbounded_send(10).unwrap();
        assert_eq!(poll(&mut requests), Poll::Ready(Some(10)));
        answer_tx.unbounded_send(Some(10)).unwrap();
        assert_eq!(poll(&mut answers), Poll::Ready(Some(Some(10))));
        // openraft drains its queue for that answer before asking again; a
        // request stamped in between would be drained with it.
        request_tx.unbounded_send(10).unwrap();
        assert_eq!(poll(&mut requests), Poll::Pending);
        // Asking for the next answer releases the requests.
        assert_eq!(poll(&mut answers), Poll::Pending);
        assert_eq!(poll(&mut requests), Poll::Ready(Some(10)));
    }

    #[test]
    fn an_answer_arriving_while_a_request_is_produced_waits_for_it() {
        let (request_tx, answer_tx, (mut requests, mut answers)) = gated();
        request_tx.unbounded_send(10).unwrap();
        assert_eq!(poll(&mut requests), Poll::Ready(Some(10)));
        // The producer is inside openraft (stamping an entry-less request).
        lock(&requests.shared).producing = true;
        answer_tx.unbounded_send(Some(10)).unwrap();
        assert_eq!(poll(&mut answers), Poll::Pending);
        // It comes out at 10 too: the held answer covers it and is dropped.
        lock(&requests.shared).producing = false;
        lock(&requests.shared).sent.push_back(10);
        assert_eq!(poll(&mut answers), Poll::Pending);
        answer_tx.unbounded_send(Some(10)).unwrap();
        assert_eq!(poll(&mut answers), Poll::Ready(Some(Some(10))));
    }

    #[tokio::test]
    async fn a_pipelined_exchange_delivers_every_answer_that_covers_no_later_request() {
        let (request_tx, answer_tx, (requests, answers)) = gated();
        let lasts = [1u64, 2, 2, 3, 4, 4, 4, 5];
        for last in lasts {
            request_tx.unbounded_send(last).unwrap();
        }
        drop(request_tx);
        // The "peer" answers each request with its last index.
        let peer = tokio::spawn(async move {
            let mut requests = requests;
            while let Some(last) = requests.next().await {
                answer_tx.unbounded_send(Some(last)).unwrap();
            }
        });
        let mut delivered: Vec<_> = answers.map(|answer| answer.unwrap()).collect().await;
        peer.await.unwrap();
        // Whether an answer at 2 or 4 is withheld depends on whether the
        // next request at the same index was produced before it came; the
        // last answer at each index always goes through, in order.
        assert!(
            delivered.windows(2).all(|pair| pair[0] <= pair[1]),
            "{delivered:?}"
        );
        delivered.dedup();
        assert_eq!(delivered, vec![1, 2, 3, 4, 5]);
    }
}
