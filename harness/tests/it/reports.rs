//! Reports: one insta snapshot per stored legacy finding (replayed on the
//! real backends), no pending or unreferenced snapshot, the shape of the
//! artifacts of a real run (drill report, metrics file, timelines), and the
//! `report` subcommand's answers to good and bad input.

use crate::convex_backend::convex_backend;
use crate::support;
use khala_parity::check::gate::{CheckOutcome, GateThresholds};
use khala_parity::model::case::{
    CASE_SCHEMA, Case, IdStyle, KhalaFault, RunEventType, Start, Step,
};
use khala_parity::model::catalogue::Severity;
use khala_parity::model::observation::Observation;
use khala_parity::model::reason::{ReasonClass, StoreClass};
use khala_parity::model::trace::{CaseResult, StepTrace};
use khala_parity::model::violation::Violation;
use khala_parity::plan::scenario::Scenario;
use khala_parity::play::driver::{self, Backends};
use khala_parity::play::engine::{self, EngineSettings, Finding, ScenarioRun};
use khala_parity::report::{self, Decision, Report, drill, load, prometheus};
use khala_runtime::{Profile, SinkMode};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The workspace root: scenarios/ and snapshots/ live there.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness is inside the workspace")
        .to_owned()
}

fn regressions_dir() -> PathBuf {
    root().join("scenarios/regressions")
}

fn snapshots_dir() -> PathBuf {
    root().join("snapshots")
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

fn start_backends(tokio: &tokio::runtime::Runtime) -> Backends {
    tokio.block_on(async {
        let postgres = support::backend().await;
        let convex = convex_backend().await;
        support::ok(Backends::new(postgres, convex).await)
    })
}

fn read_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).expect("regression file");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Insta's settings for report snapshots: the top-level snapshots/ folder,
/// and every volatile field redacted.
fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(snapshots_dir());
    settings.set_sort_maps(true);
    settings.set_omit_expression(true);
    settings.add_redaction(".code_version", "[code_version]");
    settings.add_redaction(".timing", "[timing]");
    settings
}

/// One snapshot per stored legacy finding: the replayed case's report
/// (mismatch evidence, first step, explanation, timeline, gate). A new
/// regression file needs `cargo insta test` + `cargo insta accept`.
#[test]
fn each_stored_legacy_finding_reports_as_its_snapshot() {
    let tokio = tokio();
    let backends = start_backends(&tokio);
    snapshot_settings().bind(|| {
        insta::glob!("../../../scenarios/regressions", "*.json", |path| {
            let case = read_case(path);
            if case.profile != Profile::Legacy {
                return;
            }
            let name = path.file_name().expect("file").to_string_lossy();
            let result = tokio
                .block_on(driver::play(&backends, &case, false))
                .unwrap_or_else(|error| panic!("{name}: {}", support::report(&error)));
            let case_file = format!("scenarios/regressions/{name}");
            let report =
                report::for_case(&case, Some(case_file), &result, &GateThresholds::default());
            let origin = case.origin.as_ref().expect("stored cases have an origin");
            assert!(
                report
                    .violations
                    .iter()
                    .any(|violation| violation.invariant == origin.invariant
                        && violation.reason_class == origin.reason_class),
                "{name} no longer shows {} {}",
                origin.invariant,
                origin.reason_class
            );
            assert_eq!(report.gate.decision, Decision::Block, "{name}");
            // What the snapshot holds must read back as a report.
            let text = serde_json::to_string(&report).expect("serialises");
            assert_eq!(
                support::ok(load::parse(Path::new(&*name), &text)),
                report,
                "{name}"
            );
            insta::assert_json_snapshot!("legacy_finding", report);
        });
    });
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
}

