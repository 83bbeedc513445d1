//! The oracle: a pure, in-memory reference of what the cutover must look
//! like to users. It tracks the runtime's truth (events, statuses) and the
//! configuration (sink mode, projection version), and predicts the semantic
//! content of every document. It does no I/O, has no async and shares no
//! code with the models it judges: its summaries are written here, from the
//! spec, not by calling the projector.

use crate::model::case::ClientUser;
use crate::model::case::{
    EntityRef, IdStyle, RollbackSwitch, RolloutStage, Start, Step, StopPath, Surface,
};
use crate::model::values::{EXACT_SIZE_FIELD, ValueKind};
use khala_runtime::SinkMode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The fixed attributes every generated entity is created with (the driver
/// creates them the same way).
pub const OWNER_USER_ID: i64 = 7;
pub const WORKSPACE_REF: &str = "ws_1";
pub use crate::model::values::WORKER_REGION;

/// The build-time variable that turns `surface`'s Khala lane on (§9.1).
pub fn flag_variable(surface: Surface) -> &'static str {
    match surface {
        Surface::Web => "VITE_KHALA_SYNC_ENABLED",
        Surface::Mobile => "EXPO_PUBLIC_KHALA_SYNC_ENABLED",
        Surface::Desktop => "OA_DESKTOP_KHALA_SYNC_ENABLED",
    }
}

/// Keys whose values depend on wall-clock stamps; the oracle does not
/// predict them (cross-store checks compare them instead).
pub const TIMESTAMP_KEYS: [&str; 7] = [
    "latest_event_at",
    "terminal_at",
    "updated_at",
    "started_at",
    "stopped_at",
    "last_heartbeat_at",
    "projected_at",
];

#[derive(Clone, Debug, Default, PartialEq)]
struct RunTruth {
    event_types: Vec<&'static str>,
    /// The seqs of the event rows an operator removed (`RemoveEvents`).
    removed: BTreeSet<i64>,
    status: &'static str,
    terminal_reason_class: Option<&'static str>,
    terminal_reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct WorkerTruth {
    event_types: Vec<&'static str>,
    /// The seqs of the event rows an operator removed (`RemoveEvents`).
    removed: BTreeSet<i64>,
    status: &'static str,
    /// The owner: a user id, or else a guest scope.
    owner_guest_scope: Option<String>,
    workspace_ref: Option<String>,
    codex_home_ref: Option<String>,
    /// The metadata as the authority row holds it (Postgres `jsonb`).
    metadata: Value,
    /// Every document this worker had to show while Convex could hold it,
    /// oldest first: what the stores may show while it cannot.
    holdable: Vec<Value>,
}

impl WorkerTruth {
    /// A worker as its first step creates it.
    fn fresh() -> Self {
        WorkerTruth {
            status: "running",
            workspace_ref: Some(WORKSPACE_REF.to_owned()),
            metadata: json!({"region": WORKER_REGION}),
            ..WorkerTruth::default()
        }
    }

    /// The truth without the documents it had to show (`holdable`).
    fn now(&self) -> Self {
        WorkerTruth {
            event_types: self.event_types.clone(),
            removed: self.removed.clone(),
            status: self.status,
            owner_guest_scope: self.owner_guest_scope.clone(),
            workspace_ref: self.workspace_ref.clone(),
            codex_home_ref: self.codex_home_ref.clone(),
            metadata: self.metadata.clone(),
            holdable: Vec::new(),
        }
    }

    /// A `ReportWorkerMetadata` step: the authority row takes the metadata
    /// as Postgres keeps it and the worker appends a heartbeat.
    fn report_metadata(&mut self, metadata: &Value) {
        self.metadata = as_postgres_stores(metadata.clone());
        self.event_types.push("worker.heartbeat");
    }

