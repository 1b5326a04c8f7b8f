//! The internal transport's HTTP/2 limits: a peer resuming from a pause
//! cancels many calls at once, and that must not close its connection.

use std::time::Duration;

use super::harness::Cluster;

/// Cancelled calls sent back to back, each opened and reset before the
/// server accepts it (h2's default allows 20 such resets per connection,
/// then answers GOAWAY ENHANCE_YOUR_CALM).
const BURST: usize = 200;

/// A node paused past its calls' deadlines sends, on resuming, every
/// queued call and its cancellation together. h2 counts a reset of a
/// stream its server has not accepted yet against a small budget and
/// closes the connection when it runs out ("too_many_resets"), which took
/// the forwarded writes and read-index calls on that connection with it
/// (seen in `read_index.rs` before the limit was raised).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cancelled_calls_leaves_the_connection_open() {
    let cluster = Cluster::start(1, 10_000).await;
    let address = cluster.node(1).raft_address();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the raft address");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let call = || {
        http::Request::post(format!(
            "http://{address}/regatta.internal.raft.v1.Raft/ReadIndex"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
    };
    for sent in 0..BURST {
        let (_answer, mut stream) = client.send_request(call(), false).unwrap_or_else(|err| {
            panic!("the connection was closed after {sent} cancelled calls: {err}")
        });
        stream.send_reset(h2::Reason::CANCEL);
    }
    // The connection still carries a call: its answer comes back (a gRPC
    // error for the empty message is fine; a GOAWAY is not).
    let (answer, mut stream) = client
        .send_request(call(), false)
        .expect("the connection takes another call");
    stream
        .send_data(bytes_of_empty_grpc_message(), true)
        .expect("send the message");
    let answer = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered in time");
    assert!(
        answer.is_ok(),
        "the connection was closed after {BURST} cancelled calls: {answer:?}"
    );
    assert!(!connection.is_finished());
}

/// A gRPC frame holding an empty message: uncompressed, length 0.
fn bytes_of_empty_grpc_message() -> bytes::Bytes {
    bytes::Bytes::from_static(&[0, 0, 0, 0, 0])
}
