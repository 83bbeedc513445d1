//! The projection path on real PostgreSQL: watermark allocation (W1), the
//! Khala sink (S2), transactional fanout (S3), checkpoints (C2–C5) and
//! refused summaries.

use crate::fixtures::{self, Env, FailingSink, StoreCounts};
use crate::support::ok;
use khala_runtime::checkpoint::DecisionReason;
use khala_runtime::hashing::{canonical_json, payload_hash};
use khala_runtime::projector::{ProjectionError, Projector, WriteResult};
use khala_runtime::sink::{FanoutSink, KhalaSink, PayloadMode, ProjectionSink};
use khala_runtime::summary::SummaryField;
use khala_runtime::watermark::{self, WatermarkError};
use khala_runtime::{Profile, ProjectionKind, SinkMode};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const RUN: ProjectionKind = ProjectionKind::RunSummary;
const WORKER: ProjectionKind = ProjectionKind::CodexWorkerSummary;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn w1_allocations_are_1_to_n_per_topic_without_duplicates_under_concurrency() {
    let env = Env::new().await;
    let mut conn = ok(env.pool().acquire().await);
    let sequential: Vec<i64> = {
        let mut values = Vec::new();
        for _ in 0..3 {
            values.push(ok(watermark::next(&mut conn, "runtime.run_summaries").await));
        }
        values
    };
    assert_eq!(sequential, [1, 2, 3]);
    drop(conn);

    // 100 allocations, 8 at a time (the case pool's size), on the worker topic.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let pool = env.pool().clone();
            tokio::spawn(async move {
                let mut conn = ok(pool.acquire().await);
                ok(watermark::next(&mut conn, "runtime.codex_worker_summaries").await)
            })
        })
        .collect();
    let mut concurrent = BTreeSet::new();
    for task in tasks {
        assert!(
            concurrent.insert(task.await.expect("allocation task")),
            "duplicate watermark"
        );
    }
    assert_eq!(concurrent, (1..=100).collect::<BTreeSet<i64>>());

    // Topics are independent; an unseeded topic starts at 1; a blank one is refused.
    let mut conn = ok(env.pool().acquire().await);
    assert_eq!(
        ok(watermark::next(&mut conn, "runtime.run_summaries").await),
        4
    );
    assert_eq!(ok(watermark::next(&mut conn, "  custom.topic ").await), 1);
    assert_eq!(ok(watermark::next(&mut conn, "custom.topic").await), 2);
    assert!(matches!(
        watermark::next(&mut conn, "   ").await,
        Err(WatermarkError::InvalidTopic { .. })
    ));
    drop(conn);
    env.finish().await;
}

#[tokio::test]
async fn w1_a_rolled_back_allocation_is_not_consumed() {
    let env = Env::new().await;
    let mut conn = ok(env.pool().acquire().await);
    let mut tx = ok(sqlx::Connection::begin(&mut *conn).await);
    assert_eq!(
        ok(watermark::next(&mut tx, "runtime.run_summaries").await),
        1
    );
    ok(tx.rollback().await);
    assert_eq!(
        ok(watermark::next(&mut conn, "runtime.run_summaries").await),
        1
    );
    drop(conn);
    env.finish().await;
}

#[tokio::test]
async fn s2_khala_sink_writes_read_model_and_one_journal_row_inline() {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), Profile::Legacy, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::append_run_events(&runtime, "run_1", 2).await;
    let outcome = ok(runtime.project(RUN, "run_1").await);
    assert_eq!(
        (outcome.write, outcome.reason, outcome.lag_events),
        (WriteResult::Applied, None, 2)
    );

    let (doc_version, payload, hash) =
        fixtures::read_model(env.pool(), RUN, "runtime/run_summary:run_1")
            .await
            .expect("row");
    assert_eq!(doc_version, 2);
    assert_eq!(payload, outcome.summary);
    assert_eq!(payload["run_id"], "run_1");
    let expected_hash = Sha256::digest(canonical_json(&outcome.summary).as_bytes()).to_vec();
    assert_eq!(hash.as_deref(), Some(expected_hash.as_slice()));
    assert_eq!(expected_hash.len(), 32);

    let journal = fixtures::journal(env.pool(), "runtime.run_summaries").await;
    assert_eq!(journal.len(), 1);
    let (watermark, doc_key, journal_version, journal_payload, journal_hash) = &journal[0];
    assert_eq!(
        (*watermark, doc_key.as_str(), *journal_version),
        (1, "runtime/run_summary:run_1", 2)
    );
    assert_eq!(journal_payload.as_ref(), Some(&outcome.summary));
    assert_eq!(
        journal_hash.as_deref(),
        Some(payload_hash(&outcome.summary).as_slice())
    );
    env.finish().await;
}

