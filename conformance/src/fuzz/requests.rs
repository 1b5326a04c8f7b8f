//! Every method the fuzzer calls, where it is served, and a generator of
//! valid, realistic requests for each (prost encodings of `regatta-proto`
//! messages), which the mutations then start from.

use std::io::Write;

use prost::Message;
use rand::rngs::StdRng;
use rand::Rng;
use regatta_proto::maintenance::v1::{BackupRequest, ResetRequest, RestoreMessage};
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::compare::{CompareResult, CompareTarget, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::{Command, Compare, KeyValue, RequestOp};
use regatta_proto::regatta::v1 as api;
use regatta_proto::replication::v1 as replication;

use super::proto::{self, decodes, Msg};

/// The table written before the run and read back after it. No generated
/// request may name it (see [`super::mutate::plan`]).
pub const DATA_TABLE: &str = "fuzz-data";
/// The table mutated requests aim at.
pub const TARGET_TABLE: &str = "fuzz";
/// Tables the Tables API and Restore create and delete; anything else the
/// fuzz creates is removed at the next checkpoint.
pub const TABLE_POOL: [&str; 4] = ["fuzz-t0", "fuzz-t1", "fuzz-t2", "fuzz-t3"];

/// Which listener of the node serves a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    Api,
    Replication,
    Maintenance,
}

impl Listener {
    pub fn name(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Replication => "replication",
            Listener::Maintenance => "maintenance",
        }
    }
}

/// Whether requests and answers are single messages or streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

/// What a method takes: its generator and its request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Range,
    IterateRange,
    Put,
    DeleteRange,
    Txn,
    TablesCreate,
    TablesDelete,
    TablesList,
    MemberList,
    Status,
    HealthCheck,
    HealthWatch,
    Reflection,
    MetadataGet,
    LogReplicate,
    SnapshotStream,
    Backup,
    Restore,
    Reset,
}

#[derive(Debug)]
pub struct Method {
    pub listener: Listener,
    pub path: &'static str,
    pub shape: Shape,
    pub kind: Kind,
    /// Relative frequency. Calls that create tables or rewrite one (Create,
    /// Restore) cost the node a Raft group each and come less often.
    pub weight: u32,
}

impl Method {
    /// `listener path`, as the summary and the findings name it.
    pub fn label(&self) -> String {
        format!("{} {}", self.listener.name(), self.path)
    }
}

const fn method(
    listener: Listener,
    path: &'static str,
    shape: Shape,
    kind: Kind,
    weight: u32,
) -> Method {
    Method {
        listener,
        path,
        shape,
        kind,
        weight,
    }
}

use Kind as K;
use Listener::{Api, Maintenance, Replication};
use Shape::{Bidi, ClientStream, ServerStream, Unary};

