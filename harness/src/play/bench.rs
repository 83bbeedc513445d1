//! Benchmarks of the models on real backends. They report rates; they never
//! assert on time (machines are shared and noisy).

use crate::play::backend::postgres::{BackendError, PostgresBackend};
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

/// One measurement of the Convex HTTP sink: `mutations` upserts over
/// `documents` distinct ids, `concurrency` in flight.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SinkRate {
    pub concurrency: u32,
    pub mutations: usize,
    pub seconds: f64,
    pub mutations_per_second: f64,
}

/// Mutations per second through `ConvexHttpSink` against a Convex backend,
/// emptied before each measurement. Documents are spread over a small id set
/// because the Convex front scans tables on lookup (see ENVIRONMENT.md).
pub async fn convex_sink(
    convex: &crate::play::backend::convex::ConvexBackend,
    mutations: usize,
    documents: usize,
    concurrency: &[u32],
) -> Result<Vec<SinkRate>, Box<dyn std::error::Error + Send + Sync>> {
    use khala_runtime::sink::{ConvexHttpSink, ConvexSinkConfig};
    use std::sync::Arc;
    let sink = Arc::new(ConvexHttpSink::new(&ConvexSinkConfig {
        base_url: convex.base_url(),
        admin_key: convex.admin_key().unwrap_or_default().to_owned(),
        ..ConvexSinkConfig::default()
    }));
    let mut rates = Vec::new();
    for &lanes in concurrency {
        let lanes = lanes.max(1) as usize;
        convex.reset().await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for lane in 0..lanes {
            let sink = sink.clone();
            let count = mutations / lanes + usize::from(lane < mutations % lanes);
            tasks.push(tokio::spawn(async move {
                for index in 0..count {
                    let run_id = format!("bench_{}", (lane + index * lanes) % documents.max(1));
                    let summary = bench_run_summary(&run_id, index as i64 + 1);
                    sink.send(
                        ProjectionKind::RunSummary,
                        &ProjectionKind::RunSummary.document_id(&run_id),
                        &summary,
                    )
                    .await?;
                }
                Ok::<(), khala_runtime::sink::SinkError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let seconds = started.elapsed().max(Duration::from_nanos(1)).as_secs_f64();
        rates.push(SinkRate {
            concurrency: lanes as u32,
            mutations,
            seconds,
            mutations_per_second: mutations as f64 / seconds,
        });
    }
    Ok(rates)
}

fn bench_run_summary(run_id: &str, seq: i64) -> serde_json::Value {
    json!({
        "document_id": ProjectionKind::RunSummary.document_id(run_id),
        "kind": "run_summary",
        "run_id": run_id,
        "thread_id": "bench",
        "status": "running",
        "owner_user_id": 1,
        "owner_guest_scope": null,
        "latest_seq": seq,
        "event_count": seq,
        "latest_event_type": "run.delta",
        "latest_event_at": "2026-02-19T20:00:00.000000Z",
        "terminal_reason_class": null,
        "terminal_reason": null,
        "terminal_at": null,
        "updated_at": "2026-02-19T20:00:00.000000Z",
        "runtime_source": {"entity": "run", "run_id": run_id, "seq": seq},
        "projection_version": "convex_summary_v1",
        "projected_at": "2026-02-19T20:00:01.000000Z",
    })
}

/// Engine throughput on real backends: hardened cases (nothing should fail,
/// so every case is played in full) and the shrinking of legacy failures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EngineRates {
    /// Every generated case has exactly this many steps.
    pub steps_per_case: u32,
    /// Generated hardened cases played.
    pub cases: u32,
    /// Steps played in the hardened run, shrinking included.
    pub steps: u64,
    /// Generated cases per second of generation (time spent shrinking a
    /// hardened failure, if any, left out: it is reported by the legacy run).
    pub cases_per_second: f64,
    /// Steps per second over the whole hardened run.
    pub steps_per_second: f64,
    /// Backend reset time per played case (shrinking plays included).
    pub reset_ms_mean: f64,
    /// Failures the hardened run found; none is expected.
    pub hardened_findings: usize,
    pub legacy_findings: usize,
    pub shrink_seconds_median: Option<f64>,
    pub shrink_seconds: Vec<f64>,
}

/// Plays `cases` hardened cases of `scenario` of exactly `steps_per_case`
/// steps, then `legacy_cases` under legacy to time the shrinking of what
/// they find (0: none).
pub fn engine(
    tokio: &tokio::runtime::Runtime,
    backends: &crate::play::driver::Backends,
    scenario: &crate::plan::scenario::Scenario,
    cases: u32,
    legacy_cases: u32,
    steps_per_case: u32,
) -> EngineRates {
    use crate::play::engine::{EngineSettings, run_scenario};
    let scenario = crate::plan::scenario::Scenario {
        min_steps: steps_per_case,
        max_steps: steps_per_case,
        ..scenario.clone()
    };
    let settings = |profile, cases| EngineSettings::new(profile, cases, 1);
    let hardened = run_scenario(
        tokio,
        backends,
        &scenario,
        &settings(Profile::Hardened, cases),
    );
    let legacy = run_scenario(
        tokio,
        backends,
        &scenario,
        &settings(Profile::Legacy, legacy_cases),
    );
    let mut shrink_seconds: Vec<f64> = legacy
        .findings
        .iter()
        .map(|finding| finding.shrink_time.as_secs_f64())
        .collect();
    shrink_seconds.sort_by(f64::total_cmp);
    let seconds = hardened.timing.total_seconds.max(f64::EPSILON);
    let generating =
        (hardened.timing.total_seconds - hardened.timing.shrink_seconds).max(f64::EPSILON);
    let plays = hardened.cases + hardened.shrink_steps;
    EngineRates {
        steps_per_case,
        cases: hardened.cases,
        steps: hardened.steps,
        cases_per_second: f64::from(hardened.cases) / generating,
        steps_per_second: hardened.steps as f64 / seconds,
        reset_ms_mean: 1000.0 * hardened.timing.reset_seconds / f64::from(plays.max(1)),
        hardened_findings: hardened.findings.len(),
        legacy_findings: legacy.findings.len(),
        shrink_seconds_median: shrink_seconds.get(shrink_seconds.len() / 2).copied(),
        shrink_seconds,
    }
}

use crate::check::defects::Cause;

/// When a default run first finds each defect (`bench detect`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DetectRates {
    pub profile: Profile,
    pub seed: u64,
    /// Cases and seconds of the whole run, scenarios in order.
    pub cases: u64,
    pub seconds: f64,
    pub findings: usize,
    pub defects: Vec<DefectFound>,
    /// Scenarios whose run a backend failure cut short: what they found
    /// until then counts, what they missed is unknown.
    pub unknown: Vec<String>,
}

/// One defect and when the run first found it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DefectFound {
    /// The scenario and case index that first showed it.
    pub scenario: String,
    pub case_index: u32,
    /// Cases played and seconds since the run's start until that case,
    /// earlier scenarios included.
    pub cases_until_found: u64,
    pub seconds_until_found: f64,
    /// Every `invariant reason_class [scenario]` its findings show.
    pub breaks: Vec<String>,
    /// The defect switches (spec §15) its first finding comes from;
    /// `None` when that finding did not reproduce or could not be replayed.
    pub cause: Option<Cause>,
}

/// Plays every scenario of `scenarios` in order under `profile` (nothing
/// known, nothing stored), groups the findings (`check::defects`), learns
/// which defect switches each group comes from by replaying its first
/// finding with some switched off, and says when each defect was first
/// found. A defect is the groups with the same cause, or one group whose
/// cause is not known.
pub fn detect(
    tokio: &tokio::runtime::Runtime,
    backends: &crate::play::driver::Backends,
    scenarios: &[crate::plan::scenario::Scenario],
    profile: Profile,
    seed: u64,
) -> DetectRates {
    use crate::check::defects::{self, DefectInput};
    use crate::play::engine::{EngineSettings, run_scenario};
    let mut found = Vec::new();
    let (mut cases, mut seconds) = (0u64, 0.0f64);
    let mut unknown = Vec::new();
    for scenario in scenarios {
        let settings = EngineSettings::new(profile, scenario.cases, scenario.seed.unwrap_or(seed));
        let run = run_scenario(tokio, backends, scenario, &settings);
        if let Some(reason) = &run.unknown {
            unknown.push(format!("{}: {reason}", scenario.name));
        }
        for finding in run.findings {
            let case_index = finding
                .case
                .origin
                .as_ref()
                .and_then(|origin| origin.case_index)
                .unwrap_or(0);
            let first_step = finding.violations.iter().map(|v| v.step_index).min();
            let when = (
                cases + u64::from(case_index) + 1,
                seconds + finding.seen_after.as_secs_f64(),
            );
            found.push((scenario.name.clone(), case_index, when, first_step, finding));
        }
        cases += u64::from(run.cases);
        seconds += run.timing.total_seconds;
    }
    let inputs: Vec<DefectInput> = found
        .iter()
        .map(|(_, _, _, first_step, finding)| DefectInput {
            case: &finding.case,
            first_step: *first_step,
        })
        .collect();
    let groups = defects::group(&inputs);
    // Groups are numbered by first appearance: a new one is the next.
    let mut defect_of_group: Vec<usize> = Vec::new();
    let mut defects: Vec<DefectFound> = Vec::new();
    for ((scenario, case_index, (until_cases, until_seconds), _, finding), group) in
        found.iter().zip(&groups)
    {
        if *group == defect_of_group.len() {
            let cause = cause_of(tokio, backends, finding).unwrap_or_else(|error| {
                unknown.push(format!("{scenario}: attributing a finding: {error}"));
                None
            });
            let same = cause.as_ref().and_then(|cause| {
                defects
                    .iter()
                    .position(|defect| defect.cause.as_ref() == Some(cause))
            });
            defect_of_group.push(same.unwrap_or(defects.len()));
            if same.is_none() {
                defects.push(DefectFound {
                    scenario: scenario.clone(),
                    case_index: *case_index,
                    cases_until_found: *until_cases,
                    seconds_until_found: *until_seconds,
                    breaks: Vec::new(),
                    cause,
                });
            }
        }
        let defect = &mut defects[defect_of_group[*group]];
        for violation in &finding.violations {
            let broken = format!(
                "{} {} [{scenario}]",
                violation.invariant, violation.reason_class
            );
            if !defect.breaks.contains(&broken) {
                defect.breaks.push(broken);
            }
        }
    }
    DetectRates {
        profile,
        seed,
        cases,
        seconds,
        findings: found.len(),
        defects,
        unknown,
    }
}

/// The defect switches `finding` comes from (`check::defects::cause`), by
/// replays of its minimal case under its profile with some switched off.
/// None for a finding that did not reproduce.
fn cause_of(
    tokio: &tokio::runtime::Runtime,
    backends: &crate::play::driver::Backends,
    finding: &crate::play::engine::Finding,
) -> Result<Option<Cause>, crate::play::error::DriverError> {
    use crate::model::switches::DefectSwitches;
    use crate::play::driver::{PlantedDefects, play_with};
    if !finding.reproduced {
        return Ok(None);
    }
    let switches = DefectSwitches::of(finding.case.profile);
    let signature = (finding.invariant, finding.reason_class);
    crate::check::defects::cause(&DefectSwitches::names(), |off| {
        let planted = PlantedDefects {
            switches: Some(switches.turned_off(off).expect("names of DefectSwitches")),
            ..PlantedDefects::default()
        };
        let result = tokio.block_on(play_with(backends, &finding.case, false, &planted))?;
        Ok(result
            .violations
            .iter()
            .any(|violation| (violation.invariant, violation.reason_class) == signature))
    })
    .map(Some)
}

/// One measurement of `khala-parity audit`: a cycle comparing `documents`
/// checkpoints, with the seconds spent reading each store.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditRate {
    /// `all` or `sample N`.
    pub mode: String,
    pub documents: u64,
    pub postgres_seconds: f64,
    pub convex_seconds: f64,
    pub postgres_documents_per_second: f64,
    pub convex_documents_per_second: f64,
    pub documents_per_second: f64,
}

