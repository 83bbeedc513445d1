//! Building a report: from the engine's scenario runs (the `run` command)
//! or from one played case (`replay`, and the snapshot tests), with each
//! scenario gated under its own thresholds.

use super::explain::{explain, field_diff, first_step};
use super::model::{
    DefectReport, FindingReport, REPORT_SCHEMA, Report, ReportTiming, ReportedViolation,
    ScenarioSummary, Stats,
};
use super::timeline::Timeline;
use crate::check::defects::{self, DefectInput};
use crate::check::gate::{self, GateThresholds};
use crate::check::metrics::RunMetrics;
use crate::model::case::Broken;
use crate::model::case::CODE_VERSION;
use crate::model::case::Case;
use crate::model::catalogue::Severity;
use crate::model::trace::{CaseResult, StepTrace};
use crate::model::violation::Violation;
use crate::play::engine::{Finding, ScenarioRun};
use khala_runtime::Profile;
use std::path::{Path, PathBuf};

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

/// The report of scenario runs under the §9.5 default thresholds.
/// `case_files` holds, per run and per finding, where its case is stored.
pub fn build(
    profile: Profile,
    seed: u64,
    runs: &[ScenarioRun],
    case_files: &[Vec<Option<String>>],
) -> Report {
    build_gated(profile, seed, runs, case_files, &[])
}

/// The same, each run gated under `thresholds[i]` (the default where
/// missing).
pub fn build_gated(
    profile: Profile,
    seed: u64,
    runs: &[ScenarioRun],
    case_files: &[Vec<Option<String>>],
    thresholds: &[GateThresholds],
) -> Report {
    let mut builder = Builder {
        interrupted: runs.iter().any(|run| run.interrupted),
        ..Builder::default()
    };
    let mut stats = Stats::default();
    let mut timing = ReportTiming::default();
    for (index, run) in runs.iter().enumerate() {
        stats.cases += u64::from(run.cases);
        stats.steps += run.steps;
        stats.shrink_steps += u64::from(run.shrink_steps);
        timing.total_seconds += run.timing.total_seconds;
        timing.reset_seconds += run.timing.reset_seconds;
        timing.shrink_seconds += run.timing.shrink_seconds;
        let thresholds = thresholds.get(index).cloned().unwrap_or_default();
        let findings: Vec<FindingInput> = run
            .findings
            .iter()
            .enumerate()
            .map(|(finding_index, finding)| FindingInput {
                case: &finding.case,
                violations: &finding.violations,
                trace: finding_trace(finding),
                reproduced: finding.reproduced,
                case_file: case_files
                    .get(index)
                    .and_then(|files| files.get(finding_index))
                    .cloned()
                    .flatten(),
            })
            .collect();
        builder.add_scenario(
            ScenarioSummary {
                name: run.scenario.clone(),
                cases: u64::from(run.cases),
                steps: run.steps,
                thresholds,
                metrics: run_metrics(run),
                // A run short of its declared coverage proves nothing about
                // the cells it missed: `unknown` rather than `allow`. A run
                // that found failures blocks anyway. An interrupted run says
                // so rather than listing the coverage it had no time for.
                unknown: run
                    .unknown
                    .clone()
                    .or_else(|| {
                        run.interrupted
                            .then(|| format!("interrupted after {} case(s)", run.cases))
                    })
                    .or_else(|| {
                        run.coverage
                            .as_ref()
                            .filter(|_| run.findings.is_empty())
                            .and_then(crate::plan::coverage::ScenarioCoverage::shortfall)
                    }),
                coverage: run.coverage.clone(),
            },
            &findings,
        );
    }
    builder.finish(profile, seed, stats, timing)
}

/// The report of one played case: `replay`, and the snapshot of each
/// stored finding. The scenario is the case's own, else `replay`.
pub fn for_case(
    case: &Case,
    case_file: Option<String>,
    result: &CaseResult,
    thresholds: &GateThresholds,
) -> Report {
    let scenario = case
        .origin
        .as_ref()
        .map_or("replay".to_owned(), |origin| origin.scenario.clone());
    let mut metrics = RunMetrics::default();
    metrics.observe_played_case(case, &result.trace);
    let findings = [FindingInput {
        case,
        violations: &result.violations,
        trace: Some(&result.trace),
        reproduced: true,
        case_file,
    }];
    let findings: &[FindingInput] = if result.violations.is_empty() {
        &[]
    } else {
        &findings
    };
    let mut builder = Builder::default();
    builder.add_scenario(
        ScenarioSummary {
            name: scenario,
            cases: 1,
            steps: result.steps_run as u64,
            thresholds: thresholds.clone(),
            metrics,
            unknown: None,
            coverage: None,
        },
        findings,
    );
    let stats = Stats {
        cases: 1,
        steps: result.steps_run as u64,
        shrink_steps: 0,
    };
    let timing = ReportTiming {
        total_seconds: result.reset_time.as_secs_f64(),
        reset_seconds: result.reset_time.as_secs_f64(),
        shrink_seconds: 0.0,
    };
    let seed = case.origin.as_ref().map_or(0, |origin| origin.seed);
    builder.finish(case.profile, seed, stats, timing)
}

