#!/usr/bin/env bash
# Creates .venv (if missing) and installs leadercron into it, editable, with the given extras.
#   scripts/bootstrap.sh            -> the service only (file and memory backends)
#   scripts/bootstrap.sh all,test   -> every backend and the test tools
# pip's output goes to .venv/pip.log and is shown only if the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
target="."
[ -z "$extras" ] || target=".[$extras]"
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
       && .venv/bin/python -m pip install --disable-pip-version-check -e "$target"; } \
     > .venv/pip.log 2>&1; then
  cat .venv/pip.log >&2
  echo "bootstrap: pip install failed (log above, also in .venv/pip.log)" >&2
  exit 1
fi
