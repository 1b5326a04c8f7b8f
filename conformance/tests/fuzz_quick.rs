//! A short seeded run of the wire fuzzer (`conformance/src/fuzz/`) against
//! a node of the workspace's server binary (`$REGATTA_BINARY`, else `cargo
//! xtask server-binary`): 5,000 messages to every method of every listener,
//! with the fuzzer's own checks (no exit, no Internal/Unknown but gRPC's
//! answers to malformed requests, health and a known key every 1,000
//! messages, the pre-written table unchanged, no panic in the node log).
//! The full run is `cargo xtask fuzz` (100,000 messages).

use conformance::fuzz::{self, Options};

/// Fixed, so that CI runs the same messages every time; a finding names its
/// index, and `cargo xtask fuzz --seed 20240 --only INDEX` replays it.
const SEED: u64 = 20_240;
const MESSAGES: u64 = 5_000;

#[test]
fn a_short_seeded_fuzz_run_finds_nothing_new() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let options = Options {
        messages: MESSAGES,
        progress: false,
        keep_on_failure: false,
        ..Options::new(SEED)
    };
    let summary = runtime
        .block_on(fuzz::run(options))
        .expect("the fuzzer ran");
    println!("{}", summary.render());
    assert_eq!(summary.messages, MESSAGES);
    assert!(summary.checkpoints >= MESSAGES / fuzz::CHECKPOINT_EVERY);
    // Every method was called, and valid calls got through on every one.
    for method in fuzz::requests::METHODS {
        let outcomes = summary
            .per_method
            .get(&method.label())
            .unwrap_or_else(|| panic!("no message to {}", method.label()));
        // A health Watch never ends: the fuzzer cuts it after one answer.
        let count = |label: &str| outcomes.get(label).copied().unwrap_or(0);
        let served = count("OK") + count("(stream cut by fuzzer)") + count("Unimplemented");
        assert!(
            served > 0,
            "{}: no OK (or, for Reset on a leader, Unimplemented) answer: {outcomes:?}",
            method.label()
        );
    }
    let new: Vec<String> = summary
        .findings
        .iter()
        .map(|finding| finding.render(1024))
        .collect();
    assert!(
        new.is_empty(),
        "the fuzzer found {} problem(s) (seed {SEED}):\n{}",
        new.len(),
        new.join("\n")
    );
}
