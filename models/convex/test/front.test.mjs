// End-to-end tests of the HTTP front: each server runs as a child process on
// an ephemeral port, exactly as the Rust harness starts it.
import { test, before, after, beforeEach, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

const SERVER = fileURLToPath(new URL("../server.mjs", import.meta.url));
// A failed function's status by default: the open-source backend's 200 with
// `status: "error"` (the 560 mode is tested in conformance.test.mjs).
const UDF_FAILED = 200;
// Every function error message starts like the backend's.
const SERVER_ERROR = /^\[Request ID: [0-9a-f]{16}\] Server Error\n/;
const message = (r) => r.json.errorMessage.replace(SERVER_ERROR, "");

// Starts server.mjs with the given CLI args and resolves once it printed its
// listening line.
function startFront(args = [], env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SERVER, "--port", "0", ...args], {
      env: { ...process.env, CONVEX_ADMIN_KEY: "", ...env },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^convex-front listening on (http:\/\/127\.0\.0\.1:(\d+))\n/.exec(out);
      if (m) resolve({ child, url: m[1], port: Number(m[2]), stdout: () => out });
    });
    child.on("exit", (code) => reject(new Error(`server exited early with ${code}: ${out}`)));
    child.on("error", reject);
  });
}

function stopFront(front) {
  return new Promise((resolve) => {
    if (front.child.exitCode !== null) return resolve(front.child.exitCode);
    front.child.once("exit", (code) => resolve(code));
    front.child.kill("SIGTERM");
  });
}

async function post(url, body, headers = {}) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: JSON.parse(text) };
}

const runId = (id) => `runtime/run_summary:${id}`;
const workerId = (id) => `runtime/codex_worker_summary:${id}`;

function runSummary(id, over = {}) {
  return {
    document_id: runId(id),
    kind: "run_summary",
    run_id: id,
    thread_id: `thread-${id}`,
    status: "running",
    owner_user_id: 42,
    owner_guest_scope: null,
    latest_seq: 3,
    event_count: 3,
    latest_event_type: "run.delta",
    latest_event_at: "2026-02-19T20:00:00.000000Z",
    terminal_reason_class: null,
    terminal_reason: null,
    terminal_at: null,
    updated_at: "2026-02-19T20:00:00.000000Z",
    runtime_source: { entity: "run", run_id: id, seq: 3 },
    projection_version: "convex_summary_v1",
    projected_at: "2026-02-19T20:00:01.000000Z",
    ...over,
  };
}

function workerSummary(id, over = {}) {
  return {
    document_id: workerId(id),
    kind: "codex_worker_summary",
    worker_id: id,
    status: "running",
    owner_user_id: null,
    owner_guest_scope: "guest:abc",
    workspace_ref: null,
    codex_home_ref: "home/1",
    adapter: "in_memory",
    metadata: {},
    latest_seq: 4,
    event_count: 4,
    latest_event_type: "worker.heartbeat",
    latest_event_at: "2026-02-19T20:00:00.000000Z",
    started_at: "2026-02-19T19:00:00.000000Z",
    stopped_at: null,
    last_heartbeat_at: "2026-02-19T20:00:00.000000Z",
    updated_at: "2026-02-19T20:00:00.000000Z",
    runtime_source: { entity: "codex_worker", worker_id: id, seq: 4 },
    projection_version: "convex_summary_v1",
    projected_at: "2026-02-19T20:00:01.000000Z",
    ...over,
  };
}

