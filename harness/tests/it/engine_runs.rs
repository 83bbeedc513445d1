//! The engine end to end on real backends: the same seed gives the same
//! report outside `timing`, on one lane or two; a legacy run finds and
//! shrinks the partial fanout of spec §15 B1; and a violation observed once
//! is reported and blocks even when no replay shows it again.

use crate::convex_backend::convex_backend;
use crate::support;
use khala_parity::check::defects::Cause;
use khala_parity::check::gate::Decision;
use khala_parity::plan::scenario::Scenario;
use khala_parity::play::driver::{Backends, PlantedDefects};
use khala_parity::play::engine::{self, EngineSettings, PLANTED_FLAKY_REASON, PlantedFlakiness};
use khala_parity::{report, run};
use khala_runtime::Profile;
use std::path::Path;

fn fanout_scenario() -> Scenario {
    let text = "name = 'fanout'\ndescription = 'd'\ncases = 12\nmax_steps = 8\n[weights]\nrun_event = 3\nfault_khala = 2\nquiesce = 1\n";
    support::ok(Scenario::parse(Path::new("fanout.toml"), text))
}

/// PostgreSQL and one Convex front, as the environment provides them.
pub fn one_slot(tokio: &tokio::runtime::Runtime) -> Backends {
    tokio.block_on(async {
        let postgres = support::backend().await;
        let convex = convex_backend().await;
        support::ok(Backends::new(postgres, convex).await)
    })
}

fn settings(seed: u64) -> EngineSettings {
    EngineSettings {
        max_shrink_iters: 256,
        ..EngineSettings::new(Profile::Legacy, 24, seed)
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
    let tokio = support::tokio();
    let mut backends = one_slot(&tokio);
    let scenario = fanout_scenario();
    let first = engine::run_scenario(&tokio, &backends, &scenario, &settings(7));
    // The second run plays two cases at a time: the report must not change.
    tokio.block_on(async { support::ok(backends.add_slot(convex_backend().await).await) });
    assert_eq!(backends.slots(), 2);
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
        // B1 shows first at the step Convex takes the write Khala refused
        // (X8), before quiescence would show Convex ahead of Khala (X1).
        .find(|finding| finding.reason_class.name() == "divergence_unexplained")
        .unwrap_or_else(|| {
            let found: Vec<_> = first
                .findings
                .iter()
                .map(|finding| (finding.invariant, finding.reason_class.name()))
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
            .any(|step| step.kind().name() == "fault_khala")
    );
}

/// Hardened fanout cases (no real failure) with the planted flaky check
/// failing one play in `period`, on one lane.
fn flaky_run(period: u32, cases: u32) -> engine::ScenarioRun {
    let tokio = support::tokio();
    let backends = one_slot(&tokio);
    let settings = EngineSettings {
        max_shrink_iters: 32,
        planted_flakiness: Some(PlantedFlakiness { period }),
        ..EngineSettings::new(Profile::Hardened, cases, 3)
    };
    let run = engine::run_scenario(&tokio, &backends, &fanout_scenario(), &settings);
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    assert_eq!(run.unknown, None);
    run
}

fn decision(run: &engine::ScenarioRun) -> Decision {
    report::build(Profile::Hardened, 3, std::slice::from_ref(run), &[])
        .gate
        .decision
}

#[test]
fn a_check_failing_one_play_in_three_is_reported_and_blocks() {
    let run = flaky_run(3, 6);

    assert_eq!(run.findings.len(), 1, "one signature, one finding");
    let finding = &run.findings[0];
    assert_eq!(finding.reason_class, PLANTED_FLAKY_REASON);
    assert!(!finding.violations.is_empty());
    assert_eq!(
        finding.case.origin.as_ref().map(|origin| origin.reproduced),
        Some(finding.reproduced)
    );
    assert_eq!(decision(&run), Decision::Block);
}

#[test]
fn a_violation_no_replay_shows_again_is_a_not_reproduced_finding_that_blocks() {
    // Only the very first play fails: no shrinking candidate and no replay
    // of the minimal or the original case shows it again.
    let run = flaky_run(u32::MAX, 2);

    assert_eq!(run.findings.len(), 1);
    let finding = &run.findings[0];
    assert!(!finding.reproduced);
    assert_eq!(finding.reason_class, PLANTED_FLAKY_REASON);
    let origin = finding.case.origin.as_ref().expect("origin");
    assert_eq!((origin.case_index, origin.reproduced), (Some(0), false));
    assert!(
        finding
            .violations
            .iter()
            .any(|violation| violation.reason_class == PLANTED_FLAKY_REASON),
        "the violations of the play that showed it: {:?}",
        finding.violations
    );
    assert!(!finding.trace.is_empty(), "and its trace");
    let report = report::build(Profile::Hardened, 3, std::slice::from_ref(&run), &[]);
    assert!(!report.findings[0].reproduced);
    assert_eq!(report.gate.decision, Decision::Block);
    assert!(
        report
            .gate
            .reasons
            .iter()
            .any(|reason| reason.contains("not_reproduced_findings")),
        "{:?}",
        report.gate.reasons
    );
}

/// Every file of `dir` with its contents.
fn folder(dir: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("read the regressions folder")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&path).expect("read"))
        })
        .collect()
}

