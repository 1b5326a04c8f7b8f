//! The leader cluster's replication API called directly (`features/replication_protocol.feature`):
//! `Metadata.Get`, `Log.Replicate` and `Snapshot.Stream`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::{then, when};
use futures::StreamExt;
use prost::Message;
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::replication::v1::log_client::LogClient;
use regatta_proto::replication::v1::metadata_client::MetadataClient;
use regatta_proto::replication::v1::snapshot_client::SnapshotClient;
use regatta_proto::replication::v1::{
    replicate_response::Response as Reply, table, MetadataRequest, ReplicateError,
    ReplicateRequest, ReplicateResponse, SnapshotRequest,
};

use super::node;
use crate::command_stream;
use crate::values;
use crate::world::RegattaWorld;

/// How long a (non-follow) Log.Replicate or Snapshot.Stream call may take.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

#[then(regex = r#"^Metadata.Get on (.+) lists the tables "(.*)"$"#)]
async fn metadata_lists(world: &mut RegattaWorld, at: String, expected: String) -> Result<()> {
    let n = node(world, &at, "").await?;
    let mut client = MetadataClient::new(world.replication_channel(n)?);
    let tables = client.get(MetadataRequest {}).await?.into_inner().tables;
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let wanted: Vec<&str> = expected.split(", ").collect();
    if names != wanted {
        bail!("Metadata.Get lists {names:?}, expected {wanted:?}");
    }
    if let Some(t) = tables
        .iter()
        .find(|t| t.r#type != table::Type::Replicated as i32)
    {
        bail!(
            "table {} has type {}, expected REPLICATED",
            t.name,
            t.r#type
        );
    }
    Ok(())
}

async fn replicate(world: &mut RegattaWorld, n: usize, table: &str, from: u64) -> Result<()> {
    world.replicated_at = Some((n, table.to_string()));
    let mut client =
        LogClient::new(world.replication_channel(n)?).max_decoding_message_size(64 * 1024 * 1024);
    let request = ReplicateRequest {
        table: table.as_bytes().to_vec(),
        leader_index: from,
    };
    let outcome = tokio::time::timeout(STREAM_TIMEOUT, async {
        let mut stream = client.replicate(request).await?.into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(message);
        }
        Ok::<_, tonic::Status>(messages)
    })
    .await
    .context("Log.Replicate did not end: a stream without follow mode must end once caught up")?;
    world.replication = Some(outcome);
    Ok(())
}

/// Node `n`'s applied index of `table`, read from the content it serves
/// rather than from the field under test: the leader index of the last
/// entry of its log (from the first entry, or after its snapshot when the
/// log is compacted). The node must have applied everything acknowledged
/// (a linearizable read first), and nothing may write meanwhile.
pub(crate) async fn applied_index(world: &mut RegattaWorld, n: usize, table: &str) -> Result<u64> {
    let saved = (world.replication.take(), world.snapshot.take());
    let found = applied_from_content(world, n, table).await;
    (world.replication, world.snapshot) = saved;
    found
}

async fn applied_from_content(world: &mut RegattaWorld, n: usize, table: &str) -> Result<u64> {
    replicate(world, n, table, 1).await?;
    let from_log = |world: &RegattaWorld| -> Result<Option<u64>> {
        let messages = replication_ok(world)?;
        if let [message] = messages.as_slice() {
            if let Some(Reply::ErrorResponse(e)) = &message.response {
                if e.error == ReplicateError::UseSnapshot as i32 {
                    return Ok(None);
                }
                bail!("Log.Replicate from 1 answered error {}", e.error);
            }
        }
        Ok(commands(world)?.last().map(|(_, c)| c.leader_index))
    };
    if let Some(last) = from_log(world)? {
        return Ok(last);
    }
    // Compacted: the snapshot's index, then the log after it.
    stream_snapshot(world, table.to_string(), format!("node {n}")).await?;
    let chunks = match &world.snapshot {
        Some(Ok(chunks)) => chunks,
        other => bail!("no snapshot to read the applied index from: {other:?}"),
    };
    let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
    let snapshot = command_stream::decode(&bytes)?
        .last()
        .and_then(|c| c.leader_index)
        .context("a snapshot without its trailing DUMMY")?;
    replicate(world, n, table, snapshot + 1).await?;
    Ok(from_log(world)?.unwrap_or(snapshot))
}

