//! PostgreSQL backend providers: the schema a case sees, isolation between
//! cases, the provider actually chosen, cleanup (also after a panic), and
//! typed errors.

use std::collections::HashMap;
use std::time::Duration;

use khala_parity::play::backend::postgres::{
    BackendChoice, BackendError, BackendResources, ENV_BACKEND, ENV_POSTGRES_BIN_DIR,
    ENV_POSTGRES_IMAGE, ENV_POSTGRES_URL, ENV_REQUIRE_CONTAINERS, PostgresBackend, PostgresConfig,
    ProviderKind, migrate,
};
use sqlx::PgPool;

use crate::support::{self, ok, report};

#[tokio::test]
async fn fresh_database_has_the_migrated_schema() {
    let backend = support::backend().await;
    let case = ok(backend.fresh_database().await);

    let rows: Vec<(String, i64)> = ok(sqlx::query_as(
        "SELECT topic, next_watermark FROM runtime.sync_topic_sequences ORDER BY topic",
    )
    .fetch_all(&case.pool)
    .await);

    assert_eq!(
        rows,
        [
            ("runtime.codex_worker_summaries".to_owned(), 0),
            ("runtime.notifications".to_owned(), 0),
            ("runtime.run_summaries".to_owned(), 0),
        ]
    );
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn fresh_databases_are_isolated() {
    let backend = support::backend().await;
    // Cloned concurrently: both clone the same template at the same time.
    let (first, second) = tokio::join!(backend.fresh_database(), backend.fresh_database());
    let (first, second) = (ok(first), ok(second));
    assert_ne!(first.name, second.name);

    ok(sqlx::query(
        "INSERT INTO runtime.runs (run_id, thread_id, owner_user_id, inserted_at, updated_at) \
         VALUES ('run-1', 'thread-1', 1, now(), now())",
    )
    .execute(&first.pool)
    .await);

    assert_eq!(count_runs(&first.pool).await, 1);
    assert_eq!(count_runs(&second.pool).await, 0);
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn provider_matches_the_environment() {
    let config = support::config();
    let backend = support::start(&config).await;

    // CI sets KHALA_PARITY_REQUIRE_CONTAINERS: this is the check that fails
    // if the harness ever ran on a local server there instead.
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
async fn local_shutdown_removes_the_data_dir_and_stops_the_server() {
    let backend = support::local_backend().await;
    let _case = ok(backend.fresh_database().await);
    let resources = backend.resources();
    let data_dir = resources
        .data_dir
        .clone()
        .expect("a local backend has a data dir");
    assert!(data_dir.is_dir());
    assert!(std::net::TcpStream::connect(("127.0.0.1", resources.port)).is_ok());

    ok(backend.shutdown().await);

    assert_released(&resources).await;
}

#[tokio::test]
async fn configured_shutdown_releases_everything() {
    let backend = support::backend().await;
    let _case = ok(backend.fresh_database().await);
    let resources = backend.resources();

    ok(backend.shutdown().await);

    assert_released(&resources).await;
}

#[tokio::test]
async fn local_backend_dropped_by_a_panicking_task_is_cleaned_up() {
    let config = PostgresConfig {
        choice: BackendChoice::Local,
        require_containers: false,
        ..support::config()
    };
    let resources = resources_of_a_backend_dropped_by_a_panic(config).await;
    assert_released(&resources).await;
}

#[tokio::test]
async fn configured_backend_dropped_by_a_panicking_task_is_cleaned_up() {
    let resources = resources_of_a_backend_dropped_by_a_panic(support::config()).await;
    assert_released(&resources).await;
}

// testcontainers removes containers on drop differently on a multi-thread
// runtime (block_in_place) than on a current-thread one (a drop-worker thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_backend_dropped_by_a_panic_on_a_multi_thread_runtime_is_cleaned_up() {
    let resources = resources_of_a_backend_dropped_by_a_panic(support::config()).await;
    assert_released(&resources).await;
}

#[test]
fn backend_dropped_outside_a_runtime_is_cleaned_up() {
    let runtime = ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build());
    let backend = runtime.block_on(async {
        let backend = support::backend().await;
        let _case = ok(backend.fresh_database().await);
        backend
    });
    let resources = backend.resources();

    drop(backend);

    runtime.block_on(assert_released(&resources));
}

#[tokio::test]
async fn external_provider_drops_only_its_own_databases() {
    let host = support::local_backend().await;
    let bystander = ok(host.fresh_database().await);
    let external = PostgresConfig {
        choice: BackendChoice::External,
        external_url: Some(host.resources().admin_url),
        require_containers: false,
        ..support::config()
    };

    let backend = support::start(&external).await;
    assert_eq!(backend.provider(), ProviderKind::External);
    let case = ok(backend.fresh_database().await);
    let created = backend.resources().databases;
    assert_eq!(created.len(), 2, "template and one case: {created:?}");
    assert!(created.contains(&case.name));
    ok(backend.shutdown().await);
    let after_shutdown = database_names(&bystander.pool).await;

    let dropped_by_panic = resources_of_a_backend_dropped_by_a_panic(external).await;
    let after_panic = database_names(&bystander.pool).await;

    for name in created.iter().chain(&dropped_by_panic.databases) {
        assert!(
            !after_shutdown.contains(name) && !after_panic.contains(name),
            "{name} left behind"
        );
    }
    let host_databases = host.resources().databases;
    for name in &host_databases {
        assert!(
            after_panic.contains(name),
            "{name} of another backend was touched"
        );
    }
    ok(host.shutdown().await);
}

#[tokio::test]
async fn drop_database_removes_the_case_database() {
    let backend = support::backend().await;
    let keep = ok(backend.fresh_database().await);
    let case = ok(backend.fresh_database().await);
    let name = case.name.clone();

    ok(case.drop_database().await);

    assert!(!database_names(&keep.pool).await.contains(&name));
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn a_recycled_database_is_back_in_the_template_state() {
    let backend = support::backend().await;
    let fresh = ok(backend.fresh_database().await);
    let case = ok(backend.case_database().await);
    let name = case.name.clone();
    // Rows in every kind of table: authority with a bigserial, a seeded
    // table changed in place, the journal, a read model.
    ok(sqlx::raw_sql(
        "INSERT INTO runtime.runs (run_id, thread_id, owner_user_id, inserted_at, updated_at) \
             VALUES ('run-1', 'thread-1', 1, now(), now()); \
         INSERT INTO runtime.run_events (run_id, seq, event_type, inserted_at) \
             VALUES ('run-1', 1, 'run.started', now()); \
         UPDATE runtime.sync_topic_sequences SET next_watermark = 7, updated_at = now(); \
         INSERT INTO runtime.sync_stream_events (topic, watermark, doc_key, doc_version, inserted_at) \
             VALUES ('runtime.run_summaries', 1, 'k', 1, now()); \
         INSERT INTO runtime.sync_run_summaries (doc_key, inserted_at, updated_at) \
             VALUES ('k', now(), now())",
    )
    .execute(&case.pool)
    .await);
    backend.recycle(case);

    let again = ok(backend.case_database().await);

    assert_eq!(again.name, name, "the database is reused, not cloned");
    assert_eq!(contents(&again.pool).await, contents(&fresh.pool).await);
    ok(sqlx::query(
        "INSERT INTO runtime.runs (run_id, thread_id, owner_user_id, inserted_at, updated_at) \
         VALUES ('run-2', 'thread-2', 1, now(), now())",
    )
    .execute(&again.pool)
    .await);
    let first_id: i64 = ok(sqlx::query_scalar(
        "INSERT INTO runtime.run_events (run_id, seq, event_type, inserted_at) \
         VALUES ('run-2', 1, 'run.started', now()) RETURNING id",
    )
    .fetch_one(&again.pool)
    .await);
    assert_eq!(first_id, 1, "sequences restart as in a fresh clone");
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn a_recycled_database_whose_schema_changed_is_replaced_by_a_clone() {
    let backend = support::backend().await;
    let case = ok(backend.case_database().await);
    let name = case.name.clone();
    ok(sqlx::query(
        "ALTER TABLE runtime.sync_run_summaries ADD CONSTRAINT left_behind CHECK (false) NOT VALID",
    )
    .execute(&case.pool)
    .await);
    backend.recycle(case);

    let again = ok(backend.case_database().await);

    assert_ne!(again.name, name, "a changed schema is not reset in place");
    assert!(!database_names(&again.pool).await.contains(&name));
    let left_behind: i64 = ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conname = 'left_behind'",
    )
    .fetch_one(&again.pool)
    .await);
    assert_eq!(left_behind, 0);
    ok(backend.shutdown().await);
}

#[tokio::test]
async fn unreachable_external_url_is_a_typed_error() {
    let port = closed_port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/postgres");
    let config = PostgresConfig {
        choice: BackendChoice::External,
        external_url: Some(url),
        ..PostgresConfig::default()
    };

    let error = PostgresBackend::start(&config)
        .await
        .expect_err("nothing listens on the port");

    let message = report(&error);
    match &error {
        BackendError::Unreachable { provider, url, .. } => {
            assert_eq!(*provider, ProviderKind::External);
            assert_eq!(
                *url,
                format!("postgres://postgres:***@127.0.0.1:{port}/postgres")
            );
        }
        other => panic!("expected Unreachable, got {}", report(other)),
    }
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn unknown_backend_choice_lists_the_valid_values() {
    let parse_error = "dockr".parse::<BackendChoice>().expect_err("not a choice");
    let lookup = |name: &str| (name == ENV_BACKEND).then(|| "dockr".to_owned());
    let config_error = PostgresConfig::from_lookup(lookup).expect_err("not a choice");

    assert!(matches!(
        &config_error,
        BackendError::InvalidChoice {
            variable: ENV_BACKEND,
            ..
        }
    ));
    for message in [parse_error.to_string(), report(&config_error)] {
        assert!(message.contains("\"dockr\""), "{message}");
        for valid in BackendChoice::VALID_VALUES {
            assert!(message.contains(valid), "{valid} missing from: {message}");
        }
    }
}

#[test]
fn backend_choice_round_trips_through_its_name() {
    for valid in BackendChoice::VALID_VALUES {
        let choice: BackendChoice = ok(valid.parse());
        assert_eq!(choice.to_string(), valid);
    }
}

#[test]
fn config_reads_every_variable_and_defaults_the_rest() {
    let defaults = ok(PostgresConfig::from_lookup(|_| None));
    assert_eq!(defaults, PostgresConfig::default());
    assert_eq!(defaults.choice, BackendChoice::Auto);
    assert_eq!(defaults.image, "postgres:15");
    assert!(!defaults.require_containers);

    let environment = HashMap::from([
        (ENV_BACKEND, "external"),
        (ENV_POSTGRES_IMAGE, "khala-parity/postgres:15-bookworm"),
        (ENV_POSTGRES_URL, "postgres://app@db/main"),
        (ENV_REQUIRE_CONTAINERS, "true"),
        (ENV_POSTGRES_BIN_DIR, "/opt/pg/bin"),
    ]);
    let config = ok(PostgresConfig::from_lookup(|name| {
        environment.get(name).map(|value| value.to_string())
    }));
    assert_eq!(
        config,
        PostgresConfig {
            choice: BackendChoice::External,
            image: "khala-parity/postgres:15-bookworm".to_owned(),
            external_url: Some("postgres://app@db/main".to_owned()),
            require_containers: true,
            postgres_bin_dir: "/opt/pg/bin".into(),
        }
    );

    let bad_flag = PostgresConfig::from_lookup(|name| {
        (name == ENV_REQUIRE_CONTAINERS).then(|| "yes".to_owned())
    });
    assert!(matches!(bad_flag, Err(BackendError::InvalidFlag { .. })));
}

#[tokio::test]
async fn migration_failure_names_the_database() {
    let backend = support::backend().await;
    let case = ok(backend.fresh_database().await);
    // The schema of another system: `runtime.runs` exists with another shape
    // and no migration is recorded.
    ok(sqlx::raw_sql(
        "DROP SCHEMA runtime CASCADE; DROP TABLE _sqlx_migrations; \
         CREATE SCHEMA runtime; CREATE TABLE runtime.runs (id integer PRIMARY KEY);",
    )
    .execute(&case.pool)
    .await);

    let error = migrate(&case.pool, &case.name)
        .await
        .expect_err("runtime.runs already exists");

    let first_version = khala_runtime::MIGRATOR
        .iter()
        .next()
        .expect("at least one migration")
        .version;
    match &error {
        BackendError::Migration { database, .. } => assert_eq!(*database, case.name),
        other => panic!("expected Migration, got {}", report(other)),
    }
    let message = report(&error);
    assert!(error.to_string().contains(&case.name), "{message}");
    assert!(message.contains(&first_version.to_string()), "{message}");
    ok(backend.shutdown().await);
}

/// Starts a backend in a task that then panics, and returns what the backend
/// held at the moment of the panic.
async fn resources_of_a_backend_dropped_by_a_panic(config: PostgresConfig) -> BackendResources {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let backend = support::start(&config).await;
        let _case = ok(backend.fresh_database().await);
        let _ = sender.send(backend.resources());
        panic!("deliberate panic while a backend is alive");
    });
    let error = task.await.expect_err("the task panics");
    assert!(error.is_panic());
    receiver
        .await
        .expect("the task sent its resources before panicking")
}

