//! Plain data every other layer shares: cases and their steps, what the
//! stores held after a step, the invariant catalogue, its reason classes
//! and the violations the checks record. No I/O, no logic beyond
//! constructors and lookups.

pub mod audit;
pub mod case;
pub mod catalogue;
pub mod draws;
pub mod observation;
pub mod reason;
pub mod shard;
pub mod switches;
pub mod trace;
pub mod values;
pub mod violation;
