// One table per projection, keyed by the projector's document_id (spec §2.2).
// Documents are `{document_id, summary}`; the summary is stored whole.
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
import { runSummary, codexWorkerSummary } from "./validators.js";

export default defineSchema({
  run_summaries: defineTable({
    document_id: v.string(),
    summary: runSummary,
  }).index("by_document_id", ["document_id"]),
  codex_worker_summaries: defineTable({
    document_id: v.string(),
    summary: codexWorkerSummary,
  }).index("by_document_id", ["document_id"]),
});
