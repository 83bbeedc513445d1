#!/usr/bin/env bash
# Install the system tools CI needs, only those that are missing:
#   docker.io   - dockerd (+ containerd, runc); the machine only has a docker CLI
#   debootstrap - builds image root filesystems from Debian packages, since no
#                 container registry is reachable
#   iptables    - dockerd needs it for bridge networking and published ports
# Idempotent: with everything present it does not even run apt-get update.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v iptables >/dev/null || missing+=(iptables)

if ((${#missing[@]} == 0)); then
    log "tools already installed"
    exit 0
fi

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
log "installed: ${missing[*]}"
