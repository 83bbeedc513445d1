//! What playing a case leaves behind: each step with what the stores, the
//! auditor and the clients held after it, and the case's result. Plain
//! data, produced by the driver and the delivery part of `play`, judged by
//! `check`, drawn by `report`.

use crate::model::case::{ClientUser, Step, Surface};
use crate::model::observation::Observation;
use crate::model::violation::Violation;
use chrono::NaiveDateTime;
use khala_clients::lane::ViewRegression;
use khala_runtime::auditor::CycleSummary;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// What playing one case produced.
#[derive(Clone, Debug, Default)]
pub struct CaseResult {
    pub steps_run: usize,
    pub violations: Vec<Violation>,
    /// Wall-clock time spent resetting backends before the case.
    pub reset_time: Duration,
    /// What the stores held after each step played, in order; the last
    /// entry is the implicit final quiescence.
    pub trace: Vec<StepTrace>,
}

/// One played step and what it left behind.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepTrace {
    pub index: usize,
    /// The prefix of every entity id the play wrote (empty unless it
    /// played against an external Convex deployment).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub step: Step,
    pub observation: Observation,
    /// The parity auditor's summary, on `auditor_cycle` steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auditor: Option<CycleSummary>,
    /// Every client lane's view (`doc_key → seq`) and what it received,
    /// once the case's first delivery step has started them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<ClientsObservation>,
    /// The documents whose projection the step saw refused because Convex
    /// cannot hold them (the hardened guard's typed error), by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// How a lane reads at the moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneSource {
    /// Flag on: the `sync:v1` socket (and mobile's runtime-API refresh).
    Khala,
    /// Flag off: the runtime API, polled.
    Polling,
}

impl LaneSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LaneSource::Khala => "khala",
            LaneSource::Polling => "polling",
        }
    }
}

/// Which client model a lane runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneKind {
    /// Today's lane model (`khala_clients::ClientLane`): the surface's UI
    /// merge, HTTP re-hydration, and with the B12 fix its own heartbeats.
    #[default]
    Today,
    /// The shipped `KhalaSyncClient` as it is (facts §2).
    Shipped,
}

impl LaneKind {
    pub fn is_today(&self) -> bool {
        *self == LaneKind::Today
    }
}

/// One subscribe a lane sent, with what the harness knew of the topic at
/// that moment (independently of the server's own stale rule).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SubscribeAttempt {
    /// The `resume_after` the lane sent: its stored watermark, if any.
    pub cursor: Option<i64>,
    /// The server answered `stale_cursor`.
    pub stale: bool,
    /// The highest watermark retention has deleted on the topic (0: none),
    /// tracked by the harness from the journal before and after each run.
    pub floor: i64,
    /// The highest watermark ever allocated on the topic.
    pub head: i64,
}

/// The watermarks one lane operation delivered, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRun {
    /// The lane's stored watermark before the operation.
    pub from: Option<i64>,
    /// The lane re-hydrated (over HTTP, or from a snapshot batch on its
    /// socket) during the operation, so its watermark was reset from a
    /// snapshot in between.
    pub rehydrated: bool,
    pub watermarks: Vec<i64>,
}

/// A document in a lane's doc cache (spec §7.9).
#[derive(Clone, Debug, PartialEq)]
pub struct CachedDocument {
    pub doc_version: i64,
    pub payload: Option<Value>,
}

/// One lane after a step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LaneObservation {
    pub surface: Surface,
    pub user: ClientUser,
    /// Left out for today's lanes, so reports of cases without shipped
    /// lanes read as before.
    #[serde(skip_serializing_if = "LaneKind::is_today")]
    pub kind: LaneKind,
    pub source: LaneSource,
    /// False between `DisconnectClient` and its reconnect or heal.
    pub online: bool,
    /// Connected with a channel the server still runs, so pushes reach
    /// it (a Khala lane; false for polling lanes).
    #[serde(skip)]
    pub live: bool,
    /// The lane's worker-topic watermark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// What the user sees: `doc_key → seq`.
    pub view: BTreeMap<String, i64>,
    /// The same documents in full.
    #[serde(skip)]
    pub documents: BTreeMap<String, Value>,
    /// The doc cache, for every document the view or the read model holds.
    #[serde(skip)]
    pub cache: BTreeMap<String, CachedDocument>,
    /// Documents a batch showed at a lower version than before during the
    /// step (a flicker the view after the step may no longer show).
    #[serde(skip)]
    pub regressed_in_step: Vec<ViewRegression>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryRun>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscribes: Vec<SubscribeAttempt>,
    /// The longest stretch of advanced case time, during or up to the end
    /// of this step, in which the lane was online with its flag on but had
    /// no live channel (a stretch still open counts up to now). `None`
    /// when time did not pass or the lane was live throughout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_gap_seconds: Option<i64>,
}

/// What the harness knows of a topic, read from the database and tracked
/// across steps, without the server's rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TopicTruth {
    /// The allocator's counter: the highest watermark ever committed.
    pub allocated_head: i64,
    /// `MAX(watermark)` of the journal now (0 when empty).
    pub journal_head: i64,
    /// The highest watermark any retention run deleted (0: none).
    pub pruned_through: i64,
}

/// One journal row's identity and stamp.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalStamp {
    pub topic: String,
    pub watermark: i64,
    pub inserted_at: NaiveDateTime,
}

/// One retention run: the journal around it and what the job reported.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RetentionRun {
    /// `now − horizon` of the harness's clock when the job ran: the cutoff
    /// spec §7.6 gives the job, computed without it.
    pub expected_cutoff: NaiveDateTime,
    /// The cutoff the job reported.
    pub cutoff: NaiveDateTime,
    pub deleted: u64,
    pub oldest_retained: BTreeMap<String, Option<i64>>,
    #[serde(skip)]
    pub before: Vec<JournalStamp>,
    #[serde(skip)]
    pub after: Vec<JournalStamp>,
}

/// The clients after a step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClientsObservation {
    pub lanes: Vec<LaneObservation>,
    /// Each desktop user's connectivity provider (`khala` or `convex`).
    pub desktop: BTreeMap<ClientUser, &'static str>,
    pub topics: BTreeMap<String, TopicTruth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionRun>,
    /// At quiescence: the time the harness let pass so that every lane's
    /// channel came back (0 when all were live), bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_wait_seconds: Option<i64>,
}

impl ClientsObservation {
    /// Today's lane of a surface and user.
    pub fn lane(&self, surface: Surface, user: ClientUser) -> Option<&LaneObservation> {
        self.lane_of(surface, user, LaneKind::Today)
    }

    pub fn lane_of(
        &self,
        surface: Surface,
        user: ClientUser,
        kind: LaneKind,
    ) -> Option<&LaneObservation> {
        self.lanes
            .iter()
            .find(|lane| lane.surface == surface && lane.user == user && lane.kind == kind)
    }
}
