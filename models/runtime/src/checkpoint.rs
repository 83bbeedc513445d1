//! Projection checkpoints (spec §3, §5.1): the row, the write/skip decision
//! table of §3.3 as a pure function, and the statements on the table.

use crate::summary::{ProjectionKind, SummaryMetadata};
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::PgConnection;

/// A `runtime.convex_projection_checkpoints` row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Checkpoint {
    pub projection_name: String,
    pub entity_id: String,
    pub document_id: String,
    pub last_runtime_seq: i64,
    pub projection_version: String,
    pub summary_hash: String,
    pub last_projected_at: NaiveDateTime,
    pub inserted_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Write or skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Write,
    Skip,
}

/// The reason atom of a decision (spec §3.3); rows 0 and 5 have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionReason {
    CheckpointAhead,
    Idempotent,
    SummaryHashMismatch,
    ProjectionVersionChanged,
}

impl DecisionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionReason::CheckpointAhead => "checkpoint_ahead",
            DecisionReason::Idempotent => "idempotent",
            DecisionReason::SummaryHashMismatch => "summary_hash_mismatch",
            DecisionReason::ProjectionVersionChanged => "projection_version_changed",
        }
    }
}

/// The outcome of the decision table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub action: Action,
    pub reason: Option<DecisionReason>,
    /// `lag_events` as reported on the write telemetry event.
    pub lag_events: i64,
    /// Whether the outcome emits a drift event.
    pub drift: bool,
}

/// What the decision reads from a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointState {
    pub last_runtime_seq: i64,
    pub projection_version: String,
    pub summary_hash: String,
}

impl From<&Checkpoint> for CheckpointState {
    fn from(checkpoint: &Checkpoint) -> Self {
        CheckpointState {
            last_runtime_seq: checkpoint.last_runtime_seq,
            projection_version: checkpoint.projection_version.clone(),
            summary_hash: checkpoint.summary_hash.clone(),
        }
    }
}

/// The write/skip table of spec §3.3, top to bottom, first match wins.
///
/// `checkpoint_ahead_skips` is switch B7: when false (hardened), a checkpoint
/// ahead of the authority is written over instead of skipping forever; the
/// outcome keeps its reason and drift signal so it stays visible.
pub fn decide(
    checkpoint: Option<&CheckpointState>,
    summary: &SummaryMetadata,
    checkpoint_ahead_skips: bool,
) -> Decision {
    let Some(checkpoint) = checkpoint else {
        return Decision {
            action: Action::Write,
            reason: None,
            lag_events: summary.runtime_seq,
            drift: false,
        };
    };
    let seq_equal = checkpoint.last_runtime_seq == summary.runtime_seq;
    let version_equal = checkpoint.projection_version == summary.projection_version;
    let hash_equal = checkpoint.summary_hash == summary.summary_hash;
    let (action, reason, drift) = if checkpoint.last_runtime_seq > summary.runtime_seq {
        let action = if checkpoint_ahead_skips {
            Action::Skip
        } else {
            Action::Write
        };
        (action, Some(DecisionReason::CheckpointAhead), true)
    } else if seq_equal && version_equal && hash_equal {
        (Action::Skip, Some(DecisionReason::Idempotent), false)
    } else if seq_equal && version_equal {
        (
            Action::Write,
            Some(DecisionReason::SummaryHashMismatch),
            true,
        )
    } else if seq_equal {
        (
            Action::Write,
            Some(DecisionReason::ProjectionVersionChanged),
            true,
        )
    } else {
        (Action::Write, None, false)
    };
    let lag = (summary.runtime_seq - checkpoint.last_runtime_seq).max(0);
    let lag_events = if action == Action::Skip { 0 } else { lag };
    Decision {
        action,
        reason,
        lag_events,
        drift,
    }
}

/// `SELECT ... FOR UPDATE` of spec §3.2 step 1. With no row, nothing is locked.
pub async fn select_for_update(
    conn: &mut PgConnection,
    kind: ProjectionKind,
    entity_id: &str,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM runtime.convex_projection_checkpoints \
         WHERE projection_name = $1 AND entity_id = $2 LIMIT 1 FOR UPDATE",
    )
    .bind(kind.name())
    .bind(entity_id)
    .fetch_optional(conn)
    .await
}

/// How a checkpoint is stored after a successful sink call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    /// The original: insert when no row was read (raises on a concurrent
    /// insert, B6), update otherwise.
    InsertOrUpdate { existed: bool },
    /// Hardened: one upsert that cannot raise on a concurrent first write.
    Upsert,
}