describe("front without admin key", () => {
  let front;
  const mutation = (path, args) => post(`${front.url}/api/mutation`, { path, args, format: "json" });
  const query = (path, args) => post(`${front.url}/api/query`, { path, args, format: "json" });
  const upsertRun = (s) => mutation("runtime:upsertRunSummary", { document_id: s.document_id, summary: s });
  const upsertWorker = (s) => mutation("runtime:upsertCodexWorkerSummary", { document_id: s.document_id, summary: s });

  before(async () => {
    front = await startFront();
  });
  after(async () => {
    assert.equal(await stopFront(front), 0, "SIGTERM exits with 0");
  });
  beforeEach(async () => {
    const r = await post(`${front.url}/_harness/reset`, "");
    assert.equal(r.status, 200);
  });

  test("prints exactly one listening line and answers health", async () => {
    assert.match(front.stdout(), /^convex-front listening on http:\/\/127\.0\.0\.1:\d+\n$/);
    const res = await fetch(`${front.url}/_harness/health`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: "ok" });
  });

  test("upsert inserts, then replaces by document_id", async () => {
    const first = await upsertRun(runSummary("r1"));
    assert.equal(first.status, 200);
    assert.deepEqual(first.json, { status: "success", value: null });
    let got = await query("runtime:getRunSummary", { document_id: runId("r1") });
    assert.deepEqual(got.json.value, { document_id: runId("r1"), summary: runSummary("r1") });

    const changed = runSummary("r1", { status: "succeeded", latest_seq: 9, event_count: 9, runtime_source: { entity: "run", run_id: "r1", seq: 9 } });
    assert.equal((await upsertRun(changed)).status, 200);
    got = await query("runtime:getRunSummary", { document_id: runId("r1") });
    assert.deepEqual(got.json.value, { document_id: runId("r1"), summary: changed });

    // Replaced, not duplicated.
    const list = await query("runtime:listRunSummaries", { paginationOpts: { numItems: 10, cursor: null } });
    assert.equal(list.json.value.page.length, 1);
    assert.equal(list.json.value.isDone, true);
  });

  test("get of a missing document is null; projections are separate tables", async () => {
    assert.equal((await upsertWorker(workerSummary("w-1"))).status, 200);
    assert.equal((await query("runtime:getRunSummary", { document_id: runId("w-1") })).json.value, null);
    const w = await query("runtime:getCodexWorkerSummary", { document_id: workerId("w-1") });
    assert.deepEqual(w.json.value, { document_id: workerId("w-1"), summary: workerSummary("w-1") });
    assert.ok(!("_id" in w.json.value) && !("_creationTime" in w.json.value));
  });

  test("list paginates across pages in document_id order without system fields", async () => {
    const ids = Array.from({ length: 7 }, (_, i) => `w-${i}`);
    for (const id of [...ids].reverse()) assert.equal((await upsertWorker(workerSummary(id))).status, 200);
    const seen = [];
    let cursor = null;
    let pages = 0;
    for (;;) {
      const r = await query("runtime:listCodexWorkerSummaries", { paginationOpts: { numItems: 3, cursor } });
      assert.equal(r.status, 200);
      const { page, isDone, continueCursor } = r.json.value;
      assert.deepEqual(Object.keys(r.json.value).sort(), ["continueCursor", "isDone", "page"]);
      pages += 1;
      for (const d of page) {
        assert.deepEqual(Object.keys(d).sort(), ["document_id", "summary"]);
        seen.push(d.document_id);
      }
      if (isDone) break;
      assert.equal(typeof continueCursor, "string");
      cursor = continueCursor;
    }
    assert.ok(pages >= 3, `expected at least 3 pages, got ${pages}`);
    assert.deepEqual(seen, ids.map(workerId));
  });

  test("listAllSummaries returns both tables in document_id order, and refuses more than limit", async () => {
    for (const id of ["r-2", "r-1"]) assert.equal((await upsertRun(runSummary(id))).status, 200);
    for (const id of ["w-3", "w-1", "w-2"]) assert.equal((await upsertWorker(workerSummary(id))).status, 200);
    const all = await query("runtime:listAllSummaries", { limit: 3 });
    assert.equal(all.status, 200);
    assert.deepEqual(all.json.value, {
      run_summaries: ["r-1", "r-2"].map((id) => ({ document_id: runId(id), summary: runSummary(id) })),
      codex_worker_summaries: ["w-1", "w-2", "w-3"].map((id) => ({ document_id: workerId(id), summary: workerSummary(id) })),
    });
    const over = await query("runtime:listAllSummaries", { limit: 2 });
    assert.equal(over.status, UDF_FAILED);
    assert.match(over.json.errorMessage, /codex_worker_summaries holds more than 2 documents/);
    const bad = await query("runtime:listAllSummaries", { limit: 1.5 });
    assert.equal(bad.status, UDF_FAILED);
    assert.match(bad.json.errorMessage, /limit must be an integer >= 0, got 1\.5/);
  });

  test("listAllSummaries with a namespace lists only the ids under it, and refuses a namespace that is not printable ASCII", async () => {
    const ids = ["kp1-0.r", "kp1-0.s", "kp1-1.r", "kp1-0", "kp1-0/r", "kp1-00.r", "other"];
    for (const id of ids) assert.equal((await upsertRun(runSummary(id))).status, 200);
    for (const id of ["kp1-0.w", "kp1-1.w"]) assert.equal((await upsertWorker(workerSummary(id))).status, 200);
    const mine = await query("runtime:listAllSummaries", { limit: 2, namespace: "kp1-0." });
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.json.value, {
      run_summaries: ["kp1-0.r", "kp1-0.s"].map((id) => ({ document_id: runId(id), summary: runSummary(id) })),
      codex_worker_summaries: [{ document_id: workerId("kp1-0.w"), summary: workerSummary("kp1-0.w") }],
    });
    const empty = await query("runtime:listAllSummaries", { limit: 0, namespace: "kp2-0." });
    assert.deepEqual(empty.json.value, { run_summaries: [], codex_worker_summaries: [] });
    for (const bad of ["", "kp 1.", "kpé."]) {
      const refused = await query("runtime:listAllSummaries", { limit: 1, namespace: bad });
      assert.equal(refused.status, UDF_FAILED);
      assert.match(refused.json.errorMessage, /namespace must be printable ASCII without spaces/);
    }
  });

  test("a nullable field takes null or its type, and names the path otherwise", async () => {
    const withNull = runSummary("r-n", { latest_event_type: null, owner_user_id: null, owner_guest_scope: "guest" });
    assert.equal((await upsertRun(withNull)).status, 200);
    const wrong = await upsertRun(runSummary("r-w", { latest_event_type: 5 }));
    assert.equal(wrong.status, UDF_FAILED);
    assert.match(wrong.json.errorMessage, SERVER_ERROR);
    assert.match(message(wrong), /^ArgumentValidationError: Value does not match validator\.\nPath: \.summary\.latest_event_type\nValue: 5\.0\nValidator: v\.union\(v\.string\(\), v\.null\(\)\)/);
  });

  test("ConvexHttpClient form (args as [obj], convex_encoded_json) works, via the real client", async () => {
    const client = new ConvexHttpClient(front.url, { skipConvexDeploymentUrlCheck: true, logger: false });
    const s = runSummary("client");
    assert.equal(await client.mutation(makeFunctionReference("runtime:upsertRunSummary"), { document_id: s.document_id, summary: s }), null);
    const got = await client.query(makeFunctionReference("runtime:getRunSummary"), { document_id: s.document_id });
    assert.deepEqual(got, { document_id: s.document_id, summary: s });
    // The raw wire form, as the runtime's HttpSink sends it (spec §4.3).
    const raw = await post(`${front.url}/api/query`, {
      path: "runtime:getRunSummary",
      format: "convex_encoded_json",
      args: [{ document_id: s.document_id }],
    });
    assert.equal(raw.status, 200);
    assert.deepEqual(raw.json.value.summary, s);
    // Errors surface through the client as thrown Errors with the message.
    await assert.rejects(
      client.mutation(makeFunctionReference("runtime:upsertRunSummary"), { document_id: runId("x"), summary: s }),
      /summary\.document_id .* must equal document_id/,
    );
  });

  test("validator failure is a function error naming the field", async () => {
    const cases = [
      [runSummary("v", { status: 5 }), /Path: \.summary\.status\n/],
      [runSummary("v", { kind: "codex_worker_summary" }), /Path: \.summary\.kind\n/],
      [runSummary("v", { owner_user_id: "42" }), /Path: \.summary\.owner_user_id\n/],
      [runSummary("v", { runtime_source: { entity: "run", run_id: "v", seq: "3" } }), /Path: \.summary\.runtime_source\.seq\n/],
      [runSummary("v", { extra: 1 }), /extra field `extra`/],
      [(({ terminal_at, ...rest }) => rest)(runSummary("v")), /missing the required field `terminal_at`/],
    ];
    for (const [summary, re] of cases) {
      const r = await upsertRun(summary);
      assert.equal(r.status, UDF_FAILED, JSON.stringify(r.json));
      assert.equal(r.json.status, "error");
      assert.match(message(r), /^ArgumentValidationError: /);
      assert.match(r.json.errorMessage, re);
      assert.ok(!("logLines" in r.json));
      assert.ok(!("errorData" in r.json));
    }
    // Worker metadata must be an object.
    const w = await upsertWorker(workerSummary("w-bad", { metadata: [1, 2] }));
    assert.equal(w.status, UDF_FAILED);
    assert.match(w.json.errorMessage, /Path: \.summary\.metadata\n/);
    // Nothing was stored.
    const list = await query("runtime:listRunSummaries", { paginationOpts: { numItems: 10, cursor: null } });
    assert.deepEqual(list.json.value.page, []);
  });

  test("handler checks are function errors naming the field", async () => {
    const wrongPrefix = await mutation("runtime:upsertRunSummary", {
      document_id: workerId("r"),
      summary: runSummary("r", { document_id: workerId("r") }),
    });
    assert.equal(wrongPrefix.status, UDF_FAILED);
    assert.match(message(wrongPrefix), /^Uncaught Error: document_id must start with "runtime\/run_summary:"/);

    const mismatch = await mutation("runtime:upsertRunSummary", { document_id: runId("a"), summary: runSummary("b") });
    assert.equal(mismatch.status, UDF_FAILED);
    assert.match(mismatch.json.errorMessage, /summary\.document_id/);

    const fractional = await upsertRun(runSummary("f", { latest_seq: 1.5 }));
    assert.equal(fractional.status, UDF_FAILED);
    assert.match(fractional.json.errorMessage, /summary\.latest_seq must be an integer >= 0/);

    const negative = await upsertRun(runSummary("n", { runtime_source: { entity: "run", run_id: "n", seq: -1 } }));
    assert.equal(negative.status, UDF_FAILED);
    assert.match(negative.json.errorMessage, /summary\.runtime_source\.seq must be an integer >= 0/);
  });

  test("unknown function path or wrong kind is a function error", async () => {
    const unknown = await mutation("runtime:nope", {});
    assert.equal(unknown.status, UDF_FAILED);
    assert.match(unknown.json.errorMessage, /Could not find public function for 'runtime:nope'/);
    const noModule = await query("other:getRunSummary", {});
    assert.equal(noModule.status, UDF_FAILED);
    assert.match(noModule.json.errorMessage, /Could not find public function for 'other:getRunSummary'/);
    const wrongKind = await mutation("runtime:getRunSummary", { document_id: runId("x") });
    assert.equal(wrongKind.status, UDF_FAILED);
    assert.match(wrongKind.json.errorMessage, /defined as Query/);
    // The ".js" suffix form names the same function.
    const withJs = await query("runtime.js:getRunSummary", { document_id: runId("x") });
    assert.deepEqual([withJs.status, withJs.json.value], [200, null]);
  });

  test("malformed requests are 4xx with {code, message}", async () => {
    const cases = [
      [await post(`${front.url}/api/mutation`, "not json"), 400, "BadJsonBody"],
      [await post(`${front.url}/api/mutation`, "[1,2]"), 400, "BadJsonBody"],
      [await post(`${front.url}/api/mutation`, { args: {} }), 400, "BadConvexFunctionPath"],
      [await post(`${front.url}/api/mutation`, { path: 7, args: {} }), 400, "BadConvexFunctionPath"],
      [await post(`${front.url}/api/mutation`, { path: "a b:c", args: {} }), 400, "BadConvexFunctionPath"],
      [await post(`${front.url}/api/query`, { path: "runtime:getRunSummary", args: [{}, {}] }), 400, "BadArgs"],
      [await post(`${front.url}/api/query`, { path: "runtime:getRunSummary", args: "x" }), 400, "BadArgs"],
      [await post(`${front.url}/api/query`, { path: "runtime:getRunSummary", args: {}, format: "xml" }), 400, "BadFormat"],
      [await post(`${front.url}/api/query`, "{}", { "content-type": "text/plain" }), 415, "BadContentType"],
    ];
    for (const [r, status, code] of cases) {
      assert.equal(r.status, status, JSON.stringify(r.json));
      assert.equal(r.json.code, code);
      assert.equal(typeof r.json.message, "string");
      assert.equal(r.headers.get("content-type"), "application/json");
    }
  });

  test("unknown route is 404, wrong method is 405", async () => {
    const nf = await fetch(`${front.url}/api/action2`, { method: "POST" });
    assert.equal(nf.status, 404);
    assert.equal((await nf.json()).code, "NotFound");
    const m1 = await fetch(`${front.url}/api/mutation`);
    assert.equal(m1.status, 405);
    assert.equal(m1.headers.get("allow"), "POST");
    assert.equal((await m1.json()).code, "MethodNotAllowed");
    const m2 = await fetch(`${front.url}/_harness/health`, { method: "DELETE" });
    assert.equal(m2.status, 405);
    const m3 = await fetch(`${front.url}/_harness/reset`);
    assert.equal(m3.status, 405);
  });

  test("oversize body is 413 (content-length and chunked) and the server keeps serving", async () => {
    const big = JSON.stringify({ path: "runtime:upsertRunSummary", args: { pad: "x".repeat(9 * 1024 * 1024) } });
    const r = await post(`${front.url}/api/mutation`, big);
    assert.equal(r.status, 413);
    assert.equal(r.json.code, "RequestTooLarge");

    // Chunked upload, no content-length: cut off while streaming.
    const status = await new Promise((resolve, reject) => {
      const req = http.request(`${front.url}/api/mutation`, {
        method: "POST",
        headers: { "content-type": "application/json" },
      });
      req.on("response", (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on("error", reject);
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      let sent = 0;
      const pump = () => {
        while (sent < 10) {
          sent += 1;
          if (!req.write(chunk)) return req.once("drain", pump);
        }
        req.end();
      };
      pump();
    });
    assert.equal(status, 413);
    const health = await fetch(`${front.url}/_harness/health`);
    assert.equal(health.status, 200);
  });

  test("garbage HTTP and aborted uploads get no crash", async () => {
    // Not HTTP at all: a JSON 400, then the connection closes.
    const reply = await new Promise((resolve, reject) => {
      const sock = net.connect(front.port, "127.0.0.1", () => sock.write("\x00\x01 hello\r\n\r\n"));
      let data = "";
      sock.on("data", (d) => (data += d));
      sock.on("end", () => resolve(data));
      sock.on("error", reject);
    });
    assert.match(reply, /^HTTP\/1\.1 400 /);
    assert.equal(JSON.parse(reply.split("\r\n\r\n")[1]).code, "BadRequest");
    // Upload announced as 1000 bytes, cut after 10.
    await new Promise((resolve) => {
      const sock = net.connect(front.port, "127.0.0.1", () => {
        sock.write("POST /api/mutation HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"path\":\"r");
        setTimeout(() => sock.destroy(), 50);
      });
      sock.on("close", resolve);
      sock.on("error", () => {});
    });
    assert.equal((await fetch(`${front.url}/_harness/health`)).status, 200);
    assert.equal((await upsertRun(runSummary("after"))).status, 200);
  });

  test("reset empties the store", async () => {
    await upsertRun(runSummary("keep"));
    await upsertWorker(workerSummary("keep"));
    assert.notEqual((await query("runtime:getRunSummary", { document_id: runId("keep") })).json.value, null);
    const r = await post(`${front.url}/_harness/reset`, "");
    assert.deepEqual([r.status, r.json], [200, { status: "ok" }]);
    assert.equal((await query("runtime:getRunSummary", { document_id: runId("keep") })).json.value, null);
    assert.equal((await query("runtime:getCodexWorkerSummary", { document_id: workerId("keep") })).json.value, null);
  });

  test("JSON fidelity: nested metadata, nulls, unicode, empty strings, 2^53 round-trip", async () => {
    const metadata = {
      nested: { deeper: { deepest: { list: [1, "two", null, { three: [3.5, -0.25] }] } } },
      empty_string: "",
      empty_object: {},
      empty_list: [],
      nothing: null,
      flag: false,
      unicode: "héllo wörld ✓ 日本語 🚀 \u0000 \n\t\"\\",
      max_exact_int: 2 ** 53,
      min_exact_int: -(2 ** 53),
      float: 0.1,
      "key with spaces.and-dots": "ok",
      "": "empty key",
    };
    const s = workerSummary("fidelity", {
      metadata,
      owner_guest_scope: "",
      workspace_ref: "ünïcödé/路径",
      latest_seq: 2 ** 53,
      event_count: 2 ** 53,
      runtime_source: { entity: "codex_worker", worker_id: "fidelity", seq: 2 ** 53 },
    });
    for (const format of ["json", "convex_encoded_json"]) {
      await post(`${front.url}/_harness/reset`, "");
      const args = { document_id: s.document_id, summary: s };
      const up = await post(`${front.url}/api/mutation`, {
        path: "runtime:upsertCodexWorkerSummary",
        format,
        args: format === "json" ? args : [args],
      });
      assert.equal(up.status, 200, JSON.stringify(up.json));
      const got = await post(`${front.url}/api/query`, {
        path: "runtime:getCodexWorkerSummary",
        format,
        args: { document_id: s.document_id },
      });
      assert.deepEqual(got.json.value, { document_id: s.document_id, summary: s });
    }
  });

  test("metadata keys Convex cannot store are refused as a function error", async () => {
    // Convex field names must be non-control ASCII and must not start with
    // "$": a parity hazard against Postgres jsonb, which stores any key.
    for (const key of ["clé", "$ref"]) {
      const r = await upsertWorker(workerSummary("keys", { metadata: { [key]: 1 } }));
      assert.equal(r.status, UDF_FAILED, JSON.stringify(r.json));
      assert.match(r.json.errorMessage, /Field name/);
    }
  });

  test("concurrent upserts are all applied, last writer per id wins", async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `c${String(i).padStart(2, "0")}`);
    const results = await Promise.all(
      ids.flatMap((id) => [1, 2, 3].map((seq) => upsertRun(runSummary(id, { latest_seq: seq, event_count: seq, runtime_source: { entity: "run", run_id: id, seq } })))),
    );
    assert.ok(results.every((r) => r.status === 200));
    const list = await query("runtime:listRunSummaries", { paginationOpts: { numItems: 100, cursor: null } });
    assert.deepEqual(list.json.value.page.map((d) => d.document_id), ids.map(runId));
    // Sequential upserts after the burst still replace.
    await upsertRun(runSummary("c00", { status: "failed" }));
    assert.equal((await query("runtime:getRunSummary", { document_id: runId("c00") })).json.value.summary.status, "failed");
  });
});

