-- Not in the original system: the highest watermark the retention job has
-- deleted per topic. The hardened stale-cursor rule uses it as a floor that
-- survives a fully pruned journal and holes left by deletion by
-- `inserted_at` (fix for spec §15 B9). The legacy channel never reads it.
CREATE TABLE runtime.sync_retention_floors (
    topic varchar(255) PRIMARY KEY,
    pruned_through bigint NOT NULL,
    updated_at timestamp NOT NULL
);
