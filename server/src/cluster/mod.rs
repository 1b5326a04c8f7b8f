//! The cluster layer: Raft groups per table plus the metadata group that
//! holds the table catalogue (`features/tables.feature`; durability:
//! `features/cluster_faults.feature`), write forwarding to the
//! leader and linearizable reads on any node. Sits between `api` and
//! `storage`.

pub mod catalogue;
pub mod config;
mod error;
pub mod node;
pub mod raft;
mod restore;
mod table_log;
pub mod table_name;

pub use config::{parse_members, MemberIdentity, RaftSettings};
pub use error::{Error, MembershipError, Result};
pub use node::{Consistency, GroupInfo, Member, Node, TableBytes, TableStatus, Written};
pub use raft::types::RestoreStep;
pub use restore::{Filled, TableRestore};
pub use table_log::{TableLogEntry, TableLogRead};
