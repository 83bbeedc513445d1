//! Summary construction (spec §2): the two projections, their document ids,
//! the rows they read, the exact keys they emit, and the metadata the
//! checkpointed write validates first (spec §3.1).

use crate::clock::iso8601;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};
use std::fmt;
use std::str::FromStr;

/// The default `projection_version` (spec §2.1).
pub const DEFAULT_PROJECTION_VERSION: &str = "convex_summary_v1";

/// The two projections of the runtime.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionKind {
    RunSummary,
    CodexWorkerSummary,
}

impl ProjectionKind {
    pub const ALL: [ProjectionKind; 2] = [
        ProjectionKind::RunSummary,
        ProjectionKind::CodexWorkerSummary,
    ];

    /// `projection_name` in the checkpoint table and the summary's `kind`.
    pub fn name(self) -> &'static str {
        match self {
            ProjectionKind::RunSummary => "run_summary",
            ProjectionKind::CodexWorkerSummary => "codex_worker_summary",
        }
    }

    /// Spec §2.2.
    pub fn document_prefix(self) -> &'static str {
        match self {
            ProjectionKind::RunSummary => "runtime/run_summary:",
            ProjectionKind::CodexWorkerSummary => "runtime/codex_worker_summary:",
        }
    }

    pub fn document_id(self, entity_id: &str) -> String {
        format!("{}{entity_id}", self.document_prefix())
    }

    /// The Khala topic (spec §4.4, §7.1).
    pub fn topic(self) -> &'static str {
        match self {
            ProjectionKind::RunSummary => "runtime.run_summaries",
            ProjectionKind::CodexWorkerSummary => "runtime.codex_worker_summaries",
        }
    }

    /// The Khala read-model table (spec §5.3).
    pub fn read_model_table(self) -> &'static str {
        match self {
            ProjectionKind::RunSummary => "runtime.sync_run_summaries",
            ProjectionKind::CodexWorkerSummary => "runtime.sync_codex_worker_summaries",
        }
    }

    /// `runtime_source.entity`.
    pub fn entity(self) -> &'static str {
        match self {
            ProjectionKind::RunSummary => "run",
            ProjectionKind::CodexWorkerSummary => "codex_worker",
        }
    }
}

impl fmt::Display for ProjectionKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A projection name that is neither `run_summary` nor `codex_worker_summary`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown projection `{given}` (valid: run_summary, codex_worker_summary)")]
pub struct UnknownProjection {
    pub given: String,
}

impl FromStr for ProjectionKind {
    type Err = UnknownProjection;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProjectionKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| UnknownProjection {
                given: text.to_owned(),
            })
    }
}

/// A `runtime.runs` row.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct RunRow {
    pub run_id: String,
    pub thread_id: String,
    pub status: String,
    pub owner_user_id: Option<i64>,
    pub owner_guest_scope: Option<String>,
    pub latest_seq: Option<i64>,
    pub terminal_reason_class: Option<String>,
    pub terminal_reason: Option<String>,
    pub terminal_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
}

/// A `runtime.codex_workers` row.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct WorkerRow {
    pub worker_id: String,
    pub status: String,
    pub owner_user_id: Option<i32>,
    pub owner_guest_scope: Option<String>,
    pub workspace_ref: Option<String>,
    pub codex_home_ref: Option<String>,
    pub adapter: String,
    pub metadata: Option<Value>,
    pub latest_seq: Option<i64>,
    pub started_at: Option<NaiveDateTime>,
    pub stopped_at: Option<NaiveDateTime>,
    pub last_heartbeat_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
}

/// The fields of an event row the projector reads (run and worker events alike).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub event_type: Option<String>,
    pub inserted_at: NaiveDateTime,
}

fn timestamp(value: Option<NaiveDateTime>) -> Value {
    value.map_or(Value::Null, |time| Value::String(iso8601(time.and_utc())))
}

/// `latest_seq`, `event_count`, `latest_event_type`, `latest_event_at` of
/// spec §2.3. `events` must be sorted by `seq` ascending.
fn sequence_fields(events: &[EventRow], row_latest_seq: Option<i64>) -> (i64, Value, Value, Value) {
    let last = events.last();
    let latest_seq = match last {
        Some(event) if event.seq >= 0 => event.seq,
        _ => row_latest_seq.unwrap_or(0).max(0),
    };
    let event_count = json!(events.len());
    let latest_event_type = last
        .and_then(|event| event.event_type.clone())
        .map_or(Value::Null, Value::String);
    let latest_event_at = timestamp(last.map(|event| event.inserted_at));
    (latest_seq, event_count, latest_event_type, latest_event_at)
}

