//! A node whose files were damaged on disk (issue 21, "corrupted disks"):
//! a flipped byte in the Raft log's or the table data's write-ahead log, or
//! in a MANIFEST, makes the node refuse to start with an error that names
//! the directory and the file to look at, instead of silently replaying up
//! to the damage and serving without what followed. A record cut short at
//! the very end of a write-ahead log (a crash in the middle of a write) is
//! tolerated: the node starts and serves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regatta_proto::regatta::v1::PutRequest;

mod support;
use support::node::{range, serving, NodeConfig};

/// A node's data directory after 200 writes and a stop.
async fn written_and_stopped(config: &NodeConfig, dir: &Path) {
    let mut node = config.start(dir);
    let mut kv = serving(config, &mut node).await;
    for n in 0..200 {
        kv.put(PutRequest {
            table: b"regatta".to_vec(),
            key: format!("k{n:03}").into_bytes(),
            value: vec![b'v'; 100],
            ..PutRequest::default()
        })
        .await
        .expect("put");
    }
    drop(kv);
    drop(node);
}

fn only_file(dir: &Path, pick: impl Fn(&str) -> bool) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(&pick))
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no such file in {}", dir.display()))
}

fn flip_middle(file: &Path) {
    let mut bytes = std::fs::read(file).expect("read");
    assert!(
        bytes.len() > 64,
        "{} is too small to damage",
        file.display()
    );
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 8] {
        *byte ^= 0xff;
    }
    std::fs::write(file, bytes).expect("write");
}

/// Starts the node on `dir` and expects it to exit with an error whose text
/// holds every one of `expected`.
fn refuses_to_start(config: &NodeConfig, dir: &Path, expected: &[&str]) {
    let mut child = config.command(dir, &[]).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started on damaged files");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "exit {status}");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    for text in expected {
        assert!(stderr.contains(text), "no {text:?} in:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_raft_log_refuses_the_start_and_names_its_file() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    written_and_stopped(&config, dir.path()).await;
    let log_dir = dir.path().join("raft").join("log");
    let wal = only_file(&log_dir, |name| name.ends_with(".log"));
    flip_middle(&wal);
    let wal = wal.display().to_string();
    refuses_to_start(
        &config,
        dir.path(),
        &["Corruption", "opening the Raft log", &wal],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_table_data_refuses_the_start_and_names_its_file() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    written_and_stopped(&config, dir.path()).await;
    let sm = dir.path().join("sm");
    let wal = only_file(&sm, |name| name.ends_with(".log"));
    flip_middle(&wal);
    let wal = wal.display().to_string();
    refuses_to_start(
        &config,
        dir.path(),
        &["Corruption", "opening the table data", &wal],
    );

    // The same directory with its write-ahead log intact and its MANIFEST
    // damaged: RocksDB names the MANIFEST when it sees the damage, and a
    // damaged record it skips loses a column family, which the catalogue
    // notices (where the flip lands decides which).
    let dir = tempfile::TempDir::new().expect("temp dir");
    written_and_stopped(&config, dir.path()).await;
    let sm = dir.path().join("sm");
    let manifest = only_file(&sm, |name| name.starts_with("MANIFEST-"));
    flip_middle(&manifest);
    refuses_to_start(
        &config,
        dir.path(),
        &["MANIFEST", &sm.display().to_string()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_short_at_the_end_of_a_log_is_tolerated() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    written_and_stopped(&config, dir.path()).await;
    for log_dir in [dir.path().join("raft").join("log"), dir.path().join("sm")] {
        let wal = only_file(&log_dir, |name| name.ends_with(".log"));
        let len = std::fs::metadata(&wal).expect("metadata").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&wal)
            .expect("open");
        file.set_len(len - 7).expect("cut the last record short");
    }
    let mut node = config.start(dir.path());
    let mut kv = serving(&config, &mut node).await;
    let read = kv.range(range(b"k100")).await.expect("range").into_inner();
    assert_eq!(read.kvs.len(), 1, "what came before the cut is served");
}
