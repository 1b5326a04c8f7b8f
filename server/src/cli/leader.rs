//! `regatta leader`: a node of the leader cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};
use futures::StreamExt;
use regatta_proto::forward::v1::forward_server::ForwardServer;
use regatta_proto::regatta::v1::cluster_server::ClusterServer;
use regatta_proto::regatta::v1::kv_server::KvServer;
use tonic::codec::CompressionEncoding;

use super::node_id::{self, IdSource};
use crate::api::cluster::ClusterService;
use crate::api::kv::Writes;
use crate::api::maintenance::MaintenanceRole;
use crate::api::metrics::ApiMetrics;
use crate::api::replication::{ForwardService, MAX_FORWARD_MESSAGE_BYTES};
use crate::api::KvService;
use crate::cluster::{parse_members, Node, RaftSettings};
use crate::replication::forward::WriteForwarder;
use crate::storage::{StorageOptions, MAX_MESSAGE_BYTES};

/// `--tables.names` created at once at start.
const TABLE_CREATIONS: usize = 64;

/// Parses `5s`, `250ms`, `1m` (humantime), as Regatta's duration flags take.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| err.to_string())
}

/// Flags of `regatta leader`; names and meanings follow Regatta's. Each can
/// also be set as `REGATTA_<NAME>` (dots and dashes as underscores) or in
/// the `--config` file.
#[derive(Debug, Clone, Args)]
pub struct LeaderArgs {
    /// YAML file with settings; keys are flag names (`api.address: ...`).
    #[arg(long = "config", env = "REGATTA_CONFIG")]
    pub config: Option<String>,

