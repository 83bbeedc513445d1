//! Delivery over real WebSockets (spec §7.3–§7.5): replay batches (D1),
//! reconnects (D2), the stale-cursor rule (D3), topic checks (D4), live
//! batches after commit, and pointer mode with HTTP hydration.

use crate::fixtures::{self, Env};
use crate::support::ok;
use crate::sync_client::{
    RUN_TOPIC, SyncClient, SyncEnv, WORKER_TOPIC, ago, batch_watermarks, cursor_pairs, insert_event,
};
use base64::Engine;
use khala_runtime::sink::PayloadMode;
use khala_runtime::sync::retention;
use khala_runtime::{Profile, ProjectionKind, Runtime, RuntimeConfig, SinkMode};
use serde_json::{Value, json};

fn pairs(items: &[(&str, i64)]) -> Vec<(String, i64)> {
    items
        .iter()
        .map(|(topic, watermark)| ((*topic).to_owned(), *watermark))
        .collect()
}

#[tokio::test]
async fn join_replies_with_a_subscription_id_and_the_allowed_topics_in_token_order() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let token =
        sync.token_with_raw_scopes(json!([WORKER_TOPIC, "admin", 3, RUN_TOPIC, WORKER_TOPIC]));
    let mut client = SyncClient::connect(&sync.server.websocket_url(&token))
        .await
        .expect("accepted");
    let joined = client.join().await;
    let id = joined["subscription_id"].as_str().expect("id");
    assert!(
        id.strip_prefix("sub_")
            .is_some_and(|n| n.parse::<u64>().expect("number") > 0)
    );
    assert_eq!(joined["allowed_topics"], json!([WORKER_TOPIC, RUN_TOPIC]));
    assert_eq!(joined["current_watermarks"], json!([]));
    let mut second = sync.connect().await;
    assert_ne!(
        second.join().await["subscription_id"],
        joined["subscription_id"]
    );
    assert_eq!(sync.server.active_channels(), 2);
    sync.finish().await;
}

#[tokio::test]
async fn d1_replay_pushes_batches_up_to_the_client_size_and_marks_the_last_complete() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    sync.insert_run_events(1..=5).await;
    let mut client = sync.joined().await;
    let exchange = client
        .subscribe(json!({"topics": [RUN_TOPIC], "replay_batch_size": 2}))
        .await;
    let batches = exchange.batches();
    let shape: Vec<(Vec<i64>, bool, Value)> = batches
        .iter()
        .map(|batch| {
            (
                batch_watermarks(batch),
                batch["replay_complete"].as_bool().expect("bool"),
                batch["head_watermarks"].clone(),
            )
        })
        .collect();
    let head = json!([{"topic": RUN_TOPIC, "watermark": 5}]);
    assert_eq!(
        shape,
        vec![
            (vec![1, 2], false, head.clone()),
            (vec![3, 4], false, head.clone()),
            (vec![5], true, head),
        ]
    );
    let reply = exchange.reply.ok();
    assert_eq!(reply["topics"], json!([RUN_TOPIC]));
    assert_eq!(
        cursor_pairs(&reply["current_watermarks"]),
        pairs(&[(RUN_TOPIC, 5)])
    );
    assert!(
        reply["subscription_id"]
            .as_str()
            .expect("id")
            .starts_with("sub_")
    );
    // Every update carries the row: inline payload and its hash.
    let update = &batches[0]["updates"][0];
    assert_eq!(update["doc_key"], "runtime/run_summary:e1");
    assert_eq!(update["doc_version"], 1);
    assert_eq!(update["hydration_required"], false);
    assert_eq!(
        update["payload"],
        crate::sync_client::event_payload(RUN_TOPIC, 1)
    );
    let hash = khala_runtime::hashing::payload_hash(&update["payload"]);
    assert_eq!(
        update["payload_hash"],
        base64::engine::general_purpose::STANDARD.encode(hash)
    );
    sync.finish().await;
}

