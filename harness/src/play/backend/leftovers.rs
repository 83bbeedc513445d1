//! What a killed harness leaves behind, and its removal by the next one.
//!
//! A run stopped by SIGINT or SIGTERM removes its backends on their normal
//! path (`interrupt`). SIGKILL runs no code at all, so:
//! - every child process the backends start carries a parent-death signal
//!   (`die_with_harness`): the kernel stops it when the harness dies;
//! - every directory and container the backends create names its owner (the
//!   harness process: pid and start time, boot and pid namespace), and each
//!   backend start removes those whose owner is gone (`reap_dirs`,
//!   `reap_containers`). Anything whose owner cannot be judged (no owner
//!   file, another boot or pid namespace, a process still running) is left
//!   alone: removing a live run's server would be far worse than a leak.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::process::Signal;
use testcontainers::bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};

/// The file in each owned directory that names its owner.
pub const OWNER_FILE: &str = "khala-parity.owner";
/// The container label that names the owner (the same text as the file).
pub const OWNER_LABEL: &str = "khala-parity.owner";

/// A process, told apart from a later process that reuses its pid (by its
/// start time) and from processes whose pids mean something else to us
/// (another boot, another pid namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `/proc/self/ns/pid`, e.g. `pid:[4026531836]`.
    pub pid_namespace: String,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_ticks: u64,
}

/// Why an owner file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LeftoverError {
    #[error("identify this process from /proc (boot id, pid namespace, start time)")]
    NoIdentity,
    #[error("write the owner file {}", path.display())]
    WriteOwner {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.boot_id, self.pid_namespace, self.pid, self.start_ticks
        )
    }
}

impl Owner {
    /// This process; `None` where /proc does not tell (not Linux).
    pub fn current() -> Option<&'static Owner> {
        static CURRENT: OnceLock<Option<Owner>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
                let pid_namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
                let pid = std::process::id();
                let (_, start_ticks) = process_state(pid)?;
                Some(Owner {
                    boot_id: boot_id.trim().to_owned(),
                    pid_namespace: pid_namespace.to_str()?.to_owned(),
                    pid,
                    start_ticks,
                })
            })
            .as_ref()
    }

    /// Reads what `Display` wrote.
    pub fn parse(text: &str) -> Option<Owner> {
        let mut fields = text.split_whitespace();
        let owner = Owner {
            boot_id: fields.next()?.to_owned(),
            pid_namespace: fields.next()?.to_owned(),
            pid: fields.next()?.parse().ok()?,
            start_ticks: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(owner)
    }

    /// Whether the owner has certainly exited: it ran in this boot and pid
    /// namespace, and no living process has its pid and start time (a
    /// zombie is dead: it can clean nothing up any more).
    pub fn is_gone(&self) -> bool {
        let Some(me) = Owner::current() else {
            return false;
        };
        if self.boot_id != me.boot_id || self.pid_namespace != me.pid_namespace {
            return false;
        }
        match process_state(self.pid) {
            None => true,
            Some((state, start_ticks)) => state == 'Z' || start_ticks != self.start_ticks,
        }
    }
}

/// A process's state letter and start time from `/proc/<pid>/stat`; `None`
/// when there is no such process.
fn process_state(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: the fields after it start after the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was the state; the start time is field 22.
    let start_ticks = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start_ticks))
}

/// Whether a process with `pid` runs (a zombie does not).
pub fn process_running(pid: u32) -> bool {
    process_state(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Marks `dir` as this process's, so that a later start can tell when it
/// was left behind.
pub fn write_owner(dir: &Path) -> Result<(), LeftoverError> {
    let owner = Owner::current().ok_or(LeftoverError::NoIdentity)?;
    let path = dir.join(OWNER_FILE);
    std::fs::write(&path, format!("{owner}\n"))
        .map_err(|source| LeftoverError::WriteOwner { path, source })
}

/// The owner `dir` names, if it names one.
pub fn read_owner(dir: &Path) -> Option<Owner> {
    Owner::parse(&std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?)
}

/// Removes each directory in `parent` whose name starts with `prefix` and
/// whose owner is gone, calling `stop` on it first (to stop a server still
/// running from it). Returns the directories removed. Problems are logged,
/// never fatal: reaping is housekeeping for a run that wants to start.
pub fn reap_dirs(parent: &Path, prefix: &str, stop: impl Fn(&Path)) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::debug!(%error, parent = %parent.display(), "cannot look for leftovers");
            return Vec::new();
        }
    };
    let mut reaped = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(prefix));
        // Never follow a symlink out of `parent`.
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if !is_ours || !is_dir {
            continue;
        }
        let dir = entry.path();
        let Some(owner) = read_owner(&dir) else {
            continue;
        };
        if !owner.is_gone() {
            continue;
        }
        tracing::info!(dir = %dir.display(), owner = owner.pid, "removing what a killed run left");
        stop(&dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => reaped.push(dir),
            // Another run's start reaped it first.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), "could not remove a leftover directory");
            }
        }
    }
    reaped
}

