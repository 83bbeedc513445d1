//! Coverage accounting: how often each action kind fired in each client-flag,
//! sink-mode and rollout-stage state, the minimums a scenario declares, and
//! which minimums the scenario's own weights could never reach. The state
//! before each step is the oracle's, so counting needs no backend.

use crate::model::case::{ActionKind, Case, RolloutStage, Start, Step, Surface};
use crate::oracle::{ClientUser, Oracle};
use crate::plan::scenario::{CellMinimum, CoverageSpec, Scenario};
use khala_runtime::SinkMode;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;

/// Which surfaces run their Khala lane (for any of their users), written
/// `none`, `all`, or the surfaces joined by `+` (`web+desktop`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlagState {
    pub web: bool,
    pub mobile: bool,
    pub desktop: bool,
}

/// What a flag state may be written as, for error messages.
pub const FLAG_STATE_VALUES: &str = "`none`, `all`, or surfaces joined by `+` \
     (`web`, `mobile`, `desktop`; e.g. `web+mobile`)";

impl FlagState {
    pub fn of(oracle: &Oracle) -> Self {
        FlagState {
            web: oracle.surface_flag(Surface::Web),
            mobile: oracle.surface_flag(Surface::Mobile),
            desktop: oracle.surface_flag(Surface::Desktop),
        }
    }

    fn get(self, surface: Surface) -> bool {
        match surface {
            Surface::Web => self.web,
            Surface::Mobile => self.mobile,
            Surface::Desktop => self.desktop,
        }
    }
}

impl fmt::Display for FlagState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<&str> = Surface::ALL
            .into_iter()
            .filter(|surface| self.get(*surface))
            .map(Surface::as_str)
            .collect();
        match on.len() {
            0 => formatter.write_str("none"),
            3 => formatter.write_str("all"),
            _ => formatter.write_str(&on.join("+")),
        }
    }
}

impl FromStr for FlagState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("unknown flag state `{text}`: expected {FLAG_STATE_VALUES}");
        match text {
            "none" => return Ok(FlagState::default()),
            "all" => {
                return Ok(FlagState {
                    web: true,
                    mobile: true,
                    desktop: true,
                });
            }
            _ => {}
        }
        let mut state = FlagState::default();
        for part in text.split('+') {
            let slot = match part {
                "web" => &mut state.web,
                "mobile" => &mut state.mobile,
                "desktop" => &mut state.desktop,
                _ => return Err(invalid()),
            };
            if *slot {
                return Err(format!("flag state `{text}` names `{part}` twice"));
            }
            *slot = true;
        }
        Ok(state)
    }
}

impl Serialize for FlagState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FlagState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The rollout stage reached, `none` before the rollout begins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StageState(pub Option<RolloutStage>);

/// What a stage state may be written as, for error messages.
pub const STAGE_STATE_VALUES: &str = "`none`, `A`, `B`, `C`, `D`";

impl fmt::Display for StageState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0.map_or("none", RolloutStage::as_str))
    }
}

impl FromStr for StageState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "none" {
            return Ok(StageState(None));
        }
        RolloutStage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == text)
            .map(|stage| StageState(Some(stage)))
            .ok_or_else(|| format!("unknown rollout stage `{text}`: expected {STAGE_STATE_VALUES}"))
    }
}

impl Serialize for StageState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StageState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The configuration a step fired in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct State {
    pub flags: FlagState,
    /// `SinkMode::as_str`, so that states order.
    pub sink_mode: &'static str,
    pub rollout_stage: StageState,
}

impl State {
    pub fn of(oracle: &Oracle) -> Self {
        State {
            flags: FlagState::of(oracle),
            sink_mode: oracle.sink_mode().as_str(),
            rollout_stage: StageState(oracle.rollout_stage()),
        }
    }
}

/// One cell of the coverage table: an action kind in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub kind: &'static str,
    pub state: State,
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

/// Counts of fired steps, per kind and per cell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coverage {
    per_kind: BTreeMap<&'static str, u64>,
    cells: BTreeMap<Cell, u64>,
}

