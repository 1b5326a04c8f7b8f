//! A data directory written by the previous version is read by this one.
//!
//! `fixtures/data-openraft-0.9/` was written by the server of commit
//! a310625 (openraft 0.9.25), started as in the README's quick start with
//! `--tables.names regatta,other`: puts of key1..key3 = value1..value3 into
//! `regatta` (revisions 2-4), a=b into `other`, a delete of key2 (revision
//! 5), then a clean stop (SIGTERM). openraft 0.10 keeps the bytes of log entries,
//! votes and log ids, so the upgraded node must serve that data and go on
//! appending after the old log.

use std::path::Path;
use std::time::Duration;

use regatta_proto::regatta::v1::{PutRequest, RangeRequest};

mod support;
use support::node::{range, serving, NodeConfig};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

fn pairs(response: &regatta_proto::regatta::v1::RangeResponse) -> Vec<(String, String)> {
    response
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_openraft_0_9_server_is_served_and_appended_to() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-openraft-0.9");
    copy_dir(&fixture, dir.path());
    let config = NodeConfig::new();
    let extra = ["--tables.names", "regatta,other"];
    let mut node = config.start_with(dir.path(), &extra);
    let mut kv = serving(&config, &mut node).await;

    let prefix = RangeRequest {
        range_end: b"kez".to_vec(),
        ..range(b"key")
    };
    let old = kv.range(prefix.clone()).await.expect("range").into_inner();
    assert_eq!(
        pairs(&old),
        vec![
            ("key1".into(), "value1".into()),
            ("key3".into(), "value3".into())
        ]
    );
    // 5 after the delete; a new leader's first (blank) entry may add one.
    let old_revision = old.header.as_ref().map_or(0, |h| h.revision);
    assert!(old_revision >= 5, "revision {old_revision} went back");
    let other = kv
        .range(RangeRequest {
            table: b"other".to_vec(),
            ..range(b"a")
        })
        .await
        .expect("range other")
        .into_inner();
    assert_eq!(pairs(&other), vec![("a".into(), "b".into())]);

    let put = kv
        .put(PutRequest {
            table: b"regatta".to_vec(),
            key: b"key4".to_vec(),
            value: b"value4".to_vec(),
            ..PutRequest::default()
        })
        .await
        .expect("put after the upgrade")
        .into_inner();
    let put_revision = put.header.map_or(0, |h| h.revision);
    assert!(
        put_revision > old_revision,
        "the log goes on after the old one: put at {put_revision}, read at {old_revision}"
    );

    // And across a crash of the upgraded node.
    drop(kv);
    drop(node);
    let mut node = config.start_with(dir.path(), &extra);
    let mut kv = serving(&config, &mut node).await;
    let after = kv
        .range(prefix)
        .await
        .expect("range after restart")
        .into_inner();
    assert_eq!(
        pairs(&after),
        vec![
            ("key1".into(), "value1".into()),
            ("key3".into(), "value3".into()),
            ("key4".into(), "value4".into())
        ]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.assert_running("after the restart");
}
