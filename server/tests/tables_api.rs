//! `regatta.v1.Tables` (Regatta 0.5) against the real binary: create, list
//! and delete at run time, the exact errors, the token, and the flag that
//! turns the service off. Multi-node propagation is in `tests/cluster`.

use regatta_proto::regatta::v1::tables_client::TablesClient;
use regatta_proto::regatta::v1::{
    CreateTableRequest, DeleteTableRequest, ListTablesRequest, PutRequest, RangeRequest,
};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

mod support;
use support::node::{serving, NodeConfig};

async fn tables(config: &NodeConfig) -> TablesClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", config.api))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the API");
    TablesClient::new(channel)
}

fn with_auth<T>(message: T, authorization: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = authorization {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(value).expect("ascii"),
        );
    }
    request
}

fn create(name: &str) -> CreateTableRequest {
    CreateTableRequest {
        name: name.to_string(),
        config: None,
    }
}

fn delete(name: &str) -> DeleteTableRequest {
    DeleteTableRequest {
        name: name.to_string(),
    }
}

async fn listed(client: &mut TablesClient<Channel>) -> Vec<(String, String)> {
    client
        .list(ListTablesRequest {})
        .await
        .expect("list")
        .into_inner()
        .tables
        .into_iter()
        .map(|table| (table.name, table.id))
        .collect()
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, message: &str) {
    let status = result.expect_err("must be refused");
    assert_eq!((status.code(), status.message()), (code, message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_created_listed_deleted_and_created_again_empty() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start(dir.path());
    let mut kv = serving(&config, &mut node).await;
    let mut client = tables(&config).await;

    let id: u64 = client
        .create(create("orders"))
        .await
        .expect("create")
        .into_inner()
        .id
        .parse()
        .expect("a decimal shard id");
    // Served at once on this node: the answer waits for its group.
    kv.put(PutRequest {
        table: b"orders".to_vec(),
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    })
    .await
    .expect("put into the new table");
    let list = listed(&mut client).await;
    assert!(
        list.contains(&("orders".to_string(), id.to_string())),
        "{list:?}"
    );
    let names: Vec<&String> = list.iter().map(|(name, _)| name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "List is sorted by name");

    assert_status(
        client.create(create("orders")).await,
        Code::InvalidArgument,
        "table already exists",
    );
    assert_status(
        client.create(create("")).await,
        Code::InvalidArgument,
        "name must be set",
    );
    assert_status(
        client.create(create(&"n".repeat(1025))).await,
        Code::InvalidArgument,
        "name length exceeded max allowed value",
    );
    client
        .create(create(&"n".repeat(1024)))
        .await
        .expect("a name of exactly 1024 bytes");

    client.delete(delete("orders")).await.expect("delete");
    assert!(!listed(&mut client)
        .await
        .iter()
        .any(|(name, _)| name == "orders"));
    assert_status(
        kv.range(RangeRequest {
            table: b"orders".to_vec(),
            key: b"k".to_vec(),
            ..RangeRequest::default()
        })
        .await,
        Code::NotFound,
        "table not found",
    );
    assert_status(
        client.delete(delete("orders")).await,
        Code::InvalidArgument,
        "table not found",
    );
    assert_status(
        client.delete(delete("")).await,
        Code::InvalidArgument,
        "name must be set",
    );

    // The same name again: a new shard, and nothing of the old data.
    let again: u64 = client
        .create(create("orders"))
        .await
        .expect("create again")
        .into_inner()
        .id
        .parse()
        .expect("decimal");
    assert!(again > id, "shard ids are never reused: {again} after {id}");
    let found = kv
        .range(RangeRequest {
            table: b"orders".to_vec(),
            key: b"k".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .expect("read the new table")
        .into_inner();
    assert!(found.kvs.is_empty(), "{found:?}");
    node.assert_running("after the Tables calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_token_is_checked_before_anything_else() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start_with(dir.path(), &["--tables.token", "s3cret"]);
    let _kv = serving(&config, &mut node).await;
    let mut client = tables(&config).await;

    for (authorization, message) in [
        (None, "Request unauthenticated with bearer"),
        (Some("Basic s3cret"), "Request unauthenticated with bearer"),
        (Some("Bearers3cret"), "Bad authorization string"),
        (Some("Bearer wrong"), "Invalid token"),
    ] {
        // An empty name would be refused too: the token comes first.
        assert_status(
            client.create(with_auth(create(""), authorization)).await,
            Code::Unauthenticated,
            message,
        );
        assert_status(
            client
                .delete(with_auth(delete("regatta"), authorization))
                .await,
            Code::Unauthenticated,
            message,
        );
        assert_status(
            client
                .list(with_auth(ListTablesRequest {}, authorization))
                .await,
            Code::Unauthenticated,
            message,
        );
    }
    client
        .create(with_auth(create("guarded"), Some("bearer s3cret")))
        .await
        .expect("create with the token");
    let list = client
        .list(with_auth(ListTablesRequest {}, Some("Bearer s3cret")))
        .await
        .expect("list with the token")
        .into_inner();
    assert!(list.tables.iter().any(|table| table.name == "guarded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_enabled_false_leaves_the_service_unknown() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start_with(dir.path(), &["--tables.enabled=false"]);
    let _kv = serving(&config, &mut node).await;
    let status = tables(&config)
        .await
        .list(ListTablesRequest {})
        .await
        .expect_err("no Tables service");
    assert_eq!(status.code(), Code::Unimplemented);
}

/// Runs `regatta <args>` against the node; (success, stdout, stderr).
fn cli(config: &NodeConfig, args: &[&str]) -> (bool, String, String) {
    support::run_cli(&[args, &["--address", &config.api]].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_and_cluster_commands_drive_both_apis() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start_with(dir.path(), &["--tables.token", "t0k"]);
    let _kv = serving(&config, &mut node).await;

    let (ok, _, err) = cli(&config, &["table", "create", "cli-made"]);
    assert!(
        !ok && err.contains("Request unauthenticated with bearer"),
        "{err}"
    );
    let (ok, out, err) = cli(
        &config,
        &["table", "create", "cli-made", "--token", "t0k", "--json"],
    );
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(created["name"], "cli-made");
    let (ok, out, err) = cli(&config, &["table", "list", "--token", "t0k"]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|line| line.starts_with("cli-made\t")),
        "{out}"
    );
    let (ok, _, err) = cli(&config, &["table", "create", "cli-made", "--token", "t0k"]);
    assert!(!ok && err.contains("table already exists"), "{err}");
    let (ok, _, err) = cli(&config, &["table", "delete", "cli-made", "--token", "t0k"]);
    assert!(ok, "{err}");

    let (ok, out, err) = cli(&config, &["cluster", "members", "--json"]);
    assert!(ok, "{err}");
    let members: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(members["cluster"], "default");
    assert_eq!(members["members"][0]["id"], "1");
    let (ok, out, err) = cli(&config, &["cluster", "status", "--config", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(status["tables"]["regatta"]["leader"], "1");
    assert_eq!(status["config"]["tables.token"], "**********");
}
