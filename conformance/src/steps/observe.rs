//! What operators watch: `GET /healthz` and `/metrics` on the REST
//! listener, compressed responses, the replication gauges of a follower
//! cluster (`features/observability.feature`). The metric names are this
//! implementation's (`docs/operations.md`); another server may skip the
//! scenarios that read them (`@metrics`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::then;
use regatta_proto::regatta::v1::RangeRequest;
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;

use super::follower::follower_nodes;
use super::node;
use super::tls::rest_address;
use crate::metrics;
use crate::values;
use crate::world::{RegattaWorld, FOLLOWER_NODES};

#[then(regex = r"^(follower )?node (\d+) answers GET /healthz with (\d+)$")]
async fn healthz(world: &mut RegattaWorld, follower: String, n: usize, code: u16) -> Result<()> {
    let n = if follower.is_empty() {
        n
    } else {
        FOLLOWER_NODES + n
    };
    let address = rest_address(world, n)?;
    // A node that starts serves once its tables have leaders: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = metrics::http_get(&address, "/healthz", world.tls.as_ref()).await;
        match answer {
            Ok((status, _)) if status == code => return Ok(()),
            other if Instant::now() > deadline => {
                bail!("GET /healthz on {address} answered {other:?}, expected {code}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A Range whose client accepts `encoding` is answered compressed with it
/// (the `grpc-encoding` response header), and decodes to the stored pair.
#[then(
    regex = r#"^a Range of "(.*)" in "([^"]*)" on (.+) accepting (gzip|zstd) is answered in (gzip|zstd) with "(.*)"$"#
)]
async fn compressed_range(
    world: &mut RegattaWorld,
    key: String,
    table: String,
    at: String,
    accepted: String,
    answered: String,
    value: String,
) -> Result<()> {
    let n = node(world, &at, &table).await?;
    let encoding = if accepted == "gzip" {
        CompressionEncoding::Gzip
    } else {
        CompressionEncoding::Zstd
    };
    let mut client = world.client(n)?.accept_compressed(encoding);
    let response = client
        .range(RangeRequest {
            table: table.into_bytes(),
            key: values::parse(&key)?,
            ..Default::default()
        })
        .await?;
    let header = response
        .metadata()
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_string();
    if header != answered {
        bail!("the response came with grpc-encoding {header}, expected {answered}");
    }
    let kvs = response.into_inner().kvs;
    let expected = values::parse(&value)?;
    match kvs.first() {
        Some(kv) if kv.value == expected => Ok(()),
        other => bail!("the compressed response holds {other:?}"),
    }
}

/// Every follower node's samples of `series` for `table`: (node, value).
pub(crate) async fn follower_samples(
    world: &RegattaWorld,
    series: &str,
    table: &str,
) -> Result<Vec<(usize, u64)>> {
    let mut samples = Vec::new();
    for n in follower_nodes(world) {
        let n = n - FOLLOWER_NODES;
        if let Some(value) = follower_sample(world, n, series, table).await? {
            samples.push((n, value));
        }
    }
    Ok(samples)
}

/// One worker per table in a follower cluster: exactly one node reports
/// `regatta_replication_leased` 1 for it, in three readings a second apart.
#[then(regex = r#"^exactly one follower node replicates "([^"]*)"$"#)]
async fn one_worker(world: &mut RegattaWorld, table: String) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut steady = 0;
    let mut last = Vec::new();
    while steady < 3 {
        let leased = follower_samples(world, "regatta_replication_leased", &table).await?;
        let holders: Vec<usize> = leased
            .iter()
            .filter(|(_, v)| *v == 1)
            .map(|(n, _)| *n)
            .collect();
        if leased.is_empty() {
            bail!("no follower node reports regatta_replication_leased for {table}");
        }
        if holders.len() > 1 {
            bail!("follower nodes {holders:?} all replicate {table}");
        }
        if holders.len() == 1 && (last.is_empty() || last == holders) {
            steady += 1;
        } else {
            steady = 0;
        }
        last = holders;
        if Instant::now() > deadline {
            bail!("no single follower node kept replicating {table} for 3 readings in 30 s (last: {last:?})");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// The lag gauge of the node that replicates `table` reaches `lag` (0:
/// caught up) within a minute.
#[then(regex = r#"^the follower cluster's replication lag of "([^"]*)" eventually is (\d+)$"#)]
async fn lag_is(world: &mut RegattaWorld, table: String, lag: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leased = follower_samples(world, "regatta_replication_leased", &table).await?;
        let lags = follower_samples(world, "regatta_replication_lag", &table).await?;
        let holder = leased.iter().find(|(_, v)| *v == 1).map(|(n, _)| *n);
        let current = holder.and_then(|h| lags.iter().find(|(n, _)| *n == h).map(|(_, v)| *v));
        if current == Some(lag) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the replication lag of {table} is {current:?} (worker on follower node {holder:?}), expected {lag}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The follower cluster exports the lag gauge of `table`.
#[then(regex = r#"^the follower cluster's replication lag of "([^"]*)" is reported for one node$"#)]
async fn lag_reported(world: &mut RegattaWorld, table: String) -> Result<()> {
    let lags = follower_samples(world, "regatta_replication_lag", &table).await?;
    if lags.is_empty() {
        bail!("no follower node reports regatta_replication_lag for {table}");
    }
    Ok(())
}

/// A follower node serves no replication API (it is a client of the leader
/// cluster's): `Log.Replicate` at its replication address fails.
#[then(regex = r#"^follower node (\d+) serves no replication API for "([^"]*)"$"#)]
async fn no_replication_api(world: &mut RegattaWorld, n: usize, table: String) -> Result<()> {
    let follower = world
        .follower
        .as_deref()
        .context("the scenario has no follower cluster")?;
    let endpoint = follower
        .replication_endpoint(n)
        .context("the backend does not know the follower nodes' replication addresses")?;
    let channel = world
        .endpoint(endpoint)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = regatta_proto::replication::v1::log_client::LogClient::new(channel);
    let answer = client
        .replicate(regatta_proto::replication::v1::ReplicateRequest {
            table: table.into_bytes(),
            leader_index: 1,
        })
        .await;
    match answer {
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unimplemented
            ) =>
        {
            Ok(())
        }
        Err(status) => bail!(
            "follower node {n}'s replication address answered {:?} {:?}: expected no service (Unavailable or Unimplemented)",
            status.code(),
            status.message()
        ),
        Ok(_) => bail!("follower node {n} serves Log.Replicate"),
    }
}

/// Follower node `n`'s sample of `series` for `table` (none: not exported).
async fn follower_sample(
    world: &RegattaWorld,
    n: usize,
    series: &str,
    table: &str,
) -> Result<Option<u64>> {
    let name = format!("{series}{{table=\"{table}\"}}");
    let address = rest_address(world, FOLLOWER_NODES + n)?;
    let body = metrics::get(&address, world.tls.as_ref()).await?;
    Ok(body
        .lines()
        .any(|line| line.starts_with(&name))
        .then(|| metrics::sum(&body, &name)))
}

/// The follower node whose worker replicates `table` now (leased).
pub(crate) async fn replicating_node(world: &RegattaWorld, table: &str) -> Result<usize> {
    let leased = follower_samples(world, "regatta_replication_leased", table).await?;
    let holders: Vec<usize> = leased
        .iter()
        .filter(|(_, v)| *v == 1)
        .map(|(n, _)| *n)
        .collect();
    match holders[..] {
        [n] => Ok(n),
        _ => bail!("follower nodes {holders:?} replicate {table}, expected exactly one"),
    }
}

const RESTARTS: &str = "regatta_replication_worker_restarts_total";

/// The restart counter of `table` is exported (by the node whose worker
/// replicates it, at least) and is 0 everywhere.
#[then(regex = r#"^no follower node has restarted a worker of "([^"]*)"$"#)]
async fn no_restarts(world: &mut RegattaWorld, table: String) -> Result<()> {
    let restarts = follower_samples(world, RESTARTS, &table).await?;
    let worker = replicating_node(world, &table).await?;
    if !restarts.iter().any(|(n, _)| *n == worker) {
        bail!("follower node {worker} replicates {table} and does not export {RESTARTS} for it");
    }
    if restarts.iter().any(|(_, v)| *v > 0) {
        bail!("worker restarts of {table} already: {restarts:?}");
    }
    Ok(())
}

/// The node marked as replicating `table` restarts its stalled worker
/// (the counter moves) within a minute, while it still replicates it.
#[then(regex = r#"^the follower node that replicates "([^"]*)" eventually restarts its worker$"#)]
async fn restarts_worker(world: &mut RegattaWorld, table: String) -> Result<()> {
    let n = *world
        .marked
        .get(super::faults::REPLICATING_FOLLOWER)
        .context("no follower node was marked as replicating the table")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let restarts = follower_sample(world, n, RESTARTS, &table).await?;
        let leased = follower_sample(world, n, "regatta_replication_leased", &table).await?;
        if restarts.is_some_and(|r| r > 0) && leased == Some(1) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("follower node {n} reports {RESTARTS} {restarts:?} (leased {leased:?}) for {table} after a minute");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
