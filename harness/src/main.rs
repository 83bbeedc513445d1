//! The `khala-parity` command line. Only this file prints or exits.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use khala_parity::backend::convex::{ConvexBackend, ConvexConfig};
use khala_parity::backend::postgres::{BackendChoice, PostgresBackend, PostgresConfig};
use khala_parity::bench::{self, ProjectionBench};
use khala_parity::bench_sync;
use khala_parity::case::Case;
use khala_parity::driver::{self, Backends};
use khala_parity::engine::{self, EngineSettings};
use khala_parity::report::{self, Decision, Report};
use khala_parity::scenario::{self, Scenario};
use khala_parity::{exit, invariants};
use khala_runtime::Profile;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const SCENARIO_DIR: &str = "scenarios";
const REGRESSION_DIR: &str = "scenarios/regressions";

/// Property-based parity harness for the Convex to Khala cutover.
///
/// Exit codes: 0 the gate allows, 1 the gate blocks, 2 unknown (the harness
/// or a backend failed; never a pass), 64 invalid invocation or input file.
#[derive(Debug, Parser)]
#[command(name = "khala-parity", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate cases from scenarios, play them against the real backends,
    /// shrink and store every failure, and decide the gate. Stored
    /// regressions (scenarios/regressions/*.json) are replayed first.
    Run {
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
        /// Backend provider (default: KHALA_PARITY_BACKEND, else auto).
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Write report.json (and future artifacts) here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Where shrunk failures are stored and replayed from.
        #[arg(long, value_name = "DIR", default_value = REGRESSION_DIR)]
        regressions: PathBuf,
    },
    /// Re-execute exactly one stored case: no generation, no shrinking.
    Replay {
        file: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// List scenarios or invariants.
    List {
        #[arg(value_enum)]
        what: ListWhat,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Measure the models on real backends (rates only; nothing is asserted).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ListWhat {
    Scenarios,
    Invariants,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Replay catch-up throughput of the sync server to one client (events/s).
    Replay {
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        #[arg(long, default_value = "hardened", value_parser = clap::value_parser!(Profile))]
        profile: Profile,
        /// Journal rows the client catches up on.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        events: u32,
        /// Replay batch sizes to measure, comma separated.
        #[arg(long, default_value = "50,200,1000", value_delimiter = ',', value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_sizes: Vec<i64>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Commit-to-client latency percentiles with many subscribed WebSocket clients.
    Latency {
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        /// Legacy can stall delivery until the next wake-up (B11).
        #[arg(long, default_value = "hardened", value_parser = clap::value_parser!(Profile))]
        profile: Profile,
        /// Projections per measurement.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        events: u32,
        /// Subscribed client counts, comma separated.
        #[arg(long, default_value = "1,10,100", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1000))]
        clients: Vec<u32>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Engine throughput: cases/s and steps/s on real backends, reset time,
    /// and the time to shrink each legacy failure.
    Engine {
        #[arg(long, default_value = "smoke", value_name = "NAME|PATH")]
        scenario: String,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        cases: u32,
        /// Steps per case at most (generated lengths are 1..=this).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
        max_steps: u32,
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Mutations per second through the Convex HTTP sink, sequential and concurrent.
    ConvexSink {
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        /// Mutations per measurement.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        mutations: u32,
        /// Distinct documents the mutations are spread over.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        documents: u32,
        /// Requests in flight, comma separated.
        #[arg(long, default_value = "1,8", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=256))]
        concurrency: Vec<u32>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Projections per second through the Khala sink on PostgreSQL.
    Projections {
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        #[arg(long, default_value = "legacy", value_parser = clap::value_parser!(Profile))]
        profile: Profile,
        /// Projections per measurement (each a new run, so each is a write).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        projections: u32,
        /// Events per run before projection.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=1000))]
        events_per_run: u32,
        /// Connection counts to measure, comma separated.
        #[arg(long, default_value = "1,4", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=64))]
        connections: Vec<u32>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
}

/// An input problem: exit 64 with the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InvalidInput(String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                exit::INVALID_INPUT
            } else {
                exit::ALLOW
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::from(exit::UNKNOWN);
        }
    };
    match run(cli, &tokio) {
        Ok(code) => ExitCode::from(code),
        Err(error) if error.downcast_ref::<InvalidInput>().is_some() => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::INVALID_INPUT)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::UNKNOWN)
        }
    }
}

fn run(cli: Cli, tokio: &tokio::runtime::Runtime) -> anyhow::Result<u8> {
    match cli.command {
        Command::List {
            what: ListWhat::Invariants,
            format,
        } => {
            match format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(invariants::CATALOGUE)?)
                }
                Format::Human => {
                    for invariant in invariants::CATALOGUE {
                        println!(
                            "{:<4} {:<9?} {}",
                            invariant.id, invariant.severity, invariant.statement
                        );
                    }
                }
            }
            Ok(exit::ALLOW)
        }
        Command::List {
            what: ListWhat::Scenarios,
            format,
        } => {
            let scenarios = load_scenarios(&[])?;
            match format {
                Format::Json => {
                    let list: Vec<_> = scenarios
                        .iter()
                        .map(|(path, scenario)| {
                            serde_json::json!({"name": scenario.name, "description": scenario.description, "path": path})
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
                Format::Human => {
                    for (_, scenario) in &scenarios {
                        println!("{:<20} {}", scenario.name, scenario.description);
                    }
                }
            }
            Ok(exit::ALLOW)
        }
        Command::Replay {
            file,
            backend,
            format,
        } => {
            let case = load_case(&file)?;
            let backends = tokio.block_on(start_backends(backend))?;
            let played = tokio.block_on(driver::play(&backends, &case, false));
            let stopped = tokio.block_on(backends.shutdown());
            let result = played.context("replay the case")?;
            stopped
                .map_err(anyhow::Error::msg)
                .context("stop the backends")?;
            let file_name = file.display().to_string();
            let violations: Vec<_> = result
                .violations
                .iter()
                .map(|violation| report::reported(violation, "replay", Some(file_name.clone())))
                .collect();
            let gate = report::gate(&violations, &[]);
            match format {
                Format::Json => {
                    let output = serde_json::json!({"schema": report::REPORT_SCHEMA, "profile": case.profile, "case_file": file_name, "steps": result.steps_run, "gate": gate, "violations": violations});
                    println!("{}", serde_json::to_string_pretty(&output)?);
                }
                Format::Human => {
                    println!(
                        "replayed {file_name} ({} steps, profile {}): {:?}",
                        result.steps_run, case.profile, gate.decision
                    );
                    for violation in &violations {
                        println!(
                            "  {} {} after step {}: {} {}",
                            violation.invariant,
                            violation.reason_class,
                            violation.step_index,
                            violation.document_id.as_deref().unwrap_or("-"),
                            violation.detail
                        );
                    }
                }
            }
            Ok(decision_code(gate.decision))
        }
        Command::Run {
            scenarios,
            profile,
            cases,
            seed,
            time_budget,
            backend,
            format,
            out,
            regressions,
        } => {
            let scenarios = load_scenarios(&scenarios)?;
            let backends = tokio.block_on(start_backends(backend))?;
            let outcome = run_scenarios(
                tokio,
                &backends,
                &scenarios,
                profile,
                cases,
                seed,
                time_budget,
                &regressions,
            );
            let stopped = tokio.block_on(backends.shutdown());
            let report = outcome?;
            stopped
                .map_err(anyhow::Error::msg)
                .context("stop the backends")?;
            if let Some(out) = &out {
                std::fs::create_dir_all(out)
                    .with_context(|| format!("create {}", out.display()))?;
                let path = out.join("report.json");
                std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
                    .with_context(|| format!("write {}", path.display()))?;
            }
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Human => print_human(&report),
            }
            Ok(decision_code(report.gate.decision))
        }
        Command::Bench {
            what:
                BenchCommand::Replay {
                    backend,
                    profile,
                    events,
                    batch_sizes,
                    format,
                },
        } => {
            let postgres = tokio.block_on(start_postgres(backend))?;
            let spec = bench_sync::ReplayBench {
                profile,
                events: events as usize,
                batch_sizes,
            };
            let rates = tokio.block_on(bench_sync::replay_catch_up(&postgres, &spec));
            tokio
                .block_on(postgres.shutdown())
                .context("stop PostgreSQL")?;
            let rates = rates.context("run the replay benchmark")?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rates)?),
                Format::Human => {
                    println!("replay catch-up to one client ({profile}, {events} events)");
                    println!(
                        "{:>10} {:>8} {:>9} {:>12}",
                        "batch size", "batches", "seconds", "events/s"
                    );
                    for rate in rates {
                        println!(
                            "{:>10} {:>8} {:>9.3} {:>12.0}",
                            rate.batch_size, rate.batches, rate.seconds, rate.events_per_second
                        );
                    }
                }
            }
            Ok(exit::ALLOW)
        }
        Command::Bench {
            what:
                BenchCommand::Latency {
                    backend,
                    profile,
                    events,
                    clients,
                    format,
                },
        } => {
            let postgres = tokio.block_on(start_postgres(backend))?;
            let spec = bench_sync::LatencyBench {
                profile,
                events: events as usize,
                clients: clients.iter().map(|count| *count as usize).collect(),
            };
            let rates = tokio.block_on(bench_sync::commit_to_apply(&postgres, &spec));
            tokio
                .block_on(postgres.shutdown())
                .context("stop PostgreSQL")?;
            let rates = rates.context("run the latency benchmark")?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rates)?),
                Format::Human => {
                    println!("commit to client apply ({profile}, {events} projections)");
                    println!(
                        "{:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
                        "clients", "samples", "p50 ms", "p95 ms", "p99 ms", "max ms"
                    );
                    for rate in rates {
                        println!(
                            "{:>7} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                            rate.clients,
                            rate.samples,
                            rate.p50_ms,
                            rate.p95_ms,
                            rate.p99_ms,
                            rate.max_ms
                        );
                    }
                }
            }
            Ok(exit::ALLOW)
        }
        Command::Bench {
            what:
                BenchCommand::Engine {
                    scenario,
                    cases,
                    max_steps,
                    backend,
                    format,
                },
        } => {
            let (_, scenario) = load_scenarios(std::slice::from_ref(&scenario))?.remove(0);
            let backends = tokio.block_on(start_backends(backend))?;
            let rates = bench::engine(tokio, &backends, &scenario, cases, max_steps);
            tokio
                .block_on(backends.shutdown())
                .map_err(anyhow::Error::msg)
                .context("stop the backends")?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rates)?),
                Format::Human => {
                    println!(
                        "engine on {} (max {} steps per case)",
                        scenario.name, rates.max_steps
                    );
                    println!(
                        "  hardened: {} cases, {} steps: {:.2} cases/s, {:.0} steps/s, reset {:.1} ms per case",
                        rates.cases,
                        rates.steps,
                        rates.cases_per_second,
                        rates.steps_per_second,
                        rates.reset_ms_mean
                    );
                    let median = rates
                        .shrink_seconds_median
                        .map_or("-".to_owned(), |seconds| format!("{seconds:.1} s"));
                    println!(
                        "  legacy: {} findings shrunk, median shrink {median}",
                        rates.legacy_findings
                    );
                }
            }
            Ok(exit::ALLOW)
        }
        Command::Bench {
            what:
                BenchCommand::ConvexSink {
                    backend,
                    mutations,
                    documents,
                    concurrency,
                    format,
                },
        } => {
            let mut config =
                ConvexConfig::from_env().map_err(|error| InvalidInput(error.to_string()))?;
            if let Some(choice) = backend {
                config.choice = choice;
            }
            let convex = tokio
                .block_on(ConvexBackend::start(&config))
                .context("start the Convex backend")?;
            let provider = convex.provider();
            let rates = tokio.block_on(bench::convex_sink(
                &convex,
                mutations as usize,
                documents as usize,
                &concurrency,
            ));
            tokio
                .block_on(convex.shutdown())
                .context("stop the Convex backend")?;
            let rates = rates
                .map_err(|error| anyhow::anyhow!(error))
                .context("run the Convex sink benchmark")?;
            match format {
                Format::Json => {
                    let report = serde_json::json!({"benchmark": "convex_sink", "provider": provider.to_string(), "documents": documents, "rates": rates});
                    println!("{}", serde_json::to_string_pretty(&report)?);
                }
                Format::Human => {
                    println!(
                        "mutations through the Convex HTTP sink ({provider}, {documents} documents)"
                    );
                    println!(
                        "{:>11} {:>9} {:>9} {:>12}",
                        "in flight", "mutations", "seconds", "mutations/s"
                    );
                    for rate in rates {
                        println!(
                            "{:>11} {:>9} {:>9.3} {:>12.0}",
                            rate.concurrency,
                            rate.mutations,
                            rate.seconds,
                            rate.mutations_per_second
                        );
                    }
                }
            }
            Ok(exit::ALLOW)
        }
        Command::Bench {
            what:
                BenchCommand::Projections {
                    backend,
                    profile,
                    projections,
                    events_per_run,
                    connections,
                    format,
                },
        } => {
            let postgres = tokio.block_on(start_postgres(backend))?;
            let spec = ProjectionBench {
                profile,
                projections: projections as usize,
                events_per_run: events_per_run as usize,
                connections,
            };
            let rates = tokio.block_on(bench::projections(&postgres, &spec));
            let provider = postgres.provider();
            tokio
                .block_on(postgres.shutdown())
                .context("stop PostgreSQL")?;
            let rates = rates.context("run the projection benchmark")?;
            match format {
                Format::Json => {
                    let report = serde_json::json!({"benchmark": "projections", "provider": provider.to_string(), "profile": profile, "rates": rates});
                    println!("{}", serde_json::to_string_pretty(&report)?);
                }
                Format::Human => {
                    println!(
                        "projections through the Khala sink ({provider}, {profile}, {events_per_run} events per run)"
                    );
                    println!(
                        "{:>11} {:>11} {:>9} {:>15}",
                        "connections", "projections", "seconds", "projections/s"
                    );
                    for rate in rates {
                        println!(
                            "{:>11} {:>11} {:>9.3} {:>15.0}",
                            rate.connections,
                            rate.projections,
                            rate.seconds,
                            rate.projections_per_second
                        );
                    }
                }
            }
            Ok(exit::ALLOW)
        }
    }
}

