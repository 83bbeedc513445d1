//! The checks of `khala-parity audit` over what one cycle read of a live
//! deployment, with no oracle: the hardened auditor's own comparison
//! (`khala_runtime::auditor`: checkpoint against Khala and Convex, hashes
//! and sequence fields, lag drift, Khala missing) turned into violations,
//! plus what the stores say of each other alone: Convex value losses (V1,
//! X1), Khala versions against their summaries (S2), the journal against
//! the read models and the topic sequences (J1, W2, W3), and rows or
//! documents that do not parse (J2). Pure: every divergence is returned.

use crate::check::invariants::short_hash as short;
use crate::model::audit::{AuditedStore, CycleRead, JournalRow};
use crate::model::reason::{
    AuditClass, AuditorReportClass, CheckpointClass, DeploymentClass, JournalClass, ReasonClass,
    SinkClass, StoreClass, ValueClass,
};
use crate::model::violation::Violation;
use khala_runtime::ProjectionKind;
use khala_runtime::auditor::{
    self, ConvexCheck, CycleReport, EntityComparison, ReadModelRow, ReasonClass as AuditorClass,
};
use khala_runtime::checkpoint::Checkpoint;
use khala_runtime::hashing::summary_hash;
use khala_runtime::sink::convex_value::{as_sent, int_precision_lost, refusal_of};
use serde_json::Value;
use std::collections::BTreeMap;

/// One audited cycle: the auditor's report over the sampled checkpoints,
/// and every violation found.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditedCycle {
    pub report: CycleReport,
    pub violations: Vec<Violation>,
}

struct Found<'a> {
    read: &'a CycleRead,
    violations: Vec<Violation>,
}

impl Found<'_> {
    fn record(
        &mut self,
        class: impl Into<ReasonClass>,
        document_id: Option<&str>,
        detail: String,
        checkpoint: Option<&Checkpoint>,
    ) {
        let reason_class = class.into();
        let khala = document_id
            .and_then(|key| self.read.khala.get(key))
            .map(|row| row.payload.clone());
        let convex = document_id
            .and_then(|key| self.read.convex.get(key))
            .and_then(Clone::clone);
        self.violations.push(Violation {
            invariant: reason_class.invariant(),
            severity: reason_class.severity(),
            reason_class,
            document_id: document_id.map(str::to_owned),
            step_index: self.read.cycle,
            detail,
            expected: None,
            khala,
            convex,
            checkpoint: checkpoint.and_then(|row| serde_json::to_value(row).ok()),
        });
    }
}

fn is_summary_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// `runtime_source.seq` of a summary, else `latest_seq`.
fn seq_of(summary: &Value) -> Option<i64> {
    summary
        .pointer("/runtime_source/seq")
        .and_then(Value::as_i64)
        .or_else(|| summary.get("latest_seq").and_then(Value::as_i64))
}

fn checkpoint_at(checkpoint: &Checkpoint) -> String {
    format!(
        "the checkpoint is at seq {} with hash {}…",
        checkpoint.last_runtime_seq,
        short(&checkpoint.summary_hash)
    )
}

/// Why a comparison is a mismatch, in a sentence with the numbers.
fn explain_khala(
    checkpoint: &Checkpoint,
    class: AuditorClass,
    lag: i64,
    khala: Option<&ReadModelRow>,
) -> String {
    let at = checkpoint_at(checkpoint);
    match (class, khala) {
        (AuditorClass::KhalaMissing, _) => {
            format!("{at}, and Khala has no read-model row for the document")
        }
        (AuditorClass::UnsupportedProjection, _) => format!(
            "{at}, for projection `{}`, which has no read model to compare with",
            checkpoint.projection_name
        ),
        (_, Some(row)) => {
            let hash = summary_hash(row.payload.as_ref().unwrap_or(&Value::Null));
            let position = if lag > 0 {
                format!("{lag} behind the checkpoint")
            } else if lag < 0 {
                format!("{} ahead of the checkpoint", -lag)
            } else {
                "at the checkpoint's version".to_owned()
            };
            format!(
                "{at}; Khala's row is at doc_version {} ({position}) with hash {}…",
                row.doc_version,
                short(&hash)
            )
        }
        (_, None) => at,
    }
}

