//! The leader cluster's replication services (`docs/replication.md`), served on
//! `--replication.address`: `Metadata.Get`, `Log.Replicate` and
//! `Snapshot.Stream`, and the writes follower clusters forward
//! (`forward.v1.Forward`, beside `regatta.v1.KV`). Follower clusters are
//! their clients.

mod forward;
mod log;
mod metadata;
mod snapshot;

pub use forward::{ForwardService, MAX_FORWARD_MESSAGE_BYTES};
pub use log::{LogService, FOLLOW_MODE_HEADER, MAX_SEND_MESSAGE_BYTES};
pub use metadata::MetadataService;
pub(crate) use snapshot::{chunked_copy, ChunkStream};
pub use snapshot::{SnapshotService, SNAPSHOT_CHUNK_BYTES};

use std::fmt::Write;

use crate::cluster::Node;

/// `regatta_replication_index{role="leader"}`: per table, the applied index
/// followers replicate up to (`A` in `docs/replication.md`). Rendered on
/// leader-cluster nodes.
pub fn leader_metrics(node: &Node) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP regatta_replication_index Leader index of the table: on the leader cluster its applied index."
    );
    let _ = writeln!(out, "# TYPE regatta_replication_index gauge");
    for name in node.tables().into_keys() {
        let Ok(data) = node.table(&name) else {
            continue;
        };
        let table = String::from_utf8_lossy(&name).replace(['"', '\\', '\n'], "_");
        let _ = writeln!(
            out,
            "regatta_replication_index{{role=\"leader\",table=\"{table}\"}} {}",
            data.state().applied_index
        );
    }
    out
}
