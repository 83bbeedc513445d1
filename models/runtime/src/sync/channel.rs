//! The per-connection state machine of the `sync:v1` channel (spec §7.3,
//! §7.4, §7.5, §7.7): join, subscribe (steps 1–8 in order), unsubscribe,
//! client and server heartbeats, and the live path on wake-ups, with the
//! Phoenix socket's routing around it (facts §3): replies and pushes carry
//! the channel's join ref, a message for a topic not joined is answered
//! `unmatched topic`, an event without a handler crashes the channel
//! (`phx_error`), and a second join or a `phx_leave` closes it (`phx_close`).
//! It knows nothing of WebSockets: frames go out through an `Outbox`, which
//! also stamps the connection's last activity for the socket idle timeout.

use crate::clock::Clock;
use crate::profile::Switches;
use crate::sync::jwt::VerifiedClaims;
use crate::sync::protocol::{
    self, ChannelError, Frame, FrameError, FrameErrorKind, Serializer, SubscribeRequest,
};
use crate::sync::replay::{self, ReplayError, StaleRule};
use crate::sync::telemetry::{DisconnectReason, SyncEvent, SyncTelemetry};
use crate::sync::topics;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// What every channel of a server shares.
#[derive(Debug)]
pub struct ChannelContext {
    pub pool: PgPool,
    pub clock: Arc<dyn Clock>,
    pub switches: Switches,
    /// `SyncConfig::refuse_no_cursor_after_prune`: the replaced hardened
    /// B10 design.
    pub refuse_no_cursor_after_prune: bool,
    /// The config batch size: subscribe replays without a client size, and
    /// every live replay.
    pub replay_batch_size: i64,
    pub heartbeat_timeout: TimeDelta,
    pub max_frame_bytes: usize,
    /// Every §7.8 event the server's channels emitted.
    pub telemetry: SyncTelemetry,
    subscription_ids: AtomicU64,
    active_channels: AtomicUsize,
}

impl ChannelContext {
    pub fn new(
        pool: PgPool,
        clock: Arc<dyn Clock>,
        switches: Switches,
        replay_batch_size: i64,
        heartbeat_timeout: std::time::Duration,
        max_frame_bytes: usize,
    ) -> Self {
        ChannelContext {
            pool,
            clock,
            switches,
            refuse_no_cursor_after_prune: false,
            replay_batch_size,
            heartbeat_timeout: TimeDelta::from_std(heartbeat_timeout).unwrap_or(TimeDelta::MAX),
            max_frame_bytes,
            telemetry: SyncTelemetry::default(),
            subscription_ids: AtomicU64::new(0),
            active_channels: AtomicUsize::new(0),
        }
    }

    /// Joined channels right now (the original's `active_connections`).
    pub fn active_channels(&self) -> usize {
        self.active_channels.load(Ordering::SeqCst)
    }
}

/// The connection is gone; nothing more can be sent.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("send a frame: the connection is closed")]
pub struct Disconnected;

/// What the connection's writer is asked to write.
#[derive(Clone, Debug, PartialEq)]
pub enum Outgoing {
    Frame(Frame),
    /// A close frame with this code, then nothing more.
    Close(u16),
}

/// When a connection last carried a frame either way, in the server clock's
/// milliseconds. Bandit's idle timer is the socket process's receive
/// timeout, so every message through that process re-arms it: frames from
/// the client and every push the channel hands it (facts §3).
#[derive(Debug)]
pub struct Activity {
    clock: Arc<dyn Clock>,
    last_frame_ms: AtomicI64,
}

impl Activity {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let now = clock.now().timestamp_millis();
        Activity {
            clock,
            last_frame_ms: AtomicI64::new(now),
        }
    }

    /// A frame passed now.
    pub fn touch(&self) {
        let now = self.clock.now().timestamp_millis();
        self.last_frame_ms.fetch_max(now, Ordering::SeqCst);
    }

    /// When the last frame passed.
    pub fn last_frame(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.last_frame_ms.load(Ordering::SeqCst))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// How long since the last frame.
    pub fn idle_for(&self) -> TimeDelta {
        let now = self.clock.now().timestamp_millis();
        TimeDelta::milliseconds(now - self.last_frame_ms.load(Ordering::SeqCst))
    }
}

