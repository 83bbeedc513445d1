//! Dual publish (spec §4.5): several sinks called in order, halting at the
//! first failure, with no compensation for the sinks that already succeeded.

use super::{NoopSink, ProjectionSink, SinkContext, SinkError};
use crate::summary::ProjectionKind;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct FanoutSink {
    sinks: Vec<Arc<dyn ProjectionSink>>,
}

impl FanoutSink {
    /// `transactional_first` is the B1 fix: the sinks whose effects roll back
    /// with the projector's transaction run before the ones whose effects
    /// escape it, so a failure never leaves an external store ahead of the
    /// transaction (the relative order within each group is kept). With it
    /// off, the configured order is used, as in the original. An empty list
    /// becomes `[noop]`.
    pub fn new(sinks: Vec<Arc<dyn ProjectionSink>>, transactional_first: bool) -> Self {
        let mut sinks = sinks;
        if sinks.is_empty() {
            sinks.push(Arc::new(NoopSink));
        }
        if transactional_first {
            // A stable sort keeps the configured order inside each group.
            sinks.sort_by_key(|sink| !sink.is_transactional());
        }
        FanoutSink { sinks }
    }

    /// The sink names in call order.
    pub fn order(&self) -> Vec<&str> {
        self.sinks.iter().map(|sink| sink.name()).collect()
    }
}

#[async_trait::async_trait]
impl ProjectionSink for FanoutSink {
    fn name(&self) -> &str {
        "fanout"
    }

    fn is_transactional(&self) -> bool {
        self.sinks.iter().all(|sink| sink.is_transactional())
    }

    async fn upsert(
        &self,
        context: SinkContext<'_>,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        let SinkContext { conn, after_commit } = context;
        for sink in &self.sinks {
            let child = SinkContext {
                conn: &mut *conn,
                after_commit: &mut *after_commit,
            };
            if let Err(source) = sink.upsert(child, kind, document_id, summary).await {
                return Err(SinkError::FanoutSinkFailed {
                    sink: sink.name().to_owned(),
                    source: Box::new(source),
                });
            }
        }
        Ok(())
    }
}
