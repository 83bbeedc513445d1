//! The Phoenix stack around the channel, as the original ran it (facts §3),
//! over a real socket: the transport's idle timeout and the shipped client's
//! recovery from it, join refs on pushes, unmatched topics, crashed
//! channels, duplicate joins and leaves, the V1 serializer, the original's
//! development keyring, and the §7.8 telemetry these emit. Time moves only
//! on the manual clock; nothing sleeps.

use crate::sync_client::{RUN_TOPIC, ShippedClientModel, SyncClient, SyncEnv, event_payload};
use chrono::{DurationRound, TimeDelta};
use futures::{SinkExt, StreamExt};
use khala_runtime::Profile;
use khala_runtime::sync::jwt::{self, DEFAULT_AUDIENCE, DEFAULT_CLAIMS_VERSION, DEFAULT_ISSUER};
use khala_runtime::sync::server::{CHANNEL_TIMEOUT_CLOSE_CODE, IDLE_CLOSE_CODE};
use khala_runtime::sync::telemetry::{DisconnectReason, REPLAY_CATCHUP};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Advances the clock by `seconds` and runs one heartbeat tick and one idle
/// sweep, as the server's loops would at that moment; returns how many
/// sockets the sweep closed.
async fn pass(sync: &SyncEnv, seconds: i64) -> usize {
    sync.clock.advance(TimeDelta::seconds(seconds));
    sync.server.tick_heartbeats().await;
    sync.server.close_idle_sockets().await
}

/// A shipped client that only listens: its channel stops after the
/// heartbeat timeout plus up to a tick (`phx_close`, which it ignores).
/// Legacy (the original, B12): the socket carries no frame after that and
/// closes a minute later with 1002. Hardened: the socket closes with the
/// channel. Either way the client reconnects and resumes from its
/// watermark, so the row written while it was deaf arrives late but
/// arrives; only how late differs.
async fn idle_close_and_resume(profile: Profile) {
    let sync = SyncEnv::start(profile).await;
    sync.insert_run_events(1..=2).await;
    let mut shipped = ShippedClientModel::new(RUN_TOPIC);
    let mut client = sync.connect().await;
    client.join_as_shipped_client().await.reply.ok();
    shipped.subscribe(&mut client).await.reply.ok();
    assert_eq!(shipped.stored, Some(2));
    // While the channel lives, its heartbeat pushes keep the socket open
    // although the client never sends a frame. Ticks run every 15 s, the
    // first 10 s after the subscribe (ticks are not aligned with it).
    assert_eq!(pass(&sync, 10).await, 0);
    assert_eq!(client.recv().await.event, "sync:heartbeat");
    for tick in 2..=4 {
        assert_eq!(pass(&sync, 15).await, 0);
        let frame = client.recv().await;
        assert_eq!(frame.event, "sync:heartbeat", "tick {tick}: {frame:?}");
    }
    // 70 s after the subscribe (the timeout plus part of a tick) the tick
    // finds the client silent too long.
    assert_eq!(pass(&sync, 15).await, 0);
    let close = client.recv().await;
    assert_eq!(close.event, "phx_close");
    assert_eq!(sync.server.active_channels(), 0);
    // The client is deaf from here on: this row reaches nobody yet.
    sync.insert_run_event(3, sync.now()).await;
    if profile == Profile::Legacy {
        // The socket closes a timeout after its last frame, the phx_close.
        assert_eq!(pass(&sync, 59).await, 0);
        assert_eq!(pass(&sync, 1).await, 1);
        assert_eq!(client.close_code().await, Some(IDLE_CLOSE_CODE));
    } else {
        // B12 fixed: closed with the channel, nothing left to sweep.
        assert_eq!(client.close_code().await, Some(CHANNEL_TIMEOUT_CLOSE_CODE));
        assert_eq!(sync.server.close_idle_sockets().await, 0);
    }
    assert_eq!(sync.server.connections(), 0);
    // The shipped client reconnects and resumes from its stored watermark.
    let mut client = sync.connect().await;
    client.join_as_shipped_client().await.reply.ok();
    let resumed = shipped.subscribe(&mut client).await;
    assert_eq!(resumed.delivered(), vec![3], "nothing lost, nothing twice");
    assert_eq!(shipped.stored, Some(3));
    assert_eq!(
        sync.server
            .telemetry()
            .disconnects(DisconnectReason::HeartbeatTimeout),
        1
    );
    sync.finish().await;
}

