//! The encoded descriptor set (what gRPC reflection serves) describes exactly
//! the services of the spec, and the field numbers, oneofs and labels that
//! `docs/spec/wire-numbers.md` fixes.

use prost::Message;
use prost_types::field_descriptor_proto::Label;
use prost_types::{DescriptorProto, FileDescriptorSet};

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(regatta_proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn message(full_name: &str) -> DescriptorProto {
    let set = descriptor_set();
    for file in &set.file {
        for message in &file.message_type {
            let name = format!("{}.{}", file.package(), message.name());
            if name == full_name {
                return message.clone();
            }
            for nested in &message.nested_type {
                if format!("{name}.{}", nested.name()) == full_name {
                    return nested.clone();
                }
            }
        }
    }
    panic!("message {full_name} not in the descriptor set");
}

/// (field number, oneof name if any, proto3 optional)
fn field(full_name: &str, field: &str) -> (i32, Option<String>, bool) {
    let message = message(full_name);
    let found = message
        .field
        .iter()
        .find(|f| f.name() == field)
        .unwrap_or_else(|| panic!("{full_name} has no field {field}"));
    let synthetic_or_real_oneof = found
        .oneof_index
        .map(|i| message.oneof_decl[i as usize].name().to_string());
    let optional = found.proto3_optional.unwrap_or(false);
    let oneof = if optional {
        None
    } else {
        synthetic_or_real_oneof
    };
    (found.number(), oneof, optional)
}

#[test]
fn descriptor_holds_the_seven_services_and_their_methods() {
    let set = descriptor_set();
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                methods.push(format!(
                    "{}.{}/{} client_streaming={} server_streaming={}",
                    file.package(),
                    service.name(),
                    method.name(),
                    method.client_streaming(),
                    method.server_streaming()
                ));
            }
        }
    }
    methods.sort();
    assert_eq!(
        methods,
        vec![
            "maintenance.v1.Maintenance/Backup client_streaming=false server_streaming=true",
            "maintenance.v1.Maintenance/Reset client_streaming=false server_streaming=false",
            "maintenance.v1.Maintenance/Restore client_streaming=true server_streaming=false",
            // Regatta 0.5 (docs/spec/regatta-0.5.md §2).
            "regatta.v1.Cluster/MemberList client_streaming=false server_streaming=false",
            "regatta.v1.Cluster/Status client_streaming=false server_streaming=false",
            "regatta.v1.KV/DeleteRange client_streaming=false server_streaming=false",
            // Regatta 0.5 (docs/spec/regatta-0.5.md §2).
            "regatta.v1.KV/IterateRange client_streaming=false server_streaming=true",
            "regatta.v1.KV/Put client_streaming=false server_streaming=false",
            "regatta.v1.KV/Range client_streaming=false server_streaming=false",
            "regatta.v1.KV/Txn client_streaming=false server_streaming=false",
            // Regatta 0.5 (docs/spec/regatta-0.5.md §2).
            "regatta.v1.Tables/Create client_streaming=false server_streaming=false",
            "regatta.v1.Tables/Delete client_streaming=false server_streaming=false",
            "regatta.v1.Tables/List client_streaming=false server_streaming=false",
            "replication.v1.Log/Replicate client_streaming=false server_streaming=true",
            "replication.v1.Metadata/Get client_streaming=false server_streaming=false",
            "replication.v1.Snapshot/Stream client_streaming=false server_streaming=true",
        ]
    );
}

#[test]
fn packages_and_imports_match_the_spec() {
    let set = descriptor_set();
    let files: Vec<(String, String, Vec<String>)> = set
        .file
        .iter()
        .map(|f| {
            (
                f.name().to_string(),
                f.package().to_string(),
                f.dependency.clone(),
            )
        })
        .collect();
    assert_eq!(
        files,
        vec![
            ("mvcc.proto".into(), "mvcc.v1".into(), vec![]),
            // Regatta 0.5's regatta.proto imports Struct (Tables, Cluster).
            (
                "google/protobuf/struct.proto".into(),
                "google.protobuf".into(),
                vec![]
            ),
            (
                "regatta.proto".into(),
                "regatta.v1".into(),
                vec!["mvcc.proto".into(), "google/protobuf/struct.proto".into()]
            ),
            (
                "replication.proto".into(),
                "replication.v1".into(),
                vec!["mvcc.proto".into()]
            ),
            (
                "maintenance.proto".into(),
                "maintenance.v1".into(),
                vec!["replication.proto".into()]
            ),
        ]
    );
    for file in &set.file {
        assert_eq!(file.syntax(), "proto3", "{}", file.name());
    }
}

