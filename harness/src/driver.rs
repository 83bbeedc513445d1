//! The driver: plays a case step by step through the models against the
//! real backends, observes what the stores hold after each step, and checks
//! the invariants against the oracle. Each case gets a fresh PostgreSQL
//! database and an emptied Convex backend.

use crate::backend::convex::{ConvexBackend, ConvexBackendError};
use crate::backend::postgres::{BackendError, CaseDatabase, PostgresBackend};
use crate::case::{Case, ConvexFault, EntityRef, Step, StopPath};
use crate::invariants::{self, Violation};
use crate::observation::{CheckpointView, JournalEntry, Observation};
use crate::oracle::{self, Oracle, projection_version_name};
use crate::proxy::{ProxyMode, TcpProxy};
use chrono::{DateTime, Utc};
use khala_runtime::authority::{NewRun, NewWorker, RunTerminal};
use khala_runtime::clock::{Clock, ManualClock};
use khala_runtime::runtime::RuntimeError;
use khala_runtime::sink::{ConvexHttpSink, ConvexReader, ConvexSinkConfig, PayloadMode};
use khala_runtime::{Profile, ProjectionKind, Runtime, RuntimeConfig};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Convex sink's timeout inside the harness. The original's 2,500 ms
/// would make every `timeout` fault cost 2.5 s; the behaviour is the same.
pub const HARNESS_CONVEX_TIMEOUT_MS: i64 = 250;

/// A backend failed: the case's result is unknown, never a pass.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("postgres backend at step {step}: {source}")]
    Postgres {
        step: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("convex backend at step {step}: {source}")]
    Convex {
        step: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("harness proxy: {0}")]
    Proxy(std::io::Error),
}

impl DriverError {
    fn postgres(step: usize, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        DriverError::Postgres {
            step,
            source: Box::new(source),
        }
    }

    fn convex(step: usize, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        DriverError::Convex {
            step,
            source: Box::new(source),
        }
    }

    /// Which backend failed, for reports.
    pub fn backend(&self) -> &'static str {
        match self {
            DriverError::Postgres { .. } => "postgres",
            DriverError::Convex { .. } | DriverError::Proxy(_) => "convex",
        }
    }
}

/// The backends one harness process plays cases against.
pub struct Backends {
    pub postgres: PostgresBackend,
    pub convex: ConvexBackend,
    proxy: TcpProxy,
}

impl Backends {
    pub async fn new(
        postgres: PostgresBackend,
        convex: ConvexBackend,
    ) -> Result<Self, DriverError> {
        let upstream: SocketAddr = upstream_addr(&convex.base_url()).ok_or_else(|| {
            DriverError::Proxy(std::io::Error::other(format!(
                "cannot parse convex url {}",
                convex.base_url()
            )))
        })?;
        let proxy = TcpProxy::start(upstream)
            .await
            .map_err(DriverError::Proxy)?;
        Ok(Backends {
            postgres,
            convex,
            proxy,
        })
    }

    pub async fn shutdown(self) -> Result<(), String> {
        drop(self.proxy);
        let convex = self
            .convex
            .shutdown()
            .await
            .map_err(|error| error.to_string());
        let postgres = self
            .postgres
            .shutdown()
            .await
            .map_err(|error| error.to_string());
        convex.and(postgres)
    }
}

fn upstream_addr(base_url: &str) -> Option<SocketAddr> {
    let host_port = base_url.strip_prefix("http://")?.split('/').next()?;
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().ok()
}

/// What playing one case produced.
#[derive(Clone, Debug, Default)]
pub struct CaseResult {
    pub steps_run: usize,
    pub violations: Vec<Violation>,
    /// Wall-clock time spent resetting backends before the case.
    pub reset_time: Duration,
}

/// The fixed start of the models' clock in every case, so reports repeat.
pub fn case_start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-02-19T20:00:00Z")
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_default()
}

struct CaseState {
    runtime: Runtime,
    oracle: Oracle,
    reader: ConvexReader,
    created: std::collections::BTreeSet<EntityRef>,
    khala_broken: bool,
    version_generation: u32,
}

