//! How the CLI's client commands (`kv`, `backup`, `restore`) reach a
//! server: the address in either Regatta form and the TLS files.

use std::path::PathBuf;

use clap::Args;
use tonic::transport::Channel;

use crate::net::dial::{DialSettings, Dialer};

/// TLS files of a client command. A bare `host:port` address speaks TLS
/// when `--ca` or `--cert` is given; `https://` and `unixs://` always do.
#[derive(Debug, Clone, Args)]
pub struct ClientTlsArgs {
    /// CA certificate (PEM) of the server's certificate (system roots
    /// without it).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for a server that requires one (mutual TLS).
    #[arg(
        long = "cert",
        id = "client_cert",
        global = true,
        requires = "client_key"
    )]
    pub cert: Option<PathBuf>,
    /// Key (PEM) of --cert.
    #[arg(
        long = "key",
        id = "client_key",
        global = true,
        requires = "client_cert"
    )]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// A channel to `address` (the value of `--address`), connected now so
    /// that an unreachable server is reported before any work starts.
    pub async fn connect(&self, address: &str) -> Result<Channel, String> {
        let settings = DialSettings {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            ..DialSettings::new("--address", address)
        };
        Dialer::new(&settings)?
            .connect()
            .await
            .map_err(|e| format!("cannot reach the server at {address}: {}", source_chain(&e)))
    }
}

/// An error with its causes, `a: b: c`: tonic's transport error alone says
/// only "transport error".
pub fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
