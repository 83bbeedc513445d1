//! The Convex HTTP sink (spec §4.3) and a reader of what Convex holds, both
//! over Convex's HTTP API (`POST /api/mutation`, `POST /api/query`). Works
//! against a real Convex deployment with `models/convex` deployed: a
//! function's failure is recognised whether the deployment answers it with
//! 200 (the open-source backend) or 560 (the other answer its official
//! client accepts), and every result is decoded by Convex's types
//! (`convex_value`: `3.0` is the 3 the runtime sent, `$integer` and
//! `$float` are numbers) before anyone compares it.

use super::convex_value::decode_export;
use super::{ProjectionSink, SinkContext, SinkError};
use crate::summary::ProjectionKind;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The default request timeout (spec §4.3).
pub const DEFAULT_TIMEOUT_MS: i64 = 2500;

/// `:convex_http_sink` configuration (spec §4.3, §12), before normalisation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvexSinkConfig {
    pub base_url: String,
    pub admin_key: String,
    pub run_summary_mutation_path: String,
    pub codex_worker_summary_mutation_path: String,
    /// Non-positive values mean the default, as in the original.
    pub request_timeout_ms: i64,
}

impl Default for ConvexSinkConfig {
    fn default() -> Self {
        ConvexSinkConfig {
            base_url: String::new(),
            admin_key: String::new(),
            run_summary_mutation_path: "runtime:upsertRunSummary".to_owned(),
            codex_worker_summary_mutation_path: "runtime:upsertCodexWorkerSummary".to_owned(),
            request_timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

/// An HTTP client of one Convex deployment: base URL without trailing `/`
/// (blank = none), admin key (blank = no header) and timeout.
#[derive(Clone, Debug)]
pub struct ConvexHttp {
    base_url: String,
    admin_key: String,
    timeout: Duration,
    client: reqwest::Client,
}

impl ConvexHttp {
    pub fn new(base_url: &str, admin_key: &str, timeout_ms: i64) -> Self {
        let timeout_ms = if timeout_ms > 0 {
            timeout_ms
        } else {
            DEFAULT_TIMEOUT_MS
        };
        let timeout = Duration::from_millis(timeout_ms as u64);
        ConvexHttp {
            base_url: base_url.trim().trim_end_matches('/').to_owned(),
            admin_key: admin_key.trim().to_owned(),
            timeout,
            client: shared_client(timeout),
        }
    }

    /// The request timeout the client was built with (the unit tests').
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same calls over `client` (its own timeouts and connection pool)
    /// instead of the process's shared one.
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// Calls a function and classifies the answer as the sink does. `args`
    /// goes in the one-element array form of `ConvexHttpClient`.
    pub async fn call(
        &self,
        endpoint: Endpoint,
        path: &str,
        args: Value,
    ) -> Result<Value, SinkError> {
        if self.base_url.is_empty() {
            return Err(SinkError::MissingBaseUrl);
        }
        let body = json!({"path": path, "format": "convex_encoded_json", "args": [args]});
        let mut request = self
            .client
            .post(format!("{}/api/{}", self.base_url, endpoint.as_str()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if !self.admin_key.is_empty() {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!("Convex {}", self.admin_key),
            );
        }
        let response = request
            .send()
            .await
            .map_err(|error| SinkError::HttpRequestFailed {
                reason: describe(&error),
            })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| SinkError::HttpRequestFailed {
                reason: describe(&error),
            })?;
        let body = String::from_utf8_lossy(&bytes).into_owned();
        classify(status, &body)
    }
}

/// The HTTP client for `timeout`, built once per process and timeout.
/// Building one loads the system's root certificates (the platform verifier
/// reads every file under /etc/ssl/certs), about a millisecond of CPU, and a
/// harness builds a sink and a reader for every case; a `Client` is a cheap
/// handle to one connection pool, which keeps connections alive across them.
fn shared_client(timeout: Duration) -> reqwest::Client {
    static CLIENTS: OnceLock<Mutex<HashMap<Duration, reqwest::Client>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    // A panic while holding the lock cannot leave the map half-changed.
    let mut clients = clients.lock().unwrap_or_else(PoisonError::into_inner);
    clients
        .entry(timeout)
        .or_insert_with(|| {
            // The original set both the connect and the request timeout.
            reqwest::Client::builder()
                .connect_timeout(timeout)
                .timeout(timeout)
                .build()
                .unwrap_or_default()
        })
        .clone()
}

/// `/api/mutation` or `/api/query`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Mutation,
    Query,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutation => "mutation",
            Endpoint::Query => "query",
        }
    }
}

