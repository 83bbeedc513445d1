//! `report merge`: the shards of one run (`run --shard K/N`) put back
//! together as the report one unsharded run gives, outside `timing`.
//!
//! Case `i` of a scenario's stream is played by shard `i mod N + 1`, and a
//! finding's shrink depends only on its case and the RNG state it was
//! drawn from, so every shard finds what the whole run finds in its
//! slice, and possibly more: a failure the whole run met earlier in
//! another shard's slice. Merging keeps, per scenario and signature, the
//! finding of the earliest case, in the order one run finds them; counts
//! are summed, the shrinking of the dropped findings taken out, coverage
//! checked against the scenario's minimums on the summed counts, the
//! findings grouped into defects and stored (a shard stores none), and the
//! gate decided anew. Shards of different runs are refused, naming the
//! mismatch, as are missing and duplicated shards.

use crate::check::metrics::RunMetrics;
use crate::model::case::Case;
use crate::plan::coverage::{Coverage, CoverageGap};
use crate::report::{
    self, FindingReport, Report, ReportTiming, ReportedViolation, ScenarioSummary, ShardFinding,
    ShardScenario, Stats,
};
use crate::run::{self, Member, RunError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why shards cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("report merge: no report given")]
    NoReports,
    #[error("report merge: {}: not a shard's report (no `shard` section; run with --shard K/N)", path.display())]
    NotAShard { path: PathBuf },
    #[error("report merge: {}: {what} is {found}, but {} has {expected}", path.display(), first.display())]
    Mismatch {
        path: PathBuf,
        first: PathBuf,
        what: &'static str,
        expected: String,
        found: String,
    },
    #[error("report merge: shard {index}/{count} is given twice: {} and {}", first.display(), second.display())]
    DuplicateShard {
        index: u32,
        count: u32,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("report merge: shard {index}/{count} is missing")]
    MissingShard { index: u32, count: u32 },
    #[error("report merge: {}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] RunError),
}

impl MergeError {
    /// Whether the error is the user's input (exit 64).
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Store(error) => error.is_invalid_input(),
            _ => true,
        }
    }
}

/// A shard's report and the file it came from.
pub type ShardReport = (PathBuf, Report);

/// Merges the shards' reports into the whole run's, storing its defects'
/// cases in `regressions` as `run` would.
pub fn merge(shards: &[ShardReport], regressions: &Path) -> Result<Report, MergeError> {
    let shards = in_order(shards)?;
    let (_, first) = shards[0];
    let sections: Vec<&Vec<ShardScenario>> = shards
        .iter()
        .map(|(_, report)| shard_scenarios(report))
        .collect();
    let mut merged = Merged::default();
    for (position, entry) in sections[0].iter().enumerate() {
        if entry.stored {
            // Every shard replays the stored regressions whole: one copy.
            merged.add_stored(first, position, entry);
        } else {
            merged.add_generated(&shards, &sections, position, entry)?;
        }
    }
    merged.finish(first, &shards, regressions)
}

/// The shards sorted by index, after checking they are one run's, each
/// once, none missing.
fn in_order(shards: &[ShardReport]) -> Result<Vec<&ShardReport>, MergeError> {
    let Some((first_path, first)) = shards.first() else {
        return Err(MergeError::NoReports);
    };
    let section = |path: &PathBuf, report: &Report| {
        report
            .shard
            .clone()
            .ok_or_else(|| MergeError::NotAShard { path: path.clone() })
    };
    let reference = section(first_path, first)?;
    for (path, report) in shards {
        // What `report::load` checks, for reports built in memory.
        let entries = report.shard.as_ref().map_or(0, |own| own.scenarios.len());
        if entries != report.scenarios.len() {
            return Err(MergeError::Invalid {
                path: path.clone(),
                key: "shard.scenarios".to_owned(),
                message: format!(
                    "{entries} entries for the report's {} scenario(s)",
                    report.scenarios.len()
                ),
            });
        }
    }
    let mut by_index: BTreeMap<u32, &ShardReport> = BTreeMap::new();
    for shard in shards {
        let (path, report) = shard;
        let own = section(path, report)?;
        let mismatch = |what: &'static str, expected: String, found: String| {
            (expected != found).then(|| MergeError::Mismatch {
                path: path.clone(),
                first: first_path.clone(),
                what,
                expected,
                found,
            })
        };
        let checks = [
            mismatch("the seed", first.seed.to_string(), report.seed.to_string()),
            mismatch(
                "the code version",
                first.code_version.clone(),
                report.code_version.clone(),
            ),
            mismatch(
                "the profile",
                first.profile.to_string(),
                report.profile.to_string(),
            ),
            mismatch(
                "the shard count",
                reference.shard.count.to_string(),
                own.shard.count.to_string(),
            ),
            mismatch(
                "the scenario set",
                scenario_set(first, &reference.scenarios),
                scenario_set(report, &own.scenarios),
            ),
        ];
        if let Some(error) = checks.into_iter().flatten().next() {
            return Err(error);
        }
        if let Some((earlier, _)) = by_index.insert(own.shard.index, shard) {
            return Err(MergeError::DuplicateShard {
                index: own.shard.index,
                count: own.shard.count,
                first: earlier.clone(),
                second: path.clone(),
            });
        }
    }
    let count = reference.shard.count;
    if let Some(index) = (1..=count).find(|index| !by_index.contains_key(index)) {
        return Err(MergeError::MissingShard { index, count });
    }
    Ok(by_index.into_values().collect())
}

