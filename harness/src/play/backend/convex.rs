//! The Convex side for tests and harness runs: the model in `models/convex`
//! (Convex functions on convex-test behind a Node HTTP front) as a container
//! or a local `node` child, or an external deployment.
//!
//! Containers and local fronts get an admin key generated per backend, so
//! every call goes through the front's auth check. `reset()` empties the store
//! between cases; `pause`, `unpause`, `stop` and `start_again` inject faults,
//! and the address stays the same across a stop and a start, so that a sink
//! configured once keeps pointing at the restarted front.
//!
//! A container front runs in the network of a second container that only
//! sleeps and is never stopped: it keeps the bridge address and the published
//! port while the front is down, which docker would otherwise hand to the next
//! container. The front is reached on that bridge address when it routes (no
//! docker-proxy hop), else on the published port.
//!
//! Nothing outlives the backend: `shutdown()` is the awaited cleanup, and
//! `Drop` does whatever `shutdown()` did not (also while a test panics).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use testcontainers::bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::leftovers::{self, LeftoverError, OWNER_LABEL};
use super::postgres::{
    BackendChoice, BackendError, CONTAINER_LABEL, ProviderKind, bridge_address, choose_provider,
    drop_container, read_provider_settings, redact_url, split_image,
};

/// The container image as `name:tag`.
pub const ENV_CONVEX_IMAGE: &str = "KHALA_PARITY_CONVEX_IMAGE";
/// The provider of the Convex side alone, in place of `KHALA_PARITY_BACKEND`:
/// `external` with a local PostgreSQL runs against a real deployment
/// without a PostgreSQL server of one's own.
pub const ENV_CONVEX_BACKEND: &str = "KHALA_PARITY_CONVEX_BACKEND";
/// The deployment URL for the external provider.
pub const ENV_CONVEX_URL: &str = "KHALA_PARITY_CONVEX_URL";
/// The external deployment's admin key, sent as `Authorization: Convex <key>`.
pub const ENV_CONVEX_ADMIN_KEY: &str = "KHALA_PARITY_CONVEX_ADMIN_KEY";
/// The npm package the local provider runs (`server.mjs`, `node_modules`).
pub const ENV_CONVEX_PACKAGE_DIR: &str = "KHALA_PARITY_CONVEX_PACKAGE_DIR";
/// The `node` program the local provider runs.
pub const ENV_NODE: &str = "KHALA_PARITY_NODE";
/// How the front answers a failed function: `200` (the open-source
/// backend) or `560` (the other status the official client accepts).
pub const ENV_CONVEX_UDF_FAILURE_STATUS: &str = "KHALA_PARITY_CONVEX_UDF_FAILURE_STATUS";

pub const DEFAULT_CONVEX_IMAGE: &str = "khala-parity/convex-front:bookworm";
/// Where the package lies in a working tree, relative to its root.
pub const CONVEX_PACKAGE_IN_TREE: &str = "models/convex";
/// The package in the tree the binary was built from: the last place looked.
const BUILT_CONVEX_PACKAGE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/convex");
pub const DEFAULT_NODE: &str = "node";

/// Where the front listens inside the image.
pub const CONTAINER_PORT: u16 = 3210;
/// The front prints this, then its URL, once it listens (and nothing else on stdout).
const LISTENING_MESSAGE: &str = "convex-front listening on ";
const HEALTH_PATH: &str = "/_harness/health";
const RESET_PATH: &str = "/_harness/reset";
/// What an external deployment must answer to count as reachable: a query
/// every deployment of `models/convex` has, reading at most one document.
const EXTERNAL_PROBE_FUNCTION: &str = "runtime:listRunSummaries";

const CONTAINER_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The listening line can come before the published port forwards, and a
/// restarted container prints nothing new, so readiness is an HTTP answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Node needs about half a second to load convex-test; far more on a loaded machine.
const LOCAL_START_TIMEOUT: Duration = Duration::from_secs(20);
/// The front closes its connections and exits at once on SIGTERM (at most 1 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pause or unpause waits out Docker's state catching up (see
/// `until_settled`), and how often it tries.
const STATE_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const STATE_SETTLE_INTERVAL: Duration = Duration::from_millis(20);
/// Where a container front keeps its journal of committed mutations.
const CONTAINER_JOURNAL: &str = "/tmp/convex-journal.jsonl";
const REAP_TIMEOUT_IN_DROP: Duration = Duration::from_secs(2);
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a local front's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 16 * 1024;
const ERROR_BODY_CHARS: usize = 500;

/// Numbers backends within this process, for the per-backend container label.
static BACKEND_SEQUENCE: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, PartialEq, Eq)]
pub struct ConvexConfig {
    pub choice: BackendChoice,
    /// `name:tag`; a name without a tag means `latest`.
    pub image: String,
    /// Required for `External`.
    pub external_url: Option<String>,
    /// Sent to an external deployment when set.
    pub external_admin_key: Option<String>,
    /// When set, `Auto` without a docker engine is an error, never local.
    pub require_containers: bool,
    /// The npm package the local provider runs; `npm ci` must have run in it.
    pub package_dir: PathBuf,
    pub node: PathBuf,
    /// How the local or container front answers a failed function; an
    /// external deployment answers as it does.
    pub udf_failure_status: UdfFailureStatus,
}

/// The HTTP status of a function that ran and failed (`status: "error"`).
/// The open-source backend answers 200; the official JS client accepts 560
/// for the same body. The runtime's sink must treat both alike, so the
/// front plays either (real-systems.md §1.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UdfFailureStatus {
    #[default]
    Ok200,
    UdfFailed560,
}

impl UdfFailureStatus {
    pub const ALL: [UdfFailureStatus; 2] =
        [UdfFailureStatus::Ok200, UdfFailureStatus::UdfFailed560];

    pub fn code(self) -> u16 {
        match self {
            UdfFailureStatus::Ok200 => 200,
            UdfFailureStatus::UdfFailed560 => 560,
        }
    }
}

impl std::str::FromStr for UdfFailureStatus {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text.trim() {
            "200" => Ok(UdfFailureStatus::Ok200),
            "560" => Ok(UdfFailureStatus::UdfFailed560),
            _ => Err(()),
        }
    }
}

impl fmt::Display for UdfFailureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl Default for ConvexConfig {
    fn default() -> Self {
        Self {
            choice: BackendChoice::Auto,
            image: DEFAULT_CONVEX_IMAGE.to_owned(),
            external_url: None,
            external_admin_key: None,
            require_containers: false,
            package_dir: default_package_dir(std::env::current_dir().ok().as_deref()),
            node: PathBuf::from(DEFAULT_NODE),
            udf_failure_status: UdfFailureStatus::default(),
        }
    }
}

