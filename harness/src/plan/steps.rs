//! The steps each action kind draws: one proptest strategy per kind, over
//! a few entities per case so that steps collide on them.

use crate::model::case::{
    ActionKind, ConvexFault, EntityRef, KhalaFault, Outage, RollbackSwitch, RolloutStage,
    RunEventType, Step, StopPath, Surface, TerminalStatus, WorkerEventType,
};
use crate::model::draws::{ConvexFaultKind, FlagSpelling};
use crate::model::values::{Text, TextKind, TextWeights, ValueKind, ValueWeights};
use khala_runtime::SinkMode;
use proptest::prelude::*;

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

fn surface() -> impl Strategy<Value = Surface> {
    prop::sample::select(Surface::ALL.to_vec())
}

/// What the kinds draw within themselves, by the scenario's weights: the
/// metadata values (`[values]`), the raw flag values (`[flag_values]`),
/// the Convex faults (`[convex_faults]`) and the Khala faults
/// (`[khala_faults]`). An empty weight list keeps the kind's own draw
/// (`"true"` or unset; the transport faults and the pause; the read
/// models), so scenarios without the table draw the cases they always did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draws {
    pub values: ValueWeights,
    pub texts: TextWeights,
    pub flag_spellings: Vec<(FlagSpelling, u32)>,
    pub convex_faults: Vec<(ConvexFaultKind, u32)>,
    pub khala_faults: Vec<(KhalaFault, u32)>,
}

/// One of `weighted` by weight, shrinking toward the first listed.
fn weighted_choice<T: Clone + std::fmt::Debug + 'static>(
    weighted: &[(T, u32)],
) -> Option<BoxedStrategy<T>> {
    let choices: Vec<(u32, BoxedStrategy<T>)> = weighted
        .iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(choice, weight)| (*weight, Just(choice.clone()).boxed()))
        .collect();
    (!choices.is_empty()).then(|| proptest::strategy::Union::new_weighted(choices).boxed())
}

/// A metadata value drawn by the scenario's value weights: a kind, then
/// one of its variants (shrinking moves toward the first kind and variant).
fn metadata_value(values: &ValueWeights) -> BoxedStrategy<(ValueKind, u8)> {
    let weighted: Vec<(u32, BoxedStrategy<(ValueKind, u8)>)> = values
        .0
        .iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(kind, weight)| {
            let kind = *kind;
            (
                *weight,
                (0..kind.variants())
                    .prop_map(move |variant| (kind, variant))
                    .boxed(),
            )
        })
        .collect();
    if weighted.is_empty() {
        return Just((ValueKind::Plain, 0)).boxed();
    }
    proptest::strategy::Union::new_weighted(weighted).boxed()
}

/// A free-text value drawn by the scenario's text weights (`[texts]`,
/// or `without` when the scenario has no such table): a kind, then one of
/// its variants. A finished run's reason without the table is `null`, as
/// before, so the RNG stream of scenarios without it is unchanged.
fn text_value(texts: &TextWeights, without: &[(TextKind, u32)]) -> BoxedStrategy<Text> {
    let texts = if texts.0.is_empty() {
        without
    } else {
        &texts.0
    };
    let weighted: Vec<(u32, BoxedStrategy<Text>)> = texts
        .iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(kind, weight)| {
            let kind = *kind;
            (
                *weight,
                (0..kind.variants())
                    .prop_map(move |variant| Text { kind, variant })
                    .boxed(),
            )
        })
        .collect();
    if weighted.is_empty() {
        return Just(Text::NULL).boxed();
    }
    proptest::strategy::Union::new_weighted(weighted).boxed()
}

/// How far the corner generators reach (a scenario's `[event_gap]` and
/// `[retention]` tables; `plan::scenario` refuses bounds no case can meet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CornerBounds {
    /// The most event rows one `remove_events` step removes.
    pub events_removed_max: u8,
    /// The highest row rank a `run_retention_at_row` step lands on.
    pub cutoff_rank_max: u8,
}

impl Default for CornerBounds {
    fn default() -> Self {
        CornerBounds {
            events_removed_max: 2,
            cutoff_rank_max: 4,
        }
    }
}

/// The most journal rows one step can append: a `reproject --all`, a
/// hardened version bump or sink switch projects every entity once.
pub const JOURNAL_ROWS_PER_STEP_MAX: u32 = 2 * ENTITIES_PER_KIND as u32;

