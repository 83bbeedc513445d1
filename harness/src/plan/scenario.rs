//! Scenario files (TOML): which cases to generate, which invariants to
//! check, the gate's thresholds and the coverage a run must reach. Loaded
//! with unknown keys refused; every error names the file, the line and
//! column, the key, and what would have been allowed. The format is
//! documented with examples in `scenarios/README.md`.

use crate::check::gate::{GateErrorKind, GateThresholds};
use crate::model::case::{ActionKind, Flags, KhalaFault, RolloutStage, Start, Surface};
use crate::model::draws::{ConvexFaultKind, FlagSpelling};
use crate::model::values::{TextKind, TextWeights, ValueKind, ValueWeights};
use crate::plan::reach::{self, FlagState, StageState, State};
use crate::plan::steps::{CornerBounds, Draws, JOURNAL_ROWS_PER_STEP_MAX};
use khala_runtime::sink::PayloadMode;
use khala_runtime::{Profile, SinkMode};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The most steps a case may have.
pub const MAX_STEPS_LIMIT: u32 = 200;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// One paragraph: what the scenario exercises and what it finds.
    pub description: String,
    /// The profile `run` uses when none is given on the command line.
    #[serde(default)]
    pub profile: Option<Profile>,
    pub cases: u32,
    /// Steps per case at least (default 1); lengths are drawn from
    /// `min_steps..=max_steps`.
    #[serde(default = "default_min_steps")]
    pub min_steps: u32,
    pub max_steps: u32,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub start: StartSpec,
    /// A weight per action kind; 0 or absent: never generated.
    #[serde(deserialize_with = "weight_table")]
    pub weights: BTreeMap<String, u32>,
    /// A weight per metadata value kind (`model::values`) for the
    /// `worker_metadata` steps; absent: only `plain`.
    #[serde(default, deserialize_with = "weight_table")]
    pub values: BTreeMap<String, u32>,
    /// A weight per free-text kind (`model::values::TextKind`) for the
    /// free-text fields: a finished run's `terminal_reason` (`run_event`)
    /// and a created worker's owner scope, workspace and Codex home
    /// (`create_worker`); absent: reasons `null`, created workers' fields
    /// `null` or plain.
    #[serde(default, deserialize_with = "weight_table")]
    pub texts: BTreeMap<String, u32>,
    /// A weight per raw flag spelling (`model::draws::FlagSpelling`) for
    /// the `client_flag` steps; absent: `"true"` or unset.
    #[serde(default, deserialize_with = "weight_table")]
    pub flag_values: BTreeMap<String, u32>,
    /// A weight per Convex fault kind (`model::draws::ConvexFaultKind`)
    /// for the `fault_convex` steps; absent: the transport faults and the
    /// pause, as before.
    #[serde(default, deserialize_with = "weight_table")]
    pub convex_faults: BTreeMap<String, u32>,
    /// A weight per Khala fault (`model::case::KhalaFault`) for the
    /// `fault_khala` steps; absent: the read models, as before.
    #[serde(default, deserialize_with = "weight_table")]
    pub khala_faults: BTreeMap<String, u32>,
    #[serde(default)]
    pub swarm: SwarmSpec,
    #[serde(default)]
    pub invariants: InvariantSelection,
    /// Thresholds overriding the gate's defaults (spec §9.5, §11.2).
    #[serde(default)]
    pub gate: GateThresholds,
    #[serde(default)]
    pub coverage: CoverageSpec,
    /// How many event rows an `event_gap` step removes at most; absent:
    /// `CornerBounds::default`.
    #[serde(default)]
    pub event_gap: Option<EventGapSpec>,
    /// Where a retention run's cutoff may land; absent:
    /// `CornerBounds::default`.
    #[serde(default)]
    pub retention: Option<RetentionSpec>,
}

/// `[event_gap]`: the bound of the `remove_events` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventGapSpec {
    pub events_removed_max: u8,
}

/// `[retention]`: the bound of the `run_retention_at_row` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    pub cutoff_rank_max: u8,
}

fn default_min_steps() -> u32 {
    1
}

/// The state before every case's first step.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSpec {
    #[serde(default = "default_sink_mode")]
    pub sink_mode: SinkMode,
    /// Each surface's client flag (all off unless given).
    #[serde(default)]
    pub flags: Flags,
    /// The rollout stage already reached; it decides every flag.
    #[serde(default)]
    pub rollout_stage: Option<RolloutStage>,
    /// Surfaces whose users also run the shipped client lane.
    #[serde(default)]
    pub shipped_clients: Vec<Surface>,
    /// The Khala sink's payload mode each case is deployed with, drawn by
    /// weight (`{ inline = 3, pointer = 1 }`); empty: inline, nothing
    /// drawn (the RNG stream of scenarios without it is unchanged).
    #[serde(default)]
    pub payload_modes: BTreeMap<PayloadMode, u32>,
    /// The sync server's replay batch size every case is deployed with
    /// (`Start::replay_batch_size`); absent: the default, 200.
    #[serde(default)]
    pub replay_batch_size: Option<NonZeroU32>,
}

impl Default for StartSpec {
    fn default() -> Self {
        StartSpec {
            sink_mode: default_sink_mode(),
            flags: Flags::default(),
            rollout_stage: None,
            shipped_clients: Vec::new(),
            payload_modes: BTreeMap::new(),
            replay_batch_size: None,
        }
    }
}

