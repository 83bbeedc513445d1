//! The cutover gate (spec §9.5, §11.2 G1): the thresholds a scenario's
//! `[gate]` table may set, their defaults and validation, and the decision
//! (allow | block | unknown) with its reasons and one check per threshold.
//! Pure: it judges counts and rates the report has already gathered.

use crate::model::catalogue::Severity;
use crate::model::reason::ReasonClass;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stale-cursor rate the gate tolerates by default. §9.5 leaves it to
/// "the cohort's incident threshold" without a number; 5 % of subscriptions
/// answered `stale_cursor` is the bound we chose: above it, clients spend
/// more time re-hydrating than following the stream.
pub const DEFAULT_MAX_STALE_CURSOR_RATE: f64 = 0.05;

/// The liveness gap the gate tolerates by default: L1's bound.
pub const DEFAULT_MAX_LIVENESS_GAP_SECONDS: u64 =
    crate::check::clients::LIVENESS_GAP_BOUND_SECONDS as u64;

/// Reports of scenarios that keep the default leave the key out.
fn is_default_liveness_gap(seconds: &u64) -> bool {
    *seconds == DEFAULT_MAX_LIVENESS_GAP_SECONDS
}

/// Thresholds of the gate; every field has the §9.5 default, so an empty
/// `[gate]` table (or none) is the spec's gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateThresholds {
    /// The auditor's mismatch rate must stay strictly below this (§9.5 gate
    /// 1: `< 0.01`). Within `(0, 1]`.
    pub max_mismatch_rate: f64,
    /// Auditor comparisons with reason `khala_missing` allowed (§9.5 gate 2).
    pub max_khala_missing: u64,
    /// The p95 of the auditor's `abs_lag_drift` at quiescence may not exceed
    /// this (§9.5 gate 3: "at or near 0 in steady state").
    pub max_lag_drift_p95: u64,
    /// The rate of subscriptions answered `stale_cursor` must stay strictly
    /// below this (§9.5 gate 5). Within `(0, 1]`.
    pub max_stale_cursor_rate: f64,
    /// The longest explained Khala/Convex divergence window allowed, in
    /// steps (X8); unbounded when absent. Unexplained windows are critical
    /// violations whatever this says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_explained_window_steps: Option<u64>,
    /// The longest an online client with its flag on may go without a live
    /// channel, in seconds of advanced time (L1's gap, the staleness of a
    /// client that only listens). The default is L1's own bound, one
    /// heartbeat period; a scenario that accepts the original's minute
    /// (B12) raises it, and lowers `liveness_gap`'s severity so that L1
    /// does not block on its own. Judged only when a gap was seen.
    #[serde(skip_serializing_if = "is_default_liveness_gap")]
    pub max_liveness_gap_seconds: u64,
    /// Any critical violation blocks (§11.2: `block_on_critical`).
    pub block_on_critical: bool,
    /// Warnings allowed before the gate blocks (§11.2: `max_warning_count`).
    pub max_warnings: u64,
    /// `unknown` instead of `allow` when no auditor cycle ran, so a drill
    /// that produced no metrics cannot pass as evidence.
    pub require_auditor_metrics: bool,
    /// Severity per invariant id, overriding the catalogue.
    pub invariant_severity: BTreeMap<String, Severity>,
    /// Severity per reason class; wins over `invariant_severity`.
    pub reason_severity: BTreeMap<String, Severity>,
}

impl Default for GateThresholds {
    fn default() -> Self {
        GateThresholds {
            max_mismatch_rate: 0.01,
            max_khala_missing: 0,
            max_lag_drift_p95: 0,
            max_stale_cursor_rate: DEFAULT_MAX_STALE_CURSOR_RATE,
            max_explained_window_steps: None,
            max_liveness_gap_seconds: DEFAULT_MAX_LIVENESS_GAP_SECONDS,
            block_on_critical: true,
            max_warnings: 0,
            require_auditor_metrics: false,
            invariant_severity: BTreeMap::new(),
            reason_severity: BTreeMap::new(),
        }
    }
}

