-- Khala journal and read models (spec §5.2, §5.3).
CREATE TABLE runtime.sync_stream_events (
    id bigserial PRIMARY KEY,
    topic varchar(255) NOT NULL,
    watermark bigint NOT NULL,
    doc_key varchar(255) NOT NULL,
    doc_version bigint NOT NULL,
    payload jsonb,
    payload_hash bytea,
    inserted_at timestamp NOT NULL
);
CREATE UNIQUE INDEX sync_stream_events_topic_watermark_index ON runtime.sync_stream_events (topic, watermark);
CREATE INDEX sync_stream_events_topic_doc_key_watermark_index ON runtime.sync_stream_events (topic, doc_key, watermark);
CREATE INDEX sync_stream_events_inserted_at_index ON runtime.sync_stream_events (inserted_at);

CREATE TABLE runtime.sync_run_summaries (
    doc_key varchar(255) PRIMARY KEY,
    doc_version bigint NOT NULL DEFAULT 0,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload_hash bytea,
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE INDEX sync_run_summaries_updated_at_index ON runtime.sync_run_summaries (updated_at);

CREATE TABLE runtime.sync_codex_worker_summaries (
    doc_key varchar(255) PRIMARY KEY,
    doc_version bigint NOT NULL DEFAULT 0,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload_hash bytea,
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE INDEX sync_codex_worker_summaries_updated_at_index ON runtime.sync_codex_worker_summaries (updated_at);
