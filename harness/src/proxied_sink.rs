//! The Convex sink as cases run it: the model's sink (spec §4.3) through the
//! fault proxy, with the original 2,500 ms timeout.
//!
//! While nothing behind the proxy can answer (a black hole, a paused
//! backend), the sink's request times out the moment it has arrived whole
//! at the proxy, instead of after 2.5 s of wall clock. The runtime sees what
//! a timeout shows it (`http_request_failed`, "timed out"); the backend holds
//! what it would (a black hole swallowed the request; a paused backend has it
//! queued and runs it when it resumes). Only the waiting is left out, and
//! with it any dependence of a case's outcome on how long the wait was.

use crate::proxy::ProxyLink;
use khala_runtime::ProjectionKind;
use khala_runtime::sink::{ConvexHttpSink, ProjectionSink, SinkContext, SinkError};
use serde_json::Value;

/// What the sink reports for a request that arrived where nothing answers.
pub const TIMED_OUT: &str = "operation timed out: the request reached the backend's address and no answer came before the timeout";

#[derive(Clone, Debug)]
pub struct ProxiedConvexSink {
    sink: ConvexHttpSink,
    link: ProxyLink,
}

impl ProxiedConvexSink {
    /// `sink` must be configured with the proxy's address.
    pub fn new(sink: ConvexHttpSink, link: ProxyLink) -> Self {
        ProxiedConvexSink { sink, link }
    }
}

#[async_trait::async_trait]
impl ProjectionSink for ProxiedConvexSink {
    fn name(&self) -> &str {
        self.sink.name()
    }

    fn is_transactional(&self) -> bool {
        self.sink.is_transactional()
    }

    async fn upsert(
        &self,
        _: SinkContext<'_>,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        let send = self.sink.send(kind, document_id, summary);
        if self.link.answers() {
            return send.await;
        }
        let arrived = self.link.arrived();
        tokio::select! {
            result = send => result,
            () = self.link.arrived_beyond(arrived) => Err(SinkError::HttpRequestFailed {
                reason: TIMED_OUT.to_owned(),
            }),
        }
    }
}
