//! The run's metrics, gathered from case traces: the auditor's cycles under
//! the §8 definitions (all cycles, cycles with no fault active, comparisons
//! at quiescence), steps per action kind, rollback before/after evidence and
//! client catch-ups. The gate's evidence and the Prometheus file come from
//! here.

use crate::check::gate::Evidence;
use crate::check::windows::{ParityWindows, WindowMetrics};
use crate::model::case::ClientUser;
use crate::model::case::{Case, RollbackSwitch, Step, Surface};
use crate::model::trace::LaneSource;
use crate::model::trace::StepTrace;
use khala_runtime::SinkMode;
use khala_runtime::auditor::{CycleStatus, CycleSummary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunMetrics {
    /// Cases whose traces were measured.
    pub cases: u64,
    /// Steps played, by action kind (the names scenario weights use).
    pub steps_by_kind: BTreeMap<String, u64>,
    pub auditor: AuditorMetrics,
    pub delivery: DeliveryMetrics,
    pub rollback: RollbackEvidence,
    /// X8's Khala/Convex divergence windows.
    #[serde(default)]
    pub windows: WindowMetrics,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditorMetrics {
    /// Cycles by `status` (`disabled`, `empty`, `ok`, `mismatch`).
    pub cycles_by_status: BTreeMap<String, u64>,
    /// Every enabled cycle.
    pub all: CycleTotals,
    /// Enabled cycles while no fault was active and the sink mode wrote
    /// Khala: §9.5's "steady state", what the mismatch-rate and
    /// `khala_missing` gates read.
    pub steady: CycleTotals,
    /// `abs_lag_drift` of every comparison at quiescence (steady, and
    /// nothing written since the last `quiesce`): drift → comparisons.
    pub quiescent_abs_lag_drift: BTreeMap<u64, u64>,
}

/// Sums over cycles of the §8 cycle summary fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleTotals {
    pub cycles: u64,
    pub sampled: u64,
    pub mismatches: u64,
    pub missing_documents: u64,
    pub hash_mismatches: u64,
    pub lag_drift_nonzero: u64,
    pub convex_mismatches: u64,
    pub max_abs_lag_drift: u64,
    pub sum_abs_lag_drift: u64,
}

impl CycleTotals {
    fn add_summary(&mut self, summary: &CycleSummary) {
        self.cycles += 1;
        self.sampled += summary.sampled;
        self.mismatches += summary.mismatches;
        self.missing_documents += summary.missing_documents;
        self.hash_mismatches += summary.hash_mismatches;
        self.lag_drift_nonzero += summary.lag_drift_nonzero;
        self.convex_mismatches += summary.convex_mismatches;
        self.max_abs_lag_drift = self
            .max_abs_lag_drift
            .max(summary.max_abs_lag_drift.unsigned_abs());
        // avg = sum / sampled over integer drifts, so this is the sum.
        self.sum_abs_lag_drift +=
            (summary.avg_abs_lag_drift * summary.sampled as f64).round() as u64;
    }

    fn merge(&mut self, other: &CycleTotals) {
        self.cycles += other.cycles;
        self.sampled += other.sampled;
        self.mismatches += other.mismatches;
        self.missing_documents += other.missing_documents;
        self.hash_mismatches += other.hash_mismatches;
        self.lag_drift_nonzero += other.lag_drift_nonzero;
        self.convex_mismatches += other.convex_mismatches;
        self.max_abs_lag_drift = self.max_abs_lag_drift.max(other.max_abs_lag_drift);
        self.sum_abs_lag_drift += other.sum_abs_lag_drift;
    }

    /// `mismatches / sampled` as §8 defines it (0 when nothing was sampled);
    /// `None` when no cycle ran.
    pub fn mismatch_rate(&self) -> Option<f64> {
        if self.cycles == 0 {
            None
        } else if self.sampled == 0 {
            Some(0.0)
        } else {
            Some(self.mismatches as f64 / self.sampled as f64)
        }
    }
}

/// Client catch-ups (`[:sync, :replay, :catchup]`, §7.8) by outcome, and
/// what each surface's lanes did (the evidence of §9.6 items 2–5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryMetrics {
    pub catchups: u64,
    pub stale_cursors: u64,
    /// The longest any online lane with its flag on went without a live
    /// channel, in advanced seconds (L1's gap); `None` when no gap was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_gap_seconds_max: Option<i64>,
    /// By surface (`web`, `mobile`, `desktop`).
    #[serde(default)]
    pub surfaces: BTreeMap<String, SurfaceMetrics>,
}