#[tokio::test]
async fn s2_pointer_mode_journal_has_no_payload_but_the_read_model_is_full() {
    let env = Env::new().await;
    let mut config = fixtures::config(Profile::Legacy, SinkMode::KhalaOnly);
    config.payload_mode = PayloadMode::Pointer;
    let runtime = khala_runtime::Runtime::new(env.pool().clone(), config);
    ok(runtime
        .create_worker(&fixtures::new_worker("worker_1"))
        .await);
    for event in [
        "worker.started",
        "worker.request.received",
        "worker.response",
    ] {
        ok(khala_runtime::authority::append_event(
            runtime.pool(),
            runtime.clock().as_ref(),
            WORKER,
            "worker_1",
            event,
            &json!({}),
        )
        .await);
    }
    let outcome = ok(runtime.stop_worker("worker_1").await).projection;
    let outcome = ok(outcome);
    assert_eq!(outcome.summary["status"], "stopped");
    assert_eq!(outcome.summary["latest_seq"], 4);
    assert_eq!(outcome.summary["latest_event_type"], "worker.stopped");
    let (doc_version, payload, _) =
        fixtures::read_model(env.pool(), WORKER, "runtime/codex_worker_summary:worker_1")
            .await
            .expect("row");
    assert_eq!(
        (doc_version, payload["worker_id"].as_str()),
        (4, Some("worker_1"))
    );
    let journal = fixtures::journal(env.pool(), "runtime.codex_worker_summaries").await;
    assert_eq!(journal.len(), 1);
    assert_eq!((journal[0].0, journal[0].2), (1, 4));
    assert_eq!(journal[0].3, None, "pointer mode stores no journal payload");
    assert_eq!(
        journal[0].4.as_ref().map(Vec::len),
        Some(32),
        "the hash is stored in both modes"
    );
    env.finish().await;
}

fn projector_with(runtime: &khala_runtime::Runtime, sink: Arc<dyn ProjectionSink>) -> Projector {
    Projector::new(
        runtime.pool().clone(),
        runtime.projector().settings().clone(),
        sink,
    )
}

fn khala_sink(runtime: &khala_runtime::Runtime) -> Arc<dyn ProjectionSink> {
    Arc::new(KhalaSink::new(
        PayloadMode::Inline,
        runtime.switches(),
        runtime.notifier().clone(),
        runtime.clock().clone(),
    ))
}