impl Coverage {
    /// Counts the first `steps_played` steps of `case` (the steps the
    /// driver actually played), each in the state before it.
    pub fn record(&mut self, case: &Case, steps_played: usize) {
        let mut oracle = Oracle::at_start(case.ids, &case.start);
        for step in case.steps.iter().take(steps_played) {
            let cell = Cell {
                kind: step.kind().name(),
                state: State::of(&oracle),
            };
            *self.per_kind.entry(cell.kind).or_default() += 1;
            *self.cells.entry(cell).or_default() += 1;
            oracle.apply(step);
        }
    }

    pub fn kind_count(&self, kind: &str) -> u64 {
        self.per_kind.get(kind).copied().unwrap_or(0)
    }

    pub fn matching_count(&self, minimum: &CellMinimum) -> u64 {
        self.cells
            .iter()
            .filter(|(cell, _)| cell.kind == minimum.kind && minimum.matches(&cell.state))
            .map(|(_, count)| count)
            .sum()
    }

    /// Every declared minimum the counts fall short of.
    pub fn gaps(&self, spec: &CoverageSpec) -> Vec<CoverageGap> {
        let per_kind = spec.min_per_kind.iter().map(|(kind, min)| CoverageGap {
            key: format!("coverage.min_per_kind.{kind}"),
            cell: format!("action kind {kind}"),
            count: self.kind_count(kind),
            min: *min,
        });
        let cells = spec
            .cell
            .iter()
            .enumerate()
            .map(|(index, minimum)| CoverageGap {
                key: format!("coverage.cell[{index}]"),
                cell: format!("cell {}", minimum.describe()),
                count: self.matching_count(minimum),
                min: minimum.min,
            });
        per_kind
            .chain(cells)
            .filter(|gap| gap.count < gap.min)
            .collect()
    }

    /// The report section of one scenario's run. Minimums are declared for
    /// the scenario's own number of cases, so they are checked only when at
    /// least that many ran.
    pub fn report(&self, scenario: &Scenario, cases_run: u32) -> ScenarioCoverage {
        let checked = cases_run >= scenario.cases;
        ScenarioCoverage {
            scenario: scenario.name.clone(),
            checked,
            unchecked_reason: (!checked).then(|| {
                format!(
                    "ran {cases_run} of the scenario's {} cases; minimums are not checked",
                    scenario.cases
                )
            }),
            per_kind: self
                .per_kind
                .iter()
                .map(|(kind, count)| ((*kind).to_owned(), *count))
                .collect(),
            cells: self
                .cells
                .iter()
                .map(|(cell, count)| CellCount {
                    kind: cell.kind.to_owned(),
                    flags: cell.state.flags,
                    sink_mode: SinkMode::ALL
                        .into_iter()
                        .find(|mode| mode.as_str() == cell.state.sink_mode)
                        .unwrap_or(SinkMode::Dual),
                    rollout_stage: cell.state.rollout_stage,
                    count: *count,
                })
                .collect(),
            gaps: if checked {
                self.gaps(&scenario.coverage)
            } else {
                Vec::new()
            },
        }
    }
}

/// A declared minimum a run fell short of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageGap {
    /// The scenario key that declares the minimum.
    pub key: String,
    /// What was counted: `action kind rollback`, `cell rollback × flags=none`.
    pub cell: String,
    pub count: u64,
    pub min: u64,
}

impl fmt::Display for CoverageGap {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            write!(
                formatter,
                "coverage: {} stayed empty (minimum {}, `{}`)",
                self.cell, self.min, self.key
            )
        } else {
            write!(
                formatter,
                "coverage: {} fired {} times, below its minimum {} (`{}`)",
                self.cell, self.count, self.min, self.key
            )
        }
    }
}

/// How often one action kind fired in one state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellCount {
    pub kind: String,
    pub flags: FlagState,
    pub sink_mode: SinkMode,
    pub rollout_stage: StageState,
    pub count: u64,
}

/// The `coverage` section of a scenario's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioCoverage {
    pub scenario: String,
    /// Whether the declared minimums were checked.
    pub checked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked_reason: Option<String>,
    /// Fired steps per action kind.
    pub per_kind: BTreeMap<String, u64>,
    /// Fired steps per action kind and state, sorted.
    pub cells: Vec<CellCount>,
    /// The declared minimums the run fell short of (empty when unchecked).
    pub gaps: Vec<CoverageGap>,
}