pub async fn store(
    conn: &mut PgConnection,
    kind: ProjectionKind,
    entity_id: &str,
    document_id: &str,
    summary: &SummaryMetadata,
    now: DateTime<Utc>,
    mode: StoreMode,
) -> Result<(), sqlx::Error> {
    let statement = match mode {
        StoreMode::InsertOrUpdate { existed: true } => {
            "UPDATE runtime.convex_projection_checkpoints SET document_id = $3, last_runtime_seq = $4, \
             projection_version = $5, summary_hash = $6, last_projected_at = $7, updated_at = $8 \
             WHERE projection_name = $1 AND entity_id = $2"
        }
        StoreMode::InsertOrUpdate { existed: false } => {
            "INSERT INTO runtime.convex_projection_checkpoints (projection_name, entity_id, document_id, \
             last_runtime_seq, projection_version, summary_hash, last_projected_at, inserted_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
        }
        StoreMode::Upsert => {
            "INSERT INTO runtime.convex_projection_checkpoints (projection_name, entity_id, document_id, \
             last_runtime_seq, projection_version, summary_hash, last_projected_at, inserted_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (projection_name, entity_id) DO UPDATE SET document_id = EXCLUDED.document_id, \
             last_runtime_seq = EXCLUDED.last_runtime_seq, projection_version = EXCLUDED.projection_version, \
             summary_hash = EXCLUDED.summary_hash, last_projected_at = EXCLUDED.last_projected_at, \
             updated_at = EXCLUDED.updated_at"
        }
    };
    sqlx::query(statement)
        .bind(kind.name())
        .bind(entity_id)
        .bind(document_id)
        .bind(summary.runtime_seq)
        .bind(&summary.projection_version)
        .bind(&summary.summary_hash)
        .bind(summary.projected_at.naive_utc())
        .bind(now.naive_utc())
        .execute(conn)
        .await
        .map(drop)
}

/// Deletes a checkpoint (reprojection's "drop", spec §10).
pub async fn delete(
    conn: &mut PgConnection,
    kind: ProjectionKind,
    entity_id: &str,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM runtime.convex_projection_checkpoints WHERE projection_name = $1 AND entity_id = $2")
        .bind(kind.name())
        .bind(entity_id)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(seq: i64, version: &str, hash: &str) -> SummaryMetadata {
        SummaryMetadata {
            runtime_seq: seq,
            projection_version: version.to_owned(),
            projected_at: DateTime::UNIX_EPOCH,
            summary_hash: hash.to_owned(),
        }
    }

    fn state(seq: i64, version: &str, hash: &str) -> CheckpointState {
        CheckpointState {
            last_runtime_seq: seq,
            projection_version: version.into(),
            summary_hash: hash.into(),
        }
    }

    /// One row of the table: checkpoint, summary, expected action, reason, lag, drift.
    fn check(
        checkpoint: Option<CheckpointState>,
        summary: SummaryMetadata,
        action: Action,
        reason: Option<DecisionReason>,
        lag_events: i64,
        drift: bool,
    ) {
        let decision = decide(checkpoint.as_ref(), &summary, true);
        assert_eq!(
            decision,
            Decision {
                action,
                reason,
                lag_events,
                drift
            },
            "{checkpoint:?} vs {summary:?}"
        );
    }

    #[test]
    fn row_0_no_checkpoint_writes_with_lag_equal_to_seq() {
        check(None, metadata(7, "v1", "h"), Action::Write, None, 7, false);
        check(None, metadata(0, "v1", "h"), Action::Write, None, 0, false);
    }

    #[test]
    fn row_1_checkpoint_ahead_skips_with_drift_and_beats_version_changes() {
        use DecisionReason::CheckpointAhead;
        check(
            Some(state(9, "v1", "h")),
            metadata(8, "v1", "h"),
            Action::Skip,
            Some(CheckpointAhead),
            0,
            true,
        );
        check(
            Some(state(9, "v1", "h")),
            metadata(2, "v2", "other"),
            Action::Skip,
            Some(CheckpointAhead),
            0,
            true,
        );
    }

    #[test]
    fn row_2_same_seq_version_and_hash_is_idempotent() {
        check(
            Some(state(4, "v1", "h")),
            metadata(4, "v1", "h"),
            Action::Skip,
            Some(DecisionReason::Idempotent),
            0,
            false,
        );
    }

    #[test]
    fn row_3_same_seq_and_version_other_hash_rewrites_with_drift() {
        let reason = Some(DecisionReason::SummaryHashMismatch);
        check(
            Some(state(4, "v1", "h")),
            metadata(4, "v1", "g"),
            Action::Write,
            reason,
            0,
            true,
        );
    }

    #[test]
    fn row_4_same_seq_other_version_rewrites_with_drift_whatever_the_hash() {
        let reason = Some(DecisionReason::ProjectionVersionChanged);
        check(
            Some(state(4, "v1", "h")),
            metadata(4, "v2", "h"),
            Action::Write,
            reason,
            0,
            true,
        );
        check(
            Some(state(4, "v1", "h")),
            metadata(4, "v2", "g"),
            Action::Write,
            reason,
            0,
            true,
        );
    }

    #[test]
    fn row_5_seq_behind_writes_with_lag_and_no_drift_for_any_version_or_hash() {
        check(
            Some(state(4, "v1", "h")),
            metadata(5, "v1", "h"),
            Action::Write,
            None,
            1,
            false,
        );
        check(
            Some(state(4, "v1", "h")),
            metadata(9, "v2", "g"),
            Action::Write,
            None,
            5,
            false,
        );
        check(
            Some(state(0, "v1", "h")),
            metadata(3, "v1", "g"),
            Action::Write,
            None,
            3,
            false,
        );
    }

    #[test]
    fn hardened_checkpoint_ahead_writes_and_still_signals_drift() {
        let decision = decide(Some(&state(9, "v1", "h")), &metadata(8, "v1", "h"), false);
        assert_eq!(
            decision,
            Decision {
                action: Action::Write,
                reason: Some(DecisionReason::CheckpointAhead),
                lag_events: 0,
                drift: true
            }
        );
    }
}
