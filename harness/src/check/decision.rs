//! C1 in cases: every projection a step ran answered spec §3.3's decision
//! for the checkpoint it read, with §3.4's result label and §3.5's lag and
//! drift telemetry. The checkpoint each one read is the previous step's
//! observed row, moved along by the step's own applied writes (they run one
//! after another); the summary's seq, version and hash come from the
//! summary the projection answered, hashed by the harness (§6.3). A
//! projection the sink failed carries §3.5's reason class for the fault the
//! step met. Pure.

use crate::check::invariants::{Recorder, parity_hash};
use crate::model::observation::{Observation, document_seq};
use crate::model::reason::CheckpointClass;
use crate::model::violation::Violation;
use khala_runtime::SinkMode;
use khala_runtime::projector::{ProjectionError, ProjectionOutcome, WriteResult};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What the projections of a step's writes answered.
#[derive(Debug, Default)]
pub struct Projected {
    /// The documents the hardened guard refused because Convex cannot hold
    /// them (V1's).
    pub refused: Vec<String>,
    /// Every projection that succeeded, in the order they ran.
    pub outcomes: Vec<ProjectionOutcome>,
    /// Every projection the sink failed: its document and the reason class
    /// its telemetry carries (`ProjectionError::reason_class`).
    pub sink_failures: Vec<(String, String)>,
}

impl Projected {
    pub fn note(&mut self, projection: Result<ProjectionOutcome, ProjectionError>) {
        match projection {
            Ok(outcome) => self.outcomes.push(outcome),
            Err(ProjectionError::ConvexValueRefused {
                kind, entity_id, ..
            }) => self.refused.push(kind.document_id(&entity_id)),
            Err(error) => {
                if let ProjectionError::SinkWriteFailed {
                    kind, entity_id, ..
                } = &error
                {
                    let failure = (kind.document_id(entity_id), error.reason_class());
                    self.sink_failures.push(failure);
                }
            }
        }
    }
}

/// What a Convex call meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvexFailing {
    No,
    /// Reset, hung, answered too late, or a backend down: the request fails.
    Transport,
    /// Convex answers that the function threw (HTTP 200 or 560).
    Function,
}

/// The faults in force while a step's writes projected, on which the
/// class a failed projection's telemetry carries depends (§3.5).
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub sink_mode: SinkMode,
    pub convex: ConvexFailing,
    /// Khala's read-model tables refuse writes.
    pub read_models_broken: bool,
    /// Khala's watermark allocator (`runtime.sync_topic_sequences`)
    /// refuses writes.
    pub allocator_broken: bool,
}

/// What the allocator answers when its table refuses the seed or the
/// increment (`WatermarkError::reason_class`).
const ALLOCATOR_FAILED: [&str; 2] = ["seed_insert_failed", "allocator_update_failed"];

impl Faults {
    /// The `reason_class`es §3.5 allows a failed projection: the sink's
    /// reason by the tuple rule. Empty where these faults do not decide it.
    fn failure_classes(self) -> Vec<&'static str> {
        match self.sink_mode {
            // `{:fanout_sink_failed, sink, reason}`, a 3-tuple.
            SinkMode::Dual => vec!["error"],
            SinkMode::ConvexOnly => match self.convex {
                ConvexFailing::Function => vec!["convex_error"],
                ConvexFailing::Transport => vec!["http_request_failed"],
                ConvexFailing::No => Vec::new(),
            },
            // Which of two broken parts fails first is the order B16 sets.
            SinkMode::KhalaOnly => {
                let mut classes = Vec::new();
                if self.read_models_broken {
                    classes.push("read_model_upsert_failed");
                }
                if self.allocator_broken {
                    classes.extend(ALLOCATOR_FAILED);
                }
                classes
            }
            SinkMode::Noop => Vec::new(),
        }
    }
}

/// What a checkpoint row holds that the decision reads.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    seq: i64,
    version: String,
    hash: String,
}

impl Held {
    /// The metadata of `summary`, if it carries a seq and a version.
    fn of(summary: &Value) -> Option<Held> {
        Some(Held {
            seq: document_seq(summary)?,
            version: summary.get("projection_version")?.as_str()?.to_owned(),
            hash: parity_hash(summary),
        })
    }
}

/// A decision as the projector answers it: `write`, the reason label of
/// §3.4, `lag_events` and whether a drift event is emitted.
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    write: WriteResult,
    reason: Option<&'static str>,
    lag_events: i64,
    drift: bool,
}

