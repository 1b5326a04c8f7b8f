//! Regatta 0.5's Tables API (regatta-0.5.md §4): Create, Delete and List,
//! the bearer token of `--tables.token`, and where the tables it makes and
//! removes show up (every node of the leader cluster, the follower clusters).
//!
//! Phrasing:
//! - `I create table "orders" on node 2`, `I delete table "orders" on any node`,
//!   `I list tables on follower node 1`; each may end with
//!   `with authorization "Bearer s3cret"` or `without authorization`. Names
//!   take the escapes of [`crate::values`] (`"\x00catalogue"`, `(empty)`,
//!   `1025 bytes of "n"`). The answer is the last answer, so `the request
//!   succeeds` and `the error is <Code> "<message>"` check it.
//! - `I create these tables on node 1:` and `I delete these tables on node
//!   1:` with one name per row, each call must succeed.
//! - `the created table's id is remembered as "first"`, `... is greater than
//!   "first"`; `the listed tables include "a, b"`, `... do not include "c"`
//!   (every List answer is also checked to be sorted by name, with decimal ids).
//! - `within 30 seconds every follower node lists table "orders"`, `... no
//!   node lists table "orders"`.
//! - `the new table "orders" takes a write and a read on every node`, and
//!   `each of these new tables takes a write and a read on every node:`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::gherkin::Step;
use cucumber::{then, when};
use regatta_proto::regatta::v1::tables_client::TablesClient;
use regatta_proto::regatta::v1::{
    CreateTableRequest, DeleteTableRequest, ListTablesRequest, ListTablesResponse, PutRequest,
    RangeRequest,
};
use tonic::{Request, Status};

use super::{flatten, node, parse_keys};
use crate::values;
use crate::world::{Answer, RegattaWorld, FOLLOWER_NODES};

/// A table name as a scenario writes it: escapes, `(empty)`, sized names.
/// The Tables API's names are proto `string`s, so they must be UTF-8.
fn table_name(text: &str) -> Result<String> {
    String::from_utf8(values::parse(text)?)
        .with_context(|| format!("table name {text:?} is not UTF-8 text"))
}

/// A request carrying `authorization` as the step gives it: `with
/// authorization "<value>"`, `without authorization`, or nothing (none).
fn authorized<T>(message: T, how: &str, header: &str) -> Result<Request<T>> {
    let mut request = Request::new(message);
    if how.starts_with("with ") {
        request
            .metadata_mut()
            .insert("authorization", header.parse().context("header value")?);
    }
    Ok(request)
}

fn client(world: &RegattaWorld, n: usize) -> Result<TablesClient<tonic::transport::Channel>> {
    Ok(TablesClient::new(world.api_channel(n)?))
}

/// One List call on node `n`.
async fn list(
    world: &RegattaWorld,
    n: usize,
    request: Request<ListTablesRequest>,
) -> Result<Result<ListTablesResponse, Status>> {
    Ok(client(world, n)?
        .list(request)
        .await
        .map(|r| r.into_inner()))
}

#[when(
    regex = r#"^I create table "(.*)" on (.+?)(?: (with authorization "(.*)"|without authorization))?$"#
)]
async fn create(
    world: &mut RegattaWorld,
    name: String,
    at: String,
    how: String,
    header: String,
) -> Result<()> {
    let name = table_name(&name)?;
    let n = node(world, &at, "").await?;
    let request = authorized(CreateTableRequest { name, config: None }, &how, &header)?;
    let answer = client(world, n)?
        .create(request)
        .await
        .map(|r| Answer::CreateTable(r.into_inner()));
    world.set_last(n, answer);
    Ok(())
}

#[when(regex = r"^I create these tables on (.+):$")]
async fn create_these(world: &mut RegattaWorld, at: String, step: &Step) -> Result<()> {
    let n = node(world, &at, "").await?;
    for name in names_of(step)? {
        let request = Request::new(CreateTableRequest {
            name: name.clone(),
            config: None,
        });
        client(world, n)?.create(request).await.map_err(|status| {
            anyhow::anyhow!(
                "creating table {} on node {n}: {:?} {:?}",
                values::show(name.as_bytes()),
                status.code(),
                status.message()
            )
        })?;
    }
    Ok(())
}

#[when(regex = r"^I delete these tables on (.+):$")]
async fn delete_these(world: &mut RegattaWorld, at: String, step: &Step) -> Result<()> {
    let n = node(world, &at, "").await?;
    for name in names_of(step)? {
        let request = Request::new(DeleteTableRequest { name: name.clone() });
        client(world, n)?.delete(request).await.map_err(|status| {
            anyhow::anyhow!(
                "deleting table {} on node {n}: {:?} {:?}",
                values::show(name.as_bytes()),
                status.code(),
                status.message()
            )
        })?;
    }
    Ok(())
}