/// Where a channel's frames go (the connection's writer). Stamping happens
/// when a frame is queued, not when it is written, so that the stamp is the
/// server clock's time of the push however late the writer runs.
#[derive(Clone, Debug)]
pub struct Outbox {
    sender: mpsc::Sender<Outgoing>,
    activity: Arc<Activity>,
}

impl Outbox {
    pub fn new(sender: mpsc::Sender<Outgoing>, activity: Arc<Activity>) -> Self {
        Outbox { sender, activity }
    }

    pub async fn send(&self, frame: Frame) -> Result<(), Disconnected> {
        self.activity.touch();
        self.sender
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| Disconnected)
    }

    /// Asks the writer to close the socket with `code`.
    pub async fn close(&self, code: u16) -> Result<(), Disconnected> {
        self.sender
            .send(Outgoing::Close(code))
            .await
            .map_err(|_| Disconnected)
    }
}

/// What a server heartbeat tick did to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    NotJoined,
    HeartbeatPushed,
    /// No client message for longer than the timeout: the channel closed.
    TimedOut,
}

#[derive(Debug)]
struct Joined {
    /// The join's `join_ref`, or its `ref` when that was null (Phoenix's
    /// `join_ref || ref`): every reply and push of the channel carries it.
    join_ref: Option<String>,
    subscription_id: String,
    subscribed: BTreeSet<String>,
    cursors: BTreeMap<String, i64>,
    last_client_heartbeat: DateTime<Utc>,
    joined_at: DateTime<Utc>,
}

/// Why a subscribe step stopped.
enum StepError {
    Disconnected,
    Replay(ReplayError),
}

impl From<Disconnected> for StepError {
    fn from(_: Disconnected) -> Self {
        StepError::Disconnected
    }
}

impl From<ReplayError> for StepError {
    fn from(error: ReplayError) -> Self {
        StepError::Replay(error)
    }
}

/// One authenticated socket and its (at most one) `sync:v1` channel.
#[derive(Debug)]
pub struct Connection {
    context: Arc<ChannelContext>,
    serializer: Serializer,
    subject: String,
    allowed_topics: Vec<String>,
    channel: Option<Joined>,
}

impl Connection {
    pub fn new(
        context: Arc<ChannelContext>,
        claims: &VerifiedClaims,
        serializer: Serializer,
    ) -> Self {
        Connection {
            context,
            serializer,
            subject: claims.sub.clone(),
            allowed_topics: topics::allowed_topics(&claims.scopes),
            channel: None,
        }
    }

    pub fn is_joined(&self) -> bool {
        self.channel.is_some()
    }

    pub fn allowed_topics(&self) -> &[String] {
        &self.allowed_topics
    }

    /// The subscribed topics' cursors.
    pub fn cursors(&self) -> BTreeMap<String, i64> {
        self.channel
            .as_ref()
            .map(|channel| channel.cursors.clone())
            .unwrap_or_default()
    }

