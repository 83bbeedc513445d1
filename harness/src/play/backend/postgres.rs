//! PostgreSQL for tests and harness runs: one server per process (a container, a
//! throwaway local server, or an external one), a template database migrated
//! once with `khala_runtime::MIGRATOR`, and a cheap clone of it per case.
//!
//! Nothing outlives the backend: `shutdown()` is the awaited cleanup, and `Drop`
//! does whatever `shutdown()` did not (also while a test panics).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tempfile::TempDir;
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};

use super::leftovers::{self, LeftoverError};
use std::os::unix::ffi::OsStrExt;

/// Which provider to use: `auto`, `containers`, `local` or `external`.
pub const ENV_BACKEND: &str = "KHALA_PARITY_BACKEND";
/// The container image as `name:tag`.
pub const ENV_POSTGRES_IMAGE: &str = "KHALA_PARITY_POSTGRES_IMAGE";
/// The server URL for the external provider.
pub const ENV_POSTGRES_URL: &str = "KHALA_PARITY_POSTGRES_URL";
/// `1` or `true`: `auto` must find a docker engine instead of falling back to local.
pub const ENV_REQUIRE_CONTAINERS: &str = "KHALA_PARITY_REQUIRE_CONTAINERS";
/// Where `initdb` and `postgres` live for the local provider.
pub const ENV_POSTGRES_BIN_DIR: &str = "KHALA_PARITY_POSTGRES_BIN_DIR";

/// Parent directory of the local provider's data directories.
pub const ENV_POSTGRES_DATA_ROOT: &str = "KHALA_PARITY_POSTGRES_DATA_ROOT";
/// PGDATA of both the official image and ours; mounted as tmpfs.
const CONTAINER_DATA_DIR: &str = "/var/lib/postgresql/data";

pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:15";
pub const DEFAULT_POSTGRES_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Every database this module creates starts with this, so that an external
/// server's own databases are recognisably not ours.
pub const DATABASE_PREFIX: &str = "khala_parity_";

/// The label on every container this module starts, for leak checks.
pub const CONTAINER_LABEL: (&str, &str) = ("khala-parity", "1");

const READY_MESSAGE: &str = "database system is ready to accept connections";
const DOCKER_PING_TIMEOUT: Duration = Duration::from_secs(3);
const CONTAINER_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The official image logs the ready message for a temporary init server
/// first, so readiness is only proven by a real TCP connection.
const CONTAINER_READY_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a container's bridge address may take to answer before the
/// published port is used instead.
const BRIDGE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const CASE_POOL_MAX_CONNECTIONS: u32 = 8;
/// Another process can take the port between our probe and the server's bind.
const LOCAL_START_ATTEMPTS: u32 = 3;

/// Numbers backends within this process, so that names stay unique even when
/// several backends share one external server.
static BACKEND_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// What the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// Containers when a docker engine answers, else local.
    Auto,
    Containers,
    Local,
    External,
}

impl BackendChoice {
    pub const VALID_VALUES: [&str; 4] = ["auto", "containers", "local", "external"];
}

impl FromStr for BackendChoice {
    type Err = ParseBackendChoiceError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" => Ok(Self::Auto),
            "containers" => Ok(Self::Containers),
            "local" => Ok(Self::Local),
            "external" => Ok(Self::External),
            _ => Err(ParseBackendChoiceError {
                value: value.to_owned(),
            }),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Containers => "containers",
            Self::Local => "local",
            Self::External => "external",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse backend choice {value:?}: expected one of auto, containers, local, external")]
pub struct ParseBackendChoiceError {
    pub value: String,
}

/// What actually runs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Containers,
    Local,
    External,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Containers => "containers",
            Self::Local => "local",
            Self::External => "external",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub choice: BackendChoice,
    /// `name:tag`; a name without a tag means `latest`.
    pub image: String,
    /// Required for `External`.
    pub external_url: Option<String>,
    /// When set, `Auto` without a docker engine is an error, never local.
    pub require_containers: bool,
    pub postgres_bin_dir: PathBuf,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            choice: BackendChoice::Auto,
            image: DEFAULT_POSTGRES_IMAGE.to_owned(),
            external_url: None,
            require_containers: false,
            postgres_bin_dir: PathBuf::from(DEFAULT_POSTGRES_BIN_DIR),
        }
    }
}

impl PostgresConfig {
    pub fn from_env() -> Result<Self, BackendError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so that tests need not change
    /// the process environment. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BackendError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let defaults = Self::default();
        let (choice, require_containers) = read_provider_settings(&get, defaults.choice)?;
        Ok(Self {
            choice,
            image: get(ENV_POSTGRES_IMAGE).unwrap_or(defaults.image),
            external_url: get(ENV_POSTGRES_URL),
            require_containers,
            postgres_bin_dir: get(ENV_POSTGRES_BIN_DIR)
                .map_or(defaults.postgres_bin_dir, PathBuf::from),
        })
    }
}