/// A threshold that cannot be used, with the key that holds it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("gate key `{key}`: {kind}")]
pub struct GateError {
    /// The key inside the `[gate]` table, e.g. `max_mismatch_rate` or
    /// `reason_severity.khala_mising`.
    pub key: String,
    pub kind: GateErrorKind,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GateErrorKind {
    #[error("{value} is outside {range}")]
    OutOfRange { value: String, range: &'static str },
    #[error("unknown invariant (known: {known})")]
    UnknownInvariant { known: String },
    #[error("unknown reason class (known: {known})")]
    UnknownReasonClass { known: String },
    /// Not a threshold table: a syntax error, an unknown key, a wrong type.
    #[error("{message}")]
    Invalid { message: String },
}

impl GateThresholds {
    /// Checks every threshold; the first unusable one is named.
    pub fn validate(&self) -> Result<(), GateError> {
        for (key, value) in [
            ("max_mismatch_rate", self.max_mismatch_rate),
            ("max_stale_cursor_rate", self.max_stale_cursor_rate),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 1.0) {
                return Err(GateError {
                    key: key.to_owned(),
                    kind: GateErrorKind::OutOfRange {
                        value: value.to_string(),
                        range: "(0, 1]",
                    },
                });
            }
        }
        for id in self.invariant_severity.keys() {
            if crate::model::catalogue::invariant(id).is_none() {
                return Err(GateError {
                    key: format!("invariant_severity.{id}"),
                    kind: GateErrorKind::UnknownInvariant {
                        known: crate::model::catalogue::CATALOGUE
                            .iter()
                            .map(|entry| entry.id)
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                });
            }
        }
        for class in self.reason_severity.keys() {
            if ReasonClass::from_name(class).is_none() {
                return Err(GateError {
                    key: format!("reason_severity.{class}"),
                    kind: GateErrorKind::UnknownReasonClass {
                        known: ReasonClass::all()
                            .map(ReasonClass::name)
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                });
            }
        }
        Ok(())
    }

    /// Reads a `[gate]` table given as TOML text, then applies `overrides`
    /// (`key=value`, TOML values; a bare word is a string, so
    /// `reason_severity.lag_drift=warning` works), then validates.
    pub fn parse_toml(text: &str, overrides: &[String]) -> Result<Self, GateError> {
        let invalid = |key: &str, message: String| GateError {
            key: key.to_owned(),
            kind: GateErrorKind::Invalid { message },
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|error| invalid(".", error.message().to_owned()))?;
        for entry in overrides {
            let Some((key, value)) = entry.split_once('=') else {
                return Err(invalid(entry, "expected key=value".to_owned()));
            };
            let key = key.trim();
            let value = value.trim();
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut parsed| parsed.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_owned()));
            let mut parts: Vec<&str> = key.split('.').collect();
            let last = parts.pop().unwrap_or_default();
            let mut target = &mut table;
            for part in parts {
                let next = target
                    .entry(part.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                target = next
                    .as_table_mut()
                    .ok_or_else(|| invalid(key, format!("`{part}` is not a table")))?;
            }
            target.insert(last.to_owned(), value);
        }
        let text = toml::to_string(&table).map_err(|error| invalid(".", error.to_string()))?;
        let deserializer = toml::de::Deserializer::parse(&text)
            .map_err(|error| invalid(".", error.message().to_owned()))?;
        let thresholds: GateThresholds =
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let message = error.inner().message().to_owned();
                let path = error.path().to_string();
                // Name an unknown key itself, whether or not the path has it.
                let key = match message.split('`').nth(1) {
                    Some(unknown)
                        if message.starts_with("unknown field")
                            && path.rsplit('.').next() != Some(unknown) =>
                    {
                        if path == "." {
                            unknown.to_owned()
                        } else {
                            format!("{path}.{unknown}")
                        }
                    }
                    _ => path,
                };
                invalid(&key, message)
            })?;
        thresholds.validate()?;
        Ok(thresholds)
    }