/// The Convex front package when `KHALA_PARITY_CONVEX_PACKAGE_DIR` is not
/// set: `models/convex` in the working tree the command runs in (the current
/// directory or the nearest ancestor that has it), else in the tree the
/// binary was built from. A binary copied elsewhere thus still finds the
/// package of the checkout it runs in. When neither has `server.mjs`, the
/// working tree's path is kept, so the error names where it looked.
pub fn default_package_dir(working_dir: Option<&Path>) -> PathBuf {
    let in_tree = working_dir.and_then(|dir| {
        dir.ancestors()
            .map(|ancestor| ancestor.join(CONVEX_PACKAGE_IN_TREE))
            .find(|candidate| candidate.join("server.mjs").is_file())
    });
    let built = Path::new(BUILT_CONVEX_PACKAGE_DIR);
    in_tree
        .or_else(|| built.join("server.mjs").is_file().then(|| built.to_owned()))
        .unwrap_or_else(|| {
            working_dir.map_or_else(|| built.to_owned(), |dir| dir.join(CONVEX_PACKAGE_IN_TREE))
        })
}

// By hand: the admin key and the URL's credentials stay out of logs.
impl fmt::Debug for ConvexConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConvexConfig")
            .field("choice", &self.choice)
            .field("image", &self.image)
            .field(
                "external_url",
                &self.external_url.as_deref().map(redact_url),
            )
            .field(
                "external_admin_key",
                &self.external_admin_key.as_ref().map(|_| "***"),
            )
            .field("require_containers", &self.require_containers)
            .field("package_dir", &self.package_dir)
            .field("node", &self.node)
            .finish()
    }
}

impl ConvexConfig {
    pub fn from_env() -> Result<Self, ConvexBackendError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so that tests need not change
    /// the process environment. Empty values count as unset. The provider
    /// choice and `KHALA_PARITY_REQUIRE_CONTAINERS` are the ones PostgreSQL
    /// reads: both backends of a run come from the same kind of provider,
    /// unless `KHALA_PARITY_CONVEX_BACKEND` chooses Convex's alone.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConvexBackendError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let defaults = Self::default();
        let (mut choice, require_containers) = read_provider_settings(&get, defaults.choice)?;
        if let Some(value) = get(ENV_CONVEX_BACKEND) {
            choice = value
                .parse()
                .map_err(|source| BackendError::InvalidChoice {
                    variable: ENV_CONVEX_BACKEND,
                    source,
                })?;
        }
        let udf_failure_status = match get(ENV_CONVEX_UDF_FAILURE_STATUS) {
            None => defaults.udf_failure_status,
            Some(value) => {
                value
                    .parse()
                    .map_err(|()| ConvexBackendError::InvalidUdfFailureStatus {
                        variable: ENV_CONVEX_UDF_FAILURE_STATUS,
                        value,
                    })?
            }
        };
        let external_url = get(ENV_CONVEX_URL);
        if let Some(url) = &external_url {
            check_deployment_url(url)?;
        }
        let external_admin_key = get(ENV_CONVEX_ADMIN_KEY);
        if let Some(key) = &external_admin_key {
            check_admin_key(key)?;
        }
        Ok(Self {
            choice,
            image: get(ENV_CONVEX_IMAGE).unwrap_or(defaults.image),
            external_url,
            external_admin_key,
            require_containers,
            package_dir: get(ENV_CONVEX_PACKAGE_DIR).map_or(defaults.package_dir, PathBuf::from),
            node: get(ENV_NODE).map_or(defaults.node, PathBuf::from),
            udf_failure_status,
        })
    }
}

/// Refuses a deployment URL that is not `http://` or `https://` with a
/// host: anything else would fail later, on the first call, far from the
/// setting that caused it.
fn check_deployment_url(url: &str) -> Result<(), ConvexBackendError> {
    let invalid = |reason: String| ConvexBackendError::InvalidDeploymentUrl {
        variable: ENV_CONVEX_URL,
        url: redact_url(url),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme is {:?}, not http or https",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it names no host".to_owned()));
    }
    Ok(())
}

/// Refuses an admin key that cannot be one: it is sent as the HTTP header
/// `Authorization: Convex <key>`, and every key Convex hands out (a cloud
/// deployment's `prod:name|…`, a self-hosted `convex-self-hosted|…`) is
/// printable ASCII without spaces. The key itself never appears in the
/// error: only what is wrong with it and where.
fn check_admin_key(key: &str) -> Result<(), ConvexBackendError> {
    let invalid = |reason: String| ConvexBackendError::InvalidAdminKey {
        variable: ENV_CONVEX_ADMIN_KEY,
        reason,
    };
    if key.starts_with("Convex ") {
        return Err(invalid(
            "it starts with \"Convex \": give the key alone, the harness adds the scheme"
                .to_owned(),
        ));
    }
    match key
        .chars()
        .enumerate()
        .find(|(_, character)| !matches!(character, '\x21'..='\x7e'))
    {
        Some((position, character)) => Err(invalid(format!(
            "character {} is {character:?}: a key is printable ASCII without spaces",
            position + 1
        ))),
        None => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvexBackendError {
    #[error("read {variable}: {url:?} is not a deployment URL: {reason}")]
    InvalidDeploymentUrl {
        variable: &'static str,
        url: String,
        reason: String,
    },
    #[error("read {variable}: not an admin key: {reason}")]
    InvalidAdminKey {
        variable: &'static str,
        reason: String,
    },
    /// Reading the provider settings shared with PostgreSQL, or choosing
    /// the provider (no engine, or a forbidden fallback), failed.
    #[error(transparent)]
    Provider(#[from] BackendError),
    #[error("start the external convex provider: {variable} is not set")]
    MissingExternalUrl { variable: &'static str },
    #[error("read {variable}: {value:?} is not 200 or 560")]
    InvalidUdfFailureStatus {
        variable: &'static str,
        value: String,
    },
    #[error(
        "probe the external convex deployment at {url}: {function} answered {answer}; \
         deploy the functions with `npx convex deploy` in models/convex"
    )]
    FunctionsMissing {
        url: String,
        function: &'static str,
        answer: String,
    },
    #[error("generate an admin key from /dev/urandom")]
    AdminKey {
        #[source]
        source: io::Error,
    },
    #[error("create a directory for the local convex front's journal")]
    JournalDir {
        #[source]
        source: io::Error,
    },
    #[error("mark the local convex front's journal directory {} with its owner", path.display())]
    JournalOwner {
        path: PathBuf,
        #[source]
        source: LeftoverError,
    },
    #[error("start a convex front container from image {image}")]
    ContainerStart {
        image: String,
        #[source]
        source: Box<TestcontainersError>,
    },
    #[error("{action} convex front container {container_id}")]
    ContainerControl {
        action: &'static str,
        container_id: String,
        #[source]
        source: Box<TestcontainersError>,
    },
    #[error("remove convex front container {container_id}")]
    ContainerRemove {
        container_id: String,
        #[source]
        source: Box<TestcontainersError>,
    },
    #[error(
        "find {}/node_modules for the local convex front: run `npm ci` in {} \
         (`npm ci --prefix models/convex` from the repository root) or set {ENV_CONVEX_PACKAGE_DIR}",
        package_dir.display(),
        package_dir.display()
    )]
    PackageNotInstalled { package_dir: PathBuf },
    #[error(
        "find {} for the local convex front: run from a checkout of khala-parity \
         or set {ENV_CONVEX_PACKAGE_DIR} to its models/convex",
        path.display()
    )]
    ServerScriptMissing { path: PathBuf },
    #[error("run `{} server.mjs` in {} (set {ENV_NODE} to another node)", node.display(), package_dir.display())]
    LocalSpawn {
        node: PathBuf,
        package_dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("start the local convex front in {}: {reason}\n{stderr}", package_dir.display())]
    LocalStart {
        package_dir: PathBuf,
        reason: String,
        /// The end of what the front wrote to stderr.
        stderr: String,
    },
    #[error(
        "claim a port for the local convex front: every port from {low} to {high} \
         is taken by another front or listener"
    )]
    NoFreePort { low: u32, high: u32 },
    #[error("{action} the local convex front: it is not running (stopped)")]
    LocalNotRunning { action: &'static str },
    #[error("send {signal} to the local convex front (pid {pid})")]
    LocalSignal {
        signal: &'static str,
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("wait for the local convex front (pid {pid}) to exit")]
    LocalWait {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("build an HTTP client for the convex backend")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },
    #[error("reach the {provider} convex backend at {url}")]
    Unreachable {
        provider: ProviderKind,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "get a ready answer from the {provider} convex backend at {url} within {waited_ms} ms: {last}"
    )]
    NotReady {
        provider: ProviderKind,
        url: String,
        waited_ms: u64,
        last: String,
    },
    #[error("call {url} on the {provider} convex backend: HTTP {status}: {body}")]
    UnexpectedStatus {
        provider: ProviderKind,
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "reset the external convex deployment at {url}: the harness cannot empty a real \
         deployment (it has no such endpoint, and deleting documents would race with its other \
         clients); use a fresh deployment per run, or the containers or local provider"
    )]
    ResetUnsupported { url: String },
    #[error("{action} the {provider} convex backend: only the containers and local providers can")]
    FaultUnsupported {
        action: &'static str,
        provider: ProviderKind,
    },
}

