//! Server streams produced on blocking threads (IterateRange, Backup,
//! Snapshot.Stream): a bounded
//! number at a time, and none waiting forever on a client that stopped
//! reading.
//!
//! A producer reads its point-in-time view on a blocking thread and hands
//! over one message at a time (back-pressure): it builds the next message
//! only once the last was taken, so a client that stops reading holds two
//! (one encoded in HTTP/2's send buffer, one queued; a 4 MiB message of
//! small pairs takes about 15 MiB as a struct). It would still keep the
//! thread for as long as it keeps the call open: a thousand such clients
//! took every thread of the runtime's blocking pool, which the node also
//! needs for its own disk work. So at most [`PRODUCERS`] streams produce at once (the others wait
//! for a turn, at most their deadline, then get `ResourceExhausted`), and
//! a producer whose client has not taken a message for [`STALL_TIMEOUT`]
//! ends the stream with `DeadlineExceeded`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use super::status::Error;

/// Streams producing at once, in this process.
pub const PRODUCERS: usize = 16;
/// How long a producer waits for its client to take a message.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

fn slots() -> &'static Arc<Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(Semaphore::new(PRODUCERS)))
}

/// A turn to produce one stream; handed to the blocking thread.
pub struct Producer<T> {
    _turn: OwnedSemaphorePermit,
    runtime: tokio::runtime::Handle,
    /// Room for the next message, once the client took the last one.
    room: Option<OwnedPermit<Result<T, Status>>>,
    sender: mpsc::Sender<Result<T, Status>>,
    ended: Arc<Mutex<Option<Status>>>,
    stall_timeout: Duration,
}

impl<T: Send + 'static> Producer<T> {
    /// Waits for a turn up to `wait` (the time the call has, which already
    /// ends before the client's deadline: `kv::deadline_or`, so the refusal
    /// reaches the client before it gives up); then the producer and the
    /// stream its messages go out on.
    pub async fn start(
        wait: Duration,
    ) -> Result<(Producer<T>, impl Stream<Item = Result<T, Status>>), Status> {
        Self::start_with(slots().clone(), wait, STALL_TIMEOUT).await
    }

    async fn start_with(
        slots: Arc<Semaphore>,
        wait: Duration,
        stall_timeout: Duration,
    ) -> Result<(Producer<T>, impl Stream<Item = Result<T, Status>>), Status> {
        let turn = match tokio::time::timeout(wait, slots.acquire_owned()).await {
            Ok(Ok(turn)) => turn,
            _ => {
                return Err(Error::ResourceExhausted(format!(
                    "too many streams in progress (at most {PRODUCERS} at once); try again"
                ))
                .into())
            }
        };
        let (sender, receiver) = mpsc::channel(1);
        let ended = Arc::new(Mutex::new(None));
        let last = ended.clone();
        // Whatever ended the stream early comes after the messages queued.
        let tail = futures::stream::once(async move {
            last.lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .map(Err)
        })
        .filter_map(std::future::ready);
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).chain(tail);
        let producer = Producer {
            _turn: turn,
            runtime: tokio::runtime::Handle::current(),
            room: None,
            sender,
            ended,
            stall_timeout,
        };
        Ok((producer, stream))
    }

    /// Hands `item` over (blocking thread only), then, when `more` follow,
    /// waits until the client has taken it, so that the next is built only
    /// then. False when the stream is over: the client went away, or did
    /// not take a message in time.
    pub fn send(&mut self, item: Result<T, Status>, more: bool) -> bool {
        let room = match self.room.take() {
            Some(room) => room,
            None => match self.wait_for_room() {
                Some(room) => room,
                None => return false,
            },
        };
        room.send(item);
        if !more {
            return true;
        }
        match self.wait_for_room() {
            Some(room) => {
                self.room = Some(room);
                true
            }
            None => false,
        }
    }

    fn wait_for_room(&self) -> Option<OwnedPermit<Result<T, Status>>> {
        let reserved = self.runtime.block_on(tokio::time::timeout(
            self.stall_timeout,
            self.sender.clone().reserve_owned(),
        ));
        match reserved {
            Ok(Ok(room)) => Some(room),
            Ok(Err(_)) => None,
            Err(_) => {
                let stalled = Error::DeadlineExceeded(format!(
                    "the client did not read the stream for {} s",
                    self.stall_timeout.as_secs_f64()
                ));
                *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(stalled.into());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_client_gets_an_error_after_the_timeout_and_frees_its_turn() {
        let slots = Arc::new(Semaphore::new(1));
        let (producer, stream) = Producer::<u32>::start_with(
            slots.clone(),
            Duration::from_secs(1),
            Duration::from_millis(100),
        )
        .await
        .expect("a turn");
        let busy =
            Producer::<u32>::start_with(slots.clone(), Duration::from_millis(50), STALL_TIMEOUT)
                .await;
        assert_eq!(
            busy.err().map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted),
            "no second turn"
        );
        let mut producer = producer;
        let sent = tokio::task::spawn_blocking(move || {
            // The message is queued; room for the next never comes.
            producer.send(Ok(1), true)
        })
        .await
        .expect("producer");
        assert!(!sent, "the stream is over");
        let items: Vec<Result<u32, tonic::Code>> = stream
            .map(|item| item.map_err(|s| s.code()))
            .collect()
            .await;
        assert_eq!(items, vec![Ok(1), Err(tonic::Code::DeadlineExceeded)]);
        assert_eq!(slots.available_permits(), 1, "the turn is back");
    }
}
