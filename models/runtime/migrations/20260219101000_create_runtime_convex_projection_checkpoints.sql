-- Checkpoints of the projector (spec §5.1). Deliberately no primary key: the
-- original only has the unique index below.
CREATE TABLE runtime.convex_projection_checkpoints (
    projection_name varchar(255) NOT NULL,
    entity_id varchar(255) NOT NULL,
    document_id varchar(255) NOT NULL,
    last_runtime_seq bigint NOT NULL DEFAULT 0,
    projection_version varchar(255) NOT NULL,
    summary_hash varchar(255) NOT NULL,
    last_projected_at timestamp NOT NULL,
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE UNIQUE INDEX convex_projection_checkpoints_projection_name_entity_id_index
    ON runtime.convex_projection_checkpoints (projection_name, entity_id);
CREATE INDEX convex_projection_checkpoints_projection_name_last_runtime_seq_index
    ON runtime.convex_projection_checkpoints (projection_name, last_runtime_seq);
CREATE INDEX convex_projection_checkpoints_document_id_index
    ON runtime.convex_projection_checkpoints (document_id);