impl ScenarioCoverage {
    /// The gaps as one line, for a gate reason.
    pub fn shortfall(&self) -> Option<String> {
        (!self.gaps.is_empty()).then(|| {
            self.gaps
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// How many distinct steps of each kind are sampled to explore which states
/// the generator can reach; far more than any kind has configuration values.
const SAMPLES_PER_KIND: usize = 256;

/// Distinct steps the generator draws for `kinds`, sampled deterministically.
pub fn sample_steps(kinds: &[ActionKind]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut runner = TestRunner::deterministic();
    for kind in kinds {
        let strategy = crate::plan::generate::steps_of(*kind);
        for _ in 0..SAMPLES_PER_KIND {
            let Ok(tree) = strategy.new_tree(&mut runner) else {
                break;
            };
            let step = tree.current();
            if !steps.contains(&step) {
                steps.push(step);
            }
        }
    }
    steps
}

/// The kinds the steps of `kinds` are counted under (`fault_partial_fanout`
/// plays Khala failures, which count as `fault_khala`).
pub fn counted_kinds(kinds: &[ActionKind]) -> BTreeSet<ActionKind> {
    sample_steps(kinds).iter().map(Step::kind).collect()
}

/// The states a case of `start` can be in before one of its steps, drawing
/// only from `kinds`, with the fewest steps that reach each; states that
/// need `max_steps` or more steps are left out. Explored by applying the
/// generator's own steps to the oracle, so it stays true as either changes.
pub fn reachable_states(
    start: &Start,
    kinds: &[ActionKind],
    max_steps: u32,
) -> BTreeMap<State, u32> {
    let steps = sample_steps(kinds);
    let oracle = Oracle::at_start(crate::model::case::IdStyle::Plain, start);
    let mut seen: BTreeSet<ConfigKey> = BTreeSet::new();
    let mut reachable: BTreeMap<State, u32> = BTreeMap::new();
    let mut queue = VecDeque::from([(oracle, 0u32)]);
    while let Some((oracle, depth)) = queue.pop_front() {
        if depth >= max_steps || !seen.insert(ConfigKey::of(&oracle)) {
            continue;
        }
        reachable.entry(State::of(&oracle)).or_insert(depth);
        for step in &steps {
            let mut next = oracle.clone();
            next.apply(step);
            if !seen.contains(&ConfigKey::of(&next)) {
                queue.push_back((next, depth + 1));
            }
        }
    }
    reachable
}

/// Everything of the oracle's configuration that steps can change and that
/// is finite: each user's flags, the sink mode, the stage, the auditor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ConfigKey {
    flags: Vec<bool>,
    sink_mode: usize,
    rollout_stage: StageState,
    auditor_enabled: bool,
}

impl ConfigKey {
    fn of(oracle: &Oracle) -> Self {
        ConfigKey {
            flags: Surface::ALL
                .into_iter()
                .flat_map(|surface| {
                    ClientUser::ALL
                        .into_iter()
                        .map(move |user| oracle.flag(surface, user))
                })
                .collect(),
            sink_mode: SinkMode::ALL
                .iter()
                .position(|mode| *mode == oracle.sink_mode())
                .unwrap_or(0),
            rollout_stage: StageState(oracle.rollout_stage()),
            auditor_enabled: oracle.auditor_enabled(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::{CASE_SCHEMA, IdStyle, RollbackSwitch};
    use khala_runtime::Profile;

    #[test]
    fn flag_states_read_and_print_the_same() {
        for text in [
            "none",
            "all",
            "web",
            "mobile",
            "desktop",
            "web+mobile",
            "web+desktop",
            "mobile+desktop",
        ] {
            assert_eq!(text.parse::<FlagState>().unwrap().to_string(), text);
        }
        assert_eq!(
            "desktop+web".parse::<FlagState>().unwrap().to_string(),
            "web+desktop"
        );
        assert!(
            "web+web"
                .parse::<FlagState>()
                .unwrap_err()
                .contains("twice")
        );
        assert!("webb".parse::<FlagState>().unwrap_err().contains("`none`"));
        assert_eq!("none".parse::<StageState>().unwrap(), StageState(None));
        assert!("E".parse::<StageState>().unwrap_err().contains("`D`"));
    }

    #[test]
    fn steps_count_in_the_state_before_them() {
        let case = Case {
            schema: CASE_SCHEMA.to_owned(),
            profile: Profile::Hardened,
            start: Start::new(SinkMode::Dual),
            ids: IdStyle::Plain,
            steps: vec![
                Step::SetRolloutStage {
                    stage: RolloutStage::D,
                },
                Step::Rollback {
                    switch: RollbackSwitch::ClientFlags,
                },
                Step::Rollback {
                    switch: RollbackSwitch::RuntimeConvexOnly,
                },
                Step::Quiesce,
            ],
            origin: None,
        };
        let mut coverage = Coverage::default();
        coverage.record(&case, 3);
        assert_eq!(coverage.kind_count("rollback"), 2);
        assert_eq!(coverage.kind_count("quiesce"), 0, "not played");
        let minimum = |flags: &str, stage: Option<&str>| CellMinimum {
            kind: "rollback".into(),
            flags: Some(flags.parse().unwrap()),
            sink_mode: None,
            rollout_stage: stage.map(|stage| stage.parse().unwrap()),
            min: 1,
        };
        assert_eq!(coverage.matching_count(&minimum("all", Some("D"))), 1);
        assert_eq!(coverage.matching_count(&minimum("none", Some("D"))), 1);
        assert_eq!(coverage.matching_count(&minimum("none", Some("none"))), 0);
        let spec = CoverageSpec {
            min_per_kind: BTreeMap::from([("rollback".to_owned(), 3)]),
            cell: vec![minimum("web", None)],
        };
        let gaps: Vec<String> = coverage
            .gaps(&spec)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            gaps,
            vec![
                "coverage: action kind rollback fired 2 times, below its minimum 3 (`coverage.min_per_kind.rollback`)",
                "coverage: cell rollback × flags=web stayed empty (minimum 1, `coverage.cell[0]`)",
            ]
        );
    }

    #[test]
    fn minimums_are_checked_only_after_the_scenarios_own_cases() {
        let scenario = Scenario::parse(
            std::path::Path::new("c.toml"),
            "name='c'\ndescription='d'\ncases=4\nmax_steps=5\n[weights]\nrun_event=1\nrollback=1\n\
             [coverage.min_per_kind]\nrollback=2\n",
        )
        .unwrap();
        let coverage = Coverage::default();
        let short = coverage.report(&scenario, 3);
        assert!(!short.checked && short.gaps.is_empty() && short.shortfall().is_none());
        assert!(
            short
                .unchecked_reason
                .unwrap()
                .contains("ran 3 of the scenario's 4 cases")
        );
        let full = coverage.report(&scenario, 4);
        assert!(full.checked);
        assert_eq!(
            full.shortfall().as_deref(),
            Some(
                "coverage: action kind rollback stayed empty (minimum 2, `coverage.min_per_kind.rollback`)"
            )
        );
        let json = serde_json::to_value(&full).unwrap();
        let back: ScenarioCoverage = serde_json::from_value(json).unwrap();
        assert_eq!(back, full);
    }

    #[test]
    fn reachability_follows_the_generated_steps() {
        let start = Start::new(SinkMode::Dual);
        let only_events = reachable_states(&start, &[ActionKind::RunEvent], 10);
        assert_eq!(only_events.len(), 1);
        let with_modes =
            reachable_states(&start, &[ActionKind::RunEvent, ActionKind::SinkMode], 10);
        assert_eq!(with_modes.len(), SinkMode::ALL.len());
        assert!(with_modes.values().all(|depth| *depth <= 1));
        // Too few steps to leave the start.
        assert_eq!(
            reachable_states(&start, &[ActionKind::SinkMode], 1).len(),
            1
        );
        assert_eq!(
            counted_kinds(&[ActionKind::FaultPartialFanout, ActionKind::RunEvent]),
            BTreeSet::from([ActionKind::FaultKhala, ActionKind::RunEvent])
        );
    }
}
