//! Journal reads for delivery (spec §7.4 `Replay`), the stale-cursor rule
//! (spec §7.5) with the hardened fixes for B9 and B20, and the hardened B10
//! rule for a subscribe without a cursor: a snapshot of the topic's read
//! model at the retention floor, then the journal after the floor.

use crate::profile::Switches;
use crate::sync::topics;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

/// One `runtime.sync_stream_events` row as delivered.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct JournalEvent {
    pub topic: String,
    pub watermark: i64,
    pub doc_key: String,
    pub doc_version: i64,
    /// `None` in pointer mode: the client must hydrate from the read model.
    pub payload: Option<Value>,
    pub payload_hash: Option<Vec<u8>>,
}

/// One `fetch_batch` answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Rows with `watermark > cursor`, ascending, at most `n`.
    pub events: Vec<JournalEvent>,
    /// The last event's watermark, or the cursor when there is none.
    pub next: i64,
    /// The topic's highest watermark, or 0 when the journal has no row.
    pub head: i64,
}

impl Batch {
    /// `next >= head`: nothing is left to replay.
    pub fn replay_complete(&self) -> bool {
        self.next >= self.head
    }
}

/// A journal read failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} of topic `{topic}`: {source}")]
pub struct ReplayError {
    pub step: &'static str,
    pub topic: String,
    #[source]
    pub source: sqlx::Error,
}

fn failed(step: &'static str, topic: &str) -> impl FnOnce(sqlx::Error) -> ReplayError {
    let topic = topic.to_owned();
    move |source| ReplayError {
        step,
        topic,
        source,
    }
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    head: i64,
    watermark: Option<i64>,
    doc_key: Option<String>,
    doc_version: Option<i64>,
    payload: Option<Value>,
    payload_hash: Option<Vec<u8>>,
}

/// Up to `n` events of `topic` after `cursor`, with the head read in the same
/// statement (one snapshot, so `head` never lags the events returned).
pub async fn fetch_batch(
    executor: impl PgExecutor<'_>,
    topic: &str,
    cursor: i64,
    n: i64,
) -> Result<Batch, ReplayError> {
    let rows: Vec<BatchRow> = sqlx::query_as(
        "WITH head AS (SELECT COALESCE(MAX(watermark), 0)::bigint AS head \
                       FROM runtime.sync_stream_events WHERE topic = $1) \
         SELECT head.head, e.watermark, e.doc_key, e.doc_version, e.payload, e.payload_hash \
         FROM head LEFT JOIN LATERAL ( \
             SELECT watermark, doc_key, doc_version, payload, payload_hash \
             FROM runtime.sync_stream_events \
             WHERE topic = $1 AND watermark > $2 ORDER BY watermark ASC LIMIT $3) e ON true \
         ORDER BY e.watermark ASC",
    )
    .bind(topic)
    .bind(cursor)
    .bind(n)
    .fetch_all(executor)
    .await
    .map_err(failed("fetch a replay batch", topic))?;
    let head = rows.first().map_or(0, |row| row.head);
    let events: Vec<JournalEvent> = rows
        .into_iter()
        .filter_map(|row| {
            Some(JournalEvent {
                topic: topic.to_owned(),
                watermark: row.watermark?,
                doc_key: row.doc_key?,
                doc_version: row.doc_version?,
                payload: row.payload,
                payload_hash: row.payload_hash,
            })
        })
        .collect();
    let next = events.last().map_or(cursor, |event| event.watermark);
    Ok(Batch { events, next, head })
}

/// What the stale rule needs to know about a topic, read in one statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct TopicBounds {
    pub oldest: Option<i64>,
    /// `MAX(watermark)` or 0.
    pub head: i64,
    /// The highest watermark retention deleted (ours; see B9).
    pub pruned_through: Option<i64>,
}

pub async fn bounds(
    executor: impl PgExecutor<'_>,
    topic: &str,
) -> Result<TopicBounds, ReplayError> {
    sqlx::query_as(
        "SELECT MIN(e.watermark) AS oldest, COALESCE(MAX(e.watermark), 0)::bigint AS head, \
                (SELECT pruned_through FROM runtime.sync_retention_floors WHERE topic = $1) AS pruned_through \
         FROM runtime.sync_stream_events e WHERE e.topic = $1",
    )
    .bind(topic)
    .fetch_one(executor)
    .await
    .map_err(failed("read the retention bounds", topic))
}

/// Why a topic's cursor cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleReason {
    /// `cursor < retention_floor` (the original's only case).
    BelowFloor,
    /// Hardened B20: `cursor > head`.
    AheadOfHead,
    /// The replaced hardened B10 design: no cursor at all on a topic with
    /// a retention floor above 0 (`resume_after` is sent as null).
    NoCursorAfterPrune,
}

/// One entry of `stale_topics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleTopic {
    pub topic: String,
    /// The cursor checked.
    pub resume_after: i64,
    pub retention_floor: i64,
    pub reason: StaleReason,
    /// The head the cursor was compared with (hardened B20 only).
    pub head: Option<i64>,
}