#[tokio::test]
async fn legacy_closes_an_idle_socket_a_minute_after_the_channel_stops_and_the_client_resumes() {
    idle_close_and_resume(Profile::Legacy).await;
}

#[tokio::test]
async fn hardened_closes_the_socket_with_the_channel_and_the_client_resumes() {
    idle_close_and_resume(Profile::Hardened).await;
}

#[tokio::test]
async fn the_idle_timer_counts_from_the_last_frame_from_the_client_or_to_it() {
    let sync = SyncEnv::start_with(Profile::Hardened, |config| {
        config.socket_idle_timeout_ms = 30_000;
    })
    .await;
    // The timer runs out 30 s after a frame, to the millisecond it was
    // stamped: that is when a caller driving time sweeps next.
    let opened = sync.clock.peek();
    let runs_out = |after: TimeDelta| {
        opened
            .duration_trunc(TimeDelta::milliseconds(1))
            .ok()
            .map(|stamped| stamped + after + TimeDelta::seconds(30))
    };
    assert_eq!(sync.server.next_idle_deadline(), None, "no socket yet");
    // Never joined: no frame at all since the upgrade.
    let mut silent = sync.connect().await;
    // A client frame re-arms the timer.
    let mut talking = sync.connect().await;
    assert_eq!(
        sync.server.next_idle_deadline(),
        runs_out(TimeDelta::zero())
    );
    sync.clock.advance(TimeDelta::seconds(20));
    let reference = talking
        .send_frame(None, "phoenix", "heartbeat", json!({}))
        .await;
    talking.until_reply(&reference).await.reply.ok();
    assert_eq!(
        sync.server.next_idle_deadline(),
        runs_out(TimeDelta::zero())
    );
    sync.clock.advance(TimeDelta::seconds(10));
    assert_eq!(sync.server.close_idle_sockets().await, 1);
    assert_eq!(silent.close_code().await, Some(IDLE_CLOSE_CODE));
    assert_eq!(
        sync.server.next_idle_deadline(),
        runs_out(TimeDelta::seconds(20))
    );
    sync.clock.advance(TimeDelta::seconds(19));
    assert_eq!(sync.server.close_idle_sockets().await, 0);
    sync.clock.advance(TimeDelta::seconds(1));
    assert_eq!(sync.server.close_idle_sockets().await, 1);
    assert_eq!(talking.close_code().await, Some(IDLE_CLOSE_CODE));
    assert_eq!(sync.server.next_idle_deadline(), None);
    sync.finish().await;
}

#[tokio::test]
async fn pushes_and_replies_on_a_channel_joined_with_a_null_join_ref_carry_the_joins_ref() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    sync.insert_run_events(1..=2).await;
    let mut client = sync.connect().await;
    let joined = client.join_as_shipped_client().await;
    joined.reply.ok();
    let join_ref = joined.reply_frame.reference.clone();
    assert_eq!(join_ref.as_deref(), Some("1"));
    assert_eq!(
        joined.reply_frame.join_ref, None,
        "the join reply echoes null"
    );
    let exchange = client.subscribe(json!({"topics": [RUN_TOPIC]})).await;
    assert_eq!(exchange.delivered(), vec![1, 2]);
    for push in &exchange.pushes {
        assert_eq!(push.join_ref, join_ref, "{push:?}");
    }
    assert_eq!(exchange.reply_frame.join_ref, join_ref);
    sync.insert_run_event(3, sync.now()).await;
    assert_eq!(client.recv().await.join_ref, join_ref, "a live batch");
    sync.server.tick_heartbeats().await;
    let heartbeat = client.recv().await;
    assert_eq!(
        (heartbeat.event.as_str(), heartbeat.join_ref.clone()),
        ("sync:heartbeat", join_ref.clone())
    );
    assert_eq!(
        sync.server.telemetry().count(REPLAY_CATCHUP, "ok"),
        1,
        "the subscribe's catch-up"
    );
    sync.finish().await;
}

