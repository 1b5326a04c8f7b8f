//! A seeded wire fuzzer: mutated encodings of valid requests, sent over
//! HTTP/2 to every method of every listener of one node (`cargo xtask
//! fuzz`, `conformance/README.md` "Wire fuzzer").
//!
//! It talks to the node over the wire only. Each message is a function of
//! `(seed, index)` ([`mutate::plan`]), so a finding is reproduced by its
//! seed and index alone (`fuzz --seed S --only I`).
//!
//! What a run checks:
//! - the node process never exits;
//! - no answer is `Unknown`, and none is `Internal` unless it is gRPC's own
//!   answer to a request that is malformed at the gRPC or protobuf level
//!   (a body that does not decode as the request type, a lying length
//!   prefix, a bad flag byte: tonic, like every gRPC implementation, says
//!   INTERNAL there). The fuzzer checks that the request really was
//!   malformed ([`mutate::anomalies`]) and that the message is the
//!   framework's; `--strict-internal` reports those too;
//! - every OK answer decodes as the method's response type;
//! - after every 1,000 messages, gRPC health says SERVING and a Range on a
//!   known key returns its value;
//! - the 100 keys written to [`requests::DATA_TABLE`] before the run read
//!   back unchanged (values and revisions) at its end;
//! - the node's log has no panic.

pub mod mutate;
pub mod node;
pub mod proto;
pub mod requests;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use prost::Message;
use regatta_proto::mvcc::v1::KeyValue;
use regatta_proto::regatta::v1 as api;

use mutate::{anomalies, frames, Ending, Plan};
use node::{Endpoints, NodeProcess};
use requests::{Kind, Listener, DATA_TABLE, TABLE_POOL, TARGET_TABLE};
use wire::{Call, Connection, Outcome};

/// Keys written to [`DATA_TABLE`] before the run.
pub const DATA_KEYS: usize = 100;
/// Messages between two health checks.
pub const CHECKPOINT_EVERY: u64 = 1_000;
/// Messages of a full run.
pub const DEFAULT_MESSAGES: u64 = 100_000;
/// Messages of a `--quick` run (CI).
pub const QUICK_MESSAGES: u64 = 5_000;

/// Messages of gRPC implementations' own INTERNAL answers to malformed
/// requests (tonic's decoder and tonic-prost), as opposed to a service's.
const FRAMEWORK_INTERNAL: [&str; 5] = [
    "failed to decode Protobuf message",
    "protocol error: received message with",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "Error decompressing",
];

/// Label of INTERNAL answers accepted as gRPC's answer to malformed input.
const FRAMEWORK_LABEL: &str = "Internal (gRPC's answer to a malformed request)";

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub messages: u64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// The server binary (see [`node::server_binary`]).
    pub binary: Option<PathBuf>,
    /// Fuzz a running node instead of starting one.
    pub endpoints: Option<Endpoints>,
    /// Send only message `index` of the seed (a reproducer).
    pub only: Option<u64>,
    /// Directory for the findings file (full hex of every finding).
    pub out: Option<PathBuf>,
    /// Time one call may take.
    pub call_timeout: Duration,
    /// Report every INTERNAL answer, gRPC's answers to malformed requests
    /// included.
    pub strict_internal: bool,
    /// Progress lines on stdout.
    pub progress: bool,
    /// Keep the node's data directory and log after a run with findings.
    pub keep_on_failure: bool,
}

impl Options {
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            messages: DEFAULT_MESSAGES,
            concurrency: 4,
            binary: None,
            endpoints: None,
            only: None,
            out: None,
            call_timeout: Duration::from_secs(30),
            strict_internal: false,
            progress: true,
            keep_on_failure: true,
        }
    }
}

/// A failed check, with what reproduces it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub what: String,
    pub method: String,
    pub seed: u64,
    pub index: Option<u64>,
    pub mutations: Vec<String>,
    pub detail: String,
    /// The call's `grpc-timeout` header, for message findings.
    pub grpc_timeout: Option<String>,
    /// The request body as sent (gRPC frames), for message findings.
    pub body: Vec<u8>,
}

