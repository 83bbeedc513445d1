//! The Convex side end to end on real backends: the HTTP sink and reader
//! against the Convex front (success, refusals, auth, timeouts, refused
//! connections), JSON fidelity, and dual publish with PostgreSQL.

use crate::convex_backend::{config, convex_backend, start};
use crate::fixtures::{self, Env};
use crate::support::ok;
use khala_parity::play::backend::convex::{ConvexBackend, ConvexConfig, UdfFailureStatus};
use khala_runtime::projector::ProjectionError;
use khala_runtime::sink::{ConvexHttpSink, ConvexReader, ConvexSinkConfig, SinkError};
use khala_runtime::{Profile, ProjectionKind, Runtime, SinkMode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

const RUN: ProjectionKind = ProjectionKind::RunSummary;
const WORKER: ProjectionKind = ProjectionKind::CodexWorkerSummary;

fn sink_config(convex: &ConvexBackend, admin_key: Option<&str>) -> ConvexSinkConfig {
    ConvexSinkConfig {
        base_url: convex.base_url(),
        admin_key: admin_key
            .or(convex.admin_key())
            .unwrap_or_default()
            .to_owned(),
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

/// A valid run summary as the projector builds it.
fn run_summary(run_id: &str, seq: i64, status: &str) -> Value {
    json!({
        "document_id": format!("runtime/run_summary:{run_id}"),
        "kind": "run_summary",
        "run_id": run_id,
        "thread_id": "thread_1",
        "status": status,
        "owner_user_id": 7,
        "owner_guest_scope": null,
        "latest_seq": seq,
        "event_count": seq,
        "latest_event_type": "run.delta",
        "latest_event_at": "2026-02-19T20:00:00.000000Z",
        "terminal_reason_class": null,
        "terminal_reason": null,
        "terminal_at": null,
        "updated_at": "2026-02-19T20:00:00.000000Z",
        "runtime_source": {"entity": "run", "run_id": run_id, "seq": seq},
        "projection_version": "convex_summary_v1",
        "projected_at": "2026-02-19T20:00:01.000000Z",
    })
}

#[tokio::test]
async fn s4_the_sink_upserts_by_document_id_and_the_reader_reads_back() {
    let convex = convex_backend().await;
    let sink = ConvexHttpSink::new(&sink_config(&convex, None));
    let document_id = "runtime/run_summary:run_1";
    ok(sink
        .send(RUN, document_id, &run_summary("run_1", 1, "created"))
        .await);
    ok(sink
        .send(RUN, document_id, &run_summary("run_1", 2, "running"))
        .await);
    let stored = ok(reader(&convex).get(RUN, document_id).await).expect("stored");
    assert_eq!(stored, run_summary("run_1", 2, "running"));
    assert_eq!(ok(reader(&convex).list_all(RUN).await).len(), 1);
    assert_eq!(
        ok(reader(&convex)
            .get(WORKER, "runtime/codex_worker_summary:w")
            .await),
        None
    );
    ok(convex.shutdown().await);
}

/// The configured backend with its front answering failed functions with
/// `mode` (an external deployment answers as it does).
async fn backend_answering(mode: UdfFailureStatus) -> ConvexBackend {
    start(&ConvexConfig {
        udf_failure_status: mode,
        ..config()
    })
    .await
}

#[tokio::test]
async fn a_summary_the_validators_refuse_is_a_convex_error_naming_the_field_in_either_mode() {
    // 200 + `status: "error"` (the open-source backend) and 560 (the other
    // answer the official client accepts) are the same class (§4.3).
    for mode in UdfFailureStatus::ALL {
        let convex = backend_answering(mode).await;
        let sink = ConvexHttpSink::new(&sink_config(&convex, None));
        let mut summary = run_summary("run_1", 1, "created");
        summary["status"] = json!(5);
        let error = sink
            .send(RUN, "runtime/run_summary:run_1", &summary)
            .await
            .unwrap_err();
        match &error {
            SinkError::ConvexError { message } => {
                assert!(
                    message.contains("Path: .summary.status"),
                    "{mode}: {message}"
                );
                assert!(message.contains("Value: 5.0"), "{mode}: {message}");
            }
            other => panic!("{mode}: expected a convex_error, got {other:?}"),
        }
        assert_eq!(error.reason_class(), "convex_error");
        assert_eq!(
            ok(reader(&convex).get(RUN, "runtime/run_summary:run_1").await),
            None
        );
        ok(convex.shutdown().await);
    }
}

#[tokio::test]
async fn an_unknown_function_is_a_convex_error_in_either_mode() {
    for mode in UdfFailureStatus::ALL {
        let convex = backend_answering(mode).await;
        let sink = ConvexHttpSink::new(&ConvexSinkConfig {
            run_summary_mutation_path: "runtime:nope".into(),
            ..sink_config(&convex, None)
        });
        let error = sink
            .send(
                RUN,
                "runtime/run_summary:run_1",
                &run_summary("run_1", 1, "created"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, SinkError::ConvexError { message }
                if message.contains("Could not find public function for 'runtime:nope'")),
            "{mode}: {error:?}"
        );
        ok(convex.shutdown().await);
    }
}

#[tokio::test]
async fn numbers_come_back_as_convex_holds_them() {
    let convex = convex_backend().await;
    let sink = ConvexHttpSink::new(&sink_config(&convex, None));
    let document_id = "runtime/run_summary:run_1";
    // 2^53 + 1 is sent as a JSON number: Convex holds the Float64 2^53.
    let mut summary = run_summary("run_1", 3, "running");
    summary["owner_user_id"] = json!(9_007_199_254_740_993_i64);
    ok(sink.send(RUN, document_id, &summary).await);
    let stored = ok(reader(&convex).get(RUN, document_id).await).expect("stored");
    // The front writes `3.0`; the reader gives back the integer the runtime sent.
    assert_eq!(stored["latest_seq"].as_i64(), Some(3));
    assert_eq!(stored["owner_user_id"], json!(9_007_199_254_740_992_i64));
    assert!(khala_runtime::sink::convex_value::int_precision_lost(
        &summary, &stored
    ));
    ok(convex.shutdown().await);
}

#[tokio::test]
async fn a_document_over_a_convex_limit_is_refused_as_a_convex_error() {
    let convex = convex_backend().await;
    let sink = ConvexHttpSink::new(&sink_config(&convex, None));
    let mut summary = run_summary("run_1", 1, "created");
    summary["status"] = json!("x".repeat(1100 * 1024));
    let error = sink
        .send(RUN, "runtime/run_summary:run_1", &summary)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SinkError::ConvexError { message }
            if message.contains("Value is too large") && message.contains("maximum size 1 MiB")),
        "{error:?}"
    );
    ok(convex.shutdown().await);
}

#[tokio::test]
async fn a_missing_or_wrong_admin_key_is_refused() {
    let convex = convex_backend().await;
    if convex.admin_key().is_none() {
        ok(convex.shutdown().await);
        return;
    }
    for key in ["", "wrong-key"] {
        let sink = ConvexHttpSink::new(&ConvexSinkConfig {
            admin_key: key.to_owned(),
            ..sink_config(&convex, None)
        });
        let error = sink
            .send(
                RUN,
                "runtime/run_summary:run_1",
                &run_summary("run_1", 1, "created"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, SinkError::HttpStatus { status: 401, .. }),
            "key {key:?}: {error:?}"
        );
    }
    assert_eq!(ok(reader(&convex).list_all(RUN).await), vec![]);
    ok(convex.shutdown().await);
}

#[tokio::test]
async fn a_paused_backend_times_out_and_a_stopped_one_refuses() {
    let convex = convex_backend().await;
    let sink = ConvexHttpSink::new(&ConvexSinkConfig {
        request_timeout_ms: 300,
        ..sink_config(&convex, None)
    });
    ok(convex.pause().await);
    let error = sink
        .send(
            RUN,
            "runtime/run_summary:run_1",
            &run_summary("run_1", 1, "created"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SinkError::HttpRequestFailed { reason } if reason.contains("timed out")),
        "{error:?}"
    );
    ok(convex.unpause().await);
    ok(convex.stop().await);
    let error = sink
        .send(
            RUN,
            "runtime/run_summary:run_1",
            &run_summary("run_1", 1, "created"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, SinkError::HttpRequestFailed { .. }),
        "{error:?}"
    );
    ok(convex.shutdown().await);
}

/// JSON values Convex can store: integers within ±2^53, non-integral
/// floats, unicode and empty strings, nulls, nested arrays and objects with
/// Convex-legal keys. (An integral float such as `1.0` comes back as `1`, a
/// known representation difference outside this property.)
fn convex_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(|n| json!(n)),
        (-1.0e9f64..1.0e9)
            .prop_filter("non-integral", |f| f.fract() != 0.0)
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z][a-z0-9_]{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn worker_summary() -> impl Strategy<Value = Value> {
    (
        "[a-zA-Z0-9._:-]{3,40}",
        prop::collection::btree_map("[a-z][a-z0-9_]{0,8}", convex_json(), 0..5),
        "\\PC{0,16}",
        prop::option::of(-(1i64 << 31)..(1i64 << 31)),
        0i64..(1i64 << 53),
    )
        .prop_map(|(worker_id, metadata, workspace, owner, seq)| {
            json!({
                "document_id": format!("runtime/codex_worker_summary:{worker_id}"),
                "kind": "codex_worker_summary",
                "worker_id": worker_id,
                "status": "running",
                "owner_user_id": owner,
                "owner_guest_scope": if owner.is_none() { json!("guest") } else { Value::Null },
                "workspace_ref": workspace,
                "codex_home_ref": "",
                "adapter": "in_memory",
                "metadata": Value::Object(metadata.into_iter().collect()),
                "latest_seq": seq,
                "event_count": seq,
                "latest_event_type": null,
                "latest_event_at": null,
                "started_at": "2026-02-19T20:00:00.000000Z",
                "stopped_at": null,
                "last_heartbeat_at": null,
                "updated_at": "2026-02-19T20:00:00.000000Z",
                "runtime_source": {"entity": "codex_worker", "worker_id": worker_id, "seq": seq},
                "projection_version": "convex_summary_v1",
                "projected_at": "2026-02-19T20:00:01.000000Z",
            })
        })
}

/// Round trip through the sink and the reader comes back equal.
#[test]
fn json_fidelity_of_generated_summaries_through_the_sink_and_reader() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let convex = tokio.block_on(convex_backend());
    let sink = ConvexHttpSink::new(&sink_config(&convex, None));
    let reader = reader(&convex);
    let mut runner = TestRunner::new(Config {
        cases: Config::default().cases.min(64),
        ..Config::default()
    });
    let outcome = runner.run(&worker_summary(), |summary| {
        let document_id = summary["document_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let stored = tokio.block_on(async {
            sink.send(WORKER, &document_id, &summary)
                .await
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            reader
                .get(WORKER, &document_id)
                .await
                .map_err(|error| TestCaseError::fail(error.to_string()))
        })?;
        prop_assert_eq!(stored, Some(summary));
        Ok(())
    });
    tokio.block_on(async { ok(convex.shutdown().await) });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// Dual publish on both real backends: what Convex, Khala and the
