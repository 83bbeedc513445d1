//! `khala-parity report`: a stored report.json rendered again and, with
//! thresholds given, gated anew; `report merge`: the shards of one run
//! (`run --shard K/N`) combined into its report and gate.

use super::error::{CliError, CliResult};
use super::output::OutputArgs;
use khala_parity::check::gate::GateThresholds;
use khala_parity::merge;
use khala_parity::report;
use khala_parity::run::{self, REGRESSION_DIR};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: Option<ReportCommand>,
    /// The report.json to render.
    file: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    gate: GateArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Combine the report.json of every shard of one run (`run --shard
    /// K/N`, K = 1..N) into the run's report and one gate; the findings'
    /// defects are stored in --regressions as `run` stores them.
    Merge(MergeArgs),
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Each shard's report.json, in any order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Where the merged run's defects are stored.
    #[arg(long, value_name = "DIR", default_value = REGRESSION_DIR)]
    regressions: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

/// Gate thresholds from the command line (spec §9.5 defaults otherwise).
#[derive(Debug, clap::Args)]
pub struct GateArgs {
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

    pub fn thresholds(&self) -> Result<GateThresholds, CliError> {
        let text = match &self.gate_file {
            Some(path) => std::fs::read_to_string(path).map_err(|error| {
                CliError::InvalidInput(format!("read gate thresholds {}: {error}", path.display()))
            })?,
            None => String::new(),
        };
        GateThresholds::parse_toml(&text, &self.thresholds).map_err(|error| {
            let source = self
                .gate_file
                .as_ref()
                .map_or("--threshold".to_owned(), |path| path.display().to_string());
            CliError::InvalidInput(format!("read gate thresholds {source}: {error}"))
        })
    }
}

pub fn execute(args: ReportArgs) -> CliResult {
    let file = match (args.command, args.file) {
        (Some(ReportCommand::Merge(merge)), _) => return execute_merge(merge),
        (None, Some(file)) => file,
        (None, None) => return Err(CliError::InvalidInput("report: no file given".into())),
    };
    let mut report = report::load::load(&file).map_err(CliError::input)?;
    if args.gate.given() {
        report::regate(&mut report, &args.gate.thresholds()?);
    }
    args.output.emit(&report)
}

fn execute_merge(args: MergeArgs) -> CliResult {
    let shards = args
        .files
        .iter()
        .map(|path| {
            report::load::load(path)
                .map(|report| (path.clone(), report))
                .map_err(CliError::input)
        })
        .collect::<Result<Vec<_>, _>>()?;
    run::check_regressions_writable(&args.regressions).map_err(CliError::input)?;
    let merged = merge::merge(&shards, &args.regressions).map_err(|error| {
        match error.is_invalid_input() {
            true => CliError::input(error),
            false => CliError::Failed(error.into()),
        }
    })?;
    args.output.emit(&merged)
}