/// Plays `case` under its profile. Stops at the first step with a
/// violation when `stop_at_first` (shrinking only needs to know it fails).
pub async fn play(
    backends: &Backends,
    case: &Case,
    stop_at_first: bool,
) -> Result<CaseResult, DriverError> {
    let reset_started = Instant::now();
    backends.proxy.set_mode(ProxyMode::Pass);
    backends
        .convex
        .reset()
        .await
        .map_err(|error: ConvexBackendError| DriverError::convex(0, error))?;
    let db = backends
        .postgres
        .fresh_database()
        .await
        .map_err(|error: BackendError| DriverError::postgres(0, error))?;
    let mut result = CaseResult {
        reset_time: reset_started.elapsed(),
        ..CaseResult::default()
    };
    let played = play_in(backends, case, &db, stop_at_first, &mut result).await;
    backends.proxy.set_mode(ProxyMode::Pass);
    db.pool.close().await;
    let dropped = db.drop_database().await;
    played?;
    dropped.map_err(|error| DriverError::postgres(result.steps_run, error))?;
    Ok(result)
}

async fn play_in(
    backends: &Backends,
    case: &Case,
    db: &CaseDatabase,
    stop_at_first: bool,
    result: &mut CaseResult,
) -> Result<(), DriverError> {
    let mut state = start_case(backends, case, db)?;
    let mut previous = observe(&state, db, 0).await?;
    // The steps, then an implicit final quiescence.
    let final_step = [Step::Quiesce];
    for (index, step) in case.steps.iter().chain(final_step.iter()).enumerate() {
        apply(backends, db, &mut state, step, index).await?;
        state.oracle.apply(step);
        let current = observe(&state, db, index).await?;
        let reprojected = matches!(
            step,
            Step::Reproject { .. } | Step::SwitchSinkMode { .. } | Step::BumpProjectionVersion
        );
        let mut found =
            invariants::check_step(&state.oracle, &previous, &current, index, reprojected);
        if matches!(step, Step::Quiesce) {
            found.extend(invariants::check_quiescence(&state.oracle, &current, index));
        }
        result.steps_run = index + 1;
        let failed = !found.is_empty();
        result.violations.extend(found);
        if failed && stop_at_first {
            break;
        }
        previous = current;
    }
    Ok(())
}

fn start_case(
    backends: &Backends,
    case: &Case,
    db: &CaseDatabase,
) -> Result<CaseState, DriverError> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(case_start_time()));
    let config = RuntimeConfig {
        payload_mode: PayloadMode::Inline,
        clock,
        ..RuntimeConfig::new(case.profile)
    };
    let admin_key = backends.convex.admin_key().unwrap_or_default().to_owned();
    let proxied = format!("http://{}", backends.proxy.addr());
    let sink = ConvexHttpSink::new(&ConvexSinkConfig {
        base_url: proxied.clone(),
        admin_key: admin_key.clone(),
        request_timeout_ms: HARNESS_CONVEX_TIMEOUT_MS,
        ..ConvexSinkConfig::default()
    });
    let runtime = Runtime::new(db.pool.clone(), config)
        .with_convex_sink(Arc::new(sink), case.start.sink_mode)
        .map_err(|error| DriverError::postgres(0, error))?;
    // The reader bypasses the proxy: observing must work during faults.
    let reader = ConvexReader::new(&backends.convex.base_url(), &admin_key, 5_000);
    Ok(CaseState {
        runtime,
        oracle: Oracle::new(case.ids, case.start.sink_mode),
        reader,
        created: Default::default(),
        khala_broken: false,
        version_generation: 1,
    })
}

fn kind_of(entity: EntityRef) -> ProjectionKind {
    match entity {
        EntityRef::Run(_) => ProjectionKind::RunSummary,
        EntityRef::Worker(_) => ProjectionKind::CodexWorkerSummary,
    }
}