/// The names in a step's table, one per row (first column).
fn names_of(step: &Step) -> Result<Vec<String>> {
    let rows = &step.table.as_ref().context("the step needs a table")?.rows;
    rows.iter()
        .map(|row| table_name(row.first().context("an empty row")?))
        .collect()
}

#[when(
    regex = r#"^I delete table "(.*)" on (.+?)(?: (with authorization "(.*)"|without authorization))?$"#
)]
async fn delete(
    world: &mut RegattaWorld,
    name: String,
    at: String,
    how: String,
    header: String,
) -> Result<()> {
    let name = table_name(&name)?;
    let n = node(world, &at, "").await?;
    let request = authorized(DeleteTableRequest { name }, &how, &header)?;
    let answer = client(world, n)?
        .delete(request)
        .await
        .map(|r| Answer::DeleteTable(r.into_inner()));
    world.set_last(n, answer);
    Ok(())
}

#[when(
    regex = r#"^I list tables on (.+?)(?: (with authorization "(.*)"|without authorization))?$"#
)]
async fn list_tables(
    world: &mut RegattaWorld,
    at: String,
    how: String,
    header: String,
) -> Result<()> {
    let n = node(world, &at, "").await?;
    let request = authorized(ListTablesRequest {}, &how, &header)?;
    let answer = list(world, n, request).await?.map(Answer::ListTables);
    world.set_last(n, answer);
    Ok(())
}

/// The last answer as a List answer, checked for what every List answer
/// must be: sorted by name, each table with a decimal id.
fn last_list(world: &RegattaWorld) -> Result<&ListTablesResponse> {
    let Answer::ListTables(listed) = world.last_ok()? else {
        bail!("the last answer is not a Tables.List answer");
    };
    check_list(listed).with_context(|| format!("List on node {}", world.last_node))?;
    Ok(listed)
}

fn check_list(listed: &ListTablesResponse) -> Result<()> {
    let names: Vec<&[u8]> = listed.tables.iter().map(|t| t.name.as_bytes()).collect();
    if names.windows(2).any(|pair| pair[0] >= pair[1]) {
        bail!("tables are not sorted by name: {}", show_names(listed));
    }
    for table in &listed.tables {
        if table.id.is_empty() || table.id.parse::<u64>().is_err() {
            bail!(
                "table {} has id {:?}, not a decimal number",
                values::show(table.name.as_bytes()),
                table.id
            );
        }
    }
    Ok(())
}

fn show_names(listed: &ListTablesResponse) -> String {
    let names: Vec<String> = listed
        .tables
        .iter()
        .map(|t| values::show(t.name.as_bytes()))
        .collect();
    format!("[{}]", names.join(", "))
}

fn lists(listed: &ListTablesResponse, name: &[u8]) -> bool {
    listed.tables.iter().any(|t| t.name.as_bytes() == name)
}

#[then(regex = r#"^the listed tables include "(.*)"$"#)]
fn listed_include(world: &mut RegattaWorld, names: String) -> Result<()> {
    let listed = last_list(world)?;
    for name in parse_keys(&names)? {
        if !lists(listed, &name) {
            bail!(
                "node {} does not list {}: {}",
                world.last_node,
                values::show(&name),
                show_names(listed)
            );
        }
    }
    Ok(())
}

#[then(regex = r#"^the listed tables do not include "(.*)"$"#)]
fn listed_exclude(world: &mut RegattaWorld, names: String) -> Result<()> {
    let listed = last_list(world)?;
    for name in parse_keys(&names)? {
        if lists(listed, &name) {
            bail!(
                "node {} still lists {}: {}",
                world.last_node,
                values::show(&name),
                show_names(listed)
            );
        }
    }
    Ok(())
}

#[then(regex = r#"^the listed table "(.*)" has the id remembered as "(\w+)"$"#)]
fn listed_id(world: &mut RegattaWorld, name: String, remembered: String) -> Result<()> {
    let name = table_name(&name)?;
    let expected = *world
        .remembered
        .get(&remembered)
        .with_context(|| format!("nothing remembered as {remembered}"))?;
    let listed = last_list(world)?;
    let table = listed
        .tables
        .iter()
        .find(|t| t.name == name)
        .with_context(|| format!("{name} is not listed: {}", show_names(listed)))?;
    if table.id != expected.to_string() {
        bail!(
            "{name} is listed with id {:?}, expected {expected}",
            table.id
        );
    }
    Ok(())
}

/// The id of the table the last Create made.
fn created_id(world: &RegattaWorld) -> Result<i64> {
    let Answer::CreateTable(created) = world.last_ok()? else {
        bail!("the last answer is not a Tables.Create answer");
    };
    created.id.parse().with_context(|| {
        format!(
            "the created table's id {:?} is not a decimal number",
            created.id
        )
    })
}

