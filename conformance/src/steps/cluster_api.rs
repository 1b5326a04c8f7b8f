//! Regatta 0.5's Cluster API (regatta-0.5.md §5): MemberList and Status,
//! on leader and follower clusters, and Status's settings with tokens masked.
//!
//! Phrasing:
//! - `I ask node 2 for the member list`, `I ask follower node 1 for its
//!   status with config` (the last answer: `the request succeeds` checks it).
//! - `the member list is of cluster "default"`; `within 10 seconds every
//!   node lists 3 members sorted by id, with distinct ids, names and peer
//!   URLs and a client URL each`; `within 10 seconds every node lists the
//!   same members`; `within 30 seconds every node lists the members:` and
//!   `for 5 seconds node 1 keeps listing the members:` with a table
//!   `| id | name | client URL |`.
//! - `the status is that of node 2, with a version`, `the status covers
//!   tables "a, b"`, `the status carries no config`, `the status reports no
//!   errors`; `within 10 seconds every node's status names the leader and
//!   term of "t"` (as each node's KV answers name them in their headers);
//!   `I remember the applied index of "t" on node 1 as "x"`, `within 10
//!   seconds the applied index of "t" on node 1 is above "x"`; `within 30
//!   seconds the status of "t" on node 1 reports the bytes of its log and
//!   data on disk` (an extension: Regatta 0.5 leaves them 0).
//! - `the status config shows "raft.node-id" as "2"`, `... shows
//!   "tables.token" unset`, `no value in the status config contains "s3cret"`.
//!   Settings are looked up by flag name, flat (`"tables.token"`, as this
//!   server sends them) or nested (`tables` → `token`).
//! - `a follower cluster of 3 nodes with flags "..." following it`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::gherkin::Step;
use cucumber::{then, when};
use prost::Message;
use regatta_proto::regatta::v1::cluster_client::ClusterClient;
use regatta_proto::regatta::v1::{
    Member, MemberListRequest, MemberListResponse, RangeRequest, StatusRequest, StatusResponse,
    TableStatus,
};
use tonic::transport::Channel;
use tonic::Status;

use super::{node, parse_keys};
use crate::world::{Answer, RegattaWorld, FOLLOWER_NODES};

fn client(world: &RegattaWorld, n: usize) -> Result<ClusterClient<Channel>> {
    Ok(ClusterClient::new(world.api_channel(n)?))
}

fn shown(n: usize) -> String {
    if n > FOLLOWER_NODES {
        format!("follower node {}", n - FOLLOWER_NODES)
    } else {
        format!("node {n}")
    }
}

/// The step node numbers `every node` / `every follower node` / `node N` /
/// `follower node N` stand for.
async fn targets(world: &mut RegattaWorld, which: &str) -> Result<Vec<usize>> {
    Ok(match which {
        "every node" => world.live_nodes(),
        "every follower node" => super::follower::follower_nodes(world),
        one => vec![node(world, one, "").await?],
    })
}

async fn member_list(world: &RegattaWorld, n: usize) -> Result<Result<MemberListResponse, Status>> {
    Ok(client(world, n)?
        .member_list(MemberListRequest {})
        .await
        .map(|r| r.into_inner()))
}

async fn status(
    world: &RegattaWorld,
    n: usize,
    with_config: bool,
) -> Result<Result<StatusResponse, Status>> {
    Ok(client(world, n)?
        .status(StatusRequest {
            config: with_config,
        })
        .await
        .map(|r| r.into_inner()))
}

fn failure(status: &Status) -> String {
    format!("{:?} {:?}", status.code(), status.message())
}

// ---- MemberList -------------------------------------------------------

#[when(regex = r"^I ask (.+) for the member list$")]
async fn ask_members(world: &mut RegattaWorld, at: String) -> Result<()> {
    let n = node(world, &at, "").await?;
    let answer = member_list(world, n).await?.map(Answer::MemberList);
    world.set_last(n, answer);
    Ok(())
}

fn last_members(world: &RegattaWorld) -> Result<&MemberListResponse> {
    match world.last_ok()? {
        Answer::MemberList(members) => Ok(members),
        other => bail!("the last answer is not a MemberList answer: {other:?}"),
    }
}

fn show_member(member: &Member) -> String {
    format!(
        "{{id {:?}, name {:?}, peerURLs {:?}, clientURLs {:?}}}",
        member.id, member.name, member.peer_ur_ls, member.client_ur_ls
    )
}

