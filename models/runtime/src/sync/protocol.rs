//! The wire format of the `sync:v1` channel (spec §7.3, §7.5): Phoenix's V2
//! JSON frames (`[join_ref, ref, topic, event, payload]`) and V1 ones
//! (`{"topic", "event", "payload", "ref"}`), chosen per socket by `vsn` as
//! Phoenix does; the client requests parsed with typed errors (no input makes
//! them panic); and the exact reply, update, batch and error payloads.

use crate::sync::replay::{JournalEvent, StaleReason, StaleTopic};
use crate::sync::topics;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub const CHANNEL_TOPIC: &str = "sync:v1";
pub const PHOENIX_TOPIC: &str = "phoenix";

pub const EVENT_JOIN: &str = "phx_join";
pub const EVENT_LEAVE: &str = "phx_leave";
pub const EVENT_REPLY: &str = "phx_reply";
pub const EVENT_CLOSE: &str = "phx_close";
/// What the socket sends when a channel crashed (Phoenix's `phx_error`).
pub const EVENT_CHANNEL_ERROR: &str = "phx_error";
pub const EVENT_PHOENIX_HEARTBEAT: &str = "heartbeat";
pub const EVENT_SUBSCRIBE: &str = "sync:subscribe";
pub const EVENT_UNSUBSCRIBE: &str = "sync:unsubscribe";
pub const EVENT_HEARTBEAT: &str = "sync:heartbeat";
pub const EVENT_UPDATE_BATCH: &str = "sync:update_batch";
pub const EVENT_ERROR: &str = "sync:error";

/// Phoenix's JSON serializers. The socket picks one from the `vsn` query
/// parameter of the upgrade, as `Phoenix.Socket` does with its default
/// `[{V1.JSONSerializer, "~> 1.0.0"}, {V2.JSONSerializer, "~> 2.0.0"}]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serializer {
    /// `{"topic", "event", "payload", "ref"}` objects; a pushed frame has
    /// `ref: null` and no frame carries `join_ref` out (a client may send
    /// one in).
    V1,
    /// `[join_ref, ref, topic, event, payload]` arrays.
    V2,
}

impl Serializer {
    /// The serializer `vsn` selects: Phoenix reads a missing `vsn` as
    /// `1.0.0`; `~> 1.0.0` is any `1.0.x`, `~> 2.0.0` any `2.0.x`; anything
    /// else has none (Phoenix refuses the connection).
    pub fn for_vsn(vsn: Option<&str>) -> Option<Serializer> {
        let vsn = vsn.unwrap_or("1.0.0");
        let mut parts = vsn.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let number = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if minor != "0" || !number(patch) {
            return None;
        }
        match major {
            "1" => Some(Serializer::V1),
            "2" => Some(Serializer::V2),
            _ => None,
        }
    }

    /// `frame` as JSON text.
    pub fn encode(self, frame: &Frame) -> String {
        match self {
            Serializer::V2 => frame.encode(),
            Serializer::V1 => json!({
                "topic": frame.topic,
                "event": frame.event,
                "payload": frame.payload,
                "ref": frame.reference,
            })
            .to_string(),
        }
    }

    /// Parses `text`; frames over `max_bytes` are refused unread.
    pub fn parse(self, text: &str, max_bytes: usize) -> Result<Frame, FrameError> {
        match self {
            Serializer::V2 => Frame::parse(text, max_bytes),
            Serializer::V1 => Frame::parse_v1(text, max_bytes),
        }
    }
}

/// One frame, `[join_ref, ref, topic, event, payload]`. Refs are strings or
/// null, as Phoenix clients send them.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub join_ref: Option<String>,
    pub reference: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

impl Frame {
    /// The frame as JSON text.
    pub fn encode(&self) -> String {
        json!([
            self.join_ref,
            self.reference,
            self.topic,
            self.event,
            self.payload
        ])
        .to_string()
    }

