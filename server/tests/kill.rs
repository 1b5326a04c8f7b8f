//! Durability under `kill -9`: real node processes (this binary re-executed
//! in child mode, driven over stdin/stdout), killed with SIGKILL.
//!
//! `harness = false`: with `REGATTA_KILL_NODE` set, this binary is one node
//! of the cluster; otherwise it runs the scenarios.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command as Process, ExitCode, Stdio};
use std::time::{Duration, Instant};

const NODE_ENV: &str = "REGATTA_KILL_NODE";
const TIMEOUT: Duration = Duration::from_secs(10);

// ---- child: one node, driven by lines on stdin ----

fn node_main(spec: &str) -> ExitCode {
    use regatta::cluster::{parse_members, Consistency, Node, RaftSettings};
    use regatta::storage::{RangeQuery, StorageOptions};
    use regatta_proto::mvcc::v1::command::CommandType;
    use regatta_proto::mvcc::v1::{Command, KeyValue};

    // spec: "<id>;<members>;<dir>"
    let parts: Vec<&str> = spec.split(';').collect();
    let (id, members, dir) = (
        parts[0].parse::<u64>().expect("id"),
        parts[1],
        PathBuf::from(parts[2]),
    );
    let members = parse_members(members).expect("members");
    let mut settings = RaftSettings::single_node(dir, members[&id].clone());
    settings.node_id = id;
    settings.initial_members = members;
    settings.rtt = Duration::from_millis(20);
    settings.heartbeat_rtt = 2;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let node = Node::start(settings, StorageOptions::default())
            .await
            .expect("node starts");
        println!("ready");
        let stdin = tokio::io::stdin();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdin));
        while let Ok(Some(line)) = lines.next_line().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            let reply = match words.as_slice() {
                ["create", table] => node
                    .create_table(table.as_bytes(), TIMEOUT)
                    .await
                    .map(|shard| shard.to_string())
                    .map_err(|e| e.to_string()),
                ["put", table, key, value] => {
                    let command = Command {
                        r#type: CommandType::Put as i32,
                        kv: Some(KeyValue {
                            key: key.as_bytes().to_vec(),
                            value: value.as_bytes().to_vec(),
                            ..KeyValue::default()
                        }),
                        ..Command::default()
                    };
                    node.write(table.as_bytes(), &command, Duration::from_secs(3))
                        .await
                        .map(|(written, _)| written.result.revision.to_string())
                        .map_err(|e| e.to_string())
                }
                ["read", table] => match node
                    .read(table.as_bytes(), Consistency::Linearizable, TIMEOUT)
                    .await
                    .map(|(data, info)| {
                        let found = data.range(&RangeQuery {
                            key: vec![0],
                            range_end: vec![0],
                            ..RangeQuery::default()
                        });
                        (found, info)
                    }) {
                    Ok((found, _)) => found
                        .map(|found| {
                            found
                                .value
                                .kvs
                                .iter()
                                .map(|kv| {
                                    format!(
                                        "{}={}",
                                        String::from_utf8_lossy(&kv.key),
                                        String::from_utf8_lossy(&kv.value)
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                ["leader", table] => node
                    .status(table.as_bytes())
                    .map(|status| status.leader.unwrap_or_default().to_string())
                    .map_err(|e| e.to_string()),
                _ => Err(format!("unknown command {line:?}")),
            };
            match reply {
                Ok(text) => println!("ok {text}"),
                Err(text) => println!("err {}", text.replace('\n', " ")),
            }
        }
    });
    ExitCode::SUCCESS
}

// ---- parent: the scenarios ----

struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NodeProcess {
    fn request(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        self.stdout
            .read_line(&mut reply)
            .map_err(|e| e.to_string())?;
        match reply.trim_end().split_once(' ') {
            Some(("ok", text)) => Ok(text.to_string()),
            Some(("err", text)) => Err(text.to_string()),
            _ if reply.trim_end() == "ok" => Ok(String::new()),
            _ => Err(format!("node answered {reply:?}")),
        }
    }
}

struct Cluster {
    members: String,
    dirs: Vec<tempfile::TempDir>,
    nodes: BTreeMap<u64, NodeProcess>,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let members = (1..=size)
            .map(|id| {
                let port = support::free_port();
                format!("{id}=127.0.0.1:{port}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let dirs = (0..size)
            .map(|_| tempfile::TempDir::new().expect("temp dir"))
            .collect();
        let mut cluster = Cluster {
            members,
            dirs,
            nodes: BTreeMap::new(),
        };
        for id in 1..=size {
            cluster.start(id);
        }
        cluster
    }

    fn start(&mut self, id: u64) {
        let dir: &Path = self.dirs[(id - 1) as usize].path();
        let mut child = Process::new(std::env::current_exe().expect("exe"))
            .env(NODE_ENV, format!("{id};{};{}", self.members, dir.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut ready = String::new();
        stdout.read_line(&mut ready).expect("node output");
        assert_eq!(ready.trim(), "ready", "node {id} did not start");
        self.nodes.insert(
            id,
            NodeProcess {
                child,
                stdin,
                stdout,
            },
        );
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut node) = self.nodes.remove(&id) {
            node.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
            node.child.wait().expect("reap");
        }
    }

    fn node(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes.get_mut(&id).expect("running node")
    }

    /// Retries `line` on node `id` until it succeeds or the deadline passes.
    fn must(&mut self, id: u64, line: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.node(id).request(line) {
                Ok(reply) => return reply,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("node {id}: {line}: {err}"),
            }
        }
    }

    fn leader(&mut self, table: &str) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            let leaders: Vec<u64> = ids
                .iter()
                .map(|id| {
                    self.must(*id, &format!("leader {table}"))
                        .parse()
                        .unwrap_or(0)
                })
                .collect();
            if leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0])
                && self.nodes.contains_key(&leaders[0])
            {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn read(&mut self, id: u64, table: &str) -> BTreeMap<String, String> {
        let text = self.must(id, &format!("read {table}"));
        text.split(',')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

fn killing_the_leader_loses_no_acknowledged_write() -> Result<(), String> {
    let mut cluster = Cluster::new(3);
    cluster.must(1, "create t");
    let leader = cluster.leader("t");
    let writer = (1..=3).find(|id| *id != leader).ok_or("no follower")?;
    let mut acknowledged = BTreeMap::new();
    for i in 0..30 {
        if i == 15 {
            cluster.kill(leader);
        }
        let key = format!("k{i:02}");
        // Writes during the election may fail (Unavailable): only acknowledged ones count.
        if cluster
            .node(writer)
            .request(&format!("put t {key} v{i}"))
            .is_ok()
        {
            acknowledged.insert(key, format!("v{i}"));
        }
    }
    let new_leader = cluster.leader("t");
    if new_leader == leader {
        return Err("the killed node is still the leader".into());
    }
    cluster.must(writer, "put t last v");
    acknowledged.insert("last".into(), "v".into());
    let survivors: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in survivors {
        let read = cluster.read(id, "t");
        let missing: Vec<&String> = acknowledged
            .keys()
            .filter(|k| !read.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            return Err(format!("node {id} lost acknowledged writes {missing:?}"));
        }
    }
    println!(
        "  {} writes acknowledged around the kill of leader {leader}; new leader {new_leader}",
        acknowledged.len()
    );
    Ok(())
}

fn killing_every_node_at_once_loses_no_acknowledged_write() -> Result<(), String> {
    let mut cluster = Cluster::new(3);
    cluster.must(1, "create t");
    cluster.leader("t");
    let mut acknowledged = BTreeMap::new();
    let mut last_revision = 0u64;
    for i in 0..30u64 {
        let via = 1 + i % 3;
        let key = format!("k{i:02}");
        last_revision = cluster
            .must(via, &format!("put t {key} v{i}"))
            .parse()
            .map_err(|_| "revision")?;
        acknowledged.insert(key, format!("v{i}"));
    }
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start(id);
    }
    cluster.leader("t");
    for id in 1..=3 {
        let read = cluster.read(id, "t");
        if read != acknowledged {
            return Err(format!(
                "node {id} after kill -9 of all: {} of {} writes",
                read.len(),
                acknowledged.len()
            ));
        }
    }
    let next: u64 = cluster
        .must(2, "put t after kill")
        .parse()
        .map_err(|_| "revision")?;
    if next <= last_revision {
        return Err(format!("revision went from {last_revision} to {next}"));
    }
    println!("  all 30 acknowledged writes survived kill -9 of every node; revision {last_revision} -> {next}");
    Ok(())
}

type Scenario = fn() -> Result<(), String>;

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(NODE_ENV) {
        return node_main(&spec);
    }
    let scenarios: [(&str, Scenario); 2] = [
        (
            "killing_the_leader_loses_no_acknowledged_write",
            killing_the_leader_loses_no_acknowledged_write,
        ),
        (
            "killing_every_node_at_once_loses_no_acknowledged_write",
            killing_every_node_at_once_loses_no_acknowledged_write,
        ),
    ];
    let mut failed = 0;
    for (name, scenario) in scenarios {
        match std::panic::catch_unwind(scenario) {
            Ok(Ok(())) => println!("test {name} ... ok"),
            Ok(Err(err)) => {
                failed += 1;
                println!("test {name} ... FAILED: {err}");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED (panicked)");
            }
        }
    }
    println!("kill: {} passed, {failed} failed", scenarios.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
