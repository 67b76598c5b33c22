#!/usr/bin/env bash
# The test command (README): sets up what is missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] && [ -x node_modules/.bin/azurite ] || bash scripts/setup.sh
# Three workers on two cores: most of a test is waiting on Azurite or an emulator (each worker has its own).
exec .venv/bin/python -m pytest -n 3 "$@"