    /// Parses `text` as a frame; frames over `max_bytes` are refused unread.
    pub fn parse(text: &str, max_bytes: usize) -> Result<Frame, FrameError> {
        if text.len() > max_bytes {
            return Err(FrameError::bare(FrameErrorKind::TooLarge {
                bytes: text.len(),
                max_bytes,
            }));
        }
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Err(FrameError::bare(FrameErrorKind::NotJson));
        };
        let Value::Array(mut items) = value else {
            return Err(FrameError::bare(FrameErrorKind::NotAnArray));
        };
        // Whatever can be read is kept so the error reply reaches the caller.
        let text_at = |items: &[Value], index: usize| {
            items.get(index).and_then(Value::as_str).map(str::to_owned)
        };
        let mut error = FrameError {
            kind: FrameErrorKind::WrongLength { len: items.len() },
            join_ref: text_at(&items, 0),
            reference: text_at(&items, 1),
            topic: text_at(&items, 2),
        };
        if items.len() != 5 {
            return Err(error);
        }
        let reference = |value: &Value| match value {
            Value::Null => Some(None),
            Value::String(text) => Some(Some(text.clone())),
            _ => None,
        };
        let (Some(join_ref), Some(frame_ref)) = (reference(&items[0]), reference(&items[1])) else {
            error.kind = FrameErrorKind::BadRef;
            return Err(error);
        };
        let (Some(topic), Some(event)) = (text_at(&items, 2), text_at(&items, 3)) else {
            error.kind = FrameErrorKind::BadTopicOrEvent;
            return Err(error);
        };
        let payload = items.pop().unwrap_or(Value::Null);
        Ok(Frame {
            join_ref,
            reference: frame_ref,
            topic,
            event,
            payload,
        })
    }

    /// Parses a V1 frame, a JSON object with string `topic` and `event`, a
    /// `payload` and a `ref` (string or null; absent reads as null).
    pub fn parse_v1(text: &str, max_bytes: usize) -> Result<Frame, FrameError> {
        if text.len() > max_bytes {
            return Err(FrameError::bare(FrameErrorKind::TooLarge {
                bytes: text.len(),
                max_bytes,
            }));
        }
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Err(FrameError::bare(FrameErrorKind::NotJson));
        };
        let Value::Object(mut map) = value else {
            return Err(FrameError::bare(FrameErrorKind::NotAnObject));
        };
        let text_of = |map: &Map<String, Value>, key: &str| {
            map.get(key).and_then(Value::as_str).map(str::to_owned)
        };
        let mut error = FrameError {
            kind: FrameErrorKind::BadRef,
            join_ref: text_of(&map, "join_ref"),
            reference: text_of(&map, "ref"),
            topic: text_of(&map, "topic"),
        };
        let reference = |value: Option<&Value>| match value {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(text)) => Some(Some(text.clone())),
            Some(_) => None,
        };
        let (Some(join_ref), Some(frame_ref)) =
            (reference(map.get("join_ref")), reference(map.get("ref")))
        else {
            return Err(error);
        };
        let (Some(topic), Some(event)) = (text_of(&map, "topic"), text_of(&map, "event")) else {
            error.kind = FrameErrorKind::BadTopicOrEvent;
            return Err(error);
        };
        let Some(payload) = map.remove("payload") else {
            error.kind = FrameErrorKind::MissingPayload;
            return Err(error);
        };
        Ok(Frame {
            join_ref,
            reference: frame_ref,
            topic,
            event,
            payload,
        })
    }

    /// The server's answer to `request` on a channel joined with `join_ref`:
    /// `phx_reply` with `{"status": ..., "response": ...}`. Phoenix addresses
    /// a channel's replies with the channel's join ref, not the request's,
    /// and the socket's own replies (`phoenix` heartbeat, unmatched topic)
    /// with none.
    pub fn reply_on(
        join_ref: Option<String>,
        request: &Frame,
        result: Result<Value, ChannelError>,
    ) -> Frame {
        reply_to(join_ref, request.reference.clone(), &request.topic, result)
    }

    /// The answer to `request` with the request's own join ref (the join
    /// reply, whose join ref is the one the join carried).
    pub fn reply(request: &Frame, result: Result<Value, ChannelError>) -> Frame {
        Frame::reply_on(request.join_ref.clone(), request, result)
    }

    /// A server push on the channel joined with `join_ref`.
    pub fn push(join_ref: Option<String>, event: &str, payload: Value) -> Frame {
        Frame {
            join_ref,
            reference: None,
            topic: CHANNEL_TOPIC.to_owned(),
            event: event.to_owned(),
            payload,
        }
    }

    /// The channel is closing (Phoenix sends `phx_close` with the join ref).
    pub fn close(join_ref: Option<String>) -> Frame {
        Frame::channel_end(join_ref, EVENT_CLOSE)
    }

    /// The channel crashed (Phoenix sends `phx_error` with the join ref).
    pub fn channel_error(join_ref: Option<String>) -> Frame {
        Frame::channel_end(join_ref, EVENT_CHANNEL_ERROR)
    }

    fn channel_end(join_ref: Option<String>, event: &str) -> Frame {
        Frame {
            reference: join_ref.clone(),
            join_ref,
            topic: CHANNEL_TOPIC.to_owned(),
            event: event.to_owned(),
            payload: json!({}),
        }
    }
}

