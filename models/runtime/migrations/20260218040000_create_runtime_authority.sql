-- Authority tables of the runtime (spec §5.6): runs, run events, Codex workers
-- and worker events. The projector reads these; Khala and Convex are derived.
CREATE SCHEMA IF NOT EXISTS runtime;

CREATE TABLE runtime.runs (
    run_id varchar(255) PRIMARY KEY,
    thread_id varchar(255) NOT NULL,
    status varchar(255) NOT NULL DEFAULT 'created',
    owner_user_id bigint,
    owner_guest_scope varchar(255),
    latest_seq bigint NOT NULL DEFAULT 0,
    terminal_reason_class varchar(255),
    terminal_reason text,
    terminal_at timestamp,
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL,
    CONSTRAINT runs_owner_present CHECK (owner_user_id IS NOT NULL OR owner_guest_scope IS NOT NULL)
);

CREATE TABLE runtime.run_events (
    id bigserial PRIMARY KEY,
    run_id varchar(255) NOT NULL REFERENCES runtime.runs (run_id) ON DELETE CASCADE,
    seq bigint NOT NULL CHECK (seq > 0),
    event_type varchar(255) NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash varchar(255),
    event_hash varchar(255),
    inserted_at timestamp NOT NULL
);
CREATE UNIQUE INDEX run_events_run_id_seq_index ON runtime.run_events (run_id, seq);

CREATE TABLE runtime.codex_workers (
    worker_id varchar(255) PRIMARY KEY,
    owner_user_id integer,
    owner_guest_scope varchar(255),
    workspace_ref varchar(255),
    codex_home_ref varchar(255),
    adapter varchar(255) NOT NULL DEFAULT 'in_memory',
    status varchar(255) NOT NULL DEFAULT 'running',
    latest_seq bigint NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at timestamp NOT NULL,
    stopped_at timestamp,
    last_heartbeat_at timestamp,
    inserted_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);

CREATE TABLE runtime.codex_worker_events (
    id bigserial PRIMARY KEY,
    worker_id varchar(255) NOT NULL REFERENCES runtime.codex_workers (worker_id) ON DELETE CASCADE,
    seq bigint NOT NULL CHECK (seq > 0),
    event_type varchar(120) NOT NULL CHECK (length(event_type) >= 1),
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    inserted_at timestamp NOT NULL
);
CREATE UNIQUE INDEX codex_worker_events_worker_id_seq_index ON runtime.codex_worker_events (worker_id, seq);