/// Every method of every listener (`server/src/cli/leader.rs`,
/// `listeners.rs`): KV, Tables, Cluster, health and reflection on the API
/// port; Metadata, Log, Snapshot, KV and reflection on the replication
/// port; Maintenance and Metadata on the maintenance port.
pub static METHODS: &[Method] = &[
    method(Api, "/regatta.v1.KV/Range", Unary, K::Range, 12),
    method(
        Api,
        "/regatta.v1.KV/IterateRange",
        ServerStream,
        K::IterateRange,
        6,
    ),
    method(Api, "/regatta.v1.KV/Put", Unary, K::Put, 12),
    method(Api, "/regatta.v1.KV/DeleteRange", Unary, K::DeleteRange, 8),
    method(Api, "/regatta.v1.KV/Txn", Unary, K::Txn, 12),
    method(Api, "/regatta.v1.Tables/Create", Unary, K::TablesCreate, 2),
    method(Api, "/regatta.v1.Tables/Delete", Unary, K::TablesDelete, 2),
    method(Api, "/regatta.v1.Tables/List", Unary, K::TablesList, 3),
    method(
        Api,
        "/regatta.v1.Cluster/MemberList",
        Unary,
        K::MemberList,
        3,
    ),
    method(Api, "/regatta.v1.Cluster/Status", Unary, K::Status, 3),
    method(
        Api,
        "/grpc.health.v1.Health/Check",
        Unary,
        K::HealthCheck,
        3,
    ),
    method(
        Api,
        "/grpc.health.v1.Health/Watch",
        ServerStream,
        K::HealthWatch,
        1,
    ),
    method(
        Api,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Bidi,
        K::Reflection,
        3,
    ),
    method(
        Api,
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Bidi,
        K::Reflection,
        2,
    ),
    method(
        Replication,
        "/replication.v1.Metadata/Get",
        Unary,
        K::MetadataGet,
        3,
    ),
    method(
        Replication,
        "/replication.v1.Log/Replicate",
        ServerStream,
        K::LogReplicate,
        4,
    ),
    method(
        Replication,
        "/replication.v1.Snapshot/Stream",
        ServerStream,
        K::SnapshotStream,
        3,
    ),
    method(Replication, "/regatta.v1.KV/Range", Unary, K::Range, 3),
    method(
        Replication,
        "/regatta.v1.KV/IterateRange",
        ServerStream,
        K::IterateRange,
        2,
    ),
    method(Replication, "/regatta.v1.KV/Put", Unary, K::Put, 3),
    method(
        Replication,
        "/regatta.v1.KV/DeleteRange",
        Unary,
        K::DeleteRange,
        2,
    ),
    method(Replication, "/regatta.v1.KV/Txn", Unary, K::Txn, 3),
    method(
        Replication,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Bidi,
        K::Reflection,
        1,
    ),
    method(
        Maintenance,
        "/maintenance.v1.Maintenance/Backup",
        ServerStream,
        K::Backup,
        3,
    ),
    method(
        Maintenance,
        "/maintenance.v1.Maintenance/Restore",
        ClientStream,
        K::Restore,
        3,
    ),
    method(
        Maintenance,
        "/maintenance.v1.Maintenance/Reset",
        Unary,
        K::Reset,
        2,
    ),
    method(
        Maintenance,
        "/replication.v1.Metadata/Get",
        Unary,
        K::MetadataGet,
        2,
    ),
];

/// A method drawn by weight.
pub fn pick(rng: &mut StdRng) -> &'static Method {
    let total: u32 = METHODS.iter().map(|m| m.weight).sum();
    let mut ticket = rng.random_range(0..total);
    for method in METHODS {
        if ticket < method.weight {
            return method;
        }
        ticket -= method.weight;
    }
    &METHODS[0]
}

impl Kind {
    /// Whether one message decodes as this method's request, as the server's
    /// generated code decodes it.
    pub fn decode_request(self, bytes: &[u8]) -> Result<(), String> {
        match self {
            K::Range | K::IterateRange => decodes::<api::RangeRequest>(bytes),
            K::Put => decodes::<api::PutRequest>(bytes),
            K::DeleteRange => decodes::<api::DeleteRangeRequest>(bytes),
            K::Txn => decodes::<api::TxnRequest>(bytes),
            K::TablesCreate => decodes::<api::CreateTableRequest>(bytes),
            K::TablesDelete => decodes::<api::DeleteTableRequest>(bytes),
            K::TablesList => decodes::<api::ListTablesRequest>(bytes),
            K::MemberList => decodes::<api::MemberListRequest>(bytes),
            K::Status => decodes::<api::StatusRequest>(bytes),
            K::HealthCheck | K::HealthWatch => decodes::<proto::HealthCheckRequest>(bytes),
            K::Reflection => decodes::<proto::ServerReflectionRequest>(bytes),
            K::MetadataGet => decodes::<replication::MetadataRequest>(bytes),
            K::LogReplicate => decodes::<replication::ReplicateRequest>(bytes),
            K::SnapshotStream => decodes::<replication::SnapshotRequest>(bytes),
            K::Backup => decodes::<BackupRequest>(bytes),
            K::Restore => decodes::<RestoreMessage>(bytes),
            K::Reset => decodes::<ResetRequest>(bytes),
        }
    }

