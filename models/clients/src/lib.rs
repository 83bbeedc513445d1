//! Models of the client lanes of the Khala cutover (spec §7.9, §9.1): the
//! build-time flags, watermark stores, the two apply rules, and one lane per
//! surface that reads through Khala (flag on) or the legacy poll (flag off).
//!
//! This crate knows nothing about the harness; it speaks to the sync server
//! only over WebSocket and HTTP.

pub mod apply;
pub mod error;
pub mod flags;
pub mod lane;
pub mod shipped;
mod socket;
pub mod switches;
pub mod watermark_store;

pub use apply::{ApplyRule, ClientCache, Update};
pub use error::{ClientError, ClientErrorKind};
pub use flags::Surface;
pub use lane::{
    ClientLane, ConvexReadPath, HydrationReadPath, LaneConfig, LaneEvent, LaneStats,
    LegacyReadPath, TokenSource,
};
pub use shipped::{ShippedConfig, ShippedLane};
pub use switches::ClientSwitches;
pub use watermark_store::{MemoryWatermarkStore, PersistedWatermarkStore, WatermarkStore};
