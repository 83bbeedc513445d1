//! What to play, without I/O: scenario files (schema, loading, validation),
//! the generators that draw cases from them, and coverage.

pub mod coverage;
pub mod generate;
pub mod reach;
pub mod scenario;
pub mod steps;
