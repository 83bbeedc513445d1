//! `khala-parity audit`: three-way parity of a live deployment (its
//! checkpoint table, Khala read models and journal in PostgreSQL, its
//! Convex summaries), read-only, with the report and gate of `run`.

use super::backends::stop_on_signals;
use super::error::{CliError, CliResult, decision_code};
use super::report::GateArgs;
use khala_parity::audit::{AuditSchedule, run_audit};
use khala_parity::model::audit::{AuditTables, AuditTarget, Sampling};
use khala_parity::play::audit::AuditConnect;
use khala_parity::report;
use khala_runtime::auditor::MAX_SAMPLE_SIZE;
use khala_runtime::sink::ConvexQueryPaths;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The deployment's PostgreSQL (checkpoints, read models, journal).
    #[arg(long, value_name = "URL")]
    postgres_url: String,
    /// The deployment's Convex HTTP API (e.g. https://NAME.convex.cloud).
    #[arg(long, value_name = "URL")]
    convex_url: String,
    /// Convex admin key, if the deployment's queries need one.
    #[arg(long, value_name = "KEY", default_value = "")]
    convex_admin_key: String,
    /// Compare every checkpoint each cycle (at most --max-entities).
    #[arg(long, conflicts_with = "sample_size")]
    all: bool,
    /// Checkpoints compared per cycle, swept in order across cycles as the
    /// hardened auditor does (spec §8 default 200, at most 10000).
    #[arg(long, value_name = "N", default_value_t = khala_runtime::auditor::DEFAULT_SAMPLE_SIZE,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_SAMPLE_SIZE)))]
    sample_size: u32,
    /// With --all: the most checkpoints one cycle compares; the next cycle
    /// goes on where it stopped.
    #[arg(long, value_name = "M", requires = "all",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_entities: Option<u32>,
    /// Repeat cycles this many seconds apart until interrupted (or
    /// --cycles), rewriting the artifacts after each.
    #[arg(long, value_name = "SECONDS")]
    watch: Option<u64>,
    /// Stop after this many cycles (default 1 without --watch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    cycles: Option<u32>,
    /// At most this many requests per second to each store.
    #[arg(long, value_name = "RPS")]
    max_rps: Option<f64>,
    /// Write report.json, report.txt, metrics.prom and drill.md here.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[arg(long, value_name = "TABLE", default_value_t = AuditTables::default().checkpoints)]
    checkpoints_table: String,
    #[arg(long, value_name = "TABLE", default_value_t = AuditTables::default().run_summaries)]
    run_summaries_table: String,
    #[arg(long, value_name = "TABLE", default_value_t = AuditTables::default().codex_worker_summaries)]
    codex_worker_summaries_table: String,
    #[arg(long, value_name = "TABLE", default_value_t = AuditTables::default().journal)]
    journal_table: String,
    #[arg(long, value_name = "TABLE", default_value_t = AuditTables::default().topic_sequences)]
    topic_sequences_table: String,
    /// The Convex query returning one run summary by document_id.
    #[arg(long, value_name = "PATH", default_value_t = ConvexQueryPaths::default().get_run_summary)]
    get_run_summary: String,
    /// The Convex query returning one worker summary by document_id.
    #[arg(long, value_name = "PATH", default_value_t = ConvexQueryPaths::default().get_codex_worker_summary)]
    get_codex_worker_summary: String,
    /// The Convex query listing run summaries (paginated; with --all).
    #[arg(long, value_name = "PATH", default_value_t = ConvexQueryPaths::default().list_run_summaries)]
    list_run_summaries: String,
    /// The Convex query listing worker summaries (paginated; with --all).
    #[arg(long, value_name = "PATH", default_value_t = ConvexQueryPaths::default().list_codex_worker_summaries)]
    list_codex_worker_summaries: String,
    #[command(flatten)]
    gate: GateArgs,
}

/// A table name the audit puts into SQL: an identifier, optionally
/// schema-qualified, nothing else.
fn table_name(flag: &str, name: &str) -> Result<String, CliError> {
    let valid = !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .next()
                    .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && part
                    .chars()
                    .all(|char| char.is_ascii_alphanumeric() || char == '_')
        });
    if valid {
        Ok(name.to_owned())
    } else {
        Err(CliError::InvalidInput(format!(
            "{flag}: `{name}` is not a table name (expected [schema.]table of letters, digits and _)"
        )))
    }
}

pub fn execute(args: AuditArgs, tokio: &tokio::runtime::Runtime) -> CliResult {
    if let Some(rps) = args.max_rps
        && !(rps.is_finite() && rps > 0.0)
    {
        return Err(CliError::InvalidInput(format!(
            "--max-rps: expected a positive number, got {rps}"
        )));
    }
    let thresholds = args.gate.thresholds()?;
    let tables = AuditTables {
        checkpoints: table_name("--checkpoints-table", &args.checkpoints_table)?,
        run_summaries: table_name("--run-summaries-table", &args.run_summaries_table)?,
        codex_worker_summaries: table_name(
            "--codex-worker-summaries-table",
            &args.codex_worker_summaries_table,
        )?,
        journal: table_name("--journal-table", &args.journal_table)?,
        topic_sequences: table_name("--topic-sequences-table", &args.topic_sequences_table)?,
    };
    let target = AuditTarget {
        tables,
        paths: ConvexQueryPaths {
            get_run_summary: args.get_run_summary,
            get_codex_worker_summary: args.get_codex_worker_summary,
            list_run_summaries: args.list_run_summaries,
            list_codex_worker_summaries: args.list_codex_worker_summaries,
        },
        sampling: if args.all {
            Sampling::All {
                max_entities: args.max_entities,
            }
        } else {
            Sampling::Sweep {
                size: args.sample_size,
            }
        },
    };
    let connect = AuditConnect {
        postgres_url: args.postgres_url,
        convex_url: args.convex_url,
        convex_admin_key: args.convex_admin_key,
        max_rps: args.max_rps,
    };
    let schedule = AuditSchedule {
        cycles: match (args.cycles, args.watch) {
            (Some(cycles), _) => Some(cycles),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        },
        watch: args.watch.map(Duration::from_secs),
    };
    stop_on_signals(tokio)?;
    let out = args.out;
    let mut written: Result<(), CliError> = Ok(());
    let report = tokio.block_on(run_audit(
        &connect,
        target,
        &thresholds,
        schedule,
        &mut |report| {
            if written.is_ok() {
                written = report::artifacts::write(report, &out)
                    .map(|_| ())
                    .map_err(CliError::from);
            }
        },
    ));
    written?;
    anstream::print!("{}", report::human::render(&report, true));
    Ok(decision_code(report.gate.decision))
}
