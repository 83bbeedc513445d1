//! Inputs only the default scenarios' draws produce (issue 18, item 5):
//! raw flag spellings and Convex functions that fail. For each, a defect
//! planted in the models that only that input reveals is a finding of the
//! default scenario's hardened run, and the same run without it allows.

use crate::corner_defects::{found, library_run};
use khala_parity::model::reason::{LaneClass, ReasonClass};
use khala_parity::play::driver::PlantedDefects;

/// Cases of `delivery-retention` played in each direction.
const FLAG_CASES: u32 = 24;

#[test]
fn a_web_flag_read_leniently_is_found_by_delivery_retention_and_the_strict_read_allows() {
    let planted = library_run(
        "delivery-retention",
        Some(FLAG_CASES),
        PlantedDefects {
            web_flag_lenient: true,
            ..PlantedDefects::default()
        },
    );
    assert_eq!(planted.unknown, None);
    let finding = planted
        .findings
        .iter()
        .find(|finding| finding.reason_class == ReasonClass::Lane(LaneClass::LaneFlagMisread))
        .unwrap_or_else(|| {
            panic!(
                "the lenient web flag is an X3 finding; found {:?}",
                found(&planted)
            )
        });
    assert!(finding.reproduced);
    // Shrunk to the one step that sets the web flag to a value that is
    // `"true"` only when trimmed and lower-cased.
    assert_eq!(finding.case.steps.len(), 1, "{:?}", finding.case.steps);
    let flag_values: Vec<String> = finding
        .case
        .steps
        .iter()
        .filter_map(|step| match step {
            khala_parity::model::case::Step::SetClientFlag {
                surface: khala_parity::model::case::Surface::Web,
                value: Some(value),
            } => Some(value.clone()),
            _ => None,
        })
        .collect();
    assert!(
        flag_values
            .iter()
            .any(|value| value != "true" && value.trim().eq_ignore_ascii_case("true")),
        "{:?}",
        finding.case.steps
    );

    let strict = library_run(
        "delivery-retention",
        Some(FLAG_CASES),
        PlantedDefects::default(),
    );
    assert_eq!(strict.unknown, None);
    assert_eq!(found(&strict), [], "hardened delivery-retention allows");
}

/// Cases of `fanout-faults` played in each direction.
const FAULT_CASES: u32 = 40;

#[test]
fn a_sink_taking_a_failed_function_for_success_is_found_by_fanout_faults_and_the_fix_allows() {
    let planted = library_run(
        "fanout-faults",
        Some(FAULT_CASES),
        PlantedDefects {
            sink_function_error_ok: true,
            ..PlantedDefects::default()
        },
    );
    assert_eq!(planted.unknown, None);
    // The checkpoint moves to a write Convex never took (C2).
    let finding = planted
        .findings
        .iter()
        .find(|finding| {
            (finding.invariant, finding.reason_class.name()) == ("C2", "checkpoint_ahead_of_convex")
        })
        .unwrap_or_else(|| {
            panic!(
                "a sink that takes a failed function for success is a C2 finding; found {:?}",
                found(&planted)
            )
        });
    assert!(finding.reproduced);
    assert_eq!(
        finding.case.steps.len(),
        2,
        "shrunk to the fault and one projection: {:?}",
        finding.case.steps
    );
    assert!(
        finding.case.steps.iter().any(|step| matches!(
            step,
            khala_parity::model::case::Step::BreakConvex {
                fault: khala_parity::model::case::ConvexFault::FunctionError200
                    | khala_parity::model::case::ConvexFault::FunctionError560
            }
        )),
        "shrunk to a case with a failing function: {:?}",
        finding.case.steps
    );

    let fixed = library_run(
        "fanout-faults",
        Some(FAULT_CASES),
        PlantedDefects::default(),
    );
    assert_eq!(fixed.unknown, None);
    assert_eq!(found(&fixed), [], "hardened fanout-faults allows");
}