/// Makes `command`'s process receive `signal` when this harness dies, even
/// by SIGKILL (Linux `PR_SET_PDEATHSIG`), so that no child outlives it.
///
/// The kernel sends the signal when the *thread* that spawned the child
/// exits, not only the process. Backends spawn from the thread that starts
/// them or from a runtime worker, which live as long as the backend: the
/// CLI's main thread, a test's thread, a runtime's workers (kept until the
/// runtime drops). Spawning from a thread that ends earlier (a
/// `spawn_blocking` thread, a short-lived `std::thread`) would stop the
/// child while the backend still uses it: a backend failure, never a pass.
pub(crate) fn die_with_harness(command: &mut tokio::process::Command, signal: Signal) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: prctl and getppid are plain
    // system calls, and the error is built from an errno without
    // allocating.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(signal))?;
            // If the harness died between fork and prctl, no signal is coming.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

/// Removes every container whose owner label (`OWNER_LABEL`, set by both
/// backends) names a process that is gone. Errors are logged: a container
/// another start is removing at the same moment is not ours to worry about.
///
/// This stands in for testcontainers' `watchdog` feature, which removes
/// containers on SIGINT and SIGTERM but then ends the process with the
/// signal's default action, before the run could write its report; and
/// which cannot help against SIGKILL.
///
/// Once per process: the backends of a run start at the same moment, and
/// owners that died before this process started are all found the first
/// time; the others wait for that first pass instead of racing it.
pub async fn reap_containers() {
    static REAPED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    REAPED.get_or_init(reap_containers_now).await;
}

async fn reap_containers_now() {
    let reap = async {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .map_err(|error| error.to_string())?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![OWNER_LABEL.to_owned()],
            )])),
            ..ListContainersOptions::default()
        };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|error| error.to_string())?;
        for container in containers {
            let (Some(id), Some(labels)) = (container.id, container.labels) else {
                continue;
            };
            let Some(owner) = labels.get(OWNER_LABEL).and_then(|text| Owner::parse(text)) else {
                continue;
            };
            if !owner.is_gone() {
                continue;
            }
            tracing::info!(
                id,
                owner = owner.pid,
                "removing a container a killed run left"
            );
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..RemoveContainerOptions::default()
            };
            if let Err(error) = docker.remove_container(&id, Some(options)).await {
                tracing::debug!(%error, id, "could not remove a leftover container");
            }
        }
        Ok::<(), String>(())
    };
    if let Err(error) = reap.await {
        tracing::warn!(%error, "could not look for leftover containers");
    }
}

/// The owner label's value for this process; empty where /proc does not
/// tell, which `reap_containers` never matches.
pub fn owner_label() -> String {
    Owner::current()
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_its_own_living_owner() {
        let me = Owner::current().expect("Linux /proc");
        assert_eq!(Owner::parse(&me.to_string()).as_ref(), Some(me));
        assert!(!me.is_gone());
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(reused.is_gone(), "same pid, another start: gone");
        let elsewhere = Owner {
            pid_namespace: "pid:[1]".to_owned(),
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(!elsewhere.is_gone(), "another namespace: cannot tell");
    }

    #[test]
    fn owner_text_must_be_whole() {
        assert_eq!(Owner::parse("b pid:[1] 12"), None);
        assert_eq!(Owner::parse("b pid:[1] 12 34 extra"), None);
        assert_eq!(Owner::parse("b pid:[1] x 34"), None);
    }

    #[test]
    fn reaping_removes_only_what_dead_owners_left() {
        let parent = tempfile::tempdir().expect("tempdir");
        let me = Owner::current().expect("Linux /proc");
        let dead = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        let make = |name: &str, owner: Option<&Owner>| {
            let dir = parent.path().join(name);
            std::fs::create_dir(&dir).expect("mkdir");
            if let Some(owner) = owner {
                std::fs::write(dir.join(OWNER_FILE), owner.to_string()).expect("write");
            }
            dir
        };
        let left = make("ours-dead", Some(&dead));
        let live = make("ours-live", Some(me));
        let unowned = make("ours-unowned", None);
        let other = make("theirs-dead", Some(&dead));
        let stopped = std::sync::Mutex::new(Vec::new());
        let reaped = reap_dirs(parent.path(), "ours-", |dir| {
            stopped.lock().expect("lock").push(dir.to_owned());
        });
        assert_eq!(reaped, vec![left.clone()]);
        assert_eq!(stopped.into_inner().expect("lock"), vec![left.clone()]);
        assert!(!left.exists() && live.exists() && unowned.exists() && other.exists());
    }
}
