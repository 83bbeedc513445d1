//! A case: one generated (or stored) history with its schedule and faults,
//! as plain serde data. Entities are small indices, created on first use,
//! so that any subsequence of a case is a valid case (shrinking drops steps
//! freely).

use crate::model::reason::ReasonClass;
use khala_runtime::sink::PayloadMode;
use khala_runtime::{Profile, SinkMode};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

pub use crate::model::values::{Text, TextKind, ValueKind};

/// The case file format's name; bumped on incompatible changes.
pub const CASE_SCHEMA: &str = "khala-parity.case.v1";

/// The code a report or a stored case came from: the git commit the
/// harness was built from when known, else the crate version; redacted in
/// snapshots.
pub const CODE_VERSION: &str = match option_env!("KHALA_PARITY_GIT_COMMIT") {
    Some(commit) => commit,
    None => env!("CARGO_PKG_VERSION"),
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub schema: String,
    pub profile: Profile,
    pub start: Start,
    /// How entity indices become ids.
    pub ids: IdStyle,
    pub steps: Vec<Step>,
    /// Where the case came from; never read by the driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The state before the first step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub sink_mode: SinkMode,
    /// The client flags per surface (all off unless given).
    #[serde(default, skip_serializing_if = "Flags::all_off")]
    pub flags: Flags,
    /// The rollout stage reached, if the rollout has begun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_stage: Option<RolloutStage>,
    /// Surfaces whose users each also run the shipped `KhalaSyncClient`
    /// (facts §2) beside today's lane model (none unless given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shipped_clients: Vec<Surface>,
    /// How the Khala sink writes journal rows (spec §4.4): a deploy-time
    /// setting of the runtime, inline unless given. In pointer mode every
    /// update carries `payload: null, hydration_required: true`, and a
    /// lane must fetch the document over HTTP.
    #[serde(default, skip_serializing_if = "is_inline")]
    pub payload_mode: PayloadMode,
    /// The sync server's `khala_sync_replay_batch_size` (spec §7.4, §12):
    /// the most journal rows one `update_batch` carries, 200 unless given.
    /// A smaller size splits replays into batches whose last one alone
    /// says `replay_complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_batch_size: Option<NonZeroU32>,
}

fn is_inline(mode: &PayloadMode) -> bool {
    *mode == PayloadMode::Inline
}

impl Start {
    pub fn new(sink_mode: SinkMode) -> Self {
        Start {
            sink_mode,
            flags: Flags::default(),
            rollout_stage: None,
            shipped_clients: Vec::new(),
            payload_mode: PayloadMode::Inline,
            replay_batch_size: None,
        }
    }
}

/// The longest time one `advance_time` step may pass: a day covers every
/// timer of the system (heartbeats, channel and socket timeouts, backoff)
/// many times over; more is a typo, and would be played tick by tick.
pub const ADVANCE_TIME_SECONDS_MAX: i64 = 86_400;

/// A stored case's step that cannot be played.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("step {index} (`{action}`): {reason}")]
pub struct InvalidStep {
    pub index: usize,
    pub action: &'static str,
    pub reason: String,
}

