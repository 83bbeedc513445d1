// Conformance of the front to the open-source Convex backend's HTTP answers,
// one row per fact of ../shared/spec/real-systems.md §1: a request and the
// status and exact body text (or the pattern of a body) the backend answers.
// The front runs as a child process on an ephemeral port, as the harness
// starts it, once per failure mode (200, the backend's, and 560, the other
// answer the official client accepts).
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { formatFloat64 } from "../convex_values.mjs";

const SERVER = fileURLToPath(new URL("../server.mjs", import.meta.url));
const ADMIN_KEY = "conformance-key";

function startFront(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SERVER, "--port", "0", ...args], {
      env: { ...process.env, CONVEX_ADMIN_KEY: "", CONVEX_UDF_FAILURE_STATUS: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^convex-front listening on (http:\/\/127\.0\.0\.1:\d+)\n/.exec(out);
      if (m) resolve({ child, url: m[1] });
    });
    child.stderr.on("data", (d) => (err += d));
    child.on("exit", (code) => reject(Object.assign(new Error(`exited with ${code}: ${err}`), { code, stderr: err })));
  });
}

function stopFront(front) {
  return new Promise((resolve) => {
    front.child.once("exit", resolve);
    front.child.kill("SIGTERM");
  });
}

// The raw reply: status and body text (what a Rust reader parses).
async function call(url, endpoint, body, headers = { authorization: `Convex ${ADMIN_KEY}` }) {
  const res = await fetch(`${url}/api/${endpoint}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

const b64 = (write) => {
  const buffer = Buffer.alloc(8);
  write(buffer);
  return buffer.toString("base64");
};
const float = (x) => ({ $float: b64((b) => b.writeDoubleLE(x)) });
const integer = (n) => ({ $integer: b64((b) => b.writeBigInt64LE(n)) });

function worker(id, metadata, over = {}) {
  return {
    document_id: `runtime/codex_worker_summary:${id}`,
    kind: "codex_worker_summary",
    worker_id: id,
    status: "running",
    owner_user_id: 42,
    owner_guest_scope: null,
    workspace_ref: null,
    codex_home_ref: null,
    adapter: "in_memory",
    metadata,
    latest_seq: 3,
    event_count: 3,
    latest_event_type: null,
    latest_event_at: null,
    started_at: null,
    stopped_at: null,
    last_heartbeat_at: null,
    updated_at: null,
    runtime_source: { entity: "codex_worker", worker_id: id, seq: 3 },
    projection_version: "convex_summary_v1",
    projected_at: "2026-02-19T20:00:01.000000Z",
    ...over,
  };
}

// The runtime's wire form (spec §4.3).
const upsert = (summary) => ({
  path: "runtime:upsertCodexWorkerSummary",
  format: "convex_encoded_json",
  args: [{ document_id: summary.document_id, summary }],
});
const get = (id) => ({
  path: "runtime:getCodexWorkerSummary",
  format: "convex_encoded_json",
  args: [{ document_id: `runtime/codex_worker_summary:${id}` }],
});

const nested = (depth) => (depth === 0 ? 1 : { x: nested(depth - 1) });
const manyFields = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, i]));

// Rows whose request succeeds: the upsert, then the read, whose body must
// contain every `contains` text exactly.
const VALUE_ROWS = [
  {
    name: "an upsert answers success with value null and no logLines",
    write: upsert(worker("ok", {})),
    read: null,
    writeBody: '{"status":"success","value":null}',
  },
  {
    name: "Float64 is written with a point or an exponent, as serde_json does",
    write: upsert(worker("floats", { a: 0.1, b: 1e16, c: 1e-7, d: 2 ** 53, e: 42, f: -2.5, g: 1e-5, h: 1.5e300 })),
    read: get("floats"),
    contains: ['"metadata":{"a":0.1,"b":1e16,"c":1e-7,"d":9007199254740992.0,"e":42.0,"f":-2.5,"g":0.00001,"h":1.5e300}', '"latest_seq":3.0', '"owner_user_id":42.0'],
  },
  {
    name: "an integer above 2^53 sent as a JSON number is a Float64 and comes back rounded",
    write: upsert(worker("big", { n: 9007199254740993 })),
    rawWrite: (text) => text.replace("9007199254740992", "9007199254740993"),
    read: get("big"),
    contains: ['"metadata":{"n":9007199254740992.0}'],
  },
  {
    name: "Int64 round-trips in its $integer form",
    write: upsert(worker("int64", { i: integer(5n), m: integer(-(2n ** 63n)) })),
    read: get("int64"),
    contains: ['"metadata":{"i":{"$integer":"BQAAAAAAAAA="},"m":{"$integer":"AAAAAAAAAIA="}}'],
  },
  {
    name: "NaN, ±Infinity and -0 come back in their $float form, never as plain numbers",
    write: upsert(worker("special", { nan: float(NaN), neg: float(-Infinity), pos: float(Infinity), zero: float(-0) })),
    read: get("special"),
    contains: [
      `"metadata":{"nan":{"$float":"AAAAAAAA+H8="},"neg":{"$float":"AAAAAAAA8P8="},"pos":{"$float":"AAAAAAAA8H8="},"zero":{"$float":"AAAAAAAAAIA="}}`,
    ],
  },
  {
    name: "object keys come back sorted at every depth",
    write: upsert(worker("sorted", { z: 1, a: { y: 1, b: 2 }, m: 3 })),
    read: get("sorted"),
    contains: ['{"status":"success","value":{"document_id":', '"metadata":{"a":{"b":2.0,"y":1.0},"m":3.0,"z":1.0}', '"adapter":"in_memory","codex_home_ref":null'],
  },
];

// Rows whose request fails as a function: the error message after the
// "[Request ID: …] Server Error\n" prefix must match `message`.
const FAILURE_ROWS = [
  {
    name: "unknown function",
    endpoint: "mutation",
    body: { path: "runtime:nope", args: {}, format: "json" },
    message: /^Could not find public function for 'runtime:nope'\. Did you forget to run `npx convex dev` or `npx convex deploy`\?$/,
  },
  {
    name: "a query called as a mutation",
    endpoint: "mutation",
    body: { path: "runtime:getRunSummary", args: { document_id: "x" }, format: "json" },
    message: /^Trying to execute runtime:getRunSummary as Mutation, but it is defined as Query\.$/,
  },
  {
    name: "argument validation shows floats as 5.0",
    endpoint: "mutation",
    body: upsert(worker("v", {}, { status: 5 })),
    message: /^ArgumentValidationError: Value does not match validator\.\nPath: \.summary\.status\nValue: 5\.0\nValidator: v\.string\(\)$/,
  },
  {
    name: "a document over 1 MiB",
    endpoint: "mutation",
    body: upsert(worker("large", { pad: "x".repeat(1100 * 1024) })),
    message: /^Uncaught Error: Value is too large \(1\.\d+ MiB > maximum size 1 MiB\)$/,
  },
  {
    name: "a document nested deeper than 16",
    endpoint: "mutation",
    // document {summary {metadata (15 objects)}} = 17 levels
    body: upsert(worker("deep", nested(15))),
    message: /^Uncaught Error: Document is too nested \(nested 17 levels deep > maximum nesting 16\)$/,
  },
  {
    name: "a value nested deeper than 64",
    endpoint: "mutation",
    body: upsert(worker("deeper", nested(63))),
    message: /^ArgumentValidationError: Value is too nested \(nested 65 levels deep > maximum nesting 64\)$/,
  },
  {
    name: "an object with more than 1024 fields",
    endpoint: "mutation",
    body: upsert(worker("wide", manyFields(1025))),
    message: /^ArgumentValidationError: Object has too many fields \(1025 > maximum number 1024\)$/,
  },
  {
    name: "an array of more than 8192 elements",
    endpoint: "mutation",
    body: upsert(worker("long", { list: Array(8193).fill(0) })),
    message: /^ArgumentValidationError: Array length is too long \(8193 > maximum length 8192\)$/,
  },
  {
    name: "a field name starting with $",
    endpoint: "mutation",
    body: upsert(worker("dollar", { $ref: 1 })),
    message: /^ArgumentValidationError: Field name \$ref starts with '\$', which is reserved\.$/,
  },
  {
    name: "a field name that is not ASCII",
    endpoint: "mutation",
    body: upsert(worker("accent", { clé: 1 })),
    message: /^ArgumentValidationError: Field name clé has invalid character 'é': Field names can only contain non-control ASCII characters$/,
  },
  {
    name: "a field name longer than 1024",
    endpoint: "mutation",
    body: upsert(worker("longname", { ["k".repeat(1025)]: 1 })),
    message: /^ArgumentValidationError: Field name is too long \(1025 > maximum 1024\)$/,
  },
];

for (const udfFailureStatus of [200, 560]) {
  describe(`conformance, failed functions answered ${udfFailureStatus}`, () => {
    let front;
    before(async () => {
      const mode = udfFailureStatus === 200 ? [] : ["--udf-failure-status", "560"];
      front = await startFront(["--admin-key", ADMIN_KEY, ...mode]);
    });
    after(async () => {
      await stopFront(front);
    });

    for (const row of VALUE_ROWS) {
      test(row.name, async () => {
        const text = JSON.stringify(row.write);
        const written = await call(front.url, "mutation", row.rawWrite ? row.rawWrite(text) : text);
        assert.equal(written.status, 200, written.text);
        if (row.writeBody) assert.equal(written.text, row.writeBody);
        if (!row.read) return;
        const read = await call(front.url, "query", row.read);
        assert.equal(read.status, 200, read.text);
        for (const part of row.contains) assert.ok(read.text.includes(part), `${part}\nnot in\n${read.text}`);
        assert.ok(!read.text.includes("logLines"));
      });
    }

    for (const row of FAILURE_ROWS) {
      test(`${row.name} fails as a function with ${udfFailureStatus}`, async () => {
        const r = await call(front.url, row.endpoint, row.body);
        assert.equal(r.status, udfFailureStatus, r.text);
        const body = JSON.parse(r.text);
        assert.deepEqual(Object.keys(body), ["status", "errorMessage"]);
        assert.equal(body.status, "error");
        const m = /^\[Request ID: [0-9a-f]{16}\] Server Error\n([\s\S]*)$/.exec(body.errorMessage);
        assert.ok(m, body.errorMessage);
        assert.match(m[1], row.message);
      });
    }

    test("a refused write stores nothing", async () => {
      const r = await call(front.url, "query", get("large"));
      assert.equal(r.text, '{"status":"success","value":null}');
    });

    test("a body that is not JSON is 400 BadJsonBody", async () => {
      const r = await call(front.url, "mutation", "not json");
      assert.equal(r.status, 400);
      assert.equal(JSON.parse(r.text).code, "BadJsonBody");
    });

    test("a wrong admin key is 401 BadAdminKey with the backend's message", async () => {
      const r = await call(front.url, "query", get("x"), { authorization: "Convex wrong" });
      assert.equal(r.status, 401);
      assert.deepEqual(JSON.parse(r.text), {
        code: "BadAdminKey",
        message: "The provided admin key was invalid for this instance",
      });
    });
  });
}

test("Float64 text matches serde_json's writer (ryu layout)", () => {
  const rows = [
    [3, "3.0"],
    [42, "42.0"],
    [2 ** 53, "9007199254740992.0"],
    [1e15, "1000000000000000.0"],
    [1e16, "1e16"],
    [1.5e16, "1.5e16"],
    [0.1, "0.1"],
    [1234.5, "1234.5"],
    [0.0001, "0.0001"],
    [1e-5, "0.00001"],
    [1e-6, "1e-6"],
    [1e-7, "1e-7"],
    [1.25e-7, "1.25e-7"],
    [0, "0.0"],
    [-1, "-1.0"],
    [5e-324, "5e-324"],
    [1.7976931348623157e308, "1.7976931348623157e308"],
    [123456789012345680000, "1.2345678901234568e20"],
  ];
  for (const [x, text] of rows) assert.equal(formatFloat64(x), text, `for ${x}`);
});

test("an unknown option or a bad value is refused naming it, exit 2", async () => {
  for (const [args, named] of [
    [["--nope"], /unknown option "--nope"/],
    [["--udf-failure-status", "500"], /invalid value "500" for --udf-failure-status/],
    [["--udf-failure-status=abc"], /invalid value "abc" for --udf-failure-status/],
    [["--port", "x"], /invalid value "x" for --port/],
    [["--journal"], /option --journal needs a value/],
  ]) {
    await assert.rejects(startFront(args), (e) => e.code === 2 && named.test(e.stderr));
  }
});
