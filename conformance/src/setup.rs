//! Choosing the backend for a run, and what it needs first (the image or
//! the binary, a Docker shim, no leftovers of earlier runs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::backend::containers::{self, ContainersBackend};
use crate::backend::docker_shim;
use crate::backend::external::ExternalBackend;
use crate::backend::processes::ProcessesBackend;
use crate::backend::Backend;

/// The workspace root (the suite builds the server from it).
fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// A cargo of the same toolchain, without the variables cargo sets for the
/// program it runs (`cargo run`, a test binary). Build scripts that watch
/// them (ring's `rerun-if-env-changed=CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`,
/// ...) would otherwise see other values than in the user's own command and
/// run again, recompiling ring, rustls, tonic and the server each time.
fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_by_cargo {
            cargo.env_remove(name);
        }
    }
    cargo
}

/// Picks the backend from `REGATTA_ENDPOINTS`, `REGATTA_CONFORMANCE_BACKEND`
/// and whether a Docker engine answers, and says which on the terminal.
pub async fn choose_backend() -> Result<Arc<dyn Backend>> {
    let template = crate::template::load()?;
    if let Ok(list) = std::env::var("REGATTA_ENDPOINTS") {
        let replication = std::env::var("REGATTA_REPLICATION_ENDPOINTS").ok();
        let maintenance = std::env::var("REGATTA_MAINTENANCE_ENDPOINTS").ok();
        let backend =
            ExternalBackend::from_list(&list, replication.as_deref(), maintenance.as_deref())?;
        println!(
            "conformance: external cluster at {}",
            backend.endpoints.join(", ")
        );
        return Ok(Arc::new(backend));
    }
    let wanted = std::env::var("REGATTA_CONFORMANCE_BACKEND").unwrap_or_default();
    match wanted.as_str() {
        "" | "containers" | "processes" => {}
        other => bail!("REGATTA_CONFORMANCE_BACKEND={other}: use containers or processes"),
    }
    if wanted != "processes" {
        match docker_engine().await {
            Ok(()) => return containers_backend(template.image.clone()).await,
            Err(err) if wanted == "containers" => {
                bail!("REGATTA_CONFORMANCE_BACKEND=containers, but no Docker engine answers: {err:#}")
            }
            Err(err) => println!(
                "conformance: no Docker engine answers ({err:#}); running the processes backend instead"
            ),
        }
    }
    let binary = match (std::env::var_os("REGATTA_BINARY"), &template.binary) {
        (Some(path), _) => PathBuf::from(path),
        (None, Some(path)) => path.clone(),
        (None, None) => server_binary()?,
    };
    println!(
        "conformance: processes backend, binary {}",
        binary.display()
    );
    Ok(Arc::new(ProcessesBackend { binary }))
}

/// Checks the engine, and points testcontainers at a version shim when the
/// engine is older than the API version testcontainers speaks.
async fn docker_engine() -> Result<()> {
    let socket = docker_shim::engine_socket()?;
    let version = docker_shim::engine_api_version(&socket).await?;
    let client = testcontainers::bollard::API_DEFAULT_VERSION;
    let spoken = (client.major_version as u32, client.minor_version as u32);
    if version < spoken {
        let dir = std::env::temp_dir().join(format!("regatta-docker-shim-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let shim = dir.join("docker.sock");
        let _ = std::fs::remove_file(&shim);
        docker_shim::start(&shim, socket, version).await?;
        // SAFETY: set before any other thread reads the environment
        // (testcontainers reads DOCKER_HOST when it first connects).
        std::env::set_var("DOCKER_HOST", format!("unix://{}", shim.display()));
        println!(
            "conformance: Docker engine speaks API {}.{}, testcontainers {}.{}: using the version shim",
            version.0, version.1, spoken.0, spoken.1
        );
    }
    Ok(())
}

/// `REGATTA_IMAGE`, else the template's image, else `regatta:dev` built here.
async fn containers_backend(template_image: Option<String>) -> Result<Arc<dyn Backend>> {
    containers::remove_leftovers()
        .await
        .context("removing containers of earlier runs")?;
    let image = match std::env::var("REGATTA_IMAGE").ok().or(template_image) {
        Some(image) => image,
        None => {
            ensure_image()?;
            "regatta:dev".to_string()
        }
    };
    let run_id = format!("{:x}", std::process::id());
    println!("conformance: containers backend, image {image}");
    Ok(Arc::new(ContainersBackend { image, run_id }))
}

/// Builds `regatta:dev` when it is missing or older than the sources, from
/// the workspace's own debug build (xtask says what it builds and how long
/// that takes from scratch).
fn ensure_image() -> Result<()> {
    println!("conformance: checking image regatta:dev against the sources (`cargo xtask image --if-stale`)");
    let status = cargo()
        .current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "image",
            "--if-stale",
        ])
        .status()
        .context("running cargo xtask image")?;
    if !status.success() {
        bail!("`cargo xtask image --if-stale` failed");
    }
    Ok(())
}

/// Builds the server binary (the workspace's debug build, shared with
/// `cargo test --workspace`) and returns its path.
/// The workspace's debug server binary, built if needed (`cargo xtask
/// server-binary`).
pub fn server_binary() -> Result<PathBuf> {
    println!("conformance: building the server binary (`cargo xtask server-binary`; from scratch, RocksDB included, about 25 minutes on 2 cores)");
    let output = cargo()
        .current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "server-binary",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo xtask server-binary")?;
    if !output.status.success() {
        bail!("`cargo xtask server-binary` failed");
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let path = text
        .lines()
        .last()
        .context("xtask printed no binary path")?;
    Ok(PathBuf::from(path.trim()))
}
