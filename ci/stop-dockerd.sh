#!/usr/bin/env bash
# Stop everything ci/start-dockerd.sh started: first the containers (labelled
# khala-parity=1, plus anything else still running on this private daemon),
# then dockerd itself (SIGTERM, bounded wait, SIGKILL). Idempotent: exits 0
# when nothing is running. Images and the data-root are kept for reuse.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT=${KHALA_PARITY_DOCKERD_STOP_TIMEOUT:-20}

if docker_up; then
    mapfile -t containers < <( (docker ps -aq --filter label=khala-parity=1; docker ps -q) | sort -u)
    if ((${#containers[@]} > 0)); then
        log "removing containers: ${containers[*]}"
        docker rm -f "${containers[@]}" >/dev/null || log "some containers could not be removed"
    fi
fi

pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null) || true
if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
    log "dockerd not running"
    rm -f "$DOCKERD_PIDFILE"
    exit 0
fi

log "stopping dockerd (pid $pid)"
kill -TERM "$pid"
deadline=$((SECONDS + TIMEOUT))
while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
        log "dockerd still running after ${TIMEOUT}s, killing it and its containerd"
        kill -KILL "$pid" 2>/dev/null || true
        # A killed dockerd cannot stop the containerd it supervises.
        if cpid=$(cat "$DOCKER_EXEC_ROOT/containerd/containerd.pid" 2>/dev/null); then
            kill -KILL "$cpid" 2>/dev/null || true
        fi
        break
    fi
    sleep 0.2
done
rm -f "$DOCKERD_PIDFILE"
log "dockerd stopped"
