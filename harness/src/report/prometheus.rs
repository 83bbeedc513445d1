//! The run's metrics as a Prometheus text file (exposition format 0.0.4):
//! the §8 auditor metrics under their spec names (dots become
//! underscores), client catch-ups under a name that matches the event that
//! feeds it (the §13 caveat), and the harness's own counts: cases, steps
//! by kind, violations by reason class, and the gate. No wall-clock
//! figure is written, so the same run gives the same file.

use super::model::Report;
use crate::check::gate::{CheckOutcome, Decision};
use crate::check::metrics::{CycleTotals, SurfaceMetrics};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The `component` tag of the auditor's metrics (§8).
const COMPONENT: &str = "sync_parity_auditor";
/// Upper bounds of the `abs_lag_drift` histogram buckets.
const LAG_BUCKETS: [u64; 6] = [0, 1, 2, 5, 10, 25];

struct Writer {
    text: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let rendered: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
                .collect();
            let _ = write!(self.text, "{{{}}}", rendered.join(","));
        }
        let _ = writeln!(self.text, " {}", number(value));
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn average(totals: &CycleTotals) -> f64 {
    if totals.sampled == 0 {
        0.0
    } else {
        totals.sum_abs_lag_drift as f64 / totals.sampled as f64
    }
}

/// The Prometheus text of a report.
pub fn render(report: &Report) -> String {
    let mut out = Writer {
        text: String::new(),
    };
    let metrics = &report.metrics;
    let auditor = &metrics.auditor;
    let all = &auditor.all;

    out.family(
        "openagents_runtime_sync_parity_cycle_count",
        "counter",
        "Parity auditor cycles (openagents_runtime.sync.parity.cycle.count, §8), by status.",
    );
    // Every status, zero included, so a run without cycles still shows the
    // series (and a dashboard reads 0, not "no data").
    for status in ["disabled", "empty", "ok", "mismatch"] {
        let count = auditor.cycles_by_status.get(status).copied().unwrap_or(0);
        out.sample(
            "openagents_runtime_sync_parity_cycle_count",
            &[("component", COMPONENT), ("status", status)],
            count as f64,
        );
    }
    for (name, help, value) in [
        (
            "openagents_runtime_sync_parity_cycle_sampled",
            "Checkpoints compared, summed over the run's enabled cycles (§8 cycle.sampled).",
            all.sampled as f64,
        ),
        (
            "openagents_runtime_sync_parity_cycle_mismatches",
            "Comparisons with status mismatch, summed over the run's enabled cycles (§8 cycle.mismatches).",
            all.mismatches as f64,
        ),
        (
            "openagents_runtime_sync_parity_cycle_mismatch_rate",
            "Mismatches over sampled for the whole run (§8 cycle.mismatch_rate; 0 when nothing was sampled).",
            all.mismatch_rate().unwrap_or(0.0),
        ),
        (
            "openagents_runtime_sync_parity_cycle_max_abs_lag_drift",
            "Largest abs_lag_drift of any comparison in the run (§8 cycle.max_abs_lag_drift).",
            all.max_abs_lag_drift as f64,
        ),
        (
            "openagents_runtime_sync_parity_cycle_avg_abs_lag_drift",
            "Mean abs_lag_drift over the run's comparisons (§8 cycle.avg_abs_lag_drift).",
            average(all),
        ),
    ] {
        out.family(name, "gauge", help);
        out.sample(name, &[("component", COMPONENT)], value);
    }

    out.family(
        "openagents_runtime_sync_parity_entity_count",
        "counter",
        "Comparisons (openagents_runtime.sync.parity.entity.count, §8), by status.",
    );
    for (status, count) in [
        ("ok", all.sampled.saturating_sub(all.mismatches)),
        ("mismatch", all.mismatches),
    ] {
        out.sample(
            "openagents_runtime_sync_parity_entity_count",
            &[("status", status)],
            count as f64,
        );
    }

    out.family(
        "openagents_runtime_sync_parity_entity_abs_lag_drift",
        "histogram",
        "abs_lag_drift of comparisons at quiescence (§8 entity.abs_lag_drift; the §9.5 p95 gate reads it).",
    );
    let distribution = &auditor.quiescent_abs_lag_drift;
    for bound in LAG_BUCKETS {
        let count: u64 = distribution.range(..=bound).map(|(_, count)| count).sum();
        out.sample(
            "openagents_runtime_sync_parity_entity_abs_lag_drift_bucket",
            &[("phase", "quiescent"), ("le", &bound.to_string())],
            count as f64,
        );
    }
    let total: u64 = distribution.values().sum();
    let sum: u64 = distribution
        .iter()
        .map(|(drift, count)| drift * count)
        .sum();
    out.sample(
        "openagents_runtime_sync_parity_entity_abs_lag_drift_bucket",
        &[("phase", "quiescent"), ("le", "+Inf")],
        total as f64,
    );
    out.sample(
        "openagents_runtime_sync_parity_entity_abs_lag_drift_sum",
        &[("phase", "quiescent")],
        sum as f64,
    );
    out.sample(
        "openagents_runtime_sync_parity_entity_abs_lag_drift_count",
        &[("phase", "quiescent")],
        total as f64,
    );

    out.family(
        "openagents_runtime_parity_failure_count",
        "counter",
        "Auditor mismatches (openagents_runtime.parity.failure.count, §8) whose class the cycle summaries count exactly.",
    );
    let failure = |reason_class| {
        [
            ("class", "sync_dual_publish"),
            ("component", COMPONENT),
            ("outcome", "mismatch"),
            ("reason_class", reason_class),
        ]
    };
    out.sample(
        "openagents_runtime_parity_failure_count",
        &failure("khala_missing"),
        all.missing_documents as f64,
    );

    out.family(
        "openagents_runtime_sync_replay_catchup_count",
        "counter",
        "Client catch-ups by outcome (event [:sync, :replay, :catchup], §7.8; named after its event, §13).",
    );
    let delivery = &metrics.delivery;
    for (status, count) in [
        (
            "ok",
            delivery.catchups.saturating_sub(delivery.stale_cursors),
        ),
        ("stale_cursor", delivery.stale_cursors),
    ] {
        out.sample(
            "openagents_runtime_sync_replay_catchup_count",
            &[("status", status)],
            count as f64,
        );
    }

    for (name, help, field) in [
        (
            "khala_parity_client_khala_lane_steps_total",
            "Client lane-steps on the Khala lane (flag on), by surface.",
            (|surface: &SurfaceMetrics| surface.khala_lane_steps) as fn(&SurfaceMetrics) -> u64,
        ),
        (
            "khala_parity_client_updates_delivered_total",
            "Watermarks delivered to Khala lanes, by surface.",
            |surface| surface.delivered,
        ),
        (
            "khala_parity_client_fallbacks_total",
            "Lanes that fell back from Khala to polling (a flag off), by surface.",
            |surface| surface.fallbacks,
        ),
        (
            "khala_parity_client_recoveries_total",
            "Lanes that went back from polling to Khala (re-enabled), by surface.",
            |surface| surface.recoveries,
        ),
    ] {
        out.family(name, "counter", help);
        for surface in ["web", "mobile", "desktop"] {
            let value = delivery.surfaces.get(surface).map_or(0, field);
            out.sample(name, &[("surface", surface)], value as f64);
        }
    }

    out.family(
        "khala_parity_steady_mismatch_rate",
        "gauge",
        "Auditor mismatch rate over cycles with no fault active (the §9.5 gate 1 input).",
    );
    out.sample(
        "khala_parity_steady_mismatch_rate",
        &[],
        auditor.steady.mismatch_rate().unwrap_or(0.0),
    );
    out.family(
        "khala_parity_rollback_mismatch_rate",
        "gauge",
        "Auditor mismatch rate before and after each case's first rollback (§9.6 rollback evidence).",
    );
    for (phase, totals) in [
        ("before", &metrics.rollback.before),
        ("after", &metrics.rollback.after),
    ] {
        out.sample(
            "khala_parity_rollback_mismatch_rate",
            &[("phase", phase)],
            totals.mismatch_rate().unwrap_or(0.0),
        );
    }

    out.family("khala_parity_cases_total", "counter", "Cases played.");
    out.sample("khala_parity_cases_total", &[], report.stats.cases as f64);
    out.family(
        "khala_parity_steps_total",
        "counter",
        "Steps played, by action kind (of the cases whose traces were measured).",
    );
    for (kind, count) in &metrics.steps_by_kind {
        out.sample("khala_parity_steps_total", &[("kind", kind)], *count as f64);
    }

    out.family(
        "khala_parity_violations_total",
        "counter",
        "Violations of the findings' minimal cases, by invariant, reason class and severity.",
    );
    let mut violations: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for violation in &report.violations {
        let severity = serde_json::to_value(violation.severity)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        *violations
            .entry((
                violation.invariant.clone(),
                violation.reason_class.name().to_owned(),
                severity,
            ))
            .or_default() += 1;
    }
    for ((invariant, reason_class, severity), count) in &violations {
        out.sample(
            "khala_parity_violations_total",
            &[
                ("invariant", invariant),
                ("reason_class", reason_class),
                ("severity", severity),
            ],
            *count as f64,
        );
    }
    out.family(
        "khala_parity_findings_total",
        "counter",
        "Findings (shrunk failures).",
    );
    out.sample(
        "khala_parity_findings_total",
        &[],
        report.findings.len() as f64,
    );

    out.family(
        "khala_parity_gate_decision",
        "gauge",
        "1 for the gate's decision, 0 for the others.",
    );
    for (name, decision) in [
        ("allow", Decision::Allow),
        ("block", Decision::Block),
        ("unknown", Decision::Unknown),
    ] {
        out.sample(
            "khala_parity_gate_decision",
            &[("decision", name)],
            f64::from(u8::from(report.gate.decision == decision)),
        );
    }
    out.family(
        "khala_parity_gate_check",
        "gauge",
        "Each gate check per scenario: 1 pass, 0 fail, -1 no data.",
    );
    for check in &report.gate.checks {
        let value = match check.outcome {
            CheckOutcome::Pass => 1.0,
            CheckOutcome::Fail => 0.0,
            CheckOutcome::NoData => -1.0,
        };
        out.sample(
            "khala_parity_gate_check",
            &[("scenario", &check.scenario), ("check", &check.check)],
            value,
        );
    }
    out.text
}

