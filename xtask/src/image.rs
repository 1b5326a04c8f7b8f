//! `cargo xtask image`: the server image, built with no base image.
//!
//! No registry is reachable, so the image is `FROM scratch` plus a staged
//! root file system: the stripped server binary, the dynamic loader and
//! every shared library `ldd` names, each at its absolute path. The recipe
//! (`ci/image/Dockerfile`) is four instructions; this module stages its
//! context and runs `docker build` with the classic builder (no BuildKit,
//! which would try to pull a frontend image).
//!
//! The image carries the hash of the sources it was built from
//! (`org.regatta.sources`) and its profile (`org.regatta.profile`), so
//! `--if-stale` can skip a build that would produce the same thing.
//!
//! Profiles: by default the binary is the one `cargo test --workspace`
//! builds (the dev profile, dependencies optimised), so the conformance
//! suite inside that command reuses its build, RocksDB included, instead of
//! compiling everything again in release (about 18 minutes on 2 cores).
//! `--release` builds the release binary, for benchmarks and deployments.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const REPOSITORY: &str = "regatta";
const SOURCES_LABEL: &str = "org.regatta.sources";
const PROFILE_LABEL: &str = "org.regatta.profile";

/// Which build of the server goes into the image (or is printed by
/// `server-binary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The binary `cargo test --workspace` builds: shares its build.
    Dev,
    /// `cargo build --release`: for benchmarks and deployments.
    Release,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Release => "release",
        }
    }
}

/// What the image is built from: a change to any of these files rebuilds it.
const SOURCE_ROOTS: [&str; 7] = [
    "Cargo.toml",
    "Cargo.lock",
    "server/Cargo.toml",
    "server/src",
    "codegen/Cargo.toml",
    "codegen/src",
    "ci/image",
];

/// Builds the image (`regatta:dev` and `regatta:<git short sha>`); with
/// `if_stale`, only when `regatta:dev` is missing or was built from other
/// sources (a release image of the same sources serves a dev request too).
pub fn build(root: &Path, if_stale: bool, profile: Profile) -> Result<()> {
    let sources = sources_hash(root)?;
    let dev_tag = format!("{REPOSITORY}:dev");
    if if_stale && image_label(&dev_tag, SOURCES_LABEL)?.as_deref() == Some(sources.as_str()) {
        let built = image_label(&dev_tag, PROFILE_LABEL)?.unwrap_or_default();
        if profile == Profile::Dev || built == Profile::Release.name() {
            println!(
                "image {dev_tag} is up to date (sources {}, {} build)",
                &sources[..12],
                if built.is_empty() {
                    "release"
                } else {
                    built.as_str()
                }
            );
            return Ok(());
        }
    }
    println!(
        "building image {dev_tag} from the {} build of the server: {}",
        profile.name(),
        match profile {
            Profile::Dev => "`cargo test --workspace --no-run` (nothing to do after `cargo test --workspace` has built; \
                 from scratch, RocksDB included, about 25 minutes on 2 cores)",
            Profile::Release => "`cargo build --release` (from scratch, RocksDB included, about 18 minutes on 2 cores)",
        }
    );
    let binary = build_binary(root, profile)?;
    let context = stage_context(root, &binary)?;
    let mut tags = vec![dev_tag.clone()];
    if let Some(sha) = git_short_sha(root) {
        tags.push(format!("{REPOSITORY}:{sha}"));
    }
    let mut docker = Command::new("docker");
    docker
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--label"])
        .arg(format!("{SOURCES_LABEL}={sources}"))
        .arg("--label")
        .arg(format!("{PROFILE_LABEL}={}", profile.name()));
    for tag in &tags {
        docker.args(["--tag", tag]);
    }
    // The classic builder warns that it is deprecated on every run; show
    // its output only when the build fails.
    docker.arg(&context);
    let output = docker
        .output()
        .context("running `docker build` (is Docker installed?)")?;
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        bail!("`docker build` failed ({})", output.status);
    }
    let size = image_size(&dev_tag)?;
    println!(
        "built {} ({} build, {:.1} MB)",
        tags.join(" and "),
        profile.name(),
        size as f64 / 1_000_000.0
    );
    Ok(())
}

