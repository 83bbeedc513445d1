//! Convex backend providers: calls through the front with and without the
//! admin key, reset, the provider actually chosen, fault injection (pause,
//! stop, start again), cleanup (also after a panic) and typed errors.
//!
//! The fault and cleanup bodies run on the configured provider and on a local
//! front, so that both are covered whatever the environment asks for.

use std::sync::Once;
use std::time::Duration;

use khala_parity::play::backend::convex::{
    ConvexBackend, ConvexBackendError, ConvexConfig, ConvexResources, UdfFailureStatus,
};
use khala_parity::play::backend::postgres::{BackendChoice, ProviderKind};
use serde_json::{Value, json};

use crate::support::{ok, report};

const RUN_ID: &str = "run_1";

/// The backend the environment asks for (see `ConvexConfig::from_env`).
pub async fn convex_backend() -> ConvexBackend {
    start(&config()).await
}

/// A local front regardless of the environment, for tests of that provider.
pub async fn local_convex_backend() -> ConvexBackend {
    start(&local_config()).await
}

pub fn config() -> ConvexConfig {
    ConvexConfig::from_env().unwrap_or_else(|error| panic!("failed to {}", report(&error)))
}

fn local_config() -> ConvexConfig {
    ConvexConfig {
        choice: BackendChoice::Local,
        require_containers: false,
        ..config()
    }
}

pub async fn start(config: &ConvexConfig) -> ConvexBackend {
    init_tracing();
    ConvexBackend::start(config)
        .await
        .unwrap_or_else(|error| panic!("failed to {}", report(&error)))
}

/// Logs go to the test's captured output; `RUST_LOG` picks what is shown.
fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

