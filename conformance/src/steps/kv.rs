//! Range, Put and DeleteRange steps and what their answers must hold.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::{given, then, when};
use regatta_proto::regatta::v1::{DeleteRangeRequest, PutRequest, RangeRequest};

use super::request::{delete_request, put_request, range_request};
use super::{expect_pairs, node, parse_keys, parse_pairs, show_pairs};
use crate::values;
use crate::world::{Answer, RegattaWorld};

async fn send_range(world: &mut RegattaWorld, at: &str, request: RangeRequest) -> Result<()> {
    let table = String::from_utf8_lossy(&request.table).into_owned();
    let n = node(world, at, &table).await?;
    let answer = world.range(n, request).await.map(Answer::Range);
    world.set_last(n, answer);
    Ok(())
}

async fn send_put(world: &mut RegattaWorld, at: &str, request: PutRequest) -> Result<()> {
    let table = String::from_utf8_lossy(&request.table).into_owned();
    let n = node(world, at, &table).await?;
    let mut client = world.client(n)?;
    let (key, value) = (request.key.clone(), request.value.clone());
    let answer = client
        .put(request)
        .await
        .map(|r| Answer::Put(r.into_inner()));
    if answer.is_ok() {
        world.acknowledge(&table, key, value);
    }
    world.set_last(n, answer);
    Ok(())
}

async fn send_delete(
    world: &mut RegattaWorld,
    at: &str,
    request: DeleteRangeRequest,
) -> Result<()> {
    let table = String::from_utf8_lossy(&request.table).into_owned();
    let n = node(world, at, &table).await?;
    let mut client = world.client(n)?;
    let answer = client
        .delete_range(request)
        .await
        .map(|r| Answer::DeleteRange(r.into_inner()));
    world.set_last(n, answer);
    Ok(())
}