impl StartSpec {
    pub fn to_start(&self) -> Start {
        Start {
            flags: self.flags,
            rollout_stage: self.rollout_stage,
            shipped_clients: self.shipped_clients.clone(),
            replay_batch_size: self.replay_batch_size,
            ..Start::new(self.sink_mode)
        }
    }
}

fn default_sink_mode() -> SinkMode {
    SinkMode::Dual
}

/// Swarm generation: each case keeps a random subset of the weighted kinds
/// (each kind kept with probability ½, at least one), so long runs of one
/// kind occur.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Kinds no case switches off.
    #[serde(default)]
    pub always_on: Vec<String>,
}

impl Default for SwarmSpec {
    fn default() -> Self {
        SwarmSpec {
            enabled: true,
            always_on: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// Which invariants a scenario checks: `include` (empty: all), minus
/// `exclude`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvariantSelection {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl InvariantSelection {
    pub fn checks(&self, id: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|included| included == id))
            && !self.exclude.iter().any(|excluded| excluded == id)
    }

    /// Whether every invariant of the catalogue is checked.
    pub fn checks_all(&self) -> bool {
        crate::model::catalogue::CATALOGUE
            .iter()
            .all(|invariant| self.checks(invariant.id))
    }
}

/// The coverage a run must reach, counted over its generated cases.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageSpec {
    /// Fired steps per action kind, at least.
    #[serde(default)]
    pub min_per_kind: BTreeMap<String, u64>,
    /// Fired steps of one kind in a state, at least.
    #[serde(default)]
    pub cell: Vec<CellMinimum>,
    /// Fired `worker_metadata` steps per value kind (`[values]`), at least.
    #[serde(default)]
    pub min_per_value: BTreeMap<String, u64>,
    /// Free-text fields of fired steps per text kind (`[texts]`), at least.
    #[serde(default)]
    pub min_per_text: BTreeMap<String, u64>,
}

/// A minimum for one action kind in the states that match the given
/// dimensions (an absent dimension matches every state).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellMinimum {
    pub kind: String,
    #[serde(default)]
    pub flags: Option<FlagState>,
    #[serde(default)]
    pub sink_mode: Option<SinkMode>,
    #[serde(default)]
    pub rollout_stage: Option<StageState>,
    pub min: u64,
}

/// Reads weights as signed integers so that a negative one is refused with
/// a hint instead of a bare type error.
fn weight_table<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, u32>, D::Error> {
    struct Weight(u32);
    impl<'de> Deserialize<'de> for Weight {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let value = i64::deserialize(deserializer)?;
            u32::try_from(value).map(Weight).map_err(|_| {
                serde::de::Error::custom(format!(
                    "weight {value} is out of range: a weight is a whole number from 0 to {} \
                     (hint: 0 or leaving the kind out means never generated)",
                    u32::MAX
                ))
            })
        }
    }
    let table: BTreeMap<String, Weight> = BTreeMap::deserialize(deserializer)?;
    Ok(table
        .into_iter()
        .map(|(kind, weight)| (kind, weight.0))
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("read scenario {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(Box<InvalidScenario>),
    #[error("find scenario `{name}`: no such file in {} (valid: {valid})", dir.display())]
    UnknownName {
        name: String,
        dir: PathBuf,
        valid: String,
    },
}

impl ScenarioError {
    /// The problem of an invalid file, if that is what this is.
    pub fn invalid(&self) -> Option<&InvalidScenario> {
        match self {
            ScenarioError::Invalid(invalid) => Some(invalid),
            _ => None,
        }
    }
}

/// A scenario file that cannot be used, and where.
#[derive(Debug, thiserror::Error)]
#[error("load scenario {}: {kind}", self.position())]
pub struct InvalidScenario {
    pub path: PathBuf,
    /// 1-based line and column in the file, where the problem has a place.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The key at fault, dotted, with array indices (`weights.quiesce`,
    /// `invariants.include[1]`, `coverage.cell[0].min`).
    pub key: Option<String>,
    pub kind: InvalidKind,
}

impl InvalidScenario {
    fn position(&self) -> String {
        let mut position = self.path.display().to_string();
        if let (Some(line), Some(column)) = (self.line, self.column) {
            position.push_str(&format!(":{line}:{column}"));
        }
        if let Some(key) = &self.key {
            position.push_str(&format!(": key `{key}`"));
        }
        position
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InvalidKind {
    /// TOML syntax, an unknown key, a wrong type or a value outside its
    /// enum: TOML's own message, which lists what is expected.
    #[error("{message}")]
    Toml { message: String },
    #[error("must not be empty")]
    Empty,
    #[error("`{value}` is listed twice")]
    Duplicate { value: String },
    #[error("{value} is outside {allowed}")]
    OutOfRange { value: String, allowed: String },
    #[error("unknown action kind (allowed: {})", ActionKind::names())]
    UnknownActionKind,
    #[error("unknown value kind (allowed: {})", ValueKind::names())]
    UnknownValueKind,
    #[error(
        "all value weights are zero: `worker_metadata` steps would have nothing to draw; hint: give at least one value kind a weight above 0, or leave [values] out for plain metadata"
    )]
    AllValueWeightsZero,
    #[error(
        "all weights of `payload_modes` are zero: no payload mode would be drawn; hint: give one a weight above 0, or leave it out for inline"
    )]
    AllPayloadModeWeightsZero,
    #[error(
        "[values] is set but `worker_metadata` has no weight, so no value would be drawn; hint: weigh `worker_metadata` in [weights] or drop [values]"
    )]
    ValuesWithoutMetadataSteps,
    #[error("unknown text kind (allowed: {})", TextKind::names())]
    UnknownTextKind,
    #[error(
        "all weights of [texts] are zero: free-text fields would have nothing to draw; hint: give one a weight above 0, or leave [texts] out"
    )]
    AllTextWeightsZero,
    #[error(
        "[texts] is set but neither `run_event` nor `create_worker` has a weight, so no text would be drawn; hint: weigh one of them in [weights] or drop [texts]"
    )]
    TextsWithoutSteps,
    #[error("unknown flag spelling (allowed: {})", FlagSpelling::names())]
    UnknownFlagSpelling,
    #[error("unknown convex fault kind (allowed: {})", ConvexFaultKind::names())]
    UnknownConvexFault,
    #[error("unknown khala fault (allowed: {})", KhalaFault::names())]
    UnknownKhalaFault,
    #[error(
        "all weights of [{table}] are zero: `{kind}` steps would have nothing to draw; hint: give one a weight above 0, or leave [{table}] out"
    )]
    AllDrawWeightsZero {
        table: &'static str,
        kind: ActionKind,
    },
    #[error(
        "[{table}] is set but `{kind}` has no weight, so nothing would be drawn from it; hint: weigh `{kind}` in [weights] or drop [{table}]"
    )]
    DrawsWithoutSteps {
        table: &'static str,
        kind: ActionKind,
    },
    #[error(
        "[{table}] is set but `{kind}` has no weight, so it bounds no step; hint: weigh `{kind}` in [weights] or drop [{table}]"
    )]
    BoundsWithoutSteps {
        table: &'static str,
        kind: ActionKind,
    },
    #[error(
        "all weights are zero: nothing would be generated; hint: give at least one action kind a weight above 0"
    )]
    AllWeightsZero,
    #[error(
        "`flags` and `rollout_stage` are both set, but the rollout stage decides every flag; hint: give one of them"
    )]
    FlagsAndStage,
    #[error(
        "`{kind}` has weight 0, so no case could keep it on; hint: weigh it in [weights] or drop it here"
    )]
    SwarmKindNotWeighted { kind: String },
    #[error("unknown invariant `{id}` (known: {known})")]
    UnknownInvariant { id: String, known: String },
    #[error("invariant `{id}` is both included and excluded")]
    IncludedAndExcluded { id: String },
    #[error("the selection leaves no invariant to check")]
    NoInvariantLeft,
    #[error("{0}")]
    Gate(GateErrorKind),
    #[error("minimum {min} is unreachable: {reason}")]
    Unreachable { min: u64, reason: String },
}

