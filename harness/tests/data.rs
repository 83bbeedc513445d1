//! Data-driven tests: every scenario file and every stored regression is a
//! test of its own under nextest, found by file name; adding one needs no
//! Rust change and no rebuild.
//!
//! - `scenarios/*.toml`: the scenario's cases (or `PROPTEST_CASES`) under the
//!   `hardened` profile must let the gate allow and reach the coverage
//!   minimums the file declares (checked when at least its own number of
//!   cases ran). A file that does not load fails its own test only.
//!   `soak.toml` runs only under `cargo nextest run --profile soak`.
//! - `scenarios/regressions/*.json`: the stored minimal case must still show
//!   its recorded violation under its recorded profile, and must pass under
//!   `hardened` (the fix holds).

use datatest_stable::Utf8Path;
use khala_parity::model::case::Case;
use khala_parity::plan::scenario::Scenario;
use khala_parity::play::driver::{self, Backends};
use khala_parity::play::engine::{self, EngineSettings};
use khala_parity::run;
use khala_runtime::Profile;
use std::time::Duration;

type TestResult = datatest_stable::Result<()>;

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn backends() -> Result<Backends, Box<dyn std::error::Error>> {
    Ok(run::start_backends(None, 1).await?)
}

fn scenario(path: &Utf8Path, contents: String) -> TestResult {
    let scenario = Scenario::parse(path.as_std_path(), &contents)?;
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(scenario.cases);
    let settings = EngineSettings {
        max_shrink_iters: 64,
        max_shrink_time: Duration::from_secs(60),
        ..EngineSettings::new(Profile::Hardened, cases, scenario.seed.unwrap_or(1))
    };
    let tokio = tokio();
    let backends = tokio.block_on(backends())?;
    let run = engine::run_scenario(&tokio, &backends, &scenario, &settings);
    tokio.block_on(backends.shutdown())?;
    if let Some(unknown) = run.unknown {
        return Err(format!("unknown: {unknown}").into());
    }
    if let Some(finding) = run.findings.first() {
        let case = serde_json::to_string_pretty(&finding.case)?;
        return Err(format!(
            "hardened violates {} ({}); minimal case:\n{case}",
            finding.invariant, finding.reason_class
        )
        .into());
    }
    if run.cases != cases {
        return Err(format!("ran {} of {cases} cases", run.cases).into());
    }
    if let Some(coverage) = &run.coverage
        && !coverage.gaps.is_empty()
    {
        let gaps: Vec<String> = coverage.gaps.iter().map(ToString::to_string).collect();
        return Err(format!("{path}: {}", gaps.join("; ")).into());
    }
    Ok(())
}

fn regression(path: &Utf8Path, _contents: String) -> TestResult {
    // The run's own reader, with its schema check and file:line errors.
    let case = run::load_case(path.as_std_path())?;
    let origin = case
        .origin
        .clone()
        .ok_or_else(|| format!("{path}: a stored regression needs its origin"))?;
    let tokio = tokio();
    let backends = tokio.block_on(backends())?;
    let recorded = tokio.block_on(driver::play(&backends, &case, false));
    let hardened = Case {
        profile: Profile::Hardened,
        ..case.clone()
    };
    let fixed = tokio.block_on(driver::play(&backends, &hardened, false));
    tokio.block_on(backends.shutdown())?;
    let recorded = recorded?;
    let reproduced = recorded.violations.iter().any(|violation| {
        violation.invariant == origin.invariant && violation.reason_class == origin.reason_class
    });
    // A case stored as not reproduced showed its failure once and never on
    // replay: it is kept as evidence, and only the fix is checked here.
    if !reproduced && origin.reproduced {
        return Err(format!(
            "{path}: under {} the case no longer shows {} ({}); it showed {:?}",
            case.profile,
            origin.invariant,
            origin.reason_class,
            recorded
                .violations
                .iter()
                .map(|violation| (violation.invariant, &violation.reason_class))
                .collect::<Vec<_>>()
        )
        .into());
    }
    let fixed = fixed?;
    if let Some(violation) = fixed.violations.first() {
        return Err(format!(
            "{path}: hardened still violates {} ({}): {}",
            violation.invariant, violation.reason_class, violation.detail
        )
        .into());
    }
    Ok(())
}

datatest_stable::harness! {
    { test = scenario, root = "../scenarios", pattern = r"^[^/]+\.toml$" },
    { test = regression, root = "../scenarios/regressions", pattern = r"\.json$" },
}
