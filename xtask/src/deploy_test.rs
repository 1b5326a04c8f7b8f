//! `cargo xtask deploy-test`: the README's laptop quick start, for real.
//! Brings up `deploy/compose/docker-compose.yml` (a 3-node leader cluster
//! and a follower) from the image of `cargo xtask image`, writes on the
//! leader, reads it on the follower, kills one leader-cluster container,
//! writes again through another and reads that on the follower, and tears
//! everything down, volumes included, whatever happened.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::image::{self, Profile};

const COMPOSE_FILE: &str = "deploy/compose/docker-compose.yml";
/// Its own project name, so the test never touches a user's running copy.
const PROJECT: &str = "regatta-deploy-test";
const SERVICES: [&str; 4] = ["leader1", "leader2", "leader3", "follower1"];
/// The published API ports of the compose file.
const LEADER1_API: &str = "127.0.0.1:8443";
const LEADER2_API: &str = "127.0.0.1:8453";
const FOLLOWER_API: &str = "127.0.0.1:9443";

/// Whether a Docker engine answers here.
pub fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success())
}

pub fn run(root: &Path) -> Result<()> {
    if !docker_answers() {
        bail!("no Docker engine answers (`docker info` failed): the deploy test needs one");
    }
    // The image of the tests' own build: the same binary the conformance
    // suite ran, and no release build on a CI machine.
    image::build(root, true, Profile::Dev)?;
    let cli = image::build_binary(root, Profile::Dev)?;
    let compose = Compose::new(root)?;
    // A run cut short earlier may have left its containers and volumes.
    compose.down();
    let outcome = exercise(&compose, &cli);
    if outcome.is_err() {
        compose.print_logs();
    }
    compose.down();
    outcome?;
    println!("deploy-test: passed");
    Ok(())
}

fn exercise(compose: &Compose, cli: &Path) -> Result<()> {
    compose.run(&["up", "-d"])?;
    wait_healthy(compose, &SERVICES, Duration::from_secs(180))?;
    println!("deploy-test: every container is healthy");

    kv(cli, LEADER1_API, &["put", "regatta", "greeting", "hello"])?;
    wait_for_value(
        cli,
        FOLLOWER_API,
        "greeting",
        "hello",
        Duration::from_secs(30),
    )?;
    println!("deploy-test: written on leader1, read on the follower");

    compose.run(&["kill", "leader1"])?;
    println!("deploy-test: leader1 killed");
    // The two others elect a leader for every table within a few election
    // timeouts; until then a write may be refused as unavailable.
    retry(Duration::from_secs(30), || {
        kv(
            cli,
            LEADER2_API,
            &["put", "regatta", "after-kill", "still-here"],
        )
        .map(|_| ())
    })?;
    wait_for_value(
        cli,
        FOLLOWER_API,
        "after-kill",
        "still-here",
        Duration::from_secs(60),
    )?;
    println!("deploy-test: written through leader2 with leader1 down, read on the follower");
    Ok(())
}

/// Runs `regatta kv --address <address> <args>`; its output when it succeeds.
fn kv(cli: &Path, address: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cli)
        .args(["kv", "--address", address])
        .args(args)
        .env_remove("REGATTA_KV_ADDRESS")
        .output()
        .with_context(|| format!("running {}", cli.display()))?;
    if !out.status.success() {
        bail!(
            "regatta kv --address {address} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for_value(
    cli: &Path,
    address: &str,
    key: &str,
    value: &str,
    within: Duration,
) -> Result<()> {
    retry(within, || {
        let got = kv(cli, address, &["get", "regatta", key])?;
        if got.contains(value) {
            Ok(())
        } else {
            bail!("{key} on {address} is {:?}, not yet {value:?}", got.trim())
        }
    })
}

/// Calls `attempt` until it succeeds, at most `within`; the last error.
fn retry(within: Duration, mut attempt: impl FnMut() -> Result<()>) -> Result<()> {
    let until = Instant::now() + within;
    loop {
        match attempt() {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() >= until => {
                return Err(err.context(format!("still failing after {within:?}")))
            }
            Err(_) => sleep(Duration::from_millis(500)),
        }
    }
}

fn wait_healthy(compose: &Compose, services: &[&str], within: Duration) -> Result<()> {
    let until = Instant::now() + within;
    loop {
        let mut waiting = Vec::new();
        for service in services {
            let status = compose.health(service)?;
            if status != "healthy" {
                waiting.push(format!("{service}: {status}"));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("not healthy after {within:?}: {}", waiting.join(", "));
        }
        sleep(Duration::from_secs(1));
    }
}

/// `docker-compose` (1.29) or `docker compose` (v2), on the project file.
struct Compose {
    program: Vec<String>,
    file: PathBuf,
}

impl Compose {
    fn new(root: &Path) -> Result<Compose> {
        let works = |program: &[&str]| {
            Command::new(program[0])
                .args(&program[1..])
                .arg("version")
                .output()
                .is_ok_and(|out| out.status.success())
        };
        let program: &[&str] = if works(&["docker", "compose"]) {
            &["docker", "compose"]
        } else if works(&["docker-compose"]) {
            &["docker-compose"]
        } else {
            bail!("neither `docker compose` nor `docker-compose` is installed");
        };
        Ok(Compose {
            program: program.iter().map(|p| p.to_string()).collect(),
            file: root.join(COMPOSE_FILE),
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .arg("-p")
            .arg(PROJECT)
            .arg("-f")
            .arg(&self.file)
            .env("REGATTA_IMAGE", format!("{}:dev", image::REPOSITORY));
        command
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        self.command()
            .args(args)
            .output()
            .with_context(|| format!("running {} {}", self.program.join(" "), args.join(" ")))
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "{} {}: {}",
                self.program.join(" "),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The health status Docker reports for `service`'s container.
    fn health(&self, service: &str) -> Result<String> {
        let out = self.output(&["ps", "-q", service])?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if id.is_empty() {
            return Ok("no container".into());
        }
        let out = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                &id,
            ])
            .output()?;
        let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(match status.split_once('/') {
            Some(("running", health)) if !health.is_empty() => health.to_string(),
            _ => status,
        })
    }

    fn print_logs(&self) {
        if let Ok(out) = self.output(&["logs", "--no-color", "--tail", "40"]) {
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }

    /// Stops and removes the containers, the network and the volumes.
    fn down(&self) {
        if let Err(err) = self.run(&["down", "-v", "--remove-orphans", "-t", "10"]) {
            eprintln!("deploy-test: tearing down: {err}");
        }
    }
}
