//! IterateRange (regatta-0.5.md §3): a stream of Range responses from one
//! point-in-time view. The steps send it, read it whole or a message at a
//! time, and check what each message and the whole stream carry.

use anyhow::{bail, Context, Result};
use cucumber::{given, then, when};
use prost::Message;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest, RangeResponse};
use tonic::Status;

use super::kv::substitute;
use super::request::range_request;
use super::{expect_pairs, node, show_pairs};
use crate::world::{Answer, RegattaWorld, RPC_TIMEOUT};

/// Every message must stay under this many bytes encoded.
const MESSAGE_LIMIT: usize = 4 * 1024 * 1024 - 1024;

/// Opens the stream; the first error (validation) comes back as the status.
async fn open(
    world: &mut RegattaWorld,
    n: usize,
    request: RangeRequest,
) -> Result<Result<tonic::Streaming<RangeResponse>, Status>> {
    let mut client = world.client(n)?;
    Ok(client.iterate_range(request).await.map(|r| r.into_inner()))
}

async fn read_rest(
    stream: &mut tonic::Streaming<RangeResponse>,
    messages: &mut Vec<RangeResponse>,
) -> Result<(), Status> {
    loop {
        match tokio::time::timeout(RPC_TIMEOUT, stream.message()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "no message within the step's deadline",
                ))
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(message))) => messages.push(message),
        }
    }
}

fn table_of(request: &RangeRequest) -> String {
    String::from_utf8_lossy(&request.table).into_owned()
}

#[given(regex = r#"^table "([^"]*)" holds (\d+) keys from "([^"]*)" with values of (\d+) bytes$"#)]
async fn table_holds_many(
    world: &mut RegattaWorld,
    table: String,
    count: usize,
    prefix: String,
    size: usize,
) -> Result<()> {
    let n = node(world, "any node", &table).await?;
    let mut client = world.client(n)?;
    for i in 0..count {
        let key = format!("{prefix}{i:05}").into_bytes();
        let value = vec![b'a' + (i % 26) as u8; size];
        client
            .put(PutRequest {
                table: table.clone().into_bytes(),
                key: key.clone(),
                value: value.clone(),
                prev_kv: false,
            })
            .await
            .with_context(|| format!("writing key {i} of {count}"))?;
        world.acknowledge(&table, key, value);
    }
    Ok(())
}

#[when(regex = r#"^I send IterateRange \{(.*)\} to (.+)$"#)]
async fn send_iterate(world: &mut RegattaWorld, fields: String, at: String) -> Result<()> {
    let request = range_request(&substitute(world, &fields)?)?;
    let n = node(world, &at, &table_of(&request)).await?;
    let answer = match open(world, n, request).await? {
        Ok(mut stream) => {
            let mut messages = Vec::new();
            read_rest(&mut stream, &mut messages)
                .await
                .map(|()| Answer::Stream(messages))
        }
        Err(status) => Err(status),
    };
    world.set_last(n, answer);
    Ok(())
}

#[when(regex = r#"^I open IterateRange \{(.*)\} on (.+) and read (\d+) messages?$"#)]
async fn open_and_read(
    world: &mut RegattaWorld,
    fields: String,
    at: String,
    count: usize,
) -> Result<()> {
    let request = range_request(&substitute(world, &fields)?)?;
    let n = node(world, &at, &table_of(&request)).await?;
    let mut stream = open(world, n, request)
        .await?
        .map_err(|status| anyhow::anyhow!("IterateRange refused: {status:?}"))?;
    let mut messages = Vec::new();
    for _ in 0..count {
        let message = tokio::time::timeout(RPC_TIMEOUT, stream.message())
            .await
            .context("no message within the step's deadline")??
            .context("the stream ended early")?;
        messages.push(message);
    }
    world.open_stream = Some((n, stream, messages));
    Ok(())
}

#[when("I read the rest of the stream")]
async fn read_the_rest(world: &mut RegattaWorld) -> Result<()> {
    let (n, mut stream, mut messages) = world.open_stream.take().context("no stream is open")?;
    let answer = read_rest(&mut stream, &mut messages)
        .await
        .map(|()| Answer::Stream(messages));
    world.set_last(n, answer);
    Ok(())
}

#[when("I stop reading the stream")]
fn stop_reading(world: &mut RegattaWorld) -> Result<()> {
    world.open_stream.take().context("no stream is open")?;
    Ok(())
}

fn stream(world: &RegattaWorld) -> Result<&[RangeResponse]> {
    match world.last_ok()? {
        Answer::Stream(messages) => Ok(messages),
        other => bail!("the last answer is not a stream: {other:?}"),
    }
}

