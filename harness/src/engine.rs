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
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::cell::RefCell;
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
    let found: RefCell<BTreeSet<Signature>> = RefCell::new(BTreeSet::new());
    let coverage = RefCell::new(Coverage::default());
    let metrics = RefCell::new(RunMetrics::default());
    // A case may stop at its first violation only when every invariant
    // counts; otherwise an ignored one would hide the steps after it.
    let stop_at_first = scenario.invariants.checks_all();
    let strategy = generate::case(scenario, settings.profile);
    let mut round = 0u64;
    while run.cases < settings.cases && run.unknown.is_none() {
        if settings
            .time_budget
            .is_some_and(|budget| started.elapsed() >= budget)
        {
            break;
        }
        let round_seed = derive_seed(settings.seed, &scenario.name, round);
        round += 1;
        let remaining = settings.cases - run.cases;
        let run_cases = run.cases;
        let target: RefCell<Option<Signature>> = RefCell::new(None);
        let counters = RefCell::new((0u32, 0u64, 0u32, Duration::ZERO)); // cases, steps, shrink steps, reset time
        let unknown: RefCell<Option<String>> = RefCell::new(None);
        let config = Config {
            cases: remaining,
            max_shrink_iters: settings.max_shrink_iters,
            max_shrink_time: settings
                .max_shrink_time
                .as_millis()
                .min(u128::from(u32::MAX)) as u32,
            failure_persistence: None,
            max_global_rejects: 0,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config, rng_for(round_seed));
        let shrink_started = RefCell::new(None::<Instant>);
        let outcome = runner.run(&strategy, |case| {
            if unknown.borrow().is_some() {
                return Ok(());
            }
            let shrinking = target.borrow().is_some();
            let played = tokio.block_on(driver::play(backends, &case, stop_at_first));
            let mut counters = counters.borrow_mut();
            if shrinking {
                counters.2 += 1;
            } else {
                counters.0 += 1;
            }
            progress(Progress {
                cases: run_cases + counters.0,
                total: settings.cases,
                findings: found.borrow().len(),
                shrinking,
            });
            let mut result = match played {
                Ok(result) => result,
                Err(error) => {
                    *unknown.borrow_mut() = Some(describe_unknown(&error));
                    return Ok(());
                }
            };
            if !shrinking {
                coverage
                    .borrow_mut()
                    .record(&case, result.steps_run.min(case.steps.len()));
                metrics
                    .borrow_mut()
                    .observe_played_case(&case, &result.trace);
            }
            result
                .violations
                .retain(|violation| scenario.invariants.checks(violation.invariant));
            counters.1 += result.steps_run as u64;
            counters.3 += result.reset_time;
            let signatures: Vec<Signature> = result
                .violations
                .iter()
                .map(|violation| (violation.invariant, violation.reason_class.clone()))
                .collect();
            let current_target = target.borrow().clone();
            let failing = match current_target {
                Some(signature) => signatures.contains(&signature),
                None => {
                    let already_found = found.borrow();
                    let first_new = signatures
                        .into_iter()
                        .find(|candidate| !already_found.contains(candidate));
                    let failing = first_new.is_some();
                    if failing {
                        *shrink_started.borrow_mut() = Some(Instant::now());
                        *target.borrow_mut() = first_new;
                    }
                    failing
                }
            };
            if failing {
                Err(TestCaseError::fail("invariant violated"))
            } else {
                Ok(())
            }
        });
        let (cases, steps, shrink_steps, reset_time) = *counters.borrow();
        run.cases += cases;
        run.steps += steps;
        run.shrink_steps += shrink_steps;
        run.timing.reset_seconds += reset_time.as_secs_f64();
        if let Some(message) = unknown.into_inner() {
            run.unknown = Some(message);
            break;
        }
        let shrink_time = shrink_started
            .borrow()
            .map(|at| at.elapsed())
            .unwrap_or_default();
        run.timing.shrink_seconds += shrink_time.as_secs_f64();
        match outcome {
            Ok(()) => break,
            Err(TestError::Fail(_, minimal)) => {
                let Some((invariant, reason_class)) = target.into_inner() else {
                    break;
                };
                found.borrow_mut().insert((invariant, reason_class.clone()));
                let mut case = minimal;
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
                            full.violations.retain(|violation| {
                                scenario.invariants.checks(violation.invariant)
                            });
                            full.violations
                        },
                        shrink_steps,
                        shrink_time,
                        trace: full.trace,
                    }),
                    Err(error) => run.unknown = Some(describe_unknown(&error)),
                }
            }
            Err(TestError::Abort(reason)) => {
                run.unknown = Some(format!("the generator gave up: {reason}"));
            }
        }
    }
    run.coverage = Some(coverage.into_inner().report(scenario, run.cases));
    run.metrics = metrics.into_inner();
    run.timing.total_seconds = started.elapsed().as_secs_f64();
    run
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
    for (path, stored) in cases {
        let case = Case {
            profile: profile.unwrap_or(stored.profile),
            ..stored.clone()
        };
        match tokio.block_on(driver::play(backends, &case, false)) {
            Ok(result) => {
                run.cases += 1;
                run.steps += result.steps_run as u64;
                run.timing.reset_seconds += result.reset_time.as_secs_f64();
                if let Some(first) = result.violations.first() {
                    run.findings.push(Finding {
                        invariant: first.invariant,
                        reason_class: first.reason_class.clone(),
                        case,
                        violations: result.violations.clone(),
                        shrink_steps: 0,
                        shrink_time: Duration::ZERO,
                        trace: result.trace.clone(),
                    });
                    files.push(Some(path.clone()));
                }
            }
            Err(error) => {
                run.unknown = Some(format!("{path}: {}", describe_unknown(&error)));
                break;
            }
        }
    }
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