impl Answer {
    fn of(outcome: &ProjectionOutcome) -> Answer {
        Answer {
            write: outcome.write,
            reason: outcome.reason.map(|reason| reason.as_str()),
            lag_events: outcome.lag_events,
            drift: outcome.drift,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "write": self.write,
            "reason": self.reason,
            "lag_events": self.lag_events,
            "drift": self.drift,
        })
    }
}

/// Spec §3.3's table, read row by row. `ahead_skips` is switch B7: fixed,
/// a checkpoint ahead is written over, still labelled and drifting.
fn expected(read: Option<&Held>, summary: &Held, ahead_skips: bool) -> Answer {
    let write = |reason, lag_events, drift| Answer {
        write: WriteResult::Applied,
        reason,
        lag_events,
        drift,
    };
    let skip = |reason, drift| Answer {
        write: WriteResult::Skipped,
        reason: Some(reason),
        lag_events: 0,
        drift,
    };
    let Some(read) = read else {
        return write(None, summary.seq, false);
    };
    if read.seq > summary.seq {
        return if ahead_skips {
            skip("checkpoint_ahead", true)
        } else {
            write(Some("checkpoint_ahead"), 0, true)
        };
    }
    if read.seq < summary.seq {
        return write(None, summary.seq - read.seq, false);
    }
    match (read.version == summary.version, read.hash == summary.hash) {
        (true, true) => skip("idempotent", false),
        (true, false) => write(Some("summary_hash_mismatch"), 0, true),
        (false, _) => write(Some("projection_version_changed"), 0, true),
    }
}

