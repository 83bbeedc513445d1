//! The runtime's authority tables (spec §5.6) and their append paths (spec
//! §2.3, §2.7): runs, run events, Codex workers and worker events. Each write
//! commits in its own transaction; projection happens afterwards, elsewhere.

use crate::clock::Clock;
use crate::hashing::sha256_canonical_json;
use crate::summary::{EventRow, ProjectionKind, RunRow, WorkerRow};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("find {kind} `{entity_id}`: no such entity")]
    NotFound {
        kind: ProjectionKind,
        entity_id: String,
    },
    #[error("{operation} for `{entity_id}`: {source}")]
    Database {
        operation: &'static str,
        entity_id: String,
        source: sqlx::Error,
    },
}

fn database(
    operation: &'static str,
    entity_id: &str,
) -> impl FnOnce(sqlx::Error) -> AuthorityError {
    let entity_id = entity_id.to_owned();
    move |source| AuthorityError::Database {
        operation,
        entity_id,
        source,
    }
}

/// A run to create.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewRun {
    pub run_id: String,
    pub thread_id: String,
    pub owner_user_id: Option<i64>,
    pub owner_guest_scope: Option<String>,
}

/// A Codex worker to create.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewWorker {
    pub worker_id: String,
    pub owner_user_id: Option<i32>,
    pub owner_guest_scope: Option<String>,
    pub workspace_ref: Option<String>,
    pub codex_home_ref: Option<String>,
    pub adapter: Option<String>,
    pub metadata: Value,
}

