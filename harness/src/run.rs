//! One way to run: what `khala-parity run` does, as a library the CLI and
//! the tests call. Stored regressions are replayed first; every scenario is
//! then searched for new failures; each new finding is stored as a case
//! file next to the old ones, never over one. Case files are read with
//! their schema check, and one that does not load is reported with its file
//! and line while the others still run.

use crate::check::defects::{self, DefectInput};
use crate::check::gate::GateThresholds;
use crate::model::case::{ActionKind, Broken, CASE_SCHEMA, Case};
use crate::model::reason::ReasonClass;
use crate::model::shard::Shard;
use crate::plan::scenario::{self, Scenario, ScenarioError};
use crate::play::backend::convex::{ConvexBackend, ConvexBackendError, ConvexConfig};
use crate::play::backend::postgres::{
    BackendChoice, BackendError, PostgresBackend, PostgresConfig,
};
use crate::play::driver::Backends;
use crate::play::engine::{self, EngineSettings, Finding, Progress, ScenarioRun, Signature};
use crate::play::error::DriverError;
use crate::report::{self, Report, ShardFinding, ShardScenario, ShardSection};
use khala_runtime::Profile;
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `run` was asked for, beyond the scenarios themselves.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Every scenario's profile when set; else each scenario's own, else
    /// legacy.
    pub profile: Option<Profile>,
    /// Cases per scenario when set; else each scenario's own.
    pub cases: Option<u32>,
    pub seed: u64,
    /// No new case starts after this, per scenario.
    pub time_budget: Option<Duration>,
    /// Where findings are stored and stored cases are replayed from.
    pub regressions: PathBuf,
    /// Play only this slice of every scenario's case stream. A shard
    /// stores no finding (one defect's findings may be spread over
    /// shards); its report carries the minimal cases, and `report merge`
    /// groups and stores them.
    pub shard: Option<Shard>,
}

/// A run's report and the inputs it could not use.
#[derive(Debug)]
pub struct RunOutcome {
    pub report: Report,
    /// Stored cases that did not load; they were not replayed.
    pub invalid_cases: Vec<CaseFileError>,
}

/// Why a case file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CaseFileError {
    #[error("read case {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse case {}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("parse case {}: key `schema`: expected \"{CASE_SCHEMA}\", found {found:?}", path.display())]
    Schema { path: PathBuf, found: String },
    #[error("check case {}: {source}", path.display())]
    Step {
        path: PathBuf,
        #[source]
        source: crate::model::case::InvalidStep,
    },
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("write regressions to {}: {source}", path.display())]
    RegressionsNotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read regressions {}: {source}", path.display())]
    ReadRegressions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store the finding as {}: {source}", path.display())]
    StoreFinding {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "play scenario {scenario} against the external convex deployment: it weighs `{kind}`, \
         which needs a convex backend the harness runs (it pauses, stops or cuts it off); \
         choose scenarios without it (--scenario) or the local or containers provider"
    )]
    LocalOnlyScenario { scenario: String, kind: ActionKind },
    #[error(
        "replay stored case {path} against the external convex deployment: its step {step} is \
         `{kind}`, which needs a convex backend the harness runs; replay it with the local or \
         containers provider, or store regressions elsewhere for this run (--regressions)"
    )]
    LocalOnlyCase {
        path: String,
        step: usize,
        kind: ActionKind,
    },
}

impl RunError {
    /// Whether the error is the user's input (exit 64) rather than the
    /// machine's.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::RegressionsNotWritable { .. }
                | Self::ReadRegressions { .. }
                | Self::LocalOnlyScenario { .. }
                | Self::LocalOnlyCase { .. }
        )
    }
}

/// Refuses, before anything plays, what an external Convex deployment
/// cannot take: a scenario that weighs a kind needing a backend the harness
/// runs (`ActionKind::needs_local_convex`), or a stored case with such a
/// step. Refused rather than skipped: a scenario or case left out would
/// read as checked.
pub fn check_external_plays(
    scenarios: &[Scenario],
    stored: &[(String, Case)],
) -> Result<(), RunError> {
    for scenario in scenarios {
        let local_only = scenario
            .weighted_kinds()
            .into_iter()
            .find(|kind| kind.needs_local_convex());
        if let Some(kind) = local_only {
            return Err(RunError::LocalOnlyScenario {
                scenario: scenario.name.clone(),
                kind,
            });
        }
    }
    for (path, case) in stored {
        let local_only = case
            .steps
            .iter()
            .enumerate()
            .find(|(_, step)| step.kind().needs_local_convex());
        if let Some((step, found)) = local_only {
            return Err(RunError::LocalOnlyCase {
                path: path.clone(),
                step,
                kind: found.kind(),
            });
        }
    }
    Ok(())
}

