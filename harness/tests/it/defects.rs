//! Each defect of spec §15 on the projection path, under `legacy` (the test
//! shows the defect) and `hardened` (the test shows it gone). Each pair runs
//! one scenario body and asserts what each profile must observe.

use crate::fixtures::{self, Env, ExternalTableSink, FailingSink, RendezvousSink};
use crate::support::ok;
use khala_runtime::authority::{self, RunTerminal};
use khala_runtime::checkpoint::DecisionReason;
use khala_runtime::projector::{ProjectionError, Projector, WriteResult};
use khala_runtime::sink::{
    FanoutSink, KhalaSink, NoopSink, PayloadMode, ProjectionSink, SinkContext,
};
use khala_runtime::{Profile, ProjectionKind, SinkMode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const RUN: ProjectionKind = ProjectionKind::RunSummary;
const DOC: &str = "runtime/run_summary:run_1";

fn khala_sink(runtime: &khala_runtime::Runtime) -> Arc<dyn ProjectionSink> {
    Arc::new(KhalaSink::new(
        PayloadMode::Inline,
        runtime.switches(),
        runtime.notifier().clone(),
        runtime.clock().clone(),
    ))
}

async fn khala_version(env: &Env) -> Option<i64> {
    fixtures::read_model(env.pool(), RUN, DOC)
        .await
        .map(|row| row.0)
}

async fn checkpoint_seq(env: &Env) -> Option<i64> {
    fixtures::checkpoint(env.pool(), RUN, "run_1")
        .await
        .map(|checkpoint| checkpoint.last_runtime_seq)
}

/// B1: dual publish with an external store first and Khala failing. What
/// each store holds after the failure, then after Khala heals with no new
/// event and the runtime's catch-up (`repair_pending`) ran.
struct FanoutObservation {
    after_failure: (Option<i64>, Option<i64>, Option<i64>),
    after_heal: (Option<i64>, Option<i64>, Option<i64>),
}

async fn fanout_partial_success(profile: Profile) -> FanoutObservation {
    let env = Env::new().await;
    let external = ExternalTableSink::new(env.pool()).await;
    let runtime = ok(fixtures::runtime(env.pool(), profile, SinkMode::Noop)
        .with_convex_sink(external, SinkMode::Dual));
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::break_khala(env.pool()).await;
    let outcome = ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await);
    assert!(matches!(
        outcome.projection,
        Err(ProjectionError::SinkWriteFailed { .. })
    ));
    let observe = async || {
        (
            ExternalTableSink::seq_of(env.pool(), DOC).await,
            khala_version(&env).await,
            checkpoint_seq(&env).await,
        )
    };
    let after_failure = observe().await;
    fixtures::heal_khala(env.pool()).await;
    ok(runtime.repair_pending().await);
    let after_heal = observe().await;
    env.finish().await;
    FanoutObservation {
        after_failure,
        after_heal,
    }
}

#[tokio::test]
async fn b1_legacy_fanout_leaves_convex_ahead_of_khala_and_checkpoint_forever() {
    let seen = fanout_partial_success(Profile::Legacy).await;
    assert_eq!(
        seen.after_failure,
        (Some(1), None, None),
        "external written, Khala and checkpoint rolled back"
    );
    assert_eq!(
        seen.after_heal,
        (Some(1), None, None),
        "nothing brings Khala level without a new event"
    );
}

#[tokio::test]
async fn b1_hardened_fanout_writes_khala_first_and_repairs_to_level() {
    let seen = fanout_partial_success(Profile::Hardened).await;
    assert_eq!(
        seen.after_failure,
        (None, None, None),
        "Khala failed first, so the external store was not called"
    );
    assert_eq!(seen.after_heal, (Some(1), Some(1), Some(1)));
}

/// B3: events projected through Noop, then a switch to Khala-only.
async fn sink_switch(profile: Profile) -> (Option<DecisionReason>, Option<i64>) {
    let env = Env::new().await;
    let mut runtime = fixtures::runtime(env.pool(), profile, SinkMode::Noop);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await);
    ok(runtime
        .append_event(RUN, "run_1", "run.delta", &json!({}))
        .await);
    assert_eq!(
        checkpoint_seq(&env).await,
        Some(2),
        "Noop advances the checkpoint"
    );
    ok(runtime.set_sink_mode(SinkMode::KhalaOnly).await);
    let reason = ok(runtime.project(RUN, "run_1").await).reason;
    let version = khala_version(&env).await;
    env.finish().await;
    (reason, version)
}

