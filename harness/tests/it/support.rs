//! Fixtures shared by the integration tests.

use std::sync::Once;

use khala_parity::play::backend::postgres::{BackendChoice, PostgresBackend, PostgresConfig};

/// The multi-thread runtime the blocking engine tests drive backends on.
pub fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The backend the environment asks for (see `PostgresConfig::from_env`).
pub async fn backend() -> PostgresBackend {
    start(&config()).await
}

/// A local server regardless of the environment, for tests of that provider.
pub async fn local_backend() -> PostgresBackend {
    let config = PostgresConfig {
        choice: BackendChoice::Local,
        require_containers: false,
        ..config()
    };
    start(&config).await
}

pub fn config() -> PostgresConfig {
    PostgresConfig::from_env().unwrap_or_else(|error| panic!("failed to {}", report(&error)))
}

pub async fn start(config: &PostgresConfig) -> PostgresBackend {
    init_tracing();
    PostgresBackend::start(config)
        .await
        .unwrap_or_else(|error| panic!("failed to {}", report(&error)))
}

/// The error and its causes on one line, as "a: b: c".
pub fn report(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
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

/// The value, or a panic with the error and its causes.
pub fn ok<T, E: std::error::Error>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|error| panic!("failed to {}", report(&error)))
}
