//! What the backends hold after a step, read in one pass: Khala read
//! models, Convex documents, checkpoints, the journal and the runtime's
//! pending repairs. Plain data; the
//! invariants compare it with the oracle and with the previous observation.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One checkpoint row, as the invariants need it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointView {
    pub document_id: String,
    pub last_runtime_seq: i64,
    pub projection_version: String,
    pub summary_hash: String,
}

/// One journal row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct JournalEntry {
    pub watermark: i64,
    pub doc_key: String,
    pub doc_version: i64,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Observation {
    /// Khala read models by `doc_key`: `(doc_version, payload)`.
    pub khala: BTreeMap<String, (i64, Value)>,
    /// Convex documents by `document_id`.
    pub convex: BTreeMap<String, Value>,
    /// Each Khala read model's stored `payload_hash`, lowercase hex
    /// (`None`: NULL). Not in traces: a hash says nothing a reader of the
    /// timeline needs.
    #[serde(skip)]
    pub khala_hashes: BTreeMap<String, Option<String>>,
    /// Checkpoints by `document_id`.
    pub checkpoints: BTreeMap<String, CheckpointView>,
    /// The journal per topic, in watermark order.
    pub journal: BTreeMap<String, Vec<JournalEntry>>,
    /// The `document_id` of each projection the runtime recorded as failed
    /// and still means to repair (`runtime.projection_repairs`, hardened B1).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub pending_repairs: BTreeSet<String>,
}

/// A document's `runtime_source.seq`, if it has one.
pub fn document_seq(document: &Value) -> Option<i64> {
    document.get("runtime_source")?.get("seq")?.as_i64()
}
