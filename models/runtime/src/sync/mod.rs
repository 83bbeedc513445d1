//! The Khala sync server (spec §7): socket authentication, the `sync:v1`
//! channel protocol, journal replay, the stale-cursor rule, retention,
//! heartbeats, the socket idle timeout, telemetry and the HTTP hydration
//! endpoints the clients fall back to.

pub mod channel;
pub mod config;
pub mod hydration;
pub mod jwt;
pub mod protocol;
pub mod replay;
pub mod retention;
pub mod server;
pub mod telemetry;
pub mod topics;
pub mod wake_poller;

pub use config::SyncConfig;
pub use server::{HeartbeatTick, SyncServer, SyncServerError, SyncServerHandle};
