//! Judging what was observed, without I/O: the invariant checks (one
//! checker per subsystem, each returning every divergence; the parity
//! windows, which keep what earlier steps opened), the metrics
//! drawn from traces, and the gate's thresholds and decision.

pub mod audit;
pub mod clients;
pub mod cycle;
pub mod decision;
pub mod defects;
pub mod gate;
pub mod invariants;
pub mod metrics;
pub mod rebuild;
pub mod windows;
