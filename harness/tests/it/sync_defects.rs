//! Each delivery defect of spec §15 (B9, B10, B20, B21) under `legacy` (the
//! test shows the defect) and `hardened` (the test shows it gone). Each pair
//! runs one scenario body and asserts what each profile must observe.

use crate::support::ok;
use crate::sync_client::{
    RUN_TOPIC, ShippedClientModel, SyncEnv, ago, batch_watermarks, cursor_pairs, doc_key,
};
use khala_runtime::Profile;
use khala_runtime::sync::hydration::TopicSnapshot;
use serde_json::{Value, json};
use std::collections::BTreeMap;

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
/// cursor (a web page load, a brand-new shipped client) subscribes.
async fn no_cursor_after_prune(profile: Profile) -> Seen {
    let sync = SyncEnv::start_with(profile, |config| config.retention_horizon_seconds = 3600).await;
    sync.insert_run_event(1, ago(7200)).await;
    sync.insert_run_event(2, ago(7200)).await;
    sync.insert_run_event(3, ago(60)).await;
    assert_eq!(prune(&sync).await, 2);
    let seen = subscribe_then_write(&sync, json!({"topics": [RUN_TOPIC]}), &[4]).await;
    sync.finish().await;
    seen
}

#[tokio::test]
async fn b10_legacy_a_subscribe_without_cursor_replays_the_retained_tail_with_no_stale_signal() {
    let seen = no_cursor_after_prune(Profile::Legacy).await;
    assert_eq!(seen.status, "ok");
    assert_eq!(
        seen.replayed,
        vec![3],
        "documents of events 1 and 2 never arrive"
    );
    assert_eq!(seen.live, Some(vec![4]));
}

#[tokio::test]
async fn b10_hardened_a_subscribe_without_cursor_gets_the_read_model_at_the_floor_then_the_journal()
{
    let seen = no_cursor_after_prune(Profile::Hardened).await;
    assert_eq!(seen.status, "ok");
    assert_eq!(
        seen.replayed,
        vec![2, 2, 2, 3],
        "three read-model rows at the floor, then journal row 3"
    );
    assert_eq!(
        cursor_pairs(&seen.response["current_watermarks"]),
        vec![(RUN_TOPIC.to_owned(), 3)]
    );
    assert_eq!(seen.live, Some(vec![4]));
}

#[tokio::test]
async fn b10_hardened_a_brand_new_shipped_client_receives_every_retained_document() {
    let sync = SyncEnv::start_with(Profile::Hardened, |config| {
        config.retention_horizon_seconds = 3600;
        // Two snapshot batches for three rows: the watermark stays valid
        // between them.
        config.replay_batch_size = 2;
    })
    .await;
    sync.insert_run_event(1, ago(7200)).await;
    sync.insert_run_event(2, ago(7200)).await;
    sync.insert_run_event(3, ago(60)).await;
    assert_eq!(prune(&sync).await, 2);
    let mut client = sync.connect().await;
    client.join_as_shipped_client().await.reply.ok();
    let mut shipped = ShippedClientModel::new(RUN_TOPIC);
    let exchange = shipped.subscribe(&mut client).await;
    exchange.reply.ok();
    let batches = exchange.batches();
    assert_eq!(
        batches
            .iter()
            .map(|batch| (batch["snapshot"].clone(), batch_watermarks(batch)))
            .collect::<Vec<_>>(),
        vec![
            (json!(true), vec![2, 2]),
            (json!(true), vec![2]),
            (Value::Null, vec![3])
        ]
    );
    assert_eq!(
        shipped.versions(),
        sync.read_model_versions(RUN_TOPIC).await,
        "every document, pruned or not, at its version"
    );
    assert_eq!(shipped.stored, Some(3));
    // And it stays live.
    sync.insert_run_event(4, sync.now()).await;
    shipped.apply(&client.next_batch().await);
    assert_eq!(shipped.stored, Some(4));
    sync.finish().await;
}