#[test]
fn a_second_identical_legacy_run_leaves_the_stored_regressions_as_they_were() {
    let tokio = support::tokio();
    let backends = one_slot(&tokio);
    let regressions = support::ok(tempfile::tempdir());
    let settings = run::RunSettings {
        profile: Some(Profile::Legacy),
        cases: Some(12),
        seed: 7,
        time_budget: None,
        regressions: regressions.path().to_owned(),
        shard: None,
    };
    let scenarios = [fanout_scenario()];
    let first = support::ok(run::run_scenarios(
        &tokio,
        &backends,
        &scenarios,
        &settings,
        &|_, _| {},
    ));
    let stored = folder(regressions.path());
    let second = support::ok(run::run_scenarios(
        &tokio,
        &backends,
        &scenarios,
        &settings,
        &|_, _| {},
    ));
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });

    assert!(
        !stored.is_empty(),
        "the first legacy run stores what it finds"
    );
    assert_eq!(first.report.gate.decision, Decision::Block);
    assert_eq!(
        folder(regressions.path()),
        stored,
        "nothing rewritten, nothing added"
    );
    // The second run reports the failures through the stored cases.
    assert_eq!(second.report.gate.decision, Decision::Block);
    let replayed = &second.report.scenarios[0];
    assert_eq!(replayed.name, "regressions");
    assert_eq!(replayed.cases, stored.len() as u64);
}

#[test]
fn bench_detect_says_when_each_legacy_defect_was_first_found() {
    let tokio = support::tokio();
    let backends = one_slot(&tokio);
    let scenario = Scenario {
        cases: 6,
        ..fanout_scenario()
    };
    let rates = khala_parity::play::bench::detect(
        &tokio,
        &backends,
        &[
            scenario.clone(),
            Scenario {
                name: "again".into(),
                ..scenario
            },
        ],
        Profile::Legacy,
        7,
    );
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    assert_eq!(rates.cases, 12);
    assert!(rates.unknown.is_empty(), "{:?}", rates.unknown);
    assert!(!rates.defects.is_empty());
    // Scenarios play in order: a defect first seen in the second counts
    // the first's cases before it. The two find the same kinds of failure
    // (B1 and B4 under Khala faults), so some findings share a defect.
    assert!(rates.findings > rates.defects.len(), "{rates:?}");
    for defect in &rates.defects {
        let (cases, offset) = match defect.scenario.as_str() {
            "fanout" => (1..=6, 1),
            _ => (7..=12, 7),
        };
        assert!(cases.contains(&defect.cases_until_found), "{defect:?}");
        assert_eq!(
            u64::from(defect.case_index) + offset,
            defect.cases_until_found
        );
        assert!(defect.seconds_until_found > 0.0, "{defect:?}");
        assert!(!defect.breaks.is_empty(), "{defect:?}");
    }
    // Each defect is credited to the switches it comes from: real switch
    // names, and no two defects with the same cause.
    let names = khala_parity::model::switches::DefectSwitches::names();
    let causes: Vec<&Vec<String>> = rates
        .defects
        .iter()
        .filter_map(|defect| match &defect.cause {
            Some(Cause::Each(switches) | Cause::AnyOf(switches)) => Some(switches),
            _ => None,
        })
        .collect();
    assert!(
        causes
            .iter()
            .flat_map(|switches| switches.iter())
            .all(|name| names.contains(name)),
        "{causes:?}"
    );
    let distinct: std::collections::BTreeSet<_> = causes.iter().collect();
    assert_eq!(distinct.len(), causes.len(), "{:?}", rates.defects);
    assert!(
        causes.iter().any(|switches| switches
            .iter()
            .any(|name| name == "b1_fanout_partial_success"
                || name == "b4_terminal_status_after_event")),
        "B1 or B4 is named: {causes:?}"
    );
}

