#!/usr/bin/env bash
# Build the Postgres image the tests run (default khala-parity/postgres:15-bookworm,
# override with KHALA_PARITY_POSTGRES_IMAGE): a debootstrapped base with
# postgresql-15, plus ci/images/postgres (Dockerfile + entrypoint).
#
# Reuse: the image carries a hash of ci/images/postgres as a label; when the
# tag exists with the same hash nothing is done, so editing the entrypoint
# rebuilds it (seconds, the base image is reused) instead of silently keeping
# a stale one. Needs DOCKER_HOST from ci/start-dockerd.sh (lib.sh sets it).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

image=${KHALA_PARITY_POSTGRES_IMAGE:-khala-parity/postgres:15-bookworm}
base=khala-parity/debian-postgres-base:bookworm
context=$CI_DIR/images/postgres
hash=$(cat "$context"/* | sha256sum | cut -c1-16)

current=$(docker image inspect --format '{{index .Config.Labels "khala-parity.context"}}' "$image" 2>/dev/null) || true
if [[ $current == "$hash" ]]; then
    log "reusing image $image"
    exit 0
fi

"$CI_DIR/build-base-rootfs-image.sh" "$base" postgresql-15

start=$SECONDS
# No buildx here: the CLI falls back to the legacy builder and says it is deprecated.
docker build -q --build-arg BASE_IMAGE="$base" --label khala-parity.context="$hash" \
    -t "$image" "$context" >/dev/null
log "built $image in $((SECONDS - start))s"