/// The provider choice and the no-fallback flag, read the same way for every
/// backend (empty values already filtered out by `get`).
pub(crate) fn read_provider_settings(
    get: &impl Fn(&str) -> Option<String>,
    default: BackendChoice,
) -> Result<(BackendChoice, bool), BackendError> {
    let choice = match get(ENV_BACKEND) {
        None => default,
        Some(value) => value
            .parse()
            .map_err(|source| BackendError::InvalidChoice {
                variable: ENV_BACKEND,
                source,
            })?,
    };
    let require_containers = match get(ENV_REQUIRE_CONTAINERS).as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(BackendError::InvalidFlag {
                variable: ENV_REQUIRE_CONTAINERS,
                value: other.to_owned(),
            });
        }
    };
    Ok((choice, require_containers))
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("read {variable}")]
    InvalidChoice {
        variable: &'static str,
        #[source]
        source: ParseBackendChoiceError,
    },
    #[error("read {variable}={value:?}: expected 1, true, 0 or false")]
    InvalidFlag {
        variable: &'static str,
        value: String,
    },
    #[error("start the external provider: {variable} is not set")]
    MissingExternalUrl { variable: &'static str },
    #[error("find a docker engine ({ENV_REQUIRE_CONTAINERS} forbids the local fallback): {reason}")]
    ContainersRequired { reason: String },
    #[error("reach a docker engine for the containers provider: {reason}")]
    EngineUnreachable { reason: String },
    #[error("start a postgres container from image {image}")]
    ContainerStart {
        image: String,
        #[source]
        source: Box<TestcontainersError>,
    },
    #[error("remove postgres container {container_id}")]
    ContainerRemove {
        container_id: String,
        #[source]
        source: Box<TestcontainersError>,
    },
    #[error("find the postgres program {} (set {ENV_POSTGRES_BIN_DIR})", path.display())]
    PostgresProgramMissing { path: PathBuf },
    #[error("start the local provider as root: no `postgres` user to run initdb and postgres as")]
    PostgresUserMissing,
    #[error("prepare the local data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mark the local data directory {} with its owner", path.display())]
    Owner {
        path: PathBuf,
        #[source]
        source: LeftoverError,
    },
    #[error("send {signal} to the local postgres server (pid {pid})")]
    PostmasterSignal {
        pid: u32,
        signal: String,
        #[source]
        source: io::Error,
    },
    #[error("wait for the local postgres server (pid {pid}) in {}", data_dir.display())]
    PostmasterWait {
        pid: u32,
        data_dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "start the local postgres server in {}: not ready within {waited_s} s\n{output}",
        data_dir.display()
    )]
    PostmasterNotReady {
        data_dir: PathBuf,
        waited_s: u64,
        output: String,
    },
    #[error("find a free port on 127.0.0.1")]
    FreePort {
        #[source]
        source: io::Error,
    },
    #[error("run `{command}` for the local server in {}", data_dir.display())]
    LocalCommand {
        command: String,
        data_dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("run `{command}` for the local server in {}: {status}\n{output}", data_dir.display())]
    LocalCommandFailed {
        command: String,
        data_dir: PathBuf,
        status: ExitStatus,
        output: String,
    },
    #[error("parse postgres url {url}")]
    InvalidUrl {
        url: String,
        #[source]
        source: Box<sqlx::Error>,
    },
    #[error("connect to the {provider} postgres server at {url}")]
    Unreachable {
        provider: ProviderKind,
        url: String,
        #[source]
        source: Box<sqlx::Error>,
    },
    #[error("create database {database}")]
    CreateDatabase {
        database: String,
        #[source]
        source: Box<sqlx::Error>,
    },
    #[error("migrate database {database}")]
    Migration {
        database: String,
        #[source]
        source: Box<MigrateError>,
    },
    #[error("read the tables and sequences of template database {database}")]
    ReadTemplate {
        database: String,
        #[source]
        source: Box<sqlx::Error>,
    },
    #[error("drop database {database}")]
    DropDatabase {
        database: String,
        #[source]
        source: Box<sqlx::Error>,
    },
}

/// A database of its own for one case, cloned from the migrated template.
pub struct CaseDatabase {
    pub pool: PgPool,
    pub name: String,
    /// Connects to this database; carries the server's password if it has one.
    pub url: String,
    admin: PgPool,
}

impl CaseDatabase {
    /// Drops the database now rather than with the server; `WITH (FORCE)`
    /// ends connections a test may still hold.
    pub async fn drop_database(self) -> Result<(), BackendError> {
        self.pool.close().await;
        drop_database(&self.admin, &self.name).await
    }
}

impl fmt::Debug for CaseDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaseDatabase")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// What a backend holds right now, for leak checks and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendResources {
    pub provider: ProviderKind,
    /// The maintenance database's URL; carries the server's password if it has one.
    pub admin_url: String,
    pub port: u16,
    pub container_id: Option<String>,
    /// The local provider's temporary directory (data, socket and log).
    pub data_dir: Option<PathBuf>,
    /// Databases created on the server and not yet dropped by the backend.
    pub databases: Vec<String>,
}

/// The server a backend owns. Containers and local servers clean up after
/// themselves when dropped; external databases are the backend's job.
enum Server {
    // Boxed: the container handle is about 850 bytes.
    Container(Option<Box<ContainerAsync<GenericImage>>>),
    // Boxed: the postmaster's child handle makes it about 250 bytes.
    Local(Option<Box<LocalServer>>),
    External,
}

/// One PostgreSQL server per test process or harness run, with a migrated
/// template database that `fresh_database` clones.
pub struct PostgresBackend {
    provider: ProviderKind,
    admin_url: String,
    port: u16,
    /// Connected to the maintenance database; runs CREATE and DROP DATABASE.
    admin: PgPool,
    template: String,
    name_prefix: String,
    case_sequence: AtomicU64,
    /// Every database created and not yet dropped, template first.
    databases: Mutex<Vec<String>>,
    /// Case databases handed back by `recycle`, waiting to be reset and
    /// handed out again by `case_database`.
    spares: Mutex<Vec<CaseDatabase>>,
    /// How to bring a used case database back to the template's state; built
    /// from the template once it is migrated.
    reset_plan: OnceLock<ResetPlan>,
    // Declared last so that it drops after the pool that talks to it.
    server: Server,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("provider", &self.provider)
            .field("admin_url", &redact_url(&self.admin_url))
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    pub async fn start(config: &PostgresConfig) -> Result<Self, BackendError> {
        let started = Instant::now();
        let provider =
            choose_provider(config.choice, config.require_containers, "postgres").await?;
        tracing::info!(%provider, choice = %config.choice, "starting the postgres backend");
        let (server, admin_url) = match provider {
            ProviderKind::Containers => {
                let (container, url) = start_container(&config.image).await?;
                (Server::Container(Some(Box::new(container))), url)
            }
            ProviderKind::Local => {
                let server = LocalServer::start(&config.postgres_bin_dir).await?;
                let url = server.admin_url();
                (Server::Local(Some(Box::new(server))), url)
            }
            ProviderKind::External => {
                let url = config
                    .external_url
                    .clone()
                    .ok_or(BackendError::MissingExternalUrl {
                        variable: ENV_POSTGRES_URL,
                    })?;
                (Server::External, url)
            }
        };
        let admin_options = parse_url(&admin_url)?;
        let sequence = BACKEND_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // From here on the backend owns the server: an early return drops it,
        // and `Drop` removes whatever was already created.
        let backend = Self {
            provider,
            port: admin_options.get_port(),
            admin: PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_lazy_with(admin_options),
            admin_url,
            template: format!("{DATABASE_PREFIX}template_{pid}_{sequence}"),
            name_prefix: format!("{DATABASE_PREFIX}{pid}_{sequence}"),
            case_sequence: AtomicU64::new(0),
            databases: Mutex::new(Vec::new()),
            spares: Mutex::new(Vec::new()),
            reset_plan: OnceLock::new(),
            server,
        };
        // One direct attempt gives the real cause; the pool would retry a
        // refused connection until its timeout and report only the timeout.
        connect_once(provider, &backend.admin_url).await?;
        backend.create_template().await?;
        tracing::info!(
            %provider,
            elapsed_ms = started.elapsed().as_millis() as u64,
            template = %backend.template,
            "postgres backend ready"
        );
        Ok(backend)
    }

    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    pub fn resources(&self) -> BackendResources {
        let (container_id, data_dir) = match &self.server {
            Server::Container(container) => (
                container
                    .as_ref()
                    .map(|container| container.id().to_owned()),
                None,
            ),
            Server::Local(server) => (
                None,
                server.as_ref().map(|server| server.root.path().to_owned()),
            ),
            Server::External => (None, None),
        };
        BackendResources {
            provider: self.provider,
            admin_url: self.admin_url.clone(),
            port: self.port,
            container_id,
            data_dir,
            databases: self.databases().clone(),
        }
    }