fn replication_ok(world: &RegattaWorld) -> Result<&Vec<ReplicateResponse>> {
    match &world.replication {
        Some(Ok(messages)) => Ok(messages),
        Some(Err(status)) => bail!(
            "Log.Replicate failed: {:?} {}",
            status.code(),
            status.message()
        ),
        None => bail!("Log.Replicate was not called"),
    }
}

#[when(regex = r#"^I replicate "([^"]*)" from leader index (\d+) on (.+)$"#)]
async fn replicate_from(
    world: &mut RegattaWorld,
    table: String,
    from: u64,
    at: String,
) -> Result<()> {
    let n = node(world, &at, &table).await?;
    replicate(world, n, &table, from).await
}

#[when(regex = r#"^I replicate "([^"]*)" from the applied index plus (\d+) on (.+)$"#)]
async fn replicate_beyond(
    world: &mut RegattaWorld,
    table: String,
    plus: u64,
    at: String,
) -> Result<()> {
    let n = node(world, &at, &table).await?;
    let applied = applied_index(world, n, &table).await?;
    world.remembered.insert("applied".into(), applied as i64);
    replicate(world, n, &table, applied + plus).await
}

#[then(regex = r#"^the replication call fails with (\w+) "(.*)"$"#)]
fn replication_fails(world: &mut RegattaWorld, code: String, message: String) -> Result<()> {
    match &world.replication {
        Some(Err(status))
            if format!("{:?}", status.code()) == code && status.message() == message =>
        {
            Ok(())
        }
        other => bail!("expected {code} {message:?}, got {other:?}"),
    }
}

#[then(
    regex = r"^the stream is one (USE_SNAPSHOT|LEADER_BEHIND) error carrying the applied index$"
)]
async fn one_error(world: &mut RegattaWorld, error: String) -> Result<()> {
    let wanted = if error == "USE_SNAPSHOT" {
        ReplicateError::UseSnapshot
    } else {
        ReplicateError::LeaderBehind
    };
    let carried = match replication_ok(world)?.as_slice() {
        [message] => match &message.response {
            Some(Reply::ErrorResponse(e)) if e.error == wanted as i32 => message.leader_index,
            other => bail!("expected one {error}, got {other:?}"),
        },
        other => bail!("expected exactly one message, got {}", other.len()),
    };
    let (n, table) = world
        .replicated_at
        .clone()
        .context("Log.Replicate was not called")?;
    let applied = applied_index(world, n, &table).await?;
    if carried != applied {
        bail!("the {error} error carries leader_index {carried}; node {n} has applied {applied} (the last entry it serves)");
    }
    Ok(())
}

#[then("the stream is one message with only the applied index")]
fn idle_message(world: &mut RegattaWorld) -> Result<()> {
    let messages = replication_ok(world)?;
    let applied = world.remembered.get("applied").copied().unwrap_or_default() as u64;
    match messages.as_slice() {
        [message] if message.response.is_none() && message.leader_index == applied => Ok(()),
        other => bail!("expected one message with only leader_index {applied}, got {other:?}"),
    }
}

/// Every command of the stream, with the message's leader index.
fn commands(
    world: &RegattaWorld,
) -> Result<Vec<(u64, regatta_proto::replication::v1::ReplicateCommand)>> {
    let mut out = Vec::new();
    for message in replication_ok(world)? {
        match &message.response {
            Some(Reply::CommandsResponse(batch)) => {
                for command in &batch.commands {
                    out.push((message.leader_index, command.clone()));
                }
            }
            Some(Reply::ErrorResponse(e)) => bail!("unexpected error response {}", e.error),
            None => {}
        }
    }
    Ok(out)
}

