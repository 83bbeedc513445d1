#!/usr/bin/env bash
# The README's main job, exactly as written there, as a new user without a
# Docker engine runs it: DOCKER_HOST points nowhere and no provider is
# chosen, so `auto` picks the local backend (PostgreSQL from the installed
# binaries, the Convex front as a node child) with the default slot count.
# The command is read from README.md, so the README cannot drift from what
# CI proves. Fails unless the job exits 0 (the gate allows).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command=$(grep -m1 -E '^npm ci --prefix models/convex && cargo run --release -p khala-parity -- run ' README.md) ||
    { echo "main-job: README.md names no main job command" >&2; exit 1; }
echo "main-job: $command"
env -u KHALA_PARITY_BACKEND -u KHALA_PARITY_REQUIRE_CONTAINERS \
    DOCKER_HOST=unix:///nonexistent/docker.sock \
    bash -c "$command"