#[tokio::test]
async fn a_message_for_a_topic_not_joined_gets_unmatched_topic_with_a_null_join_ref() {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let mut client = sync.connect().await;
    for (join_ref, topic, event) in [
        (Some("7"), "sync:v1", "sync:subscribe"),
        (None, "sync:v1", "sync:heartbeat"),
        (Some("7"), "room:lobby", "shout"),
    ] {
        let reference = client
            .send_frame(join_ref, topic, event, json!({"topics": [RUN_TOPIC]}))
            .await;
        let exchange = client.until_reply(&reference).await;
        assert!(exchange.pushes.is_empty(), "{topic} {event}");
        let reply = exchange.reply_frame;
        assert_eq!(
            (reply.join_ref, reply.topic.as_str()),
            (None, topic),
            "{event}"
        );
        assert_eq!(
            reply.payload,
            json!({"status": "error", "response": {"reason": "unmatched topic"}})
        );
    }
    sync.finish().await;
}

#[tokio::test]
async fn an_unknown_event_crashes_the_channel_with_phx_error_and_no_reply() {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let mut client = sync.joined().await;
    client
        .subscribe(json!({"topics": [RUN_TOPIC]}))
        .await
        .reply
        .ok();
    let join_ref = client.join_ref().map(str::to_owned);
    client
        .send_frame(
            join_ref.as_deref(),
            "sync:v1",
            "sync:drop_tables",
            json!({}),
        )
        .await;
    let error = client.recv().await;
    assert_eq!(
        (
            error.event.as_str(),
            error.join_ref.clone(),
            error.reference.clone(),
            error.payload.clone()
        ),
        ("phx_error", join_ref.clone(), join_ref.clone(), json!({}))
    );
    assert_eq!(sync.server.active_channels(), 0);
    // The channel is gone (its subscription with it); the socket is not.
    sync.insert_run_event(1, sync.now()).await;
    let heartbeat = client.heartbeat().await;
    assert!(
        heartbeat.pushes.is_empty(),
        "no batch: {:?}",
        heartbeat.pushes
    );
    assert_eq!(
        heartbeat.reply.error(),
        &json!({"reason": "unmatched topic"}),
        "the heartbeat finds no channel"
    );
    assert_eq!(
        sync.server
            .telemetry()
            .disconnects(DisconnectReason::Crashed),
        1
    );
    client.join().await;
    assert_eq!(
        client
            .subscribe(json!({"topics": [RUN_TOPIC]}))
            .await
            .delivered(),
        vec![1]
    );
    sync.finish().await;
}

#[tokio::test]
async fn a_second_join_closes_the_first_channel_and_a_leave_closes_after_its_reply() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let mut client = sync.joined().await;
    client
        .subscribe(json!({"topics": [RUN_TOPIC]}))
        .await
        .reply
        .ok();
    let first = client.join_ref().map(str::to_owned);
    let reference = client
        .send_frame(Some("9"), "sync:v1", "phx_join", json!({}))
        .await;
    let rejoined = client.until_reply(&reference).await;
    let closes: Vec<(Option<String>, Option<String>)> = rejoined
        .pushes
        .iter()
        .map(|frame| {
            assert_eq!(frame.event, "phx_close");
            (frame.join_ref.clone(), frame.reference.clone())
        })
        .collect();
    assert_eq!(closes, vec![(first.clone(), first.clone())]);
    rejoined.reply.ok();
    assert_eq!(rejoined.reply_frame.join_ref.as_deref(), Some("9"));
    assert_eq!(sync.server.active_channels(), 1);
    // The new channel has no subscription of the old one's.
    sync.insert_run_event(1, sync.now()).await;
    let leave = client
        .send_frame(Some("9"), "sync:v1", "phx_leave", json!({}))
        .await;
    let left = client.until_reply(&leave).await;
    assert!(left.pushes.is_empty(), "no batch: {:?}", left.pushes);
    left.reply.ok();
    assert_eq!(left.reply_frame.join_ref.as_deref(), Some("9"));
    let close = client.recv().await;
    assert_eq!(
        (
            close.event.as_str(),
            close.join_ref.as_deref(),
            close.reference.as_deref()
        ),
        ("phx_close", Some("9"), Some("9"))
    );
    assert_eq!(sync.server.active_channels(), 0);
    let telemetry = sync.server.telemetry();
    assert_eq!(telemetry.disconnects(DisconnectReason::DuplicateJoin), 1);
    assert_eq!(telemetry.disconnects(DisconnectReason::Left), 1);
    sync.finish().await;
}

