//! The per-checkpoint comparison table of spec §8 and the cycle summary
//! arithmetic, as pure functions over rows already read.

use crate::checkpoint::Checkpoint;
use crate::hashing::summary_hash;
use crate::summary::ProjectionKind;
use serde_json::{Value, json};

use super::summary::{CycleStatus, CycleSummary};

/// Why a comparison is (not) a mismatch. The first six are the original's;
/// the `convex_*` classes exist only with the hardened B2 fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonClass {
    UnsupportedProjection,
    KhalaMissing,
    HashAndLagDrift,
    SummaryHashMismatch,
    LagDrift,
    None,
    ConvexMissing,
    ConvexHashMismatch,
    ConvexLagDrift,
}

impl ReasonClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonClass::UnsupportedProjection => "unsupported_projection",
            ReasonClass::KhalaMissing => "khala_missing",
            ReasonClass::HashAndLagDrift => "hash_and_lag_drift",
            ReasonClass::SummaryHashMismatch => "summary_hash_mismatch",
            ReasonClass::LagDrift => "lag_drift",
            ReasonClass::None => "none",
            ReasonClass::ConvexMissing => "convex_missing",
            ReasonClass::ConvexHashMismatch => "convex_hash_mismatch",
            ReasonClass::ConvexLagDrift => "convex_lag_drift",
        }
    }

    pub fn is_mismatch(self) -> bool {
        self != ReasonClass::None
    }
}

/// What the auditor reads of a Khala read-model row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ReadModelRow {
    pub doc_version: i64,
    pub payload: Option<Value>,
}

/// Which store a reported reason is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Khala,
    Convex,
}

/// The checkpoint against the Convex document (hardened B2 only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConvexCheck {
    /// `None` (the class) when Convex agrees with the checkpoint.
    pub reason_class: ReasonClass,
    /// `checkpoint.last_runtime_seq − runtime_source.seq` of the document
    /// (the whole seq when the document is missing).
    pub lag_drift: i64,
}

/// One sampled checkpoint, compared.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EntityComparison {
    pub projection_name: String,
    pub entity_id: String,
    pub document_id: String,
    /// `runtime.run_summaries`, `runtime.codex_worker_summaries` or
    /// `runtime.unknown`.
    pub event_type: String,
    /// The reported class: Khala's when it is a mismatch, else Convex's when
    /// Convex was checked and disagrees, else `none`.
    pub reason_class: ReasonClass,
    /// The store `reason_class` is about.
    pub side: Side,
    /// Signed lag of the reported side (negative when the store is ahead).
    pub lag_drift: i64,
    /// The checkpoint against Khala, whatever is reported.
    pub khala_reason_class: ReasonClass,
    pub khala_lag_drift: i64,
    /// Present only when the auditor read Convex (hardened B2).
    pub convex: Option<ConvexCheck>,
}

impl EntityComparison {
    pub fn is_mismatch(&self) -> bool {
        self.reason_class.is_mismatch()
    }

    pub fn abs_lag_drift(&self) -> i64 {
        self.lag_drift.abs()
    }

    pub fn status(&self) -> &'static str {
        if self.is_mismatch() { "mismatch" } else { "ok" }
    }
}

/// The table of spec §8 for the checkpoint and the Khala row (looked up by
/// `doc_key = checkpoint.document_id`). Returns the class and signed lag.
pub fn compare_khala(checkpoint: &Checkpoint, row: Option<&ReadModelRow>) -> (ReasonClass, i64) {
    if checkpoint
        .projection_name
        .parse::<ProjectionKind>()
        .is_err()
    {
        return (
            ReasonClass::UnsupportedProjection,
            checkpoint.last_runtime_seq,
        );
    }
    let Some(row) = row else {
        return (ReasonClass::KhalaMissing, checkpoint.last_runtime_seq);
    };
    let empty = json!({});
    let hash = summary_hash(row.payload.as_ref().unwrap_or(&empty));
    let lag = checkpoint.last_runtime_seq - row.doc_version;
    let hash_equal = hash == checkpoint.summary_hash;
    match (hash_equal, lag == 0) {
        (false, false) => (ReasonClass::HashAndLagDrift, lag),
        (false, true) => (ReasonClass::SummaryHashMismatch, 0),
        (true, false) => (ReasonClass::LagDrift, lag),
        (true, true) => (ReasonClass::None, 0),
    }
}

