//! Multi-node tests of the cluster layer: real nodes in this process, talking
//! over real loopback sockets, each with its own RocksDB directories.

mod append_stream;
mod forwarding;
mod harness;
mod idle;
mod members;
mod read_index;
mod replace_member;
mod reply_proxy;
mod scenarios;
mod table_log;
mod tables;
mod transport;
