//! The Convex HTTP sink against a scripted HTTP peer: the request it sends
//! (S4) and its mapping of the answers a real backend never gives (2xx
//! errors, broken JSON), timeouts and refused connections.

use crate::support::ok;
use khala_runtime::ProjectionKind;
use khala_runtime::sink::{ConvexHttpSink, ConvexSinkConfig, SinkError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the peer saw it: head (request line and headers) and body.
struct SeenRequest {
    head: String,
    body: String,
}

/// Serves one connection: reads one request, answers `response` (raw HTTP),
/// or never answers when `response` is `None`.
async fn scripted_peer(response: Option<String>) -> (String, tokio::task::JoinHandle<SeenRequest>) {
    let listener = ok(TcpListener::bind("127.0.0.1:0").await);
    let url = format!("http://{}", ok(listener.local_addr()));
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("the sink connects");
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head, body) = loop {
            let n = socket.read(&mut chunk).await.expect("read request");
            buffer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buffer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>())
                    })
                    .and_then(Result::ok)
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    break (head.to_owned(), body.to_owned());
                }
            }
        };
        match response {
            Some(response) => socket.write_all(response.as_bytes()).await.expect("answer"),
            None => tokio::time::sleep(std::time::Duration::from_secs(30)).await,
        }
        SeenRequest { head, body }
    });
    (url, task)
}

fn answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn upsert(base_url: &str, admin_key: &str, timeout_ms: i64) -> Result<(), SinkError> {
    let sink = ConvexHttpSink::new(&ConvexSinkConfig {
        base_url: base_url.to_owned(),
        admin_key: admin_key.to_owned(),
        request_timeout_ms: timeout_ms,
        ..ConvexSinkConfig::default()
    });
    let summary = json!({"document_id": "runtime/run_summary:r1", "runtime_source": {"seq": 1}});
    sink.send(
        ProjectionKind::RunSummary,
        "runtime/run_summary:r1",
        &summary,
    )
    .await
}

#[tokio::test]
async fn s4_request_body_path_and_headers_follow_the_spec() {
    let (url, peer) = scripted_peer(Some(answer(
        "200 OK",
        r#"{"status":"success","value":null,"logLines":[]}"#,
    )))
    .await;
    ok(upsert(&format!("{url}//"), " secret ", 0).await);
    let seen = peer.await.expect("peer");
    assert!(
        seen.head.starts_with("POST /api/mutation HTTP/1.1"),
        "{}",
        seen.head
    );
    let head = seen.head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        seen.head.contains("authorization: Convex secret")
            || seen.head.contains("Authorization: Convex secret"),
        "{}",
        seen.head
    );
    let body: Value = ok(serde_json::from_str(&seen.body));
    assert_eq!(
        body,
        json!({"path": "runtime:upsertRunSummary", "format": "convex_encoded_json", "args": [{
            "document_id": "runtime/run_summary:r1",
            "summary": {"document_id": "runtime/run_summary:r1", "runtime_source": {"seq": 1}}
        }]})
    );
}

#[tokio::test]
async fn s4_without_an_admin_key_no_authorization_header_is_sent() {
    let (url, peer) = scripted_peer(Some(answer(
        "200 OK",
        r#"{"status":"success","value":null}"#,
    )))
    .await;
    ok(upsert(&url, "  ", 0).await);
    assert!(
        !peer
            .await
            .expect("peer")
            .head
            .to_ascii_lowercase()
            .contains("authorization")
    );
}

/// Whether an error is the expected one.
type Expect = fn(&SinkError) -> bool;

/// Each answer and the error it must become.
#[tokio::test]
async fn s4_every_answer_class_maps_to_its_typed_error() {
    let cases: [(&str, &str, Expect); 7] = [
        (
            "200 OK",
            r#"{"status":"error","errorMessage":"boom"}"#,
            |e| matches!(e, SinkError::ConvexError { message } if message == "boom"),
        ),
        ("200 OK", r#"{"status":"error"}"#, |e| {
            matches!(e, SinkError::InvalidResponse { .. })
        }),
        ("200 OK", r#"{"value":1}"#, |e| {
            matches!(e, SinkError::InvalidResponse { .. })
        }),
        (
            "200 OK",
            "not json",
            |e| matches!(e, SinkError::InvalidJson { body } if body == "not json"),
        ),
        (
            "500 Internal Server Error",
            "oops",
            |e| matches!(e, SinkError::HttpStatus { status: 500, body } if body == "oops"),
        ),
        // A failed function answered 560 is the same class as one
        // answered 200; any other 560 stays an HTTP status.
        (
            "560 Function Error",
            r#"{"status":"error","errorMessage":"x"}"#,
            |e| matches!(e, SinkError::ConvexError { message } if message == "x"),
        ),
        ("560 Function Error", "oops", |e| {
            matches!(e, SinkError::HttpStatus { status: 560, .. })
        }),
    ];
    for (status, body, expected) in cases {
        let (url, _peer) = scripted_peer(Some(answer(status, body))).await;
        let error = upsert(&url, "k", 0).await.unwrap_err();
        assert!(expected(&error), "{status} {body} gave {error:?}");
    }
}

#[tokio::test]
async fn s4_a_silent_peer_times_out_as_http_request_failed() {
    let (url, peer) = scripted_peer(None).await;
    let error = upsert(&url, "k", 200).await.unwrap_err();
    match &error {
        SinkError::HttpRequestFailed { reason } => {
            assert!(reason.contains("timed out"), "{reason}")
        }
        other => panic!("expected a request failure, got {other:?}"),
    }
    assert_eq!(error.reason_class(), "http_request_failed");
    peer.abort();
}

#[tokio::test]
async fn s4_a_refused_connection_is_http_request_failed() {
    let listener = ok(std::net::TcpListener::bind("127.0.0.1:0"));
    let url = format!("http://{}", ok(listener.local_addr()));
    drop(listener);
    let error = upsert(&url, "k", 0).await.unwrap_err();
    assert!(
        matches!(error, SinkError::HttpRequestFailed { .. }),
        "{error:?}"
    );
}
