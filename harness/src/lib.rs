//! khala-parity: checks that the Convex to Khala cutover, and its rollback,
//! lose or corrupt nothing a user sees. Backend provisioning, benchmarks and
//! (as they land) generators, oracle, driver, invariants and reports.

pub mod backend;
pub mod bench;
pub mod bench_sync;
pub mod case;
pub mod coverage;
pub mod delivery;
pub mod driver;
pub mod engine;
pub mod exit;
pub mod facade;
pub mod gate;
pub mod generate;
pub mod interrupt;
pub mod invariants;
pub mod observation;
pub mod oracle;
pub mod proxied_sink;
pub mod proxy;
pub mod report;
pub mod run;
pub mod scenario;

pub use facade::{Harness, HarnessError};
