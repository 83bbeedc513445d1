//! `khala-parity replay`: exactly one stored case, no generation, no
//! shrinking, its report and gate.

use super::backends::{shut_down, start_backends, stop_on_signals};
use super::error::{CliError, CliResult};
use super::output::OutputArgs;
use super::report::GateArgs;
use anyhow::Context;
use khala_parity::play::backend::postgres::BackendChoice;
use khala_parity::play::driver;
use khala_parity::{report, run};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    file: PathBuf,
    #[arg(long, value_parser = clap::value_parser!(BackendChoice))]
    backend: Option<BackendChoice>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    gate: GateArgs,
}

pub fn execute(args: ReplayArgs, tokio: &tokio::runtime::Runtime) -> CliResult {
    let case = run::load_case(&args.file).map_err(CliError::input)?;
    let thresholds = args.gate.thresholds()?;
    stop_on_signals(tokio)?;
    let backends = tokio.block_on(start_backends(args.backend, 1))?;
    let played = tokio.block_on(driver::play(&backends, &case, false));
    let stopped = shut_down(tokio, backends);
    let result = played.context("replay the case")?;
    stopped?;
    let file_name = args.file.display().to_string();
    let report = report::for_case(&case, Some(file_name), &result, &thresholds);
    args.output.emit(&report)
}
