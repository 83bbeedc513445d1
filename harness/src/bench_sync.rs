//! Benchmarks of the sync server: replay catch-up throughput, i.e. how fast
//! one WebSocket client receives a backlog it subscribes to. They report
//! rates; they never assert on time. (Commit-to-apply latency is not
//! measured yet.)

use crate::backend::postgres::{BackendError, PostgresBackend};
use futures::{SinkExt, StreamExt};
use khala_runtime::clock::{Clock, SystemClock};
use khala_runtime::hashing::payload_hash;
use khala_runtime::notifier::Notifier;
use khala_runtime::summary::{EventRow, RunRow, build_run_summary};
use khala_runtime::sync::jwt::{DEFAULT_KEY_ID, IssueError, IssuerConfig, TokenIssuer};
use khala_runtime::sync::protocol::Frame;
use khala_runtime::sync::{SyncConfig, SyncServer, SyncServerError};
use khala_runtime::{Profile, ProjectionKind};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a replay may take before the benchmark gives up.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(600);
const TOPIC: &str = "runtime.run_summaries";

#[derive(Debug, thiserror::Error)]
pub enum SyncBenchError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("fill the journal: {0}")]
    Fill(#[source] sqlx::Error),
    #[error(transparent)]
    Server(#[from] SyncServerError),
    #[error("issue the benchmark token: {0}")]
    Token(#[from] IssueError),
    #[error("talk to the sync server: {0}")]
    Socket(#[from] tungstenite::Error),
    #[error("talk to the sync server: {0}")]
    Protocol(String),
    #[error("the replay did not finish within {0:?}")]
    TimedOut(Duration),
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct ReplayBench {
    pub profile: Profile,
    /// Journal rows of one topic the client catches up on.
    pub events: usize,
    /// One measurement per replay batch size.
    pub batch_sizes: Vec<i64>,
}

/// One measurement: a client subscribes from 0 and receives `events`
/// updates; time from sending the subscribe to its reply.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplayRate {
    pub batch_size: i64,
    pub events: usize,
    pub batches: usize,
    pub bytes: usize,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// A run summary as the projector writes it, the payload of every row.
fn sample_summary(index: usize) -> Value {
    let now = chrono::DateTime::from_timestamp(1_771_531_200, 0).unwrap_or_default();
    let run = RunRow {
        run_id: format!("bench_run_{index:06}"),
        thread_id: "thread_bench".into(),
        status: "running".into(),
        owner_user_id: Some(1),
        owner_guest_scope: None,
        latest_seq: Some(3),
        terminal_reason_class: None,
        terminal_reason: None,
        terminal_at: None,
        updated_at: Some(now.naive_utc()),
    };
    let events: Vec<EventRow> = (1..=3)
        .map(|seq| EventRow {
            seq,
            event_type: Some("run.delta".into()),
            inserted_at: now.naive_utc(),
        })
        .collect();
    build_run_summary(&run, &events, "convex_summary_v1", now)
}

/// Replay throughput to one client, each batch size in a fresh database.
pub async fn replay_catch_up(
    backend: &PostgresBackend,
    bench: &ReplayBench,
) -> Result<Vec<ReplayRate>, SyncBenchError> {
    let mut rates = Vec::new();
    for &batch_size in &bench.batch_sizes {
        let db = backend.fresh_database().await?;
        let payload = sample_summary(0);
        let hash = payload_hash(&payload).to_vec();
        sqlx::query(
            "INSERT INTO runtime.sync_stream_events \
             (topic, watermark, doc_key, doc_version, payload, payload_hash, inserted_at) \
             SELECT $1, n, $2 || n, 3, $3, $4, now() FROM generate_series(1, $5::bigint) AS n",
        )
        .bind(TOPIC)
        .bind(ProjectionKind::RunSummary.document_prefix())
        .bind(&payload)
        .bind(&hash)
        .bind(bench.events as i64)
        .execute(&db.pool)
        .await
        .map_err(SyncBenchError::Fill)?;
        sqlx::query("ANALYZE runtime.sync_stream_events")
            .execute(&db.pool)
            .await
            .map_err(SyncBenchError::Fill)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let config = SyncConfig {
            replay_batch_size: batch_size,
            ..SyncConfig::new(bench.profile)
        };
        let issuer = TokenIssuer::new(IssuerConfig::matching(&config.auth, DEFAULT_KEY_ID));
        let token = issuer.issue(1, &[TOPIC.to_owned()], clock.now())?.token;
        let server = SyncServer::start(config, db.pool.clone(), Notifier::new(), clock).await?;
        let measured =
            tokio::time::timeout(REPLAY_TIMEOUT, catch_up(&server.websocket_url(&token)))
                .await
                .map_err(|_| SyncBenchError::TimedOut(REPLAY_TIMEOUT));
        server.shutdown().await?;
        db.drop_database().await?;
        let (events, batches, bytes, elapsed) = measured??;
        let seconds = elapsed.max(Duration::from_nanos(1)).as_secs_f64();
        rates.push(ReplayRate {
            batch_size,
            events,
            batches,
            bytes,
            seconds,
            events_per_second: events as f64 / seconds,
        });
    }
    Ok(rates)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame, parsed, and its size in bytes.
async fn next_frame(ws: &mut Socket) -> Result<(Frame, usize), SyncBenchError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame = Frame::parse(text.as_str(), usize::MAX)
                    .map_err(|error| SyncBenchError::Protocol(error.to_string()))?;
                return Ok((frame, text.len()));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(SyncBenchError::Protocol("connection closed".into()));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

/// Joins, subscribes from 0 and counts what arrives before the reply:
/// `(updates, batches, bytes, elapsed)`.
async fn catch_up(url: &str) -> Result<(usize, usize, usize, Duration), SyncBenchError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::text(r#"["1","1","sync:v1","phx_join",{}]"#))
        .await?;
    let (joined, _) = next_frame(&mut ws).await?;
    if joined.payload["status"] != "ok" {
        return Err(SyncBenchError::Protocol(format!(
            "join refused: {}",
            joined.payload
        )));
    }
    let started = Instant::now();
    let subscribe = json!(["1", "2", "sync:v1", "sync:subscribe", {"topics": [TOPIC]}]);
    ws.send(Message::text(subscribe.to_string())).await?;
    let (mut events, mut batches, mut bytes) = (0, 0, 0);
    loop {
        let (frame, size) = next_frame(&mut ws).await?;
        bytes += size;
        match frame.event.as_str() {
            "sync:update_batch" => {
                batches += 1;
                events += frame.payload["updates"].as_array().map_or(0, Vec::len);
            }
            "phx_reply" if frame.reference.as_deref() == Some("2") => {
                if frame.payload["status"] != "ok" {
                    return Err(SyncBenchError::Protocol(format!(
                        "subscribe refused: {}",
                        frame.payload
                    )));
                }
                let _ = ws.close(None).await;
                return Ok((events, batches, bytes, started.elapsed()));
            }
            _ => {}
        }
    }
}
