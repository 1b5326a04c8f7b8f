//! Writes under faults and what they promise: puts retried until a node
//! acknowledges them (a leader may be changing), a put a node must not
//! acknowledge, and the checks that every acknowledged write is held and
//! that the first linearizable read after a fault is not stale. Every
//! acknowledged put is remembered in the world for the "holds every
//! acknowledged write" check, which the background writers in
//! [`super::writers`] feed too.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::{then, when};
use regatta_proto::regatta::v1::{PutRequest, RangeRequest};

use super::kv::wait_for_value;
use super::node;
use crate::values;
use crate::world::{Answer, RegattaWorld};

/// Puts with retries until acknowledged (a leader may be changing).
async fn must_put(
    world: &mut RegattaWorld,
    at: &str,
    table: &str,
    key: Vec<u8>,
    value: Vec<u8>,
    within: Duration,
) -> Result<usize> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = node(world, at, table).await?;
        let mut client = world.client(n)?;
        let request = PutRequest {
            table: table.as_bytes().to_vec(),
            key: key.clone(),
            value: value.clone(),
            prev_kv: false,
        };
        match client.put(request).await {
            Ok(response) => {
                world.acknowledge(table, key, value);
                world.set_last(n, Ok(Answer::Put(response.into_inner())));
                return Ok(n);
            }
            Err(status) if tokio::time::Instant::now() > deadline => {
                bail!("no put acknowledged within {within:?}; last: {status}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[when(
    regex = r#"^within (\d+) seconds a put of "(.*)" = "(.*)" into "([^"]*)" on (.+) succeeds$"#
)]
async fn put_within(
    world: &mut RegattaWorld,
    secs: u64,
    key: String,
    value: String,
    table: String,
    at: String,
) -> Result<()> {
    must_put(
        world,
        &at,
        &table,
        values::parse(&key)?,
        values::parse(&value)?,
        Duration::from_secs(secs),
    )
    .await?;
    Ok(())
}

#[when(regex = r#"^I write (\d+) keys "([^"]*)" into "([^"]*)"$"#)]
async fn write_keys(
    world: &mut RegattaWorld,
    count: usize,
    prefix: String,
    table: String,
) -> Result<()> {
    write_keys_of(world, count, &prefix, 0, &table, false).await
}

#[when(
    regex = r#"^I write (\d+) keys "([^"]*)" of (\d+) KiB into "([^"]*)"( highest key first)?$"#
)]
async fn write_sized_keys(
    world: &mut RegattaWorld,
    count: usize,
    prefix: String,
    kib: usize,
    table: String,
    descending: String,
) -> Result<()> {
    write_keys_of(world, count, &prefix, kib, &table, !descending.is_empty()).await
}

/// Writes `<prefix><i>` for i in 0..count (or from count - 1 down to 0).
async fn write_keys_of(
    world: &mut RegattaWorld,
    count: usize,
    prefix: &str,
    kib: usize,
    table: &str,
    descending: bool,
) -> Result<()> {
    let order: Box<dyn Iterator<Item = usize>> = if descending {
        Box::new((0..count).rev())
    } else {
        Box::new(0..count)
    };
    for i in order {
        let key = format!("{prefix}{i:06}").into_bytes();
        let mut value = format!("value-{i}").into_bytes();
        if kib > 0 {
            value.resize(kib * 1024, b'.');
        }
        must_put(
            world,
            "any node",
            table,
            key,
            value,
            Duration::from_secs(30),
        )
        .await?;
    }
    Ok(())
}

/// With a deadline of 3 s, or without one: the server's default deadline
/// for KV calls (5 s) applies, and the answer must come within `within`.
#[then(
    regex = r#"^a put of "(.*)" = "(.*)" into "([^"]*)" on (.+?) (?:without a deadline )?is not acknowledged(?: within (\d+) seconds)?$"#
)]
async fn put_refused(
    world: &mut RegattaWorld,
    key: String,
    value: String,
    table: String,
    at: String,
    within: String,
) -> Result<()> {
    let n = node(world, &at, &table).await?;
    let mut request = tonic::Request::new(PutRequest {
        table: table.clone().into_bytes(),
        key: values::parse(&key)?,
        value: values::parse(&value)?,
        prev_kv: false,
    });
    let answer = if within.is_empty() {
        // Long enough for a quorum that would answer; a write that cannot
        // be made answers Unavailable (retryable) before the deadline, not
        // by letting the client's timer run out.
        request.set_timeout(Duration::from_secs(3));
        world.client(n)?.put(request).await
    } else {
        // A channel with no deadline of its own: only the server's applies.
        let secs: u64 = within.parse()?;
        let channel = world
            .endpoint(world.cluster()?.api_endpoint(n))?
            .connect_lazy();
        let mut client = regatta_proto::regatta::v1::kv_client::KvClient::new(channel);
        tokio::time::timeout(Duration::from_secs(secs), client.put(request))
            .await
            .with_context(|| {
                format!("node {n} did not answer a put without a deadline within {secs} s")
            })?
    };
    match answer {
        Ok(response) => bail!("node {n} acknowledged the put: {:?}", response.into_inner()),
        Err(status) if status.code() == tonic::Code::Unavailable => {
            tracing_note(&format!("node {n} refused the put: {}", status.message()));
            Ok(())
        }
        Err(status) => bail!(
            "node {n} refused the put with {:?} {:?}; a write a retry may cure answers Unavailable",
            status.code(),
            status.message()
        ),
    }
}