impl Finding {
    fn check(what: &str, seed: u64, detail: String) -> Finding {
        Finding {
            what: what.to_string(),
            method: String::new(),
            seed,
            index: None,
            mutations: Vec::new(),
            detail,
            grpc_timeout: None,
            body: Vec::new(),
        }
    }

    /// What findings of one cause share: the check, and for a panic its
    /// location and whether an out-of-range `grpc-timeout` came with it,
    /// for an answer its code and first words.
    pub fn signature(&self) -> String {
        match self.what.as_str() {
            "panic" => {
                let at = self
                    .detail
                    .split("panicked at ")
                    .nth(1)
                    .map(|rest| {
                        rest.split_whitespace()
                            .next()
                            .unwrap_or(rest)
                            .trim_end_matches(':')
                    })
                    .unwrap_or("?");
                let timeout = match &self.grpc_timeout {
                    Some(t) if t.len() > 9 => format!(", grpc-timeout {t}"),
                    _ => String::new(),
                };
                format!("panic at {at}{timeout}")
            }
            "answer" => {
                let head: String = self.detail.chars().take(60).collect();
                format!("answer: {head}")
            }
            other => other.to_string(),
        }
    }

    /// The finding in a few lines; the body's hex cut at `max_hex` bytes.
    pub fn render(&self, max_hex: usize) -> String {
        let mut text = format!("[{}] {}", self.what, self.detail);
        if let Some(index) = self.index {
            let _ = write!(
                text,
                "\n    method {}, seed {}, message index {index}, mutations {:?}\n    replay: cargo xtask fuzz --seed {} --only {index}",
                self.method, self.seed, self.mutations, self.seed
            );
            if let Some(timeout) = &self.grpc_timeout {
                let _ = write!(text, "\n    header grpc-timeout: {timeout}");
            }
            let shown = &self.body[..self.body.len().min(max_hex)];
            let _ = write!(
                text,
                "\n    body ({} bytes{}): {}",
                self.body.len(),
                if shown.len() < self.body.len() {
                    ", cut"
                } else {
                    ""
                },
                proto::hex(shown)
            );
        }
        text
    }
}

/// What a run did and found.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub messages: u64,
    /// From the first message to the end of the final checks.
    pub elapsed: Duration,
    /// Building or finding the binary, starting the node, writing the data.
    pub setup: Duration,
    pub checkpoints: u64,
    /// Answers per method (`listener path`), by outcome.
    pub per_method: BTreeMap<String, BTreeMap<String, u64>>,
    pub codes: BTreeMap<String, u64>,
    pub mutations: BTreeMap<String, u64>,
    pub findings: Vec<Finding>,
    /// Not failures, worth a look: timeouts, streams the server reset,
    /// broken connections; by kind, how many and the first few.
    pub notes: BTreeMap<String, (u64, Vec<String>)>,
    /// The node's data directory and log, kept after a failed run.
    pub kept: Option<PathBuf>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }

    fn note(&mut self, kind: String, note: String) {
        let (count, examples) = self.notes.entry(kind).or_default();
        *count += 1;
        if examples.len() < 5 {
            examples.push(note);
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(
            text,
            "fuzz summary: seed {}, {} messages in {:.1} s ({:.0}/s; setup {:.1} s), {} health checkpoints",
            self.seed,
            self.messages,
            secs,
            self.messages as f64 / secs.max(0.001),
            self.setup.as_secs_f64(),
            self.checkpoints
        );
        let _ = writeln!(text, "answers by code:");
        for (code, count) in &self.codes {
            let _ = writeln!(text, "  {code:<52} {count:>8}");
        }
        let _ = writeln!(text, "messages per method:");
        for (method, outcomes) in &self.per_method {
            let total: u64 = outcomes.values().sum();
            let detail: Vec<String> = outcomes
                .iter()
                .map(|(code, n)| {
                    let short = if code == FRAMEWORK_LABEL {
                        "Internal(malformed)"
                    } else {
                        code
                    };
                    format!("{short} {n}")
                })
                .collect();
            let _ = writeln!(text, "  {method:<78} {total:>7}  {}", detail.join(", "));
        }
        let _ = writeln!(text, "mutations applied:");
        let mutations: Vec<String> = self
            .mutations
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        for line in mutations.chunks(6) {
            let _ = writeln!(text, "  {}", line.join(", "));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(text, "notes (not failures):");
            for (kind, (count, examples)) in &self.notes {
                let _ = writeln!(text, "  {kind}: {count}, first:");
                for example in examples {
                    let _ = writeln!(text, "    {example}");
                }
            }
        }
        if self.findings.is_empty() {
            let _ = writeln!(text, "findings: none (seed {})", self.seed);
        } else {
            let mut groups: BTreeMap<String, Vec<&Finding>> = BTreeMap::new();
            for finding in &self.findings {
                groups.entry(finding.signature()).or_default().push(finding);
            }
            let _ = writeln!(
                text,
                "findings: {} in {} group(s) (seed {})",
                self.findings.len(),
                groups.len(),
                self.seed
            );
            for (signature, members) in &groups {
                let _ = writeln!(text, "- {} x {signature}", members.len());
                // The smallest reproducers first.
                let mut members = members.clone();
                members.sort_by_key(|f| f.body.len());
                for finding in members.iter().take(3) {
                    let _ = writeln!(text, "  {}", finding.render(512).replace('\n', "\n  "));
                }
                let others: Vec<String> = members
                    .iter()
                    .skip(3)
                    .filter_map(|f| f.index.map(|i| i.to_string()))
                    .collect();
                if !others.is_empty() {
                    let shown = others.len().min(40);
                    let _ = writeln!(
                        text,
                        "  also at message index {}{}",
                        others[..shown].join(", "),
                        if others.len() > shown { ", ..." } else { "" }
                    );
                }
            }
        }
        if let Some(kept) = &self.kept {
            let _ = writeln!(text, "node data and log kept in {}", kept.display());
        }
        text
    }
}

