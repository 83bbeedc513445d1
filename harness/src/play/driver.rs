//! The driver: plays a case step by step through the models against the
//! real backends, observes what the stores hold after each step, and checks
//! the invariants against the oracle. Each case starts from a PostgreSQL
//! database in the template's state (a reused one, reset) and an emptied
//! Convex backend.
//!
//! An external Convex deployment cannot be emptied: there each play writes
//! under a namespace of its own instead (`Namespaces`), a prefix of every
//! entity id, and so of every Khala `doc_key` and Convex `document_id`; the
//! oracle predicts the same ids and Convex is read only under the prefix.
//! Such a slot has no fault proxy either (the sink writes straight to the
//! deployment, which may be `https`): faults on Convex need a backend the
//! harness runs, and playing one there is refused.

use crate::check::cycle::check_cycle;
use crate::check::decision::{ConvexFailing, Faults, Projected, check_decisions};
use crate::check::invariants;
use crate::check::rebuild::{Rebuilt, check_rebuilds};
use crate::check::windows::ParityWindows;
use crate::model::case::{
    Case, ConvexFault, EntityRef, KhalaFault, Outage, RollbackSwitch, Step, StopPath,
};
use crate::model::observation::{CheckpointView, JournalEntry, Observation};
use crate::model::reason::ReasonClass;
use crate::model::switches::DefectSwitches;
use crate::model::trace::ClientsObservation;
use crate::model::trace::{CaseResult, StepTrace};
use crate::model::violation::Violation;
use crate::oracle::{self, Oracle, projection_version_name};
use crate::play::backend::convex::{ConvexBackend, ConvexBackendError};
use crate::play::backend::postgres::{BackendError, CaseDatabase, PostgresBackend, ProviderKind};
use crate::play::delivery::{Delivery, ServerHold};
use crate::play::error::{Component, DriverError, StepError, SystemFault};
use crate::play::proxied_sink::ProxiedConvexSink;
use crate::play::proxy::{ProxyLink, ProxyMode, TcpProxy, upstream_addr};
use chrono::{DateTime, Utc};
use khala_runtime::auditor::AuditError;
use khala_runtime::auditor::{AuditorConfig, ParityAuditor, RunOptions};
use khala_runtime::authority::AuthorityError;
use khala_runtime::authority::{NewRun, NewWorker, RunTerminal};
use khala_runtime::clock::{Clock, ManualClock};
use khala_runtime::notifier::Notifier;
use khala_runtime::runtime::RuntimeError;
use khala_runtime::sink::convex_value::as_sent;
use khala_runtime::sink::{
    ConvexHttp, ConvexHttpSink, ConvexReadError, ConvexReader, ConvexSinkConfig, Endpoint,
    SinkError,
};
use khala_runtime::{Profile, ProjectionKind, Runtime, RuntimeConfig};
use serde_json::Value;
use serde_json::json;
use sqlx::types::Json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The query that reads both Convex tables for an observation.
const OBSERVE_CONVEX_FUNCTION: &str = "runtime:listAllSummaries";
/// Reading Convex back is not under test: generous, unlike the sink's timeout.
const OBSERVE_TIMEOUT_MS: i64 = 5_000;
/// How long a healed backend may take to answer what it was handed during
/// a fault (a resumed front runs its queue in milliseconds; a restarted one
/// first replays its journal).
const UPSTREAM_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The backends one harness process plays cases against: one PostgreSQL
/// server (each case gets a database of its own) and one or more slots,
/// each a Convex backend with its own fault proxy, that play cases side by
/// side.
pub struct Backends {
    postgres: PostgresBackend,
    slots: Vec<Slot>,
    planted: PlantedDefects,
    /// Against an external Convex deployment, which keeps what every
    /// earlier play wrote: where the next play writes. `None` otherwise.
    namespaces: Option<Namespaces>,
}

/// The namespaces of one `Backends` against an external deployment:
/// `kp<run>-<play>.`, where the run part is unique to this harness process
/// and `Backends` (the wall clock, the process id and a counter) and the
/// play part counts every play, shrinking replays included. Two runs, or
/// two plays of the same case, never share one, so nothing a play reads
/// was written by another. It ends in `.`, so one namespace is never the
/// prefix of another, and it is plain ASCII, which both stores order
/// alike. Only ids carry it: what a case is and does never depends on it.
#[derive(Debug)]
pub struct Namespaces {
    run: String,
    plays: AtomicU64,
}

