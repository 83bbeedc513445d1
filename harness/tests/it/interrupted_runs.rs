//! A `khala-parity run` on the local backend stopped by SIGINT, SIGTERM or
//! SIGKILL leaves no process, data directory, journal directory or
//! database behind. SIGINT and SIGTERM end the run with a report marked
//! interrupted and exit `unknown` (2); after SIGKILL the children die with
//! the harness and the next start removes the directories.
//!
//! The run uses the local provider unless `KHALA_PARITY_BACKEND` asks for
//! containers (as CI does); then the containers are what must go, and
//! after SIGKILL the next start removes them.
//!
//! Each test gives the run under test its own PostgreSQL data root and
//! temp dir (where the Convex journals go) and follows only the child
//! processes and containers of its own harness process, so that tests
//! running at the same time cannot disturb what it checks.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use khala_parity::exit;
use khala_parity::play::backend::leftovers::{OWNER_LABEL, Owner};
use khala_parity::play::backend::postgres::{ENV_BACKEND, ENV_POSTGRES_DATA_ROOT};
use rustix::process::Signal;
use testcontainers::bollard::query_parameters::ListContainersOptions;

/// How long a run may take to start playing; generous for a loaded machine.
const START_WAIT: Duration = Duration::from_secs(120);
/// How long a stop may take: the cases in flight, then the backends.
const STOP_WAIT: Duration = Duration::from_secs(120);
/// How long a killed harness's children may take to die.
const DEATH_WAIT: Duration = Duration::from_secs(20);
/// Logged (at debug) when the first case gets its database: cases play.
const PLAYING_LINE: &str = "case database ready";
/// Lanes of the run under test, each a Node front (or a container): more
/// than one, so every lane's processes are seen to go.
const LANES: usize = 2;

/// Containers when the environment asks for them, else the local provider.
fn use_containers() -> bool {
    std::env::var(ENV_BACKEND).is_ok_and(|choice| choice == "containers")
}

/// The ids of the containers whose owner label names the process `pid`.
fn containers_of(pid: u32) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .expect("a docker engine");
        let options = ListContainersOptions {
            all: true,
            filters: Some(
                [("label".to_owned(), vec![OWNER_LABEL.to_owned()])]
                    .into_iter()
                    .collect(),
            ),
            ..ListContainersOptions::default()
        };
        docker
            .list_containers(Some(options))
            .await
            .expect("list containers")
            .into_iter()
            .filter(|container| {
                container
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(OWNER_LABEL))
                    .and_then(|owner| Owner::parse(owner))
                    .is_some_and(|owner| owner.pid == pid)
            })
            .filter_map(|container| container.id)
            .collect()
    })
}

/// A process, told apart from a later one that reuses its pid.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Process {
    pid: u32,
    name: String,
    start_ticks: u64,
}

/// The state letter and start time in `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let parent = fields.get(1)?.parse().ok()?;
    let start_ticks = fields.get(22 - 3)?.parse().ok()?;
    Some((state, parent, start_ticks))
}

impl Process {
    fn running(&self) -> bool {
        stat(self.pid).is_some_and(|(state, _, start)| state != 'Z' && start == self.start_ticks)
    }
}

/// The direct children of `parent` (the postmaster and the Node fronts).
fn children(parent: u32) -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (_, ppid, start_ticks) = stat(pid)?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (ppid == parent).then(|| Process {
                pid,
                name: name.trim().to_owned(),
                start_ticks,
            })
        })
        .collect()
}

/// Directories of ours a run under test may leave: its own data root and
/// temp dir, readable by the `postgres` user when the harness runs as root.
struct Place {
    _top: tempfile::TempDir,
    data_root: PathBuf,
    tmp: PathBuf,
    regressions: PathBuf,
}

impl Place {
    fn new() -> Self {
        let top = tempfile::tempdir().expect("tempdir");
        // The postgres user must pass through to its data directory.
        set_mode(top.path(), 0o755);
        let make = |name: &str| {
            let dir = top.path().join(name);
            std::fs::create_dir(&dir).expect("mkdir");
            set_mode(&dir, 0o755);
            dir
        };
        Place {
            data_root: make("data-root"),
            tmp: make("tmp"),
            regressions: make("regressions"),
            _top: top,
        }
    }

    /// What the runs left in the data root and the temp dir.
    fn leftovers(&self) -> Vec<PathBuf> {
        [&self.data_root, &self.tmp]
            .into_iter()
            .flat_map(|dir| std::fs::read_dir(dir).expect("read_dir"))
            .map(|entry| entry.expect("entry").path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("khala-parity-"))
            })
            .collect()
    }

    fn harness(&self, cases: &str, lanes: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_khala-parity"));
        command
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["run", "--scenario", "smoke", "--profile", "hardened"])
            .args(["--cases", cases, "--slots", lanes])
            .arg("--backend")
            .arg(if use_containers() {
                "containers"
            } else {
                "local"
            })
            .arg("--regressions")
            .arg(&self.regressions)
            .args(["--format", "json"])
            .env(ENV_POSTGRES_DATA_ROOT, &self.data_root)
            // The Convex fronts' journal directories go to the temp dir.
            .env("TMPDIR", &self.tmp)
            .env("RUST_LOG", "khala_parity::play::backend::postgres=debug")
            .env_remove("KHALA_PARITY_REQUIRE_CONTAINERS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A harness run under test: its stdout and stderr drained by threads, so
/// that it never blocks on a full pipe.
struct Run {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr_lines: mpsc::Receiver<String>,
    stderr: String,
}

impl Run {
    fn start(mut command: Command) -> Run {
        let mut child = command.spawn().expect("the harness starts");
        let mut out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (stdout_sender, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            let _ = stdout_sender.send(text);
        });
        let (line_sender, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line_sender.send(line).is_err() {
                    break;
                }
            }
        });
        Run {
            child,
            stdout,
            stderr_lines,
            stderr: String::new(),
        }
    }

    /// Waits until a line containing `text` is logged; false if the run
    /// ended or `within` passed first.
    fn wait_for_line(&mut self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.stderr.push_str(&line);
                    self.stderr.push('\n');
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn signal(&self, signal: Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal the harness");
    }

    /// Waits for the exit (bounded; a run that does not stop is killed and
    /// the test fails), then returns the status, stdout and stderr.
    fn finish(mut self, within: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the harness did not stop within {} s\n{}",
                    within.as_secs(),
                    self.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push_str(&line);
            self.stderr.push('\n');
        }
        let stdout = self
            .stdout
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        (status, stdout, self.stderr)
    }
}

