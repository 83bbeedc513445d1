// Convex's values at the HTTP edge, as the open-source backend writes and
// checks them (get-convex/convex-backend, crates/value; facts in
// ../shared/spec/real-systems.md §1.1). convex-test runs the functions in
// JavaScript, where every number is a double and JSON.stringify writes 3 for
// 3.0; a Rust reader of the real backend sees `3.0`. This module makes the
// front write what the backend writes and refuse what the backend refuses.

// Limits of crates/value (size.rs, object.rs, array.rs, identifier.rs) and
// of documents (crates/common/src/document.rs).
export const MAX_USER_SIZE = 1 << 20;
export const MAX_NESTING = 64;
export const MAX_DOCUMENT_NESTING = 16;
export const MAX_OBJECT_FIELDS = 1024;
export const MAX_ARRAY_LEN = 8192;
export const MAX_FIELD_NAME_LENGTH = 1024;

// A value Convex refuses; `code` is the backend's short code
// (ErrorMetadata::bad_request's first argument).
export class ConvexValueError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// ---------------------------------------------------------------------------
// Float64 text, as serde_json writes an f64 (ryu's `format64`).
// ---------------------------------------------------------------------------

// The shortest digits that round-trip, and the decimal exponent: value =
// 0.DIGITS × 10^point. JS's toExponential() without an argument gives exactly
// the shortest round-trip digits (ECMA-262 Number::toString's rule, the same
// closest-candidate choice ryu makes).
function shortestDigits(abs) {
  const [mantissa, exponent] = abs.toExponential().split("e");
  const digits = mantissa.replace(".", "");
  return { digits, point: Number(exponent) + 1 };
}

