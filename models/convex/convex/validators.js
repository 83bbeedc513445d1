// Validators for the two projection summaries (khala-sync-spec §2.4, §2.5).
//
// Shared by schema.js (what a stored document must look like) and runtime.js
// (what the upsert mutations accept), so a wrong summary is refused by
// Convex's own argument validation before the handler runs.
//
// Notes on types:
// - Integers (latest_seq, event_count, runtime_source.seq, owner_user_id) are
//   `v.number()` (float64): the runtime's HttpSink sends plain JSON numbers,
//   which Convex decodes as float64 (an int64 would need the `{"$integer":..}`
//   encoding). runtime.js additionally checks that they are integers >= 0.
// - `status` is a plain string: the runtime does not constrain it at the DB
//   level, so the projection must carry whatever the row holds.
// - `metadata` is an arbitrary JSON object: a record of any values. Its keys
//   must still be valid Convex field names (non-control ASCII, no leading `$`).
import { v } from "convex/values";

const nullableString = v.union(v.string(), v.null());
// ISO-8601 timestamps (§2.6) are strings; the format itself is not checked.
const nullableTimestamp = nullableString;

export const runSummary = v.object({
  document_id: v.string(),
  kind: v.literal("run_summary"),
  run_id: v.string(),
  thread_id: v.string(),
  status: v.string(),
  owner_user_id: v.union(v.number(), v.null()),
  owner_guest_scope: nullableString,
  latest_seq: v.number(),
  event_count: v.number(),
  latest_event_type: nullableString,
  latest_event_at: nullableTimestamp,
  terminal_reason_class: nullableString,
  terminal_reason: nullableString,
  terminal_at: nullableTimestamp,
  updated_at: nullableTimestamp,
  runtime_source: v.object({
    entity: v.literal("run"),
    run_id: v.string(),
    seq: v.number(),
  }),
  projection_version: v.string(),
  projected_at: v.string(),
});

export const codexWorkerSummary = v.object({
  document_id: v.string(),
  kind: v.literal("codex_worker_summary"),
  worker_id: v.string(),
  status: v.string(),
  owner_user_id: v.union(v.number(), v.null()),
  owner_guest_scope: nullableString,
  workspace_ref: nullableString,
  codex_home_ref: nullableString,
  adapter: v.string(),
  metadata: v.record(v.string(), v.any()),
  latest_seq: v.number(),
  event_count: v.number(),
  latest_event_type: nullableString,
  latest_event_at: nullableTimestamp,
  started_at: nullableTimestamp,
  stopped_at: nullableTimestamp,
  last_heartbeat_at: nullableTimestamp,
  updated_at: nullableTimestamp,
  runtime_source: v.object({
    entity: v.literal("codex_worker"),
    worker_id: v.string(),
    seq: v.number(),
  }),
  projection_version: v.string(),
  projected_at: v.string(),
});
