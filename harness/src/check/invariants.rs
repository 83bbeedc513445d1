//! The checks of the invariant catalogue (`model::catalogue`). Checks return every divergence they see
//! rather than stopping at the first; a divergence is a result, not an error.

use crate::model::case::{EntityRef, Step};
use crate::model::observation::{JournalEntry, Observation, document_seq};
use crate::oracle::{Oracle, convex_refusal, semantic_part};
use khala_runtime::sink::convex_value::int_precision_lost;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

use crate::model::reason::{
    AuditClass, CheckpointClass, JournalClass, ProjectionClass, ReasonClass, SinkClass, Store,
    StoreClass, ValueClass,
};
use crate::model::violation::Violation;

pub(super) struct Recorder<'a> {
    step_index: usize,
    observation: &'a Observation,
    pub(super) found: Vec<Violation>,
}

impl<'a> Recorder<'a> {
    pub(super) fn new(step_index: usize, observation: &'a Observation) -> Self {
        Recorder {
            step_index,
            observation,
            found: Vec::new(),
        }
    }

    /// Records a violation of the invariant `class` breaks, counted with
    /// the class's severity.
    pub(super) fn record(
        &mut self,
        class: impl Into<ReasonClass>,
        document_id: Option<&str>,
        detail: String,
        expected: Option<Value>,
    ) {
        let reason_class = class.into();
        let khala = document_id
            .and_then(|key| self.observation.khala.get(key))
            .map(|(_, payload)| payload.clone());
        let convex = document_id
            .and_then(|key| self.observation.convex.get(key))
            .cloned();
        let checkpoint = document_id
            .and_then(|key| self.observation.checkpoints.get(key))
            .and_then(|checkpoint| serde_json::to_value(checkpoint).ok());
        self.found.push(Violation {
            invariant: reason_class.invariant(),
            severity: reason_class.severity(),
            reason_class,
            document_id: document_id.map(str::to_owned),
            step_index: self.step_index,
            detail,
            expected,
            khala,
            convex,
            checkpoint,
        });
    }
}

/// Safety checks after step `step_index`. `reprojected` says whether the
/// step was a reprojection (the one thing allowed to move a checkpoint).
pub fn check_step(
    oracle: &Oracle,
    previous: &Observation,
    current: &Observation,
    step_index: usize,
    reprojected: bool,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    let latest_seq_of: BTreeMap<String, i64> = oracle
        .entities()
        .into_iter()
        .map(|entity| (oracle.document_id(entity), oracle.latest_seq(entity)))
        .collect();
    let entity_of: BTreeMap<String, EntityRef> = oracle
        .entities()
        .into_iter()
        .map(|entity| (oracle.document_id(entity), entity))
        .collect();

    let stores: [(Store, Vec<(&String, &Value)>); 2] = [
        (
            Store::Khala,
            current
                .khala
                .iter()
                .map(|(key, (_, payload))| (key, payload))
                .collect(),
        ),
        (Store::Convex, current.convex.iter().collect()),
    ];
    for (store, documents) in &stores {
        for (key, document) in documents {
            let stated_id = document.get("document_id").and_then(Value::as_str);
            let known = latest_seq_of.contains_key(key.as_str());
            if stated_id != Some(key.as_str()) || !known {
                let detail = format!(
                    "{store} holds key {key:?} with document_id {stated_id:?}; known to the runtime: {known}"
                );
                recorder.record(ProjectionClass::DocumentIdMismatch, Some(key), detail, None);
            }
            let seq = document_seq(document);
            let latest = document.get("latest_seq").and_then(Value::as_i64);
            let count = document.get("event_count").and_then(Value::as_i64);
            let runtime = latest_seq_of.get(key.as_str()).copied().unwrap_or(0);
            // Equal unless event rows were removed (spec §2.3): then the
            // count may fall short of the seq by the rows removed below it.
            let count_fits = match (latest, count, entity_of.get(key.as_str())) {
                (Some(latest), Some(count), Some(entity)) => {
                    (latest - oracle.removed_below(*entity, latest)..=latest).contains(&count)
                }
                _ => latest == count,
            };
            if seq.is_none() || seq != latest || !count_fits || seq.is_some_and(|seq| seq > runtime)
            {
                let detail = format!(
                    "{store}: runtime_source.seq {seq:?}, latest_seq {latest:?}, event_count {count:?}, runtime seq {runtime}"
                );
                recorder.record(
                    ProjectionClass::SequenceFieldsInconsistent,
                    Some(key),
                    detail,
                    None,
                );
            }
            let before = match store {
                Store::Khala => previous
                    .khala
                    .get(key.as_str())
                    .and_then(|(_, payload)| document_seq(payload)),
                Store::Convex => previous.convex.get(key.as_str()).and_then(document_seq),
            };
            if let (Some(before), Some(now)) = (before, seq)
                && now < before
            {
                let detail = format!("{store} went from seq {before} to {now}");
                recorder.record(store.regressed(), Some(key), detail, None);
            }
        }
    }

    for (store, documents) in &stores {
        for (key, document) in documents {
            if let Some(extra_or_missing) = key_set_difference(document) {
                let detail = format!("{store}: {extra_or_missing}");
                recorder.record(ProjectionClass::KeySetWrong, Some(key), detail, None);
            }
        }
    }

    let mode = oracle.sink_mode();
    for (key, checkpoint) in &current.checkpoints {
        if previous.checkpoints.get(key) == Some(checkpoint) {
            continue;
        }
        for (store, written, held) in [
            (
                Store::Khala,
                mode.writes_khala(),
                current.khala.get(key).map(|(_, payload)| payload),
            ),
            (Store::Convex, mode.writes_convex(), current.convex.get(key)),
        ] {
            if written && held.map(parity_hash).as_ref() != Some(&checkpoint.summary_hash) {
                let detail = format!(
                    "the checkpoint moved to seq {} but {store} does not hold its document",
                    checkpoint.last_runtime_seq
                );
                recorder.record(store.checkpoint_ahead(), Some(key), detail, None);
            }
        }
    }

    for (key, checkpoint) in &current.checkpoints {
        if let Some(before) = previous.checkpoints.get(key)
            && checkpoint.last_runtime_seq < before.last_runtime_seq
            && !reprojected
        {
            let detail = format!(
                "checkpoint went from {} to {}",
                before.last_runtime_seq, checkpoint.last_runtime_seq
            );
            recorder.record(
                CheckpointClass::CheckpointRegressed,
                Some(key),
                detail,
                None,
            );
        }
    }

    // S2 and S3: the Khala sink writes doc_version = seq, inside the
    // projector's transaction, which writes the checkpoint too; a Khala row
    // past its checkpoint is a write that escaped a failed transaction.
    for (key, (version, payload)) in &current.khala {
        let seq = document_seq(payload);
        if seq != Some(*version) {
            let detail =
                format!("khala row at doc_version {version} holds runtime_source.seq {seq:?}");
            recorder.record(SinkClass::KhalaVersionNotSeq, Some(key), detail, None);
        }
        // The hash is over the summary as the runtime built it; jsonb keeps
        // that exactly unless it holds a float (numeric drops the float
        // form: 1.0e15 reads back as the integer 1000000000000000).
        if let Some(stored) = current.khala_hashes.get(key)
            && !holds_float(payload)
        {
            let expected = payload_hash(payload);
            if stored.as_deref() != Some(expected.as_str()) {
                let detail = format!(
                    "khala row at doc_version {version} has payload_hash {}",
                    stored.as_deref().map_or("NULL", short_hash)
                );
                recorder.record(
                    SinkClass::KhalaPayloadHashWrong,
                    Some(key),
                    detail,
                    Some(Value::String(expected)),
                );
            }
        }
        if let Some(checkpoint) = current.checkpoints.get(key)
            && *version > checkpoint.last_runtime_seq
        {
            let detail = format!(
                "khala row at doc_version {version}, its checkpoint at {}",
                checkpoint.last_runtime_seq
            );
            recorder.record(SinkClass::KhalaAheadOfCheckpoint, Some(key), detail, None);
        }
    }

    for (topic, entries) in &current.journal {
        // Retention prunes from the bottom: then the range starts at the
        // oldest retained row.
        let first = match entries.first() {
            Some(entry) if oracle.retention_ran() => entry.watermark,
            _ => 1,
        };
        for (index, entry) in entries.iter().enumerate() {
            if entry.watermark != first + index as i64 {
                let detail = format!(
                    "topic {topic}: watermark {} at position {} of a range from {first}",
                    entry.watermark,
                    index + 1
                );
                recorder.record(JournalClass::JournalGap, Some(&entry.doc_key), detail, None);
                break;
            }
        }
        let mut last_version: BTreeMap<&str, i64> = BTreeMap::new();
        for entry in entries {
            let before = last_version.insert(&entry.doc_key, entry.doc_version);
            if before.is_some_and(|before| entry.doc_version < before) {
                let detail = format!(
                    "topic {topic}: doc_version {} at watermark {} after {}",
                    entry.doc_version,
                    entry.watermark,
                    before.unwrap_or_default()
                );
                recorder.record(
                    JournalClass::JournalVersionRegressed,
                    Some(&entry.doc_key),
                    detail,
                    None,
                );
            }
        }
    }
    recorder.found
}

