#!/usr/bin/env bash
# Install everything, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/sandbox/containers.conf}"
python3 -m ruff check bot handlers tests bench
python3 -m mypy
python3 -m pytest -q -p no:cacheprovider --cov=bot --cov=handlers --cov-branch --cov-report=term-missing "$@"