#[tokio::test]
async fn d1_without_a_client_size_the_config_batch_size_applies_and_empty_topics_push_nothing() {
    let sync = SyncEnv::start_with(Profile::Legacy, |config| config.replay_batch_size = 3).await;
    sync.insert_run_events(1..=7).await;
    let mut client = sync.joined().await;
    let exchange = client
        .subscribe(json!({"topics": [WORKER_TOPIC, RUN_TOPIC], "replay_batch_size": 0}))
        .await;
    let delivered: Vec<Vec<i64>> = exchange.batches().iter().map(batch_watermarks).collect();
    assert_eq!(delivered, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
    assert_eq!(
        cursor_pairs(&exchange.reply.ok()["current_watermarks"]),
        pairs(&[(WORKER_TOPIC, 0), (RUN_TOPIC, 7)]),
        "in request order"
    );
    sync.finish().await;
}

#[tokio::test]
async fn spec_7_4_resume_after_one_then_a_live_batch_after_commit() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    for run in ["run_1", "run_2", "run_3"] {
        sync.project_new_run(run).await;
    }
    let mut client = sync.joined().await;
    let exchange = client
        .subscribe(json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: 1}}))
        .await;
    let batches = exchange.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batch_watermarks(&batches[0]), vec![2, 3]);
    assert_eq!(batches[0]["replay_complete"], true);
    assert_eq!(
        batches[0]["head_watermarks"],
        json!([{"topic": RUN_TOPIC, "watermark": 3}])
    );
    assert_eq!(
        cursor_pairs(&exchange.reply.ok()["current_watermarks"]),
        pairs(&[(RUN_TOPIC, 3)])
    );

    // A projection commits and wakes the channel: one live batch, inline.
    let doc_key = sync.project_new_run("run_4").await;
    let live = client.next_batch().await;
    assert_eq!(batch_watermarks(&live), vec![4]);
    assert_eq!(
        live["head_watermarks"],
        json!([{"topic": RUN_TOPIC, "watermark": 4}])
    );
    let (version, payload, _) =
        fixtures::read_model(sync.env.pool(), ProjectionKind::RunSummary, &doc_key)
            .await
            .expect("read model");
    let update = &live["updates"][0];
    assert_eq!(
        (update["doc_key"].as_str(), update["doc_version"].as_i64()),
        (Some(doc_key.as_str()), Some(version))
    );
    assert_eq!(update["payload"], payload);
    // The heartbeat reports the cursor the live path reached.
    let heartbeat = client.heartbeat().await;
    assert_eq!(
        cursor_pairs(&heartbeat.reply.ok()["watermarks"]),
        pairs(&[(RUN_TOPIC, 4)])
    );
    sync.finish().await;
}

#[tokio::test]
async fn live_batches_ignore_unsubscribed_topics_and_the_wake_watermark() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let mut client = sync.joined().await;
    client
        .subscribe(json!({"topics": [RUN_TOPIC, WORKER_TOPIC]}))
        .await
        .reply
        .ok();
    let unsubscribed = client
        .request("sync:unsubscribe", json!({"topics": [WORKER_TOPIC, " "]}))
        .await;
    assert_eq!(unsubscribed.reply.ok()["topics"], json!([RUN_TOPIC]));
    insert_event(sync.env.pool(), WORKER_TOPIC, 1, fixtures::start_time()).await;
    sync.runtime
        .notifier()
        .wake(khala_runtime::notifier::StreamWake {
            topic: WORKER_TOPIC.into(),
            watermark: 1,
        });
    // A wake naming a watermark far ahead: the channel replays from its cursor.
    insert_event(sync.env.pool(), RUN_TOPIC, 1, fixtures::start_time()).await;
    insert_event(sync.env.pool(), RUN_TOPIC, 2, fixtures::start_time()).await;
    sync.runtime
        .notifier()
        .wake(khala_runtime::notifier::StreamWake {
            topic: RUN_TOPIC.into(),
            watermark: 99,
        });
    let barrier = client.heartbeat().await;
    assert_eq!(
        barrier.delivered(),
        vec![1, 2],
        "no worker update after unsubscribe"
    );
    assert_eq!(
        cursor_pairs(&barrier.reply.ok()["watermarks"]),
        pairs(&[(RUN_TOPIC, 2)])
    );
    sync.finish().await;
}

