//! P5: what a reprojection answers (spec §10's result map), judged against
//! the entity it was asked to rebuild. The checkpoint is dropped first, so
//! a rebuild that succeeds took decision row 0: the write applied, no
//! reason. One that fails writes nothing and names its failure by spec
//! §3.5's rule over the projector's error (§3.4). `rebuild_all` answers
//! once for every entity of the authority, runs first. Pure.

use crate::check::invariants::Recorder;
use crate::model::case::EntityRef;
use crate::model::observation::Observation;
use crate::model::reason::ProjectionClass;
use crate::model::violation::Violation;
use crate::oracle::Oracle;
use khala_runtime::projector::WriteResult;
use khala_runtime::reprojection::{RebuildAllSummary, RebuildResult};

/// The classes a failed rebuild may answer: §3.4's errors under §3.5's
/// rule (`{:sink_write_failed, reason}` is `sink_write_failed`), an entity
/// the authority lacks, and the hardened guard's refusal (V1).
const FAILURE_CLASSES: [&str; 7] = [
    "run_not_found",
    "worker_not_found",
    "sink_write_failed",
    "invalid_summary",
    "checkpoint_write_failed",
    "convex_value_refused",
    "error",
];

/// What the step's reprojections answered: each single rebuild with the
/// entity it was asked for, and `rebuild_all`'s answer with every entity
/// the authority held.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub single: Vec<(EntityRef, RebuildResult)>,
    pub all: Option<(RebuildAllSummary, Vec<EntityRef>)>,
}

pub fn check_rebuilds(
    oracle: &Oracle,
    rebuilt: &Rebuilt,
    current: &Observation,
    step_index: usize,
) -> Vec<Violation> {
    let mut recorder = Recorder::new(step_index, current);
    for (entity, result) in &rebuilt.single {
        check_result(oracle, *entity, result, &mut recorder);
    }
    if let Some((summary, entities)) = &rebuilt.all {
        check_all(oracle, summary, entities, &mut recorder);
    }
    recorder.found
}

fn check_result(
    oracle: &Oracle,
    entity: EntityRef,
    result: &RebuildResult,
    recorder: &mut Recorder,
) {
    let document_id = oracle.document_id(entity);
    let mut wrong = Vec::new();
    let scope = match entity {
        EntityRef::Run(_) => "run",
        EntityRef::Worker(_) => "codex_worker",
    };
    if result.scope != scope {
        wrong.push(format!("scope {:?} (expected {scope:?})", result.scope));
    }
    let entity_id = oracle.entity_id(entity);
    if result.entity_id != entity_id {
        wrong.push(format!(
            "entity_id {:?} (expected {entity_id:?})",
            result.entity_id
        ));
    }
    match (result.result, result.write, result.reason.as_deref()) {
        ("ok", Some(WriteResult::Applied), None) => {}
        ("error", None, Some(class)) if FAILURE_CLASSES.contains(&class) => {}
        (outcome, write, reason) => wrong.push(format!(
            "result {outcome:?} with write {write:?} and reason {reason:?} (expected \"ok\" with the write applied and no reason, or \"error\" with no write and one of {})",
            FAILURE_CLASSES.join(", ")
        )),
    }
    if !wrong.is_empty() {
        recorder.record(
            ProjectionClass::RebuildReportWrong,
            Some(&document_id),
            format!("the rebuild of {entity_id} answered {}", wrong.join("; ")),
            None,
        );
    }
}

