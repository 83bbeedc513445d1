#!/usr/bin/env bash
# Build the Convex model image the tests run (default
# khala-parity/convex-front:bookworm, override with KHALA_PARITY_CONVEX_IMAGE):
# a debootstrapped base with Debian's nodejs (18.20), plus models/convex
# (server.mjs, convex/, node_modules) copied in by models/convex/Dockerfile.
#
# The build has no network, so node_modules comes from the host: `npm ci` runs
# here first when node_modules is missing or older than package-lock.json.
#
# Reuse: the image carries a hash of the files it copies (package*.json,
# server.mjs, convex/, Dockerfile, .dockerignore) as a label; when the tag
# exists with the same hash nothing is done. node_modules is not hashed: npm ci
# makes it a function of package-lock.json, which is.
# Needs DOCKER_HOST from ci/start-dockerd.sh (lib.sh sets it).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

image=${KHALA_PARITY_CONVEX_IMAGE:-khala-parity/convex-front:bookworm}
base=khala-parity/debian-node-base:bookworm
context=$(cd "$CI_DIR/../models/convex" && pwd)

# npm ci writes node_modules/.package-lock.json last, so its age is the age of
# the whole install.
installed=$context/node_modules/.package-lock.json
if [[ ! -f $installed || $context/package-lock.json -nt $installed ]]; then
    start=$SECONDS
    log "npm ci in $context"
    npm ci --prefix "$context" --no-audit --no-fund >&2
    log "npm ci done in $((SECONDS - start))s"
fi

# Paths relative to the context, sorted, so the hash covers names and contents
# and does not depend on where the checkout lives.
hash=$(cd "$context" \
    && find package.json package-lock.json server.mjs Dockerfile .dockerignore convex -type f -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)

current=$(docker image inspect --format '{{index .Config.Labels "khala-parity.context"}}' "$image" 2>/dev/null) || true
if [[ $current == "$hash" ]]; then
    log "reusing image $image"
    exit 0
fi

"$CI_DIR/build-base-rootfs-image.sh" "$base" nodejs

start=$SECONDS
# No buildx here: the CLI falls back to the legacy builder and says it is deprecated.
docker build -q --label khala-parity=1 --label khala-parity.context="$hash" \
    -t "$image" "$context" >/dev/null
log "built $image in $((SECONDS - start))s"
