//! Requests sent as raw bytes, exactly as another generation's generated
//! code encodes them (regatta-0.5.md §1): Regatta 2022 and 0.5 number
//! `RequestOp.DeleteRange.prev_kv` differently (3 and 4), and 0.5 adds
//! `count` fields. Our own structs could not send both, so these steps write
//! the protobuf fields by number; every step that does says "raw" in its name.

use anyhow::{bail, Context, Result};
use cucumber::when;
use prost::Message;
use regatta_proto::raw::{Fields, RawCodec};
use regatta_proto::regatta::v1::{DeleteRangeResponse, TxnResponse};
use tonic::Status;

use super::node;
use crate::world::{Answer, RegattaWorld};

/// Sends `body` to `path` on node `n`; the answer's bytes or its status.
async fn raw_call(
    world: &RegattaWorld,
    n: usize,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Result<Vec<u8>, Status>> {
    let mut grpc = tonic::client::Grpc::new(world.api_channel(n)?);
    grpc.ready()
        .await
        .map_err(|err| anyhow::anyhow!("node {n} is not reachable: {err}"))?;
    Ok(grpc
        .unary(
            tonic::Request::new(body),
            http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
        .map(tonic::Response::into_inner))
}

/// `3`, `4, 5`, or `none`: numbers of bool fields set to true.
fn flag_numbers(text: &str) -> Result<Vec<u32>> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|n| {
            n.trim()
                .parse()
                .with_context(|| format!("bad field number {n:?}"))
        })
        .collect()
}

fn with_flags(mut fields: Fields, numbers: &[u32]) -> Fields {
    for &number in numbers {
        fields = fields.flag(number);
    }
    fields
}

#[when(
    regex = r#"^I send a raw Txn to "([^"]*)" on (.+?) whose success branch deletes "([^"]*)" with bool fields (.+) set, as (Regatta 2022|Regatta 0\.5|either generation) encodes it$"#
)]
async fn raw_txn_delete(
    world: &mut RegattaWorld,
    table: String,
    at: String,
    key: String,
    flags: String,
    _generation: String,
) -> Result<()> {
    let n = node(world, &at, &table).await?;
    // TxnRequest { table = 1, success = 3: RequestOp { request_delete_range = 3:
    // DeleteRange { key = 1, <flags> } } }
    let delete = with_flags(
        Fields::new().bytes(1, key.as_bytes()),
        &flag_numbers(&flags)?,
    );
    let body = Fields::new()
        .bytes(1, table.as_bytes())
        .message(3, Fields::new().message(3, delete))
        .into_bytes();
    let answer = match raw_call(world, n, "/regatta.v1.KV/Txn", body).await? {
        Ok(bytes) => Ok(Answer::Txn(
            TxnResponse::decode(bytes.as_slice()).context("the answer is not a TxnResponse")?,
        )),
        Err(status) => Err(status),
    };
    world.set_last(n, answer);
    Ok(())
}

#[when(
    regex = r#"^I send a raw DeleteRange to "([^"]*)" on (.+?) deleting "([^"]*)" with bool fields (.+) set, as (Regatta 2022|Regatta 0\.5|either generation) encodes it$"#
)]
async fn raw_delete_range(
    world: &mut RegattaWorld,
    table: String,
    at: String,
    key: String,
    flags: String,
    generation: String,
) -> Result<()> {
    let numbers = flag_numbers(&flags)?;
    if generation == "Regatta 2022" && numbers.contains(&5) {
        bail!("DeleteRangeRequest field 5 (count) is Regatta 0.5's");
    }
    let n = node(world, &at, &table).await?;
    // DeleteRangeRequest { table = 1, key = 2, prev_kv = 4, count = 5 }
    let body = with_flags(
        Fields::new()
            .bytes(1, table.as_bytes())
            .bytes(2, key.as_bytes()),
        &numbers,
    )
    .into_bytes();
    let answer = match raw_call(world, n, "/regatta.v1.KV/DeleteRange", body).await? {
        Ok(bytes) => Ok(Answer::DeleteRange(
            DeleteRangeResponse::decode(bytes.as_slice())
                .context("the answer is not a DeleteRangeResponse")?,
        )),
        Err(status) => Err(status),
    };
    world.set_last(n, answer);
    Ok(())
}
