//! The Convex sink as cases run it: the model's sink (spec §4.3) through the
//! fault proxy, with the original 2,500 ms timeout.
//!
//! While nothing behind the proxy can answer in time (a black hole, a paused
//! backend, answers delayed), the sink's request times out the moment its
//! fate is sealed, instead of after 2.5 s of wall clock: when it has arrived
//! whole at the proxy, or, delayed, when the backend has run it and its
//! answer is held back. The runtime sees what a timeout shows it
//! (`http_request_failed`, "timed out"); the backend holds what it would (a
//! black hole swallowed the request; a paused backend has it queued and runs
//! it when it resumes; a delayed one has run it). Only the waiting is left
//! out, and with it any dependence of a case's outcome on how long it was.

use crate::play::proxy::ProxyLink;
use khala_runtime::ProjectionKind;
use khala_runtime::sink::{
    ConvexHttpSink, DEFAULT_TIMEOUT_MS, ProjectionSink, SinkContext, SinkError,
};
use serde_json::Value;

/// What the sink reports for a request that arrived where nothing answers.
pub const TIMED_OUT: &str = "operation timed out: the request reached the backend's address and no answer came before the timeout";

#[derive(Clone, Debug)]
pub struct ProxiedConvexSink {
    sink: ConvexHttpSink,
    link: ProxyLink,
}

impl ProxiedConvexSink {
    /// `sink` must be configured with the proxy's address. Its requests go
    /// out on fresh connections: the proxy decides a connection's fate when
    /// it accepts it, and cuts open ones when the fault changes, which a
    /// pooled connection could learn only as it is reused.
    pub fn new(sink: ConvexHttpSink, link: ProxyLink) -> Self {
        ProxiedConvexSink {
            sink: sink.with_client(unpooled_client()),
            link,
        }
    }
}

/// An HTTP client that keeps no idle connection, with the original timeout
/// (spec §4.3), built once per process.
fn unpooled_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let timeout = std::time::Duration::from_millis(DEFAULT_TIMEOUT_MS as u64);
            reqwest::Client::builder()
                .connect_timeout(timeout)
                .timeout(timeout)
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_default()
        })
        .clone()
}

#[async_trait::async_trait]
impl ProjectionSink for ProxiedConvexSink {
    fn name(&self) -> &str {
        self.sink.name()
    }

    fn is_transactional(&self) -> bool {
        self.sink.is_transactional()
    }

    /// The model sink's own entry point, as the projector calls it.
    async fn upsert(
        &self,
        context: SinkContext<'_>,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        let upsert = self.sink.upsert(context, kind, document_id, summary);
        self.unless_stranded(upsert).await
    }
}

impl ProxiedConvexSink {
    /// The mutation call itself, ending in `TIMED_OUT` once the request is
    /// stranded.
    pub async fn send(
        &self,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        let send = self.sink.send(kind, document_id, summary);
        self.unless_stranded(send).await
    }

    /// `call`'s result, or `TIMED_OUT` as soon as its request is stranded.
    async fn unless_stranded(
        &self,
        call: impl Future<Output = Result<(), SinkError>>,
    ) -> Result<(), SinkError> {
        if self.link.answers() {
            return call.await;
        }
        let stranded = self.link.stranded();
        tokio::select! {
            result = call => result,
            () = self.link.stranded_beyond(stranded) => Err(SinkError::HttpRequestFailed {
                reason: TIMED_OUT.to_owned(),
            }),
        }
    }
}
