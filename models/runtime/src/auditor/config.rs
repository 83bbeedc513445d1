//! The auditor's knobs (spec §8): the raw application-environment values, the
//! original's silent normalisation (`normalise`), and a strict `validate` for
//! values a harness user types.

use crate::summary::ProjectionKind;
use serde_json::Value;

pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
pub const MIN_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_SAMPLE_SIZE: u32 = 200;
pub const MAX_SAMPLE_SIZE: u32 = 10_000;

/// The four knobs as the application environment holds them. The original
/// read arbitrary Elixir terms, so each value is any JSON value; absent means
/// the default.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditorConfig {
    /// `khala_sync_parity_enabled`.
    pub enabled: Option<Value>,
    /// `khala_sync_parity_interval_ms`.
    pub interval_ms: Option<Value>,
    /// `khala_sync_parity_sample_size`.
    pub sample_size: Option<Value>,
    /// `khala_sync_parity_projection_names`.
    pub projection_names: Option<Value>,
}

/// The normalised configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditorConfig {
    pub enabled: bool,
    pub interval_ms: u64,
    pub sample_size: u32,
    /// Never empty, no duplicates, in the order given.
    pub projection_names: Vec<ProjectionKind>,
}

impl Default for AuditorConfig {
    fn default() -> Self {
        AuditorConfig {
            enabled: false,
            interval_ms: DEFAULT_INTERVAL_MS,
            sample_size: DEFAULT_SAMPLE_SIZE,
            projection_names: ProjectionKind::ALL.to_vec(),
        }
    }
}

/// Which knob a configuration error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditorConfigKey {
    Enabled,
    IntervalMs,
    SampleSize,
    ProjectionNames,
}

impl AuditorConfigKey {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditorConfigKey::Enabled => "khala_sync_parity_enabled",
            AuditorConfigKey::IntervalMs => "khala_sync_parity_interval_ms",
            AuditorConfigKey::SampleSize => "khala_sync_parity_sample_size",
            AuditorConfigKey::ProjectionNames => "khala_sync_parity_projection_names",
        }
    }
}

impl std::fmt::Display for AuditorConfigKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Why a knob's value is refused by `validate`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditorConfigErrorKind {
    #[error("expected a boolean or one of 1/true/yes/0/false/no, got {given}")]
    NotAFlag { given: String },
    #[error("expected an integer, got {given}")]
    NotAnInteger { given: String },
    #[error("{given} is below the minimum {minimum}")]
    BelowMinimum { given: i64, minimum: i64 },
    #[error("{given} is outside {minimum}..={maximum}")]
    OutOfRange {
        given: i64,
        minimum: i64,
        maximum: i64,
    },
    #[error("expected a list of projection names, got {given}")]
    NotAList { given: String },
    #[error("unknown projection `{given}` (valid: run_summary, codex_worker_summary)")]
    UnknownProjection { given: String },
}

/// A knob value `validate` refuses, naming the knob.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("read parity auditor setting `{key}`: {kind}")]
pub struct AuditorConfigError {
    pub key: AuditorConfigKey,
    pub kind: AuditorConfigErrorKind,
}

fn error(key: AuditorConfigKey, kind: AuditorConfigErrorKind) -> AuditorConfigError {
    AuditorConfigError { key, kind }
}

fn flag_from_text(text: &str) -> Option<bool> {
    match text.to_lowercase().as_str() {
        "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// `true`, or a string `1`/`true`/`yes` in any case, enables; anything else
/// disables (spec §8).
pub(crate) fn normalise_enabled(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(on)) => *on,
        Some(Value::String(text)) => flag_from_text(text) == Some(true),
        _ => false,
    }
}

/// An integer of at least 1 000, else 30 000.
pub(crate) fn normalise_interval(value: Option<&Value>) -> u64 {
    match value.and_then(Value::as_i64) {
        Some(interval) if interval >= MIN_INTERVAL_MS as i64 => interval as u64,
        _ => DEFAULT_INTERVAL_MS,
    }
}

/// An integer in 0..=10 000, else 200.
pub(crate) fn normalise_sample_size(value: Option<i64>) -> u32 {
    match value {
        Some(size) if (0..=MAX_SAMPLE_SIZE as i64).contains(&size) => size as u32,
        _ => DEFAULT_SAMPLE_SIZE,
    }
}

