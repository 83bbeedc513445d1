//! Each delivery defect of spec §15 (B9, B10, B20, B21) under `legacy` (the
//! test shows the defect) and `hardened` (the test shows it gone). Each pair
//! runs one scenario body and asserts what each profile must observe.

use crate::support::ok;
use crate::sync_client::{RUN_TOPIC, SyncEnv, ago, cursor_pairs, doc_key};
use khala_runtime::Profile;
use khala_runtime::sync::hydration::TopicSnapshot;
use serde_json::{Value, json};

/// A subscribe's outcome and what the client got afterwards.
#[derive(Debug)]
struct Seen {
    status: String,
    response: Value,
    /// Watermarks replayed by the subscribe.
    replayed: Vec<i64>,
    /// Watermarks of the first live batch after new rows, if subscribed.
    live: Option<Vec<i64>>,
}

async fn prune(sync: &SyncEnv) -> u64 {
    ok(sync.server.run_retention_once().await).deleted
}

/// Subscribes with `payload`; when accepted, inserts `new_rows` (waking the
/// server) and records the first live batch.
async fn subscribe_then_write(sync: &SyncEnv, payload: Value, new_rows: &[i64]) -> Seen {
    let mut client = sync.joined().await;
    let exchange = client.subscribe(payload).await;
    let replayed = exchange.delivered();
    let live = if exchange.reply.status == "ok" {
        for watermark in new_rows {
            sync.insert_run_event(*watermark, sync.now()).await;
        }
        Some(client.next_batch_watermarks().await)
    } else {
        None
    };
    Seen {
        status: exchange.reply.status,
        response: exchange.reply.response,
        replayed,
        live,
    }
}

fn stale(entry: Value) -> Value {
    json!({
        "code": "stale_cursor",
        "message": "cursor is older than retention floor",
        "full_resync_required": true,
        "stale_topics": [entry],
    })
}

/// B9: rows 1 and 2 are older than the horizon and both are pruned; the
/// client saw only row 1 and resumes after it. The journal of the topic is
/// empty, so `oldest` is nil.
async fn full_prune(profile: Profile) -> Seen {
    let sync = SyncEnv::start_with(profile, |config| config.retention_horizon_seconds = 3600).await;
    sync.insert_run_event(1, ago(7200)).await;
    sync.insert_run_event(2, ago(7200)).await;
    assert_eq!(prune(&sync).await, 2);
    let seen = subscribe_then_write(
        &sync,
        json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: 1}}),
        &[3],
    )
    .await;
    sync.finish().await;
    seen
}

#[tokio::test]
async fn b9_legacy_a_fully_pruned_topic_is_never_stale_and_the_pruned_event_is_silently_lost() {
    let seen = full_prune(Profile::Legacy).await;
    assert_eq!(seen.status, "ok");
    assert_eq!(
        cursor_pairs(&seen.response["current_watermarks"]),
        vec![(RUN_TOPIC.to_owned(), 1)]
    );
    assert_eq!(seen.replayed, Vec::<i64>::new());
    assert_eq!(seen.live, Some(vec![3]), "watermark 2 was never delivered");
}

#[tokio::test]
async fn b9_hardened_the_pruned_through_watermark_keeps_the_floor_after_a_full_prune() {
    let seen = full_prune(Profile::Hardened).await;
    assert_eq!(seen.status, "error");
    assert_eq!(
        seen.response,
        stale(json!({"topic": RUN_TOPIC, "resume_after": 1, "retention_floor": 2}))
    );
}

/// B9 (holes): a node with a skewed clock stamped row 2 two hours early, so
/// retention deletes it and keeps rows 1 and 3.
async fn pruning_hole(profile: Profile) -> Seen {
    let sync = SyncEnv::start_with(profile, |config| config.retention_horizon_seconds = 3600).await;
    sync.insert_run_event(1, ago(60)).await;
    sync.insert_run_event(2, ago(7200)).await;
    sync.insert_run_event(3, ago(30)).await;
    assert_eq!(prune(&sync).await, 1);
    let seen = subscribe_then_write(
        &sync,
        json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: 1}}),
        &[4],
    )
    .await;
    sync.finish().await;
    seen
}

#[tokio::test]
async fn b9_legacy_a_hole_above_the_oldest_row_is_invisible_to_the_stale_check() {
    let seen = pruning_hole(Profile::Legacy).await;
    assert_eq!(seen.status, "ok");
    assert_eq!(
        seen.replayed,
        vec![3],
        "watermark 2 skipped without a signal"
    );
}

#[tokio::test]
async fn b9_hardened_a_hole_raises_the_floor_to_the_highest_pruned_watermark() {
    let seen = pruning_hole(Profile::Hardened).await;
    assert_eq!(
        (seen.status.as_str(), seen.response),
        (
            "error",
            stale(json!({"topic": RUN_TOPIC, "resume_after": 1, "retention_floor": 2}))
        )
    );
}