/// Re-decides a report's gate under other thresholds (the `report`
/// subcommand's `--gate`): severities and checks are recomputed from the
/// violations and metrics the report holds.
pub fn regate(report: &mut Report, thresholds: &GateThresholds) {
    for scenario in &mut report.scenarios {
        scenario.thresholds = thresholds.clone();
    }
    for violation in &mut report.violations {
        violation.severity = thresholds.severity(violation.reason_class);
    }
    report.gate = decide(
        &report.scenarios,
        &report.violations,
        &report.findings,
        report.interrupted,
    );
}

/// Decides a report's gate from what it holds, under the thresholds its
/// scenarios carry: how `report merge` gates the merged run.
pub fn gate_of(report: &Report) -> gate::Gate {
    decide(
        &report.scenarios,
        &report.violations,
        &report.findings,
        report.interrupted,
    )
}

/// Groups the findings into root defects (`check::defects`) and marks each
/// finding with its defect. `cases[i]` is finding `i`'s minimal case; its
/// first divergent step is its violations' earliest.
pub fn group_defects(
    findings: &mut [FindingReport],
    violations: &[ReportedViolation],
    cases: &[&Case],
) -> Vec<DefectReport> {
    let first_steps: Vec<Option<usize>> = (0..findings.len())
        .map(|index| {
            violations
                .iter()
                .filter(|violation| violation.finding == Some(index))
                .map(|violation| violation.step_index)
                .min()
        })
        .collect();
    let inputs: Vec<DefectInput> = cases
        .iter()
        .zip(&first_steps)
        .map(|(case, first_step)| DefectInput {
            case,
            first_step: *first_step,
        })
        .collect();
    let groups = defects::group(&inputs);
    let mut reports: Vec<DefectReport> = Vec::new();
    for (index, (finding, &group)) in findings.iter_mut().zip(&groups).enumerate() {
        finding.defect = Some(group);
        if group == reports.len() {
            reports.push(DefectReport {
                findings: Vec::new(),
                breaks: Vec::new(),
                case_file: finding.case_file.clone(),
            });
        }
        reports[group].findings.push(index);
    }
    for violation in violations {
        let Some(group) = violation.finding.and_then(|index| groups.get(index)) else {
            continue;
        };
        let broken = Broken {
            scenario: violation.scenario.clone(),
            invariant: violation.invariant.clone(),
            reason_class: violation.reason_class.name().to_owned(),
        };
        let breaks = &mut reports[*group].breaks;
        if let Err(position) = breaks.binary_search(&broken) {
            breaks.insert(position, broken);
        }
    }
    reports
}

/// Why an interrupted run's gate is `unknown`, whatever its scenarios show.
const INTERRUPTED_REASON: &str = "the run was interrupted by a signal before it finished: \
     the cases it played prove nothing either way";

fn decide(
    scenarios: &[ScenarioSummary],
    violations: &[ReportedViolation],
    findings: &[FindingReport],
    interrupted: bool,
) -> gate::Gate {
    // A run cut short has not looked where it meant to: its gate can be
    // neither allow nor block, even if every scenario it reached was clean.
    let interrupted_gate = interrupted.then(|| gate::Gate {
        decision: gate::Decision::Unknown,
        reasons: vec![INTERRUPTED_REASON.to_owned()],
        checks: Vec::new(),
    });
    gate::combine(
        interrupted_gate
            .into_iter()
            .chain(scenarios.iter().map(|scenario| {
                let mut evidence = scenario.metrics.evidence(&scenario.name);
                for violation in violations.iter().filter(|v| v.scenario == scenario.name) {
                    match violation.severity {
                        Severity::Critical => evidence.critical += 1,
                        Severity::Warning => evidence.warnings += 1,
                    }
                }
                evidence.not_reproduced = findings
                    .iter()
                    .filter(|finding| finding.scenario == scenario.name && !finding.reproduced)
                    .count() as u64;
                evidence.unknown = scenario.unknown.clone();
                gate::decide(&scenario.thresholds, &evidence)
            }))
            .collect(),
    )
}