fn reply_to(
    join_ref: Option<String>,
    reference: Option<String>,
    topic: &str,
    result: Result<Value, ChannelError>,
) -> Frame {
    let (status, response) = match result {
        Ok(response) => ("ok", response),
        Err(error) => ("error", error.payload()),
    };
    Frame {
        join_ref,
        reference,
        topic: topic.to_owned(),
        event: EVENT_REPLY.to_owned(),
        payload: json!({"status": status, "response": response}),
    }
}

/// What is wrong with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameErrorKind {
    TooLarge {
        bytes: usize,
        max_bytes: usize,
    },
    Binary,
    NotJson,
    NotAnArray,
    /// V1: the frame is not a JSON object.
    NotAnObject,
    /// V1: the object has no `payload`.
    MissingPayload,
    WrongLength {
        len: usize,
    },
    BadRef,
    BadTopicOrEvent,
}

/// A frame that could not be read, with the refs and topic it did carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    pub kind: FrameErrorKind,
    pub join_ref: Option<String>,
    pub reference: Option<String>,
    pub topic: Option<String>,
}

impl FrameError {
    pub fn bare(kind: FrameErrorKind) -> Self {
        FrameError {
            kind,
            join_ref: None,
            reference: None,
            topic: None,
        }
    }

    /// The protocol error reply, addressed as far as the frame allows.
    pub fn reply(&self) -> Frame {
        let error = match &self.kind {
            FrameErrorKind::TooLarge { max_bytes, .. } => ChannelError::FrameTooLarge {
                max_bytes: *max_bytes,
            },
            other => ChannelError::BadFrame {
                reason: other.to_string(),
            },
        };
        reply_to(
            self.join_ref.clone(),
            self.reference.clone(),
            self.topic.as_deref().unwrap_or(PHOENIX_TOPIC),
            Err(error),
        )
    }
}

impl fmt::Display for FrameErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameErrorKind::TooLarge { bytes, max_bytes } => {
                write!(formatter, "frame of {bytes} bytes exceeds {max_bytes}")
            }
            FrameErrorKind::Binary => formatter.write_str("binary frames are not supported"),
            FrameErrorKind::NotJson => formatter.write_str("frame is not JSON"),
            FrameErrorKind::NotAnArray => formatter.write_str("frame is not a JSON array"),
            FrameErrorKind::NotAnObject => formatter.write_str("frame is not a JSON object"),
            FrameErrorKind::MissingPayload => formatter.write_str("frame has no payload"),
            FrameErrorKind::WrongLength { len } => {
                write!(formatter, "frame has {len} elements, expected 5")
            }
            FrameErrorKind::BadRef => {
                formatter.write_str("join_ref and ref must be strings or null")
            }
            FrameErrorKind::BadTopicOrEvent => {
                formatter.write_str("topic and event must be strings")
            }
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "read a frame: {}", self.kind)
    }
}

impl std::error::Error for FrameError {}

/// An error reply of the channel. The first four are the original's channel
/// replies and `UnmatchedTopic` Phoenix's socket reply; the rest are ours,
/// for input the original's socket crashed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelError {
    BadTopic,
    BadSubscription,
    ForbiddenTopic {
        topics: Vec<String>,
    },
    StaleCursor {
        topics: Vec<StaleTopic>,
    },
    /// Phoenix's answer to a message for a channel that is not joined.
    UnmatchedTopic,
    BadFrame {
        reason: String,
    },
    FrameTooLarge {
        max_bytes: usize,
    },
    /// A journal read failed; details go to the log only.
    Internal,
}