describe("front with admin key", () => {
  let front;
  const KEY = "test-admin-key|0123";
  const q = (headers) => post(`${front.url}/api/query`, { path: "runtime:getRunSummary", args: { document_id: runId("a") } }, headers);

  before(async () => {
    // The key comes from the environment here; the flag is tested below.
    front = await startFront(["--max-body-bytes", "1024"], { CONVEX_ADMIN_KEY: KEY });
  });
  after(async () => {
    await stopFront(front);
  });

  test("missing key is 401", async () => {
    const r = await q({});
    assert.equal(r.status, 401);
    assert.equal(r.json.code, "MissingAccessToken");
  });

  test("wrong key is 401", async () => {
    // (Trailing whitespace is not tested: HTTP parsers strip it from header values.)
    for (const auth of [`Convex wrong`, `Bearer ${KEY}`, `Convex  ${KEY}`, `convex ${KEY}`, KEY, `Convex ${KEY}x`]) {
      const r = await q({ authorization: auth });
      assert.equal(r.status, 401, auth);
      assert.equal(typeof r.json.message, "string");
    }
  });

  test("right key is 200, also through ConvexHttpClient.setAdminAuth", async () => {
    const r = await q({ authorization: `Convex ${KEY}` });
    assert.deepEqual([r.status, r.json.status, r.json.value], [200, "success", null]);
    const client = new ConvexHttpClient(front.url, { skipConvexDeploymentUrlCheck: true, logger: false });
    client.setAdminAuth(KEY);
    assert.equal(await client.query(makeFunctionReference("runtime:getRunSummary"), { document_id: runId("a") }), null);
  });

  test("reset needs the key; health does not", async () => {
    assert.equal((await post(`${front.url}/_harness/reset`, "")).status, 401);
    assert.equal((await post(`${front.url}/_harness/reset`, "", { authorization: `Convex ${KEY}` })).status, 200);
    assert.equal((await fetch(`${front.url}/_harness/health`)).status, 200);
  });

  test("body limit is configurable (--max-body-bytes)", async () => {
    const body = { path: "runtime:getRunSummary", args: { document_id: "x".repeat(2000) } };
    const r = await post(`${front.url}/api/query`, body, { authorization: `Convex ${KEY}` });
    assert.equal(r.status, 413);
  });
});

