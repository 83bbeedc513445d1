-- Per-topic watermark counters (spec §5.4). `next_watermark` holds the last
-- allocated value despite its name.
CREATE TABLE runtime.sync_topic_sequences (
    topic varchar(255) PRIMARY KEY,
    next_watermark bigint NOT NULL DEFAULT 0,
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
INSERT INTO runtime.sync_topic_sequences (topic, next_watermark, inserted_at, updated_at) VALUES
    ('runtime.run_summaries', 0, now(), now()),
    ('runtime.codex_worker_summaries', 0, now(), now()),
    ('runtime.notifications', 0, now(), now())
ON CONFLICT (topic) DO NOTHING;
