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
python -m pytest -q -p no:cacheprovider --cov=bot --cov=handlers --cov=devkit --cov-branch \
  --cov-report=term-missing "$@"
