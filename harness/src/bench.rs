//! Benchmarks of the models on real backends. They report rates; they never
//! assert on time (machines are shared and noisy).

use crate::backend::postgres::{BackendError, PostgresBackend};
use khala_runtime::authority::{self, AuthorityError, NewRun};
use khala_runtime::projector::ProjectionError;
use khala_runtime::{Profile, ProjectionKind, Runtime, RuntimeConfig, SinkMode};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("connect the benchmark pool: {0}")]
    Pool(#[source] sqlx::Error),
    #[error("prepare the benchmark runs: {0}")]
    Authority(#[from] AuthorityError),
    #[error("project during the benchmark: {0}")]
    Projection(#[from] ProjectionError),
    #[error("a benchmark task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct ProjectionBench {
    pub profile: Profile,
    /// Projections per measurement; each is a real write (a new run).
    pub projections: usize,
    /// Events each run holds before it is projected.
    pub events_per_run: usize,
    pub connections: Vec<u32>,
}

/// One measurement: `projections` writes through the Khala sink, spread over
/// `connections` concurrent tasks each holding one pooled connection.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProjectionRate {
    pub connections: u32,
    pub projections: usize,
    pub seconds: f64,
    pub projections_per_second: f64,
}

/// Projections per second through the Khala sink, each in a fresh database.
pub async fn projections(
    backend: &PostgresBackend,
    bench: &ProjectionBench,
) -> Result<Vec<ProjectionRate>, BenchError> {
    let mut rates = Vec::new();
    for &connections in &bench.connections {
        let connections = connections.max(1);
        let db = backend.fresh_database().await?;
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect(&db.url)
            .await
            .map_err(BenchError::Pool)?;
        let runtime = Runtime::new(
            pool.clone(),
            RuntimeConfig {
                sink_mode: SinkMode::KhalaOnly,
                ..RuntimeConfig::new(bench.profile)
            },
        );
        let run_ids: Vec<String> = (0..bench.projections)
            .map(|index| format!("bench_run_{index:06}"))
            .collect();
        for run_id in &run_ids {
            let run = NewRun {
                run_id: run_id.clone(),
                thread_id: "bench".into(),
                owner_user_id: Some(1),
                owner_guest_scope: None,
            };
            authority::create_run(&pool, runtime.clock().as_ref(), &run).await?;
            for _ in 0..bench.events_per_run {
                authority::append_event(
                    &pool,
                    runtime.clock().as_ref(),
                    ProjectionKind::RunSummary,
                    run_id,
                    "run.delta",
                    &json!({}),
                )
                .await?;
            }
        }
        let projector = runtime.projector().clone();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for lane in 0..connections as usize {
            let projector = projector.clone();
            let mine: Vec<String> = run_ids
                .iter()
                .skip(lane)
                .step_by(connections as usize)
                .cloned()
                .collect();
            tasks.push(tokio::spawn(async move {
                for run_id in mine {
                    projector
                        .project(ProjectionKind::RunSummary, &run_id)
                        .await?;
                }
                Ok::<(), ProjectionError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let elapsed = started.elapsed().max(Duration::from_nanos(1));
        pool.close().await;
        db.drop_database().await?;
        rates.push(ProjectionRate {
            connections,
            projections: bench.projections,
            seconds: elapsed.as_secs_f64(),
            projections_per_second: bench.projections as f64 / elapsed.as_secs_f64(),
        });
    }
    Ok(rates)
}
