//! Client lanes of every surface against a real sync server: flag flips
//! converge to the read model (X3-style), reconnects resume from the stored
//! watermark with no gap and no duplicate, pointer mode and stale cursors
//! fall back to HTTP hydration.

use crate::clients_fixtures::{
    delivered, head, lane, lane_with_rule, project_worker, read_model, store_for,
};
use crate::fixtures::{self, Env};
use crate::support::ok;
use crate::sync_client::{SyncEnv, WORKER_TOPIC, ago, insert_event};
use khala_clients::{ApplyRule, PersistedWatermarkStore, Surface, WatermarkStore};
use khala_runtime::sink::PayloadMode;
use khala_runtime::{Profile, Runtime, RuntimeConfig, SinkMode};
use std::sync::Arc;

/// Flag on with a stream of projections, off in the middle (the legacy lane
/// polls), on again: after each catch-up the view is the read model, and
/// the Khala deliveries of the whole session are `1..=head` exactly once.
async fn flip_converges(surface: Surface, profile: Profile, apply_rule: ApplyRule) {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let directory = ok(tempfile::tempdir());
    let mut lane = lane_with_rule(
        &sync,
        surface,
        profile,
        true,
        store_for(surface, directory.path()),
        apply_rule,
    );
    ok(lane.start().await);
    for _ in 0..3 {
        project_worker(&sync, "w1").await;
        project_worker(&sync, "w2").await;
    }
    let pool = sync.env.pool().clone();
    ok(lane.await_watermark(WORKER_TOPIC, head(&pool).await).await);
    assert_eq!(
        lane.view(),
        read_model(&pool).await,
        "{surface} {profile:?} on"
    );

    ok(lane.set_flag(false).await);
    assert!(!lane.is_connected());
    project_worker(&sync, "w1").await;
    project_worker(&sync, "w3").await;
    assert_ne!(lane.view(), read_model(&pool).await, "nothing polled yet");
    assert!(ok(lane.poll().await));
    assert_eq!(
        lane.view(),
        read_model(&pool).await,
        "{surface} {profile:?} off"
    );
    project_worker(&sync, "w2").await;
    project_worker(&sync, "w4").await;

    ok(lane.set_flag(true).await);
    let caught_up = head(&pool).await;
    ok(lane.await_watermark(WORKER_TOPIC, caught_up).await);
    assert_eq!(
        lane.view(),
        read_model(&pool).await,
        "{surface} {profile:?} on again"
    );
    project_worker(&sync, "w5").await;
    project_worker(&sync, "w1").await;
    let end = head(&pool).await;
    ok(lane.await_watermark(WORKER_TOPIC, end).await);
    assert_eq!(
        lane.view(),
        read_model(&pool).await,
        "{surface} {profile:?} live"
    );
    assert_eq!(delivered(&lane), (1..=end).collect::<Vec<_>>());
    lane.disconnect().await;
    sync.finish().await;
}

#[tokio::test]
async fn web_flips_converge_to_the_read_model() {
    for profile in Profile::ALL {
        flip_converges(Surface::Web, profile, ApplyRule::DocumentVersion).await;
    }
}

#[tokio::test]
async fn mobile_flips_converge_to_the_read_model() {
    for profile in Profile::ALL {
        flip_converges(Surface::Mobile, profile, ApplyRule::DocumentVersion).await;
    }
}

#[tokio::test]
async fn desktop_flips_converge_to_the_read_model() {
    for profile in Profile::ALL {
        flip_converges(Surface::Desktop, profile, ApplyRule::DocumentVersion).await;
    }
}

#[tokio::test]
async fn flips_converge_under_the_last_applied_seq_rule_too() {
    for surface in Surface::ALL {
        flip_converges(surface, Profile::Hardened, ApplyRule::LastAppliedSeq).await;
    }
}

