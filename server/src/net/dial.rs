//! Client channels for every address form: the CLI's `--address`, a
//! follower's `--replication.leader-address`. TLS comes from the scheme
//! (`https://`, `unixs://`) or, for a bare `host:port`, from a CA or client
//! certificate being given, as 2022 configurations expect.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use super::address::{Address, Transport};

/// The name a certificate served on a Unix socket must carry: a socket has
/// no host name to check against.
pub const UNIX_SOCKET_SERVER_NAME: &str = "localhost";

/// What a client needs to reach a server.
#[derive(Debug, Clone)]
pub struct DialSettings {
    /// The flag the address came from, named in errors.
    pub flag: &'static str,
    pub address: String,
    /// CA (PEM) of the server's certificate (system roots without it).
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive pings, for long-lived channels (followers).
    pub keep_alive: bool,
}

impl DialSettings {
    pub fn new(flag: &'static str, address: &str) -> DialSettings {
        DialSettings {
            flag,
            address: address.to_string(),
            ca: None,
            cert: None,
            key: None,
            connect_timeout: Duration::from_secs(5),
            keep_alive: false,
        }
    }
}

/// A prepared channel: an endpoint, and for TLS over a Unix socket the
/// socket path its connector dials.
pub struct Dialer {
    endpoint: Endpoint,
    tls_socket: Option<PathBuf>,
}

impl Dialer {
    pub fn new(settings: &DialSettings) -> Result<Dialer, String> {
        let address =
            Address::parse(settings.flag, &settings.address).map_err(|e| e.to_string())?;
        let tls = address
            .tls
            .unwrap_or(settings.ca.is_some() || settings.cert.is_some());
        let (url, tls_socket) = match (&address.transport, tls) {
            (Transport::Tcp(host_port), false) => (format!("http://{host_port}"), None),
            (Transport::Tcp(host_port), true) => (format!("https://{host_port}"), None),
            (Transport::Unix(path), false) => (format!("unix://{}", path.display()), None),
            // tonic refuses TLS on its own Unix endpoints: dial the socket
            // ourselves and let tonic run TLS over it, as for https.
            (Transport::Unix(path), true) => (
                format!("https://{UNIX_SOCKET_SERVER_NAME}"),
                Some(path.clone()),
            ),
        };
        let flag = settings.flag;
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|e| format!("{flag} {}: {e}", settings.address))?
            .connect_timeout(settings.connect_timeout);
        if settings.keep_alive {
            endpoint = endpoint
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true);
        }
        if tls {
            endpoint = endpoint
                .tls_config(client_tls(settings, tls_socket.is_some())?)
                .map_err(|e| format!("{flag} {}: TLS: {e}", settings.address))?;
        }
        Ok(Dialer {
            endpoint,
            tls_socket,
        })
    }

    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls_socket {
            None => self.endpoint.connect().await,
            Some(path) => {
                self.endpoint
                    .connect_with_connector(unix_connector(path.clone()))
                    .await
            }
        }
    }

    /// A channel that connects on first use (and again after failures).
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls_socket {
            None => self.endpoint.connect_lazy(),
            Some(path) => self
                .endpoint
                .connect_with_connector_lazy(unix_connector(path.clone())),
        }
    }
}

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Send
       + 'static {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })
}

fn client_tls(settings: &DialSettings, over_unix_socket: bool) -> Result<ClientTlsConfig, String> {
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let mut tls = ClientTlsConfig::new();
    tls = match &settings.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => tls.with_enabled_roots(),
    };
    if over_unix_socket {
        tls = tls.domain_name(UNIX_SOCKET_SERVER_NAME);
    }
    match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => Ok(tls.identity(Identity::from_pem(read(cert)?, read(key)?))),
        (None, None) => Ok(tls),
        _ => Err("a client certificate and its key go together".into()),
    }
}
