//! The telemetry a cycle emits (spec §8), as data: events with their
//! measurements and metadata, and the metric samples the original's
//! `Telemetry.Metrics` definitions derive from them, so a report can render a
//! Prometheus text file. Nothing here prints or sends anything.

use super::compare::EntityComparison;
use super::summary::CycleSummary;
use std::collections::BTreeMap;

pub const COMPONENT: &str = "sync_parity_auditor";
pub const FAILURE_CLASS: &str = "sync_dual_publish";

/// One emitted telemetry event.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TelemetryEvent {
    /// `[:openagents_runtime, :sync, :parity, :cycle]`, once per enabled cycle.
    Cycle { summary: CycleSummary },
    /// `[:openagents_runtime, :sync, :parity, :entity]`, per comparison.
    Entity {
        status: &'static str,
        reason_class: &'static str,
        event_type: String,
        lag_drift: i64,
    },
    /// `[:openagents_runtime, :parity, :failure]`, per mismatch.
    Failure {
        reason_class: &'static str,
        projection: String,
        event_type: String,
        entity_id: String,
        document_id: String,
    },
}

/// How a metric aggregates ([INFERRED]: the spec names the metrics, not their
/// types; counts are counters, cycle figures the last value, and the entity
/// drift a distribution because the dashboard plots its p95).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Counter,
    LastValue,
    Distribution,
}

/// One observation of a named metric with its tags.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MetricSample {
    pub name: &'static str,
    pub kind: MetricKind,
    pub value: f64,
    pub tags: BTreeMap<&'static str, String>,
}

impl TelemetryEvent {
    /// The event name, segment by segment.
    pub fn event_name(&self) -> &'static [&'static str] {
        match self {
            TelemetryEvent::Cycle { .. } => &["openagents_runtime", "sync", "parity", "cycle"],
            TelemetryEvent::Entity { .. } => &["openagents_runtime", "sync", "parity", "entity"],
            TelemetryEvent::Failure { .. } => &["openagents_runtime", "parity", "failure"],
        }
    }

    /// The metric samples of spec §8 this event feeds. Each metric's name is
    /// its event name plus the measurement, so none listens to an event that
    /// is never emitted (the §13 caveat).
    pub fn metrics(&self) -> Vec<MetricSample> {
        match self {
            TelemetryEvent::Cycle { summary } => {
                let tags = BTreeMap::from([
                    ("component", COMPONENT.to_owned()),
                    ("status", summary.status.as_str().to_owned()),
                ]);
                let sample = |name, kind, value| MetricSample {
                    name,
                    kind,
                    value,
                    tags: tags.clone(),
                };
                vec![
                    sample(
                        "openagents_runtime.sync.parity.cycle.count",
                        MetricKind::Counter,
                        1.0,
                    ),
                    sample(
                        "openagents_runtime.sync.parity.cycle.sampled",
                        MetricKind::LastValue,
                        summary.sampled as f64,
                    ),
                    sample(
                        "openagents_runtime.sync.parity.cycle.mismatches",
                        MetricKind::LastValue,
                        summary.mismatches as f64,
                    ),
                    sample(
                        "openagents_runtime.sync.parity.cycle.mismatch_rate",
                        MetricKind::LastValue,
                        summary.mismatch_rate,
                    ),
                    sample(
                        "openagents_runtime.sync.parity.cycle.max_abs_lag_drift",
                        MetricKind::LastValue,
                        summary.max_abs_lag_drift as f64,
                    ),
                    sample(
                        "openagents_runtime.sync.parity.cycle.avg_abs_lag_drift",
                        MetricKind::LastValue,
                        summary.avg_abs_lag_drift,
                    ),
                ]
            }
            TelemetryEvent::Entity {
                status,
                reason_class,
                event_type,
                lag_drift,
            } => {
                let tags = BTreeMap::from([
                    ("status", (*status).to_owned()),
                    ("reason_class", (*reason_class).to_owned()),
                    ("event_type", event_type.clone()),
                ]);
                vec![
                    MetricSample {
                        name: "openagents_runtime.sync.parity.entity.count",
                        kind: MetricKind::Counter,
                        value: 1.0,
                        tags: tags.clone(),
                    },
                    MetricSample {
                        name: "openagents_runtime.sync.parity.entity.abs_lag_drift",
                        kind: MetricKind::Distribution,
                        value: lag_drift.abs() as f64,
                        tags,
                    },
                ]
            }
            TelemetryEvent::Failure { reason_class, .. } => vec![MetricSample {
                name: "openagents_runtime.parity.failure.count",
                kind: MetricKind::Counter,
                value: 1.0,
                // Entity and document ids stay on the event, not on the
                // metric, where they would make one series per entity.
                tags: BTreeMap::from([
                    ("class", FAILURE_CLASS.to_owned()),
                    ("reason_class", (*reason_class).to_owned()),
                    ("component", COMPONENT.to_owned()),
                    ("outcome", "mismatch".to_owned()),
                ]),
            }],
        }
    }
}

/// The events of one enabled cycle, in emission order: per comparison its
/// entity event then (on a mismatch) its failure, then the cycle event.
pub fn events(
    summary: &CycleSummary,
    comparisons: &[EntityComparison],
    emit_entity_events: bool,
    emit_parity_failures: bool,
) -> Vec<TelemetryEvent> {
    let mut events = Vec::new();
    for comparison in comparisons {
        if emit_entity_events {
            events.push(TelemetryEvent::Entity {
                status: comparison.status(),
                reason_class: comparison.reason_class.as_str(),
                event_type: comparison.event_type.clone(),
                lag_drift: comparison.lag_drift,
            });
        }
        if emit_parity_failures && comparison.is_mismatch() {
            events.push(TelemetryEvent::Failure {
                reason_class: comparison.reason_class.as_str(),
                projection: comparison.projection_name.clone(),
                event_type: comparison.event_type.clone(),
                entity_id: comparison.entity_id.clone(),
                document_id: comparison.document_id.clone(),
            });
        }
    }
    events.push(TelemetryEvent::Cycle {
        summary: summary.clone(),
    });
    events
}