/// A shipped client saw rows 1 and 2, went offline; rows 3 (old) and 4
/// were written; retention pruned 1..3. It reconnects with cursor 2,
/// which is below the floor; as the shipped client does, it clears the
/// cursor and subscribes again without one. Returns the stale answer and
/// the client with the read model it should converge to.
async fn pruned_while_offline(
    profile: Profile,
) -> (Value, ShippedClientModel, BTreeMap<String, i64>) {
    let sync = SyncEnv::start_with(profile, |config| config.retention_horizon_seconds = 3600).await;
    sync.insert_run_event(1, ago(7200)).await;
    sync.insert_run_event(2, ago(7200)).await;
    let mut shipped = ShippedClientModel::new(RUN_TOPIC);
    let mut client = sync.connect().await;
    client.join_as_shipped_client().await.reply.ok();
    shipped.subscribe(&mut client).await.reply.ok();
    assert_eq!(shipped.stored, Some(2));
    client.close().await;
    sync.insert_run_event(3, ago(7200)).await;
    sync.insert_run_event(4, ago(60)).await;
    assert_eq!(prune(&sync).await, 3);
    let mut client = sync.connect().await;
    client.join_as_shipped_client().await.reply.ok();
    let stale = shipped.subscribe(&mut client).await;
    assert_eq!(
        stale.pushes_of("sync:error"),
        vec![stale.reply.error().clone()]
    );
    assert_eq!(shipped.stored, None, "the client cleared its cursor");
    shipped.subscribe(&mut client).await.reply.ok();
    let read_model = sync.read_model_versions(RUN_TOPIC).await;
    sync.finish().await;
    (stale.reply.response, shipped, read_model)
}

#[tokio::test]
async fn b10_hardened_a_cursor_pruned_while_offline_is_stale_and_the_shipped_recovery_converges() {
    let (stale_answer, shipped, read_model) = pruned_while_offline(Profile::Hardened).await;
    assert_eq!(
        stale_answer,
        stale(json!({"topic": RUN_TOPIC, "resume_after": 2, "retention_floor": 3}))
    );
    assert_eq!(shipped.versions(), read_model);
    assert_eq!(shipped.stored, Some(4));
}

#[tokio::test]
async fn b10_legacy_the_shipped_recovery_from_a_pruned_cursor_misses_the_pruned_document() {
    let (stale_answer, shipped, read_model) = pruned_while_offline(Profile::Legacy).await;
    assert_eq!(stale_answer["code"], "stale_cursor");
    let missing: Vec<&String> = read_model
        .keys()
        .filter(|key| !shipped.versions().contains_key(*key))
        .collect();
    assert_eq!(
        missing,
        [&doc_key(RUN_TOPIC, 3)],
        "row 3 was pruned before the client saw it"
    );
    assert_eq!(shipped.stored, Some(4));
}

#[tokio::test]
async fn b10_hardened_our_lanes_hydrate_over_http_and_the_snapshot_watermark_is_a_valid_cursor() {
    // Our client lanes still recover through the hydration list: its
    // watermark resumes without a stale answer and without a replay.
    let sync = SyncEnv::start_with(Profile::Hardened, |config| {
        config.retention_horizon_seconds = 3600;
    })
    .await;
    sync.insert_run_event(1, ago(7200)).await;
    sync.insert_run_event(2, ago(7200)).await;
    sync.insert_run_event(3, ago(60)).await;
    assert_eq!(prune(&sync).await, 2);
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
    assert_eq!(keys, [1, 2, 3].map(|w| doc_key(RUN_TOPIC, w)));
    assert_eq!(snapshot.watermark, 3);
    let resumed = subscribe_then_write(
        &sync,
        json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: snapshot.watermark}}),
        &[4],
    )
    .await;
    assert_eq!(resumed.status, "ok");
    assert_eq!(resumed.replayed, Vec::<i64>::new());
    assert_eq!(resumed.live, Some(vec![4]));
    sync.finish().await;
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

#[tokio::test]
async fn b20_hardened_the_shipped_client_recovers_from_a_cursor_above_head() {
    let sync = SyncEnv::start(Profile::Hardened).await;
    sync.insert_run_events(1..=3).await;
    let mut shipped = ShippedClientModel::new(RUN_TOPIC);
    shipped.stored = Some(5);
    let mut client = sync.connect().await;
    client.join_as_shipped_client().await.reply.ok();
    shipped.subscribe(&mut client).await.reply.error();
    let replay = shipped.subscribe(&mut client).await;
    assert_eq!(replay.delivered(), vec![1, 2, 3]);
    for watermark in 4..=6 {
        sync.insert_run_event(watermark, sync.now()).await;
        shipped.apply(&client.next_batch().await);
    }
    assert_eq!(
        shipped.versions(),
        sync.read_model_versions(RUN_TOPIC).await
    );
    assert_eq!(shipped.stored, Some(6));
    sync.finish().await;
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