impl ChannelError {
    /// The reply's `response` (and for `stale_cursor` the `sync:error` push).
    pub fn payload(&self) -> Value {
        match self {
            ChannelError::BadTopic => json!({"code": "bad_topic"}),
            ChannelError::BadSubscription => json!({"code": "bad_subscription"}),
            ChannelError::ForbiddenTopic { topics } => {
                json!({"code": "forbidden_topic", "forbidden_topics": topics})
            }
            ChannelError::StaleCursor { topics } => json!({
                "code": "stale_cursor",
                "message": "cursor is older than retention floor",
                "full_resync_required": true,
                "stale_topics": topics.iter().map(stale_topic_value).collect::<Vec<_>>(),
            }),
            ChannelError::UnmatchedTopic => json!({"reason": "unmatched topic"}),
            ChannelError::BadFrame { reason } => json!({"code": "bad_frame", "reason": reason}),
            ChannelError::FrameTooLarge { max_bytes } => {
                json!({"code": "frame_too_large", "max_bytes": max_bytes})
            }
            ChannelError::Internal => json!({"code": "internal"}),
        }
    }
}

/// `{"topic", "resume_after", "retention_floor"}`; a cursor above head (the
/// hardened B20 answer) also carries `head_watermark`.
fn stale_topic_value(stale: &StaleTopic) -> Value {
    let mut entry = json!({
        "topic": stale.topic,
        "resume_after": stale.resume_after,
        "retention_floor": stale.retention_floor,
    });
    if let (StaleReason::AheadOfHead, Some(head)) = (stale.reason, stale.head) {
        entry["head_watermark"] = json!(head);
    }
    if stale.reason == StaleReason::NoCursorAfterPrune {
        entry["resume_after"] = Value::Null;
    }
    entry
}

/// One update object per journal row.
pub fn update_value(event: &JournalEvent) -> Value {
    json!({
        "topic": event.topic,
        "doc_key": event.doc_key,
        "doc_version": event.doc_version,
        "payload": event.payload,
        "payload_hash": event.payload_hash.as_ref().map(|hash| STANDARD.encode(hash)),
        "watermark": event.watermark,
        "hydration_required": event.payload.is_none(),
    })
}

/// A `sync:update_batch` payload: one topic per batch.
pub fn update_batch_value(
    topic: &str,
    events: &[JournalEvent],
    replay_complete: bool,
    head: i64,
) -> Value {
    json!({
        "updates": events.iter().map(update_value).collect::<Vec<_>>(),
        "replay_complete": replay_complete,
        "head_watermarks": [{"topic": topic, "watermark": head}],
    })
}

/// A `sync:update_batch` of read-model rows (the hardened answer to a
/// subscribe without a cursor on a pruned topic). Ours, not the original's:
/// the updates have the shape of journal updates, so a client that knows
/// nothing of snapshots applies them as any others; `"snapshot": true` lets
/// one that does tell them apart (they share one watermark).
pub fn snapshot_batch_value(
    topic: &str,
    docs: &[JournalEvent],
    replay_complete: bool,
    head: i64,
) -> Value {
    let mut batch = update_batch_value(topic, docs, replay_complete, head);
    batch["snapshot"] = Value::Bool(true);
    batch
}

/// `[{"topic", "watermark"}, ...]` in the given order.
pub fn watermarks_value<'a>(cursors: impl IntoIterator<Item = (&'a String, &'a i64)>) -> Value {
    Value::Array(
        cursors
            .into_iter()
            .map(|(topic, watermark)| json!({"topic": topic, "watermark": watermark}))
            .collect(),
    )
}

/// `topics`: a list; non-strings dropped, trimmed, blanks dropped,
/// de-duplicated in order; empty, missing or a non-object payload is
/// `bad_subscription` (step 1).
pub fn normalise_topics(payload: &Value) -> Result<Vec<String>, ChannelError> {
    let Some(Value::Array(items)) = payload.as_object().and_then(|map| map.get("topics")) else {
        return Err(ChannelError::BadSubscription);
    };
    let mut topics: Vec<String> = Vec::new();
    for topic in items.iter().filter_map(Value::as_str).map(str::trim) {
        if !topic.is_empty() && !topics.iter().any(|seen| seen == topic) {
            topics.push(topic.to_owned());
        }
    }
    if topics.is_empty() {
        return Err(ChannelError::BadSubscription);
    }
    Ok(topics)
}

/// A validated `sync:subscribe` (steps 1–4 of spec §7.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub topics: Vec<String>,
    /// Keys as sent (legacy, B21) or trimmed (hardened).
    pub resume_after: HashMap<String, i64>,
    /// A positive `replay_batch_size`, if the client sent one.
    pub replay_batch_size: Option<i64>,
}

