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
    /// The data directory cannot be opened (a corrupted file, a disk error).
    #[error("opening the table data in {dir}: {source}{}", suspects(dir, source))]
    Open { dir: String, source: rocksdb::Error },
    /// A snapshot or backup stream is not in the command-stream format.
    #[error("malformed command stream: {0}")]
    MalformedStream(String),
    /// The data directory was written by an incompatible version.
    #[error("unsupported on-disk format version {found} (this build reads {supported})")]
    UnsupportedFormat { found: u64, supported: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// For a corruption RocksDB reports without naming a file (a write-ahead
/// log record that fails its checksum): the write-ahead log files of `dir`,
/// so an operator knows where to look. Empty otherwise.
pub fn suspects(dir: &str, err: &rocksdb::Error) -> String {
    let message = err.to_string();
    if !message.contains("Corruption") || message.contains("The file ") {
        return String::new();
    }
    let mut logs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .map(|path| path.display().to_string())
        .collect();
    logs.sort();
    if logs.is_empty() {
        String::new()
    } else {
        format!(" (in its write-ahead log: {})", logs.join(", "))
    }
}