/// Hardened delivery cases whose web and mobile lanes carry a planted
/// defect: they fail to apply any batch from watermark 2 on.
fn planted_lane_run() -> engine::ScenarioRun {
    let text = "name = 'planted-lane'\ndescription = 'd'\ncases = 6\nmax_steps = 8\n[start]\nsink_mode = 'dual'\nflags = { web = true }\n[weights]\nworker_event = 3\nrun_event = 1\nquiesce = 1\n";
    let scenario = support::ok(Scenario::parse(Path::new("planted-lane.toml"), text));
    let tokio = support::tokio();
    let backends = tokio.block_on(async {
        let postgres = support::backend().await;
        let convex = convex_backend().await;
        let mut backends = support::ok(Backends::new(postgres, convex).await);
        backends.plant(PlantedDefects {
            lane_apply_fails_from: Some(2),
            ..PlantedDefects::default()
        });
        backends
    });
    let settings = EngineSettings {
        max_shrink_iters: 64,
        ..EngineSettings::new(Profile::Hardened, 6, 11)
    };
    let run = engine::run_scenario(&tokio, &backends, &scenario, &settings);
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    run
}

#[test]
fn an_error_a_client_lane_raises_is_a_shrunk_finding_not_unknown() {
    let run = planted_lane_run();

    assert_eq!(
        run.unknown, None,
        "a lane's error is the system's, not the harness's"
    );
    let finding = run
        .findings
        .iter()
        .find(|finding| {
            (finding.invariant, finding.reason_class.name()) == ("E1", "client_lane_failed")
        })
        .unwrap_or_else(|| {
            let found: Vec<_> = run
                .findings
                .iter()
                .map(|finding| (finding.invariant, finding.reason_class.name()))
                .collect();
            panic!("the planted lane defect is an E1 finding; found {found:?}")
        });
    assert!(finding.reproduced);
    // Two worker projections reach watermark 2; nothing else is needed.
    let worker_events = finding
        .case
        .steps
        .iter()
        .filter(|step| step.kind().name() == "worker_event")
        .count();
    assert_eq!(
        (worker_events, finding.case.steps.len()),
        (2, 2),
        "shrunk to the two worker events: {:?}",
        finding.case.steps
    );
    let violation = &finding.violations[0];
    assert!(
        violation.detail.contains("planted defect: watermark 2"),
        "{}",
        violation.detail
    );
    assert_eq!(decision(&run), Decision::Block);
}

/// The case the default legacy run shrank B11 to: a cohort's web flag on,
/// then one worker event.
fn b11_case(profile: Profile) -> khala_parity::model::case::Case {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/regressions/delivery-retention--L1-stalled_below_head.json");
    khala_parity::model::case::Case {
        profile,
        ..support::ok(run::load_case(&path))
    }
}

fn signatures_of(profile: Profile) -> Vec<(&'static str, String)> {
    let tokio = support::tokio();
    let backends = tokio.block_on(async {
        let postgres = support::backend().await;
        let convex = convex_backend().await;
        support::ok(Backends::new(postgres, convex).await)
    });
    let played = tokio.block_on(khala_parity::play::driver::play(
        &backends,
        &b11_case(profile),
        false,
    ));
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    support::ok(played)
        .violations
        .iter()
        .map(|violation| {
            (
                violation.invariant,
                violation.reason_class.name().to_owned(),
            )
        })
        .collect()
}

#[test]
fn b11_legacy_the_runtimes_wake_before_commit_stalls_a_live_lane_below_the_head() {
    let found = signatures_of(Profile::Legacy);

    assert!(
        found.contains(&("L1", "stalled_below_head".to_owned())),
        "the lane's channel re-read the journal before the commit: {found:?}"
    );
}

#[test]
fn b11_hardened_the_runtimes_wake_after_commit_brings_every_lane_to_the_head() {
    assert_eq!(signatures_of(Profile::Hardened), []);
}
