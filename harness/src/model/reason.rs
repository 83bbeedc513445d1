//! Reason classes: why a check says an invariant is broken. One enum per
//! family of invariants, each class in one table row with the invariant it
//! breaks, the severity it counts with by default, its name in reports and
//! scenario files, and what it means in one sentence. A check records a
//! class, never a string, so searching a class's variant reaches every
//! place that produces, explains or counts it, and a new class is a new row
//! the compiler then walks you through.

use crate::model::catalogue::Severity;

/// One row of a family's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassRow {
    /// The catalogue ID of the invariant the class breaks.
    pub invariant: &'static str,
    pub severity: Severity,
    /// The name in reports, stored cases and `[gate.reason_severity]`.
    pub name: &'static str,
    /// What the class means, one sentence without a final period.
    pub meaning: &'static str,
}

/// Declares one family: its enum, its table and its place in `ReasonClass`.
macro_rules! reason_family {
    (
        $(#[$doc:meta])*
        $family:ident as ReasonClass::$wrapper:ident {
            $( $variant:ident => $invariant:literal, $severity:ident, $name:literal, $meaning:literal; )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $family {
            $( $variant, )+
        }

        impl $family {
            pub const ALL: &'static [$family] = &[ $( $family::$variant, )+ ];

            pub const fn row(self) -> ClassRow {
                match self {
                    $( $family::$variant => ClassRow {
                        invariant: $invariant,
                        severity: Severity::$severity,
                        name: $name,
                        meaning: $meaning,
                    }, )+
                }
            }
        }

        impl From<$family> for ReasonClass {
            fn from(class: $family) -> Self {
                ReasonClass::$wrapper(class)
            }
        }
    };
}

reason_family! {
    /// P1–P4: the shape of one stored document; P5: what a reprojection
    /// answers.
    ProjectionClass as ReasonClass::Projection {
        DocumentIdMismatch => "P1", Critical, "document_id_mismatch",
            "a store holds a document under a key other than its document_id, or one the runtime has no entity for";
        SequenceFieldsInconsistent => "P2", Critical, "sequence_fields_inconsistent",
            "the document's runtime_source.seq, latest_seq and event_count disagree, or run ahead of the runtime";
        KeySetWrong => "P3", Critical, "key_set_wrong",
            "the document lacks keys of its projection or carries others";
        RedeliveryNotIdempotent => "P4", Warning, "redelivery_not_idempotent",
            "redelivering an entity whose stores and checkpoint were current changed something";
        RebuildReportWrong => "P5", Warning, "rebuild_report_wrong",
            "a reprojection's result is not spec §10's for the entity it rebuilt";
    }
}

reason_family! {
    /// S2 and S3: what the Khala sink writes, seen in the stores.
    SinkClass as ReasonClass::Sink {
        KhalaVersionNotSeq => "S2", Critical, "khala_version_not_seq",
            "a Khala row's doc_version is not the seq of the summary it holds";
        KhalaPayloadHashWrong => "S2", Critical, "khala_payload_hash_wrong",
            "a Khala row's payload_hash is not the SHA-256 of its payload's canonical JSON (spec §6.1), so a client comparing hashes takes one document for another";
        KhalaAheadOfCheckpoint => "S3", Critical, "khala_ahead_of_checkpoint",
            "a Khala row is past its checkpoint, written by a projection whose transaction did not commit the checkpoint";
    }
}

reason_family! {
    /// V1: summaries against what Convex can hold.
    ValueClass as ReasonClass::Value {
        ConvexUnholdableStored => "V1", Critical, "convex_unholdable_stored",
            "a store holds a summary Convex cannot hold as it is (a field name, a limit, or an integer beyond 2^53), so Khala and Convex cannot agree on it and a rollback to Convex cannot take it";
        ConvexRefusalMissing => "V1", Critical, "convex_refusal_missing",
            "the projection of a summary Convex cannot hold was not refused before the stores were written";
        ConvexRefusalUnexpected => "V1", Critical, "convex_refusal_unexpected",
            "the projection refused a summary Convex can hold, so users never see it";
    }
}

reason_family! {
    /// X1 and X7: what each store holds against the oracle and the other.
    StoreClass as ReasonClass::Store {
        KhalaMissing => "X1", Critical, "khala_missing",
            "Khala has no document for an entity the runtime has events for";
        ConvexMissing => "X1", Critical, "convex_missing",
            "Convex has no document for an entity the runtime has events for";
        KhalaStale => "X1", Critical, "khala_stale",
            "Khala shows an older state of the entity than the runtime's";
        ConvexStale => "X1", Critical, "convex_stale",
            "Convex shows an older state of the entity than the runtime's";
        KhalaWrong => "X1", Critical, "khala_wrong",
            "Khala is at the runtime's seq but shows other values than the runtime's truth";
        ConvexWrong => "X1", Critical, "convex_wrong",
            "Convex is at the runtime's seq but shows other values than the runtime's truth";
        ConvexAheadOfKhala => "X1", Critical, "convex_ahead_of_khala",
            "Convex got a write that Khala never got (a partial dual publish)";
        StoresDiffer => "X1", Critical, "stores_differ",
            "Khala and Convex show different documents for the same entity";
        ConvexIntPrecisionLost => "X1", Critical, "convex_int_precision_lost",
            "Convex holds an integer above 2^53 as its nearest Float64, so it shows another number than the runtime sent";
        KhalaRegressed => "X7", Critical, "khala_regressed",
            "Khala's document moved back to an older seq";
        ConvexRegressed => "X7", Critical, "convex_regressed",
            "Convex's document moved back to an older seq";
    }
}

reason_family! {
    /// C1, C2, C3 and X2: checkpoints against the runtime and the stores.
    CheckpointClass as ReasonClass::Checkpoint {
        DecisionWrong => "C1", Critical, "decision_wrong",
            "a projection wrote where spec §3.3 skips, or skipped where it writes, for the checkpoint it read";
        DecisionTelemetryWrong => "C1", Warning, "decision_telemetry_wrong",
            "a projection answered another reason, lag_events or drift signal than spec §3.3 gives for the checkpoint it read, or a failed one another reason class than spec §3.5 gives its failure, so lag dashboards, drift and failure alerts mislead";
        CheckpointAheadOfKhala => "C2", Critical, "checkpoint_ahead_of_khala",
            "the checkpoint moved to a state Khala does not hold";
        CheckpointAheadOfConvex => "C2", Critical, "checkpoint_ahead_of_convex",
            "the checkpoint moved to a state Convex does not hold";
        CheckpointRegressed => "C3", Critical, "checkpoint_regressed",
            "the checkpoint's last_runtime_seq went down without a reprojection";
        CheckpointMissing => "X2", Critical, "checkpoint_missing",
            "no checkpoint records what was projected, so nothing will ever re-check it";
        CheckpointLag => "X2", Critical, "checkpoint_lag",
            "the checkpoint is behind the runtime and nothing will move it";
        KhalaHashMismatch => "X2", Critical, "khala_hash_mismatch",
            "the checkpoint's hash does not match the Khala document, so the checkpoint vouches for something else";
        ConvexHashMismatch => "X2", Critical, "convex_hash_mismatch",
            "the checkpoint's hash does not match the Convex document, so the checkpoint vouches for something else";
        RepairLeftPending => "X2", Warning, "repair_left_pending",
            "the catch-up repaired a failed projection but left it recorded, so every later catch-up projects it again and the backlog never drains";
    }
}

reason_family! {
    /// The parity auditor's own comparison classes (spec §8) that no check
    /// records under these names: a checkpoint against a store, as the
    /// auditor sees it.
    AuditorReportClass as ReasonClass::AuditorReport {
        SummaryHashMismatch => "X2", Critical, "summary_hash_mismatch",
            "the auditor found the Khala row at the checkpoint's version but with another hash";
        HashAndLagDrift => "X2", Critical, "hash_and_lag_drift",
            "the auditor found the Khala row at another version than the checkpoint's, with another hash";
        LagDrift => "X2", Critical, "lag_drift",
            "the auditor found the Khala row's version away from the checkpoint's";
        UnsupportedProjection => "X2", Critical, "unsupported_projection",
            "the auditor met a checkpoint of a projection it cannot compare";
        ConvexLagDrift => "X2", Critical, "convex_lag_drift",
            "the auditor found the Convex document's seq away from the checkpoint's";
    }
}

reason_family! {
    /// W2, W3 and R1: the sync journal and its retention.
    JournalClass as ReasonClass::Journal {
        JournalGap => "W2", Critical, "journal_gap",
            "a topic's journal watermarks are not one contiguous range";
        JournalVersionRegressed => "W3", Critical, "journal_version_regressed",
            "a document's doc_version went down in watermark order";
        OldRowRetained => "R1", Critical, "old_row_retained",
            "retention kept a journal row inserted before its cutoff";
        NewRowDeleted => "R1", Critical, "new_row_deleted",
            "retention deleted a journal row inserted at or after its cutoff";
        DeletedCountWrong => "R1", Critical, "deleted_count_wrong",
            "the retention job reported another number of deleted rows than it deleted";
        OldestRetainedWrong => "R1", Critical, "oldest_retained_wrong",
            "the retention job reported another oldest retained watermark than the journal holds";
        RetentionCutoffWrong => "R1", Critical, "retention_cutoff_wrong",
            "the retention job's cutoff is not its clock's now less the horizon";
    }
}

reason_family! {
    /// X5, X6, A1 and A3: the parity auditor against the ground truth and
    /// spec §8; X9: the live audit (`khala-parity audit`) of a case's stores.
    AuditClass as ReasonClass::Audit {
        AuditorMissedDrift => "X5", Critical, "auditor_missed_drift",
            "the auditor reported agreement where the stores disagree";
        AuditorFalseAlarm => "X5", Critical, "auditor_false_alarm",
            "the auditor reported a mismatch where every store agrees";
        LagDriftAfterCatchUp => "X6", Critical, "lag_drift_after_catch_up",
            "after the catch-up procedure the auditor still reports lag drift";
        CycleArithmeticWrong => "A1", Critical, "cycle_arithmetic_wrong",
            "an auditor cycle's summary is not spec §8's arithmetic over its own comparisons";
        DisabledCycleNotEmpty => "A3", Critical, "disabled_cycle_not_empty",
            "a disabled auditor cycle reported something other than a zeroed summary, or compared or emitted something";
        LiveAuditFalseAlarm => "X9", Critical, "live_audit_false_alarm",
            "the live audit reported a violation in the stores of a case that ended in parity";
        LiveAuditFailed => "X9", Critical, "live_audit_failed",
            "the live audit could not read the stores of a case that ended in parity";
    }
}

reason_family! {
    /// X3 and X4: what a client lane shows.
    LaneClass as ReasonClass::Lane {
        KhalaLaneMissing => "X3", Critical, "khala_lane_missing",
            "a lane reading Khala does not show a document its source holds";
        KhalaLaneStale => "X3", Critical, "khala_lane_stale",
            "a lane reading Khala shows an older state of a document than its source holds";
        KhalaLaneWrong => "X3", Critical, "khala_lane_wrong",
            "a lane reading Khala shows other values than its source holds";
        PollingLaneMissing => "X3", Critical, "polling_lane_missing",
            "a polling lane does not show a document its source holds";
        PollingLaneStale => "X3", Critical, "polling_lane_stale",
            "a polling lane shows an older state of a document than its source holds";
        PollingLaneWrong => "X3", Critical, "polling_lane_wrong",
            "a polling lane shows other values than its source holds";
        ViewRegressed => "X4", Critical, "view_regressed",
            "a lane's view of a document moved back to an older seq";
        ViewLostDocument => "X4", Critical, "view_lost_document",
            "a lane's view lost a document it showed";
        LaneFlagMisread => "X3", Critical, "lane_flag_misread",
            "a surface's client runs another lane (or desktop provider) than the raw value of its flag selects under spec §9.1";
    }
}

reason_family! {
    /// D2, D3, D7 and L1: what the sync server delivers to a lane.
    DeliveryClass as ReasonClass::Delivery {
        DeliveryGap => "D2", Critical, "delivery_gap",
            "a lane received a watermark past the next one, skipping journal rows";
        DeliveryDuplicate => "D2", Critical, "delivery_duplicate",
            "a lane received a watermark it had already reached";
        BelowFloorAccepted => "D3", Critical, "below_floor_accepted",
            "the server resumed a cursor below the retention floor, so the lane silently misses pruned rows";
        NoCursorAfterPruneAccepted => "D3", Critical, "no_cursor_after_prune_accepted",
            "the server answered a subscribe without a cursor on a pruned topic with only the retained journal, so the lane lacks documents";
        NoCursorRefused => "D3", Critical, "no_cursor_refused",
            "the server refused a subscribe without a cursor, which strands the shipped client for good";
        AheadOfHeadAccepted => "D3", Critical, "ahead_of_head_accepted",
            "the server resumed a cursor above every watermark it ever allocated";
        RefusedInRange => "D3", Critical, "refused_in_range",
            "the server refused a cursor it could resume";
        WatermarkRegressed => "D7", Critical, "watermark_regressed",
            "a lane's stored watermark moved back";
        CacheMissing => "D7", Critical, "cache_missing",
            "a settled lane's doc cache lacks a read-model row";
        CacheStale => "D7", Critical, "cache_stale",
            "a settled lane's doc cache holds an older version of a read-model row";
        CacheDiverged => "D7", Critical, "cache_diverged",
            "a settled lane's doc cache holds another version or payload than the read model";
        LivenessGap => "L1", Critical, "liveness_gap",
            "a client lane, online with its flag on, went longer than one heartbeat period of advanced time without a live channel: updates written meanwhile reached it late (the original's idle client waits about a minute for its socket to close)";
        NotLiveWithinBound => "L1", Critical, "not_live_within_bound",
            "a client lane still had no live channel after time passed beyond every timeout and reconnect delay, so it receives nothing";
        StalledBelowHead => "L1", Critical, "stalled_below_head",
            "a client lane has a live channel but sits below the journal head after the sync server handled every wake-up: the server re-read the journal before the write committed (a wake-up inside the transaction), so nothing reaches the lane until the topic is woken again";
        NeverConverges => "L1", Critical, "never_converges",
            "a client lane is live and caught up to the journal head yet lacks a document (or holds an older version) of the read model: nothing the server will send brings it, so it never converges until the document changes again";
    }
}

reason_family! {
    /// X8: Khala and Convex after every step.
    WindowClass as ReasonClass::Window {
        DivergenceUnexplained => "X8", Critical, "divergence_unexplained",
            "Khala and Convex came to hold a document differently in a step with no Convex fault since the last quiescence while the sink mode wrote both, so nothing but a defect explains it (for example a partial dual publish)";
    }
}

reason_family! {
    /// What only `khala-parity audit` reads: a live deployment's journal
    /// against its read models, and rows or documents that do not parse.
    DeploymentClass as ReasonClass::Deployment {
        ReadModelNotJournaled => "J1", Critical, "read_model_not_journaled",
            "a Khala read-model row's doc_version or payload_hash is not that of its document's newest journal row, so a client replaying the journal ends with another document than one reading the read model";
        TopicSequenceBehind => "J1", Critical, "topic_sequence_behind",
            "a topic's sequence row is below the highest watermark its journal holds, so the next allocation reuses a watermark";
        RowUnparseable => "J2", Critical, "row_unparseable",
            "a PostgreSQL row the audit read does not have the shape spec §5 gives it (a summary_hash that is not 64 hex characters, a negative seq, a payload that is not an object, a document_id that is not the projection's prefix plus the entity id)";
        DocumentUnparseable => "J2", Critical, "document_unparseable",
            "a Convex query answered a document that is not `{document_id, summary}` with an object summary";
    }
}

reason_family! {
    /// E1: the part of the system under test that raised an error
    /// (`play::error::Component`).
    SystemClass as ReasonClass::System {
        ClientLaneFailed => "E1", Critical, "client_lane_failed",
            "a client lane raised an error (it could not apply a frame, or the server refused or closed on it) where it should have gone on showing the data, so its user sees nothing after it";
        SyncServerFailed => "E1", Critical, "sync_server_failed",
            "the sync server raised an error (its retention job failed, or it crashed) where it should have gone on serving";
        RuntimeFailed => "E1", Critical, "runtime_failed",
            "the runtime raised an error on a write the database accepts, so the event or the configuration change it carried is lost";
        AuditorFailed => "E1", Critical, "auditor_failed",
            "the parity auditor raised an error and reported nothing, so drift goes unseen";
    }
}

reason_family! {
    /// Classes the harness plants in its own tests.
    HarnessClass as ReasonClass::Harness {
        PlantedFlaky => "X1", Critical, "planted_flaky",
            "a check planted by the engine's tests failed on purpose";
    }
}

/// Why a check says an invariant is broken: a class of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReasonClass {
    Projection(ProjectionClass),
    Sink(SinkClass),
    Value(ValueClass),
    Store(StoreClass),
    Checkpoint(CheckpointClass),
    AuditorReport(AuditorReportClass),
    Journal(JournalClass),
    Audit(AuditClass),
    Lane(LaneClass),
    Delivery(DeliveryClass),
    Window(WindowClass),
    Deployment(DeploymentClass),
    System(SystemClass),
    Harness(HarnessClass),
}

impl ReasonClass {
    pub const fn row(self) -> ClassRow {
        match self {
            ReasonClass::Projection(class) => class.row(),
            ReasonClass::Sink(class) => class.row(),
            ReasonClass::Value(class) => class.row(),
            ReasonClass::Store(class) => class.row(),
            ReasonClass::Checkpoint(class) => class.row(),
            ReasonClass::AuditorReport(class) => class.row(),
            ReasonClass::Journal(class) => class.row(),
            ReasonClass::Audit(class) => class.row(),
            ReasonClass::Lane(class) => class.row(),
            ReasonClass::Delivery(class) => class.row(),
            ReasonClass::Window(class) => class.row(),
            ReasonClass::Deployment(class) => class.row(),
            ReasonClass::System(class) => class.row(),
            ReasonClass::Harness(class) => class.row(),
        }
    }

    pub const fn name(self) -> &'static str {
        self.row().name
    }

    pub const fn invariant(self) -> &'static str {
        self.row().invariant
    }

    pub const fn severity(self) -> Severity {
        self.row().severity
    }

    pub const fn meaning(self) -> &'static str {
        self.row().meaning
    }

    /// Every class, family by family in the order above.
    pub fn all() -> impl Iterator<Item = ReasonClass> {
        let families: [Vec<ReasonClass>; 14] = [
            family(ProjectionClass::ALL),
            family(SinkClass::ALL),
            family(ValueClass::ALL),
            family(StoreClass::ALL),
            family(CheckpointClass::ALL),
            family(AuditorReportClass::ALL),
            family(JournalClass::ALL),
            family(AuditClass::ALL),
            family(LaneClass::ALL),
            family(DeliveryClass::ALL),
            family(WindowClass::ALL),
            family(DeploymentClass::ALL),
            family(SystemClass::ALL),
            family(HarnessClass::ALL),
        ];
        families.into_iter().flatten()
    }

    /// The class named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<ReasonClass> {
        ReasonClass::all().find(|class| class.name() == name)
    }
}

