//! Judging what was observed, without I/O: the invariant checks (one
//! checker per subsystem, each returning every divergence), the metrics
//! drawn from traces, and the gate's thresholds and decision.

pub mod clients;
pub mod defects;
pub mod gate;
pub mod invariants;
pub mod metrics;
