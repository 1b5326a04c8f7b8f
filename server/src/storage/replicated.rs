//! Writers waiting for a follower cluster's copy of a table to hold a
//! leader-cluster index (`features/follower_writes.feature`): a write forwarded to the leader
//! cluster answers once the local copy's `L` reaches the leader's revision.
//!
//! Each waiter is one entry keyed by the index it needs, woken once, by the
//! writer that publishes an `L` at or past it; nothing polls, and a table
//! with nobody waiting pays one atomic load per published state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Waiters before closed ones (their client gave up) are swept out, doubled
/// after each sweep that leaves that many open.
const SWEEP_AT: usize = 1024;

#[derive(Debug)]
pub(crate) struct ReplicatedWaiters {
    /// The last `L` published (0: none).
    reached: AtomicU64,
    waiting: Mutex<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    by_index: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    count: usize,
    sweep_at: usize,
}

impl Default for ReplicatedWaiters {
    fn default() -> Self {
        ReplicatedWaiters {
            reached: AtomicU64::new(0),
            waiting: Mutex::new(Waiting {
                by_index: BTreeMap::new(),
                count: 0,
                sweep_at: SWEEP_AT,
            }),
        }
    }
}

impl ReplicatedWaiters {
    /// Waiters of a table whose stored `L` is `leader_index`.
    pub(crate) fn starting_at(leader_index: Option<u64>) -> Self {
        let waiters = ReplicatedWaiters::default();
        waiters.reached(leader_index);
        waiters
    }

    /// `None` when `L` is at `index` already; else a receiver that resolves
    /// once it is (and errs if the table goes away first).
    pub(crate) fn wait_for(&self, index: u64) -> Option<oneshot::Receiver<()>> {
        let mut waiting = self.lock();
        // Read under the lock: a publisher stores `reached` under it too,
        // so a waiter is either seen as satisfied here or woken there.
        if self.reached.load(Ordering::Acquire) >= index {
            return None;
        }
        if waiting.count >= waiting.sweep_at {
            waiting.by_index.retain(|_, senders| {
                senders.retain(|sender| !sender.is_closed());
                !senders.is_empty()
            });
            waiting.count = waiting.by_index.values().map(Vec::len).sum();
            waiting.sweep_at = (waiting.count * 2).max(SWEEP_AT);
        }
        let (sender, receiver) = oneshot::channel();
        waiting.by_index.entry(index).or_default().push(sender);
        waiting.count += 1;
        Some(receiver)
    }

    /// Publishes `L` (`None`: the table holds no replicated entry) and wakes
    /// every waiter it satisfies.
    pub(crate) fn reached(&self, leader_index: Option<u64>) {
        let index = leader_index.unwrap_or(0);
        if self.reached.load(Ordering::Acquire) == index {
            return;
        }
        let ready = {
            let mut waiting = self.lock();
            self.reached.store(index, Ordering::Release);
            let later = waiting.by_index.split_off(&index.saturating_add(1));
            let ready = std::mem::replace(&mut waiting.by_index, later);
            waiting.count -= ready.values().map(Vec::len).sum::<usize>();
            ready
        };
        for sender in ready.into_values().flatten() {
            let _ = sender.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_once_its_index_is_reached_and_not_before() {
        let waiters = ReplicatedWaiters::default();
        waiters.reached(Some(3));
        assert!(waiters.wait_for(3).is_none(), "already there");
        let mut at_5 = waiters.wait_for(5).expect("waits");
        let at_9 = waiters.wait_for(9).expect("waits");
        waiters.reached(Some(4));
        assert!(at_5.try_recv().is_err(), "4 is not 5");
        waiters.reached(Some(7));
        at_5.await.expect("woken at 7");
        assert_eq!(waiters.waiting(), 1, "the waiter for 9 stays");
        drop(waiters);
        assert!(
            at_9.await.is_err(),
            "a table gone wakes its waiters with an error"
        );
    }

    #[test]
    fn a_reset_copy_makes_later_waiters_wait_again() {
        let waiters = ReplicatedWaiters::default();
        waiters.reached(Some(10));
        waiters.reached(None);
        assert!(waiters.wait_for(5).is_some(), "L went back to 0");
    }

    #[test]
    fn waiters_whose_clients_left_are_swept() {
        let waiters = ReplicatedWaiters::default();
        for index in 0..(SWEEP_AT as u64 * 3) {
            drop(waiters.wait_for(index + 1));
        }
        assert!(waiters.waiting() <= SWEEP_AT, "{}", waiters.waiting());
    }
}