fn decision_code(decision: Decision) -> u8 {
    match decision {
        Decision::Allow => exit::ALLOW,
        Decision::Block => exit::BLOCK,
        Decision::Unknown => exit::UNKNOWN,
    }
}

fn load_scenarios(arguments: &[String]) -> anyhow::Result<Vec<(PathBuf, Scenario)>> {
    let dir = Path::new(SCENARIO_DIR);
    let paths = if arguments.is_empty() {
        scenario::library(dir).map_err(|error| InvalidInput(error.to_string()))?
    } else {
        arguments
            .iter()
            .map(|argument| scenario::resolve(argument, dir))
            .collect::<Result<_, _>>()
            .map_err(|error| InvalidInput(error.to_string()))?
    };
    paths
        .into_iter()
        .map(|path| {
            Scenario::load(&path)
                .map(|scenario| (path, scenario))
                .map_err(|error| InvalidInput(error.to_string()).into())
        })
        .collect()
}

/// Every `*.json` case in `dir`, sorted; a missing directory holds none.
fn load_regressions(dir: &Path) -> anyhow::Result<Vec<(String, Case)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(
                InvalidInput(format!("read regressions {}: {error}", dir.display())).into(),
            );
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| Ok((path.display().to_string(), load_case(&path)?)))
        .collect()
}