/// Replaces `$name` with the revision or shard id remembered as `name`.
pub(crate) fn substitute(world: &RegattaWorld, text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let name: String = rest[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let value = world
            .remembered
            .get(&name)
            .with_context(|| format!("nothing remembered as {name}"))?;
        out.push_str(&value.to_string());
        rest = &rest[at + 1 + name.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

#[when(regex = r#"^I send Range \{(.*)\} to (.+)$"#)]
async fn send_range_inline(world: &mut RegattaWorld, fields: String, at: String) -> Result<()> {
    let fields = substitute(world, &fields)?;
    send_range(world, &at, range_request(&fields)?).await
}

#[when(regex = r#"^I send Put \{(.*)\} to (.+)$"#)]
async fn send_put_inline(world: &mut RegattaWorld, fields: String, at: String) -> Result<()> {
    let fields = substitute(world, &fields)?;
    send_put(world, &at, put_request(&fields)?).await
}

#[when(regex = r#"^I send DeleteRange \{(.*)\} to (.+)$"#)]
async fn send_delete_inline(world: &mut RegattaWorld, fields: String, at: String) -> Result<()> {
    let fields = substitute(world, &fields)?;
    send_delete(world, &at, delete_request(&fields)?).await
}

#[given(regex = r#"^table "([^"]*)" holds "(.*)"$"#)]
async fn table_holds(world: &mut RegattaWorld, table: String, pairs: String) -> Result<()> {
    for (key, value) in parse_pairs(&pairs)? {
        let request = PutRequest {
            table: table.clone().into_bytes(),
            key,
            value,
            prev_kv: false,
        };
        send_put(world, "any node", request).await?;
        world.last_ok().context("writing the scenario's data")?;
    }
    Ok(())
}

#[when(regex = r#"^I put "(.*)" = "(.*)" into "([^"]*)" on (.+?)( with prev_kv)?$"#)]
async fn put(
    world: &mut RegattaWorld,
    key: String,
    value: String,
    table: String,
    at: String,
    prev_kv: String,
) -> Result<()> {
    let request = PutRequest {
        table: table.into_bytes(),
        key: values::parse(&key)?,
        value: values::parse(&value)?,
        prev_kv: !prev_kv.is_empty(),
    };
    send_put(world, &at, request).await
}

#[when(regex = r#"^I delete from "(.*)" to "(.*)" in "([^"]*)" on (.+?)( with prev_kv)?$"#)]
async fn delete_range(
    world: &mut RegattaWorld,
    key: String,
    range_end: String,
    table: String,
    at: String,
    prev_kv: String,
) -> Result<()> {
    let request = DeleteRangeRequest {
        table: table.into_bytes(),
        key: values::parse(&key)?,
        range_end: values::parse(&range_end)?,
        prev_kv: !prev_kv.is_empty(),
        count: false,
    };
    send_delete(world, &at, request).await
}

#[when(regex = r#"^I delete "(.*)" from "([^"]*)" on (.+?)( with prev_kv)?$"#)]
async fn delete_key(
    world: &mut RegattaWorld,
    key: String,
    table: String,
    at: String,
    prev_kv: String,
) -> Result<()> {
    let request = DeleteRangeRequest {
        table: table.into_bytes(),
        key: values::parse(&key)?,
        range_end: Vec::new(),
        prev_kv: !prev_kv.is_empty(),
        count: false,
    };
    send_delete(world, &at, request).await
}

#[when(regex = r#"^I (get|read) "(.*)" from "([^"]*)" on (.+)$"#)]
async fn get(
    world: &mut RegattaWorld,
    how: String,
    key: String,
    table: String,
    at: String,
) -> Result<()> {
    let request = RangeRequest {
        table: table.into_bytes(),
        key: values::parse(&key)?,
        linearizable: how == "read",
        ..Default::default()
    };
    send_range(world, &at, request).await
}

#[then(
    regex = r#"^a (linearizable|serializable) range from "(.*)" to "(.*)" over "([^"]*)" on (.+) returns "(.*)"$"#
)]
async fn range_returns(
    world: &mut RegattaWorld,
    how: String,
    key: String,
    range_end: String,
    table: String,
    at: String,
    expected: String,
) -> Result<()> {
    let request = RangeRequest {
        table: table.into_bytes(),
        key: values::parse(&key)?,
        range_end: values::parse(&range_end)?,
        linearizable: how == "linearizable",
        ..Default::default()
    };
    send_range(world, &at, request).await?;
    let response = world.last_range()?;
    expect_pairs(&response.kvs, &expected).with_context(|| format!("on node {}", world.last_node))
}

#[then("the request succeeds")]
fn succeeds(world: &mut RegattaWorld) -> Result<()> {
    world.last_ok().map(|_| ())
}

#[then(regex = r#"^the error is (\w+) "(.*)"$"#)]
fn error_is(world: &mut RegattaWorld, code: String, message: String) -> Result<()> {
    match &world.last {
        Some(Err(status)) => {
            let got = format!("{:?}", status.code());
            if got != code || status.message() != message {
                bail!(
                    "expected {code} {message:?}, got {got} {:?} (node {})",
                    status.message(),
                    world.last_node
                );
            }
            Ok(())
        }
        Some(Ok(answer)) => bail!("expected {code} {message:?}, the request succeeded: {answer:?}"),
        None => bail!("no request was sent"),
    }
}

#[then(regex = r#"^the error is (\w+)$"#)]
fn error_code_is(world: &mut RegattaWorld, code: String) -> Result<()> {
    match &world.last {
        Some(Err(status)) if format!("{:?}", status.code()) == code => Ok(()),
        other => bail!("expected {code}, got {other:?}"),
    }
}

#[then(regex = r#"^the response has pairs "(.*)"$"#)]
fn has_pairs(world: &mut RegattaWorld, expected: String) -> Result<()> {
    expect_pairs(&world.last_range()?.kvs, &expected)
}

#[then(regex = r#"^the response has keys "(.*)" without values$"#)]
fn has_keys_only(world: &mut RegattaWorld, expected: String) -> Result<()> {
    let response = world.last_range()?;
    let keys: Vec<Vec<u8>> = response.kvs.iter().map(|kv| kv.key.clone()).collect();
    if keys != parse_keys(&expected)? {
        bail!(
            "expected keys {expected}, got {}",
            show_pairs(&response.kvs)
        );
    }
    if let Some(kv) = response.kvs.iter().find(|kv| !kv.value.is_empty()) {
        bail!(
            "keys_only answer carries a value for {}",
            values::show(&kv.key)
        );
    }
    Ok(())
}

#[then(regex = r"^more is (true|false)$")]
fn more_is(world: &mut RegattaWorld, more: String) -> Result<()> {
    let got = world.last_range()?.more;
    if got.to_string() != more {
        bail!("expected more = {more}, got {got}");
    }
    Ok(())
}

#[then(regex = r"^count is (\d+)$")]
fn count_is(world: &mut RegattaWorld, count: i64) -> Result<()> {
    let got = world.last_range()?.count;
    if got != count {
        bail!("expected count {count}, got {got}");
    }
    Ok(())
}

#[then(regex = r"^the response holds (\d+) pairs$")]
fn pair_count(world: &mut RegattaWorld, count: usize) -> Result<()> {
    let got = world.last_range()?.kvs.len();
    if got != count {
        bail!("expected {count} pairs, got {got}");
    }
    Ok(())
}

#[then(regex = r"^the response holds fewer than (\d+) pairs$")]
fn fewer_pairs(world: &mut RegattaWorld, count: usize) -> Result<()> {
    let got = world.last_range()?.kvs.len();
    if got >= count || got == 0 {
        bail!("expected between 1 and {} pairs, got {got}", count - 1);
    }
    Ok(())
}

#[then(regex = r#"^the previous pair is "(.*)" = "(.*)"$"#)]
fn previous_pair(world: &mut RegattaWorld, key: String, value: String) -> Result<()> {
    let Answer::Put(put) = world.last_ok()? else {
        bail!("the last answer is not a Put");
    };
    let prev = put.prev_kv.as_ref().context("no previous pair")?;
    if prev.key != values::parse(&key)? || prev.value != values::parse(&value)? {
        bail!(
            "previous pair is {}",
            show_pairs(std::slice::from_ref(prev))
        );
    }
    Ok(())
}

#[then("there is no previous pair")]
fn no_previous_pair(world: &mut RegattaWorld) -> Result<()> {
    let Answer::Put(put) = world.last_ok()? else {
        bail!("the last answer is not a Put");
    };
    if let Some(prev) = &put.prev_kv {
        bail!(
            "unexpected previous pair {}",
            show_pairs(std::slice::from_ref(prev))
        );
    }
    Ok(())
}

#[then(regex = r"^(\d+) keys? (?:was|were) deleted$")]
fn deleted(world: &mut RegattaWorld, count: i64) -> Result<()> {
    let Answer::DeleteRange(delete) = world.last_ok()? else {
        bail!("the last answer is not a DeleteRange");
    };
    if delete.deleted != count {
        bail!("expected {count} deleted, got {}", delete.deleted);
    }
    Ok(())
}

#[then(regex = r#"^the deleted pairs are "(.*)"$"#)]
fn deleted_pairs(world: &mut RegattaWorld, expected: String) -> Result<()> {
    let Answer::DeleteRange(delete) = world.last_ok()? else {
        bail!("the last answer is not a DeleteRange");
    };
    expect_pairs(&delete.prev_kvs, &expected)
}

#[then(regex = r#"^every node eventually holds "(.*)" = "(.*)" in "([^"]*)"$"#)]
async fn every_node_holds(
    world: &mut RegattaWorld,
    key: String,
    value: String,
    table: String,
) -> Result<()> {
    let key = values::parse(&key)?;
    let value = values::parse(&value)?;
    for n in world.live_nodes() {
        wait_for_value(
            world,
            n,
            &table,
            &key,
            Some(&value),
            Duration::from_secs(30),
        )
        .await?;
    }
    Ok(())
}

/// Absent on every node, and still absent on every node a second later
/// (a write refused or deleted must not turn up late).
#[then(regex = r#"^no node holds "(.*)" in "([^"]*)"$"#)]
async fn no_node_holds(world: &mut RegattaWorld, key: String, table: String) -> Result<()> {
    let key = values::parse(&key)?;
    for n in world.live_nodes() {
        wait_for_value(world, n, &table, &key, None, Duration::from_secs(30)).await?;
    }
    let until = tokio::time::Instant::now() + STAYS_ABSENT;
    while tokio::time::Instant::now() < until {
        for n in world.live_nodes() {
            let request = RangeRequest {
                table: table.as_bytes().to_vec(),
                key: key.clone(),
                ..Default::default()
            };
            let found = world.range(n, request).await.map(|r| r.kvs.len());
            if let Ok(found @ 1..) = found {
                bail!("node {n} holds {found} pair(s) under the key after it was absent");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How long "no node holds" keeps checking after the key was absent.
const STAYS_ABSENT: Duration = Duration::from_secs(1);

/// Polls node `n` (serializable reads) until `key` holds `value` (or is
/// absent, for `None`).
pub async fn wait_for_value(
    world: &mut RegattaWorld,
    n: usize,
    table: &str,
    key: &[u8],
    value: Option<&[u8]>,
    within: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let request = RangeRequest {
            table: table.as_bytes().to_vec(),
            key: key.to_vec(),
            ..Default::default()
        };
        let got = world.range(n, request).await;
        let current = match &got {
            Ok(response) => Ok(response.kvs.first().map(|kv| kv.value.clone())),
            Err(status) => Err(status.clone()),
        };
        if let Ok(current) = &current {
            if current.as_deref() == value {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "node {n}: {} in {table} is {:?}, expected {:?}",
                values::show(key),
                current.map(|v| v.map(|v| values::show(&v))),
                value.map(values::show)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[then(regex = r#"^the response is "(.*)" or an error$"#)]
fn response_or_error(world: &mut RegattaWorld, value: String) -> Result<()> {
    let expected = values::parse(&value)?;
    match &world.last {
        Some(Err(_)) => Ok(()),
        Some(Ok(Answer::Range(range))) => match range.kvs.first() {
            Some(kv) if kv.value == expected => Ok(()),
            other => bail!(
                "stale read on node {}: {:?}, expected {value}",
                world.last_node,
                other.map(|kv| values::show(&kv.value))
            ),
        },
        other => bail!("unexpected answer {other:?}"),
    }
}