/// checkpoint hold after a run and a worker lived their lives.
async fn dual_publish_runtime(
    env: &Env,
    convex: &ConvexBackend,
    profile: Profile,
    mode: SinkMode,
) -> Runtime {
    let sink = Arc::new(ConvexHttpSink::new(&sink_config(convex, None)));
    ok(fixtures::runtime(env.pool(), profile, SinkMode::Noop).with_convex_sink(sink, mode))
}

#[tokio::test]
async fn dual_publish_end_to_end_keeps_convex_and_khala_equal() {
    let env = Env::new().await;
    let convex = convex_backend().await;
    let runtime = dual_publish_runtime(&env, &convex, Profile::Legacy, SinkMode::Dual).await;
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    for event in ["run.started", "run.delta", "run.delta"] {
        assert!(
            ok(runtime.append_event(RUN, "run_1", event, &json!({})).await)
                .projection
                .is_ok()
        );
    }
    ok(runtime
        .create_worker(&fixtures::new_worker("worker_1"))
        .await);
    ok(runtime
        .append_event(WORKER, "worker_1", "worker.heartbeat", &json!({}))
        .await);
    ok(ok(runtime.stop_worker("worker_1").await).projection);
    for (kind, id) in [(RUN, "run_1"), (WORKER, "worker_1")] {
        let document_id = kind.document_id(id);
        let in_convex = ok(reader(&convex).get(kind, &document_id).await).expect("in convex");
        let (version, in_khala, _) = fixtures::read_model(env.pool(), kind, &document_id)
            .await
            .expect("in khala");
        assert_eq!(in_convex, in_khala);
        let checkpoint = fixtures::checkpoint(env.pool(), kind, id)
            .await
            .expect("checkpoint");
        assert_eq!(checkpoint.last_runtime_seq, version);
    }
    ok(convex.shutdown().await);
    env.finish().await;
}

