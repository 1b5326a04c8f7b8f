//! The node's first storage failure: a log sync, a state-machine write, a
//! snapshot build or install that failed. openraft stops the group that
//! hit it; the node then stops as a whole (`cli/leader.rs`), because its
//! groups share one log and one data store, and after a failed sync the
//! only trustworthy state is what a restart reads back from disk (the
//! lesson of PostgreSQL's "fsyncgate"). Its supervisor restarts it.

use std::io;
use std::sync::Arc;

use tokio::sync::watch;

use crate::storage::DiskSpace;

/// What a group's storage adapters report to the node (failures) and ask
/// of it (whether the disks have room).
#[derive(Clone)]
pub struct DiskHealth {
    pub failure: StorageFailure,
    pub space: Arc<DiskSpace>,
}

impl Default for DiskHealth {
    /// Nothing failed yet; no reserve enforced (tests).
    fn default() -> DiskHealth {
        DiskHealth {
            failure: StorageFailure::default(),
            space: DiskSpace::watch(Vec::new(), 0),
        }
    }
}

/// Shared by the node's log store and every state machine.
#[derive(Clone)]
pub struct StorageFailure(Arc<watch::Sender<Option<String>>>);

impl Default for StorageFailure {
    fn default() -> StorageFailure {
        StorageFailure(Arc::new(watch::channel(None).0))
    }
}

impl StorageFailure {
    /// Records `err` (the first one reported wins) and hands it back, for
    /// use in `map_err`.
    pub fn record(&self, what: &str, err: io::Error) -> io::Error {
        let message = format!("{what}: {err}");
        self.0.send_if_modified(|first| {
            if first.is_some() {
                return false;
            }
            tracing::error!(error = %message, "storage failure: this node stops");
            *first = Some(message);
            true
        });
        err
    }

    /// The first failure, once there is one.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_is_kept_and_announced() {
        let failure = StorageFailure::default();
        let mut seen = failure.subscribe();
        assert!(seen.borrow().is_none());
        let _ = failure.record("syncing the Raft log", io::Error::other("EIO"));
        let _ = failure.record("applying entry 7", io::Error::other("later"));
        let first = seen
            .wait_for(Option::is_some)
            .await
            .expect("sender alive")
            .clone();
        assert_eq!(first.as_deref(), Some("syncing the Raft log: EIO"));
    }
}
