//! The run report: gate decision, violations with their case files, stats,
//! and wall-clock figures kept under `timing` only, so that two runs with
//! the same seed and code differ nowhere else.

use crate::engine::{ScenarioRun, Timing};
use crate::invariants::{Severity, Violation};
use khala_runtime::Profile;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const REPORT_SCHEMA: &str = "khala-parity.report.v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Block,
    Unknown,
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    pub decision: Decision,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReportedViolation {
    pub invariant: &'static str,
    pub severity: Severity,
    pub reason_class: String,
    pub document_id: Option<String>,
    pub scenario: String,
    pub step_index: usize,
    pub detail: String,
    /// The stored minimal case that shows it.
    pub case_file: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub cases: u64,
    pub steps: u64,
    pub shrink_steps: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub profile: Profile,
    pub seed: u64,
    pub scenarios: Vec<String>,
    pub gate: Gate,
    pub violations: Vec<ReportedViolation>,
    pub stats: Stats,
    pub timing: Timing,
}

/// The gate of spec §11.2 G1 with `block_on_critical = true` and
/// `max_warning_count = 0`; any backend failure makes it `unknown`.
pub fn gate(violations: &[ReportedViolation], unknown: &[String]) -> Gate {
    if !unknown.is_empty() {
        return Gate {
            decision: Decision::Unknown,
            reasons: unknown.to_vec(),
        };
    }
    let critical = violations
        .iter()
        .filter(|violation| violation.severity == Severity::Critical)
        .count();
    let warnings = violations.len() - critical;
    let mut reasons = Vec::new();
    if critical > 0 {
        reasons.push(format!("{critical} critical violation(s)"));
    }
    if warnings > 0 {
        reasons.push(format!("{warnings} warning(s) over the maximum of 0"));
    }
    let decision = if reasons.is_empty() {
        Decision::Allow
    } else {
        Decision::Block
    };
    Gate { decision, reasons }
}

/// Where a finding's minimal case is stored: one file per scenario,
/// invariant and reason class, so a rerun updates it instead of piling up.
pub fn regression_path(dir: &Path, scenario: &str, invariant: &str, reason_class: &str) -> PathBuf {
    let clean = |text: &str| {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    dir.join(format!(
        "{}--{}-{}.json",
        clean(scenario),
        clean(invariant),
        clean(reason_class)
    ))
}

/// Builds the report of scenario runs. `case_files` holds, per run and per
/// finding, the path the finding's case was stored at.
pub fn build(
    profile: Profile,
    seed: u64,
    runs: &[ScenarioRun],
    case_files: &[Vec<Option<String>>],
) -> Report {
    let mut violations = Vec::new();
    let mut stats = Stats::default();
    let mut timing = Timing::default();
    let mut unknown = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        stats.cases += u64::from(run.cases);
        stats.steps += run.steps;
        stats.shrink_steps += u64::from(run.shrink_steps);
        timing.total_seconds += run.timing.total_seconds;
        timing.reset_seconds += run.timing.reset_seconds;
        timing.shrink_seconds += run.timing.shrink_seconds;
        if let Some(message) = &run.unknown {
            unknown.push(format!("{}: {message}", run.scenario));
        }
        for (finding_index, finding) in run.findings.iter().enumerate() {
            let case_file = case_files
                .get(index)
                .and_then(|files| files.get(finding_index))
                .cloned()
                .flatten();
            violations.extend(
                finding
                    .violations
                    .iter()
                    .map(|violation| reported(violation, &run.scenario, case_file.clone())),
            );
        }
    }
    Report {
        schema: REPORT_SCHEMA,
        profile,
        seed,
        scenarios: runs.iter().map(|run| run.scenario.clone()).collect(),
        gate: gate(&violations, &unknown),
        violations,
        stats,
        timing,
    }
}

pub fn reported(
    violation: &Violation,
    scenario: &str,
    case_file: Option<String>,
) -> ReportedViolation {
    ReportedViolation {
        invariant: violation.invariant,
        severity: violation.severity,
        reason_class: violation.reason_class.clone(),
        document_id: violation.document_id.clone(),
        scenario: scenario.to_owned(),
        step_index: violation.step_index,
        detail: violation.detail.clone(),
        case_file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(severity: Severity) -> ReportedViolation {
        ReportedViolation {
            invariant: "X1",
            severity,
            reason_class: "khala_missing".into(),
            document_id: None,
            scenario: "s".into(),
            step_index: 0,
            detail: String::new(),
            case_file: None,
        }
    }

    #[test]
    fn g1_blocks_on_any_critical_or_warning_and_unknown_wins() {
        assert_eq!(gate(&[], &[]).decision, Decision::Allow);
        assert_eq!(
            gate(&[violation(Severity::Critical)], &[]).decision,
            Decision::Block
        );
        assert_eq!(
            gate(&[violation(Severity::Warning)], &[]).decision,
            Decision::Block
        );
        let unknown = gate(&[], &["postgres died".into()]);
        assert_eq!(
            (unknown.decision, unknown.reasons),
            (Decision::Unknown, vec!["postgres died".to_owned()])
        );
    }

    #[test]
    fn regression_paths_are_stable_and_safe() {
        let path = regression_path(Path::new("r"), "drill stages", "X1", "khala/missing");
        assert_eq!(path, Path::new("r/drill_stages--X1-khala_missing.json"));
    }
}
