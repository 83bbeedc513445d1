//! Starting the backends a command plays on, and stopping a run on a
//! signal.

use super::error::CliError;
use anyhow::Context;
use khala_parity::exit;
use khala_parity::play::backend::convex::ConvexBackend;
use khala_parity::play::backend::postgres::{BackendChoice, PostgresBackend};
use khala_parity::play::driver::Backends;
use khala_parity::run::{self, StartError};

pub async fn start_postgres(choice: Option<BackendChoice>) -> Result<PostgresBackend, CliError> {
    let (config, _) = run::backend_configs(choice).map_err(CliError::input)?;
    Ok(PostgresBackend::start(&config)
        .await
        .context("start PostgreSQL")?)
}

pub async fn start_convex(choice: Option<BackendChoice>) -> Result<ConvexBackend, CliError> {
    let (_, config) = run::backend_configs(choice).map_err(CliError::input)?;
    Ok(ConvexBackend::start(&config)
        .await
        .context("start the Convex backend")?)
}

/// How many cases play at once.
#[derive(Debug, clap::Args)]
pub struct SlotArgs {
    /// Cases played at once, each on a backend slot of its own (a Convex
    /// backend behind its fault proxy; default: two per CPU here, at most
    /// 4). The report is the same whatever the number. `--lanes` is its
    /// old name, still accepted.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    slots: Option<u32>,
    /// The old name of `--slots` (deprecated; refused together with it).
    #[arg(long, hide = true, conflicts_with = "slots", value_parser = clap::value_parser!(u32).range(1..=16))]
    lanes: Option<u32>,
}

impl SlotArgs {
    /// The slots asked for, else the library's default.
    pub fn count(&self) -> usize {
        self.slots
            .or(self.lanes)
            .map_or_else(run::default_slots, |slots| slots as usize)
    }
}

/// PostgreSQL and `slots` Convex backends, all started at once.
pub async fn start_backends(
    choice: Option<BackendChoice>,
    slots: usize,
) -> Result<Backends, CliError> {
    run::start_backends(choice, slots)
        .await
        .map_err(|error| match error {
            StartError::Settings(_) => CliError::input(error),
            other => CliError::Failed(other.into()),
        })
}

/// Stops the backends; a failure to is the command's failure.
pub fn shut_down(tokio: &tokio::runtime::Runtime, backends: Backends) -> Result<(), CliError> {
    Ok(tokio
        .block_on(backends.shutdown())
        .map_err(anyhow::Error::msg)
        .context("stop the backends")?)
}

/// SIGINT and SIGTERM stop a run between batches of cases: the backends
/// are removed on their normal path and the report, marked interrupted,
/// exits `unknown`. A second signal exits at once; the backends' child
/// processes die with us (parent-death signal) and the next backend start
/// removes the files they leave.
pub fn stop_on_signals(tokio: &tokio::runtime::Runtime) -> Result<(), CliError> {
    khala_parity::play::interrupt::install(tokio.handle(), |interrupt| {
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
    .context("stop on signals")?;
    Ok(())
}