/// V1 after step `step_index`: no store holds a document Convex cannot
/// hold; a step that projects a worker whose document Convex cannot hold
/// shows the guard's refusal (`refused`, from the projection's typed
/// error); and no refusal is shown for a document Convex can hold.
pub fn check_refusals(
    oracle: &Oracle,
    step: &Step,
    refused: &[String],
    current: &Observation,
    step_index: usize,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    let khala = current
        .khala
        .iter()
        .map(|(key, (_, payload))| ("khala", key, payload));
    let convex = current
        .convex
        .iter()
        .map(|(key, document)| ("convex", key, document));
    for (store, key, document) in khala.chain(convex) {
        if let Some(reason) = convex_refusal(document) {
            let detail = format!("{store} holds a document Convex cannot hold ({reason})");
            recorder.record(ValueClass::ConvexUnholdableStored, Some(key), detail, None);
        }
    }
    let projected = match step {
        Step::ReportWorkerMetadata { worker, .. }
        | Step::AppendWorkerEvent { worker, .. }
        | Step::StopWorker { worker, .. } => Some(EntityRef::Worker(*worker)),
        _ => None,
    };
    if let Some(entity) = projected
        && let Some(reason) = oracle.convex_refusal(entity)
    {
        let key = oracle.document_id(entity);
        if !refused.contains(&key) {
            let detail = format!(
                "Convex cannot hold the summary ({reason}) but its projection was not refused"
            );
            let expected = oracle.expected_document(entity);
            recorder.record(
                ValueClass::ConvexRefusalMissing,
                Some(&key),
                detail,
                expected,
            );
        }
    }
    for key in refused {
        let entity = oracle
            .entities()
            .into_iter()
            .find(|entity| oracle.document_id(*entity) == *key);
        if entity.is_none_or(|entity| oracle.convex_refusal(entity).is_none()) {
            let detail =
                "the projection was refused although Convex can hold the summary".to_owned();
            recorder.record(ValueClass::ConvexRefusalUnexpected, Some(key), detail, None);
        }
    }
    recorder.found
}

/// The top-level keys of each projection (spec §2.4, §2.5).
const RUN_SUMMARY_KEYS: [&str; 18] = [
    "document_id",
    "kind",
    "run_id",
    "thread_id",
    "status",
    "owner_user_id",
    "owner_guest_scope",
    "latest_seq",
    "event_count",
    "latest_event_type",
    "latest_event_at",
    "terminal_reason_class",
    "terminal_reason",
    "terminal_at",
    "updated_at",
    "runtime_source",
    "projection_version",
    "projected_at",
];
const WORKER_SUMMARY_KEYS: [&str; 21] = [
    "document_id",
    "kind",
    "worker_id",
    "status",
    "owner_user_id",
    "owner_guest_scope",
    "workspace_ref",
    "codex_home_ref",
    "adapter",
    "metadata",
    "latest_seq",
    "event_count",
    "latest_event_type",
    "latest_event_at",
    "started_at",
    "stopped_at",
    "last_heartbeat_at",
    "updated_at",
    "runtime_source",
    "projection_version",
    "projected_at",
];

/// P3: what is extra or missing in a document's key set, if anything.
fn key_set_difference(document: &Value) -> Option<String> {
    let Value::Object(map) = document else {
        return Some("not an object".to_owned());
    };
    let expected: &[&str] = match map.get("kind").and_then(Value::as_str) {
        Some("run_summary") => &RUN_SUMMARY_KEYS,
        Some("codex_worker_summary") => &WORKER_SUMMARY_KEYS,
        other => return Some(format!("unknown kind {other:?}")),
    };
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|key| !map.contains_key(*key))
        .collect();
    let extra: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|key| !expected.contains(key))
        .collect();
    (!missing.is_empty() || !extra.is_empty())
        .then(|| format!("missing {missing:?}, extra {extra:?}"))
}

/// P4: after redelivering `entity`, nothing may change if its checkpoint
/// and every store the sink mode writes were already current.
pub fn check_redelivery(
    oracle: &Oracle,
    entity: crate::model::case::EntityRef,
    previous: &Observation,
    current: &Observation,
    step_index: usize,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    let key = oracle.document_id(entity);
    let Some(expected) = oracle.expected_document(entity) else {
        return Vec::new();
    };
    let mode = oracle.sink_mode();
    let current_in = |observation: &Observation, store: &str| {
        let held = match store {
            "khala" => observation.khala.get(&key).map(|(_, payload)| payload),
            _ => observation.convex.get(&key),
        };
        held.is_some_and(|document| differing_keys(&expected, &semantic_part(document)).is_empty())
    };
    let was_current = previous.checkpoints.get(&key).is_some_and(|checkpoint| {
        checkpoint.last_runtime_seq == oracle.latest_seq(entity)
            && checkpoint.projection_version == oracle.projection_version()
    }) && (!mode.writes_khala() || current_in(previous, "khala"))
        && (!mode.writes_convex() || current_in(previous, "convex"));
    if !was_current {
        return Vec::new();
    }
    let changed: Vec<&str> = [
        ("khala", previous.khala.get(&key) != current.khala.get(&key)),
        (
            "convex",
            previous.convex.get(&key) != current.convex.get(&key),
        ),
        (
            "checkpoint",
            previous.checkpoints.get(&key) != current.checkpoints.get(&key),
        ),
        (
            "journal",
            journal_rows(previous, &key) != journal_rows(current, &key),
        ),
    ]
    .into_iter()
    .filter_map(|(part, changed)| changed.then_some(part))
    .collect();
    if !changed.is_empty() {
        let detail = format!(
            "a redelivery of a current entity changed {}",
            changed.join(", ")
        );
        recorder.record(
            ProjectionClass::RedeliveryNotIdempotent,
            Some(&key),
            detail,
            None,
        );
    }
    recorder.found
}

/// The journal rows of one document, in every topic, in watermark order.
fn journal_rows<'a>(observation: &'a Observation, doc_key: &str) -> Vec<&'a JournalEntry> {
    observation
        .journal
        .values()
        .flatten()
        .filter(|entry| entry.doc_key == doc_key)
        .collect()
}