    /// The severity a violation of `class` counts with: the class's
    /// override, else its invariant's override, else the class's own.
    pub fn severity(&self, class: ReasonClass) -> Severity {
        self.reason_severity
            .get(class.name())
            .or_else(|| self.invariant_severity.get(class.invariant()))
            .copied()
            .unwrap_or(class.severity())
    }
}

/// The gate's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Block,
    /// A backend failed, or evidence the thresholds require is missing:
    /// the run proves nothing either way.
    Unknown,
}

/// How one threshold fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    Pass,
    Fail,
    /// Nothing was measured (no auditor cycle, no client catch-up).
    NoData,
}

/// One threshold against what a scenario's run showed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateCheck {
    pub scenario: String,
    /// `critical_violations`, `warnings`, `mismatch_rate`, `khala_missing`,
    /// `lag_drift_p95`, `stale_cursor_rate` or `liveness_gap_seconds`.
    pub check: String,
    pub observed: Option<f64>,
    /// The rule the observation must satisfy, e.g. `< 0.01` or `<= 0`.
    pub rule: String,
    pub outcome: CheckOutcome,
}

/// The decision with its reasons (one sentence each) and every check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub decision: Decision,
    pub reasons: Vec<String>,
    #[serde(default)]
    pub checks: Vec<GateCheck>,
}

/// What one scenario's run showed, as the gate needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    pub scenario: String,
    /// Violations by the severity they count with (after overrides).
    pub critical: u64,
    pub warnings: u64,
    /// The auditor's mismatch rate over cycles with no fault active.
    pub mismatch_rate: Option<f64>,
    /// Auditor comparisons with reason `khala_missing`, same cycles.
    pub khala_missing: Option<u64>,
    /// p95 of `abs_lag_drift` over comparisons at quiescence.
    pub lag_drift_p95: Option<f64>,
    /// Client catch-ups answered `stale_cursor`, over all catch-ups.
    pub stale_cursor_rate: Option<f64>,
    /// The longest explained Khala/Convex divergence window, in steps.
    pub longest_explained_window: Option<u64>,
    /// The longest liveness gap of any lane (seconds), if any was seen.
    pub liveness_gap_seconds: Option<i64>,
    /// Findings whose failure no replay showed again: observed once, they
    /// block like any other (a race in the system under test is a defect).
    pub not_reproduced: u64,
    /// Why the run proves nothing (a backend failed), if it does not.
    pub unknown: Option<String>,
}

