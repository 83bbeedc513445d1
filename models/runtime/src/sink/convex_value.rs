//! Convex's values as the harness compares them: the one decoder at the read
//! boundary that turns what a Convex deployment answers (its
//! `convex_encoded_json` export) into the JSON the runtime built.
//!
//! Convex has two number types (`../shared/spec/real-systems.md` §1.1):
//! Float64, which every JSON number the runtime sends becomes, and Int64.
//! The backend writes a Float64 with serde_json's f64 writer, always with a
//! point or an exponent (`3.0`, `9007199254740992.0`, `1e16`), Int64 as
//! `{"$integer": base64}` and NaN, ±Infinity and -0 as `{"$float": base64}`
//! (8 little-endian bytes each). Read as plain JSON, `3.0` is a float: no
//! `as_i64`, another canonical text, another hash. Convex semantics say the
//! Float64 3 is the number 3 the runtime sent, so an integral Float64 within
//! ±2^53 (where every integer is exact) decodes to that integer; any other
//! Float64 stays a float. An integer the runtime sent above 2^53 comes back
//! as a float, or as another integer when Convex rounded it to one within
//! range: a genuine loss, left for the comparison to report.

use base64::Engine;
use serde_json::{Map, Number, Value};

/// The largest magnitude below which every integer is an exact f64 (2^53).
pub const MAX_EXACT_F64_INT: i64 = 1 << 53;

/// The comparable JSON of a Convex export (see the module docs). Objects
/// that are not exactly one well-formed `$integer`/`$float` stay objects,
/// and so do the special floats JSON cannot carry (NaN, ±Infinity), which a
/// comparison then finds different from anything the runtime sent.
pub fn decode_export(value: Value) -> Value {
    match value {
        Value::Number(number) => Value::Number(decode_number(number)),
        Value::Array(items) => Value::Array(items.into_iter().map(decode_export).collect()),
        Value::Object(map) => match decode_encoded(&map) {
            Some(decoded) => decoded,
            None => Value::Object(
                map.into_iter()
                    .map(|(key, item)| (key, decode_export(item)))
                    .collect(),
            ),
        },
        other => other,
    }
}

/// A JSON number as Convex means it: a float text is a Float64; integral
/// and within ±2^53 it is the integer the runtime sent.
fn decode_number(number: Number) -> Number {
    if !number.is_f64() {
        return number;
    }
    match number.as_f64() {
        Some(float) if is_exact_integer(float) => Number::from(float as i64),
        _ => number,
    }
}

fn is_exact_integer(float: f64) -> bool {
    float.fract() == 0.0 && float.abs() <= MAX_EXACT_F64_INT as f64 && !is_negative_zero(float)
}

fn is_negative_zero(float: f64) -> bool {
    float == 0.0 && float.is_sign_negative()
}

/// `{"$integer": …}` as the integer, `{"$float": …}` as the float where JSON
/// can carry it (-0, and any finite float); `None` for anything else.
fn decode_encoded(map: &Map<String, Value>) -> Option<Value> {
    if map.len() != 1 {
        return None;
    }
    let (key, Value::String(text)) = map.iter().next()? else {
        return None;
    };
    let bytes: [u8; 8] = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?
        .try_into()
        .ok()?;
    match key.as_str() {
        "$integer" => Some(Value::from(i64::from_le_bytes(bytes))),
        "$float" => {
            let float = f64::from_le_bytes(bytes);
            if is_exact_integer(float) {
                return Some(Value::from(float as i64));
            }
            Number::from_f64(float).map(Value::Number)
        }
        _ => None,
    }
}