#[tokio::test]
async fn convex_only_writes_convex_and_the_checkpoint_but_not_khala() {
    let env = Env::new().await;
    let convex = convex_backend().await;
    let runtime = dual_publish_runtime(&env, &convex, Profile::Legacy, SinkMode::ConvexOnly).await;
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    ok(ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await)
    .projection);
    let stored =
        ok(reader(&convex).get(RUN, "runtime/run_summary:run_1").await).expect("in convex");
    assert_eq!(stored["latest_seq"], 1);
    assert_eq!(
        fixtures::read_model(env.pool(), RUN, "runtime/run_summary:run_1").await,
        None
    );
    assert_eq!(
        fixtures::checkpoint(env.pool(), RUN, "run_1")
            .await
            .map(|c| c.last_runtime_seq),
        Some(1)
    );
    ok(convex.shutdown().await);
    env.finish().await;
}

/// B1 on the real Convex backend: Khala's database fails during dual publish.
async fn dual_publish_with_khala_down(
    profile: Profile,
) -> [(Option<i64>, Option<i64>, Option<i64>); 2] {
    let env = Env::new().await;
    let convex = convex_backend().await;
    let runtime = dual_publish_runtime(&env, &convex, profile, SinkMode::Dual).await;
    let document_id = "runtime/run_summary:run_1";
    ok(runtime.create_run(&fixtures::new_run("run_1")).await);
    fixtures::break_khala(env.pool()).await;
    let projection = ok(runtime
        .append_event(RUN, "run_1", "run.started", &json!({}))
        .await)
    .projection;
    assert!(matches!(
        projection,
        Err(ProjectionError::SinkWriteFailed { .. })
    ));
    let observe = async || {
        let in_convex = ok(reader(&convex).get(RUN, document_id).await)
            .and_then(|summary| summary["latest_seq"].as_i64());
        let in_khala = fixtures::read_model(env.pool(), RUN, document_id)
            .await
            .map(|row| row.0);
        let checkpoint = fixtures::checkpoint(env.pool(), RUN, "run_1")
            .await
            .map(|c| c.last_runtime_seq);
        (in_convex, in_khala, checkpoint)
    };
    let after_failure = observe().await;
    fixtures::heal_khala(env.pool()).await;
    ok(runtime.repair_pending().await);
    let after_heal = observe().await;
    ok(convex.shutdown().await);
    env.finish().await;
    [after_failure, after_heal]
}

