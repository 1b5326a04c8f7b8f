//! The internal AppendStream RPC opens at once, before any request: a
//! replication session with nothing to send yet must not block either end
//! (the hang that made the first openraft 0.10 migration revert).

use std::time::Duration;

use regatta::cluster::raft::service::{FROM_KEY, GROUP_KEY, TO_KEY};
use regatta_proto::internal::raft::v1::raft_client::RaftClient;
use regatta_proto::internal::raft::v1::RaftMessage;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::harness::Cluster;

const OPEN_WITHIN: Duration = Duration::from_secs(3);

async fn client(address: std::net::SocketAddr) -> RaftClient<tonic::transport::Channel> {
    RaftClient::connect(format!("http://{address}"))
        .await
        .expect("connect to the raft address")
}

fn stream_request(
    requests: ReceiverStream<RaftMessage>,
    route: &[(&'static str, u64)],
) -> tonic::Request<ReceiverStream<RaftMessage>> {
    let mut request = tonic::Request::new(requests);
    for (key, value) in route {
        request.metadata_mut().insert(*key, (*value).into());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_stream_with_no_requests_opens_at_once_and_ends_with_them() {
    let cluster = Cluster::start(1, 10_000).await;
    let group = cluster.must_create_table(1, "t").await;
    let node = cluster.node(1);
    let mut client = client(node.raft_address()).await;

    // Nothing is ever sent until the test drops the sender.
    let (sender, requests) = tokio::sync::mpsc::channel::<RaftMessage>(1);
    let route = [(GROUP_KEY, group), (FROM_KEY, 2), (TO_KEY, node.id())];
    let opened = tokio::time::timeout(
        OPEN_WITHIN,
        client.append_stream(stream_request(ReceiverStream::new(requests), &route)),
    )
    .await
    .expect("the stream opened before its first request")
    .expect("the stream was accepted");
    let mut answers = opened.into_inner();

    drop(sender);
    let end = tokio::time::timeout(OPEN_WITHIN, answers.next())
        .await
        .expect("the answers ended with the requests");
    assert!(end.is_none(), "no request, no answer: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_stream_is_refused_at_once_without_a_route_or_for_a_missing_group() {
    let cluster = Cluster::start(1, 10_000).await;
    let group = cluster.must_create_table(1, "t").await;
    let node = cluster.node(1);
    let mut client = client(node.raft_address()).await;

    let cases: [(&[(&'static str, u64)], tonic::Code); 3] = [
        (&[], tonic::Code::InvalidArgument),
        (
            &[
                (GROUP_KEY, group + 1000),
                (FROM_KEY, 2),
                (TO_KEY, node.id()),
            ],
            tonic::Code::NotFound,
        ),
        (
            &[(GROUP_KEY, group), (FROM_KEY, 2), (TO_KEY, node.id() + 1)],
            tonic::Code::FailedPrecondition,
        ),
    ];
    for (route, code) in cases {
        // The sender stays open: a refusal must not wait for a request.
        let (_sender, requests) = tokio::sync::mpsc::channel::<RaftMessage>(1);
        let answer = tokio::time::timeout(
            OPEN_WITHIN,
            client.append_stream(stream_request(ReceiverStream::new(requests), route)),
        )
        .await
        .expect("refused before any request");
        let status = answer.expect_err("refused");
        assert_eq!(status.code(), code, "{route:?}: {status:?}");
    }
}

/// Flips its flag when dropped: tells the test that the transport let go
/// of openraft's request stream.
struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// openraft's request stream holds its session's state lock while it waits
/// for entries; the transport must drop it once openraft drops the answers,
/// or the next session to that peer waits for the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_transport_lets_go_of_the_requests_when_the_answers_are_dropped() {
    use openraft::network::{RPCOption, RaftNetworkFactory};
    use openraft::RaftNetworkV2;
    use regatta::cluster::raft::network::{GroupNetworkFactory, Peers};

    let cluster = Cluster::start(1, 10_000).await;
    let group = cluster.must_create_table(1, "t").await;
    let node = cluster.node(1);
    let peers = Peers::new(
        2,
        std::collections::HashMap::from([(node.id(), node.raft_address().to_string())]),
    );
    let mut factory = GroupNetworkFactory { group, peers };
    let mut network = factory
        .new_client(node.id(), &openraft::BasicNode::default())
        .await;

    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    // A session with nothing to send, ever: pending, holding the flag.
    let requests = Box::pin(futures::stream::pending().map(move |request| {
        let _held = &flag;
        request
    }));
    let answers = tokio::time::timeout(
        OPEN_WITHIN,
        network.stream_append(requests, RPCOption::new(Duration::from_millis(500))),
    )
    .await
    .expect("opened before any request")
    .map_err(|err| err.to_string())
    .expect("opened");
    assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
    drop(answers);

    let deadline = tokio::time::Instant::now() + OPEN_WITHIN;
    while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request stream outlived its answers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
