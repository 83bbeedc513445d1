//! The `khala-parity` command line. Only this file prints or exits.

use anyhow::Context;
use clap::{Parser, Subcommand};
use khala_parity::backend::postgres::{BackendChoice, PostgresBackend, PostgresConfig};
use khala_parity::bench::{self, ProjectionBench};
use khala_parity::exit;
use khala_runtime::Profile;
use std::process::ExitCode;

/// Property-based parity harness for the Convex to Khala cutover.
#[derive(Debug, Parser)]
#[command(name = "khala-parity", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the models on real backends (rates only; nothing is asserted).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Projections per second through the Khala sink on PostgreSQL.
    Projections {
        /// Which PostgreSQL provider to use (default: KHALA_PARITY_BACKEND, else auto).
        #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
        backend: Option<BackendChoice>,
        /// Model profile.
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
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::from(exit::UNKNOWN);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::UNKNOWN)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Bench {
            what:
                BenchCommand::Projections {
                    backend,
                    profile,
                    projections,
                    events_per_run,
                    connections,
                    json,
                },
        } => {
            let mut config =
                PostgresConfig::from_env().context("read the backend configuration")?;
            if let Some(choice) = backend {
                config.choice = choice;
            }
            let postgres = PostgresBackend::start(&config)
                .await
                .context("start PostgreSQL")?;
            let spec = ProjectionBench {
                profile,
                projections: projections as usize,
                events_per_run: events_per_run as usize,
                connections,
            };
            let rates = bench::projections(&postgres, &spec).await;
            let provider = postgres.provider();
            postgres.shutdown().await.context("stop PostgreSQL")?;
            let rates = rates.context("run the projection benchmark")?;
            if json {
                let report = serde_json::json!({"benchmark": "projections", "provider": provider.to_string(), "profile": profile, "rates": rates});
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
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
            Ok(exit::ALLOW)
        }
    }
}