#[tokio::test]
async fn b1_legacy_on_real_convex_convex_stays_ahead_of_khala_and_checkpoint() {
    assert_eq!(
        dual_publish_with_khala_down(Profile::Legacy).await,
        [(Some(1), None, None), (Some(1), None, None)]
    );
}

#[tokio::test]
async fn b1_hardened_on_real_convex_nothing_diverges_and_repair_levels_all_stores() {
    assert_eq!(
        dual_publish_with_khala_down(Profile::Hardened).await,
        [(None, None, None), (Some(1), Some(1), Some(1))]
    );
}

/// A client lane with its flag off reads Convex through this path (§9.1).
#[tokio::test]
async fn the_legacy_convex_read_path_lists_what_convex_holds() {
    use khala_clients::{ConvexReadPath, LegacyReadPath};
    let convex = convex_backend().await;
    let sink = ConvexHttpSink::new(&sink_config(&convex, None));
    for run in ["run_1", "run_2"] {
        ok(sink
            .send(RUN, &RUN.document_id(run), &run_summary(run, 3, "running"))
            .await);
    }
    let path = ConvexReadPath {
        reader: reader(&convex),
        kind: RUN,
    };
    let listed = ok(path.list().await);
    assert_eq!(
        listed
            .iter()
            .map(|(key, _)| key.as_str())
            .collect::<Vec<_>>(),
        ["runtime/run_summary:run_1", "runtime/run_summary:run_2"]
    );
    assert_eq!(listed[1].1, run_summary("run_2", 3, "running"));
    ok(convex.shutdown().await);
}

