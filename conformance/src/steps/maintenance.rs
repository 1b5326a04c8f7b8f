//! The maintenance API (`features/maintenance.feature`, `docs/backups.md`): Backup, Restore and Reset,
//! the bearer token, and Regatta (Go) backups restored as they are.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::{then, when};
use regatta_proto::maintenance::v1::maintenance_client::MaintenanceClient;
use regatta_proto::maintenance::v1::restore_message::Data;
use regatta_proto::maintenance::v1::{BackupRequest, ResetRequest, RestoreInfo, RestoreMessage};
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::replication::v1::metadata_client::MetadataClient;
use regatta_proto::replication::v1::{MetadataRequest, SnapshotChunk};
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::node;
use super::recovery::scan;
use crate::command_stream;
use crate::values;
use crate::world::{RegattaWorld, FOLLOWER_NODES};

/// How long a backup or restore call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The Regatta (Go) files shipped with the suite (`features/fixtures`).
pub(crate) fn go_fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../features/fixtures/regatta-go/backups")
        .join(relative)
}

/// A request with `authorization` set as given (`None`: no header).
fn authorized<T>(message: T, authorization: Option<&str>) -> Result<Request<T>> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().context("header value")?);
    }
    Ok(request)
}

/// Resolves `node N`, `follower node N` and the other node references.
async fn maintenance_node(world: &mut RegattaWorld, at: &str) -> Result<usize> {
    match at.trim().strip_prefix("follower node ") {
        Some(n) => Ok(FOLLOWER_NODES + n.parse::<usize>().context("follower node number")?),
        None => node(world, at, "").await,
    }
}

/// Streams a backup of `table`; the bytes, or the status it failed with.
async fn backup(
    channel: Channel,
    table: &str,
    authorization: Option<&str>,
) -> Result<Result<Vec<u8>, Status>> {
    let mut client = MaintenanceClient::new(channel).max_decoding_message_size(8 * 1024 * 1024);
    let request = authorized(
        BackupRequest {
            table: table.as_bytes().to_vec(),
        },
        authorization,
    )?;
    let mut stream = match client.backup(request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => return Ok(Err(status)),
    };
    let mut bytes = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(SnapshotChunk { data, len, .. })) => {
                if data.len() as u64 != len {
                    bail!("a chunk of {} bytes says len = {len}", data.len());
                }
                if data.len() > 1024 * 1024 {
                    bail!("a chunk of {} bytes is over 1 MiB", data.len());
                }
                bytes.extend_from_slice(&data);
            }
            Ok(None) => return Ok(Ok(bytes)),
            Err(status) => return Ok(Err(status)),
        }
    }
}

/// Sends `messages` as one Restore call.
async fn restore(
    world: &mut RegattaWorld,
    n: usize,
    messages: Vec<RestoreMessage>,
) -> Result<Result<(), Status>> {
    restore_authorized(world, n, messages, None).await
}

/// Sends `messages` as one Restore call with `authorization` as given.
async fn restore_authorized(
    world: &mut RegattaWorld,
    n: usize,
    messages: Vec<RestoreMessage>,
    authorization: Option<&str>,
) -> Result<Result<(), Status>> {
    let mut client = MaintenanceClient::new(world.maintenance_channel(n)?)
        .max_encoding_message_size(8 * 1024 * 1024);
    let request = authorized(futures::stream::iter(messages), authorization)?;
    Ok(client.restore(request).await.map(|_| ()))
}

fn info(table: &str) -> RestoreMessage {
    RestoreMessage {
        data: Some(Data::Info(RestoreInfo {
            table: table.as_bytes().to_vec(),
        })),
    }
}

/// `bytes` as chunks of at most 1 MiB.
fn chunks(bytes: &[u8]) -> Vec<RestoreMessage> {
    bytes
        .chunks(1024 * 1024)
        .map(|data| RestoreMessage {
            data: Some(Data::Chunk(SnapshotChunk {
                data: data.to_vec(),
                len: data.len() as u64,
                index: 0,
            })),
        })
        .collect()
}

