//! The sync server as an embeddable axum app: the WebSocket at
//! `/socket/websocket?token=…&vsn=2.0.0` (spec §7.2, §7.3) and the HTTP
//! hydration endpoints. Time-driven work is explicit: `tick_heartbeats`,
//! `close_idle_sockets` and retention run when called, or on intervals when
//! the config asks for the background loops (the binary does).

use crate::clock::Clock;
use crate::notifier::{Notifier, StreamWake};
use crate::sync::channel::{Activity, ChannelContext, Connection, Outbox, Outgoing, TickOutcome};
use crate::sync::config::SyncConfig;
use crate::sync::hydration;
use crate::sync::jwt::{VerifiedClaims, Verifier};
use crate::sync::protocol::Serializer;
use crate::sync::retention::{self, RetentionError, RetentionResult};
use crate::sync::telemetry::SyncTelemetry;
use crate::sync::topics;
use crate::sync::wake_poller;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use chrono::{DateTime, TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

pub const WEBSOCKET_PATH: &str = "/socket/websocket";
/// The `vsn` the shipped client sends and `websocket_url` names.
pub const PROTOCOL_VSN: &str = "2.0.0";
/// The close code Bandit sends when a WebSocket's idle timeout fires (facts
/// §3).
pub const IDLE_CLOSE_CODE: u16 = 1002;
/// The close code of a socket closed with its timed-out channel (B12
/// fixed): a normal closure, the server chose to end it.
pub const CHANNEL_TIMEOUT_CLOSE_CODE: u16 = 1000;
/// How often the background loop looks for idle sockets.
const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Frames queued for one client before the channel waits for its writer.
const OUTBOX_CAPACITY: usize = 256;
/// How long `shutdown` waits for the listener to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SyncServerError {
    #[error("bind the sync server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serve the sync server: {0}")]
    Serve(#[source] std::io::Error),
    #[error("stop the sync server: the listener did not stop within {0:?}")]
    ShutdownTimedOut(Duration),
    #[error("stop the sync server: the listener task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One connection after `settle_wakes`: the client's address (the peer of
/// the socket) and, when a channel is joined, each subscribed topic's
/// cursor, the watermark its pushes reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledChannel {
    pub peer: SocketAddr,
    pub cursors: Option<std::collections::BTreeMap<String, i64>>,
}

/// Handles the wake-ups the sync server has been sent; cloned freely, it
/// outlives nothing (a stopped server's connections are gone, so it settles
/// none).
#[derive(Clone, Debug)]
pub struct WakeSettler {
    shared: Arc<Shared>,
}

impl WakeSettler {
    /// See `SyncServerHandle::settle_wakes`.
    pub async fn settle_wakes(&self) -> Vec<SettledChannel> {
        self.shared.settle_wakes().await
    }
}

/// What one `tick_heartbeats` did across the connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatTick {
    pub connections: usize,
    pub heartbeats_pushed: usize,
    pub channels_closed: usize,
}

enum Control {
    /// A heartbeat tick; answers what it did and, when the socket closed
    /// with its channel (B12 fixed), the client's address, once closed.
    Tick(oneshot::Sender<(TickOutcome, Option<SocketAddr>)>),
    /// Handle every wake-up queued now, then answer with the channel's
    /// cursors.
    Settle(oneshot::Sender<SettledChannel>),
    /// Close the socket if it has been idle for the timeout; answers with
    /// the client's address if it did, once closed.
    IdleCheck(oneshot::Sender<Option<SocketAddr>>),
    Shutdown,
}

/// An open connection as the server's loops reach it: its control queue,
/// and when it last carried a frame (for its idle deadline).
#[derive(Debug)]
struct Registered {
    control: mpsc::UnboundedSender<Control>,
    activity: Arc<Activity>,
}

#[derive(Debug)]
struct Shared {
    context: Arc<ChannelContext>,
    verifier: Verifier,
    notifier: Notifier,
    config: SyncConfig,
    connections: Mutex<HashMap<u64, Registered>>,
    connection_ids: AtomicU64,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Control::Tick(_) => "Tick",
            Control::Settle(_) => "Settle",
            Control::IdleCheck(_) => "IdleCheck",
            Control::Shutdown => "Shutdown",
        })
    }
}

impl Shared {
    fn senders(&self) -> Vec<mpsc::UnboundedSender<Control>> {
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .map(|registered| registered.control.clone())
            .collect()
    }