/// The error and its causes, e.g. "error sending request: operation timed out".
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// Convex's "the function ran and failed" status (the official client's
/// `STATUS_CODE_UDF_FAILED`), answered with the same body as a 200 error.
pub const STATUS_UDF_FAILED: u16 = 560;

/// The response table of spec §4.3; the success value on `:ok`, decoded by
/// Convex's types (`convex_value::decode_export`).
///
/// A failed function is `convex_error` whether it comes as 2xx or as 560
/// with `status: "error"` and a string `errorMessage`: the open-source
/// backend answers 200, and the official client takes 560 for the same
/// thing (real-systems.md §1.2). Any other 560, like any other non-2xx, is
/// `http_status`.
pub fn classify(status: u16, body: &str) -> Result<Value, SinkError> {
    if status == STATUS_UDF_FAILED
        && let Ok(parsed) = serde_json::from_str::<Value>(body)
        && parsed.get("status").and_then(Value::as_str) == Some("error")
        && let Some(Value::String(message)) = parsed.get("errorMessage")
    {
        return Err(SinkError::ConvexError {
            message: message.clone(),
        });
    }
    if !(200..=299).contains(&status) {
        return Err(SinkError::HttpStatus {
            status,
            body: body.to_owned(),
        });
    }
    let mut parsed: Value = serde_json::from_str(body).map_err(|_| SinkError::InvalidJson {
        body: body.to_owned(),
    })?;
    match (
        parsed.get("status").and_then(Value::as_str),
        parsed.get("errorMessage"),
    ) {
        (Some("success"), _) => Ok(parsed
            .get_mut("value")
            .map(Value::take)
            .map_or(Value::Null, decode_export)),
        (Some("error"), Some(Value::String(message))) => Err(SinkError::ConvexError {
            message: message.clone(),
        }),
        _ => Err(SinkError::InvalidResponse {
            body: body.to_owned(),
        }),
    }
}

/// The runtime's `HttpSink`: one mutation per projection, no retries.
#[derive(Clone, Debug)]
pub struct ConvexHttpSink {
    http: ConvexHttp,
    run_summary_mutation_path: String,
    codex_worker_summary_mutation_path: String,
    /// A defect planted by the harness's tests, never by a profile: a
    /// function's failure (`convex_error`) is taken for success, so the
    /// checkpoint advances while Convex holds nothing of the write.
    planted_function_error_ok: bool,
}

impl ConvexHttpSink {
    pub fn new(config: &ConvexSinkConfig) -> Self {
        ConvexHttpSink {
            http: ConvexHttp::new(
                &config.base_url,
                &config.admin_key,
                config.request_timeout_ms,
            ),
            run_summary_mutation_path: config.run_summary_mutation_path.clone(),
            codex_worker_summary_mutation_path: config.codex_worker_summary_mutation_path.clone(),
            planted_function_error_ok: false,
        }
    }

    /// The same sink with a planted defect only a failing Convex function
    /// reveals (tests only): it takes `convex_error` for success.
    pub fn with_planted_function_error_ok(mut self) -> Self {
        self.planted_function_error_ok = true;
        self
    }

    /// The same sink over `client` (see `ConvexHttp::with_client`).
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.http = self.http.with_client(client);
        self
    }
}

#[async_trait::async_trait]
impl ProjectionSink for ConvexHttpSink {
    fn name(&self) -> &str {
        "convex"
    }

    fn is_transactional(&self) -> bool {
        false
    }

    async fn upsert(
        &self,
        _: SinkContext<'_>,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        self.send(kind, document_id, summary).await
    }
}

impl ConvexHttpSink {
    /// The mutation call itself; the sink never needs the transaction.
    pub async fn send(
        &self,
        kind: ProjectionKind,
        document_id: &str,
        summary: &Value,
    ) -> Result<(), SinkError> {
        let path = match kind {
            ProjectionKind::RunSummary => &self.run_summary_mutation_path,
            ProjectionKind::CodexWorkerSummary => &self.codex_worker_summary_mutation_path,
        };
        let args = json!({"document_id": document_id, "summary": summary});
        match self.http.call(Endpoint::Mutation, path, args).await {
            Err(SinkError::ConvexError { .. }) if self.planted_function_error_ok => Ok(()),
            answer => answer.map(drop),
        }
    }
}

/// Why reading Convex back failed.
#[derive(Debug, thiserror::Error)]
#[error("read convex `{path}`: {source}")]
pub struct ConvexReadError {
    pub path: String,
    pub source: SinkError,
}

/// Reads documents back from Convex through the queries of `models/convex`.
#[derive(Clone, Debug)]
pub struct ConvexReader {
    http: ConvexHttp,
    paths: ConvexQueryPaths,
}

const LIST_PAGE_SIZE: u32 = 100;

