//! One auditor cycle on the stores: sample checkpoints (most recent, or a
//! sweeping cursor when B18 is fixed), compare each with Khala (and with
//! Convex when B2 is fixed), summarise, and return the telemetry.

use super::compare::{self, EntityComparison, ReadModelRow};
use super::config::{AuditorConfig, CycleSettings, RunOptions};
use super::summary::CycleSummary;
use super::telemetry::{self, TelemetryEvent};
use crate::checkpoint::Checkpoint;
use crate::profile::Switches;
use crate::sink::convex_value::as_sent;
use crate::sink::{ConvexReadError, ConvexReader};
use crate::summary::ProjectionKind;
use sqlx::PgPool;

/// What one cycle found and emitted.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CycleReport {
    pub summary: CycleSummary,
    /// In sampling order.
    pub comparisons: Vec<EntityComparison>,
    /// Empty when disabled.
    pub telemetry: Vec<TelemetryEvent>,
}

/// A cycle could not read a store; no summary is made of a partial read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{step}: {source}")]
    Database {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("read convex document `{document_id}`: {source}")]
    ConvexRead {
        document_id: String,
        #[source]
        source: ConvexReadError,
    },
}

fn database(step: &'static str) -> impl FnOnce(sqlx::Error) -> AuditError {
    move |source| AuditError::Database { step, source }
}

/// The tables a cycle reads (spec §5), by default the runtime's own; a
/// deployment that renamed them (or a copy under another schema) is audited
/// by naming them here. Each name is a PostgreSQL identifier, optionally
/// schema-qualified, used verbatim in the statements.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditorTables {
    pub checkpoints: String,
    pub run_summaries: String,
    pub codex_worker_summaries: String,
}

impl Default for AuditorTables {
    fn default() -> Self {
        AuditorTables {
            checkpoints: "runtime.convex_projection_checkpoints".to_owned(),
            run_summaries: ProjectionKind::RunSummary.read_model_table().to_owned(),
            codex_worker_summaries: ProjectionKind::CodexWorkerSummary
                .read_model_table()
                .to_owned(),
        }
    }
}

impl AuditorTables {
    /// The read-model table of a projection.
    pub fn read_model(&self, kind: ProjectionKind) -> &str {
        match kind {
            ProjectionKind::RunSummary => &self.run_summaries,
            ProjectionKind::CodexWorkerSummary => &self.codex_worker_summaries,
        }
    }
}

/// The auditor: its configuration, the switches it obeys (B2, B18), the
/// tables it reads, and the sweep cursor of the hardened B18 sampling.
#[derive(Clone, Debug)]
pub struct ParityAuditor {
    config: AuditorConfig,
    switches: Switches,
    tables: AuditorTables,
    /// The last `(projection_name, entity_id)` audited by the sweep.
    cursor: Option<(String, String)>,
}

impl ParityAuditor {
    pub fn new(config: AuditorConfig, switches: Switches) -> Self {
        ParityAuditor {
            config,
            switches,
            tables: AuditorTables::default(),
            cursor: None,
        }
    }

    /// The same auditor reading `tables` instead of the runtime's own.
    pub fn with_tables(mut self, tables: AuditorTables) -> Self {
        self.tables = tables;
        self
    }

    pub fn tables(&self) -> &AuditorTables {
        &self.tables
    }

    pub fn config(&self) -> &AuditorConfig {
        &self.config
    }

    /// Where the hardened sweep resumes; always `None` under legacy B18.
    pub fn cursor(&self) -> Option<&(String, String)> {
        self.cursor.as_ref()
    }

    /// One cycle (spec §8 `run_once`). `convex` is read only when B2 is fixed;
    /// `None` means the deployment has no Convex target, and then only Khala
    /// is compared.
    pub async fn run_once(
        &mut self,
        pool: &PgPool,
        convex: Option<&ConvexReader>,
        options: &RunOptions,
    ) -> Result<CycleReport, AuditError> {
        let settings = self.config.for_cycle(options);
        if !settings.enabled {
            return Ok(CycleReport {
                summary: CycleSummary::disabled(),
                comparisons: Vec::new(),
                telemetry: Vec::new(),
            });
        }
        let sampled = if self.switches.b18_sampling_most_recent_only {
            sample_most_recent(pool, &self.tables, &settings).await?
        } else {
            self.sample_sweep(pool, &settings).await?
        };
        let convex = if self.switches.b2_auditor_blind_to_convex {
            None
        } else {
            convex
        };
        let mut comparisons = Vec::with_capacity(sampled.len());
        for checkpoint in &sampled {
            let kind = checkpoint.projection_name.parse::<ProjectionKind>().ok();
            let row = match kind {
                Some(kind) => {
                    read_model_row(pool, self.tables.read_model(kind), &checkpoint.document_id)
                        .await?
                }
                None => None,
            };
            let khala = compare::compare_khala(checkpoint, row.as_ref());
            let convex_check = match (convex, kind) {
                (Some(reader), Some(kind)) => {
                    let document =
                        reader
                            .get(kind, &checkpoint.document_id)
                            .await
                            .map_err(|source| AuditError::ConvexRead {
                                document_id: checkpoint.document_id.clone(),
                                source,
                            })?;
                    // Convex holds the runtime's numbers as Float64s (a `0.0`
                    // sent reads back as the integer 0): read where it holds
                    // the same number as Khala's row, as that row writes it.
                    let khala_payload = row.as_ref().and_then(|row| row.payload.as_ref());
                    let document = match (document, khala_payload) {
                        (Some(document), Some(payload)) => Some(as_sent(&document, payload)),
                        (document, _) => document,
                    };
                    Some(compare::compare_convex(checkpoint, document.as_ref()))
                }
                _ => None,
            };
            comparisons.push(compare::comparison(checkpoint, khala, convex_check));
        }
        let summary = compare::summarise(&comparisons);
        let telemetry = telemetry::events(
            &summary,
            &comparisons,
            options.emit_entity_events,
            options.emit_parity_failures,
        );
        Ok(CycleReport {
            summary,
            comparisons,
            telemetry,
        })
    }

