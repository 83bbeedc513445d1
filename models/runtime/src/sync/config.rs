//! The sync server's configuration with the original's defaults (spec §12,
//! §7.2 for authentication).

use crate::planted::PlantedDefects;
use crate::profile::{Profile, Switches};
use crate::sync::jwt::AuthConfig;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub const DEFAULT_REPLAY_BATCH_SIZE: i64 = 200;
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 15_000;
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 60_000;
/// Phoenix's websocket `timeout` option (its default, which the original
/// kept): Bandit closes a socket that carried no frame for this long.
pub const DEFAULT_SOCKET_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_RETENTION_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_RETENTION_HORIZON_SECONDS: i64 = 86_400;
pub const DEFAULT_RETENTION_BATCH_SIZE: i64 = 5_000;
/// Ours, not the original's (Phoenix had no limit of its own below the
/// transport's): a text frame above this is answered with a protocol error.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Everything the server needs besides its pool, notifier and clock.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Where to listen; `127.0.0.1:0` (any free port) by default.
    pub listen: SocketAddr,
    /// The delivery defects (B9, B10, B12, B20, B21) the channel reproduces.
    pub switches: Switches,
    /// The first hardened design for B10, kept only so that a test can show
    /// why it was replaced: with the B10 fix on, a topic without any cursor
    /// whose retention floor is above 0 is refused with `stale_cursor`
    /// (`resume_after: null`) instead of answered with a snapshot, to be
    /// recovered through the HTTP snapshot endpoint. The shipped client has
    /// no such path: it clears its cursor, asks again without one, is
    /// refused again, and reconnects forever. Off by default and in both
    /// profiles: it is neither the original nor the fix.
    pub refuse_no_cursor_after_prune: bool,
    /// `khala_sync_replay_batch_size`; also the live-path batch size.
    pub replay_batch_size: i64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// The socket idle timeout (facts §3): measured from the last frame
    /// either way, so the channel's heartbeat pushes keep a socket open
    /// while the channel lives. Both profiles: it is the original's
    /// transport, not a defect.
    pub socket_idle_timeout_ms: u64,
    pub retention_interval_ms: u64,
    pub retention_horizon_seconds: i64,
    pub retention_batch_size: i64,
    pub max_frame_bytes: usize,
    pub auth: AuthConfig,
    /// Run the heartbeat tick and the retention job on their intervals with
    /// the server's clock. Off in tests, which drive both explicitly.
    pub background_loops: bool,
    /// Bridge commits made by other processes into wake-ups by polling
    /// `sync_topic_sequences` at this interval (the in-process notifier only
    /// sees this process's projections). `None` (the default) polls nothing.
    pub wake_poll_interval_ms: Option<u64>,
    /// Retention defects a test plants (`PlantedDefects`); none otherwise.
    pub planted: PlantedDefects,
}

impl SyncConfig {
    /// The original's defaults under `profile`.
    pub fn new(profile: Profile) -> Self {
        SyncConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            switches: profile.switches(),
            refuse_no_cursor_after_prune: false,
            replay_batch_size: DEFAULT_REPLAY_BATCH_SIZE,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            heartbeat_timeout_ms: DEFAULT_HEARTBEAT_TIMEOUT_MS,
            socket_idle_timeout_ms: DEFAULT_SOCKET_IDLE_TIMEOUT_MS,
            retention_interval_ms: DEFAULT_RETENTION_INTERVAL_MS,
            retention_horizon_seconds: DEFAULT_RETENTION_HORIZON_SECONDS,
            retention_batch_size: DEFAULT_RETENTION_BATCH_SIZE,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            auth: AuthConfig::base(),
            background_loops: false,
            wake_poll_interval_ms: None,
            planted: PlantedDefects::default(),
        }
    }

    /// The replay batch size in use. A non-positive value would make the
    /// original loop forever on a lagging topic; here it falls back to the
    /// default.
    pub fn effective_replay_batch_size(&self) -> i64 {
        positive_or(self.replay_batch_size, DEFAULT_REPLAY_BATCH_SIZE)
    }

    /// Non-positive heartbeat settings fall back to the defaults (spec §7.7).
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(nonzero_or(
            self.heartbeat_interval_ms,
            DEFAULT_HEARTBEAT_INTERVAL_MS,
        ))
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(nonzero_or(
            self.heartbeat_timeout_ms,
            DEFAULT_HEARTBEAT_TIMEOUT_MS,
        ))
    }

    /// The socket idle timeout; zero falls back to the default (a zero
    /// timeout would close every socket at once).
    pub fn socket_idle_timeout(&self) -> Duration {
        Duration::from_millis(nonzero_or(
            self.socket_idle_timeout_ms,
            DEFAULT_SOCKET_IDLE_TIMEOUT_MS,
        ))
    }

    /// The retention interval; the original validated none of the retention
    /// values, but a zero interval cannot drive a timer.
    pub fn retention_interval(&self) -> Duration {
        Duration::from_millis(nonzero_or(
            self.retention_interval_ms,
            DEFAULT_RETENTION_INTERVAL_MS,
        ))
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig::new(Profile::Legacy)
    }
}

fn positive_or(value: i64, default: i64) -> i64 {
    if value > 0 { value } else { default }
}

fn nonzero_or(value: u64, default: u64) -> u64 {
    if value > 0 { value } else { default }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals_and_non_positive_values_fall_back() {
        let mut config = SyncConfig::new(Profile::Hardened);
        assert_eq!(config.listen.to_string(), "127.0.0.1:0");
        assert_eq!(config.effective_replay_batch_size(), 200);
        assert_eq!(config.heartbeat_interval(), Duration::from_secs(15));
        assert_eq!(config.heartbeat_timeout(), Duration::from_secs(60));
        assert_eq!(config.socket_idle_timeout(), Duration::from_secs(60));
        assert_eq!(config.retention_interval(), Duration::from_secs(60));
        assert_eq!(
            (
                config.retention_horizon_seconds,
                config.retention_batch_size
            ),
            (86_400, 5_000)
        );
        config.replay_batch_size = 0;
        config.heartbeat_interval_ms = 0;
        config.heartbeat_timeout_ms = 0;
        config.socket_idle_timeout_ms = 0;
        assert_eq!(config.socket_idle_timeout(), Duration::from_secs(60));
        assert_eq!(config.effective_replay_batch_size(), 200);
        assert_eq!(config.heartbeat_interval(), Duration::from_secs(15));
        assert_eq!(config.heartbeat_timeout(), Duration::from_secs(60));
    }
}
