#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian machine and runs them all:
# the real servers (etcd, ZooKeeper, Consul, Redis, PostgreSQL tools, promtool), a virtualenv
# with every extra, then lint, strict type checks and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-servers.sh
scripts/bootstrap.sh all,test
scripts/install-deploy-tools.sh
.venv/bin/ruff check leadercron tests benchmarks
.venv/bin/ruff format --check leadercron tests benchmarks
.venv/bin/mypy
.venv/bin/pytest "$@"