impl Namespaces {
    fn new() -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        let run = format!(
            "kp{millis:x}-{:x}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        Namespaces {
            run,
            plays: AtomicU64::new(0),
        }
    }

    /// A namespace no play of this run has had.
    fn next(&self) -> String {
        format!(
            "{}-{}.",
            self.run,
            self.plays.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Defects planted in (or taken out of) the models every case plays: by
/// tests, to show what the engine makes of them, and by `bench detect`, to
/// learn which defect switches a finding needs. None in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedDefects {
    /// Today's client lanes fail to apply any update batch carrying this
    /// watermark or a higher one (`ClientSwitches::planted_apply_fails_from`).
    pub lane_apply_fails_from: Option<i64>,
    /// The defect switches in place of the case's profile's.
    pub switches: Option<DefectSwitches>,
    /// Runtime and sync-server defects (`khala_runtime::PlantedDefects`):
    /// the projector's sequence fields, the retention job's cutoff.
    pub runtime: khala_runtime::PlantedDefects,
    /// The web client reads its flag trimmed and case-insensitively
    /// (`ClientSwitches::planted_web_flag_lenient`).
    pub web_flag_lenient: bool,
    /// Today's lanes take pointer updates as needing no hydration
    /// (`ClientSwitches::planted_pointer_batch_merged`).
    pub lane_pointer_batch_merged: bool,
    /// Today's lanes merge the lowest version of each document in a batch
    /// (`ClientSwitches::planted_batch_merge_keeps_oldest`).
    pub lane_batch_merge_keeps_oldest: bool,
    /// Today's lanes leave updates at the shown row's version out of the
    /// merge (`ClientSwitches::planted_merge_skips_equal_version`).
    pub lane_merge_skips_equal_version: bool,
    /// The Convex sink takes a failed function for success
    /// (`ConvexHttpSink::with_planted_function_error_ok`).
    pub sink_function_error_ok: bool,
}

/// A Convex backend behind its fault proxy: one case at a time plays on it.
struct Slot {
    convex: ConvexBackend,
    /// `None` for an external deployment: the sink writes to it directly,
    /// and no fault is injected there.
    proxy: Option<TcpProxy>,
    /// Reads Convex after every step, straight to the backend (not through
    /// the proxy); one client for the whole run, so its connection is reused.
    observer: ConvexHttp,
    /// The Convex outage in force, if any: ended by `Heal`, `Quiesce`, and
    /// whenever a case ends, so that no case inherits a frozen backend.
    convex_outage: std::sync::Mutex<Option<Outage>>,
}

impl Slot {
    async fn new(convex: ConvexBackend) -> Result<Self, DriverError> {
        let proxy = if convex.provider() == ProviderKind::External {
            None
        } else {
            let upstream: SocketAddr = upstream_addr(&convex.base_url()).ok_or_else(|| {
                DriverError::Proxy(std::io::Error::other(format!(
                    "cannot parse convex url {}",
                    convex.base_url()
                )))
            })?;
            Some(
                TcpProxy::start(upstream)
                    .await
                    .map_err(DriverError::Proxy)?,
            )
        };
        let observer = ConvexHttp::new(
            &convex.base_url(),
            convex.admin_key().unwrap_or_default(),
            OBSERVE_TIMEOUT_MS,
        );
        Ok(Slot {
            convex,
            proxy,
            observer,
            convex_outage: std::sync::Mutex::new(None),
        })
    }

    /// What a Convex call through this slot meets now.
    fn convex_failing(&self) -> ConvexFailing {
        if self.outage().is_some() {
            return ConvexFailing::Transport;
        }
        match self.proxy.as_ref().map(TcpProxy::mode) {
            None | Some(ProxyMode::Pass) => ConvexFailing::No,
            Some(ProxyMode::Reset | ProxyMode::Blackhole | ProxyMode::Delay) => {
                ConvexFailing::Transport
            }
            Some(ProxyMode::FunctionError200 | ProxyMode::FunctionError560) => {
                ConvexFailing::Function
            }
        }
    }

    fn outage(&self) -> Option<Outage> {
        *self
            .convex_outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_outage(&self, outage: Option<Outage>) {
        *self
            .convex_outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = outage;
    }

    /// The fault proxy, to inject `action` with; refused for an external
    /// deployment, which has none.
    fn fault_proxy(&self, action: &'static str, step: usize) -> Result<&TcpProxy, DriverError> {
        self.proxy.as_ref().ok_or_else(|| {
            DriverError::convex(
                step,
                ConvexBackendError::FaultUnsupported {
                    action,
                    provider: self.convex.provider(),
                },
            )
        })
    }

    /// Takes the Convex backend down the way `outage` says.
    async fn begin_outage(&self, outage: Outage, step: usize) -> Result<(), DriverError> {
        if self.outage().is_some() {
            return Ok(());
        }
        let proxy = self.fault_proxy("take down", step)?;
        let done = match outage {
            Outage::Pause => self.convex.pause().await,
            Outage::Stop => self.convex.stop().await,
        };
        done.map_err(|error| DriverError::convex(step, error))?;
        // A stopped backend refuses at once; only a paused one strands.
        proxy.set_upstream_frozen(outage == Outage::Pause);
        self.set_outage(Some(outage));
        Ok(())
    }

    /// Ends every Convex fault (proxy and outage), then waits until the
    /// backend has answered every request it was handed through the proxy:
    /// a paused backend runs what it queued when it resumes, so only after
    /// this has every write of the case landed, and none can land later
    /// (in the next case, after its reset, or after the observation that
    /// follows a heal). A backend that does not answer in time is a
    /// harness fault, never ignored.
    async fn heal(&self, step: usize) -> Result<(), DriverError> {
        let Some(proxy) = &self.proxy else {
            // Nothing was broken: no fault is played on an external deployment.
            return Ok(());
        };
        proxy.set_mode(ProxyMode::Pass);
        self.end_outage(step).await?;
        proxy
            .settle(UPSTREAM_SETTLE_TIMEOUT)
            .await
            .map_err(|error| DriverError::convex(step, error))
    }

    /// Brings the Convex backend back; nothing if it is up.
    async fn end_outage(&self, step: usize) -> Result<(), DriverError> {
        let Some(outage) = self.outage() else {
            return Ok(());
        };
        let done = match outage {
            Outage::Pause => self.convex.unpause().await,
            Outage::Stop => self.convex.start_again().await,
        };
        done.map_err(|error| DriverError::convex(step, error))?;
        self.fault_proxy("bring back", step)?
            .set_upstream_frozen(false);
        self.set_outage(None);
        Ok(())
    }
}

impl Backends {
    /// One slot on `convex`.
    pub async fn new(
        postgres: PostgresBackend,
        convex: ConvexBackend,
    ) -> Result<Self, DriverError> {
        let namespaces = (convex.provider() == ProviderKind::External).then(Namespaces::new);
        Ok(Backends {
            postgres,
            slots: vec![Slot::new(convex).await?],
            namespaces,
            planted: PlantedDefects::default(),
        })
    }

    /// Plants `planted` in every case played from now on (tests only).
    pub fn plant(&mut self, planted: PlantedDefects) {
        self.planted = planted;
    }

    /// Another slot: one more case plays at a time.
    pub async fn add_slot(&mut self, convex: ConvexBackend) -> Result<(), DriverError> {
        self.slots.push(Slot::new(convex).await?);
        Ok(())
    }

    /// How many cases can play at once.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub async fn shutdown(self) -> Result<(), String> {
        let mut outcome = Ok(());
        for slot in self.slots {
            drop(slot.proxy);
            let convex = slot
                .convex
                .shutdown()
                .await
                .map_err(|error| error.to_string());
            outcome = outcome.and(convex);
        }
        let postgres = self
            .postgres
            .shutdown()
            .await
            .map_err(|error| error.to_string());
        outcome.and(postgres)
    }
}

/// The fixed start of the models' clock in every case, so reports repeat.
pub fn case_start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-02-19T20:00:00Z")
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_default()
}

struct CaseState {
    /// The prefix of every entity id this play writes (see `Namespaces`).
    namespace: String,
    runtime: Runtime,
    oracle: Oracle,
    reader: ConvexReader,
    created: std::collections::BTreeSet<EntityRef>,
    /// The Khala faults in force until the next heal.
    khala_broken: BTreeSet<KhalaFault>,
    version_generation: u32,
    auditor: ParityAuditor,
    /// Whether the auditor reads Convex (B2 fixed).
    auditor_reads_convex: bool,
    /// The summary of the auditor cycle the current step ran, if any.
    audited: Option<khala_runtime::auditor::CycleReport>,
    /// Whether that cycle ran enabled (A3 checks a disabled one).
    audited_enabled: bool,
    delivery: Delivery,
    /// X8's divergence windows so far.
    windows: ParityWindows,
    /// What the current step's projections answered.
    projections: Projected,
    /// What the current step's reprojections answered (P5).
    rebuilt: Rebuilt,
    /// Switch B7, which C1's decision table reads.
    checkpoint_ahead_skips: bool,
}