/// The decision for one scenario's evidence under its thresholds.
pub fn decide(thresholds: &GateThresholds, evidence: &Evidence) -> Gate {
    let scenario = evidence.scenario.as_str();
    let check = |check: &str, observed: Option<f64>, rule: String, passes: bool| GateCheck {
        scenario: scenario.to_owned(),
        check: check.to_owned(),
        observed,
        rule,
        outcome: match observed {
            None => CheckOutcome::NoData,
            Some(_) if passes => CheckOutcome::Pass,
            Some(_) => CheckOutcome::Fail,
        },
    };
    let at_most = |value: Option<f64>, limit: f64| value.is_none_or(|value| value <= limit);
    let below = |value: Option<f64>, limit: f64| value.is_none_or(|value| value < limit);
    let mut checks = Vec::new();
    if thresholds.block_on_critical {
        checks.push(check(
            "critical_violations",
            Some(evidence.critical as f64),
            "= 0".to_owned(),
            evidence.critical == 0,
        ));
    }
    // Shown only when there is one, since replays and most runs never have
    // any; whatever the thresholds, it blocks.
    if evidence.not_reproduced > 0 {
        checks.push(check(
            "not_reproduced_findings",
            Some(evidence.not_reproduced as f64),
            "= 0".to_owned(),
            false,
        ));
    }
    checks.push(check(
        "warnings",
        Some(evidence.warnings as f64),
        format!("<= {}", thresholds.max_warnings),
        evidence.warnings <= thresholds.max_warnings,
    ));
    checks.push(check(
        "mismatch_rate",
        evidence.mismatch_rate,
        format!("< {}", thresholds.max_mismatch_rate),
        below(evidence.mismatch_rate, thresholds.max_mismatch_rate),
    ));
    let khala_missing = evidence.khala_missing.map(|count| count as f64);
    checks.push(check(
        "khala_missing",
        khala_missing,
        format!("<= {}", thresholds.max_khala_missing),
        at_most(khala_missing, thresholds.max_khala_missing as f64),
    ));
    checks.push(check(
        "lag_drift_p95",
        evidence.lag_drift_p95,
        format!("<= {}", thresholds.max_lag_drift_p95),
        at_most(evidence.lag_drift_p95, thresholds.max_lag_drift_p95 as f64),
    ));
    checks.push(check(
        "stale_cursor_rate",
        evidence.stale_cursor_rate,
        format!("< {}", thresholds.max_stale_cursor_rate),
        below(evidence.stale_cursor_rate, thresholds.max_stale_cursor_rate),
    ));
    // Shown only when bounded: most scenarios leave explained windows
    // (a fault, a one-store sink mode) as long as the system needs.
    if let Some(limit) = thresholds.max_explained_window_steps {
        let longest = evidence.longest_explained_window.map(|steps| steps as f64);
        checks.push(check(
            "explained_window_steps",
            longest,
            format!("<= {limit}"),
            at_most(longest, limit as f64),
        ));
    }
    // Shown only when time passed with a lane not live, so that reports of
    // scenarios that never advance time read as before.
    if let Some(gap) = evidence.liveness_gap_seconds {
        checks.push(check(
            "liveness_gap_seconds",
            Some(gap as f64),
            format!("<= {}", thresholds.max_liveness_gap_seconds),
            gap.unsigned_abs() <= thresholds.max_liveness_gap_seconds,
        ));
    }

    if let Some(message) = &evidence.unknown {
        return Gate {
            decision: Decision::Unknown,
            reasons: vec![format!("{scenario}: {message}")],
            checks,
        };
    }
    let mut reasons: Vec<String> = checks
        .iter()
        .filter(|check| check.outcome == CheckOutcome::Fail)
        .map(|check| {
            let observed = check
                .observed
                .map_or("-".to_owned(), |value| value.to_string());
            format!(
                "{scenario}: {} is {observed}, the gate needs {}",
                check.check, check.rule
            )
        })
        .collect();
    let decision = if !reasons.is_empty() {
        Decision::Block
    } else if thresholds.require_auditor_metrics && evidence.mismatch_rate.is_none() {
        reasons.push(format!(
            "{scenario}: no auditor cycle ran, and the gate requires auditor metrics"
        ));
        Decision::Unknown
    } else {
        Decision::Allow
    };
    Gate {
        decision,
        reasons,
        checks,
    }
}