impl Case {
    /// Refuses steps serde accepts but the driver cannot play: an
    /// `advance_time` with a negative, zero or absurd duration, a
    /// `remove_events` that removes nothing.
    pub fn validate(&self) -> Result<(), InvalidStep> {
        for (index, step) in self.steps.iter().enumerate() {
            if let Step::RemoveEvents { count: 0, .. } = step {
                return Err(InvalidStep {
                    index,
                    action: "remove_events",
                    reason: "count = 0 removes nothing (1 or more)".to_owned(),
                });
            }
            if let Step::AdvanceTime { seconds } = step
                && !(1..=ADVANCE_TIME_SECONDS_MAX).contains(seconds)
            {
                return Err(InvalidStep {
                    index,
                    action: "advance_time",
                    reason: format!(
                        "seconds = {seconds} is outside 1..={ADVANCE_TIME_SECONDS_MAX}"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A client surface of spec §9.1, each with its own build-time flag: the
/// client models' own type, so cases and lanes name surfaces alike.
pub use khala_clients::Surface;

/// The three client flags (`VITE_…`, `EXPO_PUBLIC_…`, `OA_DESKTOP_…`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    #[serde(default)]
    pub web: bool,
    #[serde(default)]
    pub mobile: bool,
    #[serde(default)]
    pub desktop: bool,
}

impl Flags {
    pub fn all_off(&self) -> bool {
        *self == Flags::default()
    }

    pub fn get(&self, surface: Surface) -> bool {
        match surface {
            Surface::Web => self.web,
            Surface::Mobile => self.mobile,
            Surface::Desktop => self.desktop,
        }
    }

    pub fn set(&mut self, surface: Surface, enabled: bool) {
        match surface {
            Surface::Web => self.web = enabled,
            Surface::Mobile => self.mobile = enabled,
            Surface::Desktop => self.desktop = enabled,
        }
    }
}

/// The rollout stages of spec §9.2: A internal only, B a 5–10 % cohort,
/// C a 25–50 % cohort, D everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RolloutStage {
    A,
    B,
    C,
    D,
}

impl RolloutStage {
    pub const ALL: [RolloutStage; 4] = [
        RolloutStage::A,
        RolloutStage::B,
        RolloutStage::C,
        RolloutStage::D,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStage::A => "A",
            RolloutStage::B => "B",
            RolloutStage::C => "C",
            RolloutStage::D => "D",
        }
    }
}

/// The rollback switches of spec §9.4, smallest surface first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackSwitch {
    /// 1. Every surface's client flag off.
    ClientFlags,
    /// 2. The runtime back to a Convex-only projection sink.
    RuntimeConvexOnly,
    /// After 3 (validation): the parity auditor off.
    DisableAuditor,
}

/// A Convex backend outage until `Heal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outage {
    /// The container is paused (a local Node child gets SIGSTOP): requests
    /// in flight stay queued and run when it resumes, as on a frozen host.
    Pause,
    /// The front is stopped (connections refused) and started again; its
    /// journal gives it back what it held, as a deployment's storage does.
    Stop,
}

/// Provenance of a stored case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub scenario: String,
    pub seed: u64,
    pub code_version: String,
    /// The invariant the case violates, and how.
    pub invariant: String,
    pub reason_class: ReasonClass,
    /// Which of the scenario's generated cases showed the failure first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_index: Option<u32>,
    /// Whether a replay showed the failure again. A case that did not is
    /// the unshrunk case that showed it once; it is kept all the same.
    #[serde(default = "reproduced_by_default")]
    pub reproduced: bool,
    /// Every failure of the defect the case stands for, in whichever
    /// scenario it showed: one root defect breaks several checks, and is
    /// stored once (see `check::defects`). Empty in cases stored before
    /// defects were grouped: those stand for their own failure only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaks: Vec<Broken>,
}

/// One check a defect breaks: an invariant and reason class, and the
/// scenario whose generated case showed it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broken {
    pub scenario: String,
    pub invariant: String,
    pub reason_class: String,
}

/// Cases stored before `reproduced` was recorded all reproduced.
fn reproduced_by_default() -> bool {
    true
}

/// The shape of generated ids: plain, long (near the varchar limit), or
/// unicode (runs only; worker ids are restricted to `[a-zA-Z0-9._:-]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdStyle {
    Plain,
    Long,
    Unicode,
}

impl IdStyle {
    pub fn run_id(self, index: u8) -> String {
        match self {
            IdStyle::Plain => format!("run_{index}"),
            IdStyle::Long => format!("run_{index}_{}", "x".repeat(200)),
            IdStyle::Unicode => format!("run_{index}_ünïcødé_🚀"),
        }
    }

    pub fn worker_id(self, index: u8) -> String {
        match self {
            IdStyle::Plain | IdStyle::Unicode => format!("worker_{index}"),
            IdStyle::Long => format!("worker:{index}.{}", "w".repeat(140)),
        }
    }
}