/// What must be equal for shards to be one run's: each scenario's name,
/// cases, thresholds and coverage minimums, as one line of text.
fn scenario_set(report: &Report, scenarios: &[ShardScenario]) -> String {
    let described: Vec<String> = scenarios
        .iter()
        .zip(&report.scenarios)
        .map(|(scenario, summary)| {
            let minimums: Vec<String> = scenario
                .minimums
                .iter()
                .map(|minimum| format!("{}>={}", minimum.key, minimum.min))
                .collect();
            format!(
                "{}{} ({} of {} cases; thresholds {}; minimums [{}])",
                scenario.name,
                if scenario.stored { " (stored)" } else { "" },
                scenario.stream_cases,
                scenario.declared_cases,
                serde_json::to_string(&summary.thresholds).unwrap_or_default(),
                minimums.join(", ")
            )
        })
        .collect();
    format!("[{}]", described.join("; "))
}

fn shard_scenarios(report: &Report) -> &Vec<ShardScenario> {
    static NONE: Vec<ShardScenario> = Vec::new();
    report
        .shard
        .as_ref()
        .map_or(&NONE, |section| &section.scenarios)
}

/// One kept finding: its report, its violations and its shard's figures.
struct Kept {
    finding: FindingReport,
    violations: Vec<ReportedViolation>,
    extra: ShardFinding,
}

#[derive(Default)]
struct Merged {
    scenarios: Vec<ScenarioSummary>,
    /// Per scenario, its kept findings in order.
    findings: Vec<Vec<Kept>>,
    interrupted: bool,
}

/// The findings of `scenario` in `report`, each with its violations.
fn findings_of(report: &Report, scenario: &str) -> Vec<(FindingReport, Vec<ReportedViolation>)> {
    report
        .findings
        .iter()
        .enumerate()
        .filter(|(_, finding)| finding.scenario == scenario)
        .map(|(index, finding)| {
            let violations = report
                .violations
                .iter()
                .filter(|violation| violation.finding == Some(index))
                .cloned()
                .collect();
            (finding.clone(), violations)
        })
        .collect()
}

impl Merged {
    fn add_stored(&mut self, first: &Report, position: usize, entry: &ShardScenario) {
        let summary = first.scenarios[position].clone();
        let kept = findings_of(first, &entry.name)
            .into_iter()
            .zip(&entry.findings)
            .map(|((finding, violations), extra)| Kept {
                finding,
                violations,
                extra: extra.clone(),
            })
            .collect();
        self.interrupted |= entry.interrupted;
        self.scenarios.push(summary);
        self.findings.push(kept);
    }

