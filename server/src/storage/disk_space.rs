//! Free space on the node's data disks, kept above a reserve
//! (`--storage.min-free-space`), as TiKV's `reserve-space` does.
//!
//! RocksDB that runs out of space mid-write stops taking writes until it
//! is resumed, and a Raft log whose sync fails stops the node: a full disk
//! would become a node that restarts in a loop. So writes stop *before*
//! the disk is full: below the reserve, the node refuses new client writes
//! and new log entries from its peers (both retried by their senders) and
//! defers snapshot builds, while what is already in flight fits in the
//! reserve. Reads go on. Once space is freed the next sample clears the
//! state and writes resume by themselves.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often free space is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The node's data directories and whether any is below the reserve.
pub struct DiskSpace {
    dirs: Vec<PathBuf>,
    min_free: u64,
    low: AtomicBool,
    /// Why writes are refused, while they are.
    reason: Mutex<String>,
}

impl DiskSpace {
    /// Watches `dirs` (sampled once now, then every 100 ms while the
    /// returned value lives); `min_free == 0` turns the check off.
    pub fn watch(dirs: Vec<PathBuf>, min_free: u64) -> Arc<DiskSpace> {
        let space = Arc::new(DiskSpace {
            dirs,
            min_free,
            low: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
        });
        if min_free == 0 {
            return space;
        }
        space.sample();
        let weak = Arc::downgrade(&space);
        let spawned = std::thread::Builder::new()
            .name("disk-space".into())
            .spawn(move || loop {
                std::thread::sleep(SAMPLE_EVERY);
                match weak.upgrade() {
                    Some(space) => space.sample(),
                    None => break,
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot watch free disk space; the reserve is not enforced");
        }
        space
    }

    /// `None` when writes may go on; otherwise why not, naming the disk.
    pub fn refusal(&self) -> Option<String> {
        if !self.low.load(Ordering::Relaxed) {
            return None;
        }
        Some(
            self.reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    fn sample(&self) {
        let mut short = None;
        for dir in &self.dirs {
            // A directory not created yet is checked through its parent.
            let Some(free) = dir.ancestors().find_map(free_bytes) else {
                continue;
            };
            if free < self.min_free {
                short = Some((dir, free));
                break;
            }
        }
        let was_low = self.low.load(Ordering::Relaxed);
        match short {
            Some((dir, free)) => {
                let reason = format!(
                    "not enough free disk space: {} has {} free, below the reserve of {} \
                     (--storage.min-free-space); writes resume once space is freed",
                    dir.display(),
                    mib(free),
                    mib(self.min_free)
                );
                if !was_low {
                    tracing::error!(%reason, "refusing writes");
                }
                *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
                self.low.store(true, Ordering::Relaxed);
            }
            None => {
                if was_low {
                    tracing::warn!(
                        "free disk space is back above the reserve: taking writes again"
                    );
                }
                self.low.store(false, Ordering::Relaxed);
            }
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Bytes an unprivileged process may still write on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated; `stat` is written by the call and
    // read only when it succeeded.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_names_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("not-yet-created");
        let space = DiskSpace::watch(vec![data.clone()], u64::MAX);
        let refusal = space.refusal().expect("refused");
        assert!(refusal.contains(&data.display().to_string()), "{refusal}");
        assert!(refusal.contains("--storage.min-free-space"), "{refusal}");
    }

    #[test]
    fn a_small_reserve_or_none_refuses_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(DiskSpace::watch(vec![dir.path().into()], 1).refusal(), None);
        assert_eq!(DiskSpace::watch(vec![dir.path().into()], 0).refusal(), None);
    }
}
