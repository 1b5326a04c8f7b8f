//! Raft snapshots as files: built from a RocksDB snapshot straight into a
//! file, sent from it in chunks, received into a file and installed from
//! it, so a node's memory does not follow the size of a table.
//!
//! Each group keeps its files in `<snapshot dir>/<group>/`: the current
//! snapshot (`<index>-<term>.snap`, sent to followers that need it) and
//! files being built or received (`*.part`). Files left by an earlier run
//! are removed when the group opens: after a restart a snapshot is built
//! again when one is needed.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// An open snapshot file (openraft's `SnapshotData`).
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
}

impl SnapshotFile {
    /// Opens the file at `path` for reading.
    pub async fn open(path: &Path) -> io::Result<SnapshotFile> {
        Ok(SnapshotFile {
            file: tokio::fs::File::open(path).await?,
            path: path.to_path_buf(),
        })
    }

    /// Creates the file at `path` for writing (and reading back).
    pub async fn create(path: &Path) -> io::Result<SnapshotFile> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .await?;
        Ok(SnapshotFile {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().file).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().file).poll_complete(cx)
    }
}

/// One group's snapshot directory.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

/// Names of files being built or received, unique in this process.
static NEXT_PART: AtomicU64 = AtomicU64::new(0);

impl SnapshotDir {
    /// The directory of `group` under `root`, emptied of what an earlier
    /// run left.
    pub fn open(root: &Path, group: u64) -> io::Result<SnapshotDir> {
        let dir = root.join(group.to_string());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        std::fs::create_dir_all(&dir)?;
        Ok(SnapshotDir { dir })
    }

    /// A new file name for a snapshot being built (`kind` "build") or
    /// received ("receive").
    pub fn part(&self, kind: &str) -> PathBuf {
        let n = NEXT_PART.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{kind}-{n}.part"))
    }

    /// Removes the files of `kind` still there: a group receives one
    /// snapshot at a time, so those are transfers a leader gave up.
    pub fn remove_parts(&self, kind: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{kind}-")) && name.ends_with(".part") {
                remove(&entry.path());
            }
        }
    }

    /// The name of the current snapshot that ends at `index` of `term`.
    pub fn current(&self, index: u64, term: u64) -> PathBuf {
        self.dir.join(format!("{index}-{term}.snap"))
    }

    /// Whether `path` is one of this group's files.
    pub fn holds(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path())
    }
}

/// Makes `part` the snapshot at `current`: synced, then renamed (a crash
/// leaves either name, and the directory is emptied at the next start).
pub fn promote(part: &Path, current: &Path) -> io::Result<()> {
    std::fs::File::open(part)?.sync_all()?;
    std::fs::rename(part, current)
}

/// Removes the file at `path` if it is there.
pub fn remove(path: &Path) {
    if let Err(err) = std::fs::remove_file(path) {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %err, "removing an old snapshot file");
        }
    }
}
