//! The runtime as callers see it: authority writes that project afterwards
//! (spec §2.7), the configured sink mode (spec §4.6), reprojection and the
//! hardened repair pass.

use crate::authority::{self, AuthorityError, NewRun, NewWorker, RunTerminal};
use crate::clock::{Clock, SystemClock};
use crate::notifier::{CommitHold, Notifier};
use crate::planted::PlantedDefects;
use crate::profile::{Profile, Switches};
use crate::projector::{ProjectionError, ProjectionOutcome, Projector, ProjectorSettings};
use crate::reprojection::{self, RebuildAllSummary, RebuildResult, RebuildSelection};
use crate::sink::{FanoutSink, KhalaSink, NoopSink, PayloadMode, ProjectionSink};
use crate::summary::{DEFAULT_PROJECTION_VERSION, ProjectionKind};
use serde_json::Value;
use sqlx::PgPool;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The runtime's projection sink configuration (spec §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    Noop,
    ConvexOnly,
    Dual,
    KhalaOnly,
}

impl SinkMode {
    pub const ALL: [SinkMode; 4] = [
        SinkMode::Noop,
        SinkMode::ConvexOnly,
        SinkMode::Dual,
        SinkMode::KhalaOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkMode::Noop => "noop",
            SinkMode::ConvexOnly => "convex_only",
            SinkMode::Dual => "dual",
            SinkMode::KhalaOnly => "khala_only",
        }
    }

    pub fn writes_convex(self) -> bool {
        matches!(self, SinkMode::ConvexOnly | SinkMode::Dual)
    }

    pub fn writes_khala(self) -> bool {
        matches!(self, SinkMode::Dual | SinkMode::KhalaOnly)
    }

    /// Whether switching from `self` to `next` adds a store that may lack
    /// documents (the case B3 is about).
    pub fn adds_target(self, next: SinkMode) -> bool {
        (next.writes_convex() && !self.writes_convex())
            || (next.writes_khala() && !self.writes_khala())
    }
}

impl fmt::Display for SinkMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown sink mode `{given}` (valid: noop, convex_only, dual, khala_only)")]
pub struct UnknownSinkMode {
    pub given: String,
}

impl FromStr for SinkMode {
    type Err = UnknownSinkMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SinkMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| UnknownSinkMode {
                given: text.to_owned(),
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("switch to sink mode `{mode}`: no convex sink is configured")]
    ConvexSinkMissing { mode: SinkMode },
    #[error(transparent)]
    Authority(#[from] AuthorityError),
}

/// How to build a runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub switches: Switches,
    pub projection_version: String,
    pub payload_mode: PayloadMode,
    pub sink_mode: SinkMode,
    pub clock: Arc<dyn Clock>,
    /// Shared by the Khala sink and whoever wakes the sync server: a
    /// server started on it hears the runtime's wake-ups, as the
    /// original's channels heard its PubSub.
    pub notifier: Notifier,
    /// See `CommitHold`; none in production.
    pub commit_hold: Option<Arc<dyn CommitHold>>,
    /// Defects a test plants (`PlantedDefects`); none otherwise.
    pub planted: PlantedDefects,
}

impl RuntimeConfig {
    /// The original's defaults (spec §12) under the given profile.
    pub fn new(profile: Profile) -> Self {
        RuntimeConfig {
            switches: profile.switches(),
            projection_version: DEFAULT_PROJECTION_VERSION.to_owned(),
            payload_mode: PayloadMode::Inline,
            sink_mode: SinkMode::Noop,
            clock: Arc::new(SystemClock),
            notifier: Notifier::new(),
            commit_hold: None,
            planted: PlantedDefects::default(),
        }
    }
}

/// An append and what its projection did. The original swallowed projection
/// errors (`:ok`) but let raised ones escape; both are kept here for the
/// caller to judge (see `ProjectionError::raised`).
#[derive(Debug)]
pub struct AppendOutcome {
    pub seq: i64,
    pub projection: Result<ProjectionOutcome, ProjectionError>,
}

/// What a configuration change (sink mode, projection version) did.
#[derive(Debug, Default)]
pub struct SinkSwitchReport {
    /// Hardened B3/B8: the re-projection of every entity the change ran.
    pub backfill: Option<RebuildAllSummary>,
}

#[derive(Debug)]
pub struct Runtime {
    pool: PgPool,
    settings: ProjectorSettings,
    khala: Arc<KhalaSink>,
    convex: Option<Arc<dyn ProjectionSink>>,
    sink_mode: SinkMode,
    projector: Projector,
}

