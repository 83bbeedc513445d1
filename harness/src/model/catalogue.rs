//! The invariant catalogue: spec §14 IDs plus the cross-store X IDs of
//! ARCHITECTURE.md, each with its statement, severity and when it is
//! checked; and the violation a check records.

use serde_json::Value;

/// How bad a violation is for the cutover gate.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

/// When an invariant is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// After every step, faults or not (safety).
    EveryStep,
    /// After `Quiesce` and at the end of a case (convergence).
    Quiescence,
    /// A property of one model component, checked by that component's own
    /// tests against real backends (the `checked_by` file), not per step.
    Models,
}

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Invariant {
    pub id: &'static str,
    pub statement: &'static str,
    pub severity: Severity,
    pub phase: Phase,
    /// For `Phase::Models`: where the planted-defect tests are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_by: Option<&'static str>,
}

/// The invariant the driver records when the system under test raises an
/// error (`play::error::SystemFault`).
pub const SYSTEM_FAULT_INVARIANT: &str = "E1";

pub const CATALOGUE: &[Invariant] = &[
    Invariant {
        id: "P1",
        statement: "every stored document's key equals its document_id, the projection prefix plus the entity id",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "P2",
        statement: "every stored document has latest_seq = runtime_source.seq = event_count, never ahead of the runtime",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "C3",
        statement: "a checkpoint's last_runtime_seq never decreases, except through reprojection",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "W2",
        statement: "each topic's journal watermarks form a contiguous range: 1..head until retention first runs, oldest retained..head after",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "W3",
        statement: "a document's journal doc_version never decreases in watermark order",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "X1",
        statement: "at quiescence every document is as the oracle predicts in every store the sink mode writes, and Khala equals Convex where both are written",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
    },
    Invariant {
        id: "X2",
        statement: "at quiescence every checkpoint is at the runtime's seq and its hash matches each store the sink mode writes",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
    },
    Invariant {
        id: "X5",
        statement: "each auditor cycle reports a mismatch for exactly the sampled checkpoints whose Khala row, or Convex document where the sink mode writes Convex, disagrees with it",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "X6",
        statement: "after the catch-up procedure at quiescence, an auditor cycle reports zero lag drift wherever the sink mode writes Khala",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
    },
    Invariant {
        id: "P3",
        statement: "every stored document has exactly the projection's key set (18 run keys, 21 worker keys)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "P4",
        statement: "redelivering an entity whose stores and checkpoint are current changes nothing (idempotent skip, no sink call)",
        severity: Severity::Warning,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "C2",
        statement: "a checkpoint moves only together with every store the sink mode writes: after it moves, each holds a document with the checkpoint's hash",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "X7",
        statement: "no stored document ever moves backwards in seq",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "X3",
        statement: "at quiescence every online client lane shows each worker document as the oracle predicts (semantic part) wherever its source holds it so; checked while the sink mode writes Khala, the source of every lane (the socket, and the runtime API the polling lanes read, modelled by the read model's hydration list): a Khala lane while the runtime is Convex-only is a runbook-order hazard, not a lane defect, and a wrong source is X1's",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
    },
    Invariant {
        id: "X4",
        statement: "no client lane's view of a document ever moves backwards in seq or loses the document",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "D2",
        statement: "deliveries to a lane continue from its stored watermark one watermark at a time, with no gap and no duplicate, across reconnects and sync-server restarts (a re-hydration starts afresh)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "D3",
        statement: "a subscribe with a cursor is answered stale_cursor iff the cursor is below the retention floor, the highest watermark retention has deleted on the topic, or above every watermark ever allocated; one without a cursor is never refused, and on a pruned topic leaves the lane's doc cache holding every read-model document",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "D7",
        statement: "a lane's watermark never moves back, and at quiescence every online Khala lane's doc cache holds each read-model row of its topic at the row's version with its payload",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "L1",
        statement: "after quiescence every online subscribed lane of either kind (today's model and the shipped client) holds each read-model row of its topic at the row's version within a bounded advance of time (channel timeout, socket idle close and reconnect backoff included); a lane live and caught up to the journal head that still lacks one never converges, and a live lane left below the head once the server has handled every wake-up is stalled until the topic is woken again (B11)",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
    },
    Invariant {
        id: "R1",
        statement: "after a retention run no journal row inserted before its cutoff remains, every newer one does, the deleted count is exact and oldest_retained is each topic's lowest remaining watermark (none when empty)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: SYSTEM_FAULT_INVARIANT,
        statement: "no part of the system under test (a client lane, the sync server, the runtime, the parity auditor) raises an error while a case plays; an error of the harness or its backends (a backend unreachable, a proxy error, the harness's own timeout) is no violation but makes the case unknown",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
    },
    Invariant {
        id: "C1",
        statement: "the checkpoint decision table of spec §3.3 holds for every (checkpoint, summary) combination, with its lag and drift outputs",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("models/runtime/src/checkpoint.rs"),
    },
    Invariant {
        id: "C4",
        statement: "runtime writes never fail because of sink failures; a rebuild converges the checkpoint (C5: sequential bursts report lag_events ≤ 1)",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/projection.rs"),
    },
    Invariant {
        id: "S1",
        statement: "the fanout calls sinks in order, stops at the first failure and names the failing sink; an empty sink list is the Noop sink",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/projection.rs"),
    },
    Invariant {
        id: "S2",
        statement: "the Khala sink writes doc_version = seq, the summary as payload, its 32-byte payload hash and exactly one journal row (pointer mode: no journal payload)",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/projection.rs"),
    },
    Invariant {
        id: "S3",
        statement: "inside one transaction a failing later sink leaves no Khala row, no journal row and no consumed watermark",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/projection.rs"),
    },
    Invariant {
        id: "S4",
        statement: "the Convex HTTP sink sends the specified body and headers and maps every response class to its typed error; a blank base URL fails without I/O",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/convex_stub.rs"),
    },
    Invariant {
        id: "W1",
        statement: "watermark allocations per topic are 1, 2, 3, … without duplicates under concurrency, and a rolled-back allocation is not consumed",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/projection.rs"),
    },
    Invariant {
        id: "A1",
        statement: "the auditor's reason-class truth table and cycle summary arithmetic are exact",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/auditor.rs"),
    },
    Invariant {
        id: "A2",
        statement: "with dual publish and every sink succeeding, every sampled entity audits ok",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/auditor.rs"),
    },
    Invariant {
        id: "A3",
        statement: "a disabled auditor returns a zeroed summary with status disabled and emits nothing",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/auditor.rs"),
    },
    Invariant {
        id: "H1",
        statement: "the five payload-hash vectors reproduce byte-exact canonical JSON and hash",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("models/runtime/src/hashing.rs"),
    },
    Invariant {
        id: "H2",
        statement: "canonical JSON is invariant under key permutation at every depth and keeps array order",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("models/runtime/src/hashing.rs"),
    },
    Invariant {
        id: "G1",
        statement: "the gate blocks iff (block_on_critical and critical > 0) or warnings > the maximum",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/src/report/build.rs"),
    },
];

