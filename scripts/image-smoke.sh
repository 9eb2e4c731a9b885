#!/usr/bin/env bash
# Smoke test of the container image, with podman, without any container registry:
#
#   1. a base image (Debian bookworm, --variant=minbase, python3 from Debian's packages) made
#      locally with debootstrap and `podman import`; cached under a tag that names its recipe,
#      so later runs reuse it;
#   2. the leadercron image built from ./Dockerfile with that base (--isolation chroot,
#      --format docker so that HEALTHCHECK is kept; podman's layer cache makes re-runs fast);
#   3. two replicas on the file backend, each in its own container with a read-only root
#      filesystem, no capabilities and the image's non-root user, sharing a bind-mounted
#      directory for the lock file, each publishing its http listener on a loopback port;
#   4. checks: /healthz and /readyz from the host, the image's HEALTHCHECK, exactly one /leader,
#      the leader runs a command job, `podman stop` (SIGTERM to leadercron as PID 1) makes it
#      exit 0 well within the stop timeout and the other replica takes over at once, a replica
#      killed with SIGKILL is replaced at once (the kernel drops its flock), and once both are
#      stopped `leadercron status` finds no holder.
#
# Exits non-zero (after printing the containers' logs) on the first failed check; prints the
# time of every step. Needs root (debootstrap, rootful podman), podman, buildah, runc,
# debootstrap and curl: scripts/install-deploy-tools.sh installs them.
#
# Environment:
#   LEADERCRON_BASE_IMAGE   use this base image instead of making one (e.g. python:3.11-slim
#                           where a registry is reachable)
#   LEADERCRON_SMOKE_IMAGE  tag of the image to build (default localhost/leadercron:smoke)
#   EXTRAS                  the image's extras build argument (default all)
#   DEBIAN_MIRROR           mirror for debootstrap (default: this machine's apt mirror)
#   KEEP=1                  keep the containers and the work directory for inspection
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${LEADERCRON_SMOKE_IMAGE:-localhost/leadercron:smoke}
EXTRAS=${EXTRAS-all}
SUITE=bookworm
# Bump when the base image recipe below changes: the tag names the recipe.
BASE_RECIPE=1
RUN_OPTS=(--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
PREFIX=leadercron-smoke
NAMES=("$PREFIX-a" "$PREFIX-b")
STOP_TIMEOUT=30

START=$(date +%s.%N)
STEP_START=$START
TIMINGS=()
log() { printf '[image-smoke] %s\n' "$*" >&2; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
step_done() {
  local took
  took=$(elapsed "$STEP_START")
  TIMINGS+=("$(printf '%-52s %7ss' "$1" "$took")")
  log "ok: $1 (${took}s)"
  STEP_START=$(date +%s.%N)
}

WORK=""
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ -n "$WORK" ] && [ -s "$WORK/podman.log" ]; then
      log "---- podman's own messages ----"
      tail -20 "$WORK/podman.log" >&2
    fi
    for name in "${NAMES[@]}"; do
      if podman container exists "$name" 2>/dev/null; then
        log "---- logs of $name ----"
        podman logs "$name" 2>&1 | tail -40 >&2 || true
      fi
    done
  fi
  if [ "${KEEP:-0}" != 1 ]; then
    for name in "${NAMES[@]}"; do podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; done
    [ -z "$WORK" ] || rm -rf "$WORK"
  else
    log "KEEP=1: containers ${NAMES[*]} and $WORK are kept"
  fi
  if [ "$rc" -ne 0 ]; then log "FAILED after $(elapsed "$START")s"; fi
  exit "$rc"
}
trap cleanup EXIT
fail() { log "FAIL: $*"; exit 1; }

for tool in podman curl; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (scripts/install-deploy-tools.sh)"
done

# -- 1. base image ---------------------------------------------------------------------------
# A TLS-intercepting egress proxy shows up as extra CAs in /usr/local/share/ca-certificates; the
# base image gets the same ones (and PIP_CERT), so that pip inside the build trusts them too.
extra_cas=()
if [ -d /usr/local/share/ca-certificates ]; then
  while IFS= read -r -d '' f; do extra_cas+=("$f"); done \
    < <(find /usr/local/share/ca-certificates -type f -name '*.crt' -print0 | sort -z)
fi
if [ -n "${LEADERCRON_BASE_IMAGE:-}" ]; then
  BASE=$LEADERCRON_BASE_IMAGE
  log "base image: $BASE (given)"
