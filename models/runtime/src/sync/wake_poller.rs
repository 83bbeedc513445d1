//! Wake-ups for commits made by other processes. The original's PubSub only
//! reached channels on the node that projected; a standalone server binary
//! has no projector in process, so it polls the per-topic counters and wakes
//! the topics whose counter moved. Not used by the embedded test server.

use crate::notifier::{Notifier, StreamWake};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::task::JoinHandle;

/// One poll: wakes every topic whose `next_watermark` differs from `seen`
/// and records the new values. Returns how many topics were woken.
pub async fn poll_once(
    pool: &PgPool,
    notifier: &Notifier,
    seen: &mut BTreeMap<String, i64>,
) -> Result<usize, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT topic, next_watermark FROM runtime.sync_topic_sequences")
            .fetch_all(pool)
            .await?;
    let mut woken = 0;
    for (topic, watermark) in rows {
        if seen.insert(topic.clone(), watermark) != Some(watermark) {
            notifier.wake(StreamWake { topic, watermark });
            woken += 1;
        }
    }
    Ok(woken)
}

/// Polls every `interval` until aborted.
pub fn spawn(pool: PgPool, notifier: Notifier, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = BTreeMap::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = poll_once(&pool, &notifier, &mut seen).await {
                tracing::warn!(%error, "wake poll failed");
            }
        }
    })
}