/// The query functions a reader calls, by default those of
/// `models/convex` (`runtime:getRunSummary`, …); a deployment whose
/// functions live elsewhere is read by naming them here. A get takes
/// `{document_id}` and answers `{document_id, summary}` or null; a list
/// takes `{paginationOpts}` and answers Convex's pagination result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConvexQueryPaths {
    pub get_run_summary: String,
    pub get_codex_worker_summary: String,
    pub list_run_summaries: String,
    pub list_codex_worker_summaries: String,
}

impl Default for ConvexQueryPaths {
    fn default() -> Self {
        ConvexQueryPaths {
            get_run_summary: "runtime:getRunSummary".to_owned(),
            get_codex_worker_summary: "runtime:getCodexWorkerSummary".to_owned(),
            list_run_summaries: "runtime:listRunSummaries".to_owned(),
            list_codex_worker_summaries: "runtime:listCodexWorkerSummaries".to_owned(),
        }
    }
}

impl ConvexQueryPaths {
    pub fn get(&self, kind: ProjectionKind) -> &str {
        match kind {
            ProjectionKind::RunSummary => &self.get_run_summary,
            ProjectionKind::CodexWorkerSummary => &self.get_codex_worker_summary,
        }
    }

    pub fn list(&self, kind: ProjectionKind) -> &str {
        match kind {
            ProjectionKind::RunSummary => &self.list_run_summaries,
            ProjectionKind::CodexWorkerSummary => &self.list_codex_worker_summaries,
        }
    }
}

impl ConvexReader {
    pub fn new(base_url: &str, admin_key: &str, timeout_ms: i64) -> Self {
        ConvexReader {
            http: ConvexHttp::new(base_url, admin_key, timeout_ms),
            paths: ConvexQueryPaths::default(),
        }
    }

    /// The same reader calling `paths` instead of the default functions.
    pub fn with_paths(mut self, paths: ConvexQueryPaths) -> Self {
        self.paths = paths;
        self
    }

    /// The same reader over `client` (its own timeouts and connections).
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.http = self.http.with_client(client);
        self
    }

    pub fn paths(&self) -> &ConvexQueryPaths {
        &self.paths
    }

    async fn query(&self, path: &str, args: Value) -> Result<Value, ConvexReadError> {
        self.http
            .call(Endpoint::Query, path, args)
            .await
            .map_err(|source| ConvexReadError {
                path: path.to_owned(),
                source,
            })
    }

    fn malformed(path: &str, value: &Value) -> ConvexReadError {
        ConvexReadError {
            path: path.to_owned(),
            source: SinkError::InvalidResponse {
                body: value.to_string(),
            },
        }
    }

    /// The stored summary of one document, or `None`.
    pub async fn get(
        &self,
        kind: ProjectionKind,
        document_id: &str,
    ) -> Result<Option<Value>, ConvexReadError> {
        let path = self.paths.get(kind);
        match self
            .query(path, json!({"document_id": document_id}))
            .await?
        {
            Value::Null => Ok(None),
            Value::Object(mut document) => document
                .remove("summary")
                .map(Some)
                .ok_or_else(|| Self::malformed(path, &Value::Object(document))),
            other => Err(Self::malformed(path, &other)),
        }
    }

    /// Every document of a projection as `(document_id, summary)`, in
    /// `document_id` order, following the pagination cursor. A listed item
    /// that is not such a pair fails the whole listing (see `list_each`).
    pub async fn list_all(
        &self,
        kind: ProjectionKind,
    ) -> Result<Vec<(String, Value)>, ConvexReadError> {
        let (documents, malformed) = self.list_each(kind).await?;
        match malformed.first() {
            Some(bad) => Err(Self::malformed(self.paths.list(kind), &bad.item)),
            None => Ok(documents),
        }
    }

    /// `list_all`, keeping aside each listed item that is not a
    /// `{document_id, summary}` pair instead of failing: an auditor reports
    /// it and goes on. A page that is not a page still fails.
    pub async fn list_each(
        &self,
        kind: ProjectionKind,
    ) -> Result<(Vec<(String, Value)>, Vec<MalformedItem>), ConvexReadError> {
        let path = self.paths.list(kind);
        let (mut documents, mut malformed) = (Vec::new(), Vec::new());
        let mut cursor = Value::Null;
        loop {
            let page = self
                .query(
                    path,
                    json!({"paginationOpts": {"numItems": LIST_PAGE_SIZE, "cursor": cursor}}),
                )
                .await?;
            let items = page
                .get("page")
                .and_then(Value::as_array)
                .ok_or_else(|| Self::malformed(path, &page))?;
            for item in items {
                match listed_document(item) {
                    Some(document) => documents.push(document),
                    None => malformed.push(MalformedItem {
                        document_id: item
                            .get("document_id")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        item: item.clone(),
                    }),
                }
            }
            if page.get("isDone").and_then(Value::as_bool).unwrap_or(true) {
                return Ok((documents, malformed));
            }
            cursor = page
                .get("continueCursor")
                .cloned()
                .ok_or_else(|| Self::malformed(path, &page))?;
        }
    }
}

