//! The KV API of the real `regatta leader` binary over a real socket:
//! the checks, codes and messages of `features/kv_validation.feature`,
//! headers, limits, compression.

use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::{response_op, Compare, RequestOp};
use regatta_proto::raw::{Fields, RawCodec};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::Code;

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    api: String,
    rest: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod support;

use support::free_port;

async fn start() -> (Server, KvClient<Channel>) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let api = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    let rest = format!("127.0.0.1:{}", free_port());
    let child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args([
            "leader",
            "--api.address",
            &api,
            "--raft.address",
            &raft,
            "--tables.names",
            "t,other",
        ])
        .arg("--raft.node-host-dir")
        .arg(dir.path().join("raft"))
        .arg("--raft.state-machine-dir")
        .arg(dir.path().join("sm"))
        .args(["--raft.rtt", "10ms", "--log-level", "warn"])
        .args([
            "--rest.address",
            &rest,
            // Reflection is not asked for: it is on by default (Regatta 0.5).
            "--rest.read-timeout",
            "300ms",
        ])
        // Every test process binds its own replication port.
        .args(["--replication.address", "127.0.0.1:0"])
        .args(["--maintenance.address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn regatta leader");
    let server = Server {
        child,
        _dir: dir,
        api,
        rest,
    };
    let kv = must_connect(&server.api, "regatta leader").await;
    (server, kv)
}

/// A client of the API at `api`, once it answers (panics after 60 s).
async fn must_connect(api: &str, what: &str) -> KvClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{api}"))
            .expect("uri")
            .connect()
            .await
        {
            return KvClient::new(channel).max_decoding_message_size(8 * 1024 * 1024);
        }
        assert!(Instant::now() < deadline, "{what} did not serve on {api}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn range(table: &str, key: &[u8]) -> RangeRequest {
    RangeRequest {
        table: table.into(),
        key: key.to_vec(),
        ..RangeRequest::default()
    }
}

fn put(table: &str, key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        table: table.into(),
        key: key.to_vec(),
        value: value.to_vec(),
        prev_kv: false,
    }
}

fn expect_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, message: &str) {
    match result {
        Err(status) => assert_eq!((status.code(), status.message()), (code, message)),
        Ok(answer) => panic!("expected {code:?} {message:?}, got {answer:?}"),
    }
}

const INVALID: Code = Code::InvalidArgument;

