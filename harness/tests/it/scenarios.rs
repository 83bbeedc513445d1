//! Scenario files as data: each malformed file under
//! `tests/data/malformed-scenarios/` is refused with the line and key its
//! `# expect-…` header names; the library loads and each file is named after
//! itself; the CLI lists the library with descriptions and still lists the
//! good files when one is bad.

use khala_parity::plan::scenario::{self, Scenario};
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn library_dir() -> PathBuf {
    manifest_dir().join("../scenarios")
}

fn malformed_dir() -> PathBuf {
    manifest_dir().join("tests/data/malformed-scenarios")
}

/// What a malformed file's header says its error must name.
#[derive(Debug)]
struct Expected {
    line: usize,
    /// `-` in the file: the error names no key (a TOML syntax error).
    key: Option<String>,
    says: Vec<String>,
}

fn expected(path: &Path, text: &str) -> Expected {
    let mut line = None;
    let mut key = None;
    let mut says = Vec::new();
    for header in text.lines().take_while(|line| line.starts_with('#')) {
        if let Some(value) = header.strip_prefix("# expect-line: ") {
            line = value.trim().parse().ok();
        } else if let Some(value) = header.strip_prefix("# expect-key: ") {
            key = Some(value.trim().to_owned());
        } else if let Some(value) = header.strip_prefix("# expect: ") {
            says.push(value.trim().to_owned());
        }
    }
    let (Some(line), Some(key)) = (line, key) else {
        panic!(
            "{}: needs `# expect-line:` and `# expect-key:` headers",
            path.display()
        );
    };
    Expected {
        line,
        key: (key != "-").then_some(key),
        says,
    }
}

#[test]
fn each_malformed_scenario_is_refused_naming_its_line_and_key() {
    let files = scenario::library(&malformed_dir()).expect("read the malformed scenarios");
    // A glob that matches nothing would pass vacuously.
    assert!(files.len() >= 20, "only {} malformed files", files.len());
    let mut mismatches = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read a malformed scenario");
        let expected = expected(path, &text);
        let error = match Scenario::parse(path, &text) {
            Ok(_) => {
                mismatches.push(format!("{}: loaded without error", path.display()));
                continue;
            }
            Err(error) => error,
        };
        let message = error.to_string();
        let Some(invalid) = error.invalid() else {
            mismatches.push(format!(
                "{}: not an invalid-file error: {message}",
                path.display()
            ));
            continue;
        };
        let position = format!("{}:{}:", path.display(), expected.line);
        let named_key = expected
            .key
            .as_ref()
            .is_none_or(|key| message.contains(&format!("key `{key}`")));
        let says = expected.says.iter().all(|text| message.contains(text));
        if invalid.line != Some(expected.line)
            || invalid.key != expected.key
            || !message.contains(&position)
            || !named_key
            || !says
        {
            mismatches.push(format!(
                "{}: expected line {}, key {:?}, saying {:?}; got line {:?}, key {:?}: {message}",
                path.display(),
                expected.line,
                expected.key,
                expected.says,
                invalid.line,
                invalid.key
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The default library of issue 7, each file one test of `tests/data.rs`.
const LIBRARY: [&str; 8] = [
    "smoke",
    "drill-stages",
    "sink-mode-switches",
    "fanout-faults",
    "delivery-retention",
    "version-bump",
    "backend-outages",
    "soak",
];

#[test]
fn the_library_loads_and_each_file_is_named_after_itself() {
    let files = scenario::library(&library_dir()).expect("read scenarios/");
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for path in &files {
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        match Scenario::load(path) {
            Ok(scenario) => {
                if scenario.name != stem {
                    problems.push(format!("{stem}.toml: name is `{}`", scenario.name));
                }
                if scenario.description.contains("\n\n") {
                    problems.push(format!("{stem}.toml: description is not one paragraph"));
                }
            }
            Err(error) => problems.push(error.to_string()),
        }
        names.push(stem);
    }
    for required in LIBRARY {
        if !names.iter().any(|name| name == required) {
            problems.push(format!("scenarios/{required}.toml is missing"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn khala_parity(current_dir: &Path, arguments: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_khala-parity"))
        .args(arguments)
        .current_dir(current_dir)
        .output()
        .expect("run khala-parity")
}

#[test]
fn list_scenarios_as_json_gives_every_file_with_its_description() {
    let output = khala_parity(
        &manifest_dir().join(".."),
        &["list", "scenarios", "--format", "json"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("a JSON array");
    let files = scenario::library(&library_dir()).expect("read scenarios/");
    assert_eq!(listed.len(), files.len(), "{listed:?}");
    for entry in &listed {
        let name = entry["name"].as_str().unwrap_or_default();
        let description = entry["description"].as_str().unwrap_or_default();
        assert!(
            !name.is_empty() && description.len() > 40,
            "{name}: {description:?}"
        );
    }
}

#[test]
fn a_malformed_file_is_reported_and_the_rest_still_listed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios).expect("create scenarios/");
    std::fs::copy(
        library_dir().join("smoke.toml"),
        scenarios.join("smoke.toml"),
    )
    .expect("copy smoke.toml");
    std::fs::copy(
        malformed_dir().join("negative-weight.toml"),
        scenarios.join("negative-weight.toml"),
    )
    .expect("copy a malformed file");
    let output = khala_parity(dir.path(), &["list", "scenarios", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("negative-weight.toml:11:") && stderr.contains("key `weights.quiesce`"),
        "{stderr}"
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("a JSON array");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "smoke");
}

#[test]
fn a_slot_count_of_zero_or_above_the_maximum_exits_64_naming_the_flag() {
    // `--lanes` is the deprecated name of `--slots`: each error names the
    // flag the user wrote.
    for flag in ["--slots", "--lanes"] {
        for count in ["0", "17"] {
            let output = khala_parity(
                &manifest_dir().join(".."),
                &["run", "--scenario", "smoke", flag, count],
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(64), "{flag} {count}: {stderr}");
            assert!(stderr.contains(flag), "{stderr}");
        }
    }
}

#[test]
fn a_regressions_folder_that_cannot_be_written_is_refused_before_any_case_runs() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "").expect("write a file");
    let regressions = file.join("regressions");
    // No backend is named: a refusal that came after starting one would
    // show up as a provider error instead.
    let output = khala_parity(
        &manifest_dir().join(".."),
        &[
            "run",
            "--scenario",
            "smoke",
            "--backend",
            "external",
            "--regressions",
            regressions.to_str().expect("utf-8 path"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("write regressions to {}", regressions.display())),
        "{stderr}"
    );
}