    /// The hardened B18 sampling: the next `sample_size` checkpoints after the
    /// cursor in `(projection_name, entity_id)` byte order, wrapping to the
    /// start, never one twice in a cycle.
    async fn sample_sweep(
        &mut self,
        pool: &PgPool,
        settings: &CycleSettings,
    ) -> Result<Vec<Checkpoint>, AuditError> {
        let limit = i64::from(settings.sample_size);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let names = names(settings);
        let (after_name, after_entity) = self.cursor.clone().unwrap_or_default();
        let after = sweep_statement(&self.tables.checkpoints, SweepPart::AfterCursor);
        let mut sampled: Vec<Checkpoint> = sqlx::query_as(sqlx::AssertSqlSafe(after))
            .bind(&names)
            .bind(&after_name)
            .bind(&after_entity)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(database("sample checkpoints after the sweep cursor"))?;
        if (sampled.len() as i64) < limit && self.cursor.is_some() {
            let from_start = sweep_statement(&self.tables.checkpoints, SweepPart::FromStart);
            let wrapped: Vec<Checkpoint> = sqlx::query_as(sqlx::AssertSqlSafe(from_start))
                .bind(&names)
                .bind(&after_name)
                .bind(&after_entity)
                .bind(limit - sampled.len() as i64)
                .fetch_all(pool)
                .await
                .map_err(database("sample checkpoints from the start of the sweep"))?;
            sampled.extend(wrapped);
        }
        if let Some(last) = sampled.last() {
            self.cursor = Some((last.projection_name.clone(), last.entity_id.clone()));
        }
        Ok(sampled)
    }
}

/// Which part of the hardened sweep a statement reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepPart {
    /// The checkpoints after the cursor.
    AfterCursor,
    /// From the start up to the cursor (the wrap).
    FromStart,
}

/// The statement of one part of the hardened B18 sweep over `table`: `$1`
/// the projection names, `$2`/`$3` the cursor's `(projection_name,
/// entity_id)`, `$4` the limit; in byte order, as the cursor compares.
pub fn sweep_statement(table: &str, part: SweepPart) -> String {
    let compare = match part {
        SweepPart::AfterCursor => ">",
        SweepPart::FromStart => "<=",
    };
    format!(
        "SELECT * FROM {table} WHERE projection_name = ANY($1) \
         AND (projection_name COLLATE \"C\", entity_id COLLATE \"C\") {compare} ($2::text COLLATE \"C\", $3::text COLLATE \"C\") \
         ORDER BY projection_name COLLATE \"C\", entity_id COLLATE \"C\" LIMIT $4"
    )
}

fn names(settings: &CycleSettings) -> Vec<String> {
    settings
        .projection_names
        .iter()
        .map(|kind| kind.name().to_owned())
        .collect()
}

/// The original sampling: the most recently updated checkpoints.
async fn sample_most_recent(
    pool: &PgPool,
    tables: &AuditorTables,
    settings: &CycleSettings,
) -> Result<Vec<Checkpoint>, AuditError> {
    let statement = format!(
        "SELECT * FROM {} WHERE projection_name = ANY($1) ORDER BY updated_at DESC LIMIT $2",
        tables.checkpoints
    );
    sqlx::query_as(sqlx::AssertSqlSafe(statement))
        .bind(names(settings))
        .bind(i64::from(settings.sample_size))
        .fetch_all(pool)
        .await
        .map_err(database("sample the most recently updated checkpoints"))
}

async fn read_model_row(
    pool: &PgPool,
    table: &str,
    document_id: &str,
) -> Result<Option<ReadModelRow>, AuditError> {
    let statement = format!("SELECT doc_version, payload FROM {table} WHERE doc_key = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(statement))
        .bind(document_id)
        .fetch_optional(pool)
        .await
        .map_err(database("read the khala read model"))
}
