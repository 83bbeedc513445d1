//! `khala-parity audit` against stores a harness run populated: a hardened
//! case audits clean and allows; stored legacy regressions (B1, B2, B3)
//! block naming their document; hand-damaged stores (a deleted Khala row,
//! an edited Convex document, a checkpoint ahead of both) are found and
//! named; bad input (unreachable stores, a missing table or function, a
//! wrong admin key) is `unknown` naming the store and what was expected;
//! `--cycles` and `--watch` rewrite the artifacts each cycle.

use crate::engine_runs::one_slot;
use crate::support::{self, ok};
use khala_parity::audit::{AuditSchedule, run_audit};
use khala_parity::check::gate::{Decision, GateThresholds};
use khala_parity::model::audit::{AuditTables, AuditTarget, Sampling};
use khala_parity::model::case::Case;
use khala_parity::play::audit::AuditConnect;
use khala_parity::play::driver::{self, Backends};
use khala_parity::report::{Report, ReportMode};
use khala_parity::run;
use khala_runtime::Profile;
use khala_runtime::sink::{ConvexHttp, ConvexQueryPaths, Endpoint};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// A hardened case with no fault: runs and workers projected in dual
/// mode, one run finished, then quiescence.
fn hardened_case() -> Case {
    let steps: Vec<Value> = (0..3)
        .flat_map(|run| {
            [
                json!({"action": "append_run_event", "run": run, "event_type": "run.started"}),
                json!({"action": "append_worker_event", "worker": run, "event_type": "worker.heartbeat"}),
            ]
        })
        .chain([
            json!({"action": "finish_run", "run": 0, "status": "succeeded"}),
            json!({"action": "quiesce"}),
        ])
        .collect();
    ok(serde_json::from_value(json!({
        "schema": "khala-parity.case.v1",
        "profile": "hardened",
        "start": {"sink_mode": "dual"},
        "ids": "plain",
        "steps": steps,
    })))
}

/// Plays `case` and returns where its stores are.
fn populate(tokio: &tokio::runtime::Runtime, backends: &Backends, case: &Case) -> AuditConnect {
    let result = ok(tokio.block_on(driver::play(backends, case, false)));
    assert!(result.steps_run > 0);
    let (postgres_url, convex_url, convex_admin_key) =
        backends.last_case_stores().expect("a case left its stores");
    AuditConnect {
        postgres_url,
        convex_url,
        convex_admin_key,
        max_rps: None,
    }
}

fn every_checkpoint() -> AuditTarget {
    AuditTarget {
        tables: AuditTables::default(),
        paths: ConvexQueryPaths::default(),
        sampling: Sampling::All { max_entities: None },
    }
}

fn audit(tokio: &tokio::runtime::Runtime, connect: &AuditConnect, target: AuditTarget) -> Report {
    tokio.block_on(run_audit(
        connect,
        target,
        &GateThresholds::default(),
        AuditSchedule::ONCE,
        &mut |_| {},
    ))
}

/// `(reason_class, document_id)` of every violation.
fn named(report: &Report) -> Vec<(String, String)> {
    report
        .violations
        .iter()
        .map(|violation| {
            (
                violation.reason_class.to_string(),
                violation.document_id.clone().unwrap_or_default(),
            )
        })
        .collect()
}

async fn execute(url: &str, statement: &str) {
    let pool = ok(sqlx::PgPool::connect(url).await);
    ok(sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&pool)
        .await);
    pool.close().await;
}

