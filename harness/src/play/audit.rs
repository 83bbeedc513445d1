//! Reading a live deployment for `khala-parity audit`, and nothing else:
//! PostgreSQL on one connection opened with `default_transaction_read_only`
//! and every cycle inside `BEGIN READ ONLY` (one snapshot), Convex through
//! `/api/query` only (the reader's query functions). A store that cannot
//! be read as expected (unreachable, wrong credentials, a missing table,
//! column or function) is an `AuditError` naming the store and what was
//! expected: the audit's answer is then `unknown`, never a pass. A row or
//! document that reads but does not parse is not an error: it is kept in
//! the cycle's read for the checks to report.

use crate::model::audit::{
    AuditTarget, AuditedStore, CycleRead, JournalRow, KhalaRow, Sampling, TopicJournal, Unparseable,
};
use khala_runtime::ProjectionKind;
use khala_runtime::auditor::{SweepPart, sweep_statement};
use khala_runtime::checkpoint::Checkpoint;
use khala_runtime::sink::{ConvexReader, SinkError};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Why an audit could not read a store: its result is `unknown`.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("postgres: the URL does not parse: {reason}")]
    PostgresUrl { reason: String },
    #[error("postgres at {url}: cannot connect (expected a PostgreSQL server): {reason}")]
    PostgresUnreachable { url: String, reason: String },
    #[error("postgres at {url}: the server refused the credentials: {reason}")]
    PostgresCredentials { url: String, reason: String },
    #[error("postgres: table `{table}` does not exist (expected it with the columns {expected})")]
    TableMissing { table: String, expected: String },
    #[error("postgres: table `{table}` lacks the column(s) {missing} (expected {expected})")]
    ColumnsMissing {
        table: String,
        missing: String,
        expected: String,
    },
    #[error("postgres: {step}: {reason}")]
    PostgresQuery { step: &'static str, reason: String },
    #[error("convex at {url}: cannot reach the HTTP API (expected POST /api/query): {reason}")]
    ConvexUnreachable { url: String, reason: String },
    #[error("convex at {url}: the deployment refused the admin key: {reason}")]
    ConvexCredentials { url: String, reason: String },
    #[error(
        "convex at {url}: query function `{path}` is missing or fails (expected a query taking {{document_id}}): {reason}"
    )]
    ConvexFunction {
        url: String,
        path: String,
        reason: String,
    },
}

impl AuditError {
    /// The store that could not be read.
    pub fn store(&self) -> AuditedStore {
        match self {
            AuditError::ConvexUnreachable { .. }
            | AuditError::ConvexCredentials { .. }
            | AuditError::ConvexFunction { .. } => AuditedStore::Convex,
            _ => AuditedStore::Postgres,
        }
    }
}

/// At most `per_second` requests to one store, spaced evenly: each request
/// waits until its slot. A bucket of one token, so no burst goes above it.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    next: Option<Instant>,
    /// Requests that passed, for tests and the audit rate.
    pub requests: u64,
}

impl RateLimit {
    /// `None` when `per_second` is not a positive finite number.
    pub fn new(per_second: f64) -> Option<Self> {
        (per_second.is_finite() && per_second > 0.0).then(|| RateLimit {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: None,
            requests: 0,
        })
    }

    /// How long the request arriving at `now` must wait, and books its
    /// slot. Pure in `now`, so tests give the instants.
    pub fn delay_at(&mut self, now: Instant) -> Duration {
        self.requests += 1;
        let slot = match self.next {
            Some(next) if next > now => next,
            _ => now,
        };
        self.next = Some(slot + self.interval);
        slot - now
    }

