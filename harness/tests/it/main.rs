//! The one integration-test binary of the harness; each module is one subject.

// Shared fixtures: the PostgreSQL backend chosen by the environment.
mod support;

// PostgreSQL providers: schema, isolation, provider choice, cleanup, typed errors.
mod backend;

// Builders, planted sinks and store readers for the model tests.
mod fixtures;

// The projection path: W1, S1–S3, C2–C5 and refused summaries.
mod projection;

// Each §15 defect on the projection path under legacy, and its hardened fix.
mod defects;

// The Convex HTTP sink against a scripted peer: request shape and answer classes.
mod convex_stub;

// Sync-server test fixtures: embedded server, manual clock, tokens, a Phoenix V2 client.
mod sync_client;

// Sync delivery over WebSockets: D1–D4, live batches after commit, pointer mode and HTTP hydration.
mod sync_delivery;

// Sync heartbeats on explicit ticks (D5) and socket authentication (D6).
mod sync_heartbeat_auth;

// The sync retention job (R1).
mod sync_retention;

// The Phoenix stack around the channel (facts §3): idle close and resume, join refs,
// unmatched topics, crashes, duplicate joins and leaves, V1 frames, the dev keyring.
mod sync_phoenix;

// Bad input on one sync connection is answered there and disturbs no other.
mod sync_bad_input;

// Each §15 delivery defect (B9, B10, B20, B21) under legacy, and its hardened fix.
mod sync_defects;

// Convex providers: auth, reset, provider choice, pause/stop/start, cleanup, typed errors.
mod convex_backend;

// The Convex sink and reader end to end, JSON fidelity, dual publish and B1 on real Convex.
mod convex_e2e;

// Shipped-client liveness in cases: idle clients across the timeouts, brand-new
// clients on pruned topics, and the replaced hardened B10 rule over a real socket.
mod clients_liveness;

// The engine on real backends: determinism, and a legacy defect found and shrunk.
mod engine_runs;

// Defects only event gaps and retention cutoffs on a row's instant reveal,
// planted in the runtime and found by the default scenarios, hardened.
mod corner_defects;
// Client corners: pointer payloads, several versions of a document in one
// batch, an older update after a newer one; planted in today's lanes and
// found by the default scenarios, hardened.
mod client_corners;
// Raw flag spellings and failing Convex functions: a defect only each reveals is
// found by the default scenario's hardened run, which allows without it.
mod raw_inputs;

// Cases against a deployment that is never reset: the Node front started by hand behind
// the external provider; namespaced plays, and Convex faults refused there.
mod external_deployment;
// A run split over shards and merged equals the unsharded run.
mod shards;

// Cases share nothing: the same trace after any other cases, and nothing left after a reset.
mod independence;

// Every stored regression replayed several times, side by side on several slots:
// the same violations each time, the recorded one among them.
mod regressions_deterministic;

// Client-lane fixtures: lanes of each surface on the embedded server, a runtime read path, worker projections.
mod clients_fixtures;

// Client lanes end to end: flag flips converge (X3), resumes without gap or duplicate, HTTP fallbacks.
mod clients_lanes;

// Each client defect (B12, B13, B23) under legacy, and its hardened fix.
mod clients_defects;

// The parity auditor (A1–A3), and B2 and B18 under legacy with their hardened fixes.
mod auditor;

// `khala-parity audit` of stores a harness run populated: clean, legacy regressions,
// hand-damaged stores, bad input, cycles and the artifacts they rewrite.
mod audit;

// Scenario files as data: malformed files refused with line and key, the library, `list scenarios`.
mod scenarios;

// Reports: a snapshot per stored legacy finding, the artifacts of a real run, the `report` subcommand.
mod reports;

// Interrupted runs: SIGINT and SIGTERM end with an interrupted report, and no signal (SIGKILL included) leaves a process, directory or database behind.
mod interrupted_runs;

// A fixed run's report against one recorded before the harness was
// regrouped: moving code must not change behaviour.
mod recorded_report;

// The layers of harness/src kept: no backward import, no I/O in a pure
// layer, no dependency circle in the harness or the models.
mod layers;