/// Which entity a step is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "index", rename_all = "snake_case")]
pub enum EntityRef {
    Run(u8),
    Worker(u8),
}

/// Run event types of the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunEventType {
    #[serde(rename = "run.started")]
    Started,
    #[serde(rename = "run.delta")]
    Delta,
    #[serde(rename = "run.cancel_requested")]
    CancelRequested,
}

impl RunEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEventType::Started => "run.started",
            RunEventType::Delta => "run.delta",
            RunEventType::CancelRequested => "run.cancel_requested",
        }
    }
}

/// Worker event types of the runtime (stop has its own step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerEventType {
    #[serde(rename = "worker.heartbeat")]
    Heartbeat,
    #[serde(rename = "worker.request.received")]
    RequestReceived,
    #[serde(rename = "worker.response")]
    Response,
    #[serde(rename = "worker.error")]
    Error,
}

impl WorkerEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerEventType::Heartbeat => "worker.heartbeat",
            WorkerEventType::RequestReceived => "worker.request.received",
            WorkerEventType::Response => "worker.response",
            WorkerEventType::Error => "worker.error",
        }
    }
}

/// A run's terminal status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalStatus {
    Succeeded,
    Failed,
    Canceled,
}

impl TerminalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalStatus::Succeeded => "succeeded",
            TerminalStatus::Failed => "failed",
            TerminalStatus::Canceled => "canceled",
        }
    }
}

/// How a worker is stopped: `Workers.stop_worker` (status first) or
/// `ingest_event` of `worker.stopped` (event first in the original, B4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopPath {
    Stop,
    Ingest,
}

/// A network fault of the Convex backend, through the harness's proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvexFault {
    /// Connections are reset: `http_request_failed` at once.
    Reset,
    /// Connections hang until the sink's timeout.
    Timeout,
    /// Requests reach Convex and run, but the network delays every answer
    /// past the sink's timeout: a write the sink reports as failed is there.
    Delay,
    /// Every mutation throws: the proxy answers, without forwarding (a
    /// throwing mutation leaves nothing behind), what Convex answers a
    /// failed function, HTTP 200 `{"status":"error","errorMessage":…}`
    /// (real-systems.md §1.2).
    #[serde(rename = "function_error_200")]
    FunctionError200,
    /// The same failure answered as HTTP 560, the status the official JS
    /// client also takes for a failed function.
    #[serde(rename = "function_error_560")]
    FunctionError560,
}

/// The part of Khala's database a `BreakKhala` step makes refuse writes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KhalaFault {
    /// The read-model tables: the sink's upsert fails.
    #[default]
    ReadModel,
    /// `runtime.sync_topic_sequences`: the watermark allocation fails
    /// (spec §5.5).
    Allocator,
}

impl KhalaFault {
    pub const ALL: [KhalaFault; 2] = [KhalaFault::ReadModel, KhalaFault::Allocator];

    /// The name scenario files (`[khala_faults]`) and case files use.
    pub fn name(self) -> &'static str {
        match self {
            KhalaFault::ReadModel => "read_model",
            KhalaFault::Allocator => "allocator",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|fault| fault.name() == name)
    }

    pub fn names() -> String {
        Self::ALL.map(KhalaFault::name).join(", ")
    }

    fn is_read_model(&self) -> bool {
        *self == KhalaFault::ReadModel
    }
}

