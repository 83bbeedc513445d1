//! One client lane per surface (spec §9.1): with the flag on it reads through
//! Khala (WebSocket `sync:v1`, HTTP hydration as fallback), with it off it
//! polls a legacy read path. Nothing here sleeps or spawns: the caller drives
//! the lane (`poll`, `tick`, `next_event`, `await_watermark`), so tests
//! decide when time passes.

use crate::apply::{self, ApplyRule, CachedDoc, ClientCache, Update, ViewRow};
use crate::error::{ClientError, ClientErrorKind};
use crate::flags::Surface;
use crate::socket::{Frame, PhoenixSocket, Read};
use crate::switches::ClientSwitches;
use crate::watermark_store::WatermarkStore;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const CHANNEL_TOPIC: &str = "sync:v1";
pub const WORKER_TOPIC: &str = "runtime.codex_worker_summaries";
pub const RUN_TOPIC: &str = "runtime.run_summaries";
pub use crate::socket::PROTOCOL_VSN;
/// How long a lane waits for one frame before reporting `TimedOut`: a bound
/// on failure, never a delay.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How many stale-cursor rounds one connect tolerates before giving up.
const STALE_CURSOR_ROUNDS_MAX: usize = 3;

/// Where tokens come from (`POST /api/sync/token` in the original).
pub trait TokenSource: Send + Sync {
    fn token(&self) -> Result<String, String>;
}

impl<F> TokenSource for F
where
    F: Fn() -> Result<String, String> + Send + Sync,
{
    fn token(&self) -> Result<String, String> {
        self()
    }
}

/// A legacy read path failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadPathError(pub String);

/// The flag-off lane's source: Convex's reader, the runtime API, or the
/// hydration endpoint. Returns `(doc_key, document)` for every document.
#[async_trait::async_trait]
pub trait LegacyReadPath: Send + Sync {
    async fn list(&self) -> Result<Vec<(String, Value)>, ReadPathError>;
}

/// The legacy read path over `GET /sync/v1/docs?topic=…`.
pub struct HydrationReadPath {
    http: reqwest::Client,
    http_base: String,
    topic: String,
    tokens: Arc<dyn TokenSource>,
}

impl HydrationReadPath {
    pub fn new(http_base: &str, topic: &str, tokens: Arc<dyn TokenSource>) -> Self {
        Self::with_http_client(http_base, topic, tokens, reqwest::Client::new())
    }

    /// Reads through `http`, sharing its connection pool (building an HTTP
    /// client loads the TLS roots, which costs more than many requests).
    pub fn with_http_client(
        http_base: &str,
        topic: &str,
        tokens: Arc<dyn TokenSource>,
        http: reqwest::Client,
    ) -> Self {
        HydrationReadPath {
            http,
            http_base: http_base.trim_end_matches('/').to_owned(),
            topic: topic.to_owned(),
            tokens,
        }
    }
}

/// The legacy Convex read path: mobile with its flag off boots the Convex
/// client and reads Convex, not Khala.
pub struct ConvexReadPath {
    pub reader: khala_runtime::sink::ConvexReader,
    pub kind: khala_runtime::ProjectionKind,
}

#[async_trait::async_trait]
impl LegacyReadPath for ConvexReadPath {
    async fn list(&self) -> Result<Vec<(String, Value)>, ReadPathError> {
        self.reader
            .list_all(self.kind)
            .await
            .map_err(|error| ReadPathError(error.to_string()))
    }
}

#[async_trait::async_trait]
impl LegacyReadPath for HydrationReadPath {
    async fn list(&self) -> Result<Vec<(String, Value)>, ReadPathError> {
        let token = self.tokens.token().map_err(ReadPathError)?;
        let snapshot = fetch_snapshot(&self.http, &self.http_base, &self.topic, &token)
            .await
            .map_err(|error| ReadPathError(error.to_string()))?;
        Ok(snapshot
            .docs
            .into_iter()
            .map(|(doc_key, _, payload)| (doc_key, payload))
            .collect())
    }
}

/// A topic's documents as the hydration endpoint served them, and the
/// watermark they reflect.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub watermark: i64,
    /// `(doc_key, doc_version, payload)`.
    pub docs: Vec<(String, i64, Value)>,
}