/// One surface's lanes over the run, counted per lane and step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceMetrics {
    /// Lane-steps on the Khala lane (flag on).
    pub khala_lane_steps: u64,
    /// Watermarks delivered to Khala lanes: live updates.
    pub delivered: u64,
    /// Lanes that went from Khala to polling (a flag off: the fallback).
    pub fallbacks: u64,
    /// Lanes that went from polling back to Khala (re-enabled: recovery).
    pub recoveries: u64,
    /// Desktop only: lane-steps whose connectivity provider was Khala.
    pub khala_provider_steps: u64,
}

impl DeliveryMetrics {
    pub fn stale_cursor_rate(&self) -> Option<f64> {
        (self.catchups > 0).then(|| self.stale_cursors as f64 / self.catchups as f64)
    }

    fn note_liveness_gap(&mut self, gap: Option<i64>) {
        if let Some(gap) = gap {
            let longest = self
                .liveness_gap_seconds_max
                .map_or(gap, |longest| longest.max(gap));
            self.liveness_gap_seconds_max = Some(longest);
        }
    }
}

/// What rollbacks did to the auditor's view: every cycle of a case before
/// its first `rollback` step, and every cycle after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackEvidence {
    /// Rollback steps by switch.
    pub rollbacks: BTreeMap<String, u64>,
    /// Cases with at least one rollback.
    pub cases: u64,
    pub before: CycleTotals,
    pub after: CycleTotals,
}

/// The nearest-rank p95 of a distribution given as value → count.
pub fn p95(distribution: &BTreeMap<u64, u64>) -> Option<u64> {
    let total: u64 = distribution.values().sum();
    if total == 0 {
        return None;
    }
    let rank = (total * 95).div_ceil(100);
    let mut seen = 0;
    for (value, count) in distribution {
        seen += count;
        if seen >= rank {
            return Some(*value);
        }
    }
    distribution.keys().next_back().copied()
}

impl RunMetrics {
    /// Adds one played case, not knowing its start: the case is taken to
    /// start in a sink mode that writes Khala. Prefer `observe_played_case`.
    pub fn observe_case(&mut self, trace: &[StepTrace]) {
        self.observe_trace(SinkMode::Dual, trace);
    }

    /// Adds one played case.
    pub fn observe_played_case(&mut self, case: &Case, trace: &[StepTrace]) {
        self.observe_trace(case.start.sink_mode, trace);
    }

