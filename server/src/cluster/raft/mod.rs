//! openraft wiring: types, the shared log store, the state-machine adapter
//! over storage tables, the internal transport (client and server), and the
//! running groups.

// openraft's `StorageError` is large, and its traits return it by value.
#![allow(clippy::result_large_err)]

mod answer_credit;
pub mod forward_batch;
pub mod group;
pub mod log_store;
pub mod network;
pub mod read_rounds;
pub mod service;
pub mod state_machine;
pub mod timing;
pub mod types;

#[cfg(test)]
mod store_suite;
