//! Regatta server library: the layers behind the `regatta` binary.
//!
//! Data flows one way: `api` -> `cluster` -> `storage`, and `replication`
//! (the follower side) -> `cluster`; no module reaches up.

pub mod api;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod net;
pub mod replication;
pub mod storage;
pub mod tls;