    async fn acquire(&mut self) {
        let delay = self.delay_at(Instant::now());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

async fn pace(limit: &mut Option<RateLimit>) {
    if let Some(limit) = limit {
        limit.acquire().await;
    }
}

/// Where an audit connects.
#[derive(Clone, Debug)]
pub struct AuditConnect {
    pub postgres_url: String,
    pub convex_url: String,
    pub convex_admin_key: String,
    /// Requests per second per store; `None` is unbounded.
    pub max_rps: Option<f64>,
}

/// An open audit: the read-only connection, the Convex reader, the sweep
/// cursor, and each store's rate limit.
pub struct AuditSession {
    connection: PgConnection,
    reader: ConvexReader,
    convex_url: String,
    target: AuditTarget,
    cursor: Option<(String, String)>,
    cycles: usize,
    postgres_limit: Option<RateLimit>,
    convex_limit: Option<RateLimit>,
}

fn redacted(url: &str) -> String {
    crate::play::backend::postgres::redact_url(url)
}

fn query_error(step: &'static str) -> impl FnOnce(sqlx::Error) -> AuditError {
    move |error| AuditError::PostgresQuery {
        step,
        reason: error.to_string(),
    }
}

/// Connects to PostgreSQL read-only and checks every table the audit reads
/// has its columns, then checks every Convex query function answers.
pub async fn open(connect: &AuditConnect, target: AuditTarget) -> Result<AuditSession, AuditError> {
    let url = redacted(&connect.postgres_url);
    let options = PgConnectOptions::from_str(&connect.postgres_url)
        .map_err(|error| AuditError::PostgresUrl {
            reason: error.to_string(),
        })?
        .options([("default_transaction_read_only", "on")])
        .application_name("khala-parity-audit");
    let connection = PgConnection::connect_with(&options)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|code| code == "28P01" || code == "28000") =>
            {
                AuditError::PostgresCredentials {
                    url: url.clone(),
                    reason: error.to_string(),
                }
            }
            _ => AuditError::PostgresUnreachable {
                url: url.clone(),
                reason: error.to_string(),
            },
        })?;
    let reader = ConvexReader::new(&connect.convex_url, &connect.convex_admin_key, 10_000)
        .with_paths(target.paths.clone());
    let limit = |rps: Option<f64>| rps.and_then(RateLimit::new);
    let mut session = AuditSession {
        connection,
        reader,
        convex_url: connect.convex_url.trim_end_matches('/').to_owned(),
        target,
        cursor: None,
        cycles: 0,
        postgres_limit: limit(connect.max_rps),
        convex_limit: limit(connect.max_rps),
    };
    session.check_schema().await?;
    session.check_functions().await?;
    Ok(session)
}

/// Answers of the probe a missing-function check sends: no document has it.
const PROBE_DOCUMENT_ID: &str = "khala-parity-audit:probe";

impl AuditSession {
    pub fn target(&self) -> &AuditTarget {
        &self.target
    }