#[tokio::test]
async fn b3_legacy_sink_switch_skips_backfill_and_khala_stays_missing() {
    assert_eq!(
        sink_switch(Profile::Legacy).await,
        (Some(DecisionReason::Idempotent), None)
    );
}

#[tokio::test]
async fn b3_hardened_sink_switch_backfills_every_entity() {
    assert_eq!(
        sink_switch(Profile::Hardened).await,
        (Some(DecisionReason::Idempotent), Some(2))
    );
}

/// B4: the run executor finishes a run; what status did Khala get?
async fn finish_run(profile: Profile) -> Value {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), profile, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await);
    let terminal = RunTerminal {
        status: "succeeded".into(),
        terminal_reason_class: Some("completed".into()),
        terminal_reason: None,
    };
    ok(runtime.finish_run("run_1", &terminal).await);
    let payload = fixtures::read_model(env.pool(), RUN, DOC)
        .await
        .expect("row")
        .1;
    env.finish().await;
    payload
}

#[tokio::test]
async fn b4_legacy_finished_run_is_projected_with_its_pre_terminal_status() {
    let payload = finish_run(Profile::Legacy).await;
    assert_eq!(
        (
            payload["latest_event_type"].as_str(),
            payload["status"].as_str()
        ),
        (Some("run.finished"), Some("created"))
    );
    assert_eq!(payload["terminal_reason_class"], Value::Null);
}

#[tokio::test]
async fn b4_hardened_finished_run_is_projected_with_its_terminal_status() {
    let payload = finish_run(Profile::Hardened).await;
    assert_eq!(payload["status"], "succeeded");
    assert_eq!(payload["terminal_reason_class"], "completed");
}

/// B5: projection A prepares while the row says `running`; the row becomes
/// `canceling`; projection B commits; then A commits. What does Khala hold?
async fn same_seq_race(profile: Profile) -> String {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), profile, SinkMode::KhalaOnly);
    let clock = runtime.clock().clone();
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await);
    ok(authority::set_run_status(env.pool(), clock.as_ref(), "run_1", "running", None).await);
    let first = ok(runtime.projector().prepare(RUN, "run_1").await);
    ok(authority::set_run_status(env.pool(), clock.as_ref(), "run_1", "canceling", None).await);
    ok(runtime.project(RUN, "run_1").await);
    ok(runtime.projector().commit(first).await);
    let status = fixtures::read_model(env.pool(), RUN, DOC)
        .await
        .expect("row")
        .1["status"]
        .as_str()
        .map(str::to_owned);
    env.finish().await;
    status.unwrap_or_default()
}

#[tokio::test]
async fn b5_legacy_an_older_build_commits_last_and_regresses_the_document() {
    assert_eq!(same_seq_race(Profile::Legacy).await, "running");
}

#[tokio::test]
async fn b5_hardened_builds_under_the_lock_and_keeps_the_latest_row_data() {
    assert_eq!(same_seq_race(Profile::Hardened).await, "canceling");
}

/// B6: two concurrent first projections of one entity, held at a rendezvous
/// inside the sink. Returns (sink calls, results).
/// Whether the original raised this out of the projector (instead of
/// returning `{:error, _}`), so it reached the caller of `append_event`
/// although the event had committed (spec §2.7, B6).
fn raised(error: &ProjectionError) -> bool {
    matches!(error, ProjectionError::CheckpointWriteFailed { .. })
}

async fn first_projection_race(profile: Profile) -> (usize, Vec<Result<WriteResult, bool>>) {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), profile, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::append_run_events(&runtime, "run_1", 1).await;
    let rendezvous = Arc::new(RendezvousSink::new(
        Arc::new(NoopSink),
        2,
        Duration::from_secs(2),
    ));
    let projector = Projector::new(
        env.pool().clone(),
        runtime.projector().settings().clone(),
        rendezvous.clone(),
    );
    let (left, right) = tokio::join!(
        projector.project(RUN, "run_1"),
        projector.project(RUN, "run_1")
    );
    let results = [left, right]
        .into_iter()
        .map(|result| {
            result
                .map(|outcome| outcome.write)
                .map_err(|error| raised(&error))
        })
        .collect();
    let calls = rendezvous.calls.load(Ordering::SeqCst);
    env.finish().await;
    (calls, results)
}