/// Nothing the backend held exists any more.
async fn assert_released(resources: &BackendResources) {
    match resources.provider {
        ProviderKind::Local => {
            let data_dir = resources
                .data_dir
                .as_ref()
                .expect("a local backend has a data dir");
            assert!(!data_dir.exists(), "{} left behind", data_dir.display());
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", resources.port)).is_err(),
                "port {} still accepts connections",
                resources.port
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
        ProviderKind::External => {
            let admin = ok(PgPool::connect(&resources.admin_url).await);
            let existing = database_names(&admin).await;
            for name in &resources.databases {
                assert!(!existing.contains(name), "{name} left behind");
            }
            admin.close().await;
        }
    }
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

/// Every row of every table of the runtime schema in physical order, and
/// every sequence's position: what a case could observe.
async fn contents(pool: &PgPool) -> Vec<(String, Option<String>)> {
    let tables: Vec<String> = ok(sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
         WHERE schemaname = 'runtime' ORDER BY 1",
    )
    .fetch_all(pool)
    .await);
    let mut contents = Vec::new();
    for table in tables {
        let rows: Option<String> = ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT json_agg(t ORDER BY t.ctid)::text FROM {table} t"
        )))
        .fetch_one(pool)
        .await);
        contents.push((table, rows));
    }
    let sequences: Vec<(String, Option<String>)> = ok(sqlx::query_as(
        "SELECT format('%I.%I', schemaname, sequencename), last_value::text FROM pg_sequences \
         WHERE schemaname = 'runtime' ORDER BY 1",
    )
    .fetch_all(pool)
    .await);
    contents.extend(sequences);
    contents
}

async fn database_names(pool: &PgPool) -> Vec<String> {
    ok(sqlx::query_scalar("SELECT datname FROM pg_database")
        .fetch_all(pool)
        .await)
}

async fn count_runs(pool: &PgPool) -> i64 {
    ok(sqlx::query_scalar("SELECT count(*) FROM runtime.runs")
        .fetch_one(pool)
        .await)
}