/// Known names kept in order (duplicates once); an empty result, or a value
/// that is not a list, means both.
pub(crate) fn normalise_projection_names(value: Option<&Value>) -> Vec<ProjectionKind> {
    let mut kinds = Vec::new();
    if let Some(Value::Array(items)) = value {
        for kind in items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|name| name.parse::<ProjectionKind>().ok())
        {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    if kinds.is_empty() {
        ProjectionKind::ALL.to_vec()
    } else {
        kinds
    }
}

impl RawAuditorConfig {
    /// The original's normalisation: never fails, every malformed value
    /// silently becomes its default.
    pub fn normalise(&self) -> AuditorConfig {
        AuditorConfig {
            enabled: normalise_enabled(self.enabled.as_ref()),
            interval_ms: normalise_interval(self.interval_ms.as_ref()),
            sample_size: normalise_sample_size(self.sample_size.as_ref().and_then(Value::as_i64)),
            projection_names: normalise_projection_names(self.projection_names.as_ref()),
        }
    }

    /// For values a harness user passes: the same result as `normalise` for
    /// every well-formed value, and an error naming the knob (and the unknown
    /// projection) where `normalise` would silently fall back to a default.
    pub fn validate(&self) -> Result<AuditorConfig, AuditorConfigError> {
        use AuditorConfigErrorKind as Kind;
        use AuditorConfigKey as Key;
        match &self.enabled {
            None | Some(Value::Bool(_)) => {}
            Some(Value::String(text)) if flag_from_text(text).is_some() => {}
            Some(other) => {
                return Err(error(
                    Key::Enabled,
                    Kind::NotAFlag {
                        given: other.to_string(),
                    },
                ));
            }
        }
        if let Some(value) = &self.interval_ms {
            let interval = value.as_i64().ok_or_else(|| {
                error(
                    Key::IntervalMs,
                    Kind::NotAnInteger {
                        given: value.to_string(),
                    },
                )
            })?;
            if interval < MIN_INTERVAL_MS as i64 {
                return Err(error(
                    Key::IntervalMs,
                    Kind::BelowMinimum {
                        given: interval,
                        minimum: MIN_INTERVAL_MS as i64,
                    },
                ));
            }
        }
        if let Some(value) = &self.sample_size {
            let size = value.as_i64().ok_or_else(|| {
                error(
                    Key::SampleSize,
                    Kind::NotAnInteger {
                        given: value.to_string(),
                    },
                )
            })?;
            if !(0..=MAX_SAMPLE_SIZE as i64).contains(&size) {
                return Err(error(
                    Key::SampleSize,
                    Kind::OutOfRange {
                        given: size,
                        minimum: 0,
                        maximum: MAX_SAMPLE_SIZE as i64,
                    },
                ));
            }
        }
        match &self.projection_names {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let name = item.as_str().ok_or_else(|| {
                        error(
                            Key::ProjectionNames,
                            Kind::UnknownProjection {
                                given: item.to_string(),
                            },
                        )
                    })?;
                    name.parse::<ProjectionKind>().map_err(|unknown| {
                        error(
                            Key::ProjectionNames,
                            Kind::UnknownProjection {
                                given: unknown.given,
                            },
                        )
                    })?;
                }
            }
            Some(other) => {
                return Err(error(
                    Key::ProjectionNames,
                    Kind::NotAList {
                        given: other.to_string(),
                    },
                ));
            }
        }
        Ok(self.normalise())
    }
}

/// The options of one `run_once` call; each set option overrides the
/// configuration (spec §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    pub enabled: Option<bool>,
    /// Normalised like the knob: outside 0..=10 000 means 200.
    pub sample_size: Option<i64>,
    /// Normalised like the knob: empty means both.
    pub projection_names: Option<Vec<ProjectionKind>>,
    pub emit_entity_events: bool,
    pub emit_parity_failures: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            enabled: None,
            sample_size: None,
            projection_names: None,
            emit_entity_events: true,
            emit_parity_failures: true,
        }
    }
}

/// The effective settings of one cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CycleSettings {
    pub enabled: bool,
    pub sample_size: u32,
    pub projection_names: Vec<ProjectionKind>,
}

