//! The CLI's exit codes, one named constant each.

/// The gate allows (or a command other than `run` succeeded).
pub const ALLOW: u8 = 0;
/// The gate blocks.
pub const BLOCK: u8 = 1;
/// The harness or a backend failed; never reported as a pass.
pub const UNKNOWN: u8 = 2;
/// Invalid invocation or input file (`EX_USAGE`).
pub const INVALID_INPUT: u8 = 64;