/// One gate from several scenarios' gates: unknown if any is unknown (a
/// run that proves nothing cannot be outvoted), else block if any blocks,
/// else allow. Reasons and checks are kept in order.
pub fn combine(gates: Vec<Gate>) -> Gate {
    let decision = if gates.iter().any(|gate| gate.decision == Decision::Unknown) {
        Decision::Unknown
    } else if gates.iter().any(|gate| gate.decision == Decision::Block) {
        Decision::Block
    } else {
        Decision::Allow
    };
    let mut combined = Gate {
        decision,
        reasons: Vec::new(),
        checks: Vec::new(),
    };
    for gate in gates {
        combined.reasons.extend(gate.reasons);
        combined.checks.extend(gate.checks);
    }
    combined
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reason::{ProjectionClass, StoreClass};

    fn parse(text: &str) -> Result<GateThresholds, String> {
        let thresholds: GateThresholds = toml::from_str(text).map_err(|error| error.to_string())?;
        thresholds.validate().map_err(|error| error.key)?;
        Ok(thresholds)
    }

    fn key_of(text: &str, overrides: &[&str]) -> Result<GateThresholds, String> {
        let overrides: Vec<String> = overrides.iter().map(|entry| (*entry).to_owned()).collect();
        GateThresholds::parse_toml(text, &overrides).map_err(|error| error.key)
    }

    #[test]
    fn toml_text_and_overrides_name_the_offending_key() {
        let thresholds = key_of(
            "max_warnings = 2\n[reason_severity]\nlag_drift = \"warning\"",
            &[
                "max_mismatch_rate=0.05",
                "reason_severity.khala_stale=warning",
            ],
        )
        .unwrap();
        assert_eq!(thresholds.max_warnings, 2);
        assert_eq!(thresholds.max_mismatch_rate, 0.05);
        assert_eq!(thresholds.reason_severity.len(), 2);
        assert_eq!(
            key_of("", &["max_mismatch_rate=7"]),
            Err("max_mismatch_rate".into())
        );
        assert_eq!(
            key_of("", &["max_mismatch=0.1"]),
            Err("max_mismatch".into())
        );
        assert_eq!(key_of("", &["max_warnings=-1"]), Err("max_warnings".into()));
        assert_eq!(key_of("", &["max_warnings"]), Err("max_warnings".into()));
        assert_eq!(
            key_of("", &["reason_severity.khala_mising=warning"]),
            Err("reason_severity.khala_mising".into())
        );
        assert_eq!(
            key_of("[invariant_severity]\nX1 = \"fatal\"", &[]),
            Err("invariant_severity.X1".into())
        );
        assert_eq!(key_of("not toml at all", &[]), Err(".".into()));
    }

    #[test]
    fn an_empty_table_is_the_spec_gate() {
        let thresholds = parse("").unwrap();
        assert_eq!(thresholds, GateThresholds::default());
        assert_eq!(thresholds.max_mismatch_rate, 0.01);
        assert_eq!(thresholds.max_khala_missing, 0);
        assert_eq!(thresholds.max_lag_drift_p95, 0);
        assert!(thresholds.block_on_critical);
        assert_eq!(thresholds.max_warnings, 0);
    }

    #[test]
    fn out_of_range_rates_name_their_key() {
        for (text, key) in [
            ("max_mismatch_rate = 0.0", "max_mismatch_rate"),
            ("max_mismatch_rate = 1.5", "max_mismatch_rate"),
            ("max_mismatch_rate = -0.1", "max_mismatch_rate"),
            ("max_mismatch_rate = nan", "max_mismatch_rate"),
            ("max_stale_cursor_rate = inf", "max_stale_cursor_rate"),
        ] {
            assert_eq!(parse(text), Err(key.to_owned()), "{text}");
        }
        assert!(parse("max_mismatch_rate = 1.0").is_ok());
    }

    #[test]
    fn unknown_names_are_refused_with_their_key() {
        assert_eq!(
            parse("[reason_severity]\nkhala_mising = \"warning\""),
            Err("reason_severity.khala_mising".to_owned())
        );
        assert_eq!(
            parse("[invariant_severity]\nX99 = \"warning\""),
            Err("invariant_severity.X99".to_owned())
        );
        let unknown_key = parse("max_mismatch = 0.5").unwrap_err();
        assert!(unknown_key.contains("max_mismatch"), "{unknown_key}");
        let negative = parse("max_khala_missing = -1").unwrap_err();
        assert!(negative.contains("max_khala_missing"), "{negative}");
        let bad_severity = parse("[reason_severity]\nlag_drift = \"fatal\"").unwrap_err();
        assert!(bad_severity.contains("fatal"), "{bad_severity}");
    }

    #[test]
    fn the_most_specific_severity_wins() {
        let thresholds = parse(
            "[invariant_severity]\nX1 = \"warning\"\n[reason_severity]\nstores_differ = \"critical\"",
        )
        .unwrap();
        assert_eq!(
            thresholds.severity(StoreClass::KhalaStale.into()),
            Severity::Warning
        );
        assert_eq!(
            thresholds.severity(StoreClass::StoresDiffer.into()),
            Severity::Critical
        );
        assert_eq!(
            thresholds.severity(ProjectionClass::DocumentIdMismatch.into()),
            Severity::Critical
        );
        let defaults = GateThresholds::default();
        assert_eq!(
            defaults.severity(ProjectionClass::RedeliveryNotIdempotent.into()),
            Severity::Warning,
            "without overrides a class counts with its own severity"
        );
    }

    fn evidence() -> Evidence {
        Evidence {
            scenario: "s".into(),
            mismatch_rate: Some(0.0),
            khala_missing: Some(0),
            lag_drift_p95: Some(0.0),
            ..Evidence::default()
        }
    }

    fn decision(thresholds: &GateThresholds, evidence: &Evidence) -> (Decision, Vec<String>) {
        let gate = decide(thresholds, evidence);
        let failed = gate
            .checks
            .iter()
            .filter(|check| check.outcome == CheckOutcome::Fail)
            .map(|check| check.check.clone())
            .collect();
        (gate.decision, failed)
    }

    #[test]
    fn each_threshold_blocks_on_its_own() {
        let thresholds = GateThresholds::default();
        assert_eq!(
            decision(&thresholds, &evidence()),
            (Decision::Allow, vec![])
        );
        let cases: [(Evidence, &str); 7] = [
            (
                Evidence {
                    critical: 1,
                    ..evidence()
                },
                "critical_violations",
            ),
            (
                Evidence {
                    warnings: 1,
                    ..evidence()
                },
                "warnings",
            ),
            // Exactly at the §9.5 bound is not below it.
            (
                Evidence {
                    mismatch_rate: Some(0.01),
                    ..evidence()
                },
                "mismatch_rate",
            ),
            (
                Evidence {
                    khala_missing: Some(1),
                    ..evidence()
                },
                "khala_missing",
            ),
            (
                Evidence {
                    lag_drift_p95: Some(1.0),
                    ..evidence()
                },
                "lag_drift_p95",
            ),
            (
                Evidence {
                    stale_cursor_rate: Some(DEFAULT_MAX_STALE_CURSOR_RATE),
                    ..evidence()
                },
                "stale_cursor_rate",
            ),
            // A listening client a minute without a live channel (B12).
            (
                Evidence {
                    liveness_gap_seconds: Some(61),
                    ..evidence()
                },
                "liveness_gap_seconds",
            ),
        ];
        for (evidence, check) in cases {
            assert_eq!(
                decision(&thresholds, &evidence),
                (Decision::Block, vec![check.to_owned()]),
                "{check}"
            );
        }
        let below = Evidence {
            mismatch_rate: Some(0.009),
            stale_cursor_rate: Some(0.01),
            ..evidence()
        };
        assert_eq!(decision(&thresholds, &below).0, Decision::Allow);
    }

    #[test]
    fn explained_windows_block_only_past_their_bound() {
        let long_window = Evidence {
            longest_explained_window: Some(5),
            ..evidence()
        };
        assert_eq!(
            decision(&GateThresholds::default(), &long_window),
            (Decision::Allow, vec![]),
            "unbounded by default"
        );
        let bounded = |steps| GateThresholds {
            max_explained_window_steps: Some(steps),
            ..GateThresholds::default()
        };
        assert_eq!(
            decision(&bounded(4), &long_window),
            (Decision::Block, vec!["explained_window_steps".to_owned()])
        );
        assert_eq!(decision(&bounded(5), &long_window).0, Decision::Allow);
        assert_eq!(
            parse("max_explained_window_steps = 3")
                .unwrap()
                .max_explained_window_steps,
            Some(3)
        );
    }

    #[test]
    fn a_staleness_threshold_bounds_the_originals_lost_liveness_window() {
        // The original's listening client: L1 liveness_gap on each lane,
        // about a minute each (legacy shipped-clients).
        let legacy = Evidence {
            critical: 8,
            liveness_gap_seconds: Some(75),
            ..evidence()
        };
        let checks = decide(&GateThresholds::default(), &legacy).checks;
        let gap = checks
            .iter()
            .find(|check| check.check == "liveness_gap_seconds")
            .expect("judged when a gap was seen");
        assert_eq!(
            (gap.observed, gap.rule.as_str(), gap.outcome),
            (Some(75.0), "<= 15", CheckOutcome::Fail)
        );
        // Accepting the window: L1's class counts as a warning, and the
        // threshold bounds how long the window may be.
        let accepting = |seconds: &str| {
            GateThresholds::parse_toml(
                &format!(
                    "max_liveness_gap_seconds = {seconds}\nmax_warnings = 8\n\
                     [reason_severity]\nliveness_gap = \"warning\""
                ),
                &[],
            )
            .expect("valid")
        };
        let legacy = Evidence {
            critical: 0,
            warnings: 8,
            ..legacy
        };
        assert_eq!(
            decision(&accepting("90"), &legacy),
            (Decision::Allow, vec![])
        );
        assert_eq!(
            decision(&accepting("60"), &legacy),
            (Decision::Block, vec!["liveness_gap_seconds".to_owned()])
        );
        // No gap seen: nothing to judge, and no check in the report.
        let checks = decide(&GateThresholds::default(), &evidence()).checks;
        assert!(
            checks
                .iter()
                .all(|check| check.check != "liveness_gap_seconds")
        );
        assert!(GateThresholds::parse_toml("max_liveness_gap_seconds = -1", &[]).is_err());
    }

    #[test]
    fn thresholds_move_the_bounds() {
        let lenient = GateThresholds {
            max_mismatch_rate: 0.5,
            max_khala_missing: 2,
            max_lag_drift_p95: 3,
            max_warnings: 1,
            block_on_critical: false,
            ..GateThresholds::default()
        };
        let evidence = Evidence {
            critical: 4,
            warnings: 1,
            mismatch_rate: Some(0.4),
            khala_missing: Some(2),
            lag_drift_p95: Some(3.0),
            ..evidence()
        };
        assert_eq!(decision(&lenient, &evidence), (Decision::Allow, vec![]));
    }

    #[test]
    fn no_data_passes_unless_auditor_metrics_are_required() {
        let evidence = Evidence {
            scenario: "s".into(),
            ..Evidence::default()
        };
        let gate = decide(&GateThresholds::default(), &evidence);
        assert_eq!(gate.decision, Decision::Allow);
        assert!(
            gate.checks
                .iter()
                .any(|check| check.outcome == CheckOutcome::NoData)
        );
        let strict = GateThresholds {
            require_auditor_metrics: true,
            ..GateThresholds::default()
        };
        let gate = decide(&strict, &evidence);
        assert_eq!(gate.decision, Decision::Unknown);
        assert!(
            gate.reasons[0].contains("no auditor cycle"),
            "{:?}",
            gate.reasons
        );
    }

    #[test]
    fn a_backend_failure_is_unknown_and_wins_when_combined() {
        let failed = Evidence {
            unknown: Some("postgres died".into()),
            ..evidence()
        };
        let unknown = decide(&GateThresholds::default(), &failed);
        assert_eq!(
            (unknown.decision, unknown.reasons.clone()),
            (Decision::Unknown, vec!["s: postgres died".to_owned()])
        );
        let block = decide(
            &GateThresholds::default(),
            &Evidence {
                critical: 1,
                ..evidence()
            },
        );
        let allow = decide(&GateThresholds::default(), &evidence());
        assert_eq!(
            combine(vec![allow.clone(), block.clone()]).decision,
            Decision::Block
        );
        assert_eq!(
            combine(vec![block, unknown, allow]).decision,
            Decision::Unknown
        );
        assert_eq!(combine(vec![]).decision, Decision::Allow);
    }

    #[test]
    fn errors_read_with_the_key_first() {
        let error = GateThresholds {
            max_mismatch_rate: 2.0,
            ..GateThresholds::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "gate key `max_mismatch_rate`: 2 is outside (0, 1]"
        );
    }
}