    /// Which timestamp keys of the worker's document are set (see
    /// `Oracle::timestamps_set`).
    fn timestamps_set(&self) -> Vec<(&'static str, bool)> {
        let evented = !self.event_types.is_empty();
        vec![
            ("latest_event_at", evented),
            ("started_at", true),
            ("stopped_at", self.status == "stopped"),
            ("last_heartbeat_at", evented),
            ("updated_at", true),
            ("projected_at", true),
        ]
    }
}

/// The reference state after some prefix of a case.
#[derive(Clone, Debug, PartialEq)]
pub struct Oracle {
    ids: IdStyle,
    /// Put before every entity id (and so every document id) the case
    /// writes; empty except against an external Convex deployment, where
    /// each play writes under a namespace of its own (see
    /// `play::driver::Namespaces`).
    namespace: String,
    sink_mode: SinkMode,
    projection_version: u32,
    runs: BTreeMap<u8, RunTruth>,
    workers: BTreeMap<u8, WorkerTruth>,
    /// Each (surface, user)'s flag variable, as written (absent: unset).
    flags: BTreeMap<(Surface, ClientUser), String>,
    rollout_stage: Option<RolloutStage>,
    auditor_enabled: bool,
    /// How many times the retention job has run.
    retention_runs: u32,
}

/// The projection version string of generation `n` (1 is the default).
pub fn projection_version_name(generation: u32) -> String {
    if generation <= 1 {
        "convex_summary_v1".to_owned()
    } else {
        format!("convex_summary_v{generation}")
    }
}

impl Oracle {
    pub fn new(ids: IdStyle, sink_mode: SinkMode) -> Self {
        Oracle {
            ids,
            namespace: String::new(),
            sink_mode,
            projection_version: 1,
            runs: BTreeMap::new(),
            workers: BTreeMap::new(),
            flags: BTreeMap::new(),
            rollout_stage: None,
            auditor_enabled: true,
            retention_runs: 0,
        }
    }

    /// The state before a case's first step.
    pub fn at_start(ids: IdStyle, start: &Start) -> Self {
        let mut oracle = Oracle::new(ids, start.sink_mode);
        for surface in Surface::ALL {
            oracle.set_surface_flag(surface, start.flags.get(surface).then_some("true"));
        }
        if let Some(stage) = start.rollout_stage {
            oracle.set_stage(stage);
        }
        oracle
    }

    /// The same oracle with every entity id under `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.namespace);
        self
    }

    pub fn sink_mode(&self) -> SinkMode {
        self.sink_mode
    }

    /// Whether `user`'s client on `surface` runs its Khala lane: its flag
    /// variable read as its user means it (spec §9.1). Web and mobile
    /// take exactly `"true"`; the desktop takes the config parser's
    /// answer, `true`, `1` or `yes` in any case and padding, whatever the
    /// profile: legacy's preload passing `=== "true"` (B23) is the defect
    /// X3 `lane_flag_misread` finds, not what the user asked for.
    pub fn flag(&self, surface: Surface, user: ClientUser) -> bool {
        let Some(value) = self.flag_value(surface, user) else {
            return false;
        };
        match surface {
            Surface::Web | Surface::Mobile => value == "true",
            Surface::Desktop => {
                ["true", "1", "yes"].contains(&value.trim().to_ascii_lowercase().as_str())
            }
        }
    }