/// One step of a case. Steps are verbs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Appends a run event (creating the run first if needed).
    AppendRunEvent {
        run: u8,
        event_type: RunEventType,
    },
    /// The executor's end of a run: `run.finished` plus terminal fields,
    /// the reason (`terminal_reason`, `null` when absent) among them.
    FinishRun {
        run: u8,
        status: TerminalStatus,
        #[serde(default, skip_serializing_if = "Text::is_null")]
        reason: Text,
    },
    /// A worker is created with its free-text attributes (spec §2.5,
    /// §5.6): a guest owner scope in place of the owner user id when not
    /// `null`, a workspace and a Codex home. Entities are otherwise created
    /// on first use (owner user 7, workspace `ws_1`, no Codex home); a
    /// worker that exists already is left as it is, since its creation
    /// request came once.
    CreateWorker {
        worker: u8,
        #[serde(default, skip_serializing_if = "Text::is_null")]
        owner_guest_scope: Text,
        #[serde(default, skip_serializing_if = "Text::is_null")]
        workspace_ref: Text,
        #[serde(default, skip_serializing_if = "Text::is_null")]
        codex_home_ref: Text,
    },
    /// Appends a worker event (creating the worker first if needed).
    AppendWorkerEvent {
        worker: u8,
        event_type: WorkerEventType,
    },
    StopWorker {
        worker: u8,
        path: StopPath,
    },
    /// A worker reports new metadata with a heartbeat: variant `variant`
    /// of `value` (`model::values`) is stored, then the heartbeat event
    /// is appended and projected.
    ReportWorkerMetadata {
        worker: u8,
        value: ValueKind,
        variant: u8,
    },
    /// The same trigger delivered again: the entity is projected once more.
    DuplicateDelivery {
        entity: EntityRef,
    },
    SwitchSinkMode {
        mode: SinkMode,
    },
    /// `reproject --run-id/--worker-id`, or `--all` without an entity.
    Reproject {
        entity: Option<EntityRef>,
    },
    /// A deploy with the next `projection_version`.
    BumpProjectionVersion,
    /// Convex becomes unreachable until `Heal`.
    BreakConvex {
        fault: ConvexFault,
    },
    /// Khala's database refuses writes until `Heal`: its read models, or
    /// (`fault: allocator`) its watermark allocator. Case files written
    /// before the allocator fault leave `fault` out.
    BreakKhala {
        #[serde(default, skip_serializing_if = "KhalaFault::is_read_model")]
        fault: KhalaFault,
    },
    /// The Convex backend itself goes down until `Heal`.
    ConvexOutage {
        outage: Outage,
    },
    /// One surface's build-time client flag, for every user of the
    /// surface: the variable's raw value as a person wrote it (`None`:
    /// unset), which the surface's client reads by its own rules (spec
    /// §9.1). Stored cases of the older form `enabled: true|false` load
    /// as `"true"` and unset.
    SetClientFlag {
        surface: Surface,
        #[serde(
            default,
            alias = "enabled",
            deserialize_with = "raw_flag_value",
            skip_serializing_if = "Option::is_none"
        )]
        value: Option<String>,
    },
    /// Advances (or moves back) the rollout to a stage: the flags of the
    /// users in the stage's cohort on, the others off.
    SetRolloutStage {
        stage: RolloutStage,
    },
    /// One rollback switch of spec §9.4.
    Rollback {
        switch: RollbackSwitch,
    },
    /// The parity auditor runs one cycle (`run_once`).
    AuditorCycle,
    /// The clock moves past the retention horizon and the retention job
    /// runs: every journal row inserted before the jump is pruned.
    RunRetention,
    /// The retention job runs when its cutoff (`now − horizon`, spec §7.6)
    /// lands exactly on a journal row's `inserted_at`: the clock moves to
    /// that instant plus the horizon. The row is the `rank`-th oldest
    /// (from 0) of those the job could still keep at the current time
    /// (inserted less than a horizon ago), or the newest of them when
    /// there are fewer: the rows before it are pruned, it and every
    /// newer one stay (a partial prune when `rank > 0`). With no such row
    /// the job runs at the current time.
    RunRetentionAtRow {
        rank: u8,
    },
    /// The retention job runs with its cutoff exactly on the first journal
    /// row of the worker topic that the lane furthest behind has not
    /// received (the lowest worker-topic watermark of any lane): the job
    /// prunes exactly through that lane's cursor, so its next subscribe
    /// sends a cursor equal to the retention floor, the boundary of the
    /// stale rule (spec §7.5). When every lane holds the whole journal, or
    /// that row is older than the job could keep, the job runs at the
    /// current time.
    RunRetentionAtCursor,
    /// An operator removes event rows of an entity from the authority
    /// tables, then re-projects it with `reproject` (spec §10): up to
    /// `count` of the rows just below its newest one, which always stays.
    /// The original cannot skip a seq on its own (the increment and the
    /// insert share a transaction, spec §2.3), so removed rows are how its
    /// event sequences really get gaps ("unless rows are removed"); keeping
    /// the newest row keeps `latest_seq`, so the gap shows only in
    /// `event_count`, and the later events continue above it. Nothing if
    /// the entity does not exist.
    RemoveEvents {
        entity: EntityRef,
        count: u8,
    },
    /// A surface's clients lose their sockets.
    DisconnectClient {
        surface: Surface,
    },
    /// A surface's clients reconnect and resume from their stored
    /// watermarks.
    ReconnectClient {
        surface: Surface,
    },
    /// The sync server restarts; every socket drops.
    RestartSyncServer,
    /// Every user of a surface starts the shipped client afresh, with no
    /// stored watermark, in place of the one it ran: a web page reload
    /// (its store lives in memory) or a new mobile install. On a pruned
    /// topic that is the subscribe without a cursor hardened B10 serves.
    ReloadShippedClient {
        surface: Surface,
    },
    /// Time passes for the sync server and every client: heartbeat ticks,
    /// channel timeouts, idle sockets closing and reconnect backoff run as
    /// they fall due. Signed so that a stored case with a negative value
    /// is refused by `Case::validate`, naming the step.
    AdvanceTime {
        seconds: i64,
    },
    /// Ends every fault.
    Heal,
    /// Heals, runs the system's own catch-up, and checks convergence.
    Quiesce,
}

