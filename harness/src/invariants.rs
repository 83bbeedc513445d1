//! The invariant catalogue (spec §14 IDs plus the cross-store X IDs of
//! ARCHITECTURE.md) and the checks. Checks return every divergence they see
//! rather than stopping at the first; a divergence is a result, not an error.

use crate::observation::{Observation, document_seq};
use crate::oracle::{Oracle, semantic_part};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

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
}

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Invariant {
    pub id: &'static str,
    pub statement: &'static str,
    pub severity: Severity,
    pub phase: Phase,
}

pub const CATALOGUE: &[Invariant] = &[
    Invariant {
        id: "P1",
        statement: "every stored document's key equals its document_id, the projection prefix plus the entity id",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
    },
    Invariant {
        id: "P2",
        statement: "every stored document has latest_seq = runtime_source.seq = event_count, never ahead of the runtime",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
    },
    Invariant {
        id: "C3",
        statement: "a checkpoint's last_runtime_seq never decreases, except through reprojection",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
    },
    Invariant {
        id: "W2",
        statement: "without retention, each topic's journal watermarks form the contiguous range 1..head",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
    },
    Invariant {
        id: "W3",
        statement: "a document's journal doc_version never decreases in watermark order",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
    },
    Invariant {
        id: "X1",
        statement: "at quiescence every document is as the oracle predicts in every store the sink mode writes, and Khala equals Convex where both are written",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
    },
    Invariant {
        id: "X2",
        statement: "at quiescence every checkpoint is at the runtime's seq and its hash matches each store the sink mode writes",
        severity: Severity::Critical,
        phase: Phase::Quiescence,
    },
    Invariant {
        id: "X7",
        statement: "no stored document ever moves backwards in seq",
        severity: Severity::Critical,
        phase: Phase::EveryStep,
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

struct Recorder<'a> {
    step_index: usize,
    observation: &'a Observation,
    found: Vec<Violation>,
}

impl Recorder<'_> {
    fn record(
        &mut self,
        id: &'static str,
        reason_class: &str,
        document_id: Option<&str>,
        detail: String,
        expected: Option<Value>,
    ) {
        let severity = invariant(id).map_or(Severity::Critical, |entry| entry.severity);
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
            invariant: id,
            severity,
            reason_class: reason_class.to_owned(),
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
    let mut recorder = Recorder {
        step_index,
        observation: current,
        found: Vec::new(),
    };
    let latest_seq_of: BTreeMap<String, i64> = oracle
        .entities()
        .into_iter()
        .map(|entity| (oracle.document_id(entity), oracle.latest_seq(entity)))
        .collect();

    let stores: [(&str, Vec<(&String, &Value)>); 2] = [
        (
            "khala",
            current
                .khala
                .iter()
                .map(|(key, (_, payload))| (key, payload))
                .collect(),
        ),
        ("convex", current.convex.iter().collect()),
    ];
    for (store, documents) in &stores {
        for (key, document) in documents {
            let stated_id = document.get("document_id").and_then(Value::as_str);
            let known = latest_seq_of.contains_key(key.as_str());
            if stated_id != Some(key.as_str()) || !known {
                let detail = format!(
                    "{store} holds key {key:?} with document_id {stated_id:?}; known to the runtime: {known}"
                );
                recorder.record("P1", "document_id_mismatch", Some(key), detail, None);
            }
            let seq = document_seq(document);
            let latest = document.get("latest_seq").and_then(Value::as_i64);
            let count = document.get("event_count").and_then(Value::as_i64);
            let runtime = latest_seq_of.get(key.as_str()).copied().unwrap_or(0);
            if seq.is_none()
                || seq != latest
                || latest != count
                || seq.is_some_and(|seq| seq > runtime)
            {
                let detail = format!(
                    "{store}: runtime_source.seq {seq:?}, latest_seq {latest:?}, event_count {count:?}, runtime seq {runtime}"
                );
                recorder.record(
                    "P2",
                    "sequence_fields_inconsistent",
                    Some(key),
                    detail,
                    None,
                );
            }
            let before = match *store {
                "khala" => previous
                    .khala
                    .get(key.as_str())
                    .and_then(|(_, payload)| document_seq(payload)),
                _ => previous.convex.get(key.as_str()).and_then(document_seq),
            };
            if let (Some(before), Some(now)) = (before, seq)
                && now < before
            {
                let detail = format!("{store} went from seq {before} to {now}");
                recorder.record("X7", &format!("{store}_regressed"), Some(key), detail, None);
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
            recorder.record("C3", "checkpoint_regressed", Some(key), detail, None);
        }
    }

    for (topic, entries) in &current.journal {
        for (index, entry) in entries.iter().enumerate() {
            if entry.watermark != index as i64 + 1 {
                let detail = format!(
                    "topic {topic}: watermark {} at position {}",
                    entry.watermark,
                    index + 1
                );
                recorder.record("W2", "journal_gap", Some(&entry.doc_key), detail, None);
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
                    "W3",
                    "journal_version_regressed",
                    Some(&entry.doc_key),
                    detail,
                    None,
                );
            }
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
    let mut recorder = Recorder {
        step_index,
        observation: current,
        found: Vec::new(),
    };
    let mode = oracle.sink_mode();
    for entity in oracle.entities() {
        let key = oracle.document_id(entity);
        let Some(expected) = oracle.expected_document(entity) else {
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
            ("khala", mode.writes_khala(), khala),
            ("convex", mode.writes_convex(), convex),
        ] {
            if !written {
                continue;
            }
            let ahead_class =
                (store == "khala" && convex_ahead).then(|| "convex_ahead_of_khala".to_owned());
            match held {
                None => {
                    let class = ahead_class.unwrap_or_else(|| format!("{store}_missing"));
                    recorder.record(
                        "X1",
                        &class,
                        Some(&key),
                        format!("{store} has no document"),
                        Some(expected.clone()),
                    );
                }
                Some(document) => {
                    let differing = differing_keys(&expected, &semantic_part(document));
                    if !differing.is_empty() {
                        let behind = document_seq(document)
                            .is_some_and(|seq| seq < oracle.latest_seq(entity));
                        let class = match (ahead_class, behind) {
                            (Some(class), _) => class,
                            (None, true) => format!("{store}_stale"),
                            (None, false) => format!("{store}_wrong"),
                        };
                        let detail = format!(
                            "{store} differs from the oracle in {}",
                            differing.join(", ")
                        );
                        recorder.record("X1", &class, Some(&key), detail, Some(expected.clone()));
                    }
                }
            }
        }
        if let (true, Some(khala), Some(convex)) =
            (mode.writes_khala() && mode.writes_convex(), khala, convex)
        {
            let differing =
                differing_keys(&without_projected_at(khala), &without_projected_at(convex));
            if !differing.is_empty() {
                let detail = format!("khala and convex differ in {}", differing.join(", "));
                recorder.record(
                    "X1",
                    "stores_differ",
                    Some(&key),
                    detail,
                    Some(expected.clone()),
                );
            }
        }
        let runtime_seq = oracle.latest_seq(entity);
        match current.checkpoints.get(&key) {
            None => {
                recorder.record(
                    "X2",
                    "checkpoint_missing",
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
                    recorder.record("X2", "checkpoint_lag", Some(&key), detail, None);
                }
                for (store, written, held) in [
                    ("khala", mode.writes_khala(), khala),
                    ("convex", mode.writes_convex(), convex),
                ] {
                    if let (true, Some(document)) = (written, held)
                        && parity_hash(document) != checkpoint.summary_hash
                    {
                        let detail = format!("checkpoint hash does not match the {store} document");
                        recorder.record(
                            "X2",
                            &format!("{store}_hash_mismatch"),
                            Some(&key),
                            detail,
                            None,
                        );
                    }
                }
            }
        }
    }
    recorder.found
}

fn without_projected_at(document: &Value) -> Value {
    let mut copy = document.clone();
    if let Value::Object(map) = &mut copy {
        map.remove("projected_at");
    }
    copy
}

/// Top-level keys whose values differ (or exist on one side only), sorted.
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

/// The checkpoint hash of a document, computed independently of the models:
/// SHA-256 hex of its sorted, compact JSON without `projected_at`. Matches
/// the models' definition for the values the harness generates (no floats,
/// no control characters).
pub fn parity_hash(document: &Value) -> String {
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
                    out.push_str(&Value::String(key.clone()).to_string());
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
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut text = String::new();
    write(&without_projected_at(document), &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    //! Each invariant catches a planted defect; a consistent observation
    //! passes them all.

    use super::*;
    use crate::case::{EntityRef, IdStyle, RunEventType, Step};
    use crate::observation::{CheckpointView, JournalEntry};
    use khala_runtime::SinkMode;

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
            .map(|violation| (violation.invariant, violation.reason_class.clone()))
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
    fn c3_catches_a_checkpoint_moving_back_except_through_reprojection() {
        let oracle = oracle(2, SinkMode::Dual);
        let before = consistent(&oracle);
        let mut after = before.clone();
        after.checkpoints.get_mut(KEY).unwrap().last_runtime_seq = 1;
        assert_eq!(
            ids(&check_step(&oracle, &before, &after, 3, false)),
            [("C3", "checkpoint_regressed".into())]
        );
        assert_eq!(ids(&check_step(&oracle, &before, &after, 3, true)), []);
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

    #[test]
    fn every_catalogue_entry_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        assert!(CATALOGUE.iter().all(|invariant| seen.insert(invariant.id)));
    }
}
