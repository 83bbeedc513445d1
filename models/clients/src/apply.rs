//! The client apply rules of spec §7.9 and the web/mobile UI merge of §9.1,
//! as pure functions over plain data.

use serde_json::Value;
use std::collections::BTreeMap;

/// One normalised update of a `sync:update_batch`.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub topic: String,
    pub doc_key: String,
    pub doc_version: i64,
    pub watermark: i64,
    /// The document, when the update carries it as an object; `None` in
    /// pointer mode (`payload: null`, `hydration_required: true`).
    pub payload: Option<Value>,
    pub hydration_required: bool,
}

impl Update {
    /// The TS client's normalisation: a non-blank `topic` and `doc_key` and
    /// non-negative integer `doc_version` and `watermark`, or nothing.
    pub fn normalise(raw: &Value) -> Option<Update> {
        let text = |key: &str| {
            raw.get(key)
                .and_then(Value::as_str)
                .filter(|text| !text.trim().is_empty())
                .map(str::to_owned)
        };
        let count = |key: &str| raw.get(key).and_then(Value::as_i64).filter(|n| *n >= 0);
        let payload = raw.get("payload").filter(|payload| payload.is_object());
        Some(Update {
            topic: text("topic")?,
            doc_key: text("doc_key")?,
            doc_version: count("doc_version")?,
            watermark: count("watermark")?,
            payload: payload.cloned(),
            hydration_required: raw.get("hydration_required") == Some(&Value::Bool(true)),
        })
    }

    /// Pointer mode: the client must fetch the document over HTTP.
    pub fn needs_hydration(&self) -> bool {
        self.hydration_required || self.payload.is_none()
    }
}

/// The normalised updates of a batch payload; malformed ones are dropped.
pub fn normalise_batch(batch: &Value) -> Vec<Update> {
    batch
        .get("updates")
        .and_then(Value::as_array)
        .map(|updates| updates.iter().filter_map(Update::normalise).collect())
        .unwrap_or_default()
}

/// Which rule decides whether an update reaches the doc cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyRule {
    /// The Elixir-era TS client: skip only if the cached `doc_version` is
    /// greater (equal overwrites); the watermark advances even for skipped
    /// updates.
    DocumentVersion,
    /// The Rust-era contract: drop every frame with `seq <= last_applied_seq`
    /// of its topic, apply the rest.
    LastAppliedSeq,
}

/// What applying one update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The doc cache took the update.
    pub cached: bool,
    /// The topic's watermark moved to this value (persist it).
    pub watermark_advanced_to: Option<i64>,
}

/// A cached document.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedDoc {
    pub doc_version: i64,
    pub payload: Option<Value>,
}

/// The client's doc cache and per-topic watermarks.
#[derive(Clone, Debug)]
pub struct ClientCache {
    pub rule: ApplyRule,
    pub docs: BTreeMap<String, CachedDoc>,
    pub watermarks: BTreeMap<String, i64>,
}

impl ClientCache {
    pub fn new(rule: ApplyRule) -> Self {
        ClientCache {
            rule,
            docs: BTreeMap::new(),
            watermarks: BTreeMap::new(),
        }
    }

    pub fn watermark(&self, topic: &str) -> Option<i64> {
        self.watermarks.get(topic).copied()
    }

    /// Sets a topic's watermark as given (a stored cursor, a hydration
    /// snapshot), even downwards.
    pub fn reset_watermark(&mut self, topic: &str, watermark: Option<i64>) {
        match watermark {
            Some(watermark) => self.watermarks.insert(topic.to_owned(), watermark),
            None => self.watermarks.remove(topic),
        };
    }

    pub fn apply(&mut self, update: &Update) -> Applied {
        let current = self.watermark(&update.topic);
        let cached = match self.rule {
            ApplyRule::DocumentVersion => self
                .docs
                .get(&update.doc_key)
                .is_none_or(|doc| doc.doc_version <= update.doc_version),
            ApplyRule::LastAppliedSeq => current.is_none_or(|last| update.watermark > last),
        };
        if cached {
            self.docs.insert(
                update.doc_key.clone(),
                CachedDoc {
                    doc_version: update.doc_version,
                    payload: update.payload.clone(),
                },
            );
        }
        // Under both rules the per-topic watermark only increases.
        let watermark_advanced_to = if current.is_none_or(|current| update.watermark > current) {
            self.watermarks
                .insert(update.topic.clone(), update.watermark);
            Some(update.watermark)
        } else {
            None
        };
        Applied {
            cached,
            watermark_advanced_to,
        }
    }
}

