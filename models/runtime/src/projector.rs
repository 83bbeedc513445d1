//! The projector (spec §2.1, §3.2): recomputes an entity's summary and hands
//! it to the sink inside one transaction guarded by the entity's checkpoint.

use crate::authority::{self, AuthorityError};
use crate::checkpoint::{self, Action, DecisionReason, StoreMode};
use crate::clock::Clock;
use crate::notifier::{CommitHold, Notifier};
use crate::planted::PlantedDefects;
use crate::profile::Switches;
use crate::sink::convex_value::{ConvexValueRefusal, refusal_of};
use crate::sink::{ProjectionSink, SinkContext, SinkError};
use crate::summary::{InvalidSummary, ProjectionKind, SummaryMetadata};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;

/// `write` of a projection result (spec §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteResult {
    Applied,
    Skipped,
}

/// A successful projection call (spec §3.4), with the decision's telemetry.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProjectionOutcome {
    pub document_id: String,
    pub summary: Value,
    pub write: WriteResult,
    pub reason: Option<DecisionReason>,
    pub lag_events: i64,
    pub drift: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("project {kind} `{entity_id}`: not found")]
    NotFound {
        kind: ProjectionKind,
        entity_id: String,
    },
    #[error("project {kind} `{entity_id}`: {source}")]
    InvalidSummary {
        kind: ProjectionKind,
        entity_id: String,
        source: InvalidSummary,
    },
    /// The hardened guard: Convex cannot hold the summary as built, so no
    /// store is written (issue 14).
    #[error("project {kind} `{entity_id}`: convex cannot hold the summary: {source}")]
    ConvexValueRefused {
        kind: ProjectionKind,
        entity_id: String,
        source: ConvexValueRefusal,
    },
    #[error("project {kind} `{entity_id}`: sink write failed: {source}")]
    SinkWriteFailed {
        kind: ProjectionKind,
        entity_id: String,
        source: SinkError,
    },
    /// The original used the raising insert/update here; a concurrent first
    /// projection makes the insert hit the unique index (B6).
    #[error("project {kind} `{entity_id}`: store checkpoint: {source}")]
    CheckpointWriteFailed {
        kind: ProjectionKind,
        entity_id: String,
        source: sqlx::Error,
    },
    #[error("project {kind} `{entity_id}`: {operation}: {source}")]
    Database {
        kind: ProjectionKind,
        entity_id: String,
        operation: &'static str,
        source: sqlx::Error,
    },
    #[error("project {kind} `{entity_id}`: {source}")]
    Authority {
        kind: ProjectionKind,
        entity_id: String,
        source: AuthorityError,
    },
}

impl ProjectionError {
    /// The telemetry reason class (spec §3.5): the sink's own class for sink
    /// failures.
    pub fn reason_class(&self) -> String {
        match self {
            ProjectionError::NotFound {
                kind: ProjectionKind::RunSummary,
                ..
            } => "run_not_found".into(),
            ProjectionError::NotFound { .. } => "worker_not_found".into(),
            ProjectionError::InvalidSummary { .. } => "invalid_summary".into(),
            ProjectionError::ConvexValueRefused { .. } => "convex_value_refused".into(),
            ProjectionError::SinkWriteFailed { source, .. } => source.reason_class(),
            ProjectionError::CheckpointWriteFailed { .. } => "checkpoint_write_failed".into(),
            ProjectionError::Database { .. } | ProjectionError::Authority { .. } => "error".into(),
        }
    }
}

/// A projection between its two phases. In the original (B5) the summary is
/// built first, outside any lock, and written later; hardened projections
/// build it under the lock, in `commit`.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedProjection {
    kind: ProjectionKind,
    entity_id: String,
    summary: Option<Value>,
    /// Reprojection inside the transaction (the B17 fix): drop the checkpoint
    /// under the lock, so a failure rolls the drop back.
    drop_checkpoint: bool,
}

impl PreparedProjection {
    /// A given summary for a checkpointed write, validated before any
    /// database work (spec §3.1).
    pub fn from_summary(
        kind: ProjectionKind,
        entity_id: &str,
        summary: Value,
    ) -> Result<Self, ProjectionError> {
        SummaryMetadata::from_summary(&summary).map_err(|source| {
            ProjectionError::InvalidSummary {
                kind,
                entity_id: entity_id.to_owned(),
                source,
            }
        })?;
        Ok(PreparedProjection {
            kind,
            entity_id: entity_id.to_owned(),
            summary: Some(summary),
            drop_checkpoint: false,
        })
    }

    pub fn summary(&self) -> Option<&Value> {
        self.summary.as_ref()
    }
}