    /// Topics the live path replays on a wake-up.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.channel
            .as_ref()
            .map(|channel| channel.subscribed.clone())
            .unwrap_or_default()
    }

    /// A text frame from the client. Bad input of any kind gets an error
    /// reply on this connection; only a closed connection is an error.
    pub async fn handle_text(&mut self, text: &str, out: &Outbox) -> Result<(), Disconnected> {
        match self.serializer.parse(text, self.context.max_frame_bytes) {
            Ok(frame) => self.handle_frame(frame, out).await,
            Err(error) => self.refuse_frame(error, out).await,
        }
    }

    /// A binary frame: this protocol is JSON text only.
    pub async fn handle_binary(&mut self, out: &Outbox) -> Result<(), Disconnected> {
        self.refuse_frame(FrameError::bare(FrameErrorKind::Binary), out)
            .await
    }

    async fn refuse_frame(&mut self, error: FrameError, out: &Outbox) -> Result<(), Disconnected> {
        tracing::debug!(subject = %self.subject, %error, "protocol error");
        out.send(error.reply()).await
    }

    /// The channel's join ref (`None` when not joined).
    fn join_ref(&self) -> Option<String> {
        self.channel
            .as_ref()
            .and_then(|channel| channel.join_ref.clone())
    }

    /// Routes one frame as `Phoenix.Socket` does, then the channel's
    /// `handle_in`.
    pub async fn handle_frame(&mut self, frame: Frame, out: &Outbox) -> Result<(), Disconnected> {
        let topic = frame.topic.as_str();
        let event = frame.event.as_str();
        let result = match (topic, event) {
            // The socket's own replies carry no join ref.
            (protocol::PHOENIX_TOPIC, protocol::EVENT_PHOENIX_HEARTBEAT) => {
                return out.send(Frame::reply_on(None, &frame, Ok(json!({})))).await;
            }
            (protocol::CHANNEL_TOPIC, protocol::EVENT_JOIN) => {
                return self.join(&frame, out).await;
            }
            (_, protocol::EVENT_JOIN) => {
                return out
                    .send(Frame::reply(&frame, Err(ChannelError::BadTopic)))
                    .await;
            }
            (protocol::CHANNEL_TOPIC, _) if self.channel.is_some() => match event {
                protocol::EVENT_LEAVE => return self.leave_on_request(&frame, out).await,
                protocol::EVENT_SUBSCRIBE => return self.subscribe(&frame, out).await,
                protocol::EVENT_UNSUBSCRIBE => self.unsubscribe(&frame),
                protocol::EVENT_HEARTBEAT => return self.client_heartbeat(&frame, out).await,
                // The original's `handle_in` has no clause for any other
                // event: the channel process crashes, and the socket tells
                // the client with `phx_error` instead of a reply.
                _ => return self.crash(out).await,
            },
            _ => {
                return out
                    .send(Frame::reply_on(
                        None,
                        &frame,
                        Err(ChannelError::UnmatchedTopic),
                    ))
                    .await;
            }
        };
        out.send(Frame::reply_on(self.join_ref(), &frame, result))
            .await
    }

    /// `phx_join` on `sync:v1`. A channel already joined is closed first
    /// (`phx_close` with its join ref), as Phoenix does on a duplicate join.
    async fn join(&mut self, frame: &Frame, out: &Outbox) -> Result<(), Disconnected> {
        if let Some(previous) = self.leave(DisconnectReason::DuplicateJoin) {
            out.send(Frame::close(previous)).await?;
        }
        let number = self.context.subscription_ids.fetch_add(1, Ordering::SeqCst) + 1;
        let subscription_id = format!("sub_{number}");
        let response = protocol::join_response(&subscription_id, &self.allowed_topics);
        let now = self.context.clock.now();
        self.channel = Some(Joined {
            join_ref: frame.join_ref.clone().or_else(|| frame.reference.clone()),
            subscription_id,
            subscribed: BTreeSet::new(),
            cursors: BTreeMap::new(),
            last_client_heartbeat: now,
            joined_at: now,
        });
        let active = self.context.active_channels.fetch_add(1, Ordering::SeqCst) + 1;
        self.context.telemetry.emit(SyncEvent::Connect {
            active_connections: active,
        });
        tracing::debug!(subject = %self.subject, "channel joined");
        out.send(Frame::reply(frame, Ok(response))).await
    }

    /// `phx_leave`: an ok reply, then `phx_close`.
    async fn leave_on_request(&mut self, frame: &Frame, out: &Outbox) -> Result<(), Disconnected> {
        let join_ref = self.leave(DisconnectReason::Left).flatten();
        out.send(Frame::reply_on(join_ref.clone(), frame, Ok(json!({}))))
            .await?;
        out.send(Frame::close(join_ref)).await
    }

    /// The channel process crashed: it is gone and the client gets
    /// `phx_error`.
    async fn crash(&mut self, out: &Outbox) -> Result<(), Disconnected> {
        let join_ref = self.leave(DisconnectReason::Crashed).flatten();
        out.send(Frame::channel_error(join_ref)).await
    }

    /// Ends the channel, if any, for `reason`; returns its join ref when
    /// there was one.
    fn leave(&mut self, reason: DisconnectReason) -> Option<Option<String>> {
        let channel = self.channel.take()?;
        let active = self
            .context
            .active_channels
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |active| {
                Some(active.saturating_sub(1))
            })
            .map_or(0, |before| before.saturating_sub(1));
        let duration_ms = (self.context.clock.now() - channel.joined_at).num_milliseconds();
        self.context.telemetry.emit(SyncEvent::Disconnect {
            reason,
            duration_ms,
            active_connections: active,
        });
        Some(channel.join_ref)
    }

    fn touch(&mut self) {
        let now = self.context.clock.now();
        if let Some(channel) = self.channel.as_mut() {
            channel.last_client_heartbeat = now;
        }
    }

    async fn subscribe(&mut self, frame: &Frame, out: &Outbox) -> Result<(), Disconnected> {
        self.touch();
        let started = Instant::now();
        let elapsed_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match self.try_subscribe(frame, out).await {
            Ok(response) => {
                self.context.telemetry.emit(SyncEvent::CatchupOk {
                    duration_ms: elapsed_ms(),
                });
                out.send(Frame::reply_on(self.join_ref(), frame, Ok(response)))
                    .await
            }
            Err(Ok(error)) => {
                if let ChannelError::StaleCursor { .. } = error {
                    self.context.telemetry.emit(SyncEvent::CatchupStale {
                        duration_ms: elapsed_ms(),
                    });
                    out.send(Frame::push(
                        self.join_ref(),
                        protocol::EVENT_ERROR,
                        error.payload(),
                    ))
                    .await?;
                }
                out.send(Frame::reply_on(self.join_ref(), frame, Err(error)))
                    .await
            }
            Err(Err(disconnected)) => Err(disconnected),
        }
    }

    /// Steps 1–8 of spec §7.3. `Err(Ok(_))` is an error reply,
    /// `Err(Err(_))` a closed connection.
    async fn try_subscribe(
        &mut self,
        frame: &Frame,
        out: &Outbox,
    ) -> Result<Value, Result<ChannelError, Disconnected>> {
        let switches = self.context.switches;
        // Steps 1–4.
        let request = SubscribeRequest::parse(
            &frame.payload,
            &self.allowed_topics,
            !switches.b21_resume_keys_untrimmed,
        )
        .map_err(Ok)?;
        let Some(channel) = self.channel.as_mut() else {
            return Err(Ok(ChannelError::UnmatchedTopic));
        };
        // Step 5: the stale check.
        let rule = StaleRule::from_switches(&switches);
        let mut stale_topics = Vec::new();
        for topic in &request.topics {
            let cursor = match request.resume_after.get(topic) {
                Some(cursor) => *cursor,
                // The original checks only topics the client sent a cursor for.
                None if rule.only_with_cursor => continue,
                None => match channel.cursors.get(topic) {
                    Some(cursor) => *cursor,
                    // The replaced hardened design: refused once pruned.
                    None if self.context.refuse_no_cursor_after_prune => {
                        let bounds = replay::bounds(&self.context.pool, topic)
                            .await
                            .map_err(|error| Ok(internal(&error)))?;
                        stale_topics.extend(rule.check_without_cursor(topic, &bounds));
                        continue;
                    }
                    // No cursor at all: nothing can be stale; the replay
                    // starts with a snapshot where rows were pruned.
                    None => continue,
                },
            };
            let bounds = replay::bounds(&self.context.pool, topic)
                .await
                .map_err(|error| Ok(internal(&error)))?;
            stale_topics.extend(rule.check(topic, cursor, &bounds));
        }
        if !stale_topics.is_empty() {
            return Err(Ok(ChannelError::StaleCursor {
                topics: stale_topics,
            }));
        }
        if request.resume_after.values().any(|cursor| *cursor > 0) {
            self.context.telemetry.emit(SyncEvent::Reconnect);
        }
        // Step 6: take wake-ups before replaying, so none is lost in between.
        let newly_subscribed: Vec<String> = request
            .topics
            .iter()
            .filter(|topic| channel.subscribed.insert((*topic).clone()))
            .cloned()
            .collect();
        // Step 7: replay in request order.
        let batch_size = request
            .replay_batch_size
            .unwrap_or(self.context.replay_batch_size);
        let join_ref = channel.join_ref.clone();
        for topic in &request.topics {
            let start = request
                .resume_after
                .get(topic)
                .or_else(|| channel.cursors.get(topic))
                .copied();
            let replayed = match start {
                Some(start) => {
                    replay_topic(&self.context, &join_ref, topic, start, batch_size, out).await
                }
                None => {
                    replay_without_cursor(&self.context, &join_ref, topic, batch_size, out).await
                }
            };
            match replayed {
                Ok(reached) => {
                    channel.cursors.insert(topic.clone(), reached);
                }
                Err(StepError::Disconnected) => return Err(Err(Disconnected)),
                Err(StepError::Replay(error)) => {
                    for topic in &newly_subscribed {
                        channel.subscribed.remove(topic);
                        channel.cursors.remove(topic);
                    }
                    return Err(Ok(internal(&error)));
                }
            }
        }
        // Step 8.
        channel.last_client_heartbeat = self.context.clock.now();
        Ok(protocol::subscribe_response(
            &channel.subscription_id,
            &request.topics,
            &channel.cursors,
        ))
    }

    fn unsubscribe(&mut self, frame: &Frame) -> Result<Value, ChannelError> {
        self.touch();
        let topics = protocol::normalise_topics(&frame.payload)?;
        let channel = self.channel.as_mut().ok_or(ChannelError::UnmatchedTopic)?;
        for topic in &topics {
            channel.subscribed.remove(topic);
            channel.cursors.remove(topic);
        }
        Ok(json!({
            "subscription_id": channel.subscription_id,
            "topics": channel.subscribed.iter().collect::<Vec<_>>(),
        }))
    }

    async fn client_heartbeat(&mut self, frame: &Frame, out: &Outbox) -> Result<(), Disconnected> {
        self.touch();
        self.context.telemetry.emit(SyncEvent::ClientHeartbeat);
        let Some(channel) = self.channel.as_ref() else {
            return out
                .send(Frame::reply_on(
                    None,
                    frame,
                    Err(ChannelError::UnmatchedTopic),
                ))
                .await;
        };
        let watermarks = protocol::watermarks_value(&channel.cursors);
        out.send(Frame::push(
            channel.join_ref.clone(),
            protocol::EVENT_HEARTBEAT,
            json!({"watermarks": watermarks}),
        ))
        .await?;
        let response =
            json!({"subscription_id": channel.subscription_id, "watermarks": watermarks});
        out.send(Frame::reply_on(
            channel.join_ref.clone(),
            frame,
            Ok(response),
        ))
        .await
    }

    /// The live path: replay each woken, subscribed topic from the socket's
    /// cursor with the config batch size. The wake's watermark is not used.
    pub async fn handle_wakes(
        &mut self,
        woken: impl IntoIterator<Item = String>,
        out: &Outbox,
    ) -> Result<(), Disconnected> {
        let Some(channel) = self.channel.as_mut() else {
            return Ok(());
        };
        let topics: BTreeSet<String> = woken
            .into_iter()
            .filter(|topic| channel.subscribed.contains(topic))
            .collect();
        for topic in topics {
            let cursor = channel.cursors.get(&topic).copied().unwrap_or(0);
            let batch_size = self.context.replay_batch_size;
            match replay_topic(
                &self.context,
                &channel.join_ref,
                &topic,
                cursor,
                batch_size,
                out,
            )
            .await
            {
                Ok(reached) => {
                    channel.cursors.insert(topic, reached);
                }
                Err(StepError::Disconnected) => return Err(Disconnected),
                Err(StepError::Replay(error)) => {
                    // The next wake-up for the topic retries from the same cursor.
                    tracing::warn!(subject = %self.subject, %error, "live replay failed");
                }
            }
        }
        Ok(())
    }

    /// A server heartbeat tick (spec §7.7).
    pub async fn tick(&mut self, out: &Outbox) -> Result<TickOutcome, Disconnected> {
        let now = self.context.clock.now();
        let Some(channel) = self.channel.as_ref() else {
            return Ok(TickOutcome::NotJoined);
        };
        if now - channel.last_client_heartbeat > self.context.heartbeat_timeout {
            self.context.telemetry.emit(SyncEvent::Timeout);
            tracing::info!(subject = %self.subject, "channel timed out");
            let join_ref = self.leave(DisconnectReason::HeartbeatTimeout).flatten();
            out.send(Frame::close(join_ref)).await?;
            return Ok(TickOutcome::TimedOut);
        }
        self.context.telemetry.emit(SyncEvent::ServerHeartbeat);
        out.send(Frame::push(
            channel.join_ref.clone(),
            protocol::EVENT_HEARTBEAT,
            json!({"watermarks": protocol::watermarks_value(&channel.cursors)}),
        ))
        .await?;
        Ok(TickOutcome::HeartbeatPushed)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.leave(DisconnectReason::SocketClosed);
    }
}

