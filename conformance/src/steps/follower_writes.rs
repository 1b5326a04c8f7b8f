//! Writes sent to a follower cluster (regatta-0.5.md §6): forwarded to the
//! leader cluster, answered once the follower's copy holds them; what a
//! deadline that passes says; a compare-and-swap race across both clusters.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::{then, when};
use regatta_proto::mvcc::v1::KeyValue;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest};
use tonic::Code;

use super::node;
use crate::values;
use crate::world::{Answer, RegattaWorld};

/// What a server says when the deadline passed and the write was never
/// sent, and when it cannot know (extension: regatta-0.5.md §6 names only
/// the committed-not-replicated case).
const NOT_MADE: &str = "the write was not made";
const MAYBE_MADE: &str = "the write may or may not have been made";
/// Where the verdict of the last deadline is kept (1: may have been made).
const MAYBE_MADE_MARK: &str = "__follower_write_maybe_made";

#[when(
    regex = r#"^with a deadline of (\d+) seconds?, I put "(.*)" = "(.*)" into "([^"]*)" on (.+)$"#
)]
async fn put_with_deadline(
    world: &mut RegattaWorld,
    seconds: u64,
    key: String,
    value: String,
    table: String,
    at: String,
) -> Result<()> {
    let n = node(world, &at, &table).await?;
    let mut client = world.client(n)?;
    let mut request = tonic::Request::new(PutRequest {
        table: table.into_bytes(),
        key: values::parse(&key)?,
        value: values::parse(&value)?,
        prev_kv: false,
    });
    request.set_timeout(Duration::from_secs(seconds));
    let answer = client
        .put(request)
        .await
        .map(|r| Answer::Put(r.into_inner()));
    world.set_last(n, answer);
    Ok(())
}

/// `key` in `table` as the leader cluster's leader of it reads it
/// (linearizable), if present.
async fn leader_pair(
    world: &mut RegattaWorld,
    table: &str,
    key: &[u8],
) -> Result<Option<KeyValue>> {
    let n = world.leader_of(table).await?;
    let read = world
        .range(
            n,
            RangeRequest {
                table: table.as_bytes().to_vec(),
                key: key.to_vec(),
                linearizable: true,
                ..RangeRequest::default()
            },
        )
        .await
        .map_err(|status| anyhow::anyhow!("reading {key:?} on node {n}: {status:?}"))?;
    Ok(read.kvs.into_iter().next())
}

#[then(
    regex = r#"^the error says the write was committed at the revision of "(.*)" in "([^"]*)" on the leader cluster$"#
)]
async fn committed_not_replicated(
    world: &mut RegattaWorld,
    key: String,
    table: String,
) -> Result<()> {
    let status = match &world.last {
        Some(Err(status)) => status.clone(),
        other => bail!("expected DeadlineExceeded, got {other:?}"),
    };
    let revision = leader_pair(world, &table, &values::parse(&key)?)
        .await?
        .map(|pair| pair.mod_revision)
        .with_context(|| format!("{key} is not on the leader cluster: the write was not made"))?;
    let expected = format!(
        "write committed on the leader cluster at revision {revision}, not yet replicated here"
    );
    if status.code() != Code::DeadlineExceeded || status.message() != expected {
        bail!(
            "expected DeadlineExceeded {expected:?}, got {:?} {:?}",
            status.code(),
            status.message()
        );
    }
    Ok(())
}

#[then("the error is DeadlineExceeded and says whether the write was made")]
fn deadline_says_outcome(world: &mut RegattaWorld) -> Result<()> {
    let status = match &world.last {
        Some(Err(status)) => status.clone(),
        other => bail!("expected DeadlineExceeded, got {other:?}"),
    };
    // A connection lost mid-call may answer before the deadline.
    if !matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable) {
        bail!("expected DeadlineExceeded, got {status:?}");
    }
    let maybe = if status.message().contains(NOT_MADE) {
        0
    } else if status.message().contains(MAYBE_MADE) {
        1
    } else {
        bail!(
            "the message says neither {NOT_MADE:?} nor {MAYBE_MADE:?}: {:?}",
            status.message()
        );
    };
    world.remembered.insert(MAYBE_MADE_MARK.into(), maybe);
    Ok(())
}

#[then(
    regex = r#"^the leader cluster holds "(.*)" in "([^"]*)" only if the error said the write may have been made$"#
)]
async fn held_only_if_maybe(world: &mut RegattaWorld, key: String, table: String) -> Result<()> {
    let maybe = *world
        .remembered
        .get(MAYBE_MADE_MARK)
        .context("no deadline verdict remembered")?;
    let held = leader_pair(world, &table, &values::parse(&key)?).await?;
    if maybe == 0 && held.is_some() {
        bail!("the error said the write was not made, but the leader cluster holds {key}");
    }
    Ok(())
}

#[when(
    regex = r#"^a Txn setting "(.*)" from "(.*)" to "(.*)" on (follower node \d+) races one setting it to "(.*)" on (node \d+) in "([^"]*)"$"#
)]
#[allow(clippy::too_many_arguments)]
async fn cas_race(
    world: &mut RegattaWorld,
    key: String,
    expected: String,
    on_follower: String,
    follower_at: String,
    on_leader: String,
    leader_at: String,
    table: String,
) -> Result<()> {
    let (key, expected) = (values::parse(&key)?, values::parse(&expected)?);
    let f = node(world, &follower_at, &table).await?;
    let l = node(world, &leader_at, &table).await?;
    let (mut follower, mut leader) = (world.client(f)?, world.client(l)?);
    let via_follower = super::txn::cas(&table, &key, &expected, &values::parse(&on_follower)?);
    let via_leader = super::txn::cas(&table, &key, &expected, &values::parse(&on_leader)?);
    let (a, b) = tokio::join!(follower.txn(via_follower), leader.txn(via_leader));
    world.finished.insert(
        "race via the follower".into(),
        a.map(|r| Answer::Txn(r.into_inner())),
    );
    world.finished.insert(
        "race via the leader".into(),
        b.map(|r| Answer::Txn(r.into_inner())),
    );
    Ok(())
}

#[then(
    regex = r#"^exactly one racing Txn succeeded, and every node of both clusters eventually holds its value for "(.*)" in "([^"]*)"$"#
)]
async fn one_winner(world: &mut RegattaWorld, key: String, table: String) -> Result<()> {
    let mut winners = Vec::new();
    for (name, value_if_won) in [
        ("race via the follower", 0usize),
        ("race via the leader", 1usize),
    ] {
        match world.finished.get(name) {
            Some(Ok(Answer::Txn(txn))) if txn.succeeded => winners.push(value_if_won),
            Some(Ok(Answer::Txn(_))) => {}
            other => bail!("{name}: {other:?}"),
        }
    }
    if winners.len() != 1 {
        bail!(
            "{} racing Txns succeeded, expected exactly one",
            winners.len()
        );
    }
    let key = values::parse(&key)?;
    let won = leader_pair(world, &table, &key)
        .await?
        .map(|pair| pair.value)
        .unwrap_or_default();
    let nodes: Vec<usize> = world
        .live_nodes()
        .into_iter()
        .chain(super::follower::follower_nodes(world))
        .collect();
    for n in nodes {
        super::kv::wait_for_value(world, n, &table, &key, Some(&won), Duration::from_secs(30))
            .await?;
    }
    Ok(())
}
