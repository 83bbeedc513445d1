//! The `khala-parity` command: its subcommands, and `main`, which runs one
//! and turns its outcome into the exit code.
//!
//! Exit codes: 0 the gate allows, 1 the gate blocks, 2 unknown (the harness
//! or a backend failed; never a pass), 64 invalid invocation or input file.

use super::error::CliError;
use super::{audit, bench, list, replay, report, run};
use clap::{Parser, Subcommand};
use khala_parity::exit;
use std::process::ExitCode;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate cases from scenarios, play them against the real backends,
    /// shrink and store every failure, and decide the gate. Stored
    /// regressions (scenarios/regressions/*.json) are replayed first.
    Run(run::RunArgs),
    /// Audit a live deployment read-only: its checkpoints, Khala read
    /// models and journal (PostgreSQL) against its Convex summaries, with
    /// the report and gate of `run`. Exit 0 allow, 1 block, 2 unknown (a
    /// store unreachable, a table or function missing, credentials wrong).
    Audit(Box<audit::AuditArgs>),
    /// Re-execute exactly one stored case: no generation, no shrinking.
    Replay(replay::ReplayArgs),
    /// Render a report.json again (human, JSON, Markdown drill report,
    /// Prometheus) and, with --gate or --threshold, decide its gate anew.
    /// The exit code is the gate's.
    Report(report::ReportArgs),
    /// List scenarios or invariants.
    List(list::ListArgs),
    /// Measure the models on real backends (rates only; nothing is asserted).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

pub fn main() -> ExitCode {
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
    let outcome = match cli.command {
        Command::Run(args) => run::execute(args, &tokio),
        Command::Audit(args) => audit::execute(*args, &tokio),
        Command::Replay(args) => replay::execute(args, &tokio),
        Command::Report(args) => report::execute(args),
        Command::List(args) => list::execute(args),
        Command::Bench { what } => bench::execute(what, &tokio),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            match &error {
                CliError::InvalidInput(message) => eprintln!("error: {message}"),
                CliError::Failed(error) => eprintln!("error: {error:#}"),
            }
            ExitCode::from(error.exit_code())
        }
    }
}
