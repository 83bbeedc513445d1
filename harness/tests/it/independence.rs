//! Cases share nothing: a case's trace does not depend on what played
//! before it on the same backends (a database reset in place, a Convex
//! front emptied, a fault proxy, a sync server and client lanes per case),
//! and a reset leaves nothing of the cases before it.

use crate::convex_backend::convex_backend;
use crate::support;
use khala_parity::model::case::Case;
use khala_parity::model::trace::CaseResult;
use khala_parity::plan::generate;
use khala_parity::plan::scenario::{self, Scenario};
use khala_parity::play::driver::{self, Backends, Residue};
use khala_parity::play::engine::derive_seed;
use khala_runtime::Profile;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::path::Path;

const SEED: u64 = 20_260_219;
/// Short cases keep the suite's time budget; the faults that leaked fit.
const STEPS_MAX: u32 = 12;

/// Every scenario of the default library.
fn library() -> Vec<Scenario> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    support::ok(scenario::library(&dir))
        .iter()
        .map(|path| support::ok(Scenario::load(path)))
        .collect()
}

/// `count` cases of `scenario` under `profile`, drawn as the engine draws
/// them (its strategy, one seeded stream), at most `STEPS_MAX` steps long.
fn cases(scenario: &Scenario, profile: Profile, count: usize) -> Vec<Case> {
    let scenario = Scenario {
        min_steps: scenario.min_steps.min(STEPS_MAX),
        max_steps: scenario.max_steps.min(STEPS_MAX),
        ..scenario.clone()
    };
    let strategy = generate::case(&scenario, profile);
    let mut bytes = [0u8; 32];
    for (index, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&derive_seed(SEED, &scenario.name, index as u64).to_le_bytes());
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("the strategy draws")
                .current()
        })
        .collect()
}

/// What a played case showed, without its wall-clock figure: every step's
/// observation, auditor summary and client views, and every violation.
fn comparable(result: &CaseResult) -> serde_json::Value {
    serde_json::json!({
        "steps_run": result.steps_run,
        "trace": result.trace,
        "violations": result.violations,
    })
}

/// A seeded Fisher–Yates permutation of `0..count`.
fn shuffled(count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    for index in (1..count).rev() {
        let other = (derive_seed(SEED, "shuffle", index as u64) % (index as u64 + 1)) as usize;
        order.swap(index, other);
    }
    order
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

async fn start_backends() -> Backends {
    let postgres = support::backend().await;
    let convex = convex_backend().await;
    support::ok(Backends::new(postgres, convex).await)
}

fn play(
    tokio: &tokio::runtime::Runtime,
    backends: &Backends,
    case: &Case,
    stop_at_first: bool,
) -> CaseResult {
    support::ok(tokio.block_on(driver::play(backends, case, stop_at_first)))
}

/// Soak cases (every action kind, Convex outages and proxy faults among
/// them) played in order on backends just started, then again in a
/// shuffled order on other backends, each after a case of another default
/// scenario; those run under `legacy` and stop at their first violation
/// as the engine's do, so they often end with a fault in force and writes
/// queued in a paused Convex. Every soak case must show exactly what it
/// showed the first time.
#[test]
fn a_case_shows_the_same_trace_whatever_played_before_it_on_the_same_backends() {
    let tokio = runtime();
    let library = library();
    let soak = library
        .iter()
        .find(|scenario| scenario.name == "soak")
        .expect("the library has soak");
    let soak_cases = cases(soak, Profile::Hardened, 6);
    let others: Vec<Case> = library
        .iter()
        .filter(|scenario| scenario.name != "soak")
        .flat_map(|scenario| cases(scenario, Profile::Legacy, 1))
        .collect();
    assert!(
        others.len() >= 6,
        "every other default scenario gives a case"
    );

    let fresh = tokio.block_on(start_backends());
    let first: Vec<serde_json::Value> = soak_cases
        .iter()
        .map(|case| comparable(&play(&tokio, &fresh, case, false)))
        .collect();
    support::ok(
        tokio
            .block_on(fresh.shutdown())
            .map_err(std::io::Error::other),
    );

    let recycled = tokio.block_on(start_backends());
    for (turn, index) in shuffled(soak_cases.len()).into_iter().enumerate() {
        for other in others.iter().skip(turn).step_by(soak_cases.len()) {
            play(&tokio, &recycled, other, true);
        }
        let again = comparable(&play(&tokio, &recycled, &soak_cases[index], false));
        assert!(
            again == first[index],
            "soak case {index} (turn {turn}) shows another trace after other cases:\nfirst: {}\nagain: {}",
            first[index],
            again
        );
    }
    support::ok(
        tokio
            .block_on(recycled.shutdown())
            .map_err(std::io::Error::other),
    );
}

/// After a case of each default scenario, under each profile (legacy ones
/// stop at their first violation, often with a fault in force), the reset
/// the next case starts from leaves nothing: every table and sequence in
/// the template's state, no Convex document, no connection or request in
/// the fault proxy, no sync server or client lane; and a Convex front
/// restarted then replays an empty journal.
#[test]
fn after_a_reset_nothing_of_the_cases_before_remains() {
    let tokio = runtime();
    let backends = tokio.block_on(start_backends());
    for scenario in library() {
        for profile in [Profile::Legacy, Profile::Hardened] {
            for case in cases(&scenario, profile, 1) {
                play(&tokio, &backends, &case, profile == Profile::Legacy);
                let residue = support::ok(tokio.block_on(backends.residue(0)));
                assert_eq!(
                    residue,
                    Residue::default(),
                    "after a {profile:?} case of {}: {case:?}",
                    scenario.name
                );
            }
        }
    }
    support::ok(tokio.block_on(backends.restart_convex(0)));
    let residue = support::ok(tokio.block_on(backends.residue(0)));
    assert_eq!(residue, Residue::default(), "after a restart");
    support::ok(
        tokio
            .block_on(backends.shutdown())
            .map_err(std::io::Error::other),
    );
}