/// The node's listeners as connections.
struct Connections {
    api: Arc<Connection>,
    replication: Arc<Connection>,
    maintenance: Arc<Connection>,
}

impl Connections {
    fn new(endpoints: &Endpoints) -> Self {
        Connections {
            api: Connection::new(endpoints.api),
            replication: Connection::new(endpoints.replication),
            maintenance: Connection::new(endpoints.maintenance),
        }
    }

    fn of(&self, listener: Listener) -> &Connection {
        match listener {
            Listener::Api => &self.api,
            Listener::Replication => &self.replication,
            Listener::Maintenance => &self.maintenance,
        }
    }
}

/// A valid unary call with one message; the answer's first message when OK.
async fn unary(conn: &Connection, path: &str, message: &[u8]) -> Result<Vec<u8>, String> {
    let body = frames(&[message.to_vec()]);
    let outcome = conn
        .call(&Call {
            path,
            body: &body,
            split: None,
            reset: false,
            encoding: None,
            timeout_header: None,
            max_responses: usize::MAX,
            timeout: Duration::from_secs(15),
        })
        .await;
    match outcome {
        Outcome::Status {
            code: 0, responses, ..
        } => Ok(responses.first().map(|b| b.to_vec()).unwrap_or_default()),
        Outcome::Status { code, message, .. } => {
            Err(format!("{} {message}", wire::code_name(code)))
        }
        other => Err(format!("{other:?}")),
    }
}

