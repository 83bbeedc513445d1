#!/usr/bin/env bash
# The drill evidence of a real short run, as CI artifacts: runs the harness
# (hardened profile, a few cases of every scenario, the stored regressions
# replayed first) against the backends the environment names, writes
# report.json, report.txt, metrics.prom, drill.md and the timelines into the
# folder given as $1 (default: out/ci-artifacts, ignored by git), then
# checks their shape with the test that knows it. Exit 0 when the artifacts exist and have their
# shape, whatever the gate decided (the decision is in the artifacts); a
# run that proves nothing (exit 2) or bad input (64) fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=${1:-out/ci-artifacts}
cases=${KHALA_PARITY_ARTIFACT_CASES:-5}
rm -rf "$dir"
mkdir -p "$dir"
dir=$(realpath "$dir")
# Findings of this run land next to the artifacts, not in the source tree.
cp -r scenarios/regressions "$dir/regressions"

status=0
cargo run --quiet -p khala-parity -- run --profile hardened --cases "$cases" --seed 1 \
    --regressions "$dir/regressions" --out "$dir" --format human >"$dir/run.log" 2>&1 || status=$?
cat "$dir/run.log"
case $status in
0 | 1) echo "artifacts: gate exit code $status, written to $dir" ;;
*)
    echo "artifacts: the run failed with exit code $status" >&2
    exit "$status"
    ;;
esac

# The default profile: the ci profile's JUnit file is the test run's, kept intact.
KHALA_PARITY_ARTIFACTS_DIR="$dir" cargo nextest run -p khala-parity \
    -E 'test(=reports::artifacts_of_a_real_run_have_the_drill_shape)'