    fn add_generated(
        &mut self,
        shards: &[&ShardReport],
        sections: &[&Vec<ShardScenario>],
        position: usize,
        entry: &ShardScenario,
    ) -> Result<(), MergeError> {
        let mut cases = 0u64;
        let mut steps = 0u64;
        let mut metrics = RunMetrics::default();
        let mut coverage = Coverage::default();
        let mut minimums: Vec<CoverageGap> = entry.minimums.clone();
        for minimum in &mut minimums {
            minimum.count = 0;
        }
        let mut failure = None;
        let mut interrupted = false;
        // Every shard's findings with (case index, shard, position) to order them.
        let mut candidates: Vec<((u32, usize, usize), Kept)> = Vec::new();
        for (shard, ((path, report), section)) in shards.iter().zip(sections).enumerate() {
            let summary = &report.scenarios[position];
            let own = &section[position];
            cases += summary.cases;
            steps += summary.steps.saturating_sub(
                own.findings
                    .iter()
                    .map(|finding| finding.shrink_case_steps)
                    .sum::<u64>(),
            );
            metrics.merge(&summary.metrics);
            if let Some(counts) = summary.coverage.as_ref() {
                let counts = Coverage::from_report(counts).ok_or_else(|| MergeError::Invalid {
                    path: path.clone(),
                    key: format!("scenarios[{position}].coverage"),
                    message: "names an action kind this build does not know".to_owned(),
                })?;
                coverage.merge(&counts);
            }
            for (merged, own) in minimums.iter_mut().zip(&own.minimums) {
                merged.count += own.count;
            }
            failure = failure.or_else(|| own.failure.clone());
            interrupted |= own.interrupted;
            let findings = findings_of(report, &entry.name);
            if findings.len() != own.findings.len() {
                return Err(MergeError::Invalid {
                    path: path.clone(),
                    key: format!("shard.scenarios[{position}].findings"),
                    message: format!(
                        "{} finding(s) for {} in the report",
                        findings.len(),
                        entry.name
                    ),
                });
            }
            for (index, ((finding, violations), extra)) in
                findings.into_iter().zip(&own.findings).enumerate()
            {
                let case_index = extra.case_index.unwrap_or(u32::MAX);
                candidates.push((
                    (case_index, shard, index),
                    Kept {
                        finding,
                        violations,
                        extra: extra.clone(),
                    },
                ));
            }
        }
        candidates.sort_by_key(|(order, _)| *order);
        // Per signature, the earliest case's: what one run shrinks.
        let mut seen = std::collections::BTreeSet::new();
        let kept: Vec<Kept> = candidates
            .into_iter()
            .map(|(_, kept)| kept)
            .filter(|kept| seen.insert((kept.finding.invariant.clone(), kept.finding.reason_class)))
            .collect();
        steps += kept
            .iter()
            .map(|kept| kept.extra.shrink_case_steps)
            .sum::<u64>();
        let cases_run = u32::try_from(cases).unwrap_or(u32::MAX);
        let first = &shards[0].1.scenarios[position];
        let coverage = first.coverage.as_ref().map(|_| {
            coverage.report_against(&entry.name, entry.declared_cases, cases_run, minimums)
        });
        let unknown = failure
            .or_else(|| interrupted.then(|| format!("interrupted after {cases} case(s)")))
            .or_else(|| {
                coverage
                    .as_ref()
                    .filter(|_| kept.is_empty())
                    .and_then(crate::plan::coverage::ScenarioCoverage::shortfall)
            });
        self.interrupted |= interrupted;
        self.scenarios.push(ScenarioSummary {
            name: entry.name.clone(),
            cases,
            steps,
            thresholds: first.thresholds.clone(),
            metrics,
            unknown,
            coverage,
        });
        self.findings.push(kept);
        Ok(())
    }

