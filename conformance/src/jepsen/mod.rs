//! Linearizability under faults (driven by `cargo xtask jepsen`): recorded
//! histories of concurrent clients on a cluster that a nemesis keeps
//! breaking and healing, a checker for per-key registers with
//! compare-and-set, invariants, recovery times and a timeline picture; in
//! the follower variant also the follower cluster's reads against the
//! leader's replication log.

pub mod checker;
pub mod client;
pub mod convergence;
pub mod follower;
pub mod history;
pub mod nemesis;
pub mod recorder;
pub mod runner;
pub mod svg;
