//! Faithful model of the OpenAgents runtime projection path (spec §2–§6, §10):
//! authority tables, projector, checkpoints, sinks and the Khala store on
//! PostgreSQL, with each known defect of spec §15 behind a named switch.

pub mod auditor;
pub mod authority;
pub mod checkpoint;
pub mod clock;
pub mod hashing;
pub mod notifier;
pub mod planted;
pub mod profile;
pub mod projector;
pub mod reprojection;
pub mod runtime;
pub mod sink;
pub mod summary;
pub mod sync;
pub mod watermark;

pub use planted::PlantedDefects;
pub use profile::{Profile, Switches};
pub use runtime::{Runtime, RuntimeConfig, SinkMode};
pub use summary::ProjectionKind;

/// The schema of the runtime and of Khala (spec §5), applied by every backend
/// provider before a test or a case touches the database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