    fn finish(
        self,
        first: &Report,
        shards: &[&ShardReport],
        regressions: &Path,
    ) -> Result<Report, MergeError> {
        let mut stats = Stats::default();
        let mut metrics = RunMetrics::default();
        for scenario in &self.scenarios {
            stats.cases += scenario.cases;
            stats.steps += scenario.steps;
            metrics.merge(&scenario.metrics);
        }
        let kept: Vec<&Kept> = self.findings.iter().flatten().collect();
        stats.shrink_steps = kept
            .iter()
            .map(|kept| u64::from(kept.extra.shrink_plays))
            .sum();
        let members: Vec<Member> = kept
            .iter()
            .map(|kept| Member {
                scenario: &kept.finding.scenario,
                case: &kept.extra.case,
                signatures: kept
                    .violations
                    .iter()
                    .map(|violation| {
                        (
                            violation.invariant.clone(),
                            violation.reason_class.name().to_owned(),
                        )
                    })
                    .collect(),
                first_step: kept
                    .violations
                    .iter()
                    .map(|violation| violation.step_index)
                    .min(),
                // Only the stored regressions' replay has files yet.
                stored: kept.finding.case_file.clone(),
            })
            .collect();
        let files = run::store_defects(regressions, &members)?;
        let mut findings = Vec::new();
        let mut violations = Vec::new();
        for (index, (kept, file)) in kept.iter().zip(files).enumerate() {
            let mut finding = kept.finding.clone();
            finding.case_file = file.clone();
            findings.push(finding);
            violations.extend(kept.violations.iter().cloned().map(|mut violation| {
                violation.finding = Some(index);
                violation.case_file = file.clone();
                violation
            }));
        }
        let cases: Vec<&Case> = kept.iter().map(|kept| &kept.extra.case).collect();
        let defects = report::group_defects(&mut findings, &violations, &cases);
        let mut timing = ReportTiming::default();
        for (_, shard) in shards {
            timing.total_seconds += shard.timing.total_seconds;
            timing.reset_seconds += shard.timing.reset_seconds;
            timing.shrink_seconds += shard.timing.shrink_seconds;
        }
        let mut merged = Report {
            schema: first.schema.clone(),
            mode: first.mode,
            code_version: first.code_version.clone(),
            profile: first.profile,
            seed: first.seed,
            interrupted: self.interrupted,
            gate: first.gate.clone(),
            scenarios: self.scenarios,
            violations,
            findings,
            defects,
            metrics,
            stats,
            timing,
            shard: None,
        };
        merged.gate = report::gate_of(&merged);
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::shard::Shard;
    use crate::play::engine::ScenarioRun;
    use crate::report::ShardSection;
    use khala_runtime::Profile;

    /// Shard `index` of `count` of a clean one-scenario run.
    fn shard(index: u32, count: u32) -> ShardReport {
        let run = ScenarioRun {
            scenario: "smoke".into(),
            cases: 2,
            steps: 5,
            ..ScenarioRun::default()
        };
        let mut report = report::build(Profile::Legacy, 1, &[run], &[]);
        report.shard = Some(ShardSection {
            shard: Shard { index, count },
            scenarios: vec![ShardScenario {
                name: "smoke".into(),
                stored: false,
                declared_cases: 4,
                stream_cases: 4,
                failure: None,
                interrupted: false,
                minimums: Vec::new(),
                findings: Vec::new(),
            }],
        });
        (PathBuf::from(format!("shard-{index}.json")), report)
    }

    fn refused(shards: &[ShardReport]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        merge(shards, dir.path()).expect_err("refused").to_string()
    }

    #[test]
    fn shards_of_one_run_merge_in_any_order_and_counts_add_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let merged = merge(&[shard(2, 2), shard(1, 2)], dir.path()).expect("merged");
        assert_eq!(merged.scenarios[0].cases, 4);
        assert_eq!(merged.stats.steps, 10);
        assert_eq!(merged.shard, None);
    }

    #[test]
    fn shards_of_different_runs_are_refused_naming_the_mismatch() {
        let mut other_seed = shard(2, 2);
        other_seed.1.seed = 9;
        assert!(
            refused(&[shard(1, 2), other_seed])
                .contains("shard-2.json: the seed is 9, but shard-1.json has 1"),
        );
        let mut other_code = shard(2, 2);
        other_code.1.code_version = "elsewhere".into();
        assert!(refused(&[shard(1, 2), other_code]).contains("the code version is elsewhere"));
        let mut other_profile = shard(2, 2);
        other_profile.1.profile = Profile::Hardened;
        assert!(refused(&[shard(1, 2), other_profile]).contains("the profile is hardened"));
        let mut other_scenarios = shard(2, 2);
        if let Some(section) = &mut other_scenarios.1.shard {
            section.scenarios[0].name = "soak".into();
        }
        assert!(refused(&[shard(1, 2), other_scenarios]).contains("the scenario set is [soak"));
        assert!(refused(&[shard(1, 2), shard(2, 3)]).contains("the shard count is 3"));
    }

    #[test]
    fn a_missing_or_duplicated_shard_is_refused() {
        assert!(refused(&[shard(1, 3), shard(3, 3)]).contains("shard 2/3 is missing"));
        assert!(
            refused(&[shard(1, 2), shard(1, 2)])
                .contains("shard 1/2 is given twice: shard-1.json and shard-1.json")
        );
        let mut whole = shard(1, 1);
        whole.1.shard = None;
        assert!(refused(&[whole]).contains("not a shard's report"));
        assert!(refused(&[]).contains("no report given"));
    }

    #[test]
    fn a_shard_section_that_does_not_match_its_report_is_refused_naming_the_key() {
        let (path, mut report) = shard(1, 1);
        if let Some(section) = &mut report.shard {
            section.scenarios.clear();
        }
        let text = serde_json::to_string(&report).expect("json");
        let error = report::load::parse(&path, &text).expect_err("refused");
        assert_eq!(error.key, "shard.scenarios");
        assert!(refused(&[(path, report)]).contains("key `shard.scenarios`"));
    }
}
