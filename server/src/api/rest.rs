//! The REST listener: `GET /healthz` and `GET /metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::metrics::ApiMetrics;
use crate::cluster::Node;

#[derive(Clone)]
struct Rest {
    node: Arc<Node>,
    metrics: Arc<ApiMetrics>,
}

/// Why the node does not serve yet, if it does not.
pub fn not_ready(node: &Node) -> Option<String> {
    let tables = node.tables();
    if tables.is_empty() {
        return None;
    }
    for name in tables.keys() {
        match node.status(name) {
            Ok(status) if status.leader.is_some() => {}
            Ok(_) => {
                return Some(format!(
                    "table {} has no leader",
                    String::from_utf8_lossy(name)
                ))
            }
            Err(_) => {
                return Some(format!(
                    "table {} is not running here",
                    String::from_utf8_lossy(name)
                ))
            }
        }
    }
    None
}

async fn healthz(State(rest): State<Rest>) -> impl IntoResponse {
    match not_ready(&rest.node) {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn render_metrics(State(rest): State<Rest>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        rest.metrics.render(&rest.node),
    )
}

/// The REST routes.
pub fn router(node: Arc<Node>, metrics: Arc<ApiMetrics>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics));
    #[cfg(feature = "failpoints")]
    let router = router.route(
        "/failpoints/{name}",
        axum::routing::put(set_failpoint).delete(remove_failpoint),
    );
    router.with_state(Rest { node, metrics })
}

/// `PUT /failpoints/<name>` with the actions (`return`, `50%return`,
/// `off`, ... as the `fail` crate reads them) as the body. Test builds only.
#[cfg(feature = "failpoints")]
async fn set_failpoint(
    axum::extract::Path(name): axum::extract::Path<String>,
    actions: String,
) -> impl IntoResponse {
    match fail::cfg(name.clone(), actions.trim()) {
        Ok(()) => {
            tracing::warn!(failpoint = %name, actions = %actions.trim(), "failpoint set");
            (StatusCode::OK, "ok\n".to_string())
        }
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")),
    }
}

#[cfg(feature = "failpoints")]
async fn remove_failpoint(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> impl IntoResponse {
    fail::remove(name);
    (StatusCode::OK, "ok\n")
}

/// Serves the REST routes on every connection of `connections` (plain TCP
/// or TLS). A client must send its request headers within `read_timeout`.
pub async fn serve<S, Io>(mut connections: S, router: Router, read_timeout: std::time::Duration)
where
    S: tokio_stream::Stream<Item = std::io::Result<Io>> + Unpin,
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tokio_stream::StreamExt;

    while let Some(connection) = connections.next().await {
        let Ok(io) = connection else { continue };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout);
            if let Err(err) = builder.serve_connection(TokioIo::new(io), service).await {
                tracing::debug!(error = %err, "REST connection ended");
            }
        });
    }
}