/// Creates the entity on first use, with the attributes the oracle assumes.
async fn ensure_created(
    state: &mut CaseState,
    entity: EntityRef,
    step: usize,
) -> Result<(), DriverError> {
    if state.created.contains(&entity) {
        return Ok(());
    }
    let id = state.oracle.entity_id(entity);
    let created = match entity {
        EntityRef::Run(_) => {
            let run = NewRun {
                thread_id: format!("thread_{id}"),
                run_id: id,
                owner_user_id: Some(oracle::OWNER_USER_ID),
                owner_guest_scope: None,
            };
            state.runtime.create_run(&run).await
        }
        EntityRef::Worker(_) => {
            let worker = NewWorker {
                worker_id: id,
                owner_user_id: Some(oracle::OWNER_USER_ID as i32),
                owner_guest_scope: None,
                workspace_ref: Some(oracle::WORKSPACE_REF.to_owned()),
                codex_home_ref: None,
                adapter: None,
                metadata: json!({"region": oracle::WORKER_REGION}),
            };
            state.runtime.create_worker(&worker).await
        }
    };
    created.map_err(|error| DriverError::postgres(step, error))?;
    state.created.insert(entity);
    Ok(())
}

/// Projection failures are the system's behaviour under faults, observed
/// through the stores; only failures of the authority writes themselves
/// mean the backend is gone.
fn authority_write(
    result: Result<khala_runtime::runtime::AppendOutcome, RuntimeError>,
    step: usize,
) -> Result<(), DriverError> {
    result
        .map(drop)
        .map_err(|error| DriverError::postgres(step, error))
}

async fn apply(
    backends: &Backends,
    db: &CaseDatabase,
    state: &mut CaseState,
    step: &Step,
    index: usize,
) -> Result<(), DriverError> {
    match step {
        Step::AppendRunEvent { run, event_type } => {
            let entity = EntityRef::Run(*run);
            ensure_created(state, entity, index).await?;
            let id = state.oracle.entity_id(entity);
            authority_write(
                state
                    .runtime
                    .append_event(
                        ProjectionKind::RunSummary,
                        &id,
                        event_type.as_str(),
                        &json!({}),
                    )
                    .await,
                index,
            )?;
        }
        Step::FinishRun { run, status } => {
            let entity = EntityRef::Run(*run);
            ensure_created(state, entity, index).await?;
            let id = state.oracle.entity_id(entity);
            let terminal = RunTerminal {
                status: status.as_str().to_owned(),
                terminal_reason_class: Some(status.as_str().to_owned()),
                terminal_reason: None,
            };
            authority_write(state.runtime.finish_run(&id, &terminal).await, index)?;
        }
        Step::AppendWorkerEvent { worker, event_type } => {
            let entity = EntityRef::Worker(*worker);
            ensure_created(state, entity, index).await?;
            let id = state.oracle.entity_id(entity);
            let kind = ProjectionKind::CodexWorkerSummary;
            authority_write(
                state
                    .runtime
                    .append_event(kind, &id, event_type.as_str(), &json!({}))
                    .await,
                index,
            )?;
        }
        Step::StopWorker { worker, path } => {
            let entity = EntityRef::Worker(*worker);
            ensure_created(state, entity, index).await?;
            let id = state.oracle.entity_id(entity);
            let outcome = match path {
                StopPath::Stop => state.runtime.stop_worker(&id).await,
                StopPath::Ingest => state.runtime.ingest_worker_stopped(&id).await,
            };
            authority_write(outcome, index)?;
        }
        Step::DuplicateDelivery { entity } => {
            if state.created.contains(entity) {
                let id = state.oracle.entity_id(*entity);
                let _projection_outcome_is_observed_in_the_stores =
                    state.runtime.project(kind_of(*entity), &id).await;
            }
        }
        Step::SwitchSinkMode { mode } => {
            state
                .runtime
                .set_sink_mode(*mode)
                .await
                .map_err(|error| DriverError::postgres(index, error))?;
        }
        Step::Reproject {
            entity: Some(entity),
        } => {
            if state.created.contains(entity) {
                let id = state.oracle.entity_id(*entity);
                state.runtime.rebuild(kind_of(*entity), &id).await;
            }
        }
        Step::Reproject { entity: None } => {
            let selection = khala_runtime::reprojection::RebuildSelection::default();
            state
                .runtime
                .rebuild_all(&selection)
                .await
                .map_err(|error| DriverError::postgres(index, error))?;
        }
        Step::BumpProjectionVersion => {
            state.version_generation += 1;
            let version = projection_version_name(state.version_generation);
            state
                .runtime
                .set_projection_version(&version)
                .await
                .map_err(|error| DriverError::postgres(index, error))?;
        }
        Step::BreakConvex { fault } => backends.proxy.set_mode(match fault {
            ConvexFault::Reset => ProxyMode::Reset,
            ConvexFault::Timeout => ProxyMode::Blackhole,
        }),
        Step::BreakKhala => {
            if !state.khala_broken {
                set_khala_broken(&db.pool, true)
                    .await
                    .map_err(|error| DriverError::postgres(index, error))?;
                state.khala_broken = true;
            }
        }
        Step::Heal | Step::Quiesce => {
            backends.proxy.set_mode(ProxyMode::Pass);
            if state.khala_broken {
                set_khala_broken(&db.pool, false)
                    .await
                    .map_err(|error| DriverError::postgres(index, error))?;
                state.khala_broken = false;
            }
            if matches!(step, Step::Quiesce) {
                state
                    .runtime
                    .repair_pending()
                    .await
                    .map_err(|error| DriverError::postgres(index, error))?;
            }
        }
    }
    Ok(())
}

