//! The drill report in Markdown, mirroring the artifacts §9.6 asks of a
//! staging drill: an explicit pass/fail per checklist item, metric
//! snapshots of mismatch rate and lag drift, before/after rollback
//! evidence, and, for each finding, its explanation and SVG timeline.
//! Evidence here is what the run measured, never configuration.

use super::model::{Report, ReportedViolation};
use super::timeline::Marker;
use crate::check::gate::CheckOutcome;
use crate::check::metrics::{CycleTotals, SurfaceMetrics, p95};
use std::fmt::Write as _;

/// The file a finding's timeline is written to, next to the drill report.
pub fn timeline_file(finding_index: usize) -> String {
    format!("timeline-{}.svg", finding_index + 1)
}

/// A checklist item's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    NotExercised,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NotExercised => "NOT EXERCISED",
        }
    }
}

/// The six items of §9.6, in order, with their verdict and evidence.
pub fn checklist(report: &Report) -> Vec<(&'static str, Verdict, String)> {
    let metrics = &report.metrics;
    let cycles = metrics.auditor.all.cycles;
    let of_invariant = |id: &str| -> Vec<&ReportedViolation> {
        report
            .violations
            .iter()
            .filter(|violation| violation.invariant == id)
            .collect()
    };
    let x5 = of_invariant("X5");
    let auditor = if !x5.is_empty() {
        (
            Verdict::Fail,
            format!(
                "{} auditor verdict(s) disagree with the stores (X5)",
                x5.len()
            ),
        )
    } else if cycles > 0 && metrics.auditor.all.sampled == 0 {
        (
            Verdict::NotExercised,
            format!("{cycles} cycle(s) ran but sampled no checkpoint: no entity metric"),
        )
    } else if cycles > 0 {
        (
            Verdict::Pass,
            format!(
                "{cycles} cycle(s), {} comparison(s); every verdict matched the stores",
                metrics.auditor.all.sampled
            ),
        )
    } else {
        (Verdict::NotExercised, "no auditor cycle ran".to_owned())
    };
    // A surface's item fails when a violation names the surface (the
    // client invariants put it in the reason class or the detail); it
    // passes on evidence the lanes produced, never on configuration.
    let surface = |name: &str, evidence: &dyn Fn(&SurfaceMetrics) -> Option<String>| {
        let broken = report
            .violations
            .iter()
            .filter(|violation| {
                violation.reason_class.name().contains(name) || violation.detail.contains(name)
            })
            .count();
        let measured = metrics.delivery.surfaces.get(name).and_then(evidence);
        match (broken, measured) {
            (0, Some(evidence)) => (Verdict::Pass, evidence),
            (0, None) => (
                Verdict::NotExercised,
                format!("no {name} lane ran on Khala with updates to show"),
            ),
            (broken, _) => (
                Verdict::Fail,
                format!("{broken} violation(s) name the {name} surface"),
            ),
        }
    };
    let live = |surface: &SurfaceMetrics| {
        (surface.khala_lane_steps > 0 && surface.delivered > 0).then(|| {
            format!(
                "{} lane-step(s) on Khala, {} update(s) delivered live",
                surface.khala_lane_steps, surface.delivered
            )
        })
    };
    let desktop_evidence = |surface: &SurfaceMetrics| {
        (surface.khala_provider_steps > 0).then(|| {
            format!(
                "{} lane-step(s) with the connectivity probe on Khala",
                surface.khala_provider_steps
            )
        })
    };
    let rolled_back: Vec<usize> = report
        .findings
        .iter()
        .enumerate()
        // A finding seen after a rollback step of its case.
        .filter(|(_, finding)| {
            finding.timeline.as_ref().is_some_and(|timeline| {
                timeline.steps.iter().any(|step| {
                    step.marker == Some(Marker::Rollback)
                        && timeline
                            .detected_step
                            .is_some_and(|detected| step.index < detected)
                })
            })
        })
        .map(|(index, _)| index + 1)
        .collect();
    let fallbacks: u64 = metrics
        .delivery
        .surfaces
        .values()
        .map(|s| s.fallbacks)
        .sum();
    let recoveries: u64 = metrics
        .delivery
        .surfaces
        .values()
        .map(|s| s.recoveries)
        .sum();
    let rollback = if !rolled_back.is_empty() {
        (
            Verdict::Fail,
            format!("finding(s) {rolled_back:?} are seen after a rollback"),
        )
    } else if metrics.rollback.cases > 0 || fallbacks > 0 {
        (
            Verdict::Pass,
            format!(
                "{fallbacks} lane fallback(s) to polling, {recoveries} recovery(ies) to Khala; {} case(s) rolled back ({}); no finding involves a rollback",
                metrics.rollback.cases,
                metrics
                    .rollback
                    .rollbacks
                    .iter()
                    .map(|(switch, count)| format!("{switch} ×{count}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        (
            Verdict::NotExercised,
            "no rollback step was played".to_owned(),
        )
    };
    let web = surface("web", &live);
    let mobile = surface("mobile", &live);
    let desktop = surface("desktop", &desktop_evidence);
    vec![
        (
            "1. Auditor enabled; cycle and entity metrics confirmed",
            auditor.0,
            auditor.1,
        ),
        ("2. Web flag on; live worker summary updates", web.0, web.1),
        (
            "3. Mobile flag on; summaries update without the Convex provider",
            mobile.0,
            mobile.1,
        ),
        (
            "4. Desktop flag on; connectivity lane uses Khala",
            desktop.0,
            desktop.1,
        ),
        (
            "5. Rollback simulation: each flag off, fallback, re-enable, recovery",
            rollback.0,
            rollback.1,
        ),
        (
            "6. Artifacts recorded",
            Verdict::Pass,
            "report.json, report.txt, metrics.prom, this file and one timeline per finding"
                .to_owned(),
        ),
    ]
}

fn rate(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |value| format!("{value:.4}"))
}

fn snapshot_row(out: &mut String, name: &str, totals: &CycleTotals) {
    let average = if totals.sampled == 0 {
        "–".to_owned()
    } else {
        format!(
            "{:.2}",
            totals.sum_abs_lag_drift as f64 / totals.sampled as f64
        )
    };
    let _ = writeln!(
        out,
        "| {name} | {} | {} | {} | {} | {} | {} | {average} |",
        totals.cycles,
        totals.sampled,
        totals.mismatches,
        rate(totals.mismatch_rate()),
        totals.missing_documents,
        totals.max_abs_lag_drift,
    );
}

fn cell(value: Option<&serde_json::Value>) -> String {
    value
        .map_or("—".to_owned(), |value| format!("`{value}`"))
        .replace('|', "\\|")
}

/// The drill report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(out, "# Cutover drill report: {}", names.join(", "));
    let _ = writeln!(out);
    if report.mode == super::model::ReportMode::Audit {
        let _ = writeln!(
            out,
            "Produced by khala-parity {} auditing a live deployment read-only: {} cycle(s), {} checkpoint comparison(s) against its PostgreSQL and Convex.",
            report.code_version, report.stats.cases, report.stats.steps
        );
    } else {
        let _ = writeln!(
            out,
            "Produced by khala-parity {} (profile `{}`, seed {}): {} cases, {} steps against real PostgreSQL and a Convex HTTP backend.",
            report.code_version,
            report.profile,
            report.seed,
            report.stats.cases,
            report.stats.steps
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "**Gate: {}**",
        format!("{:?}", report.gate.decision).to_uppercase()
    );
    for reason in &report.gate.reasons {
        let _ = writeln!(out, "- {reason}");
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Checklist (§9.6)");
    let _ = writeln!(out);
    let _ = writeln!(out, "| Item | Result | Evidence |");
    let _ = writeln!(out, "|---|---|---|");
    for (item, verdict, evidence) in checklist(report) {
        let _ = writeln!(out, "| {item} | {} | {evidence} |", verdict.as_str());
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## SLO gates (§9.5)");
    let _ = writeln!(out);
    let _ = writeln!(out, "| Scenario | Check | Observed | Rule | Result |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for check in &report.gate.checks {
        let observed = check
            .observed
            .map_or("–".to_owned(), |value| value.to_string());
        let result = match check.outcome {
            CheckOutcome::Pass => "pass",
            CheckOutcome::Fail => "FAIL",
            CheckOutcome::NoData => "no data",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {observed} | {} | {result} |",
            check.scenario, check.check, check.rule
        );
    }
    let _ = writeln!(out);

    let metrics = &report.metrics;
    let _ = writeln!(out, "## Metric snapshots");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Auditor cycles (§8 definitions; `metrics.prom` has the same figures for Prometheus)."
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Cycles | Count | Sampled | Mismatches | Mismatch rate | khala_missing | Max abs lag drift | Avg abs lag drift |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    snapshot_row(&mut out, "all", &metrics.auditor.all);
    snapshot_row(&mut out, "no fault active", &metrics.auditor.steady);
    snapshot_row(&mut out, "before rollback", &metrics.rollback.before);
    snapshot_row(&mut out, "after rollback", &metrics.rollback.after);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Lag drift p95 at quiescence: {} ({} comparison(s)). Stale-cursor rate: {} ({} catch-up(s)).",
        p95(&metrics.auditor.quiescent_abs_lag_drift)
            .map_or("–".to_owned(), |value| value.to_string()),
        metrics
            .auditor
            .quiescent_abs_lag_drift
            .values()
            .sum::<u64>(),
        rate(metrics.delivery.stale_cursor_rate()),
        metrics.delivery.catchups
    );
    let _ = writeln!(out);

    if !metrics.delivery.surfaces.is_empty() {
        let _ = writeln!(
            out,
            "| Surface | Lane-steps on Khala | Updates delivered | Fallbacks to polling | Recoveries to Khala | Desktop probe on Khala |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for (name, surface) in &metrics.delivery.surfaces {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                surface.khala_lane_steps,
                surface.delivered,
                surface.fallbacks,
                surface.recoveries,
                surface.khala_provider_steps
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Rollback evidence");
    let _ = writeln!(out);
    if metrics.rollback.cases == 0 {
        let _ = writeln!(out, "No case played a rollback step.");
    } else {
        let _ = writeln!(
            out,
            "{} case(s) rolled back. Switches: {}. Auditor mismatch rate before the first rollback of a case: {}; after: {}.",
            metrics.rollback.cases,
            metrics
                .rollback
                .rollbacks
                .iter()
                .map(|(switch, count)| format!("`{switch}` ×{count}"))
                .collect::<Vec<_>>()
                .join(", "),
            rate(metrics.rollback.before.mismatch_rate()),
            rate(metrics.rollback.after.mismatch_rate())
        );
    }
    let _ = writeln!(out);

    if report.mode == super::model::ReportMode::Audit {
        parity_audit(&mut out, report);
    }
    let _ = writeln!(out, "## Findings");
    let _ = writeln!(out);
    if report.findings.is_empty() {
        let _ = writeln!(out, "None.");
    }
    for (index, finding) in report.findings.iter().enumerate() {
        let _ = writeln!(
            out,
            "### {}. {} `{}` ({}, {} profile)",
            index + 1,
            finding.invariant,
            finding.reason_class,
            finding.scenario,
            finding.profile
        );
        let _ = writeln!(out);
        if !finding.reproduced {
            let _ = writeln!(
                out,
                "**Not reproduced**: seen in one play, shown by no replay; it blocks all the same.  "
            );
        }
        for line in finding.explanation.lines() {
            let _ = writeln!(out, "{line}  ");
        }
        let _ = writeln!(out);
        if let Some(main) = report
            .violations
            .iter()
            .find(|violation| violation.finding == Some(index))
            && !main.diff.is_empty()
        {
            let _ = writeln!(
                out,
                "Field diff of {} after step {}:",
                main.document_id.as_deref().unwrap_or("-"),
                main.step_index
            );
            let _ = writeln!(out);
            let _ = writeln!(out, "| Field | Expected | Khala | Convex |");
            let _ = writeln!(out, "|---|---|---|---|");
            for row in &main.diff {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    row.field,
                    cell(row.expected.as_ref()),
                    cell(row.khala.as_ref()),
                    cell(row.convex.as_ref())
                );
            }
            let _ = writeln!(out);
        }
        if finding.timeline.is_some() {
            let _ = writeln!(
                out,
                "![timeline of finding {}]({})",
                index + 1,
                timeline_file(index)
            );
            let _ = writeln!(out);
        }
        if let Some(file) = &finding.case_file {
            let _ = writeln!(out, "Replay: `khala-parity replay {file}`");
            let _ = writeln!(out);
        }
    }

    let not_exercised: Vec<&str> = checklist(report)
        .into_iter()
        .filter(|(_, verdict, _)| *verdict == Verdict::NotExercised)
        .map(|(item, _, _)| item)
        .collect();
    let _ = writeln!(out, "## Residual risks");
    let _ = writeln!(out);
    if not_exercised.is_empty() {
        let _ = writeln!(out, "Every checklist item was exercised.");
    } else {
        for item in not_exercised {
            let _ = writeln!(out, "- Not exercised by this run: {item}");
        }
    }
    out
}

/// The parity section of an audit's drill report: what the stores of the
/// live deployment showed, mismatch by mismatch.
fn parity_audit(out: &mut String, report: &Report) {
    let all = &report.metrics.auditor.all;
    let _ = writeln!(out, "## Parity audit of the live deployment");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} cycle(s) compared {} checkpoint(s) with Khala and Convex: {} mismatch(es), mismatch rate {}, khala_missing {}, max abs lag drift {}.",
        all.cycles,
        all.sampled,
        all.mismatches,
        rate(all.mismatch_rate()),
        all.missing_documents,
        all.max_abs_lag_drift
    );
    let _ = writeln!(out);
    if report.violations.is_empty() {
        let _ = writeln!(out, "No mismatch.");
        let _ = writeln!(out);
        return;
    }
    let _ = writeln!(
        out,
        "| Cycle | Invariant | Reason | Document | What the stores hold |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for violation in &report.violations {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} | {} |",
            violation.step_index,
            violation.invariant,
            violation.reason_class,
            violation.document_id.as_deref().unwrap_or("–"),
            violation.detail.replace('|', "\\|")
        );
    }
    let _ = writeln!(out);
}

/// The headings and checklist rows every drill report has; used by the
/// shape test of the CI artifacts.
pub fn check_shape(markdown: &str) -> Result<(), String> {
    for heading in [
        "# Cutover drill report: ",
        "## Checklist (§9.6)",
        "## SLO gates (§9.5)",
        "## Metric snapshots",
        "## Rollback evidence",
        "## Findings",
        "## Residual risks",
    ] {
        if !markdown.lines().any(|line| line.starts_with(heading)) {
            return Err(format!("missing heading {heading:?}"));
        }
    }
    if !markdown.lines().any(|line| line.starts_with("**Gate: ")) {
        return Err("missing the gate line".to_owned());
    }
    for item in 1..=6 {
        let prefix = format!("| {item}. ");
        let row = markdown
            .lines()
            .find(|line| line.starts_with(&prefix))
            .ok_or_else(|| format!("missing checklist item {item}"))?;
        if !["| PASS |", "| FAIL |", "| NOT EXERCISED |"]
            .iter()
            .any(|verdict| row.contains(verdict))
        {
            return Err(format!("checklist item {item} has no verdict: {row}"));
        }
    }
    Ok(())
}
