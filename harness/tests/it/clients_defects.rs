//! Each client defect (B12, B13, B23) under legacy, and its hardened fix,
//! with real lanes on a real sync server.

use crate::clients_fixtures::{
    head, insert_worker_row, lane, project_worker, read_model, store_for,
};
use crate::support::ok;
use crate::sync_client::{SyncEnv, WORKER_TOPIC};
use chrono::TimeDelta;
use khala_clients::error::ClientErrorKind;
use khala_clients::{ClientSwitches, LaneEvent, Surface};
use khala_runtime::Profile;
use khala_runtime::sync::HeartbeatTick;
use serde_json::json;
use std::time::Duration;

/// Long enough for a local frame to arrive; the test expects none.
const NOTHING_ARRIVES_WITHIN: Duration = Duration::from_millis(500);

#[tokio::test]
async fn b12_legacy_the_channel_times_out_without_client_heartbeats() {
    // The original server too: the hardened one closes the socket with the
    // channel, which the lane notices and reconnects on.
    let sync = SyncEnv::start(Profile::Legacy).await;
    let directory = ok(tempfile::tempdir());
    let mut lane = lane(
        &sync,
        Surface::Web,
        Profile::Legacy,
        true,
        store_for(Surface::Web, directory.path()),
    );
    ok(lane.start().await);
    project_worker(&sync, "w1").await;
    ok(lane.await_watermark(WORKER_TOPIC, 1).await);
    sync.clock.advance(TimeDelta::seconds(59));
    ok(lane.tick().await);
    sync.clock.advance(TimeDelta::seconds(2));
    ok(lane.tick().await);
    assert_eq!(
        sync.server.tick_heartbeats().await,
        HeartbeatTick {
            connections: 1,
            heartbeats_pushed: 0,
            channels_closed: 1
        }
    );
    assert_eq!(ok(lane.next_event().await), LaneEvent::ChannelClosed);
    assert_eq!(lane.stats().heartbeats_sent, 0);
    // The lane ignores the close: its ticks do nothing and updates stop.
    ok(lane.tick().await);
    assert_eq!(sync.server.active_channels(), 0);
    project_worker(&sync, "w1").await;
    lane.set_frame_timeout(NOTHING_ARRIVES_WITHIN);
    let missed = lane
        .await_watermark(WORKER_TOPIC, head(sync.env.pool()).await)
        .await;
    assert!(matches!(
        missed.map_err(|error| error.kind),
        Err(ClientErrorKind::TimedOut(_))
    ));
    assert_ne!(
        lane.view(),
        read_model(sync.env.pool()).await,
        "the view is stale"
    );
    lane.disconnect().await;
    sync.finish().await;
}

#[tokio::test]
async fn b12_hardened_client_heartbeats_keep_the_channel_alive() {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let directory = ok(tempfile::tempdir());
    let mut lane = lane(
        &sync,
        Surface::Web,
        Profile::Hardened,
        true,
        store_for(Surface::Web, directory.path()),
    );
    ok(lane.start().await);
    project_worker(&sync, "w1").await;
    ok(lane.await_watermark(WORKER_TOPIC, 1).await);
    for _ in 0..3 {
        sync.clock.advance(TimeDelta::seconds(59));
        ok(lane.tick().await);
        sync.clock.advance(TimeDelta::seconds(2));
        assert_eq!(
            sync.server.tick_heartbeats().await,
            HeartbeatTick {
                connections: 1,
                heartbeats_pushed: 1,
                channels_closed: 0
            }
        );
    }
    assert_eq!(lane.stats().heartbeats_sent, 3);
    assert_eq!(sync.server.active_channels(), 1);
    project_worker(&sync, "w1").await;
    ok(lane
        .await_watermark(WORKER_TOPIC, head(sync.env.pool()).await)
        .await);
    assert_eq!(lane.view(), read_model(sync.env.pool()).await);
    assert_eq!(lane.stats().channel_closes_seen, 0);
    lane.disconnect().await;
    sync.finish().await;
}