fn explain_convex(
    checkpoint: &Checkpoint,
    check: &ConvexCheck,
    document: Option<&Value>,
) -> String {
    let at = checkpoint_at(checkpoint);
    match document {
        None => format!("{at}, and Convex has no document for it"),
        Some(document) => format!(
            "{at}; Convex's document is at seq {} ({}) with hash {}…",
            seq_of(document).map_or("-".to_owned(), |seq| seq.to_string()),
            match check.lag_drift {
                0 => "at the checkpoint's seq".to_owned(),
                lag if lag > 0 => format!("{lag} behind the checkpoint"),
                lag => format!("{} ahead of the checkpoint", -lag),
            },
            short(&summary_hash(document))
        ),
    }
}

fn khala_class(class: AuditorClass, lag: i64) -> Option<ReasonClass> {
    Some(match class {
        AuditorClass::None => return None,
        AuditorClass::KhalaMissing => StoreClass::KhalaMissing.into(),
        AuditorClass::SummaryHashMismatch => AuditorReportClass::SummaryHashMismatch.into(),
        AuditorClass::HashAndLagDrift => AuditorReportClass::HashAndLagDrift.into(),
        AuditorClass::LagDrift if lag < 0 => SinkClass::KhalaAheadOfCheckpoint.into(),
        AuditorClass::LagDrift => AuditorReportClass::LagDrift.into(),
        AuditorClass::UnsupportedProjection => AuditorReportClass::UnsupportedProjection.into(),
        AuditorClass::ConvexMissing => StoreClass::ConvexMissing.into(),
        AuditorClass::ConvexHashMismatch => CheckpointClass::ConvexHashMismatch.into(),
        AuditorClass::ConvexLagDrift => AuditorReportClass::ConvexLagDrift.into(),
    })
}

