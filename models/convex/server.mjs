// An HTTP front that serves Convex's HTTP API (POST /api/mutation, /api/query)
// over the functions in ./convex, executed by convex-test (Convex's own JS
// implementation of its backend for tests). The official backend cannot run
// here; this lets the harness talk to "Convex" exactly as the runtime's
// HttpSink does (spec §4.3).
//
// Plain node:http on purpose: no framework, nothing between the wire and the
// behaviour we need to control (status codes, body limit, auth).
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { pathToFileURL } from "node:url";
import { convexTest } from "convex-test";
import { makeFunctionReference } from "convex/server";
import { ConvexError, convexToJson, jsonToConvex } from "convex/values";
import { checkDocument, measureValue, writeConvexJson } from "./convex_values.mjs";
import schema from "./convex/schema.js";
import * as runtime from "./convex/runtime.js";

// Module name -> module, as Convex sees the files under convex/.
const MODULES = { runtime };

// convex-test locates the module root from a key containing "_generated"; it
// is never loaded, so no stub file is needed (and `npx convex codegen` can
// write the real convex/_generated without conflict).
const MODULE_LOADERS = {
  "./_generated/api.js": async () => ({}),
  ...Object.fromEntries(
    Object.entries(MODULES).map(([name, mod]) => [`./${name}.js`, async () => mod]),
  ),
};

const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024;
// The statuses a failed function may be answered with. The open-source
// backend answers 200 with `status: "error"`; the official JS client also
// accepts 560 (its STATUS_CODE_UDF_FAILED) for the same body, so a client
// must treat both alike, and the front can play either.
export const UDF_FAILURE_STATUSES = [200, 560];
const DEFAULT_UDF_FAILURE_STATUS = 200;

// The backend checks every document it writes (size, nesting, and the value
// limits); convex-test checks none of them. Every write of a convex-test
// instance goes through the `Convex.asyncSyscall` global that convex-test
// installs once per process, so the front wraps that global, once, and
// refuses what the backend refuses before convex-test stores it. The error
// reaches the function as the backend's would: the call fails with it.
let writesGuarded = false;
function guardWrites() {
  if (writesGuarded) return;
  writesGuarded = true;
  const inner = globalThis.Convex;
  globalThis.Convex = {
    get syscall() {
      return inner.syscall;
    },
    get jsSyscall() {
      return inner.jsSyscall;
    },
    get asyncSyscall() {
      const call = inner.asyncSyscall;
      return async (op, argsJson) => {
        if (op === "1.0/insert" || op === "1.0/replace") {
          checkDocument(JSON.parse(argsJson).value);
        } else if (op === "1.0/shallowMerge") {
          // A patch is checked as a value; the merged document is not
          // formed here (our functions never patch).
          measureValue(JSON.parse(argsJson).value);
        }
        return call(op, argsJson);
      };
    },
  };
}

// ---------------------------------------------------------------------------
// Argument validation with paths.
//
// The real backend validates arguments before running a function and names
// the failing place ("Path: .summary.status"). convex-test also validates, but
// its messages omit the path and it does not check v.record at all, so the
// front validates first, against the function's own exported validator, with
// messages shaped like the backend's.
// ---------------------------------------------------------------------------

class ArgumentValidationError extends Error {}

function showValidator(vd) {
  switch (vd.type) {
    case "object":
      return `v.object({${Object.entries(vd.value)
        .map(([k, f]) => `${k}: ${f.optional ? `v.optional(${showValidator(f.fieldType)})` : showValidator(f.fieldType)}`)
        .join(", ")}})`;
    case "union":
      return `v.union(${vd.value.map(showValidator).join(", ")})`;
    case "literal":
      return `v.literal(${JSON.stringify(vd.value)})`;
    case "array":
      return `v.array(${showValidator(vd.value)})`;
    case "record":
      return `v.record(${showValidator(vd.keys)}, ${showValidator(vd.values.fieldType)})`;
    case "id":
      return `v.id(${JSON.stringify(vd.tableName)})`;
    case "number":
      return "v.float64()";
    case "bigint":
      return "v.int64()";
    default:
      return `v.${vd.type}()`;
  }
}

