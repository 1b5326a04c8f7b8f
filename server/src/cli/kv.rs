//! `regatta kv`: a small client for people trying the server and for scripts.

use std::io::Read;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use regatta_proto::mvcc::v1::compare::{CompareResult, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::{Compare, KeyValue, RequestOp, ResponseOp};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::storage::prefix_end;

/// Options shared by every `regatta kv` command.
#[derive(Debug, Clone, Args)]
pub struct KvArgs {
    /// Address of a node's KV API: `host:port`, or a URL (`http://`,
    /// `https://`, `unix:///path`, `unixs:///path`).
    #[arg(
        long,
        env = "REGATTA_KV_ADDRESS",
        default_value = "127.0.0.1:8443",
        global = true
    )]
    pub address: String,
    #[command(flatten)]
    pub tls: super::client::ClientTlsArgs,
    /// Print JSON (keys and values base64-encoded) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KvCommand {
    /// Write a key.
    Put {
        table: String,
        key: String,
        value: String,
    },
    /// Read a key, a range or a prefix (--prefix, --to-end and --all are
    /// streamed, as `iterate`).
    Get(ReadArgs),
    /// Stream a range or a prefix of any size (IterateRange), printing pairs
    /// as they arrive: `key=value` lines, or with --json one object a line.
    Iterate(ReadArgs),
    /// Delete a key, a range or a prefix.
    Delete {
        #[command(flatten)]
        keys: KeysArgs,
    },
    /// Run a transaction read as JSON from stdin:
    /// {"compare":[{"key":"k","result":"EQUAL","value":"v"}],
    ///  "success":[{"put":{"key":"k","value":"v"}}], "failure":[{"get":{"key":"k"}}]}
    Txn { table: String },
}

/// What a `get` or `iterate` reads.
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    keys: KeysArgs,
    #[arg(long, default_value_t = 0)]
    limit: i64,
    #[arg(long)]
    keys_only: bool,
    #[arg(long)]
    count_only: bool,
    #[arg(long)]
    linearizable: bool,
}

impl ReadArgs {
    /// The request both Range and IterateRange take.
    fn into_request(self) -> RangeRequest {
        let (table, key, range_end) = self.keys.into_request_parts();
        RangeRequest {
            table,
            key,
            range_end,
            limit: self.limit,
            keys_only: self.keys_only,
            count_only: self.count_only,
            linearizable: self.linearizable,
            ..RangeRequest::default()
        }
    }
}

/// The keys a `get`, `iterate` or `delete` selects.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    table: String,
    /// The key, or the first key of the range.
    #[arg(required_unless_present = "all")]
    key: Option<String>,
    /// End (exclusive) of the range.
    #[arg(long, conflicts_with_all = ["prefix", "to_end", "all"])]
    range_end: Option<String>,
    /// Select every key starting with KEY.
    #[arg(long, conflicts_with_all = ["to_end", "all"])]
    prefix: bool,
    /// Select every key from KEY on (the API's range_end "\0", which a shell
    /// cannot pass as an argument).
    #[arg(long, conflicts_with = "all")]
    to_end: bool,
    /// Select every key of the table.
    #[arg(long, conflicts_with = "key")]
    all: bool,
}

impl KeysArgs {
    /// Whether the selection is open-ended enough to be streamed by `get`.
    fn is_open(&self) -> bool {
        self.prefix || self.to_end || self.all
    }

    /// (table, key, range_end) as the API spells them.
    fn into_request_parts(self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        if self.all {
            return (self.table.into_bytes(), vec![0], vec![0]);
        }
        let key = self.key.unwrap_or_default().into_bytes();
        let range_end = if self.prefix {
            prefix_end(&key)
        } else if self.to_end {
            vec![0]
        } else {
            self.range_end.map(String::into_bytes).unwrap_or_default()
        };
        (self.table.into_bytes(), key, range_end)
    }
}

