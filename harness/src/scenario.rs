//! Scenario files (TOML): what kind of cases to generate. Loaded with
//! unknown keys refused; every error names the file and, where TOML gives
//! one, the line and column.

use khala_runtime::{Profile, SinkMode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every action kind a scenario may weigh. The ones not in `GENERATED` need
/// subsystems that have not landed yet; a non-zero weight for them is refused.
pub const ACTION_KINDS: [&str; 17] = [
    "run_event",
    "worker_event",
    "duplicate_delivery",
    "sink_mode",
    "client_flag",
    "rollout_stage",
    "rollback",
    "auditor_cycle",
    "retention",
    "reproject",
    "projection_version_bump",
    "client_reconnect",
    "fault_convex",
    "fault_khala",
    "fault_partial_fanout",
    "restart_sync_server",
    "quiesce",
];

/// The action kinds the generator produces today.
pub const GENERATED: [&str; 11] = [
    "run_event",
    "worker_event",
    "duplicate_delivery",
    "sink_mode",
    "rollback",
    "reproject",
    "projection_version_bump",
    "fault_convex",
    "fault_khala",
    "fault_partial_fanout",
    "quiesce",
];

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub profile: Option<Profile>,
    pub cases: u32,
    pub max_steps: u32,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub start: StartSpec,
    pub weights: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSpec {
    #[serde(default = "default_sink_mode")]
    pub sink_mode: SinkMode,
}

impl Default for StartSpec {
    fn default() -> Self {
        StartSpec {
            sink_mode: default_sink_mode(),
        }
    }
}

fn default_sink_mode() -> SinkMode {
    SinkMode::Dual
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("read scenario {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse scenario {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("load scenario {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("find scenario `{name}`: no such file in {dir} (valid: {valid})")]
    UnknownName {
        name: String,
        dir: PathBuf,
        valid: String,
    },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| ScenarioError::Parse {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        scenario.validate(path)?;
        Ok(scenario)
    }

    fn validate(&self, path: &Path) -> Result<(), ScenarioError> {
        let invalid = |key: &str, message: String| ScenarioError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.cases == 0 {
            return Err(invalid("cases", "must be at least 1".into()));
        }
        if !(1..=200).contains(&self.max_steps) {
            return Err(invalid("max_steps", "must be between 1 and 200".into()));
        }
        for (kind, weight) in &self.weights {
            if !ACTION_KINDS.contains(&kind.as_str()) {
                return Err(invalid(
                    &format!("weights.{kind}"),
                    format!("unknown action kind (valid: {})", ACTION_KINDS.join(", ")),
                ));
            }
            if *weight > 0 && !GENERATED.contains(&kind.as_str()) {
                return Err(invalid(
                    &format!("weights.{kind}"),
                    format!(
                        "action kind not generated yet (generated: {})",
                        GENERATED.join(", ")
                    ),
                ));
            }
        }
        if self.weights.values().all(|weight| *weight == 0) {
            return Err(invalid(
                "weights",
                "all weights are zero: nothing would be generated".into(),
            ));
        }
        Ok(())
    }
}

/// The scenario files of a directory (`*.toml`), sorted by name.
pub fn library(dir: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ScenarioError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A scenario argument: a path to a file, or a name in `dir`.
pub fn resolve(argument: &str, dir: &Path) -> Result<PathBuf, ScenarioError> {
    let as_path = Path::new(argument);
    if as_path
        .extension()
        .is_some_and(|extension| extension == "toml")
        || argument.contains('/')
    {
        return Ok(as_path.to_owned());
    }
    let candidate = dir.join(format!("{argument}.toml"));
    if candidate.is_file() {
        return Ok(candidate);
    }
    let valid: Vec<String> = library(dir)?
        .iter()
        .filter_map(|path| {
            path.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .collect();
    Err(ScenarioError::UnknownName {
        name: argument.to_owned(),
        dir: dir.to_owned(),
        valid: valid.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "x"
description = "d"
cases = 3
max_steps = 10
[weights]
run_event = 3
quiesce = 1
"#;

    #[test]
    fn a_good_scenario_loads_with_defaults() {
        let scenario = Scenario::parse(Path::new("x.toml"), GOOD).unwrap();
        assert_eq!(scenario.start.sink_mode, SinkMode::Dual);
        assert_eq!(scenario.weights["run_event"], 3);
    }

    fn error(text: &str) -> String {
        Scenario::parse(Path::new("bad.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_scenarios_name_the_file_line_and_key() {
        let unknown_key = error(&GOOD.replace("cases = 3", "cases = 3\nbogus = 1"));
        assert!(
            unknown_key.contains("bad.toml")
                && unknown_key.contains("bogus")
                && unknown_key.contains("line"),
            "{unknown_key}"
        );
        let wrong_type = error(&GOOD.replace("cases = 3", "cases = \"three\""));
        assert!(
            wrong_type.contains("line 4") && wrong_type.contains("cases"),
            "{wrong_type}"
        );
        let negative = error(&GOOD.replace("quiesce = 1", "quiesce = -1"));
        assert!(
            negative.contains("quiesce") || negative.contains("line 9"),
            "{negative}"
        );
        let unknown_kind = error(&GOOD.replace("quiesce = 1", "teleport = 1"));
        assert!(
            unknown_kind.contains("weights.teleport") && unknown_kind.contains("run_event"),
            "{unknown_kind}"
        );
        let zero = error(
            &GOOD
                .replace("run_event = 3", "run_event = 0")
                .replace("quiesce = 1", "quiesce = 0"),
        );
        assert!(zero.contains("all weights are zero"), "{zero}");
        let not_yet = error(&GOOD.replace("quiesce = 1", "retention = 1"));
        assert!(
            not_yet.contains("weights.retention") && not_yet.contains("not generated yet"),
            "{not_yet}"
        );
        let bad_mode = error(&format!("{GOOD}\n[start]\nsink_mode = \"both\"\n"));
        assert!(
            bad_mode.contains("sink_mode") || bad_mode.contains("both"),
            "{bad_mode}"
        );
    }
}
