//! The engine: generates cases from a scenario, plays each through the
//! driver, and shrinks every failure to a minimal case that fails the same
//! way (same invariant, same reason class). All randomness flows from one
//! seed; wall-clock figures are kept apart in `Timing`. Only the invariants
//! the scenario selects count, and every generated case's steps are counted
//! for coverage.

use crate::case::{Case, Origin};
use crate::coverage::{Coverage, ScenarioCoverage};
use crate::driver::{self, Backends, DriverError, StepTrace};
use crate::generate;
use crate::invariants::Violation;
use crate::report::metrics::RunMetrics;
use crate::scenario::Scenario;
use khala_runtime::Profile;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How hard to look.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub profile: Profile,
    pub cases: u32,
    pub seed: u64,
    /// No new case starts after this; shrinking of a found failure finishes.
    pub time_budget: Option<Duration>,
    pub max_shrink_iters: u32,
    pub max_shrink_time: Duration,
}

/// A failure, shrunk.
#[derive(Clone, Debug)]
pub struct Finding {
    pub invariant: &'static str,
    pub reason_class: String,
    /// The minimal case, with its origin filled in.
    pub case: Case,
    /// Every violation the minimal case shows when played in full.
    pub violations: Vec<Violation>,
    pub shrink_steps: u32,
    pub shrink_time: Duration,
    /// What the stores held after each step of the minimal case.
    pub trace: Vec<StepTrace>,
}

/// What a scenario's run found.
#[derive(Clone, Debug, Default)]
pub struct ScenarioRun {
    pub scenario: String,
    pub cases: u32,
    pub steps: u64,
    pub shrink_steps: u32,
    pub findings: Vec<Finding>,
    /// A backend failed: the run proves nothing.
    pub unknown: Option<String>,
    /// A signal stopped the run before it played every case
    /// (`interrupt::requested`): it holds the cases played until then.
    pub interrupted: bool,
    /// What the generated cases exercised (none for stored cases).
    pub coverage: Option<ScenarioCoverage>,
    /// The auditor, delivery and rollback figures of the generated cases'
    /// traces (shrinking plays excluded).
    pub metrics: RunMetrics,
    pub timing: Timing,
}

/// Wall-clock figures; the only part of a run that differs between two runs
/// with the same seed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timing {
    pub total_seconds: f64,
    pub reset_seconds: f64,
    pub shrink_seconds: f64,
}