/// Judges one cycle's read.
pub fn check_cycle(read: &CycleRead) -> AuditedCycle {
    let mut found = Found {
        read,
        violations: Vec::new(),
    };
    let mut comparisons: Vec<EntityComparison> = Vec::with_capacity(read.checkpoints.len());
    let convex_unparseable: Vec<&str> = read
        .unparseable
        .iter()
        .filter(|entry| entry.store == AuditedStore::Convex)
        .map(|entry| entry.id.as_str())
        .collect();
    for entry in &read.unparseable {
        let class = match entry.store {
            AuditedStore::Convex => DeploymentClass::DocumentUnparseable,
            AuditedStore::Postgres => DeploymentClass::RowUnparseable,
        };
        found.record(
            class,
            Some(&entry.id),
            format!(
                "{} `{}` answered for it: {}",
                entry.store.as_str(),
                entry.source,
                entry.reason
            ),
            None,
        );
    }
    for checkpoint in &read.checkpoints {
        let document_id = checkpoint.document_id.as_str();
        let kind = checkpoint.projection_name.parse::<ProjectionKind>().ok();
        let mut shape = Vec::new();
        if !is_summary_hash(&checkpoint.summary_hash) {
            shape.push(format!(
                "summary_hash {:?} is not 64 lowercase hex characters",
                checkpoint.summary_hash
            ));
        }
        if checkpoint.last_runtime_seq < 0 {
            shape.push(format!(
                "last_runtime_seq {} is negative",
                checkpoint.last_runtime_seq
            ));
        }
        if let Some(kind) = kind
            && kind.document_id(&checkpoint.entity_id) != checkpoint.document_id
        {
            shape.push(format!(
                "document_id is not `{}`",
                kind.document_id(&checkpoint.entity_id)
            ));
        }
        if !shape.is_empty() {
            found.record(
                DeploymentClass::RowUnparseable,
                Some(document_id),
                format!(
                    "checkpoint {}/{}: {}",
                    checkpoint.projection_name,
                    checkpoint.entity_id,
                    shape.join("; ")
                ),
                Some(checkpoint),
            );
        }

        let khala_row = read.khala.get(document_id);
        let khala_payload = khala_row
            .map(|row| &row.payload)
            .filter(|payload| payload.is_object());
        if let Some(row) = khala_row
            && !row.payload.is_object()
        {
            found.record(
                DeploymentClass::RowUnparseable,
                Some(document_id),
                format!(
                    "Khala's read-model row holds a payload that is not an object: {}",
                    row.payload
                ),
                Some(checkpoint),
            );
        }
        let model_row = khala_row.map(|row| ReadModelRow {
            doc_version: row.doc_version,
            payload: khala_payload.cloned(),
        });
        let khala = auditor::compare_khala(checkpoint, model_row.as_ref());

        let convex_raw = match read.convex.get(document_id) {
            Some(Some(document)) if !document.is_object() => {
                found.record(
                    DeploymentClass::DocumentUnparseable,
                    Some(document_id),
                    format!("Convex holds a summary that is not an object: {document}"),
                    Some(checkpoint),
                );
                None
            }
            Some(document) => Some(document.as_ref()),
            None => None,
        };
        let convex_check = match (kind, convex_raw) {
            (Some(_), Some(document)) if !convex_unparseable.contains(&document_id) => {
                let document = match (document, khala_payload) {
                    (Some(document), Some(payload)) => Some(as_sent(document, payload)),
                    (document, _) => document.cloned(),
                };
                Some((
                    auditor::compare_convex(checkpoint, document.as_ref()),
                    document,
                ))
            }
            _ => None,
        };
        let comparison = auditor::comparison(
            checkpoint,
            khala,
            convex_check.as_ref().map(|(check, _)| check.clone()),
        );
        if let Some(class) = khala_class(khala.0, khala.1) {
            found.record(
                class,
                Some(document_id),
                explain_khala(checkpoint, khala.0, khala.1, model_row.as_ref()),
                Some(checkpoint),
            );
        }
        if let Some((check, document)) = &convex_check
            && let Some(class) = khala_class(check.reason_class, check.lag_drift)
        {
            found.record(
                class,
                Some(document_id),
                explain_convex(checkpoint, check, document.as_ref()),
                Some(checkpoint),
            );
        }
        comparisons.push(comparison);

        // What the two stores say of each other.
        if let (Some(payload), Some(Some(document))) = (khala_payload, convex_raw) {
            if int_precision_lost(payload, document) {
                found.record(
                    StoreClass::ConvexIntPrecisionLost,
                    Some(document_id),
                    "Convex holds an integer of Khala's summary above 2^53 as its nearest Float64: it cannot equal what Khala holds".to_owned(),
                    Some(checkpoint),
                );
            } else if let Some(refusal) = refusal_of(document_id, payload) {
                found.record(
                    ValueClass::ConvexUnholdableStored,
                    Some(document_id),
                    format!("Khala holds a summary Convex cannot hold as it is: {refusal}"),
                    Some(checkpoint),
                );
            } else if summary_hash(&as_sent(document, payload)) != summary_hash(payload) {
                found.record(
                    StoreClass::StoresDiffer,
                    Some(document_id),
                    format!(
                        "Khala's summary (hash {}…) and Convex's (hash {}…) differ",
                        short(&summary_hash(payload)),
                        short(&summary_hash(document))
                    ),
                    Some(checkpoint),
                );
            }
        }
        if let (Some(row), Some(payload)) = (khala_row, khala_payload)
            && let Some(seq) = seq_of(payload)
            && seq != row.doc_version
        {
            found.record(
                SinkClass::KhalaVersionNotSeq,
                Some(document_id),
                format!(
                    "Khala's row is at doc_version {} but holds the summary of seq {seq}",
                    row.doc_version
                ),
                Some(checkpoint),
            );
        }
    }
    for (store, document_id) in &read.uncheckpointed {
        let holder = match store {
            AuditedStore::Postgres => "Khala",
            AuditedStore::Convex => "Convex",
        };
        found.record(
            CheckpointClass::CheckpointMissing,
            Some(document_id),
            format!("{holder} holds the document but no checkpoint records it: no auditor cycle will ever compare it (a partial dual publish leaves this)"),
            None,
        );
    }
    check_journal(&mut found);
    let summary = auditor::summarise(&comparisons);
    let telemetry = auditor::events(&summary, &comparisons, true, true);
    AuditedCycle {
        report: CycleReport {
            summary,
            comparisons,
            telemetry,
        },
        violations: found.violations,
    }
}