/// A problem found after parsing, named by its key path; `parse` locates it.
#[derive(Debug)]
struct Problem {
    key: Vec<Segment>,
    kind: InvalidKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn key(parts: &[&str]) -> Vec<Segment> {
    parts
        .iter()
        .map(|part| Segment::Key((*part).to_owned()))
        .collect()
}

struct KeyPath<'a>(&'a [Segment]);

impl fmt::Display for KeyPath<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(name) if index == 0 => formatter.write_str(name)?,
                Segment::Key(name) => write!(formatter, ".{name}")?,
                Segment::Index(position) => write!(formatter, "[{position}]")?,
            }
        }
        Ok(())
    }
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
        let document = DeTable::parse(text).ok();
        let document = document.as_ref().map(Spanned::get_ref);
        let invalid = |span: Option<Range<usize>>, key: Option<Vec<Segment>>, kind| {
            let (line, column) = match span {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            ScenarioError::Invalid(Box::new(InvalidScenario {
                path: path.to_owned(),
                line,
                column,
                key: key
                    .filter(|key| !key.is_empty())
                    .map(|key| KeyPath(&key).to_string()),
                kind,
            }))
        };
        let scenario: Scenario = match toml::from_str(text) {
            Ok(scenario) => scenario,
            Err(error) => {
                let message = error.message().trim_end().to_owned();
                let span = error.span();
                let key = document.and_then(|document| {
                    let offset = span.as_ref().map_or(0, |span| span.start);
                    let empty = span.as_ref().is_none_or(|span| span.is_empty());
                    let mut key = if empty {
                        Vec::new()
                    } else {
                        key_at(document, offset, &mut Vec::new())?
                    };
                    if let Some(field) = missing_field(&message) {
                        key.push(Segment::Key(field.to_owned()));
                    }
                    Some(key)
                });
                return Err(invalid(span, key, InvalidKind::Toml { message }));
            }
        };
        if let Err(problem) = scenario.validate() {
            let span = document.and_then(|document| locate(document, &problem.key));
            return Err(invalid(span, Some(problem.key), problem.kind));
        }
        Ok(scenario)
    }

    /// The case start every generated case has.
    pub fn start(&self) -> Start {
        self.start.to_start()
    }

    /// The kinds with a weight above 0, in `ActionKind::ALL` order.
    pub fn weighted_kinds(&self) -> Vec<ActionKind> {
        ActionKind::ALL
            .into_iter()
            .filter(|kind| self.weight(*kind) > 0)
            .collect()
    }

    /// A kind's weight (0 when the file does not weigh it).
    pub fn weight(&self, kind: ActionKind) -> u32 {
        self.weights.get(kind.name()).copied().unwrap_or(0)
    }

    fn validate(&self) -> Result<(), Problem> {
        let problem = |key: Vec<Segment>, kind| Err(Problem { key, kind });
        if self.name.trim().is_empty() {
            return problem(key(&["name"]), InvalidKind::Empty);
        }
        if self.description.trim().is_empty() {
            return problem(key(&["description"]), InvalidKind::Empty);
        }
        if self.cases == 0 {
            return problem(
                key(&["cases"]),
                InvalidKind::OutOfRange {
                    value: "0".into(),
                    allowed: "1 or more".into(),
                },
            );
        }
        if !(1..=MAX_STEPS_LIMIT).contains(&self.max_steps) {
            return problem(
                key(&["max_steps"]),
                InvalidKind::OutOfRange {
                    value: self.max_steps.to_string(),
                    allowed: format!("1..={MAX_STEPS_LIMIT}"),
                },
            );
        }
        if !(1..=self.max_steps).contains(&self.min_steps) {
            return problem(
                key(&["min_steps"]),
                InvalidKind::OutOfRange {
                    value: self.min_steps.to_string(),
                    allowed: format!("1..={} (max_steps)", self.max_steps),
                },
            );
        }
        self.validate_weights()?;
        self.validate_values()?;
        self.validate_texts()?;
        self.validate_corners()?;
        self.validate_draws(
            "flag_values",
            &self.flag_values,
            ActionKind::ClientFlag,
            |name| FlagSpelling::from_name(name).is_some(),
            InvalidKind::UnknownFlagSpelling,
        )?;
        self.validate_draws(
            "convex_faults",
            &self.convex_faults,
            ActionKind::FaultConvex,
            |name| ConvexFaultKind::from_name(name).is_some(),
            InvalidKind::UnknownConvexFault,
        )?;
        self.validate_draws(
            "khala_faults",
            &self.khala_faults,
            ActionKind::FaultKhala,
            |name| KhalaFault::from_name(name).is_some(),
            InvalidKind::UnknownKhalaFault,
        )?;
        if !self.start.payload_modes.is_empty()
            && self.start.payload_modes.values().all(|weight| *weight == 0)
        {
            return problem(
                key(&["start", "payload_modes"]),
                InvalidKind::AllPayloadModeWeightsZero,
            );
        }
        if !self.start.flags.all_off() && self.start.rollout_stage.is_some() {
            return problem(key(&["start", "rollout_stage"]), InvalidKind::FlagsAndStage);
        }
        for (index, surface) in self.start.shipped_clients.iter().enumerate() {
            let mut at = key(&["start", "shipped_clients"]);
            at.push(Segment::Index(index));
            // The desktop has no Khala subscription at the modelled commit
            // (spec §9.1): there is no shipped client on it to run.
            if *surface == Surface::Desktop {
                return problem(
                    at,
                    InvalidKind::OutOfRange {
                        value: "\"desktop\"".into(),
                        allowed: "\"web\", \"mobile\" (the desktop has no subscription)".into(),
                    },
                );
            }
            if self.start.shipped_clients[..index].contains(surface) {
                return problem(
                    at,
                    InvalidKind::Duplicate {
                        value: surface.as_str().to_owned(),
                    },
                );
            }
        }
        for (index, kind) in self.swarm.always_on.iter().enumerate() {
            let mut at = key(&["swarm", "always_on"]);
            at.push(Segment::Index(index));
            if ActionKind::from_name(kind).is_none() {
                return problem(at, InvalidKind::UnknownActionKind);
            }
            if self.weights.get(kind).is_none_or(|weight| *weight == 0) {
                return problem(at, InvalidKind::SwarmKindNotWeighted { kind: kind.clone() });
            }
        }
        self.validate_invariants()?;
        if let Err(error) = self.gate.validate() {
            let mut at = key(&["gate"]);
            at.extend(
                error
                    .key
                    .split('.')
                    .map(|part| Segment::Key(part.to_owned())),
            );
            return problem(at, InvalidKind::Gate(error.kind));
        }
        self.validate_coverage()
    }

    /// The metadata value weights (`[values]`), in `ValueKind::ALL` order.
    pub fn value_weights(&self) -> ValueWeights {
        if self.values.is_empty() {
            return ValueWeights::default();
        }
        ValueWeights(
            ValueKind::ALL
                .into_iter()
                .filter_map(|kind| Some((kind, *self.values.get(kind.name())?)))
                .collect(),
        )
    }

    /// The free-text weights (`[texts]`), in `TextKind::ALL` order.
    pub fn text_weights(&self) -> TextWeights {
        TextWeights(
            TextKind::ALL
                .into_iter()
                .filter_map(|kind| Some((kind, *self.texts.get(kind.name())?)))
                .collect(),
        )
    }

    /// Whether some weighed kind draws free text.
    fn draws_texts(&self) -> bool {
        self.weight(ActionKind::RunEvent) > 0 || self.weight(ActionKind::CreateWorker) > 0
    }

    fn validate_texts(&self) -> Result<(), Problem> {
        if self.texts.is_empty() {
            return Ok(());
        }
        if let Some(name) = self
            .texts
            .keys()
            .find(|name| TextKind::from_name(name).is_none())
        {
            return Err(Problem {
                key: key(&["texts", name]),
                kind: InvalidKind::UnknownTextKind,
            });
        }
        let kind = if self.texts.values().all(|weight| *weight == 0) {
            InvalidKind::AllTextWeightsZero
        } else if !self.draws_texts() {
            InvalidKind::TextsWithoutSteps
        } else {
            return Ok(());
        };
        Err(Problem {
            key: key(&["texts"]),
            kind,
        })
    }

    /// `coverage.min_per_text`: known text kinds the scenario's `[texts]`
    /// draws. Each fired step counts once per free-text field (a finished
    /// run has one, a created worker three).
    fn validate_text_coverage(&self) -> Result<(), Problem> {
        let fields_at_most = 3 * u64::from(self.cases) * u64::from(self.max_steps);
        for (name, min) in &self.coverage.min_per_text {
            let at = key(&["coverage", "min_per_text", name]);
            let Some(kind) = TextKind::from_name(name) else {
                return Err(Problem {
                    key: at,
                    kind: InvalidKind::UnknownTextKind,
                });
            };
            let reason = if !self.draws_texts()
                || self.texts.get(kind.name()).is_none_or(|w| *w == 0)
            {
                format!(
                    "`{kind}` texts are never drawn (hint: weigh `run_event` or `create_worker`, and `texts.{kind}`)"
                )
            } else if *min > fields_at_most {
                format!(
                    "the scenario draws at most {fields_at_most} texts (3 per step, {} cases × {} max_steps)",
                    self.cases, self.max_steps
                )
            } else {
                continue;
            };
            return Err(Problem {
                key: at,
                kind: InvalidKind::Unreachable { min: *min, reason },
            });
        }
        Ok(())
    }

    /// The bounds of the corner steps (`[event_gap]`, `[retention]`).
    pub fn corner_bounds(&self) -> CornerBounds {
        let default = CornerBounds::default();
        CornerBounds {
            events_removed_max: self
                .event_gap
                .map_or(default.events_removed_max, |gap| gap.events_removed_max),
            cutoff_rank_max: self.retention.map_or(default.cutoff_rank_max, |retention| {
                retention.cutoff_rank_max
            }),
        }
    }

    /// Bounds no case of the scenario can meet are refused: a gap of `n`
    /// events needs `n + 1` events of one entity before the gap step, and
    /// a cutoff on the row of rank `r` needs `r + 1` journal rows before
    /// the retention step, at most `JOURNAL_ROWS_PER_STEP_MAX` a step.
    fn validate_corners(&self) -> Result<(), Problem> {
        let steps_before = self.max_steps - 1;
        for (table, kind, set) in [
            ("event_gap", ActionKind::EventGap, self.event_gap.is_some()),
            ("retention", ActionKind::Retention, self.retention.is_some()),
        ] {
            if set && self.weight(kind) == 0 {
                return Err(Problem {
                    key: key(&[table]),
                    kind: InvalidKind::BoundsWithoutSteps { table, kind },
                });
            }
        }
        let out_of_range = |path: &[&str], value: u8, allowed: String| {
            Err(Problem {
                key: key(path),
                kind: InvalidKind::OutOfRange {
                    value: value.to_string(),
                    allowed,
                },
            })
        };
        if let Some(gap) = self.event_gap {
            let most = steps_before.saturating_sub(1);
            if !(1..=most).contains(&u32::from(gap.events_removed_max)) {
                return out_of_range(
                    &["event_gap", "events_removed_max"],
                    gap.events_removed_max,
                    format!(
                        "1..={most}: a gap longer than the history (removing n events needs n + 1 events of one entity and the gap step, and a case has at most {} steps)",
                        self.max_steps
                    ),
                );
            }
        }
        if let Some(retention) = self.retention {
            let rows = steps_before * JOURNAL_ROWS_PER_STEP_MAX;
            if u32::from(retention.cutoff_rank_max) >= rows {
                return out_of_range(
                    &["retention", "cutoff_rank_max"],
                    retention.cutoff_rank_max,
                    format!(
                        "0..{rows}: a cutoff outside the case's time span (the row of rank r needs r + 1 journal rows before the retention step; {steps_before} steps before it append at most {JOURNAL_ROWS_PER_STEP_MAX} each)"
                    ),
                );
            }
        }
        Ok(())
    }

    /// What the kinds draw within themselves (`[values]`,
    /// `[flag_values]`, `[convex_faults]`, `[khala_faults]`), each in its
    /// enum's order.
    pub fn draws(&self) -> Draws {
        Draws {
            values: self.value_weights(),
            texts: self.text_weights(),
            flag_spellings: FlagSpelling::ALL
                .into_iter()
                .filter_map(|spelling| Some((spelling, *self.flag_values.get(spelling.name())?)))
                .collect(),
            convex_faults: ConvexFaultKind::ALL
                .into_iter()
                .filter_map(|fault| Some((fault, *self.convex_faults.get(fault.name())?)))
                .collect(),
            khala_faults: KhalaFault::ALL
                .into_iter()
                .filter_map(|fault| Some((fault, *self.khala_faults.get(fault.name())?)))
                .collect(),
        }
    }

    /// A draw table (`[flag_values]`, `[convex_faults]`, `[khala_faults]`):
    /// known names, one
    /// weight above zero, and its kind weighed.
    fn validate_draws(
        &self,
        table: &'static str,
        weights: &BTreeMap<String, u32>,
        kind: ActionKind,
        known: impl Fn(&str) -> bool,
        unknown: InvalidKind,
    ) -> Result<(), Problem> {
        if weights.is_empty() {
            return Ok(());
        }
        if let Some(name) = weights.keys().find(|name| !known(name)) {
            return Err(Problem {
                key: key(&[table, name]),
                kind: unknown,
            });
        }
        if weights.values().all(|weight| *weight == 0) {
            return Err(Problem {
                key: key(&[table]),
                kind: InvalidKind::AllDrawWeightsZero { table, kind },
            });
        }
        if self.weight(kind) == 0 {
            return Err(Problem {
                key: key(&[table]),
                kind: InvalidKind::DrawsWithoutSteps { table, kind },
            });
        }
        Ok(())
    }

    fn validate_values(&self) -> Result<(), Problem> {
        if self.values.is_empty() {
            return Ok(());
        }
        for kind in self.values.keys() {
            if ValueKind::from_name(kind).is_none() {
                return Err(Problem {
                    key: key(&["values", kind]),
                    kind: InvalidKind::UnknownValueKind,
                });
            }
        }
        if self.values.values().all(|weight| *weight == 0) {
            return Err(Problem {
                key: key(&["values"]),
                kind: InvalidKind::AllValueWeightsZero,
            });
        }
        if self.weight(ActionKind::WorkerMetadata) == 0 {
            return Err(Problem {
                key: key(&["values"]),
                kind: InvalidKind::ValuesWithoutMetadataSteps,
            });
        }
        Ok(())
    }

    /// `coverage.min_per_value`: known value kinds the scenario draws.
    fn validate_value_coverage(&self) -> Result<(), Problem> {
        let steps_at_most = u64::from(self.cases) * u64::from(self.max_steps);
        let drawn = self.value_weights();
        for (name, min) in &self.coverage.min_per_value {
            let at = key(&["coverage", "min_per_value", name]);
            let Some(kind) = ValueKind::from_name(name) else {
                return Err(Problem {
                    key: at,
                    kind: InvalidKind::UnknownValueKind,
                });
            };
            let weighted = self.weight(ActionKind::WorkerMetadata) > 0
                && drawn
                    .0
                    .iter()
                    .any(|(drawn, weight)| *drawn == kind && *weight > 0);
            let reason = if !weighted {
                format!(
                    "`{kind}` values are never drawn (hint: weigh `worker_metadata` and `values.{kind}`)"
                )
            } else if *min > steps_at_most {
                format!(
                    "the scenario plays at most {steps_at_most} steps ({} cases × {} max_steps)",
                    self.cases, self.max_steps
                )
            } else {
                continue;
            };
            return Err(Problem {
                key: at,
                kind: InvalidKind::Unreachable { min: *min, reason },
            });
        }
        Ok(())
    }

    fn validate_weights(&self) -> Result<(), Problem> {
        for kind in self.weights.keys() {
            let at = key(&["weights", kind]);
            if ActionKind::from_name(kind).is_none() {
                return Err(Problem {
                    key: at,
                    kind: InvalidKind::UnknownActionKind,
                });
            }
        }
        if self.weights.values().all(|weight| *weight == 0) {
            return Err(Problem {
                key: key(&["weights"]),
                kind: InvalidKind::AllWeightsZero,
            });
        }
        Ok(())
    }

    fn validate_invariants(&self) -> Result<(), Problem> {
        let known = || {
            crate::model::catalogue::CATALOGUE
                .iter()
                .map(|invariant| invariant.id)
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (list_name, list) in [
            ("include", &self.invariants.include),
            ("exclude", &self.invariants.exclude),
        ] {
            for (index, id) in list.iter().enumerate() {
                let mut at = key(&["invariants", list_name]);
                at.push(Segment::Index(index));
                if crate::model::catalogue::invariant(id).is_none() {
                    return Err(Problem {
                        key: at,
                        kind: InvalidKind::UnknownInvariant {
                            id: id.clone(),
                            known: known(),
                        },
                    });
                }
                if list_name == "exclude" && self.invariants.include.contains(id) {
                    return Err(Problem {
                        key: at,
                        kind: InvalidKind::IncludedAndExcluded { id: id.clone() },
                    });
                }
            }
        }
        if !crate::model::catalogue::CATALOGUE
            .iter()
            .any(|invariant| self.invariants.checks(invariant.id))
        {
            return Err(Problem {
                key: key(&["invariants"]),
                kind: InvalidKind::NoInvariantLeft,
            });
        }
        Ok(())
    }

    /// Refuses minimums no run of this scenario could reach: kinds never
    /// generated, counts above every step of every case, and cells whose
    /// state the weighted kinds can never bring about from `[start]`.
    fn validate_coverage(&self) -> Result<(), Problem> {
        self.validate_value_coverage()?;
        self.validate_text_coverage()?;
        if self.coverage.min_per_kind.is_empty() && self.coverage.cell.is_empty() {
            return Ok(());
        }
        let steps_at_most = u64::from(self.cases) * u64::from(self.max_steps);
        let weighted = self.weighted_kinds();
        let counted = reach::counted_kinds(&weighted);
        let kind_problem = |at: Vec<Segment>, name: &str, min: u64| {
            let Some(kind) = ActionKind::from_name(name) else {
                return Some(Problem {
                    key: at,
                    kind: InvalidKind::UnknownActionKind,
                });
            };
            let reason = if !weighted.contains(&kind) && !counted.contains(&kind) {
                format!("`{kind}` has weight 0, so it is never generated")
            } else if !counted.contains(&kind) {
                let counted_as: Vec<&str> = reach::counted_kinds(&[kind])
                    .into_iter()
                    .map(ActionKind::name)
                    .collect();
                format!(
                    "`{kind}` steps are counted as `{}`; hint: set the minimum there",
                    counted_as.join("`, `")
                )
            } else if min > steps_at_most {
                format!(
                    "the scenario plays at most {steps_at_most} steps ({} cases × {} max_steps)",
                    self.cases, self.max_steps
                )
            } else {
                return None;
            };
            Some(Problem {
                key: at,
                kind: InvalidKind::Unreachable { min, reason },
            })
        };
        for (kind, min) in &self.coverage.min_per_kind {
            if let Some(problem) =
                kind_problem(key(&["coverage", "min_per_kind", kind]), kind, *min)
            {
                return Err(problem);
            }
        }
        if self.coverage.cell.is_empty() {
            return Ok(());
        }
        let reachable = reach::reachable_states(&self.start(), &weighted, self.max_steps);
        for (index, minimum) in self.coverage.cell.iter().enumerate() {
            let mut at = key(&["coverage", "cell"]);
            at.push(Segment::Index(index));
            let mut kind_at = at.clone();
            kind_at.push(Segment::Key("kind".into()));
            if let Some(problem) = kind_problem(kind_at, &minimum.kind, minimum.min) {
                return Err(problem);
            }
            if !reachable.keys().any(|state| minimum.matches(state)) {
                return Err(Problem {
                    key: at,
                    kind: InvalidKind::Unreachable {
                        min: minimum.min,
                        reason: format!(
                            "no case can be in the state of `{}`: from [start] the weighted kinds \
                             reach only {} within {} steps (hint: weigh client_flag, rollout_stage, \
                             rollback or sink_mode, or change [start])",
                            minimum.describe(),
                            describe_states(reachable.keys()),
                            self.max_steps
                        ),
                    },
                });
            }
        }
        Ok(())
    }
}

