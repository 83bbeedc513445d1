//! The `khala-parity` command line. Only this file prints or exits.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use khala_parity::backend::convex::{ConvexBackend, ConvexConfig};
use khala_parity::backend::postgres::{BackendChoice, PostgresBackend, PostgresConfig};
use khala_parity::bench::{self, ProjectionBench};
use khala_parity::bench_sync;
use khala_parity::driver::{self, Backends};
use khala_parity::engine;
use khala_parity::gate::GateThresholds;
use khala_parity::report::{self, Decision, Report};
use khala_parity::run::{self, RunSettings};
use khala_parity::scenario::{self, Scenario};
use khala_parity::{exit, invariants};
use khala_runtime::Profile;
use std::io::IsTerminal;
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

/// How `run`, `replay` and `report` print the report.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReportFormat {
    /// One screen of text; coloured only on a terminal without NO_COLOR.
    Human,
    /// The JSON report (khala-parity.report.v1).
    Json,
    /// The drill report of spec §9.6.
    Markdown,
    /// The run's metrics as a Prometheus text file.
    Prometheus,
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
        /// Cases played at once, each on a Convex backend of its own
        /// (default: two per CPU here, at most 4). The report is the same
        /// whatever the number.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
        lanes: Option<u32>,
        /// Backend provider (default: KHALA_PARITY_BACKEND, else auto).
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        #[arg(long, value_enum, default_value = "human")]
        format: ReportFormat,
        /// Write the artifacts here: report.json, report.txt, metrics.prom,
        /// drill.md and one timeline-N.svg per finding.
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
        format: ReportFormat,
        /// Write the artifacts here (as `run --out`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        gate: GateArgs,
    },
    /// Render a report.json again (human, JSON, Markdown drill report,
    /// Prometheus) and, with --gate or --threshold, decide its gate anew.
    /// The exit code is the gate's.
    Report {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: ReportFormat,
        /// Write the artifacts here (as `run --out`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        gate: GateArgs,
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

/// Gate thresholds from the command line (spec §9.5 defaults otherwise).
#[derive(Debug, clap::Args)]
struct GateArgs {
    /// A TOML file holding a `[gate]` table's keys (see README).
    #[arg(long = "gate", value_name = "FILE")]
    gate_file: Option<PathBuf>,
    /// One threshold, e.g. `max_mismatch_rate=0.02` or
    /// `reason_severity.lag_drift=warning`; repeatable, applied after --gate.
    #[arg(long = "threshold", value_name = "KEY=VALUE")]
    thresholds: Vec<String>,
}

impl GateArgs {
    fn given(&self) -> bool {
        self.gate_file.is_some() || !self.thresholds.is_empty()
    }

    fn thresholds(&self) -> anyhow::Result<GateThresholds> {
        let text = match &self.gate_file {
            Some(path) => std::fs::read_to_string(path).map_err(|error| {
                InvalidInput(format!("read gate thresholds {}: {error}", path.display()))
            })?,
            None => String::new(),
        };
        GateThresholds::parse_toml(&text, &self.thresholds).map_err(|error| {
            let source = self
                .gate_file
                .as_ref()
                .map_or("--threshold".to_owned(), |path| path.display().to_string());
            InvalidInput(format!("read gate thresholds {source}: {error}")).into()
        })
    }
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
        /// Legacy cases played to time the shrinking of their failures (0: none).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=10_000))]
        legacy_cases: u32,
        /// Steps in every generated case (shrunk cases get shorter).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
        steps: u32,
        /// Cases played at once, each on a Convex backend of its own
        /// (default: two per CPU here, at most 4). The report is the same
        /// whatever the number.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
        lanes: Option<u32>,
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
            let (scenarios, invalid) = load_scenarios_reporting(&[])?;
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
            Ok(if invalid.is_empty() {
                exit::ALLOW
            } else {
                exit::INVALID_INPUT
            })
        }
        Command::Replay {
            file,
            backend,
            format,
            out,
            gate,
        } => {
            let case = run::load_case(&file).map_err(|error| InvalidInput(error.to_string()))?;
            let thresholds = gate.thresholds()?;
            stop_on_signals(tokio)?;
            let backends = tokio.block_on(start_backends(backend, 1))?;
            let played = tokio.block_on(driver::play(&backends, &case, false));
            let stopped = tokio.block_on(backends.shutdown());
            let result = played.context("replay the case")?;
            stopped
                .map_err(anyhow::Error::msg)
                .context("stop the backends")?;
            let file_name = file.display().to_string();
            let report = report::for_case(&case, Some(file_name), &result, &thresholds);
            emit(&report, format, out.as_deref())
        }
        Command::Report {
            file,
            format,
            out,
            gate,
        } => {
            let mut report =
                report::load::load(&file).map_err(|error| InvalidInput(error.to_string()))?;
            if gate.given() {
                report::regate(&mut report, &gate.thresholds()?);
            }
            emit(&report, format, out.as_deref())
        }
        Command::Run {
            scenarios,
            profile,
            cases,
            seed,
            time_budget,
            lanes,
            backend,
            format,
            out,
            regressions,
        } => {
            let (scenarios, invalid) = load_scenarios_reporting(&scenarios)?;
            if scenarios.is_empty() && !invalid.is_empty() {
                return Err(InvalidInput("no scenario file loaded".into()).into());
            }
            // Refused before any backend starts or case runs.
            run::check_regressions_writable(&regressions)
                .map_err(|error| InvalidInput(error.to_string()))?;
            stop_on_signals(tokio)?;
            let settings = RunSettings {
                profile,
                cases,
                seed,
                time_budget: time_budget.map(Duration::from_secs),
                regressions,
            };
            let backends = tokio.block_on(start_backends(backend, lanes_or_default(lanes)))?;
            let show_progress = std::io::stderr().is_terminal();
            let progress = |scenario: &str, progress: Option<engine::Progress>| {
                if show_progress {
                    print_progress(scenario, progress);
                }
            };
            let scenarios: Vec<Scenario> = scenarios.into_iter().map(|(_, s)| s).collect();
            let outcome = run::run_scenarios(tokio, &backends, &scenarios, &settings, &progress);
            let stopped = tokio.block_on(backends.shutdown());
            let outcome = outcome.map_err(|error| match error.is_invalid_input() {
                true => anyhow::Error::from(InvalidInput(error.to_string())),
                false => anyhow::Error::from(error),
            })?;
            stopped
                .map_err(anyhow::Error::msg)
                .context("stop the backends")?;
            for error in &outcome.invalid_cases {
                eprintln!("error: {error}");
            }
            let code = emit(&outcome.report, format, out.as_deref())?;
            // A file that did not load was not run: never an `allow`.
            Ok(
                if code == exit::ALLOW && !(invalid.is_empty() && outcome.invalid_cases.is_empty())
                {
                    exit::INVALID_INPUT
                } else {
                    code
                },
            )
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
                    legacy_cases,
                    steps,
                    lanes,
                    backend,
                    format,
                },
        } => {
            let (_, scenario) = load_scenarios(std::slice::from_ref(&scenario))?.remove(0);
            let backends = tokio.block_on(start_backends(backend, lanes_or_default(lanes)))?;
            let rates = bench::engine(tokio, &backends, &scenario, cases, legacy_cases, steps);
            tokio
                .block_on(backends.shutdown())
                .map_err(anyhow::Error::msg)
                .context("stop the backends")?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rates)?),
                Format::Human => {
                    println!(
                        "engine on {} ({} steps per case)",
                        scenario.name, rates.steps_per_case
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

/// SIGINT and SIGTERM stop a run between batches of cases: the backends
/// are removed on their normal path and the report, marked interrupted,
/// exits `unknown`. A second signal exits at once; the backends' child
/// processes die with us (parent-death signal) and the next backend start
/// removes the files they leave.
fn stop_on_signals(tokio: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    khala_parity::interrupt::install(tokio.handle(), |interrupt| {
        if interrupt.count == 1 {
            eprintln!(
                "\n{}: finishing the cases in flight, then removing the backends \
                 (send it again to exit at once)",
                interrupt.signal
            );
        } else {
            eprintln!("{}: exiting at once", interrupt.signal);
            std::process::exit(exit::UNKNOWN.into());
        }
    })
    .context("stop on signals")
}

fn decision_code(decision: Decision) -> u8 {
    match decision {
        Decision::Allow => exit::ALLOW,
        Decision::Block => exit::BLOCK,
        Decision::Unknown => exit::UNKNOWN,
    }
}

/// Scenario files that loaded, with their paths.
type LoadedScenarios = Vec<(PathBuf, Scenario)>;

/// Loads the scenarios, printing each file that does not load (with its
/// line and key) and going on with the rest; the failures are returned too.
fn load_scenarios_reporting(
    arguments: &[String],
) -> anyhow::Result<(LoadedScenarios, Vec<String>)> {
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
    let mut scenarios = Vec::new();
    let mut invalid = Vec::new();
    for path in paths {
        match Scenario::load(&path) {
            Ok(scenario) => scenarios.push((path, scenario)),
            Err(error) => {
                eprintln!("error: {error}");
                invalid.push(error.to_string());
            }
        }
    }
    Ok((scenarios, invalid))
}

/// Loads the scenarios; the first that does not load is the error.
fn load_scenarios(arguments: &[String]) -> anyhow::Result<LoadedScenarios> {
    let (scenarios, invalid) = load_scenarios_reporting(arguments)?;
    match invalid.into_iter().next() {
        Some(error) => Err(InvalidInput(error).into()),
        None => Ok(scenarios),
    }
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

/// Two lanes per CPU, at most 4: a lane mostly waits on round trips, and
/// more than that only adds Convex backends to start.
fn lanes_or_default(lanes: Option<u32>) -> usize {
    lanes.map_or_else(
        || std::thread::available_parallelism().map_or(1, |cpus| (2 * cpus.get()).min(4)),
        |lanes| lanes as usize,
    )
}

/// PostgreSQL and `lanes` Convex backends, all started at once.
async fn start_backends(choice: Option<BackendChoice>, lanes: usize) -> anyhow::Result<Backends> {
    let mut config = ConvexConfig::from_env().map_err(|error| InvalidInput(error.to_string()))?;
    if let Some(choice) = choice {
        config.choice = choice;
    }
    let convex = futures::future::join_all((0..lanes).map(|_| ConvexBackend::start(&config)));
    let (postgres, convex) = tokio::join!(start_postgres(choice), convex);
    let mut convex = convex
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("start the Convex backend")?
        .into_iter();
    let postgres = postgres?;
    let first = convex.next().context("no lane to play on")?;
    let mut backends = Backends::new(postgres, first)
        .await
        .context("start the fault proxy")?;
    for convex in convex {
        backends
            .add_lane(convex)
            .await
            .context("start the fault proxy")?;
    }
    Ok(backends)
}

/// Prints the report in `format`, writes the artifacts to `out`, and
/// returns the gate's exit code.
fn emit(report: &Report, format: ReportFormat, out: Option<&Path>) -> anyhow::Result<u8> {
    if let Some(dir) = out {
        report::artifacts::write(report, dir)?;
    }
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
        ReportFormat::Human => {
            let colour = report::human::colour_wanted(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            print!("{}", report::human::render(report, colour));
        }
        ReportFormat::Markdown => print!("{}", report::drill::render(report)),
        ReportFormat::Prometheus => print!("{}", report::prometheus::render(report)),
    }
    Ok(decision_code(report.gate.decision))
}

/// One progress line on a terminal's stderr, redrawn in place: a bar of the
/// scenario's cases, the failures found, and whether one is being shrunk;
/// cleared when the scenario ends (`None`).
fn print_progress(scenario: &str, progress: Option<engine::Progress>) {
    let Some(progress) = progress else {
        eprint!("\r\x1b[2K");
        return;
    };
    const WIDTH: u32 = 30;
    let total = progress.total.max(1);
    let filled = (progress.cases.min(total) * WIDTH / total) as usize;
    let bar = format!(
        "{}{}",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled)
    );
    let state = if progress.shrinking {
        ", shrinking"
    } else {
        ""
    };
    eprint!(
        "\r\x1b[2K{scenario} [{bar}] {}/{} cases, {} finding(s){state}",
        progress.cases, progress.total, progress.findings
    );
}