#[tokio::test]
async fn provider_matches_the_environment() {
    let config = config();
    let backend = start(&config).await;

    // CI sets KHALA_PARITY_REQUIRE_CONTAINERS: this is the check that fails
    // if the harness ever ran a local front there instead.
    let expected = if config.require_containers {
        ProviderKind::Containers
    } else {
        match config.choice {
            BackendChoice::Containers => ProviderKind::Containers,
            BackendChoice::Local => ProviderKind::Local,
            BackendChoice::External => ProviderKind::External,
            BackendChoice::Auto if docker_engine_answers().await => ProviderKind::Containers,
            BackendChoice::Auto => ProviderKind::Local,
        }
    };
    assert_eq!(backend.provider(), expected, "configuration: {config:?}");
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn a_mutation_with_the_admin_key_is_read_back_by_a_query() {
    let backend = convex_backend().await;
    let client = client(Duration::from_secs(5));
    let summary = run_summary(RUN_ID);

    let (status, body) = call(
        &client,
        &backend,
        "mutation",
        "runtime:upsertRunSummary",
        json!({"document_id": summary["document_id"], "summary": summary}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "success", "value": null}));

    assert_eq!(stored_summary(&client, &backend).await, Some(summary));
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn calls_without_the_admin_key_or_with_another_are_refused() {
    let backend = convex_backend().await;
    let client = client(Duration::from_secs(5));
    let key = backend.admin_key().expect("the front's key").to_owned();
    assert!(key.len() >= 32, "a generated key: {key}");
    let url = format!("{}/api/query", backend.base_url());
    let query = json!({
        "path": "runtime:getRunSummary",
        "args": {"document_id": document_id(RUN_ID)},
        "format": "json",
    });

    let without = ok(client.post(&url).json(&query).send().await);
    let wrong = ok(client
        .post(&url)
        .header("authorization", format!("Convex {key}x"))
        .json(&query)
        .send()
        .await);
    let reset_without = ok(client
        .post(format!("{}/_harness/reset", backend.base_url()))
        .send()
        .await);

    assert_eq!(without.status().as_u16(), 401);
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(reset_without.status().as_u16(), 401);
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn reset_empties_the_store() {
    let backend = convex_backend().await;
    let client = client(Duration::from_secs(5));
    upsert(&client, &backend).await;
    assert!(stored_summary(&client, &backend).await.is_some());

    ok(backend.reset().await);

    assert_eq!(stored_summary(&client, &backend).await, None);
    // Still serves after a reset.
    upsert(&client, &backend).await;
    assert!(stored_summary(&client, &backend).await.is_some());
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn pause_makes_requests_time_out_and_unpause_restores_them() {
    pause_and_unpause(convex_backend().await).await;
}

#[tokio::test]
async fn local_pause_makes_requests_time_out_and_unpause_restores_them() {
    pause_and_unpause(local_convex_backend().await).await;
}

#[tokio::test]
async fn stop_refuses_connections_and_start_again_serves_on_the_same_url() {
    stop_and_start_again(convex_backend().await).await;
}

#[tokio::test]
async fn local_stop_refuses_connections_and_start_again_serves_on_the_same_url() {
    stop_and_start_again(local_convex_backend().await).await;
}

#[tokio::test]
async fn configured_shutdown_releases_everything() {
    let backend = convex_backend().await;
    let resources = backend.resources();
    assert_holds(&resources);

    ok(backend.shutdown().await);

    assert_released(&resources).await;
}

#[tokio::test]
async fn local_shutdown_kills_the_front_and_frees_the_port() {
    let backend = local_convex_backend().await;
    let resources = backend.resources();
    assert_eq!(resources.provider, ProviderKind::Local);
    assert_holds(&resources);

    ok(backend.shutdown().await);

    assert_released(&resources).await;
}

/// The lanes of one run start their local fronts at once; each must get a
/// port of its own (they once raced for the same one and failed with
/// EADDRINUSE), and each must answer on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_local_fronts_started_at_once_never_collide() {
    const LANES: usize = 4;
    const ROUNDS: usize = 20;
    let config = local_config();
    for round in 0..ROUNDS {
        let started =
            futures::future::join_all((0..LANES).map(|_| ConvexBackend::start(&config))).await;
        let backends: Vec<ConvexBackend> = started
            .into_iter()
            .map(|backend| {
                backend
                    .unwrap_or_else(|error| panic!("round {round}: failed to {}", report(&error)))
            })
            .collect();
        let urls: std::collections::BTreeSet<String> =
            backends.iter().map(ConvexBackend::base_url).collect();
        assert_eq!(urls.len(), LANES, "round {round}: {urls:?}");
        let client = client(Duration::from_secs(5));
        for backend in &backends {
            upsert(&client, backend).await;
            assert!(
                stored_summary(&client, backend).await.is_some(),
                "round {round}"
            );
        }
        for backend in backends {
            ok(backend.shutdown().await);
        }
    }
}

#[tokio::test]
async fn a_paused_backend_is_released_by_shutdown() {
    for backend in [convex_backend().await, local_convex_backend().await] {
        ok(backend.pause().await);
        let resources = backend.resources();
        ok(backend.shutdown().await);
        assert_released(&resources).await;
    }
}

#[tokio::test]
async fn configured_backend_dropped_by_a_panicking_task_is_cleaned_up() {
    let resources = resources_of_a_backend_dropped_by_a_panic(config()).await;
    assert_released(&resources).await;
}

#[tokio::test]
async fn local_backend_dropped_by_a_panicking_task_is_cleaned_up() {
    let resources = resources_of_a_backend_dropped_by_a_panic(local_config()).await;
    assert_released(&resources).await;
}

// testcontainers removes containers on drop differently on a multi-thread
// runtime (block_in_place) than on a current-thread one (a drop-worker thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_backend_dropped_by_a_panic_on_a_multi_thread_runtime_is_cleaned_up() {
    let resources = resources_of_a_backend_dropped_by_a_panic(config()).await;
    assert_released(&resources).await;
}

#[test]
fn backend_dropped_outside_a_runtime_is_cleaned_up() {
    let runtime = ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build());
    let backend = runtime.block_on(convex_backend());
    let resources = backend.resources();

    drop(backend);

    runtime.block_on(assert_released(&resources));
}