/// Through the fault proxy, the harness's sink stops waiting as soon as a
/// request is stranded, with `TIMED_OUT` (not reqwest's own timeout, which
/// would take the full 2.5 s), and Convex then holds what each fault leaves:
/// nothing after a black hole, the write after a delay, the queued write
/// once a paused backend resumes.
#[tokio::test]
async fn through_the_proxy_a_stranded_request_times_out_and_the_store_shows_its_fate() {
    use khala_parity::play::proxied_sink::{ProxiedConvexSink, TIMED_OUT};
    use khala_parity::play::proxy::{ProxyMode, TcpProxy, upstream_addr};
    let convex = convex_backend().await;
    let upstream = upstream_addr(&convex.base_url()).expect("host:port");
    let proxy = ok(TcpProxy::start(upstream).await);
    let sink = ProxiedConvexSink::new(
        ConvexHttpSink::new(&ConvexSinkConfig {
            base_url: format!("http://{}", proxy.addr()),
            ..sink_config(&convex, None)
        }),
        proxy.link(),
    );
    let stored = async |run: &str| {
        let document_id = format!("runtime/run_summary:{run}");
        ok(reader(&convex).get(RUN, &document_id).await).is_some()
    };
    let send = async |run: &str| {
        let document_id = format!("runtime/run_summary:{run}");
        sink.send(RUN, &document_id, &run_summary(run, 1, "created"))
            .await
    };
    let timed_out = |result: &Result<(), SinkError>| matches!(result, Err(SinkError::HttpRequestFailed { reason }) if reason == TIMED_OUT);

    ok(send("passed").await);
    assert!(stored("passed").await);

    proxy.set_mode(ProxyMode::Blackhole);
    let swallowed = send("swallowed").await;
    assert!(timed_out(&swallowed), "{swallowed:?}");
    assert!(!stored("swallowed").await);

    proxy.set_mode(ProxyMode::Delay);
    let delayed = send("delayed").await;
    assert!(timed_out(&delayed), "{delayed:?}");
    assert!(stored("delayed").await, "a delayed answer's write ran");

    proxy.set_mode(ProxyMode::Reset);
    let reset = send("reset").await;
    assert!(
        matches!(&reset, Err(SinkError::HttpRequestFailed { reason }) if reason != TIMED_OUT),
        "{reset:?}"
    );
    assert!(!stored("reset").await);

    proxy.set_mode(ProxyMode::Pass);
    ok(convex.pause().await);
    proxy.set_upstream_frozen(true);
    let queued = send("queued").await;
    assert!(timed_out(&queued), "{queued:?}");
    ok(convex.unpause().await);
    proxy.set_upstream_frozen(false);
    ok(proxy.settle(Duration::from_secs(10)).await);
    assert!(stored("queued").await, "the queued write ran on resume");
    ok(send("after").await);
    drop(proxy);
    ok(convex.shutdown().await);
}

