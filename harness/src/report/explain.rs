//! Turning a minimal case into words: each step described, the field-level
//! diff of a mismatch, the step since which the stores diverge, and the
//! prose of a finding (what happened, in order, and why that breaks the
//! invariant).

use super::model::FieldDiff;
use super::timeline::{CellState, Timeline};
use crate::model::case::{
    Case, ConvexFault, EntityRef, KhalaFault, Outage, RollbackSwitch, Step, StopPath,
};
use crate::model::reason::{CheckpointClass, ReasonClass, StoreClass};
use crate::model::violation::Violation;
use crate::oracle::TIMESTAMP_KEYS;
use serde_json::Value;
use std::collections::BTreeSet;

fn entity_name(entity: EntityRef) -> String {
    match entity {
        EntityRef::Run(index) => format!("run {index}"),
        EntityRef::Worker(index) => format!("worker {index}"),
    }
}

/// One step in a sentence.
pub fn describe_step(step: &Step) -> String {
    match step {
        Step::AppendRunEvent { run, event_type } => {
            format!("the runtime appends `{}` to run {run}", event_type.as_str())
        }
        Step::FinishRun {
            run,
            status,
            reason,
        } if reason.is_null() => {
            format!("run {run} finishes as `{}`", status.as_str())
        }
        Step::FinishRun {
            run,
            status,
            reason,
        } => format!(
            "run {run} finishes as `{}` with a `{reason}` terminal reason",
            status.as_str()
        ),
        Step::CreateWorker {
            worker,
            owner_guest_scope,
            workspace_ref,
            codex_home_ref,
        } => format!(
            "worker {worker} is created (guest scope `{owner_guest_scope}`, workspace `{workspace_ref}`, Codex home `{codex_home_ref}`) and appends `worker.started`"
        ),
        Step::AppendWorkerEvent { worker, event_type } => {
            format!(
                "the runtime appends `{}` to worker {worker}",
                event_type.as_str()
            )
        }
        Step::ReportWorkerMetadata {
            worker,
            value,
            variant,
        } => format!(
            "worker {worker} reports `{value}` metadata (variant {variant}) with a heartbeat"
        ),
        Step::StopWorker { worker, path } => match path {
            StopPath::Stop => format!("worker {worker} is stopped (`stop_worker`)"),
            StopPath::Ingest => {
                format!("worker {worker} reports `worker.stopped` (`ingest_event`)")
            }
        },
        Step::DuplicateDelivery { entity } => {
            format!(
                "the trigger for {} is delivered again",
                entity_name(*entity)
            )
        }
        Step::SwitchSinkMode { mode } => format!("the runtime's sink mode becomes `{mode}`"),
        Step::Reproject {
            entity: Some(entity),
        } => {
            format!("an operator reprojects {}", entity_name(*entity))
        }
        Step::Reproject { entity: None } => "an operator runs `reproject --all`".to_owned(),
        Step::BumpProjectionVersion => "a deploy bumps `projection_version`".to_owned(),
        Step::BreakConvex { fault } => match fault {
            ConvexFault::Reset => "Convex starts resetting connections".to_owned(),
            ConvexFault::Timeout => "Convex stops answering (requests time out)".to_owned(),
            ConvexFault::Delay => {
                "Convex answers arrive too late (writes run, the sink times out)".to_owned()
            }
            ConvexFault::FunctionError200 => {
                "every Convex mutation throws (HTTP 200, `status: \"error\"`)".to_owned()
            }
            ConvexFault::FunctionError560 => {
                "every Convex mutation throws (HTTP 560, `status: \"error\"`)".to_owned()
            }
        },
        Step::BreakKhala { fault } => match fault {
            KhalaFault::ReadModel => "Khala's database starts refusing writes".to_owned(),
            KhalaFault::Allocator => {
                "Khala's watermark allocator starts refusing writes".to_owned()
            }
        },
        Step::ConvexOutage { outage } => match outage {
            Outage::Pause => "the Convex backend is paused".to_owned(),
            Outage::Stop => "the Convex backend is stopped".to_owned(),
        },
        Step::SetClientFlag { surface, value } => match value.as_deref() {
            Some("true") => format!("the {} client flag is switched on", surface.as_str()),
            None => format!("the {} client flag is switched off", surface.as_str()),
            Some(value) => format!(
                "the {} client flag `{}` is set to {value:?}",
                surface.as_str(),
                surface.flag_name()
            ),
        },
        Step::SetRolloutStage { stage } => {
            format!("the rollout moves to stage {}", stage.as_str())
        }
        Step::Rollback { switch } => match switch {
            RollbackSwitch::ClientFlags => "rollback: every client flag off".to_owned(),
            RollbackSwitch::RuntimeConvexOnly => {
                "rollback: the runtime goes back to a Convex-only sink".to_owned()
            }
            RollbackSwitch::DisableAuditor => "rollback: the parity auditor is disabled".to_owned(),
        },
        Step::AuditorCycle => "the parity auditor runs one cycle".to_owned(),
        Step::RunRetention => "the retention job prunes the journal".to_owned(),
        Step::RunRetentionAtRow { rank } => format!(
            "the retention job runs with its cutoff exactly on the journal row of rank {rank}"
        ),
        Step::RunRetentionAtCursor => {
            "the retention job prunes exactly through the cursor of the lane furthest behind"
                .to_owned()
        }
        Step::RemoveEvents { entity, count } => format!(
            "an operator removes up to {count} event rows of {} below its newest, then reprojects it",
            entity_name(*entity)
        ),
        Step::DisconnectClient { surface } => {
            format!("the {} clients lose their sockets", surface.as_str())
        }
        Step::ReconnectClient { surface } => {
            format!("the {} clients reconnect and resume", surface.as_str())
        }
        Step::RestartSyncServer => "the sync server restarts".to_owned(),
        Step::AdvanceTime { seconds } => {
            format!("{seconds} s pass for the sync server and the clients")
        }
        Step::ReloadShippedClient { surface } => format!(
            "every {} user starts the shipped client afresh, with no stored watermark",
            surface.as_str()
        ),
        Step::Heal => "every fault ends".to_owned(),
        Step::Quiesce => "everything heals and the system catches up (quiesce)".to_owned(),
    }
}