/// Where `run` and `list` find the scenario library, from the working tree.
pub const SCENARIO_DIR: &str = "scenarios";
/// Where `run` stores and replays regressions by default.
pub const REGRESSION_DIR: &str = "scenarios/regressions";

/// Scenario files that loaded, with their paths, and the errors of those
/// that did not.
pub type LoadedScenarios = (Vec<(PathBuf, Scenario)>, Vec<ScenarioError>);

/// Loads the scenarios `arguments` name (names in `dir` or paths), or every
/// file of the library in `dir` when there are none. A file that does not
/// load is returned with its error and the others still load; an argument
/// that names no file, or a library that cannot be read, is the error.
pub fn load_scenarios(dir: &Path, arguments: &[String]) -> Result<LoadedScenarios, ScenarioError> {
    let paths = if arguments.is_empty() {
        scenario::library(dir)?
    } else {
        arguments
            .iter()
            .map(|argument| scenario::resolve(argument, dir))
            .collect::<Result<_, _>>()?
    };
    let mut scenarios = Vec::new();
    let mut invalid = Vec::new();
    for path in paths {
        match Scenario::load(&path) {
            Ok(scenario) => scenarios.push((path, scenario)),
            Err(error) => invalid.push(error),
        }
    }
    Ok((scenarios, invalid))
}

/// Why the backends of a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The environment's provider settings are wrong: the user's input.
    #[error("read the backend settings: {0}")]
    Settings(String),
    #[error("start PostgreSQL")]
    Postgres(#[source] BackendError),
    #[error("start the Convex backend")]
    Convex(#[source] ConvexBackendError),
    #[error("start the fault proxy")]
    Proxy(#[source] DriverError),
}

/// The slots a run plays on when none are asked for: two per CPU, at most
/// 4 (a slot mostly waits on round trips; more only adds Convex backends
/// to start).
pub fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |cpus| (2 * cpus.get()).min(4))
}

/// The provider settings from the environment, with `choice` (when given)
/// in place of `KHALA_PARITY_BACKEND`.
pub fn backend_configs(
    choice: Option<BackendChoice>,
) -> Result<(PostgresConfig, ConvexConfig), StartError> {
    let mut postgres =
        PostgresConfig::from_env().map_err(|error| StartError::Settings(error.to_string()))?;
    let mut convex =
        ConvexConfig::from_env().map_err(|error| StartError::Settings(error.to_string()))?;
    if let Some(choice) = choice {
        postgres.choice = choice;
        convex.choice = choice;
    }
    Ok((postgres, convex))
}

/// PostgreSQL and `slots` Convex backends (each behind its fault proxy),
/// all started at once. What started is stopped again when a part fails.
pub async fn start_backends(
    choice: Option<BackendChoice>,
    slots: usize,
) -> Result<Backends, StartError> {
    let (postgres_config, convex_config) = backend_configs(choice)?;
    let convex =
        futures::future::join_all((0..slots.max(1)).map(|_| ConvexBackend::start(&convex_config)));
    let (postgres, convex) = tokio::join!(PostgresBackend::start(&postgres_config), convex);
    let mut convex = convex
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::Convex)?
        .into_iter();
    let postgres = postgres.map_err(StartError::Postgres)?;
    let Some(first) = convex.next() else {
        return Err(StartError::Settings("no slot to play on".to_owned()));
    };
    let mut backends = Backends::new(postgres, first)
        .await
        .map_err(StartError::Proxy)?;
    for convex in convex {
        backends.add_slot(convex).await.map_err(StartError::Proxy)?;
    }
    Ok(backends)
}

/// Reads one case file: JSON of the case format, with its schema checked.
pub fn load_case(path: &Path) -> Result<Case, CaseFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let case: Case = serde_json::from_str(&text).map_err(|error| CaseFileError::Parse {
        path: path.to_owned(),
        line: error.line(),
        column: error.column(),
        message: error.to_string(),
    })?;
    if case.schema != CASE_SCHEMA {
        return Err(CaseFileError::Schema {
            path: path.to_owned(),
            found: case.schema,
        });
    }
    case.validate().map_err(|source| CaseFileError::Step {
        path: path.to_owned(),
        source,
    })?;
    Ok(case)
}

