//! khala-parity: checks that the Convex to Khala cutover, and its rollback,
//! lose or corrupt nothing a user sees.
//!
//! The library is in layers, each using only those before it (ARCHITECTURE.md,
//! enforced by `tests/it/layers.rs`): `model` (plain data) → `oracle` (the
//! pure reference) → `check` (invariants, metrics, gate) → `plan`
//! (scenarios, generators, coverage) → `play` (backends, driver, engine: the
//! only I/O) → `report` → `run`, `merge`, `facade` and `exit` (one way to
//! run, the shards of a run merged, for the CLI and for users' own tests).

pub mod model;
pub mod oracle;

pub mod check;

pub mod plan;

pub mod play;

pub mod report;

pub mod audit;
pub mod exit;
pub mod facade;
pub mod merge;
pub mod run;

pub use facade::{Harness, HarnessError};