    /// Whether one answer message decodes as this method's response.
    pub fn decode_response(self, bytes: &[u8]) -> Result<(), String> {
        use regatta_proto::maintenance::v1::{ResetResponse, RestoreResponse};
        match self {
            K::Range | K::IterateRange => decodes::<api::RangeResponse>(bytes),
            K::Put => decodes::<api::PutResponse>(bytes),
            K::DeleteRange => decodes::<api::DeleteRangeResponse>(bytes),
            K::Txn => decodes::<api::TxnResponse>(bytes),
            K::TablesCreate => decodes::<api::CreateTableResponse>(bytes),
            K::TablesDelete => decodes::<api::DeleteTableResponse>(bytes),
            K::TablesList => decodes::<api::ListTablesResponse>(bytes),
            K::MemberList => decodes::<api::MemberListResponse>(bytes),
            K::Status => decodes::<api::StatusResponse>(bytes),
            K::HealthCheck | K::HealthWatch => decodes::<proto::HealthCheckResponse>(bytes),
            K::Reflection => decodes::<proto::ServerReflectionResponse>(bytes),
            K::MetadataGet => decodes::<replication::MetadataResponse>(bytes),
            K::LogReplicate => decodes::<replication::ReplicateResponse>(bytes),
            K::SnapshotStream | K::Backup => decodes::<replication::SnapshotChunk>(bytes),
            K::Restore => decodes::<RestoreResponse>(bytes),
            K::Reset => decodes::<ResetResponse>(bytes),
        }
    }

    /// Whether the method's request has `string` fields (prost refuses
    /// invalid UTF-8 in them while decoding).
    pub fn has_strings(self) -> bool {
        matches!(
            self,
            K::TablesCreate | K::TablesDelete | K::HealthCheck | K::HealthWatch | K::Reflection
        )
    }
}

/// Valid request messages for `kind`: one for unary and server-streaming
/// calls, several for Restore and reflection.
pub fn base(kind: Kind, rng: &mut StdRng) -> Vec<Vec<u8>> {
    match kind {
        K::Range | K::IterateRange => vec![range(rng).encode_to_vec()],
        K::Put => vec![put(rng).encode_to_vec()],
        K::DeleteRange => vec![delete_range(rng).encode_to_vec()],
        K::Txn => vec![txn(rng).encode_to_vec()],
        K::TablesCreate => vec![tables_create(rng)],
        K::TablesDelete => vec![api::DeleteTableRequest {
            name: pool_name(rng),
        }
        .encode_to_vec()],
        K::TablesList => vec![api::ListTablesRequest {}.encode_to_vec()],
        K::MemberList => vec![api::MemberListRequest {}.encode_to_vec()],
        K::Status => vec![api::StatusRequest {
            config: rng.random_bool(0.5),
        }
        .encode_to_vec()],
        K::HealthCheck | K::HealthWatch => vec![proto::HealthCheckRequest {
            service: health_service(rng),
        }
        .encode_to_vec()],
        K::Reflection => (0..rng.random_range(1..=3))
            .map(|_| reflection(rng).encode_to_vec())
            .collect(),
        K::MetadataGet => vec![replication::MetadataRequest {}.encode_to_vec()],
        K::LogReplicate => vec![replication::ReplicateRequest {
            table: table(rng),
            leader_index: *pick_of(rng, &[0, 1, 1, 2, 5, 100, 1 << 40, u64::MAX]),
        }
        .encode_to_vec()],
        K::SnapshotStream => {
            vec![replication::SnapshotRequest { table: table(rng) }.encode_to_vec()]
        }
        K::Backup => vec![BackupRequest { table: table(rng) }.encode_to_vec()],
        K::Restore => restore(rng),
        K::Reset => vec![ResetRequest {
            table: table(rng),
            reset_all: rng.random_bool(0.3),
        }
        .encode_to_vec()],
    }
}

fn pick_of<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Random bytes of a length in `lengths`.
pub fn random_bytes(rng: &mut StdRng, lengths: std::ops::Range<usize>) -> Vec<u8> {
    let mut bytes = vec![0u8; rng.random_range(lengths)];
    rng.fill(&mut bytes[..]);
    bytes
}

