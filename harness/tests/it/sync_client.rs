//! Fixtures of the sync-server tests: an embedded server on a fresh
//! database with a manual clock, tokens, a Phoenix V2 WebSocket client that
//! awaits frames with a bounded timeout (never sleeps), and journal writers.

use crate::fixtures::{self, Env};
use crate::support::ok;
use chrono::{DateTime, TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use khala_clients::apply::{ApplyRule, ClientCache, normalise_batch};
use khala_runtime::clock::{Clock, ManualClock};
use khala_runtime::hashing::payload_hash;
use khala_runtime::notifier::StreamWake;
use khala_runtime::sync::jwt::{DEFAULT_KEY_ID, IssuerConfig, TokenIssuer};
use khala_runtime::sync::protocol::Frame;
use khala_runtime::sync::{SyncConfig, SyncServer, SyncServerHandle};
use khala_runtime::{Profile, ProjectionKind, Runtime, SinkMode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const RUN_TOPIC: &str = "runtime.run_summaries";
pub const WORKER_TOPIC: &str = "runtime.codex_worker_summaries";
pub const NOTIFICATIONS_TOPIC: &str = "runtime.notifications";
/// The longest any test waits for a frame: a bound on failure, never a delay.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// A database, a runtime projecting into Khala, and a sync server sharing
/// its wake-ups. The runtime is always `hardened` (wakes after commit, B11
/// fixed) so that live delivery is deterministic; the server's profile is
/// the one under test.
pub struct SyncEnv {
    pub env: Env,
    pub runtime: Runtime,
    pub server: SyncServerHandle,
    /// The server's clock (heartbeats, token times).
    pub clock: Arc<ManualClock>,
    pub issuer: TokenIssuer,
}

impl SyncEnv {
    pub async fn start(profile: Profile) -> SyncEnv {
        SyncEnv::start_with(profile, |_| {}).await
    }

    pub async fn start_with(profile: Profile, configure: impl FnOnce(&mut SyncConfig)) -> SyncEnv {
        let env = Env::new().await;
        let runtime = fixtures::runtime(env.pool(), Profile::Hardened, SinkMode::KhalaOnly);
        SyncEnv::serve(env, runtime, profile, configure).await
    }

    /// A server over an existing runtime (e.g. one in pointer mode).
    pub async fn serve(
        env: Env,
        runtime: Runtime,
        profile: Profile,
        configure: impl FnOnce(&mut SyncConfig),
    ) -> SyncEnv {
        let mut config = SyncConfig::new(profile);
        configure(&mut config);
        let clock = Arc::new(ManualClock::new(fixtures::start_time()));
        let issuer = TokenIssuer::new(IssuerConfig::matching(&config.auth, DEFAULT_KEY_ID));
        let server = ok(SyncServer::start(
            config,
            env.pool().clone(),
            runtime.notifier().clone(),
            clock.clone() as Arc<dyn Clock>,
        )
        .await);
        SyncEnv {
            env,
            runtime,
            server,
            clock,
            issuer,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A token for user 7 holding `scopes`.
    pub fn token(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|scope| (*scope).to_owned()).collect();
        ok(self.issuer.issue(7, &scopes, self.now())).token
    }

    /// A token whose `oa_sync_scopes` claim is `scopes` as given, which the
    /// issuer would refuse to mint (unknown scopes, repeats, odd types).
    pub fn token_with_raw_scopes(&self, scopes: Value) -> String {
        let issued = ok(self.issuer.issue(7, &[], self.now()));
        let now = issued.issued_at;
        let claims = json!({
            "iss": issued.issuer, "aud": issued.audience, "sub": issued.subject,
            "iat": now, "nbf": now, "exp": issued.expires_at, "jti": "0123456789abcdef01234567",
            "oa_org_id": issued.org_id, "oa_sync_scopes": scopes,
            "oa_claims_version": issued.claims_version,
        });
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": issued.kid});
        khala_runtime::sync::jwt::encode_hs256(&header, &claims, &self.issuer.config().signing_key)
    }

    /// A connected client holding every topic, not yet joined.
    pub async fn connect(&self) -> SyncClient {
        self.connect_with(&[RUN_TOPIC, WORKER_TOPIC, NOTIFICATIONS_TOPIC])
            .await
    }

    pub async fn connect_with(&self, scopes: &[&str]) -> SyncClient {
        let url = self.server.websocket_url(&self.token(scopes));
        SyncClient::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("failed to connect to the sync server: {error}"))
    }

    /// `ws://…/socket/websocket?token=…` with `vsn` as given (none: no
    /// parameter at all).
    pub fn url_with_vsn(&self, token: &str, vsn: Option<&str>) -> String {
        let url = self
            .server
            .http_url(&format!("/socket/websocket?token={token}"))
            .replace("http://", "ws://");
        match vsn {
            Some(vsn) => format!("{url}&vsn={vsn}"),
            None => url,
        }
    }

    /// A connected, joined client holding every topic.
    pub async fn joined(&self) -> SyncClient {
        let mut client = self.connect().await;
        client.join().await;
        client
    }

    /// The HTTP status of a refused upgrade, or `None` when it was accepted.
    pub async fn refused_status(&self, token: Option<&str>) -> Option<u16> {
        let url = match token {
            Some(token) => self.server.websocket_url(token),
            None => self
                .server
                .http_url("/socket/websocket?vsn=2.0.0")
                .replace("http://", "ws://"),
        };
        match SyncClient::connect(&url).await {
            Ok(_) => None,
            Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
            Err(other) => panic!("failed to reach the sync server: {other}"),
        }
    }

    /// Projects one new run through the runtime (one journal row, woken
    /// after commit) and returns its document key.
    pub async fn project_new_run(&self, run_id: &str) -> String {
        ok(self.runtime.create_run(&fixtures::new_run(run_id)).await);
        let outcome = ok(self
            .runtime
            .append_event(
                ProjectionKind::RunSummary,
                run_id,
                "run.started",
                &json!({}),
            )
            .await);
        ok(outcome.projection);
        ProjectionKind::RunSummary.document_id(run_id)
    }

    /// Inserts a run-topic journal row (and its read-model row) at
    /// `watermark`, inserted at `inserted_at`, and wakes the server.
    pub async fn insert_run_event(&self, watermark: i64, inserted_at: DateTime<Utc>) {
        insert_event(self.env.pool(), RUN_TOPIC, watermark, inserted_at).await;
        self.runtime.notifier().wake(StreamWake {
            topic: RUN_TOPIC.to_owned(),
            watermark,
        });
    }

    /// Run-topic rows `watermarks`, inserted now.
    pub async fn insert_run_events(&self, watermarks: impl IntoIterator<Item = i64>) {
        for watermark in watermarks {
            self.insert_run_event(watermark, fixtures::start_time())
                .await;
        }
    }

    /// `doc_key → doc_version` of every read-model row of `topic`.
    pub async fn read_model_versions(&self, topic: &str) -> BTreeMap<String, i64> {
        let kind = khala_runtime::sync::topics::projection_of_topic(topic).expect("a read model");
        let statement = format!(
            "SELECT doc_key, doc_version FROM {}",
            kind.read_model_table()
        );
        let rows: Vec<(String, i64)> = ok(sqlx::query_as(sqlx::AssertSqlSafe(statement))
            .fetch_all(self.env.pool())
            .await);
        rows.into_iter().collect()
    }

    pub async fn finish(self) {
        ok(self.server.shutdown().await);
        self.env.finish().await;
    }
}

/// The payload of a directly inserted row: enough to recognise it.
pub fn event_payload(topic: &str, watermark: i64) -> Value {
    json!({"document_id": doc_key(topic, watermark), "seq": watermark})
}

pub fn doc_key(topic: &str, watermark: i64) -> String {
    let kind = if topic == WORKER_TOPIC {
        ProjectionKind::CodexWorkerSummary
    } else {
        ProjectionKind::RunSummary
    };
    kind.document_id(&format!("e{watermark}"))
}

/// A journal row of `topic` at `watermark` with its read-model row; the
/// topic counter is raised to at least `watermark`.
pub async fn insert_event(
    pool: &sqlx::PgPool,
    topic: &str,
    watermark: i64,
    inserted_at: DateTime<Utc>,
) {
    let payload = event_payload(topic, watermark);
    let hash = payload_hash(&payload).to_vec();
    let key = doc_key(topic, watermark);
    ok(sqlx::query(
        "INSERT INTO runtime.sync_stream_events \
         (topic, watermark, doc_key, doc_version, payload, payload_hash, inserted_at) \
         VALUES ($1, $2, $3, $2, $4, $5, $6)",
    )
    .bind(topic)
    .bind(watermark)
    .bind(&key)
    .bind(&payload)
    .bind(&hash)
    .bind(inserted_at.naive_utc())
    .execute(pool)
    .await);
    if let Some(kind) = khala_runtime::sync::topics::projection_of_topic(topic) {
        let statement = format!(
            "INSERT INTO {} (doc_key, doc_version, payload, payload_hash, inserted_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
            kind.read_model_table()
        );
        ok(sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(&key)
            .bind(watermark)
            .bind(&payload)
            .bind(&hash)
            .bind(inserted_at.naive_utc())
            .execute(pool)
            .await);
    }
    ok(sqlx::query(
        "UPDATE runtime.sync_topic_sequences SET next_watermark = GREATEST(next_watermark, $2) WHERE topic = $1",
    )
    .bind(topic)
    .bind(watermark)
    .execute(pool)
    .await);
}

/// Seconds before the start time.
pub fn ago(seconds: i64) -> DateTime<Utc> {
    fixtures::start_time() - TimeDelta::seconds(seconds)
}

/// A reply: `status` and `response`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: String,
    pub response: Value,
}

impl Reply {
    pub fn ok(&self) -> &Value {
        assert_eq!(
            self.status, "ok",
            "expected an ok reply, got {:?}",
            self.response
        );
        &self.response
    }

    pub fn error(&self) -> &Value {
        assert_eq!(
            self.status, "error",
            "expected an error reply, got {:?}",
            self.response
        );
        &self.response
    }
}

/// The frames a request caused: the pushes before its reply, and the reply.
#[derive(Debug)]
pub struct Exchange {
    pub pushes: Vec<Frame>,
    pub reply: Reply,
    pub reply_frame: Frame,
}

impl Exchange {
    pub fn batches(&self) -> Vec<Value> {
        batches(&self.pushes)
    }

    /// The watermarks of every update pushed, in arrival order.
    pub fn delivered(&self) -> Vec<i64> {
        self.batches().iter().flat_map(batch_watermarks).collect()
    }

    pub fn pushes_of(&self, event: &str) -> Vec<Value> {
        self.pushes
            .iter()
            .filter(|frame| frame.event == event)
            .map(|frame| frame.payload.clone())
            .collect()
    }
}

pub fn batches(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .filter(|frame| frame.event == "sync:update_batch")
        .map(|frame| frame.payload.clone())
        .collect()
}

pub fn batch_watermarks(batch: &Value) -> Vec<i64> {
    batch["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|update| update["watermark"].as_i64().expect("watermark"))
        .collect()
}

/// `current_watermarks` / `watermarks` as `(topic, watermark)` pairs.
pub fn cursor_pairs(list: &Value) -> Vec<(String, i64)> {
    list.as_array()
        .expect("watermarks")
        .iter()
        .map(|entry| {
            (
                entry["topic"].as_str().expect("topic").to_owned(),
                entry["watermark"].as_i64().expect("watermark"),
            )
        })
        .collect()
}

/// A Phoenix V2 client speaking to the sync server.
pub struct SyncClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: u64,
    join_ref: Option<String>,
}

impl SyncClient {
    pub async fn connect(url: &str) -> Result<SyncClient, tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(SyncClient {
            ws,
            next_ref: 0,
            join_ref: None,
        })
    }

    fn next_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    pub async fn send_message(&mut self, message: Message) {
        self.try_send_message(message)
            .await
            .unwrap_or_else(|error| panic!("failed to send to the sync server: {error}"));
    }

    pub async fn try_send_message(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(message).await
    }

    pub async fn send_text(&mut self, text: String) {
        self.send_message(Message::text(text)).await;
    }

    /// Sends `[join_ref, ref, topic, event, payload]`; returns the ref.
    pub async fn send(&mut self, topic: &str, event: &str, payload: Value) -> String {
        let reference = self.next_ref();
        let frame = json!([self.join_ref, reference, topic, event, payload]);
        self.send_text(frame.to_string()).await;
        reference
    }

    /// The next frame, or a panic after `FRAME_WAIT` or on close.
    pub async fn recv(&mut self) -> Frame {
        match self.recv_or_close().await {
            Some(frame) => frame,
            None => panic!("the sync server closed the connection"),
        }
    }

    /// The next frame, or `None` when the server closed the connection.
    pub async fn recv_or_close(&mut self) -> Option<Frame> {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no frame from the sync server within {FRAME_WAIT:?}"));
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(
                        Frame::parse(text.as_str(), usize::MAX)
                            .unwrap_or_else(|error| panic!("failed to {error}: {text}")),
                    );
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => panic!("the sync server sent a binary frame"),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            }
        }
    }

    /// Frames until the reply to `reference`; pushes before it are kept.
    pub async fn until_reply(&mut self, reference: &str) -> Exchange {
        let mut pushes = Vec::new();
        loop {
            let frame = self.recv().await;
            if frame.event == "phx_reply" && frame.reference.as_deref() == Some(reference) {
                let reply = Reply {
                    status: frame.payload["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    response: frame.payload["response"].clone(),
                };
                return Exchange {
                    pushes,
                    reply,
                    reply_frame: frame,
                };
            }
            pushes.push(frame);
        }
    }

    /// Sends a request on `sync:v1` and awaits its reply.
    pub async fn request(&mut self, event: &str, payload: Value) -> Exchange {
        let reference = self.send("sync:v1", event, payload).await;
        self.until_reply(&reference).await
    }

    /// The join ref this client sends with its messages.
    pub fn join_ref(&self) -> Option<&str> {
        self.join_ref.as_deref()
    }

    /// Sends one frame exactly as given; returns its ref.
    pub async fn send_frame(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let reference = self.next_ref();
        let frame = json!([join_ref, reference, topic, event, payload]);
        self.send_text(frame.to_string()).await;
        reference
    }

    /// Joins `sync:v1` as the shipped client does: `join_ref` null on the
    /// join and on every message after it. Returns the join's exchange.
    pub async fn join_as_shipped_client(&mut self) -> Exchange {
        self.join_ref = None;
        let reference = self
            .send_frame(None, "sync:v1", "phx_join", json!({}))
            .await;
        self.until_reply(&reference).await
    }

    /// The close code of the server's close frame; a text frame first is a
    /// failure, and a connection dropped without a close frame is `None`.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no close from the sync server within {FRAME_WAIT:?}"));
            match message {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|frame| u16::from(frame.code));
                }
                Some(Ok(Message::Text(text))) => panic!("expected a close, got {text}"),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return None,
            }
        }
    }

    /// Joins `sync:v1`; returns the join response.
    pub async fn join(&mut self) -> Value {
        self.join_exchange().await.reply.ok().clone()
    }

    /// Joins `sync:v1` with a fresh join ref; returns the whole exchange
    /// (a second join closes the first channel before its reply).
    pub async fn join_exchange(&mut self) -> Exchange {
        let reference = self.next_ref();
        self.join_ref = Some(reference.clone());
        let frame = json!([reference, reference, "sync:v1", "phx_join", {}]);
        self.send_text(frame.to_string()).await;
        self.until_reply(&reference).await
    }

    pub async fn subscribe(&mut self, payload: Value) -> Exchange {
        self.request("sync:subscribe", payload).await
    }

    /// The next `sync:update_batch` push; anything else first is a failure.
    pub async fn next_batch(&mut self) -> Value {
        let frame = self.recv().await;
        assert_eq!(
            frame.event, "sync:update_batch",
            "unexpected frame {frame:?}"
        );
        frame.payload
    }

    /// The watermarks of the next batch.
    pub async fn next_batch_watermarks(&mut self) -> Vec<i64> {
        batch_watermarks(&self.next_batch().await)
    }

    /// A client heartbeat round trip; the frames before its reply are
    /// everything the server had queued for this client (a barrier).
    pub async fn heartbeat(&mut self) -> Exchange {
        self.request("sync:heartbeat", json!({})).await
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The shipped `KhalaSyncClient` (facts §2) on one topic, as state and rules
/// applied to what a `SyncClient` receives: every update of every batch
/// through the §7.9 version rule (an equal `doc_version` overwrites, a
/// higher cached one is kept; the watermark only rises), the stored cursor
/// cleared on `stale_cursor`. It has no snapshot or hydration path and
/// ignores any field of a batch it does not know (such as `snapshot`).
pub struct ShippedClientModel {
    pub topic: String,
    pub cache: ClientCache,
    /// The watermark store's entry for the topic.
    pub stored: Option<i64>,
}

impl ShippedClientModel {
    pub fn new(topic: &str) -> Self {
        ShippedClientModel {
            topic: topic.to_owned(),
            cache: ClientCache::new(ApplyRule::DocumentVersion),
            stored: None,
        }
    }

    /// Applies every update of `batch`, persisting each watermark increase.
    pub fn apply(&mut self, batch: &Value) {
        for update in normalise_batch(batch) {
            if let Some(watermark) = self.cache.apply(&update).watermark_advanced_to {
                self.stored = Some(watermark);
            }
        }
    }

    /// Subscribes with the stored cursor (none: no `resume_after` entry),
    /// applies the batches pushed before the reply and, on `stale_cursor`,
    /// clears the stored cursor as the client does. Returns the exchange.
    pub async fn subscribe(&mut self, client: &mut SyncClient) -> Exchange {
        let mut resume_after = serde_json::Map::new();
        if let Some(watermark) = self.stored {
            resume_after.insert(self.topic.clone(), json!(watermark));
        }
        let exchange = client
            .subscribe(json!({"topics": [self.topic], "resume_after": resume_after}))
            .await;
        for batch in exchange.batches() {
            self.apply(&batch);
        }
        if exchange.reply.status == "error" && exchange.reply.response["code"] == "stale_cursor" {
            self.stored = None;
            self.cache.reset_watermark(&self.topic, None);
        }
        exchange
    }

    /// `doc_key → doc_version` of the doc cache.
    pub fn versions(&self) -> BTreeMap<String, i64> {
        self.cache
            .docs
            .iter()
            .map(|(key, doc)| (key.clone(), doc.doc_version))
            .collect()
    }
}
