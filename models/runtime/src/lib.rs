//! Faithful model of the OpenAgents runtime projection path (spec §2–§6, §10):
//! authority tables, projector, checkpoints, sinks and the Khala store on PostgreSQL.

/// The schema of the runtime and of Khala (spec §5), applied by every backend
/// provider before a test or a case touches the database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
