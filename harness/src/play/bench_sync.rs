//! Benchmarks of the sync server: replay catch-up throughput (how fast one
//! WebSocket client receives a backlog it subscribes to) and commit-to-client
//! latency with many subscribed clients. They report figures; they never
//! assert on time.

use crate::play::backend::postgres::{BackendError, PostgresBackend};
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

/// What to measure: `events` projections of one run, each delivered live to
/// every one of `clients` subscribed WebSocket clients.
#[derive(Clone, Debug)]
pub struct LatencyBench {
    pub profile: Profile,
    pub events: usize,
    pub clients: Vec<usize>,
}

/// Commit-to-client latency percentiles over every (client, event) pair.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LatencyRate {
    pub clients: usize,
    pub events: usize,
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// How long one client may wait for the last event before the benchmark
/// gives up (legacy B11 can stall delivery until the next wake-up).
const LIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// From the moment the projection's append returns (its transaction has
/// committed) to the moment each subscribed client has the update in hand.
pub async fn commit_to_apply(
    backend: &PostgresBackend,
    bench: &LatencyBench,
) -> Result<Vec<LatencyRate>, SyncBenchError> {
    use khala_runtime::authority::NewRun;
    use khala_runtime::{Runtime, RuntimeConfig, SinkMode};
    let mut rates = Vec::new();
    for &clients in &bench.clients {
        let db = backend.fresh_database().await?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let runtime = Runtime::new(
            db.pool.clone(),
            RuntimeConfig {
                sink_mode: SinkMode::KhalaOnly,
                clock: clock.clone(),
                ..RuntimeConfig::new(bench.profile)
            },
        );
        let run = NewRun {
            run_id: "bench_run".into(),
            thread_id: "bench".into(),
            owner_user_id: Some(1),
            owner_guest_scope: None,
        };
        runtime
            .create_run(&run)
            .await
            .map_err(|error| SyncBenchError::Protocol(error.to_string()))?;
        let config = SyncConfig::new(bench.profile);
        let issuer = TokenIssuer::new(IssuerConfig::matching(&config.auth, DEFAULT_KEY_ID));
        let token = issuer.issue(1, &[TOPIC.to_owned()], clock.now())?.token;
        let server =
            SyncServer::start(config, db.pool.clone(), runtime.notifier().clone(), clock).await?;
        let url = server.websocket_url(&token);
        let (ready_sender, mut ready) = tokio::sync::mpsc::channel(clients.max(1));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (url, ready_sender, last) =
                (url.clone(), ready_sender.clone(), bench.events as i64);
            tasks.push(tokio::spawn(async move {
                receive_live(&url, ready_sender, last).await
            }));
        }
        drop(ready_sender);
        for _ in 0..clients {
            ready
                .recv()
                .await
                .ok_or_else(|| SyncBenchError::Protocol("a client failed to subscribe".into()))?;
        }
        let mut committed = Vec::with_capacity(bench.events);
        for _ in 0..bench.events {
            let appended = runtime
                .append_event(
                    ProjectionKind::RunSummary,
                    "bench_run",
                    "run.delta",
                    &json!({}),
                )
                .await;
            committed.push(Instant::now());
            appended.map_err(|error| SyncBenchError::Protocol(error.to_string()))?;
        }
        let mut latencies_ms = Vec::with_capacity(clients * bench.events);
        let mut failure = None;
        for task in tasks {
            match task.await {
                Ok(Ok(arrivals)) => {
                    for (watermark, arrived) in arrivals {
                        let committed_at = committed[(watermark - 1) as usize];
                        latencies_ms.push(
                            arrived
                                .saturating_duration_since(committed_at)
                                .as_secs_f64()
                                * 1000.0,
                        );
                    }
                }
                Ok(Err(error)) => failure = Some(error),
                Err(error) => failure = Some(SyncBenchError::Protocol(error.to_string())),
            }
        }
        server.shutdown().await?;
        db.drop_database().await?;
        if let Some(error) = failure {
            return Err(error);
        }
        latencies_ms.sort_by(f64::total_cmp);
        let percentile = |fraction: f64| {
            latencies_ms
                .get(
                    ((latencies_ms.len() as f64 * fraction) as usize)
                        .min(latencies_ms.len().saturating_sub(1)),
                )
                .copied()
                .unwrap_or(0.0)
        };
        rates.push(LatencyRate {
            clients,
            events: bench.events,
            samples: latencies_ms.len(),
            p50_ms: percentile(0.50),
            p95_ms: percentile(0.95),
            p99_ms: percentile(0.99),
            max_ms: latencies_ms.last().copied().unwrap_or(0.0),
        });
    }
    Ok(rates)
}

/// Joins and subscribes, reports ready, then records when each watermark up
/// to `last` arrives.
async fn receive_live(
    url: &str,
    ready: tokio::sync::mpsc::Sender<()>,
    last: i64,
) -> Result<Vec<(i64, Instant)>, SyncBenchError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::text(r#"["1","1","sync:v1","phx_join",{}]"#))
        .await?;
    next_frame(&mut ws).await?;
    let subscribe = json!(["1", "2", "sync:v1", "sync:subscribe", {"topics": [TOPIC]}]);
    ws.send(Message::text(subscribe.to_string())).await?;
    loop {
        let (frame, _) = next_frame(&mut ws).await?;
        if frame.event == "phx_reply" && frame.reference.as_deref() == Some("2") {
            break;
        }
    }
    let _ = ready.send(()).await;
    let mut arrivals = Vec::new();
    let mut highest = 0;
    let received = tokio::time::timeout(LIVE_TIMEOUT, async {
        while highest < last {
            let (frame, _) = next_frame(&mut ws).await?;
            if frame.event != "sync:update_batch" {
                continue;
            }
            let now = Instant::now();
            for update in frame.payload["updates"].as_array().into_iter().flatten() {
                if let Some(watermark) = update["watermark"]
                    .as_i64()
                    .filter(|watermark| (1..=last).contains(watermark))
                {
                    arrivals.push((watermark, now));
                    highest = highest.max(watermark);
                }
            }
        }
        Ok::<(), SyncBenchError>(())
    })
    .await;
    let _ = ws.close(None).await;
    received.map_err(|_| SyncBenchError::TimedOut(LIVE_TIMEOUT))??;
    Ok(arrivals)
}
