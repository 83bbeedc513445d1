//! Fixtures of the client-lane tests: lanes of each surface wired to an
//! embedded sync server, a legacy read path over the runtime's read model,
//! worker projections, and readers of the read model and journal head.

use crate::fixtures;
use crate::support::ok;
use crate::sync_client::{SyncEnv, WORKER_TOPIC};
use khala_clients::{
    ApplyRule, ClientLane, ClientSwitches, HydrationReadPath, LaneConfig, LegacyReadPath,
    MemoryWatermarkStore, PersistedWatermarkStore, Surface, TokenSource, WatermarkStore,
    lane::ReadPathError,
};
use khala_runtime::hashing::payload_hash;
use khala_runtime::notifier::StreamWake;
use khala_runtime::{Profile, ProjectionKind};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The legacy lane reading the runtime's read model directly (the runtime
/// API of the original).
pub struct RuntimeReadPath {
    pub pool: PgPool,
}

#[async_trait::async_trait]
impl LegacyReadPath for RuntimeReadPath {
    async fn list(&self) -> Result<Vec<(String, Value)>, ReadPathError> {
        sqlx::query_as(
            "SELECT doc_key, payload FROM runtime.sync_codex_worker_summaries ORDER BY doc_key",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|error| ReadPathError(error.to_string()))
    }
}

/// A token source handing out one token for the worker topic.
pub fn tokens(sync: &SyncEnv) -> Arc<dyn TokenSource> {
    let token = sync.token(&[WORKER_TOPIC]);
    Arc::new(move || Ok::<String, String>(token.clone()))
}

/// The surface's store: in memory for the web, a file under `directory`
/// for mobile and desktop.
pub fn store_for(surface: Surface, directory: &Path) -> Arc<dyn WatermarkStore> {
    match surface {
        Surface::Web => Arc::new(MemoryWatermarkStore::new()),
        Surface::Mobile | Surface::Desktop => Arc::new(PersistedWatermarkStore::new(directory)),
    }
}

/// A lane of `surface` under `profile`. The web's legacy path is the
/// hydration endpoint; mobile and desktop read the runtime's read model.
pub fn lane(
    sync: &SyncEnv,
    surface: Surface,
    profile: Profile,
    flag: bool,
    store: Arc<dyn WatermarkStore>,
) -> ClientLane {
    lane_with_rule(
        sync,
        surface,
        profile,
        flag,
        store,
        ApplyRule::DocumentVersion,
    )
}

/// A lane whose doc cache follows `apply_rule`.
pub fn lane_with_rule(
    sync: &SyncEnv,
    surface: Surface,
    profile: Profile,
    flag: bool,
    store: Arc<dyn WatermarkStore>,
    apply_rule: ApplyRule,
) -> ClientLane {
    let websocket_url = sync
        .server
        .http_url("/socket/websocket")
        .replace("http://", "ws://");
    let http_base = sync.server.http_url("");
    let tokens = tokens(sync);
    let legacy: Arc<dyn LegacyReadPath> = match surface {
        Surface::Web => Arc::new(HydrationReadPath::new(
            &http_base,
            WORKER_TOPIC,
            tokens.clone(),
        )),
        Surface::Mobile | Surface::Desktop => Arc::new(RuntimeReadPath {
            pool: sync.env.pool().clone(),
        }),
    };
    let mut config = LaneConfig::new(
        surface,
        ClientSwitches::new(profile),
        &websocket_url,
        &http_base,
    );
    config.apply_rule = apply_rule;
    ClientLane::new(config, flag, tokens, store, legacy)
}

/// One worker event through the runtime (creating the worker on first use):
/// one journal row, woken after commit.
pub async fn project_worker(sync: &SyncEnv, worker_id: &str) {
    let doc_key = ProjectionKind::CodexWorkerSummary.document_id(worker_id);
    if fixtures::read_model(
        sync.env.pool(),
        ProjectionKind::CodexWorkerSummary,
        &doc_key,
    )
    .await
    .is_none()
    {
        ok(sync
            .runtime
            .create_worker(&fixtures::new_worker(worker_id))
            .await);
    }
    let outcome = ok(sync
        .runtime
        .append_event(
            ProjectionKind::CodexWorkerSummary,
            worker_id,
            "worker.heartbeat",
            &json!({}),
        )
        .await);
    ok(outcome.projection);
}

/// The worker read model as `doc_key → payload`.
pub async fn read_model(pool: &PgPool) -> BTreeMap<String, Value> {
    let rows: Vec<(String, Value)> = ok(sqlx::query_as(
        "SELECT doc_key, payload FROM runtime.sync_codex_worker_summaries",
    )
    .fetch_all(pool)
    .await);
    rows.into_iter().collect()
}

/// The highest watermark of the worker topic's journal.
pub async fn head(pool: &PgPool) -> i64 {
    ok(sqlx::query_scalar(
        "SELECT COALESCE(MAX(watermark), 0)::bigint FROM runtime.sync_stream_events WHERE topic = $1",
    )
    .bind(WORKER_TOPIC)
    .fetch_one(pool)
    .await)
}

/// The watermarks a lane received, in order.
pub fn delivered(lane: &ClientLane) -> Vec<i64> {
    lane.stats()
        .delivered
        .iter()
        .map(|(_, watermark)| *watermark)
        .collect()
}

/// A worker-topic journal row written directly, with any `doc_version`, and
/// optionally its read-model row; the server is woken.
pub async fn insert_worker_row(
    sync: &SyncEnv,
    watermark: i64,
    doc_key: &str,
    doc_version: i64,
    payload: &Value,
    write_read_model: bool,
) {
    let pool = sync.env.pool();
    let hash = payload_hash(payload).to_vec();
    ok(sqlx::query(
        "INSERT INTO runtime.sync_stream_events \
         (topic, watermark, doc_key, doc_version, payload, payload_hash, inserted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(WORKER_TOPIC)
    .bind(watermark)
    .bind(doc_key)
    .bind(doc_version)
    .bind(payload)
    .bind(&hash)
    .bind(sync.now().naive_utc())
    .execute(pool)
    .await);
    if write_read_model {
        ok(sqlx::query(
            "INSERT INTO runtime.sync_codex_worker_summaries \
             (doc_key, doc_version, payload, payload_hash, inserted_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (doc_key) DO UPDATE SET doc_version = EXCLUDED.doc_version, \
             payload = EXCLUDED.payload, payload_hash = EXCLUDED.payload_hash",
        )
        .bind(doc_key)
        .bind(doc_version)
        .bind(payload)
        .bind(&hash)
        .bind(sync.now().naive_utc())
        .execute(pool)
        .await);
    }
    ok(sqlx::query(
        "UPDATE runtime.sync_topic_sequences SET next_watermark = GREATEST(next_watermark, $2) WHERE topic = $1",
    )
    .bind(WORKER_TOPIC)
    .bind(watermark)
    .execute(pool)
    .await);
    sync.runtime.notifier().wake(StreamWake {
        topic: WORKER_TOPIC.to_owned(),
        watermark,
    });
}
