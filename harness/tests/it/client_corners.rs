//! Client corners only the `client-corners` scenario's draws reveal (issue
//! 16, items 2 and 3). Each defect is planted in today's client lanes
//! through `ClientSwitches::planted_*`, kept out of `khala_clients::apply`
//! (the file mutation testing mutates), and the default scenario, played
//! hardened with its seed and the cases mutation testing plays
//! (`PROPTEST_CASES=6`), must find it; the same run without it finds
//! nothing.
//!
//! - a lane that takes pointer updates (`payload: null,
//!   hydration_required: true`) as needing no HTTP reload: only a case
//!   deployed with `payload_mode = pointer` tells it apart;
//! - a batch merge keeping the lowest of several versions of one document:
//!   only a replay after a socket was lost while a document changed twice
//!   does;
//! - a merge leaving out an update at the version the row shows: only a
//!   new payload at an unchanged `doc_version` (event rows removed, then
//!   reprojected) does.

use crate::corner_defects::{found, library_run};
use khala_parity::model::case::{Case, Step};
use khala_parity::play::driver::PlantedDefects;
use khala_parity::play::engine::ScenarioRun;
use khala_runtime::sink::PayloadMode;

/// The cases per scenario mutation testing plays (`ci/mutants.sh`).
const MUTANTS_CASES: u32 = 6;

const SCENARIO: &str = "client-corners";

/// The scenario, hardened, with `planted`, as mutation testing plays it.
fn play(planted: PlantedDefects) -> ScenarioRun {
    library_run(SCENARIO, Some(MUTANTS_CASES), planted)
}

/// The scenario with `planted` finds one of `signatures`, and every
/// finding's minimal case passes `needed` (the corner it needs).
fn finds(planted: PlantedDefects, signatures: &[(&str, &str)], needed: impl Fn(&Case) -> bool) {
    let run = play(planted);
    let found = found(&run);
    assert!(
        signatures.iter().any(|signature| found.contains(signature)),
        "none of {signatures:?} in {found:?}"
    );
    for finding in &run.findings {
        assert!(
            needed(&finding.case),
            "{} {}: {:?}",
            finding.invariant,
            finding.reason_class,
            finding.case
        );
    }
}

#[test]
fn client_corners_allows_without_a_planted_defect() {
    assert_eq!(found(&play(PlantedDefects::default())), []);
}

#[test]
fn client_corners_finds_a_lane_that_skips_pointer_hydration_only_in_pointer_mode() {
    let planted = PlantedDefects {
        lane_pointer_batch_merged: true,
        ..PlantedDefects::default()
    };
    finds(
        planted,
        &[("X3", "khala_lane_stale"), ("X3", "khala_lane_missing")],
        |case| case.start.payload_mode == PayloadMode::Pointer,
    );
}

#[test]
fn client_corners_finds_a_batch_merge_that_keeps_the_oldest_version_after_a_lost_socket() {
    let planted = PlantedDefects {
        lane_batch_merge_keeps_oldest: true,
        ..PlantedDefects::default()
    };
    finds(planted, &[("X3", "khala_lane_stale")], |case| {
        case.start.payload_mode == PayloadMode::Inline
            && case
                .steps
                .iter()
                .any(|step| matches!(step, Step::DisconnectClient { .. }))
    });
}

#[test]
fn client_corners_finds_a_merge_that_skips_a_new_payload_at_the_shown_version() {
    let planted = PlantedDefects {
        lane_merge_skips_equal_version: true,
        ..PlantedDefects::default()
    };
    finds(planted, &[("X3", "khala_lane_wrong")], |case| {
        case.steps
            .iter()
            .any(|step| matches!(step, Step::RemoveEvents { .. } | Step::Reproject { .. }))
    });
}