#[tokio::test]
async fn d2_reconnecting_with_the_last_watermark_loses_and_repeats_nothing() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let mut received = Vec::new();
    let mut client = sync.joined().await;
    let first = client.subscribe(json!({"topics": [RUN_TOPIC]})).await;
    assert!(first.batches().is_empty());
    for run in ["run_1", "run_2", "run_3"] {
        sync.project_new_run(run).await;
        received.extend(client.next_batch_watermarks().await);
    }
    let last = *received.last().expect("received");
    // A forced close: the socket is dropped without a close frame.
    drop(client);
    for run in ["run_4", "run_5", "run_6"] {
        sync.project_new_run(run).await;
    }
    let mut client = sync.joined().await;
    let resumed = client
        .subscribe(json!({"topics": [RUN_TOPIC], "resume_after": [{"topic": RUN_TOPIC, "watermark": last}]}))
        .await;
    received.extend(resumed.delivered());
    assert_eq!(received, (1..=6).collect::<Vec<i64>>());
    assert_eq!(
        cursor_pairs(&resumed.reply.ok()["current_watermarks"]),
        pairs(&[(RUN_TOPIC, 6)])
    );
    // And a polite close, then a resume at the head: nothing to replay.
    client.close().await;
    let mut client = sync.joined().await;
    let idle = client
        .subscribe(json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: 6}}))
        .await;
    assert!(idle.batches().is_empty());
    assert_eq!(
        cursor_pairs(&idle.reply.ok()["current_watermarks"]),
        pairs(&[(RUN_TOPIC, 6)])
    );
    sync.finish().await;
}

/// Rows at −7200 s and −60 s and a horizon of 3600 s (spec §7.5): row 1 is
/// deleted, so the floor is 1.
async fn spec_stale_example(profile: Profile) -> SyncEnv {
    let sync = SyncEnv::start(profile).await;
    sync.insert_run_event(1, ago(7200)).await;
    sync.insert_run_event(2, ago(60)).await;
    insert_event(sync.env.pool(), WORKER_TOPIC, 1, ago(60)).await;
    let result = ok(retention::run_once(
        sync.env.pool(),
        fixtures::start_time(),
        chrono::TimeDelta::seconds(3600),
        5000,
    )
    .await);
    assert_eq!(result.deleted, 1);
    sync
}

#[tokio::test]
async fn d3_a_cursor_below_the_floor_rejects_the_whole_subscribe_with_the_exact_payload() {
    for profile in Profile::ALL {
        let sync = spec_stale_example(profile).await;
        let mut client = sync.joined().await;
        let exchange = client
            .subscribe(json!({"topics": [WORKER_TOPIC, RUN_TOPIC], "resume_after": {RUN_TOPIC: 0, WORKER_TOPIC: 0}}))
            .await;
        let expected = json!({
            "code": "stale_cursor",
            "message": "cursor is older than retention floor",
            "full_resync_required": true,
            "stale_topics": [{"topic": RUN_TOPIC, "resume_after": 0, "retention_floor": 1}],
        });
        assert_eq!(exchange.reply.error(), &expected, "{profile}");
        assert_eq!(
            exchange.pushes_of("sync:error"),
            vec![expected],
            "{profile}"
        );
        assert!(
            exchange.batches().is_empty(),
            "{profile}: nothing replayed, not even the fresh topic"
        );
        // Not subscribed: a new row is not delivered, and no cursor exists.
        sync.insert_run_event(3, fixtures::start_time()).await;
        let barrier = client.heartbeat().await;
        assert!(barrier.batches().is_empty(), "{profile}");
        assert_eq!(barrier.reply.ok()["watermarks"], json!([]), "{profile}");
        sync.finish().await;
    }
}

