//! The listeners beside the KV API: replication (leader cluster,
//! `docs/replication.md`) and maintenance (`docs/backups.md`), each with its
//! own TLS settings.

use std::sync::Arc;
use std::time::Duration;

use tonic::codec::CompressionEncoding;

use super::leader::LeaderArgs;
use super::listener_flags::{MAINTENANCE_CERT_FLAGS, REPLICATION_CERT_FLAGS};
use crate::api::maintenance::{MaintenanceRole, MaintenanceService, TokenCheck};
use crate::api::membership::MembershipService;
use crate::api::replication::{ForwardService, MetadataService};
use crate::api::tables::TablesService;
use crate::api::KvService;
use crate::cluster::Node;
use crate::net::{Address, Listener};
use crate::storage::MAX_MESSAGE_BYTES;
use regatta_proto::forward::v1::forward_server::ForwardServer;
use regatta_proto::maintenance::v1::maintenance_server::MaintenanceServer;
use regatta_proto::membership::v1::membership_server::MembershipServer;
use regatta_proto::regatta::v1::kv_server::KvServer;
use regatta_proto::regatta::v1::tables_server::TablesServer;
use regatta_proto::replication::v1::metadata_server::MetadataServer;

/// Serves the replication API (`docs/replication.md`) on
/// `--replication.address`. `kv` is served there too: follower clusters
/// forward their writes to it (`features/follower_writes.feature`).
pub async fn replication_server(
    args: &LeaderArgs,
    node: Arc<Node>,
    kv: KvServer<KvService>,
    forward: ForwardServer<ForwardService>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use crate::api::replication::{LogService, MetadataService, SnapshotService};
    use regatta_proto::replication::v1::{
        log_server::LogServer, metadata_server::MetadataServer, snapshot_server::SnapshotServer,
    };
    let tls = replication_tls(args)?;
    let max_message = args.replication_max_send_message_size_bytes;
    // Regatta 0.5 serves reflection on the replication port too.
    let (reflection, reflection_v1alpha) =
        crate::api::reflection::services(&crate::api::reflection::REPLICATION_SERVICES)?;
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(MetadataServer::new(MetadataService::new(node.clone())))
        .add_service(
            LogServer::new(LogService::new(node.clone(), max_message))
                .max_encoding_message_size(max_message.max(MAX_MESSAGE_BYTES) * 2)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd),
        )
        .add_service(SnapshotServer::new(SnapshotService::new(node)))
        .add_service(kv)
        .add_service(forward)
        .add_service(reflection)
        .add_service(reflection_v1alpha);
    let (listener, tls) = bind(
        "--replication.address",
        &args.replication_address,
        tls,
        REPLICATION_CERT_FLAGS,
    )
    .await?;
    tracing::info!(replication = %listener.describe(), tls = tls.is_some(), "serving the replication API");
    Ok(spawn_router(router, listener, tls, "replication"))
}

/// Serves the maintenance API (`docs/backups.md`, `docs/contract-notes.md`) on
/// `--maintenance.address`: Backup, Restore and Metadata.Get on a leader,
/// Reset on a follower, every call behind the bearer token when one is set.
pub async fn maintenance_server(
    args: &LeaderArgs,
    node: Arc<Node>,
    role: MaintenanceRole,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let tls = maintenance_tls(args)?;
    let (maintenance, metadata) = maintenance_services(args, node.clone(), role);
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(maintenance)
        .add_service(metadata)
        .add_service(membership_service(args, node));
    let (listener, tls) = bind(
        "--maintenance.address",
        &args.maintenance_address,
        tls,
        MAINTENANCE_CERT_FLAGS,
    )
    .await?;
    tracing::info!(
        maintenance = %listener.describe(),
        tls = tls.is_some(),
        token = args.maintenance_token.is_some(),
        "serving the maintenance API"
    );
    Ok(spawn_router(router, listener, tls, "maintenance"))
}

/// Maintenance services on the API port (Regatta 0.4+), behind the
/// maintenance token, and served there only when `--maintenance.token` is
/// set, so a client-facing port never offers Restore or Reset
/// unauthenticated. `Metadata.Get` comes along, as on the maintenance port:
/// `regatta backup` lists the tables with it.
#[allow(clippy::type_complexity)]
pub fn maintenance_on_api(
    args: &LeaderArgs,
    node: Arc<Node>,
    role: MaintenanceRole,
) -> (
    Option<Intercepted<MaintenanceServer<MaintenanceService>>>,
    Option<Intercepted<MetadataServer<MetadataService>>>,
) {
    if !args.maintenance_enabled || args.maintenance_token.is_none() {
        return (None, None);
    }
    let (maintenance, metadata) = maintenance_services(args, node, role);
    (Some(maintenance), Some(metadata))
}

