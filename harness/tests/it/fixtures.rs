//! Fixtures for tests of the runtime model on PostgreSQL: a case database,
//! runtimes under each profile, sinks with planted behaviour, and readers of
//! what the stores hold.

use crate::support;
use chrono::{DateTime, Utc};
use khala_parity::play::backend::postgres::{CaseDatabase, PostgresBackend};
use khala_runtime::authority::{NewRun, NewWorker};
use khala_runtime::clock::{Clock, ManualClock};
use khala_runtime::sink::{PayloadMode, ProjectionSink, SinkContext, SinkError};
use khala_runtime::{Profile, ProjectionKind, Runtime, RuntimeConfig, SinkMode};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A server and one fresh database cloned from the migrated template.
pub struct Env {
    backend: PostgresBackend,
    pub db: CaseDatabase,
}

impl Env {
    pub async fn new() -> Env {
        let backend = support::backend().await;
        let db = support::ok(backend.fresh_database().await);
        Env { backend, db }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    pub async fn finish(self) {
        self.db.pool.close().await;
        support::ok(self.backend.shutdown().await);
    }
}

pub fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-02-19T20:00:00Z")
        .expect("constant")
        .with_timezone(&Utc)
}

pub fn config(profile: Profile, sink_mode: SinkMode) -> RuntimeConfig {
    RuntimeConfig {
        sink_mode,
        payload_mode: PayloadMode::Inline,
        clock: Arc::new(ManualClock::new(start_time())) as Arc<dyn Clock>,
        ..RuntimeConfig::new(profile)
    }
}

pub fn runtime(pool: &PgPool, profile: Profile, sink_mode: SinkMode) -> Runtime {
    Runtime::new(pool.clone(), config(profile, sink_mode))
}

pub fn new_run(run_id: &str) -> NewRun {
    NewRun {
        run_id: run_id.into(),
        thread_id: format!("thread_{run_id}"),
        owner_user_id: Some(7),
        owner_guest_scope: None,
    }
}

pub fn new_worker(worker_id: &str) -> NewWorker {
    NewWorker {
        worker_id: worker_id.into(),
        owner_user_id: Some(7),
        owner_guest_scope: None,
        workspace_ref: Some("ws_1".into()),
        codex_home_ref: None,
        adapter: None,
        metadata: json!({"region": "us-central1"}),
    }
}

/// Appends `n` `run.delta` events to the authority only (no projection).
pub async fn append_run_events(runtime: &Runtime, run_id: &str, n: usize) {
    for _ in 0..n {
        support::ok(
            khala_runtime::authority::append_event(
                runtime.pool(),
                runtime.clock().as_ref(),
                ProjectionKind::RunSummary,
                run_id,
                "run.delta",
                &json!({}),
            )
            .await,
        );
    }
}

/// A sink that always fails, like the original's `simulated_sink_failure`.
#[derive(Debug, Default)]
pub struct FailingSink {
    pub calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ProjectionSink for FailingSink {
    fn name(&self) -> &str {
        "failing"
    }

    fn is_transactional(&self) -> bool {
        false
    }

    async fn upsert(
        &self,
        _: SinkContext<'_>,
        _: ProjectionKind,
        _: &str,
        _: &Value,
    ) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(SinkError::Failed {
            sink: "failing".into(),
            reason_class: "simulated_sink_failure".into(),
            message: "planted failure".into(),
        })
    }
}

/// An external store: writes on its own connection, so its effects escape
/// the projector's transaction as a Convex HTTP call's do.
#[derive(Debug)]
pub struct ExternalTableSink {
    pool: PgPool,
}

impl ExternalTableSink {
    pub async fn new(pool: &PgPool) -> Arc<Self> {
        support::ok(
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS public.external_store (document_id text PRIMARY KEY, seq bigint NOT NULL, summary jsonb NOT NULL)",
            )
            .execute(pool)
            .await,
        );
        Arc::new(ExternalTableSink { pool: pool.clone() })
    }

    pub async fn seq_of(pool: &PgPool, document_id: &str) -> Option<i64> {
        support::ok(
            sqlx::query_scalar("SELECT seq FROM public.external_store WHERE document_id = $1")
                .bind(document_id)
                .fetch_optional(pool)
                .await,
        )
    }
}

#[async_trait::async_trait]
impl ProjectionSink for ExternalTableSink {
    fn name(&self) -> &str {
        "external"
    }

    fn is_transactional(&self) -> bool {
        false
    }

