//! Wire compatibility: the bytes of a fully populated instance of every
//! message are frozen in an insta snapshot, so a changed field number, type
//! or label shows up as a snapshot diff; every instance must round-trip.

use prost::Message;
use regatta_proto::maintenance::v1 as maint;
use regatta_proto::mvcc::v1 as mvcc;
use regatta_proto::regatta::v1 as api;
use regatta_proto::replication::v1 as repl;

fn kv(n: u8) -> mvcc::KeyValue {
    mvcc::KeyValue {
        key: vec![b'k', n],
        create_revision: 100 + i64::from(n),
        mod_revision: 200 + i64::from(n),
        value: vec![b'v', n],
    }
}

fn header() -> api::ResponseHeader {
    api::ResponseHeader {
        shard_id: 10001,
        replica_id: 2,
        revision: 77,
        raft_term: 3,
        raft_leader_id: 1,
    }
}

fn compare() -> mvcc::Compare {
    mvcc::Compare {
        result: mvcc::compare::CompareResult::NotEqual as i32,
        target: mvcc::compare::CompareTarget::Value as i32,
        key: b"ck".to_vec(),
        target_union: Some(mvcc::compare::TargetUnion::Value(b"cv".to_vec())),
        range_end: b"cz".to_vec(),
    }
}

fn req_range() -> mvcc::request_op::Range {
    mvcc::request_op::Range {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        limit: 5,
        keys_only: true,
        count_only: true,
    }
}

fn req_put() -> mvcc::request_op::Put {
    mvcc::request_op::Put {
        key: b"p".to_vec(),
        value: b"pv".to_vec(),
        prev_kv: true,
    }
}

fn req_delete() -> mvcc::request_op::DeleteRange {
    mvcc::request_op::DeleteRange {
        key: b"d".to_vec(),
        range_end: b"e".to_vec(),
        prev_kv: true,
        prev_kv_v0_5: true,
        count: true,
    }
}

fn request_ops() -> Vec<mvcc::RequestOp> {
    use mvcc::request_op::Request;
    vec![
        mvcc::RequestOp {
            request: Some(Request::RequestRange(req_range())),
        },
        mvcc::RequestOp {
            request: Some(Request::RequestPut(req_put())),
        },
        mvcc::RequestOp {
            request: Some(Request::RequestDeleteRange(req_delete())),
        },
    ]
}

fn resp_range() -> mvcc::response_op::Range {
    mvcc::response_op::Range {
        kvs: vec![kv(1), kv(2)],
        more: true,
        count: 2,
    }
}

fn resp_put() -> mvcc::response_op::Put {
    mvcc::response_op::Put {
        prev_kv: Some(kv(3)),
    }
}

fn resp_delete() -> mvcc::response_op::DeleteRange {
    mvcc::response_op::DeleteRange {
        deleted: 1,
        prev_kvs: vec![kv(4)],
    }
}

fn response_ops() -> Vec<mvcc::ResponseOp> {
    use mvcc::response_op::Response;
    vec![
        mvcc::ResponseOp {
            response: Some(Response::ResponseRange(resp_range())),
        },
        mvcc::ResponseOp {
            response: Some(Response::ResponsePut(resp_put())),
        },
        mvcc::ResponseOp {
            response: Some(Response::ResponseDeleteRange(resp_delete())),
        },
    ]
}

fn txn() -> mvcc::Txn {
    mvcc::Txn {
        compare: vec![compare()],
        success: request_ops(),
        failure: request_ops(),
    }
}

fn command() -> mvcc::Command {
    mvcc::Command {
        table: b"regatta-test".to_vec(),
        r#type: mvcc::command::CommandType::Txn as i32,
        kv: Some(kv(5)),
        leader_index: Some(4242),
        batch: vec![kv(6), kv(7)],
        txn: Some(txn()),
        range_end: Some(b"\0".to_vec()),
        prev_kvs: true,
        sequence: vec![mvcc::Command {
            table: b"regatta-test".to_vec(),
            r#type: mvcc::command::CommandType::Sequence as i32,
            kv: Some(kv(8)),
            ..mvcc::Command::default()
        }],
        count: true,
    }
}

fn snapshot_chunk() -> repl::SnapshotChunk {
    repl::SnapshotChunk {
        data: b"chunk".to_vec(),
        len: 5,
        index: 99,
    }
}