#[tokio::test]
async fn every_check_of_behaviour_2_1_answers_its_code_and_message() {
    let (_server, mut kv) = start().await;
    let long = vec![b'k'; 1025];

    // Range, in order.
    expect_status(
        kv.range(RangeRequest {
            limit: -1,
            keys_only: true,
            count_only: true,
            ..RangeRequest::default()
        })
        .await,
        INVALID,
        "limit must be a positive number",
    );
    expect_status(
        kv.range(RangeRequest {
            keys_only: true,
            count_only: true,
            ..RangeRequest::default()
        })
        .await,
        INVALID,
        "keys_only and count_only must not be set at the same time",
    );
    expect_status(kv.range(range("", b"")).await, INVALID, "table must be set");
    expect_status(
        kv.range(range("nope", b"")).await,
        INVALID,
        "key must be set",
    );
    expect_status(
        kv.range(range("nope", &long)).await,
        Code::NotFound,
        "table not found",
    );
    expect_status(
        kv.range(range("t", &long)).await,
        INVALID,
        "key length exceeded max allowed value",
    );
    expect_status(
        kv.range(RangeRequest {
            range_end: long.clone(),
            ..range("t", b"k")
        })
        .await,
        INVALID,
        "key length exceeded max allowed value",
    );

    // Put.
    expect_status(
        kv.put(put("", b"", b"")).await,
        INVALID,
        "table must be set",
    );
    expect_status(
        kv.put(put("nope", b"", b"")).await,
        INVALID,
        "key must be set",
    );
    expect_status(
        kv.put(put("nope", &long, b"")).await,
        Code::NotFound,
        "table not found",
    );
    expect_status(
        kv.put(put("t", &long, b"")).await,
        INVALID,
        "key length exceeded max allowed value",
    );
    expect_status(
        kv.put(put("t", b"k", &vec![0; 2 * 1024 * 1024 + 1])).await,
        INVALID,
        "value length exceeded max allowed value",
    );
    kv.put(put("t", &[0xff; 1024], &vec![7; 2 * 1024 * 1024]))
        .await
        .expect("exactly 1024-byte key and 2 MiB value");

    // DeleteRange.
    let delete = |table: &str, key: &[u8], end: &[u8]| DeleteRangeRequest {
        table: table.into(),
        key: key.to_vec(),
        range_end: end.to_vec(),
        ..DeleteRangeRequest::default()
    };
    expect_status(
        kv.delete_range(delete("", b"", b"")).await,
        INVALID,
        "table must be set",
    );
    expect_status(
        kv.delete_range(delete("nope", b"", b"")).await,
        INVALID,
        "key must be set",
    );
    expect_status(
        kv.delete_range(delete("nope", b"k", b"")).await,
        Code::NotFound,
        "table not found",
    );
    expect_status(
        kv.delete_range(delete("t", b"k", &long)).await,
        INVALID,
        "key length exceeded max allowed value",
    );

    // Txn: table, then success ops, failure ops, then compares.
    let bad_range = RequestOp {
        request: Some(Request::RequestRange(request_op::Range {
            key: b"k".to_vec(),
            limit: -1,
            ..Default::default()
        })),
    };
    let empty_put = RequestOp {
        request: Some(Request::RequestPut(request_op::Put::default())),
    };
    let txn = |table: &str,
               success: Vec<RequestOp>,
               failure: Vec<RequestOp>,
               compare: Vec<Compare>| TxnRequest {
        table: table.into(),
        compare,
        success,
        failure,
    };
    expect_status(
        kv.txn(txn("", vec![bad_range.clone()], vec![], vec![]))
            .await,
        INVALID,
        "table must be set",
    );
    expect_status(
        kv.txn(txn("nope", vec![bad_range.clone()], vec![], vec![]))
            .await,
        Code::NotFound,
        "table not found",
    );
    expect_status(
        kv.txn(txn("t", vec![bad_range], vec![empty_put.clone()], vec![]))
            .await,
        INVALID,
        "limit must be a positive number",
    );
    expect_status(
        kv.txn(txn("t", vec![], vec![empty_put], vec![])).await,
        INVALID,
        "key must be set",
    );
    let long_compare = Compare {
        key: long.clone(),
        ..Compare::default()
    };
    expect_status(
        kv.txn(txn("t", vec![], vec![], vec![long_compare])).await,
        INVALID,
        "key length exceeded max allowed value",
    );
}

