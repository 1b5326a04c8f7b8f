//! What a run selects and what it says about itself: the documented
//! profiles, the scenarios a backend cannot run (skipped, with the reason,
//! whatever `--tags` says), and a JUnit test suite that names the
//! implementation, its version and the backend and lists the skipped
//! scenarios as skipped.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Result};
use cucumber::gherkin::tagexpr::TagOperation;
use cucumber::gherkin::{Feature, Rule, Scenario};
use cucumber::tag::Ext as _;
use regatta_proto::regatta::v1::cluster_client::ClusterClient;
use regatta_proto::regatta::v1::StatusRequest;

/// The documented profiles: (name, tag expression, what it validates).
pub const PROFILES: [(&str, &str, &str); 3] = [
    (
        "regatta-2022",
        "@regatta-2022 and not @extension",
        "what a Regatta 2022 client relies on",
    ),
    (
        "regatta-0.5",
        "(@regatta-2022 or @regatta-0.5) and not @extension",
        "what a Regatta 0.5 client relies on (0.5 serves 2022 clients too)",
    ),
    (
        "everything",
        "",
        "every scenario, this implementation's extensions included",
    ),
];

/// The tag expression of profile `name` (`None`: every scenario).
pub fn profile(name: &str) -> Result<Option<TagOperation>> {
    let Some((_, expression, _)) = PROFILES.iter().find(|(n, _, _)| *n == name) else {
        let names: Vec<&str> = PROFILES.iter().map(|(n, _, _)| *n).collect();
        bail!(
            "unknown profile {name:?}; the profiles are {}",
            names.join(", ")
        );
    };
    if expression.is_empty() {
        return Ok(None);
    }
    Ok(Some(expression.parse().map_err(|err| {
        anyhow::anyhow!("profile {name}: {err:?}")
    })?))
}

/// A tag expression written out again (`@a and not (@b or @c)`).
pub fn show(expression: &TagOperation) -> String {
    let inner = |op: &TagOperation| match op {
        TagOperation::Tag(_) | TagOperation::Not(_) => show(op),
        _ => format!("({})", show(op)),
    };
    match expression {
        TagOperation::Tag(tag) => format!("@{tag}"),
        TagOperation::Not(op) => format!("not {}", inner(op)),
        TagOperation::And(l, r) => format!("{} and {}", inner(l), inner(r)),
        TagOperation::Or(l, r) => format!("{} or {}", inner(l), inner(r)),
    }
}

/// Every tag of a scenario: its feature's, its rule's and its own.
pub fn tags<'a>(
    feature: &'a Feature,
    rule: Option<&'a Rule>,
    scenario: &'a Scenario,
) -> impl Iterator<Item = &'a String> + Clone {
    feature
        .tags
        .iter()
        .chain(rule.into_iter().flat_map(|r| &r.tags))
        .chain(scenario.tags.iter())
}

/// Whether `expression` selects the scenario.
pub fn selects(
    expression: &TagOperation,
    feature: &Feature,
    rule: Option<&Rule>,
    scenario: &Scenario,
) -> bool {
    expression.eval(tags(feature, rule, scenario))
}

/// What a backend that only reaches servers someone else runs cannot do:
/// (tag, why).
pub const EXTERNAL_CANNOT: [(&str, &str); 5] = [
    (
        "needs-faults",
        "an external cluster (REGATTA_ENDPOINTS) cannot be killed, restarted, paused or cut off by the suite",
    ),
    (
        "needs-follower-cluster",
        "the suite cannot start a follower cluster beside an external cluster (REGATTA_ENDPOINTS)",
    ),
    (
        "needs-flags",
        "the nodes of an external cluster (REGATTA_ENDPOINTS) run with the flags they were started with",
    ),
    (
        "needs-tools",
        "the suite runs the server's tools beside the nodes it starts, not beside an external cluster (REGATTA_ENDPOINTS)",
    ),
    (
        "addresses",
        "an external cluster (REGATTA_ENDPOINTS) is reached at the addresses it was given",
    ),
];

/// Why backend `backend` cannot run the scenario, if it cannot.
pub fn cannot_run(
    backend: &str,
    feature: &Feature,
    rule: Option<&Rule>,
    scenario: &Scenario,
) -> Option<&'static str> {
    if backend != "external endpoints" {
        return None;
    }
    EXTERNAL_CANNOT
        .iter()
        .find(|(tag, _)| tags(feature, rule, scenario).any(|t| t == tag))
        .map(|(_, why)| *why)
}