impl CellMinimum {
    /// Whether a step fired in `state` counts for this minimum (dimensions
    /// the minimum leaves out match anything).
    pub fn matches(&self, state: &State) -> bool {
        self.flags.is_none_or(|flags| flags == state.flags)
            && self
                .sink_mode
                .is_none_or(|mode| mode.as_str() == state.sink_mode)
            && self
                .rollout_stage
                .is_none_or(|stage| stage == state.rollout_stage)
    }

    /// `rollback × flags=none`: the kind and the dimensions it fixes.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.kind.clone()];
        if let Some(flags) = self.flags {
            parts.push(format!("flags={flags}"));
        }
        if let Some(mode) = self.sink_mode {
            parts.push(format!("sink_mode={}", mode.as_str()));
        }
        if let Some(stage) = self.rollout_stage {
            parts.push(format!("rollout_stage={stage}"));
        }
        parts.join(" × ")
    }
}

fn describe_states<'a>(states: impl Iterator<Item = &'a reach::State>) -> String {
    states
        .map(|state| {
            format!(
                "(flags={}, sink_mode={}, rollout_stage={})",
                state.flags, state.sink_mode, state.rollout_stage
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `missing field `x``: the field's name.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
        + 1;
    (line, column)
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// The innermost key whose key or value holds byte `offset`.
fn key_at(table: &DeTable<'_>, offset: usize, prefix: &mut Vec<Segment>) -> Option<Vec<Segment>> {
    for (name, value) in table.iter() {
        prefix.push(Segment::Key(name.get_ref().to_string()));
        if contains(&name.span(), offset) {
            return Some(prefix.clone());
        }
        if let Some(found) = value_key_at(value, offset, prefix) {
            return Some(found);
        }
        prefix.pop();
    }
    None
}

fn value_key_at(
    value: &Spanned<DeValue<'_>>,
    offset: usize,
    prefix: &mut Vec<Segment>,
) -> Option<Vec<Segment>> {
    match value.get_ref() {
        DeValue::Table(table) => {
            if let Some(found) = key_at(table, offset, prefix) {
                return Some(found);
            }
        }
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                prefix.push(Segment::Index(index));
                if let Some(found) = value_key_at(item, offset, prefix) {
                    return Some(found);
                }
                prefix.pop();
            }
        }
        _ => {}
    }
    contains(&value.span(), offset).then(|| prefix.clone())
}

/// Where a key path is written: the key itself, or the array element. A
/// path that is not in the document (a default) is located at its nearest
/// written parent.
fn locate(table: &DeTable<'_>, path: &[Segment]) -> Option<Range<usize>> {
    let Some((Segment::Key(first), rest)) = path.split_first() else {
        return None;
    };
    let (name, value) = table
        .iter()
        .find(|(name, _)| name.get_ref().as_ref() == first.as_str())?;
    Some(locate_in(value, rest).unwrap_or_else(|| name.span()))
}

fn locate_in(value: &Spanned<DeValue<'_>>, path: &[Segment]) -> Option<Range<usize>> {
    let (segment, rest) = path.split_first()?;
    match (segment, value.get_ref()) {
        (Segment::Key(_), DeValue::Table(table)) => locate(table, path),
        (Segment::Index(index), DeValue::Array(items)) => {
            let item = items.get(*index)?;
            Some(locate_in(item, rest).unwrap_or_else(|| item.span()))
        }
        _ => None,
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
        assert!(scenario.swarm.enabled);
        assert!(scenario.invariants.checks_all());
        assert_eq!(scenario.gate, GateThresholds::default());
        assert_eq!(
            scenario.weighted_kinds(),
            vec![ActionKind::RunEvent, ActionKind::Quiesce]
        );
    }

    /// The error's position and message.
    fn error(text: &str) -> (Option<usize>, Option<String>, String) {
        let error = Scenario::parse(Path::new("bad.toml"), text).unwrap_err();
        let message = error.to_string();
        let invalid = error.invalid().expect("an invalid file");
        (invalid.line, invalid.key.clone(), message)
    }

    fn check(text: &str, line: usize, key: &str, says: &str) {
        let (found_line, found_key, message) = error(text);
        assert_eq!(
            (found_line, found_key.as_deref()),
            (Some(line), Some(key)),
            "{message}"
        );
        assert!(
            message.starts_with(&format!("load scenario bad.toml:{line}:")),
            "{message}"
        );
        assert!(message.contains(&format!("key `{key}`")), "{message}");
        assert!(message.contains(says), "{message}");
    }

    #[test]
    fn parse_errors_name_the_line_and_key() {
        check(
            &GOOD.replace("cases = 3", "cases = 3\nbogus = 1"),
            5,
            "bogus",
            "expected one of",
        );
        check(
            &GOOD.replace("cases = 3", "cases = \"three\""),
            4,
            "cases",
            "expected u32",
        );
        check(
            &GOOD.replace("quiesce = 1", "quiesce = -1"),
            8,
            "weights.quiesce",
            "hint",
        );
        check(
            &format!("{GOOD}\n[start]\nsink_mode = \"both\"\n"),
            11,
            "start.sink_mode",
            "`dual`",
        );
        let (line, key, message) =
            error("name = 'x'\ndescription = 'd'\ncases = 1\nmax_steps = 1\n");
        assert_eq!(key.as_deref(), Some("weights"), "{message}");
        assert!(message.contains("missing field"), "{line:?} {message}");
    }

    #[test]
    fn semantic_errors_name_the_line_and_key() {
        check(
            &GOOD.replace("quiesce = 1", "teleport = 1"),
            8,
            "weights.teleport",
            "run_event",
        );
        check(
            &GOOD
                .replace("run_event = 3", "run_event = 0")
                .replace("quiesce = 1", "quiesce = 0"),
            6,
            "weights",
            "all weights are zero",
        );
        check(
            &GOOD.replace("cases = 3", "cases = 0"),
            4,
            "cases",
            "1 or more",
        );
        check(
            &format!("{GOOD}[start]\nshipped_clients = [\"web\",\n  \"desktop\"]\n"),
            11,
            "start.shipped_clients[1]",
            "the desktop has no subscription",
        );
        check(
            &format!("{GOOD}[start]\nshipped_clients = [\"web\", \"web\"]\n"),
            10,
            "start.shipped_clients[1]",
            "listed twice",
        );
        check(
            &format!("{GOOD}[start]\npayload_modes = {{ inline = 0, pointer = 0 }}\n"),
            10,
            "start.payload_modes",
            "all weights of `payload_modes` are zero",
        );
        check(
            &format!("{GOOD}[start]\nreplay_batch_size = 0\n"),
            10,
            "start.replay_batch_size",
            "nonzero",
        );
        check(
            &format!("{GOOD}[invariants]\nexclude = [\"P1\",\n  \"Q7\"]\n"),
            11,
            "invariants.exclude[1]",
            "unknown invariant `Q7`",
        );
        check(
            &format!("{GOOD}[gate]\nmax_mismatch_rate = 2.0\n"),
            10,
            "gate.max_mismatch_rate",
            "outside (0, 1]",
        );
        check(
            &format!("{GOOD}[coverage.min_per_kind]\nreproject = 1\n"),
            10,
            "coverage.min_per_kind.reproject",
            "weight 0",
        );
        check(
            &format!("{GOOD}[coverage.min_per_kind]\nrun_event = 31\n"),
            10,
            "coverage.min_per_kind.run_event",
            "at most 30 steps",
        );
        check(
            &format!(
                "{GOOD}[[coverage.cell]]\nkind = \"run_event\"\nmin = 1\n[[coverage.cell]]\nkind = \"run_event\"\nsink_mode = \"noop\"\nmin = 1\n"
            ),
            12,
            "coverage.cell[1]",
            "unreachable",
        );
        check(
            &format!(
                "{}[coverage.min_per_kind]\nfault_partial_fanout = 1\n",
                GOOD.replace("quiesce = 1", "quiesce = 1\nfault_partial_fanout = 1")
            ),
            11,
            "coverage.min_per_kind.fault_partial_fanout",
            "counted as `fault_khala`",
        );
        check(
            &format!("{GOOD}[swarm]\nalways_on = [\"reproject\"]\n"),
            10,
            "swarm.always_on[0]",
            "weight 0",
        );
        check(
            &format!("{GOOD}[start]\nflags = {{ web = true }}\nrollout_stage = \"B\"\n"),
            11,
            "start.rollout_stage",
            "decides every flag",
        );
    }

    #[test]
    fn reachable_cells_load() {
        let text = format!(
            "{}[[coverage.cell]]\nkind = \"run_event\"\nsink_mode = \"noop\"\nmin = 1\n",
            GOOD.replace("quiesce = 1", "quiesce = 1\nsink_mode = 1")
        );
        let scenario = Scenario::parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(scenario.coverage.cell.len(), 1);
    }

    #[test]
    fn invariant_selection_includes_then_excludes() {
        let selection = InvariantSelection {
            include: vec!["X1".into(), "X2".into()],
            exclude: vec!["X2".into()],
        };
        assert!(selection.checks("X1"));
        assert!(!selection.checks("X2"));
        assert!(!selection.checks("P1"));
        assert!(!selection.checks_all());
    }
}
