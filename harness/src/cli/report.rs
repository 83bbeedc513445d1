//! `khala-parity report`: a stored report.json rendered again and, with
//! thresholds given, gated anew.

use super::error::{CliError, CliResult};
use super::output::OutputArgs;
use khala_parity::check::gate::GateThresholds;
use khala_parity::report;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    file: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    gate: GateArgs,
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
    let mut report = report::load::load(&args.file).map_err(CliError::input)?;
    if args.gate.given() {
        report::regate(&mut report, &args.gate.thresholds()?);
    }
    args.output.emit(&report)
}
