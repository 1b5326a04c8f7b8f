//! `cargo test -p conformance`: every `features/*.feature` on the chosen
//! backend, on containers several scenarios at a time except those that
//! control nodes, which run alone (`conformance::gate`); human output on
//! the terminal and JUnit XML in `<target>/conformance/junit.xml`. Arguments after `--` go to
//! cucumber (`--tags @kv`, `--name "..."`, `--fail-fast`), and `--profile NAME`
//! (`conformance::report::PROFILES`) to the suite. Scenarios the backend cannot
//! run are skipped with the reason whatever the selection, and listed as
//! skipped in the report.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use conformance::report::{self, Run};
use conformance::{gate, setup, template, world, RegattaWorld};
use cucumber::event::ScenarioFinished;
use cucumber::writer::Stats as _;
use cucumber::{writer, World as _, WriterExt as _};

/// The suite's own options, beside cucumber's.
#[derive(Debug, Clone, Default, clap::Args)]
struct SuiteOptions {
    /// A documented set of scenarios: regatta-2022, regatta-0.5 or
    /// everything (combined with --tags or --name when given too).
    #[arg(long, env = "REGATTA_CONFORMANCE_PROFILE")]
    profile: Option<String>,
}

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
    let mut options = cucumber::cli::Opts::<_, _, _, SuiteOptions>::parsed();
    // The selection is applied here, with the backend's skips, rather than
    // by cucumber, which drops the run's own filter when given --tags.
    let by_name = options.re_filter.take();
    let by_tags = options.tags_filter.take();
    let by_profile = match options.custom.profile.as_deref().map(report::profile) {
        None => None,
        Some(Ok(expression)) => expression,
        Some(Err(err)) => {
            eprintln!("conformance: {err:#}");
            std::process::exit(2);
        }
    };
    let selection = describe_selection(
        options.custom.profile.as_deref(),
        by_tags.as_ref().map(report::show),
        by_name.as_ref().map(|n| n.to_string()),
    );
    let backend = match setup::choose_backend().await {
        Ok(backend) => backend,
        Err(err) => {
            eprintln!("conformance: {err:#}");
            std::process::exit(1);
        }
    };
    let backend_name = backend.name();
    // External endpoints are one shared cluster and local processes share
    // the host's ports: only containers give each scenario its own cluster.
    let concurrency = if backend_name == "containers" {
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
        .with_writer(
            writer::Basic::raw(io::stdout(), writer::Coloring::Auto, 0)
                .summarized()
                .tee::<RegattaWorld, _>(writer::JUnit::for_tee(junit, 0))
                // A step no definition matches is a failure, never a silent
                // skip: wrapped around both reports (a `fail_on_skipped` of
                // the runner would be replaced by this writer).
                .fail_on_skipped()
                .normalized(),
        )
        // After the writer: `with_writer` forgets options given before it.
        .with_cli(options)
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
            let selected = by_name
                .as_ref()
                .is_none_or(|re| re.is_match(&scenario.name))
                && by_tags
                    .as_ref()
                    .is_none_or(|tags| report::selects(tags, feature, rule, scenario))
                && by_profile
                    .as_ref()
                    .is_none_or(|tags| report::selects(tags, feature, rule, scenario));
            if !selected {
                return false;
            }
            if let Some(why) = report::cannot_run(backend_name, feature, rule, scenario) {
                report::skip(feature, scenario, why);
                return false;
            }
            true
        })
        .await;
    let failed = writer.execution_has_failed();
    let counts = (
        writer.failed_steps(),
        writer.parsing_errors(),
        writer.hook_errors(),
    );
    // Closes the report file before it is read back.
    drop(writer);

    let run = Run {
        implementation: template::template().implementation.clone(),
        backend: backend_name.to_string(),
        selection,
    };
    match std::fs::read_to_string(&junit_path) {
        Ok(junit) => {
            if let Err(err) = std::fs::write(&junit_path, report::with_run_suite(&junit, &run)) {
                eprintln!("conformance: writing {}: {err}", junit_path.display());
            }
        }
        Err(err) => eprintln!("conformance: reading {}: {err}", junit_path.display()),
    }
    let skipped = report::skipped().len();
    if skipped > 0 {
        println!("conformance: {skipped} scenario(s) skipped: the {backend_name} backend cannot run them (listed above and in the report)");
    }

    if failed {
        let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
        println!("conformance: {} scenario(s) failed:", failures.len());
        for failure in &failures {
            println!("  {failure}");
        }
        println!(
            "conformance: {} failed step(s), {} parsing error(s), {} hook error(s)",
            counts.0, counts.1, counts.2
        );
        std::process::exit(1);
    }
}

/// How the run chose its scenarios, for the report.
fn describe_selection(profile: Option<&str>, tags: Option<String>, name: Option<String>) -> String {
    let mut parts = Vec::new();
    if let Some(profile) = profile {
        parts.push(format!("profile {profile}"));
    }
    if let Some(tags) = tags {
        parts.push(format!("--tags {tags}"));
    }
    if let Some(name) = name {
        parts.push(format!("--name {name}"));
    }
    if parts.is_empty() {
        "every scenario".to_string()
    } else {
        parts.join(", ")
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
