//! A run split over shards and merged is the unsharded run: four shards of
//! a legacy run (a stored regression replayed first, two generated
//! scenarios, one with coverage minimums it misses, failures found and
//! shrunk in several shards) merged with `merge::merge` give the same
//! report outside `timing`, and store the same defects, as one run.

use crate::engine_runs::one_slot;
use crate::support;
use khala_parity::model::shard::Shard;
use khala_parity::plan::scenario::Scenario;
use khala_parity::run::{self, RunSettings};
use khala_parity::{merge, report};
use khala_runtime::Profile;
use std::collections::BTreeMap;
use std::path::Path;

const PLACEHOLDER: &str = "<regressions>";

fn scenarios() -> Vec<Scenario> {
    let fanout = "name = 'fanout'\ndescription = 'd'\ncases = 10\nmax_steps = 8\n\
        [weights]\nrun_event = 3\nfault_khala = 2\nquiesce = 1\n";
    // Its minimum is out of reach in 10 cases: the merged run must miss
    // it as the whole run does, though no shard alone checks it.
    let versions = "name = 'versions'\ndescription = 'd'\ncases = 10\nmax_steps = 6\n\
        [weights]\nrun_event = 3\nprojection_version_bump = 1\n\
        [coverage.min_per_kind]\nrun_event = 55\n";
    [("fanout.toml", fanout), ("versions.toml", versions)]
        .into_iter()
        .map(|(path, text)| support::ok(Scenario::parse(Path::new(path), text)))
        .collect()
}

/// A regressions folder holding one stored legacy case.
fn regressions() -> tempfile::TempDir {
    let dir = support::ok(tempfile::tempdir());
    let stored = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/regressions/smoke--X1-khala_missing.json");
    support::ok(std::fs::copy(
        stored,
        dir.path().join("smoke--X1-khala_missing.json"),
    ));
    dir
}

fn settings(dir: &Path, shard: Option<Shard>) -> RunSettings {
    RunSettings {
        profile: Some(Profile::Legacy),
        cases: None,
        seed: 5,
        time_budget: None,
        regressions: dir.to_owned(),
        shard,
    }
}

/// The report as JSON without `timing`, its regressions folders' paths
/// replaced.
fn comparable(report: &report::Report, dirs: &[&Path]) -> serde_json::Value {
    let mut text = support::ok(serde_json::to_string_pretty(report));
    for dir in dirs {
        text = text.replace(&dir.display().to_string(), PLACEHOLDER);
    }
    let mut value: serde_json::Value = support::ok(serde_json::from_str(&text));
    value.as_object_mut().expect("object").remove("timing");
    value
}

/// Every file of a folder by name, with its text.
fn folder(dir: &Path) -> BTreeMap<String, String> {
    support::ok(std::fs::read_dir(dir))
        .map(|entry| {
            let path = support::ok(entry).path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, support::ok(std::fs::read_to_string(&path)))
        })
        .collect()
}

#[test]
fn four_shards_merged_equal_the_unsharded_run_outside_timing() {
    let tokio = support::tokio();
    let backends = one_slot(&tokio);
    let scenarios = scenarios();
    let whole_dir = regressions();
    let whole = run::run_scenarios(
        &tokio,
        &backends,
        &scenarios,
        &settings(whole_dir.path(), None),
        &|_, _| {},
    );
    let shard_dir = regressions();
    let mut shards = Vec::new();
    // In reverse: the merge orders them itself.
    for index in (1..=4).rev() {
        let shard = Shard { index, count: 4 };
        let outcome = run::run_scenarios(
            &tokio,
            &backends,
            &scenarios,
            &settings(shard_dir.path(), Some(shard)),
            &|_, _| {},
        );
        let report = support::ok(outcome).report;
        // What the CLI writes and `report merge` reads back.
        let text = support::ok(serde_json::to_string(&report));
        let path = Path::new("shard").join(format!("{index}.json"));
        let read = support::ok(report::load::parse(&path, &text));
        assert_eq!(read, report, "shard {shard} reads back");
        shards.push((path, read));
    }
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    let whole = support::ok(whole).report;

    // A shard stores nothing; the merge stores what the whole run stored.
    let stored: Vec<String> = folder(shard_dir.path()).into_keys().collect();
    assert_eq!(stored, ["smoke--X1-khala_missing.json"]);
    let merge_dir = regressions();
    let merged = support::ok(merge::merge(&shards, merge_dir.path()));

    assert!(whole.findings.len() >= 2, "{:?}", whole.findings);
    let found_in: Vec<u32> = shards
        .iter()
        .filter(|(_, report)| {
            report
                .findings
                .iter()
                .any(|finding| finding.scenario == "fanout")
        })
        .filter_map(|(_, report)| report.shard.as_ref().map(|section| section.shard.index))
        .collect();
    assert!(
        found_in.len() >= 2,
        "fanout failures in shards {found_in:?}"
    );
    assert!(
        whole.scenarios[2]
            .coverage
            .as_ref()
            .is_some_and(|coverage| !coverage.gaps.is_empty()),
        "{:?}",
        whole.scenarios[2]
    );
    // The stored regression's file is where each shard read it.
    let merged = comparable(&merged, &[merge_dir.path(), shard_dir.path()]);
    let whole_value = comparable(&whole, &[whole_dir.path()]);
    if merged != whole_value {
        let _ = std::fs::write("/tmp/fs-merged.json", merged.to_string());
        let _ = std::fs::write("/tmp/fs-whole.json", whole_value.to_string());
    }
    assert!(
        merged == whole_value,
        "the merged report differs from the whole run's"
    );
    assert_eq!(folder(merge_dir.path()), folder(whole_dir.path()));
    assert!(!whole.defects.is_empty());
    assert!(whole.defects.len() <= whole.findings.len());
}

#[test]
fn a_shard_outside_its_range_exits_64_naming_it_before_any_backend_starts() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (shard, expected) in [
        ("0/4", "--shard \"0/4\": K is 0, outside 1..=4"),
        ("5/4", "--shard \"5/4\": K is 5, outside 1..=4"),
        ("1/0", "--shard \"1/0\": N is 0"),
        ("two", "--shard \"two\": expected K/N"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_khala-parity"))
            .args([
                "run",
                "--scenario",
                "smoke",
                "--backend",
                "local",
                "--shard",
                shard,
            ])
            .current_dir(&repo)
            .output()
            .expect("run khala-parity");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{shard}: {stderr}");
        assert!(stderr.contains(expected), "{shard}: {stderr}");
    }
}

#[test]
fn report_merge_refuses_a_duplicated_shard_with_exit_64() {
    let dir = support::ok(tempfile::tempdir());
    let report = report::build(Profile::Legacy, 1, &[], &[]);
    let mut shard = report.clone();
    shard.shard = Some(report::ShardSection {
        shard: Shard { index: 1, count: 2 },
        scenarios: Vec::new(),
    });
    let path = dir.path().join("shard-1.json");
    support::ok(std::fs::write(
        &path,
        support::ok(serde_json::to_string(&shard)),
    ));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_khala-parity"))
        .arg("report")
        .arg("merge")
        .arg(&path)
        .arg(&path)
        .arg("--regressions")
        .arg(dir.path().join("regressions"))
        .output()
        .expect("run khala-parity");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("shard 1/2 is given twice"), "{stderr}");
}
