// Throughput of the HTTP front: `node bench.mjs [N]` (default 1000).
// Starts server.mjs as a child on an ephemeral port and prints numbers.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const N = Number(process.argv[2] ?? 1000);
const child = spawn(process.execPath, [fileURLToPath(new URL("server.mjs", import.meta.url)), "--port", "0"], {
  env: { ...process.env, CONVEX_ADMIN_KEY: "" },
  stdio: ["ignore", "pipe", "inherit"],
});
const url = await new Promise((resolve) => {
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
    const m = /listening on (http:\/\/\S+)\n/.exec(out);
    if (m) resolve(m[1]);
  });
});

const summary = (id, seq) => ({
  document_id: `runtime/run_summary:${id}`,
  kind: "run_summary",
  run_id: id,
  thread_id: "thread",
  status: "running",
  owner_user_id: 1,
  owner_guest_scope: null,
  latest_seq: seq,
  event_count: seq,
  latest_event_type: "run.delta",
  latest_event_at: "2026-02-19T20:00:00.000000Z",
  terminal_reason_class: null,
  terminal_reason: null,
  terminal_at: null,
  updated_at: "2026-02-19T20:00:00.000000Z",
  runtime_source: { entity: "run", run_id: id, seq },
  projection_version: "convex_summary_v1",
  projected_at: "2026-02-19T20:00:01.000000Z",
});

// The body the runtime's HttpSink sends (spec §4.3).
async function upsert(id, seq) {
  const s = summary(id, seq);
  const res = await fetch(`${url}/api/mutation`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ path: "runtime:upsertRunSummary", format: "convex_encoded_json", args: [{ document_id: s.document_id, summary: s }] }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`upsert failed: ${res.status} ${JSON.stringify(body)}`);
}

async function reset() {
  const res = await fetch(`${url}/_harness/reset`, { method: "POST" });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`reset failed: ${res.status}`);
}

async function timed(label, n, fn) {
  const t0 = performance.now();
  await fn();
  const ms = performance.now() - t0;
  console.log(`${label}: ${n} in ${ms.toFixed(0)} ms = ${((n * 1000) / ms).toFixed(0)}/s`);
}

async function inFlight(k, n, make) {
  let next = 0;
  await Promise.all(Array.from({ length: k }, async () => {
    while (next < n) await make(next++);
  }));
}

try {
  // Warm up (module loading, JIT, keep-alive connection).
  for (let i = 0; i < 50; i++) await upsert(`warm${i}`, 1);

  await reset();
  await timed("sequential inserts (fresh ids)", N, async () => {
    for (let i = 0; i < N; i++) await upsert(`seq${i}`, 1);
  });
  await timed("sequential replaces (same ids again)", N, async () => {
    for (let i = 0; i < N; i++) await upsert(`seq${i}`, 2);
  });
  // What a harness test case looks like: a handful of documents.
  await reset();
  await timed("sequential upserts over 20 ids (small store)", N, async () => {
    for (let i = 0; i < N; i++) await upsert(`small${i % 20}`, i);
  });
  await reset();
  await timed("8 in flight upserts over 20 ids (small store)", N, () => inFlight(8, N, (i) => upsert(`small${i % 20}`, i)));
  await reset();
  await timed("8 in flight inserts (fresh ids)", N, () => inFlight(8, N, (i) => upsert(`par${i}`, 1)));

  // Reset: on an empty store, and with N documents in it.
  const R = 200;
  await timed("reset (empty store)", R, async () => {
    for (let i = 0; i < R; i++) await reset();
  });
  for (let i = 0; i < N; i++) await upsert(`fill${i}`, 1);
  const t0 = performance.now();
  await reset();
  console.log(`reset with ${N} documents: ${(performance.now() - t0).toFixed(2)} ms`);
} finally {
  child.kill("SIGTERM");
}
