//! Bad input of every kind is answered on the connection that sent it (a
//! reply, or as Phoenix's socket answers it: `phx_error`, `phx_close`,
//! `unmatched topic`), never leaks a document, and never disturbs another
//! connection's delivery.

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
            "a V1 frame on a V2 socket",
            Offence::Text(
                r#"{"topic":"sync:v1","event":"sync:heartbeat","payload":{},"ref":"1"}"#.into(),
            ),
            bad_frame("frame is not a JSON array"),
        ),
        (
            "a join of another topic",
            Offence::Text(r#"["5","5","sync:v2","phx_join",{}]"#.into()),
            json!({"code": "bad_topic"}),
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
    // Phoenix-level offences end the offender's channel or replace it; each
    // is answered as the original's socket answers it, and rejoined after.
    for offence in PhoenixOffence::ALL {
        let frames = offence.commit(&mut offender).await;
        for frame in &frames {
            assert!(
                !frame.encode().contains("runtime/run_summary"),
                "{offence:?}: a document leaked"
            );
        }
        watermark += 1;
        sync.insert_run_event(watermark, sync.now()).await;
        assert_eq!(
            bystander.next_batch_watermarks().await,
            vec![watermark],
            "{offence:?}"
        );
    }
    // The offender still works after all of it.
    let exchange = offender.subscribe(json!({"topics": [RUN_TOPIC]})).await;
    assert_eq!(exchange.delivered(), (1..=watermark).collect::<Vec<i64>>());
    sync.finish().await;
}

/// Offences the Phoenix socket answers around the channel (facts §3).
#[derive(Clone, Copy, Debug)]
enum PhoenixOffence {
    /// An event the channel has no handler for: it crashes (`phx_error`).
    UnknownEvent,
    /// A client sending the server's own reply event: no handler either.
    ReplyFromTheClient,
    /// A second join: the first channel is closed (`phx_close`).
    DuplicateJoin,
    /// `phx_leave`, then messages for the channel that is gone.
    LeaveThenTalk,
}

impl PhoenixOffence {
    const ALL: [PhoenixOffence; 4] = [
        PhoenixOffence::UnknownEvent,
        PhoenixOffence::ReplyFromTheClient,
        PhoenixOffence::DuplicateJoin,
        PhoenixOffence::LeaveThenTalk,
    ];

    /// Commits the offence on `offender` (joined), asserts the socket's
    /// answer, leaves it joined again; returns every frame it received.
    async fn commit(self, offender: &mut SyncClient) -> Vec<Frame> {
        let join_ref = offender.join_ref().map(str::to_owned);
        let name = format!("{self:?}");
        let mut seen = Vec::new();
        match self {
            PhoenixOffence::UnknownEvent | PhoenixOffence::ReplyFromTheClient => {
                let event = match self {
                    PhoenixOffence::UnknownEvent => "sync:drop_tables",
                    _ => "phx_reply",
                };
                offender
                    .send_frame(
                        join_ref.as_deref(),
                        "sync:v1",
                        event,
                        json!({"status": "ok"}),
                    )
                    .await;
                let error = offender.recv().await;
                assert_eq!(
                    (error.event.as_str(), &error.join_ref, &error.reference),
                    ("phx_error", &join_ref, &join_ref),
                    "{name}"
                );
                seen.push(error);
                seen.extend(rejoin(offender, &name, &[]).await);
            }
            PhoenixOffence::DuplicateJoin => {
                seen.extend(rejoin(offender, &name, &[join_ref]).await);
            }
            PhoenixOffence::LeaveThenTalk => {
                let left = offender.request("phx_leave", json!({})).await;
                left.reply.ok();
                assert_eq!(left.reply_frame.join_ref, join_ref, "{name}");
                let close = offender.recv().await;
                assert_eq!(
                    (close.event.as_str(), &close.join_ref),
                    ("phx_close", &join_ref),
                    "{name}"
                );
                let after = offender.subscribe(json!({"topics": [RUN_TOPIC]})).await;
                assert_eq!(
                    (after.reply_frame.join_ref.clone(), after.reply.error()),
                    (None, &json!({"reason": "unmatched topic"})),
                    "{name}"
                );
                seen.extend([left.reply_frame, close, after.reply_frame]);
                seen.extend(rejoin(offender, &name, &[]).await);
            }
        }
        seen
    }
}

/// Joins again; the frames before the reply must be exactly a `phx_close`
/// for each join ref in `closed`.
async fn rejoin(offender: &mut SyncClient, name: &str, closed: &[Option<String>]) -> Vec<Frame> {
    let exchange = offender.join_exchange().await;
    exchange.reply.ok();
    let closes: Vec<(&str, Option<String>)> = exchange
        .pushes
        .iter()
        .map(|frame| (frame.event.as_str(), frame.join_ref.clone()))
        .collect();
    let expected: Vec<(&str, Option<String>)> = closed
        .iter()
        .map(|join_ref| ("phx_close", join_ref.clone()))
        .collect();
    assert_eq!(closes, expected, "{name}");
    let mut frames = exchange.pushes;
    frames.push(exchange.reply_frame);
    frames
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