fn internal(error: &ReplayError) -> ChannelError {
    tracing::error!(%error, "journal read failed");
    ChannelError::Internal
}

/// A topic the client has no cursor for. Legacy (B10): the journal from 0,
/// whatever it retains. Hardened, on a topic with a retention floor above 0:
/// every read-model row first, in `sync:update_batch`es marked `snapshot`
/// whose updates all carry the floor as their watermark, then the journal
/// after the floor. The floor is a valid cursor (never stale), so a client
/// that drops between the two resumes correctly; the rows are the newest
/// versions, so the journal rows that follow are equal (same payload,
/// overwritten harmlessly) or older (skipped by the client's version rule);
/// and the client's watermark rises from the floor to the head.
async fn replay_without_cursor(
    context: &ChannelContext,
    join_ref: &Option<String>,
    topic: &str,
    batch_size: i64,
    out: &Outbox,
) -> Result<i64, StepError> {
    let rule = StaleRule::from_switches(&context.switches);
    if rule.only_with_cursor {
        return replay_topic(context, join_ref, topic, 0, batch_size, out).await;
    }
    let image = replay::read_image(&context.pool, topic).await?;
    let Some(floor) = rule.snapshot_watermark(&image.bounds) else {
        return replay_topic(context, join_ref, topic, 0, batch_size, out).await;
    };
    let head = rule.effective_head(&image.bounds);
    let docs: Vec<replay::JournalEvent> = image
        .docs
        .into_iter()
        .map(|doc| replay::JournalEvent {
            watermark: floor,
            ..doc
        })
        .collect();
    let chunk_size = usize::try_from(batch_size).unwrap_or(usize::MAX).max(1);
    let chunks = docs.chunks(chunk_size).count();
    for (index, chunk) in docs.chunks(chunk_size).enumerate() {
        let complete = index + 1 == chunks && floor >= head;
        let payload = protocol::snapshot_batch_value(topic, chunk, complete, head);
        out.send(Frame::push(
            join_ref.clone(),
            protocol::EVENT_UPDATE_BATCH,
            payload,
        ))
        .await?;
    }
    tracing::debug!(
        topic,
        floor,
        documents = docs.len(),
        "snapshot sent for a subscribe without cursor"
    );
    replay_topic(context, join_ref, topic, floor, batch_size, out).await
}

/// Spec §7.4 `replay_topic`: batches until `next >= head`, pushing each
/// non-empty one; returns the cursor reached.
async fn replay_topic(
    context: &ChannelContext,
    join_ref: &Option<String>,
    topic: &str,
    cursor: i64,
    batch_size: i64,
    out: &Outbox,
) -> Result<i64, StepError> {
    let mut cursor = cursor;
    loop {
        let batch = replay::fetch_batch(&context.pool, topic, cursor, batch_size).await?;
        let complete = batch.replay_complete();
        let lag_events = (batch.head - batch.next).max(0);
        context.telemetry.emit(SyncEvent::ReplayLag {
            lag_events,
            caught_up: complete,
        });
        if !batch.events.is_empty() {
            let payload = protocol::update_batch_value(topic, &batch.events, complete, batch.head);
            out.send(Frame::push(
                join_ref.clone(),
                protocol::EVENT_UPDATE_BATCH,
                payload,
            ))
            .await?;
        }
        if complete {
            return Ok(batch.next.max(cursor));
        }
        cursor = batch.next;
    }
}
