#!/usr/bin/env bash
# The test command (README): sets up what is missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] && [ -x node_modules/.bin/azurite ] || bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