/// Plays `case` under its profile on the first slot. Stops at the first
/// step with a violation when `stop_at_first` (shrinking only needs to know
/// it fails).
pub async fn play(
    backends: &Backends,
    case: &Case,
    stop_at_first: bool,
) -> Result<CaseResult, DriverError> {
    play_on(backends, 0, case, stop_at_first, &backends.planted).await
}

/// `play` with `planted` in place of the defects planted in `backends`.
pub async fn play_with(
    backends: &Backends,
    case: &Case,
    stop_at_first: bool,
    planted: &PlantedDefects,
) -> Result<CaseResult, DriverError> {
    play_on(backends, 0, case, stop_at_first, planted).await
}

/// Plays `cases` at once, the first on slot 0, the next on slot 1 and so
/// on (no more cases than slots); the results in the cases' order.
pub async fn play_side_by_side<'a>(
    backends: &Backends,
    cases: impl IntoIterator<Item = &'a Case>,
    stop_at_first: bool,
) -> Vec<Result<CaseResult, DriverError>> {
    futures::future::join_all(
        cases
            .into_iter()
            .enumerate()
            .map(|(slot, case)| play_on(backends, slot, case, stop_at_first, &backends.planted)),
    )
    .await
}

/// `play` on slot `slot` (taken modulo the slots there are). Cases on
/// different slots share nothing but the PostgreSQL server, so they may
/// play at the same time.
async fn play_on(
    backends: &Backends,
    slot: usize,
    case: &Case,
    stop_at_first: bool,
    planted: &PlantedDefects,
) -> Result<CaseResult, DriverError> {
    let postgres = &backends.postgres;
    let slot = &backends.slots[slot % backends.slots.len()];
    let namespace = backends.next_namespace();
    let reset_started = Instant::now();
    let db = reset(postgres, slot).await?;
    let mut result = CaseResult {
        reset_time: reset_started.elapsed(),
        ..CaseResult::default()
    };
    let played = play_in(
        slot,
        case,
        &db,
        &namespace,
        stop_at_first,
        planted,
        &mut result,
    )
    .await;
    // A case that stopped at its first violation may end with a fault in
    // force and writes queued in a paused backend: they land now, not
    // after the next case's reset.
    let played = match (played, slot.heal(result.steps_run).await) {
        (Ok(()), ended) => ended,
        (Err(error), _) => Err(error),
    };
    // A case that stopped at its first violation can leave Khala broken; the
    // database goes back for the next case only with the fault removed.
    let reusable = match played {
        Ok(()) => clear_khala_fault(&db.pool)
            .await
            .map_err(|error| DriverError::postgres(result.steps_run, error)),
        Err(error) => Err(error),
    };
    match reusable {
        Ok(()) => {
            postgres.recycle(db);
            Ok(result)
        }
        Err(error) => {
            // The backend failed: this database is not trusted again.
            db.pool.close().await;
            let _already_failing = db.drop_database().await;
            Err(error)
        }
    }
}

/// Puts a slot and a case database in the state every case starts from:
/// the slot healed (no fault, nothing in flight through its proxy), Convex
/// emptied (an external deployment is left as it is: the case's namespace
/// is empty there), the database reset to the template.
async fn reset(postgres: &PostgresBackend, slot: &Slot) -> Result<CaseDatabase, DriverError> {
    // Every case heals its slot as it ends; this covers one that ended in
    // a backend failure before it could.
    slot.heal(0).await?;
    let convex_reset = async {
        match slot.convex.provider() {
            ProviderKind::External => Ok(()),
            ProviderKind::Containers | ProviderKind::Local => slot.convex.reset().await,
        }
    };
    // The two stores are independent: reset both at once.
    let (convex_reset, db) = tokio::join!(convex_reset, postgres.case_database());
    let db = db.map_err(|error: BackendError| DriverError::postgres(0, error))?;
    if let Err(error) = convex_reset {
        postgres.recycle(db);
        return Err(DriverError::convex(0, error));
    }
    Ok(db)
}

/// What a reset left of the cases played before it: all empty, or cases
/// are not independent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Residue {
    /// Tables and sequences of the case database not in the template's state.
    pub tables_off_template: Vec<String>,
    /// Documents Convex holds.
    pub convex_documents: Vec<String>,
    /// Connections the slot's fault proxy still holds.
    pub proxy_connections: u64,
    /// Requests handed to Convex through the proxy and not yet answered.
    pub proxy_in_flight: u64,
    /// Sync servers (with their client lanes) still up in this process.
    pub sync_servers: usize,
}

impl Backends {
    /// Where the last case played on slot 0 left its stores: the case
    /// database's URL, the Convex front's base URL and admin key. Only
    /// until the next case resets them.
    pub fn last_case_stores(&self) -> Option<(String, String, String)> {
        let slot = self.slots.first()?;
        Some((
            self.postgres.last_case_url()?,
            slot.convex.base_url(),
            slot.convex.admin_key().unwrap_or_default().to_owned(),
        ))
    }

    /// Whether cases play against an external Convex deployment, which
    /// cannot be reset or faulted (each play then has a namespace).
    pub fn convex_is_external(&self) -> bool {
        self.namespaces.is_some()
    }

    /// The namespace of the next play: empty unless Convex is external.
    fn next_namespace(&self) -> String {
        self.namespaces
            .as_ref()
            .map_or_else(String::new, Namespaces::next)
    }

    /// Resets slot `slot` and a case database exactly as a case starts, and
    /// reports what is left in them (the database is then kept for the
    /// next case); against an external deployment, what the next play's
    /// namespace holds.
    pub async fn residue(&self, slot: usize) -> Result<Residue, DriverError> {
        let namespace = self.next_namespace();
        let slot = &self.slots[slot % self.slots.len()];
        let db = reset(&self.postgres, slot).await?;
        let tables = self.postgres.off_template(&db).await;
        let convex = observe(slot, &db, 0, None, &namespace).await;
        self.postgres.recycle(db);
        Ok(Residue {
            tables_off_template: tables.map_err(|error| DriverError::postgres(0, error))?,
            convex_documents: convex?.convex.into_keys().collect(),
            proxy_connections: slot.proxy.as_ref().map_or(0, TcpProxy::open_connections),
            proxy_in_flight: slot.proxy.as_ref().map_or(0, TcpProxy::in_flight),
            sync_servers: crate::play::delivery::live_sync_servers(),
        })
    }