// Values in messages are written as the backend writes them (5 is `5.0`).
function showValue(x) {
  try {
    return writeConvexJson(x);
  } catch {
    return String(x);
  }
}

function isPlainObject(x) {
  return typeof x === "object" && x !== null && !Array.isArray(x) && !(x instanceof ArrayBuffer);
}

// Whether `x` matches a primitive validator (the cases of checkValue that
// look at `x` alone); undefined for the composite ones.
function primitiveMatch(vd, x) {
  switch (vd.type) {
    case "any":
      return true;
    case "null":
      return x === null;
    case "number":
      return typeof x === "number";
    case "bigint":
      return typeof x === "bigint";
    case "boolean":
      return typeof x === "boolean";
    case "string":
    case "id":
      return typeof x === "string";
    case "bytes":
      return x instanceof ArrayBuffer;
    case "literal":
      return x === vd.value;
    default:
      return undefined;
  }
}

// Throws ArgumentValidationError, or returns when `x` matches `vd`.
function checkValue(vd, x, path) {
  const noMatch = () =>
    new ArgumentValidationError(
      `Value does not match validator.\nPath: ${path || "(root)"}\nValue: ${showValue(x)}\nValidator: ${showValidator(vd)}`,
    );
  switch (vd.type) {
    case "any":
      return;
    case "null":
      if (x !== null) throw noMatch();
      return;
    case "number":
      if (typeof x !== "number") throw noMatch();
      return;
    case "bigint":
      if (typeof x !== "bigint") throw noMatch();
      return;
    case "boolean":
      if (typeof x !== "boolean") throw noMatch();
      return;
    case "string":
    case "id":
      if (typeof x !== "string") throw noMatch();
      return;
    case "bytes":
      if (!(x instanceof ArrayBuffer)) throw noMatch();
      return;
    case "literal":
      if (x !== vd.value) throw noMatch();
      return;
    case "array":
      if (!Array.isArray(x)) throw noMatch();
      x.forEach((e, i) => checkValue(vd.value, e, `${path}[${i}]`));
      return;
    case "union":
      for (const alt of vd.value) {
        // Primitive alternatives are tested without building an error: a
        // nullable field would otherwise cost an exception per null.
        const quick = primitiveMatch(alt, x);
        if (quick === true) return;
        if (quick === false) continue;
        try {
          checkValue(alt, x, path);
          return;
        } catch {
          // try the next alternative
        }
      }
      throw noMatch();
    case "record":
      if (!isPlainObject(x)) throw noMatch();
      for (const [k, e] of Object.entries(x)) {
        checkValue(vd.keys, k, `${path}.keys()`);
        checkValue(vd.values.fieldType, e, `${path}.${k}`);
      }
      return;
    case "object": {
      if (!isPlainObject(x)) throw noMatch();
      const where = path ? `Path: ${path}\n` : "";
      for (const [k, f] of Object.entries(vd.value)) {
        if (x[k] === undefined) {
          if (f.optional) continue;
          throw new ArgumentValidationError(
            `Object is missing the required field \`${k}\`. Consider wrapping the field validator in \`v.optional(...)\` if this is expected.\n\n${where}Object: ${showValue(x)}\nValidator: ${showValidator(vd)}`,
          );
        }
        checkValue(f.fieldType, x[k], `${path}.${k}`);
      }
      for (const k of Object.keys(x)) {
        if (!(k in vd.value)) {
          throw new ArgumentValidationError(
            `Object contains extra field \`${k}\` that is not in the validator.\n\n${where}Object: ${showValue(x)}\nValidator: ${showValidator(vd)}`,
          );
        }
      }
      return;
    }
    default:
      throw new ArgumentValidationError(`Unsupported validator type ${vd.type}`);
  }
}

// ---------------------------------------------------------------------------
// Function lookup.
// ---------------------------------------------------------------------------

// "module/path:export" or "module/path" (default export); a ".js" suffix on
// the module is accepted, as Convex does.
const PATH_RE = /^([A-Za-z0-9_\-./]+?)(?:\.js)?(?::([A-Za-z_$][A-Za-z0-9_$]*))?$/;