/// X6: the auditor cycle run after the catch-up at quiescence must report
/// no lag drift where the sink mode writes Khala.
pub fn check_catch_up(
    oracle: &Oracle,
    current: &Observation,
    comparisons: &[khala_runtime::auditor::EntityComparison],
    step_index: usize,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    if !oracle.sink_mode().writes_khala() {
        return Vec::new();
    }
    // An entity whose truth Convex cannot hold is refused at every
    // projection (V1 judges that): its stores keep the last document they
    // took, or none, so the auditor's drift on it is the refusal's trace.
    let refused: BTreeSet<String> = oracle
        .entities()
        .into_iter()
        .filter(|entity| oracle.convex_refusal(*entity).is_some())
        .map(|entity| oracle.document_id(entity))
        .collect();
    for comparison in comparisons {
        if refused.contains(&comparison.document_id) {
            continue;
        }
        let convex_lag = comparison
            .convex
            .as_ref()
            .map_or(0, |check| check.lag_drift);
        if comparison.khala_lag_drift != 0 || convex_lag != 0 {
            let detail = format!(
                "after catch-up the auditor reports `{}` with lag drift {} (khala {}, convex {convex_lag})",
                comparison.reason_class.as_str(),
                comparison.lag_drift,
                comparison.khala_lag_drift
            );
            recorder.record(
                AuditClass::LagDriftAfterCatchUp,
                Some(&comparison.document_id),
                detail,
                None,
            );
        }
    }
    recorder.found
}

/// Convergence checks at quiescence.
pub fn check_quiescence(
    oracle: &Oracle,
    current: &Observation,
    step_index: usize,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    let mode = oracle.sink_mode();
    for entity in oracle.entities() {
        let key = oracle.document_id(entity);
        // While Convex cannot hold the entity's truth, its projections are
        // refused: each store keeps whichever holdable document it last
        // took, or none (expected `null` when there never was one).
        let refused = oracle.convex_refusal(entity).is_some();
        let Some(expected) = oracle
            .expected_document(entity)
            .or_else(|| refused.then_some(Value::Null))
        else {
            continue;
        };
        let khala = current.khala.get(&key).map(|(_, payload)| payload);
        let convex = current.convex.get(&key);
        // Convex ahead of Khala is the signature of a partial fanout (B1).
        let convex_seq = convex.and_then(document_seq);
        let convex_ahead = convex_seq.is_some_and(|convex_seq| {
            khala
                .and_then(document_seq)
                .is_none_or(|seq| seq < convex_seq)
        });
        for (store, written, held) in [
            (Store::Khala, mode.writes_khala(), khala),
            (Store::Convex, mode.writes_convex(), convex),
        ] {
            if !written {
                continue;
            }
            if refused {
                let kept = held.is_none_or(|document| {
                    let semantic = semantic_part(document);
                    oracle.holdable_documents(entity).contains(&semantic)
                });
                if !kept {
                    let detail = format!(
                        "{store} holds a document the oracle never expected while Convex can hold it"
                    );
                    recorder.record(store.wrong(), Some(&key), detail, Some(expected.clone()));
                }
                continue;
            }
            let ahead_class =
                (store == Store::Khala && convex_ahead).then_some(StoreClass::ConvexAheadOfKhala);
            match held {
                None => {
                    recorder.record(
                        ahead_class.unwrap_or(store.missing()),
                        Some(&key),
                        format!("{store} has no document"),
                        Some(expected.clone()),
                    );
                }
                Some(document) => {
                    let semantic = semantic_part(document);
                    let mut differing = differing_keys(&expected, &semantic);
                    if differing.is_empty() {
                        differing = timestamps_misset(oracle, entity, document);
                    }
                    if !differing.is_empty() {
                        let behind = document_seq(document)
                            .is_some_and(|seq| seq < oracle.latest_seq(entity));
                        // Convex holds every number as a Float64: an integer
                        // above 2^53 comes back as its nearest float, a loss
                        // of Convex's types rather than a wrong write.
                        let precision_lost =
                            store == Store::Convex && int_precision_lost(&expected, &semantic);
                        let class = match (ahead_class, behind) {
                            (Some(class), _) => class,
                            (None, _) if precision_lost => StoreClass::ConvexIntPrecisionLost,
                            (None, true) => store.stale(),
                            (None, false) => store.wrong(),
                        };
                        let detail = format!(
                            "{store} differs from the oracle in {}",
                            differing.join(", ")
                        );
                        recorder.record(class, Some(&key), detail, Some(expected.clone()));
                    }
                }
            }
        }
        if let (true, Some(khala), Some(convex)) =
            (mode.writes_khala() && mode.writes_convex(), khala, convex)
        {
            let (khala, convex) = (without_projected_at(khala), without_projected_at(convex));
            let differing = differing_keys(&khala, &convex);
            if !differing.is_empty() {
                let detail = format!("khala and convex differ in {}", differing.join(", "));
                let class = if int_precision_lost(&khala, &convex) {
                    StoreClass::ConvexIntPrecisionLost
                } else {
                    StoreClass::StoresDiffer
                };
                recorder.record(class, Some(&key), detail, Some(expected.clone()));
            }
        }
        if refused {
            // The checkpoint stays with the last document a store took, and
            // a repair recorded before the refusal cannot complete.
            continue;
        }
        if current.pending_repairs.contains(&key) {
            let detail = "a repair is still recorded after the catch-up at quiescence".to_owned();
            recorder.record(CheckpointClass::RepairLeftPending, Some(&key), detail, None);
        }
        let runtime_seq = oracle.latest_seq(entity);
        match current.checkpoints.get(&key) {
            None => {
                recorder.record(
                    CheckpointClass::CheckpointMissing,
                    Some(&key),
                    format!("no checkpoint; runtime at {runtime_seq}"),
                    None,
                );
            }
            Some(checkpoint) => {
                if checkpoint.last_runtime_seq != runtime_seq {
                    let detail = format!(
                        "checkpoint at {}, runtime at {runtime_seq}",
                        checkpoint.last_runtime_seq
                    );
                    recorder.record(CheckpointClass::CheckpointLag, Some(&key), detail, None);
                }
                for (store, written, held) in [
                    (Store::Khala, mode.writes_khala(), khala),
                    (Store::Convex, mode.writes_convex(), convex),
                ] {
                    if let (true, Some(document)) = (written, held)
                        && parity_hash(document) != checkpoint.summary_hash
                    {
                        let detail = format!("checkpoint hash does not match the {store} document");
                        recorder.record(store.hash_mismatch(), Some(&key), detail, None);
                    }
                }
            }
        }
    }
    recorder.found
}

/// X5: an auditor cycle against the ground truth of the stores. The truth
/// of a sampled checkpoint is computed here from the observation, not by
/// the auditor's code: Khala disagrees when its row is missing, at another
/// version or hashes differently; Convex likewise, counted only where the
/// sink mode writes Convex (the cutover still depends on it there).
pub fn check_audit(
    oracle: &Oracle,
    current: &Observation,
    comparisons: &[khala_runtime::auditor::EntityComparison],
    step_index: usize,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    for comparison in comparisons {
        let key = comparison.document_id.as_str();
        let Some(checkpoint) = current.checkpoints.get(key) else {
            continue;
        };
        let disagrees = |version: Option<i64>, document: Option<&Value>| match (version, document) {
            (Some(version), Some(document)) => {
                version != checkpoint.last_runtime_seq
                    || parity_hash(document) != checkpoint.summary_hash
            }
            _ => true,
        };
        let khala = current.khala.get(key);
        let khala_disagrees = disagrees(
            khala.map(|(version, _)| *version),
            khala.map(|(_, payload)| payload),
        );
        let convex = current.convex.get(key);
        let convex_disagrees =
            oracle.sink_mode().writes_convex() && disagrees(convex.and_then(document_seq), convex);
        let truth = khala_disagrees || convex_disagrees;
        if truth == comparison.is_mismatch() {
            continue;
        }
        let (class, detail) = if truth {
            let store = if khala_disagrees { "khala" } else { "convex" };
            (
                AuditClass::AuditorMissedDrift,
                format!(
                    "the auditor reports `{}` but {store} disagrees with the checkpoint",
                    comparison.reason_class.as_str()
                ),
            )
        } else {
            (
                AuditClass::AuditorFalseAlarm,
                format!(
                    "the auditor reports `{}` but every store agrees with the checkpoint",
                    comparison.reason_class.as_str()
                ),
            )
        };
        recorder.record(class, Some(key), detail, None);
    }
    recorder.found
}

