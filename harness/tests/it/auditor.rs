//! The parity auditor of spec §8 on real stores: the reason-class table and
//! the summary arithmetic (A1), dual publish audits clean (A2), a disabled
//! auditor reads and emits nothing (A3), and the defects B2 and B18 under
//! legacy with their hardened fixes.

use crate::convex_backend::convex_backend;
use crate::fixtures::{self, Env};
use crate::support::ok;
use chrono::{NaiveDateTime, TimeDelta};
use khala_parity::play::backend::convex::ConvexBackend;
use khala_runtime::auditor::{
    AuditorConfig, CycleReport, CycleStatus, CycleSummary, ParityAuditor, RawAuditorConfig,
    ReasonClass, RunOptions, Side, TelemetryEvent, compare_khala,
};
use khala_runtime::checkpoint::Checkpoint;
use khala_runtime::hashing::summary_hash;
use khala_runtime::sink::{ConvexHttpSink, ConvexReader, ConvexSinkConfig};
use khala_runtime::{Profile, ProjectionKind, Runtime, SinkMode};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;

const RUN: ProjectionKind = ProjectionKind::RunSummary;
const WORKER: ProjectionKind = ProjectionKind::CodexWorkerSummary;

fn enabled(sample_size: u32) -> AuditorConfig {
    AuditorConfig {
        enabled: true,
        sample_size,
        ..AuditorConfig::default()
    }
}

fn at(seconds: i64) -> NaiveDateTime {
    fixtures::start_time().naive_utc() + TimeDelta::seconds(seconds)
}

/// A summary payload; only what the hash sees matters here.
fn payload(entity_id: &str, seq: i64, status: &str) -> Value {
    json!({
        "run_id": entity_id,
        "status": status,
        "latest_seq": seq,
        "runtime_source": {"entity": "run", "run_id": entity_id, "seq": seq},
        "projected_at": "2026-02-19T20:00:01.000000Z",
    })
}

/// Writes a checkpoint row directly, with the hash of `hashed`.
async fn put_checkpoint(
    pool: &PgPool,
    projection_name: &str,
    entity_id: &str,
    seq: i64,
    hashed: &Value,
    updated_at: NaiveDateTime,
) {
    let document_id = match projection_name.parse::<ProjectionKind>() {
        Ok(kind) => kind.document_id(entity_id),
        Err(_) => format!("other:{entity_id}"),
    };
    ok(sqlx::query(
        "INSERT INTO runtime.convex_projection_checkpoints (projection_name, entity_id, document_id, \
         last_runtime_seq, projection_version, summary_hash, last_projected_at, inserted_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'convex_summary_v1', $5, $6, $6, $6)",
    )
    .bind(projection_name)
    .bind(entity_id)
    .bind(document_id)
    .bind(seq)
    .bind(summary_hash(hashed))
    .bind(updated_at)
    .execute(pool)
    .await);
}

/// Writes a Khala read-model row directly.
async fn put_read_model(
    pool: &PgPool,
    kind: ProjectionKind,
    entity_id: &str,
    version: i64,
    payload: &Value,
) {
    let statement = format!(
        "INSERT INTO {} (doc_key, doc_version, payload, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        kind.read_model_table()
    );
    ok(sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(kind.document_id(entity_id))
        .bind(version)
        .bind(payload)
        .bind(at(0))
        .execute(pool)
        .await);
}

async fn clear(pool: &PgPool) {
    ok(sqlx::query(
        "TRUNCATE runtime.convex_projection_checkpoints, runtime.sync_run_summaries, runtime.sync_codex_worker_summaries",
    )
    .execute(pool)
    .await);
}

async fn cycle(
    auditor: &mut ParityAuditor,
    pool: &PgPool,
    convex: Option<&ConvexReader>,
) -> CycleReport {
    ok(auditor.run_once(pool, convex, &RunOptions::default()).await)
}

/// `entity_id → (reason_class, lag_drift)` of a cycle.
fn reasons(report: &CycleReport) -> BTreeMap<String, (ReasonClass, i64)> {
    report
        .comparisons
        .iter()
        .map(|c| (c.entity_id.clone(), (c.reason_class, c.lag_drift)))
        .collect()
}

fn sampled_ids(report: &CycleReport) -> Vec<&str> {
    report
        .comparisons
        .iter()
        .map(|c| c.entity_id.as_str())
        .collect()
}

