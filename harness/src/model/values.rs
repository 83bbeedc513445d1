//! The value space of summaries' free-form fields: the kinds of worker
//! metadata a scenario weighs (`[values]`), the kinds of free text
//! (`[texts]`: terminal reasons, owner scopes, workspace and Codex home
//! refs), and each kind's variants as plain data. A case names a value by
//! kind and variant, so a stored case stays small and shrinking moves
//! between variants; the value itself is built here, the same for the
//! driver and the oracle.
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
    /// Integers just below, at and above 2^53, both signs, alone and in an
    /// array.
    BigIntegers,
    /// Fractional, tiny and huge floats, alone and in an array beside an
    /// integral one (`2.0`).
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
    /// A string that brings the stored document to exactly 1 MiB as Convex
    /// counts it, and to one byte over. How long it must be depends on the
    /// rest of the document, so the oracle sizes it when the step is
    /// played (`Oracle::metadata_sent`); `metadata` gives it empty.
    ExactSize,
}

impl ValueKind {
    /// Every kind, in the order scenarios list them.
    pub const ALL: [ValueKind; 13] = [
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
        ValueKind::ExactSize,
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
            ValueKind::ExactSize => "exact_size",
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
            ValueKind::ExactSize => EXACT_SIZES.len() as u8,
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
            // Also in an array: Convex holds each element as a Float64 too.
            ValueKind::BigIntegers => {
                json!({"count": BIG_INTEGERS[variant], "counts": [BIG_INTEGERS[variant]]})
            }
            // Also in an array, beside an integral float: Convex holds
            // `2.0` as the Float64 2 and exports it as `2.0`, which reads
            // back as the integer 2, in arrays as anywhere.
            ValueKind::Floats => {
                json!({"ratio": FLOATS[variant], "ratios": [FLOATS[variant], 2.0]})
            }
            ValueKind::NegativeZero => json!({"offset": -0.0}),
            // The metadata object is one level above `extra`'s value, the
            // summary one above it and Convex's stored document (`{document_id,
            // summary}`) one above that: stored documents nested 14 to 17
            // levels, Convex's limit being 16.
            ValueKind::Deep => json!({"extra": nested(DEEP_LEVELS[variant])}),
            ValueKind::Wide => json!({"extra": wide(WIDE_FIELDS[variant])}),
            ValueKind::LongArrays => json!({"samples": vec![1; ARRAY_ELEMENTS[variant]]}),
            ValueKind::Large => json!({"blob": "x".repeat(LARGE_BYTES[variant])}),
            ValueKind::ExactSize => json!({EXACT_SIZE_FIELD: ""}),
        };
        let mut metadata = Map::new();
        metadata.insert("region".to_owned(), json!(WORKER_REGION));
        if let Value::Object(extra) = extra {
            metadata.extend(extra);
        }
        Value::Object(metadata)
    }

    /// The size in Convex's bytes the stored document of variant `variant`
    /// must have, for the kinds sized when played (`exact_size`).
    pub fn exact_size(self, variant: u8) -> Option<usize> {
        let variant = usize::from(variant % self.variants());
        (self == ValueKind::ExactSize).then(|| EXACT_SIZES[variant])
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
/// The last three are ties of the short form: `0.0015` and `1.5e-3` (and
/// likewise the others) are equally long, and spec §6.1 writes the plain
/// one. Three draws in eight are ties, so a short run meets one.
const FLOATS: [f64; 8] = [0.5, -2.25, 0.1, 1.5e-7, 1.5e300, 0.0015, -0.0025, 0.0012];
/// Levels of `extra`'s value: the metadata's nesting is one more, the
/// summary's two more, the stored document's three more (14 to 17).
const DEEP_LEVELS: [usize; 4] = [11, 12, 13, 14];
const WIDE_FIELDS: [usize; 4] = [1023, 1024, 1025, 1026];
const ARRAY_ELEMENTS: [usize; 4] = [8191, 8192, 8193, 8194];
/// 16 KiB on either side of the 1 MiB document limit, far enough from it
/// that the summary's other fields do not decide the side.
const LARGE_BYTES: [usize; 2] = [(1 << 20) - (16 << 10), (1 << 20) + (16 << 10)];

/// `exact_size`'s documents: at Convex's 1 MiB limit, and one byte over.
const EXACT_SIZES: [usize; 2] = [1 << 20, (1 << 20) + 1];
/// The metadata field `exact_size` pads.
pub const EXACT_SIZE_FIELD: &str = "padding";

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

/// One kind of free-text summary field (`terminal_reason`,
/// `workspace_ref`, `codex_home_ref`, `owner_guest_scope`); its TOML name
/// in `[texts]` is `name()`. The strings are the metadata's string space
/// (astral-plane characters, combining marks, mixed scripts, right-to-left
/// text, empty strings) plus what only a free-text field shows: control
/// characters canonical JSON must escape (`\u001F` uppercase, spec §6.1),
/// padding a trim would remove, quotes and backslashes, and the longest
/// string the runtime's `varchar(255)` columns hold.
///
/// Two strings are never drawn, because nothing can carry them to a
/// summary: U+0000 (PostgreSQL's `text`, `varchar` and `jsonb` refuse it,
/// so the authority write fails before any projection, in the original as
/// here) and a lone surrogate (not a Rust `String`, nor valid UTF-8 for
/// PostgreSQL). Strings near Convex's 1 MiB document limit are metadata's
/// `large`: a run's terminal reason that long would need the oracle to keep
/// every run document Convex could hold, as it does for workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    /// The field is `null` (a run finished without a reason, a worker
    /// created without a workspace).
    Null,
    /// Short ASCII, as the system writes today.
    Plain,
    /// Characters outside the Basic Multilingual Plane (four UTF-8 bytes,
    /// two UTF-16 units).
    Astral,
    /// Decomposed letters: a base and a combining mark (not NFC).
    Combining,
    /// Cyrillic, CJK, Arabic digits and right-to-left Hebrew and Arabic
    /// beside Latin, with a right-to-left mark.
    MixedScripts,
    /// The empty string (not `null`).
    Empty,
    /// Control characters, padding whitespace, quotes and backslashes.
    Control,
    /// 255 characters, the `varchar(255)` limit, in one- and four-byte
    /// characters.
    Long,
}

