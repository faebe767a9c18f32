#!/usr/bin/env bash
# Install Handoff and what it runs on: Podman (runc), bubblewrap, mmdebstrap, git, and the
# Python package in a project virtual environment (.venv, created here and reused). Safe to
# run again. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
# Debian's own python3 where there is one: it is the one a stock machine has, and other
# Pythons earlier on PATH (pyenv, conda) come and go.
PY=/usr/bin/python3; [ -x "$PY" ] || PY="$(command -v python3)"
pkgs=(git podman runc mmdebstrap bubblewrap uidmap postgresql wrk python3-setuptools-whl python3-wheel-whl)
pkgs+=(chromium)  # the dashboard's browser test (tests/test_dashboard.py)
# npm fetches the real packages the local npm registry serves (tests/test_npm_install.py, the
# mocha and jest shapes); a machine with Node.js from elsewhere has its own npm.
command -v npm >/dev/null || pkgs+=(npm)
if [ "$PY" = /usr/bin/python3 ] && ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
  pkgs+=(python3-venv)
fi
# docker-compose drives deploy/compose.yml through Podman's API in tests/test_compose.py;
# it goes in without its recommends, which would bring Docker's own daemon.
lean=(docker-compose prometheus)  # prometheus: promtool checks deploy/prometheus (tests/test_alerts.py)
missing=(); missing_lean=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
for p in "${lean[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing_lean+=("$p"); done
if [ $((${#missing[@]} + ${#missing_lean[@]})) -gt 0 ]; then
  $SUDO apt-get update -qq
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq)
  [ ${#missing[@]} = 0 ] || $SUDO "${apt[@]}" "${missing[@]}" >/dev/null
  [ ${#missing_lean[@]} = 0 ] || $SUDO "${apt[@]}" --no-install-recommends \
    "${missing_lean[@]}" >/dev/null
fi
# A .venv made by another Python (or left half made) is made again.
want="$("$PY" -c 'import sys; print(sys.base_prefix)')"
have="$(.venv/bin/python -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)"
if [ "$have" != "$want" ] || [ ! -x .venv/bin/pip ]; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' -e ./devkit 2>&1 \
  | grep -v -i "warning" || true
.venv/bin/python -c "import bot, devkit, githubkit, sqlalchemy.ext.asyncio" # fail loudly if the install did not take
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/sandbox/containers.conf}"
deploy/sandbox/build.sh "${HANDOFF_SANDBOX_IMAGE:-handoff-sandbox:dev}"