#[test]
fn numbers_that_are_not_the_plain_position() {
    assert_eq!(field("mvcc.v1.Command", "leader_index"), (5, None, true));
    assert_eq!(field("mvcc.v1.Command", "batch"), (6, None, false));
    assert_eq!(field("mvcc.v1.Command", "txn"), (7, None, true));
    assert_eq!(field("mvcc.v1.Command", "range_end"), (8, None, true));
    assert_eq!(field("mvcc.v1.Command", "prev_kvs"), (9, None, false));
    let reserved: Vec<(i32, i32)> = message("mvcc.v1.Command")
        .reserved_range
        .iter()
        .map(|r| (r.start(), r.end()))
        .collect();
    assert_eq!(reserved, vec![(4, 5)], "reserved 4 (end is exclusive)");
    assert_eq!(
        field("mvcc.v1.Compare", "value"),
        (4, Some("target_union".into()), false)
    );
    assert_eq!(field("mvcc.v1.Compare", "range_end"), (64, None, false));
    assert_eq!(field("regatta.v1.RangeResponse", "kvs"), (3, None, false));
    assert_eq!(field("regatta.v1.RangeResponse", "more"), (4, None, false));
    assert_eq!(field("regatta.v1.RangeResponse", "count"), (5, None, false));
    assert_eq!(
        field("replication.v1.ReplicateResponse", "leader_index"),
        (8, None, false)
    );
}

#[test]
fn oneofs_have_the_spec_members() {
    let cases = [
        (
            "mvcc.v1.RequestOp",
            "request",
            vec![
                ("request_range", 1),
                ("request_put", 2),
                ("request_delete_range", 3),
            ],
        ),
        (
            "mvcc.v1.ResponseOp",
            "response",
            vec![
                ("response_range", 1),
                ("response_put", 2),
                ("response_delete_range", 3),
            ],
        ),
        ("mvcc.v1.Compare", "target_union", vec![("value", 4)]),
        (
            "replication.v1.ReplicateResponse",
            "response",
            vec![("commands_response", 1), ("error_response", 2)],
        ),
        (
            "maintenance.v1.RestoreMessage",
            "data",
            vec![("info", 1), ("chunk", 2)],
        ),
    ];
    for (message_name, oneof, members) in cases {
        let message = message(message_name);
        let index = message
            .oneof_decl
            .iter()
            .position(|o| o.name() == oneof)
            .unwrap_or_else(|| panic!("{message_name} has no oneof {oneof}"))
            as i32;
        let actual: Vec<(String, i32)> = message
            .field
            .iter()
            .filter(|f| f.oneof_index == Some(index))
            .map(|f| (f.name().to_string(), f.number()))
            .collect();
        let expected: Vec<(String, i32)> =
            members.iter().map(|(n, i)| (n.to_string(), *i)).collect();
        assert_eq!(actual, expected, "{message_name}.{oneof}");
    }
}

#[test]
fn only_the_spec_optional_fields_have_explicit_presence() {
    let set = descriptor_set();
    let mut optional = Vec::new();
    for file in &set.file {
        let mut stack: Vec<(String, &DescriptorProto)> = file
            .message_type
            .iter()
            .map(|m| (format!("{}.{}", file.package(), m.name()), m))
            .collect();
        while let Some((name, message)) = stack.pop() {
            for f in &message.field {
                if f.proto3_optional.unwrap_or(false) {
                    optional.push(format!("{name}.{}", f.name()));
                }
                if f.label() == Label::Required {
                    panic!("proto3 has no required fields: {name}.{}", f.name());
                }
            }
            stack.extend(
                message
                    .nested_type
                    .iter()
                    .map(|n| (format!("{name}.{}", n.name()), n)),
            );
        }
    }
    optional.sort();
    assert_eq!(
        optional,
        vec![
            "mvcc.v1.Command.leader_index",
            "mvcc.v1.Command.range_end",
            "mvcc.v1.Command.txn"
        ]
    );
}

#[test]
fn nested_enums_live_in_their_messages() {
    let names = |m: &str| -> Vec<String> {
        message(m)
            .enum_type
            .iter()
            .map(|e| e.name().to_string())
            .collect()
    };
    assert_eq!(names("mvcc.v1.Command"), vec!["CommandType"]);
    assert_eq!(
        names("mvcc.v1.Compare"),
        vec!["CompareResult", "CompareTarget"]
    );
    assert_eq!(names("replication.v1.Table"), vec!["Type"]);
    let set = descriptor_set();
    let top: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| {
            f.enum_type
                .iter()
                .map(move |e| format!("{}.{}", f.package(), e.name()))
        })
        .collect();
    assert_eq!(
        top,
        vec!["google.protobuf.NullValue", "replication.v1.ReplicateError"]
    );
}