    /// Address the KV API listens on: `host:port`, or a URL (`http://`,
    /// `https://`, `unix:///path`, `unixs:///path`; the `s` ones serve TLS).
    #[arg(
        long = "api.address",
        env = "REGATTA_API_ADDRESS",
        default_value = "127.0.0.1:8443"
    )]
    pub api_address: String,
    /// The API address clients are told to use (the Cluster API's
    /// MemberList `clientURLs`).
    #[arg(
        long = "api.advertise-address",
        env = "REGATTA_API_ADVERTISE_ADDRESS",
        default_value = "http://127.0.0.1:8443"
    )]
    pub api_advertise_address: String,
    /// The cluster's name in the Cluster API's MemberList.
    #[arg(
        long = "memberlist.cluster-name",
        env = "REGATTA_MEMBERLIST_CLUSTER_NAME",
        default_value = "default"
    )]
    pub memberlist_cluster_name: String,
    /// This node's name in the Cluster API's MemberList (default: its id).
    #[arg(long = "memberlist.node-name", env = "REGATTA_MEMBERLIST_NODE_NAME")]
    pub memberlist_node_name: Option<String>,
    /// TLS certificate (PEM) of the API and REST listeners (plaintext without
    /// it); read again when the file changes.
    #[arg(long = "api.cert-filename", env = "REGATTA_API_CERT_FILENAME")]
    pub api_cert_filename: Option<PathBuf>,
    /// TLS key of the API.
    #[arg(long = "api.key-filename", env = "REGATTA_API_KEY_FILENAME")]
    pub api_key_filename: Option<PathBuf>,
    /// CA (PEM) that client certificates on the API must be signed by; a
    /// certificate a client sends is checked against it.
    #[arg(long = "api.ca-filename", env = "REGATTA_API_CA_FILENAME")]
    pub api_ca_filename: Option<PathBuf>,
    /// Require a client certificate signed by --api.ca-filename (mutual TLS).
    #[arg(long = "api.client-cert-auth", env = "REGATTA_API_CLIENT_CERT_AUTH", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub api_client_cert_auth: bool,
    /// With --api.client-cert-auth: the common name a client certificate's
    /// subject must carry.
    #[arg(
        long = "api.allowed-cn",
        env = "REGATTA_API_ALLOWED_CN",
        conflicts_with = "api_allowed_hostname"
    )]
    pub api_allowed_cn: Option<String>,
    /// With --api.client-cert-auth: a DNS name or IP address the client
    /// certificate must be valid for.
    #[arg(long = "api.allowed-hostname", env = "REGATTA_API_ALLOWED_HOSTNAME")]
    pub api_allowed_hostname: Option<String>,
    /// Serve gRPC reflection (v1 and v1alpha) on the API port; on by default
    /// as in Regatta 0.5, `--api.reflection-api=false` turns it off.
    #[arg(long = "api.reflection-api", env = "REGATTA_API_REFLECTION_API", action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub api_reflection_api: bool,
    /// Connections the API port holds open at once; more wait to be
    /// accepted until one closes. 0: no limit (Regatta 0.5's flag).
    #[arg(
        long = "api.max-concurrent-connections",
        env = "REGATTA_API_MAX_CONCURRENT_CONNECTIONS",
        default_value_t = 0
    )]
    pub api_max_concurrent_connections: usize,
    /// HTTP/2 streams (calls in flight) per API connection; a client past it
    /// waits for a stream to end. 0: no limit (Regatta 0.5's flag).
    #[arg(
        long = "api.max-concurrent-streams",
        env = "REGATTA_API_MAX_CONCURRENT_STREAMS",
        default_value_t = 0
    )]
    pub api_max_concurrent_streams: u32,

    /// Address of the REST listener (health and metrics), in either form as
    /// --api.address; TLS with the API's certificate unless `http://`.
    #[arg(
        long = "rest.address",
        env = "REGATTA_REST_ADDRESS",
        default_value = "127.0.0.1:8079"
    )]
    pub rest_address: String,
    /// Time a REST client has to send its request headers.
    #[arg(long = "rest.read-timeout", env = "REGATTA_REST_READ_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub rest_read_timeout: Duration,

    /// This node's id in the cluster.
    #[arg(
        long = "raft.node-id",
        env = "REGATTA_RAFT_NODE_ID",
        default_value_t = 1
    )]
    pub raft_node_id: u64,
    /// Take the node id from the host name: its trailing ordinal plus one
    /// (a StatefulSet's pod `regatta-2` is node 3).
    #[arg(long = "raft.node-id-from-hostname", env = "REGATTA_RAFT_NODE_ID_FROM_HOSTNAME", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", conflicts_with = "raft_node_id")]
    pub raft_node_id_from_hostname: bool,
    /// With --raft.node-id-from-hostname: ids that replace the ordinal's for
    /// the hosts named, `host=id,...` (a pod whose volume was lost comes back
    /// under a new id; if that id is not among --raft.initial-members the
    /// node joins, as with --raft.join).
    #[arg(
        long = "raft.node-ids",
        env = "REGATTA_RAFT_NODE_IDS",
        requires = "raft_node_id_from_hostname"
    )]
    pub raft_node_ids: Option<String>,
    /// Address other nodes dial for Raft traffic.
    #[arg(
        long = "raft.address",
        env = "REGATTA_RAFT_ADDRESS",
        default_value = "127.0.0.1:5012"
    )]
    pub raft_address: String,
    /// Address this node binds for Raft traffic (default: --raft.address).
    #[arg(long = "raft.listen-address", env = "REGATTA_RAFT_LISTEN_ADDRESS")]
    pub raft_listen_address: Option<String>,
    /// Every member of the cluster as `id=host:port,...` (default: this node alone).
    #[arg(long = "raft.initial-members", env = "REGATTA_RAFT_INITIAL_MEMBERS")]
    pub raft_initial_members: Option<String>,
    /// Join a running cluster as a new member instead of forming one: this
    /// node initializes no group and waits until an operator adds it
    /// (`regatta cluster add-member`). --raft.initial-members then only
    /// tells it where the members are, and need not list it.
    #[arg(long = "raft.join", env = "REGATTA_RAFT_JOIN", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub raft_join: bool,
    /// Directory of the Raft log and vote.
    #[arg(
        long = "raft.node-host-dir",
        env = "REGATTA_RAFT_NODE_HOST_DIR",
        default_value = "regatta-data/raft"
    )]
    pub raft_node_host_dir: PathBuf,
    /// Directory of the Raft log, when apart from --raft.node-host-dir.
    #[arg(long = "raft.wal-dir", env = "REGATTA_RAFT_WAL_DIR")]
    pub raft_wal_dir: Option<PathBuf>,
    /// Directory of table data.
    #[arg(
        long = "raft.state-machine-dir",
        env = "REGATTA_RAFT_STATE_MACHINE_DIR",
        default_value = "regatta-data/state-machine"
    )]
    pub raft_state_machine_dir: PathBuf,
    /// Round-trip time between nodes: the unit of the Raft timings.
    #[arg(long = "raft.rtt", env = "REGATTA_RAFT_RTT", default_value = "50ms", value_parser = duration)]
    pub raft_rtt: Duration,
    /// Heartbeat interval, in RTTs.
    #[arg(
        long = "raft.heartbeat-rtt",
        env = "REGATTA_RAFT_HEARTBEAT_RTT",
        default_value_t = 1
    )]
    pub raft_heartbeat_rtt: u64,
    /// Election timeout, in RTTs.
    #[arg(
        long = "raft.election-rtt",
        env = "REGATTA_RAFT_ELECTION_RTT",
        default_value_t = 20
    )]
    pub raft_election_rtt: u64,
    /// Entries between snapshots (0: never).
    #[arg(
        long = "raft.snapshot-entries",
        env = "REGATTA_RAFT_SNAPSHOT_ENTRIES",
        default_value_t = 10_000
    )]
    pub raft_snapshot_entries: u64,
    /// Entries kept in the log after a snapshot.
    #[arg(
        long = "raft.compaction-overhead",
        env = "REGATTA_RAFT_COMPACTION_OVERHEAD",
        default_value_t = 5_000
    )]
    pub raft_compaction_overhead: u64,

    /// Bytes of RocksDB block cache for table data.
    #[arg(long = "storage.block-cache-size", env = "REGATTA_STORAGE_BLOCK_CACHE_SIZE", default_value_t = 16 * 1024 * 1024)]
    pub storage_block_cache_size: usize,
    /// Bytes of free space kept on each data disk: below it the node
    /// refuses writes (ResourceExhausted) and new log entries, and defers
    /// snapshots, until space is freed (0: no reserve). The default holds
    /// a flush of both databases' memtables (64 MiB each) with room to spare.
    #[arg(long = "storage.min-free-space", env = "REGATTA_STORAGE_MIN_FREE_SPACE", default_value_t = 256 * 1024 * 1024)]
    pub storage_min_free_space: u64,

    /// Tables to create at start (existing ones are kept; leader only).
    #[arg(
        long = "tables.names",
        env = "REGATTA_TABLES_NAMES",
        default_value = "regatta",
        value_delimiter = ','
    )]
    pub tables_names: Vec<String>,
    /// Tables to delete at start, after creating --tables.names (leader only).
    #[arg(
        long = "tables.delete",
        env = "REGATTA_TABLES_DELETE",
        value_delimiter = ','
    )]
    pub tables_delete: Vec<String>,
    /// Serve the Tables API (Regatta 0.5: Create, Delete, List) on the API port.
    #[arg(long = "tables.enabled", env = "REGATTA_TABLES_ENABLED", action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub tables_enabled: bool,
    /// Bearer token every Tables API call must carry (`authorization:
    /// Bearer <token>`); without it the Tables API is open.
    #[arg(long = "tables.token", env = "REGATTA_TABLES_TOKEN")]
    pub tables_token: Option<String>,

    /// Maintenance listener: Backup and Restore on a leader, Reset on a follower.
    #[arg(
        long = "maintenance.address",
        env = "REGATTA_MAINTENANCE_ADDRESS",
        default_value = "127.0.0.1:8445"
    )]
    pub maintenance_address: String,
    /// Serve the maintenance API.
    #[arg(long = "maintenance.enabled", env = "REGATTA_MAINTENANCE_ENABLED", action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub maintenance_enabled: bool,
    /// Bearer token every maintenance call must carry (`authorization:
    /// Bearer <token>`); without it the maintenance API is open.
    #[arg(long = "maintenance.token", env = "REGATTA_MAINTENANCE_TOKEN")]
    pub maintenance_token: Option<String>,
    /// TLS certificate (PEM) of the maintenance listener (plaintext without it).
    #[arg(
        long = "maintenance.cert-filename",
        env = "REGATTA_MAINTENANCE_CERT_FILENAME"
    )]
    pub maintenance_cert_filename: Option<PathBuf>,
    /// TLS key of that certificate.
    #[arg(
        long = "maintenance.key-filename",
        env = "REGATTA_MAINTENANCE_KEY_FILENAME"
    )]
    pub maintenance_key_filename: Option<PathBuf>,
    /// Address of the replication listener (Metadata, Log and Snapshot for
    /// follower clusters).
    #[arg(
        long = "replication.address",
        env = "REGATTA_REPLICATION_ADDRESS",
        default_value = "127.0.0.1:8444"
    )]
    pub replication_address: String,
    /// Serve the replication API.
    #[arg(long = "replication.enabled", env = "REGATTA_REPLICATION_ENABLED", action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub replication_enabled: bool,
    /// TLS certificate (PEM): of the replication listener on a leader
    /// (plaintext without it); the client certificate on a follower.
    #[arg(
        long = "replication.cert-filename",
        env = "REGATTA_REPLICATION_CERT_FILENAME"
    )]
    pub replication_cert_filename: Option<PathBuf>,
    /// TLS key of that certificate.
    #[arg(
        long = "replication.key-filename",
        env = "REGATTA_REPLICATION_KEY_FILENAME"
    )]
    pub replication_key_filename: Option<PathBuf>,
    /// CA (PEM): on a leader, followers must present a client certificate it
    /// signed (mutual TLS); on a follower, the CA of the leader's certificate.
    #[arg(
        long = "replication.ca-filename",
        env = "REGATTA_REPLICATION_CA_FILENAME"
    )]
    pub replication_ca_filename: Option<PathBuf>,
    /// Largest Log.Replicate message; a single larger entry is still sent alone.
    #[arg(
        long = "replication.max-send-message-size-bytes",
        env = "REGATTA_REPLICATION_MAX_SEND_MESSAGE_SIZE_BYTES",
        default_value_t = crate::api::replication::MAX_SEND_MESSAGE_BYTES
    )]
    pub replication_max_send_message_size_bytes: usize,

    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long = "log-level", env = "REGATTA_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Every setting by flag name without dashes, tokens masked, as the
    /// Cluster API's Status shows them with `config` (`cli::parse`).
    #[arg(skip)]
    pub settings: std::collections::BTreeMap<String, Option<String>>,
    /// Human-readable logs instead of JSON.
    #[arg(long = "dev-mode", env = "REGATTA_DEV_MODE", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub dev_mode: bool,
}