impl SubscribeRequest {
    pub fn parse(
        payload: &Value,
        allowed_topics: &[String],
        trim_resume_keys: bool,
    ) -> Result<Self, ChannelError> {
        let topics = normalise_topics(payload)?;
        let unknown: Vec<String> = topics
            .iter()
            .filter(|topic| !topics::is_known(topic))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ChannelError::ForbiddenTopic { topics: unknown });
        }
        let not_allowed: Vec<String> = topics
            .iter()
            .filter(|topic| !allowed_topics.contains(topic))
            .cloned()
            .collect();
        if !not_allowed.is_empty() {
            return Err(ChannelError::ForbiddenTopic {
                topics: not_allowed,
            });
        }
        let map = payload.as_object().ok_or(ChannelError::BadSubscription)?;
        let resume_after = parse_resume_after(map.get("resume_after"), trim_resume_keys)?;
        let replay_batch_size = map
            .get("replay_batch_size")
            .and_then(Value::as_i64)
            .filter(|size| *size > 0);
        Ok(SubscribeRequest {
            topics,
            resume_after,
            replay_batch_size,
        })
    }
}

/// A watermark: a JSON integer ≥ 0 (no floats, strings or negatives).
fn watermark(value: &Value) -> Result<i64, ChannelError> {
    value
        .as_i64()
        .filter(|watermark| *watermark >= 0)
        .ok_or(ChannelError::BadSubscription)
}

/// `resume_after`: absent or null → empty; `{topic: w}` or
/// `[{"topic", "watermark"}]` (last duplicate wins); anything malformed is
/// `bad_subscription`.
fn parse_resume_after(
    value: Option<&Value>,
    trim_keys: bool,
) -> Result<HashMap<String, i64>, ChannelError> {
    let key = |topic: &str| {
        if trim_keys {
            topic.trim().to_owned()
        } else {
            topic.to_owned()
        }
    };
    let mut resume_after = HashMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (topic, value) in entries {
                resume_after.insert(key(topic), watermark(value)?);
            }
        }
        Some(Value::Array(entries)) => {
            for entry in entries {
                let entry: &Map<String, Value> =
                    entry.as_object().ok_or(ChannelError::BadSubscription)?;
                let topic = entry
                    .get("topic")
                    .and_then(Value::as_str)
                    .ok_or(ChannelError::BadSubscription)?;
                let value = entry
                    .get("watermark")
                    .ok_or(ChannelError::BadSubscription)?;
                resume_after.insert(key(topic), watermark(value)?);
            }
        }
        Some(_) => return Err(ChannelError::BadSubscription),
    }
    Ok(resume_after)
}

/// The join reply.
pub fn join_response(subscription_id: &str, allowed_topics: &[String]) -> Value {
    json!({
        "subscription_id": subscription_id,
        "allowed_topics": allowed_topics,
        "current_watermarks": [],
    })
}

