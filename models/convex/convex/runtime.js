// The functions the runtime's Convex HttpSink calls (spec §4.3) plus read
// queries for the harness. Written with the *Generic builders so no code
// generation is needed; the same file deploys unchanged to a real Convex.
import {
  mutationGeneric,
  queryGeneric,
  paginationOptsValidator,
} from "convex/server";
import { v } from "convex/values";
import { runSummary, codexWorkerSummary } from "./validators.js";

const RUN = {
  table: "run_summaries",
  prefix: "runtime/run_summary:",
  summary: runSummary,
};
const WORKER = {
  table: "codex_worker_summaries",
  prefix: "runtime/codex_worker_summary:",
  summary: codexWorkerSummary,
};

// Checks the validators cannot express. Errors name the offending field so a
// caller can tell what was refused.
function checkSummary(p, { document_id, summary }) {
  if (!document_id.startsWith(p.prefix)) {
    throw new Error(
      `document_id must start with "${p.prefix}", got ${JSON.stringify(document_id)}`,
    );
  }
  if (summary.document_id !== document_id) {
    throw new Error(
      `summary.document_id (${JSON.stringify(summary.document_id)}) must equal document_id (${JSON.stringify(document_id)})`,
    );
  }
  // v.number() admits any float64; these are integers in the spec (§2.3).
  const ints = {
    "summary.latest_seq": summary.latest_seq,
    "summary.event_count": summary.event_count,
    "summary.runtime_source.seq": summary.runtime_source.seq,
  };
  for (const [field, n] of Object.entries(ints)) {
    if (!Number.isInteger(n) || n < 0) {
      throw new Error(`${field} must be an integer >= 0, got ${n}`);
    }
  }
  if (summary.owner_user_id !== null && !Number.isInteger(summary.owner_user_id)) {
    throw new Error(
      `summary.owner_user_id must be an integer or null, got ${summary.owner_user_id}`,
    );
  }
}

// Convex system fields are an artefact of storage, not of the projection.
function strip(doc) {
  return doc === null ? null : { document_id: doc.document_id, summary: doc.summary };
}

function upsert(p) {
  return mutationGeneric({
    args: { document_id: v.string(), summary: p.summary },
    handler: async (ctx, args) => {
      checkSummary(p, args);
      const doc = { document_id: args.document_id, summary: args.summary };
      const existing = await ctx.db
        .query(p.table)
        .withIndex("by_document_id", (q) => q.eq("document_id", args.document_id))
        .unique();
      // Plain last-writer-wins upsert: no version guard, like the Khala read
      // model (spec §4.4 step 4).
      if (existing === null) {
        await ctx.db.insert(p.table, doc);
      } else {
        await ctx.db.replace(existing._id, doc);
      }
      return null;
    },
  });
}

function get(p) {
  return queryGeneric({
    args: { document_id: v.string() },
    handler: async (ctx, { document_id }) =>
      strip(
        await ctx.db
          .query(p.table)
          .withIndex("by_document_id", (q) => q.eq("document_id", document_id))
          .unique(),
      ),
  });
}

function list(p) {
  return queryGeneric({
    args: { paginationOpts: paginationOptsValidator },
    handler: async (ctx, { paginationOpts }) => {
      // Ordered by document_id so listings are deterministic.
      const r = await ctx.db
        .query(p.table)
        .withIndex("by_document_id")
        .order("asc")
        .paginate(paginationOpts);
      return {
        page: r.page.map(strip),
        isDone: r.isDone,
        continueCursor: r.continueCursor,
      };
    },
  });
}

// Every document of both projections in one call, for a reader that looks at
// everything after every step (the harness): one query instead of a paginated
// listing per table. Bounded by `limit` per table; a larger table fails the
// query rather than answering with part of it. With `namespace`, only the
// documents whose id after the table's prefix starts with it: the harness
// plays each case under a namespace of its own against a deployment it cannot
// empty. A namespace is printable ASCII, so that the index range below holds
// for the backend's byte order and convex-test's string order alike.
export const listAllSummaries = queryGeneric({
  args: { limit: v.number(), namespace: v.optional(v.string()) },
  handler: async (ctx, { limit, namespace }) => {
    if (!Number.isInteger(limit) || limit < 0) {
      throw new Error(`limit must be an integer >= 0, got ${limit}`);
    }
    if (namespace !== undefined && !/^[\x21-\x7e]+$/.test(namespace)) {
      throw new Error(
        `namespace must be printable ASCII without spaces, got ${JSON.stringify(namespace)}`,
      );
    }
    const all = async (p) => {
      const docs = await ctx.db
        .query(p.table)
        .withIndex("by_document_id", (q) => {
          if (namespace === undefined) return q;
          // Every id that starts with prefix + namespace, and only those:
          // from it up to the same text with its last character one higher.
          const low = p.prefix + namespace;
          const high = low.slice(0, -1) + String.fromCharCode(low.charCodeAt(low.length - 1) + 1);
          return q.gte("document_id", low).lt("document_id", high);
        })
        .order("asc")
        .take(limit + 1);
      if (docs.length > limit) {
        throw new Error(`${p.table} holds more than ${limit} documents`);
      }
      return docs.map(strip);
    };
    return {
      run_summaries: await all(RUN),
      codex_worker_summaries: await all(WORKER),
    };
  },
});

export const upsertRunSummary = upsert(RUN);
export const upsertCodexWorkerSummary = upsert(WORKER);
export const getRunSummary = get(RUN);
export const getCodexWorkerSummary = get(WORKER);
export const listRunSummaries = list(RUN);
export const listCodexWorkerSummaries = list(WORKER);