#[tokio::test]
async fn missing_node_modules_is_a_typed_error_naming_npm_ci() {
    let package_dir = ok(tempfile::tempdir());
    let config = ConvexConfig {
        package_dir: package_dir.path().to_owned(),
        ..local_config()
    };

    let error = ConvexBackend::start(&config)
        .await
        .expect_err("no node_modules");

    match &error {
        ConvexBackendError::PackageNotInstalled { package_dir: dir } => {
            assert_eq!(dir, package_dir.path());
        }
        other => panic!("expected PackageNotInstalled, got {}", report(other)),
    }
    let message = error.to_string();
    assert!(
        message.contains("npm ci --prefix models/convex"),
        "{message}"
    );
    assert!(
        message.contains(&package_dir.path().display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn missing_node_is_a_typed_error_naming_the_program() {
    let config = ConvexConfig {
        node: "/nonexistent/node".into(),
        ..local_config()
    };

    let error = ConvexBackend::start(&config)
        .await
        .expect_err("no such program");

    assert!(
        matches!(&error, ConvexBackendError::LocalSpawn { node, .. } if node.as_os_str() == "/nonexistent/node"),
        "{}",
        report(&error)
    );
    assert!(error.to_string().contains("KHALA_PARITY_NODE"), "{error}");
}

#[tokio::test]
async fn a_front_that_exits_before_listening_is_reported_with_its_stderr() {
    let package_dir = ok(tempfile::tempdir());
    ok(std::fs::create_dir(package_dir.path().join("node_modules")));
    ok(std::fs::write(
        package_dir.path().join("server.mjs"),
        "console.error('cannot load convex-test'); process.exit(3);\n",
    ));
    let config = ConvexConfig {
        package_dir: package_dir.path().to_owned(),
        ..local_config()
    };

    let error = ConvexBackend::start(&config)
        .await
        .expect_err("the script exits");

    match &error {
        ConvexBackendError::LocalStart { reason, stderr, .. } => {
            assert!(reason.contains("exit status: 3"), "{reason}");
            assert_eq!(stderr, "cannot load convex-test");
        }
        other => panic!("expected LocalStart, got {}", report(other)),
    }
}

#[tokio::test]
async fn unreachable_external_url_is_a_typed_error_with_the_url_redacted() {
    let port = closed_port();
    let config = ConvexConfig {
        choice: BackendChoice::External,
        external_url: Some(format!("http://deploy:hunter2@127.0.0.1:{port}/")),
        external_admin_key: Some("admin-secret".to_owned()),
        ..ConvexConfig::default()
    };

    let error = ConvexBackend::start(&config)
        .await
        .expect_err("nothing listens on the port");

    let message = report(&error);
    match &error {
        ConvexBackendError::Unreachable { provider, url, .. } => {
            assert_eq!(*provider, ProviderKind::External);
            assert_eq!(
                *url,
                format!("http://deploy:***@127.0.0.1:{port}/api/query")
            );
        }
        _ => panic!("expected Unreachable, got {message}"),
    }
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!message.contains("admin-secret"), "{message}");
}

#[tokio::test]
async fn external_provider_needs_a_url() {
    let config = ConvexConfig {
        choice: BackendChoice::External,
        ..ConvexConfig::default()
    };
    let error = ConvexBackend::start(&config).await.expect_err("no url");
    assert!(
        matches!(error, ConvexBackendError::MissingExternalUrl { .. }),
        "{}",
        report(&error)
    );
}

/// A local front stands in for a real deployment: the external provider
/// checks it with a query, refuses to reset it or inject faults, and a wrong
/// key is a typed error naming the status.
#[tokio::test]
async fn external_provider_probes_but_never_resets_or_stops_the_deployment() {
    let host = local_convex_backend().await;
    let client = client(Duration::from_secs(5));
    upsert(&client, &host).await;
    let external = ConvexConfig {
        choice: BackendChoice::External,
        external_url: Some(format!("{}/", host.base_url())),
        external_admin_key: host.admin_key().map(str::to_owned),
        require_containers: false,
        ..config()
    };

    let backend = start(&external).await;
    assert_eq!(backend.provider(), ProviderKind::External);
    assert_eq!(backend.base_url(), host.base_url());
    let reset = backend
        .reset()
        .await
        .expect_err("a deployment is not ours to empty");
    assert!(
        matches!(&reset, ConvexBackendError::ResetUnsupported { .. }),
        "{}",
        report(&reset)
    );
    assert!(reset.to_string().contains("fresh deployment"), "{reset}");
    for result in [backend.pause().await, backend.stop().await] {
        assert!(matches!(
            result,
            Err(ConvexBackendError::FaultUnsupported {
                provider: ProviderKind::External,
                ..
            })
        ));
    }
    ok(backend.shutdown().await);
    // Shutting the external backend down left the deployment and its data alone.
    assert!(stored_summary(&client, &host).await.is_some());

    let wrong_key = ConvexConfig {
        external_admin_key: Some("not-the-key".to_owned()),
        ..external
    };
    let error = ConvexBackend::start(&wrong_key)
        .await
        .expect_err("the key is wrong");
    match &error {
        ConvexBackendError::UnexpectedStatus { status, body, .. } => {
            assert_eq!(*status, 401);
            assert!(body.contains("BadAdminKey"), "{body}");
        }
        other => panic!("expected UnexpectedStatus, got {}", report(other)),
    }
    assert!(!report(&error).contains("not-the-key"));
    ok(host.shutdown().await);
}

/// A copy of `models/convex` whose `runtime` module lacks the function the
/// external probe calls: a deployment where our functions are missing.
fn package_without_the_probed_function() -> tempfile::TempDir {
    let source = config().package_dir;
    let copy = ok(tempfile::tempdir());
    ok(std::fs::create_dir(copy.path().join("convex")));
    for file in ["server.mjs", "convex_values.mjs", "package.json"] {
        ok(std::fs::copy(source.join(file), copy.path().join(file)));
    }
    for file in ["schema.js", "validators.js"] {
        ok(std::fs::copy(
            source.join("convex").join(file),
            copy.path().join("convex").join(file),
        ));
    }
    let runtime = ok(std::fs::read_to_string(source.join("convex/runtime.js")));
    let without = runtime.replace("export const listRunSummaries = list(RUN);", "");
    assert_ne!(
        runtime, without,
        "runtime.js no longer exports listRunSummaries so"
    );
    ok(std::fs::write(
        copy.path().join("convex/runtime.js"),
        without,
    ));
    ok(std::os::unix::fs::symlink(
        source.join("node_modules"),
        copy.path().join("node_modules"),
    ));
    copy
}

#[tokio::test]
async fn external_probe_refuses_a_deployment_without_our_functions() {
    let package = package_without_the_probed_function();
    // In both modes a real deployment may answer the missing function with.
    for mode in UdfFailureStatus::ALL {
        let host = start(&ConvexConfig {
            package_dir: package.path().to_owned(),
            udf_failure_status: mode,
            ..local_config()
        })
        .await;
        let external = ConvexConfig {
            choice: BackendChoice::External,
            external_url: Some(host.base_url()),
            external_admin_key: host.admin_key().map(str::to_owned),
            require_containers: false,
            ..config()
        };
        let error = ConvexBackend::start(&external)
            .await
            .expect_err("the functions are missing");
        match &error {
            ConvexBackendError::FunctionsMissing { answer, .. } => {
                assert!(
                    answer
                        .contains("Could not find public function for 'runtime:listRunSummaries'"),
                    "{mode}: {answer}"
                );
                assert!(answer.contains(&format!("HTTP {mode}")), "{mode}: {answer}");
            }
            other => panic!("{mode}: expected FunctionsMissing, got {}", report(other)),
        }
        assert!(error.to_string().contains("npx convex deploy"), "{error}");
        ok(host.shutdown().await);
    }
}

async fn pause_and_unpause(backend: ConvexBackend) {
    let client = client(Duration::from_millis(300));
    upsert(&client, &backend).await;

    ok(backend.pause().await);
    let error = try_get(&client, &backend)
        .await
        .expect_err("a paused front answers nothing");
    assert!(error.is_timeout(), "{}", report(&error));

    ok(backend.unpause().await);
    // The data survived the pause.
    assert!(stored_summary(&client, &backend).await.is_some());
    ok(backend.shutdown().await);
}

async fn stop_and_start_again(backend: ConvexBackend) {
    let client = client(Duration::from_secs(2));
    let base_url = backend.base_url();
    upsert(&client, &backend).await;

    ok(backend.stop().await);
    let error = try_get(&client, &backend)
        .await
        .expect_err("a stopped front refuses connections");
    assert!(error.is_connect(), "{}", report(&error));

    ok(backend.start_again().await);
    assert_eq!(backend.base_url(), base_url);
    // The journal gives a restarted front what it held, as a deployment's
    // storage does; a reset empties it for good.
    assert!(stored_summary(&client, &backend).await.is_some());
    ok(backend.reset().await);
    ok(backend.stop().await);
    ok(backend.start_again().await);
    assert_eq!(stored_summary(&client, &backend).await, None);
    upsert(&client, &backend).await;
    assert!(stored_summary(&client, &backend).await.is_some());
    ok(backend.shutdown().await);
}

/// Starts a backend in a task that then panics, and returns what the backend
/// held at the moment of the panic.
async fn resources_of_a_backend_dropped_by_a_panic(config: ConvexConfig) -> ConvexResources {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let backend = start(&config).await;
        let _ = sender.send(backend.resources());
        panic!("deliberate panic while a backend is alive");
    });
    let error = task.await.expect_err("the task panics");
    assert!(error.is_panic());
    receiver
        .await
        .expect("the task sent its resources before panicking")
}