/// The run summary of spec §2.4: exactly 18 keys.
pub fn build_run_summary(
    run: &RunRow,
    events: &[EventRow],
    projection_version: &str,
    now: DateTime<Utc>,
) -> Value {
    let (latest_seq, event_count, latest_event_type, latest_event_at) =
        sequence_fields(events, run.latest_seq);
    json!({
        "document_id": ProjectionKind::RunSummary.document_id(&run.run_id),
        "kind": "run_summary",
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "status": run.status,
        "owner_user_id": run.owner_user_id,
        "owner_guest_scope": run.owner_guest_scope,
        "latest_seq": latest_seq,
        "event_count": event_count,
        "latest_event_type": latest_event_type,
        "latest_event_at": latest_event_at,
        "terminal_reason_class": run.terminal_reason_class,
        "terminal_reason": run.terminal_reason,
        "terminal_at": timestamp(run.terminal_at),
        "updated_at": timestamp(run.updated_at),
        "runtime_source": {"entity": "run", "run_id": run.run_id, "seq": latest_seq},
        "projection_version": projection_version,
        "projected_at": iso8601(now),
    })
}

/// The Codex worker summary of spec §2.5: exactly 21 keys.
pub fn build_worker_summary(
    worker: &WorkerRow,
    events: &[EventRow],
    projection_version: &str,
    now: DateTime<Utc>,
) -> Value {
    let (latest_seq, event_count, latest_event_type, latest_event_at) =
        sequence_fields(events, worker.latest_seq);
    let metadata = match &worker.metadata {
        Some(Value::Object(map)) => Value::Object(map.clone()),
        _ => Value::Object(Map::new()),
    };
    json!({
        "document_id": ProjectionKind::CodexWorkerSummary.document_id(&worker.worker_id),
        "kind": "codex_worker_summary",
        "worker_id": worker.worker_id,
        "status": worker.status,
        "owner_user_id": worker.owner_user_id,
        "owner_guest_scope": worker.owner_guest_scope,
        "workspace_ref": worker.workspace_ref,
        "codex_home_ref": worker.codex_home_ref,
        "adapter": worker.adapter,
        "metadata": metadata,
        "latest_seq": latest_seq,
        "event_count": event_count,
        "latest_event_type": latest_event_type,
        "latest_event_at": latest_event_at,
        "started_at": timestamp(worker.started_at),
        "stopped_at": timestamp(worker.stopped_at),
        "last_heartbeat_at": timestamp(worker.last_heartbeat_at),
        "updated_at": timestamp(worker.updated_at),
        "runtime_source": {"entity": "codex_worker", "worker_id": worker.worker_id, "seq": latest_seq},
        "projection_version": projection_version,
        "projected_at": iso8601(now),
    })
}

/// The summary field a validation error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryField {
    RuntimeSourceSeq,
    ProjectionVersion,
    ProjectedAt,
    Summary,
}

impl SummaryField {
    pub fn path(self) -> &'static str {
        match self {
            SummaryField::RuntimeSourceSeq => "runtime_source.seq",
            SummaryField::ProjectionVersion => "projection_version",
            SummaryField::ProjectedAt => "projected_at",
            SummaryField::Summary => "summary",
        }
    }
}

/// Why a summary was refused before any database work (spec §3.1). The
/// `reason` strings are the original's atoms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid summary field `{}`: {reason}", field.path())]
pub struct InvalidSummary {
    pub field: SummaryField,
    pub reason: &'static str,
}

/// What the checkpointed write needs from a summary (spec §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryMetadata {
    pub runtime_seq: i64,
    pub projection_version: String,
    pub projected_at: DateTime<Utc>,
    pub summary_hash: String,
}