pub async fn create_run(
    pool: &PgPool,
    clock: &dyn Clock,
    run: &NewRun,
) -> Result<(), AuthorityError> {
    let now = clock.now().naive_utc();
    sqlx::query(
        "INSERT INTO runtime.runs (run_id, thread_id, owner_user_id, owner_guest_scope, inserted_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&run.run_id)
    .bind(&run.thread_id)
    .bind(run.owner_user_id)
    .bind(&run.owner_guest_scope)
    .bind(now)
    .execute(pool)
    .await
    .map_err(database("create run", &run.run_id))?;
    Ok(())
}

pub async fn create_worker(
    pool: &PgPool,
    clock: &dyn Clock,
    worker: &NewWorker,
) -> Result<(), AuthorityError> {
    let now = clock.now().naive_utc();
    sqlx::query(
        "INSERT INTO runtime.codex_workers (worker_id, owner_user_id, owner_guest_scope, workspace_ref, \
         codex_home_ref, adapter, status, metadata, started_at, inserted_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, COALESCE($6, 'in_memory'), 'running', $7, $8, $8, $8)",
    )
    .bind(&worker.worker_id)
    .bind(worker.owner_user_id)
    .bind(&worker.owner_guest_scope)
    .bind(&worker.workspace_ref)
    .bind(&worker.codex_home_ref)
    .bind(&worker.adapter)
    .bind(&worker.metadata)
    .bind(now)
    .execute(pool)
    .await
    .map_err(database("create worker", &worker.worker_id))?;
    Ok(())
}

/// Appends one event: increments the entity's `latest_seq` atomically and
/// inserts the event at that seq, in one transaction (spec §2.3). Worker
/// appends also stamp `last_heartbeat_at` (spec §2.7). Returns the new seq.
pub async fn append_event(
    pool: &PgPool,
    clock: &dyn Clock,
    kind: ProjectionKind,
    entity_id: &str,
    event_type: &str,
    payload: &Value,
) -> Result<i64, AuthorityError> {
    let now = clock.now().naive_utc();
    let failed = || database("append event", entity_id);
    let mut conn = pool.acquire().await.map_err(failed())?;
    let mut tx = conn.begin().await.map_err(failed())?;
    let bump = match kind {
        ProjectionKind::RunSummary => {
            "UPDATE runtime.runs SET latest_seq = latest_seq + 1 WHERE run_id = $1 RETURNING latest_seq"
        }
        ProjectionKind::CodexWorkerSummary => {
            "UPDATE runtime.codex_workers SET latest_seq = latest_seq + 1, last_heartbeat_at = $2 \
             WHERE worker_id = $1 RETURNING latest_seq"
        }
    };
    let seq: Option<i64> = sqlx::query_scalar(bump)
        .bind(entity_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed())?;
    let seq = seq.ok_or_else(|| AuthorityError::NotFound {
        kind,
        entity_id: entity_id.to_owned(),
    })?;
    match kind {
        ProjectionKind::RunSummary => {
            let prev_hash: Option<String> = sqlx::query_scalar(
                "SELECT event_hash FROM runtime.run_events WHERE run_id = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(entity_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(failed())?
            .flatten();
            let event_hash = sha256_canonical_json(
                &json!({"run_id": entity_id, "seq": seq, "event_type": event_type, "payload": payload, "prev_hash": prev_hash}),
            );
            sqlx::query(
                "INSERT INTO runtime.run_events (run_id, seq, event_type, payload, prev_hash, event_hash, inserted_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(entity_id)
            .bind(seq)
            .bind(event_type)
            .bind(payload)
            .bind(prev_hash)
            .bind(event_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(failed())?;
        }
        ProjectionKind::CodexWorkerSummary => {
            sqlx::query(
                "INSERT INTO runtime.codex_worker_events (worker_id, seq, event_type, payload, inserted_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(entity_id)
            .bind(seq)
            .bind(event_type)
            .bind(payload)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(failed())?;
        }
    }
    tx.commit().await.map_err(failed())?;
    Ok(seq)
}

/// The terminal fields the run executor persists after `run.finished`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunTerminal {
    pub status: String,
    pub terminal_reason_class: Option<String>,
    pub terminal_reason: Option<String>,
}

/// Stores a run's status (and terminal fields when given), stamping
/// `updated_at`.
pub async fn set_run_status(
    pool: &PgPool,
    clock: &dyn Clock,
    run_id: &str,
    status: &str,
    terminal: Option<&RunTerminal>,
) -> Result<(), AuthorityError> {
    let now = clock.now().naive_utc();
    let done = sqlx::query(
        "UPDATE runtime.runs SET status = $2, \
         terminal_reason_class = CASE WHEN $3 THEN $4 ELSE terminal_reason_class END, \
         terminal_reason = CASE WHEN $3 THEN $5 ELSE terminal_reason END, \
         terminal_at = CASE WHEN $3 THEN $6 ELSE terminal_at END, updated_at = $6 WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(status)
    .bind(terminal.is_some())
    .bind(terminal.and_then(|fields| fields.terminal_reason_class.clone()))
    .bind(terminal.and_then(|fields| fields.terminal_reason.clone()))
    .bind(now)
    .execute(pool)
    .await
    .map_err(database("set run status", run_id))?;
    if done.rows_affected() == 0 {
        return Err(AuthorityError::NotFound {
            kind: ProjectionKind::RunSummary,
            entity_id: run_id.to_owned(),
        });
    }
    Ok(())
}

/// Stores a worker's status; `stopped` also stamps `stopped_at`.
pub async fn set_worker_status(
    pool: &PgPool,
    clock: &dyn Clock,
    worker_id: &str,
    status: &str,
) -> Result<(), AuthorityError> {
    let now = clock.now().naive_utc();
    let done = sqlx::query(
        "UPDATE runtime.codex_workers SET status = $2, \
         stopped_at = CASE WHEN $2 = 'stopped' THEN $3 ELSE stopped_at END, updated_at = $3 WHERE worker_id = $1",
    )
    .bind(worker_id)
    .bind(status)
    .bind(now)
    .execute(pool)
    .await
    .map_err(database("set worker status", worker_id))?;
    if done.rows_affected() == 0 {
        return Err(AuthorityError::NotFound {
            kind: ProjectionKind::CodexWorkerSummary,
            entity_id: worker_id.to_owned(),
        });
    }
    Ok(())
}

/// Replaces a worker's `metadata` (a JSON object in a `jsonb` column: Postgres
/// keeps its numbers as decimals, drops the sign of a negative zero and
/// refuses `\u0000`).
pub async fn set_worker_metadata(
    pool: &PgPool,
    clock: &dyn Clock,
    worker_id: &str,
    metadata: &Value,
) -> Result<(), AuthorityError> {
    let now = clock.now().naive_utc();
    let done = sqlx::query(
        "UPDATE runtime.codex_workers SET metadata = $2, updated_at = $3 WHERE worker_id = $1",
    )
    .bind(worker_id)
    .bind(metadata)
    .bind(now)
    .execute(pool)
    .await
    .map_err(database("set worker metadata", worker_id))?;
    if done.rows_affected() == 0 {
        return Err(AuthorityError::NotFound {
            kind: ProjectionKind::CodexWorkerSummary,
            entity_id: worker_id.to_owned(),
        });
    }
    Ok(())
}

/// An entity row with its events, as the projector reads them.
#[derive(Clone, Debug, PartialEq)]
pub enum EntitySnapshot {
    Run(RunRow, Vec<EventRow>),
    Worker(WorkerRow, Vec<EventRow>),
}

impl EntitySnapshot {
    /// The summary of this snapshot (spec §2.4, §2.5).
    pub fn summary(&self, projection_version: &str, now: DateTime<Utc>) -> Value {
        match self {
            EntitySnapshot::Run(run, events) => {
                crate::summary::build_run_summary(run, events, projection_version, now)
            }
            EntitySnapshot::Worker(worker, events) => {
                crate::summary::build_worker_summary(worker, events, projection_version, now)
            }
        }
    }
}

/// Loads an entity and all its events ordered by seq; `None` if it does not
/// exist.
pub async fn load(
    conn: &mut PgConnection,
    kind: ProjectionKind,
    entity_id: &str,
) -> Result<Option<EntitySnapshot>, AuthorityError> {
    let failed = || database("load entity", entity_id);
    match kind {
        ProjectionKind::RunSummary => {
            let run: Option<RunRow> = sqlx::query_as(
                "SELECT run_id, thread_id, status, owner_user_id, owner_guest_scope, latest_seq, \
                 terminal_reason_class, terminal_reason, terminal_at, updated_at FROM runtime.runs WHERE run_id = $1",
            )
            .bind(entity_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(failed())?;
            let Some(run) = run else { return Ok(None) };
            let events = sqlx::query_as(
                "SELECT seq, event_type, inserted_at FROM runtime.run_events WHERE run_id = $1 ORDER BY seq ASC",
            )
            .bind(entity_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(failed())?;
            Ok(Some(EntitySnapshot::Run(run, events)))
        }
        ProjectionKind::CodexWorkerSummary => {
            let worker: Option<WorkerRow> = sqlx::query_as(
                "SELECT worker_id, status, owner_user_id, owner_guest_scope, workspace_ref, codex_home_ref, adapter, \
                 metadata, latest_seq, started_at, stopped_at, last_heartbeat_at, updated_at \
                 FROM runtime.codex_workers WHERE worker_id = $1",
            )
            .bind(entity_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(failed())?;
            let Some(worker) = worker else {
                return Ok(None);
            };
            let events = sqlx::query_as(
                "SELECT seq, event_type, inserted_at FROM runtime.codex_worker_events WHERE worker_id = $1 ORDER BY seq ASC",
            )
            .bind(entity_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(failed())?;
            Ok(Some(EntitySnapshot::Worker(worker, events)))
        }
    }
}

/// Every entity id of a projection, sorted (for `rebuild_all` and backfills).
pub async fn entity_ids(
    pool: &PgPool,
    kind: ProjectionKind,
) -> Result<Vec<String>, AuthorityError> {
    let statement = match kind {
        ProjectionKind::RunSummary => "SELECT run_id FROM runtime.runs ORDER BY run_id",
        ProjectionKind::CodexWorkerSummary => {
            "SELECT worker_id FROM runtime.codex_workers ORDER BY worker_id"
        }
    };
    sqlx::query_scalar(statement)
        .fetch_all(pool)
        .await
        .map_err(database("list entities", "*"))
}
