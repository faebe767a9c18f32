#!/usr/bin/env bash
# Install Handoff and start it on its embedded defaults (SQLite in ./handoff-data, Podman).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/sandbox/containers.conf}"
exec .venv/bin/handoff serve "$@"
