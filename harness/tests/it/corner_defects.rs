//! Defects only the corner inputs reveal (issue 18, item 5): each is
//! planted in the runtime model (`khala_runtime::PlantedDefects`, never a
//! §15 switch) and a default scenario from `scenarios/`, played hardened
//! with the seed and cases of its data test, must find it; played without
//! it, the same run finds nothing (the gate allows).
//!
//! - the projector taking `event_count` for `latest_seq`: only an event
//!   sequence with a gap (`remove_events`) tells them apart;
//! - the retention job deleting the row at its cutoff (`<=`), or cutting
//!   at `now + horizon`: only a run whose cutoff lands on a row
//!   (`run_retention_at_row`) tells them apart from the spec;
//! - the projector trimming a run's `terminal_reason`: only a reason with
//!   padding whitespace (`[texts]`' `control`) tells them apart.

use crate::engine_runs::one_slot;
use crate::support;
use khala_parity::model::case::Step;
use khala_parity::plan::scenario::Scenario;
use khala_parity::play::driver::PlantedDefects;
use khala_parity::play::engine::{self, EngineSettings, ScenarioRun};
use khala_runtime::Profile;
use std::path::Path;
use std::time::Duration;

/// A default scenario, hardened, with `runtime` planted, as its data test
/// plays it (its seed and cases, the data test's shrink budget).
fn play(name: &str, runtime: khala_runtime::PlantedDefects) -> ScenarioRun {
    library_run(
        name,
        None,
        PlantedDefects {
            runtime,
            ..PlantedDefects::default()
        },
    )
}

/// The library scenario `name`, hardened, with `planted`: its seed, its
/// cases unless `cases` says, the data test's shrink budget.
pub fn library_run(name: &str, cases: Option<u32>, planted: PlantedDefects) -> ScenarioRun {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"));
    let scenario = support::ok(Scenario::load(&path));
    let settings = EngineSettings {
        max_shrink_iters: 64,
        max_shrink_time: Duration::from_secs(60),
        ..EngineSettings::new(
            Profile::Hardened,
            cases.unwrap_or(scenario.cases),
            scenario.seed.unwrap_or(1),
        )
    };
    let tokio = support::tokio();
    let mut backends = one_slot(&tokio);
    backends.plant(planted);
    let run = engine::run_scenario(&tokio, &backends, &scenario, &settings);
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    assert_eq!(run.unknown, None, "{name}: the backends must not fail");
    run
}

/// The (invariant, reason class) of every finding.
pub fn found(run: &ScenarioRun) -> Vec<(&'static str, &'static str)> {
    run.findings
        .iter()
        .map(|finding| (finding.invariant, finding.reason_class.name()))
        .collect()
}

/// One of the run's findings is `signature`.
fn assert_finds(run: &ScenarioRun, signature: (&str, &str)) {
    let found = found(run);
    assert!(found.contains(&signature), "{signature:?} not in {found:?}");
}

/// Every finding's minimal case needs a step `needed` accepts.
fn every_minimal_case_has(run: &ScenarioRun, needed: impl Fn(&Step) -> bool) {
    assert!(!run.findings.is_empty(), "the planted defect is found");
    for finding in &run.findings {
        assert!(
            finding.case.steps.iter().any(&needed),
            "{} {}: {:?}",
            finding.invariant,
            finding.reason_class,
            finding.case.steps
        );
    }
}

/// A default scenario played clean finds nothing: the gate allows.
fn clean_run_allows(name: &str) {
    let clean = play(name, khala_runtime::PlantedDefects::default());
    assert_eq!(found(&clean), [], "{name}: without a planted defect");
}

/// One planted defect, the rest off.
fn only(plant: impl FnOnce(&mut khala_runtime::PlantedDefects)) -> khala_runtime::PlantedDefects {
    let mut planted = khala_runtime::PlantedDefects::default();
    plant(&mut planted);
    planted
}

#[test]
fn sink_mode_switches_finds_latest_seq_taken_from_the_count_only_through_gaps() {
    clean_run_allows("sink-mode-switches");
    let planted = play(
        "sink-mode-switches",
        only(|planted| planted.latest_seq_from_event_count = true),
    );
    every_minimal_case_has(&planted, |step| matches!(step, Step::RemoveEvents { .. }));
}

#[test]
fn delivery_retention_finds_cutoffs_off_at_the_boundary_instant() {
    clean_run_allows("delivery-retention");
    let inclusive = play(
        "delivery-retention",
        only(|planted| planted.retention_cutoff_inclusive = true),
    );
    assert_finds(&inclusive, ("R1", "new_row_deleted"));
    every_minimal_case_has(&inclusive, |step| {
        matches!(step, Step::RunRetentionAtRow { .. })
    });
    let ahead = play(
        "delivery-retention",
        only(|planted| planted.retention_cutoff_ahead = true),
    );
    assert_finds(&ahead, ("R1", "retention_cutoff_wrong"));
}

#[test]
fn terminal_status_finds_a_trimmed_terminal_reason_only_through_padded_text() {
    clean_run_allows("terminal-status");
    let trimmed = play(
        "terminal-status",
        only(|planted| planted.terminal_reason_trimmed = true),
    );
    every_minimal_case_has(&trimmed, |step| {
        matches!(
            step,
            Step::FinishRun { reason, .. }
                if reason.value().is_some_and(|text| text.trim() != text)
        )
    });
}