/// Retries `attempt` until it succeeds or `within` passes; the last error.
async fn retry<T, F, Fut>(within: Duration, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn data_key(i: usize) -> Vec<u8> {
    format!("key-{i:03}").into_bytes()
}

fn data_value(seed: u64, i: usize) -> Vec<u8> {
    let mut value = format!("value-{i}-seed-{seed}-").into_bytes();
    value.extend((0..=255u8).map(|b| b.wrapping_mul(i as u8 | 1)));
    value
}

async fn health_serving(conns: &Connections) -> Result<(), String> {
    let request = proto::HealthCheckRequest {
        service: String::new(),
    }
    .encode_to_vec();
    let answer = unary(&conns.api, "/grpc.health.v1.Health/Check", &request).await?;
    let status = proto::HealthCheckResponse::decode(answer.as_slice())
        .map_err(|err| format!("health answer does not decode: {err}"))?
        .status;
    if status == 1 {
        Ok(())
    } else {
        Err(format!("health status {status}, not SERVING"))
    }
}

/// Every key of [`DATA_TABLE`], read linearizably.
async fn read_data_table(conns: &Connections) -> Result<Vec<KeyValue>, String> {
    let request = api::RangeRequest {
        table: DATA_TABLE.as_bytes().to_vec(),
        key: vec![0],
        range_end: vec![0],
        linearizable: true,
        ..api::RangeRequest::default()
    }
    .encode_to_vec();
    let answer = unary(&conns.api, "/regatta.v1.KV/Range", &request).await?;
    let answer = api::RangeResponse::decode(answer.as_slice())
        .map_err(|err| format!("Range answer does not decode: {err}"))?;
    if answer.more {
        return Err("Range of the data table says there is more".into());
    }
    Ok(answer.kvs)
}

/// Writes the keys of [`DATA_TABLE`] and returns them as stored.
async fn write_data_table(conns: &Connections, seed: u64) -> Result<Vec<KeyValue>> {
    for i in 0..DATA_KEYS {
        let request = api::PutRequest {
            table: DATA_TABLE.as_bytes().to_vec(),
            key: data_key(i),
            value: data_value(seed, i),
            prev_kv: false,
        }
        .encode_to_vec();
        retry(Duration::from_secs(30), || {
            unary(&conns.api, "/regatta.v1.KV/Put", &request)
        })
        .await
        .map_err(|err| anyhow::anyhow!("writing {DATA_TABLE} key {i}: {err}"))?;
    }
    let stored = retry(Duration::from_secs(30), || read_data_table(conns))
        .await
        .map_err(|err| anyhow::anyhow!("reading {DATA_TABLE} back: {err}"))?;
    if stored.len() != DATA_KEYS
        || stored
            .iter()
            .enumerate()
            .any(|(i, kv)| kv.key != data_key(i) || kv.value != data_value(seed, i))
    {
        bail!(
            "{DATA_TABLE} does not read back what was just written ({} keys)",
            stored.len()
        );
    }
    Ok(stored)
}

/// Makes sure the two tables exist (a node the fuzzer did not start).
async fn create_tables(conns: &Connections) -> Result<()> {
    for name in [TARGET_TABLE, DATA_TABLE] {
        let request = api::CreateTableRequest {
            name: name.to_string(),
            config: None,
        }
        .encode_to_vec();
        match unary(&conns.api, "/regatta.v1.Tables/Create", &request).await {
            Ok(_) => {}
            Err(err) if err.contains("already exists") => {}
            Err(err) => bail!("creating table {name}: {err}"),
        }
    }
    Ok(())
}

/// How many answers of a stream the fuzzer reads before it stops.
fn max_responses(kind: Kind) -> usize {
    match kind {
        // Watch never ends by itself.
        Kind::HealthWatch => 1,
        _ => 1024,
    }
}

/// Sends one planned call.
async fn send(conns: &Connections, plan: &Plan, timeout: Duration) -> Outcome {
    conns
        .of(plan.method.listener)
        .call(&Call {
            path: plan.method.path,
            body: &plan.body,
            split: plan.split,
            reset: plan.ending == Ending::Reset,
            encoding: plan.encoding,
            timeout_header: plan.timeout.as_deref(),
            max_responses: max_responses(plan.method.kind),
            timeout,
        })
        .await
}

/// The outcome's label and, when it breaks a rule, the finding.
fn judge(plan: &Plan, outcome: &Outcome, strict: bool) -> (String, Option<String>) {
    let label = outcome.label();
    let responses = match outcome {
        Outcome::Status {
            code: 13, message, ..
        } => {
            let reasons = anomalies(plan);
            let framework = FRAMEWORK_INTERNAL.iter().any(|p| message.starts_with(p));
            if framework && !reasons.is_empty() && !strict {
                return (FRAMEWORK_LABEL.to_string(), None);
            }
            let why = if reasons.is_empty() {
                "the request is well-formed".to_string()
            } else if framework {
                format!("malformed request ({})", reasons.join("; "))
            } else {
                format!(
                    "not gRPC's message for the malformed request ({})",
                    reasons.join("; ")
                )
            };
            return (label, Some(format!("Internal answer {message:?}: {why}")));
        }
        Outcome::Status {
            code: 2, message, ..
        } => return (label, Some(format!("Unknown answer {message:?}"))),
        Outcome::Status { code, message, .. } if !(0..=16).contains(code) => {
            return (label, Some(format!("grpc-status {code} ({message:?})")))
        }
        Outcome::Status {
            code: 0,
            responses,
            torn,
            ..
        } => {
            if *torn {
                return (label, Some("the answer ends inside a gRPC frame".into()));
            }
            responses
        }
        Outcome::Cut { responses } => responses,
        Outcome::Http(status) => {
            return (label, Some(format!("HTTP status {status} instead of 200")))
        }
        _ => return (label, None),
    };
    for (i, response) in responses.iter().enumerate() {
        if let Err(err) = plan.method.kind.decode_response(response) {
            return (
                label,
                Some(format!("answer message {i} does not decode: {err}")),
            );
        }
    }
    (label, None)
}

/// The run's state between batches.
struct Run {
    options: Options,
    conns: Connections,
    node: Option<NodeProcess>,
    summary: Summary,
    stored: Vec<KeyValue>,
    findings_file: Option<std::fs::File>,
    /// Panic lines in the node log already reported.
    panics_seen: usize,
}

/// Lines of a node log that report a panic.
fn panic_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("panicked at"))
        .collect()
}