/// A flag's raw value: a string, `null` (unset), or the older boolean
/// form (`true` is `"true"`, `false` unset).
fn raw_flag_value<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Enabled(bool),
    }
    Ok(match Option::<Raw>::deserialize(deserializer)? {
        Some(Raw::Text(text)) => Some(text),
        Some(Raw::Enabled(true)) => Some("true".to_owned()),
        Some(Raw::Enabled(false)) | None => None,
    })
}

/// The users of every surface: operators inside the company and three
/// external users at fixed cohort percentiles. A rollout stage turns on the
/// flags of the users inside its cohort (spec §9.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientUser {
    Internal,
    /// Percentile 5: inside stage B's 5–10 % cohort.
    Early,
    /// Percentile 40: inside stage C's 25–50 % cohort.
    Broad,
    /// Percentile 90: only at stage D.
    Rest,
}

impl ClientUser {
    pub const ALL: [ClientUser; 4] = [
        ClientUser::Internal,
        ClientUser::Early,
        ClientUser::Broad,
        ClientUser::Rest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientUser::Internal => "internal",
            ClientUser::Early => "early",
            ClientUser::Broad => "broad",
            ClientUser::Rest => "rest",
        }
    }

    /// Whether stage `stage` turns this user's flags on.
    pub fn in_stage(self, stage: RolloutStage) -> bool {
        let cohort_percent = match stage {
            RolloutStage::A => 0,
            RolloutStage::B => 10,
            RolloutStage::C => 50,
            RolloutStage::D => 100,
        };
        match self {
            ClientUser::Internal => true,
            ClientUser::Early => 5 < cohort_percent,
            ClientUser::Broad => 40 < cohort_percent,
            ClientUser::Rest => 90 < cohort_percent,
        }
    }
}

