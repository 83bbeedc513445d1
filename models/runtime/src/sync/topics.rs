//! The three Khala topics (spec §7.1) and which read model, if any, holds the
//! documents of each.

use crate::summary::ProjectionKind;

/// Topics a client may subscribe to, in the order of their proto enum values.
pub const KNOWN_TOPICS: [&str; 3] = [
    "runtime.run_summaries",
    "runtime.codex_worker_summaries",
    "runtime.notifications",
];

pub fn is_known(topic: &str) -> bool {
    KNOWN_TOPICS.contains(&topic)
}

/// The projection whose read model backs `topic`. `runtime.notifications`
/// has none: nothing ever publishes on it (spec §15 B25).
pub fn projection_of_topic(topic: &str) -> Option<ProjectionKind> {
    ProjectionKind::ALL
        .into_iter()
        .find(|kind| kind.topic() == topic)
}

/// The projection a document key belongs to, from its prefix (spec §2.2).
pub fn projection_of_doc_key(doc_key: &str) -> Option<ProjectionKind> {
    ProjectionKind::ALL.into_iter().find(|kind| {
        doc_key
            .strip_prefix(kind.document_prefix())
            .is_some_and(|entity_id| !entity_id.is_empty())
    })
}

/// The session's allowed topics: token scopes ∩ known topics, deduplicated,
/// in token order (spec §7.2).
pub fn allowed_topics(scopes: &[String]) -> Vec<String> {
    let mut allowed: Vec<String> = Vec::new();
    for scope in scopes {
        if is_known(scope) && !allowed.contains(scope) {
            allowed.push(scope.clone());
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_topics_keep_token_order_and_drop_unknown_and_repeated_scopes() {
        let scopes = [
            "runtime.notifications",
            "admin",
            "runtime.run_summaries",
            "runtime.notifications",
        ]
        .map(String::from);
        assert_eq!(
            allowed_topics(&scopes),
            ["runtime.notifications", "runtime.run_summaries"]
        );
    }

    #[test]
    fn doc_keys_map_to_their_projection_by_prefix() {
        assert_eq!(
            projection_of_doc_key("runtime/run_summary:run_1"),
            Some(ProjectionKind::RunSummary)
        );
        assert_eq!(
            projection_of_doc_key("runtime/codex_worker_summary:w1"),
            Some(ProjectionKind::CodexWorkerSummary)
        );
        assert_eq!(projection_of_doc_key("runtime/run_summary:"), None);
        assert_eq!(projection_of_doc_key("other:1"), None);
        assert_eq!(projection_of_topic("runtime.notifications"), None);
    }
}
