//! Bad input of every kind is answered on the connection that sent it,
//! never leaks a document, and never disturbs another connection's delivery.

use crate::sync_client::{RUN_TOPIC, SyncClient, SyncEnv, WORKER_TOPIC};
use khala_runtime::Profile;
use khala_runtime::sync::protocol::Frame;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// What the offending connection sends, and the error it must get back.
enum Offence {
    Text(String),
    Binary,
    Request { event: &'static str, payload: Value },
}

fn offences() -> Vec<(&'static str, Offence, Value)> {
    let bad_frame = |reason: &str| json!({"code": "bad_frame", "reason": reason});
    let subscribe = |payload: Value| Offence::Request {
        event: "sync:subscribe",
        payload,
    };
    let bad_subscription = json!({"code": "bad_subscription"});
    vec![
        (
            "not json",
            Offence::Text("{not json".into()),
            bad_frame("frame is not JSON"),
        ),
        (
            "an object",
            Offence::Text("{}".into()),
            bad_frame("frame is not a JSON array"),
        ),
        (
            "two elements",
            Offence::Text("[1,2]".into()),
            bad_frame("frame has 2 elements, expected 5"),
        ),
        (
            "numeric refs",
            Offence::Text(r#"[1,2,"sync:v1","sync:heartbeat",{}]"#.into()),
            bad_frame("join_ref and ref must be strings or null"),
        ),
        (
            "numeric event",
            Offence::Text(r#"["1","2","sync:v1",5,{}]"#.into()),
            bad_frame("topic and event must be strings"),
        ),
        (
            "a binary frame",
            Offence::Binary,
            bad_frame("binary frames are not supported"),
        ),
        (
            "an oversized frame",
            Offence::Text(format!(
                r#"["1","2","sync:v1","sync:heartbeat",{{"pad":"{}"}}]"#,
                "x".repeat(1_500_000)
            )),
            json!({"code": "frame_too_large", "max_bytes": 1_048_576}),
        ),
        (
            "an unknown event",
            Offence::Request {
                event: "sync:drop_tables",
                payload: json!({}),
            },
            json!({"code": "unknown_event", "event": "sync:drop_tables"}),
        ),
        (
            "a negative watermark",
            subscribe(json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: -3}})),
            bad_subscription.clone(),
        ),
        (
            "a float watermark",
            subscribe(json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: 2.5}})),
            bad_subscription.clone(),
        ),
        (
            "a string watermark",
            subscribe(json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: "2"}})),
            bad_subscription.clone(),
        ),
        (
            "a huge watermark",
            subscribe(
                json!({"topics": [RUN_TOPIC], "resume_after": {RUN_TOPIC: 18_446_744_073_709_551_615u64}}),
            ),
            bad_subscription.clone(),
        ),
        (
            "a list entry without watermark",
            subscribe(
                json!({"topics": [RUN_TOPIC], "resume_after": [{"topic": RUN_TOPIC, "watermark": null}]}),
            ),
            bad_subscription.clone(),
        ),
        (
            "an unknown topic",
            subscribe(json!({"topics": ["runtime.secrets"]})),
            json!({"code": "forbidden_topic", "forbidden_topics": ["runtime.secrets"]}),
        ),
        (
            "a topic the token lacks",
            subscribe(json!({"topics": [WORKER_TOPIC]})),
            json!({"code": "forbidden_topic", "forbidden_topics": [WORKER_TOPIC]}),
        ),
        (
            "a non-object payload",
            subscribe(json!(null)),
            bad_subscription,
        ),
        (
            "a message to another topic",
            Offence::Text(r#"["1","9","room:lobby","shout",{}]"#.into()),
            json!({"reason": "unmatched topic"}),
        ),
    ]
}

#[tokio::test]
async fn bad_input_is_answered_on_its_connection_while_another_keeps_getting_its_batches() {
    let sync = SyncEnv::start(Profile::Hardened).await;
    let mut bystander = sync.joined().await;
    bystander
        .subscribe(json!({"topics": [RUN_TOPIC]}))
        .await
        .reply
        .ok();
    let mut offender = sync.connect_with(&[RUN_TOPIC]).await;
    offender.join().await;
    let mut watermark = 0;
    for (name, offence, expected) in offences() {
        let reply: Frame = match offence {
            Offence::Text(text) => {
                offender.send_text(text).await;
                offender.recv().await
            }
            Offence::Binary => {
                offender
                    .send_message(Message::binary(vec![0u8, 159, 146, 150]))
                    .await;
                offender.recv().await
            }
            Offence::Request { event, payload } => {
                offender.request(event, payload).await.reply_frame
            }
        };
        assert_eq!(reply.event, "phx_reply", "{name}");
        assert_eq!(
            reply.payload,
            json!({"status": "error", "response": expected}),
            "{name}"
        );
        assert!(
            !reply.encode().contains("runtime/run_summary"),
            "{name}: a document leaked"
        );
        // Meanwhile the other connection keeps getting its live batches.
        watermark += 1;
        sync.insert_run_event(watermark, sync.now()).await;
        assert_eq!(
            bystander.next_batch_watermarks().await,
            vec![watermark],
            "{name}"
        );
    }
    // The offender still works after all of it.
    let exchange = offender.subscribe(json!({"topics": [RUN_TOPIC]})).await;
    assert_eq!(exchange.delivered(), (1..=watermark).collect::<Vec<i64>>());
    sync.finish().await;
}

#[tokio::test]
async fn refused_and_dropped_connections_do_not_disturb_a_subscribed_one() {
    let sync = SyncEnv::start(Profile::Legacy).await;
    let mut bystander = sync.joined().await;
    bystander
        .subscribe(json!({"topics": [RUN_TOPIC]}))
        .await
        .reply
        .ok();
    let expired = ok_token(&sync, -400);
    assert_eq!(sync.refused_status(Some(&expired)).await, Some(403));
    assert_eq!(sync.refused_status(Some("a.b.c")).await, Some(403));
    sync.insert_run_event(1, sync.now()).await;
    assert_eq!(bystander.next_batch_watermarks().await, vec![1]);
    // A client that vanishes mid-subscribe.
    let mut vanishing = sync.joined().await;
    vanishing
        .send("sync:v1", "sync:subscribe", json!({"topics": [RUN_TOPIC]}))
        .await;
    drop(vanishing);
    // A transport-level oversize (above 4 MiB) closes only that socket.
    let mut flooding: SyncClient = sync.joined().await;
    // The server may reset the socket before the whole frame is written.
    let _ = flooding
        .try_send_message(Message::text("x".repeat(5 * 1024 * 1024)))
        .await;
    assert!(
        flooding.recv_or_close().await.is_none(),
        "closed by the transport"
    );
    sync.insert_run_event(2, sync.now()).await;
    assert_eq!(bystander.next_batch_watermarks().await, vec![2]);
    sync.finish().await;
}

fn ok_token(sync: &SyncEnv, offset_seconds: i64) -> String {
    sync.issuer
        .issue(
            7,
            &[],
            sync.now() + chrono::TimeDelta::seconds(offset_seconds),
        )
        .expect("issued")
        .token
}
