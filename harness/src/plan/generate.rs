//! Generators: proptest strategies that turn a scenario's weights into
//! cases. A few entities per case so that steps collide on them; entities
//! are created on first use, so proptest's shrinking may drop any step.

use crate::model::case::{ActionKind, CASE_SCHEMA, Case, IdStyle, Start, Step};
use crate::plan::scenario::Scenario;
use crate::plan::steps::{CornerBounds, Draws, steps_of};
use khala_runtime::Profile;
use khala_runtime::sink::PayloadMode;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, NewTree, Union, ValueTree};
use proptest::test_runner::TestRunner;
use std::collections::BTreeMap;

/// One step, drawn by the scenario's weights.
pub fn step(scenario: &Scenario) -> BoxedStrategy<Step> {
    weighted_step(
        &weighted_kinds(scenario),
        &scenario.draws(),
        &scenario.corner_bounds(),
    )
}

/// The kinds with a weight above 0, and their weights.
fn weighted_kinds(scenario: &Scenario) -> Vec<(ActionKind, u32)> {
    scenario
        .weighted_kinds()
        .into_iter()
        .map(|kind| (kind, scenario.weight(kind)))
        .collect()
}

fn weighted_step(
    kinds: &[(ActionKind, u32)],
    draws: &Draws,
    corners: &CornerBounds,
) -> BoxedStrategy<Step> {
    let weighted: Vec<(u32, BoxedStrategy<Step>)> = kinds
        .iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(kind, weight)| (*weight, steps_of(*kind, draws, corners)))
        .collect();
    Union::new_weighted(weighted).boxed()
}

/// Swarm generation: the kinds one case draws from. Each weighted kind is
/// kept when its bit of `bits` is set (probability ½), the `always_on`
/// ones always; when that leaves none, one kind picked by the high bits.
pub fn swarm_subset(
    kinds: &[(ActionKind, u32)],
    always_on: &[String],
    bits: u64,
) -> Vec<(ActionKind, u32)> {
    let kept: Vec<(ActionKind, u32)> = kinds
        .iter()
        .enumerate()
        .filter(|(index, (kind, _))| {
            bits >> (index % 32) & 1 == 1 || always_on.iter().any(|always| always == kind.name())
        })
        .map(|(_, kind)| *kind)
        .collect();
    if !kept.is_empty() || kinds.is_empty() {
        return kept;
    }
    let pick = (bits >> 32) as usize % kinds.len();
    vec![kinds[pick]]
}

/// A whole case under `profile`. With swarm generation on, each case first
/// draws the subset of kinds it uses (from the case's own RNG, and never
/// shrunk, so shrinking only drops and simplifies steps).
pub fn case(scenario: &Scenario, profile: Profile) -> BoxedStrategy<Case> {
    let start = scenario.start();
    let lengths = scenario.min_steps as usize..=scenario.max_steps as usize;
    let weighted = weighted_kinds(scenario);
    let kinds: BoxedStrategy<Vec<(ActionKind, u32)>> = if scenario.swarm.enabled {
        let always_on = scenario.swarm.always_on.clone();
        any::<u64>()
            .no_shrink()
            .prop_map(move |bits| swarm_subset(&weighted, &always_on, bits))
            .boxed()
    } else {
        Just(weighted).boxed()
    };
    let draws = scenario.draws();
    let corners = scenario.corner_bounds();
    let steps =
        kinds.prop_flat_map(move |kinds| steps_between(&kinds, &draws, &corners, lengths.clone()));
    let ids = prop_oneof![8 => Just(IdStyle::Plain), 1 => Just(IdStyle::Long), 1 => Just(IdStyle::Unicode)];
    (steps, ids, payload_mode(&scenario.start.payload_modes))
        .prop_map(move |(steps, ids, payload_mode)| Case {
            schema: CASE_SCHEMA.to_owned(),
            profile,
            start: Start {
                payload_mode,
                ..start.clone()
            },
            ids,
            steps,
            origin: None,
        })
        .boxed()
}

/// The payload mode a case is deployed with, by the scenario's weights
/// (shrinking towards inline, the original's default). Without weights
/// nothing is drawn: `Just` takes nothing from the RNG, so the case stream
/// of scenarios that do not weigh it is unchanged.
fn payload_mode(weights: &BTreeMap<PayloadMode, u32>) -> BoxedStrategy<PayloadMode> {
    let weighted: Vec<(u32, BoxedStrategy<PayloadMode>)> = weights
        .iter()
        .filter(|(_, weight)| **weight > 0)
        .map(|(mode, weight)| (*weight, Just(*mode).boxed()))
        .collect();
    if weighted.is_empty() {
        Just(PayloadMode::Inline).boxed()
    } else {
        Union::new_weighted(weighted).boxed()
    }
}

