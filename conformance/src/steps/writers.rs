//! Background writers: clients that keep putting distinct keys, spread
//! over the nodes, while a scenario injects faults or copies the table; how
//! far they got, stopping them, and the key scheme (`writer_key`) that
//! steps elsewhere parse back. Their acknowledged writes join the world's
//! record that [`super::acknowledged`] checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::when;
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::PutRequest;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::world::RegattaWorld;

/// The pairs one background writer got acknowledged.
type Acknowledged = Vec<(Vec<u8>, Vec<u8>)>;

/// Writers that keep putting distinct keys, spread over the nodes, and
/// remember which puts were acknowledged.
pub struct BackgroundWriters {
    stop: watch::Sender<bool>,
    acknowledged: Arc<AtomicUsize>,
    handles: Vec<JoinHandle<Acknowledged>>,
    table: String,
}

/// Writer `writer`'s key number `seq`: `<prefix><bucket>-<writer>-<seq>`,
/// where the bucket scatters a writer's consecutive keys over the key
/// space. A copy made by reading the keys in order while they are written
/// then misses a key whose successor it holds (a gap), which a copy of one
/// point in time never does.
pub fn writer_key(prefix: &str, writer: usize, seq: usize) -> Vec<u8> {
    let bucket = (seq * 7919) % 1000;
    format!("{prefix}{bucket:03}-{writer:02}-{seq:06}").into_bytes()
}

/// Writer and sequence of a [`writer_key`].
pub fn parse_writer_key(prefix: &str, key: &[u8]) -> Option<(usize, usize)> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let mut parts = key.split('-');
    let (_bucket, writer, seq) = (parts.next()?, parts.next()?, parts.next()?);
    Some((writer.parse().ok()?, seq.parse().ok()?))
}

#[when(regex = r#"^(\d+) clients keep writing keys "([^"]*)" into "([^"]*)" on every node$"#)]
async fn start_writers(
    world: &mut RegattaWorld,
    clients: usize,
    prefix: String,
    table: String,
) -> Result<()> {
    let mut nodes: Vec<KvClient<Channel>> = Vec::new();
    for n in world.live_nodes() {
        nodes.push(world.client(n)?);
    }
    let (stop, stopped) = watch::channel(false);
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for writer in 0..clients {
        let mut nodes = nodes.clone();
        let stopped = stopped.clone();
        let counter = acknowledged.clone();
        let (prefix, table) = (prefix.clone(), table.clone());
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut seq = 0usize;
            let mut attempt = 0usize;
            while !*stopped.borrow() {
                let target = (writer + attempt) % nodes.len();
                attempt += 1;
                let key = writer_key(&prefix, writer, seq);
                let value = format!("w{writer}-{seq}").into_bytes();
                let mut request = tonic::Request::new(PutRequest {
                    table: table.clone().into_bytes(),
                    key: key.clone(),
                    value: value.clone(),
                    prev_kv: false,
                });
                request.set_timeout(Duration::from_secs(3));
                match nodes[target].put(request).await {
                    Ok(_) => {
                        acked.push((key, value));
                        counter.fetch_add(1, Ordering::Relaxed);
                        seq += 1;
                    }
                    // The same put again until it is acknowledged (it is
                    // idempotent): a writer's keys never skip a sequence.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            acked
        }));
    }
    world.background_writers = Some(BackgroundWriters {
        stop,
        acknowledged,
        handles,
        table,
    });
    Ok(())
}

#[when(regex = r"^the writers get (\d+) more writes acknowledged$")]
async fn writers_progress(world: &mut RegattaWorld, more: usize) -> Result<()> {
    let writers = world
        .background_writers
        .as_ref()
        .context("no background writers")?;
    let target = writers.acknowledged.load(Ordering::Relaxed) + more;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while writers.acknowledged.load(Ordering::Relaxed) < target {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the writers stalled at {} acknowledged writes",
                writers.acknowledged.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[when("the writers stop")]
async fn stop_writers(world: &mut RegattaWorld) -> Result<()> {
    let writers = world
        .background_writers
        .take()
        .context("no background writers")?;
    writers.stop.send_replace(true);
    for handle in writers.handles {
        for (key, value) in handle.await? {
            world.acknowledge(&writers.table, key, value);
        }
    }
    Ok(())
}