/// A listed item that is not a `{document_id, summary}` pair: its
/// `document_id` when it has one as a string, and the item as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct MalformedItem {
    pub document_id: Option<String>,
    pub item: Value,
}

/// A listed item as `(document_id, summary)`, if it is one.
fn listed_document(item: &Value) -> Option<(String, Value)> {
    let id = item.get("document_id")?.as_str()?;
    Some((id.to_owned(), item.get("summary")?.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_item_is_a_document_only_with_a_string_id_and_a_summary() {
        assert_eq!(
            listed_document(&json!({"document_id": "d", "summary": {"a": 1}})),
            Some(("d".to_owned(), json!({"a": 1})))
        );
        assert_eq!(listed_document(&json!({"document_id": "d"})), None);
        assert_eq!(
            listed_document(&json!({"document_id": 7, "summary": {}})),
            None
        );
        assert_eq!(listed_document(&json!("d")), None);
    }

    #[test]
    fn every_response_class_maps_to_its_error() {
        assert_eq!(
            classify(200, r#"{"status":"success","value":null,"logLines":[]}"#).unwrap(),
            Value::Null
        );
        assert_eq!(
            classify(200, r#"{"status":"success","value":{"a":1}}"#).unwrap(),
            json!({"a": 1})
        );
        // Values are decoded by Convex's types: the backend's `3.0` is 3.
        let value = classify(
            200,
            r#"{"status":"success","value":{"seq":3.0,"i":{"$integer":"BQAAAAAAAAA="}}}"#,
        )
        .unwrap();
        assert_eq!(value, json!({"seq": 3, "i": 5}));
        assert_eq!(value["seq"].as_i64(), Some(3));
        assert!(
            matches!(classify(200, r#"{"status":"error","errorMessage":"boom"}"#), Err(SinkError::ConvexError { message }) if message == "boom")
        );
        assert!(matches!(
            classify(200, r#"{"status":"error","errorMessage":5}"#),
            Err(SinkError::InvalidResponse { .. })
        ));
        assert!(matches!(
            classify(204, r#"{"status":"weird"}"#),
            Err(SinkError::InvalidResponse { .. })
        ));
        assert!(matches!(
            classify(200, r#"[1,2]"#),
            Err(SinkError::InvalidResponse { .. })
        ));
        assert!(
            matches!(classify(200, "<html>"), Err(SinkError::InvalidJson { body }) if body == "<html>")
        );
        // A failed function is convex_error with its message, 200 or 560.
        assert!(
            matches!(classify(560, r#"{"status":"error","errorMessage":"x"}"#), Err(SinkError::ConvexError { message }) if message == "x")
        );
        // A 560 that is not a function's failure stays an HTTP status.
        assert!(matches!(
            classify(560, r#"{"status":"error"}"#),
            Err(SinkError::HttpStatus { status: 560, .. })
        ));
        assert!(matches!(
            classify(560, "<html>"),
            Err(SinkError::HttpStatus { status: 560, .. })
        ));
        assert!(matches!(
            classify(401, ""),
            Err(SinkError::HttpStatus { status: 401, .. })
        ));
        assert!(matches!(
            classify(302, "{}"),
            Err(SinkError::HttpStatus { status: 302, .. })
        ));
    }

    #[test]
    fn base_url_and_key_are_normalised_and_the_timeout_defaults() {
        let http = ConvexHttp::new("  http://h:1/// ", "  ", 0);
        assert_eq!(
            (
                http.base_url.as_str(),
                http.admin_key.as_str(),
                http.timeout()
            ),
            ("http://h:1", "", Duration::from_millis(2500))
        );
        assert_eq!(
            ConvexHttp::new("x", "k", -5).timeout,
            Duration::from_millis(2500)
        );
        assert_eq!(
            ConvexHttp::new("x", "k", 10).timeout,
            Duration::from_millis(10)
        );
    }

    #[tokio::test]
    async fn a_blank_base_url_fails_without_any_io() {
        let sink = ConvexHttpSink::new(&ConvexSinkConfig {
            base_url: " / ".into(),
            ..ConvexSinkConfig::default()
        });
        let http = &sink.http;
        let result = http
            .call(Endpoint::Mutation, "runtime:upsertRunSummary", json!({}))
            .await;
        assert!(matches!(result, Err(SinkError::MissingBaseUrl)));
    }
}
