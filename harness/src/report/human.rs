//! The report as text for one screen: the gate first, then each finding
//! (what diverged, where, since which step, the field diff, how to replay
//! it), then the metrics. Colour only when the caller says the output is a
//! terminal that accepts it.

use super::model::{FieldDiff, Report, ReportMode, ReportedViolation};
use crate::check::gate::{CheckOutcome, Decision};
use crate::model::catalogue::Severity;
use serde_json::Value;
use std::fmt::Write as _;

/// Diff rows shown per violation before "… n more".
const DIFF_ROWS: usize = 6;
/// Characters of a value shown in the diff table.
const VALUE_WIDTH: usize = 22;

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn bold(&self, text: &str) -> String {
        self.wrap("1", text)
    }
    fn dim(&self, text: &str) -> String {
        self.wrap("2", text)
    }
    fn decision(&self, decision: Decision) -> String {
        match decision {
            Decision::Allow => self.wrap("1;32", "ALLOW"),
            Decision::Block => self.wrap("1;31", "BLOCK"),
            Decision::Unknown => self.wrap("1;33", "UNKNOWN"),
        }
    }
    fn severity(&self, severity: Severity) -> String {
        match severity {
            Severity::Critical => self.wrap("31", "critical"),
            Severity::Warning => self.wrap("33", "warning"),
        }
    }
    fn outcome(&self, outcome: CheckOutcome) -> String {
        match outcome {
            CheckOutcome::Pass => self.wrap("32", "pass"),
            CheckOutcome::Fail => self.wrap("31", "FAIL"),
            CheckOutcome::NoData => self.dim("no data"),
        }
    }
}