/// Between `lengths` steps drawn by weight. A vector never shrinks below
/// its minimum length, so where that is above 1 each step is drawn
/// `Droppable`: shrinking can still go down to the one step a failure needs.
fn steps_between(
    kinds: &[(ActionKind, u32)],
    draws: &Draws,
    corners: &CornerBounds,
    lengths: std::ops::RangeInclusive<usize>,
) -> BoxedStrategy<Vec<Step>> {
    let step = weighted_step(kinds, draws, corners);
    if *lengths.start() <= 1 {
        return prop::collection::vec(step, lengths).boxed();
    }
    prop::collection::vec(Droppable(step), lengths)
        .prop_map(|steps| steps.into_iter().flatten().collect())
        .boxed()
}

/// A value always drawn (`Some`) whose first simplification drops it
/// (`None`); kept, it simplifies as its own strategy does.
#[derive(Debug)]
struct Droppable<S>(S);

impl<S: Strategy> Strategy for Droppable<S> {
    type Tree = DroppableTree<S::Tree>;
    type Value = Option<S::Value>;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        Ok(DroppableTree {
            inner: self.0.new_tree(runner)?,
            state: Dropping::NotTried,
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Dropping {
    NotTried,
    Dropped,
    /// Dropping it made the failure go: it stays, and simplifies inside.
    Needed,
}

#[derive(Debug)]
struct DroppableTree<T> {
    inner: T,
    state: Dropping,
}

impl<T: ValueTree> ValueTree for DroppableTree<T> {
    type Value = Option<T::Value>;

    fn current(&self) -> Self::Value {
        match self.state {
            Dropping::Dropped => None,
            Dropping::NotTried | Dropping::Needed => Some(self.inner.current()),
        }
    }

    fn simplify(&mut self) -> bool {
        match self.state {
            Dropping::NotTried => {
                self.state = Dropping::Dropped;
                true
            }
            Dropping::Dropped => false,
            Dropping::Needed => self.inner.simplify(),
        }
    }

    fn complicate(&mut self) -> bool {
        match self.state {
            Dropping::NotTried => false,
            Dropping::Dropped => {
                self.state = Dropping::Needed;
                true
            }
            Dropping::Needed => self.inner.complicate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::RolloutStage;
    use khala_runtime::SinkMode;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    #[test]
    fn every_kind_has_a_strategy_and_steps_report_their_kind() {
        for kind in ActionKind::ALL {
            let strategy = steps_of(kind, &Draws::default(), &CornerBounds::default());
            let mut runner = TestRunner::deterministic();
            let step = strategy.new_tree(&mut runner).unwrap().current();
            let expected = match kind {
                ActionKind::FaultPartialFanout => ActionKind::FaultKhala,
                other => other,
            };
            assert_eq!(step.kind(), expected);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_cases() {
        let scenario = crate::plan::scenario::Scenario::parse(
            std::path::Path::new("t.toml"),
            "name='t'\ndescription='d'\ncases=1\nmax_steps=20\n[weights]\nrun_event=1\nsink_mode=1\nfault_khala=1\n",
        )
        .unwrap();
        let draw = || {
            let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
            let mut runner = TestRunner::new_with_rng(Config::default(), rng);
            case(&scenario, Profile::Legacy)
                .new_tree(&mut runner)
                .unwrap()
                .current()
        };
        assert_eq!(draw(), draw());
        assert!(draw().steps.iter().all(|step| {
            [
                ActionKind::RunEvent,
                ActionKind::SinkMode,
                ActionKind::FaultKhala,
            ]
            .contains(&step.kind())
        }));
    }

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(std::path::Path::new("t.toml"), text).unwrap()
    }

    fn draw_cases(scenario: &Scenario, count: usize) -> Vec<Case> {
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]);
        let mut runner = TestRunner::new_with_rng(Config::default(), rng);
        let strategy = case(scenario, Profile::Hardened);
        (0..count)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current())
            .collect()
    }

    fn kinds_of(case: &Case) -> std::collections::BTreeSet<ActionKind> {
        case.steps.iter().map(Step::kind).collect()
    }

    #[test]
    fn min_steps_sets_the_drawn_length_but_shrinking_still_drops_steps() {
        let text = "name='t'\ndescription='d'\ncases=1\nmin_steps=12\nmax_steps=12\n[swarm]\nenabled=false\n[weights]\nrun_event=1\nworker_event=1\n";
        let scenario = scenario(text);
        let cases = draw_cases(&scenario, 20);
        assert!(cases.iter().all(|case| case.steps.len() == 12));
        // A failure that needs one worker event shrinks to that one step.
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[5; 32]),
        );
        let failure = runner.run(&case(&scenario, Profile::Hardened), |case| {
            let has_worker_event = case
                .steps
                .iter()
                .any(|step| step.kind() == ActionKind::WorkerEvent);
            proptest::prop_assert!(!has_worker_event);
            Ok(())
        });
        let Err(proptest::test_runner::TestError::Fail(_, minimal)) = failure else {
            panic!("every 12-step case of two kinds has a worker event: {failure:?}");
        };
        assert_eq!(minimal.steps.len(), 1, "{:?}", minimal.steps);
    }

    const FOUR_KINDS: &str = "name='t'\ndescription='d'\ncases=1\nmax_steps=40\n[weights]\nrun_event=1\nworker_event=1\nsink_mode=1\nfault_khala=1\n";

    #[test]
    fn swarm_cases_switch_off_subsets_of_the_kinds() {
        let cases = draw_cases(&scenario(FOUR_KINDS), 60);
        let long: Vec<&Case> = cases.iter().filter(|case| case.steps.len() >= 20).collect();
        assert!(long.len() > 10);
        assert!(
            long.iter().any(|case| kinds_of(case).len() <= 2),
            "some long case keeps at most half the kinds"
        );
        let union: std::collections::BTreeSet<_> = cases.iter().flat_map(kinds_of).collect();
        assert_eq!(union.len(), 4, "every kind still occurs");
        let always = scenario(&format!(
            "{FOUR_KINDS}[swarm]\nalways_on = ['fault_khala']\n"
        ));
        assert!(
            draw_cases(&always, 30)
                .iter()
                .filter(|case| case.steps.len() >= 20)
                .all(|case| kinds_of(case).contains(&ActionKind::FaultKhala))
        );
    }

    #[test]
    fn without_swarm_long_cases_use_every_kind() {
        let off = scenario(&format!("{FOUR_KINDS}[swarm]\nenabled = false\n"));
        let cases = draw_cases(&off, 30);
        assert!(
            cases
                .iter()
                .filter(|case| case.steps.len() >= 30)
                .all(|case| kinds_of(case).len() == 4)
        );
    }

    #[test]
    fn metadata_values_follow_the_value_weights_and_default_to_plain() {
        let values_of = |text: &str| -> std::collections::BTreeSet<crate::model::case::ValueKind> {
            draw_cases(&scenario(text), 20)
                .iter()
                .flat_map(|case| case.steps.clone())
                .filter_map(|step| match step {
                    Step::ReportWorkerMetadata { value, variant, .. } => {
                        assert!(variant < value.variants());
                        Some(value)
                    }
                    _ => None,
                })
                .collect()
        };
        let base =
            "name='t'\ndescription='d'\ncases=1\nmax_steps=20\n[weights]\nworker_metadata=1\n";
        use crate::model::case::ValueKind;
        assert_eq!(values_of(base), [ValueKind::Plain].into());
        let weighted = format!("{base}[values]\ndeep=1\nlarge=1\nplain=0\n");
        assert_eq!(
            values_of(&weighted),
            [ValueKind::Deep, ValueKind::Large].into()
        );
    }

    #[test]
    fn flag_values_and_convex_faults_follow_their_weights() {
        use crate::model::case::ConvexFault;
        let steps_of_text = |text: &str| -> Vec<Step> {
            draw_cases(&scenario(text), 20)
                .iter()
                .flat_map(|case| case.steps.clone())
                .collect()
        };
        let flags = steps_of_text(
            "name='t'\ndescription='d'\ncases=1\nmax_steps=20\n[weights]\nclient_flag=1\n[flag_values]\nupper_true=1\nunset=1\ntrue=0\n",
        );
        let values: std::collections::BTreeSet<Option<String>> = flags
            .into_iter()
            .filter_map(|step| match step {
                Step::SetClientFlag { value, .. } => Some(value),
                _ => None,
            })
            .collect();
        assert_eq!(values, [None, Some("TRUE".to_owned())].into());
        let faults = steps_of_text(
            "name='t'\ndescription='d'\ncases=1\nmax_steps=20\n[weights]\nfault_convex=1\n[convex_faults]\nfunction_error_200=1\nfunction_error_560=1\n",
        );
        let kinds: std::collections::BTreeSet<String> = faults
            .into_iter()
            .map(|step| match step {
                Step::BreakConvex {
                    fault: fault @ (ConvexFault::FunctionError200 | ConvexFault::FunctionError560),
                } => format!("{fault:?}"),
                other => panic!("not drawn by the weights: {other:?}"),
            })
            .collect();
        assert_eq!(kinds.len(), 2);
    }

    #[test]
    fn a_swarm_subset_is_never_empty() {
        let kinds = [(ActionKind::RunEvent, 1), (ActionKind::Quiesce, 2)];
        assert_eq!(
            swarm_subset(&kinds, &[], 0b01),
            vec![(ActionKind::RunEvent, 1)]
        );
        assert_eq!(swarm_subset(&kinds, &[], 0b11), kinds.to_vec());
        assert_eq!(swarm_subset(&kinds, &[], 1 << 32).len(), 1);
        assert_eq!(
            swarm_subset(&kinds, &["quiesce".to_owned()], 0b01),
            kinds.to_vec()
        );
    }

    #[test]
    fn the_start_comes_from_the_scenario() {
        let staged = scenario(&format!(
            "{FOUR_KINDS}[start]\nsink_mode = 'convex_only'\nrollout_stage = 'B'\n"
        ));
        let case = &draw_cases(&staged, 1)[0];
        assert_eq!(case.start.sink_mode, SinkMode::ConvexOnly);
        assert_eq!(case.start.rollout_stage, Some(RolloutStage::B));
    }
}