impl AuditorConfig {
    pub(crate) fn for_cycle(&self, options: &RunOptions) -> CycleSettings {
        let projection_names = match &options.projection_names {
            Some(kinds) => {
                let mut unique: Vec<ProjectionKind> = Vec::new();
                for kind in kinds {
                    if !unique.contains(kind) {
                        unique.push(*kind);
                    }
                }
                if unique.is_empty() {
                    ProjectionKind::ALL.to_vec()
                } else {
                    unique
                }
            }
            None => self.projection_names.clone(),
        };
        CycleSettings {
            enabled: options.enabled.unwrap_or(self.enabled),
            sample_size: options
                .sample_size
                .map_or(self.sample_size, |size| normalise_sample_size(Some(size))),
            projection_names,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(enabled: Value, interval: Value, size: Value, names: Value) -> RawAuditorConfig {
        RawAuditorConfig {
            enabled: Some(enabled),
            interval_ms: Some(interval),
            sample_size: Some(size),
            projection_names: Some(names),
        }
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        assert_eq!(
            RawAuditorConfig::default().normalise(),
            AuditorConfig::default()
        );
        assert_eq!(
            RawAuditorConfig::default().validate(),
            Ok(AuditorConfig::default())
        );
    }

    #[test]
    fn enabled_accepts_true_and_1_true_yes_in_any_case() {
        for (value, expected) in [
            (json!(true), true),
            (json!(false), false),
            (json!("1"), true),
            (json!("TRUE"), true),
            (json!("Yes"), true),
            (json!("no"), false),
            (json!(" yes"), false),
            (json!(1), false),
            (json!("on"), false),
        ] {
            assert_eq!(normalise_enabled(Some(&value)), expected, "{value}");
        }
    }

    #[test]
    fn faithful_normalisation_falls_back_silently() {
        let config = raw(
            json!("on"),
            json!(999),
            json!(10_001),
            json!(["run_summary", "nope", "run_summary"]),
        )
        .normalise();
        assert_eq!(
            config,
            AuditorConfig {
                enabled: false,
                interval_ms: 30_000,
                sample_size: 200,
                projection_names: vec![ProjectionKind::RunSummary],
            }
        );
        let edges = raw(json!("1"), json!(1000), json!(0), json!([])).normalise();
        assert_eq!(
            (edges.enabled, edges.interval_ms, edges.sample_size),
            (true, 1000, 0)
        );
        assert_eq!(edges.projection_names, ProjectionKind::ALL.to_vec());
        assert_eq!(
            raw(json!(true), json!(5000.0), json!(-1), json!("run_summary")).normalise(),
            AuditorConfig {
                enabled: true,
                ..AuditorConfig::default()
            }
        );
        assert_eq!(normalise_sample_size(Some(10_000)), 10_000);
    }

    #[test]
    fn validate_names_the_knob_and_the_unknown_projection() {
        let names = raw(
            json!(true),
            json!(1000),
            json!(5),
            json!(["run_summary", "nope"]),
        );
        let refused = names.validate().unwrap_err();
        assert_eq!(refused.key, AuditorConfigKey::ProjectionNames);
        assert_eq!(
            refused.to_string(),
            "read parity auditor setting `khala_sync_parity_projection_names`: unknown projection `nope` (valid: run_summary, codex_worker_summary)"
        );
        let cases = [
            (
                raw(json!("on"), json!(1000), json!(5), json!([])),
                AuditorConfigKey::Enabled,
            ),
            (
                raw(json!(true), json!(999), json!(5), json!([])),
                AuditorConfigKey::IntervalMs,
            ),
            (
                raw(json!(true), json!("5s"), json!(5), json!([])),
                AuditorConfigKey::IntervalMs,
            ),
            (
                raw(json!(true), json!(1000), json!(10_001), json!([])),
                AuditorConfigKey::SampleSize,
            ),
            (
                raw(json!(true), json!(1000), json!(5), json!("run_summary")),
                AuditorConfigKey::ProjectionNames,
            ),
        ];
        for (config, key) in cases {
            assert_eq!(config.validate().unwrap_err().key, key, "{config:?}");
        }
        let good = raw(
            json!("YES"),
            json!(1000),
            json!(0),
            json!(["codex_worker_summary"]),
        );
        assert_eq!(good.validate(), Ok(good.normalise()));
    }

    #[test]
    fn run_options_override_and_are_normalised_like_the_knobs() {
        let config = AuditorConfig::default();
        let settings = config.for_cycle(&RunOptions {
            enabled: Some(true),
            sample_size: Some(20_000),
            projection_names: Some(vec![]),
            ..RunOptions::default()
        });
        assert_eq!(
            settings,
            CycleSettings {
                enabled: true,
                sample_size: 200,
                projection_names: ProjectionKind::ALL.to_vec()
            }
        );
        assert!(!config.for_cycle(&RunOptions::default()).enabled);
    }
}