/// Whether `convex` is what Convex makes of `sent` when its only
/// differences are integers above 2^53 that Convex holds as the nearest
/// Float64 (rounded, or written as a float): the runtime sent an integer
/// Convex cannot hold exactly. False when they are equal or differ in
/// anything else.
pub fn int_precision_lost(sent: &Value, convex: &Value) -> bool {
    fn walk(sent: &Value, convex: &Value, lost: &mut bool) -> bool {
        match (sent, convex) {
            (Value::Object(left), Value::Object(right)) => {
                left.len() == right.len()
                    && left.iter().all(|(key, item)| {
                        right.get(key).is_some_and(|other| walk(item, other, lost))
                    })
            }
            (Value::Array(left), Value::Array(right)) => {
                left.len() == right.len()
                    && left
                        .iter()
                        .zip(right)
                        .all(|(item, other)| walk(item, other, lost))
            }
            (Value::Number(left), Value::Number(right)) if left != right => {
                let rounded = match (left.as_i64(), left.as_u64()) {
                    (Some(integer), _) if integer.unsigned_abs() > MAX_EXACT_F64_INT as u64 => {
                        Some(integer as f64)
                    }
                    (None, Some(integer)) => Some(integer as f64),
                    _ => None,
                };
                let held = right.as_f64();
                let is_loss = rounded.is_some() && rounded == held;
                *lost |= is_loss;
                is_loss
            }
            _ => sent == convex,
        }
    }
    let mut lost = false;
    walk(sent, convex, &mut lost) && lost
}

/// Convex's write limits (`../shared/spec/real-systems.md` §1.1).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
pub const MAX_DOCUMENT_NESTING: usize = 16;
pub const MAX_VALUE_NESTING: usize = 64;
pub const MAX_OBJECT_FIELDS: usize = 1024;
pub const MAX_ARRAY_ELEMENTS: usize = 8192;
pub const MAX_FIELD_NAME_CHARS: usize = 1024;

/// The bytes the backend adds to every document it stores: `_id` (32
/// characters) and `_creationTime` (a Float64), counted as Convex counts.
const SYSTEM_FIELD_BYTES: usize = "_id".len() + 1 + (32 + 2) + "_creationTime".len() + 1 + 9;

/// Why a summary cannot be held by Convex as the runtime built it: Convex
/// would refuse the write, or would hold another number than the runtime
/// sent (an integer beyond ±2^53 becomes its nearest Float64).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvexValueRefusal {
    #[error(
        "field name {name:?} at `{path}` is not a Convex field name (printable ASCII, no leading `$`, at most {MAX_FIELD_NAME_CHARS} characters)"
    )]
    FieldName { path: String, name: String },
    #[error("object at `{path}` has {fields} fields (Convex allows {MAX_OBJECT_FIELDS})")]
    TooManyFields { path: String, fields: usize },
    #[error("array at `{path}` has {elements} elements (Convex allows {MAX_ARRAY_ELEMENTS})")]
    ArrayTooLong { path: String, elements: usize },
    #[error("the document is nested {nesting} levels deep (Convex allows {MAX_DOCUMENT_NESTING})")]
    TooNested { nesting: usize },
    #[error(
        "the document is {bytes} bytes as Convex counts them (Convex allows {MAX_DOCUMENT_BYTES})"
    )]
    TooLarge { bytes: usize },
    #[error("integer {value} at `{path}` is beyond ±2^53: Convex would hold its nearest Float64")]
    InexactInteger { path: String, value: String },
}

/// The first reason Convex cannot hold `summary` as the runtime's functions
/// store it (the document `{document_id, summary}`, spec §4.3), if any:
/// the hardened projection's guard, run before any store is written.
pub fn refusal_of(document_id: &str, summary: &Value) -> Option<ConvexValueRefusal> {
    let measured = match measure(summary, "summary") {
        Err(refusal) => return Some(refusal),
        Ok(measured) => measured,
    };
    // The stored document is one level above the summary, and adds its
    // two fields' names and the document id.
    let nesting = measured.nesting + 1;
    let bytes = 2
        + "document_id".len()
        + 1
        + document_id.len()
        + 2
        + "summary".len()
        + 1
        + measured.bytes
        + SYSTEM_FIELD_BYTES;
    if nesting > MAX_DOCUMENT_NESTING {
        Some(ConvexValueRefusal::TooNested { nesting })
    } else if bytes > MAX_DOCUMENT_BYTES {
        Some(ConvexValueRefusal::TooLarge { bytes })
    } else {
        None
    }
}