#[then(regex = r#"^the created table's id is remembered as "(\w+)"$"#)]
fn remember_id(world: &mut RegattaWorld, name: String) -> Result<()> {
    let id = created_id(world)?;
    world.remembered.insert(name, id);
    Ok(())
}

#[then(regex = r#"^the created table's id is greater than "(\w+)"$"#)]
fn id_greater(world: &mut RegattaWorld, name: String) -> Result<()> {
    let id = created_id(world)?;
    let earlier = *world
        .remembered
        .get(&name)
        .with_context(|| format!("nothing remembered as {name}"))?;
    if id <= earlier {
        bail!("the created table's id {id} is not greater than {name} ({earlier}): ids are never reused");
    }
    Ok(())
}

/// The step node numbers `every node` / `every follower node` stand for.
fn nodes_of(world: &RegattaWorld, which: &str) -> Vec<usize> {
    if which.contains("follower") {
        super::follower::follower_nodes(world)
    } else {
        world.live_nodes()
    }
}

fn shown(n: usize) -> String {
    if n > FOLLOWER_NODES {
        format!("follower node {}", n - FOLLOWER_NODES)
    } else {
        format!("node {n}")
    }
}

#[then(regex = r#"^within (\d+) seconds (every|no) (node|follower node) lists table "(.*)"$"#)]
async fn eventually_listed(
    world: &mut RegattaWorld,
    secs: u64,
    quantifier: String,
    which: String,
    name: String,
) -> Result<()> {
    let name = table_name(&name)?;
    let wanted = quantifier == "every";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    for n in nodes_of(world, &which) {
        loop {
            let outcome = list(world, n, Request::new(ListTablesRequest {})).await?;
            let last = match outcome {
                Ok(listed) => {
                    check_list(&listed).with_context(|| format!("List on {}", shown(n)))?;
                    if lists(&listed, name.as_bytes()) == wanted {
                        break;
                    }
                    show_names(&listed)
                }
                Err(status) => format!("{:?} {:?}", status.code(), status.message()),
            };
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} {} {} within {secs} s: {last}",
                    shown(n),
                    if wanted {
                        "does not list"
                    } else {
                        "still lists"
                    },
                    values::show(name.as_bytes())
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[then(regex = r#"^the new table "(.*)" takes a write and a read on every node$"#)]
async fn takes_writes(world: &mut RegattaWorld, name: String) -> Result<()> {
    let name = table_name(&name)?;
    write_and_read_everywhere(world, &name)
        .await
        .map_err(flatten)
}

#[then(regex = r"^each of these new tables takes a write and a read on every node:$")]
async fn each_takes_writes(world: &mut RegattaWorld, step: &Step) -> Result<()> {
    for name in names_of(step)? {
        write_and_read_everywhere(world, &name)
            .await
            .map_err(flatten)?;
    }
    Ok(())
}

/// Waits until every node serves `table` (linearizable reads, 30 s), has
/// each node write a key of its own, and reads every key back from every
/// node: the table is one table across the cluster.
async fn write_and_read_everywhere(world: &mut RegattaWorld, table: &str) -> Result<()> {
    let shown_table = values::show(table.as_bytes());
    let nodes = world.live_nodes();
    for &n in &nodes {
        world
            .wait_table(n, table, Duration::from_secs(30), true, false)
            .await
            .with_context(|| format!("table {shown_table}"))?;
    }
    let probe = |n: usize| {
        (
            format!("probe-{n}").into_bytes(),
            format!("from node {n}").into_bytes(),
        )
    };
    for &n in &nodes {
        let (key, value) = probe(n);
        let mut kv = world.client(n)?;
        kv.put(PutRequest {
            table: table.as_bytes().to_vec(),
            key: key.clone(),
            value: value.clone(),
            prev_kv: false,
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "put into {shown_table} on node {n}: {:?} {:?}",
                s.code(),
                s.message()
            )
        })?;
        world.acknowledge(table, key, value);
    }
    for &reader in &nodes {
        for &writer in &nodes {
            let (key, value) = probe(writer);
            let request = RangeRequest {
                table: table.as_bytes().to_vec(),
                key: key.clone(),
                linearizable: true,
                ..Default::default()
            };
            let got = world.range(reader, request).await.map_err(|s| {
                anyhow::anyhow!(
                    "read of {shown_table} on node {reader}: {:?} {:?}",
                    s.code(),
                    s.message()
                )
            })?;
            match got.kvs.first() {
                Some(kv) if kv.value == value => {}
                other => bail!(
                    "node {reader} reads {} in {shown_table} as {:?}, node {writer} wrote {}",
                    values::show(&key),
                    other.map(|kv| values::show(&kv.value)),
                    values::show(&value)
                ),
            }
        }
    }
    Ok(())
}