/// What a backend holds right now, for leak checks and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvexResources {
    pub provider: ProviderKind,
    pub base_url: String,
    /// The front's container.
    pub container_id: Option<String>,
    /// The container whose network the front runs in.
    pub network_container_id: Option<String>,
    /// The local front's current process, if one runs.
    pub pid: Option<u32>,
}

/// The front a backend owns. Containers and local fronts are stopped and
/// removed when dropped; an external deployment is left alone.
enum Server {
    Container(Option<Pod>),
    Local {
        // Boxed: the child handle and its paths are about 300 bytes.
        front: Box<tokio::sync::Mutex<LocalFront>>,
        /// The running child's pid, 0 when stopped; readable without the lock.
        pid: AtomicU32,
    },
    External,
}

/// A container front and the container that holds its network. Both handles
/// are boxed: one is about 850 bytes.
struct Pod {
    front: Box<ContainerAsync<GenericImage>>,
    /// Runs `sleep` in the front's image, publishes the port and owns the
    /// network namespace (and so the bridge address) that the front joins.
    network: Box<ContainerAsync<GenericImage>>,
}

/// The Convex model (or a real deployment) for one test process or harness run.
pub struct ConvexBackend {
    provider: ProviderKind,
    /// See `base_url()`; no trailing slash.
    base_url: String,
    admin_key: Option<String>,
    http: reqwest::Client,
    server: Server,
}

impl fmt::Debug for ConvexBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConvexBackend")
            .field("provider", &self.provider)
            .field("base_url", &redact_url(&self.base_url))
            .finish_non_exhaustive()
    }
}

impl ConvexBackend {
    pub async fn start(config: &ConvexConfig) -> Result<Self, ConvexBackendError> {
        let started = Instant::now();
        let provider = choose_provider(config.choice, config.require_containers, "convex").await?;
        tracing::info!(%provider, choice = %config.choice, "starting the convex backend");
        let backend = match provider {
            ProviderKind::Containers => {
                let admin_key = generate_admin_key()?;
                let http = http_client(false)?;
                let (pod, port) =
                    start_container(&config.image, &admin_key, config.udf_failure_status).await?;
                // From here on the backend owns the containers: an early
                // return drops them, and `Drop` removes them.
                let mut backend = Self {
                    provider,
                    base_url: loopback_url(port),
                    admin_key: Some(admin_key),
                    http,
                    server: Server::Container(Some(pod)),
                };
                backend.wait_until_healthy().await?;
                if let Some(url) = backend.bridge_url().await {
                    backend.base_url = url;
                }
                backend
            }
            ProviderKind::Local => {
                let admin_key = generate_admin_key()?;
                let http = http_client(false)?;
                let front = LocalFront::start(config, &admin_key).await?;
                let backend = Self {
                    provider,
                    base_url: loopback_url(front.port.port),
                    admin_key: Some(admin_key),
                    http,
                    server: Server::Local {
                        pid: AtomicU32::new(front.pid().unwrap_or(0)),
                        front: Box::new(tokio::sync::Mutex::new(front)),
                    },
                };
                backend.wait_until_healthy().await?;
                backend
            }
            ProviderKind::External => {
                let url = config.external_url.as_deref().ok_or(
                    ConvexBackendError::MissingExternalUrl {
                        variable: ENV_CONVEX_URL,
                    },
                )?;
                let backend = Self {
                    provider,
                    base_url: url.trim_end_matches('/').to_owned(),
                    admin_key: config.external_admin_key.clone(),
                    // A real deployment may sit behind the caller's proxy.
                    http: http_client(true)?,
                    server: Server::External,
                };
                backend.probe_external().await?;
                backend
            }
        };
        tracing::info!(
            %provider,
            base_url = %redact_url(&backend.base_url),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "convex backend ready"
        );
        Ok(backend)
    }

    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    /// A container's bridge address (`http://172.17.0.N:3210`) when this
    /// host reaches it, else `http://127.0.0.1:PORT` on its published port;
    /// `http://127.0.0.1:PORT` for a local front; the configured URL without
    /// a trailing slash for an external deployment. It never changes, also
    /// not across `stop` and `start_again`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The key every `/api/*` call needs, as `Authorization: Convex <key>`.
    /// Generated per backend for containers and local fronts; the configured
    /// one (if any) for an external deployment.
    pub fn admin_key(&self) -> Option<&str> {
        self.admin_key.as_deref()
    }

    pub fn resources(&self) -> ConvexResources {
        let (pod, pid) = match &self.server {
            Server::Container(pod) => (pod.as_ref(), None),
            Server::Local { pid, .. } => (
                None,
                Some(pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0),
            ),
            Server::External => (None, None),
        };
        ConvexResources {
            provider: self.provider,
            base_url: self.base_url.clone(),
            container_id: pod.map(|pod| pod.front.id().to_owned()),
            network_container_id: pod.map(|pod| pod.network.id().to_owned()),
            pid,
        }
    }

    /// Empties the store (about a millisecond). Calls already answered are
    /// ordered before the reset: the front runs calls one at a time.
    pub async fn reset(&self) -> Result<(), ConvexBackendError> {
        if self.provider == ProviderKind::External {
            return Err(ConvexBackendError::ResetUnsupported {
                url: redact_url(&self.base_url),
            });
        }
        let url = format!("{}{RESET_PATH}", self.base_url);
        let mut request = self.http.post(&url);
        if let Some(key) = &self.admin_key {
            request = request.header(reqwest::header::AUTHORIZATION, format!("Convex {key}"));
        }
        let response = request
            .send()
            .await
            .map_err(|source| self.unreachable(&url, source))?;
        self.expect_ok(&url, response).await
    }