/// A table for a KV or replication request: mostly the target table, at
/// times a missing, empty or odd one. Never [`DATA_TABLE`].
fn table(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..20) {
        0..=14 => TARGET_TABLE.as_bytes().to_vec(),
        15 => Vec::new(),
        16 => pick_of(rng, &TABLE_POOL).as_bytes().to_vec(),
        17 => b"fuzz-missing".to_vec(),
        18 => random_bytes(rng, 1..12),
        _ => vec![b'f'; rng.random_range(1000..1100)],
    }
}

/// A key: mostly one of 256 small keys, so that reads find writes.
fn key(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..20) {
        0..=15 => format!("k{:03}", rng.random_range(0..256)).into_bytes(),
        16 => Vec::new(),
        17 => vec![0],
        18 => random_bytes(rng, 1..40),
        _ => vec![b'x'; *pick_of(rng, &[1023, 1024, 1025, 4096])],
    }
}

/// A range end for `key`: none, its prefix end, everything, or random.
fn range_end(rng: &mut StdRng, key: &[u8]) -> Vec<u8> {
    match rng.random_range(0..8) {
        0..=2 => Vec::new(),
        3 => vec![0],
        4 => {
            let mut end = key.to_vec();
            match end.last_mut() {
                Some(last) if *last < 0xff => *last += 1,
                _ => end.push(0),
            }
            end
        }
        5 => format!("k{:03}", rng.random_range(0..256)).into_bytes(),
        6 => vec![0xff; rng.random_range(1..4)],
        _ => random_bytes(rng, 0..1100),
    }
}

fn value(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..1000) {
        0..=899 => random_bytes(rng, 0..64),
        900..=989 => random_bytes(rng, 64..2048),
        // Around the 2 MiB value limit, rarely (each goes through Raft).
        _ => vec![b'v'; 2 * 1024 * 1024 + rng.random_range(0..3) - 1],
    }
}

fn revision(rng: &mut StdRng) -> i64 {
    *pick_of(
        rng,
        &[0, 0, 0, 0, 1, 2, 50, 1 << 20, -1, i64::MAX, i64::MIN],
    )
}

fn range(rng: &mut StdRng) -> api::RangeRequest {
    let key = key(rng);
    api::RangeRequest {
        table: table(rng),
        range_end: range_end(rng, &key),
        key,
        limit: *pick_of(rng, &[0, 0, 1, 2, 10, 100, -1, i64::MAX, i64::MIN]),
        linearizable: rng.random_bool(0.5),
        keys_only: rng.random_bool(0.2),
        count_only: rng.random_bool(0.2),
        min_mod_revision: revision(rng),
        max_mod_revision: revision(rng),
        min_create_revision: revision(rng),
        max_create_revision: revision(rng),
    }
}

fn put(rng: &mut StdRng) -> api::PutRequest {
    api::PutRequest {
        table: table(rng),
        key: key(rng),
        value: value(rng),
        prev_kv: rng.random_bool(0.3),
    }
}

fn delete_range(rng: &mut StdRng) -> api::DeleteRangeRequest {
    let key = key(rng);
    api::DeleteRangeRequest {
        table: table(rng),
        range_end: match rng.random_range(0..10) {
            // Deleting everything empties the target table; keep it rare.
            0 => vec![0],
            1..=6 => Vec::new(),
            _ => range_end(rng, &key),
        },
        key,
        prev_kv: rng.random_bool(0.3),
        count: rng.random_bool(0.3),
    }
}

fn request_op(rng: &mut StdRng) -> RequestOp {
    let request = match rng.random_range(0..10) {
        0..=3 => {
            let key = key(rng);
            Some(Request::RequestRange(request_op::Range {
                range_end: range_end(rng, &key),
                key,
                limit: *pick_of(rng, &[0, 1, 5, -1, i64::MAX]),
                keys_only: rng.random_bool(0.2),
                count_only: rng.random_bool(0.2),
            }))
        }
        4..=6 => Some(Request::RequestPut(request_op::Put {
            key: key(rng),
            value: random_bytes(rng, 0..64),
            prev_kv: rng.random_bool(0.3),
        })),
        7..=8 => {
            let key = key(rng);
            Some(Request::RequestDeleteRange(request_op::DeleteRange {
                range_end: if rng.random_bool(0.8) {
                    Vec::new()
                } else {
                    range_end(rng, &key)
                },
                key,
                prev_kv: rng.random_bool(0.3),
                prev_kv_v0_5: rng.random_bool(0.3),
                count: rng.random_bool(0.3),
            }))
        }
        _ => None,
    };
    RequestOp { request }
}