#[when(regex = r#"^I back up "([^"]*)" from (.+?) as "([^"]*)"(?: with authorization "(.*)")?$"#)]
async fn back_up(
    world: &mut RegattaWorld,
    table: String,
    at: String,
    name: String,
    header: String,
) -> Result<()> {
    let n = maintenance_node(world, &at).await?;
    let authorization = (!header.is_empty()).then_some(header.as_str());
    let bytes = backup(world.maintenance_channel(n)?, &table, authorization)
        .await?
        .map_err(|status| {
            anyhow::anyhow!("Backup failed: {:?} {}", status.code(), status.message())
        })?;
    world.backups.insert(name, bytes);
    Ok(())
}

/// Data records are `Command{table, type: PUT, kv}`, one per key, in key
/// order, without the trailing DUMMY of a snapshot; an empty table backs up
/// as no bytes.
#[then(
    regex = r#"^the backup "([^"]*)" of "([^"]*)" holds (the pairs "[^"]*"|no pair), a PUT each in key order with no trailing DUMMY$"#
)]
async fn backup_holds(
    world: &mut RegattaWorld,
    name: String,
    table: String,
    what: String,
) -> Result<()> {
    let bytes = world.backups.get(&name).context("no such backup")?;
    let expected = match what.strip_prefix("the pairs \"") {
        Some(set) => world
            .pair_sets
            .get(set.trim_end_matches('"'))
            .context("no such pair set")?
            .clone(),
        None => Vec::new(),
    };
    if expected.is_empty() {
        if !bytes.is_empty() {
            bail!(
                "an empty table's backup has {} bytes, expected none",
                bytes.len()
            );
        }
        return Ok(());
    }
    let commands = command_stream::decode(bytes)?;
    if let Some(other) = commands
        .iter()
        .find(|c| c.r#type != CommandType::Put as i32)
    {
        bail!("the backup holds a record that is not a PUT: {other:?}");
    }
    if let Some(other) = commands
        .iter()
        .find(|c| c.table.as_slice() != table.as_bytes())
    {
        bail!(
            "a record names table {}, expected {table}",
            values::show(&other.table)
        );
    }
    let held: Vec<(Vec<u8>, Vec<u8>)> = commands
        .iter()
        .map(|c| {
            c.kv.as_ref()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .unwrap_or_default()
        })
        .collect();
    if held != expected {
        let show = |pairs: &[(Vec<u8>, Vec<u8>)]| {
            pairs
                .iter()
                .take(5)
                .map(|(k, v)| format!("{}={}", values::show(k), values::show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "the backup holds {} records ({}, ...), expected {} ({}, ...) in key order",
            held.len(),
            show(&held),
            expected.len(),
            show(&expected)
        );
    }
    Ok(())
}

/// A restore stream written record by record: a PUT per pair, then a
/// record without a key (readers skip it) and a trailing DUMMY carrying a
/// leader index (readers take the index, it holds no pair).
#[when(
    regex = r#"^I restore into "([^"]*)" on (.+?) a command stream of "(.*)", a record without a key and a trailing DUMMY$"#
)]
async fn restore_records(
    world: &mut RegattaWorld,
    table: String,
    at: String,
    pairs: String,
) -> Result<()> {
    use regatta_proto::mvcc::v1::{Command, KeyValue};
    let n = maintenance_node(world, &at).await?;
    let mut commands: Vec<Command> = super::parse_pairs(&pairs)?
        .into_iter()
        .map(|(key, value)| Command {
            table: table.as_bytes().to_vec(),
            r#type: CommandType::Put as i32,
            kv: Some(KeyValue {
                key,
                value,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    commands.push(Command {
        table: table.as_bytes().to_vec(),
        r#type: CommandType::Put as i32,
        ..Default::default()
    });
    commands.push(Command {
        table: table.as_bytes().to_vec(),
        r#type: CommandType::Dummy as i32,
        leader_index: Some(97),
        ..Default::default()
    });
    let bytes = command_stream::encode(&commands)?;
    let mut messages = vec![info(&table)];
    messages.extend(chunks(&bytes));
    let outcome = restore(world, n, messages).await?;
    world.maintenance = Some(outcome);
    Ok(())
}

/// The maintenance port of node `n`, or its API port, which serves the
/// maintenance API too when the node has a token (Regatta 0.4+).
fn port_channel(world: &RegattaWorld, n: usize, port: &str) -> Result<Channel> {
    if port.is_empty() {
        world.maintenance_channel(n)
    } else {
        world.api_channel(n)
    }
}

#[when(
    regex = r#"^I call Backup of "([^"]*)" on (the API port of )?(.+?) (with authorization "(.*)"|without authorization)$"#
)]
async fn call_backup(
    world: &mut RegattaWorld,
    table: String,
    port: String,
    at: String,
    how: String,
    header: String,
) -> Result<()> {
    let n = maintenance_node(world, &at).await?;
    let authorization = how.starts_with("with ").then_some(header.as_str());
    let channel = port_channel(world, n, &port)?;
    let outcome = backup(channel, &table, authorization).await?;
    world.maintenance = Some(outcome.map(|_| ()));
    Ok(())
}

#[when(
    regex = r#"^I call Metadata.Get on the (maintenance API|API port) of (.+?) (with authorization "(.*)"|without authorization)$"#
)]
async fn call_metadata(
    world: &mut RegattaWorld,
    port: String,
    at: String,
    how: String,
    header: String,
) -> Result<()> {
    let n = maintenance_node(world, &at).await?;
    let authorization = how.starts_with("with ").then_some(header.as_str());
    let port = if port == "API port" { "api" } else { "" };
    let mut client = MetadataClient::new(port_channel(world, n, port)?);
    let outcome = client
        .get(authorized(MetadataRequest {}, authorization)?)
        .await
        .map(|_| ());
    world.maintenance = Some(outcome);
    Ok(())
}

#[when(
    regex = r#"^I restore "([^"]*)" into "([^"]*)" on (.+?)(?: (with authorization "(.*)"|without authorization))?$"#
)]
async fn restore_backup(
    world: &mut RegattaWorld,
    name: String,
    table: String,
    at: String,
    how: String,
    header: String,
) -> Result<()> {
    let bytes = world.backups.get(&name).context("no such backup")?.clone();
    let n = maintenance_node(world, &at).await?;
    let mut messages = vec![info(&table)];
    messages.extend(chunks(&bytes));
    let authorization = how.starts_with("with ").then_some(header.as_str());
    world.maintenance = Some(restore_authorized(world, n, messages, authorization).await?);
    Ok(())
}

