//! The engine end to end on real backends: the same seed gives the same
//! report outside `timing`, on one lane or two, and a legacy run finds and shrinks the partial
//! fanout of spec §15 B1.

use crate::convex_backend::convex_backend;
use crate::support;
use khala_parity::driver::Backends;
use khala_parity::engine::{self, EngineSettings};
use khala_parity::report;
use khala_parity::scenario::Scenario;
use khala_runtime::Profile;
use std::path::Path;
use std::time::Duration;

fn fanout_scenario() -> Scenario {
    let text = "name = 'fanout'\ndescription = 'd'\ncases = 12\nmax_steps = 8\n[weights]\nrun_event = 3\nfault_khala = 2\nquiesce = 1\n";
    support::ok(Scenario::parse(Path::new("fanout.toml"), text))
}

fn settings(seed: u64) -> EngineSettings {
    EngineSettings {
        profile: Profile::Legacy,
        cases: 24,
        seed,
        time_budget: None,
        max_shrink_iters: 256,
        max_shrink_time: Duration::from_secs(120),
    }
}

/// The report as JSON without its `timing`.
fn report_without_timing(run: &engine::ScenarioRun) -> serde_json::Value {
    let report = report::build(Profile::Legacy, 7, std::slice::from_ref(run), &[]);
    let mut value = serde_json::to_value(&report).expect("report serialises");
    value.as_object_mut().expect("object").remove("timing");
    value
}

#[test]
fn the_same_seed_gives_the_same_report_on_one_lane_or_two_and_b1_is_found_and_shrunk() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let mut backends = tokio.block_on(async {
        let postgres = support::backend().await;
        let convex = convex_backend().await;
        support::ok(Backends::new(postgres, convex).await)
    });
    let scenario = fanout_scenario();
    let first = engine::run_scenario(&tokio, &backends, &scenario, &settings(7));
    // The second run plays two cases at a time: the report must not change.
    tokio.block_on(async { support::ok(backends.add_lane(convex_backend().await).await) });
    assert_eq!(backends.lanes(), 2);
    let second = engine::run_scenario(&tokio, &backends, &scenario, &settings(7));
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });

    assert_eq!(first.unknown, None);
    assert_eq!(
        report_without_timing(&first),
        report_without_timing(&second)
    );
    let b1 = first
        .findings
        .iter()
        .find(|finding| finding.reason_class == "convex_ahead_of_khala")
        .unwrap_or_else(|| {
            let found: Vec<_> = first
                .findings
                .iter()
                .map(|finding| (finding.invariant, finding.reason_class.as_str()))
                .collect();
            panic!("legacy dual publish with Khala failing shows Convex ahead of Khala; found {found:?}")
        });
    assert!(
        b1.case.steps.len() <= 3,
        "shrunk to {} steps: {:?}",
        b1.case.steps.len(),
        b1.case.steps
    );
    assert!(
        b1.case
            .steps
            .iter()
            .any(|step| step.kind() == "fault_khala")
    );
}
