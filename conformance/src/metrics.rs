//! A node's Prometheus text from its REST listener (`GET /metrics`).

use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET /metrics` at `address` (`host:port`).
pub async fn get(address: &str) -> Result<String> {
    let mut socket = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await??;
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: regatta\r\n\r\n")
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_string(&mut body)).await??;
    Ok(body)
}

/// The sum of every sample of the series `name` (with its labels, e.g.
/// `regatta_replication_index{role="leader",table="t"}`) in `metrics`.
pub fn sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
        .sum()
}