/// The backend holds what its provider implies, and its port answers.
fn assert_holds(resources: &ConvexResources) {
    match resources.provider {
        ProviderKind::Local => {
            let pid = resources.pid.expect("a local backend has a process");
            assert!(process_alive(pid), "pid {pid} not running");
        }
        ProviderKind::Containers => {
            assert!(resources.container_id.is_some());
        }
        ProviderKind::External => {}
    }
    assert!(std::net::TcpStream::connect(host_port(&resources.base_url)).is_ok());
}

/// Nothing the backend held exists any more.
async fn assert_released(resources: &ConvexResources) {
    match resources.provider {
        ProviderKind::Local => {
            let pid = resources.pid.expect("a local backend has a process");
            assert!(!process_alive(pid), "pid {pid} still running");
            let address = host_port(&resources.base_url);
            assert!(
                std::net::TcpStream::connect(&address).is_err(),
                "{address} still accepts connections"
            );
        }
        ProviderKind::Containers => {
            let id = resources
                .container_id
                .as_deref()
                .expect("a container backend has a container");
            let docker = ok(testcontainers::core::client::docker_client_instance().await);
            match docker.inspect_container(id, None).await {
                Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                }) => {}
                other => panic!("container {id} still known to the engine: {other:?}"),
            }
        }
        ProviderKind::External => {}
    }
}