    /// Clones the migrated template into a new database: about 30 ms when the
    /// data directory is on tmpfs, a few hundred where file creation is slow.
    pub async fn fresh_database(&self) -> Result<CaseDatabase, BackendError> {
        let started = Instant::now();
        let case = self.case_sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}_case_{case}", self.name_prefix);
        self.create_database(&name, Some(&self.template)).await?;
        let created_ms = started.elapsed().as_millis() as u64;
        let url = with_database(&self.admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(CASE_POOL_MAX_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            // A ping before every acquire doubles the round trips of a step;
            // a broken connection fails its query instead, which the driver
            // reports as a backend failure.
            .test_before_acquire(false)
            .connect_with(parse_url(&url)?)
            .await
            .map_err(|source| self.unreachable(&url, source))?;
        tracing::debug!(
            database = %name,
            created_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "case database ready"
        );
        Ok(CaseDatabase {
            pool,
            name,
            url,
            admin: self.admin.clone(),
        })
    }

    /// A database in the template's state for one case: one handed back with
    /// `recycle`, reset in place (one round trip, and its connections keep
    /// their prepared statements), else a fresh clone. A reset that fails,
    /// or finds the schema changed, drops that database and clones instead.
    ///
    /// The reset covers table contents and sequences; a case must leave no
    /// session state (temporary tables, session advisory locks, `SET`) on
    /// the pooled connections.
    pub async fn case_database(&self) -> Result<CaseDatabase, BackendError> {
        let spare = self.spares().pop();
        if let Some(db) = spare {
            let started = Instant::now();
            match self.reset(&db).await {
                Ok(()) => {
                    tracing::debug!(
                        database = %db.name,
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "case database reset"
                    );
                    return Ok(db);
                }
                Err(error) => {
                    tracing::debug!(database = %db.name, %error, "reset failed; cloning instead");
                    db.pool.close().await;
                    drop_database(&self.admin, &db.name).await?;
                    self.forget(&db.name);
                }
            }
        }
        self.fresh_database().await
    }

    /// The URL of the database the last case left behind (the most
    /// recently recycled one), until the next case takes it: what a test
    /// of `khala-parity audit` points the audit at.
    pub fn last_case_url(&self) -> Option<String> {
        self.spares().last().map(|db| db.url.clone())
    }

    /// Keeps `db` for a later `case_database` instead of dropping it.
    pub fn recycle(&self, db: CaseDatabase) {
        self.spares().push(db);
    }

    /// Checks that the schema is still the template's, then truncates every
    /// table, puts the template's rows back and rewinds every sequence, in
    /// one transaction.
    async fn reset(&self, db: &CaseDatabase) -> Result<(), ResetError> {
        let plan = self.reset_plan.get().ok_or(ResetError::NoPlan)?;
        let digest: String = sqlx::query_scalar(SCHEMA_DIGEST_SQL)
            .fetch_one(&db.pool)
            .await?;
        if digest != plan.schema_digest {
            return Err(ResetError::SchemaChanged);
        }
        sqlx::raw_sql(AssertSqlSafe(plan.script.as_str()))
            .execute(&db.pool)
            .await?;
        Ok(())
    }

    /// The tables and sequences of `db` whose contents are not the
    /// template's (rows compared as text, sequences by value and state):
    /// what a reset left of the cases before it. Empty right after a reset.
    pub async fn off_template(&self, db: &CaseDatabase) -> Result<Vec<String>, ContentsError> {
        let plan = self.reset_plan.get().ok_or(ContentsError::NoPlan)?;
        let digests = contents(&db.pool, &plan.contents_sql).await?;
        let differing = digests
            .into_iter()
            .filter(|(name, digest)| plan.template_contents.get(name) != Some(digest))
            .map(|(name, _)| name)
            .collect();
        Ok(differing)
    }

    /// Drops the databases this backend created (external), stops the server
    /// (local, containers) and removes its files. On an error the rest is left
    /// to `Drop`.
    pub async fn shutdown(mut self) -> Result<(), BackendError> {
        let started = Instant::now();
        let spares = std::mem::take(&mut *self.spares());
        for spare in spares {
            spare.pool.close().await;
        }
        if self.provider == ProviderKind::External {
            // Newest first, the template last. `let else` releases the lock
            // before the await; a `while let` would hold it across the body.
            loop {
                let Some(name) = self.databases().last().cloned() else {
                    break;
                };
                drop_database(&self.admin, &name).await?;
                self.databases().pop();
            }
        }
        self.admin.close().await;
        match &mut self.server {
            Server::Container(container) => {
                if let Some(container) = container.take() {
                    let container_id = container.id().to_owned();
                    (*container)
                        .rm()
                        .await
                        .map_err(|source| BackendError::ContainerRemove {
                            container_id,
                            source: Box::new(source),
                        })?;
                }
            }
            Server::Local(server) => {
                if let Some(server) = server.take() {
                    server.stop().await?;
                }
            }
            Server::External => {}
        }
        self.databases().clear();
        tracing::info!(
            provider = %self.provider,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "postgres backend shut down"
        );
        Ok(())
    }

    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<CaseDatabase>> {
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes a dropped database from the list `shutdown` and `Drop` clean.
    fn forget(&self, name: &str) {
        self.databases().retain(|database| database != name);
    }

    fn databases(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A panicking holder cannot leave the list half-changed (pushes and
        // pops are single steps), so a poisoned lock is still usable.
        self.databases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unreachable(&self, url: &str, source: sqlx::Error) -> BackendError {
        BackendError::Unreachable {
            provider: self.provider,
            url: redact_url(url),
            source: Box::new(source),
        }
    }

    async fn create_template(&self) -> Result<(), BackendError> {
        self.create_database(&self.template, None).await?;
        let url = with_database(&self.admin_url, &self.template);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(parse_url(&url)?)
            .await
            .map_err(|source| self.unreachable(&url, source))?;
        let migrated = migrate(&pool, &self.template).await;
        let planned = match migrated {
            Ok(()) => ResetPlan::read(&pool)
                .await
                .map_err(|source| BackendError::ReadTemplate {
                    database: self.template.clone(),
                    source: Box::new(source),
                }),
            Err(error) => Err(error),
        };
        // CREATE DATABASE ... TEMPLATE refuses a template with open sessions.
        pool.close().await;
        let _already_set_means_the_same_template = self.reset_plan.set(planned?);
        Ok(())
    }

    async fn create_database(
        &self,
        name: &str,
        template: Option<&str>,
    ) -> Result<(), BackendError> {
        let sql = match template {
            Some(template) => format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#),
            None => format!(r#"CREATE DATABASE "{name}""#),
        };
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
            .map_err(|source| BackendError::CreateDatabase {
                database: name.to_owned(),
                source: Box::new(source),
            })?;
        self.databases().push(name.to_owned());
        Ok(())
    }
}

/// Every object created after initdb (oid at or above FirstNormalObjectId,
/// 16384: the migrations' and anything a case creates, temporary objects
/// included) as one text digest: schemas, relations, columns, defaults,
/// constraints, indexes, triggers, rules, policies and functions. Any DDL a
/// case runs (a fault's constraint, say) changes it. Raw catalog fields
/// found through the oid indexes, no deparsing: prepared, it costs well under
/// a millisecond.
const SCHEMA_DIGEST_SQL: &str = r#"
SELECT md5(string_agg(item, E'\n' ORDER BY item)) FROM (
    SELECT format('schema %s %s', oid, nspname) AS item FROM pg_namespace WHERE oid >= 16384
    UNION ALL
    SELECT format('relation %s %s %s %s %s %s %s %s %s %s %s', oid, relnamespace, relname,
                  relkind, relpersistence, relnatts, relchecks, relhastriggers, relhasrules,
                  relrowsecurity, reloptions)
    FROM pg_class WHERE oid >= 16384
    UNION ALL
    SELECT format('column %s %s %s %s %s %s %s %s', attrelid, attnum, attname, atttypid,
                  atttypmod, attnotnull, attisdropped, atthasdef)
    FROM pg_attribute WHERE attrelid >= 16384 AND attnum > 0
    UNION ALL
    SELECT format('default %s %s %s', oid, adrelid, adbin) FROM pg_attrdef WHERE oid >= 16384
    UNION ALL
    SELECT format('constraint %s %s %s %s %s %s %s %s', oid, conrelid, conname, contype,
                  convalidated, conkey, confkey, conbin)
    FROM pg_constraint WHERE oid >= 16384
    UNION ALL
    SELECT format('index %s %s %s %s %s %s', indexrelid, indrelid, indisunique, indkey,
                  indexprs, indpred)
    FROM pg_index WHERE indexrelid >= 16384
    UNION ALL
    SELECT format('trigger %s %s %s %s %s %s', oid, tgrelid, tgname, tgfoid, tgtype, tgenabled)
    FROM pg_trigger WHERE oid >= 16384
    UNION ALL
    SELECT format('rule %s %s %s %s', oid, ev_class, rulename, ev_enabled) FROM pg_rewrite
    WHERE oid >= 16384
    UNION ALL
    SELECT format('policy %s %s', oid, polrelid) FROM pg_policy WHERE oid >= 16384
    UNION ALL
    SELECT format('function %s %s %s', oid, proname, md5(prosrc)) FROM pg_proc WHERE oid >= 16384
) items
"#;

/// Every table of the template a case can write to (all but the migration
/// ledger), schema-qualified and quoted.
const TABLES_SQL: &str = r#"
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT (n.nspname = 'public' AND c.relname = '_sqlx_migrations')
ORDER BY 1
"#;

/// Every sequence, with the `setval` that puts it back where the template
/// has it (a never-used sequence restarts at its start value).
const SEQUENCES_SQL: &str = r#"
SELECT format('SELECT setval(%L, %s, %s);', format('%I.%I', schemaname, sequencename),
              coalesce(last_value, start_value),
              CASE WHEN last_value IS NULL THEN 'false' ELSE 'true' END)
FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY schemaname, sequencename
"#;

/// Every sequence, schema-qualified and quoted.
const SEQUENCE_NAMES_SQL: &str = r#"
SELECT format('%I.%I', schemaname, sequencename)
FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY schemaname, sequencename
"#;

/// How `case_database` resets a used case database to the template's state:
/// the template's schema digest, and one script run as one implicit
/// transaction (the simple query protocol). Rows go back in the template's
/// physical order, so that even scans without `ORDER BY` see what a fresh
/// clone shows.
#[derive(Debug)]
struct ResetPlan {
    schema_digest: String,
    script: String,
    /// One statement giving each table's and sequence's contents digest.
    contents_sql: String,
    /// Those digests in the template.
    template_contents: std::collections::BTreeMap<String, String>,
}

/// Why the contents of a case database could not be compared with the
/// template's.
#[derive(Debug, thiserror::Error)]
pub enum ContentsError {
    #[error("no reset plan: the template was not read")]
    NoPlan,
    #[error("read the contents digests")]
    Database(#[from] sqlx::Error),
}

/// `(name, digest)` of every table and sequence `contents_sql` names.
async fn contents(
    pool: &PgPool,
    contents_sql: &str,
) -> Result<std::collections::BTreeMap<String, String>, sqlx::Error> {
    if contents_sql.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(contents_sql))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Why a used case database could not be reset (it is then dropped).
#[derive(Debug, thiserror::Error)]
enum ResetError {
    #[error("no reset plan: the template was not read")]
    NoPlan,
    #[error("the schema is no longer the template's")]
    SchemaChanged,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ResetPlan {
    async fn read(template: &PgPool) -> Result<Self, sqlx::Error> {
        let schema_digest: String = sqlx::query_scalar(SCHEMA_DIGEST_SQL)
            .fetch_one(template)
            .await?;
        let tables: Vec<String> = sqlx::query_scalar(TABLES_SQL).fetch_all(template).await?;
        let mut script = String::from("SET LOCAL lock_timeout = '10s';\n");
        if !tables.is_empty() {
            script.push_str(&format!("TRUNCATE {};\n", tables.join(", ")));
        }
        for table in &tables {
            // The names come from the catalog, quoted by format('%I').
            let select = format!(
                "SELECT format('INSERT INTO %s SELECT * FROM json_populate_recordset(NULL::%s, %L);', \
                 $1::text, $1::text, json_agg(t ORDER BY t.ctid)) FROM {table} t HAVING count(*) > 0"
            );
            let insert: Option<String> = sqlx::query_scalar(AssertSqlSafe(select))
                .bind(table)
                .fetch_optional(template)
                .await?;
            if let Some(insert) = insert {
                script.push_str(&insert);
                script.push('\n');
            }
        }
        let sequences: Vec<String> = sqlx::query_scalar(SEQUENCES_SQL)
            .fetch_all(template)
            .await?;
        for setval in sequences {
            script.push_str(&setval);
            script.push('\n');
        }
        let sequence_names: Vec<String> = sqlx::query_scalar(SEQUENCE_NAMES_SQL)
            .fetch_all(template)
            .await?;
        // Names from the catalog, quoted by format('%I'); as literals, `'`
        // doubled.
        let literal = |name: &str| format!("'{}'", name.replace('\'', "''"));
        let contents_sql = tables
            .iter()
            .map(|table| {
                format!(
                    "SELECT {}::text, (SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t)",
                    literal(table)
                )
            })
            .chain(sequence_names.iter().map(|sequence| {
                format!(
                    "SELECT {}::text, (SELECT last_value::text || ' ' || is_called::text FROM {sequence})",
                    literal(sequence)
                )
            }))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let template_contents = contents(template, &contents_sql).await?;
        Ok(ResetPlan {
            schema_digest,
            script,
            contents_sql,
            template_contents,
        })
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        if let Server::Container(container) = &mut self.server
            && let Some(container) = container.take()
        {
            drop_container(container);
        }
        // Local servers stop in `LocalServer::drop`, after this.
        if self.provider == ProviderKind::External {
            let databases = std::mem::take(&mut *self.databases());
            if !databases.is_empty() {
                drop_databases_blocking(&self.admin_url, databases);
            }
        }
    }
}

/// Applies `khala_runtime::MIGRATOR` to the database behind `pool`; `database`
/// names it in the error.
pub async fn migrate(pool: &PgPool, database: &str) -> Result<(), BackendError> {
    khala_runtime::MIGRATOR
        .run(pool)
        .await
        .map_err(|source| BackendError::Migration {
            database: database.to_owned(),
            source: Box::new(source),
        })
}

/// Which provider runs, for both backends: `auto` is containers when a
/// docker engine answers, else local, unless `require_containers` forbids
/// the fallback. `what` names the backend in the log.
pub(crate) async fn choose_provider(
    choice: BackendChoice,
    require_containers: bool,
    what: &str,
) -> Result<ProviderKind, BackendError> {
    match choice {
        BackendChoice::Local => Ok(ProviderKind::Local),
        BackendChoice::External => Ok(ProviderKind::External),
        BackendChoice::Containers => {
            ping_docker_engine()
                .await
                .map_err(|reason| BackendError::EngineUnreachable { reason })?;
            Ok(ProviderKind::Containers)
        }
        BackendChoice::Auto => match ping_docker_engine().await {
            Ok(()) => Ok(ProviderKind::Containers),
            Err(reason) if require_containers => Err(BackendError::ContainersRequired { reason }),
            Err(reason) => {
                tracing::info!(%reason, what, "no docker engine answered; using the local provider");
                Ok(ProviderKind::Local)
            }
        },
    }
}

/// Asks the engine testcontainers would use (DOCKER_HOST or the default
/// socket) for a ping, bounded so that a black-holed TCP host cannot hang us.
async fn ping_docker_engine() -> Result<(), String> {
    let docker_host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".to_owned());
    let ping = async {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .map_err(|error| error.to_string())?;
        docker.ping().await.map_err(|error| error.to_string())
    };
    match tokio::time::timeout(DOCKER_PING_TIMEOUT, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("no docker engine at {docker_host}: {error}")),
        Err(_) => Err(format!(
            "no docker engine at {docker_host} answered within {} s",
            DOCKER_PING_TIMEOUT.as_secs()
        )),
    }
}

async fn start_container(
    image: &str,
) -> Result<(ContainerAsync<GenericImage>, String), BackendError> {
    let (name, tag) = split_image(image);
    leftovers::reap_containers().await;
    let container = GenericImage::new(name, tag)
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(READY_MESSAGE))
        .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
        .with_label(CONTAINER_LABEL.0, CONTAINER_LABEL.1)
        // Names this process, so that a start after it was killed removes
        // the container (`leftovers::reap_containers`).
        .with_label(leftovers::OWNER_LABEL, leftovers::owner_label())
        // Creating a database writes ~300 files; on this kind of disk that
        // costs ~300 ms per clone, on tmpfs ~25 ms. Test data is throwaway.
        .with_mount(Mount::tmpfs_mount(CONTAINER_DATA_DIR))
        .with_startup_timeout(CONTAINER_STARTUP_TIMEOUT)
        .start()
        .await
        .map_err(|source| BackendError::ContainerStart {
            image: image.to_owned(),
            source: Box::new(source),
        })?;
    let port = container
        .get_host_port_ipv4(5432.tcp())
        .await
        .map_err(|source| BackendError::ContainerStart {
            image: image.to_owned(),
            source: Box::new(source),
        })?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    wait_until_ready(&url).await?;
    let url = bridge_url(&container).await.unwrap_or(url);
    Ok((container, url))
}

/// The container's own address on the docker bridge, when this host can
/// reach it. It skips docker's userland port proxy, which doubles every
/// round trip (0.11 against 0.22 ms per `SELECT 1`, measured here), and a
/// case is dozens of round trips per step. Where the bridge is not routable
/// (a remote engine, Docker Desktop) the published port stays.
async fn bridge_url(container: &ContainerAsync<GenericImage>) -> Option<String> {
    let url = |address: SocketAddr| format!("postgres://postgres@{address}/postgres");
    let address = bridge_address(container, 5432, async |address| {
        let options: PgConnectOptions = url(address).parse()?;
        let mut connection = PgConnection::connect_with(&options).await?;
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        connection.close().await
    })
    .await?;
    Some(url(address))
}

/// `port` on `container`'s docker bridge address, if `probe` succeeds there
/// within `BRIDGE_PROBE_TIMEOUT`; `None` tells the caller to keep the
/// published port. Both backends decide this way.
pub(crate) async fn bridge_address<Probe, Answer, Error>(
    container: &ContainerAsync<GenericImage>,
    port: u16,
    probe: Probe,
) -> Option<SocketAddr>
where
    Probe: FnOnce(SocketAddr) -> Answer,
    Answer: Future<Output = Result<(), Error>>,
    Error: fmt::Display,
{
    // Not `get_bridge_ip_address`: it looks the network mode up as a network,
    // and older engines (20.10 here) report the mode `default`, which names
    // no network, so it fails there.
    let ip = async {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .ok()?;
        let details = docker.inspect_container(container.id(), None).await.ok()?;
        let endpoint = details.network_settings?.networks?.remove("bridge")?;
        endpoint.ip_address?.parse::<IpAddr>().ok()
    };
    let Some(ip) = ip.await else {
        tracing::debug!("no address on the docker bridge; using the published port");
        return None;
    };
    let address = SocketAddr::new(ip, port);
    match tokio::time::timeout(BRIDGE_PROBE_TIMEOUT, probe(address)).await {
        Ok(Ok(())) => {
            tracing::debug!(%address, "the bridge address answers; skipping the published port");
            Some(address)
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, %address, "the bridge address does not answer; using the published port");
            None
        }
        Err(_) => {
            tracing::debug!(%address, "the bridge address does not answer in time; using the published port");
            None
        }
    }
}

/// Where local servers keep their data: `KHALA_PARITY_POSTGRES_DATA_ROOT`,
/// else `/dev/shm` when it exists (database clones are ~10x faster on tmpfs
/// than on the disks measured here), else the system temp dir.
fn local_data_parent() -> PathBuf {
    if let Some(root) = std::env::var_os(ENV_POSTGRES_DATA_ROOT).filter(|root| !root.is_empty()) {
        return PathBuf::from(root);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// `name:tag`, where a colon before the last slash belongs to a registry port.
pub(crate) fn split_image(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

async fn wait_until_ready(url: &str) -> Result<(), BackendError> {
    let deadline = Instant::now() + CONTAINER_READY_TIMEOUT;
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect_once(ProviderKind::Containers, url).await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() + backoff >= deadline => return Err(error),
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// One connection and `SELECT 1`, bounded by `CONNECT_TIMEOUT`.
async fn connect_once(provider: ProviderKind, url: &str) -> Result<(), BackendError> {
    let options = parse_url(url)?;
    let attempt = async {
        let mut connection = PgConnection::connect_with(&options).await?;
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        connection.close().await
    };
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        ))),
    };
    result.map_err(|source| BackendError::Unreachable {
        provider,
        url: redact_url(url),
        source: Box::new(source),
    })
}

async fn drop_database(admin: &PgPool, name: &str) -> Result<(), BackendError> {
    let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(admin)
        .await
        .map_err(|source| BackendError::DropDatabase {
            database: name.to_owned(),
            source: Box::new(source),
        })?;
    Ok(())
}

/// Drop cannot await, and a runtime cannot be started on a thread that runs
/// one, so a short-lived thread gets its own runtime and connection.
fn drop_databases_blocking(admin_url: &str, databases: Vec<String>) {
    let admin_url = admin_url.to_owned();
    let worker = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::warn!(%error, ?databases, "could not start a runtime to drop databases");
                return;
            }
        };
        runtime.block_on(async {
            let admin = match parse_url(&admin_url) {
                Ok(options) => PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_lazy_with(options),
                Err(error) => {
                    tracing::warn!(%error, ?databases, "could not drop databases");
                    return;
                }
            };
            for name in databases.iter().rev() {
                if let Err(error) = drop_database(&admin, name).await {
                    tracing::warn!(%error, "could not drop a database while cleaning up");
                }
            }
            admin.close().await;
        });
    });
    if worker.join().is_err() {
        tracing::warn!("the thread dropping databases panicked");
    }
}