/// What a scenario weighs: each kind of step the generator draws. Its TOML
/// name (in `[weights]`, `[swarm]` and `[coverage]`) is `name()`; its steps
/// are `plan::steps::steps_of`; `Step::kind` says which kind a step is. Every
/// one of those is an exhaustive `match`, so a new kind is a compile error
/// everywhere it must be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    RunEvent,
    WorkerEvent,
    DuplicateDelivery,
    SinkMode,
    ClientFlag,
    RolloutStage,
    Rollback,
    AuditorCycle,
    Retention,
    Reproject,
    ProjectionVersionBump,
    ClientReconnect,
    FaultConvex,
    FaultKhala,
    FaultPartialFanout,
    RestartSyncServer,
    RestartConvex,
    Quiesce,
    AdvanceTime,
    WorkerMetadata,
    ShippedClientReload,
    EventGap,
    CreateWorker,
    RetentionAtCursor,
}

impl ActionKind {
    /// Every kind, in the order scenarios list them.
    pub const ALL: [ActionKind; 24] = [
        ActionKind::RunEvent,
        ActionKind::WorkerEvent,
        ActionKind::DuplicateDelivery,
        ActionKind::SinkMode,
        ActionKind::ClientFlag,
        ActionKind::RolloutStage,
        ActionKind::Rollback,
        ActionKind::AuditorCycle,
        ActionKind::Retention,
        ActionKind::Reproject,
        ActionKind::ProjectionVersionBump,
        ActionKind::ClientReconnect,
        ActionKind::FaultConvex,
        ActionKind::FaultKhala,
        ActionKind::FaultPartialFanout,
        ActionKind::RestartSyncServer,
        ActionKind::RestartConvex,
        ActionKind::Quiesce,
        ActionKind::AdvanceTime,
        ActionKind::WorkerMetadata,
        ActionKind::ShippedClientReload,
        ActionKind::EventGap,
        ActionKind::CreateWorker,
        ActionKind::RetentionAtCursor,
    ];