fn load_case(path: &Path) -> anyhow::Result<Case> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| InvalidInput(format!("read case {}: {error}", path.display())))?;
    let case: Case = serde_json::from_str(&text)
        .map_err(|error| InvalidInput(format!("parse case {}: {error}", path.display())))?;
    if case.schema != khala_parity::case::CASE_SCHEMA {
        return Err(InvalidInput(format!(
            "parse case {}: key `schema`: expected \"{}\", found {:?}",
            path.display(),
            khala_parity::case::CASE_SCHEMA,
            case.schema
        ))
        .into());
    }
    Ok(case)
}

async fn start_postgres(choice: Option<BackendChoice>) -> anyhow::Result<PostgresBackend> {
    let mut config = PostgresConfig::from_env().map_err(|error| InvalidInput(error.to_string()))?;
    if let Some(choice) = choice {
        config.choice = choice;
    }
    PostgresBackend::start(&config)
        .await
        .context("start PostgreSQL")
}

async fn start_backends(choice: Option<BackendChoice>) -> anyhow::Result<Backends> {
    let postgres = start_postgres(choice).await?;
    let mut config = ConvexConfig::from_env().map_err(|error| InvalidInput(error.to_string()))?;
    if let Some(choice) = choice {
        config.choice = choice;
    }
    let convex = ConvexBackend::start(&config)
        .await
        .context("start the Convex backend")?;
    Backends::new(postgres, convex)
        .await
        .context("start the fault proxy")
}

