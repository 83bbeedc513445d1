//! `khala-sync-server`: the Khala sync server on a real database, with the
//! system clock driving heartbeats and retention, and commits of other
//! processes turned into wake-ups by polling the topic counters.

use clap::Parser;
use khala_runtime::clock::{Clock, SystemClock};
use khala_runtime::notifier::Notifier;
use khala_runtime::profile::UnknownProfile;
use khala_runtime::sync::config::{self, SyncConfig};
use khala_runtime::sync::jwt::{AuthConfig, HS256};
use khala_runtime::sync::{SyncServer, SyncServerError};
use khala_runtime::{MIGRATOR, Profile};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

/// Serve `sync:v1` over WebSocket and the hydration endpoints over HTTP.
#[derive(Debug, Parser)]
#[command(name = "khala-sync-server", version)]
struct Args {
    /// PostgreSQL URL of the runtime database.
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// `legacy` (the 2026-02 behaviour) or `hardened`.
    #[arg(long, default_value = "legacy")]
    profile: String,
    /// Apply the runtime migrations before serving.
    #[arg(long)]
    migrate: bool,
    #[arg(long, default_value_t = config::DEFAULT_REPLAY_BATCH_SIZE)]
    replay_batch_size: i64,
    #[arg(long, default_value_t = config::DEFAULT_HEARTBEAT_INTERVAL_MS)]
    heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = config::DEFAULT_HEARTBEAT_TIMEOUT_MS)]
    heartbeat_timeout_ms: u64,
    /// Close a socket that carried no frame for this long (Phoenix's
    /// websocket `timeout`).
    #[arg(long, default_value_t = config::DEFAULT_SOCKET_IDLE_TIMEOUT_MS)]
    socket_idle_timeout_ms: u64,
    #[arg(long, default_value_t = config::DEFAULT_RETENTION_INTERVAL_MS)]
    retention_interval_ms: u64,
    #[arg(long, default_value_t = config::DEFAULT_RETENTION_HORIZON_SECONDS)]
    retention_horizon_seconds: i64,
    #[arg(long, default_value_t = config::DEFAULT_RETENTION_BATCH_SIZE)]
    retention_batch_size: i64,
    #[arg(long, default_value_t = config::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
    /// How often to poll the topic counters for commits of other processes.
    #[arg(long, default_value_t = 250)]
    wake_poll_interval_ms: u64,
    /// Expected `iss`; empty skips the check.
    #[arg(long)]
    auth_issuer: Option<String>,
    /// Expected `aud`; empty skips the check.
    #[arg(long)]
    auth_audience: Option<String>,
    /// Expected `oa_claims_version`; empty skips the check.
    #[arg(long)]
    auth_claims_version: Option<String>,
    /// Comma-separated allowed algorithms.
    #[arg(long, default_value = HS256)]
    auth_allowed_algs: String,
    /// A signing key as `KID=SECRET`; repeat for a rotation. Without any, the
    /// base keyring (the development key) is kept, as in the original.
    #[arg(long = "auth-key", value_name = "KID=SECRET")]
    auth_keys: Vec<String>,
    /// A `tracing` filter for the log on stderr (no environment variable is
    /// read).
    #[arg(long, default_value = "info")]
    log_filter: String,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("parse --profile")]
    Profile(#[from] UnknownProfile),
    #[error("parse --auth-key `{given}`: expected KID=SECRET with both parts non-empty")]
    AuthKey { given: String },
    #[error("connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("migrate the database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Server(#[from] SyncServerError),
    #[error("wait for ctrl-c")]
    Signal(#[source] std::io::Error),
}

fn auth_config(args: &Args) -> Result<AuthConfig, CliError> {
    let base = AuthConfig::base();
    let mut keyring = BTreeMap::new();
    for given in &args.auth_keys {
        match given.split_once('=') {
            Some((kid, secret)) if !kid.is_empty() && !secret.is_empty() => {
                keyring.insert(kid.to_owned(), secret.as_bytes().to_vec());
            }
            _ => {
                return Err(CliError::AuthKey {
                    given: given.clone(),
                });
            }
        }
    }
    Ok(AuthConfig {
        issuer: args.auth_issuer.clone().or(base.issuer),
        audience: args.auth_audience.clone().or(base.audience),
        claims_version: args.auth_claims_version.clone().or(base.claims_version),
        allowed_algs: args
            .auth_allowed_algs
            .split(',')
            .map(str::trim)
            .filter(|alg| !alg.is_empty())
            .map(str::to_owned)
            .collect(),
        keyring: if keyring.is_empty() {
            base.keyring
        } else {
            keyring
        },
    })
}

async fn run(args: Args) -> Result<(), CliError> {
    let profile: Profile = args.profile.parse()?;
    let config = SyncConfig {
        listen: args.listen,
        replay_batch_size: args.replay_batch_size,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        heartbeat_timeout_ms: args.heartbeat_timeout_ms,
        socket_idle_timeout_ms: args.socket_idle_timeout_ms,
        retention_interval_ms: args.retention_interval_ms,
        retention_horizon_seconds: args.retention_horizon_seconds,
        retention_batch_size: args.retention_batch_size,
        max_frame_bytes: args.max_frame_bytes,
        auth: auth_config(&args)?,
        background_loops: true,
        wake_poll_interval_ms: Some(args.wake_poll_interval_ms),
        ..SyncConfig::new(profile)
    };
    let pool = sqlx::PgPool::connect(&args.database_url)
        .await
        .map_err(CliError::Connect)?;
    if args.migrate {
        MIGRATOR.run(&pool).await.map_err(CliError::Migrate)?;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = SyncServer::start(config, pool, Notifier::new(), clock).await?;
    println!(
        "khala-sync-server ({profile}) listening on {}",
        server.addr()
    );
    tokio::signal::ctrl_c().await.map_err(CliError::Signal)?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_filter))
        .with_writer(std::io::stderr)
        .try_init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = format!("khala-sync-server: failed to {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