    /// Stops and removes the containers, or stops the local front (SIGTERM,
    /// then SIGKILL after 5 s). Leaves an external deployment alone. On an
    /// error the rest is left to `Drop`.
    pub async fn shutdown(mut self) -> Result<(), ConvexBackendError> {
        let started = Instant::now();
        match &mut self.server {
            Server::Container(pod) => {
                if let Some(Pod { front, network }) = pod.take() {
                    // The front first: it runs in the other one's network.
                    // On an error the one left is dropped, which removes it.
                    for container in [front, network] {
                        let container_id = container.id().to_owned();
                        // `rm` forces: a running or paused container goes too.
                        (*container).rm().await.map_err(|source| {
                            ConvexBackendError::ContainerRemove {
                                container_id,
                                source: Box::new(source),
                            }
                        })?;
                    }
                }
            }
            Server::Local { front, pid } => {
                front.get_mut().stop().await?;
                pid.store(0, Ordering::Relaxed);
            }
            Server::External => {}
        }
        tracing::info!(
            provider = %self.provider,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "convex backend shut down"
        );
        Ok(())
    }

    /// Freezes the front (`docker pause`, SIGSTOP): connections are still
    /// accepted (by docker's proxy or the kernel), but nothing is answered
    /// until `unpause`.
    pub async fn pause(&self) -> Result<(), ConvexBackendError> {
        match &self.server {
            Server::Container(pod) => {
                let container = self.front("pause", pod)?;
                until_settled(STATE_SETTLE_TIMEOUT, || container.pause())
                    .await
                    .map_err(|source| control_error("pause", container, source))
            }
            Server::Local { front, .. } => front.lock().await.signal("pause", Signal::Stop),
            Server::External => Err(self.fault_unsupported("pause")),
        }
    }

    pub async fn unpause(&self) -> Result<(), ConvexBackendError> {
        match &self.server {
            Server::Container(pod) => {
                let container = self.front("unpause", pod)?;
                until_settled(STATE_SETTLE_TIMEOUT, || container.unpause())
                    .await
                    .map_err(|source| control_error("unpause", container, source))
            }
            Server::Local { front, .. } => front.lock().await.signal("unpause", Signal::Continue),
            Server::External => Err(self.fault_unsupported("unpause")),
        }
    }

    /// Stops the front the way an orchestrator would (SIGTERM, SIGKILL after
    /// 5 s); connections are refused until `start_again` (through a published
    /// port, docker's proxy accepts them and closes them at once). The stored
    /// data is kept: the front journals every committed mutation (in its
    /// container, or a directory of the local front's) and replays the
    /// journal when it starts again.
    pub async fn stop(&self) -> Result<(), ConvexBackendError> {
        match &self.server {
            Server::Container(pod) => {
                let container = self.front("stop", pod)?;
                container
                    .stop_with_timeout(Some(STOP_TIMEOUT.as_secs() as i32))
                    .await
                    .map_err(|source| control_error("stop", container, source))
            }
            Server::Local { front, pid } => {
                front.lock().await.stop().await?;
                pid.store(0, Ordering::Relaxed);
                Ok(())
            }
            Server::External => Err(self.fault_unsupported("stop")),
        }
    }

    /// Starts a stopped front again on the same address and waits until it
    /// answers. A container joins the network its companion kept (the same
    /// bridge address and published port); a local front binds its old port
    /// again, which fails with a typed error if another process took it
    /// meanwhile. Nothing happens to a running one.
    pub async fn start_again(&self) -> Result<(), ConvexBackendError> {
        match &self.server {
            Server::Container(pod) => {
                let container = self.front("start", pod)?;
                container
                    .start()
                    .await
                    .map_err(|source| control_error("start", container, source))?;
            }
            Server::Local { front, pid } => {
                let mut front = front.lock().await;
                front.start_again().await?;
                pid.store(front.pid().unwrap_or(0), Ordering::Relaxed);
            }
            Server::External => return Err(self.fault_unsupported("start")),
        }
        self.wait_until_healthy().await
    }

    fn front<'a>(
        &self,
        action: &'static str,
        pod: &'a Option<Pod>,
    ) -> Result<&'a ContainerAsync<GenericImage>, ConvexBackendError> {
        // Only `shutdown` takes the containers, and it consumes the backend.
        pod.as_ref()
            .map(|pod| &*pod.front)
            .ok_or(ConvexBackendError::FaultUnsupported {
                action,
                provider: self.provider,
            })
    }

    fn fault_unsupported(&self, action: &'static str) -> ConvexBackendError {
        ConvexBackendError::FaultUnsupported {
            action,
            provider: self.provider,
        }
    }

    fn unreachable(&self, url: &str, source: reqwest::Error) -> ConvexBackendError {
        ConvexBackendError::Unreachable {
            provider: self.provider,
            url: redact_url(url),
            // reqwest's message repeats the URL unredacted.
            source: source.without_url(),
        }
    }

    async fn expect_ok(
        &self,
        url: &str,
        response: reqwest::Response,
    ) -> Result<(), ConvexBackendError> {
        let status = response.status();
        if status == reqwest::StatusCode::OK {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(ConvexBackendError::UnexpectedStatus {
            provider: self.provider,
            url: redact_url(url),
            status: status.as_u16(),
            body: body.chars().take(ERROR_BODY_CHARS).collect(),
        })
    }

    /// Polls the front's health endpoint until it answers 200, bounded by
    /// `READY_TIMEOUT`.
    async fn wait_until_healthy(&self) -> Result<(), ConvexBackendError> {
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        let mut backoff = Duration::from_millis(20);
        loop {
            let last = match self.check_health(&self.base_url).await {
                Ok(()) => {
                    tracing::debug!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "convex front healthy"
                    );
                    return Ok(());
                }
                Err(last) => last,
            };
            if Instant::now() + backoff >= deadline {
                return Err(ConvexBackendError::NotReady {
                    provider: self.provider,
                    url: format!("{}{HEALTH_PATH}", self.base_url),
                    waited_ms: started.elapsed().as_millis() as u64,
                    last,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
    }

    /// One request to the health endpoint under `base_url`: what came back
    /// unless it was 200.
    async fn check_health(&self, base_url: &str) -> Result<(), String> {
        let response = self
            .http
            .get(format!("{base_url}{HEALTH_PATH}"))
            .timeout(HEALTH_REQUEST_TIMEOUT)
            .send()
            .await;
        match response {
            Ok(response) if response.status() == reqwest::StatusCode::OK => Ok(()),
            Ok(response) => Err(format!("HTTP {}", response.status())),
            Err(error) => Err(error_chain(&error.without_url())),
        }
    }

    /// The front on the network container's bridge address, if it answers
    /// there. That skips docker's userland port proxy, which takes a fifth of
    /// a core at engine rates and adds about 0.1 ms to every call (0.37
    /// against 0.48 ms median per query, measured here).
    async fn bridge_url(&self) -> Option<String> {
        let Server::Container(Some(pod)) = &self.server else {
            return None;
        };
        let address = bridge_address(&pod.network, CONTAINER_PORT, async |address| {
            self.check_health(&format!("http://{address}")).await
        })
        .await?;
        Some(format!("http://{address}"))
    }

    /// Calls one of our functions and requires `status: "success"`. A
    /// deployment without them answers "Could not find public function"
    /// with 200 (or 560), which a status check alone would take for ready.
    async fn probe_external(&self) -> Result<(), ConvexBackendError> {
        let url = format!("{}/api/query", self.base_url);
        let mut request = self.http.post(&url).json(&json!({
            "path": EXTERNAL_PROBE_FUNCTION,
            "args": {"paginationOpts": {"numItems": 1, "cursor": null}},
            "format": "json",
        }));
        if let Some(key) = &self.admin_key {
            request = request.header(reqwest::header::AUTHORIZATION, format!("Convex {key}"));
        }
        let response = request
            .send()
            .await
            .map_err(|source| self.unreachable(&url, source))?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let missing = |answer: String| ConvexBackendError::FunctionsMissing {
            url: redact_url(&url),
            function: EXTERNAL_PROBE_FUNCTION,
            answer,
        };
        match khala_runtime::sink::classify(status, &body) {
            Ok(_) => Ok(()),
            Err(khala_runtime::sink::SinkError::ConvexError { message }) => Err(missing(format!(
                "HTTP {status}, the function failed: {message}"
            ))),
            Err(khala_runtime::sink::SinkError::InvalidResponse { .. }) if status == 200 => {
                Err(missing(format!(
                    "HTTP 200 without status \"success\": {}",
                    truncate(&body)
                )))
            }
            Err(_) => Err(ConvexBackendError::UnexpectedStatus {
                provider: self.provider,
                url: redact_url(&url),
                status,
                body: truncate(&body),
            }),
        }
    }
}

fn truncate(body: &str) -> String {
    body.chars().take(ERROR_BODY_CHARS).collect()
}

impl Drop for ConvexBackend {
    fn drop(&mut self) {
        if let Server::Container(pod) = &mut self.server
            && let Some(Pod { front, network }) = pod.take()
        {
            drop_container(front);
            drop_container(network);
        }
        // Local fronts are killed in `LocalFront::drop`, after this.
    }
}

/// Runs a pause or unpause again while Docker refuses it with 409 for a
/// state that is not yet true. Docker sets `Paused` when the call returns,
/// and again when containerd's event for it arrives, which can be after the
/// opposite call: a pause right after an unpause is then refused as
/// "already paused" although the front runs, until the resume's own event
/// puts the state right (moby `daemon/monitor.go`, `EventPaused`). Any other
/// error, or a conflict that outlasts `timeout`, is returned.
async fn until_settled<F, Fut>(timeout: Duration, mut call: F) -> Result<(), TestcontainersError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), TestcontainersError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match call().await {
            Err(error) if is_state_conflict(&error) && Instant::now() < deadline => {
                tracing::debug!(%error, "docker state not settled yet; trying again");
                tokio::time::sleep(STATE_SETTLE_INTERVAL).await;
            }
            outcome => return outcome,
        }
    }
}