/// CI must fail on a pending (`.snap.new`, `.pending-snap`) or unreferenced
/// snapshot: every file in snapshots/ is the snapshot of a stored legacy
/// finding, and every stored legacy finding has one.
#[test]
fn snapshots_are_neither_pending_nor_unreferenced() {
    const PREFIX: &str = "it__reports__legacy_finding@";
    let mut problems = Vec::new();
    let mut snapshotted = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(snapshots_dir()).expect("snapshots/ exists") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name == "README.md" {
            continue;
        }
        if name.ends_with(".snap.new") || name.ends_with(".pending-snap") {
            problems.push(format!("{name} is pending: run `cargo insta review`"));
            continue;
        }
        let Some(input) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(".snap"))
        else {
            problems.push(format!("{name} is no report snapshot"));
            continue;
        };
        let path = regressions_dir().join(input);
        if !path.is_file() {
            problems.push(format!("{name} is unreferenced: {input} is gone"));
        } else if read_case(&path).profile != Profile::Legacy {
            problems.push(format!(
                "{name} is unreferenced: {input} is not a legacy case"
            ));
        }
        snapshotted.insert(input.to_owned());
    }
    for entry in std::fs::read_dir(regressions_dir()).expect("regressions") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("file")
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".json")
            && read_case(&path).profile == Profile::Legacy
            && !snapshotted.contains(&name)
        {
            problems.push(format!(
                "{name} has no snapshot: run `cargo insta test` then `cargo insta accept`"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn case(steps: Vec<Step>) -> Case {
    Case {
        schema: CASE_SCHEMA.to_owned(),
        profile: Profile::Legacy,
        start: Start::new(SinkMode::Dual),
        ids: IdStyle::Plain,
        steps,
        origin: None,
    }
}

fn violation(reason_class: StoreClass, step_index: usize) -> Violation {
    let reason_class = ReasonClass::from(reason_class);
    Violation {
        invariant: reason_class.invariant(),
        severity: Severity::Critical,
        reason_class,
        document_id: Some("runtime/run_summary:run_0".to_owned()),
        step_index,
        detail: "khala has no document".to_owned(),
        expected: Some(json!({"status": "created", "latest_seq": 1})),
        khala: None,
        convex: Some(json!({"status": "created", "latest_seq": 1, "projected_at": "t"})),
        checkpoint: None,
    }
}

/// A report with one finding and no trace, from the engine's types.
fn synthetic_report(unknown: Option<&str>) -> Report {
    let run = ScenarioRun {
        scenario: "synthetic".into(),
        cases: 3,
        steps: 9,
        unknown: unknown.map(str::to_owned),
        findings: vec![Finding {
            invariant: "X1",
            reason_class: StoreClass::KhalaMissing.into(),
            case: case(vec![
                Step::BreakKhala {
                    fault: KhalaFault::ReadModel,
                },
                Step::AppendRunEvent {
                    run: 0,
                    event_type: RunEventType::Started,
                },
            ]),
            violations: vec![violation(StoreClass::KhalaMissing, 2)],
            shrink_steps: 4,
            shrink_case_steps: 0,
            shrink_time: Duration::ZERO,
            reproduced: true,
            seen_after: Duration::ZERO,
            trace: Vec::new(),
        }],
        ..ScenarioRun::default()
    };
    report::build(
        Profile::Legacy,
        5,
        &[run],
        &[vec![Some("case.json".into())]],
    )
}

/// A played case as the driver traces it: Khala never gets run 0.
fn traced_partial_fanout() -> (Case, CaseResult) {
    let case = case(vec![
        Step::BreakKhala {
            fault: KhalaFault::ReadModel,
        },
        Step::AppendRunEvent {
            run: 0,
            event_type: RunEventType::Started,
        },
        Step::AuditorCycle,
    ]);
    let mut oracle = khala_parity::oracle::Oracle::at_start(case.ids, &case.start);
    let mut trace = Vec::new();
    for (index, step) in case
        .steps
        .iter()
        .cloned()
        .chain([Step::Quiesce])
        .enumerate()
    {
        oracle.apply(&step);
        let mut observation = Observation::default();
        if index >= 1 {
            let entity = khala_parity::model::case::EntityRef::Run(0);
            observation.convex.insert(
                oracle.document_id(entity),
                oracle.expected_document(entity).expect("exists"),
            );
        }
        trace.push(StepTrace {
            namespace: String::new(),
            index,
            step,
            observation,
            auditor: None,
            clients: None,
            refused: Vec::new(),
        });
    }
    let result = CaseResult {
        steps_run: trace.len(),
        violations: vec![violation(StoreClass::KhalaMissing, 3)],
        trace,
        ..CaseResult::default()
    };
    (case, result)
}

#[test]
fn a_mismatch_report_has_evidence_diff_first_step_and_prose() {
    let (case, result) = traced_partial_fanout();
    let report = report::for_case(
        &case,
        Some("c.json".into()),
        &result,
        &GateThresholds::default(),
    );
    let violation = &report.violations[0];
    assert_eq!(
        violation.first_step,
        Some(1),
        "Khala is missing since the append"
    );
    assert_eq!(violation.step_index, 3);
    assert!(
        violation.convex.is_some() && violation.khala.is_none() && violation.expected.is_some()
    );
    // Convex is as the oracle says (timestamps aside) and Khala has
    // nothing to compare: no field disagrees.
    assert_eq!(violation.diff, [], "{:?}", violation.diff);
    let finding = &report.findings[0];
    assert!(
        finding
            .explanation
            .contains("1. The runtime appends `run.started` to run 0."),
        "{}",
        finding.explanation
    );
    assert!(
        finding.explanation.contains("From step 1 on"),
        "{}",
        finding.explanation
    );
    assert!(
        finding.explanation.contains("This breaks X1"),
        "{}",
        finding.explanation
    );
    let timeline = finding.timeline.as_ref().expect("traced");
    assert_eq!(
        (timeline.first_step, timeline.detected_step),
        (Some(1), Some(3))
    );
    assert_eq!(report.gate.decision, Decision::Block);

    let text = report::human::render(&report, false);
    for needle in [
        "gate: BLOCK",
        "X1 khala_missing critical",
        "diverged since step 1",
        "replay: khala-parity replay c.json",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(!text.contains('\x1b'));
    assert!(report::human::render(&report, true).contains("\x1b[1;31mBLOCK"));
    assert!(text.lines().count() <= 40, "one screen:\n{text}");
}

#[test]
fn the_drill_checklist_fails_rollback_only_for_findings_seen_after_one() {
    use khala_parity::model::case::RollbackSwitch;
    let verdict_of_rollback = |rollback_at: usize| {
        let (mut case, mut result) = traced_partial_fanout();
        let rollback = Step::Rollback {
            switch: RollbackSwitch::ClientFlags,
        };
        case.steps[rollback_at] = rollback.clone();
        result.trace[rollback_at].step = rollback;
        let report = report::for_case(&case, None, &result, &GateThresholds::default());
        let checklist = drill::checklist(&report);
        assert_eq!(checklist.len(), 6);
        checklist[4].1
    };
    // The violation is seen after step 3: a rollback at step 2 precedes it.
    assert_eq!(verdict_of_rollback(2), drill::Verdict::Fail);
    // Evidence of a rollback with no finding after it passes.
    let (case, result) = traced_partial_fanout();
    let clean = CaseResult {
        violations: Vec::new(),
        ..result
    };
    let mut rolled = case.clone();
    rolled.steps[2] = Step::Rollback {
        switch: RollbackSwitch::ClientFlags,
    };
    let mut trace = clean.trace.clone();
    trace[2].step = rolled.steps[2].clone();
    let report = report::for_case(
        &rolled,
        None,
        &CaseResult { trace, ..clean },
        &GateThresholds::default(),
    );
    assert_eq!(drill::checklist(&report)[4].1, drill::Verdict::Pass);
}

#[test]
fn rendered_artifacts_have_their_shape() {
    let (case, result) = traced_partial_fanout();
    let report = report::for_case(
        &case,
        Some("c.json".into()),
        &result,
        &GateThresholds::default(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let written = support::ok(report::artifacts::write(&report, dir.path()));
    let names: Vec<String> = written
        .iter()
        .map(|path| {
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "report.json",
            "report.txt",
            "metrics.prom",
            "drill.md",
            "timeline-1.svg"
        ]
    );
    check_artifacts(dir.path());
    let markdown = drill::render(&report);
    assert!(markdown.contains("![timeline of finding 1](timeline-1.svg)"));
    assert!(
        markdown
            .contains("| 1. Auditor enabled; cycle and entity metrics confirmed | NOT EXERCISED |"),
        "{markdown}"
    );
    // A broken drill report is told apart.
    assert!(drill::check_shape(&markdown.replace("## Rollback evidence", "## Rollback")).is_err());
    assert!(
        prometheus::check_shape("# TYPE x gauge\nx 1\n").is_err(),
        "no HELP"
    );
    assert!(prometheus::check_shape("# HELP x h\n# TYPE x gauge\nx one\n").is_err());
}

/// The shape every artifacts folder has: `report.json` reads back, the
/// drill report has its sections, the metrics file is exposition text with
/// the §8 names, and there is one SVG per finding with a timeline.
fn check_artifacts(dir: &Path) {
    let report = support::ok(load::load(&dir.join("report.json")));
    let markdown = std::fs::read_to_string(dir.join("drill.md")).expect("drill.md");
    if let Err(problem) = drill::check_shape(&markdown) {
        panic!("drill.md: {problem}\n{markdown}");
    }
    let metrics = std::fs::read_to_string(dir.join("metrics.prom")).expect("metrics.prom");
    let names = prometheus::check_shape(&metrics)
        .unwrap_or_else(|problem| panic!("metrics.prom: {problem}"));
    for name in [
        "openagents_runtime_sync_parity_cycle_count",
        "openagents_runtime_sync_parity_cycle_mismatch_rate",
        "openagents_runtime_sync_parity_cycle_max_abs_lag_drift",
        "openagents_runtime_sync_parity_entity_abs_lag_drift_bucket",
        "openagents_runtime_parity_failure_count",
        "khala_parity_gate_decision",
        "khala_parity_cases_total",
    ] {
        assert!(
            names.iter().any(|seen| seen == name),
            "{name} missing from metrics.prom"
        );
    }
    assert!(metrics.contains(&format!(
        "khala_parity_gate_decision{{decision=\"{}\"}} 1",
        serde_json::to_value(report.gate.decision).expect("decision").as_str().expect("str")
    )));
    let svgs = report
        .findings
        .iter()
        .filter(|finding| finding.timeline.is_some())
        .count();
    for index in 0..svgs {
        let svg = std::fs::read_to_string(dir.join(drill::timeline_file(index))).expect("svg");
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
                && svg.trim_end().ends_with("</svg>")
        );
    }
    assert!(
        !std::fs::read_to_string(dir.join("report.txt"))
            .expect("report.txt")
            .contains('\x1b')
    );
}

/// The CI artifacts: `ci/artifacts.sh` runs the harness into a folder and
/// then this test with `KHALA_PARITY_ARTIFACTS_DIR` naming it. Without the
/// variable the test makes its own from a short real run.
#[test]
fn artifacts_of_a_real_run_have_the_drill_shape() {
    if let Some(dir) = std::env::var_os("KHALA_PARITY_ARTIFACTS_DIR") {
        check_artifacts(Path::new(&dir));
        return;
    }
    let text = std::fs::read_to_string(root().join("scenarios/smoke.toml")).expect("smoke");
    let scenario = support::ok(Scenario::parse(Path::new("smoke.toml"), &text));
    let settings = EngineSettings {
        max_shrink_iters: 16,
        max_shrink_time: Duration::from_secs(30),
        ..EngineSettings::new(Profile::Hardened, 3, 1)
    };
    let tokio = tokio();
    let backends = start_backends(&tokio);
    let run = engine::run_scenario(&tokio, &backends, &scenario, &settings);
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    assert_eq!(run.unknown, None);
    let report = report::build_gated(
        Profile::Hardened,
        1,
        &[run],
        &[],
        std::slice::from_ref(&scenario.gate),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    support::ok(report::artifacts::write(&report, dir.path()));
    check_artifacts(dir.path());
}

fn harness(arguments: &[&str]) -> (u8, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_khala-parity"))
        .args(arguments)
        .env_remove("NO_COLOR")
        .output()
        .expect("the harness runs");
    (
        output.status.code().expect("exited") as u8,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_report_subcommand_renders_and_regates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("report.json");
    let file = path.to_str().expect("utf-8");
    std::fs::write(
        &path,
        serde_json::to_string(&synthetic_report(None)).expect("json"),
    )
    .expect("write");

    let (code, stdout, _) = harness(&["report", file]);
    assert_eq!(code, 1, "the stored gate blocks");
    assert!(
        stdout.contains("gate: BLOCK") && !stdout.contains('\x1b'),
        "{stdout}"
    );
    let (code, stdout, _) = harness(&["report", file, "--format", "prometheus"]);
    assert_eq!(code, 1);
    support::ok(prometheus::check_shape(&stdout).map_err(std::io::Error::other));
    let (_, stdout, _) = harness(&["report", file, "--format", "markdown"]);
    support::ok(drill::check_shape(&stdout).map_err(std::io::Error::other));
    // Counted as a tolerated warning, the finding no longer blocks.
    let (code, stdout, _) = harness(&[
        "report",
        file,
        "--format",
        "json",
        "--threshold",
        "reason_severity.khala_missing=warning",
        "--threshold",
        "max_warnings=1",
    ]);
    assert_eq!(code, 0, "{stdout}");
    let regated: Report = serde_json::from_str(&stdout).expect("json report");
    assert_eq!(regated.gate.decision, Decision::Allow);
    assert!(
        regated
            .gate
            .checks
            .iter()
            .any(|check| check.check == "warnings" && check.outcome == CheckOutcome::Pass)
    );
    let gate_file = dir.path().join("gate.toml");
    std::fs::write(
        &gate_file,
        "max_warnings = 1\n[reason_severity]\nkhala_missing = \"warning\"\n",
    )
    .expect("write");
    let (code, _, _) = harness(&["report", file, "--gate", gate_file.to_str().expect("utf-8")]);
    assert_eq!(code, 0);
    let out = dir.path().join("out");
    let (code, _, _) = harness(&["report", file, "--out", out.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(out.join("drill.md").is_file() && out.join("metrics.prom").is_file());

    std::fs::write(
        &path,
        serde_json::to_string(&synthetic_report(Some("postgres died"))).expect("json"),
    )
    .expect("write");
    assert_eq!(harness(&["report", file]).0, 2, "unknown is exit 2");
}

#[test]
fn bad_input_to_the_report_subcommand_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = serde_json::to_value(synthetic_report(None)).expect("json");
    let write = |name: &str, value: &serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, value.to_string()).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let mut wrong_schema = good.clone();
    wrong_schema["schema"] = json!("khala-parity.report.v0");
    let mut bad_outcome = good.clone();
    bad_outcome["gate"]["checks"][0]["outcome"] = json!("maybe");
    let mut unknown_class = good.clone();
    unknown_class["violations"][0]["reason_class"] = json!("khala_mising");
    let mut bad_threshold = good.clone();
    bad_threshold["scenarios"][0]["thresholds"]["max_mismatch_rate"] = json!(3.0);
    let mut extra_key = good.clone();
    extra_key["stats"]["speed"] = json!(1);
    let good_file = write("good.json", &good);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![write("schema.json", &wrong_schema)], "key `schema`"),
        (
            vec![write("outcome.json", &bad_outcome)],
            "gate.checks[0].outcome",
        ),
        (
            vec![write("class.json", &unknown_class)],
            "violations[0].reason_class",
        ),
        (
            vec![write("threshold.json", &bad_threshold)],
            "scenarios[0].thresholds.max_mismatch_rate",
        ),
        (vec![write("extra.json", &extra_key)], "stats.speed"),
        (vec![write("truncated.json", &json!("{"))], "key `.`"),
        (
            vec![dir.path().join("absent.json").display().to_string()],
            "key `.`",
        ),
        (
            vec![
                good_file.clone(),
                "--threshold".into(),
                "max_mismatch_rate=0".into(),
            ],
            "max_mismatch_rate",
        ),
        (
            vec![
                good_file.clone(),
                "--threshold".into(),
                "reason_severity.nope=warning".into(),
            ],
            "reason_severity.nope",
        ),
        (
            vec![
                good_file.clone(),
                "--threshold".into(),
                "max_stale=0.1".into(),
            ],
            "max_stale",
        ),
    ];
    for (arguments, key) in cases {
        let mut all = vec!["report"];
        all.extend(arguments.iter().map(String::as_str));
        check(all, key);
    }
    // `replay` refuses bad thresholds before it starts any backend.
    let mut stored: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .expect("regressions")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    stored.sort();
    let case = stored
        .first()
        .expect("a stored case")
        .to_str()
        .expect("utf-8");
    for (threshold, key) in [
        ("max_mismatch_rate=5", "max_mismatch_rate"),
        (
            "reason_severity.khala_mising=warning",
            "reason_severity.khala_mising",
        ),
    ] {
        check(vec!["replay", case, "--threshold", threshold], key);
    }
}

/// The harness exits 64 with `key` in its error, and does not panic.
fn check(arguments: Vec<&str>, key: &str) {
    let (code, _, stderr) = harness(&arguments);
    assert_eq!(code, 64, "{arguments:?}: {stderr}");
    assert!(
        stderr.contains(key),
        "{arguments:?}: {key:?} not in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