    /// Stops slot `slot`'s Convex backend and starts it again (it replays
    /// its journal of committed mutations): after a reset it must come back
    /// empty.
    pub async fn restart_convex(&self, slot: usize) -> Result<(), DriverError> {
        let slot = &self.slots[slot % self.slots.len()];
        slot.begin_outage(Outage::Stop, 0).await?;
        slot.heal(0).await
    }
}

async fn play_in(
    slot: &Slot,
    case: &Case,
    db: &CaseDatabase,
    namespace: &str,
    stop_at_first: bool,
    planted: &PlantedDefects,
    result: &mut CaseResult,
) -> Result<(), DriverError> {
    let mut state = start_case(slot, case, db, namespace, planted)?;
    let played = play_steps(slot, case, db, stop_at_first, result, &mut state).await;
    // The sync server and client lanes stop with the case, however it
    // ended: none of its tasks may outlive it into the next case.
    state.delivery.finish().await;
    played
}

async fn play_steps(
    slot: &Slot,
    case: &Case,
    db: &CaseDatabase,
    stop_at_first: bool,
    result: &mut CaseResult,
    state: &mut CaseState,
) -> Result<(), DriverError> {
    let namespace = state.namespace.clone();
    let mut previous = observe(slot, db, 0, None, &namespace).await?;
    let mut previous_clients: Option<ClientsObservation> = None;
    // Without a proxy nothing counts the sink's requests: Convex is read
    // after every step.
    let convex_link = slot.proxy.as_ref().map(TcpProxy::link);
    let arrived = || convex_link.as_ref().map(ProxyLink::arrived);
    let mut convex_requests = arrived();
    // The steps, then an implicit final quiescence.
    let final_step = [Step::Quiesce];
    for (index, step) in case.steps.iter().chain(final_step.iter()).enumerate() {
        state.audited = None;
        state.projections = Projected::default();
        // What the step's writes meet: faults change only by steps that
        // write nothing.
        let faults = Faults {
            sink_mode: state.oracle.sink_mode(),
            convex: slot.convex_failing(),
            read_models_broken: state.khala_broken.contains(&KhalaFault::ReadModel),
            allocator_broken: state.khala_broken.contains(&KhalaFault::Allocator),
        };
        let applied = apply(slot, db, state, step, index).await;
        if let Some(fault) = system_fault(applied)? {
            record_fault(slot, db, &namespace, step, &previous, fault, result).await?;
            break;
        }
        state.oracle.apply(step);
        // Only the runtime's sink writes Convex, through the proxy, which
        // counts every request that reached it whole. A step that sent none
        // left Convex as it was, and so does a step with the backend down;
        // only healing lets queued writes land. Convex is read otherwise.
        let requests = arrived();
        let convex_unchanged = slot.outage().is_some()
            || (requests.is_some()
                && requests == convex_requests
                && !matches!(step, Step::Heal | Step::Quiesce));
        convex_requests = requests;
        let unchanged_convex = convex_unchanged.then_some(&previous.convex);
        let mut current = observe(slot, db, index, unchanged_convex, &namespace).await?;
        read_convex_as_predicted(&mut current, &state.oracle);
        let clients = match state
            .delivery
            .settle(step, index, &state.oracle, &current)
            .await
        {
            Ok(clients) => clients,
            Err(error) => {
                let fault = system_fault(Err(error))?;
                if let Some(fault) = fault {
                    record_fault(slot, db, &namespace, step, &previous, fault, result).await?;
                }
                break;
            }
        };
        let reprojected = matches!(
            step,
            Step::Reproject { .. }
                | Step::RemoveEvents { .. }
                | Step::SwitchSinkMode { .. }
                | Step::BumpProjectionVersion
                | Step::Rollback {
                    switch: RollbackSwitch::RuntimeConvexOnly
                }
        );
        let mut found =
            invariants::check_step(&state.oracle, &previous, &current, index, reprojected);
        found.extend(state.windows.observe(index, step, &current));
        found.extend(invariants::check_refusals(
            &state.oracle,
            step,
            &state.projections.refused,
            &current,
            index,
        ));
        found.extend(check_decisions(
            &previous,
            &state.projections,
            faults,
            state.checkpoint_ahead_skips,
            &current,
            index,
        ));
        if let Some(report) = &state.audited {
            found.extend(check_cycle(state.audited_enabled, report, &current, index));
            found.extend(invariants::check_audit(
                &state.oracle,
                &current,
                &report.comparisons,
                index,
            ));
        }
        found.extend(check_rebuilds(
            &state.oracle,
            &std::mem::take(&mut state.rebuilt),
            &current,
            index,
        ));
        if let Step::DuplicateDelivery { entity } = step {
            found.extend(invariants::check_redelivery(
                &state.oracle,
                *entity,
                &previous,
                &current,
                index,
            ));
        }
        if matches!(step, Step::Quiesce) {
            found.extend(invariants::check_quiescence(&state.oracle, &current, index));
            if let Some(report) = &state.audited {
                found.extend(invariants::check_catch_up(
                    &state.oracle,
                    &current,
                    &report.comparisons,
                    index,
                ));
            }
        }
        if let Some(clients) = &clients {
            found.extend(crate::check::clients::check_clients(
                &state.oracle,
                &current,
                previous_clients.as_ref(),
                clients,
                index,
                matches!(step, Step::Quiesce),
            ));
        }
        // X9: a case that ended in parity with both stores written is what
        // `khala-parity audit` must find clean. (An external deployment
        // holds other plays' documents too: the audit is left to them.)
        let ended_in_parity = index == case.steps.len()
            && found.is_empty()
            && result.violations.is_empty()
            && state.oracle.sink_mode() == khala_runtime::SinkMode::Dual
            && namespace.is_empty();
        if ended_in_parity {
            found.extend(audit_live(slot, db, index).await);
        }
        result.steps_run = index + 1;
        let failed = !found.is_empty();
        result.violations.extend(found);
        result.trace.push(StepTrace {
            namespace: namespace.clone(),
            index,
            step: step.clone(),
            observation: current.clone(),
            auditor: state.audited.take().map(|report| report.summary),
            clients: clients.clone(),
            refused: std::mem::take(&mut state.projections.refused),
        });
        if failed && stop_at_first {
            break;
        }
        previous = current;
        previous_clients = clients;
    }
    Ok(())
}

