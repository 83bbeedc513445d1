//! The value space of summaries' free-form fields: the kinds of worker
//! metadata a scenario weighs (`[values]`), and each kind's variants as
//! plain data. A case names a value by kind and variant, so a stored case
//! stays small and shrinking moves between variants; the value itself is
//! built here, the same for the driver and the oracle.
//!
//! The variants sit on both sides of Convex's limits
//! (`../shared/spec/real-systems.md` §1.1): field names (printable ASCII),
//! integers (exact only within ±2^53), document nesting (16), fields per
//! object (1024), array elements (8192) and document size (1 MiB).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One kind of metadata value; its TOML name is `name()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// Short ASCII strings, as the system writes today.
    Plain,
    /// Astral-plane characters, combining marks and mixed scripts in
    /// values, under ASCII field names.
    UnicodeValues,
    /// The same characters in field names, including names whose order
    /// differs under UTF-16 and code-point (byte) ordering: Convex refuses
    /// any non-ASCII field name.
    UnicodeKeys,
    /// Empty strings, objects and arrays.
    Empty,
    /// Nulls in nullable places.
    Nulls,
    /// Integers just below, at and above 2^53, both signs.
    BigIntegers,
    /// Fractional, tiny and huge floats.
    Floats,
    /// A negative zero (Postgres keeps it as `0.0`).
    NegativeZero,
    /// Objects nested near and past Convex's document nesting.
    Deep,
    /// Objects near and past 1024 fields.
    Wide,
    /// Arrays near and past 8192 elements.
    LongArrays,
    /// A string that brings the document near 1 MiB, below and above.
    Large,
}

impl ValueKind {
    /// Every kind, in the order scenarios list them.
    pub const ALL: [ValueKind; 12] = [
        ValueKind::Plain,
        ValueKind::UnicodeValues,
        ValueKind::UnicodeKeys,
        ValueKind::Empty,
        ValueKind::Nulls,
        ValueKind::BigIntegers,
        ValueKind::Floats,
        ValueKind::NegativeZero,
        ValueKind::Deep,
        ValueKind::Wide,
        ValueKind::LongArrays,
        ValueKind::Large,
    ];

    /// The name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Plain => "plain",
            ValueKind::UnicodeValues => "unicode_values",
            ValueKind::UnicodeKeys => "unicode_keys",
            ValueKind::Empty => "empty",
            ValueKind::Nulls => "nulls",
            ValueKind::BigIntegers => "big_integers",
            ValueKind::Floats => "floats",
            ValueKind::NegativeZero => "negative_zero",
            ValueKind::Deep => "deep",
            ValueKind::Wide => "wide",
            ValueKind::LongArrays => "long_arrays",
            ValueKind::Large => "large",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Every name, comma separated, for error messages.
    pub fn names() -> String {
        Self::ALL.map(ValueKind::name).join(", ")
    }

    /// How many variants `metadata` builds for this kind.
    pub fn variants(self) -> u8 {
        match self {
            ValueKind::Plain => 2,
            ValueKind::UnicodeValues => 3,
            ValueKind::UnicodeKeys => 3,
            ValueKind::Empty => 2,
            ValueKind::Nulls => 2,
            ValueKind::BigIntegers => BIG_INTEGERS.len() as u8,
            ValueKind::Floats => FLOATS.len() as u8,
            ValueKind::NegativeZero => 1,
            ValueKind::Deep => 4,
            ValueKind::Wide => 4,
            ValueKind::LongArrays => 4,
            ValueKind::Large => 2,
        }
    }

