//! Cases against a deployment the harness cannot reset: the Node front,
//! started here by hand as someone would start a self-hosted backend (its
//! reset endpoint never called, no fault played on it), behind the external
//! provider. Hardened runs over the scenarios without Convex faults pass,
//! twice in a row on the same front: each play's namespace keeps it apart
//! from everything the front already holds. A legacy defect is still found
//! and shrunk there, exactly as on a backend reset before every case, so
//! the namespaced reads see what the plays wrote.

use crate::convex_backend::{config, start};
use crate::support;
use khala_parity::check::gate::Decision;
use khala_parity::plan::scenario::Scenario;
use khala_parity::play::backend::convex::ConvexConfig;
use khala_parity::play::backend::postgres::BackendChoice;
use khala_parity::play::driver::Backends;
use khala_parity::play::engine::{self, EngineSettings};
use khala_parity::run::{self, RunError, RunSettings};
use khala_runtime::Profile;
use khala_runtime::sink::{ConvexHttp, Endpoint};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// How B1 (partial fanout, Khala failing) shows: Convex ahead of Khala at
/// quiescence (X1), or earlier, where parity is checked after every step,
/// as the divergence when Convex takes the write Khala refused (X8).
const B1_CLASSES: [&str; 2] = ["convex_ahead_of_khala", "divergence_unexplained"];
/// Shaped like a self-hosted backend's key.
const ADMIN_KEY: &str = "convex-self-hosted|01c0ffee";
const LISTENING: &str = "convex-front listening on ";

/// `node server.mjs` on a free port, with only an admin key: killed when dropped.
struct HandStartedFront {
    child: Child,
    url: String,
}

impl HandStartedFront {
    fn start() -> Self {
        let config = config();
        let mut child = support::ok(
            Command::new(&config.node)
                .arg("server.mjs")
                .args(["--port", "0", "--host", "127.0.0.1"])
                .current_dir(&config.package_dir)
                .env("CONVEX_ADMIN_KEY", ADMIN_KEY)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn(),
        );
        let stdout = child.stdout.take().expect("a stdout pipe");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().map(support::ok).unwrap_or_default();
        let Some(url) = first.strip_prefix(LISTENING) else {
            let _ = child.kill();
            panic!("the front did not start: {first:?}");
        };
        let url = url.trim().to_owned();
        // The front writes nothing else on stdout; drained all the same.
        std::thread::spawn(move || lines.for_each(drop));
        HandStartedFront { child, url }
    }

    /// The external provider pointed at this front.
    fn as_external(&self) -> ConvexConfig {
        ConvexConfig {
            choice: BackendChoice::External,
            external_url: Some(self.url.clone()),
            external_admin_key: Some(ADMIN_KEY.to_owned()),
            require_containers: false,
            ..config()
        }
    }