/// The stale-cursor rule of spec §7.5 under a profile's switches. Pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleRule {
    /// B9 when true: the floor ignores `pruned_through`.
    pub full_prune_floor_zero: bool,
    /// B10 when true: only cursors the client sent are checked, and a topic
    /// without one replays whatever the journal retains. When false, the
    /// socket's own cursor is checked too, and a topic without any cursor
    /// starts with a snapshot of the read model (`snapshot_watermark`).
    pub only_with_cursor: bool,
    /// B20 when true: a cursor above head is accepted.
    pub cursor_ahead_allowed: bool,
}

impl StaleRule {
    pub fn from_switches(switches: &Switches) -> Self {
        StaleRule {
            full_prune_floor_zero: switches.b9_full_prune_floor_zero,
            only_with_cursor: switches.b10_stale_check_only_with_cursor,
            cursor_ahead_allowed: switches.b20_cursor_ahead_of_head,
        }
    }

    /// `max(oldest − 1, 0)` (0 with no row), and under the B9 fix also at
    /// least `pruned_through`.
    pub fn retention_floor(&self, bounds: &TopicBounds) -> i64 {
        let from_oldest = bounds.oldest.map_or(0, |oldest| (oldest - 1).max(0));
        if self.full_prune_floor_zero {
            from_oldest
        } else {
            from_oldest.max(bounds.pruned_through.unwrap_or(0))
        }
    }

    /// The highest watermark ever delivered on the topic as far as the rule
    /// can tell: the journal head, and under the B9 fix at least
    /// `pruned_through` (a fully pruned journal reads head 0).
    pub fn effective_head(&self, bounds: &TopicBounds) -> i64 {
        if self.full_prune_floor_zero {
            bounds.head
        } else {
            bounds.head.max(bounds.pruned_through.unwrap_or(0))
        }
    }

    /// Checks a cursor (the client's, or under the B10 fix the socket's).
    pub fn check(&self, topic: &str, cursor: i64, bounds: &TopicBounds) -> Option<StaleTopic> {
        let retention_floor = self.retention_floor(bounds);
        let stale = |reason, head| StaleTopic {
            topic: topic.to_owned(),
            resume_after: cursor,
            retention_floor,
            reason,
            head,
        };
        if cursor < retention_floor {
            return Some(stale(StaleReason::BelowFloor, None));
        }
        let head = self.effective_head(bounds);
        if !self.cursor_ahead_allowed && cursor > head {
            return Some(stale(StaleReason::AheadOfHead, Some(head)));
        }
        None
    }

    /// The replaced hardened B10 design (`refuse_no_cursor_after_prune`):
    /// a topic without any cursor is stale once its retention floor is
    /// above 0. `resume_after` is 0 here and sent as null.
    pub fn check_without_cursor(&self, topic: &str, bounds: &TopicBounds) -> Option<StaleTopic> {
        let retention_floor = self.retention_floor(bounds);
        (retention_floor > 0).then(|| StaleTopic {
            topic: topic.to_owned(),
            resume_after: 0,
            retention_floor,
            reason: StaleReason::NoCursorAfterPrune,
            head: None,
        })
    }

    /// Where a subscribe without any cursor starts. Legacy (B10): at 0, so
    /// only the retained journal is replayed and documents whose rows were
    /// pruned never arrive. Hardened: when the topic has a retention floor
    /// above 0, a snapshot of every read-model row is sent first, each
    /// update at the floor as its watermark, and the journal follows from
    /// the floor; `Some(floor)` says so. `None`: replay the journal from 0,
    /// which then holds every row ever written.
    pub fn snapshot_watermark(&self, bounds: &TopicBounds) -> Option<i64> {
        if self.only_with_cursor {
            return None;
        }
        let floor = self.retention_floor(bounds);
        (floor > 0).then_some(floor)
    }
}

/// A topic's read-model rows and journal bounds, read in one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicImage {
    pub bounds: TopicBounds,
    /// Every read-model row of the topic (none for a topic without one),
    /// ordered by `doc_key`, as updates with `watermark` 0 (the caller sets
    /// the watermark they are sent at).
    pub docs: Vec<JournalEvent>,
}

#[derive(sqlx::FromRow)]
struct ReadModelRow {
    doc_key: String,
    doc_version: i64,
    payload: Value,
    payload_hash: Option<Vec<u8>>,
}

/// Opens a read-only repeatable-read transaction: every read in it sees
/// one snapshot. Dropped without a commit (a cancelled read), the pool
/// rolls it back before the connection is used again.
pub async fn snapshot(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
}