fn compare(rng: &mut StdRng) -> Compare {
    let key = key(rng);
    Compare {
        result: *pick_of(
            rng,
            &[
                CompareResult::Equal as i32,
                CompareResult::Greater as i32,
                CompareResult::Less as i32,
                CompareResult::NotEqual as i32,
                7,
                -1,
            ],
        ),
        target: *pick_of(rng, &[CompareTarget::Value as i32, 0, 3]),
        range_end: if rng.random_bool(0.7) {
            Vec::new()
        } else {
            range_end(rng, &key)
        },
        key,
        target_union: rng
            .random_bool(0.8)
            .then(|| TargetUnion::Value(random_bytes(rng, 0..16))),
    }
}

/// A Txn; now and then a large one (thousands of ops and compares).
pub fn txn(rng: &mut StdRng) -> api::TxnRequest {
    let (ops, compares) = if rng.random_range(0..50) == 0 {
        (rng.random_range(100..3000), rng.random_range(0..2000))
    } else {
        (rng.random_range(0..5), rng.random_range(0..4))
    };
    api::TxnRequest {
        table: table(rng),
        compare: (0..compares).map(|_| compare(rng)).collect(),
        success: (0..ops).map(|_| request_op(rng)).collect(),
        failure: (0..rng.random_range(0..4))
            .map(|_| request_op(rng))
            .collect(),
    }
}

/// A table name for the Tables API: mostly the pool, at times odd text.
/// Never [`DATA_TABLE`].
fn pool_name(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0..=6 => pick_of(rng, &TABLE_POOL).to_string(),
        7 => String::new(),
        8 => "fuzz-missing".to_string(),
        _ => "é\u{0}/..\u{10ffff}".to_string(),
    }
}

/// `CreateTableRequest`, its `config` (a `google.protobuf.Struct`) empty,
/// flat or nested up to 150 levels deep (prost stops at 100).
fn tables_create(rng: &mut StdRng) -> Vec<u8> {
    let mut request = Msg::new().bytes(1, pool_name(rng).as_bytes());
    match rng.random_range(0..4) {
        0 => {}
        1 => request = request.msg(5, Msg::new()),
        2 => request = request.msg(5, flat_struct(rng)),
        _ => {
            let depth = *pick_of(rng, &[2, 10, 30, 49, 50, 51, 99, 100, 101, 150]);
            request = request.msg(5, nested_struct(depth));
        }
    }
    request.into_bytes()
}

/// A `Struct` of a few scalar fields (map entries: key = 1, Value = 2;
/// Value: null 1, number 2, string 3, bool 4, struct 5, list 6).
fn flat_struct(rng: &mut StdRng) -> Msg {
    let mut fields = Msg::new();
    for i in 0..rng.random_range(1..5) {
        let value = match rng.random_range(0..4) {
            0 => Msg::new().uint(1, 0),
            1 => Msg::new().double(2, rng.random::<f64>()),
            2 => Msg::new().bytes(3, b"text"),
            _ => Msg::new().uint(4, 1),
        };
        let entry = Msg::new()
            .bytes(1, format!("f{i}").as_bytes())
            .msg(2, value);
        fields = fields.msg(1, entry);
    }
    fields
}

/// A `Struct` holding a `Struct` ... `depth` levels deep, alternating
/// struct and list values.
fn nested_struct(depth: usize) -> Msg {
    let mut inner = Msg::new();
    for level in 0..depth {
        let value = if level % 2 == 0 {
            Msg::new().msg(5, inner)
        } else {
            Msg::new().msg(6, Msg::new().msg(1, Msg::new().msg(5, inner)))
        };
        inner = Msg::new().msg(1, Msg::new().bytes(1, b"n").msg(2, value));
    }
    inner
}