fn is_state_conflict(error: &TestcontainersError) -> bool {
    use testcontainers::bollard::errors::Error::DockerResponseServerError;
    use testcontainers::core::error::ClientError::{PauseContainer, UnpauseContainer};
    matches!(
        error,
        TestcontainersError::Client(
            PauseContainer(DockerResponseServerError {
                status_code: 409,
                ..
            }) | UnpauseContainer(DockerResponseServerError {
                status_code: 409,
                ..
            })
        )
    )
}

fn control_error(
    action: &'static str,
    container: &ContainerAsync<GenericImage>,
    source: TestcontainersError,
) -> ConvexBackendError {
    ConvexBackendError::ContainerControl {
        action,
        container_id: container.id().to_owned(),
        source: Box::new(source),
    }
}

/// 128 random bits as hex. Every backend gets its own key, so a client that
/// sends no key or another backend's key is refused.
fn generate_admin_key() -> Result<String, ConvexBackendError> {
    let mut bytes = [0_u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|source| ConvexBackendError::AdminKey { source })?;
    Ok(format!("khala-parity-{}", hex::encode(bytes)))
}

fn http_client(use_system_proxy: bool) -> Result<reqwest::Client, ConvexBackendError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(HTTP_CONNECT_TIMEOUT)
        .timeout(HTTP_REQUEST_TIMEOUT);
    if !use_system_proxy {
        // An HTTP_PROXY in the environment must not intercept 127.0.0.1.
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|source| ConvexBackendError::HttpClient { source })
}

fn loopback_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Starts the network container, then the front with the admin key in its
/// network. The network container is never stopped, so the host port docker
/// picks for it and its bridge address last as long as the backend: a
/// stopped container gives both up, and `docker start` gets new ones.
async fn start_container(
    image: &str,
    admin_key: &str,
    udf_failure_status: UdfFailureStatus,
) -> Result<(Pod, u16), ConvexBackendError> {
    let (name, tag) = split_image(image);
    // testcontainers leaves a container behind when `docker start` fails after
    // `docker create` (a timeout, say): this label finds it.
    let instance = format!(
        "convex-{}-{}",
        std::process::id(),
        BACKEND_SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let start_error = |source| ConvexBackendError::ContainerStart {
        image: image.to_owned(),
        source: Box::new(source),
    };
    leftovers::reap_containers().await;
    let owner = leftovers::owner_label();
    // `sleep` as PID 1 ignores SIGTERM; `rm` kills it at once.
    let network = GenericImage::new(name, tag)
        .with_entrypoint("sleep")
        .with_exposed_port(CONTAINER_PORT.tcp())
        .with_cmd(["infinity"])
        .with_label(CONTAINER_LABEL.0, CONTAINER_LABEL.1)
        .with_label(INSTANCE_LABEL, &instance)
        .with_label(OWNER_LABEL, &owner)
        .with_startup_timeout(CONTAINER_STARTUP_TIMEOUT)
        .start()
        .await;
    let network = match network {
        Ok(network) => network,
        Err(error) => {
            remove_labelled_containers(&instance).await;
            return Err(start_error(error));
        }
    };
    let port = network
        .get_host_port_ipv4(CONTAINER_PORT.tcp())
        .await
        .map_err(start_error)?;
    let network_mode = format!("container:{}", network.id());
    let front = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::message_on_stdout(LISTENING_MESSAGE))
        .with_env_var("CONVEX_ADMIN_KEY", admin_key)
        .with_env_var(
            "CONVEX_UDF_FAILURE_STATUS",
            udf_failure_status.code().to_string(),
        )
        // In the container's own layer: it survives a stop and start.
        .with_env_var("CONVEX_JOURNAL", CONTAINER_JOURNAL)
        .with_label(CONTAINER_LABEL.0, CONTAINER_LABEL.1)
        .with_label(INSTANCE_LABEL, &instance)
        .with_label(OWNER_LABEL, &owner)
        .with_startup_timeout(CONTAINER_STARTUP_TIMEOUT)
        // The ports are the network container's; docker refuses any here.
        .with_host_config_modifier(move |host| {
            host.network_mode = Some(network_mode.clone());
            host.publish_all_ports = None;
            host.port_bindings = None;
        })
        .start()
        .await;
    match front {
        Ok(front) => Ok((
            Pod {
                front: Box::new(front),
                network: Box::new(network),
            },
            port,
        )),
        Err(error) => {
            if let Err(error) = network.rm().await {
                tracing::warn!(%error, "could not remove the network container of a failed start");
            }
            remove_labelled_containers(&instance).await;
            Err(start_error(error))
        }
    }
}