/// The trace of a finding's minimal case, when the engine kept it.
fn finding_trace(finding: &Finding) -> Option<&[StepTrace]> {
    Some(&finding.trace)
}

/// A scenario run's metrics, when the engine gathered them.
fn run_metrics(run: &ScenarioRun) -> RunMetrics {
    run.metrics.clone()
}

struct FindingInput<'a> {
    case: &'a Case,
    violations: &'a [Violation],
    trace: Option<&'a [StepTrace]>,
    reproduced: bool,
    case_file: Option<String>,
}

#[derive(Default)]
struct Builder {
    scenarios: Vec<ScenarioSummary>,
    violations: Vec<ReportedViolation>,
    findings: Vec<FindingReport>,
    metrics: RunMetrics,
    interrupted: bool,
    /// Each finding's minimal case, for grouping them into defects.
    cases: Vec<Case>,
}

impl Builder {
    fn add_scenario(&mut self, summary: ScenarioSummary, findings: &[FindingInput]) {
        for finding in findings {
            // The violation the finding is named after leads its story and
            // its timeline; a case without an origin leads with its first.
            let signature = finding.case.origin.as_ref();
            let named = finding.violations.iter().find(|violation| {
                signature.is_some_and(|origin| {
                    origin.invariant == violation.invariant
                        && origin.reason_class == violation.reason_class
                })
            });
            let Some(first) = named.or(finding.violations.first()) else {
                continue;
            };
            let finding_index = self.findings.len();
            let mut timeline = finding
                .trace
                .map(|trace| Timeline::from_trace(finding.case, trace));
            if let Some(timeline) = &mut timeline {
                timeline.first_step = first_step(first, timeline);
                timeline.detected_step = Some(first.step_index);
            }
            for violation in finding.violations {
                let mut reported = reported(violation, &summary.name, finding.case_file.clone());
                reported.severity = summary.thresholds.severity(violation.reason_class);
                reported.first_step = timeline
                    .as_ref()
                    .and_then(|timeline| first_step(violation, timeline));
                reported.finding = Some(finding_index);
                self.violations.push(reported);
            }
            let (invariant, reason_class) = finding.case.origin.as_ref().map_or_else(
                || (first.invariant.to_owned(), first.reason_class),
                |origin| (origin.invariant.clone(), origin.reason_class),
            );
            self.findings.push(FindingReport {
                scenario: summary.name.clone(),
                invariant,
                reason_class,
                profile: finding.case.profile,
                case_file: finding.case_file.clone(),
                explanation: explain(
                    finding.case,
                    first,
                    finding.violations.len(),
                    timeline.as_ref(),
                ),
                timeline,
                reproduced: finding.reproduced,
                defect: None,
            });
            self.cases.push(finding.case.clone());
        }
        self.metrics.merge(&summary.metrics);
        self.scenarios.push(summary);
    }

    fn finish(mut self, profile: Profile, seed: u64, stats: Stats, timing: ReportTiming) -> Report {
        let cases: Vec<&Case> = self.cases.iter().collect();
        let defects = group_defects(&mut self.findings, &self.violations, &cases);
        Report {
            schema: REPORT_SCHEMA.to_owned(),
            mode: super::model::ReportMode::Run,
            code_version: CODE_VERSION.to_owned(),
            profile,
            seed,
            interrupted: self.interrupted,
            gate: decide(
                &self.scenarios,
                &self.violations,
                &self.findings,
                self.interrupted,
            ),
            scenarios: self.scenarios,
            violations: self.violations,
            findings: self.findings,
            defects,
            metrics: self.metrics,
            stats,
            timing,
            shard: None,
        }
    }
}

