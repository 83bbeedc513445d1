//! The retention job (R1, spec §7.6) on a real journal, run explicitly with
//! a chosen `now`.

use crate::fixtures::{self, Env};
use crate::support::ok;
use crate::sync_client::{NOTIFICATIONS_TOPIC, RUN_TOPIC, WORKER_TOPIC, ago, insert_event};
use chrono::TimeDelta;
use khala_runtime::sync::retention::{self, RetentionResult};
use std::collections::BTreeMap;

async fn run(env: &Env, horizon_seconds: i64, batch_size: i64) -> RetentionResult {
    ok(retention::run_once(
        env.pool(),
        fixtures::start_time(),
        TimeDelta::seconds(horizon_seconds),
        batch_size,
    )
    .await)
}

async fn watermarks(env: &Env, topic: &str) -> Vec<i64> {
    fixtures::journal(env.pool(), topic)
        .await
        .into_iter()
        .map(|row| row.0)
        .collect()
}

async fn pruned_through(env: &Env, topic: &str) -> Option<i64> {
    ok(sqlx::query_scalar(
        "SELECT pruned_through FROM runtime.sync_retention_floors WHERE topic = $1",
    )
    .bind(topic)
    .fetch_optional(env.pool())
    .await)
}

fn oldest(entries: &[(&str, Option<i64>)]) -> BTreeMap<String, Option<i64>> {
    entries
        .iter()
        .map(|(topic, watermark)| ((*topic).to_owned(), *watermark))
        .collect()
}

#[tokio::test]
async fn r1_spec_example_deletes_the_old_row_and_reports_the_oldest_per_seeded_topic() {
    let env = Env::new().await;
    insert_event(env.pool(), RUN_TOPIC, 1, ago(7200)).await;
    insert_event(env.pool(), RUN_TOPIC, 2, ago(60)).await;
    let result = run(&env, 3600, 5000).await;
    assert_eq!(result.deleted, 1);
    assert_eq!(result.cutoff, ago(3600).naive_utc());
    assert_eq!(
        result.oldest_retained,
        oldest(&[
            (NOTIFICATIONS_TOPIC, None),
            (RUN_TOPIC, Some(2)),
            (WORKER_TOPIC, None)
        ])
    );
    assert_eq!(watermarks(&env, RUN_TOPIC).await, vec![2]);
    assert_eq!(pruned_through(&env, RUN_TOPIC).await, Some(1));
    env.finish().await;
}

#[tokio::test]
async fn r1_an_empty_journal_deletes_nothing_and_reports_every_seeded_topic_empty() {
    let env = Env::new().await;
    let result = run(&env, 3600, 5000).await;
    assert_eq!(result.deleted, 0);
    assert_eq!(
        result.oldest_retained,
        oldest(&[
            (NOTIFICATIONS_TOPIC, None),
            (RUN_TOPIC, None),
            (WORKER_TOPIC, None)
        ])
    );
    assert_eq!(pruned_through(&env, RUN_TOPIC).await, None);
    env.finish().await;
}

#[tokio::test]
async fn r1_small_batches_delete_every_older_row_across_topics_and_keep_every_newer_one() {
    let env = Env::new().await;
    for watermark in 1..=12 {
        insert_event(env.pool(), RUN_TOPIC, watermark, ago(7200 + watermark)).await;
    }
    for watermark in 13..=15 {
        insert_event(env.pool(), RUN_TOPIC, watermark, ago(10)).await;
    }
    for watermark in 1..=3 {
        insert_event(env.pool(), WORKER_TOPIC, watermark, ago(9000)).await;
    }
    // A row exactly at the cutoff is kept (`inserted_at < cutoff` only).
    insert_event(env.pool(), WORKER_TOPIC, 4, ago(3600)).await;
    let result = run(&env, 3600, 5).await;
    assert_eq!(result.deleted, 15);
    assert_eq!(watermarks(&env, RUN_TOPIC).await, vec![13, 14, 15]);
    assert_eq!(watermarks(&env, WORKER_TOPIC).await, vec![4]);
    assert_eq!(
        result.oldest_retained,
        oldest(&[
            (NOTIFICATIONS_TOPIC, None),
            (RUN_TOPIC, Some(13)),
            (WORKER_TOPIC, Some(4))
        ])
    );
    assert_eq!(
        (
            pruned_through(&env, RUN_TOPIC).await,
            pruned_through(&env, WORKER_TOPIC).await
        ),
        (Some(12), Some(3))
    );
    // A second run finds nothing and leaves the floors as they were.
    assert_eq!(run(&env, 3600, 5).await.deleted, 0);
    assert_eq!(pruned_through(&env, RUN_TOPIC).await, Some(12));
    env.finish().await;
}

#[tokio::test]
async fn r1_topics_created_on_demand_are_reported_too() {
    let env = Env::new().await;
    insert_event(env.pool(), "runtime.extra", 1, ago(7200)).await;
    ok(sqlx::query(
        "INSERT INTO runtime.sync_topic_sequences (topic, next_watermark, inserted_at, updated_at) \
         VALUES ('runtime.extra', 1, now(), now())",
    )
    .execute(env.pool())
    .await);
    let result = run(&env, 3600, 5000).await;
    assert_eq!(result.deleted, 1);
    assert_eq!(result.oldest_retained.get("runtime.extra"), Some(&None));
    assert_eq!(result.oldest_retained.len(), 4);
    env.finish().await;
}