/// Names the containers of one backend, for cleanup after a failed start.
const INSTANCE_LABEL: &str = "khala-parity.instance";

async fn remove_labelled_containers(instance: &str) {
    let remove = async {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .map_err(|error| error.to_string())?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{INSTANCE_LABEL}={instance}")],
            )])),
            ..ListContainersOptions::default()
        };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|error| error.to_string())?;
        for id in containers.into_iter().filter_map(|summary| summary.id) {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..RemoveContainerOptions::default()
            };
            docker
                .remove_container(&id, Some(options))
                .await
                .map_err(|error| format!("remove {id}: {error}"))?;
        }
        Ok::<(), String>(())
    };
    if let Err(error) = remove.await {
        tracing::warn!(%error, instance, "could not remove the containers of a failed start");
    }
}

/// The error and its causes on one line, as "a: b: c".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[derive(Clone, Copy)]
enum Signal {
    Stop,
    Continue,
    Terminate,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Stop => "SIGSTOP",
            Self::Continue => "SIGCONT",
            Self::Terminate => "SIGTERM",
        }
    }

    fn to_rustix(self) -> rustix::process::Signal {
        match self {
            Self::Stop => rustix::process::Signal::STOP,
            Self::Continue => rustix::process::Signal::CONT,
            Self::Terminate => rustix::process::Signal::TERM,
        }
    }
}

/// The prefix of every local front's journal directory under the temp dir,
/// by which the next start finds what a killed run left.
const JOURNAL_DIR_PREFIX: &str = "khala-parity-convex-journal-";

/// Removes the journal directories of local fronts whose harness is gone.
/// The fronts themselves died with it (parent-death signal).
fn reap_journal_dirs() {
    leftovers::reap_dirs(&std::env::temp_dir(), JOURNAL_DIR_PREFIX, |_| {});
}

/// `node server.mjs` as a child process on 127.0.0.1, with a port it keeps
/// across `stop` and `start_again`.
struct LocalFront {
    node: PathBuf,
    package_dir: PathBuf,
    admin_key: String,
    udf_failure_status: UdfFailureStatus,
    /// The port it listens on, claimed until the front is dropped.
    port: PortClaim,
    /// `None` while stopped.
    child: Option<Child>,
    /// Holds the journal of committed mutations, so that a stopped front
    /// starts again with what it held; removed with the front.
    journal_dir: tempfile::TempDir,
}

/// A loopback port that one local front holds for as long as it lives, so
/// that no other lane or process picks it, not even while the front is
/// stopped: the claim is an abstract Unix socket named after the port,
/// which the kernel releases when this process exits, however it exits.
/// The port lies below the kernel's ephemeral range, so no outgoing
/// connection takes it while the front is down and `start_again` finds it
/// free.
#[derive(Debug)]
struct PortClaim {
    port: u16,
    _claim: std::os::unix::net::UnixListener,
}

/// The lowest port a local front may take.
const LOWEST_FRONT_PORT: u32 = 10_000;

impl PortClaim {
    /// Claims the first port, from an offset of this process's id, that no
    /// khala-parity process has claimed and nothing listens on.
    fn take() -> Result<Self, ConvexBackendError> {
        let range = std::fs::read_to_string(EPHEMERAL_RANGE_FILE).ok();
        let ephemeral_low = range
            .as_deref()
            .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32_768);
        let span = ephemeral_low.saturating_sub(LOWEST_FRONT_PORT).max(1);
        let offset = std::process::id().wrapping_mul(7_919) % span;
        (0..span)
            .map(|step| LOWEST_FRONT_PORT + (offset + step) % span)
            .filter_map(|port| u16::try_from(port).ok())
            .find_map(Self::try_port)
            .ok_or(ConvexBackendError::NoFreePort {
                low: LOWEST_FRONT_PORT,
                high: LOWEST_FRONT_PORT + span - 1,
            })
    }

    fn try_port(port: u16) -> Option<Self> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("khala-parity-convex-front-port-{port}");
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?;
        // Taken by another lane of this process or by another process.
        let claim = std::os::unix::net::UnixListener::bind_addr(&address).ok()?;
        // Something that is not ours listens there.
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
        Some(Self {
            port,
            _claim: claim,
        })
    }
}

const EPHEMERAL_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

impl LocalFront {
    async fn start(config: &ConvexConfig, admin_key: &str) -> Result<Self, ConvexBackendError> {
        let package_dir = config.package_dir.clone();
        if !package_dir.join("node_modules").is_dir() {
            return Err(ConvexBackendError::PackageNotInstalled { package_dir });
        }
        let script = package_dir.join("server.mjs");
        if !script.is_file() {
            return Err(ConvexBackendError::ServerScriptMissing { path: script });
        }
        reap_journal_dirs();
        let journal_dir = tempfile::Builder::new()
            .prefix(JOURNAL_DIR_PREFIX)
            .tempdir()
            .map_err(|source| ConvexBackendError::JournalDir { source })?;
        leftovers::write_owner(journal_dir.path()).map_err(|source| {
            ConvexBackendError::JournalOwner {
                path: journal_dir.path().to_owned(),
                source,
            }
        })?;
        let mut front = Self {
            node: config.node.clone(),
            package_dir,
            admin_key: admin_key.to_owned(),
            udf_failure_status: config.udf_failure_status,
            port: PortClaim::take()?,
            child: None,
            journal_dir,
        };
        front.spawn().await?;
        Ok(front)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    async fn start_again(&mut self) -> Result<(), ConvexBackendError> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn().await
    }