fn show_members(members: &[Member]) -> String {
    let shown: Vec<String> = members.iter().map(show_member).collect();
    format!("[{}]", shown.join(", "))
}

#[then(regex = r#"^the member list is of cluster "(.*)"$"#)]
fn member_cluster(world: &mut RegattaWorld, cluster: String) -> Result<()> {
    let members = last_members(world)?;
    if members.cluster != cluster {
        bail!(
            "the member list is of cluster {:?}, expected {cluster:?}",
            members.cluster
        );
    }
    Ok(())
}

/// Why `members` is not `count` members sorted by id with distinct
/// decimal ids, names and peer URLs and a client URL each; `None` when it is.
fn shape_problem(members: &[Member], count: usize) -> Option<String> {
    let shown = show_members(members);
    if members.len() != count {
        return Some(format!(
            "{} members, expected {count}: {shown}",
            members.len()
        ));
    }
    let mut ids = Vec::new();
    for member in members {
        let Ok(id) = member.id.parse::<u64>() else {
            return Some(format!(
                "member id {:?} is not a decimal number: {shown}",
                member.id
            ));
        };
        ids.push(id);
        if member.name.is_empty() {
            return Some(format!("a member has no name: {shown}"));
        }
        if member.peer_ur_ls.is_empty() || member.peer_ur_ls.iter().any(String::is_empty) {
            return Some(format!("a member has no peer URL: {shown}"));
        }
        if member.client_ur_ls.is_empty() || member.client_ur_ls.iter().any(String::is_empty) {
            return Some(format!("a member has no client URL: {shown}"));
        }
    }
    if ids.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Some(format!(
            "members are not sorted by id, or ids repeat: {shown}"
        ));
    }
    let distinct = |field: fn(&Member) -> String| {
        let mut values: Vec<String> = members.iter().map(field).collect();
        values.sort();
        values.dedup();
        values.len() == members.len()
    };
    if !distinct(|m| m.name.clone()) {
        return Some(format!("member names repeat: {shown}"));
    }
    if !distinct(|m| m.peer_ur_ls.join(",")) {
        return Some(format!("member peer URLs repeat: {shown}"));
    }
    None
}