    async fn upsert(
        &self,
        _: SinkContext<'_>,
        _: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        let seq = summary["runtime_source"]["seq"].as_i64().unwrap_or(-1);
        sqlx::query(
            "INSERT INTO public.external_store (document_id, seq, summary) VALUES ($1, $2, $3) \
             ON CONFLICT (document_id) DO UPDATE SET seq = EXCLUDED.seq, summary = EXCLUDED.summary",
        )
        .bind(document_id)
        .bind(seq)
        .bind(summary)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(|error| SinkError::Failed { sink: "external".into(), reason_class: "external".into(), message: error.to_string() })
    }
}

/// Wraps a sink, counts its calls, and holds every call at a rendezvous of
/// `parties` callers (released after `wait` if the others never come).
#[derive(Debug)]
pub struct RendezvousSink {
    pub inner: Arc<dyn ProjectionSink>,
    pub calls: AtomicUsize,
    barrier: tokio::sync::Barrier,
    wait: Duration,
}

impl RendezvousSink {
    pub fn new(inner: Arc<dyn ProjectionSink>, parties: usize, wait: Duration) -> Self {
        RendezvousSink {
            inner,
            calls: AtomicUsize::new(0),
            barrier: tokio::sync::Barrier::new(parties),
            wait,
        }
    }
}

#[async_trait::async_trait]
impl ProjectionSink for RendezvousSink {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn is_transactional(&self) -> bool {
        self.inner.is_transactional()
    }

    async fn upsert(
        &self,
        context: SinkContext<'_>,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _released_or_timed_out = tokio::time::timeout(self.wait, self.barrier.wait()).await;
        self.inner.upsert(context, kind, document_id, summary).await
    }
}

/// Makes every write to a Khala read-model table fail, as a broken Khala
/// database would: the same fault the engine's `BreakKhala` step plants.
pub async fn break_khala(pool: &PgPool) {
    set_read_models_broken(pool, true).await;
}

pub async fn heal_khala(pool: &PgPool) {
    set_read_models_broken(pool, false).await;
}

async fn set_read_models_broken(pool: &PgPool, broken: bool) {
    use khala_parity::model::case::KhalaFault;
    use khala_parity::play::driver::set_khala_broken;
    support::ok(set_khala_broken(pool, KhalaFault::ReadModel, broken).await);
}

/// Row counts of every table a projection may write.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreCounts {
    pub checkpoints: i64,
    pub read_models: i64,
    pub journal: i64,
    pub watermarks_allocated: i64,
}

pub async fn store_counts(pool: &PgPool) -> StoreCounts {
    let row: (i64, i64, i64, i64) = support::ok(
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM runtime.convex_projection_checkpoints), \
             (SELECT count(*) FROM runtime.sync_run_summaries) + (SELECT count(*) FROM runtime.sync_codex_worker_summaries), \
             (SELECT count(*) FROM runtime.sync_stream_events), \
             (SELECT COALESCE(sum(next_watermark), 0)::bigint FROM runtime.sync_topic_sequences)",
        )
        .fetch_one(pool)
        .await,
    );
    StoreCounts {
        checkpoints: row.0,
        read_models: row.1,
        journal: row.2,
        watermarks_allocated: row.3,
    }
}

/// A Khala read-model row: `doc_version`, `payload`, `payload_hash`.
pub async fn read_model(
    pool: &PgPool,
    kind: ProjectionKind,
    doc_key: &str,
) -> Option<(i64, Value, Option<Vec<u8>>)> {
    let statement = format!(
        "SELECT doc_version, payload, payload_hash FROM {} WHERE doc_key = $1",
        kind.read_model_table()
    );
    support::ok(
        sqlx::query_as(sqlx::AssertSqlSafe(statement))
            .bind(doc_key)
            .fetch_optional(pool)
            .await,
    )
}

/// A journal row: watermark, doc_key, doc_version, payload, payload_hash.
pub type JournalRow = (i64, String, i64, Option<Value>, Option<Vec<u8>>);

pub async fn journal(pool: &PgPool, topic: &str) -> Vec<JournalRow> {
    support::ok(
        sqlx::query_as(
            "SELECT watermark, doc_key, doc_version, payload, payload_hash FROM runtime.sync_stream_events \
             WHERE topic = $1 ORDER BY watermark",
        )
        .bind(topic)
        .fetch_all(pool)
        .await,
    )
}

pub async fn checkpoint(
    pool: &PgPool,
    kind: ProjectionKind,
    entity_id: &str,
) -> Option<khala_runtime::checkpoint::Checkpoint> {
    // Unlocked: the projector's own read locks the row (`select_for_update`).
    support::ok(
        sqlx::query_as(
            "SELECT * FROM runtime.convex_projection_checkpoints \
             WHERE projection_name = $1 AND entity_id = $2",
        )
        .bind(kind.name())
        .bind(entity_id)
        .fetch_optional(pool)
        .await,
    )
}