    /// Spawns the front on its claimed port and waits for its listening
    /// line, bounded by `LOCAL_START_TIMEOUT`.
    async fn spawn(&mut self) -> Result<(), ConvexBackendError> {
        let started = Instant::now();
        let mut command = Command::new(&self.node);
        command
            .arg("server.mjs")
            .args(["--port", &self.port.port.to_string(), "--host", "127.0.0.1"])
            .arg("--journal")
            .arg(self.journal_dir.path().join("journal.jsonl"))
            .args([
                "--udf-failure-status",
                &self.udf_failure_status.code().to_string(),
            ])
            .current_dir(&self.package_dir)
            // In the environment rather than on the command line, where `ps` shows it.
            .env("CONVEX_ADMIN_KEY", &self.admin_key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own keeps a terminal's Ctrl-C (sent to the
            // whole foreground group) away from the front: the harness stops
            // it after the cases in flight.
            .process_group(0)
            .kill_on_drop(true);
        // `kill_on_drop` covers a panic; the parent-death signal covers a
        // harness that is killed and runs no code at all.
        leftovers::die_with_harness(&mut command, rustix::process::Signal::KILL);
        let mut child = command
            .spawn()
            .map_err(|source| ConvexBackendError::LocalSpawn {
                node: self.node.clone(),
                package_dir: self.package_dir.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let stderr_task = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(forward_stderr(stderr, pid, Arc::clone(&stderr_tail))));
        let Some(stdout) = child.stdout.take() else {
            return Err(self
                .start_failed(
                    child,
                    "no stdout pipe".to_owned(),
                    stderr_task,
                    &stderr_tail,
                )
                .await);
        };
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(LOCAL_START_TIMEOUT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match line.strip_prefix(LISTENING_MESSAGE) {
                        Some(url) => return Ok(url.to_owned()),
                        None => tracing::debug!(pid, line, "convex front stdout"),
                    },
                    Ok(None) => return Err("it closed stdout before listening".to_owned()),
                    Err(error) => return Err(format!("read its stdout: {error}")),
                }
            }
        })
        .await;
        let url = match listening {
            Ok(Ok(url)) => url,
            Ok(Err(reason)) => {
                return Err(self
                    .start_failed(child, reason, stderr_task, &stderr_tail)
                    .await);
            }
            Err(_) => {
                let reason = format!(
                    "no `{}` line within {} s",
                    LISTENING_MESSAGE.trim_end(),
                    LOCAL_START_TIMEOUT.as_secs()
                );
                return Err(self
                    .start_failed(child, reason, stderr_task, &stderr_tail)
                    .await);
            }
        };
        let port = self.port.port;
        let listening_port = url
            .rsplit_once(':')
            .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok());
        if listening_port != Some(port) {
            let reason = format!("it listens on {url:?}, not on the port it was given ({port})");
            return Err(self
                .start_failed(child, reason, stderr_task, &stderr_tail)
                .await);
        }
        // The front prints nothing else on stdout; draining it anyway keeps a
        // chatty future version from blocking on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(pid, line, "convex front stdout");
            }
        });
        self.child = Some(child);
        tracing::debug!(
            pid,
            port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local convex front listening"
        );
        Ok(())
    }

    /// Kills a child that did not come up and builds the error from its stderr.
    async fn start_failed(
        &self,
        mut child: Child,
        reason: String,
        stderr_task: Option<JoinHandle<()>>,
        stderr_tail: &Mutex<String>,
    ) -> ConvexBackendError {
        let status: Option<ExitStatus> = match child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = child.start_kill();
                tokio::time::timeout(STOP_TIMEOUT, child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        // The pipe closes with the process; give the reader a moment to finish.
        if let Some(task) = stderr_task {
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        let reason = match status {
            Some(status) => format!("{reason} ({status})"),
            None => reason,
        };
        ConvexBackendError::LocalStart {
            package_dir: self.package_dir.clone(),
            reason,
            stderr: stderr_tail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .trim()
                .to_owned(),
        }
    }

    fn signal(&self, action: &'static str, signal: Signal) -> Result<(), ConvexBackendError> {
        let Some(pid) = self.pid() else {
            return Err(ConvexBackendError::LocalNotRunning { action });
        };
        send_signal(pid, signal)
    }

    /// SIGTERM (and SIGCONT, in case it is paused), then SIGKILL after
    /// `STOP_TIMEOUT`; reaps the child either way.
    async fn stop(&mut self) -> Result<(), ConvexBackendError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let Some(pid) = child.id() else {
            // Already reaped: it exited on its own.
            return Ok(());
        };
        send_signal(pid, Signal::Terminate)?;
        // A stopped process only acts on SIGTERM once continued.
        send_signal(pid, Signal::Continue)?;
        let status = match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(pid, "convex front ignored SIGTERM; killing it");
                match child.kill().await {
                    Ok(()) => child.wait().await,
                    Err(error) => Err(error),
                }
            }
        }
        .map_err(|source| ConvexBackendError::LocalWait { pid, source })?;
        tracing::debug!(pid, %status, "local convex front exited");
        Ok(())
    }
}

impl Drop for LocalFront {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGKILL works on a stopped process too. Reaping here (bounded, and
        // usually a few milliseconds) means the process is gone when the
        // backend is, not whenever tokio's orphan reaper runs.
        if let Err(error) = child.start_kill() {
            tracing::warn!(%error, "could not kill the local convex front");
            return;
        }
        let deadline = Instant::now() + REAP_TIMEOUT_IN_DROP;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    tracing::warn!("the local convex front did not exit after SIGKILL");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not reap the local convex front");
                    return;
                }
            }
        }
    }
}

fn send_signal(pid: u32, signal: Signal) -> Result<(), ConvexBackendError> {
    let error = |source: io::Error| ConvexBackendError::LocalSignal {
        signal: signal.name(),
        pid,
        source,
    };
    let raw = i32::try_from(pid).map_err(|_| error(io::Error::other("pid out of range")))?;
    let target = rustix::process::Pid::from_raw(raw)
        .ok_or_else(|| error(io::Error::other("pid 0 is not a child")))?;
    rustix::process::kill_process(target, signal.to_rustix()).map_err(|errno| error(errno.into()))
}