#[tokio::test]
async fn writes_and_reads_carry_headers_with_increasing_revisions() {
    let (_server, mut kv) = start().await;
    let first = kv
        .put(put("t", b"a", b"1"))
        .await
        .expect("put")
        .into_inner();
    let second = kv
        .put(PutRequest {
            prev_kv: true,
            ..put("t", b"a", b"2")
        })
        .await
        .expect("put")
        .into_inner();
    let h1 = first.header.expect("header");
    let h2 = second.header.expect("header");
    assert!(h1.shard_id >= 10001);
    assert_eq!((h1.replica_id, h1.raft_leader_id), (1, 1));
    assert!(h1.raft_term >= 1);
    assert!(
        h2.revision > h1.revision,
        "{} then {}",
        h1.revision,
        h2.revision
    );
    assert_eq!(second.prev_kv.expect("prev kv").value, b"1");

    let read = kv
        .range(RangeRequest {
            linearizable: true,
            ..range("t", b"a")
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(read.kvs[0].value, b"2");
    assert_eq!(
        read.header.expect("header").revision,
        h2.revision,
        "reads return the revision they read"
    );
    let missing = kv
        .range(range("t", b"zz"))
        .await
        .expect("range of a missing key")
        .into_inner();
    assert!(missing.kvs.is_empty() && missing.count == 0);

    let deleted = kv
        .delete_range(DeleteRangeRequest {
            table: "t".into(),
            key: b"a".to_vec(),
            range_end: vec![0],
            prev_kv: true,
            count: false,
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    assert!(deleted.header.expect("header").revision > h2.revision);

    let put_op = RequestOp {
        request: Some(Request::RequestPut(request_op::Put {
            key: b"x".to_vec(),
            value: b"y".to_vec(),
            prev_kv: false,
        })),
    };
    let txn = kv
        .txn(TxnRequest {
            table: "t".into(),
            compare: vec![],
            success: vec![put_op],
            failure: vec![],
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(txn.succeeded);
    assert_eq!(txn.responses.len(), 1);
    let read_only = kv
        .txn(TxnRequest {
            table: "t".into(),
            compare: vec![Compare {
                key: b"x".to_vec(),
                ..Compare::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestRange(request_op::Range {
                    key: b"x".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        })
        .await
        .expect("read-only txn")
        .into_inner();
    assert!(read_only.succeeded, "x exists");
    assert_eq!(
        read_only.header.expect("header").revision,
        txn.header.expect("header").revision,
        "a read-only txn writes nothing"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_and_compression_works() {
    let (_server, kv) = start().await;
    let mut kv = kv.max_encoding_message_size(16 * 1024 * 1024);
    let huge = put("t", b"k", &vec![1; 5 * 1024 * 1024]);
    let err = kv.put(huge).await.expect_err("a request over 4 MiB");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    let mut compressed = kv
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    compressed
        .put(put("t", b"c", &vec![b'z'; 100_000]))
        .await
        .expect("gzip put");
    let read = compressed
        .range(range("t", b"c"))
        .await
        .expect("gzip range")
        .into_inner();
    assert_eq!(read.kvs[0].value.len(), 100_000);
    let mut zstd = compressed
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd);
    assert_eq!(
        zstd.range(range("t", b"c"))
            .await
            .expect("zstd range")
            .into_inner()
            .kvs
            .len(),
        1
    );
}

/// A plain HTTP/1.1 GET; returns (status code, body).
fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect REST");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: regatta\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn health_metrics_and_reflection_describe_the_node() {
    let (server, mut kv) = start().await;
    kv.put(put("t", b"k", b"v")).await.expect("put");
    let _ = kv.range(range("", b"")).await;

    let rest = server.rest.clone();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(&rest, "/healthz"))
        .await
        .expect("join");
    assert_eq!((status, body.trim()), (200, "ok"));
    let rest = server.rest.clone();
    let (status, metrics) = tokio::task::spawn_blocking(move || http_get(&rest, "/metrics"))
        .await
        .expect("join");
    assert_eq!(status, 200);
    for expected in [
        "regatta_grpc_requests_total{method=\"Put\",code=\"Ok\"} 1",
        "regatta_grpc_requests_total{method=\"Range\",code=\"InvalidArgument\"} 1",
        "regatta_grpc_request_duration_seconds_count{method=\"Put\"} 1",
        "regatta_table_revision{table=\"t\"}",
        "regatta_table_raft_leader_id{table=\"t\"} 1",
        "regatta_raft_log_syncs_total",
        "regatta_forwarded_writes_total 0",
        "regatta_forward_batches_total 0",
        "regatta_rocksdb_block_cache_capacity_bytes 16777216",
        "regatta_rocksdb_estimated_keys",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(
            metrics.contains(expected),
            "metrics lack {expected}:\n{metrics}"
        );
    }

    let channel = Channel::from_shared(format!("http://{}", server.api))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "regatta.v1.KV", "t", "other"] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|err| panic!("health of {service:?}: {err}"))
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    // The API port lists what it serves; replication and maintenance
    // (without a token) are served on their own ports, and listed there.
    for expected in [
        "regatta.v1.KV",
        "regatta.v1.Tables",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} not in {services:?}"
        );
    }
    for elsewhere in ["replication.v1.Log", "maintenance.v1.Maintenance"] {
        assert!(
            !services.iter().any(|s| s == elsewhere),
            "{elsewhere} is not served on the API port: {services:?}"
        );
    }
    assert!(
        !services.iter().any(|s| s.contains("internal")),
        "the internal transport is not advertised: {services:?}"
    );

    // v1alpha, the only version many tools (grpcurl 1.8) ask for.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let channel = Channel::from_shared(format!("http://{}", server.api))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let answer = AlphaClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1alpha")
        .into_inner()
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(AlphaResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected v1alpha answer {answer:?}");
    };
    assert!(
        list.service.iter().any(|s| s.name == "regatta.v1.KV"),
        "{:?}",
        list.service
    );
}

/// Runs `regatta kv --address <api> <args>` with `stdin`; returns (success, stdout, stderr).
fn regatta_kv(api: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["kv", "--address", api])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn regatta kv");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("regatta kv output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

#[tokio::test]
async fn the_kv_client_commands_work_against_a_running_server() {
    let (server, _kv) = start().await;
    let api = server.api.clone();
    tokio::task::spawn_blocking(move || {
        let (ok, out, err) = regatta_kv(&api, &["put", "t", "user/1", "alice"], "");
        assert!(ok && out.starts_with("OK (revision "), "{out} {err}");
        regatta_kv(&api, &["put", "t", "user/2", "bob"], "");
        let (ok, out, _) = regatta_kv(&api, &["get", "t", "user/", "--prefix"], "");
        assert!(ok);
        assert_eq!(out, "user/1=alice\nuser/2=bob");
        let (ok, out, _) = regatta_kv(&api, &["get", "t", "user/", "--prefix", "--count-only", "--linearizable"], "");
        assert!(ok);
        assert_eq!(out, "count: 2");
        // IterateRange: one JSON object a line, as the pairs arrive.
        let (ok, out, err) = regatta_kv(&api, &["--json", "iterate", "t", "user/", "--prefix"], "");
        assert!(ok, "{err}");
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON object a line"))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[1]["value"], "Ym9i", "base64 of bob");
        let (ok, out, _) = regatta_kv(&api, &["iterate", "t", "user/", "--range-end", "user/2", "--keys-only"], "");
        assert!(ok);
        assert_eq!(out, "user/1");
        // The whole table, and every key from one on: "\0" cannot be an argument.
        let (ok, out, err) = regatta_kv(&api, &["iterate", "t", "--all", "--keys-only"], "");
        assert!(ok, "{err}");
        assert_eq!(out, "user/1\nuser/2");
        let (ok, out, _) = regatta_kv(&api, &["get", "t", "user/2", "--to-end"], "");
        assert!(ok);
        assert_eq!(out, "user/2=bob");
        let (ok, out, _) = regatta_kv(&api, &["get", "t", "user/", "--prefix", "--limit", "1"], "");
        assert!(ok);
        assert_eq!(out, "user/1=alice\n(more keys in the range)");
        let (ok, out, _) = regatta_kv(&api, &["--json", "get", "t", "user/1"], "");
        assert!(ok);
        let json: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(json["kvs"][0]["value"], "YWxpY2U=", "base64 of alice");
        let txn = r#"{"compare":[{"key":"user/1","value":"alice"}],"success":[{"put":{"key":"user/1","value":"carol"}}],"failure":[]}"#;
        let (ok, out, err) = regatta_kv(&api, &["txn", "t"], txn);
        assert!(ok && out.starts_with("succeeded: true"), "{out} {err}");
        let (ok, out, _) = regatta_kv(&api, &["delete", "t", "user/", "--prefix"], "");
        assert!(ok && out.starts_with("deleted 2"), "{out}");
        let (ok, _, err) = regatta_kv(&api, &["get", "nope", "k"], "");
        assert!(!ok);
        assert_eq!(err, "regatta kv: NotFound: table not found");
    })
    .await
    .expect("client steps");
}

#[tokio::test]
async fn sigterm_during_writes_keeps_every_acknowledged_write() {
    let (mut server, mut kv) = start().await;
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..10_000u32 {
            let key = format!("k{i:05}");
            match kv.put(put("t", key.as_bytes(), b"v")).await {
                Ok(_) => acknowledged.push(key),
                Err(_) => break,
            }
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().to_string();
    let term = Process::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    assert!(term.success());
    let acknowledged = writer.await.expect("writer");
    let exit = server.child.wait().expect("wait for the node");
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    assert!(
        !acknowledged.is_empty(),
        "some writes were acknowledged before SIGTERM"
    );

    // Same directories, new process.
    let dir = server._dir.path().to_path_buf();
    let child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args([
            "leader",
            "--api.address",
            &server.api,
            "--tables.names",
            "t,other",
        ])
        .args(["--raft.address", &format!("127.0.0.1:{}", free_port())])
        .args(["--rest.address", &server.rest])
        .arg("--raft.node-host-dir")
        .arg(dir.join("raft"))
        .arg("--raft.state-machine-dir")
        .arg(dir.join("sm"))
        .args(["--raft.rtt", "10ms", "--log-level", "warn"])
        // Every test process binds its own replication port.
        .args(["--replication.address", "127.0.0.1:0"])
        .args(["--maintenance.address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("restart");
    server.child = child;
    let mut kv = must_connect(&server.api, "the restarted node").await;
    let all = kv
        .range(RangeRequest {
            range_end: vec![0],
            linearizable: true,
            count_only: true,
            ..range("t", b"k")
        })
        .await
        .expect("count after restart")
        .into_inner();
    assert!(
        all.count as usize >= acknowledged.len(),
        "{} keys after restart, {} acknowledged",
        all.count,
        acknowledged.len()
    );
    let last = acknowledged.last().expect("one write");
    let found = kv
        .range(range("t", last.as_bytes()))
        .await
        .expect("range")
        .into_inner();
    assert_eq!(
        found.kvs.len(),
        1,
        "the last acknowledged write {last} survived"
    );
}

/// Three `regatta leader` processes forming one cluster.
async fn start_cluster() -> (Vec<Server>, Vec<KvClient<Channel>>) {
    let ports: Vec<(String, String, String)> = (0..3)
        .map(|_| {
            (
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            )
        })
        .collect();
    let members = ports
        .iter()
        .enumerate()
        .map(|(i, (_, raft, _))| format!("{}={raft}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers = Vec::new();
    for (i, (api, raft, rest)) in ports.iter().enumerate() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let child = Process::new(env!("CARGO_BIN_EXE_regatta"))
            .args([
                "leader",
                "--api.address",
                api,
                "--raft.address",
                raft,
                "--rest.address",
                rest,
            ])
            .args([
                "--raft.node-id",
                &(i + 1).to_string(),
                "--raft.initial-members",
                &members,
            ])
            .args([
                "--tables.names",
                "t",
                "--raft.rtt",
                "25ms",
                "--log-level",
                "warn",
            ])
            .arg("--raft.node-host-dir")
            .arg(dir.path().join("raft"))
            .arg("--raft.state-machine-dir")
            .arg(dir.path().join("sm"))
            // Every test process binds its own replication port.
            .args(["--replication.address", "127.0.0.1:0"])
            .args(["--maintenance.address", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn regatta leader");
        servers.push(Server {
            child,
            _dir: dir,
            api: api.clone(),
            rest: rest.clone(),
        });
    }
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(must_connect(&server.api, "a cluster node").await);
    }
    (servers, clients)
}

#[tokio::test]
async fn a_three_node_cluster_of_the_binary_agrees_on_headers_and_data() {
    let (_servers, mut clients) = start_cluster().await;
    let mut revisions = Vec::new();
    let mut shards = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let answer = client
            .put(put("t", format!("k{i}").as_bytes(), b"v"))
            .await
            .unwrap_or_else(|err| panic!("put via node {}: {err}", i + 1))
            .into_inner();
        let header = answer.header.expect("header");
        assert_eq!(
            header.replica_id,
            i as u64 + 1,
            "replica_id is the answering node"
        );
        revisions.push(header.revision);
        shards.push(header.shard_id);
    }
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions strictly increase: {revisions:?}"
    );
    assert!(
        shards.iter().all(|s| *s == shards[0] && *s >= 10001),
        "one shard id: {shards:?}"
    );
    let mut leaders = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let read = client
            .range(RangeRequest {
                range_end: vec![0],
                linearizable: true,
                ..range("t", b"k")
            })
            .await
            .unwrap_or_else(|err| panic!("linearizable range via node {}: {err}", i + 1))
            .into_inner();
        assert_eq!(read.kvs.len(), 3, "node {} sees every write", i + 1);
        let header = read.header.expect("header");
        assert!(header.revision >= revisions[2]);
        leaders.push(header.raft_leader_id);
    }
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && *l != 0),
        "every node names the same leader: {leaders:?}"
    );
}

#[tokio::test]
async fn environment_ranks_above_the_config_file() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let from_env = format!("127.0.0.1:{}", free_port());
    let from_file = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("regatta.yaml");
    std::fs::write(
        &config,
        format!(
            "api:\n  address: {from_file}\nraft.address: 127.0.0.1:{}\nrest.address: 127.0.0.1:{}\ntables.names: [fromfile]\nraft.rtt: 10ms\nlog-level: warn\n",
            free_port(),
            free_port()
        ),
    )
    .expect("write config");
    let child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["leader", "--config"])
        .arg(&config)
        // Every test process binds its own replication port.
        .args(["--replication.address", "127.0.0.1:0"])
        .args(["--maintenance.address", "127.0.0.1:0"])
        .env("REGATTA_API_ADDRESS", &from_env)
        .env("REGATTA_RAFT_NODE_HOST_DIR", dir.path().join("raft"))
        .env("REGATTA_RAFT_STATE_MACHINE_DIR", dir.path().join("sm"))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let server = Server {
        child,
        _dir: dir,
        api: from_env.clone(),
        rest: String::new(),
    };
    let mut kv = must_connect(&server.api, "the address from the environment").await;
    kv.put(put("fromfile", b"k", b"v"))
        .await
        .expect("the table named in the file exists");
    assert!(
        std::net::TcpStream::connect(&from_file).is_err(),
        "nothing listens on the file's address when the environment sets one"
    );
}

#[tokio::test]
async fn a_rest_client_that_never_sends_its_request_is_cut_off() {
    let (server, _kv) = start().await;
    let rest = server.rest.clone();
    let closed_after = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&rest).expect("connect REST");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: regatta\r\n")
            .expect("partial request");
        let started = Instant::now();
        let mut buffer = Vec::new();
        let _ = stream.read_to_end(&mut buffer);
        started.elapsed()
    })
    .await
    .expect("join");
    assert!(
        closed_after < Duration::from_secs(5),
        "the server waited {closed_after:?} for the headers (timeout 300ms)"
    );
}