    /// Every document id the front holds, in both tables.
    fn document_ids(&self, tokio: &tokio::runtime::Runtime) -> Vec<String> {
        let client = ConvexHttp::new(&self.url, ADMIN_KEY, 5_000);
        let all = support::ok(tokio.block_on(client.call(
            Endpoint::Query,
            "runtime:listAllSummaries",
            serde_json::json!({"limit": 100_000}),
        )));
        ["run_summaries", "codex_worker_summaries"]
            .iter()
            .flat_map(|table| all[table].as_array().cloned().unwrap_or_default())
            .filter_map(|document| document["document_id"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for HandStartedFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn library(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"));
    support::ok(Scenario::load(&path))
}

/// One run against `front`, on backends started for it alone, as a
/// separate `khala-parity run` would.
fn run_against(
    tokio: &tokio::runtime::Runtime,
    front: &HandStartedFront,
    scenarios: &[Scenario],
) -> Result<run::RunOutcome, RunError> {
    let regressions = support::ok(tempfile::tempdir());
    let settings = RunSettings {
        profile: Some(Profile::Hardened),
        cases: Some(6),
        seed: 5,
        time_budget: None,
        regressions: regressions.path().to_owned(),
        shard: None,
    };
    let backends = tokio.block_on(async {
        let postgres = support::backend().await;
        let convex = start(&front.as_external()).await;
        support::ok(Backends::new(postgres, convex).await)
    });
    assert!(backends.convex_is_external());
    let outcome = run::run_scenarios(tokio, &backends, scenarios, &settings, &|_, _| {});
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    outcome
}

/// The run part of a namespaced document id (`…:kp<run>-<play>.run_0`).
fn run_part(document_id: &str) -> Option<&str> {
    let (_, entity) = document_id.split_once(':')?;
    let (namespace, _) = entity.split_once('.')?;
    Some(namespace.rsplit_once('-')?.0)
}

#[test]
fn two_hardened_runs_in_a_row_on_a_front_that_is_never_reset_both_pass() {
    let front = HandStartedFront::start();
    let tokio = support::tokio();
    let scenarios = ["terminal-status", "version-bump", "sink-mode-switches"].map(library);
    let mut held = Vec::new();
    for attempt in ["first", "second"] {
        let outcome = support::ok(run_against(&tokio, &front, &scenarios));
        let report = &outcome.report;
        assert_eq!(
            report.gate.decision,
            Decision::Allow,
            "the {attempt} run: {}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
        assert_eq!(report.scenarios.len(), scenarios.len());
        assert!(
            report.scenarios.iter().all(|scenario| scenario.cases == 6),
            "the {attempt} run played every case"
        );
        held.push(front.document_ids(&tokio));
    }
    // The second run wrote beside the first, under other namespaces, and
    // nothing outside a namespace was written.
    assert!(!held[0].is_empty(), "the first run wrote the front");
    assert!(
        held[1].len() > held[0].len(),
        "the second run wrote the front too"
    );
    assert!(
        held[0].iter().all(|id| held[1].contains(id)),
        "nothing was removed"
    );
    let runs: BTreeSet<&str> = held[1].iter().filter_map(|id| run_part(id)).collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        held[1].iter().filter(|id| run_part(id).is_none()).count(),
        0,
        "{:?}",
        held[1]
    );
}

#[test]
fn a_scenario_with_convex_faults_is_refused_on_an_external_deployment_before_it_plays() {
    let front = HandStartedFront::start();
    let tokio = support::tokio();
    let error =
        run_against(&tokio, &front, &[library("smoke")]).expect_err("smoke weighs fault_convex");
    assert!(error.is_invalid_input());
    let message = error.to_string();
    assert!(
        message.contains("smoke") && message.contains("`fault_convex`"),
        "{message}"
    );
    assert!(front.document_ids(&tokio).is_empty(), "nothing played");
}

#[test]
fn a_legacy_partial_fanout_is_found_and_shrunk_against_a_front_that_is_never_reset() {
    let front = HandStartedFront::start();
    let tokio = support::tokio();
    let text = "name = 'fanout'\ndescription = 'd'\ncases = 12\nmax_steps = 8\n[weights]\nrun_event = 3\nfault_khala = 2\nquiesce = 1\n";
    let scenario = support::ok(Scenario::parse(Path::new("fanout.toml"), text));
    let settings = EngineSettings {
        max_shrink_iters: 256,
        // As in `engine_runs`, which finds B1 with these on a reset backend.
        ..EngineSettings::new(Profile::Legacy, 24, 7)
    };
    let run_on = |convex: ConvexConfig| {
        let backends = tokio.block_on(async {
            let postgres = support::backend().await;
            let convex = start(&convex).await;
            support::ok(Backends::new(postgres, convex).await)
        });
        let run = engine::run_scenario(&tokio, &backends, &scenario, &settings);
        tokio.block_on(async {
            support::ok(backends.shutdown().await.map_err(std::io::Error::other))
        });
        run
    };
    let run = run_on(front.as_external());
    // The same run on a backend reset before every case finds the same.
    let reset = run_on(config());
    let found = |run: &engine::ScenarioRun| -> Vec<_> {
        run.findings
            .iter()
            .map(|finding| {
                (
                    finding.invariant,
                    finding.reason_class,
                    finding.case.clone(),
                )
            })
            .collect()
    };
    assert_eq!(found(&run), found(&reset));

    assert_eq!(run.unknown, None);
    let b1 = run
        .findings
        .iter()
        .find(|finding| B1_CLASSES.contains(&finding.reason_class.to_string().as_str()))
        .unwrap_or_else(|| {
            let found: Vec<_> = run
                .findings
                .iter()
                .map(|finding| (finding.invariant, finding.reason_class.to_string()))
                .collect();
            panic!("Khala failing under dual publish shows Convex ahead of Khala; found {found:?}")
        });
    assert!(b1.reproduced);
    assert!(b1.case.steps.len() <= 3, "{:?}", b1.case.steps);
    // The trace is the namespaced play's, and the violation names its document.
    let namespace = &b1.trace[0].namespace;
    assert!(
        namespace.starts_with("kp") && namespace.ends_with('.'),
        "{namespace:?}"
    );
    assert!(
        b1.violations
            .iter()
            .filter_map(|violation| violation.document_id.as_deref())
            .all(|id| id.contains(namespace.as_str())),
        "{:?}",
        b1.violations
    );
}