    fn observe_trace(&mut self, start_mode: SinkMode, trace: &[StepTrace]) {
        self.cases += 1;
        // The §9.5 gates judge a deployment that writes Khala: cycles while
        // the sink mode does not (noop, or convex_only after a rollback)
        // compare checkpoints with a store nobody writes (§9.4: their
        // mismatches grow), so they count in `all` and as rollback evidence
        // only.
        let mut writes_khala = start_mode.writes_khala();
        let mut fault_active = false;
        let mut quiescent = true;
        // Each lane's source at the previous step: on Khala or not.
        let mut lane_sources: BTreeMap<(Surface, ClientUser), bool> = BTreeMap::new();
        let mut rolled_back = false;
        // A summary Convex cannot hold is a fault of the input: V1 judges
        // how it is refused, and from then on a refused entity's checkpoint
        // may stay ahead of stores that refused it (one projected under
        // noop, say), which the auditor rightly reports but which is no
        // steady state of the deployment.
        let mut refusal_seen = false;
        let mut windows = ParityWindows::new(start_mode);
        for entry in trace {
            let step = &entry.step;
            refusal_seen |= !entry.refused.is_empty();
            // Violations were recorded as the case played; here only the
            // windows' lengths count.
            let _ = windows.observe(entry.index, step, &entry.observation);
            *self
                .steps_by_kind
                .entry(step.kind().name().to_owned())
                .or_default() += 1;
            match step {
                Step::BreakConvex { .. } | Step::BreakKhala { .. } | Step::ConvexOutage { .. } => {
                    fault_active = true;
                    quiescent = false;
                }
                // A healed fault leaves drift until the catch-up at
                // quiescence repairs it: its window ends there, not here.
                Step::Quiesce => {
                    fault_active = false;
                    quiescent = true;
                }
                Step::SwitchSinkMode { mode } => {
                    writes_khala = mode.writes_khala();
                    quiescent = false;
                }
                Step::Rollback { switch } => {
                    if *switch == RollbackSwitch::RuntimeConvexOnly {
                        writes_khala = false;
                    }
                    let name = serde_json::to_value(switch)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    *self.rollback.rollbacks.entry(name).or_default() += 1;
                    if !rolled_back {
                        self.rollback.cases += 1;
                    }
                    rolled_back = true;
                    quiescent = false;
                }
                Step::AppendRunEvent { .. }
                | Step::FinishRun { .. }
                | Step::AppendWorkerEvent { .. }
                | Step::StopWorker { .. }
                | Step::ReportWorkerMetadata { .. }
                | Step::DuplicateDelivery { .. }
                | Step::Reproject { .. }
                | Step::BumpProjectionVersion => quiescent = false,
                _ => {}
            }
            if let Some(clients) = &entry.clients {
                for provider in clients.desktop.values() {
                    if *provider == "khala" {
                        self.delivery
                            .surfaces
                            .entry("desktop".to_owned())
                            .or_default()
                            .khala_provider_steps += 1;
                    }
                }
                for lane in &clients.lanes {
                    let on_khala = lane.source == LaneSource::Khala;
                    let surface = self
                        .delivery
                        .surfaces
                        .entry(lane.surface.as_str().to_owned())
                        .or_default();
                    if on_khala {
                        surface.khala_lane_steps += 1;
                        surface.delivered += lane
                            .deliveries
                            .iter()
                            .map(|run| run.watermarks.len() as u64)
                            .sum::<u64>();
                    }
                    match lane_sources.insert((lane.surface, lane.user), on_khala) {
                        Some(true) if !on_khala => surface.fallbacks += 1,
                        Some(false) if on_khala => surface.recoveries += 1,
                        _ => {}
                    }
                    self.delivery.catchups += lane.subscribes.len() as u64;
                    if lane.online && on_khala {
                        self.delivery.note_liveness_gap(lane.liveness_gap_seconds);
                    }
                    self.delivery.stale_cursors += lane
                        .subscribes
                        .iter()
                        .filter(|attempt| attempt.stale)
                        .count() as u64;
                }
            }
            if let Some(summary) = &entry.auditor {
                let steady = writes_khala && !fault_active && !refusal_seen;
                self.observe_cycle(summary, steady, steady && quiescent, rolled_back);
            }
        }
        let last_step = trace.last().map_or(0, |entry| entry.index);
        self.windows.merge(&windows.finish(last_step));
    }

    fn observe_cycle(
        &mut self,
        summary: &CycleSummary,
        steady: bool,
        quiescent: bool,
        after_rollback: bool,
    ) {
        let auditor = &mut self.auditor;
        *auditor
            .cycles_by_status
            .entry(summary.status.as_str().to_owned())
            .or_default() += 1;
        if summary.status == CycleStatus::Disabled {
            return;
        }
        auditor.all.add_summary(summary);
        if steady {
            auditor.steady.add_summary(summary);
        }
        if quiescent {
            // The trace keeps the cycle summary, not each comparison: the
            // nonzero drifts are counted at the cycle's maximum. That bounds
            // the p95 from above, and it is zero exactly when the true p95
            // is (at most 5 % of comparisons drift), which is what the
            // default gate of 0 asks.
            let nonzero = summary.lag_drift_nonzero.min(summary.sampled);
            *auditor.quiescent_abs_lag_drift.entry(0).or_default() += summary.sampled - nonzero;
            if nonzero > 0 {
                *auditor
                    .quiescent_abs_lag_drift
                    .entry(summary.max_abs_lag_drift.unsigned_abs())
                    .or_default() += nonzero;
            }
            auditor
                .quiescent_abs_lag_drift
                .retain(|_, count| *count > 0);
        }
        if after_rollback {
            self.rollback.after.add_summary(summary);
        } else {
            self.rollback.before.add_summary(summary);
        }
    }

    /// Adds one cycle of `khala-parity audit`: a live deployment is the
    /// steady state §9.5 judges, and each comparison's drift counts exactly
    /// (the audit keeps them, where a case's trace keeps the summary only).
    pub fn observe_audit_cycle(&mut self, summary: &CycleSummary, abs_lag_drifts: &[u64]) {
        self.cases += 1;
        let auditor = &mut self.auditor;
        *auditor
            .cycles_by_status
            .entry(summary.status.as_str().to_owned())
            .or_default() += 1;
        auditor.all.add_summary(summary);
        auditor.steady.add_summary(summary);
        for drift in abs_lag_drifts {
            *auditor.quiescent_abs_lag_drift.entry(*drift).or_default() += 1;
        }
    }