/// The Tables API on the API port (`--tables.enabled`), behind
/// `--tables.token` when set; absent, gRPC's answer for an unknown service.
pub fn tables_on_api(
    args: &LeaderArgs,
    node: Arc<Node>,
    role: MaintenanceRole,
) -> Option<Intercepted<TablesServer<TablesService>>> {
    if !args.tables_enabled {
        return None;
    }
    let token = TokenCheck::new(args.tables_token.as_deref());
    Some(tonic_interceptor(
        TablesServer::new(TablesService::new(node, role)),
        token,
    ))
}

/// Adding and removing members, behind the maintenance token: on the
/// maintenance listener only, never on a client-facing port.
fn membership_service(
    args: &LeaderArgs,
    node: Arc<Node>,
) -> Intercepted<MembershipServer<MembershipService>> {
    let token = TokenCheck::new(args.maintenance_token.as_deref());
    tonic_interceptor(MembershipServer::new(MembershipService::new(node)), token)
}

/// Maintenance and Metadata.Get behind the bearer token (when one is set),
/// for whichever port serves them.
fn maintenance_services(
    args: &LeaderArgs,
    node: Arc<Node>,
    role: MaintenanceRole,
) -> (
    Intercepted<MaintenanceServer<MaintenanceService>>,
    Intercepted<MetadataServer<MetadataService>>,
) {
    let token = TokenCheck::new(args.maintenance_token.as_deref());
    let maintenance = MaintenanceServer::new(MaintenanceService::new(node.clone(), role))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // A follower does not serve Metadata.Get; it says so like Regatta.
    let metadata = match role {
        MaintenanceRole::Leader => MetadataService::new(node),
        MaintenanceRole::Follower => MetadataService::unserved(),
    };
    (
        tonic_interceptor(maintenance, token.clone()),
        tonic_interceptor(MetadataServer::new(metadata), token),
    )
}

type Intercepted<S> = tonic::service::interceptor::InterceptedService<S, TokenCheck>;

fn tonic_interceptor<S>(service: S, token: TokenCheck) -> Intercepted<S> {
    tonic::service::interceptor::InterceptedService::new(service, token)
}

/// Binds the address of `flag` (either Regatta form) and decides its TLS:
/// the scheme when it has one (`https://` needs the certificate flags named
/// by `cert_flags`), else whether a certificate is configured.
/// The replication listener's TLS (a leader cluster's), from its flags.
pub fn replication_tls(args: &LeaderArgs) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    match (
        &args.replication_cert_filename,
        &args.replication_key_filename,
    ) {
        (Some(cert), Some(key)) => crate::tls::acceptor_with_client_ca(
            cert,
            key,
            args.replication_ca_filename.as_deref(),
            true,
            None,
        )
        .map(Some)
        .map_err(|e| format!("replication TLS: {e}")),
        (None, None) if args.replication_ca_filename.is_some() => Err(
            "--replication.ca-filename needs --replication.cert-filename and --replication.key-filename"
                .into(),
        ),
        (None, None) => Ok(None),
        _ => Err("--replication.cert-filename and --replication.key-filename go together".into()),
    }
}

/// The maintenance listener's TLS, from its flags.
pub fn maintenance_tls(args: &LeaderArgs) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    match (
        &args.maintenance_cert_filename,
        &args.maintenance_key_filename,
    ) {
        (Some(cert), Some(key)) => crate::tls::acceptor(cert, key)
            .map(Some)
            .map_err(|e| format!("maintenance TLS: {e}")),
        (None, None) => Ok(None),
        _ => Err("--maintenance.cert-filename and --maintenance.key-filename go together".into()),
    }
}

pub async fn bind(
    flag: &'static str,
    text: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cert_flags: &str,
) -> Result<(Listener, Option<tokio_rustls::TlsAcceptor>), String> {
    let address = Address::parse(flag, text).map_err(|e| e.to_string())?;
    let serve_tls = address
        .listen_tls(tls.is_some(), cert_flags)
        .map_err(|e| format!("{flag} {text}: {e}"))?;
    if tls.is_some() && !serve_tls {
        tracing::warn!(
            address = text,
            "{flag} is an http:// or unix:// address: serving plaintext, {cert_flags} unused"
        );
    }
    let listener = Listener::bind(&address)
        .await
        .map_err(|e| format!("binding {flag} {text}: {e}"))?;
    Ok((listener, tls.filter(|_| serve_tls)))
}

/// Serves `router` on `listener` (TLS when an acceptor is given) until the
/// task is aborted; logs why it stopped otherwise.
fn spawn_router(
    router: tonic::transport::server::Router,
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    name: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let served = match tls {
            Some(acceptor) => {
                router
                    .serve_with_incoming(crate::tls::incoming(listener, acceptor))
                    .await
            }
            None => {
                router
                    .serve_with_incoming(crate::net::incoming(listener))
                    .await
            }
        };
        if let Err(err) = served {
            tracing::error!(error = %err, listener = name, "the listener stopped");
        }
    })
}
