//! Stopping a run on SIGINT or SIGTERM without leaving anything behind.
//!
//! `install` replaces the default action of both signals (terminate at
//! once, skipping every destructor) with a process-wide flag. The engine
//! reads it with `requested` between batches of cases: it starts no new
//! case, the run ends early with what it played, and the caller shuts the
//! backends down on their normal path and writes a report marked
//! interrupted. A case in flight finishes first (a case is a few seconds
//! at most), so its databases and fronts are never torn down under it.
//!
//! Every signal after the first is handed to the caller's `notify`, which
//! may exit at once (the CLI does): child processes still die with the
//! harness (they carry a parent-death signal), and what they leave on disk
//! is reaped by the next backend start (`backend::leftovers`).
//!
//! Only the CLI prints or exits, so this module only sets the flag and
//! tells `notify`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::signal::unix::{SignalKind, signal};

/// Set by the first SIGINT or SIGTERM after `install`; never cleared.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Signals received so far, so that `notify` can tell the first from the rest.
static RECEIVED: AtomicU32 = AtomicU32::new(0);

/// Whether a stop was requested: the engine starts no new case once it is.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// One signal that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// `SIGINT` or `SIGTERM`.
    pub signal: &'static str,
    /// 1 for the first signal (the one that requested the stop), 2 and up
    /// for the ones after it.
    pub count: u32,
}

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("install a handler for {signal}")]
pub struct InstallError {
    pub signal: &'static str,
    #[source]
    pub source: io::Error,
}

/// Listens for SIGINT and SIGTERM on `runtime` for the rest of the process:
/// each sets the flag `requested` reads, then calls `notify` (on a runtime
/// worker, so it must not block for long).
///
/// The listening task runs on the runtime's workers, which keep running
/// while the caller's thread is inside `block_on`, so a signal is seen even
/// while a case plays.
pub fn install(
    runtime: &tokio::runtime::Handle,
    notify: impl Fn(Interrupt) + Send + 'static,
) -> Result<(), InstallError> {
    // `signal` registers with the runtime's driver, so it needs its context.
    let _entered = runtime.enter();
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| InstallError {
            signal: name,
            source,
        })
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    runtime.spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = interrupt.recv() => "SIGINT",
                Some(()) = terminate.recv() => "SIGTERM",
                else => return,
            };
            REQUESTED.store(true, Ordering::SeqCst);
            let count = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
            tracing::info!(signal = name, count, "stop requested");
            notify(Interrupt {
                signal: name,
                count,
            });
        }
    });
    Ok(())
}