// A well-formed path that names no suitable function: the backend reports this
// as a failed function call (HTTP 560), not as a bad request.
class FunctionLookupError extends Error {}

const ARGS_VALIDATORS = new WeakMap();

// Returns {udfPath, argsValidator} or throws FunctionLookupError.
function resolveFunction(path, kind) {
  const m = PATH_RE.exec(path);
  const udfPath = `${m[1]}:${m[2] ?? "default"}`;
  const mod = Object.hasOwn(MODULES, m[1]) ? MODULES[m[1]] : undefined;
  const fn = mod && Object.hasOwn(mod, m[2] ?? "default") ? mod[m[2] ?? "default"] : undefined;
  if (!fn || !fn.isPublic || !(fn.isQuery || fn.isMutation || fn.isAction)) {
    throw new FunctionLookupError(
      `Could not find public function for '${udfPath}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?`,
    );
  }
  const actual = fn.isQuery ? "Query" : fn.isMutation ? "Mutation" : "Action";
  // /api/mutation runs only mutations and /api/query only queries.
  if ((kind === "mutation" && !fn.isMutation) || (kind === "query" && !fn.isQuery)) {
    throw new FunctionLookupError(
      `Trying to execute ${udfPath} as ${kind === "mutation" ? "Mutation" : "Query"}, but it is defined as ${actual}.`,
    );
  }
  // exportArgs() is a JSON string; parse it once per function.
  if (!ARGS_VALIDATORS.has(fn)) ARGS_VALIDATORS.set(fn, JSON.parse(fn.exportArgs()));
  return { udfPath, argsValidator: ARGS_VALIDATORS.get(fn) };
}

// ---------------------------------------------------------------------------
// HTTP plumbing.
// ---------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// `body` is an object, or already-written JSON text (a function's reply).
function send(res, status, body, extraHeaders = {}) {
  if (res.headersSent) return;
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...extraHeaders,
  });
  res.end(text);
}

// Reads the body up to `limit` bytes. Past the limit it keeps no data (memory
// stays bounded) and rejects with 413 once the upload has ended: replying
// mid-upload makes many clients (fetch, reqwest) see a reset instead of the
// 413. An upload that goes on past DISCARD_CAP is cut off.
const DISCARD_CAP = 256 * 1024 * 1024;
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new HttpError(413, "RequestTooLarge", `Request body is larger than ${limit} bytes`);
    const chunks = [];
    let size = 0;
    let settled = false;
    req.on("data", (c) => {
      size += c.length;
      if (size <= limit) {
        chunks.push(c);
      } else {
        chunks.length = 0;
        if (size > limit + DISCARD_CAP && !settled) {
          settled = true;
          reject(Object.assign(tooLarge(), { closeConnection: true }));
        }
      }
    });
    req.on("end", () => {
      if (settled) return;
      settled = true;
      if (size > limit) reject(tooLarge());
      else resolve(Buffer.concat(chunks));
    });
    req.on("error", (e) => {
      if (settled) return;
      settled = true;
      reject(new HttpError(400, "BadRequest", `Error reading body: ${e.message}`));
    });
    // Client went away mid-upload: settle so nothing waits forever.
    req.on("close", () => {
      if (settled || req.complete) return;
      settled = true;
      reject(new HttpError(400, "BadRequest", "Connection closed before the body was complete"));
    });
  });
}

function parseJsonBody(buf, contentType) {
  const mime = String(contentType ?? "").split(";")[0].trim().toLowerCase();
  if (mime !== "application/json") {
    throw new HttpError(415, "BadContentType", `Expected content-type application/json, got ${JSON.stringify(contentType ?? null)}`);
  }
  try {
    return JSON.parse(buf.toString("utf8"));
  } catch (e) {
    throw new HttpError(400, "BadJsonBody", `Failed to parse the request body as JSON: ${e.message}`);
  }
}