#[tokio::test]
async fn b6_legacy_concurrent_first_projections_both_write_and_one_raises() {
    let (calls, mut results) = first_projection_race(Profile::Legacy).await;
    results.sort_by_key(|result| result.is_err());
    assert_eq!(calls, 2, "both projections reached the sink");
    assert_eq!(
        results,
        [Ok(WriteResult::Applied), Err(true)],
        "the second checkpoint insert raised"
    );
}

#[tokio::test]
async fn b6_hardened_concurrent_first_projections_serialise() {
    let (calls, mut results) = first_projection_race(Profile::Hardened).await;
    results.sort_by_key(|result| *result != Ok(WriteResult::Applied));
    assert_eq!(calls, 1);
    assert_eq!(
        results,
        [Ok(WriteResult::Applied), Ok(WriteResult::Skipped)]
    );
}

/// B7: a checkpoint ahead of the authority (restored from elsewhere), then a
/// new event. Returns the projection's write and Khala's version.
async fn checkpoint_ahead(profile: Profile) -> (WriteResult, Option<i64>, Option<i64>) {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), profile, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await);
    ok(
        sqlx::query("UPDATE runtime.convex_projection_checkpoints SET last_runtime_seq = 40")
            .execute(env.pool())
            .await,
    );
    let outcome = ok(ok(runtime
        .append_event(RUN, "run_1", "run.delta", &json!({}))
        .await)
    .projection);
    assert_eq!(
        (outcome.reason, outcome.drift),
        (Some(DecisionReason::CheckpointAhead), true)
    );
    let seen = (
        outcome.write,
        khala_version(&env).await,
        checkpoint_seq(&env).await,
    );
    env.finish().await;
    seen
}

#[tokio::test]
async fn b7_legacy_a_checkpoint_ahead_skips_every_write() {
    assert_eq!(
        checkpoint_ahead(Profile::Legacy).await,
        (WriteResult::Skipped, Some(1), Some(40))
    );
}

#[tokio::test]
async fn b7_hardened_the_authority_wins_over_a_checkpoint_ahead() {
    assert_eq!(
        checkpoint_ahead(Profile::Hardened).await,
        (WriteResult::Applied, Some(2), Some(2))
    );
}

/// B11: a wake-up arrives while the second sink of the fanout still holds
/// the transaction open. Is the journal row visible when the wake arrives?
async fn wake_before_commit(profile: Profile) -> Option<bool> {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), profile, SinkMode::Noop);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::append_run_events(&runtime, "run_1", 1).await;
    let gate = Arc::new(GateSink::default());
    let fanout = Arc::new(FanoutSink::new(
        vec![khala_sink(&runtime), gate.clone()],
        false,
    ));
    let projector = Projector::new(
        env.pool().clone(),
        runtime.projector().settings().clone(),
        fanout,
    );
    let mut wakes = runtime.notifier().subscribe();
    let projection = tokio::spawn(async move {
        projector
            .project(RUN, "run_1")
            .await
            .map(|outcome| outcome.write)
    });
    // Wait until the projection sits in the gate, then see whether a wake came.
    gate.entered.notified().await;
    let early = tokio::time::timeout(Duration::from_millis(300), wakes.recv())
        .await
        .ok();
    let visible_at_wake = match early {
        Some(_) => Some(
            !fixtures::journal(env.pool(), "runtime.run_summaries")
                .await
                .is_empty(),
        ),
        None => None,
    };
    gate.release.notify_one();
    assert_eq!(
        ok(projection.await.expect("projection task")),
        WriteResult::Applied
    );
    if visible_at_wake.is_none() {
        let wake = wakes.recv().await.expect("a wake after commit");
        assert_eq!(
            (wake.topic.as_str(), wake.watermark),
            ("runtime.run_summaries", 1)
        );
        assert_eq!(
            fixtures::journal(env.pool(), "runtime.run_summaries")
                .await
                .len(),
            1
        );
    }
    env.finish().await;
    visible_at_wake
}

/// A transactional sink that parks until released.
#[derive(Debug, Default)]
struct GateSink {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl ProjectionSink for GateSink {
    fn name(&self) -> &str {
        "gate"
    }

