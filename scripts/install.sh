#!/usr/bin/env bash
# Install Handoff and what it runs on: Podman (runc), bubblewrap, mmdebstrap, git, and the
# Python package. Safe to run again. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
pkgs=(git podman runc mmdebstrap bubblewrap uidmap postgresql wrk)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v -i "warning" || true
python3 -c "import bot, githubkit, sqlalchemy.ext.asyncio" # fail loudly if the install did not take
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/sandbox/containers.conf}"
deploy/sandbox/build.sh "${HANDOFF_SANDBOX_IMAGE:-handoff-sandbox:dev}"