/// X9: the case's stores audited as `khala-parity audit` audits a live
/// deployment (one cycle over every checkpoint), judged by
/// `check::audit::check_live_audit`.
async fn audit_live(slot: &Slot, db: &CaseDatabase, index: usize) -> Vec<Violation> {
    use crate::model::audit::{AuditTables, AuditTarget, Sampling};
    use crate::play::audit::{self, AuditConnect};
    let connect = AuditConnect {
        postgres_url: db.url.clone(),
        convex_url: slot.convex.base_url(),
        convex_admin_key: slot.convex.admin_key().unwrap_or_default().to_owned(),
        max_rps: None,
    };
    let target = AuditTarget {
        tables: AuditTables::default(),
        paths: khala_runtime::sink::ConvexQueryPaths::default(),
        sampling: Sampling::All { max_entities: None },
    };
    let audited = match audit::open(&connect, target).await {
        Err(error) => Err(error.to_string()),
        Ok(mut session) => {
            let read = session.read_cycle().await;
            session.close().await;
            read.map(|read| crate::check::audit::check_cycle(&read))
                .map_err(|error| error.to_string())
        }
    };
    crate::check::audit::check_live_audit(audited.as_ref().map_err(String::as_str), index)
}

/// The system fault a step raised, if any; the harness's own failure
/// passes through as the case's error (`unknown`).
fn system_fault(played: Result<(), StepError>) -> Result<Option<SystemFault>, DriverError> {
    match played {
        Ok(()) => Ok(None),
        Err(StepError::System(fault)) => Ok(Some(fault)),
        Err(StepError::Harness(error)) => Err(error),
    }
}

/// Ends a case whose step made the system under test raise an error: an
/// `E1` violation at that step (with the component as its reason class),
/// and the step's trace with what the stores hold. A model that raised is
/// not played further: what it would do next is not defined.
async fn record_fault(
    slot: &Slot,
    db: &CaseDatabase,
    namespace: &str,
    step: &Step,
    previous: &Observation,
    fault: SystemFault,
    result: &mut CaseResult,
) -> Result<(), DriverError> {
    let index = fault.step;
    let unchanged_convex = slot.outage().is_some().then_some(&previous.convex);
    let observation = observe(slot, db, index, unchanged_convex, namespace).await?;
    let reason_class = ReasonClass::from(fault.component.reason_class());
    result.violations.push(Violation {
        invariant: reason_class.invariant(),
        severity: reason_class.severity(),
        reason_class,
        document_id: None,
        step_index: index,
        detail: fault.to_string(),
        expected: None,
        khala: None,
        convex: None,
        checkpoint: None,
    });
    result.steps_run = index + 1;
    result.trace.push(StepTrace {
        namespace: namespace.to_owned(),
        index,
        step: step.clone(),
        observation,
        auditor: None,
        clients: None,
        refused: Vec::new(),
    });
    Ok(())
}

fn start_case(
    slot: &Slot,
    case: &Case,
    db: &CaseDatabase,
    namespace: &str,
    planted: &PlantedDefects,
) -> Result<CaseState, DriverError> {
    let mut switches = planted
        .switches
        .unwrap_or_else(|| DefectSwitches::of(case.profile));
    switches.clients.planted_apply_fails_from = planted.lane_apply_fails_from;
    switches.clients.planted_web_flag_lenient = planted.web_flag_lenient;
    switches.clients.planted_pointer_batch_merged = planted.lane_pointer_batch_merged;
    switches.clients.planted_batch_merge_keeps_oldest = planted.lane_batch_merge_keeps_oldest;
    switches.clients.planted_merge_skips_equal_version = planted.lane_merge_skips_equal_version;
    let manual_clock = Arc::new(ManualClock::new(case_start_time()));
    let clock: Arc<dyn Clock> = manual_clock.clone();
    // The sync server hears the runtime's own wake-ups; every projection's
    // commit waits until it has handled those sent so far (`ServerHold`).
    let notifier = Notifier::new();
    let hold = Arc::new(ServerHold::default());
    let config = RuntimeConfig {
        payload_mode: case.start.payload_mode,
        clock,
        notifier: notifier.clone(),
        commit_hold: Some(hold.clone()),
        switches: switches.runtime,
        planted: planted.runtime,
        ..RuntimeConfig::new(case.profile)
    };
    let admin_key = slot.convex.admin_key().unwrap_or_default().to_owned();
    let sink_to = |base_url: String| {
        let sink = ConvexHttpSink::new(&ConvexSinkConfig {
            base_url,
            admin_key: admin_key.clone(),
            ..ConvexSinkConfig::default()
        });
        if planted.sink_function_error_ok {
            sink.with_planted_function_error_ok()
        } else {
            sink
        }
    };
    let sink: Arc<dyn khala_runtime::sink::ProjectionSink> = match &slot.proxy {
        // The original timeout: no case waits it out (see `ProxiedConvexSink`).
        Some(proxy) => Arc::new(ProxiedConvexSink::new(
            sink_to(format!("http://{}", proxy.addr())),
            proxy.link(),
        )),
        None => Arc::new(sink_to(slot.convex.base_url())),
    };
    let runtime = Runtime::new(db.pool.clone(), config)
        .with_convex_sink(sink, case.start.sink_mode)
        .map_err(|error| DriverError::postgres(0, error))?;
    // The reader bypasses the proxy: observing must work during faults.
    let reader = ConvexReader::new(&slot.convex.base_url(), &admin_key, 5_000);
    let auditor_config = AuditorConfig {
        enabled: true,
        ..AuditorConfig::default()
    };
    Ok(CaseState {
        runtime,
        oracle: Oracle::at_start(case.ids, &case.start).in_namespace(namespace),
        namespace: namespace.to_owned(),
        reader,
        created: Default::default(),
        khala_broken: BTreeSet::new(),
        version_generation: 1,
        auditor: ParityAuditor::new(auditor_config, switches.runtime),
        auditor_reads_convex: !switches.runtime.b2_auditor_blind_to_convex,
        audited: None,
        audited_enabled: false,
        delivery: Delivery::new(
            switches,
            &case.start,
            db.pool.clone(),
            manual_clock,
            planted.runtime,
            notifier,
            hold,
        ),
        windows: ParityWindows::new(case.start.sink_mode),
        projections: Projected::default(),
        checkpoint_ahead_skips: switches.runtime.b7_checkpoint_ahead_skips,
        rebuilt: Rebuilt::default(),
    })
}

