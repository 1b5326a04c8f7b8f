//! Storage-layer throughput on real RocksDB (no Raft, no network):
//! `cargo bench -p regatta --bench storage`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use regatta::storage::{Install, RangeQuery, Storage, StorageOptions, Table, Trailer};
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};

struct Bench {
    _dir: tempfile::TempDir,
    storage: Storage,
    table: Table,
    index: u64,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let storage = Storage::open(dir.path(), &StorageOptions::default()).expect("open");
        let table = storage.create_table(b"bench").expect("table");
        Bench {
            _dir: dir,
            storage,
            table,
            index: 0,
        }
    }

    fn apply(&mut self, command: &Command) {
        self.index += 1;
        self.table.apply(self.index, command).expect("apply");
    }
}

fn kv(i: u64) -> KeyValue {
    KeyValue {
        key: format!("key{i:08}").into_bytes(),
        value: vec![b'v'; 256],
        ..KeyValue::default()
    }
}

fn put(i: u64) -> Command {
    Command {
        r#type: CommandType::Put as i32,
        kv: Some(kv(i)),
        ..Command::default()
    }
}

fn filled(keys: u64) -> Bench {
    let mut bench = Bench::new();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        let batch = Command {
            r#type: CommandType::PutBatch as i32,
            batch: chunk.iter().map(|i| kv(*i)).collect(),
            ..Command::default()
        };
        bench.apply(&batch);
    }
    bench
}

fn writes(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));
    let mut bench = Bench::new();
    let mut i = 0;
    group.bench_function("put", |b| {
        b.iter(|| {
            i += 1;
            bench.apply(&put(i % 100_000));
        })
    });
    group.throughput(Throughput::Elements(100));
    let mut n = 0;
    group.bench_function("put_batch_100", |b| {
        b.iter(|| {
            n += 1;
            let batch = Command {
                r#type: CommandType::PutBatch as i32,
                batch: (0..100).map(|j| kv((n * 100 + j) % 100_000)).collect(),
                ..Command::default()
            };
            bench.apply(&batch);
        })
    });
    group.finish();
    bench.storage.make_durable().expect("durable");
}

fn reads(c: &mut Criterion) {
    let bench = filled(100_000);
    let mut group = c.benchmark_group("query");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("point_get", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            let query = RangeQuery {
                key: kv(i).key,
                ..RangeQuery::default()
            };
            black_box(bench.table.range(&query).expect("range"));
        })
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("scan_1000", |b| {
        b.iter(|| {
            i = (i + 7919) % 99_000;
            let query = RangeQuery {
                key: kv(i).key,
                range_end: vec![0],
                limit: 1000,
                ..RangeQuery::default()
            };
            black_box(bench.table.range(&query).expect("range"));
        })
    });
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    let bench = filled(100_000);
    let (_, bytes) = bench
        .table
        .write_snapshot(Vec::new(), Trailer::AppliedIndex)
        .expect("snapshot");
    // Throughput in logical bytes (keys + values), the table's size.
    let logical = 100_000u64 * (11 + 256);
    let mut group = c.benchmark_group("snapshot");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(logical));
    group.bench_function("write", |b| {
        b.iter(|| {
            black_box(
                bench
                    .table
                    .write_snapshot(std::io::sink(), Trailer::AppliedIndex)
                    .expect("snapshot"),
            )
        })
    });
    group.bench_function("install", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| {
                bench
                    .table
                    .install_snapshot(
                        bytes.as_slice(),
                        Install {
                            applied_index: 1,
                            keep_revisions: true,
                            raft_state: None,
                        },
                    )
                    .expect("install")
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, writes, reads, snapshots);
criterion_main!(benches);
