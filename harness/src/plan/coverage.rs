//! Coverage accounting: how often each action kind fired in each client-flag,
//! sink-mode and rollout-stage state, the minimums a scenario declares, and
//! which minimums the scenario's own weights could never reach. The state
//! before each step is the oracle's, so counting needs no backend.

use crate::model::case::{ActionKind, Case, Step};
use crate::oracle::Oracle;
use crate::plan::reach::{FlagState, StageState, State};
use crate::plan::scenario::{CellMinimum, CoverageSpec, Scenario};
use khala_runtime::SinkMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
/// One cell of the coverage table: an action kind in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub kind: &'static str,
    pub state: State,
}

/// Counts of fired steps, per kind and per cell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coverage {
    per_kind: BTreeMap<&'static str, u64>,
    cells: BTreeMap<Cell, u64>,
    /// `worker_metadata` steps per value kind.
    per_value: BTreeMap<&'static str, u64>,
    /// Free-text fields of fired steps per text kind.
    per_text: BTreeMap<&'static str, u64>,
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
            if let Step::ReportWorkerMetadata { value, .. } = step {
                *self.per_value.entry(value.name()).or_default() += 1;
            }
            for text in step.texts() {
                *self.per_text.entry(text.kind.name()).or_default() += 1;
            }
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
        self.minimums(spec)
            .into_iter()
            .filter(|gap| gap.count < gap.min)
            .collect()
    }

    /// Every declared minimum with its count, met or not, in the order the
    /// scenario declares them: what a shard reports, so that the merged
    /// counts can be checked against the minimums.
    pub fn minimums(&self, spec: &CoverageSpec) -> Vec<CoverageGap> {
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
        let per_value = spec.min_per_value.iter().map(|(value, min)| CoverageGap {
            key: format!("coverage.min_per_value.{value}"),
            cell: format!("value kind {value}"),
            count: self.per_value.get(value.as_str()).copied().unwrap_or(0),
            min: *min,
        });
        let per_text = spec.min_per_text.iter().map(|(text, min)| CoverageGap {
            key: format!("coverage.min_per_text.{text}"),
            cell: format!("text kind {text}"),
            count: self.per_text.get(text.as_str()).copied().unwrap_or(0),
            min: *min,
        });
        per_kind
            .chain(cells)
            .chain(per_value)
            .chain(per_text)
            .filter(|gap| gap.count < gap.min)
            .collect()
    }

    /// Adds another slice's counts.
    pub fn merge(&mut self, other: &Coverage) {
        for (kind, count) in &other.per_kind {
            *self.per_kind.entry(kind).or_default() += count;
        }
        for (cell, count) in &other.cells {
            *self.cells.entry(*cell).or_default() += count;
        }
        for (value, count) in &other.per_value {
            *self.per_value.entry(value).or_default() += count;
        }
        for (text, count) in &other.per_text {
            *self.per_text.entry(text).or_default() += count;
        }
    }

    /// The counts a report's coverage section holds, read back; `None`
    /// when it names an action or value kind this build does not know.
    pub fn from_report(coverage: &ScenarioCoverage) -> Option<Coverage> {
        let kind = |name: &str| ActionKind::from_name(name).map(ActionKind::name);
        let mut counts = Coverage::default();
        for (name, count) in &coverage.per_kind {
            counts.per_kind.insert(kind(name)?, *count);
        }
        for cell in &coverage.cells {
            let cell_key = Cell {
                kind: kind(&cell.kind)?,
                state: State {
                    flags: cell.flags,
                    sink_mode: cell.sink_mode.as_str(),
                    rollout_stage: cell.rollout_stage,
                },
            };
            counts.cells.insert(cell_key, cell.count);
        }
        for (name, count) in &coverage.per_value {
            let value = crate::model::values::ValueKind::from_name(name)?;
            counts.per_value.insert(value.name(), *count);
        }
        for (name, count) in &coverage.per_text {
            let text = crate::model::values::TextKind::from_name(name)?;
            counts.per_text.insert(text.name(), *count);
        }
        Some(counts)
    }

    /// The report section of one scenario's run. Minimums are declared for
    /// the scenario's own number of cases, so they are checked only when at
    /// least that many ran.
    pub fn report(&self, scenario: &Scenario, cases_run: u32) -> ScenarioCoverage {
        self.report_against(
            &scenario.name,
            scenario.cases,
            cases_run,
            self.minimums(&scenario.coverage),
        )
    }

    /// The same from the scenario's name, declared cases and `minimums`
    /// (each with the count it had where it was computed; the gaps are
    /// those below their minimum): how `report merge` rebuilds it.
    pub fn report_against(
        &self,
        scenario: &str,
        declared_cases: u32,
        cases_run: u32,
        minimums: Vec<CoverageGap>,
    ) -> ScenarioCoverage {
        let checked = cases_run >= declared_cases;
        ScenarioCoverage {
            scenario: scenario.to_owned(),
            checked,
            unchecked_reason: (!checked).then(|| {
                format!(
                    "ran {cases_run} of the scenario's {declared_cases} cases; minimums are not checked"
                )
            }),
            per_kind: self
                .per_kind
                .iter()
                .map(|(kind, count)| ((*kind).to_owned(), *count))
                .collect(),
            per_value: self
                .per_value
                .iter()
                .map(|(value, count)| ((*value).to_owned(), *count))
                .collect(),
            per_text: self
                .per_text
                .iter()
                .map(|(text, count)| ((*text).to_owned(), *count))
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
                minimums
                    .into_iter()
                    .filter(|gap| gap.count < gap.min)
                    .collect()
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
    /// Fired `worker_metadata` steps per value kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_value: BTreeMap<String, u64>,
    /// Free-text fields of fired steps per text kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_text: BTreeMap<String, u64>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::{CASE_SCHEMA, IdStyle, RollbackSwitch, RolloutStage, Start, Step};
    use khala_runtime::Profile;

    #[test]
    fn metadata_steps_count_per_value_kind_and_short_ones_are_gaps() {
        let report = |value, variant| Step::ReportWorkerMetadata {
            worker: 0,
            value,
            variant,
        };
        let case = Case {
            schema: CASE_SCHEMA.to_owned(),
            profile: Profile::Hardened,
            start: Start::new(SinkMode::Dual),
            ids: IdStyle::Plain,
            steps: vec![
                report(crate::model::case::ValueKind::Deep, 3),
                report(crate::model::case::ValueKind::Deep, 0),
                report(crate::model::case::ValueKind::Floats, 1),
            ],
            origin: None,
        };
        let mut coverage = Coverage::default();
        coverage.record(&case, 3);
        let spec = CoverageSpec {
            min_per_value: [("deep".to_owned(), 2), ("floats".to_owned(), 2)].into(),
            ..CoverageSpec::default()
        };
        let gaps = coverage.gaps(&spec);
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].key, "coverage.min_per_value.floats");
        assert_eq!(gaps[0].count, 1);
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
            ..CoverageSpec::default()
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
}