/// testcontainers removes a container on drop through the current tokio
/// runtime (block_in_place on a multi-thread runtime, a drop-worker thread on a
/// current-thread one) and panics without one; outside a runtime we enter a
/// temporary current-thread runtime so that its drop worker does the removal.
pub(crate) fn drop_container(container: Box<ContainerAsync<GenericImage>>) {
    if tokio::runtime::Handle::try_current().is_ok() {
        drop(container);
        return;
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let _entered = runtime.enter();
            drop(container);
        }
        Err(error) => {
            // Dropping it here would panic inside Drop; leaking is the lesser harm.
            let id = container.id();
            tracing::warn!(%error, id, "leaking a container: no runtime to remove it");
            std::mem::forget(container);
        }
    }
}

/// The prefix of every local server's directory under the data parent, by
/// which the next start finds what a killed run left (`reap_local_servers`).
const LOCAL_DIR_PREFIX: &str = "khala-parity-pg-";
/// How long the postmaster may take to report itself ready (pg_ctl's `-t 30`).
const LOCAL_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an immediate shutdown may take before SIGKILL.
const LOCAL_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A throwaway server from the installed binaries, in a temporary directory
/// holding `data/`, the unix socket, `postgres.log` and the owner file.
///
/// The postmaster is our child, started directly rather than through
/// `pg_ctl` (which daemonizes it), so that it carries a parent-death
/// signal: if the harness is killed, the kernel sends it SIGQUIT and it
/// shuts down at once (as `pg_ctl stop -m immediate` would). The directory
/// outlives such a death; the next local start removes it
/// (`reap_local_servers`).
struct LocalServer {
    root: TempDir,
    bin_dir: PathBuf,
    /// initdb and postgres refuse root, so as root they run as `postgres`:
    /// its uid and gid.
    postgres_ids: Option<(u32, u32)>,
    port: u16,
    /// The postmaster; `None` once stopped.
    postmaster: Option<tokio::process::Child>,
}

