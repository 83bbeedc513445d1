//! The shipped `KhalaSyncClient` (facts §2, `packages/khala-sync` at the
//! modelled commit) as a lane: no smarter than the client it models. It
//! joins `sync:v1` with `join_ref` null, subscribes from its stored
//! watermarks, never sends a heartbeat, ignores `phx_close`, reconnects
//! only once its socket has closed (1 s doubling to 30 s, on the injected
//! clock), clears the cursor of every stale topic and subscribes again
//! without one, and has no hydration or snapshot path: every update goes
//! through the §7.9 version rule (an equal `doc_version` overwrites, a
//! higher cached one is kept; the watermark only rises).
//!
//! Nothing here sleeps: the caller drives time (`reconnect_if_due`) and
//! reading (`await_watermark`, `await_tick_frame`, `await_close`).

use crate::apply::{self, ApplyRule, CachedDoc, ClientCache, Update, ViewRow};
use crate::error::{ClientError, ClientErrorKind};
use crate::flags::Surface;
use crate::lane::{CHANNEL_TOPIC, LaneStats, TokenSource, stale_topics};
use crate::socket::{Frame, PhoenixSocket, Read};
use crate::watermark_store::WatermarkStore;
use chrono::{DateTime, TimeDelta, Utc};
use khala_runtime::clock::Clock;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The first reconnect delay of the shipped client.
pub const RECONNECT_DELAY_FIRST: TimeDelta = TimeDelta::seconds(1);
/// The reconnect delay doubles up to this.
pub const RECONNECT_DELAY_MAX: TimeDelta = TimeDelta::seconds(30);
/// Subscribes one connect may send: the first, and the one without the
/// cursors a `stale_cursor` cleared. A server that refuses that one too
/// (the replaced hardened B10 design) strands the client: the connection
/// counts as failed, the socket is dropped and the next connect waits for
/// the backoff, as the shipped client's retry loop does (the issue saw 5
/// sockets in 7 s, then the backoff's pace).
const SUBSCRIBE_ROUNDS_MAX: usize = 2;

/// The delay before reconnect attempt `failures + 1`.
pub fn reconnect_delay(failures: u32) -> TimeDelta {
    let factor = 1i64.checked_shl(failures.min(16)).unwrap_or(i64::MAX);
    let delay = RECONNECT_DELAY_FIRST
        .checked_mul(factor.min(i64::from(i32::MAX)) as i32)
        .unwrap_or(RECONNECT_DELAY_MAX);
    delay.min(RECONNECT_DELAY_MAX)
}

/// How a shipped lane is set up.
#[derive(Clone, Debug)]
pub struct ShippedConfig {
    pub surface: Surface,
    /// `ws://host/socket/websocket`; the lane adds `token` and `vsn`.
    pub websocket_url: String,
    pub topics: Vec<String>,
    /// A bound on failure while awaiting a frame, never a delay.
    pub frame_timeout: Duration,
}

struct ShippedSocket {
    phoenix: PhoenixSocket,
    /// The server stopped the channel (`phx_close`). The client ignores
    /// it, as the shipped one does; the flag only tells a caller that no
    /// push will come on this socket, so waiting for one is pointless.
    channel_stopped: bool,
}

/// The shipped client of one surface and user.
pub struct ShippedLane {
    config: ShippedConfig,
    tokens: Arc<dyn TokenSource>,
    store: Arc<dyn WatermarkStore>,
    clock: Arc<dyn Clock>,
    flag: bool,
    cache: ClientCache,
    socket: Option<ShippedSocket>,
    /// Failed or closed connections since the last good subscribe.
    reconnect_failures: u32,
    /// When the next reconnect is due (set when the socket closed).
    reconnect_due_at: Option<DateTime<Utc>>,
    stats: LaneStats,
}

