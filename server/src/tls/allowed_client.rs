//! Which client certificates the API accepts beyond "signed by the CA":
//! `--api.allowed-cn` (the subject's common name) or `--api.allowed-hostname`
//! (a DNS name or IP address the certificate is valid for), as Regatta and
//! etcd name them. A certificate that fails the check fails the handshake.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
};

/// The one identity a client certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedClient {
    CommonName(String),
    Hostname(String),
}

impl AllowedClient {
    /// Whether the certificate (DER) carries the identity.
    pub fn permits(&self, der: &CertificateDer<'_>) -> bool {
        match self {
            AllowedClient::CommonName(wanted) => {
                common_names(der).is_some_and(|names| names.iter().any(|name| name == wanted))
            }
            AllowedClient::Hostname(wanted) => {
                let Ok(name) = ServerName::try_from(wanted.as_str()) else {
                    return false;
                };
                webpki::EndEntityCert::try_from(der)
                    .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
            }
        }
    }
}

/// A verifier that checks the chain with `inner`, then the identity.
#[derive(Debug)]
pub struct RestrictedClientVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub allowed: AllowedClient,
}

impl ClientCertVerifier for RestrictedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allowed.permits(end_entity) {
            Ok(verified)
        } else {
            tracing::debug!(allowed = ?self.allowed, "a client certificate without the allowed identity");
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One DER element: (tag, contents, what follows). Definite lengths only,
/// as DER has; `None` on anything malformed.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// The element at the front of `input`, which must have `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = element(input)?;
    (found == tag).then_some((contents, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject's common names of a DER certificate (RFC 5280 4.1).
fn common_names(der: &[u8]) -> Option<Vec<String>> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = element(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (mut names, _) = expect(tbs, SEQUENCE)?;
    let mut found = Vec::new();
    while !names.is_empty() {
        let (mut set, rest) = expect(names, SET)?;
        names = rest;
        while !set.is_empty() {
            let (pair, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(pair, OID)?;
            if oid == COMMON_NAME {
                // UTF8String, PrintableString, IA5String: bytes as text.
                let (_, text, _) = element(value)?;
                found.push(String::from_utf8(text.to_vec()).ok()?);
            }
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: &str, names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Regatta");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).expect("certificate").der().clone()
    }

    #[test]
    fn the_common_name_is_read_from_the_subject() {
        let cert = certificate("operator", &["node-1.example"]);
        assert_eq!(common_names(&cert), Some(vec!["operator".to_string()]));
        assert!(AllowedClient::CommonName("operator".into()).permits(&cert));
        assert!(!AllowedClient::CommonName("operato".into()).permits(&cert));
        assert!(!AllowedClient::CommonName("node-1.example".into()).permits(&cert));
    }

    #[test]
    fn the_hostname_is_checked_against_the_certificate_names() {
        let cert = certificate("operator", &["node-1.example", "10.0.0.7"]);
        assert!(AllowedClient::Hostname("node-1.example".into()).permits(&cert));
        assert!(AllowedClient::Hostname("10.0.0.7".into()).permits(&cert));
        assert!(!AllowedClient::Hostname("node-2.example".into()).permits(&cert));
        assert!(!AllowedClient::Hostname("operator".into()).permits(&cert));
    }

    #[test]
    fn malformed_certificates_carry_no_name() {
        let cert = certificate("operator", &["x"]);
        for cut in [0, 1, 2, 10, cert.len() / 2, cert.len() - 1] {
            assert_eq!(
                common_names(&cert[..cut]).unwrap_or_default(),
                Vec::<String>::new(),
                "{cut}"
            );
        }
        assert_eq!(common_names(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
