//! Canonical JSON and the two hashes of the system: the Khala `payload_hash`
//! (spec §6.1) and the checkpoint `summary_hash` used for idempotency and
//! parity (spec §6.3, option b).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Encodes `value` as the canonical JSON of spec §6.1: object keys sorted
/// byte-wise (UTF-8), arrays in order, no whitespace, Jason-style string
/// escaping (uppercase `\u00XX` for control bytes, everything else raw) and
/// Erlang-style shortest floats (`1.0`, `0.1`, `1.0e20`).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            if number.is_f64() {
                // A JSON number that parsed as a float keeps its float encoding.
                out.push_str(&erlang_short_float(number.as_f64().unwrap_or(0.0)));
            } else {
                out.push_str(&number.to_string());
            }
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // `str` ordering is byte-wise over UTF-8, which is what the runtime used.
            entries.sort_by(|left, right| left.0.as_bytes().cmp(right.0.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            control if (control as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04X}", control as u32));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// Formats a float the way Erlang's `float_to_binary(F, [:short])` does, as
/// far as the spec can tell ([INFERRED] in §6.1): the shortest digits that
/// round-trip, in plain notation with at least one fractional digit, or in
/// scientific notation `d.ddde±N` when that is shorter.
pub fn erlang_short_float(value: f64) -> String {
    if !value.is_finite() {
        // JSON cannot carry these; serde_json never produces them.
        return "null".to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.2345e3".
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };

    let scientific_form = {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        format!("{sign}{first}.{rest}e{exponent}")
    };
    let plain_form = {
        let point = exponent + 1;
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            let zeros = "0".repeat(point as usize - digits.len());
            format!("{sign}{digits}{zeros}.0")
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            format!("{sign}{whole}.{fraction}")
        }
    };
    if scientific_form.len() < plain_form.len() {
        scientific_form
    } else {
        plain_form
    }
}

/// The raw 32-byte SHA-256 of the canonical JSON: what the Khala sink stores
/// in `payload_hash` (spec §4.4 step 2), over the full summary.
pub fn payload_hash(value: &Value) -> [u8; 32] {
    Sha256::digest(canonical_json(value).as_bytes()).into()
}

/// `"sha256:" + lowercase hex`: the form of the shared fixtures (spec §6.2).
pub fn sha256_canonical_json(value: &Value) -> String {
    format!("sha256:{}", hex::encode(payload_hash(value)))
}

/// The checkpoint `summary_hash` of this model, and the parity hash of a
/// summary.
///
/// The original hashed Erlang's External Term Format of the canonicalised
/// summary (spec §6.3). This model takes option (b) of §6.3 instead and
/// defines the hash as the lowercase hex SHA-256 (64 characters, no prefix)
/// of the canonical JSON of §6.1 with the top-level key `projected_at`
/// removed; nested keys of that name are kept. It has the property the
/// original relied on: re-projecting unchanged state later hashes the same.
/// One checkpoint table never mixes it with the ETF hash.
pub fn summary_hash(summary: &Value) -> String {
    let hashed = match summary {
        Value::Object(map) => {
            let mut without = map.clone();
            without.remove("projected_at");
            Value::Object(without)
        }
        other => other.clone(),
    };
    hex::encode(Sha256::digest(canonical_json(&hashed).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The five vectors of spec §6.2: input, canonical JSON, hash.
    fn check_vector(input: &str, canonical: &str, hash: &str) {
        let value: Value = serde_json::from_str(input).expect("vector input is JSON");
        assert_eq!(canonical_json(&value), canonical);
        assert_eq!(sha256_canonical_json(&value), hash);
    }

    #[test]
    fn vector_1_sorted_flat_object() {
        check_vector(
            r#"{"b":2,"a":1}"#,
            r#"{"a":1,"b":2}"#,
            "sha256:43258cff783fe7036d8a43033f830adfc60ec037382473548ac742b888292777",
        );
    }

    #[test]
    fn vector_2_nested_sync_payload() {
        check_vector(
            r#"{"topic":"runtime.codex_worker_summaries","payload":{"status":"running","metadata":{"region":"us-central1","flags":["a","b","c"]},"seq":99},"doc_key":"org_123:worker_456"}"#,
            r#"{"doc_key":"org_123:worker_456","payload":{"metadata":{"flags":["a","b","c"],"region":"us-central1"},"seq":99,"status":"running"},"topic":"runtime.codex_worker_summaries"}"#,
            "sha256:bf367b161129295cb3fab72a7eae88f8602207d4fc8fcf4510c4d5fa0bcb5317",
        );
    }

    #[test]
    fn vector_3_bool_null_array() {
        check_vector(
            r#"{"tags":["z","a"],"active":true,"deleted":null,"retry_after_ms":1500}"#,
            r#"{"active":true,"deleted":null,"retry_after_ms":1500,"tags":["z","a"]}"#,
            "sha256:b5ef670c5e47639c44a0ed4ba6901df6b0e7f59e41e4102bb26e76fb1f4af946",
        );
    }

    #[test]
    fn vector_4_string_escaping() {
        // The `message` value is `line`, a backslash, `n`, `break`.
        check_vector(
            r#"{"message":"line\\nbreak","quote":"\"khala\"","path":"docs/sync/thoughts.md"}"#,
            r#"{"message":"line\\nbreak","path":"docs/sync/thoughts.md","quote":"\"khala\""}"#,
            "sha256:5da82c8c6bf15cceb33ae20ba89c0adb33d030c5d65824d138936fae7a1ab3d8",
        );
    }

    #[test]
    fn vector_5_array_of_objects() {
        check_vector(
            r#"{"events":[{"watermark":2,"topic":"runtime.run_summaries"},{"topic":"runtime.run_summaries","watermark":3}]}"#,
            r#"{"events":[{"topic":"runtime.run_summaries","watermark":2},{"topic":"runtime.run_summaries","watermark":3}]}"#,
            "sha256:700bae9e6bc89b1810ee4cc08c459cc2a02ccb13fcde1949b10adfa031e8212d",
        );
    }

    #[test]
    fn control_characters_use_uppercase_hex_and_short_escapes() {
        let value = json!({"s": "\u{1f}\u{08}\t\n\u{0c}\r/\u{7f}é\u{2028}"});
        assert_eq!(
            canonical_json(&value),
            "{\"s\":\"\\u001F\\b\\t\\n\\f\\r/\u{7f}é\u{2028}\"}"
        );
    }

    #[test]
    fn keys_sort_byte_wise_at_every_depth_and_arrays_keep_order() {
        let left = json!({"z": {"b": 1, "a": [3, 1, 2]}, "\u{e000}": 1, "\u{10000}": 2, "a": {}});
        let right = json!({"a": {}, "\u{10000}": 2, "\u{e000}": 1, "z": {"a": [3, 1, 2], "b": 1}});
        assert_eq!(canonical_json(&left), canonical_json(&right));
        // U+E000 encodes as EE 80 80, U+10000 as F0 90 80 80: byte order puts
        // both after ASCII and E000 first (UTF-16 order would put U+10000 first).
        assert_eq!(
            canonical_json(&left),
            "{\"a\":{},\"z\":{\"a\":[3,1,2],\"b\":1},\"\u{e000}\":1,\"\u{10000}\":2}"
        );
    }

    #[test]
    fn floats_follow_the_erlang_short_form() {
        for (value, expected) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1.0e20, "1.0e20"),
            (-0.0, "-0.0"),
            (1234.5, "1234.5"),
            (1.0e-5, "1.0e-5"),
            (100.0, "100.0"),
            (2.5e-3, "0.0025"),
        ] {
            assert_eq!(erlang_short_float(value), expected, "for {value}");
        }
        assert_eq!(
            canonical_json(&json!({"x": 1.5, "n": 7})),
            r#"{"n":7,"x":1.5}"#
        );
    }

    #[test]
    fn summary_hash_ignores_top_level_projected_at_only() {
        let first = json!({"a": 1, "projected_at": "2026-02-19T20:00:00.000000Z", "n": {"projected_at": 1}});
        let later = json!({"a": 1, "projected_at": "2026-02-20T20:00:00.000000Z", "n": {"projected_at": 1}});
        let nested_changed = json!({"a": 1, "projected_at": "x", "n": {"projected_at": 2}});
        assert_eq!(summary_hash(&first), summary_hash(&later));
        assert_ne!(summary_hash(&first), summary_hash(&nested_changed));
        assert_eq!(summary_hash(&first).len(), 64);
        assert!(
            summary_hash(&first)
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn payload_hash_covers_projected_at() {
        let first = json!({"a": 1, "projected_at": "t1"});
        let later = json!({"a": 1, "projected_at": "t2"});
        assert_ne!(payload_hash(&first), payload_hash(&later));
    }
}
