//! `regatta table` and `regatta cluster`: the Tables and Cluster APIs
//! (Regatta 0.5) from the command line, in the style of `regatta kv`:
//! text by default, one JSON object with `--json`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use regatta_proto::membership::v1::{
    membership_client, AddMemberRequest, MemberChangeResponse, RemoveMemberRequest,
};
use regatta_proto::regatta::v1::cluster_client::ClusterClient;
use regatta_proto::regatta::v1::tables_client::TablesClient;
use regatta_proto::regatta::v1::{
    CreateTableRequest, DeleteTableRequest, ListTablesRequest, MemberListRequest, StatusRequest,
};
use serde_json::{json, Value};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::backup::Bearer;

/// How to reach a node's API.
#[derive(Debug, Clone, Args)]
pub struct ApiAddress {
    /// Address of a node's API: `host:port`, or a URL (`http://`,
    /// `https://`, `unix:///path`, `unixs:///path`).
    #[arg(
        long,
        env = "REGATTA_KV_ADDRESS",
        default_value = "127.0.0.1:8443",
        global = true
    )]
    pub address: String,
    /// The bearer token the server's `--tables.token` requires (Tables only).
    #[arg(long, env = "REGATTA_TABLES_TOKEN", global = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: super::client::ClientTlsArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub server: ApiAddress,
    #[command(subcommand)]
    pub command: TableCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TableCommand {
    /// Create a table on the leader cluster.
    Create { name: String },
    /// Delete a table and its data on the leader cluster.
    Delete { name: String },
    /// List the tables of the cluster the node belongs to.
    List,
}

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub server: ApiAddress,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// The cluster's members.
    Members,
    /// The node's status per table; --config adds its settings (tokens masked).
    Status {
        #[arg(long)]
        config: bool,
    },
    /// Add a node started with --raft.join to every Raft group of the
    /// cluster; it catches up by snapshot (the maintenance API).
    AddMember {
        /// The new node's --raft.node-id, never used in this cluster before.
        #[arg(long)]
        id: u64,
        /// The new node's --raft.address, as the other members dial it.
        #[arg(long = "raft-address")]
        raft_address: String,
        #[command(flatten)]
        target: MembershipTarget,
    },
    /// Remove a node (say, one whose disk is lost) from every Raft group of
    /// the cluster, for good: its id is never used again.
    RemoveMember {
        /// The --raft.node-id of the node to remove.
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        target: MembershipTarget,
    },
}

/// Where member changes go: a node's maintenance API.
#[derive(Debug, Clone, Args)]
pub struct MembershipTarget {
    /// The maintenance API of any live member (its --maintenance.address).
    #[arg(
        long = "maintenance-address",
        env = "REGATTA_MAINTENANCE_ADDRESS",
        default_value = "127.0.0.1:8445"
    )]
    pub address: String,
    /// The bearer token its --maintenance.token requires.
    #[arg(long = "maintenance-token", env = "REGATTA_MAINTENANCE_TOKEN")]
    pub token: Option<String>,
    /// Return once the change is recorded, without waiting for every group
    /// of that node to count the new voters.
    #[arg(long = "no-wait")]
    pub no_wait: bool,
    /// How long to wait for the groups.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

type Authed = InterceptedService<Channel, Bearer>;

async fn channel(server: &ApiAddress) -> Result<Authed, String> {
    let channel = server.tls.connect(&server.address).await?;
    let bearer = Bearer::from_token(server.token.as_deref())?;
    Ok(InterceptedService::new(channel, bearer))
}

fn failed(what: &str, status: tonic::Status) -> String {
    format!("{what}: {:?}: {}", status.code(), status.message())
}

