//! The sink contract (spec §4.1) and the errors sinks return, with the
//! original's reason classes (spec §3.5, §4.3).

use crate::notifier::StreamWake;
use crate::summary::ProjectionKind;
use crate::watermark::WatermarkError;
use serde_json::Value;
use sqlx::PgConnection;

/// What a sink is handed besides the document: the projector's open
/// transaction (Khala writes join it, as Ecto's nested transactions did) and a
/// list of wake-ups to send after commit (used by the hardened B11 fix).
pub struct SinkContext<'a> {
    pub conn: &'a mut PgConnection,
    pub after_commit: &'a mut Vec<StreamWake>,
}

/// A destination for projected summaries. The original had two callbacks,
/// `upsert_run_summary` and `upsert_codex_worker_summary`; here they are one
/// method keyed by `ProjectionKind`, which is the same contract.
#[async_trait::async_trait]
pub trait ProjectionSink: Send + Sync + std::fmt::Debug {
    /// The sink's name, used in `fanout_sink_failed` errors and reports.
    fn name(&self) -> &str;

    /// Whether the sink's effects commit and roll back with the projector's
    /// transaction (Khala) or escape it (Convex over HTTP, Noop).
    fn is_transactional(&self) -> bool;

    async fn upsert(
        &self,
        context: SinkContext<'_>,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError>;
}

/// Why a sink failed. Variants mirror the original's error terms.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("summary has no non-negative integer runtime_source.seq")]
    MissingRuntimeSeq,
    #[error("summary is not a JSON object")]
    InvalidSummaryPayload,
    #[error("allocate watermark: {0}")]
    Watermark(#[from] WatermarkError),
    #[error("upsert read model `{doc_key}`: {detail}")]
    ReadModelUpsertFailed { doc_key: String, detail: String },
    #[error("insert stream event `{doc_key}` on `{topic}`: {detail}")]
    StreamEventInsertFailed {
        topic: String,
        doc_key: String,
        detail: String,
    },
    #[error("fanout sink `{sink}` failed: {source}")]
    FanoutSinkFailed {
        sink: String,
        source: Box<SinkError>,
    },
    #[error("convex base_url is blank")]
    MissingBaseUrl,
    #[error("convex request failed: {reason}")]
    HttpRequestFailed { reason: String },
    #[error("convex answered HTTP {status}: {body}")]
    HttpStatus { status: u16, body: String },
    #[error("convex function failed: {message}")]
    ConvexError { message: String },
    #[error("convex answered unexpected JSON: {body}")]
    InvalidResponse { body: String },
    #[error("convex answered invalid JSON: {body}")]
    InvalidJson { body: String },
    /// Any other sink's failure, with its own reason class.
    #[error("{sink} failed ({reason_class}): {message}")]
    Failed {
        sink: String,
        reason_class: String,
        message: String,
    },
}

impl SinkError {
    /// The telemetry `reason_class` (spec §3.5): the atom of a bare atom or a
    /// 2-tuple, `"error"` for the 3-tuples `http_status` and
    /// `fanout_sink_failed`.
    pub fn reason_class(&self) -> String {
        let class = match self {
            SinkError::MissingRuntimeSeq => "missing_runtime_seq",
            SinkError::InvalidSummaryPayload => "invalid_summary_payload",
            SinkError::Watermark(inner) => inner.reason_class(),
            SinkError::ReadModelUpsertFailed { .. } => "read_model_upsert_failed",
            SinkError::StreamEventInsertFailed { .. } => "stream_event_insert_failed",
            SinkError::FanoutSinkFailed { .. } | SinkError::HttpStatus { .. } => "error",
            SinkError::MissingBaseUrl => "missing_base_url",
            SinkError::HttpRequestFailed { .. } => "http_request_failed",
            SinkError::ConvexError { .. } => "convex_error",
            SinkError::InvalidResponse { .. } => "invalid_response",
            SinkError::InvalidJson { .. } => "invalid_json",
            SinkError::Failed { reason_class, .. } => return reason_class.clone(),
        };
        class.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_classes_follow_the_tuple_rule() {
        let fanout = SinkError::FanoutSinkFailed {
            sink: "khala".into(),
            source: Box::new(SinkError::MissingBaseUrl),
        };
        assert_eq!(fanout.reason_class(), "error");
        assert_eq!(
            SinkError::HttpStatus {
                status: 500,
                body: String::new()
            }
            .reason_class(),
            "error"
        );
        assert_eq!(
            SinkError::ConvexError {
                message: "x".into()
            }
            .reason_class(),
            "convex_error"
        );
        assert_eq!(SinkError::MissingBaseUrl.reason_class(), "missing_base_url");
        assert_eq!(
            SinkError::Watermark(WatermarkError::InvalidTopic { topic: " ".into() }).reason_class(),
            "invalid_topic"
        );
        let custom = SinkError::Failed {
            sink: "t".into(),
            reason_class: "simulated_sink_failure".into(),
            message: "m".into(),
        };
        assert_eq!(custom.reason_class(), "simulated_sink_failure");
    }
}