#[then(regex = r"^the stream has (\d+) messages?$")]
fn has_messages(world: &mut RegattaWorld, count: usize) -> Result<()> {
    let got = stream(world)?.len();
    if got != count {
        bail!("expected {count} messages, got {got}");
    }
    Ok(())
}

#[then(regex = r"^the stream has at least (\d+) messages$")]
fn has_at_least(world: &mut RegattaWorld, count: usize) -> Result<()> {
    let got = stream(world)?.len();
    if got < count {
        bail!("expected at least {count} messages, got {got}");
    }
    Ok(())
}

#[then(regex = r#"^the stream's pairs are "(.*)"$"#)]
fn stream_pairs(world: &mut RegattaWorld, expected: String) -> Result<()> {
    let kvs: Vec<_> = stream(world)?.iter().flat_map(|m| m.kvs.clone()).collect();
    expect_pairs(&kvs, &expected)
}

#[then(regex = r#"^the stream carries (\d+) pairs from "([^"]*)" in ascending key order$"#)]
fn carries_in_order(world: &mut RegattaWorld, count: usize, prefix: String) -> Result<()> {
    let keys: Vec<Vec<u8>> = stream(world)?
        .iter()
        .flat_map(|m| m.kvs.iter().map(|kv| kv.key.clone()))
        .collect();
    let expected: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("{prefix}{i:05}").into_bytes())
        .collect();
    if keys != expected {
        bail!(
            "expected {count} keys from {prefix}00000 in order, got {} keys (first {:?})",
            keys.len(),
            keys.first()
                .map(|k| String::from_utf8_lossy(k).into_owned())
        );
    }
    Ok(())
}

#[then(regex = r"^more is true on every message but the last, which has more (true|false)$")]
fn more_flags(world: &mut RegattaWorld, last: String) -> Result<()> {
    let messages = stream(world)?;
    let flags: Vec<bool> = messages.iter().map(|m| m.more).collect();
    let Some((last_more, rest)) = flags.split_last() else {
        bail!("the stream has no message");
    };
    if rest.iter().any(|more| !more) || last_more.to_string() != last {
        bail!("more flags {flags:?}, expected true on all but the last, then {last}");
    }
    Ok(())
}

#[then(regex = r"^each message counts its own pairs, (\d+) in all$")]
fn counts(world: &mut RegattaWorld, total: i64) -> Result<()> {
    let messages = stream(world)?;
    for (i, message) in messages.iter().enumerate() {
        if message.count != message.kvs.len() as i64 {
            bail!(
                "message {i}: count {} for {} pairs",
                message.count,
                message.kvs.len()
            );
        }
    }
    let sum: i64 = messages.iter().map(|m| m.count).sum();
    if sum != total {
        bail!("the counts add up to {sum}, expected {total}");
    }
    Ok(())
}

#[then(regex = r"^the stream is one message with count (\d+) and no pairs$")]
fn one_count_message(world: &mut RegattaWorld, count: i64) -> Result<()> {
    let messages = stream(world)?;
    match messages {
        [only] if only.count == count && only.kvs.is_empty() => Ok(()),
        _ => bail!(
            "expected one message with count {count} and no pairs, got {} messages: counts {:?}, pairs {}",
            messages.len(),
            messages.iter().map(|m| m.count).collect::<Vec<_>>(),
            messages.iter().map(|m| show_pairs(&m.kvs)).collect::<Vec<_>>().join(" | ")
        ),
    }
}

#[then("every message stays under 4 MiB - 1 KiB encoded")]
fn under_limit(world: &mut RegattaWorld) -> Result<()> {
    for (i, message) in stream(world)?.iter().enumerate() {
        let size = message.encoded_len();
        if size >= MESSAGE_LIMIT {
            bail!("message {i} is {size} bytes");
        }
    }
    Ok(())
}

#[then("every message has a header with the same revision")]
fn same_revision(world: &mut RegattaWorld) -> Result<()> {
    let revisions: Vec<Option<u64>> = stream(world)?
        .iter()
        .map(|m| m.header.as_ref().map(|h| h.revision))
        .collect();
    match revisions.first() {
        Some(Some(first)) if revisions.iter().all(|r| *r == Some(*first)) => Ok(()),
        _ => bail!("revisions {revisions:?}"),
    }
}

#[then("every pair of the stream has a key and no value")]
fn keys_only(world: &mut RegattaWorld) -> Result<()> {
    for message in stream(world)? {
        if message
            .kvs
            .iter()
            .any(|kv| kv.key.is_empty() || !kv.value.is_empty())
        {
            bail!("pairs {}", show_pairs(&message.kvs));
        }
    }
    Ok(())
}