impl Run {
    fn record_finding(&mut self, finding: Finding) {
        if let Some(file) = &mut self.findings_file {
            use std::io::Write;
            let _ = writeln!(file, "{}\n", finding.render(usize::MAX));
        }
        if self.options.progress {
            println!("fuzz: FINDING {}", finding.render(256));
        }
        self.summary.findings.push(finding);
    }

    /// Whether the node process is gone (and the finding made).
    fn node_exited(&mut self, last: Option<&Plan>) -> bool {
        let Some(node) = self.node.as_mut() else {
            return false;
        };
        let Some(status) = node.exited() else {
            return false;
        };
        let tail: Vec<String> = node
            .log_text()
            .lines()
            .rev()
            .take(30)
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut finding = Finding::check(
            "node exited",
            self.options.seed,
            format!(
                "the node process exited ({status}); last log lines:\n{}",
                tail.join("\n")
            ),
        );
        if let Some(plan) = last {
            finding.method = plan.method.label();
            finding.index = Some(plan.index);
            finding.mutations = plan.mutations.clone();
            finding.grpc_timeout = plan.timeout.clone();
            finding.body = plan.body.clone();
        }
        self.record_finding(finding);
        true
    }

    fn tally(&mut self, plan: &Plan, outcome: &Outcome) {
        let (label, broken) = judge(plan, outcome, self.options.strict_internal);
        *self.summary.codes.entry(label.clone()).or_default() += 1;
        *self
            .summary
            .per_method
            .entry(plan.method.label())
            .or_default()
            .entry(label)
            .or_default() += 1;
        for mutation in &plan.mutations {
            let name = mutation.split('@').next().unwrap_or(mutation);
            *self.summary.mutations.entry(name.to_string()).or_default() += 1;
        }
        self.summary.messages += 1;
        match outcome {
            Outcome::Timeout | Outcome::StreamError(_) | Outcome::ConnectionError(_) => {
                let note = format!(
                    "{} seed {} index {} {:?} grpc-timeout {:?}: {outcome:?}",
                    plan.method.label(),
                    plan.seed,
                    plan.index,
                    plan.mutations,
                    plan.timeout
                );
                self.summary.note(outcome.label(), note);
            }
            _ => {}
        }
        if let Some(detail) = broken {
            self.record_finding(Finding {
                what: "answer".into(),
                method: plan.method.label(),
                seed: plan.seed,
                index: Some(plan.index),
                mutations: plan.mutations.clone(),
                detail,
                grpc_timeout: plan.timeout.clone(),
                body: plan.body.clone(),
            });
        }
    }

    fn panic_count(&self) -> usize {
        self.node
            .as_ref()
            .map_or(0, |node| panic_lines(&node.log_text()).len())
    }

