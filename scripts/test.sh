#!/usr/bin/env bash
# Install everything, then lint, type-check and run the whole test suite, all from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/sandbox/containers.conf}"
# The tests start `python3` and `handoff` as a person would: those of .venv.
export PATH="$PWD/.venv/bin:$PATH" VIRTUAL_ENV="$PWD/.venv"
unset PYTHONPATH PYTHONHOME
python -m ruff check bot handlers devkit tests bench
python -m mypy
# Coverage data is written in a sticky folder anyone may write (like /tmp): a root run's egress
# proxy process (proxy_server.py) writes its share as nobody. The combined file ends in .coverage.
data=$(mktemp -d)
chmod 1777 "$data"
trap 'cp -f "$data/.coverage" .coverage 2>/dev/null; rm -rf "$data"' EXIT
export COVERAGE_FILE="$data/.coverage"
python -m pytest -q -p no:cacheprovider --cov=bot --cov=handlers --cov=devkit --cov-branch \
  --cov-report=term-missing "$@"