/// Entity id, checkpoint seq and hashed payload, and the read-model row
/// (version and payload) if any.
type TableRow<'a> = (&'a str, i64, &'a Value, Option<(i64, Value)>);

#[tokio::test]
async fn a1_each_row_of_the_reason_class_table_and_the_summary_arithmetic() {
    let env = Env::new().await;
    let pool = env.pool();
    let a = payload("x", 5, "running");
    // Checkpoint seq and hashed payload; read-model version and payload.
    let rows: [TableRow; 6] = [
        ("missing", 3, &a, None),
        ("hash_and_lag", 5, &a, Some((4, payload("x", 5, "created")))),
        ("hash_only", 5, &a, Some((5, payload("x", 5, "failed")))),
        ("khala_ahead", 5, &a, Some((6, a.clone()))),
        (
            "projected_later",
            5,
            &a,
            Some((5, {
                let mut later = a.clone();
                later["projected_at"] = json!("2026-02-19T21:00:00.000000Z");
                later
            })),
        ),
        ("equal", 5, &a, Some((5, a.clone()))),
    ];
    for (index, (entity_id, seq, hashed, row)) in rows.iter().enumerate() {
        put_checkpoint(
            pool,
            "run_summary",
            entity_id,
            *seq,
            hashed,
            at(index as i64),
        )
        .await;
        if let Some((version, stored)) = row {
            put_read_model(pool, RUN, entity_id, *version, stored).await;
        }
    }
    // Sampling filters projection names, so this row is never compared.
    put_checkpoint(pool, "other_summary", "other", 2, &a, at(100)).await;
    for profile in Profile::ALL {
        let mut auditor = ParityAuditor::new(enabled(200), profile.switches());
        let report = cycle(&mut auditor, pool, None).await;
        let expected: BTreeMap<String, (ReasonClass, i64)> = [
            ("missing", (ReasonClass::KhalaMissing, 3)),
            ("hash_and_lag", (ReasonClass::HashAndLagDrift, 1)),
            ("hash_only", (ReasonClass::SummaryHashMismatch, 0)),
            ("khala_ahead", (ReasonClass::LagDrift, -1)),
            ("projected_later", (ReasonClass::None, 0)),
            ("equal", (ReasonClass::None, 0)),
        ]
        .into_iter()
        .map(|(id, reason)| (id.to_owned(), reason))
        .collect();
        assert_eq!(reasons(&report), expected, "{profile}");
        assert_eq!(
            report.summary,
            CycleSummary {
                status: CycleStatus::Mismatch,
                sampled: 6,
                mismatches: 4,
                missing_documents: 1,
                hash_mismatches: 2,
                lag_drift_nonzero: 3,
                convex_mismatches: 0,
                mismatch_rate: 4.0 / 6.0,
                max_abs_lag_drift: 3,
                avg_abs_lag_drift: 5.0 / 6.0,
            },
            "{profile}"
        );
    }
    // The one row sampling can never reach, through the table itself.
    let unsupported = Checkpoint {
        projection_name: "other_summary".into(),
        entity_id: "other".into(),
        document_id: "other:other".into(),
        last_runtime_seq: 2,
        projection_version: "convex_summary_v1".into(),
        summary_hash: summary_hash(&a),
        last_projected_at: at(0),
        inserted_at: at(0),
        updated_at: at(0),
    };
    assert_eq!(
        compare_khala(&unsupported, None),
        (ReasonClass::UnsupportedProjection, 2)
    );
    env.finish().await;
}

