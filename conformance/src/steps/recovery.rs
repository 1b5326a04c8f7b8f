//! A follower cluster cut off from its leader cluster, reconnected, and
//! recovering by snapshot (`features/snapshot.feature`): the faults between the
//! clusters, reads kept running meanwhile, and the checks that the copy ends
//! equal to the leader's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{bail, Context, Result};
use cucumber::{then, when};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::RangeRequest;
use regatta_proto::replication::v1::log_client::LogClient;
use regatta_proto::replication::v1::{replicate_response::Response as Reply, ReplicateRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::follower::follower_nodes;
use crate::metrics;
use crate::world::{RegattaWorld, FOLLOWER_NODES};

/// One background read: when it ran, and the keys it got or why not.
struct Read {
    started: Instant,
    finished: Instant,
    keys: Result<Vec<Vec<u8>>, String>,
}

/// One reader per follower node, listing a table's keys until stopped. A
/// reader keeps running while the suite moves its node between networks
/// (the node's address changes): reads started during a move may fail
/// through no fault of the node and are not counted.
pub struct Counters {
    stop: watch::Sender<bool>,
    readers: Vec<Reader>,
    /// When the suite moved the follower nodes, `(start, end)`.
    moves: Vec<(Instant, Instant)>,
}

struct Reader {
    node: usize,
    client: watch::Sender<KvClient<Channel>>,
    handle: JoinHandle<Vec<Read>>,
}

fn forget_follower_clients(world: &mut RegattaWorld) {
    for n in follower_nodes(world) {
        world.forget_client(n);
    }
}

#[when(regex = r"^the follower cluster is (cut off from|reconnected to) the leader cluster$")]
async fn cut_or_reconnect(world: &mut RegattaWorld, action: String) -> Result<()> {
    let follower = world
        .follower
        .as_mut()
        .context("the scenario has no follower cluster")?;
    let started = Instant::now();
    if action == "cut off from" {
        follower.cut_off_cluster().await.map_err(super::flatten)?;
    } else {
        follower.heal().await.map_err(super::flatten)?;
    }
    forget_follower_clients(world);
    // Running readers go on at the nodes' new addresses.
    if let Some(mut counters) = world.counters.take() {
        for reader in &counters.readers {
            reader.client.send_replace(world.client(reader.node)?);
        }
        counters.moves.push((started, Instant::now()));
        world.counters = Some(counters);
    }
    Ok(())
}

#[when(
    regex = r#"^in the background I keep reading the keys of "([^"]*)" on every follower node$"#
)]
async fn start_reading(world: &mut RegattaWorld, table: String) -> Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut readers = Vec::new();
    let mut answered = Vec::new();
    for node in follower_nodes(world) {
        let (client, client_updates) = watch::channel(world.client(node)?);
        let table = table.clone();
        let stopped = stopped.clone();
        let count = Arc::new(AtomicUsize::new(0));
        answered.push((node, count.clone()));
        readers.push(Reader {
            node,
            client,
            handle: tokio::spawn(read_until(client_updates, table, stopped, count)),
        });
    }
    world.counters = Some(Counters {
        stop,
        readers,
        moves: Vec::new(),
    });
    // The step returns once every reader has read the copy as it is now, so
    // that the reads overlap whatever the next steps start (a recovery).
    let deadline = Instant::now() + Duration::from_secs(30);
    for (node, count) in answered {
        while count.load(Ordering::Relaxed) == 0 {
            if Instant::now() > deadline {
                bail!("follower node {node} answered no read of {table} in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Reads until stopped, and once more after the stop: the last read comes
/// after everything the scenario waited for.
async fn read_until(
    mut client: watch::Receiver<KvClient<Channel>>,
    table: String,
    stopped: watch::Receiver<bool>,
    answered: Arc<AtomicUsize>,
) -> Vec<Read> {
    let mut seen = Vec::new();
    loop {
        let last = *stopped.borrow();
        let mut request = tonic::Request::new(RangeRequest {
            table: table.as_bytes().to_vec(),
            key: vec![0],
            range_end: vec![0],
            keys_only: true,
            ..RangeRequest::default()
        });
        request.set_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let mut current = client.borrow_and_update().clone();
        let keys = tokio::select! {
            answer = current.range(request) => answer
                .map(|answer| answer.into_inner().kvs.into_iter().map(|kv| kv.key).collect())
                .map_err(|status| format!("{:?}: {}", status.code(), status.message())),
            // The node moved: the old address no longer answers.
            _ = client.changed() => Err("interrupted: the node moved".to_string()),
        };
        if keys.is_ok() {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        seen.push(Read {
            started,
            finished: Instant::now(),
            keys,
        });
        if last {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Checks one read: every `old` key there, and of the `new` keys (written
/// highest key first) a run ending with the highest one: a state the leader
/// went through. Returns how many new keys it held.
fn check_read(
    keys: &[Vec<u8>],
    old: &str,
    old_count: usize,
    new: &str,
    new_count: usize,
) -> Result<usize> {
    let held_old = keys
        .iter()
        .filter(|k| k.starts_with(old.as_bytes()))
        .count();
    if held_old != old_count {
        bail!("{held_old} of the {old_count} keys {old:?}");
    }
    let mut held_new: Vec<usize> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(new.as_bytes()))
        .filter_map(|suffix| std::str::from_utf8(suffix).ok()?.parse().ok())
        .collect();
    held_new.sort_unstable();
    let run_start = new_count - held_new.len();
    if held_new
        .iter()
        .enumerate()
        .any(|(i, index)| *index != run_start + i)
    {
        bail!(
            "keys {new:?} {held_new:?}: not the first {} written (a copy half installed?)",
            held_new.len()
        );
    }
    Ok(held_new.len())
}

#[then(
    regex = r#"^every background read held the (\d+) keys "([^"]*)" and a first-written run of the (\d+) keys "([^"]*)", the last read all of them$"#
)]
async fn reads_were(
    world: &mut RegattaWorld,
    old_count: usize,
    old: String,
    new_count: usize,
    new: String,
) -> Result<()> {
    let counters = world.counters.take().context("no background reads")?;
    counters.stop.send_replace(true);
    let during_move = |read: &Read| {
        counters
            .moves
            .iter()
            .any(|(start, end)| read.started <= *end && read.finished >= *start)
    };
    let mut overlapped = false;
    for reader in counters.readers {
        let seen = reader.handle.await?;
        let node = reader.node - FOLLOWER_NODES;
        let mut previous = 0;
        for (i, read) in seen.iter().enumerate() {
            let keys = match &read.keys {
                Ok(keys) => keys,
                Err(_) if during_move(read) => continue,
                Err(err) => bail!("follower node {node} did not answer read {i}: {err}"),
            };
            let held = check_read(keys, &old, old_count, &new, new_count)
                .with_context(|| format!("follower node {node}, read {i} of {}", seen.len()))?;
            if held < previous {
                bail!("follower node {node} went back from {previous} to {held} keys {new:?}");
            }
            overlapped |= held < new_count;
            previous = held;
        }
        if previous != new_count {
            bail!("follower node {node} ended with {previous} of the {new_count} keys {new:?}");
        }
    }
    if !overlapped {
        bail!("every read already held everything: the reads did not overlap the recovery");
    }
    Ok(())
}

/// Every pair of `table` on node `n`, in pages.
pub(crate) async fn scan(
    world: &mut RegattaWorld,
    n: usize,
    table: &str,
    linearizable: bool,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut pairs = Vec::new();
    let mut from = vec![0];
    loop {
        let answer = world
            .range(
                n,
                RangeRequest {
                    table: table.as_bytes().to_vec(),
                    key: from.clone(),
                    range_end: vec![0],
                    limit: 100,
                    linearizable,
                    ..RangeRequest::default()
                },
            )
            .await
            .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?;
        for kv in answer.kvs {
            from = [kv.key.as_slice(), &[0]].concat();
            pairs.push((kv.key, kv.value));
        }
        if !answer.more {
            return Ok(pairs);
        }
    }
}

#[then(
    regex = r#"^every follower node eventually holds the same pairs in "([^"]*)" as node (\d+)$"#
)]
async fn same_pairs(world: &mut RegattaWorld, table: String, leader_node: usize) -> Result<()> {
    followers_hold_pairs_of(world, &table, leader_node, Duration::from_secs(60)).await
}

/// Waits until every follower node's copy of `table` holds the pairs of
/// leader node `leader_node` (read linearizably).
pub(crate) async fn followers_hold_pairs_of(
    world: &mut RegattaWorld,
    table: &str,
    leader_node: usize,
    within: Duration,
) -> Result<()> {
    let table = table.to_string();
    let expected = scan(world, leader_node, &table, true).await?;
    let deadline = tokio::time::Instant::now() + within;
    for n in follower_nodes(world) {
        loop {
            let got = scan(world, n, &table, false).await;
            match got {
                Ok(got) if got == expected => break,
                other if tokio::time::Instant::now() > deadline => {
                    let summary = match other {
                        Ok(got) => format!("{} pairs (expected {})", got.len(), expected.len()),
                        Err(err) => err.to_string(),
                    };
                    bail!(
                        "follower node {} does not hold the leader's pairs: {summary}",
                        n - FOLLOWER_NODES
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

/// The follower cluster's stored leader index of `table`, from the
/// `/metrics` of the node that replicates it.
async fn stored_index(world: &RegattaWorld, table: &str) -> Result<Option<u64>> {
    let follower = world
        .follower
        .as_deref()
        .context("the scenario has no follower cluster")?;
    for n in 1..=follower.size() {
        let Some(address) = follower.rest_address(n) else {
            bail!("this backend does not expose the nodes' /metrics");
        };
        let Ok(metrics) = metrics::get(&address, world.tls.as_ref()).await else {
            continue;
        };
        let series = |name: &str| {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        let leased = series(&format!("regatta_replication_leased{{table=\"{table}\"}}"));
        if leased == Some(1) {
            return Ok(series(&format!(
                "regatta_replication_index{{role=\"follower\",table=\"{table}\"}}"
            )));
        }
    }
    Ok(None)
}

#[then(
    regex = r#"^the follower cluster's stored leader index of "([^"]*)" eventually equals the applied index of node (\d+)$"#
)]
async fn stored_equals_applied(
    world: &mut RegattaWorld,
    table: String,
    leader_node: usize,
) -> Result<()> {
    // Read once, from the log and snapshot node 1 serves: nothing writes
    // while this step waits.
    world
        .wait_linearizable(leader_node, Duration::from_secs(30))
        .await?;
    let applied = super::replication::applied_index(world, leader_node, &table).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = stored_index(world, &table).await?;
        if stored == Some(applied) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the follower stores leader index {stored:?}, the leader applied {applied}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[then(regex = r#"^no follower node recovered "([^"]*)" by snapshot$"#)]
async fn no_recovery(world: &mut RegattaWorld, table: String) -> Result<()> {
    let follower = world
        .follower
        .as_deref()
        .context("the scenario has no follower cluster")?;
    let name = format!("regatta_replication_snapshot_recoveries_total{{table=\"{table}\"}}");
    let mut reported = false;
    for n in 1..=follower.size() {
        let address = follower
            .rest_address(n)
            .context("this backend does not expose the nodes' /metrics")?;
        let body = metrics::get(&address, world.tls.as_ref()).await?;
        // A missing series sums to 0: it must be there to say "none".
        reported |= body.lines().any(|line| line.starts_with(&name));
        let recoveries = metrics::sum(&body, &name);
        if recoveries > 0 {
            bail!("follower node {n} recovered {table} by snapshot {recoveries} times");
        }
    }
    if !reported {
        bail!("no follower node reports {name}: cannot tell that none recovered");
    }
    Ok(())
}

/// Waits (up to a minute) until node `n` answers `Log.Replicate` from
/// `index` with USE_SNAPSHOT: its log no longer holds that entry. A
/// snapshot and the compaction after it come some time after the writes
/// that call for them; scenarios wait for them rather than assume them.
#[when(regex = r#"^node (\d+) has compacted its log of "([^"]*)" past leader index (\d+)$"#)]
async fn compacted_past(
    world: &mut RegattaWorld,
    n: usize,
    table: String,
    index: u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        let mut client = LogClient::new(world.replication_channel(n)?);
        let answer = client
            .replicate(ReplicateRequest {
                table: table.as_bytes().to_vec(),
                leader_index: index,
            })
            .await;
        match answer {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                match stream.message().await {
                    Ok(Some(message)) => match message.response {
                        Some(Reply::ErrorResponse(e))
                            if e.error
                                == regatta_proto::replication::v1::ReplicateError::UseSnapshot
                                    as i32 =>
                        {
                            return Ok(())
                        }
                        other => last = format!("{other:?}"),
                    },
                    other => last = format!("{other:?}"),
                }
            }
            Err(status) => last = format!("{:?} {}", status.code(), status.message()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("node {n} still serves {table} from leader index {index} after a minute (last answer: {last})")
}

/// The follower cluster's recoveries by snapshot of `table`, summed over
/// its nodes (`regatta_replication_snapshot_recoveries_total`), reach
/// `count` within a minute.
#[then(
    regex = r#"^the follower cluster has recovered "([^"]*)" by snapshot at least (\d+) times?$"#
)]
async fn recovered_at_least(world: &mut RegattaWorld, table: String, count: u64) -> Result<()> {
    let series = "regatta_replication_snapshot_recoveries_total";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A node that does not answer this time is asked again next time.
        let samples = super::observe::follower_samples(world, series, &table)
            .await
            .unwrap_or_default();
        let reported = !samples.is_empty();
        let total: u64 = samples.iter().map(|(_, v)| v).sum();
        if reported && total >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the follower cluster recovered {table} by snapshot {total} times in a minute, expected at least {count} ({series} reported: {reported})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
