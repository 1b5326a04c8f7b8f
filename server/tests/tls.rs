//! TLS on the API of the real binary, and certificate reload without restart.

use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

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
