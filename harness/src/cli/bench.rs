//! `khala-parity bench`: rates of the models on real backends, printed as
//! tables or JSON; nothing is asserted on time.

use super::backends::{SlotArgs, shut_down, start_backends, start_convex, start_postgres};
use super::error::{CliError, CliResult};
use super::output::{Format, print_table};
use super::run::load_scenarios;
use anyhow::Context;
use clap::Subcommand;
use khala_parity::exit;
use khala_parity::play::backend::postgres::BackendChoice;
use khala_parity::play::bench::{self, ProjectionBench};
use khala_parity::play::bench_sync;
use khala_runtime::Profile;
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
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
        #[command(flatten)]
        slots: SlotArgs,
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Detection power: every default scenario under legacy (no stored
    /// regression, nothing stored), the findings grouped into defects, and
    /// for each defect the cases and seconds until the run first found it.
    Detect {
        /// Scenario names or paths (default: every scenario in scenarios/).
        #[arg(long = "scenario", value_name = "NAME|PATH")]
        scenarios: Vec<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        slots: SlotArgs,
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
    /// Audit rate: documents per second read from each store by
    /// `khala-parity audit`, on stores a hardened case populated.
    Audit {
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        /// Runs, and as many workers, in the populating case (at most 256).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=256))]
        entities: u16,
        /// Events per entity.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        events: u32,
        /// Cycles per measurement.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeats: u32,
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

pub fn execute(what: BenchCommand, tokio: &tokio::runtime::Runtime) -> CliResult {
    match what {
        BenchCommand::Replay {
            backend,
            profile,
            events,
            batch_sizes,
            format,
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
            print_rates(format, &rates, || {
                let rows = rates.iter().map(|rate| {
                    vec![
                        rate.batch_size.to_string(),
                        rate.batches.to_string(),
                        format!("{:.3}", rate.seconds),
                        format!("{:.0}", rate.events_per_second),
                    ]
                });
                print_table(
                    &format!("replay catch-up to one client ({profile}, {events} events)"),
                    &["batch size", "batches", "seconds", "events/s"],
                    rows.collect(),
                );
            })
        }
        BenchCommand::Latency {
            backend,
            profile,
            events,
            clients,
            format,
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
            print_rates(format, &rates, || {
                let rows = rates.iter().map(|rate| {
                    vec![
                        rate.clients.to_string(),
                        rate.samples.to_string(),
                        format!("{:.2}", rate.p50_ms),
                        format!("{:.2}", rate.p95_ms),
                        format!("{:.2}", rate.p99_ms),
                        format!("{:.2}", rate.max_ms),
                    ]
                });
                print_table(
                    &format!("commit to client apply ({profile}, {events} projections)"),
                    &["clients", "samples", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                    rows.collect(),
                );
            })
        }
        BenchCommand::Engine {
            scenario,
            cases,
            legacy_cases,
            steps,
            slots,
            backend,
            format,
        } => {
            let (mut loaded, invalid) = load_scenarios(std::slice::from_ref(&scenario))?;
            if let Some(error) = invalid.first() {
                return Err(CliError::input(error));
            }
            let (_, scenario) = loaded.remove(0);
            let backends = tokio.block_on(start_backends(backend, slots.count()))?;
            let rates = bench::engine(tokio, &backends, &scenario, cases, legacy_cases, steps);
            shut_down(tokio, backends)?;
            print_rates(format, &rates, || {
                let median = rates
                    .shrink_seconds_median
                    .map_or("-".to_owned(), |seconds| format!("{seconds:.1}"));
                print_table(
                    &format!(
                        "engine on {} ({} steps per case, {} slot(s))",
                        scenario.name,
                        rates.steps_per_case,
                        slots.count()
                    ),
                    &[
                        "profile",
                        "cases",
                        "steps",
                        "cases/s",
                        "steps/s",
                        "reset ms/case",
                        "findings",
                        "median shrink s",
                    ],
                    vec![
                        vec![
                            "hardened".to_owned(),
                            rates.cases.to_string(),
                            rates.steps.to_string(),
                            format!("{:.2}", rates.cases_per_second),
                            format!("{:.0}", rates.steps_per_second),
                            format!("{:.1}", rates.reset_ms_mean),
                            "-".to_owned(),
                            "-".to_owned(),
                        ],
                        vec![
                            "legacy".to_owned(),
                            legacy_cases.to_string(),
                            "-".to_owned(),
                            "-".to_owned(),
                            "-".to_owned(),
                            "-".to_owned(),
                            rates.legacy_findings.to_string(),
                            median,
                        ],
                    ],
                );
            })
        }
        BenchCommand::Detect {
            scenarios,
            seed,
            slots,
            backend,
            format,
        } => {
            let (loaded, invalid) = load_scenarios(&scenarios)?;
            if let Some(error) = invalid.first() {
                return Err(CliError::input(error));
            }
            let scenarios: Vec<_> = loaded.into_iter().map(|(_, scenario)| scenario).collect();
            let backends = tokio.block_on(start_backends(backend, slots.count()))?;
            let rates = bench::detect(tokio, &backends, &scenarios, Profile::Legacy, seed);
            shut_down(tokio, backends)?;
            print_rates(format, &rates, || {
                let rows = rates.defects.iter().enumerate().map(|(index, defect)| {
                    vec![
                        (index + 1).to_string(),
                        format!("{} #{}", defect.scenario, defect.case_index),
                        defect.cases_until_found.to_string(),
                        format!("{:.1}", defect.seconds_until_found),
                        defect
                            .cause
                            .as_ref()
                            .map_or_else(|| "not known".to_owned(), ToString::to_string),
                        defect.breaks.join("\n"),
                    ]
                });
                print_table(
                    &format!(
                        "defects a legacy run finds (seed {seed}: {} cases, {:.0} s, {} finding(s), {} defect(s))",
                        rates.cases,
                        rates.seconds,
                        rates.findings,
                        rates.defects.len()
                    ),
                    &[
                        "defect",
                        "first seen",
                        "cases until",
                        "seconds until",
                        "switches",
                        "breaks",
                    ],
                    rows.collect(),
                );
                for reason in &rates.unknown {
                    println!("unknown: {reason}");
                }
            })
        }
        BenchCommand::Audit {
            backend,
            entities,
            events,
            repeats,
            format,
        } => {
            let backends = tokio.block_on(start_backends(backend, 1))?;
            let rates = tokio.block_on(bench::audit(&backends, entities, events, repeats));
            shut_down(tokio, backends)?;
            let rates = rates
                .map_err(|error| anyhow::anyhow!(error))
                .context("run the audit benchmark")?;
            let report = serde_json::json!({"benchmark": "audit", "entities": entities, "events": events, "rates": rates});
            print_rates(format, &report, || {
                let rows = rates.iter().map(|rate| {
                    vec![
                        rate.mode.clone(),
                        rate.documents.to_string(),
                        format!("{:.0}", rate.postgres_documents_per_second),
                        format!("{:.0}", rate.convex_documents_per_second),
                        format!("{:.0}", rate.documents_per_second),
                    ]
                });
                print_table(
                    &format!(
                        "audit rate ({entities} runs and {entities} workers, {events} events each)"
                    ),
                    &[
                        "mode",
                        "documents",
                        "postgres docs/s",
                        "convex docs/s",
                        "docs/s",
                    ],
                    rows.collect(),
                );
            })
        }
        BenchCommand::ConvexSink {
            backend,
            mutations,
            documents,
            concurrency,
            format,
        } => {
            let convex = tokio.block_on(start_convex(backend))?;
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
            let report = serde_json::json!({"benchmark": "convex_sink", "provider": provider.to_string(), "documents": documents, "rates": rates});
            print_rates(format, &report, || {
                let rows = rates.iter().map(|rate| {
                    vec![
                        rate.concurrency.to_string(),
                        rate.mutations.to_string(),
                        format!("{:.3}", rate.seconds),
                        format!("{:.0}", rate.mutations_per_second),
                    ]
                });
                print_table(
                    &format!(
                        "mutations through the Convex HTTP sink ({provider}, {documents} documents)"
                    ),
                    &["in flight", "mutations", "seconds", "mutations/s"],
                    rows.collect(),
                );
            })
        }
        BenchCommand::Projections {
            backend,
            profile,
            projections,
            events_per_run,
            connections,
            format,
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
            let report = serde_json::json!({"benchmark": "projections", "provider": provider.to_string(), "profile": profile, "rates": rates});
            print_rates(format, &report, || {
                let rows = rates.iter().map(|rate| {
                    vec![
                        rate.connections.to_string(),
                        rate.projections.to_string(),
                        format!("{:.3}", rate.seconds),
                        format!("{:.0}", rate.projections_per_second),
                    ]
                });
                print_table(
                    &format!(
                        "projections through the Khala sink ({provider}, {profile}, {events_per_run} events per run)"
                    ),
                    &["connections", "projections", "seconds", "projections/s"],
                    rows.collect(),
                );
            })
        }
    }
}

/// JSON of `rates`, or the table `human` prints.
fn print_rates(format: Format, rates: &impl Serialize, human: impl FnOnce()) -> CliResult {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(rates)?),
        Format::Human => human(),
    }
    Ok(exit::ALLOW)
}