impl LeaderArgs {
    /// This node's id, and how it was decided.
    fn node_id(&self) -> Result<(u64, IdSource), String> {
        if !self.raft_node_id_from_hostname {
            return Ok((self.raft_node_id, IdSource::Flag));
        }
        node_id::from_host_name(&node_id::host_name()?, self.raft_node_ids.as_deref())
    }

    pub(super) fn raft_settings(&self) -> Result<RaftSettings, String> {
        let (node_id, id_source) = self.node_id()?;
        let members = match &self.raft_initial_members {
            Some(spec) => parse_members(spec).map_err(|e| e.to_string())?,
            None => [(node_id, self.raft_address.clone())].into(),
        };
        // A pod brought back under a new id joins the running cluster.
        let replacement = id_source == IdSource::Override && !members.contains_key(&node_id);
        Ok(RaftSettings {
            node_id,
            address: self.raft_address.clone(),
            listen_address: self.raft_listen_address.clone(),
            initial_members: members,
            join: self.raft_join || replacement,
            node_host_dir: self.raft_node_host_dir.clone(),
            wal_dir: self.raft_wal_dir.clone(),
            state_machine_dir: self.raft_state_machine_dir.clone(),
            rtt: self.raft_rtt,
            heartbeat_rtt: self.raft_heartbeat_rtt,
            election_rtt: self.raft_election_rtt,
            snapshot_entries: self.raft_snapshot_entries,
            compaction_overhead: self.raft_compaction_overhead,
            identity: crate::cluster::MemberIdentity {
                name: self.memberlist_node_name.clone().unwrap_or_default(),
                client_url: self.api_advertise_address.clone(),
            },
        })
    }
}