impl ClientCache {
    /// Applies a snapshot batch (read-model rows the server sends, all at
    /// one watermark, for a subscribe without a cursor on a pruned topic)
    /// as a hydration: every row reaches the cache unless it already holds
    /// a higher version, whatever the apply rule (under `LastAppliedSeq`
    /// the rows after the first would otherwise be dropped as duplicates of
    /// their shared watermark), and the watermark rises to theirs. Returns
    /// the watermark of each topic that moved.
    pub fn apply_snapshot(&mut self, updates: &[Update]) -> Vec<(String, i64)> {
        let mut advanced: Vec<(String, i64)> = Vec::new();
        for update in updates {
            let newer = self
                .docs
                .get(&update.doc_key)
                .is_none_or(|doc| doc.doc_version <= update.doc_version);
            if newer {
                self.docs.insert(
                    update.doc_key.clone(),
                    CachedDoc {
                        doc_version: update.doc_version,
                        payload: update.payload.clone(),
                    },
                );
            }
            let current = self.watermark(&update.topic);
            if current.is_none_or(|current| update.watermark > current) {
                self.watermarks
                    .insert(update.topic.clone(), update.watermark);
                advanced.retain(|(topic, _)| *topic != update.topic);
                advanced.push((update.topic.clone(), update.watermark));
            }
        }
        advanced
    }
}

/// A row the UI shows.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewRow {
    pub doc_version: i64,
    pub payload: Value,
}

/// The web/mobile batch merge of §9.1: per document the highest
/// `doc_version` of the batch (ties: the later one), merged field by field
/// into the shown row, unknown documents appended. With
/// `compare_with_shown` (the B13 fix) a row already showing a higher
/// version is kept. Updates without a payload are left out: a batch with
/// any of them is a full reload instead.
pub fn merge_batch_into_view(
    view: &mut BTreeMap<String, ViewRow>,
    updates: &[Update],
    compare_with_shown: bool,
) {
    let mut newest: BTreeMap<&str, &Update> = BTreeMap::new();
    for update in updates.iter().filter(|update| update.payload.is_some()) {
        let keep = newest
            .get(update.doc_key.as_str())
            .is_none_or(|kept| update.doc_version >= kept.doc_version);
        if keep {
            newest.insert(&update.doc_key, update);
        }
    }
    for (doc_key, update) in newest {
        let Some(payload) = &update.payload else {
            continue;
        };
        match view.get_mut(doc_key) {
            Some(row) if compare_with_shown && row.doc_version > update.doc_version => {}
            Some(row) => {
                merge_fields(&mut row.payload, payload);
                row.doc_version = update.doc_version;
            }
            None => {
                view.insert(
                    doc_key.to_owned(),
                    ViewRow {
                        doc_version: update.doc_version,
                        payload: payload.clone(),
                    },
                );
            }
        }
    }
}

