//! TLS on every listener, mutual TLS on replication and certificates
//! renewed without a restart (issue 21, item 6). The clusters of these
//! scenarios get certificates of an authority made for the scenario
//! (`steps/cluster.rs`, `steps/follower.rs`); every other step then talks
//! TLS to them through [`RegattaWorld::endpoint`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::{then, when};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::RangeRequest;
use tonic::transport::Endpoint;

use crate::backend::write_node_tls;
use crate::tls::{https_get, Authority, ClientTls};
use crate::world::{RegattaWorld, FOLLOWER_NODES};

/// The client TLS of the scenario, which must serve TLS.
fn client_tls(world: &RegattaWorld) -> Result<ClientTls> {
    world
        .tls
        .clone()
        .context("the scenario's cluster does not serve TLS")
}

/// `host:port` of node `n`'s REST listener (`n` > [`FOLLOWER_NODES`]: a
/// follower node's).
pub(crate) fn rest_address(world: &RegattaWorld, n: usize) -> Result<String> {
    let address = if n > FOLLOWER_NODES {
        world
            .follower
            .as_deref()
            .context("the scenario has no follower cluster")?
            .rest_address(n - FOLLOWER_NODES)
    } else {
        world.cluster()?.rest_address(n)
    };
    address.context("the backend does not know the REST addresses")
}

/// A serializable range of `table` on node `n` through `endpoint`.
async fn range_through(endpoint: Endpoint, table: &str) -> Result<(), tonic::Status> {
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|err| tonic::Status::unavailable(format!("{err:?}")))?;
    KvClient::new(channel)
        .range(RangeRequest {
            table: table.as_bytes().to_vec(),
            key: vec![0],
            ..RangeRequest::default()
        })
        .await
        .map(|_| ())
}

#[then(regex = r"^(follower )?node (\d+) answers GET /healthz over TLS with 200$")]
async fn healthz_over_tls(world: &mut RegattaWorld, follower: String, n: usize) -> Result<()> {
    let n = if follower.is_empty() {
        n
    } else {
        FOLLOWER_NODES + n
    };
    let tls = client_tls(world)?;
    let address = rest_address(world, n)?;
    let (status, body) = https_get(&address, &tls.ca, "/healthz").await?;
    if status != 200 {
        bail!("GET /healthz over TLS on node {n}: {status} {body:?}");
    }
    Ok(())
}

#[then(regex = r#"^a plaintext client is refused by the API of node (\d+) \(table "([^"]*)"\)$"#)]
async fn plaintext_refused(world: &mut RegattaWorld, n: usize, table: String) -> Result<()> {
    let url = world.cluster()?.api_endpoint(n);
    match range_through(Endpoint::from_shared(url)?, &table).await {
        Ok(()) => bail!("node {n} answered a plaintext client"),
        Err(status) if status.code() == tonic::Code::NotFound => {
            bail!("node {n} answered a plaintext client (NotFound)")
        }
        Err(_) => Ok(()),
    }
}

#[then(
    regex = r#"^a client that trusts (only the replaced|another) authority is refused by the API of node (\d+) \(table "([^"]*)"\)$"#
)]
async fn untrusted_refused(
    world: &mut RegattaWorld,
    which: String,
    n: usize,
    table: String,
) -> Result<()> {
    let ca = if which == "another" {
        Authority::new()?.cert_pem()
    } else {
        world
            .replaced_authority
            .as_ref()
            .context("no certificate was renewed")?
            .cert_pem()
    };
    let tls = ClientTls {
        ca,
        identity: None,
        server_name: Some(crate::tls::SERVER_NAME.to_string()),
    };
    let url = world
        .cluster()?
        .api_endpoint(n)
        .replacen("http://", "https://", 1);
    let endpoint = Endpoint::from_shared(url)?.tls_config(tls.tonic())?;
    match range_through(endpoint, &table).await {
        Ok(()) => bail!("node {n} was trusted by a client of the {which} authority"),
        Err(status) if status.code() == tonic::Code::Unavailable => Ok(()),
        Err(status) => bail!("expected a failed handshake, got {status:?}"),
    }
}

#[when("every node's certificate is renewed by a new authority")]
async fn renew_certificates(world: &mut RegattaWorld) -> Result<()> {
    let authority = Arc::new(Authority::new()?);
    let cluster = world.cluster()?;
    for n in 1..=cluster.size() {
        let dir = cluster
            .host_data_dir(n)
            .context("the backend does not know the data directories")?;
        let host = cluster
            .raft_address(n)
            .and_then(|address| address.rsplit_once(':').map(|(host, _)| host.to_string()))
            .context("the backend does not know the nodes' host names")?;
        write_node_tls(&authority, &dir, &host)?;
    }
    let identity = authority.issue(&["conformance-client".to_string()])?;
    world.tls = Some(ClientTls::of_authority(&authority, Some(identity)));
    world.replaced_authority = world.authority.replace(authority);
    world.forget_all_clients();
    Ok(())
}

#[then(
    regex = r#"^within (\d+) seconds a client that trusts only the new authority reads "([^"]*)" on node (\d+)$"#
)]
async fn trusted_after_renewal(
    world: &mut RegattaWorld,
    secs: u64,
    table: String,
    n: usize,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let endpoint = world.endpoint(world.cluster()?.api_endpoint(n))?;
        let outcome = range_through(endpoint, &table).await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(status) if tokio::time::Instant::now() >= deadline => {
                bail!("node {n} still refuses the new authority after {secs} s: {status:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[then(regex = r#"^for (\d+) seconds follower node (\d+) has no table "([^"]*)"$"#)]
async fn follower_has_no_table(
    world: &mut RegattaWorld,
    secs: u64,
    n: usize,
    table: String,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let node = FOLLOWER_NODES + n;
    while tokio::time::Instant::now() < deadline {
        let mut client = world.client(node)?;
        let answer = client
            .range(RangeRequest {
                table: table.as_bytes().to_vec(),
                key: vec![0],
                ..RangeRequest::default()
            })
            .await;
        match answer {
            Err(status) if status.code() == tonic::Code::NotFound => {}
            other => bail!("follower node {n} answered {other:?} for {table:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