fn init_logging(args: &LeaderArgs) {
    // A plain level keeps openraft's chatty per-group info logs out.
    let spec = if args.log_level.contains(['=', ',']) {
        args.log_level.clone()
    } else {
        format!("{},openraft=warn", args.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if args.dev_mode {
        builder.try_init()
    } else {
        builder.json().try_init()
    };
}

/// What a node is: a leader-cluster node, or a follower-cluster node that
/// copies a leader cluster.
pub enum Role {
    Leader,
    Follower {
        /// `http(s)://host:port` of the leader cluster's replication API.
        leader_address: String,
        settings: crate::replication::FollowerSettings,
    },
}

/// Runs a leader-cluster node until SIGTERM or SIGINT.
pub fn run(args: LeaderArgs) -> ExitCode {
    run_role(args, Role::Leader)
}

/// Runs a node in `role` until SIGTERM or SIGINT.
pub fn run_role(args: LeaderArgs, role: Role) -> ExitCode {
    init_logging(&args);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("regatta: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "regatta stopped");
            eprintln!("regatta: {err}");
            // Not through the runtime's drop, which waits for every
            // blocking task: after a storage failure one may never end.
            std::process::exit(1)
        }
    }
}

/// What a node that stopped on a storage failure says last.
fn stopped_after(failure: &str) -> String {
    format!(
        "stopped after a storage failure ({failure}); nothing it did not store was \
         acknowledged, and a restart recovers from what is on disk"
    )
}

/// Ends the process at most 5 s after a storage failure, should the
/// graceful stop that `serve` begins not finish by then (a call waiting on
/// a stopped group). A thread of its own: the runtime may be what hangs.
fn exit_after_storage_failure(mut failure: tokio::sync::watch::Receiver<Option<String>>) {
    let spawned = std::thread::Builder::new()
        .name("storage-failure".into())
        .spawn(move || {
            let Ok(why) =
                futures::executor::block_on(failure.wait_for(Option::is_some)).map(|w| w.clone())
            else {
                return;
            };
            std::thread::sleep(Duration::from_secs(5));
            eprintln!(
                "regatta: {}",
                stopped_after(why.as_deref().unwrap_or_default())
            );
            std::process::exit(1);
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "no watchdog for storage failures");
    }
}

/// What a node's settings give once checked, before anything starts.
pub(super) struct Checked {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub rest_tls: Option<tokio_rustls::TlsAcceptor>,
    pub raft: RaftSettings,
}

/// Every check a node makes of its settings before it starts (addresses,
/// certificates, table names, its id and members), without binding or
/// writing anything: `serve` and `regatta config check` alike.
pub(super) fn check(args: &LeaderArgs, role: &Role) -> Result<Checked, String> {
    use super::listener_flags::{api_tls, check_addresses};
    check_addresses(args, matches!(role, Role::Leader))?;
    if let Role::Follower { leader_address, .. } = role {
        leader_dialer(args, leader_address)?;
    }
    let (tls, rest_tls) = api_tls(args)?;
    match role {
        Role::Leader if args.replication_enabled => {
            super::listeners::replication_tls(args)?;
        }
        Role::Leader | Role::Follower { .. } => {}
    }
    if args.maintenance_enabled {
        super::listeners::maintenance_tls(args)?;
    }
    // Refused before the node starts, so a bad name writes nothing.
    for table in args.tables_names.iter().chain(&args.tables_delete) {
        crate::cluster::table_name::check(table.as_bytes())
            .map_err(|e| format!("--tables.names/--tables.delete {table:?}: {e}"))?;
    }
    let raft = args.raft_settings()?;
    raft.validate().map_err(|e| e.to_string())?;
    Ok(Checked {
        tls,
        rest_tls,
        raft,
    })
}

async fn serve(args: LeaderArgs, role: Role) -> Result<(), String> {
    use super::listener_flags::API_CERT_FLAGS;
    let Checked {
        tls,
        rest_tls,
        raft: settings,
    } = check(&args, &role)?;
    let storage = StorageOptions {
        block_cache_size: args.storage_block_cache_size,
        min_free_space: args.storage_min_free_space,
    };
    let joining = settings.join;
    let node = Node::start(settings, storage)
        .await
        .map_err(|e| e.to_string())?;
    // A table's column family takes longer to create the more tables the
    // node has (RocksDB rewrites an OPTIONS file naming them all: about
    // 0.3 s each at 1,000 tables, `storage/tests/restart.rs`), and the
    // tables of `--tables.names` are created together.
    let timeout =
        Duration::from_secs(30) + Duration::from_millis(500) * args.tables_names.len() as u32;
    // Create first, then delete: a table named in both is deleted, so an
    // operator can drop a table without editing the list of names. A
    // follower cluster learns its tables from the leader cluster only, and
    // a joining node leaves them to the members (it has no metadata group
    // until it is added, and a creation would fail it at start).
    if joining && !(args.tables_names.is_empty() && args.tables_delete.is_empty()) {
        tracing::info!(
            "joining: --tables.names and --tables.delete are left to the cluster's members"
        );
    }
    if matches!(role, Role::Leader) && !joining {
        // Concurrently: the metadata group takes the creations in a few
        // batches, and hundreds of tables come up in seconds.
        let creations = args.tables_names.iter().map(|table| {
            let node = node.clone();
            async move {
                node.create_table(table.as_bytes(), timeout)
                    .await
                    .map_err(|e| format!("creating table {table}: {e}"))
            }
        });
        let created: Vec<Result<_, String>> = futures::stream::iter(creations)
            .buffer_unordered(TABLE_CREATIONS)
            .collect()
            .await;
        for creation in created {
            creation?;
        }
        for table in &args.tables_delete {
            node.delete_table(table.as_bytes(), timeout)
                .await
                .map_err(|e| format!("deleting table {table}: {e}"))?;
        }
    }
    // Tables just created elect their leaders within an election timeout.
    let ready_by = tokio::time::Instant::now() + timeout;
    while let Some(reason) = crate::api::rest::not_ready(&node) {
        if tokio::time::Instant::now() > ready_by {
            tracing::warn!(reason, "serving before every table has a leader");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = Arc::new(ApiMetrics::default());
    let rest = rest_server(
        &args.rest_address,
        node.clone(),
        metrics.clone(),
        rest_tls,
        args.rest_read_timeout,
    )
    .await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(node.clone(), health));
    // A follower's one channel to the leader cluster: replication workers
    // and forwarded writes share it.
    let leader = match &role {
        Role::Leader => None,
        Role::Follower { leader_address, .. } => Some(leader_channel(&args, leader_address)?),
    };
    let writes = match (&role, &leader) {
        (Role::Follower { settings, .. }, Some(channel)) if settings.forward_writes => {
            Writes::Forwarded(Arc::new(WriteForwarder::new(node.clone(), channel.clone())))
        }
        (Role::Follower { .. }, _) => Writes::Refused,
        (Role::Leader, _) => Writes::Local,
    };
    let api = kv_server(KvService::with_writes(
        node.clone(),
        metrics.clone(),
        writes,
    ));
    let replication = match &role {
        Role::Leader if args.replication_enabled => {
            let rendered = node.clone();
            metrics.add_source(Box::new(move || {
                crate::api::replication::leader_metrics(&rendered)
            }));
            // Follower clusters forward their writes here
            // (`features/follower_writes.feature`).
            let kv = kv_server(KvService::new(node.clone(), metrics.clone()));
            let forward = ForwardServer::new(ForwardService::new(Arc::new(KvService::new(
                node.clone(),
                metrics.clone(),
            ))))
            .max_decoding_message_size(MAX_FORWARD_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_FORWARD_MESSAGE_BYTES);
            Some(super::listeners::replication_server(&args, node.clone(), kv, forward).await?)
        }
        Role::Leader => None,
        Role::Follower {
            leader_address,
            settings,
        } => {
            let channel = leader.clone().ok_or("a follower has a leader channel")?;
            let replication = Arc::new(crate::replication::metrics::ReplicationMetrics::default());
            let rendered = replication.clone();
            metrics.add_source(Box::new(move || rendered.render()));
            tracing::info!(leader = %leader_address, "following the leader cluster");
            Some(
                crate::replication::Follower::new(
                    node.clone(),
                    channel,
                    settings.clone(),
                    replication,
                )
                .start(),
            )
        }
    };
    let maintenance_role = match role {
        Role::Leader => MaintenanceRole::Leader,
        Role::Follower { .. } => MaintenanceRole::Follower,
    };
    let maintenance = if args.maintenance_enabled {
        Some(super::listeners::maintenance_server(&args, node.clone(), maintenance_role).await?)
    } else {
        None
    };
    let (maintenance_on_api, metadata_on_api) =
        super::listeners::maintenance_on_api(&args, node.clone(), maintenance_role);
    let tables = super::listeners::tables_on_api(&args, node.clone(), maintenance_role);
    let cluster = ClusterServer::new(ClusterService::new(
        node.clone(),
        args.memberlist_cluster_name.clone(),
        args.settings.clone(),
    ));
    let (reflection, reflection_v1alpha) = if args.api_reflection_api {
        use crate::api::reflection::{services, API_SERVICES, MAINTENANCE_SERVICES};
        let mut served = API_SERVICES.to_vec();
        if maintenance_on_api.is_some() {
            served.extend(MAINTENANCE_SERVICES);
        }
        if tables.is_some() {
            served.push("regatta.v1.Tables");
        }
        served.push("regatta.v1.Cluster");
        let (v1, v1alpha) = services(&served)?;
        (Some(v1), Some(v1alpha))
    } else {
        (None, None)
    };
    let (listener, tls) =
        super::listeners::bind("--api.address", &args.api_address, tls, API_CERT_FLAGS).await?;
    let reach = match (&listener, tls.is_some()) {
        (crate::net::Listener::Unix(_, path), true) => format!("unixs://{}", path.display()),
        (crate::net::Listener::Unix(_, path), false) => format!("unix://{}", path.display()),
        (_, true) => format!("https://{}", listener.describe()),
        (_, false) => format!("http://{}", listener.describe()),
    };
    tracing::info!(
        api = %reach,
        tables = ?node.tables().keys().map(|t| String::from_utf8_lossy(t).into_owned()).collect::<Vec<_>>(),
        "regatta {} is serving: reach the KV API at {reach}",
        if matches!(role, Role::Leader) { "leader" } else { "follower" }
    );
    let listener = crate::net::Limited::new(listener, args.api_max_concurrent_connections);
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(streams_per_connection(
            args.api_max_concurrent_streams,
        )))
        .layer(tower::util::MapResponseLayer::new(
            crate::api::limits::resource_exhausted_for_oversized,
        ))
        .add_service(api)
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_optional_service(reflection_v1alpha)
        .add_optional_service(maintenance_on_api)
        .add_optional_service(metadata_on_api)
        .add_optional_service(tables)
        .add_service(cluster);
    let failure = node.storage_failure();
    exit_after_storage_failure(failure.clone());
    let served = match tls {
        Some(acceptor) => {
            let incoming = crate::tls::incoming(listener, acceptor);
            router
                .serve_with_incoming_shutdown(incoming, stop(failure.clone()))
                .await
        }
        None => {
            let incoming = crate::net::incoming(listener);
            router
                .serve_with_incoming_shutdown(incoming, stop(failure.clone()))
                .await
        }
    };
    tracing::info!("shutting down");
    rest.abort();
    for listener in [replication, maintenance].into_iter().flatten() {
        listener.abort();
    }
    if let Some(why) = failure.borrow().clone() {
        // Nothing more is written: what is on disk is what a restart trusts.
        return Err(stopped_after(&why));
    }
    node.shutdown().await;
    drop(node);
    served.map_err(|e| e.to_string())
}

/// Resolves when the node is asked to stop (SIGINT, SIGTERM) or must stop
/// (a storage failure).
async fn stop(mut failure: tokio::sync::watch::Receiver<Option<String>>) {
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = failure.wait_for(Option::is_some) => {}
    }
}

