//! Reprojection, "drop + replay" (spec §10): drop an entity's checkpoint and
//! project it again, so the decision is row 0 (write).

use crate::checkpoint;
use crate::projector::{ProjectionError, Projector, WriteResult};
use crate::summary::ProjectionKind;
use std::time::Instant;

/// One rebuild's result map (spec §10).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RebuildResult {
    /// `run` or `codex_worker`.
    pub scope: &'static str,
    pub entity_id: String,
    /// `ok` or `error`.
    pub result: &'static str,
    pub write: Option<WriteResult>,
    /// The projector's reason on success, the error's class on failure.
    pub reason: Option<String>,
    /// Wall-clock time; reports keep it apart from deterministic fields.
    pub duration_ms: u64,
}

/// Which entities `rebuild_all` covers; `None` means every id in the table.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RebuildSelection {
    pub run_ids: Option<Vec<String>>,
    pub worker_ids: Option<Vec<String>>,
}

/// `rebuild_all`'s totals (spec §10).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RebuildAllSummary {
    pub total_entities: usize,
    pub succeeded_entities: usize,
    pub failed_entities: usize,
    pub results: Vec<RebuildResult>,
}

/// `rebuild_run` / `rebuild_codex_worker`. Legacy (B17): the checkpoint is
/// deleted in its own statement first, so a failing projection leaves the
/// entity without one. Hardened: the drop happens inside the projector
/// transaction.
pub async fn rebuild(
    projector: &Projector,
    kind: ProjectionKind,
    entity_id: &str,
) -> RebuildResult {
    let started = Instant::now();
    let outcome = rebuild_outcome(projector, kind, entity_id).await;
    let (result, write, reason) = match outcome {
        Ok(outcome) => (
            "ok",
            Some(outcome.write),
            outcome.reason.map(|reason| reason.as_str().to_owned()),
        ),
        Err(error) => ("error", None, Some(failure_class(&error))),
    };
    RebuildResult {
        scope: kind.entity(),
        entity_id: entity_id.to_owned(),
        result,
        write,
        reason,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// The class a failed rebuild answers (spec §10: `run_not_found`,
/// `sink_write_failed`, …): §3.5's rule over the projector's error itself
/// (§3.4), where the telemetry's class (`ProjectionError::reason_class`)
/// is the failing sink's own.
fn failure_class(error: &ProjectionError) -> String {
    match error {
        ProjectionError::SinkWriteFailed { .. } => "sink_write_failed".to_owned(),
        other => other.reason_class(),
    }
}

async fn rebuild_outcome(
    projector: &Projector,
    kind: ProjectionKind,
    entity_id: &str,
) -> Result<crate::projector::ProjectionOutcome, ProjectionError> {
    if projector.settings().switches.b17_reprojection_gap {
        let pool = projector.pool();
        let mut conn = pool
            .acquire()
            .await
            .map_err(|source| database(kind, entity_id, source))?;
        checkpoint::delete(&mut conn, kind, entity_id)
            .await
            .map_err(|source| database(kind, entity_id, source))?;
        projector.project(kind, entity_id).await
    } else {
        let prepared = projector.prepare_rebuild(kind, entity_id).await?;
        projector.commit(prepared).await
    }
}

fn database(kind: ProjectionKind, entity_id: &str, source: sqlx::Error) -> ProjectionError {
    ProjectionError::Database {
        kind,
        entity_id: entity_id.to_owned(),
        operation: "drop checkpoint",
        source,
    }
}

/// Rebuilds the selected runs, then the selected workers.
pub async fn rebuild_all(
    projector: &Projector,
    selection: &RebuildSelection,
) -> Result<RebuildAllSummary, crate::authority::AuthorityError> {
    let mut summary = RebuildAllSummary::default();
    for (kind, ids) in [
        (ProjectionKind::RunSummary, &selection.run_ids),
        (ProjectionKind::CodexWorkerSummary, &selection.worker_ids),
    ] {
        let ids = match ids {
            Some(ids) => dedup_in_order(ids),
            None => crate::authority::entity_ids(projector.pool(), kind).await?,
        };
        for id in ids {
            let result = rebuild(projector, kind, &id).await;
            if result.result == "ok" {
                summary.succeeded_entities += 1;
            } else {
                summary.failed_entities += 1;
            }
            summary.results.push(result);
        }
    }
    summary.total_entities = summary.results.len();
    Ok(summary)
}

fn dedup_in_order(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}
