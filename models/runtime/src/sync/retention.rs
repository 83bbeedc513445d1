//! The journal retention job (spec §7.6): delete rows inserted before
//! `now − horizon` in batches, then report the oldest retained watermark of
//! every known topic. The caller drives it: the server binary on its
//! interval, tests directly.

use crate::planted::PlantedDefects;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use sqlx::PgPool;
use std::collections::BTreeMap;

/// What one run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionResult {
    pub deleted: u64,
    pub cutoff: NaiveDateTime,
    /// For every topic in `runtime.sync_topic_sequences`: the lowest watermark
    /// left, or `None` when its journal is empty.
    pub oldest_retained: BTreeMap<String, Option<i64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("delete journal rows inserted before {cutoff}: {source}")]
    Delete {
        cutoff: NaiveDateTime,
        #[source]
        source: sqlx::Error,
    },
    #[error("read the oldest retained watermarks: {0}")]
    Oldest(#[source] sqlx::Error),
}

/// One retention run at `now`. Like the original it validates nothing: a
/// negative `batch_size` is refused by Postgres, a zero one deletes nothing.
///
/// Each batch is one statement that also raises the topic's
/// `pruned_through` in `runtime.sync_retention_floors` to the highest
/// watermark it deleted. The original kept no such record; only the hardened
/// stale rule reads it (B9), so writing it under both profiles changes
/// nothing the legacy channel does.
pub async fn run_once(
    pool: &PgPool,
    now: DateTime<Utc>,
    horizon: TimeDelta,
    batch_size: i64,
) -> Result<RetentionResult, RetentionError> {
    run_once_planted(pool, now, horizon, batch_size, PlantedDefects::default()).await
}

/// `run_once` with the retention defects a test planted (`PlantedDefects`).
pub async fn run_once_planted(
    pool: &PgPool,
    now: DateTime<Utc>,
    horizon: TimeDelta,
    batch_size: i64,
    planted: PlantedDefects,
) -> Result<RetentionResult, RetentionError> {
    let cutoff = planted.retention_cutoff((now - horizon).naive_utc(), now, horizon);
    let older = planted.retention_older_than();
    // Built only from `PlantedDefects`' two constant operators, never from input.
    let delete = format!(
        "WITH doomed AS ( \
             SELECT id FROM runtime.sync_stream_events WHERE inserted_at {older} $1 LIMIT $2), \
         removed AS ( \
             DELETE FROM runtime.sync_stream_events e USING doomed WHERE e.id = doomed.id \
             RETURNING e.topic, e.watermark), \
         floors AS ( \
             INSERT INTO runtime.sync_retention_floors (topic, pruned_through, updated_at) \
             SELECT topic, MAX(watermark), $3 FROM removed GROUP BY topic \
             ON CONFLICT (topic) DO UPDATE SET \
                 pruned_through = GREATEST(runtime.sync_retention_floors.pruned_through, EXCLUDED.pruned_through), \
                 updated_at = EXCLUDED.updated_at \
             RETURNING 1) \
         SELECT COUNT(*) FROM removed"
    );
    let mut deleted: u64 = 0;
    loop {
        let removed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(delete.clone()))
            .bind(cutoff)
            .bind(batch_size)
            .bind(now.naive_utc())
            .fetch_one(pool)
            .await
            .map_err(|source| RetentionError::Delete { cutoff, source })?;
        if removed <= 0 {
            break;
        }
        deleted += removed.unsigned_abs();
    }
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT s.topic, (SELECT MIN(e.watermark) FROM runtime.sync_stream_events e WHERE e.topic = s.topic) \
         FROM runtime.sync_topic_sequences s ORDER BY s.topic",
    )
    .fetch_all(pool)
    .await
    .map_err(RetentionError::Oldest)?;
    let oldest_retained: BTreeMap<String, Option<i64>> = rows.into_iter().collect();
    tracing::info!(
        target: "openagents_runtime.sync.retention",
        component = "sync_retention_job",
        deleted,
        %cutoff,
        "retention cycle"
    );
    for (topic, oldest) in &oldest_retained {
        tracing::debug!(
            target: "openagents_runtime.sync.retention",
            event_type = %topic,
            status = if oldest.is_some() { "active" } else { "empty" },
            oldest_watermark = ?oldest,
            "retention topic"
        );
    }
    Ok(RetentionResult {
        deleted,
        cutoff,
        oldest_retained,
    })
}