fn health_service(rng: &mut StdRng) -> String {
    pick_of(
        rng,
        &[
            "",
            "",
            "regatta.v1.KV",
            "fuzz",
            "fuzz-missing",
            "grpc.health.v1.Health",
        ],
    )
    .to_string()
}

fn reflection(rng: &mut StdRng) -> proto::ServerReflectionRequest {
    use proto::ReflectionQuery as Q;
    let query = match rng.random_range(0..8) {
        0 | 1 => Q::ListServices(String::new()),
        2 => Q::FileContainingSymbol(
            pick_of(
                rng,
                &[
                    "regatta.v1.KV",
                    "regatta.v1.RangeRequest",
                    "mvcc.v1.Command",
                    "nope.Nope",
                ],
            )
            .to_string(),
        ),
        3 => Q::FileByFilename(
            pick_of(
                rng,
                &[
                    "regatta.proto",
                    "mvcc.proto",
                    "google/protobuf/struct.proto",
                    "x",
                ],
            )
            .to_string(),
        ),
        4 => Q::AllExtensionNumbersOfType("regatta.v1.RangeRequest".to_string()),
        5 => Q::FileContainingExtension(proto::ExtensionRequest {
            containing_type: "regatta.v1.RangeRequest".to_string(),
            extension_number: *pick_of(rng, &[0, 1, 100, -1, i32::MAX]),
        }),
        6 => Q::FileContainingSymbol(String::new()),
        _ => Q::ListServices("*".to_string()),
    };
    proto::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(query),
    }
}

/// `RestoreMessage { info = 1: RestoreInfo { table = 1 } }`.
pub fn restore_info(table: &[u8]) -> Vec<u8> {
    Msg::new().msg(1, Msg::new().bytes(1, table)).into_bytes()
}

/// `RestoreMessage { chunk = 2: SnapshotChunk { data = 1, len = 2, index = 3 } }`.
pub fn restore_chunk(data: &[u8], index: u64) -> Vec<u8> {
    Msg::new()
        .msg(
            2,
            Msg::new()
                .bytes(1, data)
                .uint(2, data.len() as u64)
                .uint(3, index),
        )
        .into_bytes()
}

/// A command stream (`docs/contract-notes.md`) of `commands`: Snappy framing around
/// `[u64 LE length][Command]` records.
pub fn command_stream(records: &[Vec<u8>]) -> Vec<u8> {
    let mut encoder = snap::write::FrameEncoder::new(Vec::new());
    for record in records {
        let _ = encoder.write_all(&(record.len() as u64).to_le_bytes());
        let _ = encoder.write_all(record);
    }
    encoder.into_inner().unwrap_or_default()
}

fn data_command(rng: &mut StdRng) -> Vec<u8> {
    Command {
        table: TARGET_TABLE.as_bytes().to_vec(),
        r#type: CommandType::Put as i32,
        kv: Some(KeyValue {
            key: key(rng),
            value: random_bytes(rng, 0..64),
            create_revision: revision(rng),
            mod_revision: revision(rng),
        }),
        ..Command::default()
    }
    .encode_to_vec()
}

fn trailer_command(rng: &mut StdRng) -> Vec<u8> {
    Command {
        table: TARGET_TABLE.as_bytes().to_vec(),
        r#type: CommandType::Dummy as i32,
        leader_index: Some(*pick_of(rng, &[0, 1, 42, u64::MAX])),
        ..Command::default()
    }
    .encode_to_vec()
}

/// A SEQUENCE command holding a SEQUENCE ... `depth` levels deep.
fn nested_sequence(depth: usize) -> Vec<u8> {
    let mut inner = Msg::new()
        .bytes(1, TARGET_TABLE.as_bytes())
        .uint(2, CommandType::Put as u64)
        .msg(3, Msg::new().bytes(1, b"deep").bytes(4, b"v"));
    for _ in 0..depth {
        inner = Msg::new()
            .bytes(1, TARGET_TABLE.as_bytes())
            .uint(2, CommandType::Sequence as u64)
            .msg(10, inner);
    }
    inner.into_bytes()
}

