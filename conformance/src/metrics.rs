//! A node's Prometheus text from its REST listener (`GET /metrics`).

use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET /metrics` at `address` (`host:port`), over HTTPS when
/// the scenario's listeners serve TLS.
pub async fn get(address: &str, tls: Option<&crate::tls::ClientTls>) -> Result<String> {
    let (_, body) = http_get(address, "/metrics", tls).await?;
    Ok(body)
}

/// `GET <path>` at `address` (`host:port`) over plain HTTP/1.0, or over
/// HTTPS when the scenario's listeners serve TLS: (status code, body).
pub async fn http_get(
    address: &str,
    path: &str,
    tls: Option<&crate::tls::ClientTls>,
) -> Result<(u16, String)> {
    if let Some(tls) = tls {
        return crate::tls::https_get(address, &tls.ca, path).await;
    }
    let mut socket = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await??;
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: regatta\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_string(&mut response)).await??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sum of every sample of the series `name` (with its labels, e.g.
/// `regatta_replication_index{role="leader",table="t"}`) in `metrics`.
pub fn sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
        .sum()
}
