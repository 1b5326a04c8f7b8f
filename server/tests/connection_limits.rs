//! `--api.max-concurrent-connections` and `--api.max-concurrent-streams`
//! (`docs/operations.md`) on the real binary: a connection past the limit
//! waits until another closes; a call past a connection's stream limit
//! waits until another call on it ends.

use std::time::Duration;

use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest};
use tonic::transport::Channel;

mod support;
use support::node::{serving, NodeConfig};

fn probe() -> RangeRequest {
    RangeRequest {
        table: b"regatta".to_vec(),
        key: b"k".to_vec(),
        ..RangeRequest::default()
    }
}

/// A client on a connection of its own.
async fn own_connection(api: &str) -> KvClient<Channel> {
    let channel = Channel::from_shared(format!("http://{api}"))
        .expect("uri")
        .connect_lazy();
    KvClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_holds_the_next_connection_until_one_closes() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start_with(dir.path(), &["--api.max-concurrent-connections=2"]);
    // `serving` holds one connection; a second fills the limit.
    let first = serving(&config, &mut node).await;
    let mut second = own_connection(&config.api).await;
    second.range(probe()).await.expect("the second connection");

    let mut third = own_connection(&config.api).await;
    let waiting = tokio::spawn(async move {
        let answer = third.range(probe()).await.map(drop);
        (answer, third)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a third connection was served");

    drop(first);
    let (answer, _third) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the third connection is served once one closed")
        .expect("task");
    answer.expect("range on the third connection");
    node.assert_running("after the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_holds_the_next_call_on_a_connection() {
    use regatta_proto::regatta::v1::RangeResponse;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start_with(dir.path(), &["--api.max-concurrent-streams=1"]);
    let mut kv = serving(&config, &mut node).await;
    // Enough pairs that an unread IterateRange stays open.
    let value = vec![b'v'; 64 * 1024];
    for n in 0..200 {
        kv.put(PutRequest {
            table: b"regatta".to_vec(),
            key: format!("big{n:03}").into_bytes(),
            value: value.clone(),
            ..PutRequest::default()
        })
        .await
        .expect("put");
    }
    let mut open: tonic::Streaming<RangeResponse> = kv
        .iterate_range(RangeRequest {
            table: b"regatta".to_vec(),
            key: b"big".to_vec(),
            range_end: b"bih".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .expect("iterate")
        .into_inner();
    let _first = open.message().await.expect("first message");

    let mut same_connection = kv.clone();
    let waiting = tokio::spawn(async move { same_connection.range(probe()).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a second call ran beside the open stream"
    );

    drop(open);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the call runs once the stream ended")
        .expect("task")
        .expect("range");
    node.assert_running("after the limit");
}
