//! Read-index rounds shared by concurrent linearizable reads.
//!
//! openraft 0.10 queues concurrent read-index calls in its core and serves
//! them with the next quorum acknowledgement, but each call is still a
//! message to the core, and reads forwarded from other nodes are a message
//! on the network each; rounds here keep both to one per batch. A read may share a
//! round that *starts after it arrived*: the index that round confirms is at least
//! the commit index at the read's arrival, which is all linearizability asks.
//! So reads queue up while a round runs and the next round serves all of
//! them: one round trip per batch instead of one per read.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::group::GroupError;

type Outcome = Result<u64, GroupError>;

/// One group's queue of reads waiting for a round.
#[derive(Default)]
pub struct ReadRounds {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Whether a task is running rounds.
    driving: bool,
    /// Reads that arrived after the running round started.
    waiting: Vec<oneshot::Sender<Outcome>>,
}

impl ReadRounds {
    /// Joins the next round that starts after this call. `round` runs one
    /// round; it is used only if no task is driving rounds yet.
    pub async fn next_round<F, Fut>(self: &Arc<Self>, round: F) -> Outcome
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.waiting.push(sender);
            !std::mem::replace(&mut state.driving, true)
        };
        if start {
            // A task of its own: a reader that gives up must not strand the others.
            tokio::spawn(self.clone().drive(round));
        }
        receiver
            .await
            .unwrap_or_else(|_| Err(GroupError::NoQuorum("the read round was dropped".into())))
    }

    async fn drive<F, Fut>(self: Arc<Self>, round: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        loop {
            let batch = {
                let mut state = self.lock();
                if state.waiting.is_empty() {
                    state.driving = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let outcome = round().await;
            for reader in batch {
                let _ = reader.send(outcome.clone());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_rounds_that_start_after_they_arrive() {
        let rounds = Arc::new(ReadRounds::default());
        let started = Arc::new(AtomicU64::new(0));
        let round = {
            let started = started.clone();
            move || {
                let started = started.clone();
                async move {
                    // The round's number: a later round confirms a later index.
                    let number = started.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(number)
                }
            }
        };
        let mut readers = Vec::new();
        for _ in 0..50 {
            let (rounds, round) = (rounds.clone(), round.clone());
            let arrived_after = started.clone();
            readers.push(tokio::spawn(async move {
                let rounds_begun = arrived_after.load(Ordering::SeqCst);
                let index = rounds.next_round(round).await.expect("round");
                // Served by a round that began after this read arrived.
                assert!(
                    index > rounds_begun,
                    "index {index}, rounds begun before {rounds_begun}"
                );
            }));
        }
        for reader in readers {
            reader.await.expect("reader");
        }
        let total = started.load(Ordering::SeqCst);
        assert!(
            total < 50,
            "50 reads took {total} rounds: nothing was shared"
        );
        // Idle again: the next read starts a new round.
        let index = rounds.next_round(round).await.expect("round");
        assert_eq!(index, total + 1);
    }

    #[tokio::test]
    async fn a_failed_round_fails_every_read_in_it_and_the_next_round_retries() {
        let rounds = Arc::new(ReadRounds::default());
        let failing = || async { Err(GroupError::NoQuorum("down".into())) };
        assert!(matches!(
            rounds.next_round(failing).await,
            Err(GroupError::NoQuorum(_))
        ));
        let working = || async { Ok(7) };
        assert_eq!(rounds.next_round(working).await, Ok(7));
    }
}
