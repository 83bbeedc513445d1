#!/usr/bin/env bash
# Start (or reuse) the project's private dockerd and tell the caller where it is.
#
# Interface: progress goes to stderr; stdout is exactly one line,
#     export DOCKER_HOST=unix:///run/khala-parity-docker.sock
# meant for   line=$(ci/start-dockerd.sh) && eval "$line"
# (assign first: `eval "$(...)"` would hide a failure of this script).
#
# The daemon gets its own data-root, exec-root, socket and pidfile (see lib.sh)
# so it never touches a system docker. It runs detached (setsid) and keeps
# running after this script and its caller exit; ci/stop-dockerd.sh stops it.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT=${KHALA_PARITY_DOCKERD_TIMEOUT:-30}

running_pid() {
    local pid
    pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

if docker_up; then
    log "reusing dockerd on $DOCKER_HOST"
    echo "export DOCKER_HOST=$DOCKER_HOST"
    exit 0
fi

if pid=$(running_pid); then
    # Started moments ago by someone else: wait for it instead of starting a
    # second daemon on the same roots.
    log "dockerd (pid $pid) is starting, waiting for it"
else
    mkdir -p "$DOCKER_DATA_ROOT" "$DOCKER_EXEC_ROOT"
    log "starting dockerd (log: $DOCKERD_LOG)"
    setsid dockerd \
        --data-root "$DOCKER_DATA_ROOT" \
        --exec-root "$DOCKER_EXEC_ROOT" \
        --host "$DOCKER_HOST" \
        --pidfile "$DOCKERD_PIDFILE" \
        </dev/null >"$DOCKERD_LOG" 2>&1 &
    pid=$!
fi

deadline=$((SECONDS + TIMEOUT))
until docker_up; do
    if ((SECONDS >= deadline)) || ! kill -0 "$pid" 2>/dev/null; then
        log "dockerd exited or did not answer within ${TIMEOUT}s; last lines of $DOCKERD_LOG:"
        tail -n 40 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    sleep 0.2
done
log "dockerd ready (pid $pid)"
echo "export DOCKER_HOST=$DOCKER_HOST"