#[tokio::test]
async fn s3_a_failing_second_sink_leaves_no_khala_row_no_journal_row_and_no_watermark_consumed() {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), Profile::Legacy, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::append_run_events(&runtime, "run_1", 1).await;
    ok(runtime.project(RUN, "run_1").await);
    let checkpoint_before = fixtures::checkpoint(env.pool(), RUN, "run_1").await;
    let counts_before = fixtures::store_counts(env.pool()).await;
    assert_eq!(
        counts_before,
        StoreCounts {
            checkpoints: 1,
            read_models: 1,
            journal: 1,
            watermarks_allocated: 1
        }
    );

    fixtures::append_run_events(&runtime, "run_1", 1).await;
    let failing = Arc::new(FailingSink::default());
    let fanout = Arc::new(FanoutSink::new(
        vec![khala_sink(&runtime), failing.clone()],
        false,
    ));
    let projector = projector_with(&runtime, fanout);
    let error = projector.project(RUN, "run_1").await.unwrap_err();
    match &error {
        ProjectionError::SinkWriteFailed { source, .. } => {
            assert!(source.to_string().contains("failing"), "{source}");
            assert_eq!(
                error.reason_class(),
                "error",
                "fanout failures are a 3-tuple"
            );
        }
        other => panic!("expected a sink failure, got {other}"),
    }
    assert_eq!(failing.calls.load(Ordering::SeqCst), 1);
    assert_eq!(fixtures::store_counts(env.pool()).await, counts_before);
    assert_eq!(
        fixtures::checkpoint(env.pool(), RUN, "run_1").await,
        checkpoint_before
    );
    let (doc_version, _, _) = fixtures::read_model(env.pool(), RUN, "runtime/run_summary:run_1")
        .await
        .expect("row");
    assert_eq!(doc_version, 1);
    env.finish().await;
}

#[tokio::test]
async fn s1_fanout_stops_at_the_first_failure_and_an_empty_list_is_noop() {
    let first = Arc::new(FailingSink::default());
    let second = Arc::new(FailingSink::default());
    let fanout = FanoutSink::new(vec![first.clone(), second.clone()], false);
    assert_eq!(fanout.order(), ["failing", "failing"]);
    assert_eq!(FanoutSink::new(vec![], false).order(), ["noop"]);

    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), Profile::Legacy, SinkMode::Noop);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    let error = projector_with(&runtime, Arc::new(fanout))
        .project(RUN, "run_1")
        .await
        .unwrap_err();
    assert!(matches!(error, ProjectionError::SinkWriteFailed { .. }));
    assert_eq!(
        (
            first.calls.load(Ordering::SeqCst),
            second.calls.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
    env.finish().await;
}

#[tokio::test]
async fn c2_sink_is_called_only_on_write_and_a_failure_leaves_the_checkpoint_byte_for_byte() {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), Profile::Legacy, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::append_run_events(&runtime, "run_1", 2).await;
    let counting = Arc::new(fixtures::RendezvousSink::new(
        khala_sink(&runtime),
        1,
        std::time::Duration::ZERO,
    ));
    let projector = projector_with(&runtime, counting.clone());
    let first = ok(projector.project(RUN, "run_1").await);
    let again = ok(projector.project(RUN, "run_1").await);
    assert_eq!(first.write, WriteResult::Applied);
    assert_eq!(
        (again.write, again.reason, again.lag_events),
        (WriteResult::Skipped, Some(DecisionReason::Idempotent), 0)
    );
    assert_eq!(
        counting.calls.load(Ordering::SeqCst),
        1,
        "a skip never calls the sink"
    );
    let checkpoint = fixtures::checkpoint(env.pool(), RUN, "run_1")
        .await
        .expect("checkpoint");
    assert_eq!(
        (checkpoint.last_runtime_seq, checkpoint.summary_hash.len()),
        (2, 64)
    );

    fixtures::append_run_events(&runtime, "run_1", 1).await;
    let failing = Arc::new(FailingSink::default());
    let error = projector_with(&runtime, failing.clone())
        .project(RUN, "run_1")
        .await
        .unwrap_err();
    assert_eq!(error.reason_class(), "simulated_sink_failure");
    assert_eq!(failing.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        fixtures::checkpoint(env.pool(), RUN, "run_1").await,
        Some(checkpoint)
    );
    env.finish().await;
}

#[tokio::test]
async fn c2_a_tampered_hash_is_rewritten_with_a_drift_signal() {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), Profile::Legacy, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::append_run_events(&runtime, "run_1", 2).await;
    ok(runtime.project(RUN, "run_1").await);
    ok(sqlx::query(
        "UPDATE runtime.convex_projection_checkpoints SET summary_hash = repeat('0', 64)",
    )
    .execute(env.pool())
    .await);
    let outcome = ok(runtime.project(RUN, "run_1").await);
    assert_eq!(
        (outcome.write, outcome.reason, outcome.drift),
        (
            WriteResult::Applied,
            Some(DecisionReason::SummaryHashMismatch),
            true
        )
    );
    env.finish().await;
}