impl LocalServer {
    async fn start(bin_dir: &Path) -> Result<Self, BackendError> {
        for program in ["initdb", "postgres"] {
            let path = bin_dir.join(program);
            if !path.is_file() {
                return Err(BackendError::PostgresProgramMissing { path });
            }
        }
        let postgres_ids = if effective_uid() == Some(0) {
            Some(postgres_user_ids().ok_or(BackendError::PostgresUserMissing)?)
        } else {
            None
        };
        let parent = local_data_parent();
        reap_local_servers(&parent);
        let root = tempfile::Builder::new()
            .prefix(LOCAL_DIR_PREFIX)
            .tempdir_in(&parent)
            .map_err(|source| BackendError::DataDir {
                path: parent.clone(),
                source,
            })?;
        leftovers::write_owner(root.path()).map_err(|source| BackendError::Owner {
            path: root.path().to_owned(),
            source,
        })?;
        if let Some((uid, gid)) = postgres_ids {
            std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).map_err(|source| {
                BackendError::DataDir {
                    path: root.path().to_owned(),
                    source,
                }
            })?;
        }
        let mut server = Self {
            root,
            bin_dir: bin_dir.to_owned(),
            postgres_ids,
            port: 0,
            postmaster: None,
        };
        let data_dir = server.data_dir();
        let mut initdb = server.command("initdb");
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"]);
        server.run("initdb", initdb).await?;
        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            match server.start_postmaster().await {
                Ok(postmaster) => {
                    server.postmaster = Some(postmaster);
                    return Ok(server);
                }
                Err(error) if attempt < LOCAL_START_ATTEMPTS && server.lost_port_race() => {
                    let port = server.port;
                    tracing::info!(%error, port, "port taken before the server bound it; retrying");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `program` from the bin dir, as `postgres` when we are root.
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.postgres_ids {
            // std drops the supplementary groups too when root sets a uid.
            command.uid(uid).gid(gid);
        }
        // The postgres user may not be allowed into the caller's directory.
        // A group of its own keeps a terminal's Ctrl-C (sent to the whole
        // foreground group) away from the server: the harness decides when
        // it stops, after the cases in flight.
        command
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .process_group(0);
        command
    }

    /// Starts the postmaster on `self.port` with its output in the log, and
    /// waits until its `postmaster.pid` says it is ready (what `pg_ctl -w`
    /// waits for), bounded by `LOCAL_READY_TIMEOUT`.
    async fn start_postmaster(&self) -> Result<tokio::process::Child, BackendError> {
        let log_error = |source| BackendError::DataDir {
            path: self.log_file(),
            source,
        };
        // Each attempt reads only its own log when deciding to retry.
        let log = std::fs::File::create(self.log_file()).map_err(log_error)?;
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.root.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdout(log.try_clone().map_err(log_error)?)
            .stderr(log);
        // SIGQUIT is PostgreSQL's immediate shutdown: it stops its backends
        // and removes its shared memory before it exits.
        leftovers::die_with_harness(&mut command, rustix::process::Signal::QUIT);
        let mut postmaster = command
            .spawn()
            .map_err(|source| BackendError::LocalCommand {
                command: "postgres".to_owned(),
                data_dir: self.data_dir(),
                source,
            })?;
        let pid = postmaster.id().unwrap_or(0);
        let deadline = Instant::now() + LOCAL_READY_TIMEOUT;
        loop {
            let exited = postmaster
                .try_wait()
                .map_err(|source| BackendError::PostmasterWait {
                    pid,
                    data_dir: self.data_dir(),
                    source,
                })?;
            if let Some(status) = exited {
                return Err(BackendError::LocalCommandFailed {
                    command: "postgres".to_owned(),
                    data_dir: self.data_dir(),
                    status,
                    output: self.log_tail(),
                });
            }
            if self.postmaster_ready() {
                return Ok(postmaster);
            }
            if Instant::now() >= deadline {
                stop_postmaster(postmaster, &self.data_dir()).await?;
                return Err(BackendError::PostmasterNotReady {
                    data_dir: self.data_dir(),
                    waited_s: LOCAL_READY_TIMEOUT.as_secs(),
                    output: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status line (the 8th) of `postmaster.pid` reads `ready` once the
    /// server accepts connections.
    fn postmaster_ready(&self) -> bool {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .is_ok_and(|pid_file| pid_file.lines().nth(7).map(str::trim) == Some("ready"))
    }

    fn lost_port_race(&self) -> bool {
        std::fs::read_to_string(self.log_file())
            .is_ok_and(|log| log.contains("could not bind") || log.contains("already in use"))
    }

    /// The last 20 lines of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.reverse();
        tail.join("\n").trim().to_owned()
    }

    async fn run(&self, name: &str, command: tokio::process::Command) -> Result<(), BackendError> {
        let mut command = command;
        let output = command
            .output()
            .await
            .map_err(|source| BackendError::LocalCommand {
                command: name.to_owned(),
                data_dir: self.data_dir(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let mut details = String::from_utf8_lossy(&output.stderr).into_owned();
        details.push('\n');
        details.push_str(&self.log_tail());
        Err(BackendError::LocalCommandFailed {
            command: name.to_owned(),
            data_dir: self.data_dir(),
            status: output.status,
            output: details.trim().to_owned(),
        })
    }

    async fn stop(mut self) -> Result<(), BackendError> {
        if let Some(postmaster) = self.postmaster.take() {
            stop_postmaster(postmaster, &self.data_dir()).await?;
        }
        let root = self.root.path().to_owned();
        tokio::fs::remove_dir_all(&root)
            .await
            .map_err(|source| BackendError::DataDir { path: root, source })
    }
}

/// An immediate shutdown (SIGQUIT), then SIGKILL after
/// `LOCAL_STOP_TIMEOUT`; reaps the postmaster either way.
async fn stop_postmaster(
    mut postmaster: tokio::process::Child,
    data_dir: &Path,
) -> Result<(), BackendError> {
    let Some(pid) = postmaster.id() else {
        // Already reaped: it exited on its own.
        return Ok(());
    };
    let wait_error = |source| BackendError::PostmasterWait {
        pid,
        data_dir: data_dir.to_owned(),
        source,
    };
    signal_postmaster(pid, rustix::process::Signal::QUIT)?;
    let status = match tokio::time::timeout(LOCAL_STOP_TIMEOUT, postmaster.wait()).await {
        Ok(result) => result.map_err(wait_error)?,
        Err(_) => {
            tracing::warn!(pid, "postgres ignored an immediate shutdown; killing it");
            postmaster.kill().await.map_err(wait_error)?;
            postmaster.wait().await.map_err(wait_error)?
        }
    };
    tracing::debug!(pid, %status, "local postgres exited");
    Ok(())
}

fn signal_postmaster(pid: u32, signal: rustix::process::Signal) -> Result<(), BackendError> {
    let error = |source: io::Error| BackendError::PostmasterSignal {
        pid,
        signal: format!("{signal:?}"),
        source,
    };
    let raw = i32::try_from(pid).map_err(|_| error(io::Error::other("pid out of range")))?;
    let target = rustix::process::Pid::from_raw(raw)
        .ok_or_else(|| error(io::Error::other("pid 0 is no process")))?;
    rustix::process::kill_process(target, signal).map_err(|errno| error(errno.into()))
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let Some(mut postmaster) = self.postmaster.take() else {
            return;
        };
        let Some(pid) = postmaster.id() else {
            return;
        };
        // Blocking is acceptable here: an immediate shutdown takes a few
        // hundred milliseconds, and Drop cannot await.
        if let Err(error) = signal_postmaster(pid, rustix::process::Signal::QUIT) {
            tracing::warn!(%error, "could not stop postgres while cleaning up");
        }
        let deadline = Instant::now() + LOCAL_STOP_TIMEOUT;
        loop {
            match postmaster.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    tracing::warn!(pid, "postgres ignored an immediate shutdown; killing it");
                    let _ = postmaster.start_kill();
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, pid, "could not reap postgres while cleaning up");
                    break;
                }
            }
        }
        // `root` removes the directory when it drops, after this.
    }
}

/// Removes the servers killed runs left under `parent`: each directory of
/// ours whose owner is gone, after stopping a postmaster still running
/// from it (one started before parent-death signals, or one that did not
/// take its signal).
fn reap_local_servers(parent: &Path) {
    leftovers::reap_dirs(parent, LOCAL_DIR_PREFIX, |root| {
        let data_dir = root.join("data");
        let Some(pid) = std::fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|pid_file| pid_file.lines().next()?.trim().parse::<u32>().ok())
        else {
            return;
        };
        // The pid may have been reused since: only a process started on
        // this very data directory is stopped.
        let started_here = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            cmdline
                .split(|byte| *byte == 0)
                .any(|argument| Path::new(std::ffi::OsStr::from_bytes(argument)) == data_dir)
        });
        if !started_here {
            return;
        }
        tracing::info!(pid, data_dir = %data_dir.display(), "stopping a postgres a killed run left");
        let stopped = |within: Duration| {
            let deadline = Instant::now() + within;
            while leftovers::process_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            !leftovers::process_running(pid)
        };
        if signal_postmaster(pid, rustix::process::Signal::QUIT).is_ok()
            && !stopped(LOCAL_STOP_TIMEOUT)
        {
            let _ = signal_postmaster(pid, rustix::process::Signal::KILL);
            stopped(Duration::from_secs(2));
        }
    });
}

/// The effective user id, from /proc (Linux), to avoid an unsafe libc call.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// The `postgres` user's uid and gid from /etc/passwd.
fn postgres_user_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != "postgres" {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// A port nothing listens on right now; the server binds it moments later.
fn free_port() -> Result<u16, BackendError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|source| BackendError::FreePort { source })
}