/// Checks that `text` is well-formed exposition text: every sample's
/// family has `# HELP` and `# TYPE` before it, names and labels are legal,
/// values parse. Returns the sample names seen, for shape tests.
pub fn check_shape(text: &str) -> Result<Vec<String>, String> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    let legal_name = |name: &str| {
        !name.is_empty()
            && name.chars().enumerate().all(|(index, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (index > 0 && c.is_ascii_digit())
            })
    };
    for (number, line) in text.lines().enumerate() {
        let at = |message: String| format!("line {}: {message}", number + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            helped.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind:?}")));
            }
            typed.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| at("a sample needs a value".to_owned()))?;
        value
            .parse::<f64>()
            .map_err(|_| at(format!("value {value:?} is not a number")))?;
        let name = series.split('{').next().unwrap_or_default();
        if !legal_name(name) {
            return Err(at(format!("illegal metric name {name:?}")));
        }
        let labels = &series[name.len()..];
        if !(labels.is_empty() || labels.starts_with('{') && labels.ends_with('}')) {
            return Err(at(format!("malformed labels {labels:?}")));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.get(*base).is_some_and(|kind| kind == "histogram"))
            })
            .unwrap_or(name);
        if !typed.contains_key(family) || !helped.contains(family) {
            return Err(at(format!("{name} has no # HELP and # TYPE before it")));
        }
        samples.push(name.to_owned());
    }
    Ok(samples)
}
