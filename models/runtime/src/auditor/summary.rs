//! The cycle summary of spec §8 and its status: plain data the comparison
//! table produces, the cycle reports and telemetry reads.

/// `status` of a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleStatus {
    Disabled,
    Empty,
    Ok,
    Mismatch,
}

impl CycleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CycleStatus::Disabled => "disabled",
            CycleStatus::Empty => "empty",
            CycleStatus::Ok => "ok",
            CycleStatus::Mismatch => "mismatch",
        }
    }
}

/// The cycle summary of spec §8, plus `convex_mismatches` (hardened B2).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CycleSummary {
    pub status: CycleStatus,
    pub sampled: u64,
    pub mismatches: u64,
    pub missing_documents: u64,
    pub hash_mismatches: u64,
    pub lag_drift_nonzero: u64,
    pub convex_mismatches: u64,
    pub mismatch_rate: f64,
    pub max_abs_lag_drift: i64,
    pub avg_abs_lag_drift: f64,
}

impl CycleSummary {
    /// A disabled cycle: all zeros.
    pub fn disabled() -> Self {
        CycleSummary {
            status: CycleStatus::Disabled,
            sampled: 0,
            mismatches: 0,
            missing_documents: 0,
            hash_mismatches: 0,
            lag_drift_nonzero: 0,
            convex_mismatches: 0,
            mismatch_rate: 0.0,
            max_abs_lag_drift: 0,
            avg_abs_lag_drift: 0.0,
        }
    }
}