/// A reconnect of the same lane, and a restart with a new lane over the same
/// persisted store, each resume after the stored watermark: no gap, no
/// duplicate.
async fn reconnect_resumes(surface: Surface) {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let pool = sync.env.pool().clone();
    let directory = ok(tempfile::tempdir());
    let store: Arc<dyn WatermarkStore> = Arc::new(PersistedWatermarkStore::new(directory.path()));
    let mut first = lane(&sync, surface, Profile::Hardened, true, store.clone());
    ok(first.start().await);
    project_worker(&sync, "w1").await;
    project_worker(&sync, "w2").await;
    ok(first.await_watermark(WORKER_TOPIC, 2).await);
    first.disconnect().await;
    project_worker(&sync, "w1").await;
    ok(first.reconnect().await);
    ok(first.await_watermark(WORKER_TOPIC, 3).await);
    assert_eq!(delivered(&first), vec![1, 2, 3]);
    assert_eq!(first.stats().connects, 2);
    assert_eq!(ok(store.load(WORKER_TOPIC)), Some(3));
    first.disconnect().await;

    project_worker(&sync, "w3").await;
    project_worker(&sync, "w2").await;
    // An app restart: a new lane, the store reopened from its file.
    let reopened: Arc<dyn WatermarkStore> =
        Arc::new(PersistedWatermarkStore::new(directory.path()));
    let mut second = lane(&sync, surface, Profile::Hardened, true, reopened);
    ok(second.start().await);
    let end = head(&pool).await;
    ok(second.await_watermark(WORKER_TOPIC, end).await);
    assert_eq!(delivered(&second), vec![4, 5]);
    let model = read_model(&pool).await;
    for (doc_key, payload) in second.view() {
        assert_eq!(Some(&payload), model.get(&doc_key), "{doc_key}");
    }
    second.disconnect().await;
    sync.finish().await;
}

#[tokio::test]
async fn mobile_reconnects_resume_from_the_persisted_watermark() {
    reconnect_resumes(Surface::Mobile).await;
}

#[tokio::test]
async fn desktop_reconnects_resume_from_the_persisted_watermark() {
    reconnect_resumes(Surface::Desktop).await;
}

#[tokio::test]
async fn the_web_store_is_in_memory_so_a_new_page_replays_everything_retained() {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let directory = ok(tempfile::tempdir());
    let mut first = lane(
        &sync,
        Surface::Web,
        Profile::Hardened,
        true,
        store_for(Surface::Web, directory.path()),
    );
    ok(first.start().await);
    project_worker(&sync, "w1").await;
    ok(first.await_watermark(WORKER_TOPIC, 1).await);
    first.disconnect().await;
    project_worker(&sync, "w1").await;
    let mut reload = lane(
        &sync,
        Surface::Web,
        Profile::Hardened,
        true,
        store_for(Surface::Web, directory.path()),
    );
    ok(reload.start().await);
    ok(reload.await_watermark(WORKER_TOPIC, 2).await);
    assert_eq!(delivered(&reload), vec![1, 2]);
    assert_eq!(reload.view(), read_model(sync.env.pool()).await);
    reload.disconnect().await;
    sync.finish().await;
}

#[tokio::test]
async fn pointer_updates_reload_the_view_over_http() {
    let env = Env::new().await;
    let runtime = Runtime::new(
        env.pool().clone(),
        RuntimeConfig {
            payload_mode: PayloadMode::Pointer,
            ..fixtures::config(Profile::Hardened, SinkMode::KhalaOnly)
        },
    );
    let sync = SyncEnv::serve(env, runtime, Profile::Hardened, |_| {}).await;
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
    project_worker(&sync, "w2").await;
    ok(lane.await_watermark(WORKER_TOPIC, 2).await);
    assert!(lane.stats().http_reloads >= 1);
    assert_eq!(lane.view(), read_model(sync.env.pool()).await);
    lane.disconnect().await;
    sync.finish().await;
}

#[tokio::test]
async fn a_stale_cursor_clears_the_store_rehydrates_and_resumes_from_the_snapshot() {
    let sync = SyncEnv::start_with(Profile::Hardened, |config| {
        config.retention_horizon_seconds = 3600;
    })
    .await;
    let pool = sync.env.pool().clone();
    insert_event(&pool, WORKER_TOPIC, 1, ago(7200)).await;
    insert_event(&pool, WORKER_TOPIC, 2, ago(7200)).await;
    insert_event(&pool, WORKER_TOPIC, 3, fixtures::start_time()).await;
    ok(sync.server.run_retention_once().await);
    let directory = ok(tempfile::tempdir());
    let store: Arc<dyn WatermarkStore> = Arc::new(PersistedWatermarkStore::new(directory.path()));
    ok(store.save(WORKER_TOPIC, 0));
    let mut lane = lane(
        &sync,
        Surface::Desktop,
        Profile::Legacy,
        true,
        store.clone(),
    );
    ok(lane.start().await);
    assert_eq!(lane.stats().stale_cursors, 1);
    assert_eq!(lane.stats().http_reloads, 1);
    assert_eq!(ok(store.load(WORKER_TOPIC)), Some(3));
    assert_eq!(lane.view(), read_model(&pool).await);
    assert!(delivered(&lane).is_empty(), "resumed after the snapshot");
    project_worker(&sync, "w1").await;
    let end = head(&pool).await;
    ok(lane.await_watermark(WORKER_TOPIC, end).await);
    assert_eq!(delivered(&lane), vec![end]);
    assert_eq!(lane.view(), read_model(&pool).await);
    lane.disconnect().await;
    sync.finish().await;
}