/// The table a Restore names: the target table, a pool table (created by
/// the restore), or a name the server must refuse. Never [`DATA_TABLE`].
fn restore_table(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0..=5 => TARGET_TABLE.as_bytes().to_vec(),
        6 | 7 => pick_of(rng, &TABLE_POOL).as_bytes().to_vec(),
        8 => Vec::new(),
        _ => vec![0xff, 0xfe, b'x'],
    }
}

/// The messages of one Restore call: an info, then chunks of a command
/// stream; valid, or malformed in one of the ways a broken client or a
/// corrupt backup would be.
fn restore(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let table = restore_table(rng);
    let mut records: Vec<Vec<u8>> = (0..rng.random_range(0..20))
        .map(|_| data_command(rng))
        .collect();
    if rng.random_bool(0.8) {
        records.push(trailer_command(rng));
    }
    let variant = rng.random_range(0..12);
    match variant {
        // A deep SEQUENCE record (prost's recursion limit is 100).
        7 => records.insert(
            0,
            nested_sequence(*pick_of(rng, &[2, 50, 98, 99, 100, 101, 200, 5000])),
        ),
        // A record whose length says more than the stream holds, or more
        // than the 64 MiB any reader takes.
        8 => {
            let mut stream_bytes = Vec::new();
            let claimed: u64 = *pick_of(rng, &[1 << 20, 64 << 20, (64 << 20) + 1, u64::MAX]);
            stream_bytes.extend_from_slice(&claimed.to_le_bytes());
            stream_bytes.extend_from_slice(b"short");
            records = vec![stream_bytes];
            let data = {
                let mut encoder = snap::write::FrameEncoder::new(Vec::new());
                let _ = encoder.write_all(&records[0]);
                encoder.into_inner().unwrap_or_default()
            };
            return vec![restore_info(&table), restore_chunk(&data, 0)];
        }
        _ => {}
    }
    let mut data = command_stream(&records);
    match variant {
        // Cut inside the Snappy stream.
        9 if data.len() > 1 => data.truncate(rng.random_range(1..data.len())),
        // Not a Snappy stream at all.
        10 => data = random_bytes(rng, 1..256),
        _ => {}
    }
    let mut messages = vec![restore_info(&table)];
    let pieces = rng.random_range(1..=4usize).min(data.len().max(1));
    let size = data.len().div_ceil(pieces).max(1);
    for (index, piece) in data.chunks(size).enumerate() {
        messages.push(restore_chunk(piece, index as u64));
    }
    match variant {
        // A chunk before the info, or the info twice, or no chunk at all.
        0 => {
            let last = messages.len() - 1;
            messages.swap(0, last);
        }
        1 => messages.insert(1, restore_info(&table)),
        2 => messages.truncate(1),
        // An empty message (neither info nor chunk) in the middle.
        3 => messages.insert(1, Vec::new()),
        // Only the info and the end of the stream in between: the restore
        // ends without its data.
        _ => {}
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_base_request_decodes_as_its_method_takes_it() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let method = pick(&mut rng);
            for message in base(method.kind, &mut rng) {
                if method.kind == K::TablesCreate {
                    // A Struct nested past prost's recursion limit is meant
                    // not to decode.
                    continue;
                }
                method
                    .kind
                    .decode_request(&message)
                    .unwrap_or_else(|err| panic!("{}: {err}", method.label()));
            }
        }
    }

    #[test]
    fn nested_structs_decode_up_to_the_recursion_limit() {
        let shallow = Msg::new().msg(5, nested_struct(10)).into_bytes();
        assert!(K::TablesCreate.decode_request(&shallow).is_ok());
        let deep = Msg::new().msg(5, nested_struct(150)).into_bytes();
        assert!(K::TablesCreate.decode_request(&deep).is_err());
    }

    #[test]
    fn every_listener_has_methods() {
        for listener in [Api, Replication, Maintenance] {
            assert!(METHODS.iter().any(|m| m.listener == listener));
        }
    }
}