    /// The name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::RunEvent => "run_event",
            ActionKind::WorkerEvent => "worker_event",
            ActionKind::DuplicateDelivery => "duplicate_delivery",
            ActionKind::SinkMode => "sink_mode",
            ActionKind::ClientFlag => "client_flag",
            ActionKind::RolloutStage => "rollout_stage",
            ActionKind::Rollback => "rollback",
            ActionKind::AuditorCycle => "auditor_cycle",
            ActionKind::Retention => "retention",
            ActionKind::Reproject => "reproject",
            ActionKind::ProjectionVersionBump => "projection_version_bump",
            ActionKind::ClientReconnect => "client_reconnect",
            ActionKind::FaultConvex => "fault_convex",
            ActionKind::FaultKhala => "fault_khala",
            ActionKind::FaultPartialFanout => "fault_partial_fanout",
            ActionKind::RestartSyncServer => "restart_sync_server",
            ActionKind::RestartConvex => "restart_convex",
            ActionKind::Quiesce => "quiesce",
            ActionKind::AdvanceTime => "advance_time",
            ActionKind::WorkerMetadata => "worker_metadata",
            ActionKind::ShippedClientReload => "shipped_client_reload",
            ActionKind::EventGap => "event_gap",
            ActionKind::CreateWorker => "create_worker",
            ActionKind::RetentionAtCursor => "retention_at_cursor",
        }
    }

    /// Whether playing this kind needs a Convex backend the harness runs:
    /// it pauses or stops the backend, or breaks the connection to it in
    /// the fault proxy. An external deployment takes none of these.
    pub fn needs_local_convex(self) -> bool {
        matches!(self, ActionKind::FaultConvex | ActionKind::RestartConvex)
    }

    /// The kind a scenario file names, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Every name, comma separated, for error messages.
    pub fn names() -> String {
        Self::ALL.map(ActionKind::name).join(", ")
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Step {
    /// The free-text fields the step carries (`[texts]` draws them).
    pub fn texts(&self) -> Vec<Text> {
        match self {
            Step::FinishRun { reason, .. } => vec![*reason],
            Step::CreateWorker {
                owner_guest_scope,
                workspace_ref,
                codex_home_ref,
                ..
            } => vec![*owner_guest_scope, *workspace_ref, *codex_home_ref],
            _ => Vec::new(),
        }
    }

    /// The action kind that draws this step.
    pub fn kind(&self) -> ActionKind {
        match self {
            Step::AppendRunEvent { .. } | Step::FinishRun { .. } => ActionKind::RunEvent,
            Step::AppendWorkerEvent { .. } | Step::StopWorker { .. } => ActionKind::WorkerEvent,
            Step::DuplicateDelivery { .. } => ActionKind::DuplicateDelivery,
            Step::SwitchSinkMode { .. } => ActionKind::SinkMode,
            Step::Reproject { .. } => ActionKind::Reproject,
            Step::BumpProjectionVersion => ActionKind::ProjectionVersionBump,
            Step::BreakConvex { .. } => ActionKind::FaultConvex,
            Step::BreakKhala { .. } => ActionKind::FaultKhala,
            Step::ConvexOutage {
                outage: Outage::Pause,
            } => ActionKind::FaultConvex,
            Step::ConvexOutage {
                outage: Outage::Stop,
            } => ActionKind::RestartConvex,
            Step::SetClientFlag { .. } => ActionKind::ClientFlag,
            Step::SetRolloutStage { .. } => ActionKind::RolloutStage,
            Step::Rollback { .. } => ActionKind::Rollback,
            Step::AuditorCycle => ActionKind::AuditorCycle,
            Step::RunRetention | Step::RunRetentionAtRow { .. } => ActionKind::Retention,
            Step::RunRetentionAtCursor => ActionKind::RetentionAtCursor,
            Step::RemoveEvents { .. } => ActionKind::EventGap,
            Step::DisconnectClient { .. } | Step::ReconnectClient { .. } => {
                ActionKind::ClientReconnect
            }
            Step::RestartSyncServer => ActionKind::RestartSyncServer,
            Step::Heal | Step::Quiesce => ActionKind::Quiesce,
            Step::AdvanceTime { .. } => ActionKind::AdvanceTime,
            Step::ReportWorkerMetadata { .. } => ActionKind::WorkerMetadata,
            Step::ReloadShippedClient { .. } => ActionKind::ShippedClientReload,
            Step::CreateWorker { .. } => ActionKind::CreateWorker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_kind_is_listed_once_and_named_uniquely() {
        let names: std::collections::BTreeSet<&str> =
            ActionKind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(names.len(), ActionKind::ALL.len());
        for kind in ActionKind::ALL {
            assert_eq!(ActionKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ActionKind::from_name("nope"), None);
    }

    #[test]
    fn steps_serialise_as_tagged_values() {
        let step = Step::AppendRunEvent {
            run: 2,
            event_type: RunEventType::Delta,
        };
        let text = serde_json::to_string(&step).unwrap();
        assert_eq!(
            text,
            r#"{"action":"append_run_event","run":2,"event_type":"run.delta"}"#
        );
        assert_eq!(serde_json::from_str::<Step>(&text).unwrap(), step);
        let reproject = Step::Reproject {
            entity: Some(EntityRef::Worker(1)),
        };
        let text = serde_json::to_string(&reproject).unwrap();
        assert_eq!(
            text,
            r#"{"action":"reproject","entity":{"kind":"worker","index":1}}"#
        );
        let flag = Step::SetClientFlag {
            surface: Surface::Web,
            value: Some(" true".to_owned()),
        };
        let text = serde_json::to_string(&flag).unwrap();
        assert_eq!(
            text,
            r#"{"action":"set_client_flag","surface":"web","value":" true"}"#
        );
        assert_eq!(serde_json::from_str::<Step>(&text).unwrap(), flag);
        let extra = r#"{"action":"append_run_event","run":1,"event_type":"run.delta","extra":1}"#;
        assert!(serde_json::from_str::<Step>(extra).is_err());
    }

    #[test]
    fn stored_flag_steps_of_the_boolean_form_still_load() {
        let read = |text: &str| serde_json::from_str::<Step>(text).unwrap();
        let value = |step: Step| match step {
            Step::SetClientFlag { value, .. } => value,
            other => panic!("{other:?}"),
        };
        let on = read(r#"{"action":"set_client_flag","surface":"web","enabled":true}"#);
        assert_eq!(value(on), Some("true".to_owned()));
        let off = read(r#"{"action":"set_client_flag","surface":"web","enabled":false}"#);
        assert_eq!(value(off), None);
        let unset = read(r#"{"action":"set_client_flag","surface":"desktop"}"#);
        assert_eq!(value(unset), None);
        let null = read(r#"{"action":"set_client_flag","surface":"desktop","value":null}"#);
        assert_eq!(value(null), None);
        let number = r#"{"action":"set_client_flag","surface":"web","value":1}"#;
        assert!(serde_json::from_str::<Step>(number).is_err());
    }

    #[test]
    fn advance_time_with_a_negative_or_absurd_duration_is_refused_naming_the_step() {
        let case = |seconds| Case {
            schema: CASE_SCHEMA.into(),
            profile: Profile::Hardened,
            start: Start::new(SinkMode::Dual),
            ids: IdStyle::Plain,
            steps: vec![Step::Heal, Step::AdvanceTime { seconds }],
            origin: None,
        };
        assert_eq!(case(90).validate(), Ok(()));
        for seconds in [-5, 0, ADVANCE_TIME_SECONDS_MAX + 1] {
            let error = case(seconds).validate().expect_err("refused");
            assert_eq!(error.index, 1);
            assert!(
                error
                    .to_string()
                    .starts_with("step 1 (`advance_time`): seconds")
            );
        }
    }

    #[test]
    fn remove_events_that_removes_nothing_is_refused_naming_the_step() {
        let case = |count| Case {
            schema: CASE_SCHEMA.into(),
            profile: Profile::Hardened,
            start: Start::new(SinkMode::Dual),
            ids: IdStyle::Plain,
            steps: vec![Step::RemoveEvents {
                entity: EntityRef::Worker(1),
                count,
            }],
            origin: None,
        };
        assert_eq!(case(1).validate(), Ok(()));
        let error = case(0).validate().expect_err("refused");
        assert_eq!((error.index, error.action), (0, "remove_events"));
        let text = r#"{"action":"run_retention_at_row","rank":3}"#;
        assert_eq!(
            serde_json::from_str::<Step>(text).unwrap(),
            Step::RunRetentionAtRow { rank: 3 }
        );
        assert_eq!(
            serde_json::from_str::<Step>(r#"{"action":"run_retention_at_cursor"}"#).unwrap(),
            Step::RunRetentionAtCursor
        );
    }

    #[test]
    fn ids_stay_within_the_limits_of_their_tables() {
        for style in [IdStyle::Plain, IdStyle::Long, IdStyle::Unicode] {
            let run = format!("runtime/run_summary:{}", style.run_id(255));
            assert!(run.chars().count() <= 255, "{run}");
            let worker = style.worker_id(255);
            assert!((3..=160).contains(&worker.len()));
            assert!(
                worker
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)),
                "{worker}"
            );
        }
    }

    #[test]
    fn a_khala_fault_names_its_part_and_the_older_form_is_the_read_models() {
        let read_model = Step::BreakKhala {
            fault: KhalaFault::ReadModel,
        };
        let allocator = Step::BreakKhala {
            fault: KhalaFault::Allocator,
        };
        let older = r#"{"action":"break_khala"}"#;
        assert_eq!(serde_json::from_str::<Step>(older).unwrap(), read_model);
        assert_eq!(serde_json::to_string(&read_model).unwrap(), older);
        let text = r#"{"action":"break_khala","fault":"allocator"}"#;
        assert_eq!(serde_json::to_string(&allocator).unwrap(), text);
        assert_eq!(serde_json::from_str::<Step>(text).unwrap(), allocator);
        let unknown = r#"{"action":"break_khala","fault":"sequences"}"#;
        assert!(serde_json::from_str::<Step>(unknown).is_err());
        for fault in KhalaFault::ALL {
            assert_eq!(KhalaFault::from_name(fault.name()), Some(fault));
        }
    }
}