async fn fetch_snapshot(
    http: &reqwest::Client,
    http_base: &str,
    topic: &str,
    token: &str,
) -> Result<Snapshot, ClientErrorKind> {
    let url =
        reqwest::Url::parse_with_params(&format!("{http_base}/sync/v1/docs"), &[("topic", topic)])
            .map_err(|error| ClientErrorKind::Malformed(format!("the hydration url: {error}")))?;
    let response = http.get(url).bearer_auth(token).send().await?;
    if !response.status().is_success() {
        return Err(ClientErrorKind::HttpStatus(response.status().as_u16()));
    }
    let body: Value = response.json().await?;
    let malformed = |what: &str| ClientErrorKind::Malformed(format!("{what} in {body}"));
    let watermark = body
        .get("watermark")
        .and_then(Value::as_i64)
        .filter(|watermark| *watermark >= 0)
        .ok_or_else(|| malformed("no watermark"))?;
    let mut docs = Vec::new();
    for doc in body
        .get("docs")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no docs"))?
    {
        let doc_key = doc.get("doc_key").and_then(Value::as_str);
        let doc_version = doc.get("doc_version").and_then(Value::as_i64);
        let payload = doc.get("payload");
        match (doc_key, doc_version, payload) {
            (Some(doc_key), Some(doc_version), Some(payload)) => {
                docs.push((doc_key.to_owned(), doc_version, payload.clone()));
            }
            _ => return Err(malformed("a malformed document")),
        }
    }
    Ok(Snapshot { watermark, docs })
}

/// The version a legacy document shows: its `runtime_source.seq` (what
/// Khala uses as `doc_version`), else `latest_seq`, else 0.
fn legacy_version(payload: &Value) -> i64 {
    payload
        .get("runtime_source")
        .and_then(|source| source.get("seq"))
        .or_else(|| payload.get("latest_seq"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// How a lane is set up.
#[derive(Clone, Debug)]
pub struct LaneConfig {
    pub surface: Surface,
    pub switches: ClientSwitches,
    /// `ws://host/socket/websocket`; the lane adds `token` and `vsn`.
    pub websocket_url: String,
    /// `http://host`, for the hydration endpoints.
    pub http_base: String,
    /// The topics subscribed to, in order (the original: the worker topic).
    pub topics: Vec<String>,
    pub apply_rule: ApplyRule,
    pub frame_timeout: Duration,
}

impl LaneConfig {
    pub fn new(
        surface: Surface,
        switches: ClientSwitches,
        websocket_url: &str,
        http_base: &str,
    ) -> Self {
        LaneConfig {
            surface,
            switches,
            websocket_url: websocket_url.to_owned(),
            http_base: http_base.trim_end_matches('/').to_owned(),
            topics: vec![WORKER_TOPIC.to_owned()],
            apply_rule: ApplyRule::DocumentVersion,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
        }
    }
}

/// Counters and the delivery log of a lane.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaneStats {
    pub connects: usize,
    pub joins: usize,
    pub polls: usize,
    pub http_reloads: usize,
    /// Snapshot batches received: read-model rows the server sent for a
    /// subscribe without a cursor on a pruned topic (hardened B10).
    pub snapshots: usize,
    pub stale_cursors: usize,
    pub batches: usize,
    pub heartbeats_sent: usize,
    /// `sync:heartbeat` pushes received from the server.
    pub heartbeats_seen: usize,
    pub channel_closes_seen: usize,
    /// Connects whose subscribe without cursor was refused as stale, so
    /// the client gave the connection up (the shipped client only).
    pub subscribes_refused: usize,
    /// Every `(topic, watermark)` of a journal row received in an update
    /// batch, in order (snapshot rows are not journal rows: not listed).
    pub delivered: Vec<(String, i64)>,
    /// Updates dropped by normalisation.
    pub malformed_updates: usize,
}

/// What one frame from the server did to the lane.
#[derive(Clone, Debug, PartialEq)]
pub enum LaneEvent {
    Batch {
        topic: Option<String>,
        updates: usize,
        reloaded: bool,
    },
    Heartbeat,
    StaleCursor(Vec<String>),
    /// The server closed the channel (`phx_close`); the socket stays.
    ChannelClosed,
    /// A reply to no request of ours, or an event the lane does not know.
    Ignored(String),
}

struct Socket {
    phoenix: PhoenixSocket,
    join_ref: String,
    /// What the lane believes; legacy (B12) never learns of a `phx_close`.
    channel_open: bool,
    /// The server stopped the channel (`phx_close` seen since the last
    /// join), whatever the lane believes: no push will come on it.
    channel_stopped: bool,
}

/// A client lane: one surface's view of the documents.
pub struct ClientLane {
    config: LaneConfig,
    tokens: Arc<dyn TokenSource>,
    store: Arc<dyn WatermarkStore>,
    legacy: Arc<dyn LegacyReadPath>,
    http: reqwest::Client,
    flag: bool,
    rows: BTreeMap<String, ViewRow>,
    /// Documents a batch put back to a lower version than they showed,
    /// since the last `take_view_regressions`: what the user saw between
    /// two observations, which a later batch may have hidden again.
    regressed: Vec<ViewRegression>,
    cache: ClientCache,
    socket: Option<Socket>,
    stats: LaneStats,
}

/// A document a batch showed at a lower version than it showed before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRegression {
    pub doc_key: String,
    pub from: i64,
    pub to: i64,
}

impl std::fmt::Debug for ClientLane {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientLane")
            .field("surface", &self.config.surface)
            .field("flag", &self.flag)
            .field("connected", &self.socket.is_some())
            .field("watermarks", &self.cache.watermarks)
            .field("rows", &self.rows.len())
            .finish()
    }
}