impl std::fmt::Debug for ShippedLane {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ShippedLane")
            .field("surface", &self.config.surface)
            .field("flag", &self.flag)
            .field("connected", &self.socket.is_some())
            .field("reconnect_due_at", &self.reconnect_due_at)
            .field("watermarks", &self.cache.watermarks)
            .finish()
    }
}

impl ShippedLane {
    pub fn new(
        config: ShippedConfig,
        flag: bool,
        tokens: Arc<dyn TokenSource>,
        store: Arc<dyn WatermarkStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ShippedLane {
            config,
            tokens,
            store,
            clock,
            flag,
            cache: ClientCache::new(ApplyRule::DocumentVersion),
            socket: None,
            reconnect_failures: 0,
            reconnect_due_at: None,
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

    /// Connected with a channel the server still runs: pushes reach it.
    pub fn is_live(&self) -> bool {
        self.socket
            .as_ref()
            .is_some_and(|socket| !socket.channel_stopped)
    }

    /// When the next reconnect is due, if the socket is closed.
    pub fn reconnect_due_at(&self) -> Option<DateTime<Utc>> {
        self.reconnect_due_at
    }

    pub fn stats(&self) -> &LaneStats {
        &self.stats
    }

    pub fn watermark(&self, topic: &str) -> Option<i64> {
        self.cache.watermark(topic)
    }

    pub fn cached(&self, doc_key: &str) -> Option<&CachedDoc> {
        self.cache.docs.get(doc_key)
    }

    /// What the surface shows: the doc cache's documents that carry a
    /// payload (a pointer update leaves only `hydration_required`).
    pub fn rows(&self) -> BTreeMap<String, ViewRow> {
        self.cache
            .docs
            .iter()
            .filter_map(|(doc_key, doc)| {
                doc.payload.as_ref().map(|payload| {
                    let row = ViewRow {
                        doc_version: doc.doc_version,
                        payload: payload.clone(),
                    };
                    (doc_key.clone(), row)
                })
            })
            .collect()
    }

    /// The documents the doc cache holds as pointers (`payload: null`,
    /// `hydration_required: true`, spec §7.3), with their `doc_version`:
    /// the client keeps no payload for them, and the surface on top of it
    /// fetches them over HTTP (spec §9.1), which the shipped client itself
    /// never does.
    pub fn pointers(&self) -> BTreeMap<String, i64> {
        self.cache
            .docs
            .iter()
            .filter(|(_, doc)| doc.payload.is_none())
            .map(|(doc_key, doc)| (doc_key.clone(), doc.doc_version))
            .collect()
    }

    /// Mounts the surface: connects when the flag is on.
    pub async fn start(&mut self) -> Result<(), ClientError> {
        if self.flag {
            self.connect().await
        } else {
            Ok(())
        }
    }

    /// The flag decides whether the surface uses the client at all; off,
    /// the client is torn down (its store is kept).
    pub async fn set_flag(&mut self, on: bool) -> Result<(), ClientError> {
        if on == self.flag {
            return Ok(());
        }
        self.flag = on;
        if on {
            self.connect().await
        } else {
            self.disconnect().await;
            self.reconnect_due_at = None;
            Ok(())
        }
    }

    /// Drops the socket without scheduling a reconnect (the app went
    /// offline or the page closed it).
    pub async fn disconnect(&mut self) {
        if let Some(socket) = self.socket.take() {
            socket.phoenix.close().await;
        }
    }

    /// Opens a socket, joins and subscribes from the stored watermarks.
    /// A connection that cannot be made counts as a failed attempt and
    /// schedules the next one, as the client's retry loop does; only a
    /// refusal the client cannot act on is an error.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.disconnect().await;
        self.reconnect_due_at = None;
        match self.open_and_subscribe().await {
            Ok(()) => {
                self.reconnect_failures = 0;
                Ok(())
            }
            Err(error) if is_transport(&error.kind) => {
                self.socket = None;
                self.schedule_reconnect();
                Ok(())
            }
            Err(error) if matches!(error.kind, ClientErrorKind::StrandedByStaleCursor) => {
                self.stats.subscribes_refused += 1;
                self.disconnect().await;
                self.schedule_reconnect();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Reconnects when the socket is closed and the backoff has elapsed by
    /// the injected clock.
    pub async fn reconnect_if_due(&mut self) -> Result<(), ClientError> {
        match self.reconnect_due_at {
            Some(due_at) if self.flag && self.socket.is_none() && self.clock.now() >= due_at => {
                self.connect().await
            }
            _ => Ok(()),
        }
    }

    fn schedule_reconnect(&mut self) {
        let delay = reconnect_delay(self.reconnect_failures);
        self.reconnect_failures = self.reconnect_failures.saturating_add(1);
        self.reconnect_due_at = Some(self.clock.now() + delay);
    }

    /// The socket closed under the client: it notices and schedules a
    /// reconnect.
    fn closed(&mut self) {
        self.socket = None;
        if self.flag {
            self.schedule_reconnect();
        }
    }

    async fn open_and_subscribe(&mut self) -> Result<(), ClientError> {
        let token = self
            .tokens
            .token()
            .map_err(|reason| self.error("get a sync token", ClientErrorKind::Token(reason)))?;
        let phoenix = PhoenixSocket::open(&self.config.websocket_url, &token)
            .await
            .map_err(|kind| self.error("connect to the sync socket", kind))?;
        self.socket = Some(ShippedSocket {
            phoenix,
            channel_stopped: false,
        });
        self.stats.connects += 1;
        let (status, response) = self.request("join sync:v1", "phx_join", json!({})).await?;
        if status != "ok" {
            return Err(self.error("join sync:v1", ClientErrorKind::Refused(response)));
        }
        self.stats.joins += 1;
        for _ in 0..SUBSCRIBE_ROUNDS_MAX {
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
            // The shipped client clears each stale topic's cursor and
            // expects the next subscribe, without one, to be accepted.
            self.forget(&stale_topics(&response))?;
        }
        Err(self.error("subscribe", ClientErrorKind::StrandedByStaleCursor))
    }

    fn forget(&mut self, topics: &[String]) -> Result<(), ClientError> {
        for topic in topics {
            self.store
                .clear(topic)
                .map_err(|error| self.error("clear a stale watermark", error))?;
            self.cache.reset_watermark(topic, None);
        }
        Ok(())
    }

    /// Sends `event` with `join_ref` null and awaits its reply, applying
    /// the pushes that come first.
    async fn request(
        &mut self,
        step: &str,
        event: &str,
        payload: Value,
    ) -> Result<(String, Value), ClientError> {
        let socket = self.socket_mut(step)?;
        let reference = socket.phoenix.next_ref();
        let frame = json!([Value::Null, reference, CHANNEL_TOPIC, event, payload]);
        if let Err(kind) = socket.phoenix.send(&frame).await {
            self.socket = None;
            return Err(self.error(step, kind));
        }
        loop {
            let frame = self.next_frame(step, self.config.frame_timeout).await?;
            let Some(frame) = frame else {
                return Err(self.error(step, ClientErrorKind::TimedOut(self.config.frame_timeout)));
            };
            if frame.event == "phx_reply" && frame.reference.as_deref() == Some(&reference) {
                let status = frame.payload["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                return Ok((status, frame.payload["response"].clone()));
            }
            self.handle_frame(frame)?;
        }
    }

    fn socket_mut(&mut self, step: &str) -> Result<&mut ShippedSocket, ClientError> {
        let surface = self.config.surface;
        self.socket.as_mut().ok_or_else(|| ClientError {
            surface,
            step: step.to_owned(),
            kind: ClientErrorKind::NotConnected,
        })
    }

    /// The next text frame, `None` when `wait` passed without one. A
    /// closed socket is an error of kind `Closed` (socket dropped, no
    /// reconnect scheduled here: the callers decide).
    async fn next_frame(
        &mut self,
        step: &str,
        wait: Duration,
    ) -> Result<Option<Frame>, ClientError> {
        let socket = self.socket_mut(step)?;
        match socket.phoenix.read(wait).await {
            Read::Frame(frame) => Ok(Some(frame)),
            Read::Quiet => Ok(None),
            Read::Ended(kind) => {
                self.socket = None;
                Err(self.error(step, kind))
            }
        }
    }

    /// Reads one frame for a listening caller: a close is noticed (and a
    /// reconnect scheduled), not an error. Returns whether a frame came.
    async fn listen_once(&mut self, step: &str, wait: Duration) -> Result<bool, ClientError> {
        match self.next_frame(step, wait).await {
            Ok(Some(frame)) => {
                self.handle_frame(frame)?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(error) if is_transport(&error.kind) => {
                self.closed();
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Applies frames until `topic`'s watermark reaches `target`. A lane
    /// that is not live (closed, or its channel stopped) receives nothing,
    /// so it returns at once: whether it converges later is for the
    /// caller's liveness bound to judge.
    pub async fn await_watermark(&mut self, topic: &str, target: i64) -> Result<(), ClientError> {
        while self.is_live() && self.cache.watermark(topic).unwrap_or(0) < target {
            if !self
                .listen_once("await a watermark", self.config.frame_timeout)
                .await?
                && self.is_live()
            {
                return Err(self.error(
                    "await a watermark",
                    ClientErrorKind::TimedOut(self.config.frame_timeout),
                ));
            }
        }
        Ok(())
    }

    /// After a server heartbeat tick: a live channel got exactly one
    /// `sync:heartbeat` or `phx_close`; reads up to it so that what the
    /// lane knows matches what the server did.
    pub async fn await_tick_frame(&mut self) -> Result<(), ClientError> {
        let before = (self.stats.channel_closes_seen, self.stats.heartbeats_seen);
        while self.is_live()
            && (self.stats.channel_closes_seen, self.stats.heartbeats_seen) == before
        {
            if !self
                .listen_once("await a heartbeat", self.config.frame_timeout)
                .await?
                && self.is_live()
            {
                return Err(self.error(
                    "await a heartbeat",
                    ClientErrorKind::TimedOut(self.config.frame_timeout),
                ));
            }
        }
        Ok(())
    }

    /// Reads the socket to its close, applying what came before it, when
    /// the server says it closed it (an idle sweep, a channel timeout with
    /// B12 fixed, a shutdown); a reconnect is scheduled. No close within
    /// the frame timeout is an error: the close was promised.
    pub async fn await_close(&mut self) -> Result<(), ClientError> {
        while self.socket.is_some() {
            if !self
                .listen_once("await the socket's close", self.config.frame_timeout)
                .await?
                && self.socket.is_some()
            {
                return Err(self.error(
                    "await the socket's close",
                    ClientErrorKind::TimedOut(self.config.frame_timeout),
                ));
            }
        }
        Ok(())
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), ClientError> {
        if frame.topic != CHANNEL_TOPIC {
            return Ok(());
        }
        match frame.event.as_str() {
            "sync:update_batch" => self.apply_batch(&frame.payload),
            "sync:heartbeat" => {
                self.stats.heartbeats_seen += 1;
                Ok(())
            }
            "sync:error" => {
                self.stats.stale_cursors += 1;
                self.forget(&stale_topics(&frame.payload))
            }
            "phx_close" => {
                // Ignored by the shipped client: it keeps listening.
                self.stats.channel_closes_seen += 1;
                if let Some(socket) = self.socket.as_mut() {
                    socket.channel_stopped = true;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Every update through the version rule, the watermark stored when it
    /// rises. A snapshot batch (hardened B10) is nothing special to the
    /// shipped client; it is only counted apart for the observation.
    pub fn apply_batch(&mut self, batch: &Value) -> Result<(), ClientError> {
        let raw_count = batch
            .get("updates")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let updates: Vec<Update> = apply::normalise_batch(batch);
        self.stats.malformed_updates += raw_count - updates.len();
        self.stats.batches += 1;
        let snapshot = batch.get("snapshot") == Some(&Value::Bool(true));
        if snapshot {
            self.stats.snapshots += 1;
        }
        for update in &updates {
            if !snapshot {
                self.stats
                    .delivered
                    .push((update.topic.clone(), update.watermark));
            }
            if let Some(watermark) = self.cache.apply(update).watermark_advanced_to {
                self.store
                    .save(&update.topic, watermark)
                    .map_err(|error| self.error("store a watermark", error))?;
            }
        }
        Ok(())
    }
}

/// Failures the client's retry loop absorbs: the socket could not be
/// opened, or closed, or stopped answering.
fn is_transport(kind: &ClientErrorKind) -> bool {
    matches!(
        kind,
        ClientErrorKind::WebSocket(_)
            | ClientErrorKind::Closed
            | ClientErrorKind::NotConnected
            | ClientErrorKind::TimedOut(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use khala_runtime::clock::ManualClock;

    #[test]
    fn the_reconnect_delay_doubles_from_one_second_to_thirty() {
        let delays: Vec<i64> = (0..8)
            .map(|failures| reconnect_delay(failures).num_seconds())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(reconnect_delay(u32::MAX), RECONNECT_DELAY_MAX);
    }

    fn offline_lane(clock: Arc<ManualClock>) -> ShippedLane {
        let config = ShippedConfig {
            surface: Surface::Web,
            websocket_url: "ws://127.0.0.1:9/x".into(),
            topics: vec!["t".into()],
            frame_timeout: Duration::from_secs(1),
        };
        ShippedLane::new(
            config,
            true,
            Arc::new(|| Ok::<String, String>("token".into())),
            Arc::new(crate::MemoryWatermarkStore::new()),
            clock,
        )
    }

    #[tokio::test]
    async fn a_failed_connect_schedules_the_next_attempt_on_the_clock() {
        // A clock that does not tick on reads, so due times are exact.
        let clock = Arc::new(ManualClock::with_tick(
            DateTime::UNIX_EPOCH,
            TimeDelta::zero(),
        ));
        let mut lane = offline_lane(clock.clone());
        let start = clock.now();
        lane.connect().await.expect("a refused socket is retried");
        assert_eq!(lane.reconnect_due_at(), Some(start + TimeDelta::seconds(1)));
        lane.reconnect_if_due().await.expect("not due: nothing");
        assert_eq!(lane.reconnect_due_at(), Some(start + TimeDelta::seconds(1)));
        clock.advance(TimeDelta::seconds(1));
        lane.reconnect_if_due().await.expect("due: retried");
        assert_eq!(
            lane.reconnect_due_at(),
            Some(start + TimeDelta::seconds(1) + TimeDelta::seconds(2))
        );
    }

    #[test]
    fn an_equal_version_overwrites_a_higher_one_is_kept_and_the_watermark_only_rises() {
        let mut lane = offline_lane(Arc::new(ManualClock::new(DateTime::UNIX_EPOCH)));
        let update = |version: i64, watermark: i64, x: i64| {
            json!({"topic": "t", "doc_key": "d", "doc_version": version,
                   "watermark": watermark, "payload": {"x": x}})
        };
        for batch in [
            json!({"updates": [update(2, 5, 1)]}),
            json!({"updates": [update(2, 6, 2)]}),
            json!({"updates": [update(1, 4, 3)]}),
        ] {
            lane.apply_batch(&batch).expect("applied");
        }
        assert_eq!(lane.cached("d").map(|doc| doc.doc_version), Some(2));
        assert_eq!(lane.rows()["d"].payload, json!({"x": 2}));
        assert_eq!(lane.watermark("t"), Some(6));
    }
}
