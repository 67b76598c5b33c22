#!/usr/bin/env bash
# The test command (README): sets up what is missing, then runs the whole suite. `--full` (what CI
# runs) takes every crash point of the simulation; without it, a quarter of them, another quarter each day.
set -euo pipefail
cd "$(dirname "$0")/.."
current=$(cat requirements*.txt | sha256sum)
[ -x node_modules/.bin/azurite ] && [ "$(cat .venv/requirements.sha256 2>/dev/null)" = "$current" ] || bash scripts/setup.sh
# Four workers on two cores: most of a test waits on Azurite or an emulator (each worker has its own).
# Tests go out two at a time, longest first (the `long` marker), so that no long one starts last.
exec .venv/bin/python -m pytest -n 4 --maxschedchunk 2 "$@"