#[then(
    regex = r"^the stream carries contiguous commands from leader index (\d+) up to the applied index$"
)]
fn contiguous(world: &mut RegattaWorld, from: u64) -> Result<()> {
    let commands = commands(world)?;
    let mut expected = from;
    for (message_index, command) in &commands {
        if command.leader_index != expected {
            bail!(
                "expected leader index {expected}, got {}",
                command.leader_index
            );
        }
        let inner = command
            .command
            .as_ref()
            .context("a ReplicateCommand without a command")?;
        if inner.leader_index != Some(command.leader_index) {
            bail!(
                "command {} carries leader_index {:?}",
                command.leader_index,
                inner.leader_index
            );
        }
        if *message_index < command.leader_index {
            bail!(
                "a message with leader_index {message_index} carries entry {}",
                command.leader_index
            );
        }
        expected += 1;
    }
    let last_message = replication_ok(world)?.last().context("no message")?;
    if expected != last_message.leader_index + 1 {
        bail!(
            "the stream ended at {} but the leader had applied {}",
            expected - 1,
            last_message.leader_index
        );
    }
    Ok(())
}

#[then(regex = r#"^the commands put "(.*)" in order, the other entries being DUMMY$"#)]
fn commands_put(world: &mut RegattaWorld, keys: String) -> Result<()> {
    let wanted = super::parse_keys(&keys)?;
    let mut puts = Vec::new();
    for (_, command) in commands(world)? {
        let inner = command.command.context("no command")?;
        match CommandType::try_from(inner.r#type) {
            Ok(CommandType::Put) => puts.push(inner.kv.context("a PUT without kv")?.key),
            Ok(CommandType::Dummy) => {}
            other => bail!("unexpected command type {other:?}"),
        }
    }
    if puts != wanted {
        bail!(
            "puts {:?}, expected {keys}",
            puts.iter().map(|k| values::show(k)).collect::<Vec<_>>()
        );
    }
    Ok(())
}

#[then("the first command is a DUMMY")]
fn first_dummy(world: &mut RegattaWorld) -> Result<()> {
    let first = commands(world)?.into_iter().next().context("no commands")?;
    let inner = first.1.command.context("no command")?;
    if inner.r#type != CommandType::Dummy as i32 {
        bail!(
            "the first entry (Raft's initial membership) is type {}, not DUMMY",
            inner.r#type
        );
    }
    Ok(())
}

#[then(
    regex = r"^the stream has at least (\d+) messages, each at most (\d+) bytes unless it holds one command$"
)]
fn message_sizes(world: &mut RegattaWorld, at_least: usize, limit: usize) -> Result<()> {
    let messages = replication_ok(world)?;
    if messages.len() < at_least {
        bail!("{} messages, expected at least {at_least}", messages.len());
    }
    for message in messages {
        let count = match &message.response {
            Some(Reply::CommandsResponse(batch)) => batch.commands.len(),
            _ => 0,
        };
        if message.encoded_len() > limit && count > 1 {
            bail!(
                "a message of {} bytes holds {count} commands",
                message.encoded_len()
            );
        }
    }
    Ok(())
}

#[when(regex = r#"^I stream a snapshot of "([^"]*)" from (.+)$"#)]
async fn stream_snapshot(world: &mut RegattaWorld, table: String, at: String) -> Result<()> {
    let n = node(world, &at, &table).await?;
    let mut client = SnapshotClient::new(world.replication_channel(n)?)
        .max_decoding_message_size(8 * 1024 * 1024);
    let request = SnapshotRequest {
        table: table.into_bytes(),
    };
    let outcome = tokio::time::timeout(STREAM_TIMEOUT, async {
        let mut stream = client.stream(request).await?.into_inner();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.message().await? {
            chunks.push(chunk);
        }
        Ok::<_, tonic::Status>(chunks)
    })
    .await
    .context("Snapshot.Stream did not end")?;
    world.snapshot = Some(outcome);
    Ok(())
}