pub fn invariant(id: &str) -> Option<&'static Invariant> {
    CATALOGUE.iter().find(|invariant| invariant.id == id)
}

/// One divergence between what the backends hold and what must hold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub severity: Severity,
    pub reason_class: String,
    pub document_id: Option<String>,
    /// The index of the step after which it was seen.
    pub step_index: usize,
    pub detail: String,
    /// The oracle's document (without timestamps), where one applies.
    pub expected: Option<Value>,
    pub khala: Option<Value>,
    pub convex: Option<Value>,
    pub checkpoint: Option<Value>,
}

/// Reason classes the gate knows besides the client checks' own
/// (`CLIENT_REASON_CLASSES`): those the other invariant checks
/// record and those the parity auditor of §8 reports. A severity override naming any
/// other class is refused, because a typo would otherwise silently leave
/// the real class at its default severity.
pub const KNOWN_REASON_CLASSES: &[&str] = &[
    // Invariant checks (harness/src/invariants.rs).
    "document_id_mismatch",
    "sequence_fields_inconsistent",
    "checkpoint_regressed",
    "journal_gap",
    "journal_version_regressed",
    "khala_regressed",
    "convex_regressed",
    "khala_missing",
    "convex_missing",
    "convex_ahead_of_khala",
    "khala_stale",
    "convex_stale",
    "khala_wrong",
    "convex_wrong",
    "stores_differ",
    "convex_int_precision_lost",
    "checkpoint_missing",
    "checkpoint_lag",
    "khala_hash_mismatch",
    "convex_hash_mismatch",
    "checkpoint_ahead_of_khala",
    "checkpoint_ahead_of_convex",
    "key_set_wrong",
    "redelivery_not_idempotent",
    "lag_drift_after_catch_up",
    // The parity auditor's comparison table (§8).
    "summary_hash_mismatch",
    "hash_and_lag_drift",
    "lag_drift",
    "unsupported_projection",
    "convex_lag_drift",
    // X5: the auditor against the ground truth.
    "auditor_missed_drift",
    "auditor_false_alarm",
    // E1: the part of the system under test that raised an error
    // (`play::error::Component`).
    "client_lane_failed",
    "sync_server_failed",
    "runtime_failed",
    "auditor_failed",
];

/// Whether the gate knows `class` (see `KNOWN_REASON_CLASSES`).
pub fn is_known_reason_class(class: &str) -> bool {
    known_reason_classes().any(|known| known == class)
}

/// Every reason class the gate knows, the client checks' last.
pub fn known_reason_classes() -> impl Iterator<Item = &'static str> {
    KNOWN_REASON_CLASSES
        .iter()
        .chain(CLIENT_REASON_CLASSES)
        .copied()
}

/// Every reason class the delivery and client checks (`check::clients`)
/// record.
pub const CLIENT_REASON_CLASSES: &[&str] = &[
    "khala_lane_missing",
    "khala_lane_stale",
    "khala_lane_wrong",
    "polling_lane_missing",
    "polling_lane_stale",
    "polling_lane_wrong",
    "view_regressed",
    "view_lost_document",
    "delivery_gap",
    "delivery_duplicate",
    "below_floor_accepted",
    "no_cursor_after_prune_accepted",
    "no_cursor_refused",
    "ahead_of_head_accepted",
    "refused_in_range",
    "watermark_regressed",
    "cache_missing",
    "cache_stale",
    "cache_diverged",
    "not_live_within_bound",
    "never_converges",
    "stalled_below_head",
    "old_row_retained",
    "new_row_deleted",
    "deleted_count_wrong",
    "oldest_retained_wrong",
];
