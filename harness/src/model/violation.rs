//! The violation a check records: one divergence, with the class of reason,
//! the document and what each store held.

use crate::model::catalogue::Severity;
use crate::model::reason::ReasonClass;
use serde_json::Value;

/// One divergence between what the backends hold and what must hold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub severity: Severity,
    pub reason_class: ReasonClass,
    pub document_id: Option<String>,
    /// The index of the step after which it was seen.
    pub step_index: usize,
    pub detail: String,
    /// The oracle's document (without timestamps), where one applies.
    pub expected: Option<Value>,
    pub khala: Option<Value>,
    pub convex: Option<Value>,
    pub checkpoint: Option<Value>,
}
