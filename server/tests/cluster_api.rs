//! `regatta.v1.Cluster` (Regatta 0.5) against the real binary: MemberList
//! from the flags, Status per table, and `config` with tokens masked.

use prost_types::value::Kind;
use regatta_proto::regatta::v1::cluster_client::ClusterClient;
use regatta_proto::regatta::v1::{MemberListRequest, PutRequest, StatusRequest};
use tonic::transport::Channel;

mod support;
use support::node::{serving, NodeConfig};

async fn client(config: &NodeConfig) -> ClusterClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", config.api))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the API");
    ClusterClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_and_status_describe_the_node_and_mask_tokens() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start_with(
        dir.path(),
        &[
            "--memberlist.cluster-name",
            "eu-west",
            "--memberlist.node-name",
            "alpha",
            "--api.advertise-address",
            "http://alpha.example:8443",
            "--tables.token",
            "tables-secret",
            "--maintenance.token",
            "maintenance-secret",
        ],
    );
    let mut kv = serving(&config, &mut node).await;
    kv.put(PutRequest {
        table: b"regatta".to_vec(),
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    })
    .await
    .expect("put");
    let mut cluster = client(&config).await;

    let members = cluster
        .member_list(MemberListRequest {})
        .await
        .expect("MemberList")
        .into_inner();
    assert_eq!(members.cluster, "eu-west");
    assert_eq!(members.members.len(), 1, "{members:?}");
    let me = &members.members[0];
    assert_eq!((me.id.as_str(), me.name.as_str()), ("1", "alpha"));
    assert_eq!(me.peer_ur_ls, vec![config.raft.clone()]);
    assert_eq!(
        me.client_ur_ls,
        vec!["http://alpha.example:8443".to_string()]
    );

    let status = cluster
        .status(StatusRequest { config: false })
        .await
        .expect("Status")
        .into_inner();
    assert_eq!(status.id, "1");
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert!(status.config.is_none(), "config only when asked for");
    assert!(status.errors.is_empty(), "{:?}", status.errors);
    let table = &status.tables["regatta"];
    assert_eq!(table.leader, "1");
    assert!(table.raft_term >= 1, "{table:?}");
    assert!(
        table.raft_applied_index >= 1 && table.raft_index >= table.raft_applied_index,
        "{table:?}"
    );
    assert!(table.log_size >= 0 && table.db_size >= 0, "{table:?}");

    let with_config = cluster
        .status(StatusRequest { config: true })
        .await
        .expect("Status with config")
        .into_inner();
    let settings = with_config.config.expect("config").fields;
    let text = |flag: &str| match settings.get(flag).and_then(|v| v.kind.clone()) {
        Some(Kind::StringValue(value)) => Some(value),
        Some(Kind::NullValue(_)) => None,
        other => panic!("{flag}: {other:?}"),
    };
    assert_eq!(text("api.address"), Some(config.api.clone()));
    assert_eq!(text("raft.node-id"), Some("1".to_string()));
    assert_eq!(text("memberlist.node-name"), Some("alpha".to_string()));
    assert_eq!(text("tables.token"), Some("**********".to_string()));
    assert_eq!(text("maintenance.token"), Some("**********".to_string()));
    assert_eq!(text("api.cert-filename"), None, "unset settings are null");
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("tables-secret") && !shown.contains("maintenance-secret"),
        "a token leaked: {shown}"
    );
}

/// Runs `regatta cluster <args>` against the node's maintenance API;
/// (success, stdout, stderr).
fn member_cli(config: &NodeConfig, args: &[&str]) -> (bool, String, String) {
    let address = ["--maintenance-address", config.maintenance.as_str()];
    support::run_cli(&[&["cluster"][..], args, &address].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_member_and_remove_member_need_the_maintenance_token_and_say_why_they_refuse() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start_with(dir.path(), &["--maintenance.token", "m0k"]);
    let _kv = serving(&config, &mut node).await;

    let (ok, _, err) = member_cli(&config, &["remove-member", "--id", "1"]);
    assert!(
        !ok && err.contains("Request unauthenticated with bearer"),
        "{err}"
    );
    let token = ["--maintenance-token", "m0k"];
    let (ok, _, err) = member_cli(
        &config,
        &[&["remove-member", "--id", "1"][..], &token].concat(),
    );
    assert!(
        !ok && err.contains("FailedPrecondition: node 1 is the cluster's last member"),
        "{err}"
    );
    // Node 2 never starts: recorded, it stays a learner that never catches
    // up, and the single voter goes on alone.
    let add = [
        &[
            "add-member",
            "--id",
            "2",
            "--raft-address",
            "127.0.0.1:9",
            "--no-wait",
            "--json",
        ][..],
        &token,
    ]
    .concat();
    let (ok, out, err) = member_cli(&config, &add);
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(answer["voters"], serde_json::json!([1, 2]), "{out}");
    let (ok, out, err) = member_cli(
        &config,
        &[&["remove-member", "--id", "2"][..], &token].concat(),
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "voters 1: every group changed");
    let (ok, _, err) = member_cli(&config, &add);
    assert!(
        !ok && err.contains("FailedPrecondition: node 2 was removed from the cluster and its id is never used again: start the new node under a new id"),
        "{err}"
    );
    // The node still takes writes: it never counted node 2.
    let mut kv = serving(&config, &mut node).await;
    kv.put(PutRequest {
        table: b"regatta".to_vec(),
        key: b"after".to_vec(),
        value: b"member changes".to_vec(),
        ..PutRequest::default()
    })
    .await
    .expect("put after the member changes");
}
