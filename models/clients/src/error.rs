//! The errors of the client lanes: what step failed, on which surface.

use crate::flags::Surface;
use std::path::PathBuf;
use std::time::Duration;

/// A failed client step. Messages read after "failed to …".
#[derive(Debug, thiserror::Error)]
#[error("{step} ({surface}): {kind}")]
pub struct ClientError {
    pub surface: Surface,
    pub step: String,
    pub kind: ClientErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientErrorKind {
    #[error("no token: {0}")]
    Token(String),
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("http status {0}")]
    HttpStatus(u16),
    #[error("the server refused with {0}")]
    Refused(serde_json::Value),
    #[error("no frame within {0:?}")]
    TimedOut(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("not connected")]
    NotConnected,
    /// A subscribe without any cursor was answered `stale_cursor`: the
    /// client has nothing left to clear, so it cannot subscribe at all.
    #[error("a subscribe without cursor was refused as stale")]
    StrandedByStaleCursor,
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("watermark store: {0}")]
    Store(#[from] StoreError),
    #[error("legacy read path: {0}")]
    ReadPath(String),
    /// The lane could not apply a frame it received.
    #[error("apply a frame: {0}")]
    Apply(String),
}

/// A watermark store that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {reason}")]
pub struct StoreError {
    pub action: &'static str,
    pub path: PathBuf,
    pub reason: String,
}
