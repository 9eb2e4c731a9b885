#!/usr/bin/env bash
# Creates .venv (if missing) and installs leadercron into it, editable, with the given extras.
#   scripts/bootstrap.sh            -> the service only (file and memory backends)
#   scripts/bootstrap.sh all,test   -> every backend and the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