impl ClientLane {
    /// A lane with `flag` as read at build time; nothing happens until
    /// `start`.
    pub fn new(
        config: LaneConfig,
        flag: bool,
        tokens: Arc<dyn TokenSource>,
        store: Arc<dyn WatermarkStore>,
        legacy: Arc<dyn LegacyReadPath>,
    ) -> Self {
        Self::with_http_client(config, flag, tokens, store, legacy, reqwest::Client::new())
    }

    /// The same, hydrating through `http` (its connection pool shared).
    pub fn with_http_client(
        config: LaneConfig,
        flag: bool,
        tokens: Arc<dyn TokenSource>,
        store: Arc<dyn WatermarkStore>,
        legacy: Arc<dyn LegacyReadPath>,
        http: reqwest::Client,
    ) -> Self {
        let cache = ClientCache::new(config.apply_rule);
        ClientLane {
            config,
            tokens,
            store,
            legacy,
            http,
            flag,
            rows: BTreeMap::new(),
            regressed: Vec::new(),
            cache,
            socket: None,
            stats: LaneStats::default(),
        }
    }

    fn error(&self, step: impl Into<String>, kind: impl Into<ClientErrorKind>) -> ClientError {
        ClientError {
            surface: self.config.surface,
            step: step.into(),
            kind: kind.into(),
        }
    }

    pub fn surface(&self) -> Surface {
        self.config.surface
    }

    pub fn flag(&self) -> bool {
        self.flag
    }

    pub fn is_connected(&self) -> bool {
        self.socket.is_some()
    }