/// The hardened B2 check: the checkpoint against the Convex document. The
/// document's seq is `runtime_source.seq`, else `latest_seq`, else 0.
pub fn compare_convex(checkpoint: &Checkpoint, document: Option<&Value>) -> ConvexCheck {
    let Some(document) = document else {
        return ConvexCheck {
            reason_class: ReasonClass::ConvexMissing,
            lag_drift: checkpoint.last_runtime_seq,
        };
    };
    let seq = document
        .pointer("/runtime_source/seq")
        .and_then(Value::as_i64)
        .or_else(|| document.get("latest_seq").and_then(Value::as_i64))
        .unwrap_or(0);
    let lag_drift = checkpoint.last_runtime_seq - seq;
    let reason_class = if summary_hash(document) != checkpoint.summary_hash {
        ReasonClass::ConvexHashMismatch
    } else if lag_drift != 0 {
        ReasonClass::ConvexLagDrift
    } else {
        ReasonClass::None
    };
    ConvexCheck {
        reason_class,
        lag_drift,
    }
}

/// Combines the Khala result and, when read, the Convex result.
pub fn comparison(
    checkpoint: &Checkpoint,
    khala: (ReasonClass, i64),
    convex: Option<ConvexCheck>,
) -> EntityComparison {
    let event_type = checkpoint
        .projection_name
        .parse::<ProjectionKind>()
        .map_or("runtime.unknown", ProjectionKind::topic)
        .to_owned();
    let (reason_class, side, lag_drift) = match &convex {
        Some(check) if !khala.0.is_mismatch() && check.reason_class.is_mismatch() => {
            (check.reason_class, Side::Convex, check.lag_drift)
        }
        _ => (khala.0, Side::Khala, khala.1),
    };
    EntityComparison {
        projection_name: checkpoint.projection_name.clone(),
        entity_id: checkpoint.entity_id.clone(),
        document_id: checkpoint.document_id.clone(),
        event_type,
        reason_class,
        side,
        lag_drift,
        khala_reason_class: khala.0,
        khala_lag_drift: khala.1,
        convex,
    }
}

