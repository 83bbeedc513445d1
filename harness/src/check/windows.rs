//! X8: parity after every step. Where Khala and Convex hold a document
//! differently (another seq, one missing, or other content at one seq) the
//! stores are in a divergence window. A step that opens or changes a window
//! is explained when Convex had a fault since the last quiescence (a write
//! may land in Convex while the sink reports a failure, or not at all), or when
//! the sink mode then wrote one store or none; anything else is a defect
//! (for example Convex receiving a write whose projection failed on Khala
//! while Convex had no fault: a partial dual publish). Explained windows
//! are measured, and the gate can bound their length
//! (`max_explained_window_steps`).

use crate::model::case::Step;
use crate::model::observation::{Observation, document_seq};
use crate::model::reason::WindowClass;
use crate::model::violation::Violation;
use khala_runtime::SinkMode;
use khala_runtime::sink::convex_value::int_precision_lost;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

use super::invariants::{Recorder, without_projected_at};

/// How the stores disagree on one document.
#[derive(Clone, Debug, PartialEq)]
struct Divergence {
    khala_seq: Option<i64>,
    convex_seq: Option<i64>,
    /// The Khala document without `projected_at`, to tell content apart.
    khala: Option<Value>,
    convex: Option<Value>,
}

#[derive(Clone, Debug)]
struct Window {
    opened: usize,
    divergence: Divergence,
    explained: bool,
}

/// Explained windows, measured over cases.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowMetrics {
    /// Windows every change of which a fault or the sink mode explained.
    pub explained: u64,
    /// Windows some change of which nothing explained (each an X8 violation).
    pub unexplained: u64,
    /// The longest explained window, in steps (open to close, or to the
    /// end of its case).
    pub longest_explained_steps: u64,
}

impl WindowMetrics {
    pub fn merge(&mut self, other: &WindowMetrics) {
        self.explained += other.explained;
        self.unexplained += other.unexplained;
        self.longest_explained_steps = self
            .longest_explained_steps
            .max(other.longest_explained_steps);
    }
}

/// The divergence windows of one case, step by step.
#[derive(Clone, Debug)]
pub struct ParityWindows {
    mode: SinkMode,
    convex_fault: bool,
    open: BTreeMap<String, Window>,
    metrics: WindowMetrics,
}

impl ParityWindows {
    pub fn new(start_mode: SinkMode) -> Self {
        ParityWindows {
            mode: start_mode,
            convex_fault: false,
            open: BTreeMap::new(),
            metrics: WindowMetrics::default(),
        }
    }

    /// The windows after step `step_index` (`step`) left the stores as
    /// `current`: a violation for each window the step opened or changed
    /// with nothing to explain it.
    pub fn observe(
        &mut self,
        step_index: usize,
        step: &Step,
        current: &Observation,
    ) -> Vec<Violation> {
        // A Convex fault explains what follows until the catch-up at
        // quiescence: writes held while Convex was down land as it comes
        // back, and the harness may read them a step later.
        match step {
            Step::BreakConvex { .. } | Step::ConvexOutage { .. } => self.convex_fault = true,
            Step::SwitchSinkMode { mode } => self.mode = *mode,
            Step::Rollback {
                switch: crate::model::case::RollbackSwitch::RuntimeConvexOnly,
            } => self.mode = SinkMode::ConvexOnly,
            _ => {}
        }
        let explained =
            self.convex_fault || !(self.mode.writes_khala() && self.mode.writes_convex());
        let mut recorder = Recorder::new(step_index, current);
        let mut now = divergences(current);
        let keys: BTreeSet<String> = self.open.keys().chain(now.keys()).cloned().collect();
        for key in keys {
            match (self.open.remove(&key), now.remove(&key)) {
                (Some(window), None) => self.close(&window, step_index),
                (None, Some(divergence)) => {
                    if !explained {
                        record(&mut recorder, &key, &divergence, "opened");
                    }
                    self.open.insert(
                        key,
                        Window {
                            opened: step_index,
                            divergence,
                            explained,
                        },
                    );
                }
                (Some(mut window), Some(divergence)) => {
                    if window.divergence != divergence && !explained {
                        if window.explained {
                            record(&mut recorder, &key, &divergence, "changed");
                        }
                        window.explained = false;
                    }
                    window.divergence = divergence;
                    self.open.insert(key, window);
                }
                (None, None) => {}
            }
        }
        if matches!(step, Step::Quiesce) {
            self.convex_fault = false;
        }
        recorder.found
    }