    /// `user`'s build environment: every surface's flag variable, as the
    /// user wrote it (unset ones absent). The names are the spec's (§9.1),
    /// written here and not taken from the client model, so a client that
    /// reads the wrong variable is caught.
    pub fn build_environment(&self, user: ClientUser) -> BTreeMap<&'static str, String> {
        Surface::ALL
            .into_iter()
            .filter_map(|surface| {
                let value = self.flag_value(surface, user)?;
                Some((flag_variable(surface), value.to_owned()))
            })
            .collect()
    }

    /// `user`'s flag variable on `surface` as written; `None`: unset.
    pub fn flag_value(&self, surface: Surface, user: ClientUser) -> Option<&str> {
        self.flags.get(&(surface, user)).map(String::as_str)
    }

    /// Whether any user of `surface` runs the Khala lane.
    pub fn surface_flag(&self, surface: Surface) -> bool {
        ClientUser::ALL.iter().any(|user| self.flag(surface, *user))
    }

    pub fn rollout_stage(&self) -> Option<RolloutStage> {
        self.rollout_stage
    }

    pub fn auditor_enabled(&self) -> bool {
        self.auditor_enabled
    }

    /// Whether the retention job has run: the journal may no longer start
    /// at watermark 1.
    pub fn retention_ran(&self) -> bool {
        self.retention_runs > 0
    }

    /// What every client lane must show once settled: the document of each
    /// worker (the one topic the web and mobile surfaces subscribe to, spec
    /// §7.1), by document id.
    pub fn client_documents(&self) -> BTreeMap<String, Value> {
        self.workers
            .keys()
            .filter_map(|index| {
                let entity = EntityRef::Worker(*index);
                Some((self.document_id(entity), self.expected_document(entity)?))
            })
            .collect()
    }

    fn set_surface_flag(&mut self, surface: Surface, value: Option<&str>) {
        for user in ClientUser::ALL {
            self.set_flag(surface, user, value);
        }
    }

    fn set_flag(&mut self, surface: Surface, user: ClientUser, value: Option<&str>) {
        match value {
            Some(value) => self.flags.insert((surface, user), value.to_owned()),
            None => self.flags.remove(&(surface, user)),
        };
    }

    /// A stage sets `"true"` for the users of its cohort and unsets the
    /// others' flags.
    fn set_stage(&mut self, stage: RolloutStage) {
        self.rollout_stage = Some(stage);
        for surface in Surface::ALL {
            for user in ClientUser::ALL {
                self.set_flag(surface, user, user.in_stage(stage).then_some("true"));
            }
        }
    }

    pub fn projection_version(&self) -> String {
        projection_version_name(self.projection_version)
    }

    /// Applies one step to the truth. Faults, heals and projections do not
    /// change what users should eventually see.
    pub fn apply(&mut self, step: &Step) {
        match step {
            Step::AppendRunEvent { run, event_type } => {
                self.run(*run).event_types.push(event_type.as_str());
            }
            Step::FinishRun {
                run,
                status,
                reason,
            } => {
                let truth = self.run(*run);
                truth.event_types.push("run.finished");
                truth.status = status.as_str();
                truth.terminal_reason_class = Some(status.as_str());
                truth.terminal_reason = reason.value();
            }
            Step::CreateWorker {
                worker,
                owner_guest_scope,
                workspace_ref,
                codex_home_ref,
            } => {
                if !self.workers.contains_key(worker) {
                    let truth = self.worker(*worker);
                    truth.event_types.push("worker.started");
                    truth.owner_guest_scope = owner_guest_scope.value();
                    truth.workspace_ref = workspace_ref.value();
                    truth.codex_home_ref = codex_home_ref.value();
                }
            }
            Step::AppendWorkerEvent { worker, event_type } => {
                self.worker(*worker).event_types.push(event_type.as_str());
            }
            Step::ReportWorkerMetadata {
                worker,
                value,
                variant,
            } => {
                let metadata = self.metadata_sent(*worker, *value, *variant);
                self.worker(*worker).report_metadata(&metadata);
            }
            Step::StopWorker {
                worker,
                path: StopPath::Stop | StopPath::Ingest,
            } => {
                let truth = self.worker(*worker);
                truth.event_types.push("worker.stopped");
                truth.status = "stopped";
            }
            Step::SwitchSinkMode { mode } => self.sink_mode = *mode,
            Step::RunRetention | Step::RunRetentionAtRow { .. } | Step::RunRetentionAtCursor => {
                self.retention_runs += 1
            }
            Step::RemoveEvents { entity, count } => {
                if let Some((events, removed)) = self.events_mut(*entity) {
                    remove_below_newest(events, removed, *count);
                }
            }
            Step::BumpProjectionVersion => self.projection_version += 1,
            Step::SetClientFlag { surface, value } => {
                self.set_surface_flag(*surface, value.as_deref());
            }
            Step::SetRolloutStage { stage } => self.set_stage(*stage),
            Step::Rollback { switch } => match switch {
                RollbackSwitch::ClientFlags => {
                    for surface in Surface::ALL {
                        self.set_surface_flag(surface, None);
                    }
                }
                RollbackSwitch::RuntimeConvexOnly => self.sink_mode = SinkMode::ConvexOnly,
                RollbackSwitch::DisableAuditor => self.auditor_enabled = false,
            },
            Step::DuplicateDelivery { .. }
            | Step::Reproject { .. }
            | Step::BreakConvex { .. }
            | Step::BreakKhala { .. }
            | Step::ConvexOutage { .. }
            | Step::AuditorCycle
            | Step::DisconnectClient { .. }
            | Step::ReconnectClient { .. }
            | Step::RestartSyncServer
            | Step::AdvanceTime { .. }
            | Step::ReloadShippedClient { .. }
            | Step::Heal
            | Step::Quiesce => {}
        }
        self.remember_holdable_documents();
    }

    /// Keeps each worker's document while Convex can hold it.
    fn remember_holdable_documents(&mut self) {
        let indices: Vec<u8> = self.workers.keys().copied().collect();
        for index in indices {
            let entity = EntityRef::Worker(index);
            if self.convex_refusal(entity).is_some() {
                continue;
            }
            let Some(document) = self.truth_document(entity) else {
                continue;
            };
            let truth = self.workers.get_mut(&index).expect("listed above");
            if truth.holdable.last() != Some(&document) {
                truth.holdable.push(document);
            }
        }
    }

    /// Why Convex cannot hold the entity's document as the runtime's
    /// truth makes it, if it cannot: its projection must then be refused
    /// before any store is written, and the stores keep an older document.
    pub fn convex_refusal(&self, entity: EntityRef) -> Option<String> {
        convex_refusal(&self.sized_document(entity)?)
    }

    /// Every document the entity had to show while Convex could hold it: a
    /// store may show any of them while the entity's truth is refused.
    pub fn holdable_documents(&self, entity: EntityRef) -> &[Value] {
        match entity {
            EntityRef::Worker(index) => self
                .workers
                .get(&index)
                .map_or(&[], |truth| truth.holdable.as_slice()),
            EntityRef::Run(_) => &[],
        }
    }

    fn run(&mut self, index: u8) -> &mut RunTruth {
        self.runs.entry(index).or_insert_with(|| RunTruth {
            status: "created",
            ..RunTruth::default()
        })
    }

    fn worker(&mut self, index: u8) -> &mut WorkerTruth {
        self.workers.entry(index).or_insert_with(WorkerTruth::fresh)
    }

    /// The entity's event count and removed seqs, if it exists.
    fn events_mut(&mut self, entity: EntityRef) -> Option<(usize, &mut BTreeSet<i64>)> {
        match entity {
            EntityRef::Run(index) => self
                .runs
                .get_mut(&index)
                .map(|truth| (truth.event_types.len(), &mut truth.removed)),
            EntityRef::Worker(index) => self
                .workers
                .get_mut(&index)
                .map(|truth| (truth.event_types.len(), &mut truth.removed)),
        }
    }

    /// How many event rows below `seq` an operator removed: a summary
    /// built at `seq` counts between `seq` less that many and `seq` events
    /// (spec §2.3: `event_count` is the number of rows, `latest_seq` the
    /// last one's seq), depending on when it was built.
    pub fn removed_below(&self, entity: EntityRef, seq: i64) -> i64 {
        let removed = match entity {
            EntityRef::Run(index) => self.runs.get(&index).map(|truth| &truth.removed),
            EntityRef::Worker(index) => self.workers.get(&index).map(|truth| &truth.removed),
        };
        removed.map_or(0, |removed| removed.range(..seq).count() as i64)
    }

    /// Every entity that exists, runs first.
    pub fn entities(&self) -> Vec<EntityRef> {
        let runs = self.runs.keys().map(|index| EntityRef::Run(*index));
        runs.chain(self.workers.keys().map(|index| EntityRef::Worker(*index)))
            .collect()
    }

    pub fn entity_id(&self, entity: EntityRef) -> String {
        let id = match entity {
            EntityRef::Run(index) => self.ids.run_id(index),
            EntityRef::Worker(index) => self.ids.worker_id(index),
        };
        format!("{}{id}", self.namespace)
    }

    pub fn document_id(&self, entity: EntityRef) -> String {
        let prefix = match entity {
            EntityRef::Run(_) => "runtime/run_summary:",
            EntityRef::Worker(_) => "runtime/codex_worker_summary:",
        };
        format!("{prefix}{}", self.entity_id(entity))
    }

    /// The runtime's latest seq of an entity (0 if it does not exist).
    pub fn latest_seq(&self, entity: EntityRef) -> i64 {
        let count = match entity {
            EntityRef::Run(index) => self
                .runs
                .get(&index)
                .map_or(0, |truth| truth.event_types.len()),
            EntityRef::Worker(index) => self
                .workers
                .get(&index)
                .map_or(0, |truth| truth.event_types.len()),
        };
        count as i64
    }

    /// The document users must eventually see, without the timestamp keys:
    /// the truth's, or while Convex cannot hold that, the last one it
    /// could (none if there never was one).
    pub fn expected_document(&self, entity: EntityRef) -> Option<Value> {
        let document = self.truth_document(entity)?;
        if self.convex_refusal(entity).is_none() {
            return Some(document);
        }
        self.holdable_documents(entity).last().cloned()
    }

    /// Which timestamp keys of the entity's document must be set rather
    /// than `null`: the oracle does not predict their instants, but which
    /// exist follows from the truth (spec §2.4, §2.5, §5.6): the newest
    /// event's instant once there are events, a run's `terminal_at` once
    /// it finished, a worker's `stopped_at` once it stopped and its
    /// `last_heartbeat_at` once it appended an event (every worker append
    /// stamps it, spec §2.7); `updated_at`, `started_at` and
    /// `projected_at` always (the columns are NOT NULL).
    pub fn timestamps_set(&self, entity: EntityRef) -> Vec<(&'static str, bool)> {
        match entity {
            EntityRef::Run(index) => self.runs.get(&index).map_or_else(Vec::new, |truth| {
                vec![
                    ("latest_event_at", !truth.event_types.is_empty()),
                    ("terminal_at", truth.terminal_reason_class.is_some()),
                    ("updated_at", true),
                    ("projected_at", true),
                ]
            }),
            EntityRef::Worker(index) => self
                .workers
                .get(&index)
                .map_or_else(Vec::new, WorkerTruth::timestamps_set),
        }
    }

    /// The document of the runtime's truth, without the timestamp keys.
    fn truth_document(&self, entity: EntityRef) -> Option<Value> {
        let document_id = self.document_id(entity);
        let version = self.projection_version();
        match entity {
            EntityRef::Run(index) => {
                let truth = self.runs.get(&index)?;
                let run_id = self.entity_id(entity);
                let seq = truth.event_types.len();
                let count = seq - truth.removed.len();
                Some(json!({
                    "document_id": document_id,
                    "kind": "run_summary",
                    "run_id": run_id,
                    "thread_id": format!("thread_{run_id}"),
                    "status": truth.status,
                    "owner_user_id": OWNER_USER_ID,
                    "owner_guest_scope": null,
                    "latest_seq": seq,
                    "event_count": count,
                    "latest_event_type": truth.event_types.last(),
                    "terminal_reason_class": truth.terminal_reason_class,
                    "terminal_reason": truth.terminal_reason,
                    "runtime_source": {"entity": "run", "run_id": run_id, "seq": seq},
                    "projection_version": version,
                }))
            }
            EntityRef::Worker(index) => {
                Some(self.worker_document(index, self.workers.get(&index)?))
            }
        }
    }

    /// The document of a worker whose truth is `truth`, without the
    /// timestamp keys.
    fn worker_document(&self, index: u8, truth: &WorkerTruth) -> Value {
        let entity = EntityRef::Worker(index);
        let worker_id = self.entity_id(entity);
        let document_id = self.document_id(entity);
        let version = self.projection_version();
        let seq = truth.event_types.len();
        let count = seq - truth.removed.len();
        json!({
            "document_id": document_id,
            "kind": "codex_worker_summary",
            "worker_id": worker_id,
            "status": truth.status,
            "owner_user_id": truth.owner_guest_scope.is_none().then_some(OWNER_USER_ID),
            "owner_guest_scope": truth.owner_guest_scope,
            "workspace_ref": truth.workspace_ref,
            "codex_home_ref": truth.codex_home_ref,
            "adapter": "in_memory",
            "metadata": truth.metadata,
            "latest_seq": seq,
            "event_count": count,
            "latest_event_type": truth.event_types.last(),
            "runtime_source": {"entity": "codex_worker", "worker_id": worker_id, "seq": seq},
            "projection_version": version,
        })
    }

    /// The entity's document as the stores hold it, to the byte as Convex
    /// counts it: the truth with every timestamp key, those set as an
    /// instant of the width the runtime writes.
    pub fn sized_document(&self, entity: EntityRef) -> Option<Value> {
        let document = self.truth_document(entity)?;
        Some(with_timestamps(document, self.timestamps_set(entity)))
    }

    /// The metadata a `ReportWorkerMetadata` step sends: the variant's,
    /// and for `exact_size` with its padding as long as brings the worker's
    /// stored document after the step to the variant's size, to the byte.
    pub fn metadata_sent(&self, worker: u8, value: ValueKind, variant: u8) -> Value {
        let mut metadata = value.metadata(variant);
        let Some(target) = value.exact_size(variant) else {
            return metadata;
        };
        let mut after = self
            .workers
            .get(&worker)
            .map_or_else(WorkerTruth::fresh, WorkerTruth::now);
        after.report_metadata(&metadata);
        let document =
            with_timestamps(self.worker_document(worker, &after), after.timestamps_set());
        if let Ok((bytes, _)) = stored_measure(&document) {
            metadata[EXACT_SIZE_FIELD] = Value::from("x".repeat(target.saturating_sub(bytes)));
        }
        metadata
    }
}

