//! Lets testcontainers talk to Docker engines older than its API version.
//!
//! testcontainers 0.28 speaks Docker API 1.53 (through bollard 0.21) and
//! never negotiates, while Debian's `docker.io` engine (20.10) answers at
//! most 1.41 and refuses newer clients outright ("client version 1.53 is too
//! new"). When the engine is older, the suite starts this shim: a tiny HTTP
//! proxy on a private unix socket that rewrites the `/v1.NN/` prefix of each
//! request to the engine's version and streams everything else unchanged.
//! testcontainers is pointed at it through `DOCKER_HOST`. The calls the
//! suite makes (create, start, stop, kill, pause, inspect, logs, networks)
//! have the same shape in both versions.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

/// The engine's socket, from `DOCKER_HOST` (unix only) or the default.
pub fn engine_socket() -> Result<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) => match host.strip_prefix("unix://") {
            Some(path) => Ok(PathBuf::from(path)),
            None => bail!("DOCKER_HOST={host}: the suite drives Docker over a unix socket"),
        },
        Err(_) => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// The engine's highest API version as `(major, minor)`; fails when no
/// engine answers.
pub async fn engine_api_version(socket: &Path) -> Result<(u32, u32)> {
    let request = Request::get("/version")
        .header("host", "docker")
        .body(Empty::<Bytes>::new())?;
    let mut sender = connect(socket).await?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("GET /version answered {}", response.status());
    }
    let body = response.into_body().collect().await?.to_bytes();
    let version: serde_json::Value = serde_json::from_slice(&body)?;
    let api = version["ApiVersion"]
        .as_str()
        .context("no ApiVersion in /version")?;
    parse_version(api).with_context(|| format!("bad ApiVersion {api}"))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

async fn connect<B>(socket: &Path) -> Result<hyper::client::conn::http1::SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to the Docker engine at {}", socket.display()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Serves the shim on `listen` until the process ends, forwarding to
/// `engine` with every API version above `version` lowered to it.
pub async fn start(listen: &Path, engine: PathBuf, version: (u32, u32)) -> Result<()> {
    let listener = UnixListener::bind(listen)
        .with_context(|| format!("binding the Docker shim at {}", listen.display()))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let engine = engine.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    forward(request, engine.clone(), version)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

async fn forward(
    mut request: Request<Incoming>,
    engine: PathBuf,
    version: (u32, u32),
) -> Result<Response<Incoming>> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let rewritten = lower_version(&path_and_query, version);
    *request.uri_mut() = rewritten.parse::<Uri>()?;
    let mut sender = connect(&engine).await?;
    Ok(sender.send_request(request).await?)
}

/// `/v1.53/containers/json` -> `/v1.41/containers/json` when the engine's
/// version is 1.41; other paths unchanged.
fn lower_version(path: &str, (major, minor): (u32, u32)) -> String {
    let Some(rest) = path.strip_prefix("/v") else {
        return path.to_string();
    };
    let Some((requested, tail)) = rest.split_once('/') else {
        return path.to_string();
    };
    match parse_version(requested) {
        Some(asked) if asked > (major, minor) => format!("/v{major}.{minor}/{tail}"),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_only_newer_versions() {
        assert_eq!(
            lower_version("/v1.53/containers/json?all=1", (1, 41)),
            "/v1.41/containers/json?all=1"
        );
        assert_eq!(lower_version("/v1.40/info", (1, 41)), "/v1.40/info");
        assert_eq!(lower_version("/_ping", (1, 41)), "/_ping");
    }
}
