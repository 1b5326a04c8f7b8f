//! The deployment files, tested as part of `cargo test --workspace`: the
//! Kubernetes manifests rendered and validated offline (no cluster can run
//! here), and the compose quick start brought up for real where a Docker
//! engine answers (`cargo xtask deploy-test`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Builds regatta:dev from these sources (unless it already is), once for
/// both tests: the manifest check has the server read each pod's settings
/// in it, and the compose file runs it. Whether there is an image.
fn image_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        if !docker_answers() {
            return false;
        }
        let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["image", "--if-stale"])
            .current_dir(workspace_root())
            .status()
            .expect("xtask runs");
        assert!(
            status.success(),
            "cargo xtask image --if-stale failed: {status}"
        );
        true
    })
}

#[test]
fn every_manifest_renders_and_validates_offline() {
    // Without Docker the script says it skips the server's own reading.
    image_ready();
    let status = Command::new("bash")
        .arg(workspace_root().join("ci/validate-manifests.sh"))
        .status()
        .expect("bash runs");
    assert!(
        status.success(),
        "ci/validate-manifests.sh failed: {status}"
    );
}

#[test]
fn the_compose_quick_start_serves_a_leader_and_a_follower_cluster() {
    if !image_ready() {
        // The conformance suite falls back to processes without Docker;
        // compose has no such fallback.
        eprintln!("no Docker engine answers: the compose quick start is not tested here");
        return;
    }
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("deploy-test")
        .current_dir(workspace_root())
        .status()
        .expect("xtask runs");
    assert!(status.success(), "cargo xtask deploy-test failed: {status}");
}