    /// The case ended after step `last_step`: the windows still open close.
    pub fn finish(mut self, last_step: usize) -> WindowMetrics {
        let open = std::mem::take(&mut self.open);
        for window in open.values() {
            self.close(window, last_step + 1);
        }
        self.metrics
    }

    fn close(&mut self, window: &Window, step_index: usize) {
        if window.explained {
            self.metrics.explained += 1;
            let length = (step_index - window.opened) as u64;
            self.metrics.longest_explained_steps = self.metrics.longest_explained_steps.max(length);
        } else {
            self.metrics.unexplained += 1;
        }
    }
}

fn record(recorder: &mut Recorder<'_>, key: &str, divergence: &Divergence, how: &str) {
    let detail = format!(
        "a step with no Convex fault since the last quiescence and both stores written {how} a divergence: khala at seq {:?}, convex at seq {:?}{}",
        divergence.khala_seq,
        divergence.convex_seq,
        if divergence.khala_seq == divergence.convex_seq {
            " with other content"
        } else {
            ""
        }
    );
    recorder.record(WindowClass::DivergenceUnexplained, Some(key), detail, None);
}

/// Every document Khala and Convex hold differently. An integer Convex
/// rounded is X1's (`convex_int_precision_lost`), not a window.
fn divergences(current: &Observation) -> BTreeMap<String, Divergence> {
    let keys: BTreeSet<&String> = current.khala.keys().chain(current.convex.keys()).collect();
    let mut found = BTreeMap::new();
    for key in keys {
        let khala = current
            .khala
            .get(key)
            .map(|(_, payload)| without_projected_at(payload));
        let convex = current.convex.get(key).map(without_projected_at);
        if khala == convex {
            continue;
        }
        if let (Some(khala), Some(convex)) = (&khala, &convex)
            && int_precision_lost(khala, convex)
        {
            continue;
        }
        found.insert(
            key.clone(),
            Divergence {
                khala_seq: khala.as_ref().and_then(document_seq),
                convex_seq: convex.as_ref().and_then(document_seq),
                khala,
                convex,
            },
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::ConvexFault;
    use crate::model::case::KhalaFault;
    use serde_json::json;

    fn document(seq: i64) -> Value {
        json!({"document_id": "d", "runtime_source": {"seq": seq}, "projected_at": "t"})
    }

    fn stores(khala: Option<i64>, convex: Option<i64>) -> Observation {
        let mut observation = Observation::default();
        if let Some(seq) = khala {
            observation.khala.insert("d".into(), (seq, document(seq)));
        }
        if let Some(seq) = convex {
            observation.convex.insert("d".into(), document(seq));
        }
        observation
    }

    fn classes(found: &[Violation]) -> Vec<&'static str> {
        found
            .iter()
            .map(|violation| violation.reason_class.name())
            .collect()
    }

    #[test]
    fn convex_ahead_with_only_khala_broken_is_unexplained() {
        let mut windows = ParityWindows::new(SinkMode::Dual);
        assert!(
            windows
                .observe(
                    0,
                    &Step::BreakKhala {
                        fault: KhalaFault::ReadModel
                    },
                    &stores(Some(1), Some(1))
                )
                .is_empty()
        );
        let step = Step::AppendRunEvent {
            run: 0,
            event_type: crate::model::case::RunEventType::Delta,
        };
        let found = windows.observe(1, &step, &stores(Some(1), Some(2)));
        assert_eq!(classes(&found), ["divergence_unexplained"]);
        assert_eq!(found[0].invariant, "X8");
        let metrics = windows.finish(1);
        assert_eq!((metrics.explained, metrics.unexplained), (0, 1));
    }

    #[test]
    fn a_window_a_convex_fault_opened_is_explained_until_it_closes() {
        let mut windows = ParityWindows::new(SinkMode::Dual);
        let fault = Step::BreakConvex {
            fault: ConvexFault::Delay,
        };
        assert!(
            windows
                .observe(0, &fault, &stores(Some(1), Some(2)))
                .is_empty()
        );
        assert!(
            windows
                .observe(1, &Step::Heal, &stores(Some(1), Some(2)))
                .is_empty()
        );
        assert!(
            windows
                .observe(2, &Step::Quiesce, &stores(Some(2), Some(2)))
                .is_empty()
        );
        let metrics = windows.finish(2);
        assert_eq!(metrics.explained, 1);
        assert_eq!(metrics.longest_explained_steps, 2);
    }

    #[test]
    fn a_failing_convex_function_explains_the_window_it_opens_in_either_form() {
        for fault in [ConvexFault::FunctionError200, ConvexFault::FunctionError560] {
            let mut windows = ParityWindows::new(SinkMode::Dual);
            let step = Step::BreakConvex { fault };
            // Khala takes the projection, the throwing mutation leaves
            // Convex behind.
            assert!(
                windows
                    .observe(0, &step, &stores(Some(1), Some(1)))
                    .is_empty()
            );
            let projected = Step::AppendRunEvent {
                run: 0,
                event_type: crate::model::case::RunEventType::Delta,
            };
            assert!(
                windows
                    .observe(1, &projected, &stores(Some(2), Some(1)))
                    .is_empty(),
                "{fault:?}"
            );
            windows.observe(2, &Step::Quiesce, &stores(Some(2), Some(2)));
            assert_eq!(windows.finish(2).explained, 1, "{fault:?}");
        }
    }

    #[test]
    fn an_explained_window_that_changes_without_a_fault_becomes_a_violation() {
        let mut windows = ParityWindows::new(SinkMode::KhalaOnly);
        assert!(
            windows
                .observe(0, &Step::Heal, &stores(Some(1), None))
                .is_empty(),
            "a sink mode writing one store explains the window"
        );
        let dual = Step::SwitchSinkMode {
            mode: SinkMode::Dual,
        };
        assert!(windows.observe(1, &dual, &stores(Some(1), None)).is_empty());
        let found = windows.observe(2, &Step::Heal, &stores(Some(2), Some(1)));
        assert_eq!(classes(&found), ["divergence_unexplained"]);
        let metrics = windows.finish(2);
        assert_eq!((metrics.explained, metrics.unexplained), (0, 1));
    }

    #[test]
    fn a_window_stays_open_across_steps_that_leave_it_as_it_is() {
        let mut windows = ParityWindows::new(SinkMode::ConvexOnly);
        let step = Step::AppendRunEvent {
            run: 0,
            event_type: crate::model::case::RunEventType::Delta,
        };
        assert!(
            windows
                .observe(0, &step, &stores(Some(1), Some(2)))
                .is_empty()
        );
        let dual = Step::SwitchSinkMode {
            mode: SinkMode::Dual,
        };
        assert!(
            windows
                .observe(
                    1,
                    &Step::BreakKhala {
                        fault: KhalaFault::ReadModel
                    },
                    &stores(Some(1), Some(2))
                )
                .is_empty()
        );
        assert!(
            windows
                .observe(2, &dual, &stores(Some(1), Some(2)))
                .is_empty(),
            "an unchanged window keeps the explanation it opened with"
        );
        let metrics = windows.finish(2);
        assert_eq!((metrics.explained, metrics.longest_explained_steps), (1, 3));
    }

    #[test]
    fn equal_stores_open_no_window() {
        let mut windows = ParityWindows::new(SinkMode::Dual);
        assert!(
            windows
                .observe(0, &Step::Heal, &stores(Some(3), Some(3)))
                .is_empty()
        );
        assert_eq!(windows.finish(0), WindowMetrics::default());
    }
}