/// `RemoveEvents` on an entity with `events` events (seqs `1..=events`):
/// up to `count` of the rows just below the newest that are still there
/// are removed; the newest always stays.
fn remove_below_newest(events: usize, removed: &mut BTreeSet<i64>, count: u8) {
    let newest = events as i64;
    let doomed: Vec<i64> = (1..newest)
        .rev()
        .filter(|seq| !removed.contains(seq))
        .take(usize::from(count))
        .collect();
    removed.extend(doomed);
}

/// A value as a Postgres `jsonb` column gives it back: numbers are
/// decimals, which have no negative zero (`-0.0` comes back `0.0`).
pub fn as_postgres_stores(value: Value) -> Value {
    match value {
        Value::Number(number) if number.as_f64() == Some(0.0) && number.is_f64() => json!(0.0),
        Value::Array(items) => Value::Array(items.into_iter().map(as_postgres_stores).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (key, as_postgres_stores(item)))
                .collect(),
        ),
        other => other,
    }
}

/// The bytes of the system fields Convex adds to every document it stores
/// (`_id`, 32 characters, and `_creationTime`, a Float64), as it counts
/// them.
const SYSTEM_FIELD_BYTES: usize = (3 + 1 + 34) + (13 + 1 + 9);

/// An instant as the runtime writes every timestamp (`clock::iso8601`:
/// always 27 characters), standing for the ones the oracle does not
/// predict when it sizes a document.
const ANY_INSTANT: &str = "2026-01-01T00:00:00.000000Z";