impl SummaryMetadata {
    pub fn from_summary(summary: &Value) -> Result<Self, InvalidSummary> {
        let object = summary.as_object().ok_or(InvalidSummary {
            field: SummaryField::Summary,
            reason: "invalid_summary_payload",
        })?;
        let runtime_seq = object
            .get("runtime_source")
            .and_then(|source| source.get("seq"))
            .and_then(Value::as_i64)
            .filter(|seq| *seq >= 0)
            .ok_or(InvalidSummary {
                field: SummaryField::RuntimeSourceSeq,
                reason: "runtime_seq_missing",
            })?;
        let projection_version = object
            .get("projection_version")
            .and_then(Value::as_str)
            .filter(|version| !version.is_empty())
            .ok_or(InvalidSummary {
                field: SummaryField::ProjectionVersion,
                reason: "projection_version_missing",
            })?
            .to_owned();
        let projected_at = match object.get("projected_at") {
            None | Some(Value::Null) => {
                return Err(InvalidSummary {
                    field: SummaryField::ProjectedAt,
                    reason: "projected_at_missing",
                });
            }
            Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|_| InvalidSummary {
                    field: SummaryField::ProjectedAt,
                    reason: "projected_at_invalid",
                })?,
            Some(_) => {
                return Err(InvalidSummary {
                    field: SummaryField::ProjectedAt,
                    reason: "projected_at_invalid",
                });
            }
        };
        Ok(SummaryMetadata {
            runtime_seq,
            projection_version,
            projected_at,
            summary_hash: crate::hashing::summary_hash(summary),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(hour: u32, minute: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 2, 19)
            .unwrap()
            .and_hms_micro_opt(hour, minute, 0, 0)
            .unwrap()
    }

    fn now() -> DateTime<Utc> {
        at(20, 0).and_utc()
    }

    fn run() -> RunRow {
        RunRow {
            run_id: "run_1".into(),
            thread_id: "thread_1".into(),
            status: "running".into(),
            owner_user_id: Some(42),
            owner_guest_scope: None,
            latest_seq: Some(3),
            terminal_reason_class: None,
            terminal_reason: None,
            terminal_at: None,
            updated_at: Some(at(19, 0)),
        }
    }

    fn events(types: &[&str]) -> Vec<EventRow> {
        types
            .iter()
            .enumerate()
            .map(|(index, kind)| EventRow {
                seq: index as i64 + 1,
                event_type: Some((*kind).to_owned()),
                inserted_at: at(19, index as u32 + 1),
            })
            .collect()
    }

    fn worker() -> WorkerRow {
        WorkerRow {
            worker_id: "worker:1".into(),
            status: "stopped".into(),
            owner_user_id: None,
            owner_guest_scope: Some("guest_9".into()),
            workspace_ref: Some("ws".into()),
            codex_home_ref: None,
            adapter: "in_memory".into(),
            metadata: None,
            latest_seq: Some(4),
            started_at: Some(at(18, 0)),
            stopped_at: Some(at(18, 30)),
            last_heartbeat_at: Some(at(18, 20)),
            updated_at: Some(at(18, 31)),
        }
    }

    #[test]
    fn run_summary_has_exactly_the_18_keys_with_their_derivations() {
        let summary = build_run_summary(
            &run(),
            &events(&["run.started", "run.delta", "run.finished"]),
            "convex_summary_v1",
            now(),
        );
        let expected = json!({
            "document_id": "runtime/run_summary:run_1",
            "kind": "run_summary",
            "run_id": "run_1",
            "thread_id": "thread_1",
            "status": "running",
            "owner_user_id": 42,
            "owner_guest_scope": null,
            "latest_seq": 3,
            "event_count": 3,
            "latest_event_type": "run.finished",
            "latest_event_at": "2026-02-19T19:03:00.000000Z",
            "terminal_reason_class": null,
            "terminal_reason": null,
            "terminal_at": null,
            "updated_at": "2026-02-19T19:00:00.000000Z",
            "runtime_source": {"entity": "run", "run_id": "run_1", "seq": 3},
            "projection_version": "convex_summary_v1",
            "projected_at": "2026-02-19T20:00:00.000000Z",
        });
        assert_eq!(summary, expected);
        assert_eq!(summary.as_object().unwrap().len(), 18);
    }

    #[test]
    fn worker_summary_has_exactly_the_21_keys_with_their_derivations() {
        let summary = build_worker_summary(
            &worker(),
            &events(&[
                "worker.started",
                "worker.request.received",
                "worker.response",
                "worker.stopped",
            ]),
            "v2",
            now(),
        );
        let expected = json!({
            "document_id": "runtime/codex_worker_summary:worker:1",
            "kind": "codex_worker_summary",
            "worker_id": "worker:1",
            "status": "stopped",
            "owner_user_id": null,
            "owner_guest_scope": "guest_9",
            "workspace_ref": "ws",
            "codex_home_ref": null,
            "adapter": "in_memory",
            "metadata": {},
            "latest_seq": 4,
            "event_count": 4,
            "latest_event_type": "worker.stopped",
            "latest_event_at": "2026-02-19T19:04:00.000000Z",
            "started_at": "2026-02-19T18:00:00.000000Z",
            "stopped_at": "2026-02-19T18:30:00.000000Z",
            "last_heartbeat_at": "2026-02-19T18:20:00.000000Z",
            "updated_at": "2026-02-19T18:31:00.000000Z",
            "runtime_source": {"entity": "codex_worker", "worker_id": "worker:1", "seq": 4},
            "projection_version": "v2",
            "projected_at": "2026-02-19T20:00:00.000000Z",
        });
        assert_eq!(summary, expected);
        assert_eq!(summary.as_object().unwrap().len(), 21);
        assert!(summary.get("heartbeat_state").is_none());
    }

    #[test]
    fn worker_metadata_object_is_kept_and_non_objects_become_empty() {
        let mut with_metadata = worker();
        with_metadata.metadata = Some(json!({"region": "us", "n": [1, 2]}));
        assert_eq!(
            build_worker_summary(&with_metadata, &[], "v", now())["metadata"],
            json!({"region": "us", "n": [1, 2]})
        );
        with_metadata.metadata = Some(json!([1]));
        assert_eq!(
            build_worker_summary(&with_metadata, &[], "v", now())["metadata"],
            json!({})
        );
    }

    #[test]
    fn latest_seq_is_the_last_event_seq_not_the_count() {
        // Events 1 and 5 (rows removed in between): latest_seq 5, event_count 2.
        let mut rows = events(&["run.started", "run.delta"]);
        rows[1].seq = 5;
        let summary = build_run_summary(&run(), &rows, "v", now());
        assert_eq!(summary["latest_seq"], 5);
        assert_eq!(summary["event_count"], 2);
        assert_eq!(summary["runtime_source"]["seq"], 5);
    }

    #[test]
    fn without_events_latest_seq_falls_back_to_the_row_then_zero() {
        let summary = build_run_summary(&run(), &[], "v", now());
        assert_eq!(summary["latest_seq"], 3);
        assert_eq!(summary["event_count"], 0);
        assert_eq!(summary["latest_event_type"], Value::Null);
        assert_eq!(summary["latest_event_at"], Value::Null);
        let mut null_seq = run();
        null_seq.latest_seq = None;
        assert_eq!(
            build_run_summary(&null_seq, &[], "v", now())["latest_seq"],
            0
        );
        null_seq.latest_seq = Some(-4);
        assert_eq!(
            build_run_summary(&null_seq, &[], "v", now())["latest_seq"],
            0
        );
    }

    #[test]
    fn a_negative_last_seq_falls_back_to_the_row() {
        let mut rows = events(&["run.started"]);
        rows[0].seq = -1;
        assert_eq!(
            build_run_summary(&run(), &rows, "v", now())["latest_seq"],
            3
        );
    }

    #[test]
    fn summary_hash_is_the_same_at_a_later_now() {
        let rows = events(&["run.started"]);
        let first = build_run_summary(&run(), &rows, "v", now());
        let later = build_run_summary(&run(), &rows, "v", at(23, 0).and_utc());
        assert_ne!(first, later);
        assert_eq!(
            SummaryMetadata::from_summary(&first).unwrap().summary_hash,
            SummaryMetadata::from_summary(&later).unwrap().summary_hash
        );
    }

    fn check_invalid(
        mutate: impl FnOnce(&mut Map<String, Value>),
        field: SummaryField,
        reason: &str,
    ) {
        let mut summary = build_run_summary(&run(), &[], "v", now());
        mutate(summary.as_object_mut().unwrap());
        let error = SummaryMetadata::from_summary(&summary).unwrap_err();
        assert_eq!((error.field, error.reason), (field, reason));
        assert!(error.to_string().contains(field.path()), "{error}");
    }

    #[test]
    fn metadata_rejects_each_bad_field_by_name() {
        check_invalid(
            |map| drop(map.remove("runtime_source")),
            SummaryField::RuntimeSourceSeq,
            "runtime_seq_missing",
        );
        check_invalid(
            |map| drop(map.insert("runtime_source".into(), json!({"seq": -1}))),
            SummaryField::RuntimeSourceSeq,
            "runtime_seq_missing",
        );
        check_invalid(
            |map| drop(map.insert("runtime_source".into(), json!({"seq": "3"}))),
            SummaryField::RuntimeSourceSeq,
            "runtime_seq_missing",
        );
        check_invalid(
            |map| drop(map.insert("projection_version".into(), json!(""))),
            SummaryField::ProjectionVersion,
            "projection_version_missing",
        );
        check_invalid(
            |map| drop(map.remove("projected_at")),
            SummaryField::ProjectedAt,
            "projected_at_missing",
        );
        check_invalid(
            |map| drop(map.insert("projected_at".into(), json!("yesterday"))),
            SummaryField::ProjectedAt,
            "projected_at_invalid",
        );
        let error = SummaryMetadata::from_summary(&json!([1])).unwrap_err();
        assert_eq!(error.field, SummaryField::Summary);
    }

    #[test]
    fn projection_names_parse_and_unknown_ones_are_typed_errors() {
        for kind in ProjectionKind::ALL {
            assert_eq!(kind.name().parse::<ProjectionKind>(), Ok(kind));
        }
        let error = "notification_summary"
            .parse::<ProjectionKind>()
            .unwrap_err();
        assert!(error.to_string().contains("notification_summary"));
        assert!(
            error
                .to_string()
                .contains("run_summary, codex_worker_summary")
        );
    }
}
