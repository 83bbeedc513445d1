//! The channel's telemetry events of spec §7.8, as data. Each event is
//! logged through `tracing` (target = the event name, so §13's caveat of
//! metrics listening to never-emitted events cannot arise) and counted by
//! `(event, status, reason_class)`, so that tests read what the server
//! emitted instead of scraping logs.

use std::collections::BTreeMap;
use std::sync::Mutex;

pub const SOCKET_CONNECTION: &str = "openagents_runtime.sync.socket.connection";
pub const SOCKET_HEARTBEAT: &str = "openagents_runtime.sync.socket.heartbeat";
pub const SOCKET_RECONNECT: &str = "openagents_runtime.sync.socket.reconnect";
pub const SOCKET_TIMEOUT: &str = "openagents_runtime.sync.socket.timeout";
pub const REPLAY_LAG: &str = "openagents_runtime.sync.replay.lag";
pub const REPLAY_CATCHUP: &str = "openagents_runtime.sync.replay.catchup";

/// Why a channel ended: the disconnect event's `reason_class`. The spec
/// names the key, not its values; these are ours, one per way a Phoenix
/// channel process terminates here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DisconnectReason {
    /// No client message within the heartbeat timeout (`{:stop, :normal}`).
    HeartbeatTimeout,
    /// The client sent `phx_leave` (`{:shutdown, :left}`).
    Left,
    /// A second join of the topic replaced the channel.
    DuplicateJoin,
    /// The socket went away under the channel (client close, idle close,
    /// server shutdown).
    SocketClosed,
    /// An event without a handler crashed the channel (`phx_error`).
    Crashed,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
            DisconnectReason::Left => "left",
            DisconnectReason::DuplicateJoin => "duplicate_join",
            DisconnectReason::SocketClosed => "socket_closed",
            DisconnectReason::Crashed => "crashed",
        }
    }

    /// The disconnect event's `status`: `error` for a crash, else `normal`.
    pub fn status(self) -> &'static str {
        match self {
            DisconnectReason::Crashed => "error",
            _ => "normal",
        }
    }
}

/// One telemetry event of §7.8, with the metadata that tells its kinds
/// apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    Connect {
        active_connections: usize,
    },
    Disconnect {
        reason: DisconnectReason,
        duration_ms: i64,
        active_connections: usize,
    },
    ClientHeartbeat,
    ServerHeartbeat,
    Reconnect,
    Timeout,
    ReplayLag {
        lag_events: i64,
        caught_up: bool,
    },
    CatchupOk {
        duration_ms: u64,
    },
    CatchupStale {
        duration_ms: u64,
    },
}

/// What a count is kept by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TelemetryKey {
    pub event: &'static str,
    pub status: &'static str,
    pub reason_class: Option<&'static str>,
}

impl SyncEvent {
    pub fn key(&self) -> TelemetryKey {
        let key = |event, status| TelemetryKey {
            event,
            status,
            reason_class: None,
        };
        match self {
            SyncEvent::Connect { .. } => key(SOCKET_CONNECTION, "ok"),
            SyncEvent::Disconnect { reason, .. } => TelemetryKey {
                event: SOCKET_CONNECTION,
                status: reason.status(),
                reason_class: Some(reason.as_str()),
            },
            SyncEvent::ClientHeartbeat => key(SOCKET_HEARTBEAT, "client"),
            SyncEvent::ServerHeartbeat => key(SOCKET_HEARTBEAT, "server"),
            SyncEvent::Reconnect => key(SOCKET_RECONNECT, "ok"),
            SyncEvent::Timeout => key(SOCKET_TIMEOUT, "timeout"),
            SyncEvent::ReplayLag { caught_up, .. } => {
                key(REPLAY_LAG, if *caught_up { "caught_up" } else { "lagging" })
            }
            SyncEvent::CatchupOk { .. } => key(REPLAY_CATCHUP, "ok"),
            SyncEvent::CatchupStale { .. } => key(REPLAY_CATCHUP, "stale_cursor"),
        }
    }