#[test]
fn a_hardened_run_audits_clean_and_damage_to_each_store_is_named() {
    let tokio = support::tokio();
    let backends = one_slot(&tokio);
    let connect = populate(&tokio, &backends, &hardened_case());

    let clean = audit(&tokio, &connect, every_checkpoint());
    assert_eq!(clean.mode, ReportMode::Audit);
    assert_eq!(
        named(&clean),
        Vec::<(String, String)>::new(),
        "{:#?}",
        clean.violations
    );
    assert_eq!(
        clean.gate.decision,
        Decision::Allow,
        "{:?}",
        clean.gate.reasons
    );
    // Three runs and three workers, every one compared.
    assert_eq!(clean.metrics.auditor.all.sampled, 6);
    assert_eq!(clean.metrics.auditor.all.mismatches, 0);

    let run_1 = "runtime/run_summary:run_1";
    let run_2 = "runtime/run_summary:run_2";
    let worker_0 = "runtime/codex_worker_summary:worker_0";
    tokio.block_on(async {
        // A deleted Khala row.
        execute(
            &connect.postgres_url,
            &format!("DELETE FROM runtime.sync_run_summaries WHERE doc_key = '{run_1}'"),
        )
        .await;
        // A checkpoint ahead of both stores.
        execute(
            &connect.postgres_url,
            &format!(
                "UPDATE runtime.convex_projection_checkpoints SET last_runtime_seq = last_runtime_seq + 3, \
                 summary_hash = repeat('a', 64) WHERE document_id = '{worker_0}'"
            ),
        )
        .await;
        // An edited Convex document.
        let http = ConvexHttp::new(&connect.convex_url, &connect.convex_admin_key, 5_000);
        let document = ok(http
            .call(Endpoint::Query, "runtime:getRunSummary", json!({"document_id": run_2}))
            .await);
        let mut summary = document["summary"].clone();
        summary["status"] = json!("edited by hand");
        ok(http
            .call(
                Endpoint::Mutation,
                "runtime:upsertRunSummary",
                json!({"document_id": run_2, "summary": summary}),
            )
            .await);
    });
    let damaged = audit(&tokio, &connect, every_checkpoint());
    let found = named(&damaged);
    for (class, document) in [
        ("khala_missing", run_1),
        ("hash_and_lag_drift", worker_0),
        ("convex_hash_mismatch", worker_0),
        ("convex_hash_mismatch", run_2),
        ("stores_differ", run_2),
    ] {
        assert!(
            found.contains(&(class.to_owned(), document.to_owned())),
            "{class} on {document} not in {found:?}"
        );
    }
    // Three comparisons of six mismatch; the checkpoint ahead of both
    // stores drifts by the three seqs it was moved.
    assert_eq!(damaged.metrics.auditor.all.mismatches, 3, "{found:?}");
    assert_eq!(damaged.metrics.auditor.all.max_abs_lag_drift, 3);
    assert_eq!(damaged.gate.decision, Decision::Block);
    assert!(
        damaged
            .gate
            .reasons
            .iter()
            .any(|reason| reason.contains("khala_missing")),
        "{:?}",
        damaged.gate.reasons
    );
    tokio.block_on(async { ok(backends.shutdown().await.map_err(std::io::Error::other)) });
}

#[test]
fn stored_legacy_regressions_of_b1_b2_b3_block_naming_their_document() {
    let tokio = support::tokio();
    let backends = one_slot(&tokio);
    for (file, class) in [
        // B3: the switch to dual skips the backfill, Khala never gets it.
        ("sink-mode-switches--X1-khala_missing.json", "khala_missing"),
        // B1: Convex got a write whose checkpoint and Khala row did not.
        (
            "fanout-faults--X2-convex_hash_mismatch.json",
            "convex_hash_mismatch",
        ),
        // Issue 14: Convex rounds an integer above 2^53 the runtime sent.
        (
            "value-fidelity--C2-checkpoint_ahead_of_convex.json",
            "convex_int_precision_lost",
        ),
        // B2: the original auditor missed this drift; the audit reads Convex.
        (
            "fanout-faults--X5-auditor_missed_drift.json",
            "convex_hash_mismatch",
        ),
    ] {
        let case = ok(run::load_case(
            &Path::new("../scenarios/regressions").join(file),
        ));
        assert_eq!(case.profile, Profile::Legacy);
        let connect = populate(&tokio, &backends, &case);
        let report = audit(&tokio, &connect, every_checkpoint());
        assert_eq!(
            report.gate.decision,
            Decision::Block,
            "{file}: {:?}",
            report.gate
        );
        let found = named(&report);
        assert!(
            found
                .iter()
                .any(|(found, document)| found == class && document.starts_with("runtime/")),
            "{file}: {class} not in {found:?}"
        );
    }
    tokio.block_on(async { ok(backends.shutdown().await.map_err(std::io::Error::other)) });
}

