//! A full disk: the node's data directory on a small tmpfs, filled by
//! writes. Writes are refused with `ResourceExhausted` naming the disk
//! before RocksDB or the Raft log runs out of space; reads go on; the node
//! stays up; once space is freed, writes resume by themselves, and every
//! acknowledged write is there.
//!
//! The tmpfs is mounted in a mount namespace of the server's own
//! (`unshare`, with a user namespace when not root), so the test needs no
//! privileges; space is freed by removing a ballast file through
//! `/proc/<pid>/root`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest};
use tonic::transport::Channel;
use tonic::Code;

mod support;
use support::node::{serving, NodeConfig, Running};

const TMPFS: &str = "768m";
const BALLAST_MIB: u64 = 256;
/// The default reserve: room for both databases' memtables to flush.
const RESERVE: &str = "268435456"; // 256 MiB
const VALUE_BYTES: usize = 64 * 1024;

/// `regatta leader` with `dir` on a fresh tmpfs holding a ballast file.
fn start_on_tmpfs(config: &NodeConfig, dir: &Path) -> Running {
    let server = config.command(dir, &["--storage.min-free-space", RESERVE]);
    let mut wrapped = Process::new("unshare");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // Root mounts in a mount namespace alone; anyone else needs a user
    // namespace for it.
    if !root {
        wrapped.args(["--user", "--map-root-user"]);
    }
    wrapped
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size={TMPFS} tmpfs \"$0\" && \
             head -c {} /dev/zero > \"$0/ballast\" && exec \"$@\"",
            BALLAST_MIB * 1024 * 1024
        ))
        .arg(dir)
        .arg(server.get_program())
        .args(server.get_args())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    wrapped.spawn().expect("spawn unshare").into()
}

/// 64 KiB no compressor shrinks (RocksDB compresses its files).
fn incompressible(seed: u32) -> Vec<u8> {
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..VALUE_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn put(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        table: b"regatta".to_vec(),
        key: key.to_vec(),
        value: value.to_vec(),
        prev_kv: false,
    }
}

/// Fails unless the table holds exactly the keys of `acked`, each with its
/// value (read one by one: 64 KiB values overflow one Range answer).
async fn assert_holds(
    kv: &mut KvClient<Channel>,
    acked: &BTreeMap<Vec<u8>, Vec<u8>>,
    linearizable: bool,
    what: &str,
) {
    let keys = kv
        .range(RangeRequest {
            table: b"regatta".to_vec(),
            key: vec![0],
            range_end: vec![0],
            keys_only: true,
            linearizable,
            ..RangeRequest::default()
        })
        .await
        .unwrap_or_else(|status| panic!("{what}: {status}"))
        .into_inner();
    let held: Vec<Vec<u8>> = keys.kvs.into_iter().map(|kv| kv.key).collect();
    let expected: Vec<Vec<u8>> = acked.keys().cloned().collect();
    assert!(
        held == expected,
        "{what}: {} keys held, {} acknowledged",
        held.len(),
        expected.len()
    );
    for (key, value) in acked {
        let found = kv
            .range(RangeRequest {
                table: b"regatta".to_vec(),
                key: key.clone(),
                linearizable,
                ..RangeRequest::default()
            })
            .await
            .unwrap_or_else(|status| panic!("{what}: {status}"))
            .into_inner();
        assert!(
            found.kvs.len() == 1 && &found.kvs[0].value == value,
            "{what}: {} has another value",
            String::from_utf8_lossy(key)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_resumes_once_space_is_freed() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = start_on_tmpfs(&config, dir.path());
    let mut kv = serving(&config, &mut node).await;

    // Fill the disk. RocksDB frees some space as it flushes and drops
    // write-ahead logs, so writes are accepted again now and then: full is
    // when 20 writes in a row over 2 s were refused.
    let mut acked = BTreeMap::new();
    let (mut refused_in_a_row, mut refusals) = (0, 0);
    let mut n = 0u32;
    while refused_in_a_row < 20 {
        n += 1;
        assert!(
            n < 20_000,
            "the disk never filled ({refusals} writes refused)"
        );
        let key = format!("fill-{n:06}").into_bytes();
        let value = incompressible(n);
        match kv.put(put(&key, &value)).await {
            Ok(_) => {
                acked.insert(key, value);
                refused_in_a_row = 0;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("not enough free disk space")
                        && status.message().contains(&dir.path().display().to_string()),
                    "the refusal names the disk: {}",
                    status.message()
                );
                refused_in_a_row += 1;
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        acked.len() > 10,
        "only {} writes before the disk filled",
        acked.len()
    );

    // Full: reads answer, the node stays up.
    node.assert_running("while its disk was full");
    assert_holds(&mut kv, &acked, false, "serializable reads while full").await;
    assert_holds(&mut kv, &acked, true, "linearizable reads while full").await;

    // Free space: writes resume without anyone touching the node.
    let ballast = format!("/proc/{}/root{}/ballast", node.id(), dir.path().display());
    std::fs::remove_file(&ballast).unwrap_or_else(|err| panic!("removing {ballast}: {err}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match kv.put(put(b"after", b"space freed")).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "writes did not resume: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    acked.insert(b"after".to_vec(), b"space freed".to_vec());
    for n in 0..20u32 {
        let key = format!("more-{n:03}").into_bytes();
        kv.put(put(&key, b"y"))
            .await
            .expect("a write after space was freed");
        acked.insert(key, b"y".to_vec());
    }
    node.assert_running("after space was freed");
    assert_holds(&mut kv, &acked, true, "every acknowledged write is there").await;
}
