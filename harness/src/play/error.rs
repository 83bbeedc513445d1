//! How playing a case can fail for a reason outside the system under test:
//! a backend or the harness's own plumbing. Such a case proves nothing, so
//! its scenario is `unknown`, never a pass.

/// A backend failed: the case's result is unknown, never a pass.
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
    /// The sync server or a client lane failed where the models never
    /// should (a lane waited past its frame timeout, a bind failed).
    #[error("sync server or client lane at step {step}: {source}")]
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

    /// Which backend failed, for reports.
    pub fn backend(&self) -> &'static str {
        match self {
            DriverError::Postgres { .. } => "postgres",
            DriverError::Convex { .. } | DriverError::Proxy(_) => "convex",
            DriverError::Delivery { .. } => "sync",
        }
    }
}
