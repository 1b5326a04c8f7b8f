//! TLS for scenarios: a certificate authority made per scenario, the
//! certificates it signs for nodes and clients, and the client side the
//! suite uses (gRPC over tonic, HTTPS to `/healthz`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The name every node certificate carries, and the name the suite checks:
/// the suite dials nodes by IP address (containers) or on loopback.
pub const SERVER_NAME: &str = "localhost";

/// A certificate authority of one scenario.
pub struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority")
    }
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Authority {
    pub fn new() -> Result<Authority> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regatta conformance CA");
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert, key })
    }

    /// The authority's own certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (host names or IP addresses) signed here:
    /// a node's (server and, on a follower, client) or a client's.
    pub fn issue(&self, names: &[String]) -> Result<Pair> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// How the suite reaches a cluster whose listeners serve TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// PEM of the CA the suite trusts.
    pub ca: String,
    /// The suite's client certificate, for listeners that ask for one.
    pub identity: Option<Pair>,
    /// The name checked in the servers' certificates; `None`: the host of
    /// the address dialled (servers someone else runs).
    pub server_name: Option<String>,
}

impl ClientTls {
    /// The suite's own clusters: their certificates name [`SERVER_NAME`].
    pub fn of_authority(authority: &Authority, identity: Option<Pair>) -> ClientTls {
        ClientTls {
            ca: authority.cert_pem(),
            identity,
            server_name: Some(SERVER_NAME.to_string()),
        }
    }

    /// Servers someone else runs (`[tls]` of the server template): the CA
    /// and, when both are given, the client certificate and key, from files.
    pub fn from_files(
        ca: &std::path::Path,
        pair: Option<(&std::path::Path, &std::path::Path)>,
        server_name: Option<String>,
    ) -> Result<ClientTls> {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let identity = match pair {
            Some((cert, key)) => Some(Pair {
                cert: read(cert)?,
                key: read(key)?,
            }),
            None => None,
        };
        Ok(ClientTls {
            ca: read(ca)?,
            identity,
            server_name,
        })
    }

    /// tonic's client configuration: trusts `ca`, checks the server name.
    pub fn tonic(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca));
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        match &self.identity {
            Some(pair) => config.identity(Identity::from_pem(&pair.cert, &pair.key)),
            None => config,
        }
    }
}

/// `GET <path>` over HTTPS at `address` (`host:port`), trusting only `ca`:
/// (status code, body).
pub async fn https_get(address: &str, ca: &str, path: &str) -> Result<(u16, String)> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.context("CA certificate")?)?;
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(address).await?;
        let mut tls = connector
            .connect(ServerName::try_from(SERVER_NAME)?, tcp)
            .await?;
        tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: {SERVER_NAME}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        // A server may close without TLS close_notify: keep what came.
        let _ = tls.read_to_end(&mut response).await;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no HTTPS answer in 5 s")??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    if status == 0 {
        bail!("status 0");
    }
    Ok((status, body))
}
