#!/usr/bin/env bash
# Mutation testing of the models with cargo-mutants (issue #16): each mutant
# of a file that decides parity is built, and the harness's default
# scenarios under `hardened` (bounded by PROPTEST_CASES) plus the stored
# regressions are its test (nextest profile `mutants`). Not part of
# .ci/run: it takes hours on our 2-core machines (README, "Mutation
# testing").
#
#   ci/mutants.sh                      every file below, one machine
#   ci/mutants.sh --shard 2/8          the third of eight slices
#   ci/mutants.sh --file models/runtime/src/checkpoint.rs
#   ci/mutants.sh --list               what would be tested
#
# Extra arguments go to `cargo mutants` as they are. Results land in
# mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

# In place, each mutant is built where CARGO_TARGET_DIR points; a target
# directory another checkout shares then keeps the last mutant's build as
# fresh (seen: a mutated retention count in the main tree's tests).
case " $* " in
*" --in-place "*)
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        echo "mutants: --in-place with CARGO_TARGET_DIR=$CARGO_TARGET_DIR would leave mutated builds in a shared target directory; unset it" >&2
        exit 64
    fi
    ;;
esac

command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
[ -d models/convex/node_modules ] || npm ci --prefix models/convex

# The files of issue #16 item 2: the projector, checkpoint decisions, the
# sinks, hashing and canonical JSON, summaries, the watermark allocator,
# sync replay and retention, the stale rule, client apply rules and flag
# parsing.
files=(
    models/runtime/src/projector.rs
    models/runtime/src/checkpoint.rs
    models/runtime/src/sink/fanout.rs
    models/runtime/src/sink/khala.rs
    models/runtime/src/sink/convex.rs
    models/runtime/src/sink/convex_value.rs
    models/runtime/src/hashing.rs
    models/runtime/src/summary.rs
    models/runtime/src/watermark.rs
    models/runtime/src/sync/replay.rs
    models/runtime/src/sync/retention.rs
    models/clients/src/apply.rs
    models/clients/src/flags.rs
)
file_args=()
case " $* " in
*" --file "* | *" -f "*) ;;
*) for file in "${files[@]}"; do file_args+=(--file "$file"); done ;;
esac

# Only the `data` test binary (scenarios and stored regressions) is built
# and run per mutant: building the workspace's other test binaries would
# add about 4 s a mutant for tests the profile filters out anyway.
# cargo-mutants tests its baseline with the mutated packages' tests only,
# which the `mutants` profile filters out; the unmutated tree is what
# .ci/run tests, so the baseline is skipped and the timeout set here.
export KHALA_PARITY_BACKEND="${KHALA_PARITY_BACKEND:-local}"
export PROPTEST_CASES="${PROPTEST_CASES:-6}"
exec cargo mutants \
    --package khala-runtime --package khala-clients \
    --test-package khala-parity --cargo-test-arg=--test=data \
    --baseline=skip \
    --test-tool nextest --cargo-arg=--profile=mutants \
    --timeout "${MUTANT_TIMEOUT:-240}" \
    "${file_args[@]}" "$@"
