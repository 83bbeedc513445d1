//! Shipped-client liveness (issue 15) as cases play it: an idle shipped
//! client across the channel and socket timeouts under both profiles, a
//! brand-new shipped client on a pruned topic, and, over a real socket,
//! the replaced hardened B10 rule stranding the shipped client where the
//! current one serves it.

use crate::support::{self, ok};
use crate::sync_client::{RUN_TOPIC, SyncEnv, ago};
use chrono::TimeDelta;
use khala_clients::{MemoryWatermarkStore, ShippedConfig, ShippedLane, Surface};
use khala_parity::check::clients::LIVENESS_GAP_BOUND_SECONDS;
use khala_parity::model::case::{
    CASE_SCHEMA, Case, ClientUser, IdStyle, Start, Step, WorkerEventType,
};
use khala_parity::model::trace::{CaseResult, LaneKind, LaneObservation};
use khala_parity::play::driver::{self, Backends};
use khala_parity::run;
use khala_runtime::clock::Clock;
use khala_runtime::sync::server::WEBSOCKET_PATH;
use khala_runtime::{Profile, SinkMode};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A case with every web user on Khala, running today's lane and the
/// shipped client.
fn case(profile: Profile, steps: Vec<Step>) -> Case {
    let mut start = Start::new(SinkMode::Dual);
    start.flags.web = true;
    start.shipped_clients = vec![Surface::Web];
    Case {
        schema: CASE_SCHEMA.to_owned(),
        profile,
        start,
        ids: IdStyle::Plain,
        steps,
        origin: None,
    }
}

fn worker_event(worker: u8) -> Step {
    Step::AppendWorkerEvent {
        worker,
        event_type: WorkerEventType::Heartbeat,
    }
}

/// Plays `steps` under hardened, then under legacy, on one set of
/// backends.
fn play_under_both_profiles(steps: Vec<Step>) -> (CaseResult, CaseResult) {
    let tokio = support::tokio();
    let backends: Backends = ok(tokio.block_on(run::start_backends(None, 1)));
    let play = |case: Case| ok(tokio.block_on(driver::play(&backends, &case, false)));
    let results = (
        play(case(Profile::Hardened, steps.clone())),
        play(case(Profile::Legacy, steps)),
    );
    ok(tokio
        .block_on(backends.shutdown())
        .map_err(std::io::Error::other));
    results
}