/// B10: rows 1 and 2 are pruned, row 3 is retained; a client with no stored
/// cursor (a web page load) subscribes.
async fn no_cursor_after_prune(profile: Profile) -> (Seen, Option<Vec<i64>>) {
    let sync = SyncEnv::start_with(profile, |config| config.retention_horizon_seconds = 3600).await;
    sync.insert_run_event(1, ago(7200)).await;
    sync.insert_run_event(2, ago(7200)).await;
    sync.insert_run_event(3, ago(60)).await;
    assert_eq!(prune(&sync).await, 2);
    let seen = subscribe_then_write(&sync, json!({"topics": [RUN_TOPIC]}), &[4]).await;
    // The hardened client's way back: hydrate over HTTP, then resume after
    // the snapshot's watermark.
    let recovered = if seen.status == "error" {
        let token = sync.token(&[RUN_TOPIC]);
        let snapshot: TopicSnapshot = reqwest::Client::new()
            .get(
                sync.server
                    .http_url(&format!("/sync/v1/docs?topic={RUN_TOPIC}")),
            )
            .bearer_auth(token)
            .send()
            .await
            .expect("hydration request")
            .json()
            .await
            .expect("snapshot");
        let keys: Vec<&str> = snapshot
            .docs
            .iter()
            .map(|doc| doc.doc_key.as_str())
            .collect();
        assert_eq!(
            keys,
            [1, 2, 3].map(|w| doc_key(RUN_TOPIC, w)),
            "the read model keeps every document"
        );
        assert_eq!(snapshot.watermark, 3);
        let resumed = subscribe_then_write(
            &sync,
            json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: snapshot.watermark}}),
            &[4],
        )
        .await;
        assert_eq!(resumed.status, "ok");
        assert_eq!(resumed.replayed, Vec::<i64>::new());
        let mut delivered = resumed.replayed;
        delivered.extend(resumed.live.expect("subscribed"));
        Some(delivered)
    } else {
        None
    };
    sync.finish().await;
    (seen, recovered)
}

#[tokio::test]
async fn b10_legacy_a_subscribe_without_cursor_replays_the_retained_tail_with_no_stale_signal() {
    let (seen, _) = no_cursor_after_prune(Profile::Legacy).await;
    assert_eq!(seen.status, "ok");
    assert_eq!(
        seen.replayed,
        vec![3],
        "documents of events 1 and 2 never arrive"
    );
    assert_eq!(seen.live, Some(vec![4]));
}

#[tokio::test]
async fn b10_hardened_no_cursor_after_a_prune_is_stale_and_http_hydration_gives_the_resume_point() {
    let (seen, recovered) = no_cursor_after_prune(Profile::Hardened).await;
    assert_eq!(seen.status, "error");
    assert_eq!(
        seen.response,
        stale(json!({"topic": RUN_TOPIC, "resume_after": null, "retention_floor": 2}))
    );
    assert_eq!(
        recovered,
        Some(vec![4]),
        "after hydration only new events arrive"
    );
}

/// B20: the journal holds 1..3 (say, after a restore) and the client resumes
/// after 5; then rows 4, 5 and 6 are written.
async fn cursor_ahead(profile: Profile) -> Seen {
    let sync = SyncEnv::start(profile).await;
    sync.insert_run_events(1..=3).await;
    let seen = subscribe_then_write(
        &sync,
        json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: 5}}),
        &[4, 5, 6],
    )
    .await;
    sync.finish().await;
    seen
}

#[tokio::test]
async fn b20_legacy_a_cursor_above_head_keeps_it_and_never_gets_the_events_below_it() {
    let seen = cursor_ahead(Profile::Legacy).await;
    assert_eq!(seen.status, "ok");
    assert_eq!(
        cursor_pairs(&seen.response["current_watermarks"]),
        vec![(RUN_TOPIC.to_owned(), 5)]
    );
    assert_eq!(seen.replayed, Vec::<i64>::new());
    assert_eq!(seen.live, Some(vec![6]), "4 and 5 are never delivered");
}

#[tokio::test]
async fn b20_hardened_a_cursor_above_head_is_stale_with_the_head() {
    let seen = cursor_ahead(Profile::Hardened).await;
    assert_eq!(seen.status, "error");
    assert_eq!(
        seen.response,
        stale(
            json!({"topic": RUN_TOPIC, "resume_after": 5, "retention_floor": 0, "head_watermark": 3})
        )
    );
}

/// B21: rows 1..5; the client resumes after 3 but its key has a stray space.
async fn untrimmed_key(profile: Profile) -> Seen {
    let sync = SyncEnv::start(profile).await;
    sync.insert_run_events(1..=5).await;
    let key = format!(" {RUN_TOPIC}");
    let seen = subscribe_then_write(
        &sync,
        json!({"topics": [RUN_TOPIC], "resume_after": {key: 3}}),
        &[6],
    )
    .await;
    sync.finish().await;
    seen
}

#[tokio::test]
async fn b21_legacy_an_untrimmed_resume_key_is_ignored_and_the_topic_replays_from_zero() {
    let seen = untrimmed_key(Profile::Legacy).await;
    assert_eq!(seen.replayed, vec![1, 2, 3, 4, 5], "1..3 delivered twice");
}

#[tokio::test]
async fn b21_hardened_resume_keys_are_trimmed() {
    let seen = untrimmed_key(Profile::Hardened).await;
    assert_eq!(seen.replayed, vec![4, 5]);
    assert_eq!(seen.live, Some(vec![6]));
}
