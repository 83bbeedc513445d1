# shellcheck shell=bash
# shellcheck disable=SC2034 # variables used by the scripts that source this file
# Shared settings and helpers for the ci/ scripts. Source it, don't run it.
#
# Everything this project starts lives in its own places, so it never collides
# with a system docker (or another checkout using the default paths).

STATE_DIR=${KHALA_PARITY_STATE_DIR:-/var/lib/khala-parity}
DOCKER_DATA_ROOT=$STATE_DIR/docker
DOCKERD_LOG=$STATE_DIR/dockerd.log
# Exec-root and socket stay directly under /run: dockerd/containerd put unix
# sockets below the exec-root, and unix socket paths are limited to 108 bytes.
DOCKER_EXEC_ROOT=/run/khala-parity-docker
DOCKERD_PIDFILE=/run/khala-parity-dockerd.pid
# Deliberately overrides any DOCKER_HOST from the caller: these scripts only
# ever talk to the private daemon.
export DOCKER_HOST=unix:///run/khala-parity-docker.sock

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Log to stderr, so stdout stays free for values meant for the caller.
log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$(basename "$0")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

docker_up() { docker info >/dev/null 2>&1; }