/// The operator's half of `RemoveEvents`: up to `count` of the entity's
/// event rows just below its newest one are deleted from the authority
/// table (the oracle removes the same seqs).
async fn remove_events_below_newest(
    pool: &sqlx::PgPool,
    entity: EntityRef,
    id: &str,
    count: u8,
) -> Result<(), sqlx::Error> {
    let (table, key) = match entity {
        EntityRef::Run(_) => ("runtime.run_events", "run_id"),
        EntityRef::Worker(_) => ("runtime.codex_worker_events", "worker_id"),
    };
    // Built only from the two constant table and column names above.
    let delete = format!(
        "DELETE FROM {table} WHERE {key} = $1 AND seq IN ( \
             SELECT seq FROM {table} WHERE {key} = $1 \
             AND seq < (SELECT MAX(seq) FROM {table} WHERE {key} = $1) \
             ORDER BY seq DESC LIMIT $2)"
    );
    sqlx::query(sqlx::AssertSqlSafe(delete))
        .bind(id)
        .bind(i64::from(count))
        .execute(pool)
        .await
        .map(drop)
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
) -> Result<(), StepError> {
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
    created.map_err(runtime_failed(step))?;
    state.created.insert(entity);
    Ok(())
}

/// Projection failures are the system's behaviour under faults, observed
/// through the stores; a failed authority write is the runtime's error,
/// or the backend's when the database could not be reached. What the
/// projection answered is noted in `projections`.
fn authority_write(
    result: Result<khala_runtime::runtime::AppendOutcome, RuntimeError>,
    step: usize,
    projections: &mut Projected,
) -> Result<(), StepError> {
    let outcome = result.map_err(runtime_failed(step))?;
    projections.note(outcome.projection);
    Ok(())
}

/// A runtime error, classified: the database unreachable is the backend's
/// failure; anything else the runtime did (a refused statement, an entity
/// it cannot find) is the system's.
fn runtime_failed(step: usize) -> impl FnOnce(RuntimeError) -> StepError {
    move |error| match error {
        RuntimeError::Authority(AuthorityError::Database { source, .. })
            if crate::play::error::sql_is_infrastructure(&source) =>
        {
            StepError::Harness(DriverError::postgres(step, source))
        }
        // The harness configured the runtime's sinks.
        RuntimeError::ConvexSinkMissing { .. } => {
            StepError::Harness(DriverError::postgres(step, error))
        }
        error => StepError::system(step, Component::Runtime, error),
    }
}

/// The auditor's error, classified as `runtime_failed` does; a Convex read
/// that never reached Convex is the backend's.
fn auditor_failed(step: usize) -> impl FnOnce(AuditError) -> StepError {
    move |error| match error {
        AuditError::Database { source, .. } => {
            StepError::from_sql(step, Component::Auditor, source)
        }
        AuditError::ConvexRead { ref source, .. }
            if source.source.reason_class() == "http_request_failed" =>
        {
            StepError::Harness(DriverError::convex(step, error))
        }
        error => StepError::system(step, Component::Auditor, error),
    }
}