struct Measured {
    bytes: usize,
    nesting: usize,
}

/// Size and nesting as Convex's `crates/value` counts them (null and
/// booleans 1, numbers 9, strings their UTF-8 length + 2, containers 2 plus
/// their parts, a field its name + 1), refusing on the way what no value
/// may hold.
fn measure(value: &Value, path: &str) -> Result<Measured, ConvexValueRefusal> {
    let scalar = |bytes| Ok(Measured { bytes, nesting: 0 });
    let (bytes, inner) = match value {
        Value::Null | Value::Bool(_) => return scalar(1),
        Value::Number(number) => {
            let exact = number
                .as_i64()
                .map(|integer| integer.unsigned_abs() <= MAX_EXACT_F64_INT as u64)
                .or_else(|| number.as_u64().map(|_| false))
                .unwrap_or(true);
            if !exact {
                return Err(ConvexValueRefusal::InexactInteger {
                    path: path.to_owned(),
                    value: number.to_string(),
                });
            }
            return scalar(9);
        }
        Value::String(text) => return scalar(text.len() + 2),
        Value::Array(items) => {
            if items.len() > MAX_ARRAY_ELEMENTS {
                return Err(ConvexValueRefusal::ArrayTooLong {
                    path: path.to_owned(),
                    elements: items.len(),
                });
            }
            let mut bytes = 2;
            let mut inner = 0;
            for (index, item) in items.iter().enumerate() {
                let measured = measure(item, &format!("{path}[{index}]"))?;
                bytes += measured.bytes;
                inner = inner.max(measured.nesting);
            }
            (bytes, inner)
        }
        Value::Object(map) => {
            if map.len() > MAX_OBJECT_FIELDS {
                return Err(ConvexValueRefusal::TooManyFields {
                    path: path.to_owned(),
                    fields: map.len(),
                });
            }
            let mut bytes = 2;
            let mut inner = 0;
            for (name, item) in map {
                if !is_field_name(name) {
                    return Err(ConvexValueRefusal::FieldName {
                        path: path.to_owned(),
                        name: name.clone(),
                    });
                }
                let measured = measure(item, &format!("{path}.{name}"))?;
                bytes += name.len() + 1 + measured.bytes;
                inner = inner.max(measured.nesting);
            }
            (bytes, inner)
        }
    };
    let nesting = inner + 1;
    if nesting > MAX_VALUE_NESTING {
        return Err(ConvexValueRefusal::TooNested { nesting });
    }
    Ok(Measured { bytes, nesting })
}

/// Printable ASCII, no leading `$`, at most 1024 characters.
fn is_field_name(name: &str) -> bool {
    !name.starts_with('$')
        && name.len() <= MAX_FIELD_NAME_CHARS
        && name.bytes().all(|byte| (0x20..0x7f).contains(&byte))
}

