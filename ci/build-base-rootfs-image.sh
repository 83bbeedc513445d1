#!/usr/bin/env bash
# Usage: ci/build-base-rootfs-image.sh NAME:TAG [PACKAGE...]
#
# Build a Debian bookworm base image containing PACKAGES without any container
# registry (none is reachable here): debootstrap a minbase root filesystem from
# the Debian mirror apt already uses on this machine, then `docker import` it.
# Reused as is when NAME:TAG already exists in the daemon, so only the first
# run pays for debootstrap (about a minute).
# Needs DOCKER_HOST from ci/start-dockerd.sh (lib.sh sets it).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# >= 1)) || die "usage: $0 NAME:TAG [PACKAGE...]"
image=$1
shift

if docker image inspect "$image" >/dev/null 2>&1; then
    log "reusing image $image"
    exit 0
fi

# First mirror apt uses for the bookworm suite, from one-line *.list files
# ("deb [opts] URI bookworm ...") or deb822 *.sources files (paragraphs with
# "URIs:" and "Suites: ... bookworm ...").
debian_mirror() {
    local lists=() sources=()
    shopt -s nullglob
    lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    sources=(/etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    {
        for f in "${lists[@]}"; do
            [[ -f $f ]] && sed -E 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 == "bookworm" { print $2 }'
        done
        ((${#sources[@]} == 0)) || awk -v RS= -F '\n' '{
            uri = ""; suite = 0
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^URIs:/) { split($i, w, /[ \t]+/); uri = w[2] }
                if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) suite = 1
                if ($i ~ /^Enabled:[ \t]*no/) suite = 0
            }
            if (suite && uri != "") print uri
        }' "${sources[@]}"
    } | head -n 1
}

mirror=${KHALA_PARITY_DEBIAN_MIRROR:-$(debian_mirror)}
[[ -n $mirror ]] || die "no bookworm mirror found in /etc/apt; set KHALA_PARITY_DEBIAN_MIRROR"

mkdir -p "$STATE_DIR"
workdir=$(mktemp -d "$STATE_DIR/rootfs.XXXXXX")
# --one-file-system: never follow a /proc or /sys a failed debootstrap left mounted.
trap 'rm -rf --one-file-system "$workdir"' EXIT

include=$(IFS=,; echo "$*")
log "debootstrap bookworm from $mirror with: ${include:-<nothing extra>}"
start=$SECONDS
debootstrap --variant=minbase ${include:+--include="$include"} \
    bookworm "$workdir/rootfs" "$mirror" >"$STATE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$STATE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
log "debootstrap done in $((SECONDS - start))s ($(du -sh "$workdir/rootfs" | cut -f1))"

start=$SECONDS
# Drop the package cache: the image never runs apt-get against it.
rm -rf "$workdir"/rootfs/var/cache/apt/archives/*.deb "$workdir"/rootfs/var/lib/apt/lists/*
tar --numeric-owner -C "$workdir/rootfs" -c . \
    | docker import --change 'LABEL khala-parity=1' - "$image" >/dev/null
log "imported $image in $((SECONDS - start))s"
