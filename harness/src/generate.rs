//! Generators: proptest strategies that turn a scenario's weights into
//! cases. A few entities per case so that steps collide on them; entities
//! are created on first use, so proptest's shrinking may drop any step.

use crate::case::{
    CASE_SCHEMA, Case, ConvexFault, EntityRef, IdStyle, RunEventType, Start, Step, StopPath,
    TerminalStatus, WorkerEventType,
};
use crate::scenario::Scenario;
use khala_runtime::{Profile, SinkMode};
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};

/// Entities per kind a case may touch.
pub const ENTITIES_PER_KIND: u8 = 3;

fn run() -> impl Strategy<Value = u8> {
    0..ENTITIES_PER_KIND
}

fn entity() -> impl Strategy<Value = EntityRef> {
    prop_oneof![
        run().prop_map(EntityRef::Run),
        run().prop_map(EntityRef::Worker)
    ]
}

fn sink_mode() -> impl Strategy<Value = SinkMode> {
    prop::sample::select(SinkMode::ALL.to_vec())
}

/// The steps of one action kind.
fn steps_of(kind: &str) -> Option<BoxedStrategy<Step>> {
    let strategy = match kind {
        "run_event" => prop_oneof![
            4 => (run(), prop::sample::select(vec![RunEventType::Started, RunEventType::Delta, RunEventType::CancelRequested]))
                .prop_map(|(run, event_type)| Step::AppendRunEvent { run, event_type }),
            1 => (run(), prop::sample::select(vec![TerminalStatus::Succeeded, TerminalStatus::Failed, TerminalStatus::Canceled]))
                .prop_map(|(run, status)| Step::FinishRun { run, status }),
        ]
        .boxed(),
        "worker_event" => prop_oneof![
            4 => (run(), prop::sample::select(vec![
                WorkerEventType::Heartbeat,
                WorkerEventType::RequestReceived,
                WorkerEventType::Response,
                WorkerEventType::Error,
            ]))
                .prop_map(|(worker, event_type)| Step::AppendWorkerEvent { worker, event_type }),
            1 => (run(), prop::sample::select(vec![StopPath::Stop, StopPath::Ingest]))
                .prop_map(|(worker, path)| Step::StopWorker { worker, path }),
        ]
        .boxed(),
        "duplicate_delivery" => entity().prop_map(|entity| Step::DuplicateDelivery { entity }).boxed(),
        "sink_mode" => sink_mode().prop_map(|mode| Step::SwitchSinkMode { mode }).boxed(),
        // The runtime half of the rollback of spec §9.4: back to Convex-only.
        "rollback" => Just(Step::SwitchSinkMode { mode: SinkMode::ConvexOnly }).boxed(),
        "reproject" => prop::option::weighted(0.7, entity()).prop_map(|entity| Step::Reproject { entity }).boxed(),
        "projection_version_bump" => Just(Step::BumpProjectionVersion).boxed(),
        "fault_convex" => prop::sample::select(vec![ConvexFault::Reset, ConvexFault::Timeout])
            .prop_map(|fault| Step::BreakConvex { fault })
            .boxed(),
        // A Khala failure is also what fails the second sink of the fanout.
        "fault_khala" | "fault_partial_fanout" => Just(Step::BreakKhala).boxed(),
        "quiesce" => prop_oneof![Just(Step::Heal), Just(Step::Quiesce)].boxed(),
        _ => return None,
    };
    Some(strategy)
}

/// One step, drawn by the scenario's weights.
pub fn step(scenario: &Scenario) -> BoxedStrategy<Step> {
    let weighted: Vec<(u32, BoxedStrategy<Step>)> = scenario
        .weights
        .iter()
        .filter(|(_, weight)| **weight > 0)
        .filter_map(|(kind, weight)| steps_of(kind).map(|strategy| (*weight, strategy)))
        .collect();
    Union::new_weighted(weighted).boxed()
}

/// A whole case under `profile`.
pub fn case(scenario: &Scenario, profile: Profile) -> BoxedStrategy<Case> {
    let start_mode = scenario.start.sink_mode;
    let steps = prop::collection::vec(step(scenario), 1..=scenario.max_steps as usize);
    let ids = prop_oneof![8 => Just(IdStyle::Plain), 1 => Just(IdStyle::Long), 1 => Just(IdStyle::Unicode)];
    (steps, ids)
        .prop_map(move |(steps, ids)| Case {
            schema: CASE_SCHEMA.to_owned(),
            profile,
            start: Start {
                sink_mode: start_mode,
            },
            ids,
            steps,
            origin: None,
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::GENERATED;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    #[test]
    fn every_generated_kind_has_a_strategy_and_steps_report_their_kind() {
        for kind in GENERATED {
            let strategy = steps_of(kind).unwrap_or_else(|| panic!("no strategy for {kind}"));
            let mut runner = TestRunner::deterministic();
            let step = strategy.new_tree(&mut runner).unwrap().current();
            let expected = match kind {
                "rollback" => "sink_mode",
                "fault_partial_fanout" => "fault_khala",
                other => other,
            };
            assert_eq!(step.kind(), expected);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_cases() {
        let scenario = crate::scenario::Scenario::parse(
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
        assert!(
            draw()
                .steps
                .iter()
                .all(|step| ["run_event", "sink_mode", "fault_khala"].contains(&step.kind()))
        );
    }
}
