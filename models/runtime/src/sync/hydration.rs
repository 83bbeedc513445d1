//! Reads behind the HTTP hydration endpoints. The original only documented
//! them (spec §7.10); clients fall back to them after `stale_cursor` and for
//! pointer-mode updates (`hydration_required`), so they are built here.

use crate::summary::ProjectionKind;
use crate::sync::topics;
use serde_json::Value;
use sqlx::PgPool;

/// One read-model row as served.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct HydratedDoc {
    pub doc_key: String,
    pub doc_version: i64,
    pub payload: Value,
}

/// Every document of a topic, and the watermark the snapshot reflects: a
/// client that resumes after it misses nothing and replays nothing twice.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopicSnapshot {
    pub topic: String,
    pub watermark: i64,
    pub docs: Vec<HydratedDoc>,
}

#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct HydrationError {
    pub step: String,
    #[source]
    pub source: sqlx::Error,
}

fn failed(step: impl Into<String>) -> impl FnOnce(sqlx::Error) -> HydrationError {
    let step = step.into();
    move |source| HydrationError { step, source }
}

/// The read-model row of `doc_key`.
pub async fn fetch_doc(
    pool: &PgPool,
    kind: ProjectionKind,
    doc_key: &str,
) -> Result<Option<HydratedDoc>, HydrationError> {
    // The table name comes from the fixed `ProjectionKind` set, never from input.
    let statement = format!(
        "SELECT doc_key, doc_version, payload FROM {} WHERE doc_key = $1",
        kind.read_model_table()
    );
    sqlx::query_as(sqlx::AssertSqlSafe(statement))
        .bind(doc_key)
        .fetch_optional(pool)
        .await
        .map_err(failed(format!("read document `{doc_key}`")))
}

/// All documents of `topic` (none for a topic without a read model) and the
/// highest watermark delivered on it, read in one repeatable-read snapshot.
/// Read-model rows and journal rows commit together, so every event up to
/// that watermark is reflected in the documents and none after it.
pub async fn list_topic(pool: &PgPool, topic: &str) -> Result<TopicSnapshot, HydrationError> {
    let step = |what: &str| format!("{what} of topic `{topic}`");
    let mut tx = super::replay::snapshot(pool)
        .await
        .map_err(failed(step("begin the snapshot")))?;
    let watermark: i64 = sqlx::query_scalar(
        "SELECT GREATEST( \
             (SELECT COALESCE(MAX(watermark), 0) FROM runtime.sync_stream_events WHERE topic = $1), \
             (SELECT COALESCE(MAX(pruned_through), 0) FROM runtime.sync_retention_floors WHERE topic = $1))::bigint",
    )
    .bind(topic)
    .fetch_one(&mut *tx)
    .await
    .map_err(failed(step("read the watermark")))?;
    let docs = match topics::projection_of_topic(topic) {
        Some(kind) => {
            let statement = format!(
                "SELECT doc_key, doc_version, payload FROM {} ORDER BY doc_key",
                kind.read_model_table()
            );
            sqlx::query_as(sqlx::AssertSqlSafe(statement))
                .fetch_all(&mut *tx)
                .await
                .map_err(failed(step("read the documents")))?
        }
        None => Vec::new(),
    };
    tx.commit()
        .await
        .map_err(failed(step("end the snapshot")))?;
    Ok(TopicSnapshot {
        topic: topic.to_owned(),
        watermark,
        docs,
    })
}