/// A cargo of the same toolchain, without the variables cargo sets for the
/// program it runs (`cargo run`, a test binary). Build scripts that watch
/// them (ring's `rerun-if-env-changed=CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`,
/// ...) would otherwise see other values than in the user's own command and
/// run again, recompiling ring, rustls, tonic and the server each time.
pub fn cargo() -> Command {
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

/// Builds the server binary in `profile` and returns its path.
///
/// The dev binary comes from the very command the README runs for the tests
/// (`cargo test --workspace`, here with `--no-run`): any other command shape
/// resolves other features for some dependencies and compiles them again.
pub fn build_binary(root: &Path, profile: Profile) -> Result<PathBuf> {
    let mut cargo = cargo();
    cargo.current_dir(root);
    match profile {
        Profile::Dev => cargo.args(["test", "--workspace", "--no-run"]),
        Profile::Release => cargo.args([
            "build",
            "--release",
            "--package",
            "regatta",
            "--bin",
            "regatta",
        ]),
    };
    let output = cargo
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!("building the {} server binary failed", profile.name());
    }
    // The compiler-artifact line of the `regatta` binary itself (not of
    // its unit-test harness, which has the same name) names it.
    let text = String::from_utf8_lossy(&output.stdout);
    let mut binary = None;
    for line in text.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_server_binary = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "regatta"
            && message["target"]["kind"] == serde_json::json!(["bin"])
            && message["profile"]["test"] == false;
        if is_server_binary {
            if let Some(path) = message["executable"].as_str() {
                binary = Some(PathBuf::from(path));
            }
        }
    }
    binary.context("cargo did not report the regatta executable")
}

/// Stages `ci/image/Dockerfile` and `rootfs/` in `target/regatta-image`.
fn stage_context(root: &Path, binary: &Path) -> Result<PathBuf> {
    let target_dir = binary
        .parent()
        .and_then(Path::parent)
        .context("binary path has no target directory")?;
    let context = target_dir.join("regatta-image");
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("clearing {}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    fs::create_dir_all(rootfs.join("usr/local/bin"))?;
    fs::copy(root.join("ci/image/Dockerfile"), context.join("Dockerfile"))?;

    let staged_binary = rootfs.join("usr/local/bin/regatta");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&staged_binary)
        .arg(binary)
        .status()
        .context("running strip")?;
    if !status.success() {
        bail!("strip failed on {}", binary.display());
    }
    for library in shared_libraries(binary)? {
        let relative = library.strip_prefix("/").unwrap_or(&library);
        let destination = rootfs.join(relative);
        if let Some(parent) = destination.parent() {
            fs::create_dir_all(parent)?;
        }
        // `fs::copy` follows symlinks: the loader and libstdc++ are links.
        fs::copy(&library, &destination)
            .with_context(|| format!("copying {}", library.display()))?;
    }
    fs::create_dir_all(rootfs.join("etc"))?;
    fs::copy(
        root.join("ci/image/nsswitch.conf"),
        rootfs.join("etc/nsswitch.conf"),
    )?;
    for dir in ["tmp", "data"] {
        let path = rootfs.join(dir);
        fs::create_dir_all(&path)?;
        set_mode(&path, 0o1777)?;
    }
    Ok(context)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

/// Absolute paths of the loader and libraries `ldd` lists for `binary`.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    if !output.status.success() {
        bail!("ldd failed on {}", binary.display());
    }
    let mut libraries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(path) if path.starts_with('/') => libraries.push(PathBuf::from(path)),
            Some("not") => bail!("ldd: a library is missing: {line}"),
            _ => {}
        }
    }
    Ok(libraries)
}

/// SHA-256 over the names and contents of every file under [`SOURCE_ROOTS`].
pub fn sources_hash(root: &Path) -> Result<String> {
    let mut files = Vec::new();
    for entry in SOURCE_ROOTS {
        collect_files(&root.join(entry), &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        for entry in fs::read_dir(path)? {
            collect_files(&entry?.path(), files)?;
        }
    } else if path.is_file() {
        files.push(path.to_path_buf());
    }
    Ok(())
}

/// A label of a local image; `None` when the image does not exist.
fn image_label(image: &str, label: &str) -> Result<Option<String>> {
    let output = Command::new("docker")
        .args(["image", "inspect", "--format"])
        .arg(format!("{{{{index .Config.Labels \"{label}\"}}}}"))
        .arg(image)
        .output()
        .context("running `docker image inspect` (is Docker installed?)")?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    ))
}

fn image_size(image: &str) -> Result<u64> {
    let output = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Size}}", image])
        .output()?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("reading the image size")
}

fn git_short_sha(root: &Path) -> Option<String> {
    let output = Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    let sha = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !sha.is_empty()).then_some(sha)
}