#[tokio::test]
async fn a1_the_three_test_asserted_examples_of_the_original() {
    let env = Env::new().await;
    let pool = env.pool();
    let mut auditor = ParityAuditor::new(enabled(200), Profile::Legacy.switches());

    // Matching checkpoint (seq 7) and row (version 7, same payload).
    let same = payload("run_1", 7, "running");
    put_checkpoint(pool, "run_summary", "run_1", 7, &same, at(0)).await;
    put_read_model(pool, RUN, "run_1", 7, &same).await;
    let report = cycle(&mut auditor, pool, None).await;
    assert_eq!(
        (
            report.summary.sampled,
            report.summary.mismatches,
            report.summary.mismatch_rate,
            report.summary.status
        ),
        (1, 0, 0.0, CycleStatus::Ok)
    );

    // Checkpoint seq 9 against row version 8 whose status changed.
    clear(pool).await;
    put_checkpoint(
        pool,
        "run_summary",
        "run_1",
        9,
        &payload("run_1", 9, "completed"),
        at(0),
    )
    .await;
    put_read_model(pool, RUN, "run_1", 8, &payload("run_1", 8, "running")).await;
    let report = cycle(&mut auditor, pool, None).await;
    let summary = &report.summary;
    assert_eq!(
        (
            summary.mismatches,
            summary.hash_mismatches,
            summary.lag_drift_nonzero,
            summary.max_abs_lag_drift,
            summary.mismatch_rate,
            summary.status
        ),
        (1, 1, 1, 1, 1.0, CycleStatus::Mismatch)
    );
    // Telemetry: the entity event, its failure, then the cycle event.
    let names: Vec<String> = report
        .telemetry
        .iter()
        .map(|event| event.event_name().join("."))
        .collect();
    assert_eq!(
        names,
        [
            "openagents_runtime.sync.parity.entity",
            "openagents_runtime.parity.failure",
            "openagents_runtime.sync.parity.cycle"
        ]
    );
    let failure = &report.telemetry[1];
    assert_eq!(
        failure,
        &TelemetryEvent::Failure {
            reason_class: "hash_and_lag_drift",
            projection: "run_summary".into(),
            event_type: "runtime.run_summaries".into(),
            entity_id: "run_1".into(),
            document_id: "runtime/run_summary:run_1".into(),
        }
    );
    let metric = &failure.metrics()[0];
    assert_eq!(metric.name, "openagents_runtime.parity.failure.count");
    assert_eq!(
        metric
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        [
            "class=sync_dual_publish",
            "component=sync_parity_auditor",
            "outcome=mismatch",
            "reason_class=hash_and_lag_drift"
        ]
    );
    let cycle_metrics: Vec<(&str, f64)> = report.telemetry[2]
        .metrics()
        .iter()
        .map(|sample| (sample.name, sample.value))
        .collect();
    assert_eq!(
        cycle_metrics,
        [
            ("openagents_runtime.sync.parity.cycle.count", 1.0),
            ("openagents_runtime.sync.parity.cycle.sampled", 1.0),
            ("openagents_runtime.sync.parity.cycle.mismatches", 1.0),
            ("openagents_runtime.sync.parity.cycle.mismatch_rate", 1.0),
            (
                "openagents_runtime.sync.parity.cycle.max_abs_lag_drift",
                1.0
            ),
            (
                "openagents_runtime.sync.parity.cycle.avg_abs_lag_drift",
                1.0
            ),
        ]
    );
    let quiet = ok(auditor
        .run_once(
            pool,
            None,
            &RunOptions {
                emit_entity_events: false,
                emit_parity_failures: false,
                ..RunOptions::default()
            },
        )
        .await);
    assert_eq!(quiet.telemetry.len(), 1, "{:?}", quiet.telemetry);

    // Worker checkpoint seq 4 with no row.
    clear(pool).await;
    put_checkpoint(
        pool,
        "codex_worker_summary",
        "worker_1",
        4,
        &payload("worker_1", 4, "running"),
        at(0),
    )
    .await;
    let report = cycle(&mut auditor, pool, None).await;
    let summary = &report.summary;
    assert_eq!(
        (
            summary.missing_documents,
            summary.mismatches,
            summary.hash_mismatches,
            summary.lag_drift_nonzero,
            summary.max_abs_lag_drift,
            summary.status
        ),
        (1, 1, 0, 1, 4, CycleStatus::Mismatch)
    );
    assert_eq!(
        report.comparisons[0].event_type,
        "runtime.codex_worker_summaries"
    );

    // Nothing to sample is `empty`, still with its cycle event.
    clear(pool).await;
    let report = cycle(&mut auditor, pool, None).await;
    assert_eq!(report.summary.status, CycleStatus::Empty);
    assert_eq!(report.summary.mismatch_rate, 0.0);
    assert_eq!(report.telemetry.len(), 1);
    env.finish().await;
}