/// A `google.protobuf.Struct` of one string field (Tables and Cluster
/// configs).
fn config() -> prost_types::Struct {
    prost_types::Struct {
        fields: [(
            "api.address".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(
                    "127.0.0.1:8443".into(),
                )),
            },
        )]
        .into_iter()
        .collect(),
    }
}

fn table_status() -> api::TableStatus {
    api::TableStatus {
        log_size: 1024,
        db_size: 2048,
        leader: "2".into(),
        raft_index: 41,
        raft_term: 3,
        raft_applied_index: 40,
    }
}

/// Regatta 0.5's Tables and Cluster messages (regatta-0.5.md §2).
fn regatta_05_samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "regatta.v1.CreateTableRequest",
            api::CreateTableRequest {
                name: "t".into(),
                config: Some(config()),
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.CreateTableResponse",
            api::CreateTableResponse { id: "10001".into() }.encode_to_vec(),
        ),
        (
            "regatta.v1.DeleteTableRequest",
            api::DeleteTableRequest { name: "t".into() }.encode_to_vec(),
        ),
        (
            "regatta.v1.DeleteTableResponse",
            api::DeleteTableResponse {}.encode_to_vec(),
        ),
        (
            "regatta.v1.ListTablesRequest",
            api::ListTablesRequest {}.encode_to_vec(),
        ),
        (
            "regatta.v1.ListTablesResponse",
            api::ListTablesResponse {
                tables: vec![api::TableInfo {
                    name: "t".into(),
                    id: "10001".into(),
                    config: None,
                }],
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.TableInfo",
            api::TableInfo {
                name: "t".into(),
                id: "10001".into(),
                config: Some(config()),
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.MemberListRequest",
            api::MemberListRequest {}.encode_to_vec(),
        ),
        (
            "regatta.v1.MemberListResponse",
            api::MemberListResponse {
                cluster: "default".into(),
                members: vec![member()],
            }
            .encode_to_vec(),
        ),
        ("regatta.v1.Member", member().encode_to_vec()),
        (
            "regatta.v1.StatusRequest",
            api::StatusRequest { config: true }.encode_to_vec(),
        ),
        (
            "regatta.v1.StatusResponse",
            api::StatusResponse {
                id: "1".into(),
                version: "0.1.0".into(),
                info: "i".into(),
                tables: [("t".to_string(), table_status())].into_iter().collect(),
                config: Some(config()),
                errors: vec!["u: no leader".into()],
            }
            .encode_to_vec(),
        ),
        ("regatta.v1.TableStatus", table_status().encode_to_vec()),
    ]
}

fn member() -> api::Member {
    api::Member {
        id: "1".into(),
        name: "n1".into(),
        peer_ur_ls: vec!["127.0.0.1:5012".into()],
        client_ur_ls: vec!["http://127.0.0.1:8443".into()],
    }
}

fn replicate_command() -> repl::ReplicateCommand {
    repl::ReplicateCommand {
        leader_index: 4242,
        command: Some(command()),
    }
}