    /// When the first open socket's idle timer runs out, by the server
    /// clock: its last frame plus the idle timeout.
    fn next_idle_deadline(&self) -> Option<DateTime<Utc>> {
        let timeout = TimeDelta::from_std(self.config.socket_idle_timeout()).ok()?;
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .filter_map(|registered| registered.activity.last_frame().checked_add_signed(timeout))
            .min()
    }

    async fn tick_heartbeats(&self) -> (HeartbeatTick, Vec<SocketAddr>) {
        let mut acks = Vec::new();
        for sender in self.senders() {
            let (ack, outcome) = oneshot::channel();
            if sender.send(Control::Tick(ack)).is_ok() {
                acks.push(outcome);
            }
        }
        let mut tick = HeartbeatTick::default();
        let mut closed = Vec::new();
        for outcome in acks {
            // A connection that ends before answering is not counted.
            let Ok((outcome, peer)) = outcome.await else {
                continue;
            };
            closed.extend(peer);
            tick.connections += 1;
            match outcome {
                TickOutcome::HeartbeatPushed => tick.heartbeats_pushed += 1,
                TickOutcome::TimedOut => tick.channels_closed += 1,
                TickOutcome::NotJoined => {}
            }
        }
        (tick, closed)
    }

    async fn settle_wakes(&self) -> Vec<SettledChannel> {
        let mut acks = Vec::new();
        for sender in self.senders() {
            let (ack, settled) = oneshot::channel();
            if sender.send(Control::Settle(ack)).is_ok() {
                acks.push(settled);
            }
        }
        let mut settled = Vec::new();
        for ack in acks {
            // A connection that ends before answering has no channel.
            if let Ok(channel) = ack.await {
                settled.push(channel);
            }
        }
        settled
    }

    async fn close_idle_sockets(&self) -> Vec<SocketAddr> {
        let mut acks = Vec::new();
        for sender in self.senders() {
            let (ack, closed) = oneshot::channel();
            if sender.send(Control::IdleCheck(ack)).is_ok() {
                acks.push(closed);
            }
        }
        let mut closed = Vec::new();
        for ack in acks {
            closed.extend(ack.await.ok().flatten());
        }
        closed
    }

    async fn run_retention_once(&self) -> Result<RetentionResult, RetentionError> {
        retention::run_once_planted(
            &self.context.pool,
            self.context.clock.now(),
            TimeDelta::seconds(self.config.retention_horizon_seconds),
            self.config.retention_batch_size,
            self.config.planted,
        )
        .await
    }
}

/// Starts sync servers.
#[derive(Debug)]
pub struct SyncServer;

impl SyncServer {
    /// Binds `config.listen` and serves until `shutdown`. Wake-ups come from
    /// `notifier` (share the runtime's); every time the server reads comes
    /// from `clock`.
    pub async fn start(
        config: SyncConfig,
        pool: PgPool,
        notifier: Notifier,
        clock: Arc<dyn Clock>,
    ) -> Result<SyncServerHandle, SyncServerError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SyncServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SyncServerError::Bind {
                addr: config.listen,
                source,
            })?;
        // Each frame goes out when written, as Cowboy's listener does by
        // default; with Nagle a push followed by its reply waits for a
        // delayed acknowledgement (some 40 ms) on every stale cursor.
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set on a sync connection");
            }
        });
        let mut context = ChannelContext::new(
            pool.clone(),
            clock.clone(),
            config.switches,
            config.effective_replay_batch_size(),
            config.heartbeat_timeout(),
            config.max_frame_bytes,
        );
        context.refuse_no_cursor_after_prune = config.refuse_no_cursor_after_prune;
        let context = Arc::new(context);
        let shared = Arc::new(Shared {
            context,
            verifier: Verifier::new(config.auth.clone(), clock),
            notifier: notifier.clone(),
            config: config.clone(),
            connections: Mutex::new(HashMap::new()),
            connection_ids: AtomicU64::new(0),
        });
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
        });
        let mut background = Vec::new();
        if config.background_loops {
            background.push(spawn_heartbeat_loop(shared.clone()));
            background.push(spawn_idle_loop(shared.clone()));
            background.push(spawn_retention_loop(shared.clone()));
        }
        if let Some(interval_ms) = config.wake_poll_interval_ms {
            background.push(wake_poller::spawn(
                pool,
                notifier,
                Duration::from_millis(interval_ms.max(1)),
            ));
        }
        tracing::info!(%addr, profile_switches = ?config.switches, "sync server listening");
        Ok(SyncServerHandle {
            addr,
            shared,
            stop: Some(stop),
            serve,
            background,
        })
    }
}