/// Stored cases with their paths, and the files that did not load.
pub type LoadedCases = (Vec<(PathBuf, Case)>, Vec<CaseFileError>);

/// Every `*.json` case in `dir`, sorted by path, and the files among them
/// that do not load. A missing directory holds none.
pub fn load_regressions(dir: &Path) -> Result<LoadedCases, RunError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok((Vec::new(), Vec::new()));
        }
        Err(source) => {
            return Err(RunError::ReadRegressions {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    paths.sort();
    let mut cases = Vec::new();
    let mut invalid = Vec::new();
    for path in paths {
        match load_case(&path) {
            Ok(case) => cases.push((path, case)),
            Err(error) => invalid.push(error),
        }
    }
    Ok((cases, invalid))
}

/// Makes sure findings can be stored in `dir` before any case runs: creates
/// it if missing, and writes and removes a probe file in it.
pub fn check_regressions_writable(dir: &Path) -> Result<(), RunError> {
    let refused = |source| RunError::RegressionsNotWritable {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(refused)?;
    tempfile::Builder::new()
        .prefix(".khala-parity-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(refused)
}

/// Stores a finding's case in `dir` as `<scenario>--<invariant>-<reason>.json`,
/// or, when that file exists, with the first free `-2`, `-3`, … suffix: a
/// stored case is a user's evidence and is never replaced.
pub fn store_finding(dir: &Path, scenario: &str, finding: &Finding) -> Result<PathBuf, RunError> {
    store_case(dir, scenario, &finding.case)
}

/// Stores `case` in `dir`, named by its origin's invariant and reason
/// class (see `store_finding`).
fn store_case(dir: &Path, scenario: &str, case: &Case) -> Result<PathBuf, RunError> {
    let (invariant, reason_class) = case.origin.as_ref().map_or(("case", "unknown"), |origin| {
        (origin.invariant.as_str(), origin.reason_class.name())
    });
    let base = report::regression_path(dir, scenario, invariant, reason_class);
    let text = serde_json::to_string_pretty(case)
        .map_err(io::Error::other)
        .map_err(|source| RunError::StoreFinding {
            path: base.clone(),
            source,
        })?
        + "\n";
    for attempt in 1..=u32::MAX {
        let path = match attempt {
            1 => base.clone(),
            n => base.with_file_name(format!(
                "{}-{n}.json",
                base.file_stem().unwrap_or_default().to_string_lossy()
            )),
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        let mut file = match file {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(RunError::StoreFinding { path, source }),
        };
        file.write_all(text.as_bytes())
            .map_err(|source| RunError::StoreFinding {
                path: path.clone(),
                source,
            })?;
        return Ok(path);
    }
    Err(RunError::StoreFinding {
        path: base,
        source: io::ErrorKind::AlreadyExists.into(),
    })
}

/// The failures each scenario's stored cases showed when replayed in this
/// run, and those of the defects they stand for: seen again in a
/// generated case, they are already reported by the stored case and are
/// neither shrunk nor stored again. A defect's other checks count while
/// its stored case still fails: they share its root cause.
fn known_signatures(stored: &ScenarioRun, scenario: &str) -> BTreeSet<Signature> {
    let shown = stored
        .findings
        .iter()
        .filter(|finding| {
            finding
                .case
                .origin
                .as_ref()
                .is_some_and(|origin| origin.scenario == scenario)
        })
        .flat_map(|finding| &finding.violations)
        .map(|violation| (violation.invariant, violation.reason_class));
    let broken = stored
        .findings
        .iter()
        .filter_map(|finding| finding.case.origin.as_ref())
        .flat_map(|origin| &origin.breaks)
        .filter(|broken| broken.scenario == scenario)
        .filter_map(|broken| {
            let class = ReasonClass::from_name(&broken.reason_class)?;
            crate::model::catalogue::invariant(&broken.invariant)
                .map(|invariant| (invariant.id, class))
        });
    shown.chain(broken).collect()
}

/// A finding as grouping and storing see it.
#[derive(Clone, Debug)]
pub struct Member<'a> {
    pub scenario: &'a str,
    pub case: &'a Case,
    /// Its violations' (invariant, reason class), in order.
    pub signatures: Vec<(String, String)>,
    /// The step its first violation was seen after.
    pub first_step: Option<usize>,
    /// Where its case is stored already (a stored regression).
    pub stored: Option<String>,
}

impl<'a> Member<'a> {
    /// An engine finding of `scenario`, stored at `stored` if it is.
    pub fn of(scenario: &'a str, finding: &'a Finding, stored: Option<String>) -> Self {
        Member {
            scenario,
            case: &finding.case,
            signatures: finding
                .violations
                .iter()
                .map(|violation| {
                    (
                        violation.invariant.to_owned(),
                        violation.reason_class.name().to_owned(),
                    )
                })
                .collect(),
            first_step: finding
                .violations
                .iter()
                .map(|violation| violation.step_index)
                .min(),
            stored,
        }
    }
}

/// Stores one case per new defect: the members are grouped
/// (`check::defects`); a group with a stored member (a stored regression)
/// is not stored again, and of every other group the member whose minimal
/// case shows most of the group's checks (then the shortest, then the
/// first) is stored, its origin listing every check the group breaks.
/// Returns where each member's defect is stored.
pub fn store_defects(dir: &Path, members: &[Member]) -> Result<Vec<Option<String>>, RunError> {
    let inputs: Vec<DefectInput> = members
        .iter()
        .map(|member| DefectInput {
            case: member.case,
            first_step: member.first_step,
        })
        .collect();
    let groups = defects::group(&inputs);
    let mut files: Vec<Option<String>> =
        members.iter().map(|member| member.stored.clone()).collect();
    let defects = groups.iter().copied().max().map_or(0, |last| last + 1);
    for defect in 0..defects {
        let in_defect = || (0..members.len()).filter(|&index| groups[index] == defect);
        // A defect already stored is not stored again: its new findings
        // point at its stored case.
        if let Some(stored) = in_defect().find_map(|index| members[index].stored.clone()) {
            for index in in_defect() {
                files[index] = Some(stored.clone());
            }
            continue;
        }
        let new: Vec<usize> = in_defect().collect();
        let mut breaks: Vec<Broken> = new
            .iter()
            .flat_map(|&index| {
                let member = &members[index];
                member
                    .signatures
                    .iter()
                    .map(|(invariant, reason_class)| Broken {
                        scenario: member.scenario.to_owned(),
                        invariant: invariant.clone(),
                        reason_class: reason_class.clone(),
                    })
            })
            .collect();
        breaks.sort();
        breaks.dedup();
        let shows = |index: usize| {
            let signatures = &members[index].signatures;
            breaks
                .iter()
                .filter(|broken| {
                    signatures.iter().any(|(invariant, reason_class)| {
                        *invariant == broken.invariant && *reason_class == broken.reason_class
                    })
                })
                .count()
        };
        let Some(&chosen) = new.iter().min_by_key(|&&index| {
            (
                std::cmp::Reverse(shows(index)),
                members[index].case.steps.len(),
                index,
            )
        }) else {
            continue;
        };
        let mut case = members[chosen].case.clone();
        if let Some(origin) = &mut case.origin {
            origin.breaks = breaks;
        }
        let path = store_case(dir, members[chosen].scenario, &case)?
            .display()
            .to_string();
        for index in new {
            files[index] = Some(path.clone());
        }
    }
    Ok(files)
}

/// Replays the stored regressions, then runs every scenario, storing each
/// new finding under `settings.regressions`; `progress` hears of each
/// played case (and `None` when a scenario ends). The caller checks the
/// regressions folder is writable before starting the backends.
pub fn run_scenarios(
    tokio: &tokio::runtime::Runtime,
    backends: &Backends,
    scenarios: &[Scenario],
    settings: &RunSettings,
    progress: &dyn Fn(&str, Option<Progress>),
) -> Result<RunOutcome, RunError> {
    let run_profile = settings.profile.unwrap_or(Profile::Legacy);
    let mut runs = Vec::new();
    let mut case_files = Vec::new();
    // Each run's gate thresholds: the §9.5 defaults for stored regressions,
    // each scenario's `[gate]` table for its own run.
    let mut thresholds = Vec::new();
    // Stored regressions first: known failures are checked before new ones are sought.
    let (stored, invalid_cases) = load_regressions(&settings.regressions)?;
    let stored: Vec<(String, Case)> = stored
        .into_iter()
        .map(|(path, case)| (path.display().to_string(), case))
        .collect();
    if backends.convex_is_external() {
        check_external_plays(scenarios, &stored)?;
    }
    let mut stored_run = ScenarioRun::default();
    let mut shard_scenarios = Vec::new();
    if !stored.is_empty() {
        let (run, files) = engine::replay_stored(tokio, backends, &stored, settings.profile);
        stored_run = run.clone();
        shard_scenarios.push(shard_stored(&run));
        runs.push(run);
        case_files.push(files);
        thresholds.push(GateThresholds::default());
    }
    for scenario in scenarios {
        // After a signal the scenario in flight ends early and no new one starts.
        if crate::play::interrupt::requested() {
            break;
        }
        let mut engine_settings = EngineSettings::new(
            settings
                .profile
                .or(scenario.profile)
                .unwrap_or(Profile::Legacy),
            settings.cases.unwrap_or(scenario.cases),
            scenario.seed.unwrap_or(settings.seed),
        );
        engine_settings.time_budget = settings.time_budget;
        engine_settings.known = known_signatures(&stored_run, &scenario.name);
        engine_settings.shard = settings.shard.unwrap_or(Shard::WHOLE);
        let name = scenario.name.clone();
        let run = engine::run_scenario_with_progress(
            tokio,
            backends,
            scenario,
            &engine_settings,
            &|step| progress(&name, Some(step)),
        );
        progress(&name, None);
        shard_scenarios.push(shard_scenario(scenario, &engine_settings, &run));
        case_files.push(vec![None; run.findings.len()]);
        runs.push(run);
        thresholds.push(scenario.gate.clone());
    }
    if settings.shard.is_none() {
        // One file per defect, over every finding of the run.
        let members: Vec<Member> = runs
            .iter()
            .zip(&case_files)
            .flat_map(|(run, files)| {
                run.findings
                    .iter()
                    .zip(files)
                    .map(|(finding, file)| Member::of(&run.scenario, finding, file.clone()))
            })
            .collect();
        let stored = store_defects(&settings.regressions, &members)?;
        let mut stored = stored.into_iter();
        for files in &mut case_files {
            for file in files.iter_mut() {
                *file = stored.next().flatten();
            }
        }
    }
    let mut report =
        report::build_gated(run_profile, settings.seed, &runs, &case_files, &thresholds);
    if let Some(shard) = settings.shard {
        report.shard = Some(ShardSection {
            shard,
            scenarios: shard_scenarios,
        });
    }
    Ok(RunOutcome {
        report,
        invalid_cases,
    })
}

/// A generated scenario's run as its shard reports it.
fn shard_scenario(
    scenario: &Scenario,
    settings: &EngineSettings,
    run: &ScenarioRun,
) -> ShardScenario {
    ShardScenario {
        name: scenario.name.clone(),
        stored: false,
        declared_cases: scenario.cases,
        stream_cases: settings.cases,
        failure: run.unknown.clone(),
        interrupted: run.interrupted,
        minimums: run.coverage_counts.minimums(&scenario.coverage),
        findings: shard_findings(run),
    }
}

/// The stored regressions' replay as a shard reports it: every shard
/// replays them all.
fn shard_stored(run: &ScenarioRun) -> ShardScenario {
    ShardScenario {
        name: run.scenario.clone(),
        stored: true,
        declared_cases: run.cases,
        stream_cases: run.cases,
        failure: run.unknown.clone(),
        interrupted: run.interrupted,
        minimums: Vec::new(),
        findings: shard_findings(run),
    }
}

fn shard_findings(run: &ScenarioRun) -> Vec<ShardFinding> {
    run.findings
        .iter()
        .map(|finding| ShardFinding {
            case_index: finding
                .case
                .origin
                .as_ref()
                .and_then(|origin| origin.case_index),
            shrink_plays: finding.shrink_steps,
            shrink_case_steps: finding.shrink_case_steps,
            case: finding.case.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::case::{IdStyle, Origin, Start};
    use crate::model::reason::StoreClass;

    fn finding(case_index: u32) -> Finding {
        Finding {
            invariant: "X1",
            reason_class: StoreClass::KhalaMissing.into(),
            case: Case {
                schema: CASE_SCHEMA.to_owned(),
                profile: Profile::Legacy,
                start: Start::new(khala_runtime::SinkMode::Dual),
                ids: IdStyle::Plain,
                steps: Vec::new(),
                origin: Some(Origin {
                    scenario: "smoke".to_owned(),
                    seed: 1,
                    code_version: "test".to_owned(),
                    invariant: "X1".to_owned(),
                    reason_class: StoreClass::KhalaMissing.into(),
                    case_index: Some(case_index),
                    reproduced: true,
                    breaks: Vec::new(),
                }),
            },
            violations: Vec::new(),
            shrink_steps: 0,
            shrink_case_steps: 0,
            shrink_time: Duration::ZERO,
            trace: Vec::new(),
            reproduced: true,
            seen_after: Duration::ZERO,
        }
    }

    #[test]
    fn a_stored_case_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = store_finding(dir.path(), "smoke", &finding(1)).expect("first");
        let before = std::fs::read_to_string(&first).expect("read");
        let second = store_finding(dir.path(), "smoke", &finding(2)).expect("second");
        assert_eq!(first, dir.path().join("smoke--X1-khala_missing.json"));
        assert_eq!(second, dir.path().join("smoke--X1-khala_missing-2.json"));
        assert_eq!(std::fs::read_to_string(&first).expect("read"), before);
        assert_eq!(load_case(&second).expect("load"), finding(2).case);
    }

    #[test]
    fn a_case_that_does_not_parse_is_named_with_its_line_and_the_rest_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        store_finding(dir.path(), "smoke", &finding(1)).expect("store");
        let broken = dir.path().join("broken.json");
        std::fs::write(
            &broken,
            "{\n  \"schema\": \"khala-parity.case.v1\",\n  oops\n}\n",
        )
        .expect("write");
        let wrong_schema = dir.path().join("old.json");
        let mut old = serde_json::to_value(finding(1).case).expect("json");
        old["schema"] = "khala-parity.case.v0".into();
        std::fs::write(&wrong_schema, old.to_string()).expect("write");

        let (cases, invalid) = load_regressions(dir.path()).expect("load");
        assert_eq!(cases.len(), 1);
        let messages: Vec<String> = invalid.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with(&format!("parse case {}:3:3:", broken.display())),
            "{}",
            messages[0]
        );
        assert!(messages[1].contains("key `schema`"), "{}", messages[1]);
    }

    #[test]
    fn an_unwritable_regressions_folder_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        let inside_a_file = file.join("regressions");
        let error = check_regressions_writable(&inside_a_file).expect_err("refused");
        assert!(error.is_invalid_input());
        assert!(
            error
                .to_string()
                .contains(&inside_a_file.display().to_string()),
            "{error}"
        );
        check_regressions_writable(&dir.path().join("new")).expect("created");
        assert_eq!(
            std::fs::read_dir(dir.path().join("new"))
                .expect("dir")
                .count(),
            0
        );
    }

    #[test]
    fn an_external_run_refuses_convex_faults_naming_the_scenario_or_case_and_the_kind() {
        let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let load = |name: &str| Scenario::load(&library.join(name)).expect(name);
        let without = [load("terminal-status.toml"), load("version-bump.toml")];
        assert!(check_external_plays(&without, &[]).is_ok());

        let smoke = load("smoke.toml");
        let error = check_external_plays(&[without[0].clone(), smoke], &[]).unwrap_err();
        assert!(
            matches!(&error, RunError::LocalOnlyScenario { scenario, kind }
                if scenario == "smoke" && *kind == ActionKind::FaultConvex),
            "{error}"
        );
        assert!(error.is_invalid_input());
        let message = error.to_string();
        assert!(
            message.contains("smoke") && message.contains("`fault_convex`"),
            "{message}"
        );

        let mut case = finding(0).case;
        case.steps = vec![
            crate::model::case::Step::Heal,
            crate::model::case::Step::ConvexOutage {
                outage: crate::model::case::Outage::Stop,
            },
        ];
        let stored = [("regressions/x.json".to_owned(), case)];
        let error = check_external_plays(&without, &stored).unwrap_err();
        assert!(
            matches!(&error, RunError::LocalOnlyCase { path, step: 1, kind: ActionKind::RestartConvex }
                if path == "regressions/x.json"),
            "{error}"
        );
        assert!(error.to_string().contains("`restart_convex`"), "{error}");
    }
}