else
  recipe_hash=$(
    {
      echo "recipe=$BASE_RECIPE suite=$SUITE"
      [ ${#extra_cas[@]} -eq 0 ] || cat "${extra_cas[@]}"
    } | sha256sum | cut -c1-12
  )
  BASE="localhost/leadercron-smoke-base:$SUITE-$recipe_hash"
  if podman image exists "$BASE"; then
    log "base image: $BASE (cached)"
  else
    command -v debootstrap >/dev/null 2>&1 || fail "debootstrap is not installed (scripts/install-deploy-tools.sh)"
    [ "$(id -u)" -eq 0 ] || fail "making the base image needs root (debootstrap)"
    mirror=${DEBIAN_MIRROR:-}
    [ -n "$mirror" ] || mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    rootfs_parent=$(mktemp -d "${TMPDIR:-/var/tmp}/leadercron-rootfs.XXXXXX")
    WORK=$rootfs_parent # removed on exit
    rootfs=$rootfs_parent/root
    log "base image: debootstrap $SUITE from $mirror (once; cached as $BASE)"
    if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$rootfs" "$mirror" >"$rootfs_parent/debootstrap.log" 2>&1; then
      tail -20 "$rootfs_parent/debootstrap.log" >&2
      fail "debootstrap failed"
    fi
    if [ ${#extra_cas[@]} -gt 0 ]; then
      cp "${extra_cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
      chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || fail "update-ca-certificates failed"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar --numeric-owner -C "$rootfs" -c . | podman import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
      --change 'CMD ["/bin/bash"]' \
      - "$BASE" >/dev/null
    rm -rf "$rootfs_parent"
    WORK=""
  fi
fi
step_done "base image"

# -- 2. the leadercron image -------------------------------------------------------------------
build_log=$(mktemp "${TMPDIR:-/tmp}/leadercron-build.XXXXXX")
if ! podman build --isolation chroot --format docker --layers \
  --build-arg "BASE_IMAGE=$BASE" --build-arg "EXTRAS=$EXTRAS" -t "$IMAGE" . >"$build_log" 2>&1; then
  tail -30 "$build_log" >&2
  rm -f "$build_log"
  fail "podman build failed"
fi
rm -f "$build_log"
user=$(podman image inspect "$IMAGE" --format '{{.Config.User}}')
[ "$user" = "10001:10001" ] || fail "image user is '$user', expected 10001:10001"
inspect=$(podman image inspect "$IMAGE")
grep -q '"Healthcheck": {' <<<"$inspect" || fail "the image has no HEALTHCHECK (built without --format docker?)"
log "image: $IMAGE ($(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
step_done "leadercron image build"

# -- 3. two replicas sharing the lock file ----------------------------------------------------
for name in "${NAMES[@]}"; do podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/leadercron-smoke.XXXXXX")
mkdir "$WORK/shared"
chown 10001:10001 "$WORK/shared"
chmod 0755 "$WORK"
cat >"$WORK/config.yaml" <<'EOF'
election:
  name: smoke
  backend: file:///shared/leadercron.lock
  ttl: 6s
  renew_deadline: 4s
  retry_period: 1s
scheduler:
  grace_period: 5s
http:
  listen: 0.0.0.0:9464
jobs:
  - id: tick
    interval: 1s
    command: ["sh", "-c", "echo smoke-tick by $LEADERCRON_IDENTITY term $LEADERCRON_TERM"]
EOF
chmod 0644 "$WORK/config.yaml"

free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  fail "no free port found"
}
# podman's own chatter (podman 4.3 logs an error for every healthcheck timer it cannot hand to
# systemd, even with --health-interval disable) goes to a file, shown only on failure.
pm() { podman "$@" 2>>"$WORK/podman.log"; }
declare -A PORT
run_replica() {
  local name=$1
  pm run -d --name "$name" "${RUN_OPTS[@]}" \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    --health-interval disable \
    --stop-timeout "$STOP_TIMEOUT" \
    -e POD_NAME="$name" \
    -v "$WORK/config.yaml:/etc/leadercron/config.yaml:ro" \
    -v "$WORK/shared:/shared" \
    -p "127.0.0.1:${PORT[$name]}:9464" \
    "$IMAGE" >/dev/null
}
# GET http://127.0.0.1:PORT/PATH; prints the status code (000 when nothing answers).
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1$2" || true; }
wait_code() { # port path code seconds
  local deadline=$((SECONDS + $4))
  while [ "$(http_code "$1" "$2")" != "$3" ]; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.05
  done
}
# Whether container NAME's log has a line matching PATTERN (no pipe into grep -q: with pipefail
# an early exit of grep would fail the pipeline).
logs_have() {
  local out
  out=$(podman logs "$1" 2>&1)
  grep -q -- "$2" <<<"$out"
}
status_json() {
  pm run --rm "${RUN_OPTS[@]}" --no-healthcheck --read-only --cap-drop ALL -v "$WORK/shared:/shared" \
    "$IMAGE" status --backend file:///shared/leadercron.lock --election smoke --json
}

for name in "${NAMES[@]}"; do
  PORT[$name]=$(free_port)
  run_replica "$name"
done
for name in "${NAMES[@]}"; do
  wait_code "${PORT[$name]}" /healthz 200 60 || fail "$name: /healthz is not 200 after 60s"
  wait_code "${PORT[$name]}" /readyz 200 30 || fail "$name: /readyz is not 200 after 30s"
done
step_done "two replicas healthy and ready"

for name in "${NAMES[@]}"; do
  pm healthcheck run "$name" >/dev/null || fail "$name: the image's HEALTHCHECK failed"
done
step_done "image HEALTHCHECK passes"

# -- 4. exactly one leader, and it runs the job -------------------------------------------------
leader=""
deadline=$((SECONDS + 30))
while :; do
  leaders=()
  for name in "${NAMES[@]}"; do
    [ "$(http_code "${PORT[$name]}" /leader)" != 200 ] || leaders+=("$name")
  done
  if [ ${#leaders[@]} -eq 1 ]; then leader=${leaders[0]}; break; fi
  [ ${#leaders[@]} -le 1 ] || fail "two leaders: ${leaders[*]}"
  [ $SECONDS -lt "$deadline" ] || fail "no leader after 30s"
  sleep 0.1
done
follower=${NAMES[0]}
[ "$leader" != "$follower" ] || follower=${NAMES[1]}
deadline=$((SECONDS + 15))
until logs_have "$leader" "smoke-tick by $leader"; do
  [ $SECONDS -lt "$deadline" ] || fail "$leader leads but did not run the command job in 15s"
  sleep 0.2
done
! logs_have "$follower" "smoke-tick" || fail "follower $follower ran a job"
status=$(status_json) || fail "leadercron status found no leader"
grep -q "\"leader\": \"$leader\"" <<<"$status" || fail "leadercron status does not name $leader: $status"
log "leader: $leader, follower: $follower"
step_done "one leader, running the job"

# -- 5. SIGTERM: graceful handover ------------------------------------------------------------
stop_start=$(date +%s.%N)
pm stop -t "$STOP_TIMEOUT" "$leader" >/dev/null
stop_took=$(elapsed "$stop_start")
code=$(podman inspect "$leader" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "$leader exited with $code after SIGTERM, expected 0"
awk -v t="$stop_took" 'BEGIN { exit !(t < 10) }' \
  || fail "podman stop took ${stop_took}s: SIGTERM was not handled (PID 1 ignores it without a handler)"
logs_have "$leader" "received: shutting down gracefully" \
  || fail "$leader did not log its SIGTERM handling"
wait_code "${PORT[$follower]}" /leader 200 2 || fail "$follower did not take over within 2s of the stop"
takeover=$(elapsed "$stop_start")
log "SIGTERM: $leader exited 0 in ${stop_took}s; $follower leads ${takeover}s after the stop began"
step_done "SIGTERM handover (stop ${stop_took}s, takeover ${takeover}s)"

# -- 6. SIGKILL: the kernel drops the flock, the restarted replica takes over ------------------
pm start "$leader" >/dev/null
wait_code "${PORT[$leader]}" /readyz 200 60 || fail "$leader: not ready after restart"
kill_start=$(date +%s.%N)
pm kill --signal KILL "$follower" >/dev/null
wait_code "${PORT[$leader]}" /leader 200 3 || fail "$leader did not take over within 3s of SIGKILL"
log "SIGKILL: $leader leads $(elapsed "$kill_start")s after $follower was killed"
step_done "SIGKILL takeover ($(elapsed "$kill_start")s)"

# -- 7. the last replica stops: nobody holds the election --------------------------------------
pm stop -t "$STOP_TIMEOUT" "$leader" >/dev/null
[ "$(podman inspect "$leader" --format '{{.State.ExitCode}}')" = 0 ] || fail "$leader did not exit 0"
if status_json >"$WORK/status.json"; then
  fail "lock still held after both replicas stopped: $(cat "$WORK/status.json")"
fi
grep -q '"leader": null' "$WORK/status.json" || fail "unexpected status: $(cat "$WORK/status.json")"
step_done "lock released (status: no leader)"

printf '\nimage-smoke: all checks passed\n'
printf '  %s\n' "${TIMINGS[@]}"
printf '  %-52s %7ss\n' "total" "$(elapsed "$START")"