    /// Logs the event with its measurements and metadata.
    fn log(&self) {
        match *self {
            SyncEvent::Connect { active_connections } => tracing::debug!(
                target: "openagents_runtime.sync.socket.connection",
                component = "sync_channel", action = "connect", status = "ok",
                active_connections, "channel joined"
            ),
            SyncEvent::Disconnect {
                reason,
                duration_ms,
                active_connections,
            } => tracing::debug!(
                target: "openagents_runtime.sync.socket.connection",
                component = "sync_channel", action = "disconnect", status = reason.status(),
                reason_class = reason.as_str(), duration_ms, active_connections,
                "channel ended"
            ),
            SyncEvent::ClientHeartbeat => {
                tracing::trace!(target: "openagents_runtime.sync.socket.heartbeat", status = "client")
            }
            SyncEvent::ServerHeartbeat => {
                tracing::trace!(target: "openagents_runtime.sync.socket.heartbeat", status = "server")
            }
            SyncEvent::Reconnect => {
                tracing::debug!(target: "openagents_runtime.sync.socket.reconnect", status = "ok", "resume")
            }
            SyncEvent::Timeout => tracing::info!(
                target: "openagents_runtime.sync.socket.timeout",
                status = "timeout", "channel timed out"
            ),
            SyncEvent::ReplayLag {
                lag_events,
                caught_up,
            } => tracing::trace!(
                target: "openagents_runtime.sync.replay.lag",
                lag_events, status = if caught_up { "caught_up" } else { "lagging" }
            ),
            SyncEvent::CatchupOk { duration_ms } => tracing::debug!(
                target: "openagents_runtime.sync.replay.catchup",
                status = "ok", duration_ms, "caught up"
            ),
            SyncEvent::CatchupStale { duration_ms } => tracing::info!(
                target: "openagents_runtime.sync.replay.catchup",
                status = "stale_cursor", duration_ms, "stale cursor"
            ),
        }
    }
}

/// The counts of every event a server emitted.
#[derive(Debug, Default)]
pub struct SyncTelemetry {
    counts: Mutex<BTreeMap<TelemetryKey, u64>>,
}

impl SyncTelemetry {
    pub fn emit(&self, event: SyncEvent) {
        event.log();
        *self
            .counts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(event.key())
            .or_default() += 1;
    }

    /// Every count so far.
    pub fn snapshot(&self) -> BTreeMap<TelemetryKey, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Events named `event` with `status`, over every reason class.
    pub fn count(&self, event: &str, status: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|(key, _)| key.event == event && key.status == status)
            .map(|(_, count)| count)
            .sum()
    }

    /// Disconnect events of `reason`.
    pub fn disconnects(&self, reason: DisconnectReason) -> u64 {
        self.snapshot()
            .get(
                &SyncEvent::Disconnect {
                    reason,
                    duration_ms: 0,
                    active_connections: 0,
                }
                .key(),
            )
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_by_name_status_and_reason() {
        let telemetry = SyncTelemetry::default();
        telemetry.emit(SyncEvent::CatchupOk { duration_ms: 3 });
        telemetry.emit(SyncEvent::CatchupOk { duration_ms: 5 });
        telemetry.emit(SyncEvent::CatchupStale { duration_ms: 1 });
        for reason in [DisconnectReason::Left, DisconnectReason::Crashed] {
            telemetry.emit(SyncEvent::Disconnect {
                reason,
                duration_ms: 10,
                active_connections: 0,
            });
        }
        assert_eq!(telemetry.count(REPLAY_CATCHUP, "ok"), 2);
        assert_eq!(telemetry.count(REPLAY_CATCHUP, "stale_cursor"), 1);
        assert_eq!(telemetry.count(SOCKET_CONNECTION, "normal"), 1);
        assert_eq!(telemetry.count(SOCKET_CONNECTION, "error"), 1);
        assert_eq!(telemetry.disconnects(DisconnectReason::Crashed), 1);
        assert_eq!(telemetry.disconnects(DisconnectReason::HeartbeatTimeout), 0);
    }
}