fn parse_url(url: &str) -> Result<PgConnectOptions, BackendError> {
    url.parse().map_err(|source| BackendError::InvalidUrl {
        url: redact_url(url),
        source: Box::new(source),
    })
}

/// The same URL with another database (path), keeping user, host and query.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |index| authority_start + index);
    let mut result = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

/// Replaces the password in the user info and in a `password=` query parameter
/// with `***`, so that URLs can go into errors and logs.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let mut result = base[..authority_start].to_owned();
    let rest = &base[authority_start..];
    match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            match user_info.split_once(':') {
                Some((user, _password)) => result.push_str(&format!("{user}:***")),
                None => result.push_str(user_info),
            }
            result.push('@');
            result.push_str(host);
        }
        None => result.push_str(rest),
    }
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => parameter.to_owned(),
            })
            .collect();
        result.push('?');
        result.push_str(&parameters.join("&"));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/main?sslmode=disable&password=x"),
            "postgres://app:***@db:5432/main?sslmode=disable&password=***"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5/postgres"),
            "postgres://postgres@127.0.0.1:5/postgres"
        );
    }

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://app:pw@db:5432/main?sslmode=disable", "case_1"),
            "postgres://app:pw@db:5432/case_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://db", "case_1"),
            "postgres://db/case_1"
        );
    }

    #[test]
    fn split_image_defaults_the_tag() {
        assert_eq!(split_image("postgres:15"), ("postgres", "15"));
        assert_eq!(
            split_image("khala-parity/postgres:15-bookworm"),
            ("khala-parity/postgres", "15-bookworm")
        );
        assert_eq!(
            split_image("localhost:5000/postgres"),
            ("localhost:5000/postgres", "latest")
        );
    }
}