    /// Adds another run's metrics.
    pub fn merge(&mut self, other: &RunMetrics) {
        self.cases += other.cases;
        for (kind, count) in &other.steps_by_kind {
            *self.steps_by_kind.entry(kind.clone()).or_default() += count;
        }
        let (auditor, theirs) = (&mut self.auditor, &other.auditor);
        for (status, count) in &theirs.cycles_by_status {
            *auditor.cycles_by_status.entry(status.clone()).or_default() += count;
        }
        auditor.all.merge(&theirs.all);
        auditor.steady.merge(&theirs.steady);
        for (drift, count) in &theirs.quiescent_abs_lag_drift {
            *auditor.quiescent_abs_lag_drift.entry(*drift).or_default() += count;
        }
        self.delivery.catchups += other.delivery.catchups;
        self.delivery.stale_cursors += other.delivery.stale_cursors;
        self.delivery
            .note_liveness_gap(other.delivery.liveness_gap_seconds_max);
        for (name, theirs) in &other.delivery.surfaces {
            let surface = self.delivery.surfaces.entry(name.clone()).or_default();
            surface.khala_lane_steps += theirs.khala_lane_steps;
            surface.delivered += theirs.delivered;
            surface.fallbacks += theirs.fallbacks;
            surface.recoveries += theirs.recoveries;
            surface.khala_provider_steps += theirs.khala_provider_steps;
        }
        for (switch, count) in &other.rollback.rollbacks {
            *self.rollback.rollbacks.entry(switch.clone()).or_default() += count;
        }
        self.rollback.cases += other.rollback.cases;
        self.rollback.before.merge(&other.rollback.before);
        self.rollback.after.merge(&other.rollback.after);
        self.windows.merge(&other.windows);
    }