#[when(
    regex = r#"^I restore the Go backup file "([^"]*)" into "([^"]*)" on (.+?)(?: cut after (\d+) bytes)?$"#
)]
async fn restore_go_file(
    world: &mut RegattaWorld,
    file: String,
    table: String,
    at: String,
    cut: String,
) -> Result<()> {
    let path = go_fixture(&file);
    let mut bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(cut) = cut.parse::<usize>() {
        bytes.truncate(cut);
    }
    let n = maintenance_node(world, &at).await?;
    let mut messages = vec![info(&table)];
    messages.extend(chunks(&bytes));
    world.maintenance = Some(restore(world, n, messages).await?);
    Ok(())
}

#[when(regex = r#"^I send a Restore to (.+?) that (starts with a chunk|sends info twice)$"#)]
async fn restore_out_of_order(world: &mut RegattaWorld, at: String, how: String) -> Result<()> {
    let n = maintenance_node(world, &at).await?;
    let messages = if how == "starts with a chunk" {
        chunks(b"data")
    } else {
        vec![info("regatta-test"), info("regatta-test")]
    };
    world.maintenance = Some(restore(world, n, messages).await?);
    Ok(())
}

#[when(
    regex = r#"^I reset (every table|"[^"]*") on (.+?)(?: (with authorization "(.*)"|without authorization))?$"#
)]
async fn reset(
    world: &mut RegattaWorld,
    which: String,
    at: String,
    how: String,
    header: String,
) -> Result<()> {
    let n = maintenance_node(world, &at).await?;
    let request = match which.as_str() {
        "every table" => ResetRequest {
            table: Vec::new(),
            reset_all: true,
        },
        quoted => ResetRequest {
            table: quoted.trim_matches('"').as_bytes().to_vec(),
            reset_all: false,
        },
    };
    let mut client = MaintenanceClient::new(world.maintenance_channel(n)?);
    let authorization = how.starts_with("with ").then_some(header.as_str());
    let outcome = client
        .reset(authorized(request, authorization)?)
        .await
        .map(|_| ());
    world.maintenance = Some(outcome);
    Ok(())
}

#[then("the maintenance call succeeds")]
async fn maintenance_ok(world: &mut RegattaWorld) -> Result<()> {
    match &world.maintenance {
        Some(Ok(())) => Ok(()),
        Some(Err(status)) => bail!(
            "the maintenance call failed: {:?} {}",
            status.code(),
            status.message()
        ),
        None => bail!("no maintenance call was made"),
    }
}