#[tokio::test]
async fn b12_hardened_a_closed_channel_is_rejoined_on_the_next_tick() {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let directory = ok(tempfile::tempdir());
    let mut lane = lane(
        &sync,
        Surface::Mobile,
        Profile::Hardened,
        true,
        store_for(Surface::Mobile, directory.path()),
    );
    ok(lane.start().await);
    project_worker(&sync, "w1").await;
    ok(lane.await_watermark(WORKER_TOPIC, 1).await);
    // The app was suspended past the timeout: no tick of the lane ran.
    sync.clock.advance(TimeDelta::seconds(61));
    assert_eq!(sync.server.tick_heartbeats().await.channels_closed, 1);
    assert_eq!(ok(lane.next_event().await), LaneEvent::ChannelClosed);
    project_worker(&sync, "w2").await;
    ok(lane.tick().await);
    ok(lane.await_watermark(WORKER_TOPIC, 2).await);
    assert_eq!(lane.stats().joins, 2);
    assert_eq!(lane.view(), read_model(sync.env.pool()).await);
    lane.disconnect().await;
    sync.finish().await;
}

/// v9 then a late v8 of the same document in a later batch: the doc cache
/// keeps v9 either way (§7.9); only the legacy UI merge shows v8.
async fn b13_late_older_update(profile: Profile) -> (serde_json::Value, serde_json::Value) {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let doc_key = "runtime/codex_worker_summary:w1";
    insert_worker_row(&sync, 1, doc_key, 9, &json!({"v": 9}), true).await;
    let directory = ok(tempfile::tempdir());
    let mut lane = lane(
        &sync,
        Surface::Web,
        profile,
        true,
        store_for(Surface::Web, directory.path()),
    );
    ok(lane.start().await);
    ok(lane.await_watermark(WORKER_TOPIC, 1).await);
    // The read model keeps v9 (a guarded upsert); the journal carries v8.
    insert_worker_row(&sync, 2, doc_key, 8, &json!({"v": 8}), false).await;
    ok(lane.await_watermark(WORKER_TOPIC, 2).await);
    assert_eq!(lane.cached(doc_key).map(|doc| doc.doc_version), Some(9));
    assert_eq!(lane.watermark(WORKER_TOPIC), Some(2));
    let shown = lane.view()[doc_key].clone();
    let model = read_model(sync.env.pool()).await[doc_key].clone();
    lane.disconnect().await;
    sync.finish().await;
    (shown, model)
}

#[tokio::test]
async fn b13_legacy_an_older_update_overwrites_the_newer_row_shown() {
    let (shown, model) = b13_late_older_update(Profile::Legacy).await;
    assert_eq!(shown, json!({"v": 8}));
    assert_eq!(model, json!({"v": 9}));
}

#[tokio::test]
async fn b13_hardened_the_merge_keeps_the_newer_row() {
    let (shown, model) = b13_late_older_update(Profile::Hardened).await;
    assert_eq!(shown, json!({"v": 9}));
    assert_eq!(shown, model);
}

/// The desktop built with `OA_DESKTOP_KHALA_SYNC_ENABLED=<value>`: whether
/// the lane reached the Khala socket.
async fn desktop_uses_khala(profile: Profile, value: &str) -> bool {
    let sync = SyncEnv::start(Profile::Hardened).await;
    project_worker(&sync, "w1").await;
    let flag = Surface::Desktop.flag_enabled(
        |name| (name == "OA_DESKTOP_KHALA_SYNC_ENABLED").then(|| value.to_owned()),
        ClientSwitches::new(profile),
    );
    let directory = ok(tempfile::tempdir());
    let mut lane = lane(
        &sync,
        Surface::Desktop,
        profile,
        flag,
        store_for(Surface::Desktop, directory.path()),
    );
    ok(lane.start().await);
    let on_khala = lane.is_connected();
    assert_eq!(on_khala, sync.server.connections() == 1);
    assert_eq!(lane.stats().polls, usize::from(!on_khala));
    if on_khala {
        ok(lane.await_watermark(WORKER_TOPIC, 1).await);
    }
    assert_eq!(lane.view(), read_model(sync.env.pool()).await);
    lane.disconnect().await;
    sync.finish().await;
    on_khala
}

#[tokio::test]
async fn b23_legacy_desktop_reads_1_and_yes_as_off() {
    assert!(!desktop_uses_khala(Profile::Legacy, "1").await);
    assert!(!desktop_uses_khala(Profile::Legacy, "yes").await);
    assert!(desktop_uses_khala(Profile::Legacy, "true").await);
}

#[tokio::test]
async fn b23_hardened_desktop_uses_the_config_parsers_answer() {
    assert!(desktop_uses_khala(Profile::Hardened, "1").await);
    assert!(desktop_uses_khala(Profile::Hardened, "yes").await);
    assert!(!desktop_uses_khala(Profile::Hardened, "0").await);
}
