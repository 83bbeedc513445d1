//! A case: one generated (or stored) history with its schedule and faults,
//! as plain serde data. Entities are small indices, created on first use,
//! so that any subsequence of a case is a valid case (shrinking drops steps
//! freely).

use khala_runtime::{Profile, SinkMode};
use serde::{Deserialize, Serialize};

/// The case file format's name; bumped on incompatible changes.
pub const CASE_SCHEMA: &str = "khala-parity.case.v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub schema: String,
    pub profile: Profile,
    pub start: Start,
    /// How entity indices become ids.
    pub ids: IdStyle,
    pub steps: Vec<Step>,
    /// Where the case came from; never read by the driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The state before the first step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub sink_mode: SinkMode,
}

/// Provenance of a stored case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub scenario: String,
    pub seed: u64,
    pub code_version: String,
    /// The invariant the case violates, and how.
    pub invariant: String,
    pub reason_class: String,
}

/// The shape of generated ids: plain, long (near the varchar limit), or
/// unicode (runs only; worker ids are restricted to `[a-zA-Z0-9._:-]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdStyle {
    Plain,
    Long,
    Unicode,
}

impl IdStyle {
    pub fn run_id(self, index: u8) -> String {
        match self {
            IdStyle::Plain => format!("run_{index}"),
            IdStyle::Long => format!("run_{index}_{}", "x".repeat(200)),
            IdStyle::Unicode => format!("run_{index}_ünïcødé_🚀"),
        }
    }

    pub fn worker_id(self, index: u8) -> String {
        match self {
            IdStyle::Plain | IdStyle::Unicode => format!("worker_{index}"),
            IdStyle::Long => format!("worker:{index}.{}", "w".repeat(140)),
        }
    }
}

/// Which entity a step is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "index", rename_all = "snake_case")]
pub enum EntityRef {
    Run(u8),
    Worker(u8),
}

/// Run event types of the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunEventType {
    #[serde(rename = "run.started")]
    Started,
    #[serde(rename = "run.delta")]
    Delta,
    #[serde(rename = "run.cancel_requested")]
    CancelRequested,
}

impl RunEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEventType::Started => "run.started",
            RunEventType::Delta => "run.delta",
            RunEventType::CancelRequested => "run.cancel_requested",
        }
    }
}

/// Worker event types of the runtime (stop has its own step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerEventType {
    #[serde(rename = "worker.heartbeat")]
    Heartbeat,
    #[serde(rename = "worker.request.received")]
    RequestReceived,
    #[serde(rename = "worker.response")]
    Response,
    #[serde(rename = "worker.error")]
    Error,
}

impl WorkerEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerEventType::Heartbeat => "worker.heartbeat",
            WorkerEventType::RequestReceived => "worker.request.received",
            WorkerEventType::Response => "worker.response",
            WorkerEventType::Error => "worker.error",
        }
    }
}

/// A run's terminal status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalStatus {
    Succeeded,
    Failed,
    Canceled,
}

impl TerminalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalStatus::Succeeded => "succeeded",
            TerminalStatus::Failed => "failed",
            TerminalStatus::Canceled => "canceled",
        }
    }
}

/// How a worker is stopped: `Workers.stop_worker` (status first) or
/// `ingest_event` of `worker.stopped` (event first in the original, B4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopPath {
    Stop,
    Ingest,
}

/// A network fault of the Convex backend, through the harness's proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvexFault {
    /// Connections are reset: `http_request_failed` at once.
    Reset,
    /// Connections hang until the sink's timeout.
    Timeout,
}

/// One step of a case. Steps are verbs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Appends a run event (creating the run first if needed).
    AppendRunEvent {
        run: u8,
        event_type: RunEventType,
    },
    /// The executor's end of a run: `run.finished` plus terminal fields.
    FinishRun {
        run: u8,
        status: TerminalStatus,
    },
    /// Appends a worker event (creating the worker first if needed).
    AppendWorkerEvent {
        worker: u8,
        event_type: WorkerEventType,
    },
    StopWorker {
        worker: u8,
        path: StopPath,
    },
    /// The same trigger delivered again: the entity is projected once more.
    DuplicateDelivery {
        entity: EntityRef,
    },
    SwitchSinkMode {
        mode: SinkMode,
    },
    /// `reproject --run-id/--worker-id`, or `--all` without an entity.
    Reproject {
        entity: Option<EntityRef>,
    },
    /// A deploy with the next `projection_version`.
    BumpProjectionVersion,
    /// Convex becomes unreachable until `Heal`.
    BreakConvex {
        fault: ConvexFault,
    },
    /// Khala's database refuses writes until `Heal`.
    BreakKhala,
    /// Ends every fault.
    Heal,
    /// Heals, runs the system's own catch-up, and checks convergence.
    Quiesce,
}

impl Step {
    /// The action kind, as scenario weights name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::AppendRunEvent { .. } | Step::FinishRun { .. } => "run_event",
            Step::AppendWorkerEvent { .. } | Step::StopWorker { .. } => "worker_event",
            Step::DuplicateDelivery { .. } => "duplicate_delivery",
            Step::SwitchSinkMode { .. } => "sink_mode",
            Step::Reproject { .. } => "reproject",
            Step::BumpProjectionVersion => "projection_version_bump",
            Step::BreakConvex { .. } => "fault_convex",
            Step::BreakKhala => "fault_khala",
            Step::Heal | Step::Quiesce => "quiesce",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_serialise_as_tagged_values() {
        let step = Step::AppendRunEvent {
            run: 2,
            event_type: RunEventType::Delta,
        };
        let text = serde_json::to_string(&step).unwrap();
        assert_eq!(
            text,
            r#"{"action":"append_run_event","run":2,"event_type":"run.delta"}"#
        );
        assert_eq!(serde_json::from_str::<Step>(&text).unwrap(), step);
        let reproject = Step::Reproject {
            entity: Some(EntityRef::Worker(1)),
        };
        let text = serde_json::to_string(&reproject).unwrap();
        assert_eq!(
            text,
            r#"{"action":"reproject","entity":{"kind":"worker","index":1}}"#
        );
        let extra = r#"{"action":"append_run_event","run":1,"event_type":"run.delta","extra":1}"#;
        assert!(serde_json::from_str::<Step>(extra).is_err());
    }

    #[test]
    fn ids_stay_within_the_limits_of_their_tables() {
        for style in [IdStyle::Plain, IdStyle::Long, IdStyle::Unicode] {
            let run = format!("runtime/run_summary:{}", style.run_id(255));
            assert!(run.chars().count() <= 255, "{run}");
            let worker = style.worker_id(255);
            assert!((3..=160).contains(&worker.len()));
            assert!(
                worker
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)),
                "{worker}"
            );
        }
    }
}