fn spawn_heartbeat_loop(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = shared.config.heartbeat_interval();
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let (tick, _) = shared.tick_heartbeats().await;
            tracing::debug!(?tick, "heartbeat tick");
        }
    })
}

/// Sweeps for idle sockets every second, so a socket closes within a second
/// of its idle timeout (Bandit's timer is exact; a second is far below the
/// minute the timeout lasts).
fn spawn_idle_loop(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(IDLE_SWEEP_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let closed = shared.close_idle_sockets().await.len();
            if closed > 0 {
                tracing::debug!(closed, "idle sockets closed");
            }
        }
    })
}

fn spawn_retention_loop(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = shared.config.retention_interval();
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(error) = shared.run_retention_once().await {
                tracing::warn!(%error, "retention cycle failed");
            }
        }
    })
}

/// A running server.
#[derive(Debug)]
pub struct SyncServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    serve: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl SyncServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr>/socket/websocket?token=<token>&vsn=2.0.0`. Tokens are
    /// base64url and dots, so they need no escaping.
    pub fn websocket_url(&self, token: &str) -> String {
        format!(
            "ws://{}{WEBSOCKET_PATH}?token={token}&vsn={PROTOCOL_VSN}",
            self.addr
        )
    }

    /// `http://<addr><path>`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.shared.senders().len()
    }

    /// Joined `sync:v1` channels.
    pub fn active_channels(&self) -> usize {
        self.shared.context.active_channels()
    }

    /// One server heartbeat tick on every connection (spec §7.7); returns
    /// once each has pushed its heartbeat or closed its channel.
    pub async fn tick_heartbeats(&self) -> HeartbeatTick {
        self.shared.tick_heartbeats().await.0
    }

    /// The same, with the client address of every socket that closed with
    /// its channel (B12 fixed), each already closed: a caller holding the
    /// client end knows which sockets to read to their close, and that no
    /// other closed.
    pub async fn tick_heartbeats_listing_closes(&self) -> (HeartbeatTick, Vec<SocketAddr>) {
        self.shared.tick_heartbeats().await
    }

    /// Every connection handles the wake-ups queued for it now (each
    /// replays its woken topics), then reports its cursors: what the
    /// channels pushed, with no wall-clock wait. Used to hold a commit
    /// (see `CommitHold`) and to know what each client has been sent.
    pub async fn settle_wakes(&self) -> Vec<SettledChannel> {
        self.shared.settle_wakes().await
    }

    /// A handle that settles this server's wake-ups from elsewhere.
    pub fn wake_settler(&self) -> WakeSettler {
        WakeSettler {
            shared: self.shared.clone(),
        }
    }

    /// Closes every socket that carried no frame, either way, for the socket
    /// idle timeout by the server clock (code 1002, as Bandit does); returns
    /// how many it closed. The channel's pushes count as frames, so a socket
    /// whose channel lives is never idle; one whose channel stopped closes a
    /// timeout after the `phx_close`.
    pub async fn close_idle_sockets(&self) -> usize {
        self.shared.close_idle_sockets().await.len()
    }

    /// The same, returning the client address of each socket closed (its
    /// local address on the client's side), each already closed.
    pub async fn close_idle_sockets_listed(&self) -> Vec<SocketAddr> {
        self.shared.close_idle_sockets().await
    }

    /// When the first open socket becomes idle by the server clock, so that
    /// a caller driving time sweeps then, as Bandit's exact timer closes it.
    pub fn next_idle_deadline(&self) -> Option<DateTime<Utc>> {
        self.shared.next_idle_deadline()
    }

    /// What the channels' telemetry counted so far (spec §7.8).
    pub fn telemetry(&self) -> &SyncTelemetry {
        &self.shared.context.telemetry
    }

    /// One retention cycle with the configured horizon and batch size at the
    /// server clock's `now`.
    pub async fn run_retention_once(&self) -> Result<RetentionResult, RetentionError> {
        self.shared.run_retention_once().await
    }

    /// Closes every connection and stops listening.
    pub async fn shutdown(mut self) -> Result<(), SyncServerError> {
        for task in &self.background {
            task.abort();
        }
        for sender in self.shared.senders() {
            let _ = sender.send(Control::Shutdown);
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.serve).await {
            Ok(joined) => joined?.map_err(SyncServerError::Serve),
            Err(_) => {
                self.serve.abort();
                Err(SyncServerError::ShutdownTimedOut(SHUTDOWN_GRACE))
            }
        }
    }
}