/// The steps of one action kind; what they draw within drawn by `draws`,
/// the corner steps within `corners`.
pub fn steps_of(kind: ActionKind, draws: &Draws, corners: &CornerBounds) -> BoxedStrategy<Step> {
    match kind {
        ActionKind::WorkerMetadata => (run(), metadata_value(&draws.values))
            .prop_map(|(worker, (value, variant))| Step::ReportWorkerMetadata {
                worker,
                value,
                variant,
            })
            .boxed(),
        ActionKind::RunEvent => prop_oneof![
            4 => (run(), prop::sample::select(vec![RunEventType::Started, RunEventType::Delta, RunEventType::CancelRequested]))
                .prop_map(|(run, event_type)| Step::AppendRunEvent { run, event_type }),
            1 => (run(), prop::sample::select(vec![TerminalStatus::Succeeded, TerminalStatus::Failed, TerminalStatus::Canceled]), text_value(&draws.texts, &[]))
                .prop_map(|(run, status, reason)| Step::FinishRun { run, status, reason }),
        ]
        .boxed(),
        ActionKind::WorkerEvent => prop_oneof![
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
        // Without `[texts]`, plain text or none.
        ActionKind::CreateWorker => {
            let text = || text_value(&draws.texts, &[(TextKind::Null, 1), (TextKind::Plain, 1)]);
            (run(), text(), text(), text())
                .prop_map(
                    |(worker, owner_guest_scope, workspace_ref, codex_home_ref)| {
                        Step::CreateWorker {
                            worker,
                            owner_guest_scope,
                            workspace_ref,
                            codex_home_ref,
                        }
                    },
                )
                .boxed()
        }
        ActionKind::DuplicateDelivery => entity().prop_map(|entity| Step::DuplicateDelivery { entity }).boxed(),
        ActionKind::SinkMode => sink_mode().prop_map(|mode| Step::SwitchSinkMode { mode }).boxed(),
        ActionKind::ClientFlag => match weighted_choice(&draws.flag_spellings) {
            Some(spelling) => (surface(), spelling)
                .prop_map(|(surface, spelling)| Step::SetClientFlag {
                    surface,
                    value: spelling.raw().map(str::to_owned),
                })
                .boxed(),
            None => (surface(), any::<bool>())
                .prop_map(|(surface, enabled)| Step::SetClientFlag {
                    surface,
                    value: enabled.then(|| "true".to_owned()),
                })
                .boxed(),
        },
        ActionKind::RolloutStage => prop::sample::select(RolloutStage::ALL.to_vec())
            .prop_map(|stage| Step::SetRolloutStage { stage })
            .boxed(),
        ActionKind::Rollback => prop::sample::select(vec![
            RollbackSwitch::ClientFlags,
            RollbackSwitch::RuntimeConvexOnly,
            RollbackSwitch::DisableAuditor,
        ])
        .prop_map(|switch| Step::Rollback { switch })
        .boxed(),
        ActionKind::AuditorCycle => Just(Step::AuditorCycle).boxed(),
        // A run past every row, or one whose cutoff lands on a row: the
        // boundary instant itself, and a partial prune when the rank is
        // above 0.
        ActionKind::Retention => prop_oneof![
            1 => Just(Step::RunRetention),
            2 => (0..=corners.cutoff_rank_max).prop_map(|rank| Step::RunRetentionAtRow { rank }),
        ]
        .boxed(),
        ActionKind::RetentionAtCursor => Just(Step::RunRetentionAtCursor).boxed(),
        ActionKind::EventGap => (entity(), 1..=corners.events_removed_max.max(1))
            .prop_map(|(entity, count)| Step::RemoveEvents { entity, count })
            .boxed(),
        ActionKind::ClientReconnect => prop_oneof![
            surface().prop_map(|surface| Step::DisconnectClient { surface }),
            surface().prop_map(|surface| Step::ReconnectClient { surface }),
        ]
        .boxed(),
        ActionKind::RestartSyncServer => Just(Step::RestartSyncServer).boxed(),
        // Seconds of wall clock each (a container stop and start): a kind
        // of its own, so that fast scenarios can leave it out.
        ActionKind::RestartConvex => Just(Step::ConvexOutage { outage: Outage::Stop }).boxed(),
        ActionKind::Reproject => prop::option::weighted(0.7, entity()).prop_map(|entity| Step::Reproject { entity }).boxed(),
        ActionKind::ProjectionVersionBump => Just(Step::BumpProjectionVersion).boxed(),
        ActionKind::FaultConvex => match weighted_choice(&draws.convex_faults) {
            Some(fault) => fault.prop_map(ConvexFaultKind::step).boxed(),
            None => prop_oneof![
                4 => prop::sample::select(vec![ConvexFault::Reset, ConvexFault::Timeout, ConvexFault::Delay])
                    .prop_map(|fault| Step::BreakConvex { fault }),
                1 => Just(Step::ConvexOutage { outage: Outage::Pause }),
            ]
            .boxed(),
        },
        ActionKind::FaultKhala => match weighted_choice(&draws.khala_faults) {
            Some(fault) => fault.prop_map(|fault| Step::BreakKhala { fault }).boxed(),
            None => Just(Step::BreakKhala { fault: KhalaFault::ReadModel }).boxed(),
        },
        // A Khala failure is also what fails the second sink of the fanout.
        ActionKind::FaultPartialFanout => Just(Step::BreakKhala { fault: KhalaFault::ReadModel }).boxed(),
        ActionKind::Quiesce => prop_oneof![Just(Step::Heal), Just(Step::Quiesce)].boxed(),
        // Below and above the heartbeat period (15 s), the channel timeout
        // (60 s + a tick) and the socket idle timeout (60 s after the last
        // frame), so listening clients cross each of them.
        // The desktop runs no client at the modelled commit (spec §9.1).
        ActionKind::ShippedClientReload => prop::sample::select(vec![Surface::Web, Surface::Mobile])
            .prop_map(|surface| Step::ReloadShippedClient { surface })
            .boxed(),
        ActionKind::AdvanceTime => prop::sample::select(vec![5i64, 15, 30, 61, 90, 150, 300])
            .prop_map(|seconds| Step::AdvanceTime { seconds })
            .boxed(),
    }
}