/// Bytes for people: printable ASCII as is, everything else escaped.
fn text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn kv_json(kv: &KeyValue) -> Value {
    json!({"key": b64(&kv.key), "value": b64(&kv.value), "create_revision": kv.create_revision, "mod_revision": kv.mod_revision})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnJson {
    #[serde(default)]
    compare: Vec<CompareJson>,
    #[serde(default)]
    success: Vec<OpJson>,
    #[serde(default)]
    failure: Vec<OpJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareJson {
    key: String,
    #[serde(default)]
    range_end: String,
    #[serde(default = "equal")]
    result: String,
    value: Option<String>,
}

fn equal() -> String {
    "EQUAL".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum OpJson {
    Get {
        key: String,
        #[serde(default)]
        range_end: String,
        #[serde(default)]
        limit: i64,
    },
    Put {
        key: String,
        value: String,
        #[serde(default)]
        prev_kv: bool,
    },
    Delete {
        key: String,
        #[serde(default)]
        range_end: String,
        #[serde(default)]
        prev_kv: bool,
    },
}

fn txn_request(table: String, input: &str) -> Result<TxnRequest, String> {
    let parsed: TxnJson =
        serde_json::from_str(input).map_err(|e| format!("reading the Txn JSON: {e}"))?;
    let compare = parsed
        .compare
        .into_iter()
        .map(|c| {
            let result = CompareResult::from_str_name(&c.result)
                .ok_or_else(|| format!("unknown compare result {:?}", c.result))?;
            Ok(Compare {
                result: result as i32,
                key: c.key.into_bytes(),
                range_end: c.range_end.into_bytes(),
                target_union: c.value.map(|v| TargetUnion::Value(v.into_bytes())),
                ..Compare::default()
            })
        })
        .collect::<Result<_, String>>()?;
    let ops = |ops: Vec<OpJson>| -> Vec<RequestOp> {
        ops.into_iter()
            .map(|op| RequestOp {
                request: Some(match op {
                    OpJson::Get {
                        key,
                        range_end,
                        limit,
                    } => Request::RequestRange(request_op::Range {
                        key: key.into_bytes(),
                        range_end: range_end.into_bytes(),
                        limit,
                        ..Default::default()
                    }),
                    OpJson::Put {
                        key,
                        value,
                        prev_kv,
                    } => Request::RequestPut(request_op::Put {
                        key: key.into_bytes(),
                        value: value.into_bytes(),
                        prev_kv,
                    }),
                    OpJson::Delete {
                        key,
                        range_end,
                        prev_kv,
                    } => Request::RequestDeleteRange(request_op::DeleteRange {
                        key: key.into_bytes(),
                        range_end: range_end.into_bytes(),
                        prev_kv,
                        ..request_op::DeleteRange::default()
                    }),
                }),
            })
            .collect()
    };
    Ok(TxnRequest {
        table: table.into_bytes(),
        compare,
        success: ops(parsed.success),
        failure: ops(parsed.failure),
    })
}

fn op_json(op: &ResponseOp) -> Value {
    use regatta_proto::mvcc::v1::response_op::Response;
    match &op.response {
        Some(Response::ResponseRange(r)) => {
            json!({"get": {"kvs": r.kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": r.more, "count": r.count}})
        }
        Some(Response::ResponsePut(p)) => {
            json!({"put": {"prev_kv": p.prev_kv.as_ref().map(kv_json)}})
        }
        Some(Response::ResponseDeleteRange(d)) => {
            json!({"delete": {"deleted": d.deleted, "prev_kvs": d.prev_kvs.iter().map(kv_json).collect::<Vec<_>>()}})
        }
        None => Value::Null,
    }
}

async fn execute(args: KvArgs) -> Result<String, String> {
    let channel = args.tls.connect(&args.address).await?;
    let mut client = KvClient::new(channel).max_decoding_message_size(8 * 1024 * 1024);
    // A transport failure (say, a client certificate the server refused)
    // says why only in the status's sources.
    let status = |s: tonic::Status| match std::error::Error::source(&s) {
        Some(cause) => format!(
            "{:?}: {}: {}",
            s.code(),
            s.message(),
            super::client::source_chain(cause)
        ),
        None => format!("{:?}: {}", s.code(), s.message()),
    };
    // An open-ended `get` (a prefix, to the end, the whole table) is
    // streamed: its result may be any size.
    let command = match args.command {
        KvCommand::Get(read) if read.keys.is_open() => KvCommand::Iterate(read),
        other => other,
    };
    match command {
        KvCommand::Put { table, key, value } => {
            let answer = client
                .put(PutRequest {
                    table: table.into_bytes(),
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                    prev_kv: false,
                })
                .await
                .map_err(status)?
                .into_inner();
            let revision = answer.header.map(|h| h.revision).unwrap_or_default();
            Ok(if args.json {
                json!({"revision": revision}).to_string()
            } else {
                format!("OK (revision {revision})")
            })
        }
        KvCommand::Iterate(read) => {
            let (keys_only, count_only) = (read.keys_only, read.count_only);
            let request = read.into_request();
            let mut stream = client
                .iterate_range(request)
                .await
                .map_err(status)?
                .into_inner();
            let mut printer = Printer {
                out: std::io::BufWriter::new(std::io::stdout().lock()),
                json: args.json,
                keys_only,
            };
            let (mut total, mut more) = (0, false);
            while let Some(message) = stream.message().await.map_err(status)? {
                total += message.count;
                more = message.more;
                match printer.pairs(&message.kvs) {
                    Ok(()) => {}
                    // The reader went away (`| head`): done, not failed.
                    Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Ok(String::new())
                    }
                    Err(err) => return Err(format!("writing the output: {err}")),
                }
            }
            let mut lines = Vec::new();
            match (count_only, args.json) {
                (true, true) => lines.push(json!({"count": total}).to_string()),
                (true, false) => lines.push(format!("count: {total}")),
                (false, _) => {}
            }
            if more && !args.json {
                lines.push("(more keys in the range)".into());
            }
            Ok(lines.join("\n"))
        }
        KvCommand::Get(read) => {
            let (keys_only, count_only) = (read.keys_only, read.count_only);
            let answer = client
                .range(read.into_request())
                .await
                .map_err(status)?
                .into_inner();
            let revision = answer.header.map(|h| h.revision).unwrap_or_default();
            if args.json {
                return Ok(json!({"kvs": answer.kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": answer.more, "count": answer.count, "revision": revision}).to_string());
            }
            let mut lines: Vec<String> = answer
                .kvs
                .iter()
                .map(|kv| {
                    if keys_only {
                        text(&kv.key)
                    } else {
                        format!("{}={}", text(&kv.key), text(&kv.value))
                    }
                })
                .collect();
            if count_only || lines.is_empty() {
                lines.push(format!("count: {}", answer.count));
            }
            if answer.more {
                lines.push("(more keys in the range)".into());
            }
            Ok(lines.join("\n"))
        }
        KvCommand::Delete { keys } => {
            let (table, key, range_end) = keys.into_request_parts();
            let answer = client
                .delete_range(DeleteRangeRequest {
                    table,
                    key,
                    range_end,
                    ..DeleteRangeRequest::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            let revision = answer.header.map(|h| h.revision).unwrap_or_default();
            Ok(if args.json {
                json!({"deleted": answer.deleted, "revision": revision}).to_string()
            } else {
                format!("deleted {} (revision {revision})", answer.deleted)
            })
        }
        KvCommand::Txn { table } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| format!("reading stdin: {e}"))?;
            let answer = client
                .txn(txn_request(table, &input)?)
                .await
                .map_err(status)?
                .into_inner();
            let revision = answer.header.map(|h| h.revision).unwrap_or_default();
            let responses: Vec<Value> = answer.responses.iter().map(op_json).collect();
            Ok(if args.json {
                json!({"succeeded": answer.succeeded, "responses": responses, "revision": revision})
                    .to_string()
            } else {
                let mut lines = vec![format!(
                    "succeeded: {} (revision {revision})",
                    answer.succeeded
                )];
                lines.extend(responses.iter().map(Value::to_string));
                lines.join("\n")
            })
        }
    }
}

/// Prints streamed pairs as they arrive.
struct Printer<W: std::io::Write> {
    out: W,
    json: bool,
    keys_only: bool,
}

impl<W: std::io::Write> Printer<W> {
    fn pairs(&mut self, kvs: &[KeyValue]) -> std::io::Result<()> {
        for kv in kvs {
            if self.json {
                writeln!(self.out, "{}", kv_json(kv))?;
            } else if self.keys_only {
                writeln!(self.out, "{}", text(&kv.key))?;
            } else {
                writeln!(self.out, "{}={}", text(&kv.key), text(&kv.value))?;
            }
        }
        self.out.flush()
    }
}

/// Runs one `regatta kv` command; errors go to stderr with exit code 1.
pub fn run(args: KvArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("regatta kv: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(output) => {
            // A streamed command has printed everything already.
            if !output.is_empty() {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("regatta kv: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_bytes_print_safely() {
        assert_eq!(text(b"plain"), "plain");
        assert_eq!(text(&[0, 0xff, b'\n']), "\\x00\\xff\\n");
    }

    #[test]
    fn txn_json_maps_onto_the_request() {
        let request = txn_request(
            "t".into(),
            r#"{"compare":[{"key":"k","result":"NOT_EQUAL","value":"v"}],"success":[{"put":{"key":"k","value":"v"}}],"failure":[{"get":{"key":"k"}}]}"#,
        )
        .expect("valid");
        assert_eq!(request.compare[0].result, CompareResult::NotEqual as i32);
        assert!(matches!(
            request.success[0].request,
            Some(Request::RequestPut(_))
        ));
        assert!(matches!(
            request.failure[0].request,
            Some(Request::RequestRange(_))
        ));
        assert!(txn_request("t".into(), r#"{"bogus":1}"#).is_err());
    }
}