/// Why Convex would refuse the summary `document` or hold it as another
/// value (`../shared/spec/real-systems.md` §1.1), if it would. The
/// runtime's Convex functions store it as `{document_id, summary}` (spec
/// §4.3), one level down: a field name that is not printable ASCII or
/// starts with `$` or is over 1024 characters, an object over 1024 fields,
/// an array over 8192 elements, an integer beyond ±2^53 (held as its
/// nearest Float64), a stored document nested over 16 levels or over 1 MiB.
/// The size is exact: `document` carries every key of the summary,
/// timestamps included.
pub fn convex_refusal(document: &Value) -> Option<String> {
    match stored_measure(document) {
        Err(reason) => Some(reason),
        Ok((_, nesting)) if nesting > 16 => Some(format!("stored nested {nesting} levels")),
        Ok((bytes, _)) if bytes > 1 << 20 => Some(format!("stored {bytes} bytes")),
        Ok(_) => None,
    }
}

/// The size in Convex's bytes and the nesting of the document Convex
/// stores for the summary `document`, or the first value it refuses.
fn stored_measure(document: &Value) -> Result<(usize, usize), String> {
    // (size in Convex's bytes, nesting) of a value, or the first refusal.
    fn walk(value: &Value) -> Result<(usize, usize), String> {
        Ok(match value {
            Value::Null | Value::Bool(_) => (1, 0),
            Value::Number(number) => match (number.as_i64(), number.as_u64()) {
                (Some(integer), _) if integer.unsigned_abs() > 1 << 53 => {
                    return Err(format!("integer {integer} beyond 2^53"));
                }
                (None, Some(integer)) => return Err(format!("integer {integer} beyond 2^53")),
                _ => (9, 0),
            },
            Value::String(text) => (text.len() + 2, 0),
            Value::Array(items) if items.len() > 8192 => {
                return Err(format!("array of {} elements", items.len()));
            }
            Value::Object(map) if map.len() > 1024 => {
                return Err(format!("object of {} fields", map.len()));
            }
            Value::Array(items) => items.iter().try_fold((2, 1), |(size, depth), item| {
                let (item_size, item_depth) = walk(item)?;
                Ok::<_, String>((size + item_size, depth.max(item_depth + 1)))
            })?,
            Value::Object(map) => map.iter().try_fold((2, 1), |(size, depth), (key, item)| {
                let printable = key.chars().all(|c| (' '..='~').contains(&c));
                if !printable || key.starts_with('$') || key.chars().count() > 1024 {
                    return Err(format!("field name {key:?}"));
                }
                let (item_size, item_depth) = walk(item)?;
                Ok((size + key.len() + 1 + item_size, depth.max(item_depth + 1)))
            })?,
        })
    }
    // `{document_id, summary}`, with the summary counted apart (uncopied).
    let wrapper = json!({
        "document_id": document.get("document_id").cloned().unwrap_or(Value::Null),
        "summary": null,
    });
    let (wrapper_bytes, _) = walk(&wrapper)?;
    let (bytes, nesting) = walk(document)?;
    Ok((wrapper_bytes - 1 + bytes + SYSTEM_FIELD_BYTES, nesting + 1))
}