#[tokio::test]
async fn d3_the_boundary_oldest_minus_one_is_accepted() {
    for profile in Profile::ALL {
        let sync = spec_stale_example(profile).await;
        let mut client = sync.joined().await;
        let exchange = client
            .subscribe(json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: 1}}))
            .await;
        assert_eq!(exchange.delivered(), vec![2], "{profile}");
        assert_eq!(
            cursor_pairs(&exchange.reply.ok()["current_watermarks"]),
            pairs(&[(RUN_TOPIC, 2)])
        );
        sync.finish().await;
    }
}

#[tokio::test]
async fn d4_unknown_then_unauthorised_topics_are_forbidden_and_malformed_subscriptions_are_bad() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let mut client = sync.connect_with(&[RUN_TOPIC]).await;
    let wrong_join = client.send("sync:v2", "phx_join", json!({})).await;
    assert_eq!(
        client.until_reply(&wrong_join).await.reply.error(),
        &json!({"code": "bad_topic"})
    );
    client.join().await;
    let cases = [
        (
            json!({"topics": ["nope", WORKER_TOPIC]}),
            json!({"code": "forbidden_topic", "forbidden_topics": ["nope"]}),
        ),
        (
            json!({"topics": ["SYNC_TOPIC_RUNTIME_RUN_SUMMARIES"]}),
            json!({"code": "forbidden_topic", "forbidden_topics": ["SYNC_TOPIC_RUNTIME_RUN_SUMMARIES"]}),
        ),
        (
            json!({"topics": [RUN_TOPIC, WORKER_TOPIC, "runtime.notifications"]}),
            json!({"code": "forbidden_topic", "forbidden_topics": [WORKER_TOPIC, "runtime.notifications"]}),
        ),
        (json!({"topics": []}), json!({"code": "bad_subscription"})),
        (
            json!({"topics": ["  ", 7]}),
            json!({"code": "bad_subscription"}),
        ),
        (
            json!({"topics": RUN_TOPIC}),
            json!({"code": "bad_subscription"}),
        ),
        (json!({}), json!({"code": "bad_subscription"})),
        (json!([RUN_TOPIC]), json!({"code": "bad_subscription"})),
        (
            json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: -1}}),
            json!({"code": "bad_subscription"}),
        ),
        (
            json!({"topics": [RUN_TOPIC], "resume_after": [{"topic": RUN_TOPIC}]}),
            json!({"code": "bad_subscription"}),
        ),
    ];
    for (payload, error) in cases {
        let exchange = client.subscribe(payload.clone()).await;
        assert_eq!(exchange.reply.error(), &error, "{payload}");
        assert!(exchange.pushes.is_empty(), "{payload}");
    }
    let unsubscribe = client
        .request("sync:unsubscribe", json!({"topics": "x"}))
        .await;
    assert_eq!(
        unsubscribe.reply.error(),
        &json!({"code": "bad_subscription"})
    );
    sync.finish().await;
}

