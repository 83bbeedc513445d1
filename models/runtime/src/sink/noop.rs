//! The default sink (spec §4.2): always succeeds, stores nothing, so
//! checkpoints advance while nothing is stored anywhere (B3).

use super::{ProjectionSink, SinkContext, SinkError};
use crate::summary::ProjectionKind;
use serde_json::Value;

#[derive(Debug, Default, Clone, Copy)]
pub struct NoopSink;

#[async_trait::async_trait]
impl ProjectionSink for NoopSink {
    fn name(&self) -> &str {
        "noop"
    }

    fn is_transactional(&self) -> bool {
        // It has no effects at all, so ordering never matters.
        true
    }

    async fn upsert(
        &self,
        _: SinkContext<'_>,
        _: ProjectionKind,
        _: &str,
        _: &Value,
    ) -> Result<(), SinkError> {
        Ok(())
    }
}