/// The API port's HTTP/2 stream limit: `0` is none, where hyper would
/// otherwise allow 200.
fn streams_per_connection(flag: u32) -> u32 {
    if flag == 0 {
        u32::MAX
    } else {
        flag
    }
}

/// `regatta.v1.KV` as every listener serves it: both compressions, 4 MiB
/// messages.
fn kv_server(service: KvService) -> KvServer<KvService> {
    KvServer::new(service)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Serves `/healthz` and `/metrics` on the REST address.
async fn rest_server(
    address: &str,
    node: Arc<Node>,
    metrics: Arc<ApiMetrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    read_timeout: Duration,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let (listener, tls) = super::listeners::bind(
        "--rest.address",
        address,
        tls,
        super::listener_flags::API_CERT_FLAGS,
    )
    .await?;
    let router = crate::api::rest::router(node, metrics);
    Ok(tokio::spawn(async move {
        match tls {
            Some(acceptor) => {
                let connections = crate::tls::incoming(listener, acceptor);
                crate::api::rest::serve(connections, router, read_timeout).await;
            }
            None => {
                let connections = Box::pin(crate::net::incoming(listener));
                crate::api::rest::serve(connections, router, read_timeout).await;
            }
        }
    }))
}

/// Keeps gRPC health in step with the node: `regatta.v1.KV` (and the
/// overall status) serve when every table has a leader; each table name is
/// a service of its own.
async fn report_health(node: Arc<Node>, health: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    loop {
        let ready = crate::api::rest::not_ready(&node).is_none();
        let status = if ready { Serving } else { NotServing };
        health.set_service_status("", status).await;
        health.set_service_status("regatta.v1.KV", status).await;
        for name in node.tables().keys() {
            let serving = node
                .status(name)
                .is_ok_and(|status| status.leader.is_some());
            health
                .set_service_status(
                    String::from_utf8_lossy(name),
                    if serving { Serving } else { NotServing },
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A channel to the leader cluster's replication API, in any address form;
/// TLS (with a client certificate when given) for `https://` and
/// `unixs://` addresses, or when a CA is given.
fn leader_channel(args: &LeaderArgs, address: &str) -> Result<tonic::transport::Channel, String> {
    Ok(leader_dialer(args, address)?.connect_lazy())
}

/// How a follower reaches the leader cluster (its address and certificates).
fn leader_dialer(args: &LeaderArgs, address: &str) -> Result<crate::net::dial::Dialer, String> {
    use crate::net::dial::{DialSettings, Dialer};
    if args.replication_cert_filename.is_some() != args.replication_key_filename.is_some() {
        return Err(
            "--replication.cert-filename and --replication.key-filename go together".into(),
        );
    }
    let settings = DialSettings {
        ca: args.replication_ca_filename.clone(),
        cert: args.replication_cert_filename.clone(),
        key: args.replication_key_filename.clone(),
        keep_alive: true,
        ..DialSettings::new("--replication.leader-address", address)
    };
    Dialer::new(&settings)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
