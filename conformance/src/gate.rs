//! Which scenarios share the machine and which run alone.
//!
//! Most scenarios spend their time waiting: for containers to start, for a
//! leader, for a reply. Run side by side they finish in a fraction of the
//! time. A scenario that stops, pauses, restarts or cuts off nodes measures
//! elections and timeouts, and other clusters' load would make those
//! timings (and its verdict) depend on its neighbours, so it runs alone: it
//! waits until every running scenario has finished, and none starts while it
//! runs.

use std::sync::{Arc, LazyLock};

use cucumber::gherkin::{Feature, Rule, Scenario};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// Tags of scenarios that run alone (on the scenario, its rule or feature).
pub const RUN_ALONE_TAGS: [&str; 3] = ["faults", "restart", "serial"];

/// Scenarios side by side on the containers backend unless `--concurrency`
/// says otherwise: enough to hide container start-up, few enough for 2 cores.
pub const DEFAULT_CONCURRENCY: usize = 4;

static GATE: LazyLock<Arc<RwLock<()>>> = LazyLock::new(Arc::default);

/// Held by a scenario for as long as it runs (kept in its world).
pub enum Pass {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Alone(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// Whether the scenario, its rule or its feature carries one of `tags`.
pub fn tagged(feature: &Feature, rule: Option<&Rule>, scenario: &Scenario, tags: &[&str]) -> bool {
    scenario
        .tags
        .iter()
        .chain(rule.iter().flat_map(|r| &r.tags))
        .chain(&feature.tags)
        .any(|tag| tags.contains(&tag.as_str()))
}

pub fn runs_alone(feature: &Feature, rule: Option<&Rule>, scenario: &Scenario) -> bool {
    tagged(feature, rule, scenario, &RUN_ALONE_TAGS)
}

/// Waits for the scenario's turn. tokio's lock is fair: once a lone scenario
/// waits, scenarios that come after it wait too, so it is never starved.
pub async fn enter(alone: bool) -> Pass {
    let gate = Arc::clone(&GATE);
    if alone {
        Pass::Alone(gate.write_owned().await)
    } else {
        Pass::Shared(gate.read_owned().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_lone_scenario_waits_for_shared_ones_and_blocks_later_ones() {
        let first = enter(false).await;
        let lone = tokio::spawn(enter(true));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!lone.is_finished(), "ran beside a shared scenario");
        let later = tokio::spawn(enter(false));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !later.is_finished(),
            "a later scenario overtook the lone one"
        );
        drop(first);
        let lone_pass = lone.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!later.is_finished(), "started while the lone one ran");
        drop(lone_pass);
        later.await.unwrap();
    }
}