/// Starts a long run, waits until it plays cases, and returns it with the
/// children it started (the postmaster and a Node front per lane) or its
/// containers (PostgreSQL, and a front and its network holder per lane).
fn playing_run(place: &Place) -> (Run, Vec<Process>, Vec<String>) {
    let mut run = Run::start(place.harness("200", &LANES.to_string()));
    let playing = run.wait_for_line(PLAYING_LINE, START_WAIT);
    assert!(playing, "the run never played a case:\n{}", run.stderr);
    let children = children(run.child.id());
    let names: Vec<&str> = children.iter().map(|child| child.name.as_str()).collect();
    if use_containers() {
        let containers = containers_of(run.child.id());
        assert_eq!(containers.len(), 1 + 2 * LANES, "{containers:?}");
        return (run, children, containers);
    }
    assert!(
        names.contains(&"postgres")
            && names.iter().filter(|name| **name == "node").count() == LANES,
        "expected a postmaster and {LANES} Node front(s) as children, found {names:?}"
    );
    assert!(
        !place.leftovers().is_empty(),
        "the run's directories are where the test looks"
    );
    (run, children, Vec::new())
}

/// Waits (bounded) until none of `processes` runs; returns those that do.
fn wait_until_gone(processes: &[Process], within: Duration) -> Vec<Process> {
    let deadline = Instant::now() + within;
    loop {
        let running: Vec<Process> = processes
            .iter()
            .filter(|process| process.running())
            .cloned()
            .collect();
        if running.is_empty() || Instant::now() >= deadline {
            return running;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop_gracefully(signal: Signal) {
    let place = Place::new();
    let (run, children, _) = playing_run(&place);
    let pid = run.child.id();
    run.signal(signal);
    let (status, stdout, stderr) = run.finish(STOP_WAIT);
    assert_eq!(status.code(), Some(i32::from(exit::UNKNOWN)), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("a JSON report ({error}):\n{stdout}\n{stderr}"));
    assert_eq!(report["interrupted"], true, "{stdout}");
    assert_eq!(report["gate"]["decision"], "unknown", "{stdout}");
    let cases = report["stats"]["cases"].as_u64().expect("a case count");
    assert!(cases < 200, "the run stopped early: {cases} cases");
    assert_eq!(wait_until_gone(&children, DEATH_WAIT), Vec::new());
    assert_eq!(place.leftovers(), Vec::<PathBuf>::new(), "{stderr}");
    if use_containers() {
        assert_eq!(containers_of(pid), Vec::<String>::new(), "{stderr}");
    }
}

#[test]
fn sigint_stops_the_run_with_an_interrupted_report_and_removes_everything() {
    stop_gracefully(Signal::INT);
}

#[test]
fn sigterm_stops_the_run_with_an_interrupted_report_and_removes_everything() {
    stop_gracefully(Signal::TERM);
}

#[test]
fn after_sigkill_the_children_die_and_the_next_start_removes_the_rest() {
    let place = Place::new();
    let (run, children, containers) = playing_run(&place);
    let pid = run.child.id();
    run.signal(Signal::KILL);
    let (status, _, stderr) = run.finish(STOP_WAIT);
    assert_eq!(status.code(), None, "killed by the signal");
    // The parent-death signal stops the Node fronts (SIGKILL) and the
    // postmaster (SIGQUIT, an immediate shutdown) with the harness.
    assert_eq!(
        wait_until_gone(&children, DEATH_WAIT),
        Vec::new(),
        "{stderr}"
    );
    let left = place.leftovers();
    // SIGKILL runs no cleanup, so directories or containers remain until
    // the next start.
    assert!(!left.is_empty() || !containers.is_empty());
    if use_containers() {
        assert_eq!(containers_of(pid).len(), containers.len());
    }
    // The next run removes them as its backends start, then its own as it ends.
    let next = Run::start(place.harness("1", "1"));
    let (_, _, stderr) = next.finish(STOP_WAIT);
    for dir in &left {
        assert!(!dir.exists(), "{} left behind:\n{stderr}", dir.display());
    }
    assert_eq!(place.leftovers(), Vec::<PathBuf>::new(), "{stderr}");
    if !containers.is_empty() {
        assert_eq!(containers_of(pid), Vec::<String>::new(), "{stderr}");
    }
}
