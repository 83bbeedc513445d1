//! The run report and everything rendered from it: the JSON report
//! (`khala-parity.report.v1`) with each violation's mismatch evidence and
//! each finding explained, the gate decision, and the human text, Markdown
//! drill report, SVG timelines and Prometheus metrics file drawn from it.

pub mod artifacts;
pub mod audit;
mod build;
pub mod drill;
pub mod explain;
pub mod human;
pub mod load;
mod model;
pub mod prometheus;
pub mod timeline;

pub use crate::check::gate::{Decision, Gate};
pub use crate::model::case::CODE_VERSION;
pub use build::{
    build, build_gated, for_case, gate_of, group_defects, regate, regression_path, reported,
};
pub use model::{
    DefectReport, FieldDiff, FindingReport, REPORT_SCHEMA, Report, ReportMode, ReportTiming,
    ReportedViolation, ScenarioSummary, ShardFinding, ShardScenario, ShardSection, Stats,
};
