//! A1 and A3 in cases: each auditor cycle's summary against the arithmetic
//! of spec §8 over the cycle's own comparisons, computed here rather than
//! by the auditor's code; and a disabled cycle, which must be all zeros
//! with status `disabled`, no comparison and no telemetry.

use crate::model::observation::Observation;
use crate::model::reason::AuditClass;
use crate::model::violation::Violation;
use khala_runtime::auditor::{CycleReport, CycleStatus, CycleSummary, Side};

use super::invariants::Recorder;

/// The checks of one cycle run after step `step_index`; `enabled` is
/// whether the auditor was enabled for it.
pub fn check_cycle(
    enabled: bool,
    report: &CycleReport,
    current: &Observation,
    step_index: usize,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    if !enabled {
        let zeroed = report.summary == disabled_summary();
        if !zeroed || !report.comparisons.is_empty() || !report.telemetry.is_empty() {
            let detail = format!(
                "a disabled cycle returned {:?} with {} comparison(s) and {} telemetry event(s)",
                report.summary,
                report.comparisons.len(),
                report.telemetry.len()
            );
            recorder.record(AuditClass::DisabledCycleNotEmpty, None, detail, None);
        }
        return recorder.found;
    }
    let expected = expected_summary(report);
    let differing = differing_fields(&expected, &report.summary);
    if !differing.is_empty() {
        let detail = format!(
            "the cycle summary differs from §8's arithmetic over its {} comparison(s) in {}: reported {:?}, expected {:?}",
            report.comparisons.len(),
            differing.join(", "),
            report.summary,
            expected
        );
        recorder.record(AuditClass::CycleArithmeticWrong, None, detail, None);
    }
    recorder.found
}

/// §8: "`disabled` if not enabled (all zeros, no telemetry)".
fn disabled_summary() -> CycleSummary {
    CycleSummary {
        status: CycleStatus::Disabled,
        sampled: 0,
        mismatches: 0,
        missing_documents: 0,
        hash_mismatches: 0,
        lag_drift_nonzero: 0,
        convex_mismatches: 0,
        mismatch_rate: 0.0,
        max_abs_lag_drift: 0,
        avg_abs_lag_drift: 0.0,
    }
}

/// The summary §8's table gives for the cycle's comparisons.
fn expected_summary(report: &CycleReport) -> CycleSummary {
    let comparisons = &report.comparisons;
    let sampled = comparisons.len() as u64;
    let class =
        |comparison: &khala_runtime::auditor::EntityComparison| comparison.reason_class.as_str();
    let count = |keep: &dyn Fn(&khala_runtime::auditor::EntityComparison) -> bool| {
        comparisons
            .iter()
            .filter(|comparison| keep(comparison))
            .count() as u64
    };
    let mismatches = count(&|comparison| class(comparison) != "none");
    let abs_drifts: Vec<i64> = comparisons
        .iter()
        .map(|comparison| comparison.lag_drift.abs())
        .collect();
    let per_sample = |total: f64| {
        if sampled == 0 {
            0.0
        } else {
            total / sampled as f64
        }
    };
    CycleSummary {
        status: match (sampled, mismatches) {
            (0, _) => CycleStatus::Empty,
            (_, 0) => CycleStatus::Ok,
            _ => CycleStatus::Mismatch,
        },
        sampled,
        mismatches,
        missing_documents: count(&|comparison| class(comparison) == "khala_missing"),
        hash_mismatches: count(&|comparison| {
            matches!(
                class(comparison),
                "summary_hash_mismatch" | "hash_and_lag_drift"
            )
        }),
        lag_drift_nonzero: count(&|comparison| comparison.lag_drift != 0),
        convex_mismatches: count(&|comparison| {
            comparison.side == Side::Convex && class(comparison) != "none"
        }),
        mismatch_rate: per_sample(mismatches as f64),
        max_abs_lag_drift: abs_drifts.iter().copied().max().unwrap_or(0),
        avg_abs_lag_drift: per_sample(abs_drifts.iter().sum::<i64>() as f64),
    }
}

