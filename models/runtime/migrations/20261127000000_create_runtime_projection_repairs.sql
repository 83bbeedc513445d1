-- Not in the original system: the hardened profile records every projection
-- whose sink failed here (outside the rolled-back transaction) so that a
-- repair pass can re-project it (fix for spec §15 B1). The legacy profile
-- never writes to this table.
CREATE TABLE runtime.projection_repairs (
    projection_name varchar(255) NOT NULL,
    entity_id varchar(255) NOT NULL,
    reason_class varchar(255) NOT NULL,
    recorded_at timestamp NOT NULL,
    PRIMARY KEY (projection_name, entity_id)
);
