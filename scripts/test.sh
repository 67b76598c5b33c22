#!/usr/bin/env bash
# The test command (README): sets up what is missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
current=$(cat requirements.txt requirements-dev.txt | sha256sum)
[ -x node_modules/.bin/azurite ] && [ "$(cat .venv/requirements.sha256 2>/dev/null)" = "$current" ] || bash scripts/setup.sh
# Four workers on two cores: most of a test waits on Azurite or an emulator (each worker has its own).
exec .venv/bin/python -m pytest -n 4 "$@"
