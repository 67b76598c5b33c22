#!/usr/bin/env bash
# Runs the app locally (README "Run it"): installs what is missing, then the local runner
# (or `func start` when Azure Functions Core Tools is installed). `--demo` runs the demo and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && [ -x node_modules/.bin/azurite ] || bash scripts/setup.sh --run
exec .venv/bin/python -m devtools.run "$@"
