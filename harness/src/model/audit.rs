//! What `khala-parity audit` reads of a live deployment, as plain data:
//! where to read (tables, Convex query functions, how many checkpoints a
//! cycle samples) and what one cycle read, for `check::audit` to judge.

use khala_runtime::ProjectionKind;
use khala_runtime::auditor::AuditorTables;
use khala_runtime::checkpoint::Checkpoint;
use khala_runtime::sink::ConvexQueryPaths;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The PostgreSQL tables of spec §5 an audit reads, by default the
/// runtime's own names. Each is used verbatim in the statements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditTables {
    pub checkpoints: String,
    pub run_summaries: String,
    pub codex_worker_summaries: String,
    pub journal: String,
    pub topic_sequences: String,
}

impl Default for AuditTables {
    fn default() -> Self {
        let auditor = AuditorTables::default();
        AuditTables {
            checkpoints: auditor.checkpoints,
            run_summaries: auditor.run_summaries,
            codex_worker_summaries: auditor.codex_worker_summaries,
            journal: "runtime.sync_stream_events".to_owned(),
            topic_sequences: "runtime.sync_topic_sequences".to_owned(),
        }
    }
}

impl AuditTables {
    pub fn read_model(&self, kind: ProjectionKind) -> &str {
        match kind {
            ProjectionKind::RunSummary => &self.run_summaries,
            ProjectionKind::CodexWorkerSummary => &self.codex_worker_summaries,
        }
    }

    /// Every table with the columns the audit reads of it (spec §5).
    pub fn expected_columns(&self) -> Vec<(&str, &'static [&'static str])> {
        const CHECKPOINT: &[&str] = &[
            "projection_name",
            "entity_id",
            "document_id",
            "last_runtime_seq",
            "projection_version",
            "summary_hash",
            "last_projected_at",
            "inserted_at",
            "updated_at",
        ];
        const READ_MODEL: &[&str] = &["doc_key", "doc_version", "payload", "payload_hash"];
        const JOURNAL: &[&str] = &[
            "topic",
            "watermark",
            "doc_key",
            "doc_version",
            "payload_hash",
        ];
        const SEQUENCES: &[&str] = &["topic", "next_watermark"];
        vec![
            (self.checkpoints.as_str(), CHECKPOINT),
            (self.run_summaries.as_str(), READ_MODEL),
            (self.codex_worker_summaries.as_str(), READ_MODEL),
            (self.journal.as_str(), JOURNAL),
            (self.topic_sequences.as_str(), SEQUENCES),
        ]
    }
}

/// Which checkpoints one cycle compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// The hardened auditor's sweep (B18 fixed): the next `size`
    /// checkpoints in `(projection_name, entity_id)` order after the last
    /// cycle's, wrapping, so that repeated cycles reach every one.
    Sweep { size: u32 },
    /// Every checkpoint, at most `max_entities` per cycle (the sweep goes
    /// on from there in the next cycle).
    All { max_entities: Option<u32> },
}

/// Where and how an audit reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditTarget {
    pub tables: AuditTables,
    pub paths: ConvexQueryPaths,
    pub sampling: Sampling,
}

/// A read-model row as read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KhalaRow {
    pub doc_key: String,
    pub doc_version: i64,
    pub payload: Value,
    /// Hex of the stored bytes.
    pub payload_hash: Option<String>,
}

/// A journal row of a sampled document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalRow {
    pub topic: String,
    pub watermark: i64,
    pub doc_key: String,
    pub doc_version: i64,
    /// Hex of the stored bytes.
    pub payload_hash: Option<String>,
}

/// One topic's journal in aggregate, and its sequence row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicJournal {
    pub topic: String,
    pub rows: i64,
    pub min_watermark: Option<i64>,
    pub max_watermark: Option<i64>,
    /// `next_watermark` of its sequence row (the last allocated), if any.
    pub sequence: Option<i64>,
}

/// Which store something was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditedStore {
    Postgres,
    Convex,
}

impl AuditedStore {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditedStore::Postgres => "postgres",
            AuditedStore::Convex => "convex",
        }
    }
}

/// A row or document that does not parse: a finding, not an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unparseable {
    pub store: AuditedStore,
    /// The table or query function it came from.
    pub source: String,
    /// Its key: a document id, or `projection_name/entity_id`.
    pub id: String,
    pub reason: String,
}

/// What one cycle read, in one read-only snapshot of PostgreSQL and one
/// query per sampled document of Convex.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CycleRead {
    /// 1 for the first cycle.
    pub cycle: usize,
    /// The sampled checkpoints, in sweep order.
    pub checkpoints: Vec<Checkpoint>,
    /// Read-model rows of the sampled documents, by `doc_key`.
    pub khala: BTreeMap<String, KhalaRow>,
    /// Convex documents of the sampled checkpoints: the summary, or `None`
    /// when Convex has none. Documents that did not parse are absent here
    /// and listed in `unparseable`.
    pub convex: BTreeMap<String, Option<Value>>,
    /// The journal rows of the sampled documents, by topic and watermark.
    pub journal: Vec<JournalRow>,
    pub topics: Vec<TopicJournal>,
    pub unparseable: Vec<Unparseable>,
    /// Documents a store holds that no checkpoint records (read only when
    /// a cycle compares every checkpoint: `Sampling::All` unbounded).
    pub uncheckpointed: Vec<(AuditedStore, String)>,
    /// Rows PostgreSQL answered and requests Convex answered.
    pub postgres_rows: u64,
    pub convex_requests: u64,
    /// Wall-clock seconds reading each store (rate limiting included): the
    /// audit rate `bench audit` reports; no check reads them.
    pub postgres_seconds: f64,
    pub convex_seconds: f64,
}