/// Every leaf (dotted path) where the three sides do not all agree.
/// Timestamp keys are left out: the oracle does not predict them.
pub fn field_diff(
    expected: Option<&Value>,
    khala: Option<&Value>,
    convex: Option<&Value>,
) -> Vec<FieldDiff> {
    let sides = [expected, khala, convex];
    let mut paths = BTreeSet::new();
    for side in sides.into_iter().flatten() {
        collect_paths(side, String::new(), &mut paths);
    }
    paths
        .into_iter()
        .filter_map(|path| {
            let values: Vec<Option<Value>> = sides
                .iter()
                .map(|side| side.and_then(|side| lookup(side, &path)).cloned())
                .collect();
            let present: Vec<&Option<Value>> = sides
                .iter()
                .zip(&values)
                .filter(|(side, _)| side.is_some())
                .map(|(_, value)| value)
                .collect();
            let agree = present.windows(2).all(|pair| pair[0] == pair[1]);
            (!agree).then(|| FieldDiff {
                field: path,
                expected: values[0].clone(),
                khala: values[1].clone(),
                convex: values[2].clone(),
            })
        })
        .collect()
}

fn collect_paths(value: &Value, prefix: String, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                if prefix.is_empty() && TIMESTAMP_KEYS.contains(&key.as_str()) {
                    continue;
                }
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_paths(child, path, paths);
            }
        }
        _ => {
            paths.insert(if prefix.is_empty() {
                "$".to_owned()
            } else {
                prefix
            });
        }
    }
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path == "$" {
        return Some(value);
    }
    path.split('.').try_fold(value, |value, key| value.get(key))
}

/// The stores a reason class is about, as timeline rows; `None` when the
/// violation is a single-step event (seen the step it happened).
pub fn stores_of(reason_class: ReasonClass) -> Option<&'static [&'static str]> {
    Some(match reason_class {
        ReasonClass::Store(class) => match class {
            StoreClass::ConvexAheadOfKhala => &["khala"],
            StoreClass::StoresDiffer | StoreClass::ConvexIntPrecisionLost => &["khala", "convex"],
            StoreClass::KhalaMissing | StoreClass::KhalaStale | StoreClass::KhalaWrong => {
                &["khala"]
            }
            StoreClass::ConvexMissing | StoreClass::ConvexStale | StoreClass::ConvexWrong => {
                &["convex"]
            }
            StoreClass::KhalaRegressed | StoreClass::ConvexRegressed => return None,
        },
        ReasonClass::Checkpoint(class) => match class {
            CheckpointClass::CheckpointMissing | CheckpointClass::CheckpointLag => &["checkpoint"],
            CheckpointClass::KhalaHashMismatch => &["checkpoint", "khala"],
            CheckpointClass::ConvexHashMismatch => &["checkpoint", "convex"],
            CheckpointClass::CheckpointAheadOfKhala
            | CheckpointClass::CheckpointAheadOfConvex
            | CheckpointClass::CheckpointRegressed
            | CheckpointClass::RepairLeftPending
            | CheckpointClass::DecisionWrong
            | CheckpointClass::DecisionTelemetryWrong => return None,
        },
        _ => return None,
    })
}

/// The first step of the unbroken stretch, ending where the violation was
/// seen, in which some store it is about disagreed with the oracle. A
/// quiescence check sees a divergence late; this says when it began.
pub fn first_step(violation: &Violation, timeline: &Timeline) -> Option<usize> {
    let stores = stores_of(violation.reason_class)?;
    let track = timeline
        .documents
        .iter()
        .find(|track| Some(&track.document_id) == violation.document_id.as_ref())?;
    let detected = timeline
        .steps
        .iter()
        .position(|step| step.index == violation.step_index)?;
    let diverged = |position: usize| {
        track.rows.iter().any(|row| {
            stores.contains(&row.store.as_str())
                && row.cells.get(position).is_some_and(|cell| {
                    matches!(cell.state, CellState::Differs | CellState::Missing)
                })
        })
    };
    let mut first = None;
    for position in (0..=detected).rev() {
        if !diverged(position) {
            break;
        }
        first = Some(timeline.steps[position].index);
    }
    first.or(Some(violation.step_index))
}