/// The binary on `args`: its exit code, stdout and stderr.
fn khala_parity(args: &[&str]) -> (Option<i32>, String, String) {
    let output = ok(Command::new(env!("CARGO_BIN_EXE_khala-parity"))
        .args(args)
        .output());
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_unknown_naming_the_store_and_what_was_expected() {
    let tokio = support::tokio();
    let backends = one_slot(&tokio);
    let connect = populate(&tokio, &backends, &hardened_case());
    let out = tempfile::tempdir().expect("temporary directory");
    let out_dir = out.path().to_string_lossy().into_owned();
    let base = |postgres: &str, convex: &str, key: &str| -> Vec<String> {
        [
            "audit",
            "--postgres-url",
            postgres,
            "--convex-url",
            convex,
            "--convex-admin-key",
            key,
            "--out",
            &out_dir,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let pg = connect.postgres_url.as_str();
    let convex = connect.convex_url.as_str();
    let key = connect.convex_admin_key.as_str();
    let unreachable_pg = "postgres://nobody@127.0.0.1:1/nothing";
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (
            base(unreachable_pg, convex, key),
            &["postgres at", "cannot connect"],
        ),
        (
            base(pg, "http://127.0.0.1:1", key),
            &["convex at", "cannot reach"],
        ),
        (
            [
                base(pg, convex, key),
                vec!["--journal-table".into(), "runtime.no_such_journal".into()],
            ]
            .concat(),
            &[
                "postgres: table `runtime.no_such_journal` does not exist",
                "doc_version",
            ],
        ),
        (
            [
                base(pg, convex, key),
                vec!["--get-run-summary".into(), "runtime:nope".into()],
            ]
            .concat(),
            &["convex at", "`runtime:nope` is missing"],
        ),
        (
            base(pg, convex, "not-the-key"),
            &["convex at", "refused the admin key"],
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, _) = khala_parity(&args);
        assert_eq!(code, Some(2), "{args:?}: {stdout}");
        for text in expected {
            assert!(stdout.contains(text), "{args:?}: {text:?} not in {stdout}");
        }
        let report: Report = ok(serde_json::from_str(&ok(std::fs::read_to_string(
            out.path().join("report.json"),
        ))));
        assert_eq!(report.gate.decision, Decision::Unknown);
        assert_eq!(report.mode, ReportMode::Audit);
    }
    // A table name that is not one is refused before anything is read.
    let args = [
        base(pg, convex, key),
        vec!["--checkpoints-table".into(), "x; DROP".into()],
    ]
    .concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = khala_parity(&args);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--checkpoints-table"), "{stderr}");

    // The clean deployment allows, and --cycles with --watch keeps the
    // metrics file current: it counts every cycle.
    let args = [
        base(pg, convex, key),
        ["--watch", "0", "--cycles", "3", "--sample-size", "2"]
            .map(str::to_owned)
            .to_vec(),
    ]
    .concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = khala_parity(&args);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let metrics = ok(std::fs::read_to_string(out.path().join("metrics.prom")));
    assert!(
        metrics.contains("openagents_runtime_sync_parity_cycle_count{component=\"sync_parity_auditor\",status=\"ok\"} 3"),
        "{metrics}"
    );
    // Three cycles of two swept over six checkpoints: each compared once.
    assert!(
        metrics.contains(
            "openagents_runtime_sync_parity_cycle_sampled{component=\"sync_parity_auditor\"} 6"
        ),
        "{metrics}"
    );
    let drill = ok(std::fs::read_to_string(out.path().join("drill.md")));
    assert!(
        drill.contains("## Parity audit of the live deployment"),
        "{drill}"
    );
    tokio.block_on(async { ok(backends.shutdown().await.map_err(std::io::Error::other)) });
}

/// The SQL of every simple (`Q`) and extended (`P`) query message in one
/// connection's client bytes, and the startup message's parameters.
fn postgres_wire(bytes: &[u8]) -> (Vec<(String, String)>, Vec<String>) {
    let int =
        |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    let cstrings = |payload: &[u8]| -> Vec<String> {
        payload
            .split(|byte| *byte == 0)
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect()
    };
    let mut at = 0;
    let mut parameters = Vec::new();
    // Untyped messages first: an SSL or GSS request (8 bytes), then startup.
    while at + 8 <= bytes.len() {
        let (length, code) = (int(at), int(at + 4));
        if code == 80_877_103 || code == 80_877_104 {
            at += 8;
            continue;
        }
        let pairs = cstrings(&bytes[at + 8..at + length]);
        for pair in pairs.chunks(2) {
            if let [key, value] = pair
                && !key.is_empty()
            {
                parameters.push((key.clone(), value.clone()));
            }
        }
        at += length;
        break;
    }
    let mut statements = Vec::new();
    while at + 5 <= bytes.len() {
        let tag = bytes[at];
        let length = int(at + 1);
        let payload = &bytes[at + 5..(at + 1 + length).min(bytes.len())];
        match tag {
            b'Q' => statements.push(cstrings(payload)[0].clone()),
            b'P' => statements.push(cstrings(payload)[1].clone()),
            _ => {}
        }
        at += 1 + length;
    }
    (parameters, statements)
}

/// The request line's path of every HTTP request in the client's bytes.
fn http_paths(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split("\r\n")
        .filter(|line| line.ends_with(" HTTP/1.1") || line.ends_with(" HTTP/1.0"))
        .filter_map(|line| line.split(' ').nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn the_audit_sends_postgres_only_reads_in_a_read_only_session_and_convex_only_queries() {
    use khala_parity::play::proxy::{TcpProxy, upstream_addr};
    use sqlx::postgres::PgConnectOptions;
    use std::str::FromStr;
    let tokio = support::tokio();
    let backends = one_slot(&tokio);
    let connect = populate(&tokio, &backends, &hardened_case());
    let options = ok(PgConnectOptions::from_str(&connect.postgres_url));
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let (postgres_proxy, convex_proxy) = tokio.block_on(async {
        let postgres = ok(TcpProxy::start(
            ok(tokio::net::lookup_host(upstream.clone()).await)
                .next()
                .expect("the server's address"),
        )
        .await);
        let convex =
            ok(TcpProxy::start(upstream_addr(&connect.convex_url).expect("an http URL")).await);
        (postgres, convex)
    });
    postgres_proxy.record();
    convex_proxy.record();
    let separator = if connect.postgres_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let proxied = AuditConnect {
        postgres_url: format!(
            "{}{separator}sslmode=disable",
            connect
                .postgres_url
                .replacen(&upstream, &postgres_proxy.addr().to_string(), 1)
        ),
        convex_url: format!("http://{}", convex_proxy.addr()),
        ..connect.clone()
    };
    let schedule = AuditSchedule {
        cycles: Some(2),
        watch: None,
    };
    let report = tokio.block_on(run_audit(
        &proxied,
        every_checkpoint(),
        &GateThresholds::default(),
        schedule,
        &mut |_| {},
    ));
    assert_eq!(
        report.gate.decision,
        Decision::Allow,
        "{:?}",
        report.gate.reasons
    );
    assert_eq!(report.metrics.auditor.all.sampled, 12);

    let connections = postgres_proxy.recorded();
    assert_eq!(connections.len(), 1, "one connection");
    let (parameters, statements) = postgres_wire(&connections[0]);
    assert!(
        parameters
            .iter()
            .any(|(key, value)| key == "options"
                && value.contains("default_transaction_read_only=on")),
        "{parameters:?}"
    );
    let begins = statements
        .iter()
        .filter(|sql| sql.starts_with("BEGIN READ ONLY"))
        .count();
    assert_eq!(begins, 2, "{statements:#?}");
    for sql in &statements {
        let first = sql
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_uppercase();
        assert!(
            ["SELECT", "BEGIN", "COMMIT"].contains(&first.as_str()),
            "a statement other than a read reached PostgreSQL: {sql}"
        );
    }
    // Every audited table was read (the second cycle reuses the prepared
    // statements: only its BEGIN and COMMIT are new text).
    for table in [
        "convex_projection_checkpoints",
        "sync_run_summaries",
        "sync_codex_worker_summaries",
        "sync_stream_events",
        "sync_topic_sequences",
    ] {
        assert!(
            statements.iter().any(|sql| sql.contains(table)),
            "{table}: {statements:#?}"
        );
    }

    let paths: Vec<String> = convex_proxy
        .recorded()
        .iter()
        .flat_map(|bytes| http_paths(bytes))
        .collect();
    // Two probes, then in each of two cycles a listing per projection
    // (one page each) and six documents.
    assert_eq!(paths.len(), 18, "{paths:?}");
    assert!(paths.iter().all(|path| path == "/api/query"), "{paths:?}");
    tokio.block_on(async { ok(backends.shutdown().await.map_err(std::io::Error::other)) });
}
