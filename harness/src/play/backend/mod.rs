//! Backends the harness runs the system under test against.

pub mod convex;
pub mod leftovers;
pub mod postgres;
