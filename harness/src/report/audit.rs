//! The report of `khala-parity audit`: the same `khala-parity.report.v1`
//! as a run's, with `mode: "audit"`, one scenario named `audit` whose
//! cases are the cycles and whose steps are the comparisons, the cycles'
//! violations (no finding: nothing was generated or shrunk), the §8
//! metrics of every cycle, and the §9.5 gate over them.

use super::build::reported;
use super::model::{REPORT_SCHEMA, Report, ReportMode, ReportTiming, ScenarioSummary, Stats};
use crate::check::audit::AuditedCycle;
use crate::check::gate::{self, GateThresholds};
use crate::check::metrics::RunMetrics;
use crate::model::case::CODE_VERSION;
use crate::model::catalogue::Severity;
use khala_runtime::Profile;

/// The scenario name an audit's report uses.
pub const AUDIT_SCENARIO: &str = "audit";

/// The report of the cycles an audit ran. `failure` is why a store could
/// not be read (the gate is then `unknown`, whatever the cycles showed);
/// `interrupted`, that a signal ended a `--watch`.
pub fn build_audit(
    cycles: &[AuditedCycle],
    thresholds: &GateThresholds,
    failure: Option<String>,
    interrupted: bool,
    total_seconds: f64,
) -> Report {
    let mut metrics = RunMetrics::default();
    let mut violations = Vec::new();
    let (mut critical, mut warnings) = (0, 0);
    for cycle in cycles {
        let drifts: Vec<u64> = cycle
            .report
            .comparisons
            .iter()
            .map(|comparison| comparison.abs_lag_drift().unsigned_abs())
            .collect();
        metrics.observe_audit_cycle(&cycle.report.summary, &drifts);
        for violation in &cycle.violations {
            let mut reported = reported(violation, AUDIT_SCENARIO, None);
            reported.severity = thresholds.severity(violation.reason_class);
            match reported.severity {
                Severity::Critical => critical += 1,
                Severity::Warning => warnings += 1,
            }
            violations.push(reported);
        }
    }
    let mut evidence = metrics.evidence(AUDIT_SCENARIO);
    evidence.critical = critical;
    evidence.warnings = warnings;
    evidence.unknown = failure.clone().or_else(|| {
        interrupted.then(|| "a signal stopped the audit before its cycles ended".to_owned())
    });
    if cycles.is_empty() && evidence.unknown.is_none() {
        evidence.unknown = Some("no audit cycle completed".to_owned());
    }
    // Nothing compared is no evidence: a table of the right shape that
    // holds no checkpoint (a wrong --checkpoints-table) must not allow.
    if evidence.unknown.is_none() && metrics.auditor.all.sampled == 0 {
        evidence.unknown = Some(
            "no checkpoint was compared: the checkpoint table holds none of run_summary or codex_worker_summary".to_owned(),
        );
    }
    let gate = gate::decide(thresholds, &evidence);
    let stats = Stats {
        cases: cycles.len() as u64,
        steps: metrics.auditor.all.sampled,
        shrink_steps: 0,
    };
    Report {
        schema: REPORT_SCHEMA.to_owned(),
        mode: ReportMode::Audit,
        code_version: CODE_VERSION.to_owned(),
        // The audit compares as the hardened auditor does: it reads Convex
        // (B2 fixed) and sweeps every checkpoint over its cycles (B18).
        profile: Profile::Hardened,
        seed: 0,
        interrupted,
        gate,
        scenarios: vec![ScenarioSummary {
            name: AUDIT_SCENARIO.to_owned(),
            cases: stats.cases,
            steps: stats.steps,
            thresholds: thresholds.clone(),
            metrics: metrics.clone(),
            unknown: failure,
            coverage: None,
        }],
        violations,
        findings: Vec::new(),
        defects: Vec::new(),
        metrics,
        stats,
        timing: ReportTiming {
            total_seconds,
            ..ReportTiming::default()
        },
        shard: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::audit::check_cycle;
    use crate::check::gate::Decision;
    use crate::model::audit::{AuditedStore, CycleRead};

    fn decision(cycles: &[AuditedCycle], failure: Option<&str>) -> Decision {
        let report = build_audit(
            cycles,
            &GateThresholds::default(),
            failure.map(str::to_owned),
            false,
            0.0,
        );
        assert_eq!(report.mode, ReportMode::Audit);
        report.gate.decision
    }

    #[test]
    fn no_evidence_is_unknown_and_a_failure_wins_over_any_cycle() {
        let empty = check_cycle(&CycleRead {
            cycle: 1,
            ..CycleRead::default()
        });
        assert_eq!(decision(&[], None), Decision::Unknown);
        // A table of the right shape holding no checkpoint.
        assert_eq!(
            decision(std::slice::from_ref(&empty), None),
            Decision::Unknown
        );
        let orphan = check_cycle(&CycleRead {
            cycle: 1,
            uncheckpointed: vec![(AuditedStore::Convex, "runtime/run_summary:x".to_owned())],
            ..CycleRead::default()
        });
        assert_eq!(
            decision(&[orphan], Some("postgres: table `t` does not exist")),
            Decision::Unknown
        );
    }
}