/// Every message, fully populated, by name; oneofs once per member.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("mvcc.v1.Command", command().encode_to_vec()),
        (
            "mvcc.v1.CommandResult",
            mvcc::CommandResult {
                responses: response_ops(),
                revision: 9,
            }
            .encode_to_vec(),
        ),
        ("mvcc.v1.KeyValue", kv(0).encode_to_vec()),
        ("mvcc.v1.Compare", compare().encode_to_vec()),
        ("mvcc.v1.RequestOp.Range", req_range().encode_to_vec()),
        ("mvcc.v1.RequestOp.Put", req_put().encode_to_vec()),
        (
            "mvcc.v1.RequestOp.DeleteRange",
            req_delete().encode_to_vec(),
        ),
        ("mvcc.v1.ResponseOp.Range", resp_range().encode_to_vec()),
        ("mvcc.v1.ResponseOp.Put", resp_put().encode_to_vec()),
        (
            "mvcc.v1.ResponseOp.DeleteRange",
            resp_delete().encode_to_vec(),
        ),
        ("mvcc.v1.Txn", txn().encode_to_vec()),
        ("regatta.v1.ResponseHeader", header().encode_to_vec()),
        (
            "regatta.v1.RangeRequest",
            api::RangeRequest {
                table: b"t".to_vec(),
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                limit: 10,
                linearizable: true,
                keys_only: true,
                count_only: true,
                min_mod_revision: 1,
                max_mod_revision: 2,
                min_create_revision: 3,
                max_create_revision: 4,
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.RangeResponse",
            api::RangeResponse {
                header: Some(header()),
                kvs: vec![kv(1)],
                more: true,
                count: 1,
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.PutRequest",
            api::PutRequest {
                table: b"t".to_vec(),
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                prev_kv: true,
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.PutResponse",
            api::PutResponse {
                header: Some(header()),
                prev_kv: Some(kv(2)),
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.DeleteRangeRequest",
            api::DeleteRangeRequest {
                table: b"t".to_vec(),
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                prev_kv: true,
                count: true,
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.DeleteRangeResponse",
            api::DeleteRangeResponse {
                header: Some(header()),
                deleted: 1,
                prev_kvs: vec![kv(3)],
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.TxnRequest",
            api::TxnRequest {
                table: b"t".to_vec(),
                compare: vec![compare()],
                success: request_ops(),
                failure: request_ops(),
            }
            .encode_to_vec(),
        ),
        (
            "regatta.v1.TxnResponse",
            api::TxnResponse {
                header: Some(header()),
                succeeded: true,
                responses: response_ops(),
            }
            .encode_to_vec(),
        ),
        (
            "replication.v1.MetadataRequest",
            repl::MetadataRequest {}.encode_to_vec(),
        ),
        (
            "replication.v1.MetadataResponse",
            repl::MetadataResponse {
                tables: vec![repl::Table {
                    name: "t".into(),
                    r#type: repl::table::Type::Local as i32,
                    // Our extension; unset, as Regatta leaders send it.
                    shard_id: 0,
                }],
            }
            .encode_to_vec(),
        ),
        (
            "replication.v1.Table",
            repl::Table {
                name: "regatta-test".into(),
                r#type: repl::table::Type::Local as i32,
                shard_id: 0,
            }
            .encode_to_vec(),
        ),
        (
            "replication.v1.SnapshotRequest",
            repl::SnapshotRequest {
                table: b"t".to_vec(),
            }
            .encode_to_vec(),
        ),
        (
            "replication.v1.SnapshotChunk",
            snapshot_chunk().encode_to_vec(),
        ),
        (
            "replication.v1.ReplicateRequest",
            repl::ReplicateRequest {
                table: b"t".to_vec(),
                leader_index: 7,
            }
            .encode_to_vec(),
        ),
        (
            "replication.v1.ReplicateCommand",
            replicate_command().encode_to_vec(),
        ),
        (
            "replication.v1.ReplicateCommandsResponse",
            repl::ReplicateCommandsResponse {
                commands: vec![replicate_command()],
            }
            .encode_to_vec(),
        ),
        (
            "replication.v1.ReplicateErrResponse",
            repl::ReplicateErrResponse {
                error: repl::ReplicateError::LeaderBehind as i32,
            }
            .encode_to_vec(),
        ),
        (
            "maintenance.v1.BackupRequest",
            maint::BackupRequest {
                table: b"t".to_vec(),
            }
            .encode_to_vec(),
        ),
        (
            "maintenance.v1.RestoreInfo",
            maint::RestoreInfo {
                table: b"t".to_vec(),
            }
            .encode_to_vec(),
        ),
        (
            "maintenance.v1.RestoreResponse",
            maint::RestoreResponse {}.encode_to_vec(),
        ),
        (
            "maintenance.v1.ResetRequest",
            maint::ResetRequest {
                table: b"t".to_vec(),
                reset_all: true,
            }
            .encode_to_vec(),
        ),
        (
            "maintenance.v1.ResetResponse",
            maint::ResetResponse {}.encode_to_vec(),
        ),
    ];
    use repl::replicate_response::Response;
    out.push((
        "replication.v1.ReplicateResponse/commands_response",
        repl::ReplicateResponse {
            response: Some(Response::CommandsResponse(
                repl::ReplicateCommandsResponse {
                    commands: vec![replicate_command()],
                },
            )),
            leader_index: 8,
        }
        .encode_to_vec(),
    ));
    out.push((
        "replication.v1.ReplicateResponse/error_response",
        repl::ReplicateResponse {
            response: Some(Response::ErrorResponse(repl::ReplicateErrResponse {
                error: repl::ReplicateError::UseSnapshot as i32,
            })),
            leader_index: 8,
        }
        .encode_to_vec(),
    ));
    use maint::restore_message::Data;
    out.push((
        "maintenance.v1.RestoreMessage/info",
        maint::RestoreMessage {
            data: Some(Data::Info(maint::RestoreInfo {
                table: b"t".to_vec(),
            })),
        }
        .encode_to_vec(),
    ));
    out.push((
        "maintenance.v1.RestoreMessage/chunk",
        maint::RestoreMessage {
            data: Some(Data::Chunk(snapshot_chunk())),
        }
        .encode_to_vec(),
    ));
    for (i, op) in request_ops().into_iter().enumerate() {
        out.push((
            [
                "mvcc.v1.RequestOp/range",
                "mvcc.v1.RequestOp/put",
                "mvcc.v1.RequestOp/delete_range",
            ][i],
            op.encode_to_vec(),
        ));
    }
    for (i, op) in response_ops().into_iter().enumerate() {
        out.push((
            [
                "mvcc.v1.ResponseOp/range",
                "mvcc.v1.ResponseOp/put",
                "mvcc.v1.ResponseOp/delete_range",
            ][i],
            op.encode_to_vec(),
        ));
    }
    out.extend(regatta_05_samples());
    out
}

#[test]
fn wire_bytes_of_every_message_are_frozen() {
    let listing: String = samples()
        .iter()
        .map(|(name, bytes)| format!("{name}\n  {}\n", hex::encode(bytes)))
        .collect();
    insta::assert_snapshot!("wire_bytes", listing);
}

/// Decodes `bytes` as `M` and encodes it again: the bytes must not change.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    let decoded = M::decode(bytes).expect("decodes");
    assert_eq!(decoded.encode_to_vec(), bytes, "{decoded:?}");
}

#[test]
fn every_message_round_trips() {
    for (name, bytes) in samples() {
        let base = name.split('/').next().unwrap_or(name);
        match base {
            "mvcc.v1.Command" => round_trip::<mvcc::Command>(&bytes),
            "mvcc.v1.CommandResult" => round_trip::<mvcc::CommandResult>(&bytes),
            "mvcc.v1.KeyValue" => round_trip::<mvcc::KeyValue>(&bytes),
            "mvcc.v1.Compare" => round_trip::<mvcc::Compare>(&bytes),
            "mvcc.v1.RequestOp" => round_trip::<mvcc::RequestOp>(&bytes),
            "mvcc.v1.RequestOp.Range" => round_trip::<mvcc::request_op::Range>(&bytes),
            "mvcc.v1.RequestOp.Put" => round_trip::<mvcc::request_op::Put>(&bytes),
            "mvcc.v1.RequestOp.DeleteRange" => round_trip::<mvcc::request_op::DeleteRange>(&bytes),
            "mvcc.v1.ResponseOp" => round_trip::<mvcc::ResponseOp>(&bytes),
            "mvcc.v1.ResponseOp.Range" => round_trip::<mvcc::response_op::Range>(&bytes),
            "mvcc.v1.ResponseOp.Put" => round_trip::<mvcc::response_op::Put>(&bytes),
            "mvcc.v1.ResponseOp.DeleteRange" => {
                round_trip::<mvcc::response_op::DeleteRange>(&bytes)
            }
            "mvcc.v1.Txn" => round_trip::<mvcc::Txn>(&bytes),
            "regatta.v1.ResponseHeader" => round_trip::<api::ResponseHeader>(&bytes),
            "regatta.v1.RangeRequest" => round_trip::<api::RangeRequest>(&bytes),
            "regatta.v1.RangeResponse" => round_trip::<api::RangeResponse>(&bytes),
            "regatta.v1.PutRequest" => round_trip::<api::PutRequest>(&bytes),
            "regatta.v1.PutResponse" => round_trip::<api::PutResponse>(&bytes),
            "regatta.v1.DeleteRangeRequest" => round_trip::<api::DeleteRangeRequest>(&bytes),
            "regatta.v1.DeleteRangeResponse" => round_trip::<api::DeleteRangeResponse>(&bytes),
            "regatta.v1.TxnRequest" => round_trip::<api::TxnRequest>(&bytes),
            "regatta.v1.TxnResponse" => round_trip::<api::TxnResponse>(&bytes),
            "regatta.v1.CreateTableRequest" => round_trip::<api::CreateTableRequest>(&bytes),
            "regatta.v1.CreateTableResponse" => round_trip::<api::CreateTableResponse>(&bytes),
            "regatta.v1.DeleteTableRequest" => round_trip::<api::DeleteTableRequest>(&bytes),
            "regatta.v1.DeleteTableResponse" => round_trip::<api::DeleteTableResponse>(&bytes),
            "regatta.v1.ListTablesRequest" => round_trip::<api::ListTablesRequest>(&bytes),
            "regatta.v1.ListTablesResponse" => round_trip::<api::ListTablesResponse>(&bytes),
            "regatta.v1.TableInfo" => round_trip::<api::TableInfo>(&bytes),
            "regatta.v1.MemberListRequest" => round_trip::<api::MemberListRequest>(&bytes),
            "regatta.v1.MemberListResponse" => round_trip::<api::MemberListResponse>(&bytes),
            "regatta.v1.Member" => round_trip::<api::Member>(&bytes),
            "regatta.v1.StatusRequest" => round_trip::<api::StatusRequest>(&bytes),
            "regatta.v1.StatusResponse" => round_trip::<api::StatusResponse>(&bytes),
            "regatta.v1.TableStatus" => round_trip::<api::TableStatus>(&bytes),
            "replication.v1.MetadataRequest" => round_trip::<repl::MetadataRequest>(&bytes),
            "replication.v1.MetadataResponse" => round_trip::<repl::MetadataResponse>(&bytes),
            "replication.v1.Table" => round_trip::<repl::Table>(&bytes),
            "replication.v1.SnapshotRequest" => round_trip::<repl::SnapshotRequest>(&bytes),
            "replication.v1.SnapshotChunk" => round_trip::<repl::SnapshotChunk>(&bytes),
            "replication.v1.ReplicateRequest" => round_trip::<repl::ReplicateRequest>(&bytes),
            "replication.v1.ReplicateCommand" => round_trip::<repl::ReplicateCommand>(&bytes),
            "replication.v1.ReplicateCommandsResponse" => {
                round_trip::<repl::ReplicateCommandsResponse>(&bytes)
            }
            "replication.v1.ReplicateErrResponse" => {
                round_trip::<repl::ReplicateErrResponse>(&bytes)
            }
            "replication.v1.ReplicateResponse" => round_trip::<repl::ReplicateResponse>(&bytes),
            "maintenance.v1.BackupRequest" => round_trip::<maint::BackupRequest>(&bytes),
            "maintenance.v1.RestoreInfo" => round_trip::<maint::RestoreInfo>(&bytes),
            "maintenance.v1.RestoreMessage" => round_trip::<maint::RestoreMessage>(&bytes),
            "maintenance.v1.RestoreResponse" => round_trip::<maint::RestoreResponse>(&bytes),
            "maintenance.v1.ResetRequest" => round_trip::<maint::ResetRequest>(&bytes),
            "maintenance.v1.ResetResponse" => round_trip::<maint::ResetResponse>(&bytes),
            other => panic!("no round trip for {other}"),
        }
    }
}

#[test]
fn samples_cover_every_message_of_the_descriptor() {
    let set = regatta_proto_descriptor();
    let sampled: std::collections::BTreeSet<String> = samples()
        .iter()
        .map(|(name, _)| name.split('/').next().unwrap_or(name).to_string())
        .collect();
    let mut missing = Vec::new();
    // google.protobuf's own messages (Struct) are not ours to freeze.
    for file in set.file.iter().filter(|f| f.package() != "google.protobuf") {
        let package = file.package();
        for message in &file.message_type {
            let name = format!("{package}.{}", message.name());
            if !sampled.contains(&name) {
                missing.push(name.clone());
            }
            // Map entries are not messages of their own on the wire.
            let maps = |nested: &&prost_types::DescriptorProto| {
                !nested.options.as_ref().is_some_and(|o| o.map_entry())
            };
            for nested in message.nested_type.iter().filter(maps) {
                let nested_name = format!("{name}.{}", nested.name());
                if !sampled.contains(&nested_name) {
                    missing.push(nested_name);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "messages without a wire sample: {missing:?}"
    );
}

fn regatta_proto_descriptor() -> prost_types::FileDescriptorSet {
    prost_types::FileDescriptorSet::decode(regatta_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes")
}