// ryu's layout: plain with ".0" for integers of up to 16 digits, plain with a
// point inside up to 16 integer digits, "0.000ddd" down to 1e-5, otherwise
// "de±N" or "d.ddde±N" (no "+", no leading zeros in the exponent).
export function formatFloat64(x) {
  if (!Number.isFinite(x)) throw new RangeError(`not a finite float64: ${x}`);
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const { digits, point } = shortestDigits(Math.abs(x));
  const length = digits.length;
  const k = point - length;
  if (k >= 0 && point <= 16) return `${sign}${digits}${"0".repeat(k)}.0`;
  if (point > 0 && point <= 16) return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
  if (point > -5 && point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`;
  const exponent = point - 1;
  if (length === 1) return `${sign}${digits}e${exponent}`;
  return `${sign}${digits[0]}.${digits.slice(1)}e${exponent}`;
}

// ---------------------------------------------------------------------------
// Writing values.
// ---------------------------------------------------------------------------

function base64OfLittleEndian(write) {
  const buffer = Buffer.alloc(8);
  write(buffer);
  return buffer.toString("base64");
}

// Whether a float64 has no plain JSON form in convex_encoded_json.
function isSpecialFloat(x) {
  return !Number.isFinite(x) || Object.is(x, -0);
}

// Objects are ordered maps in Convex (BTreeMap by field name); field names
// are ASCII, where UTF-16 order is byte order.
function sortedKeys(object) {
  return Object.keys(object)
    .filter((key) => object[key] !== undefined)
    .sort();
}

// Writes a Convex value (null, boolean, number, bigint, string, ArrayBuffer,
// array, object) as the backend does in `format`:
// - convex_encoded_json: Float64 as ryu text; NaN, ±Infinity and -0 as
//   {"$float": base64 of the 8 little-endian bytes}; Int64 as {"$integer": …};
//   bytes as {"$bytes": …};
// - json / convex_cleaned_json: Int64 as a decimal string, bytes as base64,
//   non-finite floats as their names ("NaN", "Infinity", "-Infinity").
export function writeConvexJson(value, format = "convex_encoded_json") {
  const encoded = format === "convex_encoded_json";
  const write = (x) => {
    if (x === null || x === undefined) return "null";
    switch (typeof x) {
      case "boolean":
        return x ? "true" : "false";
      case "string":
        return JSON.stringify(x);
      case "number":
        if (encoded && isSpecialFloat(x)) {
          return `{"$float":${JSON.stringify(base64OfLittleEndian((b) => b.writeDoubleLE(x)))}}`;
        }
        if (!Number.isFinite(x)) return JSON.stringify(String(x));
        return formatFloat64(x);
      case "bigint":
        if (encoded) return `{"$integer":${JSON.stringify(base64OfLittleEndian((b) => b.writeBigInt64LE(x)))}}`;
        return JSON.stringify(x.toString());
      case "object":
        break;
      default:
        throw new TypeError(`not a Convex value: ${typeof x}`);
    }
    if (x instanceof ArrayBuffer) {
      const text = JSON.stringify(Buffer.from(x).toString("base64"));
      return encoded ? `{"$bytes":${text}}` : text;
    }
    if (Array.isArray(x)) return `[${x.map(write).join(",")}]`;
    return `{${sortedKeys(x)
      .map((key) => `${JSON.stringify(key)}:${write(x[key])}`)
      .join(",")}}`;
  };
  return write(value);
}

// ---------------------------------------------------------------------------
// Checking values.
// ---------------------------------------------------------------------------

// crates/sync_types identifier.rs `check_valid_field_name`.
export function checkFieldName(name) {
  if (name.startsWith("$")) {
    throw new ConvexValueError("InvalidFieldName", `Field name ${name} starts with '$', which is reserved.`);
  }
  for (const c of name) {
    const code = c.codePointAt(0);
    if (code > 0x7f || code < 0x20 || code === 0x7f) {
      throw new ConvexValueError(
        "InvalidFieldName",
        `Field name ${name} has invalid character '${c}': Field names can only contain non-control ASCII characters`,
      );
    }
  }
  if (name.length > MAX_FIELD_NAME_LENGTH) {
    throw new ConvexValueError(
      "InvalidFieldName",
      `Field name is too long (${name.length} > maximum ${MAX_FIELD_NAME_LENGTH})`,
    );
  }
}

// humansize's BINARY format, as the backend prints sizes: "1 MiB",
// "1.05 MiB", "512 B" (two decimals, trailing zeros dropped).
export function formatBinarySize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const text = unit === 0 ? String(value) : String(Number(value.toFixed(2)));
  return `${text} ${units[unit]}`;
}

function isEncodedObject(x) {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return false;
  const keys = Object.keys(x);
  return keys.length === 1 && ["$integer", "$float", "$bytes"].includes(keys[0]);
}

// Walks a value as JSON (convex_encoded_json: {"$integer": …} and friends
// are scalars) and returns {size, nesting} as crates/value defines them
// (size.rs: scalars 1 or 9, strings and bytes their length + 2, arrays and
// objects 2 + their parts). Throws ConvexValueError at the first field name,
// field count, array length or nesting Convex refuses.
export function measureValue(x) {
  if (x === null || x === undefined || typeof x === "boolean") return { size: 1, nesting: 0 };
  if (typeof x === "number" || typeof x === "bigint") return { size: 9, nesting: 0 };
  if (typeof x === "string") return { size: Buffer.byteLength(x) + 2, nesting: 0 };
  if (x instanceof ArrayBuffer) return { size: x.byteLength + 2, nesting: 0 };
  if (isEncodedObject(x)) {
    return { size: "$bytes" in x ? Buffer.from(x.$bytes, "base64").length + 2 : 9, nesting: 0 };
  }
  let size = 2;
  let inner = 0;
  if (Array.isArray(x)) {
    if (x.length > MAX_ARRAY_LEN) {
      throw new ConvexValueError("ArrayTooLong", `Array length is too long (${x.length} > maximum length ${MAX_ARRAY_LEN})`);
    }
    for (const item of x) {
      const m = measureValue(item);
      size += m.size;
      inner = Math.max(inner, m.nesting);
    }
  } else {
    const keys = Object.keys(x).filter((key) => x[key] !== undefined);
    if (keys.length > MAX_OBJECT_FIELDS) {
      throw new ConvexValueError(
        "TooManyFieldsError",
        `Object has too many fields (${keys.length} > maximum number ${MAX_OBJECT_FIELDS})`,
      );
    }
    for (const key of keys) {
      checkFieldName(key);
      const m = measureValue(x[key]);
      size += key.length + 1 + m.size;
      inner = Math.max(inner, m.nesting);
    }
  }
  const nesting = inner + 1;
  if (nesting > MAX_NESTING) {
    throw new ConvexValueError(
      "TooNestedError",
      `Value is too nested (nested ${nesting} levels deep > maximum nesting ${MAX_NESTING})`,
    );
  }
  return { size, nesting };
}

// The checks of a document the backend writes (insert, replace, the result
// of a patch): every value check, then nesting at most 16 and size at most
// 1 MiB counted with the system fields the backend adds (`_id`, 32
// characters, and `_creationTime`, a float64).
export function checkDocument(document) {
  const { size, nesting } = measureValue(document);
  const systemFields = "_id".length + 1 + (32 + 2) + "_creationTime".length + 1 + 9;
  if (nesting > MAX_DOCUMENT_NESTING) {
    throw new ConvexValueError(
      "TooNestedError",
      `Document is too nested (nested ${nesting} levels deep > maximum nesting ${MAX_DOCUMENT_NESTING})`,
    );
  }
  const total = size + systemFields;
  if (total > MAX_USER_SIZE) {
    throw new ConvexValueError(
      "ValueTooLargeError",
      `Value is too large (${formatBinarySize(total)} > maximum size ${formatBinarySize(MAX_USER_SIZE)})`,
    );
  }
}