#[tokio::test]
async fn a3_a_disabled_auditor_returns_a_zeroed_summary_and_emits_nothing() {
    let env = Env::new().await;
    let pool = env.pool();
    put_checkpoint(
        pool,
        "run_summary",
        "run_1",
        4,
        &payload("run_1", 4, "running"),
        at(0),
    )
    .await;
    let off = RawAuditorConfig {
        enabled: Some(json!("off")),
        ..RawAuditorConfig::default()
    };
    for profile in Profile::ALL {
        for (config, options) in [
            (off.normalise(), RunOptions::default()),
            (
                enabled(200),
                RunOptions {
                    enabled: Some(false),
                    ..RunOptions::default()
                },
            ),
        ] {
            let mut auditor = ParityAuditor::new(config, profile.switches());
            let report = ok(auditor.run_once(pool, None, &options).await);
            assert_eq!(report.summary, CycleSummary::disabled(), "{profile}");
            assert_eq!(report.summary.status, CycleStatus::Disabled);
            assert!(report.comparisons.is_empty() && report.telemetry.is_empty());
            assert_eq!(auditor.cursor(), None);
        }
    }
    // The same stores, enabled by a string the original accepts, do mismatch.
    let on = RawAuditorConfig {
        enabled: Some(json!("YES")),
        ..RawAuditorConfig::default()
    };
    let mut auditor = ParityAuditor::new(on.normalise(), Profile::Legacy.switches());
    assert_eq!(
        cycle(&mut auditor, pool, None).await.summary.status,
        CycleStatus::Mismatch
    );
    env.finish().await;
}

fn sink_config(convex: &ConvexBackend) -> ConvexSinkConfig {
    ConvexSinkConfig {
        base_url: convex.base_url(),
        admin_key: convex.admin_key().unwrap_or_default().to_owned(),
        ..ConvexSinkConfig::default()
    }
}

fn reader(convex: &ConvexBackend) -> ConvexReader {
    ConvexReader::new(
        &convex.base_url(),
        convex.admin_key().unwrap_or_default(),
        2500,
    )
}

fn dual_publish_runtime(env: &Env, convex: &ConvexBackend, profile: Profile) -> Runtime {
    let sink = Arc::new(ConvexHttpSink::new(&sink_config(convex)));
    ok(fixtures::runtime(env.pool(), profile, SinkMode::Noop)
        .with_convex_sink(sink, SinkMode::Dual))
}

async fn a2_dual_publish_audits_clean(profile: Profile) {
    let env = Env::new().await;
    let convex = convex_backend().await;
    let runtime = dual_publish_runtime(&env, &convex, profile);
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    for event in ["run.started", "run.delta", "run.delta"] {
        ok(ok(runtime.append_event(RUN, "run_1", event, &json!({})).await).projection);
    }
    ok(runtime
        .create_worker(&fixtures::new_worker("worker_1"))
        .await);
    ok(ok(runtime
        .append_event(WORKER, "worker_1", "worker.heartbeat", &json!({}))
        .await)
    .projection);
    ok(ok(runtime.stop_worker("worker_1").await).projection);
    let mut auditor = ParityAuditor::new(enabled(200), profile.switches());
    let report = cycle(&mut auditor, env.pool(), Some(&reader(&convex))).await;
    assert_eq!(
        report.summary.status,
        CycleStatus::Ok,
        "{profile}: {report:?}"
    );
    assert_eq!(report.summary.sampled, 2);
    for comparison in &report.comparisons {
        assert_eq!(comparison.reason_class, ReasonClass::None, "{comparison:?}");
        // Only the hardened auditor reads Convex; when it does, Convex agrees.
        assert_eq!(
            comparison.convex.as_ref().map(|check| check.reason_class),
            (profile == Profile::Hardened).then_some(ReasonClass::None)
        );
    }
    ok(convex.shutdown().await);
    env.finish().await;
}

#[tokio::test]
async fn a2_legacy_dual_publish_with_every_sink_succeeding_audits_ok() {
    a2_dual_publish_audits_clean(Profile::Legacy).await;
}

#[tokio::test]
async fn a2_hardened_dual_publish_with_every_sink_succeeding_audits_ok() {
    a2_dual_publish_audits_clean(Profile::Hardened).await;
}

