//! TLS for the listeners: a certificate and key read from files and read
//! again whenever either file changes (checked at most once a second, at a
//! handshake), so renewed certificates take effect without a restart.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::net::Conn;

mod allowed_client;

pub use allowed_client::AllowedClient;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    path: String,
    reason: String,
}

fn fail(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(cert, e))?;
    if chain.is_empty() {
        return Err(fail(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(key, e))?;
    let certified =
        CertifiedKey::from_der(chain, key_der, &default_provider()).map_err(|e| fail(key, e))?;
    Ok(Arc::new(certified))
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// A certificate resolver that follows changes of its files.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingCert {
    pub fn new(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let loaded = Loaded {
            key: load(cert, key)?,
            stamps: (modified(cert), modified(key)),
            checked: Instant::now(),
        };
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            loaded: Mutex::new(loaded),
        }))
    }

    /// The current key, read again if a file changed since the last look.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.checked.elapsed() >= Duration::from_secs(1) {
            loaded.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != loaded.stamps {
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                        loaded.key = key;
                        loaded.stamps = stamps;
                    }
                    // A half-written renewal: keep serving the old one, try again later.
                    Err(err) => {
                        tracing::warn!(error = %err, "could not reload the TLS certificate")
                    }
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS acceptor over reloading certificate files, speaking HTTP/2 (gRPC)
/// and HTTP/1.1 (REST) by ALPN.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    acceptor_with_client_ca(cert, key, None, true, None)
}

/// As [`acceptor`]; with `client_ca`, a client certificate must be signed
/// by one of the CA file's certificates (mutual TLS), and must be presented
/// at all when `required` (otherwise it is checked only when sent); with
/// `allowed`, it must also carry that identity.
pub fn acceptor_with_client_ca(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    required: bool,
    allowed: Option<AllowedClient>,
) -> Result<TlsAcceptor, TlsError> {
    let resolver = ReloadingCert::new(cert, key)?;
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(cert, e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| fail(ca, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(ca, e))?;
            if certs.is_empty() {
                return Err(fail(ca, "no certificate in the CA file"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| fail(ca, e))?;
            }
            let verifier =
                tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
            let verifier = if required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| fail(ca, e))?;
            match allowed {
                Some(allowed) => builder.with_client_cert_verifier(Arc::new(
                    allowed_client::RestrictedClientVerifier {
                        inner: verifier,
                        allowed,
                    },
                )),
                None => builder.with_client_cert_verifier(verifier),
            }
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepted TLS connections of `listener` (TCP or Unix socket); handshakes
/// run concurrently so a slow or broken client does not hold up others.
pub fn incoming(
    listener: impl Into<crate::net::Limited>,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsStream<Conn>>> {
    let listener = listener.into();
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // `accept` turns Nagle's algorithm off (see `net`): small TLS
            // records must not wait for delayed ACKs.
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let handshake_sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = handshake_sender.send(Ok(tls)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
            if sender.is_closed() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