/// A failing function, answered by the proxy as Convex answers a mutation
/// that threw (HTTP 200 or 560, `status: "error"`), is `convex_error` to
/// the sink in both forms and leaves nothing in Convex; the sink with the
/// planted defect takes it for success although Convex lacks the write.
#[tokio::test]
async fn through_the_proxy_a_failing_function_is_a_convex_error_and_writes_nothing() {
    use khala_parity::play::proxied_sink::ProxiedConvexSink;
    use khala_parity::play::proxy::{ProxyMode, TcpProxy, upstream_addr};
    let convex = convex_backend().await;
    let upstream = upstream_addr(&convex.base_url()).expect("host:port");
    let proxy = ok(TcpProxy::start(upstream).await);
    let sink_of = |sink: ConvexHttpSink| ProxiedConvexSink::new(sink, proxy.link());
    let config = ConvexSinkConfig {
        base_url: format!("http://{}", proxy.addr()),
        ..sink_config(&convex, None)
    };
    let sink = sink_of(ConvexHttpSink::new(&config));
    let planted = sink_of(ConvexHttpSink::new(&config).with_planted_function_error_ok());
    let stored = async |run: &str| {
        let document_id = format!("runtime/run_summary:{run}");
        ok(reader(&convex).get(RUN, &document_id).await).is_some()
    };
    for (mode, run) in [
        (ProxyMode::FunctionError200, "failed_200"),
        (ProxyMode::FunctionError560, "failed_560"),
    ] {
        proxy.set_mode(mode);
        let document_id = format!("runtime/run_summary:{run}");
        let summary = run_summary(run, 1, "created");
        let failed = sink.send(RUN, &document_id, &summary).await;
        assert!(
            matches!(&failed, Err(SinkError::ConvexError { message }) if message.starts_with("[Request ID: ")),
            "{mode:?}: {failed:?}"
        );
        ok(planted.send(RUN, &document_id, &summary).await);
        assert!(
            !stored(run).await,
            "{mode:?}: a throwing mutation leaves nothing"
        );
    }
    proxy.set_mode(ProxyMode::Pass);
    ok(sink
        .send(
            RUN,
            "runtime/run_summary:after",
            &run_summary("after", 1, "created"),
        )
        .await);
    assert!(stored("after").await);
    drop(proxy);
    ok(convex.shutdown().await);
}

/// A write a paused backend queued runs when it resumes, even though its
/// client gave up and the heal cut the client's connection; the reset that
/// opens the next case travels on another connection, so only waiting for
/// the backend's answer orders the two. After `settle` the write has
/// landed and the proxy holds nothing; a reset then is final. Many rounds:
/// without the wait, the reset overtakes the queued write only sometimes.
#[tokio::test]
async fn a_write_a_paused_backend_queued_lands_before_settle_returns_and_never_after_a_reset() {
    use khala_parity::play::proxied_sink::{ProxiedConvexSink, TIMED_OUT};
    use khala_parity::play::proxy::{ProxyMode, TcpProxy, upstream_addr};
    let convex = convex_backend().await;
    let upstream = upstream_addr(&convex.base_url()).expect("host:port");
    let proxy = ok(TcpProxy::start(upstream).await);
    let sink = ProxiedConvexSink::new(
        ConvexHttpSink::new(&ConvexSinkConfig {
            base_url: format!("http://{}", proxy.addr()),
            ..sink_config(&convex, None)
        }),
        proxy.link(),
    );
    let stored = async || -> Vec<String> {
        let listed = ok(reader(&convex).list_all(RUN).await);
        listed
            .into_iter()
            .map(|(document_id, _)| document_id)
            .collect()
    };
    for round in 0..20 {
        let run = format!("queued{round}");
        let document_id = format!("runtime/run_summary:{run}");
        ok(convex.pause().await);
        proxy.set_upstream_frozen(true);
        let queued = sink
            .send(RUN, &document_id, &run_summary(&run, 1, "created"))
            .await;
        assert!(
            matches!(&queued, Err(SinkError::HttpRequestFailed { reason }) if reason == TIMED_OUT),
            "{queued:?}"
        );
        assert_eq!(
            proxy.in_flight(),
            1,
            "round {round}: handed to the frozen backend"
        );
        // The heal: the mode change cuts the client's side, then the backend resumes.
        proxy.set_mode(ProxyMode::Pass);
        ok(convex.unpause().await);
        proxy.set_upstream_frozen(false);
        ok(proxy.settle(Duration::from_secs(10)).await);
        assert_eq!((proxy.in_flight(), proxy.open_connections()), (0, 0));
        assert_eq!(
            stored().await,
            vec![document_id],
            "round {round}: landed before settle returned"
        );
        ok(convex.reset().await);
        assert_eq!(
            stored().await,
            Vec::<String>::new(),
            "round {round}: nothing lands after the reset"
        );
    }
    drop(proxy);
    ok(convex.shutdown().await);
}
