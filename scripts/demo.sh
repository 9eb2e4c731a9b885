#!/usr/bin/env bash
# Runs the demo on the embedded file backend: three replicas of examples/demo.yaml on this host.
# One leads and runs the jobs; kill it (the PIDs are printed) and watch another take over.
# Ctrl-C stops all three; each hands over on the way out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
replicas=${REPLICAS:-3}
pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup INT TERM EXIT
for i in $(seq 1 "$replicas"); do
  # $! must be leadercron itself (not a pipeline's last stage), so that cleanup reaches it.
  .venv/bin/leadercron run --config examples/demo.yaml --identity "replica-$i" \
    > >(sed -u "s/^/[replica-$i] /") 2>&1 &
  pids+=("$!")
done
sleep 1
echo "demo: ${replicas} replicas running; leadercron processes:"
pgrep -af "leadercron run --config examples/demo.yaml" || true
echo "demo: kill the leader with 'kill -9 PID' (or -TERM for a graceful handover); Ctrl-C ends the demo"
wait