fn short(value: Option<&Value>) -> String {
    let text = match value {
        None => "—".to_owned(),
        Some(value) => value.to_string(),
    };
    if text.chars().count() > VALUE_WIDTH {
        let cut: String = text.chars().take(VALUE_WIDTH - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn diff_table(out: &mut String, diff: &[FieldDiff], paint: &Paint) {
    if diff.is_empty() {
        return;
    }
    let width = diff
        .iter()
        .take(DIFF_ROWS)
        .map(|row| row.field.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "    {}",
        paint.dim(&format!(
            "{:<width$}  {:<VALUE_WIDTH$}  {:<VALUE_WIDTH$}  {}",
            "field", "expected", "khala", "convex"
        ))
    );
    for row in diff.iter().take(DIFF_ROWS) {
        let _ = writeln!(
            out,
            "    {:<width$}  {:<VALUE_WIDTH$}  {:<VALUE_WIDTH$}  {}",
            row.field,
            short(row.expected.as_ref()),
            short(row.khala.as_ref()),
            short(row.convex.as_ref())
        );
    }
    if diff.len() > DIFF_ROWS {
        let _ = writeln!(
            out,
            "    {}",
            paint.dim(&format!(
                "… {} more field(s) in report.json",
                diff.len() - DIFF_ROWS
            ))
        );
    }
}

fn violation_line(violation: &ReportedViolation, paint: &Paint) -> String {
    let since = match violation.first_step {
        Some(first) if first < violation.step_index => {
            format!(
                "diverged since step {first}, seen after step {}",
                violation.step_index
            )
        }
        _ => format!("seen after step {}", violation.step_index),
    };
    format!(
        "{} {} {} on {} — {since}",
        paint.bold(&violation.invariant),
        violation.reason_class,
        paint.severity(violation.severity),
        violation.document_id.as_deref().unwrap_or("-"),
    )
}

/// The report as text.
pub fn render(report: &Report, colour: bool) -> String {
    let paint = Paint { on: colour };
    let mut out = String::new();
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(
        out,
        "khala-parity {} · profile {} · seed {} · {}",
        report.code_version,
        report.profile,
        report.seed,
        names.join(", ")
    );
    if report.mode == ReportMode::Audit {
        let _ = writeln!(
            out,
            "audit of a live deployment: {} cycle(s), {} checkpoint comparison(s)",
            report.stats.cases, report.stats.steps
        );
    } else {
        let _ = writeln!(
            out,
            "{} cases, {} steps, {} shrink steps, {} finding(s) from {} defect(s)",
            report.stats.cases,
            report.stats.steps,
            report.stats.shrink_steps,
            report.findings.len(),
            report.defects.len()
        );
    }
    if report.interrupted {
        let _ = writeln!(
            out,
            "{}",
            paint.bold("interrupted: a signal stopped the run; these are the cases it played")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "gate: {}", paint.decision(report.gate.decision));
    for reason in &report.gate.reasons {
        let _ = writeln!(out, "  - {reason}");
    }
    let failing_or_measured: Vec<String> = report
        .gate
        .checks
        .iter()
        .filter(|check| check.outcome != CheckOutcome::NoData || check.check == "mismatch_rate")
        .map(|check| {
            let observed = check
                .observed
                .map_or("-".to_owned(), |value| format!("{value}"));
            format!(
                "{}/{} {observed} ({}) {}",
                check.scenario,
                check.check,
                check.rule,
                paint.outcome(check.outcome)
            )
        })
        .collect();
    if !failing_or_measured.is_empty() {
        let _ = writeln!(out, "  {}", paint.dim("checks:"));
        for line in failing_or_measured {
            let _ = writeln!(out, "    {line}");
        }
    }

    for (index, defect) in report.defects.iter().enumerate() {
        let _ = writeln!(out);
        let findings: Vec<String> = defect
            .findings
            .iter()
            .map(|finding| (finding + 1).to_string())
            .collect();
        let _ = writeln!(
            out,
            "{} finding(s) {}",
            paint.bold(&format!("defect {}/{}:", index + 1, report.defects.len())),
            findings.join(", ")
        );
        for broken in &defect.breaks {
            let _ = writeln!(
                out,
                "  breaks {} {} [{}]",
                broken.invariant, broken.reason_class, broken.scenario
            );
        }
        if let Some(file) = &defect.case_file {
            let _ = writeln!(out, "  stored: {file}");
        }
    }

    for (index, finding) in report.findings.iter().enumerate() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} {} {} [{}] ({} profile)",
            paint.bold(&format!("finding {}/{}:", index + 1, report.findings.len())),
            finding.invariant,
            finding.reason_class,
            finding.scenario,
            finding.profile
        );
        if !finding.reproduced {
            let _ = writeln!(
                out,
                "  {}",
                paint.bold("not reproduced: seen once, no replay showed it again; it still blocks")
            );
        }
        let violations: Vec<&ReportedViolation> = report
            .violations
            .iter()
            .filter(|violation| violation.finding == Some(index))
            .collect();
        if let Some(main) = violations.first() {
            let _ = writeln!(out, "  {}", violation_line(main, &paint));
            diff_table(&mut out, &main.diff, &paint);
        }
        for line in finding.explanation.lines() {
            let _ = writeln!(out, "  {}", paint.dim(line));
        }
        for other in violations.iter().skip(1) {
            let _ = writeln!(out, "  also: {}", violation_line(other, &paint));
        }
        if let Some(file) = &finding.case_file {
            let _ = writeln!(out, "  replay: khala-parity replay {file}");
        }
    }
    // Violations of no finding: an audit's (each explained, with the
    // stores' field diff), none in a run.
    let unattached: Vec<&ReportedViolation> = report
        .violations
        .iter()
        .filter(|violation| violation.finding.is_none())
        .collect();
    if report.mode == ReportMode::Audit {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} {} mismatch(es) in {} cycle(s)",
            paint.bold("audit:"),
            unattached.len(),
            report.stats.cases
        );
    }
    for violation in unattached {
        if report.mode == ReportMode::Audit {
            let _ = writeln!(
                out,
                "  {} {} {} on {} — cycle {}",
                paint.bold(&violation.invariant),
                violation.reason_class,
                paint.severity(violation.severity),
                violation.document_id.as_deref().unwrap_or("-"),
                violation.step_index
            );
            let _ = writeln!(out, "    {}", violation.detail);
            let _ = writeln!(out, "    {}", paint.dim(violation.reason_class.meaning()));
            diff_table(&mut out, &violation.diff, &paint);
        } else {
            let _ = writeln!(out, "  {}", violation_line(violation, &paint));
        }
    }

    let metrics = &report.metrics;
    let steady = &metrics.auditor.steady;
    let rate = |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.4}"));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "auditor: {} cycle(s), {} with no fault active: mismatch rate {}, khala_missing {}, lag drift p95 at quiescence {}; stale cursor rate {}",
        metrics.auditor.all.cycles,
        steady.cycles,
        rate(steady.mismatch_rate()),
        steady.missing_documents,
        crate::check::metrics::p95(&metrics.auditor.quiescent_abs_lag_drift)
            .map_or("-".to_owned(), |value| value.to_string()),
        rate(metrics.delivery.stale_cursor_rate())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut() {
        let long = Value::String("x".repeat(40));
        assert_eq!(short(Some(&long)).chars().count(), VALUE_WIDTH);
        assert_eq!(short(None), "—");
    }
}