async fn apply(
    slot: &Slot,
    db: &CaseDatabase,
    state: &mut CaseState,
    step: &Step,
    index: usize,
) -> Result<(), StepError> {
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
                &mut state.projections,
            )?;
        }
        Step::FinishRun {
            run,
            status,
            reason,
        } => {
            let entity = EntityRef::Run(*run);
            ensure_created(state, entity, index).await?;
            let id = state.oracle.entity_id(entity);
            let terminal = RunTerminal {
                status: status.as_str().to_owned(),
                terminal_reason_class: Some(status.as_str().to_owned()),
                terminal_reason: reason.value(),
            };
            let finished = state.runtime.finish_run(&id, &terminal).await;
            authority_write(finished, index, &mut state.projections)?;
        }
        Step::CreateWorker {
            worker,
            owner_guest_scope,
            workspace_ref,
            codex_home_ref,
        } => {
            let entity = EntityRef::Worker(*worker);
            if state.created.contains(&entity) {
                return Ok(());
            }
            let guest = owner_guest_scope.value();
            let created = NewWorker {
                worker_id: state.oracle.entity_id(entity),
                owner_user_id: guest.is_none().then_some(oracle::OWNER_USER_ID as i32),
                owner_guest_scope: guest,
                workspace_ref: workspace_ref.value(),
                codex_home_ref: codex_home_ref.value(),
                adapter: None,
                metadata: json!({"region": oracle::WORKER_REGION}),
            };
            let id = created.worker_id.clone();
            state
                .runtime
                .create_worker(&created)
                .await
                .map_err(runtime_failed(index))?;
            state.created.insert(entity);
            // `Workers.create_worker` appends `worker.started` (spec §2.7's
            // example counts it: created, a request, its answer and the
            // stop are seq 4).
            let kind = ProjectionKind::CodexWorkerSummary;
            authority_write(
                state
                    .runtime
                    .append_event(kind, &id, "worker.started", &json!({}))
                    .await,
                index,
                &mut state.projections,
            )?;
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
                &mut state.projections,
            )?;
        }
        Step::ReportWorkerMetadata {
            worker,
            value,
            variant,
        } => {
            let entity = EntityRef::Worker(*worker);
            ensure_created(state, entity, index).await?;
            let id = state.oracle.entity_id(entity);
            let metadata = state.oracle.metadata_sent(*worker, *value, *variant);
            let outcome = state.runtime.report_worker_metadata(&id, &metadata).await;
            authority_write(outcome, index, &mut state.projections)?;
        }
        Step::StopWorker { worker, path } => {
            let entity = EntityRef::Worker(*worker);
            ensure_created(state, entity, index).await?;
            let id = state.oracle.entity_id(entity);
            let outcome = match path {
                StopPath::Stop => state.runtime.stop_worker(&id).await,
                StopPath::Ingest => state.runtime.ingest_worker_stopped(&id).await,
            };
            authority_write(outcome, index, &mut state.projections)?;
        }
        Step::DuplicateDelivery { entity } => {
            if state.created.contains(entity) {
                let id = state.oracle.entity_id(*entity);
                let projection = state.runtime.project(kind_of(*entity), &id).await;
                state.projections.note(projection);
            }
        }
        Step::SwitchSinkMode { mode } => {
            state
                .runtime
                .set_sink_mode(*mode)
                .await
                .map_err(runtime_failed(index))?;
        }
        Step::Reproject {
            entity: Some(entity),
        } => {
            if state.created.contains(entity) {
                let id = state.oracle.entity_id(*entity);
                let result = state.runtime.rebuild(kind_of(*entity), &id).await;
                state.rebuilt.single.push((*entity, result));
            }
        }
        Step::RemoveEvents { entity, count } => {
            if state.created.contains(entity) {
                let id = state.oracle.entity_id(*entity);
                remove_events_below_newest(&db.pool, *entity, &id, *count)
                    .await
                    .map_err(|error| DriverError::postgres(index, error))?;
                let result = state.runtime.rebuild(kind_of(*entity), &id).await;
                state.rebuilt.single.push((*entity, result));
            }
        }
        Step::Reproject { entity: None } => {
            let selection = khala_runtime::reprojection::RebuildSelection::default();
            let summary = state
                .runtime
                .rebuild_all(&selection)
                .await
                .map_err(|error| runtime_failed(index)(RuntimeError::Authority(error)))?;
            let entities = state.created.iter().copied().collect();
            state.rebuilt.all = Some((summary, entities));
        }
        Step::BumpProjectionVersion => {
            state.version_generation += 1;
            let version = projection_version_name(state.version_generation);
            state
                .runtime
                .set_projection_version(&version)
                .await
                .map_err(runtime_failed(index))?;
        }
        Step::Rollback {
            switch: RollbackSwitch::RuntimeConvexOnly,
        } => {
            state
                .runtime
                .set_sink_mode(khala_runtime::SinkMode::ConvexOnly)
                .await
                .map_err(runtime_failed(index))?;
        }
        Step::Rollback {
            switch: RollbackSwitch::DisableAuditor,
        } => {}
        Step::AuditorCycle => {
            let enabled = state.oracle.auditor_enabled();
            let convex_down = slot.outage().is_some();
            audit(db, state, index, enabled, convex_down).await?;
        }
        Step::ConvexOutage { outage } => slot.begin_outage(*outage, index).await?,
        Step::SetClientFlag { .. }
        | Step::SetRolloutStage { .. }
        | Step::Rollback {
            switch: RollbackSwitch::ClientFlags,
        }
        | Step::RunRetention
        | Step::RunRetentionAtRow { .. }
        | Step::RunRetentionAtCursor
        | Step::DisconnectClient { .. }
        | Step::ReconnectClient { .. }
        | Step::RestartSyncServer
        | Step::AdvanceTime { .. }
        | Step::ReloadShippedClient { .. } => {
            state.delivery.apply(step, index, &state.oracle).await?;
        }
        Step::BreakConvex { fault } => slot.fault_proxy("break", index)?.set_mode(match fault {
            ConvexFault::Reset => ProxyMode::Reset,
            ConvexFault::Timeout => ProxyMode::Blackhole,
            ConvexFault::Delay => ProxyMode::Delay,
            ConvexFault::FunctionError200 => ProxyMode::FunctionError200,
            ConvexFault::FunctionError560 => ProxyMode::FunctionError560,
        }),
        Step::BreakKhala { fault } => {
            if !state.khala_broken.contains(fault) {
                set_khala_broken(&db.pool, *fault, true)
                    .await
                    .map_err(|error| DriverError::postgres(index, error))?;
                state.khala_broken.insert(*fault);
            }
        }
        Step::Heal | Step::Quiesce => {
            slot.heal(index).await?;
            for fault in std::mem::take(&mut state.khala_broken) {
                set_khala_broken(&db.pool, fault, false)
                    .await
                    .map_err(|error| DriverError::postgres(index, error))?;
            }
            if matches!(step, Step::Quiesce) {
                state
                    .runtime
                    .repair_pending()
                    .await
                    .map_err(|error| StepError::from_sql(index, Component::Runtime, error))?;
                // The runbook keeps the auditor on through catch-up (X6).
                audit(db, state, index, true, false).await?;
            }
        }
    }
    Ok(())
}

/// One parity auditor cycle, kept for the invariants and the trace. The
/// auditor reads Convex only where the deployment writes it (and only when
/// B2 is fixed: that switch is the auditor's own); during a Convex outage
/// such a cycle fails and leaves no summary.
async fn audit(
    db: &CaseDatabase,
    state: &mut CaseState,
    index: usize,
    enabled: bool,
    convex_down: bool,
) -> Result<(), StepError> {
    let convex = state
        .oracle
        .sink_mode()
        .writes_convex()
        .then_some(&state.reader);
    if enabled && convex_down && convex.is_some() && state.auditor_reads_convex {
        // The cycle fails on its first Convex read, as it would in
        // production; it reports nothing (and the harness does not wait
        // out the reader's timeout to learn that).
        return Ok(());
    }
    let options = RunOptions {
        enabled: Some(enabled),
        ..RunOptions::default()
    };
    let report = state
        .auditor
        .run_once(&db.pool, convex, &options)
        .await
        .map_err(auditor_failed(index))?;
    state.audited = Some(report);
    state.audited_enabled = enabled;
    Ok(())
}

/// Removes every Khala fault whether or not the case left it in place, in
/// one round trip (without the notice each absent constraint would send).
async fn clear_khala_fault(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let mut statements = "SET LOCAL client_min_messages = warning".to_owned();
    for table in KhalaFault::ALL.into_iter().flat_map(fault_tables) {
        statements.push_str(&format!(
            "; ALTER TABLE {table} DROP CONSTRAINT IF EXISTS harness_khala_fault"
        ));
    }
    // The table names are `fault_tables`' constants.
    sqlx::raw_sql(sqlx::AssertSqlSafe(statements))
        .execute(pool)
        .await
        .map(drop)
}

/// The tables a Khala fault makes refuse writes.
fn fault_tables(fault: KhalaFault) -> &'static [&'static str] {
    match fault {
        KhalaFault::ReadModel => &[
            "runtime.sync_run_summaries",
            "runtime.sync_codex_worker_summaries",
        ],
        KhalaFault::Allocator => &["runtime.sync_topic_sequences"],
    }
}