    /// New panics in the node log since the last look: the batch's calls
    /// are sent again one at a time, suspects first (calls whose connection
    /// broke or stream failed: a panic in a connection's task drops it),
    /// until as many have made the count grow as there were new panics;
    /// each of them is a reproducer.
    async fn attribute_panics(&mut self, batch: &[(Plan, Outcome)]) {
        let now = self.panic_count();
        if now <= self.panics_seen {
            return;
        }
        let seed = self.options.seed;
        let new_panics = now - self.panics_seen;
        let new_lines: Vec<String> = self
            .node
            .as_ref()
            .map(|node| {
                panic_lines(&node.log_text())
                    .into_iter()
                    .skip(self.panics_seen)
                    .take(3)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        self.panics_seen = now;
        let suspect = |o: &Outcome| {
            matches!(
                o,
                Outcome::ConnectionError(_) | Outcome::StreamError(_) | Outcome::Timeout
            )
        };
        let order = batch
            .iter()
            .filter(|(_, o)| suspect(o))
            .chain(batch.iter().filter(|(_, o)| !suspect(o)))
            .map(|(plan, _)| plan);
        let mut attributed = 0;
        for plan in order {
            if attributed >= new_panics {
                break;
            }
            let before = self.panic_count();
            let outcome = send(&self.conns, plan, self.options.call_timeout).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let after = self.panic_count();
            self.panics_seen = self.panics_seen.max(after);
            if after > before {
                attributed += 1;
                let line = self
                    .node
                    .as_ref()
                    .and_then(|node| panic_lines(&node.log_text()).last().map(|l| l.to_string()))
                    .unwrap_or_default();
                self.record_finding(Finding {
                    what: "panic".into(),
                    method: plan.method.label(),
                    seed,
                    index: Some(plan.index),
                    mutations: plan.mutations.clone(),
                    detail: format!(
                        "the node panicked handling this call (replayed alone: {}; grpc-timeout {:?}, grpc-encoding {:?}): {line}",
                        outcome.label(),
                        plan.timeout,
                        plan.encoding
                    ),
                    grpc_timeout: plan.timeout.clone(),
                    body: plan.body.clone(),
                });
            }
        }
        if attributed == 0 {
            self.record_finding(Finding::check(
                "panic",
                seed,
                format!(
                    "the node log has {new_panics} new panic(s), not reproduced by any call of the batch alone: {}",
                    new_lines.join("\n")
                ),
            ));
        }
    }

    /// Health and a known key.
    async fn checkpoint(&mut self, after: u64) {
        self.summary.checkpoints += 1;
        let seed = self.options.seed;
        if let Err(err) = retry(Duration::from_secs(15), || health_serving(&self.conns)).await {
            self.record_finding(Finding::check(
                "health",
                seed,
                format!("after {after} messages, gRPC health check failed: {err}"),
            ));
        }
        let i = (after as usize / CHECKPOINT_EVERY as usize) % DATA_KEYS;
        let request = api::RangeRequest {
            table: DATA_TABLE.as_bytes().to_vec(),
            key: data_key(i),
            linearizable: true,
            ..api::RangeRequest::default()
        }
        .encode_to_vec();
        let (conns, request, expected) = (&self.conns, &request, &self.stored[i]);
        let read = retry(Duration::from_secs(15), || async move {
            let answer = unary(&conns.api, "/regatta.v1.KV/Range", request).await?;
            let answer = api::RangeResponse::decode(answer.as_slice())
                .map_err(|err| format!("Range answer does not decode: {err}"))?;
            if answer.kvs.len() == 1 && answer.kvs[0] == *expected {
                Ok(())
            } else {
                Err(format!("Range of key {i} answered {:?}", answer.kvs))
            }
        })
        .await;
        if let Err(err) = read {
            self.record_finding(Finding::check(
                "known key",
                seed,
                format!("after {after} messages, reading {DATA_TABLE} key-{i:03}: {err}"),
            ));
        }
    }

    /// Deletes every table but the two of the run and the pool, and creates
    /// the target table again when the fuzz deleted it (valid calls, not
    /// counted). Keeps the node from collecting hundreds of Raft groups.
    async fn remove_extra_tables(&mut self) {
        let request = api::ListTablesRequest {}.encode_to_vec();
        let Ok(answer) = unary(&self.conns.api, "/regatta.v1.Tables/List", &request).await else {
            return;
        };
        let Ok(list) = api::ListTablesResponse::decode(answer.as_slice()) else {
            return;
        };
        let names: Vec<String> = list.tables.into_iter().map(|t| t.name).collect();
        for name in &names {
            if name == DATA_TABLE || name == TARGET_TABLE || TABLE_POOL.contains(&name.as_str()) {
                continue;
            }
            let request = api::DeleteTableRequest { name: name.clone() }.encode_to_vec();
            let _ = unary(&self.conns.api, "/regatta.v1.Tables/Delete", &request).await;
        }
        if !names.iter().any(|n| n == TARGET_TABLE) {
            let request = api::CreateTableRequest {
                name: TARGET_TABLE.to_string(),
                config: None,
            }
            .encode_to_vec();
            let _ = unary(&self.conns.api, "/regatta.v1.Tables/Create", &request).await;
            // Until the new table has a leader.
            let read = api::RangeRequest {
                table: TARGET_TABLE.as_bytes().to_vec(),
                key: b"k000".to_vec(),
                linearizable: true,
                ..api::RangeRequest::default()
            }
            .encode_to_vec();
            let (conns, read) = (&self.conns, &read);
            let _ = retry(Duration::from_secs(10), || async move {
                unary(&conns.api, "/regatta.v1.KV/Range", read).await
            })
            .await;
        }
    }

    /// The data table as it was before the run; the node log without panics.
    async fn final_checks(&mut self) {
        let seed = self.options.seed;
        match retry(Duration::from_secs(30), || read_data_table(&self.conns)).await {
            Ok(now) if now == self.stored => {}
            Ok(now) => {
                let changed: Vec<String> = (0..DATA_KEYS.max(now.len()))
                    .filter(|&i| now.get(i) != self.stored.get(i))
                    .take(5)
                    .map(|i| {
                        format!(
                            "#{i}: before {:?}, after {:?}",
                            self.stored
                                .get(i)
                                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned()),
                            now.get(i).map(|kv| (
                                String::from_utf8_lossy(&kv.key).into_owned(),
                                kv.mod_revision
                            ))
                        )
                    })
                    .collect();
                self.record_finding(Finding::check(
                    "data changed",
                    seed,
                    format!(
                        "{DATA_TABLE} holds {} keys, {} before the run; first differences: {}",
                        now.len(),
                        self.stored.len(),
                        changed.join("; ")
                    ),
                ));
            }
            Err(err) => self.record_finding(Finding::check(
                "data unreadable",
                seed,
                format!("reading {DATA_TABLE} after the run: {err}"),
            )),
        }
        if let Some(node) = &self.node {
            let log = node.log_text();
            let panics = panic_lines(&log);
            if panics.len() > self.panics_seen {
                let detail = format!(
                    "the node log has {} panic line(s) not seen during the batches: {}",
                    panics.len() - self.panics_seen,
                    panics[self.panics_seen..].join("\n")
                );
                self.record_finding(Finding::check("panic in log", seed, detail));
            }
        }
    }
}

/// Runs the fuzzer as `options` say.
pub async fn run(options: Options) -> Result<Summary> {
    let started = Instant::now();
    let (node, endpoints) = match options.endpoints {
        Some(endpoints) => (None, endpoints),
        None => {
            let binary = node::server_binary(options.binary.clone())?;
            let node = NodeProcess::start(&binary)?;
            let endpoints = node.endpoints;
            if options.progress {
                println!(
                    "fuzz: node pid {} ({}), api {}, replication {}, maintenance {}, log {}",
                    node.pid(),
                    binary.display(),
                    endpoints.api,
                    endpoints.replication,
                    endpoints.maintenance,
                    node.log.display()
                );
            }
            (Some(node), endpoints)
        }
    };
    let findings_file = match &options.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let path = dir.join(format!("findings-seed-{}.txt", options.seed));
            Some(std::fs::File::create(&path).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let mut run = Run {
        conns: Connections::new(&endpoints),
        node,
        summary: Summary {
            seed: options.seed,
            ..Summary::default()
        },
        stored: Vec::new(),
        findings_file,
        options,
        panics_seen: 0,
    };
    // Ready: health SERVING (every table has a leader).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let exited = run.node.as_mut().and_then(NodeProcess::exited);
        let last = match exited {
            Some(status) => Err(format!("the node exited at start ({status})")),
            None => health_serving(&run.conns).await,
        };
        match last {
            Ok(()) => break,
            Err(err) if exited.is_some() || Instant::now() >= deadline => {
                let log = run
                    .node
                    .as_ref()
                    .map(NodeProcess::log_text)
                    .unwrap_or_default();
                bail!("the node did not come up: {err}\n{log}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if run.node.is_none() {
        create_tables(&run.conns).await?;
    }
    run.stored = write_data_table(&run.conns, run.options.seed).await?;
    run.summary.setup = started.elapsed();
    let fuzzing = Instant::now();
    if let Some(index) = run.options.only {
        replay(&mut run, index).await;
    } else {
        fuzz(&mut run).await;
    }
    if !run.summary.findings.iter().any(|f| f.what == "node exited") {
        run.final_checks().await;
        run.node_exited(None);
    }
    run.summary.elapsed = fuzzing.elapsed();
    if !run.summary.passed() && run.options.keep_on_failure {
        if let Some(node) = run.node.as_mut() {
            run.summary.kept = node.keep();
        }
    }
    Ok(run.summary)
}

async fn fuzz(run: &mut Run) {
    let seed = run.options.seed;
    let total = run.options.messages;
    let started = Instant::now();
    let mut next = 0;
    while next < total {
        let end = (next + CHECKPOINT_EVERY).min(total);
        let conns = &run.conns;
        let timeout = run.options.call_timeout;
        let outcomes: Vec<(Plan, Outcome)> = futures::stream::iter(next..end)
            .map(|index| async move {
                let plan = mutate::plan(seed, index);
                let outcome = send(conns, &plan, timeout).await;
                (plan, outcome)
            })
            .buffer_unordered(run.options.concurrency.max(1))
            .collect()
            .await;
        let mut outcomes = outcomes;
        outcomes.sort_by_key(|(plan, _)| plan.index);
        for (plan, outcome) in &outcomes {
            run.tally(plan, outcome);
        }
        // The call that was in flight when a connection broke is the
        // suspect when the node is gone.
        let suspect = outcomes
            .iter()
            .find(|(_, o)| matches!(o, Outcome::ConnectionError(_)))
            .map(|(plan, _)| plan);
        if run.node_exited(suspect) {
            break;
        }
        // The target table back first (the batch may have deleted it), so
        // that replays meet the state the calls first met.
        run.remove_extra_tables().await;
        run.attribute_panics(&outcomes).await;
        run.checkpoint(end).await;
        if run.node_exited(None) {
            break;
        }
        if run.options.progress {
            println!(
                "fuzz: {end}/{total} messages, {:.0} s, {} finding(s)",
                started.elapsed().as_secs_f64(),
                run.summary.findings.len()
            );
        }
        next = end;
    }
}

/// Sends message `index` alone and prints it with its answer.
async fn replay(run: &mut Run, index: u64) {
    let plan = mutate::plan(run.options.seed, index);
    println!(
        "fuzz: message {index} of seed {}: {} mutations {:?}, encoding {:?}, grpc-timeout {:?}, split {:?}, {:?}",
        run.options.seed,
        plan.method.label(),
        plan.mutations,
        plan.encoding,
        plan.timeout,
        plan.split,
        plan.ending
    );
    println!(
        "fuzz: body ({} bytes): {}",
        plan.body.len(),
        proto::hex(&plan.body)
    );
    println!("fuzz: malformed at the gRPC level: {:?}", anomalies(&plan));
    let outcome = send(&run.conns, &plan, run.options.call_timeout).await;
    println!("fuzz: answer: {outcome:?}");
    run.tally(&plan, &outcome);
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.remove_extra_tables().await;
    run.attribute_panics(&[(plan.clone(), outcome)]).await;
    if !run.node_exited(Some(&plan)) {
        run.checkpoint(1).await;
    }
}
