//! The per-connection state machine of the `sync:v1` channel (spec §7.3,
//! §7.4, §7.5, §7.7): join, subscribe (steps 1–8 in order), unsubscribe,
//! client and server heartbeats, and the live path on wake-ups. It knows
//! nothing of WebSockets: frames go out through an `Outbox`.

use crate::clock::Clock;
use crate::profile::Switches;
use crate::sync::jwt::VerifiedClaims;
use crate::sync::protocol::{
    self, ChannelError, Frame, FrameError, FrameErrorKind, SubscribeRequest,
};
use crate::sync::replay::{self, ReplayError, StaleRule};
use crate::sync::topics;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// What every channel of a server shares.
#[derive(Debug)]
pub struct ChannelContext {
    pub pool: PgPool,
    pub clock: Arc<dyn Clock>,
    pub switches: Switches,
    /// The config batch size: subscribe replays without a client size, and
    /// every live replay.
    pub replay_batch_size: i64,
    pub heartbeat_timeout: TimeDelta,
    pub max_frame_bytes: usize,
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
            replay_batch_size,
            heartbeat_timeout: TimeDelta::from_std(heartbeat_timeout).unwrap_or(TimeDelta::MAX),
            max_frame_bytes,
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

/// Where a channel's frames go (the connection's writer).
#[derive(Clone, Debug)]
pub struct Outbox {
    sender: mpsc::Sender<Frame>,
}

impl Outbox {
    pub fn new(sender: mpsc::Sender<Frame>) -> Self {
        Outbox { sender }
    }

    pub async fn send(&self, frame: Frame) -> Result<(), Disconnected> {
        self.sender.send(frame).await.map_err(|_| Disconnected)
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
    join_ref: Option<String>,
    subscription_id: String,
    subscribed: BTreeSet<String>,
    cursors: BTreeMap<String, i64>,
    last_client_heartbeat: DateTime<Utc>,
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
    subject: String,
    allowed_topics: Vec<String>,
    channel: Option<Joined>,
}

impl Connection {
    pub fn new(context: Arc<ChannelContext>, claims: &VerifiedClaims) -> Self {
        Connection {
            context,
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
        match Frame::parse(text, self.context.max_frame_bytes) {
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

    pub async fn handle_frame(&mut self, frame: Frame, out: &Outbox) -> Result<(), Disconnected> {
        let topic = frame.topic.as_str();
        let event = frame.event.as_str();
        let result = match (topic, event) {
            (protocol::PHOENIX_TOPIC, protocol::EVENT_PHOENIX_HEARTBEAT) => Ok(json!({})),
            (protocol::CHANNEL_TOPIC, protocol::EVENT_JOIN) => Ok(self.join(&frame)),
            (_, protocol::EVENT_JOIN) => Err(ChannelError::BadTopic),
            (protocol::CHANNEL_TOPIC, _) if self.channel.is_none() => {
                Err(ChannelError::UnmatchedTopic)
            }
            (protocol::CHANNEL_TOPIC, protocol::EVENT_LEAVE) => {
                self.leave();
                Ok(json!({}))
            }
            (protocol::CHANNEL_TOPIC, protocol::EVENT_SUBSCRIBE) => {
                return self.subscribe(&frame, out).await;
            }
            (protocol::CHANNEL_TOPIC, protocol::EVENT_UNSUBSCRIBE) => self.unsubscribe(&frame),
            (protocol::CHANNEL_TOPIC, protocol::EVENT_HEARTBEAT) => {
                return self.client_heartbeat(&frame, out).await;
            }
            (protocol::CHANNEL_TOPIC, other) => Err(ChannelError::UnknownEvent {
                event: other.to_owned(),
            }),
            _ => Err(ChannelError::UnmatchedTopic),
        };
        out.send(Frame::reply(&frame, result)).await
    }

    fn join(&mut self, frame: &Frame) -> Value {
        // A second join replaces the channel, as a Phoenix rejoin does.
        self.leave();
        let number = self.context.subscription_ids.fetch_add(1, Ordering::SeqCst) + 1;
        let subscription_id = format!("sub_{number}");
        let response = protocol::join_response(&subscription_id, &self.allowed_topics);
        self.channel = Some(Joined {
            join_ref: frame.join_ref.clone(),
            subscription_id,
            subscribed: BTreeSet::new(),
            cursors: BTreeMap::new(),
            last_client_heartbeat: self.context.clock.now(),
        });
        let active = self.context.active_channels.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(
            target: "openagents_runtime.sync.socket.connection",
            component = "sync_channel", action = "connect", status = "ok",
            active_connections = active, subject = %self.subject, "channel joined"
        );
        response
    }

    fn leave(&mut self) {
        if self.channel.take().is_some() {
            let _ = self.context.active_channels.fetch_update(
                Ordering::SeqCst,
                Ordering::SeqCst,
                |active| Some(active.saturating_sub(1)),
            );
        }
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
        match self.try_subscribe(frame, out).await {
            Ok(response) => out.send(Frame::reply(frame, Ok(response))).await,
            Err(Ok(error)) => {
                if let ChannelError::StaleCursor { .. } = error {
                    tracing::info!(
                        target: "openagents_runtime.sync.replay.catchup",
                        status = "stale_cursor",
                        duration_ms = started.elapsed().as_millis() as u64,
                        "stale cursor"
                    );
                    let join_ref = self
                        .channel
                        .as_ref()
                        .and_then(|channel| channel.join_ref.clone());
                    out.send(Frame::push(
                        join_ref,
                        protocol::EVENT_ERROR,
                        error.payload(),
                    ))
                    .await?;
                }
                out.send(Frame::reply(frame, Err(error))).await
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
                Some(cursor) => Some(*cursor),
                // The original checks only topics the client sent a cursor for.
                None if rule.only_with_cursor => continue,
                None => channel.cursors.get(topic).copied(),
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
            tracing::debug!(target: "openagents_runtime.sync.socket.reconnect", status = "ok", "resume");
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
                .copied()
                .unwrap_or(0);
            match replay_topic(&self.context, &join_ref, topic, start, batch_size, out).await {
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
        tracing::trace!(target: "openagents_runtime.sync.socket.heartbeat", status = "client");
        let Some(channel) = self.channel.as_ref() else {
            return out
                .send(Frame::reply(frame, Err(ChannelError::UnmatchedTopic)))
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
        out.send(Frame::reply(frame, Ok(response))).await
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
            tracing::info!(
                target: "openagents_runtime.sync.socket.timeout",
                status = "timeout", subject = %self.subject, "channel timed out"
            );
            let join_ref = channel.join_ref.clone();
            self.leave();
            out.send(Frame::close(join_ref)).await?;
            return Ok(TickOutcome::TimedOut);
        }
        tracing::trace!(target: "openagents_runtime.sync.socket.heartbeat", status = "server");
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
        self.leave();
    }
}

fn internal(error: &ReplayError) -> ChannelError {
    tracing::error!(%error, "journal read failed");
    ChannelError::Internal
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
        tracing::trace!(
            target: "openagents_runtime.sync.replay.lag",
            event_type = topic, lag_events,
            status = if complete { "caught_up" } else { "lagging" }
        );
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
