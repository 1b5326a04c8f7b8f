//! TLS on the API of the real binary, and certificate reload without restart.

use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

mod support;

use support::free_port;

/// Writes a fresh self-signed certificate for `localhost`; returns its PEM.
fn write_cert(dir: &Path) -> String {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let pem = generated.cert.pem();
    // Key first, certificate last: a reader between the two writes sees a
    // mismatch and keeps the old pair.
    std::fs::write(dir.join("key.pem"), generated.key_pair.serialize_pem()).expect("write key");
    std::fs::write(dir.join("cert.pem"), &pem).expect("write cert");
    pem
}

async fn connect(api: &str, ca_pem: &str) -> Result<KvClient<Channel>, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{api}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(KvClient::new(channel))
}

#[tokio::test]
async fn the_api_serves_tls_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let first = write_cert(dir.path());
    let api = format!("127.0.0.1:{}", free_port());
    let mut child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args([
            "leader",
            "--api.address",
            &api,
            "--tables.names",
            "t",
            "--raft.rtt",
            "10ms",
        ])
        .args(["--raft.address", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--rest.address",
            &format!("127.0.0.1:{}", free_port()),
            "--log-level",
            "warn",
        ])
        .arg("--api.cert-filename")
        .arg(dir.path().join("cert.pem"))
        .arg("--api.key-filename")
        .arg(dir.path().join("key.pem"))
        .arg("--raft.node-host-dir")
        .arg(dir.path().join("raft"))
        .arg("--raft.state-machine-dir")
        .arg(dir.path().join("sm"))
        // Every test process binds its own replication port.
        .args(["--replication.address", "127.0.0.1:0"])
        .args(["--maintenance.address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn regatta leader");

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kv = loop {
        match connect(&api, &first).await {
            Ok(kv) => break kv,
            Err(err) => {
                assert!(Instant::now() < deadline, "no TLS connection: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    kv.put(PutRequest {
        table: b"t".to_vec(),
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        prev_kv: false,
    })
    .await
    .expect("put over TLS");
    let plain = Channel::from_shared(format!("http://{api}"))
        .expect("uri")
        .connect()
        .await;
    if let Ok(channel) = plain {
        let answer = KvClient::new(channel)
            .range(RangeRequest {
                table: b"t".to_vec(),
                key: b"k".to_vec(),
                ..RangeRequest::default()
            })
            .await;
        assert!(
            answer.is_err(),
            "plaintext calls are not served on a TLS listener"
        );
    }

    // Renew the certificate in place; new connections get the new one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = write_cert(dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut renewed = loop {
        match connect(&api, &second).await {
            Ok(kv) => break kv,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "renewed certificate not served: {err}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let read = renewed
        .range(RangeRequest {
            table: b"t".to_vec(),
            key: b"k".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .expect("range with the renewed certificate")
        .into_inner();
    assert_eq!(read.kvs[0].value, b"v");
    assert!(
        connect(&api, &first).await.is_err(),
        "the old certificate is no longer served"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A CA, and a certificate it signs for `name`, as (cert PEM, key PEM).
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    fn sign(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed certificate");
        (cert.pem(), key.serialize_pem())
    }
}

#[tokio::test]
async fn the_replication_listener_requires_client_certificates_signed_by_its_ca() {
    use regatta_proto::replication::v1::metadata_client::MetadataClient;
    use regatta_proto::replication::v1::MetadataRequest;
    use tonic::transport::Identity;

    let dir = tempfile::TempDir::new().expect("temp dir");
    let ca = TestCa::new();
    let (server_cert, server_key) = ca.sign("localhost");
    let (client_cert, client_key) = ca.sign("follower");
    std::fs::write(dir.path().join("cert.pem"), &server_cert).expect("write");
    std::fs::write(dir.path().join("key.pem"), &server_key).expect("write");
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).expect("write");
    let replication = format!("127.0.0.1:{}", free_port());
    let mut child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["leader", "--tables.names", "t", "--log-level", "warn"])
        .args(["--api.address", &format!("127.0.0.1:{}", free_port())])
        .args(["--raft.address", &format!("127.0.0.1:{}", free_port())])
        .args(["--rest.address", &format!("127.0.0.1:{}", free_port())])
        .args(["--replication.address", &replication])
        .args(["--maintenance.address", "127.0.0.1:0"])
        .arg("--replication.cert-filename")
        .arg(dir.path().join("cert.pem"))
        .arg("--replication.key-filename")
        .arg(dir.path().join("key.pem"))
        .arg("--replication.ca-filename")
        .arg(dir.path().join("ca.pem"))
        .arg("--raft.node-host-dir")
        .arg(dir.path().join("raft"))
        .arg("--raft.state-machine-dir")
        .arg(dir.path().join("sm"))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn regatta leader");

    let connect = |identity: Option<Identity>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.cert.pem()))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        let endpoint = Channel::from_shared(format!("https://{replication}"))
            .expect("uri")
            .tls_config(tls)
            .expect("tls config");
        async move { endpoint.connect().await }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let tables = loop {
        let attempt = match connect(Some(Identity::from_pem(&client_cert, &client_key))).await {
            Ok(channel) => MetadataClient::new(channel)
                .get(MetadataRequest {})
                .await
                .map_err(|e| e.to_string()),
            Err(err) => Err(format!("{err:?}")),
        };
        match attempt {
            Ok(response) => break response.into_inner().tables,
            Err(err) => {
                assert!(Instant::now() < deadline, "no mTLS call: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].name, "t");

    // Without a client certificate the handshake (or the call) fails.
    let anonymous = match connect(None).await {
        Ok(channel) => MetadataClient::new(channel)
            .get(MetadataRequest {})
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(!anonymous, "a client without a certificate was served");
    let _ = child.kill();
    let _ = child.wait();
}