#[then(
    regex = r"^within (\d+) seconds (every node|every follower node|node \d+|follower node \d+) lists (\d+) members sorted by id, with distinct ids, names and peer URLs and a client URL each$"
)]
async fn members_shape(
    world: &mut RegattaWorld,
    secs: u64,
    which: String,
    count: usize,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    for n in targets(world, &which).await? {
        loop {
            let problem = match member_list(world, n).await? {
                Ok(listed) => match shape_problem(&listed.members, count) {
                    None => break,
                    Some(problem) => problem,
                },
                Err(status) => failure(&status),
            };
            if tokio::time::Instant::now() > deadline {
                bail!("MemberList on {}: {problem}", shown(n));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[then(regex = r"^within (\d+) seconds every node lists the same members$")]
async fn same_members(world: &mut RegattaWorld, secs: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let mut seen: Vec<(usize, String)> = Vec::new();
        for n in world.live_nodes() {
            let listed = member_list(world, n)
                .await?
                .map_err(|s| anyhow::anyhow!("MemberList on node {n}: {}", failure(&s)))?;
            seen.push((
                n,
                format!("{:?} {}", listed.cluster, show_members(&listed.members)),
            ));
        }
        if seen.windows(2).all(|pair| pair[0].1 == pair[1].1) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let lines: Vec<String> = seen
                .iter()
                .map(|(n, list)| format!("node {n}: {list}"))
                .collect();
            bail!("the nodes list different members:\n{}", lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (id, name, client URLs) of each member, as a step's table gives them
/// (`| id | name | client URL |`).
type Expected = Vec<(String, String, Vec<String>)>;

fn expected_members(step: &Step) -> Result<Expected> {
    let rows = &step.table.as_ref().context("the step needs a table")?.rows;
    let header = rows.first().context("the table needs a header row")?;
    if header.len() != 3 || header[0] != "id" || header[1] != "name" || header[2] != "client URL" {
        bail!("the table's columns must be | id | name | client URL |");
    }
    Ok(rows[1..]
        .iter()
        .map(|row| (row[0].clone(), row[1].clone(), vec![row[2].clone()]))
        .collect())
}

/// Why node `n`'s member list is not `expected` (each member with a peer
/// URL too); `None` when it is.
async fn members_differ(
    world: &RegattaWorld,
    n: usize,
    expected: &Expected,
) -> Result<Option<String>> {
    Ok(match member_list(world, n).await? {
        Ok(listed) => {
            let got: Expected = listed
                .members
                .iter()
                .map(|m| (m.id.clone(), m.name.clone(), m.client_ur_ls.clone()))
                .collect();
            let peers_set = listed
                .members
                .iter()
                .all(|m| !m.peer_ur_ls.is_empty() && m.peer_ur_ls.iter().all(|p| !p.is_empty()));
            if got == *expected && peers_set {
                None
            } else {
                Some(format!(
                    "{} lists {}, expected (id, name, client URLs) {expected:?}",
                    shown(n),
                    show_members(&listed.members)
                ))
            }
        }
        Err(status) => Some(format!("MemberList on {}: {}", shown(n), failure(&status))),
    })
}

#[then(
    regex = r"^within (\d+) seconds (every node|every follower node|node \d+|follower node \d+) lists the members:$"
)]
async fn lists_members(
    world: &mut RegattaWorld,
    secs: u64,
    which: String,
    step: &Step,
) -> Result<()> {
    let expected = expected_members(step)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    for n in targets(world, &which).await? {
        loop {
            let Some(problem) = members_differ(world, n, &expected).await? else {
                break;
            };
            if tokio::time::Instant::now() > deadline {
                bail!("{problem} (waited {secs} s)");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[then(
    regex = r"^for (\d+) seconds (every node|every follower node|node \d+|follower node \d+) keeps listing the members:$"
)]
async fn keeps_listing_members(
    world: &mut RegattaWorld,
    secs: u64,
    which: String,
    step: &Step,
) -> Result<()> {
    let expected = expected_members(step)?;
    let nodes = targets(world, &which).await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        for &n in &nodes {
            if let Some(problem) = members_differ(world, n, &expected).await? {
                bail!("{problem}");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

// ---- Status -----------------------------------------------------------

#[when(regex = r"^I ask (.+?) for its status( with config)?$")]
async fn ask_status(world: &mut RegattaWorld, at: String, with_config: String) -> Result<()> {
    let n = node(world, &at, "").await?;
    let answer = status(world, n, !with_config.is_empty())
        .await?
        .map(Answer::Status);
    world.set_last(n, answer);
    Ok(())
}

fn last_status(world: &RegattaWorld) -> Result<&StatusResponse> {
    match world.last_ok()? {
        Answer::Status(status) => Ok(status),
        other => bail!("the last answer is not a Status answer: {other:?}"),
    }
}

#[then(regex = r"^the status is that of node (\d+), with a version$")]
fn status_of(world: &mut RegattaWorld, id: u64) -> Result<()> {
    let status = last_status(world)?;
    if status.id != id.to_string() {
        bail!("the status names node {:?}, expected {id}", status.id);
    }
    if status.version.trim().is_empty() {
        bail!("the status has no version");
    }
    Ok(())
}

#[then("the status carries no config")]
fn no_config(world: &mut RegattaWorld) -> Result<()> {
    if let Some(config) = &last_status(world)?.config {
        bail!("config was not asked for, yet the status carries {config:?}");
    }
    Ok(())
}

#[then("the status reports no errors")]
fn no_errors(world: &mut RegattaWorld) -> Result<()> {
    let errors = &last_status(world)?.errors;
    if !errors.is_empty() {
        bail!("the status reports errors: {errors:?}");
    }
    Ok(())
}

#[then(regex = r#"^the status covers tables "(.*)"$"#)]
fn covers_tables(world: &mut RegattaWorld, tables: String) -> Result<()> {
    let status = last_status(world)?;
    for table in parse_keys(&tables)? {
        let name = String::from_utf8(table).context("a table name must be text")?;
        let Some(table) = status.tables.get(&name) else {
            let known: Vec<&String> = status.tables.keys().collect();
            bail!("the status has no table {name:?}, only {known:?}");
        };
        check_indexes(&name, table)?;
    }
    Ok(())
}

/// What holds of any table's status: the applied index is not past the
/// last index; the leader is a decimal node id ("0": none).
fn check_indexes(name: &str, table: &TableStatus) -> Result<()> {
    if table.raft_applied_index > table.raft_index {
        bail!("{name}: applied index past the last index: {table:?}");
    }
    if table.leader.parse::<u64>().is_err() {
        bail!("{name}: leader {:?} is not a decimal node id", table.leader);
    }
    Ok(())
}

#[then(
    regex = r#"^within (\d+) seconds (every node|every follower node|node \d+|follower node \d+)'s status names the leader and term of "([^"]*)"$"#
)]
async fn status_names_leader(
    world: &mut RegattaWorld,
    secs: u64,
    which: String,
    table: String,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    for n in targets(world, &which).await? {
        loop {
            // The node's own view: a serializable read's header names the
            // leader and term it knows, which its status must agree with.
            let request = RangeRequest {
                table: table.as_bytes().to_vec(),
                key: vec![0],
                ..Default::default()
            };
            let header = world
                .range(n, request)
                .await
                .map_err(|s| anyhow::anyhow!("Range on {}: {}", shown(n), failure(&s)))?
                .header
                .context("a Range answer without header")?;
            let got = status(world, n, false)
                .await?
                .map_err(|s| anyhow::anyhow!("Status on {}: {}", shown(n), failure(&s)))?;
            let entry = got
                .tables
                .get(&table)
                .with_context(|| format!("the status of {} has no table {table}", shown(n)))?;
            check_indexes(&table, entry)?;
            let agrees = header.raft_leader_id != 0
                && entry.leader == header.raft_leader_id.to_string()
                && entry.raft_term == header.raft_term
                && entry.raft_term >= 1
                && entry.raft_applied_index >= 1;
            if agrees {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{}'s status of {table}: leader {:?}, term {}, applied index {}; its KV header: leader {}, term {}",
                    shown(n),
                    entry.leader,
                    entry.raft_term,
                    entry.raft_applied_index,
                    header.raft_leader_id,
                    header.raft_term
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn table_status(world: &mut RegattaWorld, at: &str, table: &str) -> Result<TableStatus> {
    let n = node(world, at, table).await?;
    let got = status(world, n, false)
        .await?
        .map_err(|s| anyhow::anyhow!("Status on {}: {}", shown(n), failure(&s)))?;
    let entry = got
        .tables
        .get(table)
        .with_context(|| format!("the status of {} has no table {table}", shown(n)))?
        .clone();
    check_indexes(table, &entry)?;
    Ok(entry)
}

#[when(regex = r#"^I remember the applied index of "([^"]*)" on (.+) as "(\w+)"$"#)]
async fn remember_applied(
    world: &mut RegattaWorld,
    table: String,
    at: String,
    name: String,
) -> Result<()> {
    let entry = table_status(world, &at, &table).await?;
    let index = i64::try_from(entry.raft_applied_index).context("applied index")?;
    world.remembered.insert(name, index);
    Ok(())
}

#[then(regex = r#"^within (\d+) seconds the applied index of "([^"]*)" on (.+) is above "(\w+)"$"#)]
async fn applied_above(
    world: &mut RegattaWorld,
    secs: u64,
    table: String,
    at: String,
    name: String,
) -> Result<()> {
    let before = *world
        .remembered
        .get(&name)
        .with_context(|| format!("nothing remembered as {name}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let entry = table_status(world, &at, &table).await?;
        if i64::try_from(entry.raft_applied_index).unwrap_or(i64::MAX) > before {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the applied index of {table} on {at} is still {} ({name} was {before})",
                entry.raft_applied_index
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[then(
    regex = r#"^within (\d+) seconds the status of "([^"]*)" on (.+) reports the bytes of its log and data on disk$"#
)]
async fn reports_sizes(
    world: &mut RegattaWorld,
    secs: u64,
    table: String,
    at: String,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let entry = table_status(world, &at, &table).await?;
        if entry.log_size > 0 && entry.db_size > 0 {
            return Ok(());
        }
        if entry.log_size < 0 || entry.db_size < 0 || tokio::time::Instant::now() > deadline {
            bail!(
                "{table} on {at}: logSize {}, dbSize {}, expected both above 0",
                entry.log_size,
                entry.db_size
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- Status config ----------------------------------------------------

/// `google.protobuf.Struct` as it travels, decoded here so that the suite
/// needs no well-known-types crate: the settings are compared on the wire.
#[derive(Clone, PartialEq, Message)]
struct WireStruct {
    #[prost(btree_map = "string, message", tag = "1")]
    fields: BTreeMap<String, WireValue>,
}

#[derive(Clone, PartialEq, Message)]
struct WireValue {
    #[prost(oneof = "WireKind", tags = "1, 2, 3, 4, 5, 6")]
    kind: Option<WireKind>,
}

#[derive(Clone, PartialEq, Message)]
struct WireList {
    #[prost(message, repeated, tag = "1")]
    values: Vec<WireValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum WireKind {
    #[prost(int32, tag = "1")]
    Null(i32),
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    Text(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
    #[prost(message, tag = "5")]
    Struct(WireStruct),
    #[prost(message, tag = "6")]
    List(WireList),
}

fn last_config(world: &RegattaWorld) -> Result<WireStruct> {
    let config = last_status(world)?
        .config
        .as_ref()
        .context("the status carries no config")?;
    WireStruct::decode(config.encode_to_vec().as_slice()).context("decoding the config")
}

/// The setting under `flag`: a flat key (`"tables.token"`) or nested
/// structs (`tables` → `token`). `None` when absent.
fn setting<'a>(config: &'a WireStruct, flag: &str) -> Option<&'a WireValue> {
    if let Some(value) = config.fields.get(flag) {
        return Some(value);
    }
    let (head, rest) = flag.split_once('.')?;
    match &config.fields.get(head)?.kind {
        Some(WireKind::Struct(inner)) => setting(inner, rest),
        _ => None,
    }
}

/// A scalar setting as text: strings as they are, numbers without a
/// fraction when whole, `null` for an unset one.
fn text_of(value: &WireValue) -> String {
    match &value.kind {
        None | Some(WireKind::Null(_)) => "null".into(),
        Some(WireKind::Text(text)) => text.clone(),
        Some(WireKind::Number(n)) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
        Some(WireKind::Number(n)) => n.to_string(),
        Some(WireKind::Bool(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
    }
}

#[then(regex = r#"^the status config shows "([^"]*)" as "(.*)"$"#)]
fn config_shows(world: &mut RegattaWorld, flag: String, expected: String) -> Result<()> {
    let config = last_config(world)?;
    let value = setting(&config, &flag).with_context(|| {
        let keys: Vec<&String> = config.fields.keys().collect();
        format!("the status config has no {flag:?}; its keys: {keys:?}")
    })?;
    let got = text_of(value);
    if got != expected {
        bail!("the status config shows {flag:?} as {got:?}, expected {expected:?}");
    }
    Ok(())
}

#[then(regex = r#"^the status config shows "([^"]*)" unset$"#)]
fn config_unset(world: &mut RegattaWorld, flag: String) -> Result<()> {
    let config = last_config(world)?;
    match setting(&config, &flag).map(|v| &v.kind) {
        None | Some(None) | Some(Some(WireKind::Null(_))) => Ok(()),
        Some(Some(WireKind::Text(text))) if text.is_empty() => Ok(()),
        Some(Some(other)) => {
            bail!("the status config shows {flag:?} as {other:?}, expected it unset")
        }
    }
}

/// Every text in `value`, keys included, depth first.
fn texts(value: &WireKind, out: &mut Vec<String>) {
    match value {
        WireKind::Text(text) => out.push(text.clone()),
        WireKind::Struct(inner) => struct_texts(inner, out),
        WireKind::List(list) => {
            for item in list.values.iter().filter_map(|v| v.kind.as_ref()) {
                texts(item, out);
            }
        }
        WireKind::Null(_) | WireKind::Number(_) | WireKind::Bool(_) => {}
    }
}

fn struct_texts(config: &WireStruct, out: &mut Vec<String>) {
    for (key, value) in &config.fields {
        out.push(key.clone());
        if let Some(kind) = &value.kind {
            texts(kind, out);
        }
    }
}

#[then(regex = r#"^no value in the status config contains "(.*)"$"#)]
fn config_hides(world: &mut RegattaWorld, secret: String) -> Result<()> {
    let config = last_config(world)?;
    let mut all = Vec::new();
    struct_texts(&config, &mut all);
    if all.is_empty() {
        bail!("the status config is empty");
    }
    if let Some(leak) = all.iter().find(|text| text.contains(&secret)) {
        bail!("the status config shows {secret:?}: {leak:?}");
    }
    Ok(())
}
