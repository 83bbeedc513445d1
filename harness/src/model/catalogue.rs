//! The invariant catalogue: spec §14 IDs plus the cross-store X IDs of
//! ARCHITECTURE.md, each with its statement, severity and when it is
//! checked.

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
    /// Only on a live deployment's stores, by `khala-parity audit`: what a
    /// case's checks see through the oracle, the audit sees in the stores
    /// alone.
    Audit,
    /// A property of one model component that no case can observe (the
    /// entry's `not_in_cases` says why), checked by that component's own
    /// tests against real backends (the `checked_by` file).
    Models,
}

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Invariant {
    pub id: &'static str,
    pub statement: &'static str,
    pub severity: Severity,
    pub phase: Phase,
    /// Where the model's own planted-defect tests are, if it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_by: Option<&'static str>,
    /// What of the statement cases cannot observe, and why: required for
    /// `Phase::Models`, where it is all of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_in_cases: Option<&'static str>,
}

pub const CATALOGUE: &[Invariant] = &[
    Invariant {
        id: "P1",
        statement: "every stored document's key equals its document_id, the projection prefix plus the entity id",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "P2",
        statement: "every stored document has latest_seq = runtime_source.seq, never ahead of the runtime, and event_count = latest_seq unless event rows were removed, then short of it by at most the rows removed below it",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "C3",
        statement: "a checkpoint's last_runtime_seq never decreases, except through reprojection",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "W2",
        statement: "each topic's journal watermarks form a contiguous range: 1..head until retention first runs, oldest retained..head after",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "W3",
        statement: "a document's journal doc_version never decreases in watermark order",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X1",
        statement: "at quiescence every document is as the oracle predicts in every store the sink mode writes, and Khala equals Convex where both are written",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X2",
        statement: "at quiescence every checkpoint is at the runtime's seq and its hash matches each store the sink mode writes, and the catch-up left no failed projection recorded for repair",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X5",
        statement: "each auditor cycle reports a mismatch for exactly the sampled checkpoints whose Khala row, or Convex document where the sink mode writes Convex, disagrees with it",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X6",
        statement: "after the catch-up procedure at quiescence, an auditor cycle reports zero lag drift wherever the sink mode writes Khala",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "P3",
        statement: "every stored document has exactly the projection's key set (18 run keys, 21 worker keys)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "P5",
        statement: "a reprojection answers spec §10's result for the entity it rebuilt: its scope (`run`, `codex_worker`) and id, `ok` with the write applied (the checkpoint was dropped: decision row 0, no reason) or `error` with no write and a reason class of spec §3.5; `rebuild_all` answers once for every entity of the authority, runs first, and counts them",
        severity: Severity::Warning,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "P4",
        statement: "redelivering an entity whose stores and checkpoint are current changes nothing: no store, no checkpoint, no journal row (idempotent skip, no sink call)",
        severity: Severity::Warning,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "C2",
        statement: "a checkpoint moves only together with every store the sink mode writes: after it moves, each holds a document with the checkpoint's hash",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "V1",
        statement: "a summary Convex cannot hold exactly (real-systems §1.1: field names, limits, integers beyond ±2^53) is refused by its projection with a typed error before any store is written, no store ever holds one, and a summary Convex can hold is never refused",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X7",
        statement: "no stored document ever moves backwards in seq",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X9",
        statement: "the live audit (`khala-parity audit`, one cycle over every checkpoint) of a case that ended in parity, in dual mode and without a violation, reads both stores and reports nothing",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X8",
        statement: "after every step Khala and Convex hold each document alike, except in a window every change of which a Convex fault since the last quiescence, or a sink mode writing one store or none, explains; explained windows are measured and the gate can bound their length",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X3",
        statement: "at quiescence every online client lane shows each worker document as the oracle predicts (semantic part) wherever its source holds it so; checked while the sink mode writes Khala, the source of every lane (the socket, and the runtime API the polling lanes read, modelled by the read model's hydration list): a Khala lane while the runtime is Convex-only is a runbook-order hazard, not a lane defect, and a wrong source is X1's; and after every step each online lane, and each desktop's probe provider, is the one the raw value of its surface's flag variable selects under §9.1 (web and mobile exactly \"true\"; the desktop's config parser also 1 and yes, except legacy's preload, B23)",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "X4",
        statement: "no client lane's view of a document ever moves backwards in seq or loses the document, nor does any batch during a step show it at a lower version than before (a shipped client whose flag is off is not in use, spec §9.1, and shows nobody anything)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "D2",
        statement: "deliveries to a lane continue from its stored watermark one watermark at a time, with no gap and no duplicate, across reconnects and sync-server restarts (a re-hydration starts afresh)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "D3",
        statement: "a subscribe with a cursor is answered stale_cursor iff the cursor is below the retention floor, the highest watermark retention has deleted on the topic, or above every watermark ever allocated; one without a cursor is never refused, and on a pruned topic leaves the lane's doc cache holding every read-model document",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "D7",
        statement: "a lane's watermark never moves back, and at quiescence every online Khala lane's doc cache holds each read-model row of its topic at the row's version with its payload",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "L1",
        statement: "no online lane of either kind (today's model and the shipped client) with its flag on goes without a live channel for more than one heartbeat period (15 s) of advanced time, and after quiescence every such lane holds each read-model row of its topic at the row's version within a bounded advance of time (channel timeout, socket idle close and reconnect backoff included); a lane live and caught up to the journal head that still lacks one never converges, and a live lane left below the head once the server has handled every wake-up is stalled until the topic is woken again (B11)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "R1",
        statement: "after a retention run its cutoff is now - horizon of its clock, no journal row inserted before that cutoff remains, every other one (the row inserted at the cutoff included) does, the deleted count is exact and oldest_retained is each topic's lowest remaining watermark (none when empty)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "E1",
        statement: "no part of the system under test (a client lane, the sync server, the runtime, the parity auditor) raises an error while a case plays; an error of the harness or its backends (a backend unreachable, a proxy error, the harness's own timeout) is no violation but makes the case unknown",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "C1",
        statement: "the checkpoint decision table of spec §3.3 holds for every (checkpoint, summary) combination, with its lag and drift outputs, and a projection the sink failed carries spec §3.5's reason class for its failure",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: Some("models/runtime/src/checkpoint.rs"),
        not_in_cases: Some(
            "cases judge every projection a step runs against the checkpoint it read, so only the combinations histories make; rows no history stores (an equal hash with another seq or version) are checkpoint.rs's unit tests",
        ),
    },
    Invariant {
        id: "C4",
        statement: "runtime writes never fail because of sink failures; a rebuild converges the checkpoint (C5: sequential bursts report lag_events ≤ 1)",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/projection.rs"),
        not_in_cases: Some(
            "a runtime write failing because of a sink ends the case as an error of the system under test rather than an observation; the projection tests plant it directly",
        ),
    },
    Invariant {
        id: "S1",
        statement: "the fanout calls sinks in order, stops at the first failure and names the failing sink; an empty sink list is the Noop sink",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/projection.rs"),
        not_in_cases: Some(
            "the order of sink calls and the failing sink's name are inside the fanout; cases see their effect on the stores (X8 at every step, X1 at quiescence)",
        ),
    },
    Invariant {
        id: "S2",
        statement: "the Khala sink writes doc_version = seq, the summary as payload, its 32-byte payload hash and exactly one journal row (pointer mode: no journal payload)",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: Some("harness/tests/it/projection.rs"),
        not_in_cases: Some(
            "cases check doc_version = seq on every Khala row (khala_version_not_seq) and the stored payload hash of every row whose payload holds no float (khala_payload_hash_wrong: jsonb keeps no float form); the journal row count per write is the projection tests', since an observation does not hold which write appended a journal row",
        ),
    },
    Invariant {
        id: "S3",
        statement: "inside one transaction a failing later sink leaves no Khala row, no journal row and no consumed watermark",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: Some("harness/tests/it/projection.rs"),
        not_in_cases: Some(
            "cases check that no Khala row is past its checkpoint (khala_ahead_of_checkpoint), and a consumed watermark without its row shows as W2 journal_gap; a failing later sink is planted by the projection tests",
        ),
    },
    Invariant {
        id: "S4",
        statement: "the Convex HTTP sink sends the specified body and headers and maps every response class to its typed error; a blank base URL fails without I/O",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/convex_stub.rs"),
        not_in_cases: Some(
            "the request body, headers and response mapping are on the wire between the sink and Convex, which an observation of the stores does not hold",
        ),
    },
    Invariant {
        id: "W1",
        statement: "watermark allocations per topic are 1, 2, 3, … without duplicates under concurrency, and a rolled-back allocation is not consumed",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/projection.rs"),
        not_in_cases: Some(
            "concurrent allocators and rolled-back allocations need parallel writers inside one transaction, which a case (one writer, step by step) does not play; W2 checks the journal they leave in every case",
        ),
    },
    Invariant {
        id: "A1",
        statement: "the auditor's reason-class truth table and cycle summary arithmetic are exact",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: Some("harness/tests/it/auditor.rs"),
        not_in_cases: Some(
            "cases check every cycle's summary against its comparisons (cycle_arithmetic_wrong) and X5 each comparison against the stores; the rows of the truth table no history reaches are the model tests'",
        ),
    },
    Invariant {
        id: "A2",
        statement: "with dual publish and every sink succeeding, every sampled entity audits ok",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/tests/it/auditor.rs"),
        not_in_cases: Some(
            "it is X5's special case (every store agrees, so any mismatch is auditor_false_alarm), which cases check at every auditor cycle",
        ),
    },
    Invariant {
        id: "A3",
        statement: "a disabled auditor returns a zeroed summary with status disabled and emits nothing",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
        checked_by: Some("harness/tests/it/auditor.rs"),
        not_in_cases: None,
    },
    Invariant {
        id: "H1",
        statement: "the five payload-hash vectors reproduce byte-exact canonical JSON and hash",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("models/runtime/src/hashing.rs"),
        not_in_cases: Some(
            "the five hash vectors are fixed inputs of the spec, not states a case reaches",
        ),
    },
    Invariant {
        id: "H2",
        statement: "canonical JSON is invariant under key permutation at every depth and keeps array order",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("models/runtime/src/hashing.rs"),
        not_in_cases: Some(
            "a property over every key permutation of one value; cases compare the hashes of the documents they produce (X2), not permutations of them",
        ),
    },
    Invariant {
        id: "G1",
        statement: "the gate blocks iff (block_on_critical and critical > 0) or warnings > the maximum",
        severity: Severity::Critical,
        phase: Phase::Models,
        checked_by: Some("harness/src/report/build.rs"),
        not_in_cases: Some("a property of the harness's own gate, not of the system under test"),
    },
    Invariant {
        id: "J1",
        statement: "every Khala read-model row has the doc_version and payload_hash of its document's newest journal row, and each topic's sequence is at or above its journal's highest watermark",
        severity: Severity::Critical,
        phase: Phase::Audit,
        checked_by: None,
        not_in_cases: None,
    },
    Invariant {
        id: "J2",
        statement: "every checkpoint, read-model row and Convex document an audit reads has the shape of spec §5 and §4.3",
        severity: Severity::Critical,
        phase: Phase::Audit,
        checked_by: None,
        not_in_cases: None,
    },
];

pub fn invariant(id: &str) -> Option<&'static Invariant> {
    CATALOGUE.iter().find(|invariant| invariant.id == id)
}