/// A scenario the run left out because the backend cannot run it.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub feature: String,
    pub scenario: String,
    pub why: String,
}

static SKIPPED: Mutex<Vec<Skipped>> = Mutex::new(Vec::new());
static VERSION: OnceLock<String> = OnceLock::new();

pub fn skip(feature: &Feature, scenario: &Scenario, why: &str) {
    println!("SKIPPED: {} ({why})", scenario.name);
    if let Ok(mut skipped) = SKIPPED.lock() {
        skipped.push(Skipped {
            feature: feature.name.clone(),
            scenario: scenario.name.clone(),
            why: why.to_string(),
        });
    }
}

pub fn skipped() -> Vec<Skipped> {
    SKIPPED.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Asks the first cluster of the run for the server's version
/// (`regatta.v1.Cluster/Status`), once; a server without it is noted so.
pub async fn note_version(channel: tonic::transport::Channel) {
    if VERSION.get().is_some() {
        return;
    }
    let asked = tokio::time::timeout(
        Duration::from_secs(5),
        ClusterClient::new(channel).status(StatusRequest { config: false }),
    )
    .await;
    let version = match asked {
        Ok(Ok(status)) => status.into_inner().version,
        Ok(Err(status)) => format!("unknown (Cluster/Status: {:?})", status.code()),
        Err(_) => "unknown (Cluster/Status did not answer in 5 s)".to_string(),
    };
    let _ = VERSION.set(version);
}

/// What the run was: the properties of the report's `conformance run` suite.
#[derive(Debug, Clone)]
pub struct Run {
    pub implementation: String,
    pub backend: String,
    pub selection: String,
}

/// `junit` (cucumber's report) with one more test suite, `conformance run`:
/// the run's properties and every skipped scenario as a skipped test case.
pub fn with_run_suite(junit: &str, run: &Run) -> String {
    let skipped = skipped();
    let version = VERSION
        .get()
        .cloned()
        .unwrap_or_else(|| "unknown (no cluster was started)".to_string());
    let mut suite = format!(
        "<testsuite name=\"conformance run\" tests=\"{}\" skipped=\"{}\" failures=\"0\" errors=\"0\">\n<properties>\n",
        skipped.len(),
        skipped.len()
    );
    for (name, value) in [
        ("implementation", run.implementation.as_str()),
        ("version", version.as_str()),
        ("backend", run.backend.as_str()),
        ("selection", run.selection.as_str()),
    ] {
        suite.push_str(&format!(
            "<property name=\"{name}\" value=\"{}\"/>\n",
            escape(value)
        ));
    }
    suite.push_str("</properties>\n");
    for skip in &skipped {
        suite.push_str(&format!(
            "<testcase classname=\"{}\" name=\"{}\"><skipped message=\"{}\"/></testcase>\n",
            escape(&skip.feature),
            escape(&skip.scenario),
            escape(&skip.why)
        ));
    }
    suite.push_str("</testsuite>\n");
    match junit.rfind("</testsuites>") {
        Some(end) => format!("{}{suite}{}", &junit[..end], &junit[end..]),
        None => format!("{junit}<testsuites>\n{suite}</testsuites>\n"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_parses() {
        for (name, _, _) in PROFILES {
            profile(name).unwrap();
        }
        assert!(profile("regatta-2023").is_err());
        let expression = profile("regatta-0.5").unwrap().unwrap();
        assert_eq!(
            show(&expression),
            "(@regatta-2022 or @regatta-0.5) and not @extension"
        );
    }

    #[test]
    fn the_run_suite_goes_inside_the_report() {
        let report = with_run_suite(
            "<?xml version=\"1.0\"?>\n<testsuites>\n<testsuite name=\"a\"></testsuite>\n</testsuites>\n",
            &Run {
                implementation: "x & y".into(),
                backend: "containers".into(),
                selection: "profile regatta-2022".into(),
            },
        );
        assert!(report.contains("<property name=\"implementation\" value=\"x &amp; y\"/>"));
        let run = report.find("conformance run").unwrap();
        assert!(run < report.rfind("</testsuites>").unwrap());
    }
}