async fn table(args: TableArgs) -> Result<String, String> {
    let mut client = TablesClient::new(channel(&args.server).await?);
    let json = args.server.json;
    match args.command {
        TableCommand::Create { name } => {
            let id = client
                .create(CreateTableRequest {
                    name: name.clone(),
                    config: None,
                })
                .await
                .map_err(|status| failed("create", status))?
                .into_inner()
                .id;
            Ok(if json {
                json!({"name": name, "id": id}).to_string()
            } else {
                format!("created {name} (id {id})")
            })
        }
        TableCommand::Delete { name } => {
            client
                .delete(DeleteTableRequest { name: name.clone() })
                .await
                .map_err(|status| failed("delete", status))?;
            Ok(if json {
                json!({"name": name, "deleted": true}).to_string()
            } else {
                format!("deleted {name}")
            })
        }
        TableCommand::List => {
            let tables = client
                .list(ListTablesRequest {})
                .await
                .map_err(|status| failed("list", status))?
                .into_inner()
                .tables;
            Ok(if json {
                let tables: Vec<Value> = tables
                    .iter()
                    .map(|table| json!({"name": table.name, "id": table.id}))
                    .collect();
                json!({ "tables": tables }).to_string()
            } else {
                tables
                    .iter()
                    .map(|table| format!("{}\t{}", table.name, table.id))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

async fn cluster(args: ClusterArgs) -> Result<String, String> {
    let json = args.server.json;
    match args.command {
        ClusterCommand::AddMember {
            id,
            raft_address,
            target,
        } => {
            let request = timed(
                AddMemberRequest {
                    id,
                    address: raft_address,
                    wait: !target.no_wait,
                },
                &target,
            );
            change_members(&args.server, &target, json, |mut client| async move {
                client.add_member(request).await
            })
            .await
        }
        ClusterCommand::RemoveMember { id, target } => {
            let request = timed(
                RemoveMemberRequest {
                    id,
                    wait: !target.no_wait,
                },
                &target,
            );
            change_members(&args.server, &target, json, |mut client| async move {
                client.remove_member(request).await
            })
            .await
        }
        ClusterCommand::Members => members(&args.server).await,
        ClusterCommand::Status { config } => status(&args.server, config).await,
    }
}

async fn members(server: &ApiAddress) -> Result<String, String> {
    let mut client = ClusterClient::new(channel(server).await?);
    let json = server.json;

    let list = client
        .member_list(MemberListRequest {})
        .await
        .map_err(|status| failed("members", status))?
        .into_inner();
    Ok(if json {
        let members: Vec<Value> = list
            .members
            .iter()
            .map(|m| {
                json!({"id": m.id, "name": m.name, "peerURLs": m.peer_ur_ls,
                    "clientURLs": m.client_ur_ls})
            })
            .collect();
        json!({"cluster": list.cluster, "members": members}).to_string()
    } else {
        let mut lines = vec![format!("cluster {}", list.cluster)];
        lines.extend(list.members.iter().map(|m| {
            format!(
                "{}\t{}\t{}\t{}",
                m.id,
                m.name,
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(",")
            )
        }));
        lines.join("\n")
    })
}

async fn status(server: &ApiAddress, config: bool) -> Result<String, String> {
    let mut client = ClusterClient::new(channel(server).await?);
    let json = server.json;

    let status = client
        .status(StatusRequest { config })
        .await
        .map_err(|status| failed("status", status))?
        .into_inner();
    let mut names: Vec<&String> = status.tables.keys().collect();
    names.sort();
    let settings: Vec<(String, Value)> = status
        .config
        .iter()
        .flat_map(|config| config.fields.iter())
        .map(|(flag, value)| {
            let shown = match &value.kind {
                Some(prost_types::value::Kind::StringValue(text)) => json!(text),
                _ => Value::Null,
            };
            (flag.clone(), shown)
        })
        .collect();
    Ok(if json {
        let tables: serde_json::Map<String, Value> = names
            .iter()
            .map(|name| {
                let t = &status.tables[*name];
                (
                    (*name).clone(),
                    json!({"leader": t.leader, "raftTerm": t.raft_term,
                        "raftIndex": t.raft_index, "raftAppliedIndex": t.raft_applied_index,
                        "logSize": t.log_size, "dbSize": t.db_size}),
                )
            })
            .collect();
        let mut out = json!({"id": status.id, "version": status.version,
            "tables": tables, "errors": status.errors});
        if config {
            out["config"] = Value::Object(settings.into_iter().collect());
        }
        out.to_string()
    } else {
        let mut lines = vec![format!("node {} (version {})", status.id, status.version)];
        for name in names {
            let t = &status.tables[name];
            lines.push(format!(
                "{name}\tleader {}\tterm {}\tindex {}\tapplied {}\tlog {} B\tdata {} B",
                t.leader, t.raft_term, t.raft_index, t.raft_applied_index, t.log_size, t.db_size
            ));
        }
        lines.extend(status.errors.iter().map(|err| format!("error: {err}")));
        lines.extend(settings.iter().map(|(flag, value)| match value {
            Value::String(text) => format!("{flag} = {text}"),
            _ => format!("{flag} (unset)"),
        }));
        lines.join("\n")
    })
}

type MembershipClient = membership_client::MembershipClient<Authed>;

/// `message` with the deadline the server waits for the groups within.
fn timed<T>(message: T, target: &MembershipTarget) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(target.timeout);
    request
}

/// Sends a member change to `target` and says what the cluster wants now.
async fn change_members<F, Fut>(
    server: &ApiAddress,
    target: &MembershipTarget,
    json: bool,
    send: F,
) -> Result<String, String>
where
    F: FnOnce(MembershipClient) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<MemberChangeResponse>, tonic::Status>>,
{
    let channel = server.tls.connect(&target.address).await?;
    let bearer = Bearer::from_token(target.token.as_deref())?;
    let client = membership_client::MembershipClient::new(InterceptedService::new(channel, bearer));
    let answer = send(client)
        .await
        .map_err(|status| failed("member change", status))?
        .into_inner();
    let voters: Vec<String> = answer.voters.iter().map(u64::to_string).collect();
    Ok(if json {
        json!({"voters": answer.voters, "groupsChanging": answer.groups_changing}).to_string()
    } else if answer.groups_changing == 0 {
        format!("voters {}: every group changed", voters.join(","))
    } else {
        format!(
            "voters {}: recorded; {} groups of that node are still changing",
            voters.join(","),
            answer.groups_changing
        )
    })
}

fn run_with(
    what: &str,
    work: impl std::future::Future<Output = Result<String, String>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("regatta {what}: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(output) => {
            if !output.is_empty() {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("regatta {what}: {err}");
            ExitCode::FAILURE
        }
    }
}

pub fn run_table(args: TableArgs) -> ExitCode {
    run_with("table", table(args))
}

pub fn run_cluster(args: ClusterArgs) -> ExitCode {
    run_with("cluster", cluster(args))
}