#[allow(clippy::too_many_arguments)]
fn run_scenarios(
    tokio: &tokio::runtime::Runtime,
    backends: &Backends,
    scenarios: &[(PathBuf, Scenario)],
    profile: Option<Profile>,
    cases: Option<u32>,
    seed: u64,
    time_budget: Option<u64>,
    regressions: &Path,
) -> anyhow::Result<Report> {
    let run_profile = profile.unwrap_or(Profile::Legacy);
    let mut runs = Vec::new();
    let mut case_files = Vec::new();
    // Stored regressions first: known failures are checked before new ones are sought.
    let stored = load_regressions(regressions)?;
    if !stored.is_empty() {
        let (run, files) = engine::replay_stored(tokio, backends, &stored, profile);
        runs.push(run);
        case_files.push(files);
    }
    for (_, scenario) in scenarios {
        let settings = EngineSettings {
            profile: profile.or(scenario.profile).unwrap_or(Profile::Legacy),
            cases: cases.unwrap_or(scenario.cases),
            seed: scenario.seed.unwrap_or(seed),
            time_budget: time_budget.map(Duration::from_secs),
            max_shrink_iters: 512,
            max_shrink_time: Duration::from_secs(120),
        };
        let run = engine::run_scenario(tokio, backends, scenario, &settings);
        let mut files = Vec::new();
        for finding in &run.findings {
            std::fs::create_dir_all(regressions)
                .with_context(|| format!("create {}", regressions.display()))?;
            let path = report::regression_path(
                regressions,
                &scenario.name,
                finding.invariant,
                &finding.reason_class,
            );
            std::fs::write(&path, serde_json::to_string_pretty(&finding.case)? + "\n")
                .with_context(|| format!("write {}", path.display()))?;
            files.push(Some(path.display().to_string()));
        }
        runs.push(run);
        case_files.push(files);
    }
    Ok(report::build(run_profile, seed, &runs, &case_files))
}

fn print_human(report: &Report) {
    println!(
        "khala-parity {} seed={} scenarios={}",
        report.profile,
        report.seed,
        report.scenarios.join(",")
    );
    println!(
        "{} cases, {} steps, {} shrink steps",
        report.stats.cases, report.stats.steps, report.stats.shrink_steps
    );
    for violation in &report.violations {
        println!(
            "  {} {:?} {} [{}] after step {}: {} — {}",
            violation.invariant,
            violation.severity,
            violation.reason_class,
            violation.scenario,
            violation.step_index,
            violation.document_id.as_deref().unwrap_or("-"),
            violation.detail
        );
        if let Some(file) = &violation.case_file {
            println!("      replay: khala-parity replay {file}");
        }
    }
    println!(
        "gate: {:?} {}",
        report.gate.decision,
        report.gate.reasons.join("; ")
    );
}