/// J1, W2, W3 over the journal rows of the sampled documents and every
/// topic's bounds.
/// X9: the live audit of a case that ended in parity (dual mode, no
/// violation): the cycle it judged, or why it could not read a store. The
/// stores agree with the oracle, so whatever the audit reports is a false
/// alarm, and a store it cannot read (which the harness just read) a
/// failure of the audit; each is one violation at `step_index`.
pub fn check_live_audit(audited: Result<&AuditedCycle, &str>, step_index: usize) -> Vec<Violation> {
    let violation = |class: AuditClass, document_id: Option<String>, detail: String| Violation {
        invariant: ReasonClass::from(class).invariant(),
        severity: ReasonClass::from(class).severity(),
        reason_class: class.into(),
        document_id,
        step_index,
        detail,
        expected: None,
        khala: None,
        convex: None,
        checkpoint: None,
    };
    match audited {
        Err(error) => vec![violation(
            AuditClass::LiveAuditFailed,
            None,
            format!("the audit could not read the stores: {error}"),
        )],
        Ok(cycle) => cycle
            .violations
            .iter()
            .map(|found| Violation {
                khala: found.khala.clone(),
                convex: found.convex.clone(),
                checkpoint: found.checkpoint.clone(),
                ..violation(
                    AuditClass::LiveAuditFalseAlarm,
                    found.document_id.clone(),
                    format!(
                        "the audit reported {} `{}`: {}",
                        found.invariant, found.reason_class, found.detail
                    ),
                )
            })
            .collect(),
    }
}