/// The subscribe reply: the cursor reached per requested topic.
pub fn subscribe_response(
    subscription_id: &str,
    topics: &[String],
    cursors: &BTreeMap<String, i64>,
) -> Value {
    let reached: Vec<(&String, &i64)> = topics
        .iter()
        .map(|topic| (topic, cursors.get(topic).unwrap_or(&0)))
        .collect();
    json!({
        "subscription_id": subscription_id,
        "topics": topics,
        "current_watermarks": watermarks_value(reached),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec![
            "runtime.run_summaries".to_owned(),
            "runtime.codex_worker_summaries".to_owned(),
        ]
    }

    fn parse(payload: Value) -> Result<SubscribeRequest, Value> {
        SubscribeRequest::parse(&payload, &allowed(), false).map_err(|error| error.payload())
    }

    #[test]
    fn frames_parse_and_round_trip() {
        let frame = Frame::parse(r#"["1","2","sync:v1","phx_join",{}]"#, 1024).expect("frame");
        assert_eq!(frame.join_ref.as_deref(), Some("1"));
        assert_eq!(frame.encode(), r#"["1","2","sync:v1","phx_join",{}]"#);
        let frame = Frame::parse(r#"[null,null,"phoenix","heartbeat",null]"#, 1024).expect("frame");
        assert_eq!((frame.join_ref, frame.reference), (None, None));
    }

    #[test]
    fn vsn_selects_the_serializer_as_phoenix_does() {
        assert_eq!(Serializer::for_vsn(None), Some(Serializer::V1));
        assert_eq!(Serializer::for_vsn(Some("1.0.0")), Some(Serializer::V1));
        assert_eq!(Serializer::for_vsn(Some("2.0.0")), Some(Serializer::V2));
        assert_eq!(Serializer::for_vsn(Some("2.0.7")), Some(Serializer::V2));
        for refused in [
            "3.0.0", "2.1.0", "2", "2.0", "2.0.x", "", "2.0.0.0", "v2.0.0",
        ] {
            assert_eq!(Serializer::for_vsn(Some(refused)), None, "{refused}");
        }
    }

    #[test]
    fn v1_frames_are_objects_without_join_ref() {
        let frame = Serializer::V1
            .parse(
                r#"{"topic":"sync:v1","event":"phx_join","payload":{},"ref":"1"}"#,
                1024,
            )
            .expect("frame");
        assert_eq!(
            (frame.join_ref, frame.reference.as_deref()),
            (None, Some("1"))
        );
        let push = Frame::push(Some("1".into()), EVENT_HEARTBEAT, json!({"watermarks": []}));
        let encoded: Value = serde_json::from_str(&Serializer::V1.encode(&push)).expect("json");
        assert_eq!(
            encoded,
            json!({"topic": "sync:v1", "event": "sync:heartbeat",
                   "payload": {"watermarks": []}, "ref": null})
        );
        let kind = |text: &str| Serializer::V1.parse(text, 1024).unwrap_err().kind;
        assert_eq!(kind("[]"), FrameErrorKind::NotAnObject);
        assert_eq!(
            kind(r#"{"topic":"t","event":"e"}"#),
            FrameErrorKind::MissingPayload
        );
        assert_eq!(
            kind(r#"{"topic":1,"event":"e","payload":{}}"#),
            FrameErrorKind::BadTopicOrEvent
        );
        assert_eq!(
            kind(r#"{"topic":"t","event":"e","payload":{},"ref":2}"#),
            FrameErrorKind::BadRef
        );
    }

    #[test]
    fn malformed_frames_are_typed_errors_that_keep_what_they_can() {
        let kind = |text: &str| Frame::parse(text, 64).unwrap_err().kind;
        assert_eq!(kind("nope"), FrameErrorKind::NotJson);
        assert_eq!(kind("{}"), FrameErrorKind::NotAnArray);
        assert_eq!(kind("[1,2]"), FrameErrorKind::WrongLength { len: 2 });
        assert_eq!(kind(r#"[1,"2","t","e",{}]"#), FrameErrorKind::BadRef);
        assert_eq!(
            kind(r#"["1","2",3,"e",{}]"#),
            FrameErrorKind::BadTopicOrEvent
        );
        assert_eq!(
            kind(&format!("\"{}\"", "x".repeat(80))),
            FrameErrorKind::TooLarge {
                bytes: 82,
                max_bytes: 64
            }
        );
        let error = Frame::parse(r#"["1","7","sync:v1"]"#, 64).unwrap_err();
        let reply = error.reply();
        assert_eq!(
            (
                reply.join_ref.as_deref(),
                reply.reference.as_deref(),
                reply.topic.as_str()
            ),
            (Some("1"), Some("7"), "sync:v1")
        );
        assert_eq!(reply.payload["status"], "error");
        assert_eq!(reply.payload["response"]["code"], "bad_frame");
    }

    #[test]
    fn topics_are_normalised_then_checked_known_then_allowed() {
        let request =
            parse(json!({"topics": [" runtime.run_summaries ", 3, "", "runtime.run_summaries"]}))
                .expect("valid");
        assert_eq!(request.topics, ["runtime.run_summaries"]);
        for payload in [
            json!([]),
            json!({}),
            json!({"topics": "x"}),
            json!({"topics": [" ", 1]}),
        ] {
            assert_eq!(
                parse(payload).unwrap_err(),
                json!({"code": "bad_subscription"})
            );
        }
        assert_eq!(
            parse(json!({"topics": ["runtime.notifications", "nope", "SYNC_TOPIC_RUNTIME_RUN_SUMMARIES"]}))
                .unwrap_err(),
            json!({"code": "forbidden_topic", "forbidden_topics": ["nope", "SYNC_TOPIC_RUNTIME_RUN_SUMMARIES"]})
        );
        assert_eq!(
            parse(json!({"topics": ["runtime.notifications", "runtime.run_summaries"]}))
                .unwrap_err(),
            json!({"code": "forbidden_topic", "forbidden_topics": ["runtime.notifications"]})
        );
    }

    #[test]
    fn resume_after_takes_a_map_or_a_list_and_refuses_anything_malformed() {
        let topics = json!(["runtime.run_summaries"]);
        let map = parse(json!({"topics": topics, "resume_after": {"runtime.run_summaries": 3}}));
        assert_eq!(map.expect("valid").resume_after["runtime.run_summaries"], 3);
        let list = parse(json!({"topics": topics, "resume_after": [
            {"topic": "runtime.run_summaries", "watermark": 3},
            {"topic": "runtime.run_summaries", "watermark": 4}]}));
        assert_eq!(
            list.expect("valid").resume_after["runtime.run_summaries"],
            4,
            "last wins"
        );
        assert!(
            parse(json!({"topics": topics, "resume_after": null}))
                .expect("valid")
                .resume_after
                .is_empty()
        );
        for resume_after in [
            json!({"runtime.run_summaries": -1}),
            json!({"runtime.run_summaries": 1.5}),
            json!({"runtime.run_summaries": "3"}),
            json!({"runtime.run_summaries": null}),
            json!([{"topic": "runtime.run_summaries"}]),
            json!([{"watermark": 1}]),
            json!([{"topic": 1, "watermark": 1}]),
            json!([3]),
            json!("runtime.run_summaries:3"),
            json!(3),
        ] {
            assert_eq!(
                parse(json!({"topics": topics, "resume_after": resume_after})).unwrap_err(),
                json!({"code": "bad_subscription"}),
                "{resume_after}"
            );
        }
    }

    #[test]
    fn b21_keys_are_trimmed_only_when_asked() {
        let payload = json!({"topics": ["runtime.run_summaries"], "resume_after": {" runtime.run_summaries": 3}});
        let legacy = SubscribeRequest::parse(&payload, &allowed(), false).expect("valid");
        assert_eq!(legacy.resume_after.get("runtime.run_summaries"), None);
        let hardened = SubscribeRequest::parse(&payload, &allowed(), true).expect("valid");
        assert_eq!(hardened.resume_after.get("runtime.run_summaries"), Some(&3));
    }

    #[test]
    fn replay_batch_size_must_be_a_positive_integer() {
        let size = |value: Value| {
            parse(json!({"topics": ["runtime.run_summaries"], "replay_batch_size": value}))
                .expect("valid")
                .replay_batch_size
        };
        assert_eq!(size(json!(2)), Some(2));
        assert_eq!(size(json!(0)), None);
        assert_eq!(size(json!("2")), None);
    }

    #[test]
    fn updates_carry_base64_hashes_and_pointer_rows_ask_for_hydration() {
        let event = JournalEvent {
            topic: "runtime.run_summaries".into(),
            watermark: 41,
            doc_key: "runtime/run_summary:r".into(),
            doc_version: 7,
            payload: None,
            payload_hash: Some(vec![0xfb; 32]),
        };
        let update = update_value(&event);
        assert_eq!(update["payload"], Value::Null);
        assert_eq!(update["hydration_required"], true);
        assert_eq!(update["payload_hash"], STANDARD.encode([0xfb; 32]));
        assert!(
            update["payload_hash"]
                .as_str()
                .expect("text")
                .ends_with('=')
        );
        let inline = JournalEvent {
            payload: Some(json!({"a": 1})),
            payload_hash: None,
            ..event
        };
        let update = update_value(&inline);
        assert_eq!(
            (
                update["hydration_required"].clone(),
                update["payload_hash"].clone()
            ),
            (json!(false), Value::Null)
        );
        assert_eq!(update["payload"], json!({"a": 1}));
    }

    #[test]
    fn the_stale_payload_is_exact() {
        let error = ChannelError::StaleCursor {
            topics: vec![StaleTopic {
                topic: "runtime.run_summaries".into(),
                resume_after: 0,
                retention_floor: 1,
                reason: StaleReason::BelowFloor,
                head: None,
            }],
        };
        assert_eq!(
            error.payload(),
            json!({"code": "stale_cursor", "message": "cursor is older than retention floor",
                   "full_resync_required": true,
                   "stale_topics": [{"topic": "runtime.run_summaries", "resume_after": 0, "retention_floor": 1}]})
        );
    }
}
