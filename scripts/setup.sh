#!/usr/bin/env bash
# Creates .venv and installs Azurite from package-lock.json. `--run`: only what the app, the CLI and the
# local runner need (scripts/run.sh); otherwise the test tools too (scripts/test.sh, CI).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
requirements=(-r requirements.txt -r requirements-dev.txt)
[ "${1:-}" = "--run" ] && requirements=(-r requirements.txt -r requirements-tools.txt)
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
if [ "${1:-}" != "--run" ]; then
  cat requirements*.txt | sha256sum > .venv/requirements.sha256  # test.sh reinstalls when they change
fi
if [ ! -x node_modules/.bin/azurite ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
