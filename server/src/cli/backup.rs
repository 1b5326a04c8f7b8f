//! `regatta backup` and `regatta restore` (`docs/backups.md`): every table of
//! a leader cluster to a directory of `<table>.bak` files and a
//! `manifest.json`, and back. Progress per table: a bar with bytes and rate
//! on a terminal, plain lines otherwise, JSON lines with `--json`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use md5::{Digest, Md5};
use regatta_proto::maintenance::v1::maintenance_client::MaintenanceClient;
use regatta_proto::maintenance::v1::restore_message::Data;
use regatta_proto::maintenance::v1::{BackupRequest, RestoreInfo, RestoreMessage};
use regatta_proto::replication::v1::metadata_client::MetadataClient;
use regatta_proto::replication::v1::{MetadataRequest, SnapshotChunk};
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::backup::{self, Manifest, ManifestTable};

/// Bytes per uploaded chunk (the server streams backups in the same size).
const CHUNK_BYTES: usize = 1024 * 1024;

/// How to reach a node's maintenance API.
#[derive(Debug, Clone, Args)]
pub struct MaintenanceAddress {
    /// The maintenance API of a node (`host:port`, or an `http(s)://` or
    /// `unix(s)://` URL): its --maintenance.address, or its --api.address
    /// when it has a --maintenance.token.
    #[arg(
        long,
        env = "REGATTA_MAINTENANCE_ADDRESS",
        default_value = "127.0.0.1:8445"
    )]
    pub address: String,
    /// The bearer token the server's `--maintenance.token` requires.
    #[arg(long, env = "REGATTA_MAINTENANCE_TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: super::client::ClientTlsArgs,
    /// Print JSON lines instead of progress bars or plain lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub server: MaintenanceAddress,
    /// Directory for the `.bak` files and `manifest.json` (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub server: MaintenanceAddress,
    /// Directory of a backup (`manifest.json` and the files it names).
    #[arg(long)]
    pub dir: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

type Authed = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// `authorization: Bearer <token>` on every call, or nothing without a
    /// token.
    pub fn from_token(token: Option<&str>) -> Result<Bearer, String> {
        let value = match token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| "--token must be printable ASCII".to_string())?,
            ),
            None => None,
        };
        Ok(Bearer(value))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn connect(server: &MaintenanceAddress) -> Result<(Channel, Bearer), String> {
    let channel = server.tls.connect(&server.address).await?;
    Ok((channel, Bearer::from_token(server.token.as_deref())?))
}

/// A failed call as an operator reads it.
fn call_error(what: &str, status: tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unauthenticated => {
            format!(
                "{what}: authentication failed: {} (check --token)",
                status.message()
            )
        }
        tonic::Code::Unavailable => {
            format!("{what}: the server is unavailable: {}", status.message())
        }
        code => format!("{what}: {code:?}: {}", status.message()),
    }
}

/// Progress of one table, in the output mode asked for.
enum Progress {
    Bar(indicatif::ProgressBar),
    Plain { table: String, started: Instant },
    Json { table: String, started: Instant },
}