    /// The gate's measured evidence (violation counts are added by the caller).
    pub fn evidence(&self, scenario: &str) -> Evidence {
        let steady = &self.auditor.steady;
        Evidence {
            scenario: scenario.to_owned(),
            mismatch_rate: steady.mismatch_rate(),
            khala_missing: (steady.cycles > 0).then_some(steady.missing_documents),
            lag_drift_p95: p95(&self.auditor.quiescent_abs_lag_drift).map(|value| value as f64),
            stale_cursor_rate: self.delivery.stale_cursor_rate(),
            longest_explained_window: (self.windows.explained > 0)
                .then_some(self.windows.longest_explained_steps),
            liveness_gap_seconds: self.delivery.liveness_gap_seconds_max,
            ..Evidence::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::KhalaFault;
    use crate::model::observation::Observation;

    fn summary(
        sampled: u64,
        mismatches: u64,
        missing: u64,
        lag_nonzero: u64,
        max_lag: i64,
    ) -> CycleSummary {
        CycleSummary {
            status: if sampled == 0 {
                CycleStatus::Empty
            } else if mismatches == 0 {
                CycleStatus::Ok
            } else {
                CycleStatus::Mismatch
            },
            sampled,
            mismatches,
            missing_documents: missing,
            hash_mismatches: 0,
            lag_drift_nonzero: lag_nonzero,
            convex_mismatches: 0,
            mismatch_rate: if sampled == 0 {
                0.0
            } else {
                mismatches as f64 / sampled as f64
            },
            max_abs_lag_drift: max_lag,
            avg_abs_lag_drift: if sampled == 0 {
                0.0
            } else {
                (lag_nonzero * max_lag as u64) as f64 / sampled as f64
            },
        }
    }

    fn trace(steps: Vec<(Step, Option<CycleSummary>)>) -> Vec<StepTrace> {
        steps
            .into_iter()
            .enumerate()
            .map(|(index, (step, auditor))| StepTrace {
                namespace: String::new(),
                index,
                step,
                observation: Observation::default(),
                auditor,
                clients: None,
                refused: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn p95_is_nearest_rank() {
        assert_eq!(p95(&BTreeMap::new()), None);
        assert_eq!(p95(&BTreeMap::from([(0, 95), (7, 5)])), Some(0));
        assert_eq!(p95(&BTreeMap::from([(0, 94), (7, 6)])), Some(7));
        assert_eq!(p95(&BTreeMap::from([(3, 1)])), Some(3));
    }

    #[test]
    fn cycles_are_split_by_fault_quiescence_and_rollback() {
        use crate::model::case::RollbackSwitch;
        let mut metrics = RunMetrics::default();
        metrics.observe_case(&trace(vec![
            (
                Step::BreakKhala {
                    fault: KhalaFault::ReadModel,
                },
                None,
            ),
            // During a fault: counted in `all` only.
            (Step::AuditorCycle, Some(summary(4, 4, 4, 4, 2))),
            (Step::Quiesce, None),
            // At quiescence: steady and quiescent.
            (Step::AuditorCycle, Some(summary(4, 1, 0, 1, 3))),
            (
                Step::Rollback {
                    switch: RollbackSwitch::ClientFlags,
                },
                None,
            ),
            (Step::AuditorCycle, Some(summary(2, 0, 0, 0, 0))),
        ]));
        let auditor = &metrics.auditor;
        assert_eq!(
            (
                auditor.all.cycles,
                auditor.all.sampled,
                auditor.all.mismatches
            ),
            (3, 10, 5)
        );
        assert_eq!((auditor.steady.cycles, auditor.steady.mismatches), (2, 1));
        assert_eq!(auditor.steady.missing_documents, 0);
        assert_eq!(auditor.all.max_abs_lag_drift, 3);
        assert_eq!(auditor.all.sum_abs_lag_drift, 4 * 2 + 3);
        // A rollback ends quiescence (it may switch the sink).
        assert_eq!(
            auditor.quiescent_abs_lag_drift,
            BTreeMap::from([(0, 3), (3, 1)])
        );
        assert_eq!(metrics.rollback.before.cycles, 2);
        assert_eq!(metrics.rollback.after.cycles, 1);
        assert_eq!(
            metrics.rollback.rollbacks,
            BTreeMap::from([("client_flags".to_owned(), 1)])
        );
        assert_eq!(metrics.steps_by_kind["auditor_cycle"], 3);
        let evidence = metrics.evidence("s");
        assert_eq!(evidence.mismatch_rate, Some(1.0 / 6.0));
        assert_eq!(evidence.khala_missing, Some(0));
        assert_eq!(evidence.lag_drift_p95, Some(3.0));
    }

    /// A hardened case with no steps, starting in `sink_mode`: what the
    /// metrics read of a played case besides its trace.
    fn hardened_case(sink_mode: SinkMode) -> Case {
        use crate::model::case::{CASE_SCHEMA, IdStyle, Start};
        Case {
            schema: CASE_SCHEMA.to_owned(),
            profile: khala_runtime::Profile::Hardened,
            start: Start::new(sink_mode),
            ids: IdStyle::Plain,
            steps: Vec::new(),
            origin: None,
        }
    }

    #[test]
    fn cycles_after_a_refused_summary_are_no_steady_state() {
        let mut trace = trace(vec![
            (Step::AuditorCycle, Some(summary(2, 0, 0, 0, 0))),
            (Step::Quiesce, Some(summary(2, 1, 1, 0, 1))),
            (Step::AuditorCycle, Some(summary(2, 1, 1, 0, 1))),
        ]);
        trace[1].refused = vec!["runtime/codex_worker_summary:worker_0".to_owned()];
        let case = hardened_case(SinkMode::Dual);
        let mut metrics = RunMetrics::default();
        metrics.observe_played_case(&case, &trace);
        assert_eq!(metrics.auditor.all.cycles, 3);
        assert_eq!(
            (
                metrics.auditor.steady.cycles,
                metrics.auditor.steady.mismatches
            ),
            (1, 0)
        );
    }

    #[test]
    fn cycles_without_khala_written_are_no_steady_state() {
        use crate::model::case::RollbackSwitch;
        let trace = trace(vec![
            (Step::AuditorCycle, Some(summary(2, 2, 2, 2, 1))),
            (
                Step::SwitchSinkMode {
                    mode: SinkMode::Dual,
                },
                None,
            ),
            (Step::AuditorCycle, Some(summary(2, 0, 0, 0, 0))),
            (
                Step::Rollback {
                    switch: RollbackSwitch::RuntimeConvexOnly,
                },
                None,
            ),
            (Step::Quiesce, Some(summary(2, 2, 0, 2, 3))),
        ]);
        let case = hardened_case(SinkMode::ConvexOnly);
        let mut metrics = RunMetrics::default();
        metrics.observe_played_case(&case, &trace);
        assert_eq!(metrics.auditor.all.cycles, 3);
        assert_eq!(
            (
                metrics.auditor.steady.cycles,
                metrics.auditor.steady.mismatches
            ),
            (1, 0)
        );
        assert!(metrics.auditor.quiescent_abs_lag_drift.is_empty());
        assert_eq!(metrics.rollback.after.mismatches, 2);
        // Without the case, the start is taken to write Khala.
        let mut unknown_start = RunMetrics::default();
        unknown_start.observe_case(&trace);
        assert_eq!(unknown_start.auditor.steady.cycles, 2);
    }

    fn lane(
        surface: Surface,
        on_khala: bool,
        delivered: &[i64],
        stale: bool,
    ) -> crate::model::trace::LaneObservation {
        use crate::model::trace::{DeliveryRun, LaneKind, LaneObservation, SubscribeAttempt};
        LaneObservation {
            surface,
            user: ClientUser::Internal,
            kind: LaneKind::Today,
            live: true,
            source: if on_khala {
                LaneSource::Khala
            } else {
                LaneSource::Polling
            },
            online: true,
            watermark: None,
            view: BTreeMap::new(),
            documents: BTreeMap::new(),
            cache: BTreeMap::new(),
            regressed_in_step: Vec::new(),
            liveness_gap_seconds: None,
            deliveries: vec![DeliveryRun {
                from: None,
                rehydrated: false,
                watermarks: delivered.to_vec(),
            }],
            subscribes: vec![SubscribeAttempt {
                cursor: Some(1),
                stale,
                floor: 0,
                head: 1,
            }],
        }
    }

    #[test]
    fn lanes_give_live_updates_fallbacks_recoveries_and_stale_cursors() {
        use crate::model::trace::ClientsObservation;
        let clients = |on_khala: bool, delivered: &[i64], stale: bool| {
            Some(ClientsObservation {
                liveness_wait_seconds: None,
                lanes: vec![lane(Surface::Web, on_khala, delivered, stale)],
                desktop: BTreeMap::from([(
                    ClientUser::Internal,
                    if on_khala { "khala" } else { "convex" },
                )]),
                topics: BTreeMap::new(),
                retention: None,
            })
        };
        let mut trace = trace(vec![
            (Step::Quiesce, None),
            (Step::Quiesce, None),
            (Step::Quiesce, None),
            (Step::Quiesce, None),
        ]);
        trace[0].clients = clients(true, &[1, 2], false);
        trace[1].clients = clients(false, &[], false);
        trace[2].clients = clients(true, &[3], true);
        trace[3].clients = clients(true, &[], false);
        let mut metrics = RunMetrics::default();
        metrics.observe_case(&trace);
        let web = &metrics.delivery.surfaces["web"];
        assert_eq!(
            (
                web.khala_lane_steps,
                web.delivered,
                web.fallbacks,
                web.recoveries
            ),
            (3, 3, 1, 1)
        );
        assert_eq!(metrics.delivery.surfaces["desktop"].khala_provider_steps, 3);
        assert_eq!(
            (metrics.delivery.catchups, metrics.delivery.stale_cursors),
            (4, 1)
        );
        assert_eq!(metrics.evidence("s").stale_cursor_rate, Some(0.25));
    }

    #[test]
    fn no_cycle_is_no_data_and_merging_adds_up() {
        let mut metrics = RunMetrics::default();
        metrics.observe_case(&trace(vec![(Step::Quiesce, None)]));
        let evidence = metrics.evidence("s");
        assert_eq!(
            (
                evidence.mismatch_rate,
                evidence.khala_missing,
                evidence.lag_drift_p95,
                evidence.stale_cursor_rate
            ),
            (None, None, None, None)
        );
        let mut other = RunMetrics::default();
        other.observe_case(&trace(vec![(
            Step::AuditorCycle,
            Some(summary(0, 0, 0, 0, 0)),
        )]));
        metrics.merge(&other);
        assert_eq!(metrics.cases, 2);
        assert_eq!(metrics.auditor.cycles_by_status["empty"], 1);
        assert_eq!(metrics.evidence("s").mismatch_rate, Some(0.0));
    }
}
