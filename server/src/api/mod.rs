//! The public gRPC API: request validation, the KV service, and the single
//! mapping of errors to gRPC statuses. Uses `cluster` (and through it
//! `storage`); nothing below reaches back up.

pub mod cluster;
pub mod kv;
pub mod limits;
pub mod maintenance;
pub mod membership;
pub mod metrics;
pub mod reflection;
pub mod replication;
pub mod rest;
pub mod status;
pub mod stream_producer;
pub mod tables;
pub mod validate;
#[cfg(test)]
mod validate_props;

pub use kv::KvService;
