//! Plain data every other layer shares: cases and their steps, what the
//! stores held after a step, the invariant catalogue. No I/O, no logic
//! beyond constructors and lookups.

pub mod case;
pub mod catalogue;
pub mod observation;
pub mod shard;
pub mod trace;