impl Progress {
    fn start(json: bool, verb: &str, table: &str, total: Option<u64>) -> Progress {
        let started = Instant::now();
        if json {
            println!(
                "{}",
                json!({"event": "start", "action": verb, "table": table, "bytes_total": total})
            );
            return Progress::Json {
                table: table.to_string(),
                started,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = match total {
                Some(total) => indicatif::ProgressBar::new(total),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let template = match total {
                Some(_) => "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
                None => "{msg:30} {spinner} {bytes} {bytes_per_sec} {elapsed}",
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(format!("{verb} {table}"));
            return Progress::Bar(bar);
        }
        eprintln!("{verb} {table} ...");
        Progress::Plain {
            table: table.to_string(),
            started,
        }
    }

    fn bar(&self) -> Option<indicatif::ProgressBar> {
        match self {
            Progress::Bar(bar) => Some(bar.clone()),
            _ => None,
        }
    }

    fn advance(&self, bytes: u64) {
        if let Progress::Bar(bar) = self {
            bar.inc(bytes);
        }
    }

    fn finish(self, bytes: u64, detail: &str) {
        match self {
            Progress::Bar(bar) => bar.finish(),
            Progress::Plain { table, started } => {
                let seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "{table}: {bytes} bytes in {seconds:.1} s ({:.1} MB/s){detail}",
                    bytes as f64 / 1e6 / seconds.max(1e-3)
                );
            }
            Progress::Json { table, started } => println!(
                "{}",
                json!({"event": "done", "table": table, "bytes": bytes,
                       "seconds": started.elapsed().as_secs_f64(), "detail": detail.trim()})
            ),
        }
    }
}

pub fn run_backup(args: BackupArgs) -> ExitCode {
    finish(
        "backup",
        runtime().and_then(|rt| rt.block_on(backup_all(&args))),
    )
}

pub fn run_restore(args: RestoreArgs) -> ExitCode {
    finish(
        "restore",
        runtime().and_then(|rt| rt.block_on(restore_all(&args))),
    )
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("starting the runtime: {e}"))
}

fn finish(command: &str, outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("regatta {command}: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn backup_all(args: &BackupArgs) -> Result<(), String> {
    let (channel, bearer) = connect(&args.server).await?;
    let mut metadata = MetadataClient::with_interceptor(channel.clone(), bearer.clone());
    let mut tables: Vec<String> = metadata
        .get(MetadataRequest {})
        .await
        .map_err(|status| call_error("listing tables", status))?
        .into_inner()
        .tables
        .into_iter()
        .map(|table| table.name)
        .collect();
    tables.sort();
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("creating {}: {e}", args.dir.display()))?;
    let started = backup::now_rfc3339();
    let mut client = MaintenanceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(8 * 1024 * 1024);
    let mut entries = Vec::new();
    for table in &tables {
        let file_name = backup::file_name(table).map_err(|e| e.to_string())?;
        let md5 = backup_table(&mut client, args, table, &args.dir.join(&file_name)).await?;
        entries.push(ManifestTable {
            name: table.clone(),
            kind: "REPLICATED".into(),
            file_name,
            md5,
        });
    }
    let manifest = Manifest {
        started,
        finished: backup::now_rfc3339(),
        tables: entries,
    };
    backup::write_manifest(&args.dir, &manifest).map_err(|e| e.to_string())?;
    report(args.server.json, "backup", &args.dir, tables.len());
    Ok(())
}

fn report(json: bool, action: &str, dir: &Path, tables: usize) {
    if json {
        println!(
            "{}",
            json!({"event": "finished", "action": action, "dir": dir, "tables": tables})
        );
    } else {
        eprintln!("{action} of {tables} tables finished: {}", dir.display());
    }
}

/// Streams one table into `path` (through a fsynced temporary file);
/// returns the file's MD5.
async fn backup_table(
    client: &mut MaintenanceClient<Authed>,
    args: &BackupArgs,
    table: &str,
    path: &Path,
) -> Result<String, String> {
    let what = format!("backing up {table}");
    let mut stream = client
        .backup(BackupRequest {
            table: table.as_bytes().to_vec(),
        })
        .await
        .map_err(|status| call_error(&what, status))?
        .into_inner();
    let progress = Progress::start(args.server.json, "backup", table, None);
    let temporary = path.with_extension("bak.tmp");
    let mut file =
        std::fs::File::create(&temporary).map_err(|e| format!("{}: {e}", temporary.display()))?;
    let mut hasher = Md5::new();
    let mut bytes = 0u64;
    while let Some(SnapshotChunk { data, .. }) = stream
        .message()
        .await
        .map_err(|status| call_error(&what, status))?
    {
        file.write_all(&data)
            .map_err(|e| format!("{}: {e}", temporary.display()))?;
        hasher.update(&data);
        bytes += data.len() as u64;
        progress.advance(data.len() as u64);
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, path).map_err(|e| format!("{}: {e}", path.display()))?;
    let md5 = backup::hex_lower(&hasher.finalize());
    progress.finish(bytes, &format!(", md5 {md5}"));
    Ok(md5)
}

async fn restore_all(args: &RestoreArgs) -> Result<(), String> {
    // Every file is checked before the server is touched.
    let manifest = backup::verify(&args.dir).map_err(|e| e.to_string())?;
    if !args.yes && !confirm(args, &manifest)? {
        return Err("not confirmed; nothing was restored (pass --yes to skip the question)".into());
    }
    let (channel, bearer) = connect(&args.server).await?;
    let mut client = MaintenanceClient::with_interceptor(channel, bearer)
        .max_encoding_message_size(8 * 1024 * 1024);
    for table in &manifest.tables {
        let path = backup::table_file(&args.dir, table).map_err(|e| e.to_string())?;
        restore_table(&mut client, args, &table.name, &path).await?;
    }
    report(
        args.server.json,
        "restore",
        &args.dir,
        manifest.tables.len(),
    );
    Ok(())
}

fn confirm(args: &RestoreArgs, manifest: &Manifest) -> Result<bool, String> {
    let names: Vec<&str> = manifest.tables.iter().map(|t| t.name.as_str()).collect();
    eprint!(
        "Restore {} table(s) ({}) into {}? Their content will be replaced. [y/N] ",
        names.len(),
        names.join(", "),
        args.server.address
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Uploads one file: the table's info, then 1 MiB chunks read as they go.
async fn restore_table(
    client: &mut MaintenanceClient<Authed>,
    args: &RestoreArgs,
    table: &str,
    path: &Path,
) -> Result<(), String> {
    let total = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let progress = Progress::start(args.server.json, "restore", table, Some(total));
    let (sender, receiver) = tokio::sync::mpsc::channel::<RestoreMessage>(2);
    let info = RestoreMessage {
        data: Some(Data::Info(RestoreInfo {
            table: table.as_bytes().to_vec(),
        })),
    };
    let file_path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        use std::io::Read;
        if sender.blocking_send(info).is_err() {
            return Ok(());
        }
        let mut file =
            std::fs::File::open(&file_path).map_err(|e| format!("{}: {e}", file_path.display()))?;
        loop {
            let mut data = vec![0u8; CHUNK_BYTES];
            let read = file
                .read(&mut data)
                .map_err(|e| format!("{}: {e}", file_path.display()))?;
            if read == 0 {
                return Ok(());
            }
            data.truncate(read);
            let chunk = SnapshotChunk {
                len: read as u64,
                data,
                index: 0,
            };
            if sender
                .blocking_send(RestoreMessage {
                    data: Some(Data::Chunk(chunk)),
                })
                .is_err()
            {
                return Ok(()); // The call ended; its status says why.
            }
        }
    });
    let bar = progress.bar();
    let counted = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
        move |message| {
            if let (Some(bar), Some(Data::Chunk(chunk))) = (&bar, &message.data) {
                bar.inc(chunk.data.len() as u64);
            }
            message
        },
    );
    let answer = client.restore(counted).await;
    let read = reader
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    answer.map_err(|status| call_error(&format!("restoring {table}"), status))?;
    read?;
    progress.finish(total, "");
    Ok(())
}
