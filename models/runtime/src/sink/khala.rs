//! The Khala projector sink (spec §4.4): read-model upsert, journal append
//! with a freshly allocated watermark, and a wake-up for the sync server.

use super::{ProjectionSink, SinkContext, SinkError};
use crate::clock::Clock;
use crate::hashing::payload_hash;
use crate::notifier::{Notifier, StreamWake};
use crate::summary::ProjectionKind;
use crate::watermark;
use serde_json::Value;
use std::sync::Arc;

/// Whether journal rows carry the payload (`inline`) or only point at the
/// read model (`pointer`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PayloadMode {
    /// The original's default (`config.exs`).
    #[default]
    Inline,
    Pointer,
}

#[derive(Debug, Clone)]
pub struct KhalaSink {
    payload_mode: PayloadMode,
    /// B16 fix when true: a lower `doc_version` never overwrites the read
    /// model, and such a write appends nothing and allocates no watermark.
    version_guard: bool,
    /// B11 when true: the wake-up is sent inside the open transaction.
    wake_before_commit: bool,
    notifier: Notifier,
    clock: Arc<dyn Clock>,
}

impl KhalaSink {
    pub fn new(
        payload_mode: PayloadMode,
        switches: &crate::Switches,
        notifier: Notifier,
        clock: Arc<dyn Clock>,
    ) -> Self {
        KhalaSink {
            payload_mode,
            version_guard: !switches.b16_no_version_guard,
            wake_before_commit: switches.b11_wake_before_commit,
            notifier,
            clock,
        }
    }
}

fn char_len_within(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.chars().count())
}

#[async_trait::async_trait]
impl ProjectionSink for KhalaSink {
    fn name(&self) -> &str {
        "khala"
    }

    fn is_transactional(&self) -> bool {
        true
    }

    async fn upsert(
        &self,
        context: SinkContext<'_>,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        let conn = context.conn;
        let topic = kind.topic();
        // Step 1: doc_version.
        let doc_version = summary
            .get("runtime_source")
            .and_then(|source| source.get("seq"))
            .and_then(Value::as_i64)
            .filter(|seq| *seq >= 0)
            .ok_or(SinkError::MissingRuntimeSeq)?;
        // Step 2: raw SHA-256 of the canonical JSON of the full summary.
        if !summary.is_object() {
            return Err(SinkError::InvalidSummaryPayload);
        }
        let hash = payload_hash(summary).to_vec();
        if !char_len_within(document_id, 1, 255) {
            return Err(SinkError::ReadModelUpsertFailed {
                doc_key: document_id.to_owned(),
                detail: "doc_key should be 1 to 255 characters".to_owned(),
            });
        }
        let now = self.clock.now().naive_utc();
        let upsert_failed = |source: sqlx::Error| SinkError::ReadModelUpsertFailed {
            doc_key: document_id.to_owned(),
            detail: source.to_string(),
        };
        // Step 4 (the original allocates first; the guarded write must know
        // whether it is stale before it consumes a watermark).
        let guard = if self.version_guard {
            format!(
                "WHERE {}.doc_version <= EXCLUDED.doc_version",
                kind.read_model_table()
            )
        } else {
            String::new()
        };
        let upsert = format!(
            "INSERT INTO {table} (doc_key, doc_version, payload, payload_hash, inserted_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (doc_key) DO UPDATE SET \
             doc_version = EXCLUDED.doc_version, payload = EXCLUDED.payload, \
             payload_hash = EXCLUDED.payload_hash, updated_at = EXCLUDED.updated_at {guard} RETURNING doc_key",
            table = kind.read_model_table()
        );
        let run_upsert = async |conn: &mut sqlx::PgConnection| {
            // Built only from this module's constants and a table name of the fixed
            // `ProjectionKind` set, never from input.
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(upsert.clone()))
                .bind(document_id)
                .bind(doc_version)
                .bind(summary)
                .bind(&hash)
                .bind(now)
                .fetch_optional(conn)
                .await
                .map_err(upsert_failed)
        };
        let watermark = if self.version_guard {
            if run_upsert(&mut *conn).await?.is_none() {
                tracing::debug!(
                    document_id,
                    doc_version,
                    "stale khala write ignored by the version guard"
                );
                return Ok(());
            }
            watermark::next(&mut *conn, topic).await?
        } else {
            // Step 3 then step 4, as in the original.
            let watermark = watermark::next(&mut *conn, topic).await?;
            run_upsert(&mut *conn).await?;
            watermark
        };
        // Step 5: the journal row; no payload in pointer mode.
        let journal_payload = match self.payload_mode {
            PayloadMode::Inline => Some(summary),
            PayloadMode::Pointer => None,
        };
        sqlx::query(
            "INSERT INTO runtime.sync_stream_events \
             (topic, watermark, doc_key, doc_version, payload, payload_hash, inserted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(topic)
        .bind(watermark)
        .bind(document_id)
        .bind(doc_version)
        .bind(journal_payload)
        .bind(&hash)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|source| SinkError::StreamEventInsertFailed {
            topic: topic.to_owned(),
            doc_key: document_id.to_owned(),
            detail: source.to_string(),
        })?;
        // Step 6: the wake-up.
        let wake = StreamWake {
            topic: topic.to_owned(),
            watermark,
        };
        if self.wake_before_commit {
            self.notifier.wake(wake);
        } else {
            context.after_commit.push(wake);
        }
        Ok(())
    }
}
