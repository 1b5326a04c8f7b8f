//! `regatta health`: asks a node's REST listener for `/healthz` and exits 0
//! when it answers 200. The image has no shell and no curl, so container
//! health checks (compose) run the server binary itself.
//!
//! Deliberately not the node's `REGATTA_REST_ADDRESS`: that is the address
//! the node binds (often 0.0.0.0), not one to dial.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::leader::duration;
use crate::net::address::{Address, Transport};
use crate::net::dial::UNIX_SOCKET_SERVER_NAME;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The node's REST listener: `host:port`, `http://`, `https://`,
    /// `unix://` or `unixs://` (TLS for a bare `host:port` when --ca is given).
    #[arg(long, default_value = "127.0.0.1:8079")]
    pub address: String,
    /// CA certificate (PEM) of the node's certificate, for TLS.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Longest wait for the answer.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub timeout: Duration,
}

pub fn run(args: HealthArgs) -> ExitCode {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                tokio::time::timeout(args.timeout, healthz(&args))
                    .await
                    .map_err(|_| format!("no answer within {:?}", args.timeout))?
            })
        });
    match answer {
        Ok(body) => {
            println!("{}", body.trim_end());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("regatta health: {}: {err}", args.address);
            ExitCode::FAILURE
        }
    }
}

/// The body of a 200 answer to `GET /healthz`; any other answer is an error.
async fn healthz(args: &HealthArgs) -> Result<String, String> {
    let address = Address::parse("--address", &args.address).map_err(|e| e.to_string())?;
    let tls = address.tls.unwrap_or(args.ca.is_some());
    match address.transport {
        Transport::Tcp(host_port) => {
            let stream = tokio::net::TcpStream::connect(&host_port)
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            let host = host_of(&host_port);
            if tls {
                get(connect_tls(stream, host, args.ca.as_deref()).await?, host).await
            } else {
                get(stream, host).await
            }
        }
        Transport::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(&path)
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            let host = UNIX_SOCKET_SERVER_NAME;
            if tls {
                get(connect_tls(stream, host, args.ca.as_deref()).await?, host).await
            } else {
                get(stream, host).await
            }
        }
    }
}

/// `host` of `host:port` (brackets of an IPv6 literal removed).
fn host_of(host_port: &str) -> &str {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

async fn connect_tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    ca: Option<&Path>,
) -> Result<tokio_rustls::client::TlsStream<S>, String> {
    let ca = ca.ok_or("a TLS address needs --ca (the CA of the node's certificate)")?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// One HTTP/1.1 `GET /healthz` on `stream`; the body when the status is 200.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
) -> Result<String, String> {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let mut answer = Vec::new();
    // A health answer is small; more than this is not one.
    (&mut stream)
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    parse_answer(&answer)
}

fn parse_answer(answer: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    match code {
        "200" => Ok(body.to_string()),
        "" => Err("no HTTP answer".into()),
        _ => Err(format!("{status}: {}", body.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_is_healthy() {
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            Ok("ok".to_string())
        );
        let unready =
            parse_answer(b"HTTP/1.1 503 Service Unavailable\r\n\r\ntable t has no leader")
                .unwrap_err();
        assert!(
            unready.contains("503") && unready.contains("no leader"),
            "{unready}"
        );
        assert_eq!(parse_answer(b""), Err("no HTTP answer".into()));
    }

    #[test]
    fn the_host_of_an_address_is_its_name_without_the_port() {
        assert_eq!(host_of("127.0.0.1:8079"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8079"), "::1");
        assert_eq!(host_of("leader1:8079"), "leader1");
    }
}
