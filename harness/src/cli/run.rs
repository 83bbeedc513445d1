//! `khala-parity run`: stored regressions first, then every scenario's
//! generated cases, findings shrunk and stored, and the gate.

use super::backends::{SlotArgs, shut_down, start_backends, stop_on_signals};
use super::error::{CliError, CliResult};
use super::output::{OutputArgs, ProgressBars};
use khala_parity::exit;
use khala_parity::model::shard::Shard;
use khala_parity::plan::scenario::Scenario;
use khala_parity::play::backend::postgres::BackendChoice;
use khala_parity::run::{self, LoadedScenarios, REGRESSION_DIR, RunSettings, SCENARIO_DIR};
use khala_runtime::Profile;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A scenario name (a file in scenarios/) or a path; repeatable.
    /// Default: every scenario in scenarios/.
    #[arg(long = "scenario", value_name = "NAME|PATH")]
    scenarios: Vec<String>,
    /// Model profile (default: each scenario's own, else legacy).
    #[arg(long, value_parser = clap::value_parser!(Profile))]
    profile: Option<Profile>,
    /// Cases per scenario (default: each scenario's own).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cases: Option<u32>,
    /// The seed all randomness flows from.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start no new case after this many seconds.
    #[arg(long, value_name = "SECS")]
    time_budget: Option<u64>,
    #[command(flatten)]
    slots: SlotArgs,
    /// Backend provider (default: KHALA_PARITY_BACKEND, else auto).
    #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
    backend: Option<BackendChoice>,
    #[command(flatten)]
    output: OutputArgs,
    /// Where shrunk failures are stored and replayed from.
    #[arg(long, value_name = "DIR", default_value = REGRESSION_DIR)]
    regressions: PathBuf,
    /// Play only the K-th of N disjoint slices of every scenario's case
    /// stream (case i goes to shard i mod N + 1); stores no finding.
    /// Combine the shards' report.json with `report merge`.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
}

pub fn execute(args: RunArgs, tokio: &tokio::runtime::Runtime) -> CliResult {
    let shard = args
        .shard
        .as_deref()
        .map(str::parse::<Shard>)
        .transpose()
        .map_err(CliError::input)?;
    let (scenarios, invalid) = load_scenarios(&args.scenarios)?;
    if scenarios.is_empty() && !invalid.is_empty() {
        return Err(CliError::InvalidInput("no scenario file loaded".into()));
    }
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .map(|(_, scenario)| scenario)
        .collect();
    // Refused before any backend starts or case runs.
    run::check_regressions_writable(&args.regressions).map_err(CliError::input)?;
    stop_on_signals(tokio)?;
    let settings = RunSettings {
        profile: args.profile,
        cases: args.cases,
        seed: args.seed,
        time_budget: args.time_budget.map(Duration::from_secs),
        regressions: args.regressions,
        shard,
    };
    let backends = tokio.block_on(start_backends(args.backend, args.slots.count()))?;
    let bars = ProgressBars::default();
    let outcome = run::run_scenarios(
        tokio,
        &backends,
        &scenarios,
        &settings,
        &|scenario, step| bars.show(scenario, step),
    );
    let stopped = shut_down(tokio, backends);
    let outcome = outcome.map_err(|error| match error.is_invalid_input() {
        true => CliError::input(error),
        false => CliError::Failed(error.into()),
    })?;
    stopped?;
    for error in &outcome.invalid_cases {
        eprintln!("error: {error}");
    }
    let code = args.output.emit(&outcome.report)?;
    // A file that did not load was not run: never an `allow`.
    let skipped_input = !invalid.is_empty() || !outcome.invalid_cases.is_empty();
    Ok(if code == exit::ALLOW && skipped_input {
        exit::INVALID_INPUT
    } else {
        code
    })
}

/// Loads the scenarios, printing each file that does not load (with its
/// line and key) and going on with the rest; the failures are returned too.
pub fn load_scenarios(arguments: &[String]) -> Result<LoadedScenarios, CliError> {
    let (loaded, invalid) =
        run::load_scenarios(Path::new(SCENARIO_DIR), arguments).map_err(CliError::input)?;
    for error in &invalid {
        eprintln!("error: {error}");
    }
    Ok((loaded, invalid))
}
