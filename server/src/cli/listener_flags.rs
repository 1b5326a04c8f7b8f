//! The listeners' address and TLS flags, checked before the node starts
//! (a typo must write no data) and turned into TLS acceptors.

use super::leader::LeaderArgs;
use crate::net::Address;

pub const API_CERT_FLAGS: &str = "--api.cert-filename and --api.key-filename";
pub const REPLICATION_CERT_FLAGS: &str =
    "--replication.cert-filename and --replication.key-filename";
pub const MAINTENANCE_CERT_FLAGS: &str =
    "--maintenance.cert-filename and --maintenance.key-filename";

/// Refuses a malformed address flag, or a TLS address whose certificate
/// flags are missing, before the node starts: a typo writes no data.
pub fn check_addresses(args: &LeaderArgs, serves_replication: bool) -> Result<(), String> {
    let api_cert = args.api_cert_filename.is_some();
    let listeners = [
        (
            "--api.address",
            &args.api_address,
            api_cert,
            API_CERT_FLAGS,
            true,
        ),
        (
            "--rest.address",
            &args.rest_address,
            api_cert,
            API_CERT_FLAGS,
            true,
        ),
        (
            "--replication.address",
            &args.replication_address,
            args.replication_cert_filename.is_some(),
            REPLICATION_CERT_FLAGS,
            serves_replication && args.replication_enabled,
        ),
        (
            "--maintenance.address",
            &args.maintenance_address,
            args.maintenance_cert_filename.is_some(),
            MAINTENANCE_CERT_FLAGS,
            args.maintenance_enabled,
        ),
    ];
    for (flag, text, has_cert, cert_flags, used) in listeners {
        if used {
            Address::parse(flag, text)
                .map_err(|e| e.to_string())?
                .listen_tls(has_cert, cert_flags)
                .map_err(|e| format!("{flag} {text}: {e}"))?;
        }
    }
    Ok(())
}

/// The API's and the REST listener's TLS acceptors, when a certificate and
/// key are given; client certificates are asked for on the API only.
pub fn api_tls(
    args: &LeaderArgs,
) -> Result<
    (
        Option<tokio_rustls::TlsAcceptor>,
        Option<tokio_rustls::TlsAcceptor>,
    ),
    String,
> {
    let (cert, key) = match (&args.api_cert_filename, &args.api_key_filename) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None)
            if args.api_ca_filename.is_some()
                || args.api_client_cert_auth
                || args.api_allowed_cn.is_some()
                || args.api_allowed_hostname.is_some() =>
        {
            return Err(
                "--api.ca-filename, --api.client-cert-auth and --api.allowed-* need --api.cert-filename and --api.key-filename"
                    .into(),
            )
        }
        (None, None) => return Ok((None, None)),
        _ => return Err("--api.cert-filename and --api.key-filename go together".into()),
    };
    if args.api_client_cert_auth && args.api_ca_filename.is_none() {
        return Err("--api.client-cert-auth needs --api.ca-filename".into());
    }
    let allowed = match (&args.api_allowed_cn, &args.api_allowed_hostname) {
        (Some(cn), None) => Some(crate::tls::AllowedClient::CommonName(cn.clone())),
        (None, Some(name)) => Some(crate::tls::AllowedClient::Hostname(name.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err("--api.allowed-cn and --api.allowed-hostname exclude each other".into())
        }
    };
    if allowed.is_some() && !args.api_client_cert_auth {
        return Err(
            "--api.allowed-cn and --api.allowed-hostname need --api.client-cert-auth".into(),
        );
    }
    let api = crate::tls::acceptor_with_client_ca(
        cert,
        key,
        args.api_ca_filename.as_deref(),
        args.api_client_cert_auth,
        allowed,
    )
    .map_err(|e| format!("TLS: {e}"))?;
    let rest = crate::tls::acceptor(cert, key).map_err(|e| format!("TLS: {e}"))?;
    Ok((Some(api), Some(rest)))
}