#[then(regex = r#"^the maintenance call fails with (\w+)(?: "(.*)")?$"#)]
async fn maintenance_fails(world: &mut RegattaWorld, code: String, message: String) -> Result<()> {
    let status = match &world.maintenance {
        Some(Err(status)) => status,
        Some(Ok(())) => bail!("the maintenance call succeeded, expected {code}"),
        None => bail!("no maintenance call was made"),
    };
    if format!("{:?}", status.code()) != code {
        bail!(
            "the maintenance call failed with {:?} {:?}, expected {code}",
            status.code(),
            status.message()
        );
    }
    if !message.is_empty() && status.message() != message {
        bail!(
            "the maintenance call failed with message {:?}, expected {message:?}",
            status.message()
        );
    }
    Ok(())
}

#[when(regex = r#"^I remember the pairs of "([^"]*)" on node (\d+) as "([^"]*)"$"#)]
async fn remember_pairs(
    world: &mut RegattaWorld,
    table: String,
    n: usize,
    name: String,
) -> Result<()> {
    let pairs = scan(world, n, &table, true).await?;
    world.pair_sets.insert(name, pairs);
    Ok(())
}

#[then(
    regex = r#"^(every node|every follower node) eventually holds exactly the pairs "([^"]*)" in "([^"]*)"$"#
)]
async fn holds_exactly(
    world: &mut RegattaWorld,
    which: String,
    name: String,
    table: String,
) -> Result<()> {
    let expected = world
        .pair_sets
        .get(&name)
        .context("no such pair set")?
        .clone();
    let nodes: Vec<usize> = if which == "every node" {
        world.live_nodes()
    } else {
        super::follower::follower_nodes(world)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for n in nodes {
        loop {
            match scan(world, n, &table, false).await {
                Ok(got) if got == expected => break,
                other if tokio::time::Instant::now() > deadline => {
                    let summary = match other {
                        Ok(got) => format!("{} pairs, expected {}", got.len(), expected.len()),
                        Err(err) => err.to_string(),
                    };
                    bail!("node {n} does not hold exactly {name:?} in {table}: {summary}");
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

#[then(
    regex = r#"^the pairs "([^"]*)" are, for each writer "([^"]*)", every key it wrote up to some point$"#
)]
async fn prefix_per_writer(world: &mut RegattaWorld, name: String, prefix: String) -> Result<()> {
    let pairs = world.pair_sets.get(&name).context("no such pair set")?;
    // A copy of one point in time holds, per writer, sequences 0..=k and no
    // other (`writers::writer_key` scatters them over the key space, so a
    // copy read while they were written has a gap).
    let mut sequences: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (key, value) in pairs {
        let (writer, seq) = super::writers::parse_writer_key(&prefix, key)
            .with_context(|| format!("key {} is not a writer's key", values::show(key)))?;
        if *value != format!("w{writer}-{seq}").into_bytes() {
            bail!("key {} holds {}", values::show(key), values::show(value));
        }
        sequences.entry(writer).or_default().push(seq);
    }
    if sequences.is_empty() {
        bail!("{name} holds no writer's key");
    }
    for (writer, mut seqs) in sequences {
        seqs.sort_unstable();
        if let Some(gap) = seqs.iter().enumerate().find(|(i, s)| *i != **s) {
            bail!(
                "writer {writer}: holds sequence {} but not {} (of {} keys up to {}): not one point in time",
                gap.1,
                gap.0,
                seqs.len(),
                seqs.last().copied().unwrap_or_default()
            );
        }
    }
    Ok(())
}

#[then(regex = r#"^no node's log contains "([^"]+)"$"#)]
async fn no_log_contains(world: &mut RegattaWorld, secret: String) -> Result<()> {
    let cluster = world.cluster.as_ref().context("no cluster")?;
    let mut read = 0;
    for n in 1..=cluster.size() {
        let log = cluster.logs(n).await;
        if log.is_empty() {
            continue;
        }
        read += 1;
        if let Some(line) = log.lines().find(|line| line.contains(&secret)) {
            bail!("node {n}'s log shows {secret:?}: {line}");
        }
    }
    if read == 0 {
        bail!("this backend shows no node logs: nothing could be checked");
    }
    Ok(())
}
