//! The table state machine on RocksDB: everything a table does to its data,
//! independent of Raft. The Raft layer drives it through
//! [`Table::apply_entry`] (one call per log entry), reads through
//! [`Table::range`]/[`Table::txn_read`], and moves whole tables with
//! [`Table::write_snapshot`]/[`Table::install_snapshot`].

mod apply;
mod disk_space;
mod encoding;
mod engine;
mod error;
mod query;
mod range;
mod replicated;
mod restore;
pub mod stream;
mod table;
mod txn;
mod view;

pub use disk_space::DiskSpace;
pub use encoding::Stored;
pub use engine::{Space, Storage, StorageOptions, FORMAT_VERSION};
pub use error::{suspects, Error, Result};
pub use query::{MessageSizes, RangeQuery, RangeResult, MAX_MESSAGE_BYTES};
pub use range::{prefix_end, KeyRange};
pub use table::{ApplyResult, Install, Installed, Table, TableState, Trailer, Versioned};
pub use txn::{is_read_only, TxnOutcome};

#[cfg(test)]
mod tests;
