//! How playing a case can fail, in two kinds every site must choose
//! between: the harness or its infrastructure failed (`DriverError`: the
//! case proves nothing, its scenario is `unknown`), or the system under
//! test did (`SystemFault`: a client lane, the sync server, the runtime or
//! the auditor raised an error where it should have behaved, which the
//! driver records as an `E1` violation, shrunk and stored like any other).
//!
//! There is no conversion from a raw error (`sqlx::Error`, `ClientError`,
//! …) into either kind: each site wraps it in one of them, with the
//! classifiers below where the error itself says which it is.

use crate::model::reason::SystemClass;
use khala_clients::{ClientError, ClientErrorKind};

/// The harness or a backend failed: the case's result is unknown, never a
/// pass.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("postgres backend at step {step}: {source}")]
    Postgres {
        step: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("convex backend at step {step}: {source}")]
    Convex {
        step: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("harness proxy: {0}")]
    Proxy(std::io::Error),
    /// The harness's own delivery plumbing failed: the sync server could
    /// not bind, a lane's transport broke, a frame the server had sent did
    /// not arrive within the harness's own timeout, a temporary directory.
    #[error("harness delivery plumbing at step {step}: {source}")]
    Delivery {
        step: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DriverError {
    pub(crate) fn postgres(
        step: usize,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DriverError::Postgres {
            step,
            source: Box::new(source),
        }
    }

    pub(crate) fn convex(
        step: usize,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DriverError::Convex {
            step,
            source: Box::new(source),
        }
    }

    pub(crate) fn delivery(
        step: usize,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DriverError::Delivery {
            step,
            source: Box::new(source),
        }
    }

    /// Which backend failed, for reports.
    pub fn backend(&self) -> &'static str {
        match self {
            DriverError::Postgres { .. } => "postgres",
            DriverError::Convex { .. } | DriverError::Proxy(_) => "convex",
            DriverError::Delivery { .. } => "sync",
        }
    }
}

/// The part of the system under test that raised an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// A client lane (today's model or the shipped client).
    ClientLane,
    /// The sync server (its channels, its retention job).
    SyncServer,
    /// The runtime's own writes (authority tables, configuration).
    Runtime,
    /// The parity auditor.
    Auditor,
}

impl Component {
    /// The `E1` reason class of an error this component raised.
    pub fn reason_class(self) -> SystemClass {
        match self {
            Component::ClientLane => SystemClass::ClientLaneFailed,
            Component::SyncServer => SystemClass::SyncServerFailed,
            Component::Runtime => SystemClass::RuntimeFailed,
            Component::Auditor => SystemClass::AuditorFailed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Component::ClientLane => "client lane",
            Component::SyncServer => "sync server",
            Component::Runtime => "runtime",
            Component::Auditor => "parity auditor",
        }
    }
}

/// The system under test raised an error while a case played: a violation
/// (`E1`), not a backend failure.
#[derive(Debug, thiserror::Error)]
#[error("{} at step {step}: {source}", component.name())]
pub struct SystemFault {
    pub step: usize,
    pub component: Component,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Why a step could not be played: one of the two kinds.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The harness or a backend: the case is unknown.
    #[error(transparent)]
    Harness(#[from] DriverError),
    /// The system under test: a violation.
    #[error(transparent)]
    System(#[from] SystemFault),
}

impl StepError {
    /// The system under test raised `source`.
    pub(crate) fn system(
        step: usize,
        component: Component,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StepError::System(SystemFault {
            step,
            component,
            source: Box::new(source),
        })
    }

    /// A database error `component` returned: the backend's when the
    /// connection failed (it is unreachable, gone or out of resources),
    /// the component's own otherwise (a statement the database refused).
    pub(crate) fn from_sql(step: usize, component: Component, error: sqlx::Error) -> Self {
        if sql_is_infrastructure(&error) {
            StepError::Harness(DriverError::postgres(step, error))
        } else {
            StepError::system(step, component, error)
        }
    }

    /// An error a client lane returned: the harness's when the transport,
    /// the harness's own timeout, its token issuer or the watermark files
    /// failed; the lane's (or the server's it talks to) otherwise.
    pub(crate) fn from_client(step: usize, error: ClientError) -> Self {
        if client_is_infrastructure(&error.kind) {
            StepError::Harness(DriverError::delivery(step, error))
        } else {
            StepError::system(step, Component::ClientLane, error)
        }
    }
}

/// Whether a database error says the database could not be used at all
/// (rather than that it refused what it was asked).
pub fn sql_is_infrastructure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => {
            // SQLSTATE classes 08 (connection exception), 53 (insufficient
            // resources), 57 (operator intervention: shutdown, cancel).
            let code = database.code();
            let class = code
                .as_deref()
                .map_or("", |code| &code[..code.len().min(2)]);
            matches!(class, "08" | "53" | "57")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Configuration(_) => true,
        _ => false,
    }
}

/// Whether a lane's error comes from outside the models: see
/// `StepError::from_client`.
pub fn client_is_infrastructure(kind: &ClientErrorKind) -> bool {
    use tokio_tungstenite::tungstenite::Error as WebSocketError;
    match kind {
        ClientErrorKind::Token(_) | ClientErrorKind::Store(_) | ClientErrorKind::TimedOut(_) => {
            true
        }
        ClientErrorKind::WebSocket(error) => matches!(
            error,
            WebSocketError::Io(_) | WebSocketError::Tls(_) | WebSocketError::Url(_)
        ),
        ClientErrorKind::Http(error) => error.is_connect() || error.is_timeout(),
        ClientErrorKind::HttpStatus(_)
        | ClientErrorKind::Refused(_)
        | ClientErrorKind::Closed
        | ClientErrorKind::NotConnected
        | ClientErrorKind::Malformed(_)
        | ClientErrorKind::ReadPath(_)
        | ClientErrorKind::Apply(_)
        | ClientErrorKind::StrandedByStaleCursor => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_that_cannot_apply_or_is_refused_is_the_systems_fault() {
        for kind in [
            ClientErrorKind::Apply("planted".into()),
            ClientErrorKind::Refused(serde_json::json!({"code": "stale_cursor"})),
            ClientErrorKind::Closed,
            ClientErrorKind::Malformed("x".into()),
        ] {
            assert!(!client_is_infrastructure(&kind), "{kind}");
        }
        for kind in [
            ClientErrorKind::TimedOut(std::time::Duration::from_secs(5)),
            ClientErrorKind::Token("no key".into()),
        ] {
            assert!(client_is_infrastructure(&kind), "{kind}");
        }
    }

    #[test]
    fn an_unreachable_database_is_infrastructure_and_a_refused_statement_is_not() {
        assert!(sql_is_infrastructure(&sqlx::Error::PoolTimedOut));
        assert!(sql_is_infrastructure(&sqlx::Error::Io(
            std::io::Error::other("reset")
        )));
        assert!(!sql_is_infrastructure(&sqlx::Error::RowNotFound));
        assert!(!sql_is_infrastructure(&sqlx::Error::ColumnNotFound(
            "x".into()
        )));
    }
}
