//! The CLI's one error type and its one mapping to exit codes.

use khala_parity::exit;
use khala_parity::report::Decision;

/// Why a command could not finish: the user's input (exit 64) or anything
/// else, a backend or the machine (exit 2, `unknown`: never a pass).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl CliError {
    /// An input problem, from anything that can say what was wrong.
    pub fn input(error: impl std::fmt::Display) -> Self {
        Self::InvalidInput(error.to_string())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::InvalidInput(_) => exit::INVALID_INPUT,
            Self::Failed(_) => exit::UNKNOWN,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        Self::Failed(error.into())
    }
}

impl From<khala_parity::report::artifacts::WriteError> for CliError {
    fn from(error: khala_parity::report::artifacts::WriteError) -> Self {
        Self::Failed(error.into())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(error: serde_json::Error) -> Self {
        Self::Failed(error.into())
    }
}

/// What a command returns: its exit code, or why it could not finish.
pub type CliResult = Result<u8, CliError>;

/// The exit code of a gate decision.
pub fn decision_code(decision: Decision) -> u8 {
    match decision {
        Decision::Allow => exit::ALLOW,
        Decision::Block => exit::BLOCK,
        Decision::Unknown => exit::UNKNOWN,
    }
}