/// splitmix64: derives independent seeds from one.
pub fn derive_seed(seed: u64, salt: &str, index: u64) -> u64 {
    let mut value = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for byte in salt.bytes() {
        value = (value ^ u64::from(byte)).wrapping_mul(0x1000_0000_01B3);
    }
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

fn rng_for(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    for (index, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&derive_seed(seed, "rng", index as u64).to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// The failure signature shrinking preserves.
type Signature = (&'static str, String);

/// Plays generated cases of `scenario` until `settings.cases` ran, every
/// failure shrunk on the way. Already-found signatures count as passes, so
/// one run can find several distinct defects.
pub fn run_scenario(
    tokio: &tokio::runtime::Runtime,
    backends: &Backends,
    scenario: &Scenario,
    settings: &EngineSettings,
) -> ScenarioRun {
    run_scenario_with_progress(tokio, backends, scenario, settings, &|_| {})
}

/// Where a running scenario is, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Generated cases played so far, of `total`.
    pub cases: u32,
    pub total: u32,
    /// Distinct failures found so far.
    pub findings: usize,
    /// Whether the engine is shrinking a failure.
    pub shrinking: bool,
}

/// `run_scenario`, telling `progress` after every played case.
///
/// Cases are drawn from one RNG stream in order and played a batch at a
/// time, one case per lane; their results are then taken in order, exactly
/// as if they had played one by one (cases share no state), so the report
/// is the same whatever the number of lanes. A failure is shrunk on the
/// first lane before the next result is taken.
pub fn run_scenario_with_progress(
    tokio: &tokio::runtime::Runtime,
    backends: &Backends,
    scenario: &Scenario,
    settings: &EngineSettings,
    progress: &dyn Fn(Progress),
) -> ScenarioRun {
    let started = Instant::now();
    let mut run = ScenarioRun {
        scenario: scenario.name.clone(),
        ..ScenarioRun::default()
    };
    let mut found: BTreeSet<Signature> = BTreeSet::new();
    let mut coverage = Coverage::default();
    // A case may stop at its first violation only when every invariant
    // counts; otherwise an ignored one would hide the steps after it.
    let stop_at_first = scenario.invariants.checks_all();
    let strategy = generate::case(scenario, settings.profile);
    let config = Config {
        failure_persistence: None,
        max_global_rejects: 0,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        rng_for(derive_seed(settings.seed, &scenario.name, 0)),
    );
    'batches: while run.cases < settings.cases && run.unknown.is_none() {
        if settings
            .time_budget
            .is_some_and(|budget| started.elapsed() >= budget)
        {
            break;
        }
        if crate::interrupt::requested() {
            run.interrupted = true;
            break;
        }
        let batch = (settings.cases - run.cases).min(backends.lanes() as u32);
        let mut trees = Vec::new();
        for _ in 0..batch {
            match strategy.new_tree(&mut runner) {
                Ok(tree) => trees.push(tree),
                Err(reason) => {
                    run.unknown = Some(format!("the generator gave up: {reason}"));
                    break 'batches;
                }
            }
        }
        let cases: Vec<Case> = trees.iter().map(ValueTree::current).collect();
        let played = tokio.block_on(driver::play_side_by_side(backends, &cases, stop_at_first));
        for ((mut tree, case), played) in trees.into_iter().zip(&cases).zip(played) {
            run.cases += 1;
            progress(Progress {
                cases: run.cases,
                total: settings.cases,
                findings: found.len(),
                shrinking: false,
            });
            let result = match played {
                Ok(result) => result,
                Err(error) => {
                    run.unknown = Some(describe_unknown(&error));
                    break 'batches;
                }
            };
            coverage.record(case, result.steps_run.min(case.steps.len()));
            run.metrics.observe_played_case(case, &result.trace);
            run.steps += result.steps_run as u64;
            run.timing.reset_seconds += result.reset_time.as_secs_f64();
            let Some(target) = signatures(scenario, &result)
                .into_iter()
                .find(|signature| !found.contains(signature))
            else {
                continue;
            };
            found.insert(target.clone());
            let shrink_started = Instant::now();
            let shrunk = shrink(
                tokio,
                backends,
                scenario,
                settings,
                tree.as_mut(),
                &target,
                &mut |shrinking| {
                    run.shrink_steps += 1;
                    run.steps += shrinking.steps_run as u64;
                    run.timing.reset_seconds += shrinking.reset_time.as_secs_f64();
                    progress(Progress {
                        cases: run.cases,
                        total: settings.cases,
                        findings: found.len(),
                        shrinking: true,
                    });
                },
            );
            let shrink_time = shrink_started.elapsed();
            run.timing.shrink_seconds += shrink_time.as_secs_f64();
            let (mut case, shrink_steps) = match shrunk {
                Ok(shrunk) => shrunk,
                Err(error) => {
                    run.unknown = Some(describe_unknown(&error));
                    break 'batches;
                }
            };
            let (invariant, reason_class) = target;
            case.origin = Some(Origin {
                scenario: scenario.name.clone(),
                seed: settings.seed,
                code_version: env!("CARGO_PKG_VERSION").to_owned(),
                invariant: invariant.to_owned(),
                reason_class: reason_class.clone(),
            });
            match tokio.block_on(driver::play(backends, &case, false)) {
                Ok(mut full) => run.findings.push(Finding {
                    invariant,
                    reason_class,
                    case,
                    violations: {
                        full.violations
                            .retain(|violation| scenario.invariants.checks(violation.invariant));
                        full.violations
                    },
                    shrink_steps,
                    shrink_time,
                    trace: full.trace,
                }),
                Err(error) => {
                    run.unknown = Some(describe_unknown(&error));
                    break 'batches;
                }
            }
        }
    }
    run.coverage = Some(coverage.report(scenario, run.cases));
    run.timing.total_seconds = started.elapsed().as_secs_f64();
    run
}

/// The failure signatures of a played case, counting only the invariants
/// the scenario selects, in the order the violations were found.
fn signatures(scenario: &Scenario, result: &driver::CaseResult) -> Vec<Signature> {
    result
        .violations
        .iter()
        .filter(|violation| scenario.invariants.checks(violation.invariant))
        .map(|violation| (violation.invariant, violation.reason_class.clone()))
        .collect()
}

/// Shrinks the failing case `tree` holds to a minimal one that still fails
/// with `target`: proptest's own search (simplify while it fails, complicate
/// when it passes), bounded by the settings' iterations and time. Returns
/// the minimal case and how many cases it played; `played` hears of each.
fn shrink(
    tokio: &tokio::runtime::Runtime,
    backends: &Backends,
    scenario: &Scenario,
    settings: &EngineSettings,
    tree: &mut dyn ValueTree<Value = Case>,
    target: &Signature,
    played: &mut dyn FnMut(&driver::CaseResult),
) -> Result<(Case, u32), DriverError> {
    let started = Instant::now();
    let stop_at_first = scenario.invariants.checks_all();
    let mut minimal = tree.current();
    let mut plays = 0u32;
    if !tree.simplify() {
        return Ok((minimal, plays));
    }
    // On a signal the smallest failing case so far is the finding.
    while plays < settings.max_shrink_iters
        && started.elapsed() < settings.max_shrink_time
        && !crate::interrupt::requested()
    {
        let candidate = tree.current();
        let result = tokio.block_on(driver::play(backends, &candidate, stop_at_first))?;
        plays += 1;
        played(&result);
        let still_fails = signatures(scenario, &result).contains(target);
        let next = if still_fails {
            minimal = candidate;
            tree.simplify()
        } else {
            tree.complicate()
        };
        if !next {
            break;
        }
    }
    Ok((minimal, plays))
}

fn describe_unknown(error: &DriverError) -> String {
    format!("{} backend failed: {error}", error.backend())
}

/// Replays stored cases (the regressions), first thing in every run. Each
/// case runs under `profile` if given, else its own. A case that shows any
/// violation becomes a finding whose case file is its own path.
pub fn replay_stored(
    tokio: &tokio::runtime::Runtime,
    backends: &Backends,
    cases: &[(String, Case)],
    profile: Option<Profile>,
) -> (ScenarioRun, Vec<Option<String>>) {
    let started = Instant::now();
    let mut run = ScenarioRun {
        scenario: "regressions".to_owned(),
        ..ScenarioRun::default()
    };
    let mut files = Vec::new();
    let cases: Vec<(&String, Case)> = cases
        .iter()
        .map(|(path, stored)| {
            let case = Case {
                profile: profile.unwrap_or(stored.profile),
                ..stored.clone()
            };
            (path, case)
        })
        .collect();
    // A batch at a time, one case per lane, results taken in order.
    let played = cases.chunks(backends.lanes()).flat_map(|batch| {
        // After a signal no batch plays, which ends the loop below.
        if crate::interrupt::requested() {
            return Vec::new();
        }
        let batch = batch.iter().map(|(_, case)| case);
        tokio.block_on(driver::play_side_by_side(backends, batch, false))
    });
    for ((path, case), played) in cases.iter().zip(played) {
        match played {
            Ok(result) => {
                run.cases += 1;
                run.steps += result.steps_run as u64;
                run.timing.reset_seconds += result.reset_time.as_secs_f64();
                if let Some(first) = result.violations.first() {
                    run.findings.push(Finding {
                        invariant: first.invariant,
                        reason_class: first.reason_class.clone(),
                        case: case.clone(),
                        violations: result.violations.clone(),
                        shrink_steps: 0,
                        shrink_time: Duration::ZERO,
                        trace: result.trace.clone(),
                    });
                    files.push(Some((*path).clone()));
                }
            }
            Err(error) => {
                run.unknown = Some(format!("{path}: {}", describe_unknown(&error)));
                break;
            }
        }
    }
    run.interrupted = run.unknown.is_none() && (run.cases as usize) < cases.len();
    run.timing.total_seconds = started.elapsed().as_secs_f64();
    (run, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_are_stable_and_distinct() {
        assert_eq!(derive_seed(1, "smoke", 0), derive_seed(1, "smoke", 0));
        assert_ne!(derive_seed(1, "smoke", 0), derive_seed(1, "smoke", 1));
        assert_ne!(derive_seed(1, "smoke", 0), derive_seed(1, "drill", 0));
        assert_ne!(derive_seed(1, "smoke", 0), derive_seed(2, "smoke", 0));
    }
}