/// Settings shared by every projection of a runtime.
#[derive(Clone, Debug)]
pub struct ProjectorSettings {
    pub switches: Switches,
    pub projection_version: String,
    pub clock: Arc<dyn Clock>,
    pub notifier: Notifier,
    /// Awaited before every commit of a projection that wrote (see
    /// `CommitHold`); none in production.
    pub commit_hold: Option<Arc<dyn CommitHold>>,
    /// Defects a test plants; none otherwise.
    pub planted: PlantedDefects,
}

/// The projector with the sink it writes to.
#[derive(Clone, Debug)]
pub struct Projector {
    pool: PgPool,
    settings: ProjectorSettings,
    sink: Arc<dyn ProjectionSink>,
}

impl Projector {
    pub fn new(pool: PgPool, settings: ProjectorSettings, sink: Arc<dyn ProjectionSink>) -> Self {
        Projector {
            pool,
            settings,
            sink,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn sink(&self) -> &Arc<dyn ProjectionSink> {
        &self.sink
    }

    pub fn settings(&self) -> &ProjectorSettings {
        &self.settings
    }

    /// `project_run` / `project_codex_worker`: prepare then commit.
    pub async fn project(
        &self,
        kind: ProjectionKind,
        entity_id: &str,
    ) -> Result<ProjectionOutcome, ProjectionError> {
        let prepared = self.prepare(kind, entity_id).await?;
        self.commit(prepared).await
    }

    /// First phase. Legacy (B5): loads the entity and builds the summary now,
    /// outside the transaction. Hardened: only checks that the entity exists.
    pub async fn prepare(
        &self,
        kind: ProjectionKind,
        entity_id: &str,
    ) -> Result<PreparedProjection, ProjectionError> {
        let mut conn =
            self.pool
                .acquire()
                .await
                .map_err(database(kind, entity_id, "acquire connection"))?;
        let snapshot = authority::load(&mut conn, kind, entity_id)
            .await
            .map_err(|source| ProjectionError::Authority {
                kind,
                entity_id: entity_id.to_owned(),
                source,
            })?
            .ok_or_else(|| ProjectionError::NotFound {
                kind,
                entity_id: entity_id.to_owned(),
            })?;
        let summary = self
            .settings
            .switches
            .b5_summary_built_before_lock
            .then(|| {
                self.settings.planted.summary(
                    snapshot.summary(&self.settings.projection_version, self.settings.clock.now()),
                )
            });
        Ok(PreparedProjection {
            kind,
            entity_id: entity_id.to_owned(),
            summary,
            drop_checkpoint: false,
        })
    }

    /// A reprojection that drops the checkpoint inside the projector
    /// transaction (the hardened side of B17).
    pub async fn prepare_rebuild(
        &self,
        kind: ProjectionKind,
        entity_id: &str,
    ) -> Result<PreparedProjection, ProjectionError> {
        let mut prepared = self.prepare(kind, entity_id).await?;
        prepared.drop_checkpoint = true;
        Ok(prepared)
    }

    /// A checkpointed write of a given summary (the original's
    /// `write_projection`).
    pub async fn write_summary(
        &self,
        kind: ProjectionKind,
        entity_id: &str,
        summary: Value,
    ) -> Result<ProjectionOutcome, ProjectionError> {
        self.commit(PreparedProjection::from_summary(kind, entity_id, summary)?)
            .await
    }

    /// Second phase (spec §3.2): one transaction; lock, decide, call the sink
    /// on write, store the checkpoint only when the sink succeeded.
    pub async fn commit(
        &self,
        prepared: PreparedProjection,
    ) -> Result<ProjectionOutcome, ProjectionError> {
        let PreparedProjection {
            kind,
            entity_id,
            summary,
            drop_checkpoint,
        } = prepared;
        let entity_id = entity_id.as_str();
        let switches = &self.settings.switches;
        let failed = |operation| database(kind, entity_id, operation);
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(failed("acquire connection"))?;
        let mut tx = conn.begin().await.map_err(failed("begin"))?;

        // The original locked only an existing checkpoint row. Either fix (B5,
        // B6) needs a lock that also exists before the first checkpoint.
        if !switches.b5_summary_built_before_lock || !switches.b6_first_projection_unlocked {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("{}:{entity_id}", kind.name()))
                .execute(&mut *tx)
                .await
                .map_err(failed("lock entity"))?;
        }
        let summary = match summary {
            Some(summary) => summary,
            None => self.build_summary(&mut tx, kind, entity_id).await?,
        };
        let metadata = SummaryMetadata::from_summary(&summary).map_err(|source| {
            ProjectionError::InvalidSummary {
                kind,
                entity_id: entity_id.to_owned(),
                source,
            }
        })?;
        // Hardened: a summary Convex cannot hold exactly is refused before
        // any store (or the checkpoint) is touched; the transaction rolls
        // back unused. Whatever the sink mode: a rollback to Convex must
        // always be able to take every document Khala holds.
        if !switches.convex_values_unguarded
            && let Some(source) = refusal_of(&kind.document_id(entity_id), &summary)
        {
            return Err(ProjectionError::ConvexValueRefused {
                kind,
                entity_id: entity_id.to_owned(),
                source,
            });
        }
        if drop_checkpoint {
            checkpoint::delete(&mut tx, kind, entity_id)
                .await
                .map_err(failed("drop checkpoint"))?;
        }
        let current = checkpoint::select_for_update(&mut tx, kind, entity_id)
            .await
            .map_err(failed("lock checkpoint"))?;
        let decision = checkpoint::decide(
            current.as_ref().map(Into::into).as_ref(),
            &metadata,
            switches.b7_checkpoint_ahead_skips,
        );
        let document_id = kind.document_id(entity_id);
        let outcome = |write| ProjectionOutcome {
            document_id: document_id.clone(),
            summary: summary.clone(),
            write,
            reason: decision.reason,
            lag_events: decision.lag_events,
            drift: decision.drift,
        };
        if decision.action == Action::Skip {
            tx.commit().await.map_err(failed("commit"))?;
            return Ok(outcome(WriteResult::Skipped));
        }

        let mut wakes = Vec::new();
        let context = SinkContext {
            conn: &mut tx,
            after_commit: &mut wakes,
        };
        if let Err(source) = self
            .sink
            .upsert(context, kind, &document_id, &summary)
            .await
        {
            tx.rollback().await.map_err(failed("roll back"))?;
            if !switches.b1_fanout_partial_success {
                self.record_repair(kind, entity_id, &source.reason_class())
                    .await?;
            }
            tracing::warn!(%kind, entity_id, error = %source, "convex projection write failed");
            return Err(ProjectionError::SinkWriteFailed {
                kind,
                entity_id: entity_id.to_owned(),
                source,
            });
        }
        let store_mode = if switches.b6_first_projection_unlocked {
            StoreMode::InsertOrUpdate {
                existed: current.is_some(),
            }
        } else {
            StoreMode::Upsert
        };
        let now = self.settings.clock.now();
        checkpoint::store(
            &mut tx,
            kind,
            entity_id,
            &document_id,
            &metadata,
            now,
            store_mode,
        )
        .await
        .map_err(|source| ProjectionError::CheckpointWriteFailed {
            kind,
            entity_id: entity_id.to_owned(),
            source,
        })?;
        if !switches.b1_fanout_partial_success {
            sqlx::query("DELETE FROM runtime.projection_repairs WHERE projection_name = $1 AND entity_id = $2")
                .bind(kind.name())
                .bind(entity_id)
                .execute(&mut *tx)
                .await
                .map_err(failed("clear repair"))?;
        }
        if let Some(hold) = &self.settings.commit_hold {
            hold.before_commit().await;
        }
        tx.commit().await.map_err(failed("commit"))?;
        for wake in wakes {
            self.settings.notifier.wake(wake);
        }
        Ok(outcome(WriteResult::Applied))
    }

    async fn build_summary(
        &self,
        conn: &mut PgConnection,
        kind: ProjectionKind,
        entity_id: &str,
    ) -> Result<Value, ProjectionError> {
        let snapshot = authority::load(conn, kind, entity_id)
            .await
            .map_err(|source| ProjectionError::Authority {
                kind,
                entity_id: entity_id.to_owned(),
                source,
            })?
            .ok_or_else(|| ProjectionError::NotFound {
                kind,
                entity_id: entity_id.to_owned(),
            })?;
        Ok(self.settings.planted.summary(
            snapshot.summary(&self.settings.projection_version, self.settings.clock.now()),
        ))
    }

    /// Hardened B1: remember a failed projection outside the rolled-back
    /// transaction, so `repair_pending` brings every store level again.
    async fn record_repair(
        &self,
        kind: ProjectionKind,
        entity_id: &str,
        reason_class: &str,
    ) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO runtime.projection_repairs (projection_name, entity_id, reason_class, recorded_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (projection_name, entity_id) \
             DO UPDATE SET reason_class = EXCLUDED.reason_class, recorded_at = EXCLUDED.recorded_at",
        )
        .bind(kind.name())
        .bind(entity_id)
        .bind(reason_class)
        .bind(self.settings.clock.now().naive_utc())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(database(kind, entity_id, "record repair"))
    }

    /// The projections recorded by `record_repair`, oldest first.
    pub async fn pending_repairs(&self) -> Result<Vec<(ProjectionKind, String)>, sqlx::Error> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT projection_name, entity_id FROM runtime.projection_repairs ORDER BY recorded_at, entity_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, id)| name.parse().ok().map(|kind| (kind, id)))
            .collect())
    }
}

fn database(
    kind: ProjectionKind,
    entity_id: &str,
    operation: &'static str,
) -> impl FnOnce(sqlx::Error) -> ProjectionError {
    let entity_id = entity_id.to_owned();
    move |source| ProjectionError::Database {
        kind,
        entity_id,
        operation,
        source,
    }
}