#[tokio::test]
async fn pointer_mode_asks_for_hydration_and_http_serves_the_read_model() {
    let env = Env::new().await;
    let runtime = Runtime::new(
        env.pool().clone(),
        RuntimeConfig {
            payload_mode: PayloadMode::Pointer,
            ..fixtures::config(Profile::Hardened, SinkMode::KhalaOnly)
        },
    );
    let sync = SyncEnv::serve(env, runtime, Profile::Hardened, |_| {}).await;
    let doc_key = sync.project_new_run("run_1").await;
    let mut client = sync.joined().await;
    let exchange = client.subscribe(json!({"topics": [RUN_TOPIC]})).await;
    let update = exchange.batches()[0]["updates"][0].clone();
    assert_eq!(update["payload"], Value::Null);
    assert_eq!(update["hydration_required"], true);
    let (version, payload, hash) =
        fixtures::read_model(sync.env.pool(), ProjectionKind::RunSummary, &doc_key)
            .await
            .expect("read model");
    assert_eq!(
        update["payload_hash"],
        base64::engine::general_purpose::STANDARD.encode(hash.expect("hash"))
    );

    let http = reqwest::Client::new();
    let get = async |path: &str, token: Option<&str>| {
        let mut request = http.get(sync.server.http_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("http request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, body)
    };
    let run_token = sync.token(&[RUN_TOPIC]);
    let worker_token = sync.token(&[WORKER_TOPIC]);
    let (status, body) = get(&format!("/sync/v1/doc/{doc_key}"), Some(&run_token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"doc_key": doc_key, "doc_version": version, "payload": payload})
    );
    let encoded = doc_key.replace('/', "%2F");
    assert_eq!(
        get(&format!("/sync/v1/doc/{encoded}"), Some(&run_token))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&format!("/sync/v1/doc/{doc_key}"), None).await,
        (403, Value::Null)
    );
    assert_eq!(
        get(&format!("/sync/v1/doc/{doc_key}"), Some("not.a.token"))
            .await
            .0,
        403
    );
    assert_eq!(
        get(&format!("/sync/v1/doc/{doc_key}"), Some(&worker_token)).await,
        (403, Value::Null)
    );
    assert_eq!(
        get("/sync/v1/doc/runtime/run_summary:missing", Some(&run_token))
            .await
            .0,
        404
    );
    assert_eq!(
        get("/sync/v1/doc/elsewhere:1", Some(&run_token)).await.0,
        404
    );

    let (status, list) = get(
        &format!("/sync/v1/docs?topic={RUN_TOPIC}"),
        Some(&run_token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"topic": RUN_TOPIC, "watermark": 1, "docs": [{"doc_key": doc_key, "doc_version": version, "payload": payload}]})
    );
    assert_eq!(
        get(
            &format!("/sync/v1/docs?topic={RUN_TOPIC}"),
            Some(&worker_token)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        get("/sync/v1/docs?topic=nope", Some(&run_token)).await.0,
        404
    );
    assert_eq!(get("/sync/v1/docs", Some(&run_token)).await.0, 400);
    let notifications = sync.token(&["runtime.notifications"]);
    assert_eq!(
        get(
            "/sync/v1/docs?topic=runtime.notifications",
            Some(&notifications)
        )
        .await,
        (
            200,
            json!({"topic": "runtime.notifications", "watermark": 0, "docs": []})
        )
    );
    sync.finish().await;
}

#[tokio::test]
async fn the_wake_poller_wakes_exactly_the_topics_whose_counter_moved() {
    let env = Env::new().await;
    let notifier = khala_runtime::notifier::Notifier::new();
    let mut wakes = notifier.subscribe();
    let mut seen = std::collections::BTreeMap::new();
    let poll = async |seen: &mut std::collections::BTreeMap<String, i64>| {
        ok(khala_runtime::sync::wake_poller::poll_once(env.pool(), &notifier, seen).await)
    };
    assert_eq!(
        poll(&mut seen).await,
        3,
        "the first poll wakes every seeded topic"
    );
    for _ in 0..3 {
        wakes.try_recv().expect("seeded topic wake");
    }
    assert_eq!(poll(&mut seen).await, 0);
    insert_event(env.pool(), RUN_TOPIC, 4, fixtures::start_time()).await;
    assert_eq!(poll(&mut seen).await, 1);
    let wake = wakes.try_recv().expect("a wake");
    assert_eq!((wake.topic.as_str(), wake.watermark), (RUN_TOPIC, 4));
    assert!(wakes.try_recv().is_err());
    env.finish().await;
}