/// Audit rates on the stores one played hardened case leaves: `entities`
/// runs and as many workers (at most 256 each: a case's indices are
/// bytes), each with `events` events, projected in dual mode; then one
/// `--all` cycle and one cycle of the default sample, `repeats` times each.
pub async fn audit(
    backends: &crate::play::driver::Backends,
    entities: u16,
    events: u32,
    repeats: u32,
) -> Result<Vec<AuditRate>, String> {
    use crate::model::audit::{AuditTables, AuditTarget, Sampling};
    use crate::play::audit::{self, AuditConnect};
    let entities = entities.clamp(1, 256);
    let mut steps = Vec::new();
    for _ in 0..events.max(1) {
        for index in 0..entities {
            steps.push(
                json!({"action": "append_run_event", "run": index, "event_type": "run.started"}),
            );
            steps.push(json!({"action": "append_worker_event", "worker": index, "event_type": "worker.heartbeat"}));
        }
    }
    let case: crate::model::case::Case = serde_json::from_value(json!({
        "schema": "khala-parity.case.v1",
        "profile": "hardened",
        "start": {"sink_mode": "dual"},
        "ids": "plain",
        "steps": steps,
    }))
    .map_err(|error| format!("build the populating case: {error}"))?;
    crate::play::driver::play(backends, &case, true)
        .await
        .map_err(|error| format!("populate the stores: {error}"))?;
    let (postgres_url, convex_url, convex_admin_key) = backends
        .last_case_stores()
        .ok_or("the populating case left no database")?;
    let connect = AuditConnect {
        postgres_url,
        convex_url,
        convex_admin_key,
        max_rps: None,
    };
    let mut rates = Vec::new();
    for (mode, sampling) in [
        ("all".to_owned(), Sampling::All { max_entities: None }),
        (
            format!("sample {}", khala_runtime::auditor::DEFAULT_SAMPLE_SIZE),
            Sampling::Sweep {
                size: khala_runtime::auditor::DEFAULT_SAMPLE_SIZE,
            },
        ),
    ] {
        let target = AuditTarget {
            tables: AuditTables::default(),
            paths: khala_runtime::sink::ConvexQueryPaths::default(),
            sampling,
        };
        let mut session = audit::open(&connect, target)
            .await
            .map_err(|error| error.to_string())?;
        let (mut documents, mut postgres, mut convex) = (0, 0.0, 0.0);
        for _ in 0..repeats.max(1) {
            let read = session
                .read_cycle()
                .await
                .map_err(|error| error.to_string())?;
            documents += read.checkpoints.len() as u64;
            postgres += read.postgres_seconds;
            convex += read.convex_seconds;
        }
        session.close().await;
        let per_second = |seconds: f64| documents as f64 / seconds.max(1e-9);
        rates.push(AuditRate {
            mode,
            documents,
            postgres_seconds: postgres,
            convex_seconds: convex,
            postgres_documents_per_second: per_second(postgres),
            convex_documents_per_second: per_second(convex),
            documents_per_second: per_second(postgres + convex),
        });
    }
    Ok(rates)
}