/// A Khala database failure: a constraint no row satisfies on the fault's
/// tables (both read models, or the watermark allocator's), so every Khala
/// write fails inside the projector transaction.
pub async fn set_khala_broken(
    pool: &sqlx::PgPool,
    fault: KhalaFault,
    broken: bool,
) -> Result<(), sqlx::Error> {
    for table in fault_tables(fault) {
        let statement = if broken {
            format!(
                "ALTER TABLE {table} ADD CONSTRAINT harness_khala_fault CHECK (false) NOT VALID"
            )
        } else {
            format!("ALTER TABLE {table} DROP CONSTRAINT harness_khala_fault")
        };
        // The table names are `fault_tables`' constants.
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// How many documents per Convex table an observation reads at most; a case
/// holds a handful, so more means something is wrong.
const OBSERVED_DOCUMENTS_MAX: u32 = 10_000;

/// Everything observe reads from PostgreSQL, as JSON arrays in one round
/// trip: both read models by key, the checkpoints (in scan order, as a plain
/// SELECT returns them) and the journal by topic and watermark.
fn observation_statement() -> String {
    let read_model = |kind: ProjectionKind| {
        format!(
            "(SELECT coalesce(json_agg(json_build_array(doc_key, doc_version, payload, encode(payload_hash, 'hex')) ORDER BY doc_key), '[]') FROM {})",
            kind.read_model_table()
        )
    };
    format!(
        "SELECT {}, {}, \
         (SELECT coalesce(json_agg(json_build_array(document_id, last_runtime_seq, projection_version, summary_hash)), '[]') \
          FROM runtime.convex_projection_checkpoints), \
         (SELECT coalesce(json_agg(json_build_array(topic, watermark, doc_key, doc_version) ORDER BY topic, watermark), '[]') \
          FROM runtime.sync_stream_events), \
         (SELECT coalesce(json_agg(json_build_array(projection_name, entity_id)), '[]') \
          FROM runtime.projection_repairs)",
        read_model(ProjectionKind::RunSummary),
        read_model(ProjectionKind::CodexWorkerSummary),
    )
}

/// The arguments of `runtime:listAllSummaries`: the namespace only when
/// there is one, so that other providers' requests stay as they were.
fn observe_arguments(namespace: &str) -> Value {
    if namespace.is_empty() {
        json!({"limit": OBSERVED_DOCUMENTS_MAX})
    } else {
        json!({"limit": OBSERVED_DOCUMENTS_MAX, "namespace": namespace})
    }
}

/// Convex documents are also read against the oracle's document, by the
/// rule `observe` reads them against the Khala row: where Khala holds no
/// row or an older one (a Convex-only or noop sink mode since), Convex's
/// Float64 `0` is still the `0.0` the runtime sent (a negative zero, which
/// Postgres stores as `0.0`, was once taken for another number there).
fn read_convex_as_predicted(observation: &mut Observation, oracle: &Oracle) {
    for entity in oracle.entities() {
        let id = oracle.document_id(entity);
        if let (Some(document), Some(expected)) = (
            observation.convex.get_mut(&id),
            oracle.expected_document(entity),
        ) {
            *document = as_sent(document, &expected);
        }
    }
}

type ReadModelRows = Json<Vec<(String, i64, serde_json::Value, Option<String>)>>;
type CheckpointRows = Json<Vec<(String, i64, String, String)>>;
type JournalRows = Json<Vec<(String, i64, String, i64)>>;
type RepairRows = Json<Vec<(String, String)>>;

/// Reads every store after a step: one SQL statement and one Convex query
/// (it bypasses the proxy: observing must work during faults), both at once.
/// What the stores hold now; Convex is taken as `unchanged_convex` instead
/// of read when given (the backend is down). A non-empty `namespace` reads
/// only the Convex documents under it (the Khala database is the case's own).
async fn observe(
    slot: &Slot,
    db: &CaseDatabase,
    step: usize,
    unchanged_convex: Option<&BTreeMap<String, Value>>,
    namespace: &str,
) -> Result<Observation, DriverError> {
    let statement = observation_statement();
    let khala = sqlx::query_as::<
        _,
        (
            ReadModelRows,
            ReadModelRows,
            CheckpointRows,
            JournalRows,
            RepairRows,
        ),
    >(sqlx::AssertSqlSafe(statement))
    .fetch_one(&db.pool);
    let convex = async {
        match unchanged_convex {
            Some(_) => Ok(None),
            None => slot
                .observer
                .call(
                    Endpoint::Query,
                    OBSERVE_CONVEX_FUNCTION,
                    observe_arguments(namespace),
                )
                .await
                .map(Some),
        }
    };
    let (khala, convex) = tokio::join!(khala, convex);
    let (Json(runs), Json(workers), Json(checkpoints), Json(journal), Json(repairs)) =
        khala.map_err(|error| DriverError::postgres(step, error))?;
    let convex_error = |source| {
        DriverError::convex(
            step,
            ConvexReadError {
                path: OBSERVE_CONVEX_FUNCTION.to_owned(),
                source,
            },
        )
    };
    let convex = convex.map_err(convex_error)?;
    let mut observation = Observation::default();
    for (key, version, payload, hash) in runs.into_iter().chain(workers) {
        observation.khala_hashes.insert(key.clone(), hash);
        observation.khala.insert(key, (version, payload));
    }
    let (convex, tables) = match convex {
        Some(convex) => (
            convex,
            ["run_summaries", "codex_worker_summaries"].as_slice(),
        ),
        None => {
            observation.convex = unchanged_convex.cloned().unwrap_or_default();
            (Value::Null, [].as_slice())
        }
    };
    for table in tables {
        let documents = convex
            .get(table)
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| {
                convex_error(SinkError::InvalidResponse {
                    body: convex.to_string(),
                })
            })?;
        for document in documents {
            let id = document
                .get("document_id")
                .and_then(serde_json::Value::as_str);
            let (Some(id), Some(summary)) = (id, document.get("summary")) else {
                return Err(convex_error(SinkError::InvalidResponse {
                    body: document.to_string(),
                }));
            };
            observation.convex.insert(id.to_owned(), summary.clone());
        }
    }
    // Convex holds the runtime's numbers as Float64s: a `0.0` the runtime
    // sent is read back as the integer 0. Written as Khala holds it where
    // Convex holds the same number, so only real differences remain.
    for (key, document) in observation.convex.iter_mut() {
        if let Some((_, khala)) = observation.khala.get(key) {
            *document = as_sent(document, khala);
        }
    }
    for (document_id, last_runtime_seq, projection_version, summary_hash) in checkpoints {
        let view = CheckpointView {
            document_id: document_id.clone(),
            last_runtime_seq,
            projection_version,
            summary_hash,
        };
        observation.checkpoints.insert(document_id, view);
    }
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
    for (projection_name, entity_id) in repairs {
        // A projection name the harness does not know is still a repair
        // left pending; it keeps its raw name.
        let document_id = match projection_name.parse::<ProjectionKind>() {
            Ok(kind) => kind.document_id(&entity_id),
            Err(_) => format!("{projection_name}:{entity_id}"),
        };
        observation.pending_repairs.insert(document_id);
    }
    Ok(observation)
}

/// The profile a stored or generated case runs under.
pub fn profile_of(case: &Case) -> Profile {
    case.profile
}
