//! Txn steps. A Txn is written as a table, one row per compare or op:
//!
//! ```text
//! | part    | op    | key | range_end | value | flags   |
//! | compare | EQUAL | a   |           | 1     |         |
//! | success | put   | b   |           | 2     | prev_kv |
//! | failure | range | a   | \x00      |       | limit=1 |
//! ```
//!
//! Compare ops are `EQUAL`, `NOT_EQUAL`, `GREATER`, `LESS` (with a value;
//! `(empty)` is an explicitly empty one) and `EXISTS` (no value). Branch ops
//! are `range`, `put` and `delete`; flags are `prev_kv`, `keys_only`,
//! `count_only` and `limit=N`.

use anyhow::{bail, Context, Result};
use cucumber::gherkin::Step;
use cucumber::{then, when};
use regatta_proto::mvcc::v1::compare::{CompareResult, CompareTarget, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::response_op::Response;
use regatta_proto::mvcc::v1::{Compare, RequestOp, ResponseOp};
use regatta_proto::regatta::v1::{RangeRequest, TxnRequest};

use super::{node, show_pairs};
use crate::values;
use crate::world::{Answer, RegattaWorld};

/// Builds a Txn from the step's table (see the module doc).
pub fn txn_from_table(table_name: &str, step: &Step) -> Result<TxnRequest> {
    let rows = &step.table.as_ref().context("the step needs a table")?.rows;
    let header = rows.first().context("empty table")?;
    let column = |name: &str| header.iter().position(|h| h.trim() == name);
    let get = |row: &Vec<String>, name: &str| -> String {
        column(name)
            .and_then(|i| row.get(i))
            .map(|cell| cell.trim().to_string())
            .unwrap_or_default()
    };
    let mut txn = TxnRequest {
        table: table_name.as_bytes().to_vec(),
        ..Default::default()
    };
    for row in rows.iter().skip(1) {
        let part = get(row, "part");
        let op = get(row, "op");
        let key = values::parse(&get(row, "key"))?;
        let range_end = values::parse(&get(row, "range_end"))?;
        let value_text = get(row, "value");
        let flags = get(row, "flags");
        match part.as_str() {
            "compare" => txn.compare.push(compare(&op, key, range_end, &value_text)?),
            "success" => txn
                .success
                .push(request_op(&op, key, range_end, &value_text, &flags)?),
            "failure" => txn
                .failure
                .push(request_op(&op, key, range_end, &value_text, &flags)?),
            other => bail!("part must be compare, success or failure, not {other}"),
        }
    }
    Ok(txn)
}

fn compare(op: &str, key: Vec<u8>, range_end: Vec<u8>, value: &str) -> Result<Compare> {
    let mut compare = Compare {
        key,
        range_end,
        target: CompareTarget::Value as i32,
        ..Default::default()
    };
    let result = match op {
        "EXISTS" => {
            return Ok(compare);
        }
        "EQUAL" => CompareResult::Equal,
        "NOT_EQUAL" => CompareResult::NotEqual,
        "GREATER" => CompareResult::Greater,
        "LESS" => CompareResult::Less,
        other => bail!("unknown compare {other}"),
    };
    compare.result = result as i32;
    compare.target_union = Some(TargetUnion::Value(values::parse(value)?));
    Ok(compare)
}

fn request_op(
    op: &str,
    key: Vec<u8>,
    range_end: Vec<u8>,
    value: &str,
    flags: &str,
) -> Result<RequestOp> {
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let has = |flag: &str| flags.contains(&flag);
    let request = match op {
        "range" => {
            let mut limit = 0;
            for flag in &flags {
                if let Some(n) = flag.strip_prefix("limit=") {
                    limit = n.parse().with_context(|| format!("bad {flag}"))?;
                }
            }
            Request::RequestRange(request_op::Range {
                key,
                range_end,
                limit,
                keys_only: has("keys_only"),
                count_only: has("count_only"),
            })
        }
        "put" => Request::RequestPut(request_op::Put {
            key,
            value: values::parse(value)?,
            prev_kv: has("prev_kv"),
        }),
        "delete" => Request::RequestDeleteRange(request_op::DeleteRange {
            key,
            range_end,
            prev_kv: has("prev_kv"),
            ..request_op::DeleteRange::default()
        }),
        other => bail!("unknown op {other}"),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

#[when(regex = r#"^I send a Txn to "([^"]*)" on (.+) with:$"#)]
async fn send_txn(world: &mut RegattaWorld, table: String, at: String, step: &Step) -> Result<()> {
    // The table name may be written with escapes, or as `(empty)`.
    let table = String::from_utf8_lossy(&values::parse(&table)?).into_owned();
    let request = txn_from_table(&table, step)?;
    let n = node(world, &at, &table).await?;
    let mut client = world.client(n)?;
    let answer = client
        .txn(request)
        .await
        .map(|r| Answer::Txn(r.into_inner()));
    world.set_last(n, answer);
    Ok(())
}

/// One response as scenarios write it: `range a=1, b=2` (`more` and
/// `count N` may follow after `;`), `put prev a=1` / `put`, `delete 2` /
/// `delete 2: a=1, b=2`.
pub fn show_response(op: &ResponseOp) -> String {
    match &op.response {
        Some(Response::ResponseRange(range)) => {
            let mut text = format!("range {}", show_pairs(&range.kvs));
            text.push_str(&format!("; count {}", range.count));
            if range.more {
                text.push_str("; more");
            }
            text
        }
        Some(Response::ResponsePut(put)) => match &put.prev_kv {
            Some(prev) => format!("put prev {}", show_pairs(std::slice::from_ref(prev))),
            None => "put".into(),
        },
        Some(Response::ResponseDeleteRange(delete)) if delete.prev_kvs.is_empty() => {
            format!("delete {}", delete.deleted)
        }
        Some(Response::ResponseDeleteRange(delete)) => {
            format!(
                "delete {}: {}",
                delete.deleted,
                show_pairs(&delete.prev_kvs)
            )
        }
        None => "(empty)".into(),
    }
}

#[then(regex = r"^the Txn takes the (success|failure) branch with responses:$")]
fn txn_responses(world: &mut RegattaWorld, branch: String, step: &Step) -> Result<()> {
    let txn = world.last_txn()?;
    let took = if txn.succeeded { "success" } else { "failure" };
    if took != branch {
        bail!("the Txn took the {took} branch");
    }
    let expected: Vec<String> = step
        .table
        .as_ref()
        .map(|t| {
            t.rows
                .iter()
                .map(|r| r.join(" ").trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    let got: Vec<String> = txn.responses.iter().map(show_response).collect();
    // A range row may leave out "; count N" to say nothing about count.
    let matches = expected.len() == got.len()
        && expected.iter().zip(&got).all(|(want, got)| {
            want == got
                || (want.starts_with("range")
                    && !want.contains("; count")
                    && strip_count(got) == *want)
        });
    if !matches {
        bail!("expected responses {expected:#?}, got {got:#?}");
    }
    Ok(())
}

fn strip_count(text: &str) -> String {
    text.split("; ")
        .filter(|part| !part.starts_with("count "))
        .collect::<Vec<_>>()
        .join("; ")
}

#[then(regex = r"^the Txn takes the (success|failure) branch with no responses$")]
fn txn_no_responses(world: &mut RegattaWorld, branch: String) -> Result<()> {
    let txn = world.last_txn()?;
    let took = if txn.succeeded { "success" } else { "failure" };
    if took != branch || !txn.responses.is_empty() {
        bail!(
            "the Txn took the {took} branch with {} responses",
            txn.responses.len()
        );
    }
    Ok(())
}

/// A compare-and-swap of `key` from its current value to `value`.
pub fn cas(table: &str, key: &[u8], current: &[u8], value: &[u8]) -> TxnRequest {
    TxnRequest {
        table: table.as_bytes().to_vec(),
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key.to_vec(),
            target_union: Some(TargetUnion::Value(current.to_vec())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(request_op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    }
}

/// `key`'s value on node `n`, read linearizably.
async fn read_value(
    world: &mut RegattaWorld,
    n: usize,
    table: &str,
    key: &[u8],
) -> Result<Option<Vec<u8>>> {
    let request = RangeRequest {
        table: table.as_bytes().to_vec(),
        key: key.to_vec(),
        linearizable: true,
        ..Default::default()
    };
    Ok(world
        .range(n, request)
        .await?
        .kvs
        .first()
        .map(|kv| kv.value.clone()))
}

/// `rounds` times: the key's value read linearizably, then `writers`
/// compare-and-swaps from that value sent at once, each through another
/// node. Exactly one wins each round, and the key then holds its value.
#[then(
    regex = r#"^in each of (\d+) rounds, of (\d+) writers racing to compare-and-swap "([^"]*)" in "([^"]*)" through different nodes, exactly one wins$"#
)]
async fn cas_race(
    world: &mut RegattaWorld,
    rounds: usize,
    writers: usize,
    key: String,
    table: String,
) -> Result<()> {
    let key = values::parse(&key)?;
    let nodes = world.live_nodes();
    for round in 0..rounds {
        let reader = nodes[round % nodes.len()];
        let current = read_value(world, reader, &table, &key)
            .await?
            .context("the key does not exist")?;
        let mut sends = Vec::new();
        for writer in 0..writers {
            let n = nodes[(round + writer) % nodes.len()];
            let mut client = world.client(n)?;
            let value = format!("round{round}-writer{writer}").into_bytes();
            let request = cas(&table, &key, &current, &value);
            sends.push(async move { (value, client.txn(request).await) });
        }
        let mut winners = Vec::new();
        for (value, answer) in futures::future::join_all(sends).await {
            match answer {
                Ok(response) if response.get_ref().succeeded => winners.push(value),
                Ok(_) => {}
                Err(status) => bail!(
                    "round {round}: a compare-and-swap failed: {:?} {}",
                    status.code(),
                    status.message()
                ),
            }
        }
        if winners.len() != 1 {
            bail!(
                "round {round}: {} of {writers} compare-and-swaps from {} won",
                winners.len(),
                values::show(&current)
            );
        }
        let after = read_value(world, reader, &table, &key).await?;
        if after.as_deref() != Some(winners[0].as_slice()) {
            bail!(
                "round {round}: the winner wrote {}, the key holds {:?}",
                values::show(&winners[0]),
                after.map(|v| values::show(&v))
            );
        }
    }
    Ok(())
}

/// A Txn putting every key of `keys` to `round<i>` is sent `times` times
/// while readers on every node (serializable and linearizable in turn)
/// read the keys as one range: each read sees all of them at one round, or
/// all of them as they were before.
#[then(
    regex = r#"^while a Txn putting "([^"]*)" into "([^"]*)" is sent (\d+) times on (.+), readers on every node see all of its writes or none$"#
)]
async fn txn_seen_whole(
    world: &mut RegattaWorld,
    keys: String,
    table: String,
    times: usize,
    at: String,
) -> Result<()> {
    let keys: Vec<Vec<u8>> = super::parse_keys(&keys)?;
    let first = keys.iter().min().cloned().context("no keys")?;
    let mut end = keys.iter().max().cloned().context("no keys")?;
    end.push(0);
    let range = move |linearizable: bool| RangeRequest {
        table: table.as_bytes().to_vec(),
        key: first.clone(),
        range_end: end.clone(),
        linearizable,
        ..Default::default()
    };
    let only = |kvs: Vec<regatta_proto::mvcc::v1::KeyValue>, keys: &[Vec<u8>]| {
        kvs.into_iter()
            .filter(|kv| keys.contains(&kv.key))
            .map(|kv| (kv.key, kv.value))
            .collect::<Vec<_>>()
    };
    let writer_node = node(world, &at, "").await?;
    let before = only(world.range(writer_node, range(true)).await?.kvs, &keys);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for n in world.live_nodes() {
        let mut client = world.client(n)?;
        let (range, keys, stopped) = (range.clone(), keys.clone(), stopped.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0usize;
            while !*stopped.borrow() {
                i += 1;
                if let Ok(answer) = client.range(range(i.is_multiple_of(2))).await {
                    seen.push(only(answer.into_inner().kvs, &keys));
                }
            }
            (n, seen)
        }));
    }
    let mut client = world.client(writer_node)?;
    let mut sent = Ok(());
    for round in 0..times {
        let value = format!("round{round}").into_bytes();
        let request = TxnRequest {
            table: range(true).table,
            success: keys
                .iter()
                .map(|key| RequestOp {
                    request: Some(Request::RequestPut(request_op::Put {
                        key: key.clone(),
                        value: value.clone(),
                        ..Default::default()
                    })),
                })
                .collect(),
            ..Default::default()
        };
        if let Err(status) = client.txn(request).await {
            sent = Err(anyhow::anyhow!("Txn {round} failed: {status}"));
            break;
        }
    }
    let _ = stop.send(true);
    let mut reads = 0;
    for reader in readers {
        let (n, seen) = reader.await?;
        for pairs in seen {
            reads += 1;
            let one_round = pairs.len() == keys.len()
                && pairs.iter().all(|(_, value)| *value == pairs[0].1)
                && pairs[0].1.starts_with(b"round");
            if pairs != before && !one_round {
                bail!(
                    "node {n} read part of a Txn: {}",
                    show_pairs(
                        &pairs
                            .iter()
                            .map(|(k, v)| regatta_proto::mvcc::v1::KeyValue {
                                key: k.clone(),
                                value: v.clone(),
                                ..Default::default()
                            })
                            .collect::<Vec<_>>()
                    )
                );
            }
        }
    }
    sent?;
    if reads == 0 {
        bail!("no read answered while the Txns were sent");
    }
    Ok(())
}
