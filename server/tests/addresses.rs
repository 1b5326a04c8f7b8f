//! Address flags in both Regatta forms on the real binary: Unix-socket
//! listeners for every API, a follower and the CLI reaching them, TLS by
//! scheme (`https://`, `unixs://`) and mutual TLS on the API, with the
//! CLI's `--ca`, `--cert` and `--key`.

use std::path::Path;
use std::process::{Child, Command as Process, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::free_address;

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `regatta <role> --tables.names t` with its data under `data`, plus `args`.
fn spawn(role: &str, data: &Path, args: &[String]) -> Server {
    let child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args([
            role,
            "--dev-mode",
            "--log-level",
            "warn",
            "--raft.rtt",
            "10ms",
        ])
        .args(["--tables.names", "t", "--raft.address", &free_address()])
        .arg("--raft.node-host-dir")
        .arg(data.join("raft"))
        .arg("--raft.state-machine-dir")
        .arg(data.join("sm"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn regatta");
    Server(child)
}

/// Runs `regatta <args>`; returns its output.
fn regatta<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run regatta")
}

fn text(output: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `regatta <args>` until it succeeds (the server is starting);
/// returns its stdout.
fn eventually<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = regatta(args);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "never succeeded: {args:?}: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn every_listener_serves_unix_sockets_and_the_cli_and_a_follower_reach_them() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let socket = |name: &str| format!("unix://{}", path(dir.path(), name));
    let (api, replication, maintenance) = (
        socket("api.sock"),
        socket("repl.sock"),
        socket("maint.sock"),
    );
    let leader_args = vec![
        "--api.address".to_string(),
        api.clone(),
        "--rest.address".into(),
        format!("http://{}", free_address()),
        "--replication.address".into(),
        replication.clone(),
        "--maintenance.address".into(),
        maintenance.clone(),
    ];
    let leader = spawn("leader", &dir.path().join("leader"), &leader_args);

    let put = eventually(&["kv", "--address", &api, "put", "t", "k", "v1"]);
    assert!(put.starts_with("OK (revision "), "{put}");
    assert_eq!(
        eventually(&["kv", "--address", &api, "get", "t", "k"]),
        "k=v1"
    );
    // A second server cannot take a socket that is being served.
    let second = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["leader", "--log-level", "error", "--tables.names", "t"])
        .args(["--api.address", &api, "--raft.address", &free_address()])
        .args([
            "--rest.address",
            &free_address(),
            "--replication.enabled=false",
        ])
        .args(["--maintenance.enabled=false"])
        .arg("--raft.node-host-dir")
        .arg(dir.path().join("second/raft"))
        .arg("--raft.state-machine-dir")
        .arg(dir.path().join("second/sm"))
        .output()
        .expect("run a second leader");
    assert!(!second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another process serves"),
        "{}",
        text(&second)
    );

    // Backup through the maintenance socket.
    let backup_dir = path(dir.path(), "backup");
    let backup = regatta(&[
        "backup",
        "--address",
        &maintenance,
        "--dir",
        &backup_dir,
        "--json",
    ]);
    assert!(backup.status.success(), "{}", text(&backup));
    assert!(dir.path().join("backup/manifest.json").exists());

    // A follower copies the leader over its replication socket and serves
    // reads on a socket of its own.
    let follower_api = socket("follower-api.sock");
    let follower_args = vec![
        "--replication.leader-address".to_string(),
        replication.clone(),
        "--replication.poll-interval".into(),
        "100ms".into(),
        "--api.address".into(),
        follower_api.clone(),
        "--rest.address".into(),
        free_address(),
        "--maintenance.address".into(),
        socket("follower-maint.sock"),
    ];
    let _follower = spawn("follower", &dir.path().join("follower"), &follower_args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while eventually(&["kv", "--address", &follower_api, "get", "t", "k"]) != "k=v1" {
        assert!(Instant::now() < deadline, "the follower never copied k");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Killed, the leader leaves its socket files behind; restarted on the
    // same paths it replaces them and serves its data again.
    drop(leader);
    assert!(
        dir.path().join("api.sock").exists(),
        "a killed process leaves its socket"
    );
    let _leader = spawn("leader", &dir.path().join("leader"), &leader_args);
    assert_eq!(
        eventually(&["kv", "--address", &api, "get", "t", "k"]),
        "k=v1"
    );
}

/// A CA and what it signs, as PEM files in a directory.
struct Pki {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("write CA");
        Pki { cert, key }
    }

    /// Writes `<file>.pem` and `<file>.key` for `names`.
    fn sign(&self, dir: &Path, file: &str, names: &[&str]) {
        self.sign_with_cn(dir, file, "rcgen", names);
    }

    /// As [`Pki::sign`], the subject's common name `cn`.
    fn sign_with_cn(&self, dir: &Path, file: &str, cn: &str, names: &[&str]) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed certificate");
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).expect("write key");
    }
}

