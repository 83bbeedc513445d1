//! What `khala-parity audit` does, for the CLI and tests alike: open the
//! live deployment read-only, run cycles (one, `cycles` of them, or until
//! interrupted with `watch`), judge each with `check::audit`, and hand the
//! report of every cycle so far to `on_cycle` (the CLI rewrites its
//! artifacts there, so `metrics.prom` stays current during a drill). A
//! store that cannot be read ends the audit with the gate `unknown`.

use crate::check::audit::{AuditedCycle, check_cycle};
use crate::check::gate::GateThresholds;
use crate::model::audit::AuditTarget;
use crate::play::audit::{self, AuditConnect, AuditError};
use crate::play::interrupt;
use crate::report::Report;
use crate::report::audit::build_audit;
use std::time::{Duration, Instant};

/// How many cycles, and how far apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditSchedule {
    /// `None`: until a signal (only with `watch`).
    pub cycles: Option<u32>,
    /// The pause between cycles; `None` runs them back to back.
    pub watch: Option<Duration>,
}

impl AuditSchedule {
    pub const ONCE: AuditSchedule = AuditSchedule {
        cycles: Some(1),
        watch: None,
    };
}

/// Runs the audit; the report of the last cycle (or of the failure).
/// `on_cycle` sees the report after every cycle.
pub async fn run_audit(
    connect: &AuditConnect,
    target: AuditTarget,
    thresholds: &GateThresholds,
    schedule: AuditSchedule,
    on_cycle: &mut dyn FnMut(&Report),
) -> Report {
    let started = Instant::now();
    let mut cycles: Vec<AuditedCycle> = Vec::new();
    let failure = match audit::open(connect, target).await {
        Err(error) => Some(error),
        Ok(mut session) => {
            let outcome = loop {
                if interrupt::requested() {
                    break None;
                }
                match session.read_cycle().await {
                    Ok(read) => cycles.push(check_cycle(&read)),
                    Err(error) => break Some(error),
                }
                on_cycle(&build_audit(
                    &cycles,
                    thresholds,
                    None,
                    false,
                    started.elapsed().as_secs_f64(),
                ));
                if schedule
                    .cycles
                    .is_some_and(|limit| cycles.len() >= limit as usize)
                {
                    break None;
                }
                if let Some(pause) = schedule.watch {
                    // In slices, so that a signal ends the watch promptly.
                    let until = Instant::now() + pause;
                    while !interrupt::requested() && Instant::now() < until {
                        let left = until.saturating_duration_since(Instant::now());
                        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
                    }
                }
            };
            session.close().await;
            outcome
        }
    };
    let failure = failure.map(|error: AuditError| error.to_string());
    // A signal is how a `--watch` without `--cycles` ends: its cycles are
    // whole (a signal never cuts one short), so only `--cycles N` left
    // unfinished is an interrupted audit.
    let interrupted = failure.is_none()
        && interrupt::requested()
        && schedule
            .cycles
            .is_some_and(|limit| cycles.len() < limit as usize);
    let report = build_audit(
        &cycles,
        thresholds,
        failure,
        interrupted,
        started.elapsed().as_secs_f64(),
    );
    on_cycle(&report);
    report
}