/// A raw V1 socket: JSON objects both ways.
async fn v1_socket(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("accepted")
        .0
}

async fn v1_next(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    let message = tokio::time::timeout(crate::sync_client::FRAME_WAIT, ws.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("readable");
    let Message::Text(text) = message else {
        panic!("expected text, got {message:?}")
    };
    serde_json::from_str(text.as_str()).expect("json")
}

#[tokio::test]
async fn vsn_1_0_0_and_no_vsn_are_served_with_the_v1_serializer() {
    let sync = SyncEnv::start(Profile::Hardened).await;
    sync.insert_run_events(1..=1).await;
    let token = sync.token(&[RUN_TOPIC]);
    for vsn in [Some("1.0.0"), None] {
        let mut ws = v1_socket(&sync.url_with_vsn(&token, vsn)).await;
        let join = json!({"topic": "sync:v1", "event": "phx_join", "payload": {}, "ref": "1"});
        ws.send(Message::text(join.to_string()))
            .await
            .expect("sent");
        let reply = v1_next(&mut ws).await;
        let mut keys: Vec<&str> = reply
            .as_object()
            .map(|map| map.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["event", "payload", "ref", "topic"],
            "{vsn:?}: {reply}"
        );
        assert_eq!(
            (&reply["event"], &reply["ref"], &reply["payload"]["status"]),
            (&json!("phx_reply"), &json!("1"), &json!("ok"))
        );
        let subscribe = json!({"topic": "sync:v1", "event": "sync:subscribe",
                               "payload": {"topics": [RUN_TOPIC]}, "ref": "2"});
        ws.send(Message::text(subscribe.to_string()))
            .await
            .expect("sent");
        let batch = v1_next(&mut ws).await;
        assert_eq!(
            (&batch["event"], &batch["ref"]),
            (&json!("sync:update_batch"), &Value::Null)
        );
        assert_eq!(
            batch["payload"]["updates"][0]["payload"],
            event_payload(RUN_TOPIC, 1)
        );
        let reply = v1_next(&mut ws).await;
        assert_eq!(
            (&reply["ref"], &reply["payload"]["status"]),
            (&json!("2"), &json!("ok"))
        );
        let _ = ws.close(None).await;
    }
    // A version neither serializer takes is refused, as Phoenix refuses it.
    let refused = SyncClient::connect(&sync.url_with_vsn(&token, Some("3.0.0"))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 403);
        }
        Err(other) => panic!("failed to reach the sync server: {other}"),
        Ok(_) => panic!("vsn 3.0.0 was accepted"),
    }
    sync.finish().await;
}

#[tokio::test]
async fn a_token_signed_with_the_originals_development_key_is_accepted() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let now = sync.now().timestamp();
    // Minted by hand, as the original's development setup would: nothing
    // of ours but the literal key of its config.exs.
    let claims = json!({
        "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "user:7", "iat": now,
        "nbf": now, "exp": now + 300, "jti": "0123456789abcdef01234567",
        "oa_org_id": "user:7", "oa_sync_scopes": [RUN_TOPIC],
        "oa_claims_version": DEFAULT_CLAIMS_VERSION,
    });
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "sync-auth-v1"});
    let token = jwt::encode_hs256(&header, &claims, b"dev-sync-signing-key");
    assert_eq!(sync.refused_status(Some(&token)).await, None);
    let mut client = SyncClient::connect(&sync.server.websocket_url(&token))
        .await
        .expect("accepted");
    assert_eq!(client.join().await["allowed_topics"], json!([RUN_TOPIC]));
    sync.finish().await;
}
