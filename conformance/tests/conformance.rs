//! `cargo test -p conformance`: every `features/*.feature` on the chosen
//! backend, on containers several scenarios at a time except those that
//! control nodes, which run alone (`conformance::gate`); human output on
//! the terminal and JUnit XML in `<target>/conformance/junit.xml`. Arguments after `--` go to
//! cucumber (`--tags @kv`, `--name "..."`, `--fail-fast`).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use conformance::backend::external::NO_FAULTS;
use conformance::{gate, setup, world, RegattaWorld};
use cucumber::event::ScenarioFinished;
use cucumber::writer::Stats as _;
use cucumber::{writer, World as _, WriterExt as _};

/// Tags of scenarios that need the suite to control the nodes: to stop
/// and start them, or (`tls`) to start them with certificates of its own.
const NEEDS_NODE_CONTROL: [&str; 3] = ["faults", "restart", "tls"];

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // The test binary lives in <target>/debug/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

#[tokio::main]
async fn main() {
    let backend = match setup::choose_backend().await {
        Ok(backend) => backend,
        Err(err) => {
            eprintln!("conformance: {err:#}");
            std::process::exit(1);
        }
    };
    let external = backend.name() == "external endpoints";
    // External endpoints are one shared cluster and local processes share
    // the host's ports: only containers give each scenario its own cluster.
    let concurrency = if backend.name() == "containers" {
        gate::DEFAULT_CONCURRENCY
    } else {
        1
    };
    world::set_backend(backend);

    let report_dir = target_dir().join("conformance");
    let logs_dir = report_dir.join("logs");
    let _ = std::fs::create_dir_all(&report_dir);
    let junit_path = report_dir.join("junit.xml");
    let junit = match File::create(&junit_path) {
        Ok(file) => file,
        Err(err) => {
            eprintln!("conformance: creating {}: {err}", junit_path.display());
            std::process::exit(1);
        }
    };
    println!("conformance: JUnit report at {}", junit_path.display());
    let features = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../features");
    // Named again after the summary: a CI log often keeps only its tail.
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures_in_hook = Arc::clone(&failures);

    let writer = RegattaWorld::cucumber()
        .max_concurrent_scenarios(concurrency)
        // A step no definition matches is a failure, never a silent skip.
        .fail_on_skipped()
        .with_writer(
            writer::Basic::raw(io::stdout(), writer::Coloring::Auto, 0)
                .summarized()
                .tee::<RegattaWorld, _>(writer::JUnit::for_tee(junit, 0))
                .normalized(),
        )
        .before(|feature, rule, scenario, world| {
            let alone = gate::runs_alone(feature, rule, scenario);
            Box::pin(async move {
                world.pass = Some(gate::enter(alone).await);
            })
        })
        .after(move |feature, _rule, scenario, finished, world| {
            let logs_dir = logs_dir.clone();
            let name = scenario.name.clone();
            let failed = !matches!(finished, ScenarioFinished::StepPassed);
            if failed {
                if let Ok(mut failures) = failures_in_hook.lock() {
                    failures.push(describe_failure(feature, scenario, finished));
                }
            }
            Box::pin(async move {
                let Some(world) = world else { return };
                // The follower cluster first: it may use the leader's network.
                if let Some(mut follower) = world.follower.take() {
                    if failed {
                        save_logs(&logs_dir, &format!("{name}-follower"), follower.as_ref()).await;
                    }
                    follower.destroy().await;
                }
                if let Some(mut cluster) = world.cluster.take() {
                    if failed {
                        save_logs(&logs_dir, &name, cluster.as_ref()).await;
                    }
                    cluster.destroy().await;
                }
            })
        })
        .filter_run(features, move |feature, rule, scenario| {
            let needs_control = gate::tagged(feature, rule, scenario, &NEEDS_NODE_CONTROL);
            if external && needs_control {
                println!("SKIPPED: {} ({NO_FAULTS})", scenario.name);
                return false;
            }
            true
        })
        .await;

    if writer.execution_has_failed() {
        let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
        println!("conformance: {} scenario(s) failed:", failures.len());
        for failure in &failures {
            println!("  {failure}");
        }
        println!(
            "conformance: {} failed step(s), {} parsing error(s), {} hook error(s)",
            writer.failed_steps(),
            writer.parsing_errors(),
            writer.hook_errors()
        );
        std::process::exit(1);
    }
}

/// `features/x.feature:12 "name": why`, one line per failed scenario.
fn describe_failure(
    feature: &cucumber::gherkin::Feature,
    scenario: &cucumber::gherkin::Scenario,
    finished: &ScenarioFinished,
) -> String {
    let file = feature
        .path
        .as_ref()
        .and_then(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| feature.name.clone());
    let why = match finished {
        ScenarioFinished::StepFailed(_, _, err) => err.to_string(),
        ScenarioFinished::BeforeHookFailed(_) => "before hook failed".to_owned(),
        ScenarioFinished::StepSkipped => "a step was skipped".to_owned(),
        ScenarioFinished::StepPassed => "passed".to_owned(),
    };
    // The first line says enough; the full text is above in the log.
    let why = why.lines().next().unwrap_or_default().to_owned();
    format!(
        "{file}:{} \"{}\": {why}",
        scenario.position.line, scenario.name
    )
}

/// Keeps every node's output of a failed scenario for the post-mortem.
async fn save_logs(
    dir: &std::path::Path,
    scenario: &str,
    cluster: &dyn conformance::backend::Cluster,
) {
    let safe: String = scenario
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = dir.join(safe);
    let _ = std::fs::create_dir_all(&dir);
    for n in 1..=cluster.size() {
        let _ = std::fs::write(dir.join(format!("node{n}.log")), cluster.logs(n).await);
    }
    println!(
        "conformance: node logs of the failed scenario in {}",
        dir.display()
    );
}
