//! Playing cases on real backends: the only layer that does I/O. Backend
//! providers, the driver and its delivery part, the fault proxy, the
//! engine that draws, plays and shrinks cases, signals, benchmarks.

pub mod audit;
pub mod backend;
pub mod bench;
pub mod bench_sync;
pub mod delivery;
pub mod driver;
pub mod engine;
pub mod error;
pub mod interrupt;
pub mod proxied_sink;
pub mod proxy;