#[then(regex = r#"^the snapshot call fails with (\w+) "(.*)"$"#)]
fn snapshot_fails(world: &mut RegattaWorld, code: String, message: String) -> Result<()> {
    match &world.snapshot {
        Some(Err(status))
            if format!("{:?}", status.code()) == code && status.message() == message =>
        {
            Ok(())
        }
        other => bail!(
            "expected {code} {message:?}, got {:?}",
            other.as_ref().map(|r| r.as_ref().map(|c| c.len()))
        ),
    }
}

#[then(
    regex = r#"^the snapshot holds "(.*)" in chunks of at most 1 MiB and ends with a DUMMY carrying its leader index$"#
)]
fn snapshot_holds(world: &mut RegattaWorld, pairs: String) -> Result<()> {
    let chunks = match &world.snapshot {
        Some(Ok(chunks)) => chunks,
        other => bail!("no snapshot: {other:?}"),
    };
    let mut bytes = Vec::new();
    for chunk in chunks {
        if chunk.data.len() > 1024 * 1024 || chunk.len != chunk.data.len() as u64 {
            bail!(
                "a chunk of {} bytes says len {}",
                chunk.data.len(),
                chunk.len
            );
        }
        bytes.extend_from_slice(&chunk.data);
    }
    let commands = command_stream::decode(&bytes)?;
    let (last, data) = commands
        .split_last()
        .context("an empty snapshot has no trailing DUMMY")?;
    if last.r#type != CommandType::Dummy as i32 || last.leader_index.unwrap_or(0) == 0 {
        bail!("the last record is {last:?}, not a DUMMY with a leader index");
    }
    let kvs: Vec<_> = data.iter().filter_map(|c| c.kv.clone()).collect();
    super::expect_pairs(&kvs, &pairs)?;
    world
        .remembered
        .insert("snapshot".into(), last.leader_index.unwrap_or(0) as i64);
    Ok(())
}

#[when(regex = r#"^I replicate "([^"]*)" from the snapshot's leader index plus 1 on (.+)$"#)]
async fn replicate_after_snapshot(
    world: &mut RegattaWorld,
    table: String,
    at: String,
) -> Result<()> {
    let n = node(world, &at, &table).await?;
    let from = world
        .remembered
        .get("snapshot")
        .copied()
        .context("no snapshot taken")? as u64
        + 1;
    replicate(world, n, &table, from).await
}

#[when(regex = r#"^I follow "([^"]*)" from the applied index plus 1 on (.+)$"#)]
async fn follow(world: &mut RegattaWorld, table: String, at: String) -> Result<()> {
    let n = node(world, &at, &table).await?;
    let applied = applied_index(world, n, &table).await?;
    let mut client = LogClient::new(world.replication_channel(n)?);
    let mut request = tonic::Request::new(ReplicateRequest {
        table: table.into_bytes(),
        leader_index: applied + 1,
    });
    request
        .metadata_mut()
        .insert("regatta-replicate-mode", "follow".parse()?);
    world.followed = Some(client.replicate(request).await?.into_inner());
    Ok(())
}

#[then(regex = r#"^the followed stream delivers a put of "(.*)" within (\d+) seconds$"#)]
async fn followed_delivers(world: &mut RegattaWorld, key: String, secs: u64) -> Result<()> {
    let key = values::parse(&key)?;
    let stream = world.followed.as_mut().context("no followed stream")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .context("the followed stream delivered nothing in time")?;
        let message = next.context("the followed stream ended")??;
        if let Some(Reply::CommandsResponse(batch)) = message.response {
            if batch.commands.iter().any(|c| {
                c.command
                    .as_ref()
                    .and_then(|c| c.kv.as_ref())
                    .is_some_and(|kv| kv.key == key)
            }) {
                return Ok(());
            }
        }
    }
}