/// Running or stopped, but not exited: a zombie (exited, not yet reaped)
/// counts as gone.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn host_port(base_url: &str) -> String {
    base_url
        .strip_prefix("http://")
        .expect("an http url")
        .trim_end_matches('/')
        .to_owned()
}

fn client(timeout: Duration) -> reqwest::Client {
    ok(reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build())
}

fn document_id(run_id: &str) -> String {
    format!("runtime/run_summary:{run_id}")
}

/// A valid run summary as the projector builds it.
fn run_summary(run_id: &str) -> Value {
    json!({
        "document_id": document_id(run_id),
        "kind": "run_summary",
        "run_id": run_id,
        "thread_id": "thread_1",
        "status": "running",
        "owner_user_id": 7,
        "owner_guest_scope": null,
        "latest_seq": 3,
        "event_count": 3,
        "latest_event_type": "run.delta",
        "latest_event_at": "2026-02-19T20:00:00.000000Z",
        "terminal_reason_class": null,
        "terminal_reason": null,
        "terminal_at": null,
        "updated_at": "2026-02-19T20:00:00.000000Z",
        "runtime_source": {"entity": "run", "run_id": run_id, "seq": 3},
        "projection_version": "convex_summary_v1",
        "projected_at": "2026-02-19T20:00:01.000000Z",
    })
}

/// `POST /api/{kind}` with the backend's admin key; the status and JSON body.
async fn call(
    client: &reqwest::Client,
    backend: &ConvexBackend,
    kind: &str,
    path: &str,
    args: Value,
) -> (u16, Value) {
    let mut request = client
        .post(format!("{}/api/{kind}", backend.base_url()))
        .json(&json!({"path": path, "args": args, "format": "json"}));
    if let Some(key) = backend.admin_key() {
        request = request.header("authorization", format!("Convex {key}"));
    }
    let response = ok(request.send().await);
    let status = response.status().as_u16();
    // Numbers come back as Convex writes them (`3.0`): read by Convex's types.
    let body = khala_runtime::sink::convex_value::decode_export(ok(response.json().await));
    (status, body)
}

async fn upsert(client: &reqwest::Client, backend: &ConvexBackend) {
    let summary = run_summary(RUN_ID);
    let (status, body) = call(
        client,
        backend,
        "mutation",
        "runtime:upsertRunSummary",
        json!({"document_id": summary["document_id"], "summary": summary}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// The stored summary of `RUN_ID`, if any.
async fn stored_summary(client: &reqwest::Client, backend: &ConvexBackend) -> Option<Value> {
    let (status, body) = call(
        client,
        backend,
        "query",
        "runtime:getRunSummary",
        json!({"document_id": document_id(RUN_ID)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    match &body["value"] {
        Value::Null => None,
        document => Some(document["summary"].clone()),
    }
}

/// The health endpoint, surfacing transport errors (timeouts, refusals).
async fn try_get(
    client: &reqwest::Client,
    backend: &ConvexBackend,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    client
        .get(format!("{}/_harness/health", backend.base_url()))
        .send()
        .await
        .map(|response| response.status())
}

async fn docker_engine_answers() -> bool {
    let ping = async {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .ok()?;
        docker.ping().await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), ping).await,
        Ok(Some(_))
    )
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = ok(std::net::TcpListener::bind(("127.0.0.1", 0)));
    ok(listener.local_addr()).port()
}
