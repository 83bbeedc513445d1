//! The parity auditor of spec §8: configuration and its normalisation, the
//! per-checkpoint comparison table, the cycle summary, telemetry as data, and
//! the cycle itself on PostgreSQL (and, hardened, on Convex).

mod compare;
mod config;
mod cycle;
mod summary;
mod telemetry;

pub use compare::{
    ConvexCheck, EntityComparison, ReadModelRow, ReasonClass, Side, compare_convex, compare_khala,
    comparison, summarise,
};
pub use config::{
    AuditorConfig, AuditorConfigError, AuditorConfigErrorKind, AuditorConfigKey,
    DEFAULT_INTERVAL_MS, DEFAULT_SAMPLE_SIZE, MAX_SAMPLE_SIZE, MIN_INTERVAL_MS, RawAuditorConfig,
    RunOptions,
};
pub use cycle::{
    AuditError, AuditorTables, CycleReport, ParityAuditor, SweepPart, sweep_statement,
};
pub use summary::{CycleStatus, CycleSummary};
pub use telemetry::{MetricKind, MetricSample, TelemetryEvent, events};