/// A Khala database failure: a constraint no row satisfies on both read
/// models, so every Khala write fails inside the projector transaction.
pub async fn set_khala_broken(pool: &sqlx::PgPool, broken: bool) -> Result<(), sqlx::Error> {
    for table in [
        "runtime.sync_run_summaries",
        "runtime.sync_codex_worker_summaries",
    ] {
        let statement = if broken {
            format!(
                "ALTER TABLE {table} ADD CONSTRAINT harness_khala_fault CHECK (false) NOT VALID"
            )
        } else {
            format!("ALTER TABLE {table} DROP CONSTRAINT harness_khala_fault")
        };
        // The table names are the two constants above.
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(pool)
            .await?;
    }
    Ok(())
}

async fn observe(
    state: &CaseState,
    db: &CaseDatabase,
    step: usize,
) -> Result<Observation, DriverError> {
    let pg = |error: sqlx::Error| DriverError::postgres(step, error);
    let mut observation = Observation::default();
    for kind in ProjectionKind::ALL {
        let statement = format!(
            "SELECT doc_key, doc_version, payload FROM {} ORDER BY doc_key",
            kind.read_model_table()
        );
        let rows: Vec<(String, i64, serde_json::Value)> =
            sqlx::query_as(sqlx::AssertSqlSafe(statement))
                .fetch_all(&db.pool)
                .await
                .map_err(pg)?;
        observation.khala.extend(
            rows.into_iter()
                .map(|(key, version, payload)| (key, (version, payload))),
        );
        let documents = state
            .reader
            .list_all(kind)
            .await
            .map_err(|error| DriverError::convex(step, error))?;
        observation.convex.extend(documents);
    }
    let checkpoints: Vec<(String, i64, String, String)> = sqlx::query_as(
        "SELECT document_id, last_runtime_seq, projection_version, summary_hash FROM runtime.convex_projection_checkpoints",
    )
    .fetch_all(&db.pool)
    .await
    .map_err(pg)?;
    for (document_id, last_runtime_seq, projection_version, summary_hash) in checkpoints {
        let view = CheckpointView {
            document_id: document_id.clone(),
            last_runtime_seq,
            projection_version,
            summary_hash,
        };
        observation.checkpoints.insert(document_id, view);
    }
    let journal: Vec<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT topic, watermark, doc_key, doc_version FROM runtime.sync_stream_events ORDER BY topic, watermark",
    )
    .fetch_all(&db.pool)
    .await
    .map_err(pg)?;
    for (topic, watermark, doc_key, doc_version) in journal {
        observation
            .journal
            .entry(topic)
            .or_default()
            .push(JournalEntry {
                watermark,
                doc_key,
                doc_version,
            });
    }
    Ok(observation)
}

/// The profile a stored or generated case runs under.
pub fn profile_of(case: &Case) -> Profile {
    case.profile
}