fn differing_fields(expected: &CycleSummary, reported: &CycleSummary) -> Vec<&'static str> {
    let close = |left: f64, right: f64| (left - right).abs() <= 1e-9;
    [
        ("status", expected.status == reported.status),
        ("sampled", expected.sampled == reported.sampled),
        ("mismatches", expected.mismatches == reported.mismatches),
        (
            "missing_documents",
            expected.missing_documents == reported.missing_documents,
        ),
        (
            "hash_mismatches",
            expected.hash_mismatches == reported.hash_mismatches,
        ),
        (
            "lag_drift_nonzero",
            expected.lag_drift_nonzero == reported.lag_drift_nonzero,
        ),
        (
            "convex_mismatches",
            expected.convex_mismatches == reported.convex_mismatches,
        ),
        (
            "mismatch_rate",
            close(expected.mismatch_rate, reported.mismatch_rate),
        ),
        (
            "max_abs_lag_drift",
            expected.max_abs_lag_drift == reported.max_abs_lag_drift,
        ),
        (
            "avg_abs_lag_drift",
            close(expected.avg_abs_lag_drift, reported.avg_abs_lag_drift),
        ),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(field, _)| field)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use khala_runtime::auditor::{EntityComparison, ReasonClass};

    fn comparison(class: ReasonClass, lag_drift: i64) -> EntityComparison {
        EntityComparison {
            projection_name: "run_summary".into(),
            entity_id: "run_0".into(),
            document_id: "runtime/run_summary:run_0".into(),
            event_type: "runtime.run_summaries".into(),
            reason_class: class,
            side: Side::Khala,
            lag_drift,
            khala_reason_class: class,
            khala_lag_drift: lag_drift,
            convex: None,
        }
    }

    fn report(comparisons: Vec<EntityComparison>, summary: CycleSummary) -> CycleReport {
        CycleReport {
            summary,
            comparisons,
            telemetry: Vec::new(),
        }
    }

    fn classes(found: &[Violation]) -> Vec<&'static str> {
        found
            .iter()
            .map(|found| found.reason_class.name())
            .collect()
    }

    #[test]
    fn a_summary_true_to_its_comparisons_passes_and_a_planted_error_is_named() {
        let comparisons = vec![
            comparison(ReasonClass::None, 0),
            comparison(ReasonClass::KhalaMissing, 3),
        ];
        let right = CycleSummary {
            status: CycleStatus::Mismatch,
            sampled: 2,
            mismatches: 1,
            missing_documents: 1,
            hash_mismatches: 0,
            lag_drift_nonzero: 1,
            convex_mismatches: 0,
            mismatch_rate: 0.5,
            max_abs_lag_drift: 3,
            avg_abs_lag_drift: 1.5,
        };
        let observation = Observation::default();
        let cycle = report(comparisons.clone(), right.clone());
        assert_eq!(check_cycle(true, &cycle, &observation, 3), []);
        let wrong = CycleSummary {
            avg_abs_lag_drift: 3.0,
            ..right
        };
        let found = check_cycle(true, &report(comparisons, wrong), &observation, 3);
        assert_eq!(classes(&found), ["cycle_arithmetic_wrong"]);
        assert_eq!(found[0].invariant, "A1");
        assert!(
            found[0].detail.contains("avg_abs_lag_drift"),
            "{}",
            found[0].detail
        );
    }

    #[test]
    fn a_disabled_cycle_must_be_empty() {
        let observation = Observation::default();
        let disabled = report(Vec::new(), disabled_summary());
        assert_eq!(check_cycle(false, &disabled, &observation, 1), []);
        let ran_anyway = report(
            vec![comparison(ReasonClass::None, 0)],
            CycleSummary {
                sampled: 1,
                ..disabled_summary()
            },
        );
        let found = check_cycle(false, &ran_anyway, &observation, 1);
        assert_eq!(classes(&found), ["disabled_cycle_not_empty"]);
        assert_eq!(found[0].invariant, "A3");
    }
}
