//! The same seed on the same behaviour gives the same report: a legacy run
//! of `smoke` (seed 3, ten cases, findings shrunk and stored) is compared
//! with the report recorded in `tests/data/recorded-report.json`, outside
//! `timing` and `code_version` and with the regressions folder's path
//! replaced. A change of behaviour on purpose records it again:
//! `KHALA_PARITY_RECORD=1 cargo nextest run -p khala-parity -E 'test(/recorded_report/)'`.

use crate::convex_backend::convex_backend;
use crate::support;
use khala_parity::plan::scenario::Scenario;
use khala_parity::play::driver::Backends;
use khala_parity::run::{self, RunSettings};
use khala_runtime::Profile;
use std::path::Path;

const RECORDED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/recorded-report.json"
);
const REGRESSIONS_PLACEHOLDER: &str = "<regressions>";

#[test]
fn a_fixed_run_gives_the_recorded_report() {
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/smoke.toml");
    let scenario = support::ok(Scenario::load(&smoke));
    let regressions = support::ok(tempfile::tempdir());
    let settings = RunSettings {
        profile: Some(Profile::Legacy),
        cases: Some(10),
        seed: 3,
        time_budget: None,
        regressions: regressions.path().to_owned(),
        shard: None,
    };
    let tokio = support::tokio();
    let backends = tokio.block_on(async {
        let postgres = support::backend().await;
        let convex = convex_backend().await;
        support::ok(Backends::new(postgres, convex).await)
    });
    let outcome = run::run_scenarios(&tokio, &backends, &[scenario], &settings, &|_, _| {});
    tokio.block_on(async { support::ok(backends.shutdown().await.map_err(std::io::Error::other)) });
    let outcome = support::ok(outcome);

    let mut report = serde_json::to_value(&outcome.report).expect("report serialises");
    let object = report.as_object_mut().expect("an object");
    object.remove("timing");
    object.remove("code_version");
    let text = serde_json::to_string_pretty(&report)
        .expect("report serialises")
        .replace(
            &regressions.path().display().to_string(),
            REGRESSIONS_PLACEHOLDER,
        );
    if std::env::var_os("KHALA_PARITY_RECORD").is_some() {
        support::ok(std::fs::write(RECORDED, text + "\n"));
        return;
    }
    let recorded = support::ok(std::fs::read_to_string(RECORDED));
    let recorded: serde_json::Value = serde_json::from_str(&recorded).expect("recorded JSON");
    let now: serde_json::Value = serde_json::from_str(&text).expect("report JSON");
    assert!(
        now == recorded,
        "the report differs from {RECORDED}; if the change of behaviour is meant, record it again"
    );
}