/// Two drifted Convex documents on a legacy dual-publish runtime: `run_1`
/// overwritten directly through the sink (same seq, other status), `run_2`
/// left ahead by a B1 partial fanout (Convex at seq 2, Khala and the
/// checkpoint at 1). Returns each auditor's cycle.
async fn b2_audit_of_drifted_convex() -> [CycleReport; 2] {
    let env = Env::new().await;
    let convex = convex_backend().await;
    let runtime = dual_publish_runtime(&env, &convex, Profile::Legacy);
    for run_id in ["run_1", "run_2"] {
        ok(runtime.create_run(&fixtures::new_run(run_id)).await);
        ok(ok(runtime
            .append_event(RUN, run_id, "run.started", &json!({}))
            .await)
        .projection);
    }
    let sink = ConvexHttpSink::new(&sink_config(&convex));
    let reader = reader(&convex);
    let mut overwritten =
        ok(reader.get(RUN, "runtime/run_summary:run_1").await).expect("in convex");
    overwritten["status"] = json!("failed");
    ok(sink
        .send(RUN, "runtime/run_summary:run_1", &overwritten)
        .await);
    fixtures::break_khala(env.pool()).await;
    let partial = ok(runtime
        .append_event(RUN, "run_2", "run.delta", &json!({}))
        .await)
    .projection;
    assert!(partial.is_err(), "the Khala half of the fanout fails");
    fixtures::heal_khala(env.pool()).await;
    let mut reports = Vec::new();
    for profile in Profile::ALL {
        let mut auditor = ParityAuditor::new(enabled(200), profile.switches());
        reports.push(cycle(&mut auditor, env.pool(), Some(&reader)).await);
    }
    ok(convex.shutdown().await);
    env.finish().await;
    reports.try_into().expect("two profiles")
}

#[tokio::test]
async fn b2_legacy_reports_ok_while_convex_drifted_and_hardened_catches_it() {
    let [legacy, hardened] = b2_audit_of_drifted_convex().await;
    // Legacy: blind to Convex, everything looks fine.
    assert_eq!(legacy.summary.status, CycleStatus::Ok, "{legacy:?}");
    assert_eq!(legacy.summary.sampled, 2);
    assert!(legacy.comparisons.iter().all(|c| c.convex.is_none()));
    // Hardened: both drifted documents are reported, against Convex.
    let expected: BTreeMap<String, (ReasonClass, i64)> = [
        ("run_1".to_owned(), (ReasonClass::ConvexHashMismatch, 0)),
        ("run_2".to_owned(), (ReasonClass::ConvexHashMismatch, -1)),
    ]
    .into();
    assert_eq!(reasons(&hardened), expected);
    assert!(
        hardened
            .comparisons
            .iter()
            .all(|c| c.side == Side::Convex && c.khala_reason_class == ReasonClass::None)
    );
    assert_eq!(
        (
            hardened.summary.status,
            hardened.summary.mismatches,
            hardened.summary.convex_mismatches,
            hardened.summary.missing_documents
        ),
        (CycleStatus::Mismatch, 2, 2, 0)
    );
    let failures = hardened
        .telemetry
        .iter()
        .filter(|event| {
            matches!(
                event,
                TelemetryEvent::Failure {
                    reason_class: "convex_hash_mismatch",
                    ..
                }
            )
        })
        .count();
    assert_eq!(failures, 2);
}

/// A busy entity updated last and in order, and a quiet one, updated earlier,
/// that Khala lost. Three cycles of one checkpoint each.
async fn b18_cycles(profile: Profile) -> Vec<CycleReport> {
    let env = Env::new().await;
    let pool = env.pool();
    let busy = payload("busy", 12, "running");
    put_checkpoint(
        pool,
        "run_summary",
        "quiet",
        3,
        &payload("quiet", 3, "running"),
        at(0),
    )
    .await;
    put_checkpoint(pool, "run_summary", "busy", 12, &busy, at(60)).await;
    put_read_model(pool, RUN, "busy", 12, &busy).await;
    let mut auditor = ParityAuditor::new(enabled(1), profile.switches());
    let mut reports = Vec::new();
    for _ in 0..3 {
        reports.push(cycle(&mut auditor, pool, None).await);
    }
    env.finish().await;
    reports
}

#[tokio::test]
async fn b18_legacy_never_looks_at_the_quiet_entity_and_hardened_covers_both_in_two_cycles() {
    let legacy = b18_cycles(Profile::Legacy).await;
    for report in &legacy {
        assert_eq!(sampled_ids(report), ["busy"]);
        assert_eq!(report.summary.status, CycleStatus::Ok);
    }
    let hardened = b18_cycles(Profile::Hardened).await;
    let swept: Vec<Vec<&str>> = hardened.iter().map(sampled_ids).collect();
    assert_eq!(swept, [vec!["busy"], vec!["quiet"], vec!["busy"]]);
    assert_eq!(
        reasons(&hardened[1]).get("quiet"),
        Some(&(ReasonClass::KhalaMissing, 3))
    );
    assert_eq!(hardened[1].summary.missing_documents, 1);
}