/// C1 over the projections of step `step_index`: the successful ones in
/// the order they ran, against the checkpoints `previous` held before it,
/// and the failed ones against `faults`.
pub fn check_decisions(
    previous: &Observation,
    projected: &Projected,
    faults: Faults,
    ahead_skips: bool,
    current: &Observation,
    step_index: usize,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    let allowed = faults.failure_classes();
    if !allowed.is_empty() {
        for (document_id, class) in &projected.sink_failures {
            if !allowed.contains(&class.as_str()) {
                let expected = allowed.join(" or ");
                let detail = format!(
                    "a projection the sink failed under {faults:?} carries reason class {class:?} (spec §3.5: {expected})"
                );
                let want = json!({"result": "error", "reason_class": allowed});
                recorder.record(
                    CheckpointClass::DecisionTelemetryWrong,
                    Some(document_id),
                    detail,
                    Some(want),
                );
            }
        }
    }
    let mut checkpoints: BTreeMap<&str, Held> = previous
        .checkpoints
        .iter()
        .map(|(document_id, row)| {
            let held = Held {
                seq: row.last_runtime_seq,
                version: row.projection_version.clone(),
                hash: row.summary_hash.clone(),
            };
            (document_id.as_str(), held)
        })
        .collect();
    for outcome in &projected.outcomes {
        // A summary without its metadata is P2's and P3's to report.
        let Some(summary) = Held::of(&outcome.summary) else {
            continue;
        };
        let document_id = outcome.document_id.as_str();
        let read = checkpoints.get(document_id);
        let want = expected(read, &summary, ahead_skips);
        let got = Answer::of(outcome);
        if got != want {
            let class = if got.write == want.write {
                CheckpointClass::DecisionTelemetryWrong
            } else {
                CheckpointClass::DecisionWrong
            };
            let detail = format!(
                "projecting seq {} over {} answered {} (spec §3.3: {})",
                summary.seq,
                read.map_or("no checkpoint".to_owned(), |read| format!(
                    "a checkpoint at seq {}",
                    read.seq
                )),
                got.to_json(),
                want.to_json()
            );
            recorder.record(class, Some(document_id), detail, Some(want.to_json()));
        }
        if got.write == WriteResult::Applied {
            checkpoints.insert(document_id, summary);
        }
    }
    recorder.found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::observation::CheckpointView;
    use khala_runtime::checkpoint::DecisionReason;

    const DOC: &str = "runtime/run_summary:run_0";

    fn summary(seq: i64, version: &str, status: &str) -> Value {
        json!({
            "document_id": DOC,
            "projection_version": version,
            "runtime_source": {"seq": seq},
            "status": status,
            "projected_at": "2026-01-01T00:00:00.000000Z",
        })
    }

    fn observed(row: Option<&Value>) -> Observation {
        let mut observation = Observation::default();
        if let Some(row) = row {
            let held = Held::of(row).unwrap();
            observation.checkpoints.insert(
                DOC.to_owned(),
                CheckpointView {
                    document_id: DOC.to_owned(),
                    last_runtime_seq: held.seq,
                    projection_version: held.version,
                    summary_hash: held.hash,
                },
            );
        }
        observation
    }

    fn outcome(
        summary: Value,
        write: WriteResult,
        reason: Option<DecisionReason>,
        lag_events: i64,
        drift: bool,
    ) -> ProjectionOutcome {
        ProjectionOutcome {
            document_id: DOC.to_owned(),
            summary,
            write,
            reason,
            lag_events,
            drift,
        }
    }

    const HEALTHY: Faults = Faults {
        sink_mode: SinkMode::Dual,
        convex: ConvexFailing::No,
        read_models_broken: false,
        allocator_broken: false,
    };

    fn succeeded(outcomes: &[ProjectionOutcome]) -> Projected {
        Projected {
            outcomes: outcomes.to_vec(),
            ..Projected::default()
        }
    }

    fn named(found: Vec<Violation>) -> Vec<String> {
        found
            .iter()
            .map(|violation| format!("{} {}", violation.invariant, violation.reason_class))
            .collect()
    }

    fn classes(row: Option<&Value>, projected: &[ProjectionOutcome]) -> Vec<String> {
        let observed = observed(row);
        let projected = succeeded(projected);
        let current = Observation::default();
        named(check_decisions(
            &observed, &projected, HEALTHY, false, &current, 3,
        ))
    }

    use DecisionReason::*;
    use WriteResult::{Applied, Skipped};

    #[test]
    fn c1_accepts_every_row_of_the_table() {
        let at_2 = summary(2, "v1", "running");
        let rows = [
            (None, outcome(at_2.clone(), Applied, None, 2, false)),
            (
                Some(summary(3, "v1", "running")),
                outcome(at_2.clone(), Applied, Some(CheckpointAhead), 0, true),
            ),
            (
                Some(at_2.clone()),
                outcome(at_2.clone(), Skipped, Some(Idempotent), 0, false),
            ),
            (
                Some(summary(2, "v1", "finished")),
                outcome(at_2.clone(), Applied, Some(SummaryHashMismatch), 0, true),
            ),
            (
                Some(summary(2, "v0", "finished")),
                outcome(
                    at_2.clone(),
                    Applied,
                    Some(ProjectionVersionChanged),
                    0,
                    true,
                ),
            ),
            (
                Some(summary(1, "v0", "queued")),
                outcome(at_2, Applied, None, 1, false),
            ),
        ];
        for (row, projected) in rows {
            assert_eq!(
                classes(row.as_ref(), std::slice::from_ref(&projected)),
                Vec::<String>::new(),
                "{row:?} {projected:?}"
            );
        }
    }

    #[test]
    fn c1_catches_a_wrong_action_reason_lag_or_drift() {
        let at_1 = summary(1, "v1", "running");
        let at_2 = summary(2, "v1", "running");
        let wrong = [
            // A write the table skips, and a skip of a new event.
            (
                Some(&at_2),
                outcome(at_2.clone(), Applied, None, 0, false),
                "C1 decision_wrong",
            ),
            (
                Some(&at_1),
                outcome(at_2.clone(), Skipped, Some(Idempotent), 0, false),
                "C1 decision_wrong",
            ),
            // A new event labelled as drift, and lag miscounted.
            (
                Some(&at_1),
                outcome(at_2.clone(), Applied, Some(SummaryHashMismatch), 0, true),
                "C1 decision_telemetry_wrong",
            ),
            (
                Some(&at_1),
                outcome(at_2.clone(), Applied, None, 3, false),
                "C1 decision_telemetry_wrong",
            ),
            (
                None,
                outcome(at_2.clone(), Applied, None, 0, false),
                "C1 decision_telemetry_wrong",
            ),
            (
                Some(&at_2),
                outcome(at_2.clone(), Skipped, Some(Idempotent), 2, false),
                "C1 decision_telemetry_wrong",
            ),
        ];
        for (row, projected, class) in wrong {
            assert_eq!(
                classes(row, std::slice::from_ref(&projected)),
                [class],
                "{projected:?}"
            );
        }
    }

    #[test]
    fn c1_follows_the_steps_own_writes_and_the_b7_switch() {
        let at_1 = summary(1, "v1", "running");
        let at_2 = summary(2, "v1", "running");
        // Two events in one step: the second reads the first's checkpoint.
        let both = [
            outcome(at_1.clone(), Applied, None, 1, false),
            outcome(at_2.clone(), Applied, None, 1, false),
        ];
        assert_eq!(classes(None, &both), Vec::<String>::new());
        // A checkpoint ahead: legacy (B7) skips it, hardened writes over it.
        let ahead = outcome(at_1, Skipped, Some(CheckpointAhead), 0, true);
        let found = check_decisions(
            &observed(Some(&at_2)),
            &succeeded(&[ahead]),
            HEALTHY,
            true,
            &Observation::default(),
            3,
        );
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(
            classes(
                Some(&at_2),
                &[outcome(
                    summary(1, "v1", "running"),
                    Skipped,
                    Some(CheckpointAhead),
                    0,
                    true
                )]
            ),
            ["C1 decision_wrong"]
        );
    }

    #[test]
    fn c1_holds_a_failed_projection_to_the_class_its_fault_gives() {
        let failed = |class: &str| Projected {
            sink_failures: vec![(DOC.to_owned(), class.to_owned())],
            ..Projected::default()
        };
        let under = |sink_mode, convex, read_models_broken| Faults {
            sink_mode,
            convex,
            read_models_broken,
            allocator_broken: false,
        };
        let allocator = |read_models_broken| Faults {
            sink_mode: SinkMode::KhalaOnly,
            convex: ConvexFailing::No,
            read_models_broken,
            allocator_broken: true,
        };
        let judged = |faults, class| {
            let none = Observation::default();
            named(check_decisions(
                &none,
                &failed(class),
                faults,
                false,
                &none,
                3,
            ))
        };
        let right = [
            (
                under(SinkMode::Dual, ConvexFailing::Function, false),
                "error",
            ),
            (under(SinkMode::Dual, ConvexFailing::No, true), "error"),
            (
                under(SinkMode::ConvexOnly, ConvexFailing::Function, false),
                "convex_error",
            ),
            (
                under(SinkMode::ConvexOnly, ConvexFailing::Transport, true),
                "http_request_failed",
            ),
            (
                under(SinkMode::KhalaOnly, ConvexFailing::Function, true),
                "read_model_upsert_failed",
            ),
            // Where no fault decides the class, none is demanded.
            (
                under(SinkMode::ConvexOnly, ConvexFailing::No, true),
                "invalid_json",
            ),
        ];
        let right = right.into_iter().chain([
            (allocator(false), "seed_insert_failed"),
            (allocator(false), "allocator_update_failed"),
            (allocator(true), "read_model_upsert_failed"),
            (allocator(true), "allocator_update_failed"),
        ]);
        for (faults, class) in right {
            assert_eq!(judged(faults, class), Vec::<String>::new(), "{faults:?}");
        }
        let wrong = [
            // A fanout's failure named by its failing sink's class.
            (
                under(SinkMode::Dual, ConvexFailing::Function, false),
                "convex_error",
            ),
            // A function that threw, taken for an HTTP status or a bad answer.
            (
                under(SinkMode::ConvexOnly, ConvexFailing::Function, false),
                "error",
            ),
            (
                under(SinkMode::ConvexOnly, ConvexFailing::Function, false),
                "invalid_response",
            ),
            (
                under(SinkMode::ConvexOnly, ConvexFailing::Transport, false),
                "convex_error",
            ),
            (under(SinkMode::KhalaOnly, ConvexFailing::No, true), "error"),
            // A failed allocation named by the read model, or by nothing.
            (allocator(false), "read_model_upsert_failed"),
            (allocator(false), ""),
        ];
        for (faults, class) in wrong {
            assert_eq!(
                judged(faults, class),
                ["C1 decision_telemetry_wrong"],
                "{faults:?} {class}"
            );
        }
    }

    #[test]
    fn projected_notes_successes_refusals_and_sink_failures_apart() {
        use khala_runtime::ProjectionKind;
        use khala_runtime::sink::SinkError;
        let mut projected = Projected::default();
        projected.note(Ok(outcome(
            summary(1, "v1", "running"),
            Applied,
            None,
            1,
            false,
        )));
        projected.note(Err(ProjectionError::SinkWriteFailed {
            kind: ProjectionKind::RunSummary,
            entity_id: "run_0".to_owned(),
            source: SinkError::ConvexError {
                message: "threw".to_owned(),
            },
        }));
        projected.note(Err(ProjectionError::NotFound {
            kind: ProjectionKind::RunSummary,
            entity_id: "run_1".to_owned(),
        }));
        assert_eq!(projected.outcomes.len(), 1);
        assert_eq!(
            projected.sink_failures,
            [(DOC.to_owned(), "convex_error".to_owned())]
        );
        assert!(projected.refused.is_empty());
    }
}
