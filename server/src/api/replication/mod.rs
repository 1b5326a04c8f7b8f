//! The leader cluster's replication services (behaviour.md §4), served on
//! `--replication.address`: `Metadata.Get`, `Log.Replicate` and
//! `Snapshot.Stream`. Follower clusters are their clients.

mod log;
mod metadata;
mod snapshot;

pub use log::{LogService, FOLLOW_MODE_HEADER, MAX_SEND_MESSAGE_BYTES};
pub use metadata::MetadataService;
pub use snapshot::{SnapshotService, SNAPSHOT_CHUNK_BYTES};