    /// Variant `variant` (taken modulo `variants()`) of this kind: a
    /// metadata object, always with the `region` the system writes.
    pub fn metadata(self, variant: u8) -> Value {
        let variant = usize::from(variant % self.variants());
        let extra = match self {
            ValueKind::Plain => {
                [json!({}), json!({"zone": "b", "tier": "standard"})][variant].clone()
            }
            ValueKind::UnicodeValues => [
                json!({"label": "rocket 🚀 𝄞 𐍈"}),
                json!({"label": "e\u{301} n\u{303} \u{5d0}\u{5d1} Привет 日本語 ١٢٣"}),
                json!({"labels": ["\u{ff61}", "😀", "\u{e000}", "a"]}),
            ][variant]
                .clone(),
            // U+FF61 sorts after U+1F600 in UTF-16 (the surrogate 0xD83D
            // is below 0xFF61) but before it by code point and by bytes.
            ValueKind::UnicodeKeys => [
                json!({"\u{ff61}": 1, "😀": 2}),
                json!({"región": "eu", "e\u{301}": "combining"}),
                json!({"nested": {"𝄞": "clef"}}),
            ][variant]
                .clone(),
            ValueKind::Empty => [
                json!({"note": ""}),
                json!({"tags": [], "extra": {}, "note": ""}),
            ][variant]
                .clone(),
            ValueKind::Nulls => [
                json!({"zone": null}),
                json!({"tags": [null, "a"], "extra": {"x": null}}),
            ][variant]
                .clone(),
            ValueKind::BigIntegers => json!({"count": BIG_INTEGERS[variant]}),
            ValueKind::Floats => json!({"ratio": FLOATS[variant]}),
            ValueKind::NegativeZero => json!({"offset": -0.0}),
            // The metadata object is one level above `extra`'s value, the
            // summary one above it and Convex's stored document (`{document_id,
            // summary}`) one above that: stored documents nested 14 to 17
            // levels, Convex's limit being 16.
            ValueKind::Deep => json!({"extra": nested(DEEP_LEVELS[variant])}),
            ValueKind::Wide => json!({"extra": wide(WIDE_FIELDS[variant])}),
            ValueKind::LongArrays => json!({"samples": vec![1; ARRAY_ELEMENTS[variant]]}),
            ValueKind::Large => json!({"blob": "x".repeat(LARGE_BYTES[variant])}),
        };
        let mut metadata = Map::new();
        metadata.insert("region".to_owned(), json!(WORKER_REGION));
        if let Value::Object(extra) = extra {
            metadata.extend(extra);
        }
        Value::Object(metadata)
    }
}

impl std::fmt::Display for ValueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The region every generated worker reports (the system's own metadata).
pub const WORKER_REGION: &str = "us-central1";

const EXACT: i64 = 1 << 53;
const BIG_INTEGERS: [i64; 6] = [EXACT - 1, EXACT, -EXACT, EXACT + 1, -(EXACT + 1), i64::MAX];
const FLOATS: [f64; 5] = [0.5, -2.25, 0.1, 1.5e-7, 1.5e300];
/// Levels of `extra`'s value: the metadata's nesting is one more, the
/// summary's two more, the stored document's three more (14 to 17).
const DEEP_LEVELS: [usize; 4] = [11, 12, 13, 14];
const WIDE_FIELDS: [usize; 4] = [1023, 1024, 1025, 1026];
const ARRAY_ELEMENTS: [usize; 4] = [8191, 8192, 8193, 8194];
/// 16 KiB on either side of the 1 MiB document limit, far enough from it
/// that the summary's other fields do not decide the side.
const LARGE_BYTES: [usize; 2] = [(1 << 20) - (16 << 10), (1 << 20) + (16 << 10)];

/// An object nested `levels` deep (1: `{"v": 1}`).
fn nested(levels: usize) -> Value {
    (1..levels).fold(json!({"v": 1}), |inner, _| json!({"v": inner}))
}

/// An object with `fields` fields.
fn wide(fields: usize) -> Value {
    Value::Object(
        (0..fields)
            .map(|index| (format!("f{index:04}"), json!(index)))
            .collect(),
    )
}

/// The value weights of a scenario: which kinds metadata steps draw, and
/// how often. Without a `[values]` table only `plain` is drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueWeights(pub Vec<(ValueKind, u32)>);

impl Default for ValueWeights {
    fn default() -> Self {
        ValueWeights(vec![(ValueKind::Plain, 1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_once_and_every_variant_is_an_object_with_the_region() {
        let names: std::collections::BTreeSet<&str> =
            ValueKind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(names.len(), ValueKind::ALL.len());
        for kind in ValueKind::ALL {
            assert_eq!(ValueKind::from_name(kind.name()), Some(kind));
            for variant in 0..kind.variants() {
                let metadata = kind.metadata(variant);
                assert_eq!(metadata["region"], WORKER_REGION, "{kind}");
            }
            assert_eq!(kind.metadata(kind.variants()), kind.metadata(0));
        }
    }

    #[test]
    fn the_limits_are_straddled() {
        fn depth(value: &Value) -> usize {
            match value {
                Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
                Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        let depths: Vec<usize> = (0..4)
            .map(|v| depth(&ValueKind::Deep.metadata(v)))
            .collect();
        assert_eq!(depths, [12, 13, 14, 15]);
        let wide = ValueKind::Wide.metadata(1);
        assert_eq!(wide["extra"].as_object().unwrap().len(), 1024);
        let long = ValueKind::LongArrays.metadata(2);
        assert_eq!(long["samples"].as_array().unwrap().len(), 8193);
        assert!(ValueKind::BigIntegers.metadata(3)["count"] == json!(9007199254740993_i64));
    }
}