/// `convex` with each number that Convex holds as the same Float64 as the
/// number at the same place in `reference` written as `reference` writes
/// it. Convex has no integer/float distinction for the runtime's numbers:
/// the `0.0` the runtime sent comes back as a Float64 the decoder reads as
/// the integer 0. An integer beyond ±2^53 in `reference` is never matched
/// (Convex does not hold it), so a real loss stays visible.
pub fn as_sent(convex: &Value, reference: &Value) -> Value {
    match (convex, reference) {
        (Value::Number(held), Value::Number(sent)) if held != sent => {
            let sent_exact = sent
                .as_i64()
                .is_none_or(|integer| integer.unsigned_abs() <= MAX_EXACT_F64_INT as u64)
                && !(sent.as_i64().is_none() && sent.as_u64().is_some());
            if sent_exact && held.as_f64().is_some() && held.as_f64() == sent.as_f64() {
                reference.clone()
            } else {
                convex.clone()
            }
        }
        (Value::Array(held), Value::Array(sent)) => Value::Array(
            held.iter()
                .enumerate()
                .map(|(index, item)| match sent.get(index) {
                    Some(other) => as_sent(item, other),
                    None => item.clone(),
                })
                .collect(),
        ),
        (Value::Object(held), Value::Object(sent)) => Value::Object(
            held.iter()
                .map(|(key, item)| {
                    let item = match sent.get(key) {
                        Some(other) => as_sent(item, other),
                        None => item.clone(),
                    };
                    (key.clone(), item)
                })
                .collect(),
        ),
        _ => convex.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::summary_hash;
    use serde_json::json;

    fn decode(text: &str) -> Value {
        decode_export(serde_json::from_str(text).expect("test JSON"))
    }

    #[test]
    fn integral_floats_within_2_pow_53_are_the_integers_the_runtime_sent() {
        assert_eq!(
            decode(r#"{"a":3.0,"b":42.0,"c":9007199254740992.0,"d":-9007199254740992.0,"e":0.0}"#),
            json!({"a": 3, "b": 42, "c": 9007199254740992_i64, "d": -9007199254740992_i64, "e": 0})
        );
        // Other floats stay floats.
        let other = decode(r#"[0.1,1e16,1e-7,-2.5,1.5e300]"#);
        assert_eq!(other, json!([0.1, 1e16, 1e-7, -2.5, 1.5e300]));
        assert!(other.as_array().unwrap().iter().all(Value::is_f64));
    }

    #[test]
    fn encoded_int64_and_special_floats_decode_by_their_type() {
        assert_eq!(
            decode(r#"{"i":{"$integer":"BQAAAAAAAAA="},"m":{"$integer":"AAAAAAAAAIA="}}"#),
            json!({"i": 5, "m": i64::MIN})
        );
        let zero = decode(r#"{"$float":"AAAAAAAAAIA="}"#);
        assert!(
            zero.as_f64()
                .is_some_and(|f| f == 0.0 && f.is_sign_negative())
        );
        // NaN cannot be JSON: it stays the encoded object.
        assert_eq!(
            decode(r#"{"$float":"AAAAAAAA+H8="}"#),
            json!({"$float": "AAAAAAAA+H8="})
        );
        // Not an encoding: a two-key object, a bad length.
        assert_eq!(
            decode(r#"{"$integer":"BQ==","x":1.0}"#),
            json!({"$integer": "BQ==", "x": 1})
        );
        assert_eq!(
            decode(r#"{"$integer":"BQ=="}"#),
            json!({"$integer": "BQ=="})
        );
    }

    #[test]
    fn a_backend_document_hashes_as_the_summary_the_runtime_sent() {
        let sent = json!({"latest_seq": 3, "runtime_source": {"seq": 3}, "owner_user_id": 42,
                          "metadata": {"ratio": 0.5, "n": [1, 2]}, "projected_at": "t"});
        let backend = decode(
            r#"{"latest_seq":3.0,"metadata":{"n":[1.0,2.0],"ratio":0.5},"owner_user_id":42.0,"projected_at":"t","runtime_source":{"seq":3.0}}"#,
        );
        assert_eq!(backend, sent);
        assert_eq!(summary_hash(&backend), summary_hash(&sent));
        // Read without the decoder, the same text hashes differently.
        let raw: Value = serde_json::from_str(r#"{"latest_seq":3.0}"#).unwrap();
        assert_ne!(summary_hash(&raw), summary_hash(&json!({"latest_seq": 3})));
    }

    #[test]
    fn precision_loss_is_only_an_integer_above_2_pow_53_held_as_its_float() {
        let sent = json!({"n": 9007199254740993_i64, "s": "x"});
        // Convex held 2^53 + 1 as 2^53: decoded back into range.
        assert!(int_precision_lost(
            &sent,
            &decode(r#"{"n":9007199254740992.0,"s":"x"}"#)
        ));
        // 2^60 is exact as a float, but Convex holds it as a Float64.
        let large = json!({"n": 1_i64 << 60});
        assert!(int_precision_lost(
            &large,
            &decode(r#"{"n":1.152921504606847e18}"#)
        ));
        // Equal, or another difference: not a precision loss.
        assert!(!int_precision_lost(&sent, &sent));
        assert!(!int_precision_lost(
            &sent,
            &decode(r#"{"n":9007199254740992.0,"s":"y"}"#)
        ));
        assert!(!int_precision_lost(&json!({"n": 3}), &json!({"n": 4})));
    }

    const ID: &str = "runtime/codex_worker_summary:w";

    #[test]
    fn the_guard_refuses_what_convex_refuses_or_rounds_and_nothing_else() {
        let with = |metadata: Value| json!({"document_id": ID, "metadata": metadata, "seq": 1});
        let refused = |metadata: Value| refusal_of(ID, &with(metadata));
        assert_eq!(
            refused(json!({"a": "🚀 e\u{301}", "n": 9007199254740992_i64, "f": 0.5})),
            None
        );
        assert!(matches!(
            refused(json!({"🚀": 1})),
            Some(ConvexValueRefusal::FieldName { .. })
        ));
        assert!(matches!(
            refused(json!({"$a": 1})),
            Some(ConvexValueRefusal::FieldName { .. })
        ));
        assert!(matches!(
            refused(json!({"n": 9007199254740993_i64})),
            Some(ConvexValueRefusal::InexactInteger { .. })
        ));
        assert!(matches!(
            refused(json!({"n": u64::MAX})),
            Some(ConvexValueRefusal::InexactInteger { .. })
        ));
        let fields =
            |count: usize| Value::Object((0..count).map(|i| (format!("f{i}"), json!(i))).collect());
        assert_eq!(refused(fields(1024)), None);
        assert!(matches!(
            refused(fields(1025)),
            Some(ConvexValueRefusal::TooManyFields { fields: 1025, .. })
        ));
        assert_eq!(refused(json!(vec![0; 8192])), None);
        assert!(matches!(
            refused(json!(vec![0; 8193])),
            Some(ConvexValueRefusal::ArrayTooLong { .. })
        ));
        // Stored as {document_id, summary}: the summary may be nested 15.
        let nested =
            |levels: usize| (1..levels).fold(json!({"v": 1}), |inner, _| json!({"v": inner}));
        assert_eq!(refused(nested(14)), None);
        assert!(matches!(
            refused(nested(15)),
            Some(ConvexValueRefusal::TooNested { nesting: 17 })
        ));
        assert_eq!(refused(json!("x".repeat(MAX_DOCUMENT_BYTES - 300))), None);
        assert!(matches!(
            refused(json!("x".repeat(MAX_DOCUMENT_BYTES))),
            Some(ConvexValueRefusal::TooLarge { .. })
        ));
    }

    #[test]
    fn convex_numbers_are_read_as_sent_only_where_convex_holds_the_same_number() {
        let sent =
            json!({"z": 0.0, "i": 3, "f": 0.5, "big": 9007199254740993_i64, "a": [1.0, "s"]});
        let held = decode(r#"{"z":0.0,"i":3.0,"f":0.5,"big":9007199254740992.0,"a":[1.0,"s"]}"#);
        let read = as_sent(&held, &sent);
        // 0.0 and 1.0 came back as integers and are read as sent; the
        // rounded 2^53 + 1 stays what Convex holds.
        assert_eq!(read["z"], sent["z"]);
        assert!(read["z"].is_f64() && read["a"][0].is_f64());
        assert_eq!(read["big"], json!(9007199254740992_i64));
        assert!(int_precision_lost(&sent, &read));
        // Another number stays.
        assert_eq!(
            as_sent(&json!({"i": 4}), &json!({"i": 4.5})),
            json!({"i": 4})
        );
    }
}