fn check_journal(found: &mut Found<'_>) {
    let read = found.read;
    let mut by_document: BTreeMap<(&str, &str), Vec<&JournalRow>> = BTreeMap::new();
    for row in &read.journal {
        by_document
            .entry((row.topic.as_str(), row.doc_key.as_str()))
            .or_default()
            .push(row);
    }
    let mut newest: BTreeMap<&str, &JournalRow> = BTreeMap::new();
    for ((_, doc_key), rows) in &by_document {
        // Rows arrive by watermark within each topic.
        for pair in rows.windows(2) {
            if pair[1].doc_version < pair[0].doc_version {
                found.record(
                    JournalClass::JournalVersionRegressed,
                    Some(doc_key),
                    format!(
                        "on topic {} watermark {} has doc_version {} after watermark {} had {}",
                        pair[1].topic,
                        pair[1].watermark,
                        pair[1].doc_version,
                        pair[0].watermark,
                        pair[0].doc_version
                    ),
                    None,
                );
            }
        }
        if let Some(last) = rows.last() {
            let entry = newest.entry(doc_key).or_insert(last);
            if last.watermark > entry.watermark {
                *entry = last;
            }
        }
    }
    for (doc_key, last) in newest {
        let Some(row) = read.khala.get(doc_key) else {
            continue;
        };
        let hash_differs = matches!(
            (&row.payload_hash, &last.payload_hash),
            (Some(row_hash), Some(journal_hash)) if row_hash != journal_hash
        );
        if row.doc_version != last.doc_version || hash_differs {
            found.record(
                DeploymentClass::ReadModelNotJournaled,
                Some(doc_key),
                format!(
                    "the read-model row is at doc_version {} (payload_hash {}); the newest journal row, watermark {} on {}, is at doc_version {} (payload_hash {})",
                    row.doc_version,
                    row.payload_hash.as_deref().map_or("-", short),
                    last.watermark,
                    last.topic,
                    last.doc_version,
                    last.payload_hash.as_deref().map_or("-", short)
                ),
                None,
            );
        }
    }
    for topic in &read.topics {
        if let (Some(min), Some(max)) = (topic.min_watermark, topic.max_watermark)
            && topic.rows != max - min + 1
        {
            found.record(
                JournalClass::JournalGap,
                None,
                format!(
                    "topic {} holds {} journal rows between watermarks {min} and {max}: {} missing",
                    topic.topic,
                    topic.rows,
                    max - min + 1 - topic.rows
                ),
                None,
            );
        }
        if let Some(max) = topic.max_watermark
            && topic.sequence.is_none_or(|sequence| sequence < max)
        {
            found.record(
                DeploymentClass::TopicSequenceBehind,
                None,
                format!(
                    "topic {}'s sequence is {} but its journal holds watermark {max}",
                    topic.topic,
                    topic
                        .sequence
                        .map_or("absent".to_owned(), |sequence| sequence.to_string())
                ),
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit::{KhalaRow, TopicJournal, Unparseable};
    use chrono::NaiveDateTime;
    use serde_json::json;

    const DOC: &str = "runtime/run_summary:run_0";
    const TOPIC: &str = "runtime.run_summaries";

    fn summary(seq: i64, status: &str) -> Value {
        json!({
            "run_id": "run_0",
            "status": status,
            "latest_seq": seq,
            "runtime_source": {"entity": "run", "run_id": "run_0", "seq": seq},
            "projected_at": "2026-02-19T20:00:01.000000Z",
        })
    }

    fn checkpoint(seq: i64, hashed: &Value) -> Checkpoint {
        let at = NaiveDateTime::default();
        Checkpoint {
            projection_name: "run_summary".to_owned(),
            entity_id: "run_0".to_owned(),
            document_id: DOC.to_owned(),
            last_runtime_seq: seq,
            projection_version: "convex_summary_v1".to_owned(),
            summary_hash: summary_hash(hashed),
            last_projected_at: at,
            inserted_at: at,
            updated_at: at,
        }
    }

    fn journal(watermark: i64, doc_version: i64) -> JournalRow {
        JournalRow {
            topic: TOPIC.to_owned(),
            watermark,
            doc_key: DOC.to_owned(),
            doc_version,
            payload_hash: None,
        }
    }

    /// Every store agreeing at seq 2: a journal of two rows, a sequence at 2.
    fn agreeing() -> CycleRead {
        let payload = summary(2, "running");
        CycleRead {
            cycle: 1,
            checkpoints: vec![checkpoint(2, &payload)],
            khala: BTreeMap::from([(
                DOC.to_owned(),
                KhalaRow {
                    doc_key: DOC.to_owned(),
                    doc_version: 2,
                    payload: payload.clone(),
                    payload_hash: None,
                },
            )]),
            convex: BTreeMap::from([(DOC.to_owned(), Some(payload))]),
            journal: vec![journal(1, 1), journal(2, 2)],
            topics: vec![TopicJournal {
                topic: TOPIC.to_owned(),
                rows: 2,
                min_watermark: Some(1),
                max_watermark: Some(2),
                sequence: Some(2),
            }],
            ..CycleRead::default()
        }
    }

    fn classes(read: &CycleRead) -> Vec<&'static str> {
        check_cycle(read)
            .violations
            .iter()
            .map(|violation| violation.reason_class.name())
            .collect()
    }

    #[test]
    fn agreeing_stores_show_nothing() {
        let audited = check_cycle(&agreeing());
        assert_eq!(audited.violations, Vec::new());
        assert_eq!(audited.report.summary.sampled, 1);
        assert_eq!(audited.report.summary.mismatches, 0);
    }

    /// X9: the live audit of a case that ended in parity reports nothing;
    /// each thing it reports is a false alarm naming what it reported, and
    /// a store it could not read is a failure.
    #[test]
    fn x9_catches_a_live_audit_that_reports_or_cannot_read_a_case_in_parity() {
        let clean = check_cycle(&agreeing());
        assert_eq!(check_live_audit(Ok(&clean), 9), Vec::new());

        let mut read = agreeing();
        read.uncheckpointed
            .push((AuditedStore::Convex, DOC.to_owned()));
        let alarmed = check_live_audit(Ok(&check_cycle(&read)), 9);
        assert_eq!(alarmed.len(), 1, "{alarmed:?}");
        assert_eq!(alarmed[0].invariant, "X9");
        assert_eq!(
            alarmed[0].reason_class.to_string(),
            "live_audit_false_alarm"
        );
        assert_eq!(alarmed[0].document_id.as_deref(), Some(DOC));
        assert_eq!(alarmed[0].step_index, 9);
        assert!(
            alarmed[0].detail.contains("`checkpoint_missing`"),
            "{}",
            alarmed[0].detail
        );

        let failed = check_live_audit(Err("convex at http://x: refused"), 4);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].reason_class.to_string(), "live_audit_failed");
        assert!(failed[0].detail.ends_with("convex at http://x: refused"));
    }

    #[test]
    fn each_planted_divergence_is_named_with_its_document() {
        type Plant = fn(&mut CycleRead);
        let plants: [(Plant, &[&str]); 12] = [
            (
                |read| {
                    read.uncheckpointed
                        .push((AuditedStore::Convex, DOC.to_owned()));
                },
                &["checkpoint_missing"],
            ),
            (
                |read| {
                    read.khala.clear();
                },
                &["khala_missing"],
            ),
            (
                |read| {
                    read.convex.insert(DOC.to_owned(), None);
                },
                &["convex_missing"],
            ),
            (
                |read| {
                    read.checkpoints[0].last_runtime_seq = 5;
                },
                &["lag_drift", "convex_lag_drift"],
            ),
            (
                |read| {
                    read.khala.get_mut(DOC).unwrap().payload["status"] = json!("other");
                },
                &["summary_hash_mismatch", "stores_differ"],
            ),
            (
                |read| {
                    let row = read.khala.get_mut(DOC).unwrap();
                    row.doc_version = 3;
                },
                &[
                    "khala_ahead_of_checkpoint",
                    "khala_version_not_seq",
                    "read_model_not_journaled",
                ],
            ),
            (
                |read| {
                    read.journal[1].doc_version = 0;
                },
                &["journal_version_regressed", "read_model_not_journaled"],
            ),
            (
                |read| {
                    read.topics[0].rows = 1;
                },
                &["journal_gap"],
            ),
            (
                |read| {
                    read.topics[0].sequence = Some(1);
                },
                &["topic_sequence_behind"],
            ),
            (
                |read| {
                    read.checkpoints[0].summary_hash = "short".to_owned();
                },
                &[
                    "row_unparseable",
                    "summary_hash_mismatch",
                    "convex_hash_mismatch",
                ],
            ),
            (
                |read| {
                    read.convex.remove(DOC);
                    read.unparseable.push(Unparseable {
                        store: AuditedStore::Convex,
                        source: "runtime:getRunSummary".to_owned(),
                        id: DOC.to_owned(),
                        reason: "no summary".to_owned(),
                    });
                },
                &["document_unparseable"],
            ),
            (
                |read| {
                    read.convex
                        .insert(DOC.to_owned(), Some(json!("not an object")));
                },
                &["document_unparseable"],
            ),
        ];
        for (index, (plant, expected)) in plants.iter().enumerate() {
            let mut read = agreeing();
            plant(&mut read);
            let found = classes(&read);
            assert_eq!(found, expected.to_vec(), "plant {index}");
            let audited = check_cycle(&read);
            for violation in audited.violations.iter().filter(|v| {
                v.reason_class.name() != "journal_gap"
                    && v.reason_class.name() != "topic_sequence_behind"
            }) {
                assert_eq!(violation.document_id.as_deref(), Some(DOC), "plant {index}");
            }
        }
    }

    #[test]
    fn a_rounded_integer_above_2_pow_53_is_a_value_loss() {
        let mut read = agreeing();
        let mut sent = summary(2, "running");
        sent["metadata"] = json!({"big": 9_007_199_254_740_993_i64});
        let mut held = sent.clone();
        held["metadata"]["big"] = json!(9_007_199_254_740_992.0);
        read.checkpoints = vec![checkpoint(2, &sent)];
        read.khala.get_mut(DOC).unwrap().payload = sent;
        read.convex.insert(DOC.to_owned(), Some(held));
        assert_eq!(
            classes(&read),
            ["convex_hash_mismatch", "convex_int_precision_lost"]
        );
    }

    #[test]
    fn a_summary_convex_cannot_hold_in_khala_is_named() {
        let mut read = agreeing();
        let mut sent = summary(2, "running");
        sent["metadata"] = json!({"caf\u{e9}": 1});
        read.checkpoints = vec![checkpoint(2, &sent)];
        read.khala.get_mut(DOC).unwrap().payload = sent.clone();
        read.convex.insert(DOC.to_owned(), Some(sent));
        assert_eq!(classes(&read), ["convex_unholdable_stored"]);
    }
}
