//! Errors of the storage layer.

/// Everything that can go wrong below Raft: the disk, or bytes that are not
/// what they claim to be.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The table has no data on this node.
    #[error("table not found")]
    TableNotFound,
    /// RocksDB refused or failed an operation.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Reading or writing a stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A value or meta record on disk cannot be decoded (disk corruption or a bug).
    #[error("corrupt record on disk: {0}")]
    Corrupt(String),
    /// A snapshot or backup stream is not in the command-stream format.
    #[error("malformed command stream: {0}")]
    MalformedStream(String),
    /// The data directory was written by an incompatible version.
    #[error("unsupported on-disk format version {found} (this build reads {supported})")]
    UnsupportedFormat { found: u64, supported: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
