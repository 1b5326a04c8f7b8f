//! Address flags in both forms Regatta clients and configurations use:
//! `host:port` (2022) and URLs `http://`, `https://`, `unix://`, `unixs://`
//! (Regatta 0.3+). Parsing only; binding and dialling live beside it.

use std::fmt;
use std::path::PathBuf;

/// Where a listener binds or a client dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `host:port`.
    Tcp(String),
    /// A Unix-domain socket at this path.
    Unix(PathBuf),
}

/// A parsed address flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub transport: Transport,
    /// `Some(true)` for `https://` and `unixs://`, `Some(false)` for
    /// `http://` and `unix://`; `None` for a bare `host:port`, whose TLS the
    /// certificate flags decide, as in 2022 configurations.
    pub tls: Option<bool>,
}

/// Why an address flag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {text:?}: {reason}")]
pub struct AddressError {
    flag: &'static str,
    text: String,
    reason: String,
}

impl AddressError {
    pub fn new(flag: &'static str, text: &str, reason: impl fmt::Display) -> AddressError {
        AddressError {
            flag,
            text: text.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl Address {
    /// Parses the value of `flag` (named in errors).
    pub fn parse(flag: &'static str, text: &str) -> Result<Address, AddressError> {
        let fail = |reason: &str| AddressError::new(flag, text, reason);
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, text),
        };
        let (transport, tls) = match scheme.as_deref() {
            None => (Transport::Tcp(host_port(rest).map_err(fail)?), None),
            Some("http") => (Transport::Tcp(host_port(rest).map_err(fail)?), Some(false)),
            Some("https") => (Transport::Tcp(host_port(rest).map_err(fail)?), Some(true)),
            Some("unix") => (
                Transport::Unix(socket_path(rest).map_err(fail)?),
                Some(false),
            ),
            Some("unixs") => (
                Transport::Unix(socket_path(rest).map_err(fail)?),
                Some(true),
            ),
            Some(_) => {
                return Err(fail(
                    "the scheme must be http, https, unix or unixs (or none: host:port)",
                ))
            }
        };
        Ok(Address { transport, tls })
    }

    /// Whether a listener on this address serves TLS, given whether its
    /// certificate flags are set; `cert_flag` names them in the error.
    pub fn listen_tls(&self, has_cert: bool, cert_flag: &str) -> Result<bool, String> {
        match self.tls {
            None => Ok(has_cert),
            Some(true) if has_cert => Ok(true),
            Some(true) => Err(format!(
                "a TLS address (https:// or unixs://) needs {cert_flag}"
            )),
            Some(false) => Ok(false),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.transport, self.tls) {
            (Transport::Tcp(host_port), Some(true)) => write!(f, "https://{host_port}"),
            (Transport::Tcp(host_port), _) => write!(f, "http://{host_port}"),
            (Transport::Unix(path), Some(true)) => write!(f, "unixs://{}", path.display()),
            (Transport::Unix(path), _) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// `host:port` with nothing after it (a trailing `/` is forgiven).
fn host_port(text: &str) -> Result<String, &'static str> {
    let text = text.strip_suffix('/').unwrap_or(text);
    if text.contains(['/', '?', '#']) {
        return Err("only host:port may follow the scheme (no path or query)");
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("the port is missing (host:port)");
    };
    if host.is_empty() {
        return Err("the host is missing (host:port)");
    }
    if port.parse::<u16>().is_err() {
        return Err("the port must be a number from 0 to 65535");
    }
    Ok(text.to_string())
}

/// `unix:///abs/path` or `unix://relative/path` (as Go's url package and
/// Regatta read them: everything after `//` is the path).
fn socket_path(text: &str) -> Result<PathBuf, &'static str> {
    if text.is_empty() {
        return Err("the socket path is missing (unix:///path/to/socket)");
    }
    Ok(PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Address, AddressError> {
        Address::parse("--api.address", text)
    }

    #[test]
    fn both_generations_of_address_parse() {
        let tcp = |s: &str, tls| Address {
            transport: Transport::Tcp(s.into()),
            tls,
        };
        assert_eq!(parse("127.0.0.1:8443"), Ok(tcp("127.0.0.1:8443", None)));
        assert_eq!(
            parse("http://0.0.0.0:8443"),
            Ok(tcp("0.0.0.0:8443", Some(false)))
        );
        assert_eq!(
            parse("HTTPS://node-1:8443/"),
            Ok(tcp("node-1:8443", Some(true)))
        );
        assert_eq!(
            parse("https://[::1]:8443"),
            Ok(tcp("[::1]:8443", Some(true)))
        );
        let unix = |p: &str, tls| Address {
            transport: Transport::Unix(p.into()),
            tls,
        };
        assert_eq!(
            parse("unix:///run/regatta.sock"),
            Ok(unix("/run/regatta.sock", Some(false)))
        );
        assert_eq!(
            parse("unixs://data/api.sock"),
            Ok(unix("data/api.sock", Some(true)))
        );
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_flag_named() {
        for bad in [
            "ftp://x:1",
            "http://x",
            "x:port",
            ":8443",
            "https://x:1/path",
            "unix://",
            "127.0.0.1:70000",
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with("--api.address"), "{err}");
        }
    }

    #[test]
    fn the_scheme_decides_tls_and_a_bare_address_follows_the_certificate() {
        let bare = parse("127.0.0.1:1").unwrap();
        assert_eq!(bare.listen_tls(true, "--c"), Ok(true));
        assert_eq!(bare.listen_tls(false, "--c"), Ok(false));
        let https = parse("https://127.0.0.1:1").unwrap();
        assert_eq!(https.listen_tls(true, "--c"), Ok(true));
        assert!(https.listen_tls(false, "--c").unwrap_err().contains("--c"));
        let http = parse("http://127.0.0.1:1").unwrap();
        assert_eq!(http.listen_tls(true, "--c"), Ok(false));
    }
}