/// Sends the front's stderr to the log and keeps its end for error messages.
async fn forward_stderr(stderr: impl AsyncRead + Unpin, pid: u32, tail: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(pid, line, "convex front stderr");
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        tail.push_str(&line);
        tail.push('\n');
        if tail.len() > STDERR_TAIL_BYTES {
            let mut cut = tail.len() - STDERR_TAIL_BYTES;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::play::backend::postgres::{ENV_BACKEND, ENV_REQUIRE_CONTAINERS};

    /// Only Docker's 409 to a pause or unpause is waited out; a pause that
    /// keeps being refused returns the refusal after the settle timeout, and
    /// any other failure at once.
    #[tokio::test]
    async fn a_pause_refused_as_a_state_conflict_is_tried_again_until_docker_settles() {
        use testcontainers::bollard::errors::Error as Bollard;
        use testcontainers::core::error::ClientError;
        let refused = |status_code| {
            TestcontainersError::Client(ClientError::PauseContainer(
                Bollard::DockerResponseServerError {
                    status_code,
                    message: "Container abc is already paused".to_owned(),
                },
            ))
        };
        const TIMEOUT: Duration = Duration::from_millis(100);
        let calls = AtomicU32::new(0);
        let settles_on_third = until_settled(TIMEOUT, || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(refused(409)),
                _ => Ok(()),
            }
        })
        .await;
        assert!(settles_on_third.is_ok(), "{settles_on_third:?}");
        assert_eq!(calls.load(Ordering::Relaxed), 3);

        let started = Instant::now();
        let never_settles = until_settled(TIMEOUT, || async { Err(refused(409)) }).await;
        assert!(is_state_conflict(&never_settles.unwrap_err()));
        assert!(started.elapsed() >= TIMEOUT);

        calls.store(0, Ordering::Relaxed);
        let other = until_settled(TIMEOUT, || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(refused(500))
        })
        .await;
        assert!(other.is_err_and(|error| !is_state_conflict(&error)));
        assert_eq!(calls.load(Ordering::Relaxed), 1, "a 500 is not tried again");
    }

    #[test]
    fn the_udf_failure_status_is_200_or_560_and_anything_else_is_refused_naming_it() {
        let read = |value: &str| {
            ConvexConfig::from_lookup(|name| {
                (name == ENV_CONVEX_UDF_FAILURE_STATUS).then(|| value.to_owned())
            })
        };
        assert_eq!(
            read("").unwrap().udf_failure_status,
            UdfFailureStatus::Ok200
        );
        assert_eq!(
            read("200").unwrap().udf_failure_status,
            UdfFailureStatus::Ok200
        );
        assert_eq!(
            read("560").unwrap().udf_failure_status,
            UdfFailureStatus::UdfFailed560
        );
        let error = read("500").unwrap_err();
        assert!(
            matches!(&error, ConvexBackendError::InvalidUdfFailureStatus { value, .. } if value == "500")
        );
        assert!(
            error.to_string().contains(ENV_CONVEX_UDF_FAILURE_STATUS),
            "{error}"
        );
    }

    #[test]
    fn a_deployment_url_that_is_not_http_or_https_is_refused_naming_it() {
        let read = |url: &str| {
            ConvexConfig::from_lookup(|name| (name == ENV_CONVEX_URL).then(|| url.to_owned()))
        };
        for good in [
            "https://happy-animal-123.convex.cloud",
            "http://127.0.0.1:3210",
            "http://convex.internal:3210/",
        ] {
            assert_eq!(read(good).unwrap().external_url.as_deref(), Some(good));
        }
        for (bad, reason) in [
            ("ftp://example.com", "\"ftp\", not http or https"),
            (
                "happy-animal-123.convex.cloud",
                "relative URL without a base",
            ),
            ("postgres://user:hunter2@db:5432/x", "not http or https"),
            ("http://", "empty host"),
        ] {
            let error = read(bad).unwrap_err();
            assert!(
                matches!(error, ConvexBackendError::InvalidDeploymentUrl { .. }),
                "{bad}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains(ENV_CONVEX_URL), "{message}");
            assert!(message.contains(reason), "{bad}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn an_admin_key_of_the_wrong_shape_is_refused_naming_it_and_not_showing_it() {
        let read = |key: &str| {
            ConvexConfig::from_lookup(|name| (name == ENV_CONVEX_ADMIN_KEY).then(|| key.to_owned()))
        };
        for good in [
            "prod:happy-animal-123|01abcdef",
            "convex-self-hosted|01ff",
            "khala-parity-00ff",
        ] {
            assert_eq!(
                read(good).unwrap().external_admin_key.as_deref(),
                Some(good)
            );
        }
        for (bad, reason) in [
            ("Convex prod:x|01ab", "starts with \"Convex \""),
            ("prod:x|01 secret", "character 10 is ' '"),
            ("prod:x|01ab\n", "character 12 is '\\n'"),
            ("prod:x|ünïcødé", "character 8 is 'ü'"),
        ] {
            let error = read(bad).unwrap_err();
            assert!(
                matches!(error, ConvexBackendError::InvalidAdminKey { .. }),
                "{bad}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains(ENV_CONVEX_ADMIN_KEY), "{message}");
            assert!(message.contains(reason), "{bad}: {message}");
            assert!(
                !message.contains("01ab") && !message.contains("secret"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_package_is_found_in_the_working_tree_before_the_built_one() {
        let tree = tempfile::tempdir().expect("tempdir");
        let package = tree.path().join(CONVEX_PACKAGE_IN_TREE);
        std::fs::create_dir_all(&package).expect("package dir");
        std::fs::write(package.join("server.mjs"), "").expect("server.mjs");
        let nested = tree.path().join("harness/src");
        std::fs::create_dir_all(&nested).expect("nested dir");

        assert_eq!(default_package_dir(Some(tree.path())), package);
        assert_eq!(default_package_dir(Some(&nested)), package);
    }

    #[test]
    fn without_a_working_tree_package_the_built_one_is_used() {
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let found = default_package_dir(Some(elsewhere.path()));
        assert!(found.join("server.mjs").is_file(), "{}", found.display());
        assert_eq!(default_package_dir(None), found);
    }

    #[test]
    fn a_claimed_port_is_never_claimed_twice() {
        let claims: Vec<PortClaim> = (0..8).map(|_| PortClaim::take().expect("claim")).collect();
        let ports: std::collections::BTreeSet<u16> =
            claims.iter().map(|claim| claim.port).collect();
        assert_eq!(ports.len(), claims.len(), "{ports:?}");
        let first = claims[0].port;
        assert!(PortClaim::try_port(first).is_none());
        drop(claims);
        assert!(PortClaim::try_port(first).is_some());
    }

    #[test]
    fn config_reads_every_variable_and_defaults_the_rest() {
        let defaults = ConvexConfig::from_lookup(|_| None).expect("defaults");
        assert_eq!(defaults, ConvexConfig::default());
        assert_eq!(defaults.image, DEFAULT_CONVEX_IMAGE);
        assert!(defaults.package_dir.join("server.mjs").is_file());

        let environment = HashMap::from([
            (ENV_BACKEND, "external"),
            (ENV_CONVEX_IMAGE, "convex-front:test"),
            (ENV_CONVEX_URL, "https://example.convex.cloud"),
            (ENV_CONVEX_ADMIN_KEY, "secret-key"),
            (ENV_REQUIRE_CONTAINERS, "1"),
            (ENV_CONVEX_PACKAGE_DIR, "/opt/convex"),
            (ENV_NODE, "/opt/node/bin/node"),
        ]);
        let config = ConvexConfig::from_lookup(|name| environment.get(name).map(|v| v.to_string()))
            .expect("valid");
        assert_eq!(
            config,
            ConvexConfig {
                choice: BackendChoice::External,
                image: "convex-front:test".to_owned(),
                external_url: Some("https://example.convex.cloud".to_owned()),
                external_admin_key: Some("secret-key".to_owned()),
                require_containers: true,
                package_dir: "/opt/convex".into(),
                node: "/opt/node/bin/node".into(),
                udf_failure_status: UdfFailureStatus::Ok200,
            }
        );
        assert!(!format!("{config:?}").contains("secret-key"));

        let bad_flag = ConvexConfig::from_lookup(|name| {
            (name == ENV_REQUIRE_CONTAINERS).then(|| "yes".to_owned())
        });
        assert!(matches!(
            bad_flag,
            Err(ConvexBackendError::Provider(
                BackendError::InvalidFlag { .. }
            ))
        ));
        let convex_alone =
            HashMap::from([(ENV_BACKEND, "local"), (ENV_CONVEX_BACKEND, "external")]);
        let config =
            ConvexConfig::from_lookup(|name| convex_alone.get(name).map(|v| v.to_string()))
                .expect("valid");
        assert_eq!(config.choice, BackendChoice::External);
        let bad_convex_choice = ConvexConfig::from_lookup(|name| {
            (name == ENV_CONVEX_BACKEND).then(|| "cloud".to_owned())
        })
        .unwrap_err();
        assert!(
            bad_convex_choice.to_string().contains(ENV_CONVEX_BACKEND),
            "{bad_convex_choice}"
        );
        let bad_choice =
            ConvexConfig::from_lookup(|name| (name == ENV_BACKEND).then(|| "dockr".to_owned()));
        assert!(matches!(
            bad_choice,
            Err(ConvexBackendError::Provider(
                BackendError::InvalidChoice { .. }
            ))
        ));
    }

    #[test]
    fn admin_keys_differ() {
        let first = generate_admin_key().expect("key");
        let second = generate_admin_key().expect("key");
        assert_ne!(first, second);
        assert_eq!(first.len(), "khala-parity-".len() + 32);
    }
}
