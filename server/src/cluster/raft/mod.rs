//! openraft wiring: types, the shared log store, the state-machine adapter
//! over storage tables, the internal transport (client and server), and the
//! running groups.

// openraft's `StorageError` is large, and its traits return it by value.
#![allow(clippy::result_large_err)]

mod answer_credit;
pub mod failure;
pub mod forward_batch;
pub mod group;
pub mod liveness;
pub mod log_store;
pub mod network;
pub mod read_rounds;
pub mod service;
pub mod snapshot_file;
pub mod state_machine;
pub mod timing;
pub mod types;

#[cfg(test)]
mod store_suite;

/// Runs `work` on a blocking thread: disk-bound work that may take long (a
/// table's scan or install, an fsync) must not hold a runtime worker, or
/// every other table's calls on that worker wait behind it.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| std::io::Error::other(format!("a blocking task failed: {err}")))?
}