/// The cycle summary of spec §8 over the comparisons of an enabled cycle.
/// `missing_documents` and `hash_mismatches` count Khala's classes only, as
/// in the original; `convex_mismatches` counts comparisons reported for
/// Convex (always 0 when the auditor is blind to it).
pub fn summarise(comparisons: &[EntityComparison]) -> CycleSummary {
    let sampled = comparisons.len() as u64;
    let count = |keep: &dyn Fn(&EntityComparison) -> bool| {
        comparisons.iter().filter(|c| keep(c)).count() as u64
    };
    let mismatches = count(&|c| c.is_mismatch());
    let abs_sum: i64 = comparisons
        .iter()
        .map(EntityComparison::abs_lag_drift)
        .sum();
    let (mismatch_rate, avg_abs_lag_drift) = if sampled == 0 {
        (0.0, 0.0)
    } else {
        (
            mismatches as f64 / sampled as f64,
            abs_sum as f64 / sampled as f64,
        )
    };
    let status = if sampled == 0 {
        CycleStatus::Empty
    } else if mismatches == 0 {
        CycleStatus::Ok
    } else {
        CycleStatus::Mismatch
    };
    CycleSummary {
        status,
        sampled,
        mismatches,
        missing_documents: count(&|c| c.reason_class == ReasonClass::KhalaMissing),
        hash_mismatches: count(&|c| {
            matches!(
                c.reason_class,
                ReasonClass::SummaryHashMismatch | ReasonClass::HashAndLagDrift
            )
        }),
        lag_drift_nonzero: count(&|c| c.abs_lag_drift() > 0),
        convex_mismatches: count(&|c| c.side == Side::Convex && c.is_mismatch()),
        mismatch_rate,
        max_abs_lag_drift: comparisons
            .iter()
            .map(EntityComparison::abs_lag_drift)
            .max()
            .unwrap_or(0),
        avg_abs_lag_drift,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn checkpoint(seq: i64, hashed: &Value) -> Checkpoint {
        Checkpoint {
            projection_name: "run_summary".into(),
            entity_id: "run_1".into(),
            document_id: "runtime/run_summary:run_1".into(),
            last_runtime_seq: seq,
            projection_version: "convex_summary_v1".into(),
            summary_hash: summary_hash(hashed),
            last_projected_at: NaiveDateTime::default(),
            inserted_at: NaiveDateTime::default(),
            updated_at: NaiveDateTime::default(),
        }
    }

    fn document(seq: i64, status: &str) -> Value {
        json!({"status": status, "runtime_source": {"seq": seq}, "projected_at": "t"})
    }

    #[test]
    fn convex_check_table() {
        let stored = checkpoint(3, &document(3, "running"));
        let check = |document: Option<Value>| {
            let check = compare_convex(&stored, document.as_ref());
            (check.reason_class, check.lag_drift)
        };
        assert_eq!(check(None), (ReasonClass::ConvexMissing, 3));
        assert_eq!(
            check(Some(document(3, "failed"))),
            (ReasonClass::ConvexHashMismatch, 0)
        );
        assert_eq!(
            check(Some(document(4, "running"))),
            (ReasonClass::ConvexHashMismatch, -1)
        );
        let mut other_time = document(3, "running");
        other_time["projected_at"] = json!("later");
        assert_eq!(check(Some(other_time)), (ReasonClass::None, 0));
        // Same hash, other seq: possible only when the hash does not cover
        // the seq, as here, where the checkpoint says 5.
        let ahead = checkpoint(5, &document(3, "running"));
        let lag = compare_convex(&ahead, Some(&document(3, "running")));
        assert_eq!(
            (lag.reason_class, lag.lag_drift),
            (ReasonClass::ConvexLagDrift, 2)
        );
    }

    #[test]
    fn a_backend_written_document_agrees_with_its_checkpoint() {
        // A real deployment writes every number as a Float64 (`3.0`); read
        // through the sink's decoder it is the document the runtime sent,
        // not a ConvexHashMismatch.
        let stored = checkpoint(3, &document(3, "running"));
        let text = r#"{"status":"success","value":{"projected_at":"t","runtime_source":{"seq":3.0},"status":"running"}}"#;
        let read = crate::sink::classify(200, text).unwrap();
        let check = compare_convex(&stored, Some(&read));
        assert_eq!(
            (check.reason_class, check.lag_drift),
            (ReasonClass::None, 0)
        );
    }

    #[test]
    fn khala_mismatch_is_reported_before_convex_and_convex_only_when_khala_agrees() {
        let stored = checkpoint(3, &document(3, "running"));
        let convex = Some(ConvexCheck {
            reason_class: ReasonClass::ConvexMissing,
            lag_drift: 3,
        });
        let both = comparison(&stored, (ReasonClass::LagDrift, 1), convex.clone());
        assert_eq!(
            (both.reason_class, both.side, both.lag_drift),
            (ReasonClass::LagDrift, Side::Khala, 1)
        );
        let only_convex = comparison(&stored, (ReasonClass::None, 0), convex);
        assert_eq!(
            (
                only_convex.reason_class,
                only_convex.side,
                only_convex.lag_drift
            ),
            (ReasonClass::ConvexMissing, Side::Convex, 3)
        );
        let summary = summarise(&[both, only_convex]);
        assert_eq!(
            (
                summary.mismatches,
                summary.convex_mismatches,
                summary.missing_documents,
                summary.max_abs_lag_drift,
                summary.avg_abs_lag_drift
            ),
            (2, 1, 0, 3, 2.0)
        );
    }

    #[test]
    fn an_empty_cycle_is_empty_with_zero_rates() {
        let summary = summarise(&[]);
        assert_eq!(summary.status, CycleStatus::Empty);
        assert_eq!(
            (
                summary.mismatch_rate,
                summary.avg_abs_lag_drift,
                summary.max_abs_lag_drift
            ),
            (0.0, 0.0, 0)
        );
    }
}