impl Drop for SyncServerHandle {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            for sender in self.shared.senders() {
                let _ = sender.send(Control::Shutdown);
            }
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(WEBSOCKET_PATH, get(websocket))
        .route("/sync/v1/doc/{*doc_key}", get(get_doc))
        .route("/sync/v1/docs", get(list_docs))
        .with_state(shared)
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// Refuses the upgrade with 403 on a missing or bad token. The reason goes
/// to the log only.
async fn websocket(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // As Phoenix: no `vsn` means 1.0.0 (the V1 serializer); a version
    // neither serializer accepts refuses the connection.
    let Some(serializer) = Serializer::for_vsn(params.get("vsn").map(String::as_str)) else {
        tracing::info!(vsn = ?params.get("vsn"), "sync socket refused: unsupported vsn");
        return status(StatusCode::FORBIDDEN);
    };
    let Some(token) = params.get("token") else {
        tracing::info!(reason = "missing_token", "sync socket refused");
        return status(StatusCode::FORBIDDEN);
    };
    let claims = match shared.verifier.verify(token) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::info!(reason = %error.reason(), "sync socket refused");
            return status(StatusCode::FORBIDDEN);
        }
    };
    // The transport refuses (and closes on) messages far above the protocol
    // limit; between the two the channel answers with `frame_too_large`.
    let transport_limit = shared
        .config
        .max_frame_bytes
        .saturating_mul(4)
        .max(64 * 1024);
    upgrade
        .max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        .on_upgrade(move |socket| serve_connection(shared, claims, serializer, peer, socket))
}

async fn serve_connection(
    shared: Arc<Shared>,
    claims: VerifiedClaims,
    serializer: Serializer,
    peer: SocketAddr,
    socket: WebSocket,
) {
    let id = shared.connection_ids.fetch_add(1, Ordering::SeqCst);
    let (control, mut controls) = mpsc::unbounded_channel();
    let activity = Arc::new(Activity::new(shared.context.clock.clone()));
    shared
        .connections
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .insert(
            id,
            Registered {
                control,
                activity: activity.clone(),
            },
        );
    // Subscribed before anything is replayed, so no wake-up is lost.
    let mut wakes = shared.notifier.subscribe();
    let (mut sink, mut stream) = socket.split();
    let (frames, mut outgoing) = mpsc::channel::<Outgoing>(OUTBOX_CAPACITY);
    let writer = tokio::spawn(async move {
        let mut close = None;
        while let Some(next) = outgoing.recv().await {
            let frame = match next {
                Outgoing::Frame(frame) => frame,
                Outgoing::Close(code) => {
                    close = Some(CloseFrame {
                        code,
                        reason: "".into(),
                    });
                    break;
                }
            };
            let text = serializer.encode(&frame);
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(close)).await;
    });
    let idle_timeout =
        TimeDelta::from_std(shared.config.socket_idle_timeout()).unwrap_or(TimeDelta::MAX);
    let out = Outbox::new(frames, activity.clone());
    let mut connection = Connection::new(shared.context.clone(), &claims, serializer);
    // Answered once the socket is gone, so the caller sees it closed.
    let mut answer_when_closed: Option<Box<dyn FnOnce() + Send>> = None;
    loop {
        let step = tokio::select! {
            message = stream.next() => {
                if message.is_some() {
                    activity.touch();
                }
                // Wake-ups queued before this message are handled first, so a
                // reply tells the client everything woken before it was sent
                // has been pushed (no starvation: only what is queued now).
                let woken = queued_wakes(None, &mut wakes, &connection);
                match connection.handle_wakes(woken, &out).await {
                    Err(disconnected) => Err(disconnected),
                    Ok(()) => match message {
                        Some(Ok(Message::Text(text))) => {
                            connection.handle_text(text.as_str(), &out).await
                        }
                        Some(Ok(Message::Binary(_))) => connection.handle_binary(&out).await,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Err(error)) => {
                            tracing::debug!(%error, subject = %claims.sub, "sync socket read failed");
                            break;
                        }
                    },
                }
            }
            control = controls.recv() => match control {
                Some(Control::Tick(ack)) => {
                    let outcome = connection.tick(&out).await.unwrap_or(TickOutcome::NotJoined);
                    if outcome == TickOutcome::TimedOut
                        && !shared.context.switches.b12_socket_outlives_channel
                    {
                        // B12 fixed: the socket closes with its channel, the
                        // one signal the shipped client acts on.
                        tracing::debug!(subject = %claims.sub, "channel timed out: socket closed");
                        let _ = out.close(CHANNEL_TIMEOUT_CLOSE_CODE).await;
                        answer_when_closed = Some(Box::new(move || {
                            let _ = ack.send((outcome, Some(peer)));
                        }));
                        break;
                    }
                    let _ = ack.send((outcome, None));
                    Ok(())
                }
                Some(Control::Settle(ack)) => {
                    let woken = queued_wakes(None, &mut wakes, &connection);
                    let handled = connection.handle_wakes(woken, &out).await;
                    let cursors = connection.is_joined().then(|| connection.cursors());
                    let _ = ack.send(SettledChannel { peer, cursors });
                    handled
                }
                Some(Control::IdleCheck(ack)) => {
                    if activity.idle_for() >= idle_timeout {
                        tracing::debug!(subject = %claims.sub, "sync socket idle: closed");
                        let _ = out.close(IDLE_CLOSE_CODE).await;
                        answer_when_closed = Some(Box::new(move || {
                            let _ = ack.send(Some(peer));
                        }));
                        break;
                    }
                    let _ = ack.send(None);
                    Ok(())
                }
                Some(Control::Shutdown) | None => break,
            },
            wake = wakes.recv() => {
                let woken = queued_wakes(Some(wake), &mut wakes, &connection);
                connection.handle_wakes(woken, &out).await
            }
        };
        if step.is_err() {
            break;
        }
    }
    shared
        .connections
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .remove(&id);
    drop(connection);
    drop(out);
    let _ = writer.await;
    if let Some(answer) = answer_when_closed {
        answer();
    }
}