impl Runtime {
    /// A runtime without a Convex sink: `convex_only` and `dual` are refused
    /// until `with_convex_sink`.
    pub fn new(pool: PgPool, config: RuntimeConfig) -> Self {
        let notifier = config.notifier;
        let khala = Arc::new(KhalaSink::new(
            config.payload_mode,
            &config.switches,
            notifier.clone(),
            config.clock.clone(),
        ));
        let settings = ProjectorSettings {
            switches: config.switches,
            projection_version: config.projection_version,
            clock: config.clock,
            notifier,
            commit_hold: config.commit_hold,
            planted: config.planted,
        };
        let projector = Projector::new(pool.clone(), settings.clone(), Arc::new(NoopSink));
        let mut runtime = Runtime {
            pool,
            settings,
            khala,
            convex: None,
            sink_mode: SinkMode::Noop,
            projector,
        };
        if let Ok(projector) = runtime.projector_for(config.sink_mode) {
            runtime.projector = projector;
            runtime.sink_mode = config.sink_mode;
        }
        runtime
    }

    /// Plugs in the Convex sink (the HTTP sink, or any stand-in).
    pub fn with_convex_sink(
        mut self,
        sink: Arc<dyn ProjectionSink>,
        sink_mode: SinkMode,
    ) -> Result<Self, RuntimeError> {
        self.convex = Some(sink);
        self.projector = self.projector_for(sink_mode)?;
        self.sink_mode = sink_mode;
        Ok(self)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn switches(&self) -> &Switches {
        &self.settings.switches
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.settings.clock
    }

    /// Wake-ups of the Khala sink, for the sync server.
    pub fn notifier(&self) -> &Notifier {
        &self.settings.notifier
    }

    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    pub fn sink_mode(&self) -> SinkMode {
        self.sink_mode
    }

    fn projector_for(&self, mode: SinkMode) -> Result<Projector, RuntimeError> {
        let convex = || {
            self.convex
                .clone()
                .ok_or(RuntimeError::ConvexSinkMissing { mode })
        };
        let khala: Arc<dyn ProjectionSink> = self.khala.clone();
        let sink: Arc<dyn ProjectionSink> = match mode {
            SinkMode::Noop => Arc::new(NoopSink),
            SinkMode::ConvexOnly => convex()?,
            // Convex then Khala, as configured in the original (spec §4.6).
            SinkMode::Dual => Arc::new(FanoutSink::new(
                vec![convex()?, khala],
                !self.settings.switches.b1_fanout_partial_success,
            )),
            SinkMode::KhalaOnly => khala,
        };
        Ok(Projector::new(
            self.pool.clone(),
            self.settings.clone(),
            sink,
        ))
    }

    /// Reconfigures the sink (a redeploy in the original). Legacy (B3) does
    /// nothing else; hardened backfills every entity when a store is added.
    pub async fn set_sink_mode(
        &mut self,
        mode: SinkMode,
    ) -> Result<SinkSwitchReport, RuntimeError> {
        let previous = self.sink_mode;
        self.projector = self.projector_for(mode)?;
        self.sink_mode = mode;
        let mut report = SinkSwitchReport::default();
        if !self.settings.switches.b3_sink_switch_skips_backfill && previous.adds_target(mode) {
            report.backfill = Some(self.rebuild_all(&RebuildSelection::default()).await?);
        }
        Ok(report)
    }

    /// Deploys another `projection_version` (spec §2.1). Legacy (B8) only
    /// changes the version used by later projections; hardened re-projects
    /// every entity at once.
    pub async fn set_projection_version(
        &mut self,
        version: &str,
    ) -> Result<SinkSwitchReport, RuntimeError> {
        self.settings.projection_version = version.to_owned();
        self.projector = self.projector_for(self.sink_mode)?;
        let mut report = SinkSwitchReport::default();
        if !self.settings.switches.b8_version_bump_lazy {
            report.backfill = Some(self.rebuild_all(&RebuildSelection::default()).await?);
        }
        Ok(report)
    }

    pub async fn create_run(&self, run: &NewRun) -> Result<(), RuntimeError> {
        Ok(authority::create_run(&self.pool, self.clock().as_ref(), run).await?)
    }

    pub async fn create_worker(&self, worker: &NewWorker) -> Result<(), RuntimeError> {
        Ok(authority::create_worker(&self.pool, self.clock().as_ref(), worker).await?)
    }

    /// A worker reports new metadata with a heartbeat: the metadata is
    /// stored, then the `worker.heartbeat` event is appended and projected.
    pub async fn report_worker_metadata(
        &self,
        worker_id: &str,
        metadata: &Value,
    ) -> Result<AppendOutcome, RuntimeError> {
        authority::set_worker_metadata(&self.pool, self.clock().as_ref(), worker_id, metadata)
            .await?;
        self.append_event(
            ProjectionKind::CodexWorkerSummary,
            worker_id,
            "worker.heartbeat",
            &Value::Object(Default::default()),
        )
        .await
    }

    /// `RunEvents.append_event` / `Workers.append_event`: the event commits,
    /// then the entity is projected.
    pub async fn append_event(
        &self,
        kind: ProjectionKind,
        entity_id: &str,
        event_type: &str,
        payload: &Value,
    ) -> Result<AppendOutcome, RuntimeError> {
        let seq = authority::append_event(
            &self.pool,
            self.clock().as_ref(),
            kind,
            entity_id,
            event_type,
            payload,
        )
        .await?;
        let projection = self.projector.project(kind, entity_id).await;
        Ok(AppendOutcome { seq, projection })
    }

    /// The run executor's end of a run: `run.finished` and the terminal
    /// fields. Legacy (B4) appends, and so projects, before storing the
    /// terminal status, and nothing projects afterwards.
    pub async fn finish_run(
        &self,
        run_id: &str,
        terminal: &RunTerminal,
    ) -> Result<AppendOutcome, RuntimeError> {
        let payload = serde_json::json!({"status": terminal.status});
        let kind = ProjectionKind::RunSummary;
        if self.settings.switches.b4_terminal_status_after_event {
            let outcome = self
                .append_event(kind, run_id, "run.finished", &payload)
                .await?;
            authority::set_run_status(
                &self.pool,
                self.clock().as_ref(),
                run_id,
                &terminal.status,
                Some(terminal),
            )
            .await?;
            Ok(outcome)
        } else {
            authority::set_run_status(
                &self.pool,
                self.clock().as_ref(),
                run_id,
                &terminal.status,
                Some(terminal),
            )
            .await?;
            self.append_event(kind, run_id, "run.finished", &payload)
                .await
        }
    }

    /// `Workers.ingest_event` with `worker.stopped`: legacy (B4) appends
    /// before the status update; hardened stores the status first, as
    /// `stop_worker` always did.
    pub async fn ingest_worker_stopped(
        &self,
        worker_id: &str,
    ) -> Result<AppendOutcome, RuntimeError> {
        let kind = ProjectionKind::CodexWorkerSummary;
        let payload = serde_json::json!({"status": "stopped"});
        if self.settings.switches.b4_terminal_status_after_event {
            let outcome = self
                .append_event(kind, worker_id, "worker.stopped", &payload)
                .await?;
            authority::set_worker_status(&self.pool, self.clock().as_ref(), worker_id, "stopped")
                .await?;
            Ok(outcome)
        } else {
            self.stop_worker(worker_id).await
        }
    }

    /// `Workers.stop_worker`: status first, then the event.
    pub async fn stop_worker(&self, worker_id: &str) -> Result<AppendOutcome, RuntimeError> {
        authority::set_worker_status(&self.pool, self.clock().as_ref(), worker_id, "stopped")
            .await?;
        let payload = serde_json::json!({"status": "stopped"});
        self.append_event(
            ProjectionKind::CodexWorkerSummary,
            worker_id,
            "worker.stopped",
            &payload,
        )
        .await
    }

    pub async fn project(
        &self,
        kind: ProjectionKind,
        entity_id: &str,
    ) -> Result<ProjectionOutcome, ProjectionError> {
        self.projector.project(kind, entity_id).await
    }

    pub async fn rebuild(&self, kind: ProjectionKind, entity_id: &str) -> RebuildResult {
        reprojection::rebuild(&self.projector, kind, entity_id).await
    }

    pub async fn rebuild_all(
        &self,
        selection: &RebuildSelection,
    ) -> Result<RebuildAllSummary, AuthorityError> {
        reprojection::rebuild_all(&self.projector, selection).await
    }

    /// Hardened catch-up after sink failures: re-project every entity the
    /// projector recorded as failed. Returns the results; under legacy the
    /// list of recorded failures is always empty.
    pub async fn repair_pending(
        &self,
    ) -> Result<Vec<Result<ProjectionOutcome, ProjectionError>>, sqlx::Error> {
        let mut results = Vec::new();
        for (kind, entity_id) in self.projector.pending_repairs().await? {
            // A repair is a rebuild, not a redelivery: a backfill that failed
            // after a sink switch left the checkpoint claiming the seq the
            // new sink never got, which a plain projection skips as
            // idempotent.
            let repaired = match self.projector.prepare_rebuild(kind, &entity_id).await {
                Ok(prepared) => self.projector.commit(prepared).await,
                Err(error) => Err(error),
            };
            results.push(repaired);
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_modes_parse_and_know_their_targets() {
        for mode in SinkMode::ALL {
            assert_eq!(mode.as_str().parse::<SinkMode>(), Ok(mode));
        }
        assert!(
            "both"
                .parse::<SinkMode>()
                .unwrap_err()
                .to_string()
                .contains("convex_only")
        );
        assert!(SinkMode::Noop.adds_target(SinkMode::Dual));
        assert!(SinkMode::ConvexOnly.adds_target(SinkMode::Dual));
        assert!(SinkMode::KhalaOnly.adds_target(SinkMode::Dual));
        assert!(!SinkMode::Dual.adds_target(SinkMode::ConvexOnly));
        assert!(!SinkMode::Dual.adds_target(SinkMode::Noop));
        assert!(!SinkMode::Noop.adds_target(SinkMode::Noop));
    }
}
