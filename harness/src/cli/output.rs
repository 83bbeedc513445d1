//! How commands print: the report in each format (colour through anstream,
//! which honours terminals and `NO_COLOR`), the run's progress bars
//! (indicatif, on a terminal's stderr only) and the benchmark tables.

use super::error::{CliResult, decision_code};
use clap::ValueEnum;
use khala_parity::play::engine::Progress;
use khala_parity::report::{self, Report};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How `list` and `bench` print.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// How `run`, `replay` and `report` print the report.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    /// One screen of text; coloured only on a terminal without NO_COLOR.
    Human,
    /// The JSON report (khala-parity.report.v1).
    Json,
    /// The drill report of spec §9.6.
    Markdown,
    /// The run's metrics as a Prometheus text file.
    Prometheus,
}

/// How a command that ends in a report prints it and where it writes it.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    #[arg(long, value_enum, default_value = "human")]
    format: ReportFormat,
    /// Write the artifacts here: report.json, report.txt, metrics.prom,
    /// drill.md and one timeline-N.svg per finding.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl OutputArgs {
    /// Prints the report, writes its artifacts, returns the gate's code.
    pub fn emit(&self, report: &Report) -> CliResult {
        emit(report, self.format, self.out.as_deref())
    }
}

/// Prints the report in `format`, writes the artifacts to `out`, and
/// returns the gate's exit code.
fn emit(report: &Report, format: ReportFormat, out: Option<&Path>) -> CliResult {
    if let Some(dir) = out {
        report::artifacts::write(report, dir)?;
    }
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
        // Rendered with colour; anstream strips it where it is not wanted.
        ReportFormat::Human => anstream::print!("{}", report::human::render(report, true)),
        ReportFormat::Markdown => print!("{}", report::drill::render(report)),
        ReportFormat::Prometheus => print!("{}", report::prometheus::render(report)),
    }
    Ok(decision_code(report.gate.decision))
}

/// One progress bar per scenario on stderr, with the cases played, an
/// estimate of the time left and the failures found; cleared when the
/// scenario ends. Hidden when stderr is not a terminal.
#[derive(Default)]
pub struct ProgressBars {
    bars: RefCell<BTreeMap<String, indicatif::ProgressBar>>,
}

impl ProgressBars {
    /// What the run reports: `Some` after each played case, `None` when the
    /// scenario ends.
    pub fn show(&self, scenario: &str, progress: Option<Progress>) {
        let mut bars = self.bars.borrow_mut();
        let Some(progress) = progress else {
            if let Some(bar) = bars.remove(scenario) {
                bar.finish_and_clear();
            }
            return;
        };
        let bar = bars.entry(scenario.to_owned()).or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(u64::from(progress.total));
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} cases, eta {eta}, {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("#>-");
            bar.set_style(style);
            bar.set_prefix(scenario.to_owned());
            bar
        });
        bar.set_position(u64::from(progress.cases));
        let shrinking = if progress.shrinking {
            ", shrinking"
        } else {
            ""
        };
        bar.set_message(format!("{} finding(s){shrinking}", progress.findings));
    }
}

/// A benchmark's table: a title line, then a header and one row per rate.
pub fn print_table(title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    println!("{title}");
    println!("{table}");
}
