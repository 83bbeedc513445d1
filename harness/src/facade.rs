//! The harness as a library call, for a user's own `#[test]`: load a
//! scenario (a file or one built in code), pick a profile and a backend,
//! run, get the report and assert its gate. `Harness::run` shows it whole
//! (its example runs as a doctest, on the local backend).

use crate::plan::scenario::{Scenario, ScenarioError};
use crate::play::backend::postgres::BackendChoice;
use crate::report::Report;
use crate::run::{self, RunError, RunSettings, StartError};
use khala_runtime::Profile;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A run to make: scenarios, profile, backend, cases, seed. Findings are
/// stored in a folder of their own (a temporary one unless set), so a test
/// never writes into the scenario library.
#[derive(Debug)]
pub struct Harness {
    scenarios: Vec<Scenario>,
    profile: Option<Profile>,
    backend: Option<BackendChoice>,
    cases: Option<u32>,
    seed: u64,
    slots: usize,
    time_budget: Option<Duration>,
    regressions: Option<PathBuf>,
}

/// Why a run made through the facade did not give a report.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("the run has no scenario: add one with `scenario` or `scenario_file`")]
    NoScenario,
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("make a folder for the findings")]
    Regressions(#[source] std::io::Error),
    #[error("stop the backends: {0}")]
    Stop(String),
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// No scenario yet; each scenario's own profile and cases, seed 1, the
    /// provider the environment names, one slot.
    pub fn new() -> Self {
        Self {
            scenarios: Vec::new(),
            profile: None,
            backend: None,
            cases: None,
            seed: 1,
            slots: 1,
            time_budget: None,
            regressions: None,
        }
    }

    /// Adds a scenario file (TOML, `scenarios/README.md`).
    pub fn scenario_file(mut self, path: impl AsRef<Path>) -> Result<Self, HarnessError> {
        self.scenarios.push(Scenario::load(path.as_ref())?);
        Ok(self)
    }

    /// Adds a scenario built in code (for example with `Scenario::parse`).
    pub fn scenario(mut self, scenario: Scenario) -> Self {
        self.scenarios.push(scenario);
        self
    }

    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = Some(profile);
        self
    }

    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Cases per scenario, in place of each scenario's own.
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = Some(cases);
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Cases played at once, each on a Convex backend of its own.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots.max(1);
        self
    }

    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = Some(budget);
        self
    }

    /// Where findings are stored and stored cases replayed from.
    pub fn regressions(mut self, dir: impl Into<PathBuf>) -> Self {
        self.regressions = Some(dir.into());
        self
    }

    /// Starts the backends, replays the stored cases, plays every
    /// scenario, stops the backends and returns the report.
    ///
    /// ```
    /// use khala_parity::Harness;
    /// use khala_parity::play::backend::postgres::BackendChoice;
    /// use khala_parity::report::Decision;
    /// use khala_runtime::Profile;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let report = Harness::new()
    ///     .scenario_file("../scenarios/smoke.toml")?
    ///     .profile(Profile::Hardened)
    ///     .backend(BackendChoice::Local)
    ///     .cases(3)
    ///     .run()?;
    /// assert_eq!(report.gate.decision, Decision::Allow, "{:?}", report.gate.reasons);
    /// assert_eq!(report.stats.cases, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn run(self) -> Result<Report, HarnessError> {
        if self.scenarios.is_empty() {
            return Err(HarnessError::NoScenario);
        }
        let scratch;
        let regressions = match self.regressions {
            Some(dir) => dir,
            None => {
                scratch = tempfile::tempdir().map_err(HarnessError::Regressions)?;
                scratch.path().to_owned()
            }
        };
        run::check_regressions_writable(&regressions)?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(HarnessError::Runtime)?;
        let backends = tokio.block_on(run::start_backends(self.backend, self.slots))?;
        let settings = RunSettings {
            profile: self.profile,
            cases: self.cases,
            seed: self.seed,
            time_budget: self.time_budget,
            regressions,
            shard: None,
        };
        let outcome = run::run_scenarios(&tokio, &backends, &self.scenarios, &settings, &|_, _| {});
        let stopped = tokio.block_on(backends.shutdown());
        let outcome = outcome?;
        stopped.map_err(HarnessError::Stop)?;
        Ok(outcome.report)
    }
}
