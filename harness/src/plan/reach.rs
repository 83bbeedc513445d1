//! Which states a scenario's weighted kinds can bring a case to: the
//! flag, sink-mode and rollout-stage state a step fires in, the steps each
//! kind draws (sampled), and the states reachable from a start within a
//! number of steps. Scenario validation uses it to refuse minimums no run
//! could reach; coverage counts in its states.

use crate::model::case::ClientUser;
use crate::model::case::{ActionKind, RolloutStage, Start, Step, Surface};
use crate::oracle::Oracle;
use crate::plan::steps::{CornerBounds, Draws, steps_of};
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

/// How many distinct steps of each kind are sampled to explore which states
/// the generator can reach; far more than any kind has configuration values.
const SAMPLES_PER_KIND: usize = 256;

/// Distinct steps the generator draws for `kinds`, sampled deterministically.
pub fn sample_steps(kinds: &[ActionKind]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut runner = TestRunner::deterministic();
    for kind in kinds {
        let strategy = steps_of(*kind, &Draws::default(), &CornerBounds::default());
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