    fn is_transactional(&self) -> bool {
        true
    }

    async fn upsert(
        &self,
        _: SinkContext<'_>,
        _: ProjectionKind,
        _: &str,
        _: &Value,
    ) -> Result<(), khala_runtime::sink::SinkError> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn b11_legacy_wakes_subscribers_before_the_row_is_committed() {
    assert_eq!(
        wake_before_commit(Profile::Legacy).await,
        Some(false),
        "woken, but the row was not visible"
    );
}

#[tokio::test]
async fn b11_hardened_wakes_subscribers_only_after_commit() {
    assert_eq!(
        wake_before_commit(Profile::Hardened).await,
        None,
        "no wake while the transaction was open"
    );
}

/// B16: direct sink writes at seq 5, then at seq 3.
async fn version_regression(profile: Profile) -> (i64, usize) {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), profile, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::append_run_events(&runtime, "run_1", 5).await;
    let mut conn = ok(env.pool().acquire().await);
    let snapshot = ok(authority::load(&mut conn, RUN, "run_1").await).expect("run exists");
    drop(conn);
    let mut summary = snapshot.summary("convex_summary_v1", fixtures::start_time());
    let sink = khala_sink(&runtime);
    for seq in [5, 3] {
        summary["runtime_source"]["seq"] = json!(seq);
        let mut conn = ok(env.pool().acquire().await);
        let mut after_commit = Vec::new();
        ok(sink
            .upsert(
                SinkContext {
                    conn: &mut conn,
                    after_commit: &mut after_commit,
                },
                RUN,
                DOC,
                &summary,
            )
            .await);
    }
    let seen = (
        khala_version(&env).await.expect("row"),
        fixtures::journal(env.pool(), "runtime.run_summaries")
            .await
            .len(),
    );
    env.finish().await;
    seen
}

#[tokio::test]
async fn b16_legacy_a_lower_doc_version_overwrites_the_read_model() {
    assert_eq!(version_regression(Profile::Legacy).await, (3, 2));
}

#[tokio::test]
async fn b16_hardened_a_lower_doc_version_is_ignored_without_a_journal_row() {
    assert_eq!(version_regression(Profile::Hardened).await, (5, 1));
}

/// B17: a rebuild whose projection fails. Does the checkpoint survive?
async fn reprojection_failure(profile: Profile) -> (Option<i64>, &'static str) {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), profile, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await);
    let failing = Projector::new(
        env.pool().clone(),
        runtime.projector().settings().clone(),
        Arc::new(FailingSink::default()),
    );
    let result = khala_runtime::reprojection::rebuild(&failing, RUN, "run_1").await;
    // Spec §10: the projector's `{:sink_write_failed, reason}` under §3.5's
    // rule, not the sink's own class (the telemetry's).
    assert_eq!(result.reason.as_deref(), Some("sink_write_failed"));
    let seen = (checkpoint_seq(&env).await, result.result);
    env.finish().await;
    seen
}

#[tokio::test]
async fn b17_legacy_a_failed_rebuild_leaves_the_entity_without_checkpoint() {
    assert_eq!(reprojection_failure(Profile::Legacy).await, (None, "error"));
}

#[tokio::test]
async fn b17_hardened_a_failed_rebuild_keeps_the_checkpoint() {
    assert_eq!(
        reprojection_failure(Profile::Hardened).await,
        (Some(1), "error")
    );
}

/// B8: a projection-version bump with no new event. Which version does
/// Khala hold?
async fn version_bump(profile: Profile) -> Value {
    let env = Env::new().await;
    let mut runtime = fixtures::runtime(env.pool(), profile, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await);
    let report = ok(runtime.set_projection_version("convex_summary_v2").await);
    assert_eq!(report.backfill.is_some(), profile == Profile::Hardened);
    let payload = fixtures::read_model(env.pool(), RUN, DOC)
        .await
        .expect("row")
        .1;
    env.finish().await;
    payload["projection_version"].clone()
}

#[tokio::test]
async fn b8_legacy_a_version_bump_leaves_documents_at_the_old_version() {
    assert_eq!(version_bump(Profile::Legacy).await, "convex_summary_v1");
}

#[tokio::test]
async fn b8_hardened_a_version_bump_rewrites_every_document() {
    assert_eq!(version_bump(Profile::Hardened).await, "convex_summary_v2");
}
