//! Projection sinks (spec §4): the contract and its implementations.

mod contract;
mod convex;
pub mod convex_value;
mod fanout;
mod khala;
mod noop;

pub use contract::{ProjectionSink, SinkContext, SinkError};
pub use convex::{
    ConvexHttp, ConvexHttpSink, ConvexQueryPaths, ConvexReadError, ConvexReader, ConvexSinkConfig,
    DEFAULT_TIMEOUT_MS, Endpoint, classify,
};
pub use fanout::FanoutSink;
pub use khala::{KhalaSink, PayloadMode};
pub use noop::NoopSink;