/// `{...shown, ...incoming}`: incoming top-level fields win.
fn merge_fields(shown: &mut Value, incoming: &Value) {
    match (shown, incoming) {
        (Value::Object(shown), Value::Object(incoming)) => {
            for (key, value) in incoming {
                shown.insert(key.clone(), value.clone());
            }
        }
        (shown, incoming) => *shown = incoming.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(doc_key: &str, doc_version: i64, watermark: i64) -> Update {
        Update {
            topic: "t".into(),
            doc_key: doc_key.into(),
            doc_version,
            watermark,
            payload: Some(json!({"v": doc_version})),
            hydration_required: false,
        }
    }

    #[test]
    fn a_snapshot_fills_the_cache_under_either_rule_without_regressing_a_document() {
        for rule in [ApplyRule::DocumentVersion, ApplyRule::LastAppliedSeq] {
            let mut cache = ClientCache::new(rule);
            cache.apply(&update("newer", 7, 1));
            let snapshot = [update("a", 2, 4), update("b", 3, 4), update("newer", 5, 4)];
            assert_eq!(cache.apply_snapshot(&snapshot), vec![("t".to_owned(), 4)]);
            assert_eq!(cache.docs["a"].doc_version, 2, "{rule:?}");
            assert_eq!(cache.docs["b"].doc_version, 3, "{rule:?}");
            assert_eq!(cache.docs["newer"].doc_version, 7, "{rule:?}");
            assert_eq!(cache.watermark("t"), Some(4));
            assert_eq!(cache.apply_snapshot(&snapshot), vec![], "nothing moved");
        }
    }

    #[test]
    fn document_version_rule_keeps_v9_and_advances_the_watermark_to_10() {
        let mut cache = ClientCache::new(ApplyRule::DocumentVersion);
        assert_eq!(
            cache.apply(&update("d", 9, 9)),
            Applied {
                cached: true,
                watermark_advanced_to: Some(9)
            }
        );
        assert_eq!(
            cache.apply(&update("d", 8, 10)),
            Applied {
                cached: false,
                watermark_advanced_to: Some(10)
            }
        );
        assert_eq!(cache.docs["d"].doc_version, 9);
        assert_eq!(cache.watermark("t"), Some(10));
    }

    #[test]
    fn document_version_rule_overwrites_on_equal_versions() {
        let mut cache = ClientCache::new(ApplyRule::DocumentVersion);
        cache.apply(&update("d", 3, 1));
        let mut again = update("d", 3, 2);
        again.payload = Some(json!({"v": "again"}));
        assert!(cache.apply(&again).cached);
        assert_eq!(cache.docs["d"].payload, Some(json!({"v": "again"})));
    }

    #[test]
    fn a_lower_watermark_never_moves_the_topic_back() {
        let mut cache = ClientCache::new(ApplyRule::DocumentVersion);
        cache.apply(&update("a", 1, 5));
        let applied = cache.apply(&update("b", 1, 4));
        assert_eq!(applied.watermark_advanced_to, None);
        assert!(applied.cached, "the doc rule looks at versions only");
        assert_eq!(cache.watermark("t"), Some(5));
    }

    #[test]
    fn last_applied_seq_rule_drops_duplicates_and_old_frames() {
        let mut cache = ClientCache::new(ApplyRule::LastAppliedSeq);
        assert!(cache.apply(&update("a", 1, 1)).cached);
        assert!(cache.apply(&update("a", 2, 2)).cached);
        assert!(!cache.apply(&update("a", 2, 2)).cached, "duplicate");
        assert!(!cache.apply(&update("b", 7, 1)).cached, "older frame");
        assert!(cache.apply(&update("a", 1, 3)).cached, "seq, not version");
        assert_eq!(cache.docs["a"].doc_version, 1);
        assert_eq!(cache.watermark("t"), Some(3));
    }

    #[test]
    fn malformed_updates_are_dropped() {
        let good = json!({"topic": "t", "doc_key": "d", "doc_version": 1, "watermark": 2,
                          "payload": {"x": 1}, "hydration_required": false});
        assert!(Update::normalise(&good).is_some());
        let broken = |key: &str, value: Value| {
            let mut raw = good.clone();
            raw[key] = value;
            raw
        };
        for raw in [
            broken("topic", json!("  ")),
            broken("topic", json!(3)),
            broken("doc_key", json!("")),
            broken("doc_key", Value::Null),
            broken("doc_version", json!(-1)),
            broken("doc_version", json!(1.5)),
            broken("doc_version", json!("1")),
            broken("watermark", json!(-3)),
            broken("watermark", Value::Null),
            json!("not an object"),
            json!(null),
        ] {
            assert_eq!(Update::normalise(&raw), None, "{raw}");
        }
        let batch = json!({"updates": [good, {"topic": "t"}, 7]});
        assert_eq!(normalise_batch(&batch).len(), 1);
        assert!(normalise_batch(&json!({"updates": "x"})).is_empty());
        assert!(normalise_batch(&json!(null)).is_empty());
    }

    #[test]
    fn pointer_updates_need_hydration() {
        let raw = json!({"topic": "t", "doc_key": "d", "doc_version": 1, "watermark": 2,
                         "payload": null, "hydration_required": true});
        assert!(
            Update::normalise(&raw)
                .expect("normalised")
                .needs_hydration()
        );
    }

    #[test]
    fn the_batch_merge_keeps_the_highest_version_and_the_later_tie() {
        let mut view = BTreeMap::new();
        let mut tie = update("a", 2, 3);
        tie.payload = Some(json!({"v": "later"}));
        merge_batch_into_view(
            &mut view,
            &[update("a", 2, 1), update("a", 1, 2), tie],
            true,
        );
        assert_eq!(view["a"].payload, json!({"v": "later"}));
        assert_eq!(view["a"].doc_version, 2);
    }

    #[test]
    fn an_older_update_overwrites_the_shown_row_only_without_the_comparison() {
        for (compare, expected) in [(false, 8), (true, 9)] {
            let mut view = BTreeMap::new();
            merge_batch_into_view(&mut view, &[update("a", 9, 1)], compare);
            merge_batch_into_view(&mut view, &[update("a", 8, 2)], compare);
            assert_eq!(view["a"].doc_version, expected, "compare {compare}");
            assert_eq!(view["a"].payload, json!({"v": expected}));
        }
    }
}