// Request body -> {path, args (plain JS object), format}. Shape errors are the
// caller's (4xx); argument *values* are the function's business (560).
function parseUdfRequest(body) {
  if (!isPlainObject(body)) {
    throw new HttpError(400, "BadJsonBody", "Request body must be a JSON object {path, args, format}");
  }
  const { path, format } = body;
  let { args } = body;
  if (typeof path !== "string" || path.length === 0 || !PATH_RE.test(path)) {
    throw new HttpError(400, "BadConvexFunctionPath", `Invalid function path ${JSON.stringify(path ?? null)}: expected "module:function"`);
  }
  if (format !== undefined && !["json", "convex_encoded_json", "convex_cleaned_json"].includes(format)) {
    throw new HttpError(400, "BadFormat", `Unsupported format ${JSON.stringify(format)}`);
  }
  // ConvexHttpClient sends [args]; plain callers send args itself.
  if (Array.isArray(args)) {
    if (args.length !== 1) {
      throw new HttpError(400, "BadArgs", `args as an array must have exactly one element, got ${args.length}`);
    }
    args = args[0];
  }
  if (args === undefined || args === null) args = {};
  if (!isPlainObject(args)) {
    throw new HttpError(400, "BadArgs", "args must be a JSON object (or a one-element array holding one)");
  }
  return { path, args, format: format ?? "convex_encoded_json" };
}

// The backend's request id shape: 16 hex digits.
function requestId() {
  return Math.floor(Math.random() * 2 ** 52)
    .toString(16)
    .padStart(16, "0")
    .slice(-16);
}

// The reply of a function that ran, written as the backend writes it (see
// convex_values.mjs): `logLines` left out when empty, as the backend does.
function udfSuccess(value, format) {
  return `{"status":"success","value":${writeConvexJson(value ?? null, format)}}`;
}

// The reply for a function that failed, shaped like the backend's: the
// message behind "[Request ID: …] Server Error", `errorData` only for a
// ConvexError that carries data.
function udfError(e, format) {
  let message;
  let errorData;
  if (e instanceof ArgumentValidationError) {
    message = `ArgumentValidationError: ${e.message}`;
  } else if (e instanceof ConvexError || e?.name === "ConvexError") {
    message = `Uncaught ConvexError: ${e.message}`;
    if (e.data !== undefined) {
      try {
        errorData = writeConvexJson(e.data, format);
      } catch {
        errorData = JSON.stringify(String(e.data));
      }
    }
  } else if (e instanceof FunctionLookupError) {
    message = e.message;
  } else {
    message = `Uncaught ${e?.name ?? "Error"}: ${e?.message ?? String(e)}`;
  }
  const errorMessage = JSON.stringify(`[Request ID: ${requestId()}] Server Error\n${message}`);
  return `{"status":"error","errorMessage":${errorMessage}${errorData === undefined ? "" : `,"errorData":${errorData}`}}`;
}

// ---------------------------------------------------------------------------
// The front.
// ---------------------------------------------------------------------------