fn family<T: Copy + Into<ReasonClass>>(classes: &[T]) -> Vec<ReasonClass> {
    classes.iter().map(|class| (*class).into()).collect()
}

impl std::fmt::Display for ReasonClass {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

impl serde::Serialize for ReasonClass {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for ReasonClass {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ReasonClass::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown reason class {name:?}")))
    }
}

/// The store a per-store class is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Khala,
    Convex,
}

impl Store {
    pub const fn as_str(self) -> &'static str {
        match self {
            Store::Khala => "khala",
            Store::Convex => "convex",
        }
    }

    /// Both stores, Khala first.
    pub const BOTH: [Store; 2] = [Store::Khala, Store::Convex];

    /// X1: no document where the oracle expects one.
    pub const fn missing(self) -> StoreClass {
        match self {
            Store::Khala => StoreClass::KhalaMissing,
            Store::Convex => StoreClass::ConvexMissing,
        }
    }

    /// X1: an older state than the runtime's.
    pub const fn stale(self) -> StoreClass {
        match self {
            Store::Khala => StoreClass::KhalaStale,
            Store::Convex => StoreClass::ConvexStale,
        }
    }

    /// X1: the runtime's seq with other values.
    pub const fn wrong(self) -> StoreClass {
        match self {
            Store::Khala => StoreClass::KhalaWrong,
            Store::Convex => StoreClass::ConvexWrong,
        }
    }

    /// X7: the document moved back.
    pub const fn regressed(self) -> StoreClass {
        match self {
            Store::Khala => StoreClass::KhalaRegressed,
            Store::Convex => StoreClass::ConvexRegressed,
        }
    }

    /// C2: the checkpoint moved past what the store holds.
    pub const fn checkpoint_ahead(self) -> CheckpointClass {
        match self {
            Store::Khala => CheckpointClass::CheckpointAheadOfKhala,
            Store::Convex => CheckpointClass::CheckpointAheadOfConvex,
        }
    }

    /// X2: the checkpoint's hash is not the store's document's.
    pub const fn hash_mismatch(self) -> CheckpointClass {
        match self {
            Store::Khala => CheckpointClass::KhalaHashMismatch,
            Store::Convex => CheckpointClass::ConvexHashMismatch,
        }
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalogue::{CATALOGUE, Phase, invariant};
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_read_back() {
        let mut names = BTreeSet::new();
        for class in ReasonClass::all() {
            assert!(
                names.insert(class.name()),
                "{} is named twice",
                class.name()
            );
            assert_eq!(ReasonClass::from_name(class.name()), Some(class));
            let json = serde_json::to_value(class).unwrap();
            assert_eq!(json, serde_json::json!(class.name()));
            assert_eq!(serde_json::from_value::<ReasonClass>(json).unwrap(), class);
        }
        assert!(names.len() >= 50, "only {} classes", names.len());
        let error = serde_json::from_value::<ReasonClass>(serde_json::json!("khala_mising"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown reason class \"khala_mising\""),
            "{error}"
        );
    }

    /// Every class breaks a catalogued invariant, and each invariant
    /// checked in cases counts with the most severe of its classes.
    #[test]
    fn classes_belong_to_the_catalogue_and_agree_on_severity() {
        for class in ReasonClass::all() {
            assert!(
                invariant(class.invariant()).is_some(),
                "{class} names {} which is not catalogued",
                class.invariant()
            );
            assert!(!class.meaning().ends_with('.'), "{class}");
        }
        for entry in CATALOGUE
            .iter()
            .filter(|entry| entry.phase != Phase::Models)
        {
            let most_severe = ReasonClass::all()
                .filter(|class| class.invariant() == entry.id)
                .map(ReasonClass::severity)
                .max();
            assert_eq!(most_severe, Some(entry.severity), "{}", entry.id);
        }
    }

    /// An invariant left to the model tests says why no case observes it;
    /// every other one has classes a check in cases records.
    #[test]
    fn only_what_cases_cannot_observe_is_left_to_the_model_tests() {
        for entry in CATALOGUE {
            let has_class = ReasonClass::all().any(|class| class.invariant() == entry.id);
            match entry.phase {
                Phase::Models => {
                    assert!(entry.not_in_cases.is_some(), "{} says not why", entry.id);
                    assert!(entry.checked_by.is_some(), "{} names no test", entry.id);
                    assert!(!has_class, "{} has classes but is left to models", entry.id);
                }
                Phase::EveryStep | Phase::Quiescence | Phase::Audit => {
                    assert!(has_class, "{}", entry.id)
                }
            }
        }
    }

    #[test]
    fn store_helpers_pick_the_store_named_class() {
        for store in Store::BOTH {
            for class in [
                ReasonClass::from(store.missing()),
                store.stale().into(),
                store.wrong().into(),
                store.regressed().into(),
                store.checkpoint_ahead().into(),
                store.hash_mismatch().into(),
            ] {
                assert!(class.name().contains(store.as_str()), "{class}");
            }
        }
    }
}