#[test]
fn tls_follows_the_scheme_and_the_api_can_require_client_certificates() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let d = dir.path();
    let pki = Pki::new(d);
    pki.sign(d, "server", &["localhost", "127.0.0.1"]);
    pki.sign(d, "client", &["operator"]);
    let api = format!("https://{}", free_address());
    let maintenance = format!("unixs://{}", path(d, "maint.sock"));
    let rest = free_address();
    let args: Vec<String> = [
        "--api.address",
        &api,
        "--api.cert-filename",
        &path(d, "server.pem"),
        "--api.key-filename",
        &path(d, "server.key"),
        "--api.ca-filename",
        &path(d, "ca.pem"),
        "--api.client-cert-auth",
        "--rest.address",
        &format!("http://{rest}"),
        "--replication.enabled=false",
        "--maintenance.address",
        &maintenance,
        "--maintenance.cert-filename",
        &path(d, "server.pem"),
        "--maintenance.key-filename",
        &path(d, "server.key"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _leader = spawn("leader", &d.join("data"), &args);

    let (ca, cert, key) = (
        path(d, "ca.pem"),
        path(d, "client.pem"),
        path(d, "client.key"),
    );
    let kv = |extra: &[&str]| {
        let mut all = vec!["kv", "--address", &api];
        all.extend_from_slice(extra);
        all.extend_from_slice(&["put", "t", "k", "v"]);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let put = eventually(&kv(&["--ca", &ca, "--cert", &cert, "--key", &key]));
    assert!(put.starts_with("OK (revision "), "{put}");

    // Mutual TLS: no client certificate, no call.
    let anonymous = regatta(&kv(&["--ca", &ca]));
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    // The server's certificate is checked against --ca (none: system roots).
    let unverified = regatta(&kv(&["--cert", &cert, "--key", &key]));
    assert!(!unverified.status.success(), "{}", text(&unverified));
    // A bare host:port with --ca speaks TLS as well.
    let bare = api.trim_start_matches("https://").to_string();
    let bare_put = regatta(&[
        "kv",
        "--address",
        &bare,
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "put",
        "t",
        "k",
        "v2",
    ]);
    assert!(bare_put.status.success(), "{}", text(&bare_put));

    // TLS over a Unix socket: the maintenance API, reached by backup.
    let backup = regatta(&[
        "backup",
        "--address",
        &maintenance,
        "--ca",
        &ca,
        "--dir",
        &path(d, "backup"),
        "--json",
    ]);
    assert!(backup.status.success(), "{}", text(&backup));

    // The REST listener was asked for plaintext (http://) beside a TLS API.
    let health = http_get(&rest, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

#[test]
fn the_api_can_require_a_common_name_or_a_host_name_on_client_certificates() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let d = dir.path();
    let pki = Pki::new(d);
    pki.sign(d, "server", &["localhost", "127.0.0.1"]);
    pki.sign_with_cn(d, "operator", "operator", &["ops.example"]);
    pki.sign_with_cn(d, "intruder", "intruder", &["operator", "other.example"]);
    for (flag, value, allowed, refused) in [
        ("--api.allowed-cn", "operator", "operator", "intruder"),
        (
            "--api.allowed-hostname",
            "ops.example",
            "operator",
            "intruder",
        ),
    ] {
        let api = format!("https://{}", free_address());
        let args: Vec<String> = [
            "--api.address",
            &api,
            "--api.cert-filename",
            &path(d, "server.pem"),
            "--api.key-filename",
            &path(d, "server.key"),
            "--api.ca-filename",
            &path(d, "ca.pem"),
            "--api.client-cert-auth",
            flag,
            value,
            "--rest.address",
            &free_address(),
            "--replication.enabled=false",
            "--maintenance.enabled=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let _leader = spawn("leader", &d.join(flag.trim_start_matches('-')), &args);
        let put = |who: &str| {
            let (cert, key) = (
                path(d, &format!("{who}.pem")),
                path(d, &format!("{who}.key")),
            );
            let ca = path(d, "ca.pem");
            vec![
                "kv",
                "--address",
                &api,
                "--ca",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
                "put",
                "t",
                "k",
                who,
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
        };
        let ok = eventually(&put(allowed));
        assert!(ok.starts_with("OK (revision "), "{flag} {value}: {ok}");
        let refused_put = regatta(&put(refused));
        assert!(
            !refused_put.status.success(),
            "{flag} {value}: {}",
            text(&refused_put)
        );
    }
}

/// A plain HTTP/1.1 GET; returns the whole answer.
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect REST");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn a_tls_address_without_a_certificate_or_a_malformed_one_is_refused_before_any_data_is_written() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    for (flag, value, expected) in [
        (
            "--api.address",
            "https://127.0.0.1:0",
            "--api.cert-filename",
        ),
        (
            "--replication.address",
            "unixs:///tmp/x.sock",
            "--replication.cert-filename",
        ),
        (
            "--maintenance.address",
            "ftp://127.0.0.1:1",
            "the scheme must be",
        ),
        ("--rest.address", "http://127.0.0.1", "the port is missing"),
    ] {
        let data = dir.path().join(flag.trim_start_matches('-'));
        let output = Process::new(env!("CARGO_BIN_EXE_regatta"))
            .args(["leader", "--log-level", "error", flag, value])
            .arg("--raft.node-host-dir")
            .arg(data.join("raft"))
            .arg("--raft.state-machine-dir")
            .arg(data.join("sm"))
            .output()
            .expect("run regatta leader");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{flag} {value}: {}",
            text(&output)
        );
        assert!(
            stderr.contains(flag) && stderr.contains(expected),
            "{flag} {value}: {stderr}"
        );
        assert!(
            !data.exists(),
            "{flag} {value}: the node started and wrote {}",
            data.display()
        );
    }
}