/// One unary call with a body sent exactly as given (another generation's
/// encoding); the answer comes back undecoded.
async fn raw_call(api: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = Channel::from_shared(format!("http://{api}"))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn regatta_2022_and_0_5_encodings_of_a_txn_delete_with_prev_kv_both_return_the_pair() {
    let (server, mut kv) = start().await;
    // RequestOp.DeleteRange.prev_kv is field 3 in 2022 and field 4 in 0.5;
    // 0.5 also adds `count` (field 5), which is accepted.
    for (generation, delete) in [
        ("2022", Fields::new().bytes(1, b"k").flag(3)),
        ("0.5", Fields::new().bytes(1, b"k").flag(4)),
        (
            "0.5 with count",
            Fields::new().bytes(1, b"k").flag(4).flag(5),
        ),
    ] {
        kv.put(put("t", b"k", b"v")).await.expect("put");
        let txn = Fields::new()
            .bytes(1, b"t")
            .message(3, Fields::new().message(3, delete))
            .into_bytes();
        let answer = raw_call(&server.api, "/regatta.v1.KV/Txn", txn)
            .await
            .unwrap_or_else(|status| panic!("{generation}: {status}"));
        let answer = TxnResponse::decode(answer.as_slice()).expect("a TxnResponse");
        assert!(answer.succeeded, "{generation}");
        match &answer.responses[0].response {
            Some(response_op::Response::ResponseDeleteRange(delete)) => {
                assert_eq!(delete.deleted, 1, "{generation}");
                let values: Vec<&[u8]> = delete.prev_kvs.iter().map(|kv| &kv.value[..]).collect();
                assert_eq!(values, vec![&b"v"[..]], "{generation}");
            }
            other => panic!("{generation}: not a DeleteRange response: {other:?}"),
        }
    }
    // Without either number, no pairs come back.
    kv.put(put("t", b"k", b"v")).await.expect("put");
    let txn = Fields::new()
        .bytes(1, b"t")
        .message(3, Fields::new().message(3, Fields::new().bytes(1, b"k")))
        .into_bytes();
    let answer = raw_call(&server.api, "/regatta.v1.KV/Txn", txn)
        .await
        .expect("txn");
    let answer = TxnResponse::decode(answer.as_slice()).expect("a TxnResponse");
    match &answer.responses[0].response {
        Some(response_op::Response::ResponseDeleteRange(delete)) => {
            assert_eq!((delete.deleted, delete.prev_kvs.len()), (1, 0));
        }
        other => panic!("not a DeleteRange response: {other:?}"),
    }
    // DeleteRangeRequest.count (0.5, field 5) is accepted; `deleted` is filled anyway.
    kv.put(put("t", b"k", b"v")).await.expect("put");
    let delete = Fields::new()
        .bytes(1, b"t")
        .bytes(2, b"k")
        .flag(5)
        .into_bytes();
    let answer = raw_call(&server.api, "/regatta.v1.KV/DeleteRange", delete)
        .await
        .expect("delete with count");
    let answer = DeleteRangeResponse::decode(answer.as_slice()).expect("a DeleteRangeResponse");
    assert_eq!(answer.deleted, 1);
}

/// Every message of an IterateRange call, or its error.
async fn iterate_all(
    kv: &mut KvClient<Channel>,
    request: RangeRequest,
) -> Result<Vec<RangeResponse>, tonic::Status> {
    let mut stream = kv.iterate_range(request).await?.into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    Ok(messages)
}

#[tokio::test]
async fn iterate_range_streams_a_view_in_messages_under_4_mib() {
    let (server, mut kv) = start().await;
    // Values near 2 MiB: two do not fit one message, so each travels alone,
    // and a client with gRPC's default 4 MiB receive limit reads them all.
    let big = 2 * 1024 * 1024 - 100;
    for i in 0..4u8 {
        kv.put(put("t", &[b'b', i], &vec![i; big]))
            .await
            .expect("put");
    }
    let revision = kv
        .range(range("t", b"b"))
        .await
        .expect("range")
        .into_inner()
        .header
        .expect("header")
        .revision;
    let messages = iterate_all(&mut kv, range_all("t", b"b", b"c"))
        .await
        .expect("iterate");
    assert_eq!(messages.len(), 4);
    for (i, message) in messages.iter().enumerate() {
        assert!(message.encoded_len() < 4 * 1024 * 1024 - 1024);
        assert_eq!((message.count, message.kvs.len()), (1, 1));
        assert_eq!(message.more, i < 3, "message {i}");
        assert_eq!(message.kvs[0].key, vec![b'b', i as u8]);
        let header = message.header.as_ref().expect("header");
        assert_eq!(
            header.revision, revision,
            "the view's revision on every message"
        );
    }

    // Many small pairs: counts add up, `limit` is exact.
    for i in 0..300u32 {
        kv.put(put("t", format!("s{i:03}").as_bytes(), b"v"))
            .await
            .expect("put");
    }
    for (limit, total, more) in [
        (0, 300, false),
        (299, 299, true),
        (300, 300, false),
        (301, 300, false),
    ] {
        let request = RangeRequest {
            limit,
            linearizable: true,
            ..range_all("t", b"s", b"t")
        };
        let messages = iterate_all(&mut kv, request).await.expect("iterate");
        let counted: i64 = messages.iter().map(|m| m.count).sum();
        assert_eq!(counted, total, "limit {limit}");
        assert_eq!(messages.last().map(|m| m.more), Some(more), "limit {limit}");
    }
    // count_only: one message with the total.
    let request = RangeRequest {
        count_only: true,
        ..range_all("t", b"s", b"t")
    };
    let messages = iterate_all(&mut kv, request).await.expect("count");
    assert_eq!(messages.len(), 1);
    assert_eq!((messages[0].count, messages[0].kvs.len()), (300, 0));
    // An empty result is one message with a header.
    let messages = iterate_all(&mut kv, range_all("t", b"x", b"y"))
        .await
        .expect("empty");
    assert_eq!(messages.len(), 1);
    assert!(messages[0].header.is_some());
    assert_eq!((messages[0].count, messages[0].more), (0, false));

    // Range's validation, codes and messages, before any message.
    for bad in [
        RangeRequest {
            limit: -1,
            ..range("t", b"k")
        },
        range("", b"k"),
        range("t", b""),
        range("nope", b"k"),
        range("t", &[b'k'; 1025]),
    ] {
        let by_range = kv.range(bad.clone()).await.expect_err("range refuses");
        let by_iterate = iterate_all(&mut kv, bad)
            .await
            .expect_err("iterate refuses");
        assert_eq!(
            (by_iterate.code(), by_iterate.message()),
            (by_range.code(), by_range.message())
        );
    }

    // A client that reads one message and goes away leaves the server serving.
    let mut stream = kv
        .iterate_range(range_all("t", b"b", b"c"))
        .await
        .expect("iterate")
        .into_inner();
    assert!(stream.message().await.expect("first").is_some());
    drop(stream);
    kv.put(put("t", b"after", b"1")).await.expect("put after");
    let found = kv.range(range("t", b"after")).await.expect("range after");
    assert_eq!(found.into_inner().count, 1);
    drop(server);
}

fn range_all(table: &str, key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        range_end: range_end.to_vec(),
        ..range(table, key)
    }
}