/// The topics woken by `first` and by every wake-up queued behind it,
/// coalesced: one replay per topic reads all of them. Missed wake-ups (the
/// receiver lagged) wake every subscribed topic.
fn queued_wakes(
    first: Option<Result<StreamWake, RecvError>>,
    wakes: &mut broadcast::Receiver<StreamWake>,
    connection: &Connection,
) -> BTreeSet<String> {
    let mut woken = BTreeSet::new();
    let mut lagged = false;
    match first {
        Some(Ok(wake)) => {
            woken.insert(wake.topic);
        }
        Some(Err(RecvError::Lagged(_))) => lagged = true,
        Some(Err(RecvError::Closed)) | None => {}
    }
    loop {
        match wakes.try_recv() {
            Ok(wake) => {
                woken.insert(wake.topic);
            }
            Err(TryRecvError::Lagged(_)) => lagged = true,
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    if lagged {
        woken.extend(connection.subscribed_topics());
    }
    woken
}

/// The verified claims of `Authorization: Bearer <token>`, or `None`.
fn bearer(shared: &Shared, headers: &HeaderMap) -> Option<VerifiedClaims> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    match shared.verifier.verify(token.trim()) {
        Ok(claims) => Some(claims),
        Err(error) => {
            tracing::info!(reason = %error.reason(), "hydration request refused");
            None
        }
    }
}

fn allows(claims: &VerifiedClaims, topic: &str) -> bool {
    topics::allowed_topics(&claims.scopes)
        .iter()
        .any(|allowed| allowed == topic)
}

/// `GET /sync/v1/doc/{doc_key}`: the read-model row, 404 when absent, 403
/// without a valid token holding the document's topic.
async fn get_doc(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(doc_key): Path<String>,
) -> Response {
    let Some(claims) = bearer(&shared, &headers) else {
        return status(StatusCode::FORBIDDEN);
    };
    let Some(kind) = topics::projection_of_doc_key(&doc_key) else {
        return status(StatusCode::NOT_FOUND);
    };
    if !allows(&claims, kind.topic()) {
        return status(StatusCode::FORBIDDEN);
    }
    match hydration::fetch_doc(&shared.context.pool, kind, &doc_key).await {
        Ok(Some(doc)) => axum::Json(doc).into_response(),
        Ok(None) => status(StatusCode::NOT_FOUND),
        Err(error) => {
            tracing::error!(%error, "hydration read failed");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// `GET /sync/v1/docs?topic=…`: every document of the topic and the
/// watermark to resume after.
async fn list_docs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(claims) = bearer(&shared, &headers) else {
        return status(StatusCode::FORBIDDEN);
    };
    let Some(topic) = params.get("topic").map(|topic| topic.trim()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    if !topics::is_known(topic) {
        return status(StatusCode::NOT_FOUND);
    }
    if !allows(&claims, topic) {
        return status(StatusCode::FORBIDDEN);
    }
    match hydration::list_topic(&shared.context.pool, topic).await {
        Ok(snapshot) => axum::Json(snapshot).into_response(),
        Err(error) => {
            tracing::error!(%error, "hydration read failed");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}