#[tokio::test]
async fn c3_through_the_projector_the_checkpoint_never_moves_back_and_only_reprojection_resets_it()
{
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), Profile::Legacy, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::append_run_events(&runtime, "run_1", 3).await;
    let stale = ok(runtime.projector().prepare(RUN, "run_1").await)
        .summary()
        .cloned()
        .expect("legacy builds early");
    fixtures::append_run_events(&runtime, "run_1", 2).await;
    ok(runtime.project(RUN, "run_1").await);
    let mut older = stale.clone();
    older["runtime_source"]["seq"] = json!(3);
    let outcome = ok(runtime.projector().write_summary(RUN, "run_1", older).await);
    assert_eq!(
        (outcome.write, outcome.reason),
        (WriteResult::Skipped, Some(DecisionReason::CheckpointAhead))
    );
    assert_eq!(
        fixtures::checkpoint(env.pool(), RUN, "run_1")
            .await
            .expect("checkpoint")
            .last_runtime_seq,
        5
    );

    ok(
        sqlx::query("UPDATE runtime.convex_projection_checkpoints SET last_runtime_seq = 999")
            .execute(env.pool())
            .await,
    );
    let rebuilt = runtime.rebuild(RUN, "run_1").await;
    assert_eq!(
        (rebuilt.scope, rebuilt.result, rebuilt.write, rebuilt.reason),
        ("run", "ok", Some(WriteResult::Applied), None)
    );
    assert_eq!(
        fixtures::checkpoint(env.pool(), RUN, "run_1")
            .await
            .expect("checkpoint")
            .last_runtime_seq,
        5
    );
    env.finish().await;
}

#[tokio::test]
async fn c4_c5_runtime_writes_survive_sink_failures_lag_stays_at_most_one_and_a_rebuild_converges()
{
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), Profile::Legacy, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    for _ in 0..20 {
        let outcome = ok(runtime
            .append_event(RUN, "run_1", "run.delta", &json!({"n": 1}))
            .await);
        assert!(ok(outcome.projection).lag_events <= 1);
    }
    assert_eq!(
        fixtures::checkpoint(env.pool(), RUN, "run_1")
            .await
            .expect("checkpoint")
            .last_runtime_seq,
        20
    );

    // An always-failing sink: events still commit, no checkpoint for the new run.
    let failing = Arc::new(FailingSink::default());
    let projector = projector_with(&runtime, failing.clone());
    ok(runtime.create_run(&fixtures::new_run("run_2")).await);
    for _ in 0..6 {
        fixtures::append_run_events(&runtime, "run_2", 1).await;
        assert!(projector.project(RUN, "run_2").await.is_err());
    }
    let latest: i64 = ok(sqlx::query_scalar(
        "SELECT latest_seq FROM runtime.runs WHERE run_id = 'run_2'",
    )
    .fetch_one(env.pool())
    .await);
    assert_eq!(latest, 6);
    assert_eq!(fixtures::checkpoint(env.pool(), RUN, "run_2").await, None);
    assert_eq!(failing.calls.load(Ordering::SeqCst), 6);
    let rebuilt = runtime.rebuild(RUN, "run_2").await;
    assert_eq!(rebuilt.result, "ok");
    assert_eq!(
        fixtures::checkpoint(env.pool(), RUN, "run_2")
            .await
            .expect("checkpoint")
            .last_runtime_seq,
        6
    );
    env.finish().await;
}