fn signatures(result: &CaseResult) -> Vec<(&'static str, String)> {
    let mut found: Vec<_> = result
        .violations
        .iter()
        .map(|violation| {
            (
                violation.invariant,
                violation.reason_class.name().to_owned(),
            )
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The shipped lanes after each step, with the step's index.
fn shipped_lanes(result: &CaseResult) -> Vec<(usize, &LaneObservation)> {
    result
        .trace
        .iter()
        .flat_map(|step| {
            step.clients
                .iter()
                .flat_map(|clients| &clients.lanes)
                .filter(|lane| lane.kind == LaneKind::Shipped)
                .map(move |lane| (step.index, lane))
        })
        .collect()
}

/// The last step's worker documents in the read model, `doc_key → version`.
fn read_model(result: &CaseResult) -> BTreeMap<String, i64> {
    let last = result.trace.last().expect("a played step");
    last.observation
        .khala
        .iter()
        .filter(|(key, _)| key.starts_with("runtime/codex_worker_summary:"))
        .map(|(key, (version, _))| (key.clone(), *version))
        .collect()
}

fn cached_versions(lane: &LaneObservation) -> BTreeMap<String, i64> {
    lane.cache
        .iter()
        .filter(|(key, _)| key.starts_with("runtime/codex_worker_summary:"))
        .map(|(key, doc)| (key.clone(), doc.doc_version))
        .collect()
}

#[test]
fn an_idle_shipped_client_keeps_receiving_updates_across_the_channel_and_socket_timeouts() {
    // Each advance is longer than the channel timeout (60 s + a tick) and
    // the socket idle timeout (60 s); a worker changes between them, while
    // the clients only listen.
    let steps = vec![
        worker_event(0),
        Step::AdvanceTime { seconds: 150 },
        worker_event(0),
        Step::AdvanceTime { seconds: 150 },
        worker_event(1),
        Step::AdvanceTime { seconds: 90 },
        Step::Quiesce,
    ];
    let (hardened, legacy) = &play_under_both_profiles(steps);

    // Hardened: the socket closes with the channel, the shipped client is
    // back after its first backoff, every update arrives.
    assert_eq!(signatures(hardened), [], "{:#?}", hardened.violations);
    let lanes = shipped_lanes(hardened);
    assert_eq!(lanes.len(), 4 * steps_with_clients(hardened));
    let gaps: Vec<i64> = lanes
        .iter()
        .filter_map(|(_, lane)| lane.liveness_gap_seconds)
        .collect();
    assert!(!gaps.is_empty(), "time passed beyond the channel timeout");
    assert!(
        gaps.iter().all(|gap| (0..=1).contains(gap)),
        "first backoff only: {gaps:?}"
    );
    let reconnects = lanes
        .iter()
        .filter(|(_, lane)| !lane.subscribes.is_empty())
        .count();
    assert!(
        reconnects >= 4 * 3,
        "each of the 4 users' shipped clients resubscribed after every advance: {reconnects}"
    );
    let expected = read_model(hardened);
    assert_eq!(expected.len(), 2);
    for (_, lane) in lanes.iter().filter(|(index, _)| *index == 6) {
        assert!(lane.live, "live at quiescence");
        assert_eq!(cached_versions(lane), expected);
    }

    // Legacy: the channel stops and the socket stays open a minute more,
    // so each listening lane (today's too: B12) goes that long without a
    // live channel; then it reconnects and resumes: late, not lost.
    assert_eq!(
        signatures(legacy),
        [("L1", "liveness_gap".to_owned())],
        "{:#?}",
        legacy.violations
    );
    let lanes = shipped_lanes(legacy);
    let longest = lanes
        .iter()
        .filter_map(|(_, lane)| lane.liveness_gap_seconds)
        .max();
    assert!(
        longest.is_some_and(|gap| gap > LIVENESS_GAP_BOUND_SECONDS && gap <= 75),
        "about a minute without a live channel: {longest:?}"
    );
    let expected = read_model(legacy);
    for (_, lane) in lanes.iter().filter(|(index, _)| *index == 6) {
        assert!(lane.live, "recovered by quiescence");
        assert_eq!(cached_versions(lane), expected);
    }
}

/// Steps after which the clients were observed.
fn steps_with_clients(result: &CaseResult) -> usize {
    result
        .trace
        .iter()
        .filter(|step| step.clients.is_some())
        .count()
}

#[test]
fn a_brand_new_shipped_client_on_a_pruned_topic_converges_under_hardened() {
    // Worker 0's only journal row is pruned; worker 1 changes after the
    // prune; then every web user reloads the page: a shipped client with
    // no stored watermark subscribes to the pruned topic.
    let steps = vec![
        worker_event(0),
        worker_event(1),
        Step::RunRetention,
        worker_event(1),
        Step::ReloadShippedClient {
            surface: Surface::Web,
        },
        Step::Quiesce,
    ];
    let (hardened, legacy) = &play_under_both_profiles(steps);

    assert_eq!(signatures(hardened), [], "{:#?}", hardened.violations);
    let reloaded: Vec<&LaneObservation> = shipped_lanes(hardened)
        .into_iter()
        .filter(|(index, _)| *index == 4)
        .map(|(_, lane)| lane)
        .collect();
    assert_eq!(reloaded.len(), ClientUser::ALL.len());
    let expected = read_model(hardened);
    assert!(expected.contains_key("runtime/codex_worker_summary:worker_0"));
    for lane in reloaded {
        let subscribe = lane.subscribes.first().expect("the new client subscribed");
        assert_eq!(subscribe.cursor, None, "a brand-new client has no cursor");
        assert!(subscribe.floor > 0, "on a pruned topic");
        assert!(!subscribe.stale, "and is served, not refused");
        assert_eq!(cached_versions(lane), expected);
    }

    // Legacy (B10): the retained journal only; worker 0 never arrives.
    let found = signatures(legacy);
    assert!(
        found.contains(&("D3", "no_cursor_after_prune_accepted".to_owned())),
        "{found:?}"
    );
}

/// A brand-new shipped client on the run topic, whose rows 1 and 2 were
/// pruned and row 3 retained; `configure` chooses the server's B10 rule.
/// Returns the client after it connected and, when it could not, after it
/// retried on its backoff for `retry_for` of the server's clock.
async fn brand_new_client_after_prune(refuse_no_cursor: bool, retry_for: TimeDelta) -> ShippedLane {
    let sync = SyncEnv::start_with(Profile::Hardened, |config| {
        config.retention_horizon_seconds = 3600;
        config.refuse_no_cursor_after_prune = refuse_no_cursor;
    })
    .await;
    sync.insert_run_event(1, ago(7200)).await;
    sync.insert_run_event(2, ago(7200)).await;
    sync.insert_run_event(3, ago(60)).await;
    assert_eq!(ok(sync.server.run_retention_once().await).deleted, 2);
    let token = sync.token(&[RUN_TOPIC]);
    let config = ShippedConfig {
        surface: Surface::Web,
        websocket_url: sync
            .server
            .http_url(WEBSOCKET_PATH)
            .replace("http://", "ws://"),
        topics: vec![RUN_TOPIC.to_owned()],
        frame_timeout: Duration::from_secs(5),
    };
    let mut lane = ShippedLane::new(
        config,
        true,
        Arc::new(move || Ok::<String, String>(token.clone())),
        Arc::new(MemoryWatermarkStore::new()),
        sync.clock.clone() as Arc<dyn Clock>,
    );
    ok(lane.start().await);
    let until = sync.now() + retry_for;
    while let Some(due) = lane.reconnect_due_at()
        && due <= until
    {
        sync.clock.set(due);
        ok(lane.reconnect_if_due().await);
    }
    ok(lane.await_watermark(RUN_TOPIC, 3).await);
    lane.disconnect().await;
    sync.finish().await;
    lane
}

#[tokio::test]
async fn the_replaced_hardened_b10_rule_strands_the_shipped_client_the_current_rule_serves_it() {
    let keys = |lane: &ShippedLane| -> Vec<String> {
        (1..=3)
            .map(|watermark| crate::sync_client::doc_key(RUN_TOPIC, watermark))
            .filter(|key| lane.cached(key).is_some())
            .collect()
    };
    // The current rule: the read model at the floor, then the journal.
    let served = brand_new_client_after_prune(false, TimeDelta::zero()).await;
    assert_eq!(served.stats().subscribes_refused, 0);
    assert_eq!(served.stats().snapshots, 1);
    assert_eq!(served.watermark(RUN_TOPIC), Some(3));
    assert_eq!(keys(&served).len(), 3, "every document, pruned or not");

    // The replaced rule: every subscribe without a cursor is refused, the
    // client has nothing left to clear, gives the connection up and
    // reconnects on its backoff forever (at 0, 1, 3, 7, 15, 31, 61 and
    // 91 s in two minutes): never live, never a document (in a case, L1
    // and D3's no_cursor_refused).
    let stranded = brand_new_client_after_prune(true, TimeDelta::seconds(120)).await;
    assert_eq!(stranded.stats().connects, 8);
    assert_eq!(stranded.stats().subscribes_refused, 8);
    assert_eq!(
        stranded.stats().stale_cursors,
        16,
        "two subscribes per connection, the second without a cursor, both refused"
    );
    assert!(stranded.reconnect_due_at().is_some(), "still retrying");
    assert!(!stranded.is_live());
    assert_eq!(stranded.watermark(RUN_TOPIC), None);
    assert!(keys(&stranded).is_empty(), "no document ever arrives");
}
