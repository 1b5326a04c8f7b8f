//! Crash durability of the state-machine database, with a real process
//! killed mid-write (`abort`, no clean close).
//!
//! Writes are not synced one by one (the Raft log is the durable record), so
//! a crash may lose the tail of what was applied; but everything applied
//! before `make_durable` (what the Raft layer calls before purging its log)
//! must survive, and what survives is always a consistent prefix: the applied
//! index and the data agree.
//!
//! This is a `harness = false` test: the same binary is the parent that
//! checks and, with `REGATTA_CRASH_CHILD` set, the child that crashes.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, ExitCode, Stdio};

use regatta::storage::{RangeQuery, Storage, StorageOptions};
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};

const CHILD_ENV: &str = "REGATTA_CRASH_CHILD";
const DURABLE_AT: u64 = 500;
const LAST: u64 = 1000;

fn put(i: u64) -> Command {
    Command {
        r#type: CommandType::Put as i32,
        kv: Some(KeyValue {
            key: format!("key{i:05}").into_bytes(),
            value: vec![b'v'; 64],
            ..KeyValue::default()
        }),
        ..Command::default()
    }
}

/// The child: apply, make durable half way, apply more, then wait to be
/// killed with SIGKILL (no destructor, no flush).
fn child(dir: &Path) -> ! {
    let storage = Storage::open(dir, &StorageOptions::default()).expect("open");
    let table = storage.create_table(b"t").expect("create");
    for i in 1..=LAST {
        table.apply(i, &put(i)).expect("apply");
        if i == DURABLE_AT {
            storage.make_durable().expect("make durable");
        }
    }
    println!("applied");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn crash_keeps_everything_before_make_durable_and_a_consistent_prefix() -> Result<(), String> {
    let dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
    let mut child = Process::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "applied" {
        let _ = child.kill();
        return Err(format!("child did not finish applying: {line:?}"));
    }
    child.kill().map_err(|e| e.to_string())?; // SIGKILL
    child.wait().map_err(|e| e.to_string())?;
    let storage =
        Storage::open(dir.path(), &StorageOptions::default()).map_err(|e| e.to_string())?;
    let table = storage
        .table(b"t")
        .ok_or("table created before the crash is gone")?;
    let state = table.state();
    if state.applied_index < DURABLE_AT {
        return Err(format!(
            "applied index {} < {DURABLE_AT} made durable",
            state.applied_index
        ));
    }
    let all = table
        .range(&RangeQuery {
            key: vec![0],
            range_end: vec![0],
            ..RangeQuery::default()
        })
        .map_err(|e| e.to_string())?
        .value;
    if all.count != state.applied_index {
        return Err(format!(
            "{} keys survived but applied index is {}",
            all.count, state.applied_index
        ));
    }
    for (i, kv) in (1..).zip(&all.kvs) {
        if kv.key != format!("key{i:05}").into_bytes() || kv.mod_revision != i as i64 {
            return Err(format!("key {i} is wrong after recovery: {kv:?}"));
        }
    }
    println!(
        "  recovered applied index {} of {LAST} (made durable at {DURABLE_AT})",
        state.applied_index
    );
    Ok(())
}

type CrashTest = fn() -> Result<(), String>;

fn main() -> ExitCode {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let tests: [(&str, CrashTest); 1] = [(
        "crash_keeps_everything_before_make_durable_and_a_consistent_prefix",
        crash_keeps_everything_before_make_durable_and_a_consistent_prefix,
    )];
    let mut failed = 0;
    for (name, test) in tests {
        match test() {
            Ok(()) => println!("test {name} ... ok"),
            Err(err) => {
                failed += 1;
                println!("test {name} ... FAILED: {err}");
            }
        }
    }
    println!("crash: {} passed, {failed} failed", tests.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