/// Reads `topic`'s bounds and read-model rows in one repeatable-read
/// snapshot. Read-model rows and journal rows commit together, so the rows
/// reflect every journal row up to the bounds' head and none after it: a
/// client that takes the rows and then the journal after any watermark at
/// or below that head misses nothing.
pub async fn read_image(pool: &PgPool, topic: &str) -> Result<TopicImage, ReplayError> {
    let mut tx = snapshot(pool)
        .await
        .map_err(failed("begin a snapshot", topic))?;
    let bounds = self::bounds(&mut *tx, topic).await?;
    let rows: Vec<ReadModelRow> = match topics::projection_of_topic(topic) {
        Some(kind) => {
            // The table name comes from the fixed `ProjectionKind` set.
            let statement = format!(
                "SELECT doc_key, doc_version, payload, payload_hash FROM {} ORDER BY doc_key",
                kind.read_model_table()
            );
            sqlx::query_as(sqlx::AssertSqlSafe(statement))
                .fetch_all(&mut *tx)
                .await
                .map_err(failed("read the read model", topic))?
        }
        None => Vec::new(),
    };
    tx.commit().await.map_err(failed("end a snapshot", topic))?;
    let docs = rows
        .into_iter()
        .map(|row| JournalEvent {
            topic: topic.to_owned(),
            watermark: 0,
            doc_key: row.doc_key,
            doc_version: row.doc_version,
            payload: Some(row.payload),
            payload_hash: row.payload_hash,
        })
        .collect();
    Ok(TopicImage { bounds, docs })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: StaleRule = StaleRule {
        full_prune_floor_zero: true,
        only_with_cursor: true,
        cursor_ahead_allowed: true,
    };
    const HARDENED: StaleRule = StaleRule {
        full_prune_floor_zero: false,
        only_with_cursor: false,
        cursor_ahead_allowed: false,
    };

    fn bounds(oldest: Option<i64>, head: i64, pruned_through: Option<i64>) -> TopicBounds {
        TopicBounds {
            oldest,
            head,
            pruned_through,
        }
    }

    fn reason(rule: StaleRule, cursor: i64, bounds: TopicBounds) -> Option<StaleReason> {
        rule.check("t", cursor, &bounds).map(|stale| stale.reason)
    }

    #[test]
    fn the_floor_is_oldest_minus_one_and_the_boundary_is_accepted() {
        let retained = bounds(Some(2), 2, Some(1));
        for rule in [LEGACY, HARDENED] {
            assert_eq!(rule.retention_floor(&retained), 1);
            assert_eq!(reason(rule, 0, retained), Some(StaleReason::BelowFloor));
            assert_eq!(reason(rule, 1, retained), None);
            assert_eq!(reason(rule, 2, retained), None);
        }
        assert_eq!(LEGACY.retention_floor(&bounds(Some(1), 3, None)), 0);
        assert_eq!(LEGACY.retention_floor(&bounds(Some(0), 3, None)), 0);
    }

    #[test]
    fn b9_a_fully_pruned_topic_has_floor_zero_only_under_legacy() {
        let pruned = bounds(None, 0, Some(2));
        assert_eq!(LEGACY.retention_floor(&pruned), 0);
        assert_eq!(reason(LEGACY, 1, pruned), None);
        assert_eq!(HARDENED.retention_floor(&pruned), 2);
        assert_eq!(reason(HARDENED, 1, pruned), Some(StaleReason::BelowFloor));
        assert_eq!(reason(HARDENED, 2, pruned), None, "caught up, not ahead");
        // A hole above the oldest retained row.
        let hole = bounds(Some(1), 5, Some(4));
        assert_eq!(reason(LEGACY, 2, hole), None);
        assert_eq!(reason(HARDENED, 2, hole), Some(StaleReason::BelowFloor));
    }

    #[test]
    fn b10_no_cursor_starts_with_a_snapshot_at_the_floor_only_under_hardened() {
        let pruned = bounds(Some(3), 3, Some(2));
        assert_eq!(LEGACY.snapshot_watermark(&pruned), None);
        assert_eq!(HARDENED.snapshot_watermark(&pruned), Some(2));
        // A hole above the oldest row: the snapshot covers it.
        assert_eq!(
            HARDENED.snapshot_watermark(&bounds(Some(1), 5, Some(4))),
            Some(4)
        );
        // Fully pruned: the floor is the pruned-through watermark.
        assert_eq!(
            HARDENED.snapshot_watermark(&bounds(None, 0, Some(2))),
            Some(2)
        );
        // Nothing pruned: the journal from 0 holds every row.
        assert_eq!(HARDENED.snapshot_watermark(&bounds(Some(1), 3, None)), None);
        assert_eq!(HARDENED.snapshot_watermark(&bounds(None, 0, None)), None);
        // Resuming at the snapshot's watermark is never stale.
        assert_eq!(reason(HARDENED, 2, pruned), None);
    }

    #[test]
    fn b20_a_cursor_above_head_is_stale_only_under_hardened() {
        let restored = bounds(Some(1), 3, None);
        assert_eq!(reason(LEGACY, 5, restored), None);
        let stale = HARDENED.check("t", 5, &restored).expect("stale");
        assert_eq!(
            (stale.reason, stale.head),
            (StaleReason::AheadOfHead, Some(3))
        );
        assert_eq!(reason(HARDENED, 3, restored), None);
    }
}