/// `document` with the timestamp keys `set` names: those set as an
/// instant of the width the runtime writes, the others `null`.
fn with_timestamps(mut document: Value, set: Vec<(&'static str, bool)>) -> Value {
    for (key, set) in set {
        document[key] = if set {
            Value::from(ANY_INSTANT)
        } else {
            Value::Null
        };
    }
    document
}

/// A stored document without the keys the oracle does not predict.
pub fn semantic_part(document: &Value) -> Value {
    match document {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !TIMESTAMP_KEYS.contains(&key.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::KhalaFault;
    use crate::model::case::{RunEventType, TerminalStatus, WorkerEventType};

    #[test]
    fn a_finished_run_is_predicted_with_its_terminal_status_and_all_events() {
        let mut oracle = Oracle::new(IdStyle::Plain, SinkMode::Dual);
        oracle.apply(&Step::AppendRunEvent {
            run: 0,
            event_type: RunEventType::Started,
        });
        oracle.apply(&Step::FinishRun {
            run: 0,
            status: TerminalStatus::Succeeded,
            reason: crate::model::values::Text {
                kind: crate::model::values::TextKind::Control,
                variant: 0,
            },
        });
        let document = oracle.expected_document(EntityRef::Run(0)).unwrap();
        assert_eq!(document["status"], "succeeded");
        assert_eq!(document["terminal_reason"], " padded\t\n");
        assert_eq!(document["latest_seq"], 2);
        assert_eq!(document["latest_event_type"], "run.finished");
        assert_eq!(document["runtime_source"]["seq"], 2);
        assert_eq!(oracle.expected_document(EntityRef::Run(1)), None);
    }

    #[test]
    fn a_namespace_prefixes_every_id_and_nothing_else() {
        let plain = Oracle::new(IdStyle::Long, SinkMode::Dual);
        let mut spaced = plain.clone().in_namespace("kp1-7.");
        let mut plain = plain;
        let steps = [
            Step::AppendRunEvent {
                run: 2,
                event_type: RunEventType::Started,
            },
            Step::AppendWorkerEvent {
                worker: 1,
                event_type: WorkerEventType::Heartbeat,
            },
        ];
        for step in &steps {
            plain.apply(step);
            spaced.apply(step);
        }
        let run = EntityRef::Run(2);
        let worker = EntityRef::Worker(1);
        assert_eq!(
            spaced.entity_id(run),
            format!("kp1-7.{}", plain.entity_id(run))
        );
        assert_eq!(
            spaced.document_id(worker),
            format!(
                "runtime/codex_worker_summary:kp1-7.{}",
                plain.entity_id(worker)
            )
        );
        let mut document = spaced.expected_document(run).unwrap();
        assert_eq!(document["document_id"], spaced.document_id(run).as_str());
        assert_eq!(
            document["runtime_source"]["run_id"],
            spaced.entity_id(run).as_str()
        );
        assert_eq!(
            document["thread_id"],
            format!("thread_{}", spaced.entity_id(run)).as_str()
        );
        // Without the ids, the documents are the same.
        let mut expected = plain.expected_document(run).unwrap();
        for key in ["document_id", "run_id", "thread_id", "runtime_source"] {
            document[key] = Value::Null;
            expected[key] = Value::Null;
        }
        assert_eq!(document, expected);
        let worker_document = spaced.expected_document(worker).unwrap();
        assert_eq!(
            worker_document["worker_id"],
            spaced.entity_id(worker).as_str()
        );
    }

    #[test]
    fn faults_and_projections_do_not_change_the_truth_but_bumps_and_switches_do() {
        let mut oracle = Oracle::new(IdStyle::Plain, SinkMode::Noop);
        oracle.apply(&Step::AppendWorkerEvent {
            worker: 3,
            event_type: WorkerEventType::Heartbeat,
        });
        let before = oracle.clone();
        for step in [
            Step::BreakKhala {
                fault: KhalaFault::ReadModel,
            },
            Step::Heal,
            Step::Quiesce,
            Step::DuplicateDelivery {
                entity: EntityRef::Worker(3),
            },
        ] {
            oracle.apply(&step);
        }
        assert_eq!(oracle, before);
        oracle.apply(&Step::BumpProjectionVersion);
        oracle.apply(&Step::SwitchSinkMode {
            mode: SinkMode::KhalaOnly,
        });
        assert_eq!(oracle.projection_version(), "convex_summary_v2");
        assert_eq!(oracle.sink_mode(), SinkMode::KhalaOnly);
        assert_eq!(oracle.entities(), [EntityRef::Worker(3)]);
    }

    #[test]
    fn removed_event_rows_lower_the_count_but_never_the_seq() {
        let mut oracle = Oracle::new(IdStyle::Plain, SinkMode::Dual);
        let run = EntityRef::Run(0);
        let remove = |count| Step::RemoveEvents { entity: run, count };
        // Nothing to remove: no entity, then only its newest row.
        oracle.apply(&remove(2));
        assert_eq!(oracle.expected_document(run), None);
        oracle.apply(&Step::AppendRunEvent {
            run: 0,
            event_type: RunEventType::Started,
        });
        oracle.apply(&remove(2));
        let document = oracle.expected_document(run).unwrap();
        assert_eq!(
            (&document["latest_seq"], &document["event_count"]),
            (&json!(1), &json!(1))
        );
        for _ in 0..4 {
            oracle.apply(&Step::AppendRunEvent {
                run: 0,
                event_type: RunEventType::Delta,
            });
        }
        // Rows 4 and 3 go (just below the newest, 5), then 2 and 1: never 5.
        oracle.apply(&remove(2));
        assert_eq!(oracle.removed_below(run, 5), 2);
        assert_eq!(oracle.removed_below(run, 3), 0);
        oracle.apply(&remove(9));
        let document = oracle.expected_document(run).unwrap();
        assert_eq!(document["latest_seq"], 5);
        assert_eq!(document["runtime_source"]["seq"], 5);
        assert_eq!(document["event_count"], 1);
        assert_eq!(document["latest_event_type"], "run.delta");
        assert_eq!(oracle.latest_seq(run), 5);
        // Later events continue above the gap.
        oracle.apply(&Step::AppendRunEvent {
            run: 0,
            event_type: RunEventType::Delta,
        });
        let document = oracle.expected_document(run).unwrap();
        assert_eq!(
            (&document["latest_seq"], &document["event_count"]),
            (&json!(6), &json!(2))
        );
    }

    #[test]
    fn semantic_part_drops_only_timestamps() {
        let document =
            json!({"latest_seq": 1, "projected_at": "x", "updated_at": "y", "status": "s"});
        assert_eq!(
            semantic_part(&document),
            json!({"latest_seq": 1, "status": "s"})
        );
    }
}