test("--admin-key flag, --host, and SIGINT", async () => {
  const front = await startFront(["--admin-key", "flag-key", "--host", "127.0.0.1"]);
  try {
    assert.equal((await post(`${front.url}/_harness/reset`, "")).status, 401);
    assert.equal((await post(`${front.url}/_harness/reset`, "", { authorization: "Convex flag-key" })).status, 200);
  } finally {
    const exited = new Promise((resolve) => front.child.once("exit", (code) => resolve(code)));
    front.child.kill("SIGINT");
    assert.equal(await exited, 0);
  }
});

test("--journal: a restarted front holds what it held; a reset empties the journal; a broken one is refused", async () => {
  const { mkdtempSync, writeFileSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const journal = join(mkdtempSync(join(tmpdir(), "convex-journal-")), "journal.jsonl");
  const upsert = (url, s) => post(`${url}/api/mutation`, { path: "runtime:upsertRunSummary", args: { document_id: s.document_id, summary: s } });
  const get = async (url, id) => (await post(`${url}/api/query`, { path: "runtime:getRunSummary", args: { document_id: runId(id) } })).json.value;

  let front = await startFront(["--journal", journal]);
  assert.equal((await upsert(front.url, runSummary("kept"))).status, 200);
  const newer = { latest_seq: 4, event_count: 4, runtime_source: { entity: "run", run_id: "kept", seq: 4 } };
  assert.equal((await upsert(front.url, runSummary("kept", newer))).status, 200);
  await stopFront(front);
  front = await startFront(["--journal", journal]);
  try {
    assert.deepEqual((await get(front.url, "kept")).summary, runSummary("kept", newer));
    assert.equal((await post(`${front.url}/_harness/reset`, "")).status, 200);
  } finally {
    await stopFront(front);
  }
  front = await startFront(["--journal", journal]);
  try {
    assert.equal(await get(front.url, "kept"), null);
  } finally {
    await stopFront(front);
  }
  writeFileSync(journal, "{not json\n");
  await assert.rejects(startFront(["--journal", journal]), /exited early with 1/);
});
