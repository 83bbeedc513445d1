//! Per-topic watermark allocation from `runtime.sync_topic_sequences` (spec
//! §5.5): an ordinary row, so a rolled-back transaction also rolls back the
//! increment and the row lock orders allocators per topic until commit.

use sqlx::{Connection, PgConnection};

#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    #[error("allocate a watermark: invalid topic {topic:?}")]
    InvalidTopic { topic: String },
    #[error("seed topic `{topic}`: {source}")]
    SeedInsertFailed { topic: String, source: sqlx::Error },
    #[error("increment topic `{topic}`: {source}")]
    AllocatorUpdateFailed { topic: String, source: sqlx::Error },
    #[error("increment topic `{topic}`: no watermark returned")]
    NoWatermark { topic: String },
}

impl WatermarkError {
    /// The original's reason atom.
    pub fn reason_class(&self) -> &'static str {
        match self {
            WatermarkError::InvalidTopic { .. } => "invalid_topic",
            WatermarkError::SeedInsertFailed { .. } => "seed_insert_failed",
            WatermarkError::AllocatorUpdateFailed { .. } => "allocator_update_failed",
            WatermarkError::NoWatermark { .. } => "allocator_returned_no_watermark",
        }
    }
}

/// Allocates the next watermark of `topic`: 1, 2, 3, … Unknown topics are
/// created on demand. Runs in a transaction of its own, which becomes a
/// savepoint when the caller already holds one (the projector does).
pub async fn next(conn: &mut PgConnection, topic: &str) -> Result<i64, WatermarkError> {
    let topic = topic.trim();
    if topic.is_empty() {
        return Err(WatermarkError::InvalidTopic {
            topic: topic.to_owned(),
        });
    }
    let update_failed = |source| WatermarkError::AllocatorUpdateFailed {
        topic: topic.to_owned(),
        source,
    };
    let mut tx = conn.begin().await.map_err(update_failed)?;
    sqlx::query(
        "INSERT INTO runtime.sync_topic_sequences (topic, next_watermark, inserted_at, updated_at) \
         VALUES ($1, 0, now(), now()) ON CONFLICT (topic) DO NOTHING",
    )
    .bind(topic)
    .execute(&mut *tx)
    .await
    .map_err(|source| WatermarkError::SeedInsertFailed {
        topic: topic.to_owned(),
        source,
    })?;
    let watermark: Option<i64> = sqlx::query_scalar(
        "UPDATE runtime.sync_topic_sequences SET next_watermark = next_watermark + 1, updated_at = now() \
         WHERE topic = $1 RETURNING next_watermark",
    )
    .bind(topic)
    .fetch_optional(&mut *tx)
    .await
    .map_err(update_failed)?;
    let watermark =
        watermark
            .filter(|value| *value >= 0)
            .ok_or_else(|| WatermarkError::NoWatermark {
                topic: topic.to_owned(),
            })?;
    tx.commit().await.map_err(update_failed)?;
    Ok(watermark)
}