/// The document without `projected_at`, the one field two faithful writes
/// of the same state may differ in.
pub(super) fn without_projected_at(document: &Value) -> Value {
    let mut copy = document.clone();
    if let Value::Object(map) = &mut copy {
        map.remove("projected_at");
    }
    copy
}

/// Top-level keys whose values differ (or exist on one side only), sorted.
/// The timestamp keys of a stored document that are `null` where the
/// oracle says they are set, or set where it says `null`.
fn timestamps_misset(
    oracle: &Oracle,
    entity: crate::model::case::EntityRef,
    document: &Value,
) -> Vec<String> {
    oracle
        .timestamps_set(entity)
        .into_iter()
        .filter(|(key, set)| document.get(key).is_none_or(Value::is_null) == *set)
        .map(|(key, _)| key.to_owned())
        .collect()
}

pub fn differing_keys(left: &Value, right: &Value) -> Vec<String> {
    let (Value::Object(left), Value::Object(right)) = (left, right) else {
        return if left == right {
            Vec::new()
        } else {
            vec!["$".to_owned()]
        };
    };
    let mut keys: Vec<String> = left
        .keys()
        .chain(right.keys())
        .filter(|key| left.get(*key) != right.get(*key))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A float as spec §6.1 writes it (Erlang's short form): the shortest
/// digits that read back as the same float, plainly with at least one
/// digit after the point, or as `d.ddde±N` (no `+`) when that is shorter.
fn short_float(value: f64) -> String {
    let shortest = format!("{value:e}");
    let (mantissa, exponent) = shortest.split_once('e').unwrap_or((&shortest, "0"));
    let exponent: i64 = exponent.parse().unwrap_or_default();
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits = mantissa.replace('.', "");
    let fraction = if digits.len() > 1 { &digits[1..] } else { "0" };
    let scientific = format!("{sign}{}.{fraction}e{exponent}", &digits[..1]);
    let point = exponent + 1;
    let plain = if point <= 0 {
        format!(
            "{sign}0.{}{digits}",
            "0".repeat(point.unsigned_abs() as usize)
        )
    } else if point as usize >= digits.len() {
        format!(
            "{sign}{digits}{}.0",
            "0".repeat(point as usize - digits.len())
        )
    } else {
        let (whole, part) = digits.split_at(point as usize);
        format!("{sign}{whole}.{part}")
    };
    if scientific.len() < plain.len() {
        scientific
    } else {
        plain
    }
}

/// The checkpoint hash of a document, computed independently of the models:
/// SHA-256 hex of its canonical JSON (spec §6.1) without `projected_at`
/// (§6.3, option b).
pub fn parity_hash(document: &Value) -> String {
    hex::encode(Sha256::digest(canonical_text(&without_projected_at(
        document,
    ))))
}

/// The Khala `payload_hash` of a summary, hex: SHA-256 of the canonical JSON
/// of the whole summary (spec §5.2 step 2), computed independently of the
/// models.
pub fn payload_hash(summary: &Value) -> String {
    hex::encode(Sha256::digest(canonical_text(summary)))
}

/// The first characters of a hash, for messages.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Whether a float appears anywhere in `value`.
fn holds_float(value: &Value) -> bool {
    match value {
        Value::Number(number) => number.is_f64(),
        Value::Array(items) => items.iter().any(holds_float),
        Value::Object(map) => map.values().any(holds_float),
        _ => false,
    }
}

/// Spec §6.1's canonical JSON, written here from the spec: keys sorted by
/// their UTF-8 bytes, no whitespace, floats in the short form, strings with
/// `"` and `\` escaped, the five short escapes and other control characters as
/// uppercase `\u00XX`, everything else raw.
fn canonical_text(value: &Value) -> String {
    fn text(raw: &str, out: &mut String) {
        out.push('"');
        for character in raw.chars() {
            match character {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                control if u32::from(control) < 0x20 => {
                    out.push_str(&format!("\\u{:04X}", u32::from(control)));
                }
                other => out.push(other),
            }
        }
        out.push('"');
    }
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                out.push('{');
                for (index, key) in keys.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    text(key, out);
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Value::String(raw) => text(raw, out),
            Value::Number(number) if number.is_f64() => {
                out.push_str(&short_float(number.as_f64().unwrap_or_default()));
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    //! Each invariant catches a planted defect; a consistent observation
    //! passes them all.

    use super::*;
    use crate::model::case::{EntityRef, IdStyle, RunEventType, Step, ValueKind};
    use crate::model::observation::{CheckpointView, JournalEntry};
    use khala_runtime::SinkMode;
    use serde_json::json;

    const KEY: &str = "runtime/run_summary:run_0";

    fn oracle(events: usize, mode: SinkMode) -> Oracle {
        let mut oracle = Oracle::new(IdStyle::Plain, mode);
        for _ in 0..events {
            oracle.apply(&Step::AppendRunEvent {
                run: 0,
                event_type: RunEventType::Delta,
            });
        }
        oracle
    }

    /// What a correct system holds for `oracle` under dual publish.
    fn consistent(oracle: &Oracle) -> Observation {
        let mut document = oracle.expected_document(EntityRef::Run(0)).unwrap();
        document["updated_at"] = "2026-02-19T20:00:00.000000Z".into();
        document["latest_event_at"] = "2026-02-19T20:00:00.000000Z".into();
        document["terminal_at"] = Value::Null;
        document["projected_at"] = "2026-02-19T20:00:01.000000Z".into();
        let seq = oracle.latest_seq(EntityRef::Run(0));
        let mut observation = Observation::default();
        observation
            .khala
            .insert(KEY.into(), (seq, document.clone()));
        observation.convex.insert(KEY.into(), document.clone());
        let checkpoint = CheckpointView {
            document_id: KEY.into(),
            last_runtime_seq: seq,
            projection_version: "convex_summary_v1".into(),
            summary_hash: parity_hash(&document),
        };
        observation.checkpoints.insert(KEY.into(), checkpoint);
        let journal = (1..=seq)
            .map(|watermark| JournalEntry {
                watermark,
                doc_key: KEY.into(),
                doc_version: watermark,
            })
            .collect();
        observation
            .journal
            .insert("runtime.run_summaries".into(), journal);
        observation
    }

    fn ids(found: &[Violation]) -> Vec<(&'static str, String)> {
        found
            .iter()
            .map(|violation| {
                (
                    violation.invariant,
                    violation.reason_class.name().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_consistent_observation_passes_every_check() {
        let oracle = oracle(2, SinkMode::Dual);
        let observation = consistent(&oracle);
        assert_eq!(
            ids(&check_step(&oracle, &observation, &observation, 0, false)),
            []
        );
        assert_eq!(ids(&check_quiescence(&oracle, &observation, 0)), []);
    }

    /// The comparison a correct auditor makes of `observation`'s checkpoint.
    fn comparison(
        reason_class: khala_runtime::auditor::ReasonClass,
    ) -> khala_runtime::auditor::EntityComparison {
        khala_runtime::auditor::EntityComparison {
            projection_name: "run_summary".into(),
            entity_id: "run_0".into(),
            document_id: KEY.into(),
            event_type: "runtime.run_summaries".into(),
            reason_class,
            side: khala_runtime::auditor::Side::Khala,
            lag_drift: 0,
            khala_reason_class: reason_class,
            khala_lag_drift: 0,
            convex: None,
        }
    }

    #[test]
    fn x5_catches_an_auditor_blind_to_convex_drift_and_a_false_alarm() {
        use khala_runtime::auditor::ReasonClass;
        let oracle = oracle(2, SinkMode::Dual);
        let observation = consistent(&oracle);
        let ok = [comparison(ReasonClass::None)];
        assert_eq!(ids(&check_audit(&oracle, &observation, &ok, 0)), []);
        // B1 then B2: Convex got a newer document, the checkpoint and Khala
        // did not, and the auditor (reading Khala only) says `none`.
        let mut drifted = observation.clone();
        let document = drifted.convex.get_mut(KEY).unwrap();
        document["latest_seq"] = 3.into();
        document["event_count"] = 3.into();
        document["runtime_source"]["seq"] = 3.into();
        assert_eq!(
            ids(&check_audit(&oracle, &drifted, &ok, 4)),
            [("X5", "auditor_missed_drift".into())]
        );
        // Convex is not counted where the sink mode does not write it.
        let khala_only = {
            let mut oracle = oracle.clone();
            oracle.apply(&Step::SwitchSinkMode {
                mode: SinkMode::KhalaOnly,
            });
            oracle
        };
        assert_eq!(ids(&check_audit(&khala_only, &drifted, &ok, 4)), []);
        let alarm = [comparison(ReasonClass::LagDrift)];
        assert_eq!(
            ids(&check_audit(&oracle, &observation, &alarm, 1)),
            [("X5", "auditor_false_alarm".into())]
        );
        let mut missing = observation.clone();
        missing.khala.remove(KEY);
        let reported = [comparison(ReasonClass::KhalaMissing)];
        assert_eq!(ids(&check_audit(&oracle, &missing, &reported, 1)), []);
    }

    /// `observation` with `key` of the run's document set to `value` in
    /// both stores, the checkpoint's hash following: a projector writing it.
    fn with_timestamp(observation: &Observation, key: &str, value: Value) -> Observation {
        let mut written = observation.clone();
        written.khala.get_mut(KEY).unwrap().1[key] = value.clone();
        written.convex.get_mut(KEY).unwrap()[key] = value;
        written.checkpoints.get_mut(KEY).unwrap().summary_hash = parity_hash(&written.convex[KEY]);
        written
    }

    #[test]
    fn x1_catches_a_timestamp_null_where_it_is_set_or_set_where_it_is_null() {
        let oracle = oracle(2, SinkMode::Dual);
        let observation = consistent(&oracle);
        for (key, value) in [
            ("latest_event_at", Value::Null),
            ("updated_at", Value::Null),
            ("terminal_at", "2026-02-19T20:00:02.000000Z".into()),
        ] {
            let misset = with_timestamp(&observation, key, value);
            assert_eq!(
                ids(&check_quiescence(&oracle, &misset, 0)),
                [("X1", "khala_wrong".into()), ("X1", "convex_wrong".into())],
                "{key}"
            );
        }
        // Finished, the run's `terminal_at` must be set.
        let mut finished = oracle.clone();
        finished.apply(&Step::FinishRun {
            run: 0,
            status: crate::model::case::TerminalStatus::Failed,
            reason: Default::default(),
        });
        let observation = consistent(&finished);
        assert_eq!(
            ids(&check_quiescence(&finished, &observation, 0)),
            [("X1", "khala_wrong".into()), ("X1", "convex_wrong".into())]
        );
        let stamped = with_timestamp(
            &observation,
            "terminal_at",
            "2026-02-19T20:00:02.000000Z".into(),
        );
        assert_eq!(ids(&check_quiescence(&finished, &stamped, 0)), []);
    }

    #[test]
    fn x2_catches_a_repair_left_pending_after_the_catch_up() {
        let oracle = oracle(2, SinkMode::Dual);
        let mut pending = consistent(&oracle);
        assert_eq!(ids(&check_quiescence(&oracle, &pending, 0)), []);
        pending.pending_repairs.insert(KEY.to_owned());
        assert_eq!(
            ids(&check_quiescence(&oracle, &pending, 0)),
            [("X2", "repair_left_pending".into())]
        );
        // A repair of a document the oracle does not know is not judged.
        let mut unknown = consistent(&oracle);
        unknown
            .pending_repairs
            .insert("runtime/run_summary:elsewhere".to_owned());
        assert_eq!(ids(&check_quiescence(&oracle, &unknown, 0)), []);
    }

    #[test]
    fn p3_catches_an_extra_or_missing_key() {
        let oracle = oracle(1, SinkMode::Dual);
        let observation = consistent(&oracle);
        assert_eq!(
            ids(&check_step(&oracle, &observation, &observation, 0, false)),
            []
        );
        let mut extra = observation.clone();
        extra.convex.get_mut(KEY).unwrap()["heartbeat_state"] = "ok".into();
        assert_eq!(
            ids(&check_step(&oracle, &extra, &extra, 0, false)),
            [("P3", "key_set_wrong".into())]
        );
        let mut missing = observation.clone();
        if let Value::Object(map) = &mut missing.khala.get_mut(KEY).unwrap().1 {
            map.remove("terminal_at");
        }
        assert_eq!(
            ids(&check_step(&oracle, &missing, &missing, 0, false)),
            [("P3", "key_set_wrong".into())]
        );
    }

    #[test]
    fn c2_catches_a_checkpoint_moving_without_a_store() {
        let before_oracle = oracle(1, SinkMode::Dual);
        let before = consistent(&before_oracle);
        let after_oracle = oracle(2, SinkMode::Dual);
        let after = consistent(&after_oracle);
        assert!(
            !ids(&check_step(&after_oracle, &before, &after, 1, false))
                .contains(&("C2", "checkpoint_ahead_of_khala".into()))
        );
        // The checkpoint moved to seq 2, Khala still holds seq 1.
        let mut planted = after.clone();
        planted.khala.insert(KEY.into(), before.khala[KEY].clone());
        assert!(
            ids(&check_step(&after_oracle, &before, &planted, 1, false))
                .contains(&("C2", "checkpoint_ahead_of_khala".into()))
        );
        // Under Convex-only, Khala is not a sink: nothing to hold.
        let mut convex_only = after_oracle.clone();
        convex_only.apply(&Step::SwitchSinkMode {
            mode: SinkMode::ConvexOnly,
        });
        assert!(
            !ids(&check_step(&convex_only, &before, &planted, 1, false))
                .iter()
                .any(|(id, _)| *id == "C2")
        );
    }

    #[test]
    fn p4_catches_a_redelivery_that_rewrites_a_current_document() {
        let oracle = oracle(2, SinkMode::Dual);
        let before = consistent(&oracle);
        let entity = EntityRef::Run(0);
        assert_eq!(
            ids(&check_redelivery(&oracle, entity, &before, &before, 2)),
            []
        );
        let mut rewritten = before.clone();
        rewritten.convex.get_mut(KEY).unwrap()["projected_at"] =
            "2026-02-19T20:05:00.000000Z".into();
        assert_eq!(
            ids(&check_redelivery(&oracle, entity, &before, &rewritten, 2)),
            [("P4", "redelivery_not_idempotent".into())]
        );
        // The same document written again still journals it again: every
        // lane is sent it once more.
        let mut journaled = before.clone();
        journaled
            .journal
            .entry("runtime.run_summaries".to_owned())
            .or_default()
            .push(JournalEntry {
                watermark: 99,
                doc_key: KEY.to_owned(),
                doc_version: 2,
            });
        assert_eq!(
            ids(&check_redelivery(&oracle, entity, &before, &journaled, 2)),
            [("P4", "redelivery_not_idempotent".into())]
        );
        // Not current before (the checkpoint lagged): a rewrite is expected.
        let mut lagging = before.clone();
        lagging.checkpoints.get_mut(KEY).unwrap().last_runtime_seq = 1;
        assert_eq!(
            ids(&check_redelivery(&oracle, entity, &lagging, &rewritten, 2)),
            []
        );
    }

    #[test]
    fn x6_catches_lag_drift_left_after_catch_up() {
        use khala_runtime::auditor::ReasonClass;
        let oracle = oracle(2, SinkMode::Dual);
        let observation = consistent(&oracle);
        let clean = [comparison(ReasonClass::None)];
        assert_eq!(ids(&check_catch_up(&oracle, &observation, &clean, 5)), []);
        let mut lagging = comparison(ReasonClass::KhalaMissing);
        lagging.lag_drift = 2;
        lagging.khala_lag_drift = 2;
        assert_eq!(
            ids(&check_catch_up(
                &oracle,
                &observation,
                &[lagging.clone()],
                5
            )),
            [("X6", "lag_drift_after_catch_up".into())]
        );
        let mut convex_only = oracle.clone();
        convex_only.apply(&Step::SwitchSinkMode {
            mode: SinkMode::ConvexOnly,
        });
        assert_eq!(
            ids(&check_catch_up(&convex_only, &observation, &[lagging], 5)),
            []
        );
    }

    #[test]
    fn x6_leaves_the_drift_of_a_refused_entity_to_v1() {
        use khala_runtime::auditor::ReasonClass;
        let mut drifting = comparison(ReasonClass::KhalaMissing);
        drifting.document_id = WORKER_KEY.into();
        drifting.lag_drift = 1;
        drifting.khala_lag_drift = 1;
        let judged = |value: ValueKind, variant: u8| {
            let (oracle, _) = worker_with(value, variant);
            let refused = oracle.convex_refusal(EntityRef::Worker(0)).is_some();
            let observation = Observation::default();
            let found = ids(&check_catch_up(
                &oracle,
                &observation,
                &[drifting.clone()],
                5,
            ));
            (refused, found)
        };
        let (refused, found) = judged(ValueKind::Plain, 0);
        assert!(!refused);
        assert_eq!(found, [("X6", "lag_drift_after_catch_up".into())]);
        let unholdable = every_variant()
            .find(|(value, variant)| judged(*value, *variant).0)
            .expect("some value Convex cannot hold");
        assert_eq!(judged(unholdable.0, unholdable.1).1, []);
    }

    #[test]
    fn p1_catches_a_document_under_another_key() {
        let oracle = oracle(1, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        observation.khala.get_mut(KEY).unwrap().1["document_id"] =
            "runtime/run_summary:other".into();
        let found = check_step(&oracle, &observation, &observation, 0, false);
        assert!(
            ids(&found).contains(&("P1", "document_id_mismatch".into())),
            "{found:?}"
        );
    }

    #[test]
    fn p2_catches_a_document_ahead_of_the_runtime() {
        let oracle = oracle(1, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        let document = &mut observation.convex.get_mut(KEY).unwrap();
        document["latest_seq"] = 5.into();
        document["event_count"] = 5.into();
        document["runtime_source"]["seq"] = 5.into();
        assert_eq!(
            ids(&check_step(&oracle, &observation, &observation, 0, false)),
            [("P2", "sequence_fields_inconsistent".into())]
        );
    }

    #[test]
    fn p2_lets_the_count_fall_short_of_the_seq_only_by_the_rows_removed() {
        let mut oracle = oracle(4, SinkMode::Dual);
        let short_by = |oracle: &Oracle, missing: i64| {
            let mut observation = consistent(oracle);
            let document = &mut observation.convex.get_mut(KEY).unwrap();
            document["event_count"] = (4 - missing).into();
            ids(&check_step(oracle, &observation, &observation, 0, false))
        };
        assert_eq!(
            short_by(&oracle, 1),
            [("P2", "sequence_fields_inconsistent".into())]
        );
        oracle.apply(&Step::RemoveEvents {
            entity: EntityRef::Run(0),
            count: 1,
        });
        // Before the reprojection a store may still count the removed row;
        // after it, one row fewer; two fewer is wrong.
        assert_eq!(short_by(&oracle, 1), []);
        assert!(
            short_by(&oracle, 0)
                .iter()
                .all(|(invariant, _)| *invariant != "P2")
        );
        assert_eq!(
            short_by(&oracle, 2),
            [("P2", "sequence_fields_inconsistent".into())]
        );
    }

    #[test]
    fn c3_catches_a_checkpoint_moving_back_except_through_reprojection() {
        let oracle = oracle(2, SinkMode::Dual);
        let before = consistent(&oracle);
        let mut after = before.clone();
        after.checkpoints.get_mut(KEY).unwrap().last_runtime_seq = 1;
        // The Khala row stays at 2, past the checkpoint: S3 whatever moved it.
        assert_eq!(
            ids(&check_step(&oracle, &before, &after, 3, false)),
            [
                ("C3", "checkpoint_regressed".into()),
                ("S3", "khala_ahead_of_checkpoint".into())
            ]
        );
        assert_eq!(
            ids(&check_step(&oracle, &before, &after, 3, true)),
            [("S3", "khala_ahead_of_checkpoint".into())]
        );
    }

    #[test]
    fn s2_catches_a_khala_version_other_than_the_seq() {
        let oracle = oracle(2, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        observation.khala.get_mut(KEY).unwrap().0 = 1;
        assert_eq!(
            ids(&check_step(&oracle, &observation, &observation, 0, false)),
            [("S2", "khala_version_not_seq".into())]
        );
    }

    #[test]
    fn s2_catches_a_payload_hash_that_is_not_of_its_payload() {
        let oracle = oracle(2, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        let stored = hex::encode(khala_runtime::hashing::payload_hash(
            &observation.khala[KEY].1,
        ));
        observation.khala_hashes.insert(KEY.into(), Some(stored));
        assert_eq!(
            ids(&check_step(&oracle, &observation, &observation, 0, false)),
            []
        );
        // Zeros, NULL, and the hash without `projected_at` (the checkpoint's).
        let payload = &observation.khala[KEY].1;
        let hashes = [Some("00".repeat(32)), None, Some(parity_hash(payload))];
        for hash in hashes {
            observation.khala_hashes.insert(KEY.into(), hash);
            assert_eq!(
                ids(&check_step(&oracle, &observation, &observation, 0, false)),
                [("S2", "khala_payload_hash_wrong".into())]
            );
        }
    }

    #[test]
    fn s2_leaves_the_hash_of_a_payload_with_floats_unjudged() {
        // jsonb drops the float form the runtime hashed.
        let oracle = oracle(2, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        observation.khala.get_mut(KEY).unwrap().1["metadata"] = serde_json::json!({"f": 1.0e15});
        observation.khala_hashes.insert(KEY.into(), None);
        let found = ids(&check_step(&oracle, &observation, &observation, 0, false));
        assert!(
            !found.contains(&("S2", "khala_payload_hash_wrong".into())),
            "{found:?}"
        );
    }

    #[test]
    fn the_payload_hash_agrees_with_the_models_over_strings_and_keys() {
        let document = serde_json::json!({
            "z": ["a\u{1}b\u{1f}", "tab\there", "quote\"back\\slash", "\u{8}\u{c}\n\r"],
            "é": {"𝄞": "e\u{301}", "": null, "a": [true, false, -3, 9007199254740993_i64]},
            "A": "مرحبا 世界 🙂",
        });
        assert_eq!(
            payload_hash(&document),
            hex::encode(khala_runtime::hashing::payload_hash(&document))
        );
    }

    #[test]
    fn w2_catches_a_journal_gap() {
        let oracle = oracle(3, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        observation
            .journal
            .get_mut("runtime.run_summaries")
            .unwrap()
            .remove(1);
        assert_eq!(
            ids(&check_step(&oracle, &observation, &observation, 0, false)),
            [("W2", "journal_gap".into())]
        );
    }

    #[test]
    fn w2_after_retention_checks_the_range_from_the_oldest_retained_row() {
        let mut oracle = oracle(4, SinkMode::Dual);
        let mut pruned = consistent(&oracle);
        pruned
            .journal
            .get_mut("runtime.run_summaries")
            .unwrap()
            .drain(..2);
        assert_eq!(
            ids(&check_step(&oracle, &pruned, &pruned, 0, false)),
            [("W2", "journal_gap".into())],
            "before any retention the journal starts at 1"
        );
        oracle.apply(&Step::RunRetention);
        assert_eq!(ids(&check_step(&oracle, &pruned, &pruned, 0, false)), []);
        let mut holed = pruned.clone();
        holed
            .journal
            .get_mut("runtime.run_summaries")
            .unwrap()
            .remove(0);
        assert_eq!(ids(&check_step(&oracle, &holed, &holed, 0, false)), []);
        let mut gap = consistent(&oracle);
        gap.journal
            .get_mut("runtime.run_summaries")
            .unwrap()
            .remove(2);
        assert_eq!(
            ids(&check_step(&oracle, &gap, &gap, 0, false)),
            [("W2", "journal_gap".into())]
        );
    }

    #[test]
    fn w3_catches_a_journal_version_regression() {
        let oracle = oracle(3, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        observation
            .journal
            .get_mut("runtime.run_summaries")
            .unwrap()[2]
            .doc_version = 1;
        assert_eq!(
            ids(&check_step(&oracle, &observation, &observation, 0, false)),
            [("W3", "journal_version_regressed".into())]
        );
    }

    #[test]
    fn x7_catches_a_store_moving_backwards() {
        let newer = oracle(2, SinkMode::Dual);
        let before = consistent(&newer);
        let after_oracle = oracle(1, SinkMode::Dual);
        let mut after = before.clone();
        let older = consistent(&after_oracle);
        after.khala = older.khala;
        assert_eq!(
            ids(&check_step(&newer, &before, &after, 1, false)),
            [("X7", "khala_regressed".into())]
        );
    }

    #[test]
    fn x1_catches_missing_stale_wrong_and_convex_ahead() {
        let oracle = oracle(2, SinkMode::Dual);
        let mut missing = consistent(&oracle);
        missing.khala.clear();
        missing.convex.clear();
        let found = ids(&check_quiescence(&oracle, &missing, 0));
        assert!(
            found.contains(&("X1", "khala_missing".into()))
                && found.contains(&("X1", "convex_missing".into())),
            "{found:?}"
        );

        let mut ahead = consistent(&oracle);
        ahead.khala = consistent(&self::oracle(1, SinkMode::Dual)).khala;
        let found = ids(&check_quiescence(&oracle, &ahead, 0));
        assert!(
            found.contains(&("X1", "convex_ahead_of_khala".into())),
            "{found:?}"
        );

        let mut both_stale = consistent(&self::oracle(1, SinkMode::Dual));
        both_stale.checkpoints = consistent(&oracle).checkpoints;
        let found = ids(&check_quiescence(&oracle, &both_stale, 0));
        assert!(
            found.contains(&("X1", "khala_stale".into()))
                && found.contains(&("X1", "convex_stale".into())),
            "{found:?}"
        );

        let mut wrong = consistent(&oracle);
        wrong.khala.get_mut(KEY).unwrap().1["status"] = "running".into();
        let found = ids(&check_quiescence(&oracle, &wrong, 0));
        assert!(
            found.contains(&("X1", "khala_wrong".into()))
                && found.contains(&("X1", "stores_differ".into())),
            "{found:?}"
        );
    }

    /// `document` as a real Convex deployment writes it: every number a
    /// Float64, written by serde_json's f64 writer as the backend's is
    /// (`2.0`, `42.0`).
    fn as_the_backend_writes(document: &Value) -> String {
        fn floats(value: &Value) -> Value {
            match value {
                Value::Number(number) => Value::from(number.as_f64().unwrap()),
                Value::Array(items) => Value::Array(items.iter().map(floats).collect()),
                Value::Object(map) => Value::Object(
                    map.iter()
                        .map(|(key, item)| (key.clone(), floats(item)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        serde_json::to_string(&floats(document)).unwrap()
    }

    #[test]
    fn a_backend_written_convex_document_is_read_by_convexs_types() {
        let oracle = oracle(2, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        let text = as_the_backend_writes(&observation.convex[KEY]);
        assert!(text.contains(r#""seq":2.0"#), "{text}");
        let mut before = observation.clone();
        before.checkpoints.clear();
        let found = |current: &Observation| {
            let mut found = ids(&check_step(&oracle, &before, current, 0, false));
            found.extend(ids(&check_quiescence(&oracle, current, 0)));
            found
        };
        // Read as plain JSON, the real number text breaks five checks.
        let mut raw = observation.clone();
        raw.convex
            .insert(KEY.into(), serde_json::from_str(&text).unwrap());
        assert_eq!(
            found(&raw),
            [
                ("P2", "sequence_fields_inconsistent".into()),
                ("C2", "checkpoint_ahead_of_convex".into()),
                ("X1", "convex_wrong".into()),
                ("X1", "stores_differ".into()),
                ("X2", "convex_hash_mismatch".into()),
            ]
        );
        // Read through the sink's decoder (what every Convex read does), none.
        let decoded = khala_runtime::sink::classify(
            200,
            &format!(r#"{{"status":"success","value":{text}}}"#),
        )
        .unwrap();
        observation.convex.insert(KEY.into(), decoded);
        assert_eq!(found(&observation), []);
    }

    #[test]
    fn x1_names_an_integer_convex_rounded_a_precision_loss() {
        let oracle = oracle(2, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        // Khala keeps 2^53 + 1; Convex holds the nearest Float64, 2^53.
        observation.khala.get_mut(KEY).unwrap().1["owner_user_id"] =
            Value::from(9_007_199_254_740_993_i64);
        observation.convex.get_mut(KEY).unwrap()["owner_user_id"] =
            Value::from(9_007_199_254_740_992_i64);
        let found = ids(&check_quiescence(&oracle, &observation, 0));
        assert!(
            found.contains(&("X1", "convex_int_precision_lost".into()))
                && !found.contains(&("X1", "stores_differ".into())),
            "{found:?}"
        );
    }

    #[test]
    fn x1_only_checks_the_stores_the_sink_mode_writes() {
        let oracle = oracle(2, SinkMode::KhalaOnly);
        let mut observation = consistent(&oracle);
        observation.convex.clear();
        assert_eq!(ids(&check_quiescence(&oracle, &observation, 0)), []);
    }

    #[test]
    fn x2_catches_a_lagging_checkpoint_and_a_hash_mismatch() {
        let oracle = oracle(2, SinkMode::Dual);
        let mut observation = consistent(&oracle);
        let checkpoint = observation.checkpoints.get_mut(KEY).unwrap();
        checkpoint.last_runtime_seq = 1;
        checkpoint.summary_hash = "0".repeat(64);
        let found = ids(&check_quiescence(&oracle, &observation, 0));
        assert_eq!(
            found,
            [
                ("X2", "checkpoint_lag".into()),
                ("X2", "khala_hash_mismatch".into()),
                ("X2", "convex_hash_mismatch".into())
            ]
        );
        observation.checkpoints.clear();
        assert_eq!(
            ids(&check_quiescence(&oracle, &observation, 0)),
            [("X2", "checkpoint_missing".into())]
        );
    }

    #[test]
    fn the_parity_hash_agrees_with_the_models_summary_hash() {
        // Independent implementations must agree on what the harness generates.
        let document =
            serde_json::json!({"b": [1, {"z": null, "a": "ü"}], "a": "x", "projected_at": "t"});
        assert_eq!(
            parity_hash(&document),
            khala_runtime::hashing::summary_hash(&document)
        );
    }

    const WORKER_KEY: &str = "runtime/codex_worker_summary:worker_0";

    /// A worker that reported variant `variant` of `value`, and what a
    /// store holding its truth (timestamps filled in) holds.
    fn worker_with(value: ValueKind, variant: u8) -> (Oracle, Value) {
        let mut oracle = Oracle::new(IdStyle::Plain, SinkMode::Dual);
        oracle.apply(&Step::ReportWorkerMetadata {
            worker: 0,
            value,
            variant,
        });
        let document = oracle
            .sized_document(EntityRef::Worker(0))
            .expect("the step created the worker");
        (oracle, document)
    }

    fn every_variant() -> impl Iterator<Item = (ValueKind, u8)> {
        ValueKind::ALL
            .into_iter()
            .flat_map(|kind| (0..kind.variants()).map(move |variant| (kind, variant)))
    }

    #[test]
    fn the_oracle_and_the_hardened_guard_agree_on_every_generated_value() {
        let mut refused = Vec::new();
        for (kind, variant) in every_variant() {
            let (oracle, document) = worker_with(kind, variant);
            let guard = khala_runtime::sink::convex_value::refusal_of(WORKER_KEY, &document);
            let predicted = oracle.convex_refusal(EntityRef::Worker(0));
            assert_eq!(
                guard.is_some(),
                predicted.is_some(),
                "{kind}/{variant}: {guard:?} vs {predicted:?}"
            );
            if guard.is_some() {
                refused.push(format!("{kind}/{variant}"));
            }
        }
        // Each limit is met on both sides: the last accepted variant and
        // the first refused one.
        assert_eq!(
            refused,
            [
                "unicode_keys/0",
                "unicode_keys/1",
                "unicode_keys/2",
                "big_integers/3",
                "big_integers/4",
                "big_integers/5",
                "deep/3",
                "wide/2",
                "wide/3",
                "long_arrays/2",
                "long_arrays/3",
                "large/1",
                "exact_size/1",
            ]
        );
        // `exact_size` lands on the size limit to the byte, counted as the
        // guard counts: one byte over is refused naming its size.
        let (_, over) = worker_with(ValueKind::ExactSize, 1);
        assert_eq!(
            khala_runtime::sink::convex_value::refusal_of(WORKER_KEY, &over),
            Some(
                khala_runtime::sink::convex_value::ConvexValueRefusal::TooLarge {
                    bytes: (1 << 20) + 1
                }
            )
        );
    }

    #[test]
    fn the_parity_hash_agrees_with_the_models_summary_hash_on_every_generated_value() {
        for (kind, variant) in every_variant() {
            let (_, document) = worker_with(kind, variant);
            assert_eq!(
                parity_hash(&document),
                khala_runtime::hashing::summary_hash(&document),
                "{kind}/{variant}"
            );
        }
    }

    #[test]
    fn the_parity_hash_agrees_with_the_models_summary_hash_on_every_generated_text() {
        use crate::model::values::{Text, TextKind};
        for kind in TextKind::ALL {
            for variant in 0..kind.variants() {
                let text = Text { kind, variant };
                let mut oracle = Oracle::new(IdStyle::Plain, SinkMode::Dual);
                oracle.apply(&Step::CreateWorker {
                    worker: 0,
                    owner_guest_scope: text,
                    workspace_ref: text,
                    codex_home_ref: text,
                });
                let mut document = oracle.expected_document(EntityRef::Worker(0)).unwrap();
                document[text.value().unwrap_or_default()] = json!(1);
                assert_eq!(
                    parity_hash(&document),
                    khala_runtime::hashing::summary_hash(&document),
                    "{text}"
                );
                assert_eq!(
                    payload_hash(&document),
                    hex::encode(khala_runtime::hashing::payload_hash(&document)),
                    "{text}"
                );
            }
        }
        // serde_json's escape is lowercase, spec §6.1's uppercase.
        assert_ne!(
            parity_hash(&json!({"s": "\u{1f}"})),
            hex::encode(Sha256::digest(br#"{"s":"\u001f"}"#))
        );
        assert_eq!(
            parity_hash(&json!({"s": "\u{1f}"})),
            hex::encode(Sha256::digest(br#"{"s":"\u001F"}"#))
        );
    }

    /// A dual-publish worker document for every value Convex can hold,
    /// written as the backend writes it (every number a Float64, text with
    /// a point), read through the sink's decoder and written as Khala
    /// holds it: no check finds anything.
    #[test]
    fn backend_written_documents_of_every_holdable_value_pass_every_check() {
        for (kind, variant) in every_variant() {
            let (oracle, document) = worker_with(kind, variant);
            if oracle.convex_refusal(EntityRef::Worker(0)).is_some() {
                continue;
            }
            let mut observation = Observation::default();
            observation
                .khala
                .insert(WORKER_KEY.into(), (1, document.clone()));
            let text = as_the_backend_writes(&document);
            let decoded = khala_runtime::sink::classify(
                200,
                &format!(r#"{{"status":"success","value":{text}}}"#),
            )
            .unwrap();
            let held = khala_runtime::sink::convex_value::as_sent(&decoded, &document);
            observation.convex.insert(WORKER_KEY.into(), held);
            observation.checkpoints.insert(
                WORKER_KEY.into(),
                CheckpointView {
                    document_id: WORKER_KEY.into(),
                    last_runtime_seq: 1,
                    projection_version: "convex_summary_v1".into(),
                    summary_hash: khala_runtime::hashing::summary_hash(&document),
                },
            );
            let step = Step::ReportWorkerMetadata {
                worker: 0,
                value: kind,
                variant,
            };
            let mut found = ids(&check_step(
                &oracle,
                &Observation::default(),
                &observation,
                0,
                false,
            ));
            found.extend(ids(&check_quiescence(&oracle, &observation, 0)));
            found.extend(ids(&check_refusals(&oracle, &step, &[], &observation, 0)));
            found.retain(|(id, _)| *id != "W2");
            assert_eq!(found, [], "{kind}/{variant}");
        }
    }

    #[test]
    fn v1_catches_a_stored_unholdable_value_a_missing_and_an_unexpected_refusal() {
        // Khala took 2^53 + 1 and Convex its nearest Float64: the legacy path.
        let (oracle, document) = worker_with(ValueKind::BigIntegers, 3);
        let step = Step::ReportWorkerMetadata {
            worker: 0,
            value: ValueKind::BigIntegers,
            variant: 3,
        };
        let mut observation = Observation::default();
        observation
            .khala
            .insert(WORKER_KEY.into(), (1, document.clone()));
        let mut rounded = document.clone();
        rounded["metadata"]["count"] = Value::from(9_007_199_254_740_992_i64);
        rounded["metadata"]["counts"][0] = Value::from(9_007_199_254_740_992_i64);
        observation.convex.insert(WORKER_KEY.into(), rounded);
        let found = ids(&check_refusals(&oracle, &step, &[], &observation, 0));
        assert_eq!(
            found,
            [
                ("V1", "convex_unholdable_stored".into()),
                ("V1", "convex_refusal_missing".into()),
            ]
        );
        let quiescent = ids(&check_quiescence(&oracle, &observation, 0));
        assert!(
            quiescent.contains(&("X1", "convex_int_precision_lost".into())),
            "{quiescent:?}"
        );
        // Hardened: refused, nothing stored; refusing 2^53 itself is wrong.
        let refused = [WORKER_KEY.to_owned()];
        let empty = Observation::default();
        assert_eq!(
            ids(&check_refusals(&oracle, &step, &refused, &empty, 0)),
            []
        );
        assert_eq!(ids(&check_quiescence(&oracle, &empty, 0)), []);
        let (exact, _) = worker_with(ValueKind::BigIntegers, 1);
        let step = Step::ReportWorkerMetadata {
            worker: 0,
            value: ValueKind::BigIntegers,
            variant: 1,
        };
        assert_eq!(
            ids(&check_refusals(&exact, &step, &refused, &empty, 0)),
            [("V1", "convex_refusal_unexpected".into())]
        );
    }

    #[test]
    fn every_catalogue_entry_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        assert!(
            crate::model::catalogue::CATALOGUE
                .iter()
                .all(|invariant| seen.insert(invariant.id))
        );
    }
}