fn tracing_note(text: &str) {
    if std::env::var_os("REGATTA_CONFORMANCE_VERBOSE").is_some() {
        eprintln!("    note: {text}");
    }
}

#[then(
    regex = r#"^(every node|every follower node|node \d+|follower node \d+) eventually holds every acknowledged write to "([^"]*)"$"#
)]
async fn holds_acknowledged(world: &mut RegattaWorld, which: String, table: String) -> Result<()> {
    let nodes = match which.as_str() {
        "every node" => world.live_nodes(),
        "every follower node" => super::follower::follower_nodes(world),
        _ => vec![node(world, &which, &table).await?],
    };
    let expected = world.acknowledged.get(&table).cloned().unwrap_or_default();
    if expected.is_empty() {
        bail!("no write to {table} was acknowledged: nothing to check");
    }
    for n in nodes {
        wait_for_all(world, n, &table, &expected).await?;
    }
    Ok(())
}

/// Polls node `n` until every expected pair is there with its value.
async fn wait_for_all(
    world: &mut RegattaWorld,
    n: usize,
    table: &str,
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing = missing_on(world, n, table, expected).await;
        match missing {
            Ok(0) => return Ok(()),
            Ok(count) if tokio::time::Instant::now() > deadline => bail!(
                "node {n} lacks {count} of {} acknowledged writes",
                expected.len()
            ),
            Err(status) if tokio::time::Instant::now() > deadline => bail!("node {n}: {status}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn missing_on(
    world: &mut RegattaWorld,
    n: usize,
    table: &str,
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<usize, tonic::Status> {
    // Page through the table: a response stops short of the message limit.
    let mut found = BTreeMap::new();
    let mut from = vec![0u8];
    loop {
        let request = RangeRequest {
            table: table.as_bytes().to_vec(),
            key: from.clone(),
            range_end: vec![0],
            ..Default::default()
        };
        let response = world.range(n, request).await?;
        let last = response.kvs.last().map(|kv| kv.key.clone());
        for kv in response.kvs {
            found.insert(kv.key, kv.value);
        }
        match (response.more, last) {
            (true, Some(mut last)) => {
                last.push(0);
                from = last;
            }
            _ => break,
        }
    }
    Ok(expected
        .iter()
        .filter(|(k, v)| found.get(*k) != Some(*v))
        .count())
}

#[then(regex = r#"^node (\d+) eventually holds "(.*)" = "(.*)" in "([^"]*)"$"#)]
async fn node_holds(
    world: &mut RegattaWorld,
    n: usize,
    key: String,
    value: String,
    table: String,
) -> Result<()> {
    let (key, value) = (values::parse(&key)?, values::parse(&value)?);
    wait_for_value(
        world,
        n,
        &table,
        &key,
        Some(&value),
        Duration::from_secs(60),
    )
    .await
}

#[then(
    regex = r#"^the first linearizable read of "(.*)" from "([^"]*)" to succeed on every node returns "(.*)"$"#
)]
async fn first_read_returns(
    world: &mut RegattaWorld,
    key: String,
    table: String,
    value: String,
) -> Result<()> {
    let (key, value) = (values::parse(&key)?, values::parse(&value)?);
    for n in world.live_nodes() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let got = loop {
            let request = RangeRequest {
                table: table.clone().into_bytes(),
                key: key.clone(),
                linearizable: true,
                ..Default::default()
            };
            match world.range(n, request).await {
                Ok(answer) => break answer.kvs.into_iter().next().map(|kv| kv.value),
                Err(status) if tokio::time::Instant::now() > deadline => {
                    bail!("node {n} never answered a linearizable read: {status}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        if got.as_deref() != Some(value.as_slice()) {
            bail!(
                "node {n}'s first linearizable read returned {:?}, not the last acknowledged {:?}",
                got.map(|v| values::show(&v)),
                values::show(&value)
            );
        }
    }
    Ok(())
}
