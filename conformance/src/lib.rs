//! The Regatta conformance suite: Gherkin features in `features/`, a step
//! library in plain language, and cluster backends (containers, local
//! processes, external endpoints) behind one trait.
//!
//! It talks to servers only over the wire, so any Regatta-compatible server
//! can be validated with it; see `conformance/README.md`.

pub mod backend;
pub mod command_stream;
pub mod fuzz;
pub mod gate;
pub mod jepsen;
pub mod metrics;
pub mod report;
pub mod setup;
pub mod steps;
pub mod template;
pub mod tls;
pub mod values;
pub mod world;

pub use world::RegattaWorld;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use cucumber::gherkin::Feature;

    /// Every `features/*.feature`, parsed.
    fn features() -> Vec<(PathBuf, Feature)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../features");
        let mut features = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "feature") {
                let feature = Feature::parse_path(&path, Default::default())
                    .unwrap_or_else(|err| panic!("{}: {err:?}", path.display()));
                features.push((path, feature));
            }
        }
        features
    }

    /// Every feature file parses (cucumber reports a parse error only at run
    /// time, where it is easy to miss among scenario results).
    #[test]
    fn every_feature_parses() {
        let count = features().len();
        assert!(count >= 9, "only {count} feature files");
    }

    /// Every step of every feature matches exactly one step definition of
    /// its kind (an `And` after a `When` is a When): a step that matches
    /// none would only show up as a skipped step in a run.
    #[test]
    fn every_step_has_exactly_one_definition() {
        use cucumber::World as _;
        let steps = crate::RegattaWorld::collection();
        let mut problems = Vec::new();
        for (path, feature) in features() {
            let background: Vec<cucumber::gherkin::Step> = feature
                .background
                .iter()
                .flat_map(|b| b.steps.iter().cloned())
                .collect();
            let mut all = background;
            for scenario in feature
                .scenarios
                .iter()
                .chain(feature.rules.iter().flat_map(|r| r.scenarios.iter()))
            {
                // A Scenario Outline's steps, once per row of its examples.
                let rows: Vec<Vec<(String, String)>> = scenario
                    .examples
                    .iter()
                    .filter_map(|e| e.table.as_ref())
                    .flat_map(|table| {
                        let header = table.rows[0].clone();
                        table.rows[1..].iter().map(move |row| {
                            header.iter().cloned().zip(row.iter().cloned()).collect()
                        })
                    })
                    .collect();
                let rows = if rows.is_empty() {
                    vec![Vec::new()]
                } else {
                    rows
                };
                for row in rows {
                    for step in &scenario.steps {
                        let mut step = step.clone();
                        for (name, value) in &row {
                            step.value = step.value.replace(&format!("<{name}>"), value);
                        }
                        all.push(step);
                    }
                }
            }
            for step in all {
                match steps.find(&step) {
                    Ok(Some(_)) => {}
                    Ok(None) => problems.push(format!(
                        "{}:{}: no {:?} step matches {:?}",
                        path.display(),
                        step.position.line,
                        step.ty,
                        step.value
                    )),
                    Err(err) => problems.push(format!(
                        "{}:{}: {:?} matches several definitions: {err:?}",
                        path.display(),
                        step.position.line,
                        step.value
                    )),
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// Every scenario's tags say which contract it checks and what it needs
    /// (`conformance/README.md`, "Tags"), derived here from its steps so
    /// that a profile or a backend's skip can trust them.
    #[test]
    fn every_scenario_carries_the_tags_of_what_it_needs() {
        use regex::Regex;
        let fault = Regex::new(
            r"\b(is|are) (killed|stopped|restarted|paused|resumed|cut off)\b|disk is lost|\bkilled\b|cut off from|reconnected",
        )
        .unwrap();
        let flags = Regex::new(r#"flags "|serving TLS|Unix socket"#).unwrap();
        let follower = Regex::new(r"follower cluster|follower node").unwrap();
        let mut problems = Vec::new();
        let mut fixed = 0;
        for (path, feature) in features() {
            let background: Vec<String> = feature
                .background
                .iter()
                .flat_map(|b| b.steps.iter().map(|s| s.value.clone()))
                .collect();
            let scenarios = feature.scenarios.iter().map(|s| (None, s)).chain(
                feature
                    .rules
                    .iter()
                    .flat_map(|r| r.scenarios.iter().map(move |s| (Some(r), s))),
            );
            for (rule, scenario) in scenarios {
                let tags: Vec<&String> = crate::report::tags(&feature, rule, scenario).collect();
                let has = |tag: &str| tags.iter().any(|t| *t == tag);
                let steps = background
                    .iter()
                    .cloned()
                    .chain(scenario.steps.iter().map(|s| s.value.clone()))
                    .collect::<Vec<_>>()
                    .join("\n");
                let place = format!(
                    "{}:{} {:?}",
                    path.display(),
                    scenario.position.line,
                    scenario.name
                );
                if has("regatta-2022") == has("regatta-0.5") {
                    problems.push(format!(
                        "{place}: exactly one of @regatta-2022 and @regatta-0.5"
                    ));
                }
                let needs = [
                    (
                        "needs-faults",
                        has("faults") || has("restart") || fault.is_match(&steps),
                    ),
                    ("needs-follower-cluster", follower.is_match(&steps)),
                    ("needs-flags", flags.is_match(&steps)),
                    ("needs-tools", steps.contains("with the backup tool")),
                ];
                for (tag, needed) in needs {
                    if has(tag) != needed {
                        let what = if needed {
                            "lacks"
                        } else {
                            "has, without needing it,"
                        };
                        problems.push(format!("{place}: {what} @{tag}"));
                    }
                }
                if has("fixed") {
                    fixed += 1;
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(fixed >= 10, "only {fixed} scenarios tagged @fixed");
    }
}
