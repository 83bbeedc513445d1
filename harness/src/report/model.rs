//! The report's data: what `report.json` holds, read back by the `report`
//! subcommand. Every renderer (human text, Markdown drill report, SVG
//! timelines, Prometheus text) is a function of this data alone.

use super::timeline::Timeline;
use crate::check::gate::{Gate, GateThresholds};
use crate::check::metrics::RunMetrics;
use crate::model::case::{Broken, Case};
use crate::model::catalogue::Severity;
use crate::model::reason::ReasonClass;
use crate::model::shard::Shard;
use crate::plan::coverage::CoverageGap;
use khala_runtime::Profile;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A JSON value that may be absent: absent is `None`, and a present `null`
/// stays `Some(Value::Null)` when read back (serde's default reads `null`
/// as `None`, which would lose "this store holds null" from a diff).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

pub const REPORT_SCHEMA: &str = "khala-parity.report.v1";

/// What produced a report: generated and stored cases played against the
/// models (`run`, `replay`, `report merge`), or cycles of `audit` over a
/// live deployment's stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportMode {
    /// Reports written before the field existed read back as runs.
    #[default]
    Run,
    Audit,
}

/// A whole run: one or more scenarios (stored regressions count as one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub schema: String,
    #[serde(default)]
    pub mode: ReportMode,
    /// The harness version that produced the report.
    pub code_version: String,
    pub profile: Profile,
    pub seed: u64,
    /// A signal (SIGINT, SIGTERM) stopped the run before it finished: the
    /// report holds the cases played until then and the gate is `unknown`.
    /// Left out of the JSON when false, so reports of finished runs read
    /// as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    pub gate: Gate,
    pub scenarios: Vec<ScenarioSummary>,
    /// Every violation of every finding's minimal case, with its evidence.
    pub violations: Vec<ReportedViolation>,
    /// One per shrunk failure (or failing stored case).
    pub findings: Vec<FindingReport>,
    /// The root defects the findings come from (`check::defects`), in the
    /// order of their first finding: what a reader has to learn. Reports
    /// written before defects were grouped read back with none.
    #[serde(default)]
    pub defects: Vec<DefectReport>,
    /// All scenarios' metrics together, as the Prometheus file shows them.
    pub metrics: RunMetrics,
    pub stats: Stats,
    /// Wall-clock figures: the only part two runs of one seed differ in.
    pub timing: ReportTiming,
    /// What `report merge` needs of a shard's run (`run --shard K/N`);
    /// absent from whole and merged runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardSection>,
}

/// One root defect: the findings it explains and every check it breaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefectReport {
    /// Indices into `Report::findings`, in order.
    pub findings: Vec<usize>,
    /// Every (scenario, invariant, reason class) its findings' minimal
    /// cases show, sorted.
    pub breaks: Vec<Broken>,
    /// The stored case of its first finding.
    pub case_file: Option<String>,
}

/// A shard's bookkeeping: enough to put the shards' findings back in the
/// order one run finds them and to count what one run counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSection {
    pub shard: Shard,
    /// One per entry of `Report::scenarios`, in the same order.
    pub scenarios: Vec<ShardScenario>,
}

/// One scenario's run in a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardScenario {
    pub name: String,
    /// The stored regressions' replay: every shard plays it whole.
    pub stored: bool,
    /// Cases the scenario declares: its coverage minimums are for as many.
    pub declared_cases: u32,
    /// Cases of the whole stream, all shards together.
    pub stream_cases: u32,
    /// Why the shard's run proves nothing (a backend failed), before
    /// coverage is considered.
    pub failure: Option<String>,
    pub interrupted: bool,
    /// Every declared coverage minimum with the shard's count.
    pub minimums: Vec<CoverageGap>,
    /// One per finding of the scenario, in report order.
    pub findings: Vec<ShardFinding>,
}

/// What merging needs of one finding beyond its report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardFinding {
    /// Its index in the scenario's case stream (none for stored cases).
    pub case_index: Option<u32>,
    /// Cases shrinking played, and the steps they ran.
    pub shrink_plays: u32,
    pub shrink_case_steps: u64,
    /// The minimal case, stored by `report merge`.
    pub case: Case,
}

/// One scenario's share of the run and the thresholds it was gated with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSummary {
    pub name: String,
    pub cases: u64,
    pub steps: u64,
    pub thresholds: GateThresholds,
    pub metrics: RunMetrics,
    /// Why the scenario's run proves nothing: a backend failed, or the run
    /// fell short of the coverage the scenario declares.
    pub unknown: Option<String>,
    /// How often each action kind fired in each flag / sink-mode / stage
    /// state, and the declared minimums missed (generated runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<crate::plan::coverage::ScenarioCoverage>,
}

/// One violation: the mismatch report of issue #6, item 2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedViolation {
    pub invariant: String,
    /// The severity it counts with under its scenario's thresholds.
    pub severity: Severity,
    pub reason_class: ReasonClass,
    pub document_id: Option<String>,
    pub scenario: String,
    /// The step after which the check saw it.
    pub step_index: usize,
    /// The step since which the offending stores held what they hold at
    /// `step_index` while the runtime had already moved (see `explain`).
    pub first_step: Option<usize>,
    pub detail: String,
    /// The stored minimal case that shows it.
    pub case_file: Option<String>,
    /// The oracle's document (timestamps left out), where one applies.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub expected: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub khala: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub convex: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub checkpoint: Option<Value>,
    /// Every field where expected, Khala and Convex do not all agree.
    pub diff: Vec<FieldDiff>,
    /// Index into `Report::findings`.
    pub finding: Option<usize>,
}

/// One field (a dotted JSON path) as each side holds it; `None` is absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDiff {
    pub field: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub expected: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub khala: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub convex: Option<Value>,
}

/// A minimal failing case, explained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingReport {
    pub scenario: String,
    pub invariant: String,
    pub reason_class: ReasonClass,
    pub profile: Profile,
    pub case_file: Option<String>,
    /// What the minimal case does, in order, and why that breaks the
    /// invariant.
    pub explanation: String,
    /// Per step and per document, what each store held; absent when the
    /// case's trace was not kept.
    pub timeline: Option<Timeline>,
    /// Whether a replay showed the failure again. `false`: the case and
    /// evidence are those of the one play that showed it; the gate blocks.
    #[serde(default = "reproduced_by_default")]
    pub reproduced: bool,
    /// Index into `Report::defects`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defect: Option<usize>,
}

/// Reports written before `reproduced` existed held reproduced findings only.
fn reproduced_by_default() -> bool {
    true
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub cases: u64,
    pub steps: u64,
    pub shrink_steps: u64,
}

/// Wall-clock seconds; redacted in snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportTiming {
    pub total_seconds: f64,
    pub reset_seconds: f64,
    pub shrink_seconds: f64,
}