impl TextKind {
    /// Every kind, in the order scenarios list them.
    pub const ALL: [TextKind; 8] = [
        TextKind::Null,
        TextKind::Plain,
        TextKind::Astral,
        TextKind::Combining,
        TextKind::MixedScripts,
        TextKind::Empty,
        TextKind::Control,
        TextKind::Long,
    ];

    /// The name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            TextKind::Null => "null",
            TextKind::Plain => "plain",
            TextKind::Astral => "astral",
            TextKind::Combining => "combining",
            TextKind::MixedScripts => "mixed_scripts",
            TextKind::Empty => "empty",
            TextKind::Control => "control",
            TextKind::Long => "long",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Every name, comma separated, for error messages.
    pub fn names() -> String {
        Self::ALL.map(TextKind::name).join(", ")
    }

    /// How many variants `text` builds for this kind.
    pub fn variants(self) -> u8 {
        match self {
            TextKind::Null | TextKind::Empty => 1,
            TextKind::Plain
            | TextKind::Astral
            | TextKind::Combining
            | TextKind::MixedScripts
            | TextKind::Long => 2,
            TextKind::Control => 3,
        }
    }

    /// Variant `variant` (taken modulo `variants()`) of this kind: the
    /// string, or `None` for `null`.
    pub fn text(self, variant: u8) -> Option<String> {
        let variant = usize::from(variant % self.variants());
        let text = match self {
            TextKind::Null => return None,
            TextKind::Plain => ["timeout", "exit code 137"][variant].to_owned(),
            TextKind::Astral => ["rate limit 🚀", "𝄞𐍈😀"][variant].to_owned(),
            TextKind::Combining => ["e\u{301}", "cafe\u{301} n\u{303}o"][variant].to_owned(),
            TextKind::MixedScripts => [
                "Привет 日本語 ١٢٣",
                "\u{5d0}\u{5d1} abc \u{627}\u{644}\u{200f}!",
            ][variant]
                .to_owned(),
            TextKind::Empty => String::new(),
            // Jason escapes 0x01, 0x0B and 0x1F as `\u0001`, `\u000B`,
            // `\u001F` (uppercase) and emits DEL, U+2028 and `/` raw.
            TextKind::Control => [
                " padded\t\n",
                "line\u{1}\u{b}\u{1f}end",
                "\"quoted\" \\ /\u{7f}\u{2028}",
            ][variant]
                .to_owned(),
            TextKind::Long => [
                "x".repeat(TEXT_CHARACTERS_MAX),
                "🚀".repeat(TEXT_CHARACTERS_MAX),
            ][variant]
                .clone(),
        };
        Some(text)
    }
}

impl std::fmt::Display for TextKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The characters a `varchar(255)` column of the runtime holds.
pub const TEXT_CHARACTERS_MAX: usize = 255;

/// A free-text field's value in a case: a kind and one of its variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub kind: TextKind,
    pub variant: u8,
}

impl Text {
    /// The field left `null`.
    pub const NULL: Text = Text {
        kind: TextKind::Null,
        variant: 0,
    };

    pub fn is_null(&self) -> bool {
        self.kind == TextKind::Null
    }

    /// The string, or `None` for `null`.
    pub fn value(self) -> Option<String> {
        self.kind.text(self.variant)
    }
}

/// `kind/variant`, or `null`.
impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_null() {
            f.write_str("null")
        } else {
            write!(f, "{}/{}", self.kind, self.variant)
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::NULL
    }
}

/// The text weights of a scenario (`[texts]`): which kinds free-text
/// fields draw, and how often. Empty without the table: terminal reasons
/// are then `null`, as before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextWeights(pub Vec<(TextKind, u32)>);

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

    #[test]
    fn every_text_kind_is_named_once_and_only_null_is_none() {
        for kind in TextKind::ALL {
            assert_eq!(TextKind::from_name(kind.name()), Some(kind));
            for variant in 0..kind.variants() {
                let text = kind.text(variant);
                assert_eq!(text.is_none(), kind == TextKind::Null, "{kind}");
                let text = text.unwrap_or_default();
                assert!(!text.contains('\0'), "{kind}: PostgreSQL refuses NUL");
                assert!(text.chars().count() <= TEXT_CHARACTERS_MAX, "{kind}");
            }
            assert_eq!(kind.text(kind.variants()), kind.text(0));
        }
        assert_eq!(Text::default(), Text::NULL);
        let long = TextKind::Long.text(1).unwrap();
        assert_eq!((long.chars().count(), long.len()), (255, 1020));
        assert!(TextKind::Control.text(1).unwrap().contains('\u{1f}'));
    }
}
