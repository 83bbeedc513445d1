//! Heartbeats (D5) driven by a manual clock and explicit ticks, and socket
//! authentication (D6) at the WebSocket upgrade.

use crate::sync_client::{RUN_TOPIC, SyncClient, SyncEnv};
use chrono::TimeDelta;
use khala_runtime::Profile;
use khala_runtime::sync::HeartbeatTick;
use khala_runtime::sync::jwt::{
    self, AuthConfig, ClaimKey, DEFAULT_KEY_ID, IssuerConfig, JwtError, TokenIssuer,
};
use serde_json::json;

#[tokio::test]
async fn d5_each_server_tick_pushes_the_cursors_of_every_joined_channel() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    sync.insert_run_events(1..=2).await;
    let mut client = sync.joined().await;
    client
        .subscribe(json!({"topics": [RUN_TOPIC]}))
        .await
        .reply
        .ok();
    let _not_joined = sync.connect().await;
    let tick = sync.server.tick_heartbeats().await;
    assert_eq!(
        tick,
        HeartbeatTick {
            connections: 2,
            heartbeats_pushed: 1,
            channels_closed: 0
        }
    );
    let push = client.recv().await;
    assert_eq!(push.event, "sync:heartbeat");
    assert_eq!(push.reference, None);
    assert_eq!(
        push.payload,
        json!({"watermarks": [{"topic": RUN_TOPIC, "watermark": 2}]})
    );
    sync.clock.advance(TimeDelta::seconds(15));
    sync.server.tick_heartbeats().await;
    assert_eq!(client.recv().await.event, "sync:heartbeat");
    sync.finish().await;
}

#[tokio::test]
async fn d5_a_client_heartbeat_gets_a_push_and_an_ok_reply_with_watermarks() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    sync.insert_run_events(1..=3).await;
    let mut client = sync.connect().await;
    let joined_id = client.join().await["subscription_id"].clone();
    client
        .subscribe(json!({"topics": [RUN_TOPIC]}))
        .await
        .reply
        .ok();
    let exchange = client.request("sync:heartbeat", json!("anything")).await;
    let expected = json!([{"topic": RUN_TOPIC, "watermark": 3}]);
    assert_eq!(
        exchange.pushes_of("sync:heartbeat"),
        vec![json!({"watermarks": expected})]
    );
    assert_eq!(
        exchange.reply.ok(),
        &json!({"subscription_id": joined_id, "watermarks": expected})
    );
    sync.finish().await;
}

#[tokio::test]
async fn d5_the_channel_closes_after_the_timeout_without_client_messages() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let mut client = sync.joined().await;
    client
        .subscribe(json!({"topics": [RUN_TOPIC]}))
        .await
        .reply
        .ok();
    // Client messages refresh liveness: 59 s, a heartbeat, 59 s more is fine.
    sync.clock.advance(TimeDelta::seconds(59));
    client.heartbeat().await.reply.ok();
    sync.clock.advance(TimeDelta::seconds(59));
    assert_eq!(sync.server.tick_heartbeats().await.heartbeats_pushed, 1);
    assert_eq!(client.recv().await.event, "sync:heartbeat");
    // Then 61 s of silence: the next tick closes the channel.
    sync.clock.advance(TimeDelta::seconds(61));
    assert_eq!(sync.server.tick_heartbeats().await.channels_closed, 1);
    let close = client.recv().await;
    assert_eq!(
        (close.topic.as_str(), close.event.as_str()),
        ("sync:v1", "phx_close")
    );
    assert_eq!(close.join_ref, close.reference);
    assert_eq!(sync.server.active_channels(), 0);
    // The socket stays; the channel is gone: no live batch, no subscribe.
    sync.insert_run_event(1, sync.now()).await;
    let after = client.subscribe(json!({"topics": [RUN_TOPIC]})).await;
    assert!(after.pushes.is_empty());
    assert_eq!(after.reply.error(), &json!({"reason": "unmatched topic"}));
    assert_eq!(
        sync.server.tick_heartbeats().await,
        HeartbeatTick {
            connections: 1,
            heartbeats_pushed: 0,
            channels_closed: 0
        }
    );
    // Rejoining works and delivers what was missed.
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
async fn d6_a_rotated_key_and_the_previous_key_are_both_accepted() {
    let sync = SyncEnv::start_with(Profile::Legacy, |config| {
        config.auth = AuthConfig::base().with_key("sync-auth-v2", b"rotated signing key");
    })
    .await;
    let auth = AuthConfig::base().with_key("sync-auth-v2", b"rotated signing key");
    let rotated = TokenIssuer::new(IssuerConfig::matching(&auth, "sync-auth-v2"));
    let token = rotated
        .issue(7, &[RUN_TOPIC.to_owned()], sync.now())
        .expect("issued")
        .token;
    assert_eq!(sync.refused_status(Some(&token)).await, None);
    let mut client = SyncClient::connect(&sync.server.websocket_url(&token))
        .await
        .expect("accepted");
    assert_eq!(client.join().await["allowed_topics"], json!([RUN_TOPIC]));
    let previous = sync.token(&[RUN_TOPIC]);
    assert_eq!(sync.refused_status(Some(&previous)).await, None);
    sync.finish().await;
}

#[tokio::test]
async fn d6_refused_tokens_get_403_and_the_reason_stays_in_the_log() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let now = sync.now();
    let base = AuthConfig::base();
    let unknown_kid = TokenIssuer::new(IssuerConfig::matching(
        &base.clone().with_key("retired", b"old key"),
        "retired",
    ))
    .issue(7, &[], now)
    .expect("issued")
    .token;
    let mut other_audience = IssuerConfig::matching(&base, DEFAULT_KEY_ID);
    other_audience.audience = "someone-else".into();
    let other_audience = TokenIssuer::new(other_audience)
        .issue(7, &[], now)
        .expect("issued")
        .token;
    let expired = TokenIssuer::new(IssuerConfig::matching(&base, DEFAULT_KEY_ID))
        .issue(7, &[], now - TimeDelta::seconds(301))
        .expect("issued")
        .token;
    let cases = [
        (
            unknown_kid,
            JwtError::UnknownKid {
                kid: "retired".into(),
            },
        ),
        (
            other_audience,
            JwtError::ClaimMismatch { key: ClaimKey::Aud },
        ),
        (expired, JwtError::TokenExpired),
        ("garbage".to_owned(), JwtError::InvalidTokenEncoding),
    ];
    for (token, error) in cases {
        // What the verifier says (logged by the server), and what the client sees.
        assert_eq!(
            jwt::verify(&token, &base, now.timestamp()),
            Err(error.clone())
        );
        assert_eq!(
            sync.refused_status(Some(&token)).await,
            Some(403),
            "{}",
            error.reason()
        );
    }
    assert_eq!(sync.refused_status(None).await, Some(403), "no token");
    assert_eq!(sync.server.connections(), 0);
    sync.finish().await;
}