/// A violation with its evidence, before its finding is known.
pub fn reported(
    violation: &Violation,
    scenario: &str,
    case_file: Option<String>,
) -> ReportedViolation {
    ReportedViolation {
        invariant: violation.invariant.to_owned(),
        severity: violation.severity,
        reason_class: violation.reason_class,
        document_id: violation.document_id.clone(),
        scenario: scenario.to_owned(),
        step_index: violation.step_index,
        first_step: None,
        detail: violation.detail.clone(),
        case_file,
        expected: violation.expected.clone(),
        khala: violation.khala.clone(),
        convex: violation.convex.clone(),
        checkpoint: violation.checkpoint.clone(),
        diff: field_diff(
            violation.expected.as_ref(),
            violation.khala.as_ref(),
            violation.convex.as_ref(),
        ),
        finding: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::gate::Decision;
    use crate::model::reason::StoreClass;

    fn violation(severity: Severity) -> Violation {
        Violation {
            invariant: "X1",
            severity,
            reason_class: StoreClass::KhalaMissing.into(),
            document_id: None,
            step_index: 0,
            detail: String::new(),
            expected: None,
            khala: None,
            convex: None,
            checkpoint: None,
        }
    }

    fn report_of(
        violations: Vec<Violation>,
        unknown: Option<&str>,
        thresholds: GateThresholds,
    ) -> Report {
        let case = Case {
            schema: crate::model::case::CASE_SCHEMA.to_owned(),
            profile: Profile::Legacy,
            start: crate::model::case::Start::new(khala_runtime::SinkMode::Dual),
            ids: crate::model::case::IdStyle::Plain,
            steps: Vec::new(),
            origin: None,
        };
        let run = ScenarioRun {
            scenario: "s".into(),
            cases: 1,
            unknown: unknown.map(str::to_owned),
            findings: vec![Finding {
                invariant: "X1",
                reason_class: StoreClass::KhalaMissing.into(),
                case,
                violations,
                shrink_steps: 0,
                shrink_case_steps: 0,
                shrink_time: std::time::Duration::ZERO,
                trace: Vec::new(),
                reproduced: true,
                seen_after: std::time::Duration::ZERO,
            }],
            ..ScenarioRun::default()
        };
        build_gated(Profile::Legacy, 1, &[run], &[], &[thresholds])
    }

    #[test]
    fn g1_blocks_on_any_critical_or_warning_and_unknown_wins() {
        let decision = |violations, unknown| {
            report_of(violations, unknown, GateThresholds::default())
                .gate
                .decision
        };
        assert_eq!(decision(vec![], None), Decision::Allow);
        assert_eq!(
            decision(vec![violation(Severity::Critical)], None),
            Decision::Block
        );
        assert_eq!(
            decision(vec![violation(Severity::Warning)], None),
            Decision::Block
        );
        let unknown = report_of(vec![], Some("postgres died"), GateThresholds::default()).gate;
        assert_eq!(
            (unknown.decision, unknown.reasons),
            (Decision::Unknown, vec!["s: postgres died".to_owned()])
        );
    }

    #[test]
    fn severity_overrides_apply_and_regate_recomputes() {
        let warning_only = GateThresholds {
            reason_severity: [("khala_missing".to_owned(), Severity::Warning)].into(),
            max_warnings: 1,
            ..GateThresholds::default()
        };
        let mut report = report_of(vec![violation(Severity::Critical)], None, warning_only);
        assert_eq!(report.violations[0].severity, Severity::Warning);
        assert_eq!(report.gate.decision, Decision::Allow);
        regate(&mut report, &GateThresholds::default());
        assert_eq!(report.violations[0].severity, Severity::Critical);
        assert_eq!(report.gate.decision, Decision::Block);
        assert_eq!(report.violations[0].finding, Some(0));
        assert_eq!(report.findings.len(), 1);
    }

    #[test]
    fn an_interrupted_run_is_unknown_even_when_clean_and_stays_so_when_regated() {
        let run = ScenarioRun {
            scenario: "s".into(),
            cases: 3,
            interrupted: true,
            ..ScenarioRun::default()
        };
        let mut report = build_gated(Profile::Legacy, 1, &[run], &[], &[]);
        assert!(report.interrupted);
        assert_eq!(report.gate.decision, Decision::Unknown);
        assert_eq!(
            report.gate.reasons,
            vec![
                INTERRUPTED_REASON.to_owned(),
                "s: interrupted after 3 case(s)".to_owned()
            ]
        );
        regate(&mut report, &GateThresholds::default());
        assert_eq!(report.gate.decision, Decision::Unknown);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["interrupted"], true);
    }

    #[test]
    fn a_finished_run_leaves_interrupted_out_of_the_json() {
        let report = build_gated(Profile::Legacy, 1, &[ScenarioRun::default()], &[], &[]);
        let json = serde_json::to_value(&report).expect("json");
        assert!(json.get("interrupted").is_none(), "{json}");
    }

    #[test]
    fn regression_paths_are_stable_and_safe() {
        let path = regression_path(Path::new("r"), "drill stages", "X1", "khala/missing");
        assert_eq!(path, Path::new("r/drill_stages--X1-khala_missing.json"));
    }
}