fn check_all(
    oracle: &Oracle,
    summary: &RebuildAllSummary,
    entities: &[EntityRef],
    recorder: &mut Recorder,
) {
    let mut wrong = Vec::new();
    let succeeded = summary
        .results
        .iter()
        .filter(|result| result.result == "ok")
        .count();
    let counted = (
        summary.total_entities,
        summary.succeeded_entities,
        summary.failed_entities,
    );
    let answered = summary.results.len();
    if counted != (answered, succeeded, answered - succeeded) || answered != entities.len() {
        wrong.push(format!(
            "{answered} results counted as (total, succeeded, failed) {counted:?} for the {} entities of the authority",
            entities.len()
        ));
    }
    let first_worker = summary
        .results
        .iter()
        .position(|result| result.scope == "codex_worker")
        .unwrap_or(summary.results.len());
    if summary.results[first_worker..]
        .iter()
        .any(|result| result.scope == "run")
    {
        wrong.push("a run after a worker (runs come first)".to_owned());
    }
    if !wrong.is_empty() {
        recorder.record(
            ProjectionClass::RebuildReportWrong,
            None,
            format!("rebuild_all answered {}", wrong.join("; ")),
            None,
        );
    }
    for entity in entities {
        let entity_id = oracle.entity_id(*entity);
        match summary
            .results
            .iter()
            .find(|result| result.entity_id == entity_id)
        {
            Some(result) => check_result(oracle, *entity, result, recorder),
            None => recorder.record(
                ProjectionClass::RebuildReportWrong,
                Some(&oracle.document_id(*entity)),
                format!("rebuild_all answered nothing for {entity_id}"),
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::IdStyle;
    use khala_runtime::SinkMode;

    fn oracle() -> Oracle {
        Oracle::new(IdStyle::Plain, SinkMode::Dual)
    }

    fn answer(scope: &'static str, entity_id: &str, result: &'static str) -> RebuildResult {
        RebuildResult {
            scope,
            entity_id: entity_id.to_owned(),
            result,
            write: (result == "ok").then_some(WriteResult::Applied),
            reason: (result == "error").then(|| "sink_write_failed".to_owned()),
            duration_ms: 3,
        }
    }

    fn classes(rebuilt: &Rebuilt) -> Vec<String> {
        check_rebuilds(&oracle(), rebuilt, &Observation::default(), 2)
            .iter()
            .map(|violation| format!("{} {}", violation.invariant, violation.reason_class))
            .collect()
    }

    const RUN: EntityRef = EntityRef::Run(0);
    const WORKER: EntityRef = EntityRef::Worker(0);

    #[test]
    fn p5_accepts_spec_10s_answers_and_catches_each_planted_wrong_one() {
        let single = |result| Rebuilt {
            single: vec![(RUN, result)],
            all: None,
        };
        assert_eq!(
            classes(&single(answer("run", "run_0", "ok"))),
            Vec::<String>::new()
        );
        assert_eq!(
            classes(&single(answer("run", "run_0", "error"))),
            Vec::<String>::new()
        );
        let wrong = [
            answer("codex_worker", "run_0", "ok"),
            answer("run", "run_1", "ok"),
            answer("run", "run_0", "skipped"),
            RebuildResult {
                reason: Some("idempotent".to_owned()),
                ..answer("run", "run_0", "ok")
            },
            // The sink's own class, where §10 answers `sink_write_failed`.
            RebuildResult {
                reason: Some("http_request_failed".to_owned()),
                ..answer("run", "run_0", "error")
            },
        ];
        for result in wrong {
            assert_eq!(
                classes(&single(result.clone())),
                ["P5 rebuild_report_wrong"],
                "{result:?}"
            );
        }
    }

    #[test]
    fn p5_catches_a_rebuild_all_that_skips_reorders_or_miscounts() {
        let all = |results: Vec<RebuildResult>, succeeded| Rebuilt {
            single: Vec::new(),
            all: Some((
                RebuildAllSummary {
                    total_entities: results.len(),
                    succeeded_entities: succeeded,
                    failed_entities: results.len() - succeeded,
                    results,
                },
                vec![RUN, WORKER],
            )),
        };
        let run = answer("run", "run_0", "ok");
        let worker = answer("codex_worker", "worker_0", "ok");
        assert_eq!(
            classes(&all(vec![run.clone(), worker.clone()], 2)),
            Vec::<String>::new()
        );
        let skipped = classes(&all(vec![run.clone()], 1));
        assert_eq!(
            skipped, ["P5 rebuild_report_wrong"; 2],
            "a count and a missing worker"
        );
        let reordered = classes(&all(vec![worker.clone(), run.clone()], 2));
        assert_eq!(reordered, ["P5 rebuild_report_wrong"]);
        let miscounted = classes(&all(vec![run, worker], 1));
        assert_eq!(miscounted, ["P5 rebuild_report_wrong"]);
    }
}