    async fn check_schema(&mut self) -> Result<(), AuditError> {
        for (table, expected) in self.target.tables.expected_columns() {
            pace(&mut self.postgres_limit).await;
            let columns: Option<Vec<String>> = sqlx::query_scalar(
                "SELECT array_agg(attname::text) FROM pg_attribute \
                 WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            )
            .bind(table)
            .fetch_one(&mut self.connection)
            .await
            .map_err(query_error("read the columns of the audited tables"))?;
            let expected_text = expected.join(", ");
            let Some(columns) = columns else {
                return Err(AuditError::TableMissing {
                    table: table.to_owned(),
                    expected: expected_text,
                });
            };
            let missing: Vec<&str> = expected
                .iter()
                .filter(|column| !columns.iter().any(|have| have == *column))
                .copied()
                .collect();
            if !missing.is_empty() {
                return Err(AuditError::ColumnsMissing {
                    table: table.to_owned(),
                    missing: missing.join(", "),
                    expected: expected_text,
                });
            }
        }
        Ok(())
    }

    fn convex_error(&self, path: &str, error: SinkError) -> AuditError {
        let url = self.convex_url.clone();
        match error {
            SinkError::HttpRequestFailed { reason } => {
                AuditError::ConvexUnreachable { url, reason }
            }
            SinkError::MissingBaseUrl => AuditError::ConvexUnreachable {
                url,
                reason: "no URL given".to_owned(),
            },
            SinkError::HttpStatus { status, body } if status == 401 || status == 403 => {
                AuditError::ConvexCredentials {
                    url,
                    reason: format!("HTTP {status}: {body}"),
                }
            }
            SinkError::HttpStatus { status: 404, body } => AuditError::ConvexUnreachable {
                url,
                reason: format!("HTTP 404, not a Convex HTTP API: {body}"),
            },
            other => AuditError::ConvexFunction {
                url,
                path: path.to_owned(),
                reason: other.to_string(),
            },
        }
    }

    async fn check_functions(&mut self) -> Result<(), AuditError> {
        for kind in ProjectionKind::ALL {
            pace(&mut self.convex_limit).await;
            let path = self.reader.paths().get(kind).to_owned();
            match self.reader.get(kind, PROBE_DOCUMENT_ID).await {
                Ok(_) => {}
                // A document that does not parse still shows the function runs.
                Err(error) if matches!(error.source, SinkError::InvalidResponse { .. }) => {}
                Err(error) => return Err(self.convex_error(&path, error.source)),
            }
        }
        Ok(())
    }

    /// One cycle: the sampled checkpoints, their read-model rows and
    /// journal rows, every topic's journal bounds and sequence, in one
    /// read-only snapshot; then each sampled document from Convex.
    pub async fn read_cycle(&mut self) -> Result<CycleRead, AuditError> {
        self.cycles += 1;
        let postgres_started = Instant::now();
        let mut read = CycleRead {
            cycle: self.cycles,
            ..CycleRead::default()
        };
        pace(&mut self.postgres_limit).await;
        let mut transaction = self
            .connection
            .begin_with("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(query_error("begin a read-only transaction"))?;
        let tables = self.target.tables.clone();
        let names: Vec<String> = ProjectionKind::ALL
            .iter()
            .map(|kind| kind.name().to_owned())
            .collect();
        let (limit, sweeping) = match self.target.sampling {
            Sampling::Sweep { size } => (i64::from(size), true),
            Sampling::All { max_entities: None } => (i64::MAX, false),
            Sampling::All {
                max_entities: Some(max),
            } => (i64::from(max), true),
        };
        let (after_name, after_entity) = if sweeping {
            self.cursor.clone().unwrap_or_default()
        } else {
            Default::default()
        };
        // The hardened auditor's own sweep (B18 fixed), on the audited table.
        let sweep = |part| sweep_statement(&tables.checkpoints, part);
        if limit > 0 {
            pace(&mut self.postgres_limit).await;
            read.checkpoints =
                sqlx::query_as::<_, Checkpoint>(sqlx::AssertSqlSafe(sweep(SweepPart::AfterCursor)))
                    .bind(&names)
                    .bind(&after_name)
                    .bind(&after_entity)
                    .bind(limit)
                    .fetch_all(&mut *transaction)
                    .await
                    .map_err(query_error("read the sampled checkpoints"))?;
            let short = limit - read.checkpoints.len() as i64;
            if sweeping && short > 0 && self.cursor.is_some() {
                pace(&mut self.postgres_limit).await;
                let wrapped: Vec<Checkpoint> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sweep(SweepPart::FromStart)))
                        .bind(&names)
                        .bind(&after_name)
                        .bind(&after_entity)
                        .bind(short)
                        .fetch_all(&mut *transaction)
                        .await
                        .map_err(query_error("read the sampled checkpoints from the start"))?;
                read.checkpoints.extend(wrapped);
            }
        }
        if sweeping && let Some(last) = read.checkpoints.last() {
            self.cursor = Some((last.projection_name.clone(), last.entity_id.clone()));
        }
        read.postgres_rows += read.checkpoints.len() as u64;

        let mut by_kind: BTreeMap<ProjectionKind, Vec<String>> = BTreeMap::new();
        for checkpoint in &read.checkpoints {
            if let Ok(kind) = checkpoint.projection_name.parse::<ProjectionKind>() {
                by_kind
                    .entry(kind)
                    .or_default()
                    .push(checkpoint.document_id.clone());
            }
        }
        let documents: Vec<String> = by_kind.values().flatten().cloned().collect();
        for (kind, keys) in &by_kind {
            pace(&mut self.postgres_limit).await;
            let statement = format!(
                "SELECT doc_key, doc_version, payload, encode(payload_hash, 'hex') AS payload_hash \
                 FROM {} WHERE doc_key = ANY($1)",
                tables.read_model(*kind)
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(keys)
                .fetch_all(&mut *transaction)
                .await
                .map_err(query_error("read the khala read-model rows"))?;
            for row in rows {
                let khala = KhalaRow {
                    doc_key: row
                        .try_get("doc_key")
                        .map_err(query_error("read doc_key"))?,
                    doc_version: row
                        .try_get("doc_version")
                        .map_err(query_error("read doc_version"))?,
                    payload: row
                        .try_get::<Option<serde_json::Value>, _>("payload")
                        .map_err(query_error("read payload"))?
                        .unwrap_or(serde_json::Value::Null),
                    payload_hash: row
                        .try_get("payload_hash")
                        .map_err(query_error("read payload_hash"))?,
                };
                read.postgres_rows += 1;
                read.khala.insert(khala.doc_key.clone(), khala);
            }
        }
        if !documents.is_empty() {
            pace(&mut self.postgres_limit).await;
            let statement = format!(
                "SELECT topic, watermark, doc_key, doc_version, encode(payload_hash, 'hex') AS payload_hash \
                 FROM {} WHERE doc_key = ANY($1) ORDER BY topic, watermark",
                tables.journal
            );
            read.journal = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(&documents)
                .fetch_all(&mut *transaction)
                .await
                .map_err(query_error(
                    "read the journal rows of the sampled documents",
                ))?
                .into_iter()
                .map(|row| {
                    Ok(JournalRow {
                        topic: row.try_get("topic")?,
                        watermark: row.try_get("watermark")?,
                        doc_key: row.try_get("doc_key")?,
                        doc_version: row.try_get("doc_version")?,
                        payload_hash: row.try_get("payload_hash")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(query_error("read a journal row"))?;
            read.postgres_rows += read.journal.len() as u64;
        }
        let whole = matches!(self.target.sampling, Sampling::All { max_entities: None });
        if whole {
            for kind in ProjectionKind::ALL {
                pace(&mut self.postgres_limit).await;
                let statement = format!(
                    "SELECT doc_key FROM {} WHERE doc_key <> ALL($1) ORDER BY doc_key",
                    tables.read_model(kind)
                );
                let keys: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
                    .bind(&documents)
                    .fetch_all(&mut *transaction)
                    .await
                    .map_err(query_error(
                        "read the read-model rows no checkpoint records",
                    ))?;
                read.postgres_rows += keys.len() as u64;
                read.uncheckpointed
                    .extend(keys.into_iter().map(|key| (AuditedStore::Postgres, key)));
            }
        }
        pace(&mut self.postgres_limit).await;
        let statement = format!(
            "SELECT COALESCE(j.topic, s.topic) AS topic, COALESCE(j.rows, 0) AS rows, \
                    j.min_watermark, j.max_watermark, s.next_watermark AS sequence \
             FROM (SELECT topic, count(*) AS rows, min(watermark) AS min_watermark, \
                          max(watermark) AS max_watermark FROM {} GROUP BY topic) j \
             FULL JOIN (SELECT topic, next_watermark FROM {}) s ON s.topic = j.topic \
             ORDER BY 1",
            tables.journal, tables.topic_sequences
        );
        read.topics = sqlx::query(sqlx::AssertSqlSafe(statement))
            .fetch_all(&mut *transaction)
            .await
            .map_err(query_error("read each topic's journal bounds and sequence"))?
            .into_iter()
            .map(|row| {
                Ok(TopicJournal {
                    topic: row.try_get("topic")?,
                    rows: row.try_get("rows")?,
                    min_watermark: row.try_get("min_watermark")?,
                    max_watermark: row.try_get("max_watermark")?,
                    sequence: row.try_get("sequence")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("read a topic row"))?;
        read.postgres_rows += read.topics.len() as u64;
        pace(&mut self.postgres_limit).await;
        transaction
            .commit()
            .await
            .map_err(query_error("end the read-only transaction"))?;
        read.postgres_seconds = postgres_started.elapsed().as_secs_f64();
        let convex_started = Instant::now();

        if whole {
            let recorded: std::collections::BTreeSet<&String> = documents.iter().collect();
            for kind in ProjectionKind::ALL {
                pace(&mut self.convex_limit).await;
                let (listed, malformed) = match self.reader.list_each(kind).await {
                    Ok(listed) => listed,
                    Err(error) => {
                        let path = error.path.clone();
                        return Err(self.convex_error(&path, error.source));
                    }
                };
                read.convex_requests += 1;
                read.uncheckpointed.extend(
                    listed
                        .into_iter()
                        .filter(|(id, _)| !recorded.contains(id))
                        .map(|(id, _)| (AuditedStore::Convex, id)),
                );
                let source = self.reader.paths().list(kind).to_owned();
                read.unparseable
                    .extend(malformed.into_iter().enumerate().map(|(index, bad)| {
                        Unparseable {
                            store: AuditedStore::Convex,
                            source: source.clone(),
                            id: bad
                                .document_id
                                .unwrap_or_else(|| format!("malformed listed item {}", index + 1)),
                            reason: format!("not a {{document_id, summary}} pair: {}", bad.item),
                        }
                    }));
            }
        }
        for checkpoint in &read.checkpoints {
            let Ok(kind) = checkpoint.projection_name.parse::<ProjectionKind>() else {
                continue;
            };
            pace(&mut self.convex_limit).await;
            let document_id = checkpoint.document_id.clone();
            read.convex_requests += 1;
            match self.reader.get(kind, &document_id).await {
                Ok(document) => {
                    read.convex.insert(document_id, document);
                }
                Err(error) if matches!(error.source, SinkError::InvalidResponse { .. }) => {
                    read.unparseable.push(Unparseable {
                        store: AuditedStore::Convex,
                        source: error.path.clone(),
                        id: document_id,
                        reason: error.source.to_string(),
                    });
                }
                Err(error) => {
                    let path = error.path.clone();
                    return Err(self.convex_error(&path, error.source));
                }
            }
        }
        read.convex_seconds = convex_started.elapsed().as_secs_f64();
        Ok(read)
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.connection.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_spaces_requests_evenly() {
        let mut limit = RateLimit::new(4.0).expect("positive");
        let start = Instant::now();
        let delays: Vec<Duration> = (0..5).map(|_| limit.delay_at(start)).collect();
        assert_eq!(
            delays,
            [0, 250, 500, 750, 1000].map(Duration::from_millis).to_vec()
        );
        // A request long after the last slot waits for nothing.
        assert_eq!(
            limit.delay_at(start + Duration::from_secs(10)),
            Duration::ZERO
        );
        assert_eq!(limit.requests, 6);
        assert!(RateLimit::new(0.0).is_none());
        assert!(RateLimit::new(f64::NAN).is_none());
    }
}