// `journal`: a file that keeps every committed mutation (path and JSON
// args, one line each), replayed when the front starts, so that a stopped
// and restarted front holds what it held, as a deployment does; a reset
// empties it. Without one the store lives in memory only.
export function createFront({
  adminKey = "",
  maxBodyBytes = DEFAULT_MAX_BODY_BYTES,
  journal,
  udfFailureStatus = DEFAULT_UDF_FAILURE_STATUS,
} = {}) {
  if (!UDF_FAILURE_STATUSES.includes(udfFailureStatus)) {
    throw new RangeError(`udfFailureStatus must be one of ${UDF_FAILURE_STATUSES.join(", ")}, got ${udfFailureStatus}`);
  }
  const newInstance = () => {
    const instance = convexTest(schema, MODULE_LOADERS);
    // convex-test installs its global on the first instance.
    guardWrites();
    return instance;
  };
  let t = newInstance();
  // One queue for everything touching the instance: convex-test runs one
  // transaction at a time anyway, and a single queue also orders a reset
  // after the calls that arrived before it.
  let tail = Promise.resolve();
  const enqueue = (job) => {
    const run = tail.then(job);
    tail = run.catch(() => {});
    return run;
  };
  // Before any request: calls queue behind the replay. A journal that does
  // not replay is a broken store: the process exits saying which line.
  if (journal && existsSync(journal)) {
    enqueue(async () => {
      const lines = readFileSync(journal, "utf8").split("\n").filter((line) => line !== "");
      for (const [index, line] of lines.entries()) {
        try {
          const { path, args } = JSON.parse(line);
          const { udfPath } = resolveFunction(path, "mutation");
          await t.mutation(makeFunctionReference(udfPath), jsonToConvex(args));
        } catch (e) {
          process.stderr.write(`convex-front: journal ${journal} line ${index + 1} does not replay: ${e.message}\n`);
          process.exit(1);
        }
      }
    });
  }

  async function runUdf(kind, req) {
    const { path, args: jsonArgs, format } = parseUdfRequest(req);
    let value;
    try {
      const { udfPath, argsValidator } = resolveFunction(path, kind);
      // Convex values from JSON (convex_encoded_json decoding; plain JSON
      // decodes to itself). Invalid field names etc. fail here.
      // The value checks first, with the backend's messages (field names,
      // field counts, array lengths, nesting), then convex/values' decoding.
      let args;
      try {
        measureValue(jsonArgs);
        args = jsonToConvex(jsonArgs);
      } catch (e) {
        throw new ArgumentValidationError(e.message);
      }
      checkValue(argsValidator, args, "");
      const ref = makeFunctionReference(udfPath);
      value = await enqueue(async () => {
        if (kind === "query") return t.query(ref, args);
        const result = await t.mutation(ref, args);
        // Committed: kept before the answer goes out.
        if (journal) appendFileSync(journal, JSON.stringify({ path: udfPath, args: jsonArgs }) + "\n");
        return result;
      });
    } catch (e) {
      return [udfFailureStatus, udfError(e, format)];
    }
    return [200, udfSuccess(value, format)];
  }

  // path -> {method: handler(body) -> [status, json]}, plus whether the
  // route needs the admin key and a JSON body.
  const routes = {
    "/api/mutation": { auth: true, body: true, methods: { POST: (b) => runUdf("mutation", b) } },
    "/api/query": { auth: true, body: true, methods: { POST: (b) => runUdf("query", b) } },
    "/_harness/reset": {
      auth: true,
      body: false,
      methods: {
        POST: async () => {
          // Queued, so calls that arrived earlier finish on the old store.
          await enqueue(() => {
            t = newInstance();
            if (journal) writeFileSync(journal, "");
          });
          return [200, { status: "ok" }];
        },
      },
    },
    // Readiness probe: no auth, so a container health check needs no secret.
    "/_harness/health": { auth: false, body: false, methods: { GET: async () => [200, { status: "ok" }] } },
  };

  async function handle(req, res) {
    const url = new URL(req.url ?? "/", "http://front");
    const route = Object.hasOwn(routes, url.pathname) ? routes[url.pathname] : undefined;
    if (!route) {
      req.resume();
      throw new HttpError(404, "NotFound", `No route for ${req.method} ${url.pathname}`);
    }
    const handler = Object.hasOwn(route.methods, req.method) ? route.methods[req.method] : undefined;
    if (!handler) {
      req.resume();
      const allow = Object.keys(route.methods).join(", ");
      throw Object.assign(new HttpError(405, "MethodNotAllowed", `${req.method} is not allowed on ${url.pathname}`), {
        headers: { allow },
      });
    }
    // Auth before reading the body: unauthenticated uploads are not buffered.
    if (adminKey && route.auth) {
      const got = req.headers.authorization;
      if (got !== `Convex ${adminKey}`) {
        req.resume();
        throw new HttpError(
          401,
          got === undefined ? "MissingAccessToken" : "BadAdminKey",
          got === undefined
            ? "Missing header `Authorization: Convex <admin key>`"
            : "The provided admin key was invalid for this instance",
        );
      }
    }
    let body;
    if (route.body) {
      body = parseJsonBody(await readBody(req, maxBodyBytes), req.headers["content-type"]);
    } else {
      req.resume();
    }
    const [status, reply] = await handler(body);
    send(res, status, reply);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (e instanceof HttpError) {
        // An upload cut off mid-way leaves bytes on the connection: close it.
        const extra = e.closeConnection ? { connection: "close" } : {};
        send(res, e.status, { code: e.code, message: e.message }, { ...extra, ...e.headers });
        if (e.closeConnection) res.on("finish", () => req.socket.destroy());
      } else {
        send(res, 500, { code: "InternalServerError", message: String(e?.stack ?? e) });
      }
    });
  });
  // Malformed HTTP (bad request line, oversized headers): JSON 400, no crash.
  server.on("clientError", (err, socket) => {
    if (socket.writable && !socket.destroyed) {
      const text = JSON.stringify({ code: "BadRequest", message: `Malformed HTTP request: ${err.code ?? err.message}` });
      socket.end(
        `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
      );
    } else {
      socket.destroy();
    }
  });
  return server;
}

// ---------------------------------------------------------------------------
// CLI.
// ---------------------------------------------------------------------------

// A command line the front refuses: printed naming the option, exit 2.
class UsageError extends Error {}

const VALUE_OPTIONS = {
  "--port": "port",
  "--host": "host",
  "--admin-key": "adminKey",
  "--max-body-bytes": "maxBodyBytes",
  "--journal": "journal",
  "--udf-failure-status": "udfFailureStatus",
};

function parseCli(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    let [flag, val] = argv[i].split(/=(.*)/s, 2);
    if (!Object.hasOwn(VALUE_OPTIONS, flag)) throw new UsageError(`unknown option ${JSON.stringify(argv[i])}`);
    if (val === undefined) val = argv[++i];
    if (val === undefined) throw new UsageError(`option ${flag} needs a value`);
    opts[VALUE_OPTIONS[flag]] = val;
  }
  return opts;
}

// An integer option from its text, refused naming the option otherwise.
function integerOption(name, text, valid) {
  const value = /^\d+$/.test(String(text).trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || !valid(value)) {
    throw new UsageError(`invalid value ${JSON.stringify(String(text))} for ${name}`);
  }
  return value;
}

// An environment variable, unset when empty.
function env(name) {
  const value = process.env[name];
  return value === undefined || value.trim() === "" ? undefined : value;
}

function main() {
  let config;
  try {
    const cli = parseCli(process.argv.slice(2));
    config = {
      port: integerOption("--port", cli.port ?? env("PORT") ?? 3210, (p) => p <= 65535),
      host: cli.host ?? env("HOST") ?? "127.0.0.1",
      adminKey: (cli.adminKey ?? env("CONVEX_ADMIN_KEY") ?? "").trim(),
      maxBodyBytes: integerOption(
        "--max-body-bytes",
        cli.maxBodyBytes ?? env("MAX_BODY_BYTES") ?? DEFAULT_MAX_BODY_BYTES,
        (n) => n > 0,
      ),
      journal: (cli.journal ?? env("CONVEX_JOURNAL") ?? "").trim() || undefined,
      // 200 is what the open-source backend answers; 560 is the other answer
      // the official client accepts.
      udfFailureStatus: integerOption(
        "--udf-failure-status",
        cli.udfFailureStatus ?? env("CONVEX_UDF_FAILURE_STATUS") ?? DEFAULT_UDF_FAILURE_STATUS,
        (s) => UDF_FAILURE_STATUSES.includes(s),
      ),
    };
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`convex-front: ${e.message}\n`);
    process.stderr.write(
      `usage: node server.mjs [--port N] [--host H] [--admin-key K] [--max-body-bytes N] [--journal FILE] [--udf-failure-status ${UDF_FAILURE_STATUSES.join("|")}]\n`,
    );
    process.exit(2);
  }
  const { port, host, adminKey, maxBodyBytes, journal, udfFailureStatus } = config;
  const server = createFront({ adminKey, maxBodyBytes, journal, udfFailureStatus });
  server.listen(port, host, () => {
    const { port: actual } = server.address();
    const shownHost = host.includes(":") ? `[${host}]` : host;
    // The harness waits for exactly this line and parses the port from it.
    process.stdout.write(`convex-front listening on http://${shownHost}:${actual}\n`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    // Do not let a stuck socket delay shutdown.
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main();
}