#[tokio::test]
async fn refused_summaries_name_the_field_and_write_nothing() {
    let env = Env::new().await;
    let runtime = fixtures::runtime(env.pool(), Profile::Legacy, SinkMode::KhalaOnly);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    let good = ok(runtime.projector().prepare(RUN, "run_1").await)
        .summary()
        .cloned()
        .expect("summary");
    let empty = fixtures::store_counts(env.pool()).await;
    let cases = [
        (
            "runtime_source",
            json!({"entity": "run"}),
            SummaryField::RuntimeSourceSeq,
        ),
        (
            "projection_version",
            json!(""),
            SummaryField::ProjectionVersion,
        ),
        (
            "projected_at",
            json!("not a time"),
            SummaryField::ProjectedAt,
        ),
    ];
    for (key, value, field) in cases {
        let mut summary = good.clone();
        summary[key] = value;
        let error = runtime
            .projector()
            .write_summary(RUN, "run_1", summary)
            .await
            .unwrap_err();
        match &error {
            ProjectionError::InvalidSummary { source, .. } => assert_eq!(source.field, field),
            other => panic!("expected an invalid summary, got {other}"),
        }
        assert!(error.to_string().contains(field.path()), "{error}");
        assert_eq!(fixtures::store_counts(env.pool()).await, empty);
    }
    let missing = runtime.project(RUN, "no_such_run").await.unwrap_err();
    assert_eq!(missing.reason_class(), "run_not_found");
    env.finish().await;
}

async fn report(
    runtime: &khala_runtime::Runtime,
    metadata: serde_json::Value,
) -> Result<khala_runtime::projector::ProjectionOutcome, ProjectionError> {
    ok(runtime.report_worker_metadata("w_1", &metadata).await).projection
}

/// Issue 14: hardened refuses a summary Convex cannot hold exactly before
/// any store is written, whatever the sink mode (a rollback to Convex must
/// take every document Khala holds); the original (`convex_values_unguarded`
/// planted alone) lets Khala take it. Postgres gives a negative zero back
/// as `0.0`, which Convex can hold: never refused.
#[tokio::test]
async fn a_summary_convex_cannot_hold_is_refused_before_any_store_is_written() {
    let env = Env::new().await;
    let guarded = fixtures::runtime(env.pool(), Profile::Hardened, SinkMode::KhalaOnly);
    let mut planted = fixtures::config(Profile::Hardened, SinkMode::KhalaOnly);
    planted.switches.convex_values_unguarded = true;
    let unguarded = khala_runtime::Runtime::new(env.pool().clone(), planted);
    ok(guarded.create_worker(&fixtures::new_worker("w_1")).await);
    assert!(
        report(&guarded, json!({"region": "eu", "offset": -0.0}))
            .await
            .is_ok()
    );
    let held = fixtures::store_counts(env.pool()).await;
    let document_id = WORKER.document_id("w_1");
    let (_, before, _) = fixtures::read_model(env.pool(), WORKER, &document_id)
        .await
        .expect("projected");
    assert_eq!(before["metadata"]["offset"], json!(0.0));
    for metadata in [
        json!({"region": "eu", "🚀": 1}),
        json!({"region": "eu", "count": 9_007_199_254_740_993_i64}),
        json!({"region": "eu", "samples": vec![1; 8193]}),
    ] {
        match report(&guarded, metadata.clone()).await {
            Err(error @ ProjectionError::ConvexValueRefused { .. }) => {
                assert_eq!(error.reason_class(), "convex_value_refused");
                assert!(error.to_string().contains("convex cannot hold"), "{error}");
            }
            other => panic!("expected a refusal of {metadata}, got {other:?}"),
        }
        assert_eq!(fixtures::store_counts(env.pool()).await, held);
        let (_, after, _) = fixtures::read_model(env.pool(), WORKER, &document_id)
            .await
            .expect("still there");
        assert_eq!(after["metadata"], before["metadata"]);
    }
    // Unguarded, Khala takes 2^53 + 1, which Convex would hold as 2^53.
    let taken = report(&unguarded, json!({"count": 9_007_199_254_740_993_i64})).await;
    assert!(taken.is_ok(), "{taken:?}");
    let (_, after, _) = fixtures::read_model(env.pool(), WORKER, &document_id)
        .await
        .expect("written");
    assert_eq!(after["metadata"]["count"], json!(9_007_199_254_740_993_i64));
    env.finish().await;
}
