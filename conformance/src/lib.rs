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
pub mod setup;
pub mod steps;
pub mod tls;
pub mod values;
pub mod world;

pub use world::RegattaWorld;

#[cfg(test)]
mod tests {
    /// Every feature file parses (cucumber reports a parse error only at run
    /// time, where it is easy to miss among scenario results).
    #[test]
    fn every_feature_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../features");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "feature") {
                let parsed = cucumber::gherkin::Feature::parse_path(&path, Default::default());
                assert!(parsed.is_ok(), "{}: {:?}", path.display(), parsed.err());
                count += 1;
            }
        }
        assert!(
            count >= 9,
            "only {count} feature files in {}",
            dir.display()
        );
    }
}
