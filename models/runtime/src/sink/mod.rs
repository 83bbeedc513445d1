//! Projection sinks (spec §4): the contract and its implementations.

mod contract;
mod fanout;
mod khala;
mod noop;

pub use contract::{ProjectionSink, SinkContext, SinkError};
pub use fanout::FanoutSink;
pub use khala::{KhalaSink, PayloadMode};
pub use noop::NoopSink;