/// The prose of a finding: the steps in order, where the stores began to
/// diverge, and why the invariant is broken, told by `first` (the
/// violation the finding is named after) of the case's `count`.
pub fn explain(
    case: &Case,
    first: &Violation,
    count: usize,
    timeline: Option<&Timeline>,
) -> String {
    let mut text = format!(
        "Under the {} profile, starting with sink mode `{}`:\n",
        case.profile, case.start.sink_mode
    );
    for (index, step) in case.steps.iter().enumerate() {
        text.push_str(&format!("{index}. {}.\n", capitalise(&describe_step(step))));
    }
    text.push_str(&format!(
        "{}. {} (implicit end of every case).\n",
        case.steps.len(),
        capitalise(&describe_step(&Step::Quiesce))
    ));
    let document = first.document_id.as_deref().unwrap_or("the stores");
    let began = timeline.and_then(|timeline| first_step(first, timeline));
    match began {
        Some(began) if began < first.step_index => text.push_str(&format!(
            "From step {began} on, {document} diverges ({}); nothing after it repairs that, and the check after step {} finds it.\n",
            first.reason_class, first.step_index
        )),
        _ => text.push_str(&format!(
            "The check after step {} finds {document} diverged ({}).\n",
            first.step_index, first.reason_class
        )),
    }
    let statement = crate::model::catalogue::invariant(first.invariant)
        .map_or("(not in the catalogue)", |entry| entry.statement);
    text.push_str(&format!(
        "This breaks {}: {statement}. Here {}: {}.",
        first.invariant,
        first.reason_class.meaning(),
        first.detail
    ));
    if count > 1 {
        text.push_str(&format!(" The case shows {count} violation(s) in all."));
    }
    text
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reason::JournalClass;
    use serde_json::json;

    #[test]
    fn field_diff_names_each_leaf_that_disagrees() {
        let expected = json!({"status": "succeeded", "latest_seq": 2, "runtime_source": {"seq": 2}, "updated_at": "x"});
        let khala = json!({"status": "running", "latest_seq": 2, "runtime_source": {"seq": 2}, "updated_at": "y"});
        let convex = json!({"status": "succeeded", "latest_seq": 2, "runtime_source": {"seq": 2}, "extra": 1});
        let diff = field_diff(Some(&expected), Some(&khala), Some(&convex));
        let fields: Vec<&str> = diff.iter().map(|entry| entry.field.as_str()).collect();
        assert_eq!(fields, ["extra", "status"]);
        assert_eq!(diff[1].khala, Some(json!("running")));
        assert_eq!(diff[0].expected, None);
        // A missing side is not compared: only present sides must agree.
        let diff = field_diff(Some(&expected), None, Some(&convex));
        assert_eq!(diff.len(), 1);
        let nested = field_diff(
            Some(&expected),
            Some(&json!({"runtime_source": {"seq": 1}})),
            None,
        );
        assert!(
            nested
                .iter()
                .any(|entry| entry.field == "runtime_source.seq")
        );
        assert!(field_diff(Some(&json!(1)), Some(&json!(1)), None).is_empty());
        assert_eq!(
            field_diff(Some(&json!(1)), Some(&json!(2)), None)[0].field,
            "$"
        );
    }

    #[test]
    fn every_step_has_a_sentence_and_a_label() {
        let step = Step::AppendRunEvent {
            run: 1,
            event_type: crate::model::case::RunEventType::Delta,
        };
        assert_eq!(
            describe_step(&step),
            "the runtime appends `run.delta` to run 1"
        );
        let short_label = crate::report::timeline::short_label;
        assert_eq!(short_label(&step), "r1 delta");
        assert_eq!(
            short_label(&Step::BreakKhala {
                fault: KhalaFault::ReadModel
            }),
            "khala down"
        );
    }

    #[test]
    fn the_value_step_is_described() {
        let step = Step::ReportWorkerMetadata {
            worker: 2,
            value: crate::model::case::ValueKind::BigIntegers,
            variant: 3,
        };
        assert_eq!(
            describe_step(&step),
            "worker 2 reports `big_integers` metadata (variant 3) with a heartbeat"
        );
        assert_eq!(
            crate::report::timeline::short_label(&step),
            "w2 meta big_integers/3"
        );
    }

    #[test]
    fn stores_of_covers_every_convergence_class() {
        let convergence = StoreClass::ALL
            .iter()
            .map(|class| ReasonClass::from(*class))
            .chain(CheckpointClass::ALL.iter().map(|class| (*class).into()));
        // A repair left pending is about the runtime's repair list, which
        // no timeline row shows.
        let repair_left_pending = ReasonClass::from(CheckpointClass::RepairLeftPending);
        for class in convergence {
            let about_stores =
                matches!(class.invariant(), "X1" | "X2") && class != repair_left_pending;
            assert_eq!(stores_of(class).is_some(), about_stores, "{class}");
        }
        assert_eq!(stores_of(JournalClass::JournalGap.into()), None);
    }
}