    /// The local address of the socket (the server's view of the peer),
    /// so a caller can tell which lanes' sockets a server closed.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.socket
            .as_ref()
            .and_then(|socket| socket.phoenix.local_addr())
    }

    /// The documents the user sees.
    pub fn view(&self) -> BTreeMap<String, Value> {
        self.rows
            .iter()
            .map(|(doc_key, row)| (doc_key.clone(), row.payload.clone()))
            .collect()
    }

    pub fn rows(&self) -> &BTreeMap<String, ViewRow> {
        &self.rows
    }

    /// The view regressions batches made since the last call.
    pub fn take_view_regressions(&mut self) -> Vec<ViewRegression> {
        std::mem::take(&mut self.regressed)
    }

    /// The client's doc cache (§7.9), separate from what the UI shows.
    pub fn cached(&self, doc_key: &str) -> Option<&CachedDoc> {
        self.cache.docs.get(doc_key)
    }

    /// The watermark the lane has reached on `topic` in this session.
    pub fn watermark(&self, topic: &str) -> Option<i64> {
        self.cache.watermark(topic)
    }

    pub fn stats(&self) -> &LaneStats {
        &self.stats
    }

    /// How long the lane waits for one frame before `TimedOut`.
    pub fn set_frame_timeout(&mut self, timeout: Duration) {
        self.config.frame_timeout = timeout;
    }

    /// Mounts the surface: connects (flag on) or loads the list (flag off).
    pub async fn start(&mut self) -> Result<(), ClientError> {
        if self.flag {
            self.connect().await
        } else {
            self.poll().await.map(|_| ())
        }
    }

    /// Flips the flag now. On: connect and resume from the stored
    /// watermarks. Off: close the socket and load the list from the legacy
    /// read path. The view is kept across the flip.
    pub async fn set_flag(&mut self, on: bool) -> Result<(), ClientError> {
        if on == self.flag {
            return Ok(());
        }
        self.flag = on;
        if on {
            self.connect().await
        } else {
            self.disconnect().await;
            self.poll().await.map(|_| ())
        }
    }

    /// One poll of the legacy read path, replacing the view. Flag off, every
    /// surface polls (web 5 s, mobile 12 s); flag on, only mobile keeps its
    /// runtime-API refresh. Returns whether it polled.
    pub async fn poll(&mut self) -> Result<bool, ClientError> {
        if self.flag && self.config.surface != Surface::Mobile {
            return Ok(false);
        }
        let listed = self.legacy.list().await.map_err(|error| {
            self.error(
                "poll the legacy read path",
                ClientErrorKind::ReadPath(error.0),
            )
        })?;
        self.rows = listed
            .into_iter()
            .map(|(doc_key, payload)| {
                let row = ViewRow {
                    doc_version: legacy_version(&payload),
                    payload,
                };
                (doc_key, row)
            })
            .collect();
        self.stats.polls += 1;
        Ok(true)
    }

    /// Opens the socket, joins `sync:v1` and subscribes with the stored
    /// watermarks as `resume_after`; pushes before the replies are applied.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.disconnect().await;
        let token = self
            .tokens
            .token()
            .map_err(|reason| self.error("get a sync token", ClientErrorKind::Token(reason)))?;
        let phoenix = PhoenixSocket::open(&self.config.websocket_url, &token)
            .await
            .map_err(|kind| self.error("connect to the sync socket", kind))?;
        self.socket = Some(Socket {
            phoenix,
            join_ref: String::new(),
            channel_open: false,
            channel_stopped: false,
        });
        self.stats.connects += 1;
        self.join_and_subscribe().await
    }

    /// Drops the socket (the lane's own reconnect path keeps the store).
    pub async fn disconnect(&mut self) {
        if let Some(socket) = self.socket.take() {
            socket.phoenix.close().await;
        }
    }

    /// Closes the socket and connects again, resuming from the store.
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.connect().await
    }

    async fn join_and_subscribe(&mut self) -> Result<(), ClientError> {
        let socket = self.socket_mut("join sync:v1")?;
        let reference = socket.phoenix.next_ref();
        socket.join_ref = reference.clone();
        let frame = json!([reference, reference, CHANNEL_TOPIC, "phx_join", {}]);
        self.send_frame("join sync:v1", &frame).await?;
        let (status, response) = self.await_reply("join sync:v1", &reference).await?;
        if status != "ok" {
            return Err(self.error("join sync:v1", ClientErrorKind::Refused(response)));
        }
        if let Some(socket) = self.socket.as_mut() {
            socket.channel_open = true;
            socket.channel_stopped = false;
        }
        self.stats.joins += 1;
        for _ in 0..STALE_CURSOR_ROUNDS_MAX {
            let mut resume_after = serde_json::Map::new();
            for topic in &self.config.topics {
                let stored = self
                    .store
                    .load(topic)
                    .map_err(|error| self.error("load the stored watermark", error))?;
                if let Some(watermark) = stored {
                    resume_after.insert(topic.clone(), Value::from(watermark));
                }
                self.cache.reset_watermark(topic, stored);
            }
            let payload = json!({"topics": self.config.topics, "resume_after": resume_after});
            let (status, response) = self.request("subscribe", "sync:subscribe", payload).await?;
            if status == "ok" {
                return Ok(());
            }
            if response.get("code").and_then(Value::as_str) != Some("stale_cursor") {
                return Err(self.error("subscribe", ClientErrorKind::Refused(response)));
            }
            // §7.5: forget the stale cursors, re-fetch over HTTP, and resume
            // from the watermark the snapshot reflects.
            let stale = stale_topics(&response);
            self.forget_watermarks(&stale)?;
            self.reload_over_http(&stale).await?;
        }
        Err(self.error(
            "subscribe",
            ClientErrorKind::Malformed("the cursor stayed stale after re-hydration".into()),
        ))
    }

    fn forget_watermarks(&mut self, topics: &[String]) -> Result<(), ClientError> {
        for topic in topics {
            self.store
                .clear(topic)
                .map_err(|error| self.error("clear a stale watermark", error))?;
            self.cache.reset_watermark(topic, None);
        }
        Ok(())
    }

    /// Reloads every subscribed topic's documents over HTTP and replaces the
    /// view. Topics in `resume_from_snapshot` (stale ones) take the
    /// snapshot's watermark as their stored cursor; the others only move
    /// forward to it.
    async fn reload_over_http(
        &mut self,
        resume_from_snapshot: &[String],
    ) -> Result<(), ClientError> {
        let token = self
            .tokens
            .token()
            .map_err(|reason| self.error("get a sync token", ClientErrorKind::Token(reason)))?;
        let mut rows = BTreeMap::new();
        for topic in self.config.topics.clone() {
            let snapshot = fetch_snapshot(&self.http, &self.config.http_base, &topic, &token)
                .await
                .map_err(|kind| self.error(format!("hydrate topic `{topic}`"), kind))?;
            for (doc_key, doc_version, payload) in snapshot.docs {
                self.cache.docs.insert(
                    doc_key.clone(),
                    CachedDoc {
                        doc_version,
                        payload: Some(payload.clone()),
                    },
                );
                rows.insert(
                    doc_key,
                    ViewRow {
                        doc_version,
                        payload,
                    },
                );
            }
            let current = self.cache.watermark(&topic);
            if resume_from_snapshot.contains(&topic)
                || current.is_none_or(|current| snapshot.watermark > current)
            {
                self.cache.reset_watermark(&topic, Some(snapshot.watermark));
                self.store
                    .save(&topic, snapshot.watermark)
                    .map_err(|error| self.error("store the snapshot watermark", error))?;
            }
        }
        self.rows = rows;
        self.stats.http_reloads += 1;
        Ok(())
    }

    fn socket_mut(&mut self, step: &str) -> Result<&mut Socket, ClientError> {
        let surface = self.config.surface;
        self.socket.as_mut().ok_or_else(|| ClientError {
            surface,
            step: step.to_owned(),
            kind: ClientErrorKind::NotConnected,
        })
    }

    async fn send_frame(&mut self, step: &str, frame: &Value) -> Result<(), ClientError> {
        let socket = self.socket_mut(step)?;
        match socket.phoenix.send(frame).await {
            Ok(()) => Ok(()),
            Err(kind) => {
                self.socket = None;
                Err(self.error(step, kind))
            }
        }
    }

    /// Sends `event` on `sync:v1` and awaits its reply, applying every push
    /// that arrives first.
    async fn request(
        &mut self,
        step: &str,
        event: &str,
        payload: Value,
    ) -> Result<(String, Value), ClientError> {
        let socket = self.socket_mut(step)?;
        let reference = socket.phoenix.next_ref();
        let frame = json!([socket.join_ref, reference, CHANNEL_TOPIC, event, payload]);
        self.send_frame(step, &frame).await?;
        self.await_reply(step, &reference).await
    }

    async fn await_reply(
        &mut self,
        step: &str,
        reference: &str,
    ) -> Result<(String, Value), ClientError> {
        loop {
            let frame = self.next_frame(step).await?;
            if frame.event == "phx_reply" && frame.reference.as_deref() == Some(reference) {
                let status = frame
                    .payload
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let response = frame
                    .payload
                    .get("response")
                    .cloned()
                    .unwrap_or(Value::Null);
                return Ok((status, response));
            }
            self.handle_frame(frame).await?;
        }
    }

    /// The next text frame within the frame timeout; unparseable frames are
    /// skipped (no server input makes the lane panic).
    async fn next_frame(&mut self, step: &str) -> Result<Frame, ClientError> {
        let timeout = self.config.frame_timeout;
        let socket = self.socket_mut(step)?;
        match socket.phoenix.read(timeout).await {
            Read::Frame(frame) => Ok(frame),
            Read::Quiet => Err(self.error(step, ClientErrorKind::TimedOut(timeout))),
            Read::Ended(kind) => {
                self.socket = None;
                Err(self.error(step, kind))
            }
        }
    }

    /// Awaits and applies one frame from the server.
    pub async fn next_event(&mut self) -> Result<LaneEvent, ClientError> {
        let frame = self.next_frame("await a frame").await?;
        self.handle_frame(frame).await
    }

    /// Applies frames until `topic`'s watermark reaches `target`; fails
    /// after a frame timeout without progress or on close.
    pub async fn await_watermark(&mut self, topic: &str, target: i64) -> Result<(), ClientError> {
        while self
            .cache
            .watermark(topic)
            .is_none_or(|watermark| watermark < target)
        {
            self.next_event().await?;
        }
        Ok(())
    }

    /// Connected with a channel the server still runs: pushes reach it.
    pub fn is_live(&self) -> bool {
        self.socket
            .as_ref()
            .is_some_and(|socket| !socket.channel_stopped)
    }

    /// After a server heartbeat tick: a live channel got exactly one
    /// `sync:heartbeat` or `phx_close`; reads up to it. A closed socket is
    /// noticed (the next `tick` reconnects), not an error.
    pub async fn await_tick_frame(&mut self) -> Result<(), ClientError> {
        let before = (self.stats.channel_closes_seen, self.stats.heartbeats_seen);
        while self.is_live()
            && (self.stats.channel_closes_seen, self.stats.heartbeats_seen) == before
        {
            match self.next_event().await {
                Ok(_) => {}
                Err(error) if matches!(error.kind, ClientErrorKind::Closed) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Reads the socket to its close, applying what came before it, when
    /// the server says it closed it; the next `tick` reconnects. No close
    /// within the frame timeout is an error: the close was promised.
    pub async fn await_close(&mut self) -> Result<(), ClientError> {
        while self.socket.is_some() {
            match self.next_event().await {
                Ok(_) => {}
                Err(error) if matches!(error.kind, ClientErrorKind::Closed) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// What the surface does on each of its timer ticks. Hardened (B12
    /// fixed): rejoin a channel the server closed, or send `sync:heartbeat`
    /// and await its reply. Legacy: nothing at all. Both reconnect a socket
    /// that dropped (the TS client's reconnect, backoff left to the caller).
    pub async fn tick(&mut self) -> Result<(), ClientError> {
        if !self.flag {
            return Ok(());
        }
        if self.socket.is_none() {
            return self.connect().await;
        }
        if self.config.switches.b12_no_client_heartbeat {
            return Ok(());
        }
        match self.heartbeat_or_rejoin().await {
            // The hardened server closes the socket with the channel: the
            // rejoin or heartbeat finds it closed, and the lane reconnects.
            Err(error)
                if matches!(
                    error.kind,
                    ClientErrorKind::Closed | ClientErrorKind::WebSocket(_)
                ) =>
            {
                self.connect().await
            }
            result => result,
        }
    }

    async fn heartbeat_or_rejoin(&mut self) -> Result<(), ClientError> {
        let Some(socket) = self.socket.as_ref() else {
            return self.connect().await;
        };
        if !socket.channel_open {
            return self.join_and_subscribe().await;
        }
        let (status, _) = self
            .request("send a heartbeat", "sync:heartbeat", json!({}))
            .await?;
        self.stats.heartbeats_sent += 1;
        if status != "ok" {
            // The channel went away before the heartbeat reached it (the
            // server answers `unmatched topic`): rejoin and resume.
            if let Some(socket) = self.socket.as_mut() {
                socket.channel_open = false;
            }
            return self.join_and_subscribe().await;
        }
        Ok(())
    }

    async fn handle_frame(&mut self, frame: Frame) -> Result<LaneEvent, ClientError> {
        match (frame.topic.as_str(), frame.event.as_str()) {
            (CHANNEL_TOPIC, "sync:update_batch") => self.apply_batch(&frame.payload).await,
            (CHANNEL_TOPIC, "sync:heartbeat") => {
                self.stats.heartbeats_seen += 1;
                Ok(LaneEvent::Heartbeat)
            }
            (CHANNEL_TOPIC, "sync:error") => {
                let stale = stale_topics(&frame.payload);
                self.stats.stale_cursors += 1;
                // §7.5: the client deletes the stored watermark of each stale
                // topic; the failed subscribe's reply does the re-fetch.
                self.forget_watermarks(&stale)?;
                Ok(LaneEvent::StaleCursor(stale))
            }
            (CHANNEL_TOPIC, "phx_close") => {
                self.stats.channel_closes_seen += 1;
                if let Some(socket) = self.socket.as_mut() {
                    socket.channel_stopped = true;
                }
                // The TS client ignores `phx_close` (B12); the hardened lane
                // notes it and rejoins on its next tick.
                if !self.config.switches.b12_no_client_heartbeat
                    && let Some(socket) = self.socket.as_mut()
                {
                    socket.channel_open = false;
                }
                Ok(LaneEvent::ChannelClosed)
            }
            (_, event) => Ok(LaneEvent::Ignored(event.to_owned())),
        }
    }

    /// Applies one `sync:update_batch` payload: the doc cache and stored
    /// watermarks (§7.9), then the view (§9.1 merge, or a full HTTP reload
    /// when any update is a pointer).
    pub async fn apply_batch(&mut self, batch: &Value) -> Result<LaneEvent, ClientError> {
        let raw_count = batch
            .get("updates")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let updates: Vec<Update> = apply::normalise_batch(batch);
        if let Some(from) = self.config.switches.planted_apply_fails_from
            && let Some(update) = updates.iter().find(|update| update.watermark >= from)
        {
            let planted = format!("planted defect: watermark {}", update.watermark);
            return Err(self.error("apply an update batch", ClientErrorKind::Apply(planted)));
        }
        self.stats.malformed_updates += raw_count - updates.len();
        self.stats.batches += 1;
        if batch.get("snapshot") == Some(&Value::Bool(true)) {
            self.stats.snapshots += 1;
            for (topic, watermark) in self.cache.apply_snapshot(&updates) {
                self.store
                    .save(&topic, watermark)
                    .map_err(|error| self.error("store a watermark", error))?;
            }
        } else {
            for update in &updates {
                self.stats
                    .delivered
                    .push((update.topic.clone(), update.watermark));
                let applied = self.cache.apply(update);
                if let Some(watermark) = applied.watermark_advanced_to {
                    self.store
                        .save(&update.topic, watermark)
                        .map_err(|error| self.error("store a watermark", error))?;
                }
            }
        }
        let topic = updates.first().map(|update| update.topic.clone());
        let reloaded = !self.config.switches.planted_pointer_batch_merged
            && updates.iter().any(Update::needs_hydration);
        let shown: BTreeMap<String, i64> = self
            .rows
            .iter()
            .map(|(doc_key, row)| (doc_key.clone(), row.doc_version))
            .collect();
        if reloaded {
            self.reload_over_http(&[]).await?;
        } else {
            let mut merged = if self.config.switches.planted_batch_merge_keeps_oldest {
                oldest_of_each_document(&updates)
            } else {
                updates.clone()
            };
            if self.config.switches.planted_merge_skips_equal_version {
                let rows = &self.rows;
                merged.retain(|update| {
                    rows.get(&update.doc_key)
                        .is_none_or(|row| row.doc_version != update.doc_version)
                });
            }
            // Legacy (B13) merges every update the batch carried, including
            // the ones the doc cache skipped, without looking at the row shown.
            apply::merge_batch_into_view(
                &mut self.rows,
                &merged,
                !self.config.switches.b13_ui_merge_ignores_version,
            );
        }
        for (doc_key, row) in &self.rows {
            if let Some(&from) = shown.get(doc_key)
                && row.doc_version < from
            {
                self.regressed.push(ViewRegression {
                    doc_key: doc_key.clone(),
                    from,
                    to: row.doc_version,
                });
            }
        }
        Ok(LaneEvent::Batch {
            topic,
            updates: updates.len(),
            reloaded,
        })
    }
}

/// The planted `planted_batch_merge_keeps_oldest` defect: of each
/// document's updates in a batch only the lowest `doc_version` is kept.
fn oldest_of_each_document(updates: &[Update]) -> Vec<Update> {
    let mut oldest: BTreeMap<&str, &Update> = BTreeMap::new();
    for update in updates {
        let kept = oldest.entry(&update.doc_key).or_insert(update);
        if update.doc_version < kept.doc_version {
            *kept = update;
        }
    }
    oldest.into_values().cloned().collect()
}

/// The topics of a `stale_cursor` payload.
pub(crate) fn stale_topics(payload: &Value) -> Vec<String> {
    payload
        .get("stale_topics")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry.get("topic").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoReadPath;

    #[async_trait::async_trait]
    impl LegacyReadPath for NoReadPath {
        async fn list(&self) -> Result<Vec<(String, Value)>, ReadPathError> {
            Err(ReadPathError("no read path in this test".into()))
        }
    }

    fn offline_lane(switches: ClientSwitches) -> ClientLane {
        let config = LaneConfig::new(
            Surface::Web,
            switches,
            "ws://127.0.0.1:9/x",
            "http://127.0.0.1:9",
        );
        ClientLane::new(
            config,
            true,
            Arc::new(|| Err::<String, String>("offline".into())),
            Arc::new(crate::MemoryWatermarkStore::new()),
            Arc::new(NoReadPath),
        )
    }

    #[tokio::test]
    async fn hostile_batches_are_applied_without_panics() {
        let mut lane = offline_lane(ClientSwitches::new(khala_runtime::Profile::Hardened));
        let good = json!({"topic": "t", "doc_key": "d", "doc_version": 2, "watermark": 5,
                          "payload": {"x": 1}});
        for batch in [
            json!(null),
            json!({"updates": 3}),
            json!({"updates": [null, {"topic": ""}, {"doc_version": i64::MAX}]}),
            json!({"updates": [good, {"topic": "t", "doc_key": "d", "doc_version": -1, "watermark": 6}]}),
        ] {
            assert!(lane.apply_batch(&batch).await.is_ok(), "{batch}");
        }
        assert_eq!(lane.stats().malformed_updates, 4);
        assert_eq!(lane.watermark("t"), Some(5));
        assert_eq!(lane.view()["d"], json!({"x": 1}));
    }

    #[tokio::test]
    async fn the_planted_apply_defect_fails_from_its_watermark_on() {
        let switches = ClientSwitches {
            planted_apply_fails_from: Some(2),
            ..ClientSwitches::new(khala_runtime::Profile::Hardened)
        };
        let mut lane = offline_lane(switches);
        let update = |watermark: i64| {
            json!({"updates": [{"topic": "t", "doc_key": "d", "doc_version": watermark,
                                "watermark": watermark, "payload": {"x": watermark}}]})
        };
        assert!(lane.apply_batch(&update(1)).await.is_ok());
        let error = lane.apply_batch(&update(2)).await.expect_err("planted");
        assert!(matches!(error.kind, ClientErrorKind::Apply(_)), "{error}");
        assert_eq!(lane.watermark("t"), Some(1), "nothing of the batch applied");
    }

    #[tokio::test]
    async fn errors_name_the_step_and_the_surface() {
        let mut lane = offline_lane(ClientSwitches::new(khala_runtime::Profile::Legacy));
        let error = lane.connect().await.expect_err("no token");
        assert_eq!(
            error.to_string(),
            "get a sync token (web): no token: offline"
        );
        let error = lane.next_event().await.expect_err("not connected");
        assert!(matches!(error.kind, ClientErrorKind::NotConnected));
        let error = lane.set_flag(false).await.expect_err("no read path");
        assert!(matches!(error.kind, ClientErrorKind::ReadPath(_)));
    }

    #[test]
    fn stale_topics_are_read_from_the_error_payload() {
        let payload = json!({"code": "stale_cursor", "stale_topics": [
            {"topic": "a", "resume_after": 0, "retention_floor": 1}, {"bad": 1}]});
        assert_eq!(stale_topics(&payload), vec!["a".to_owned()]);
        assert!(stale_topics(&json!(null)).is_empty());
    }
}
