#!/usr/bin/env bash
# Installs the real servers and native tools that the backend tests start on
# free loopback ports: etcd (+ etcdctl), ZooKeeper, Consul (+ the consul CLI),
# Redis and PostgreSQL, plus promtool. Debian/Ubuntu only; needs root.
# Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
[ -x /usr/share/zookeeper/bin/zkServer.sh ] || need+=(zookeeper)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

if ! command -v apt-get >/dev/null 2>&1; then
  if [ ${#need[@]} -gt 0 ] || ! command -v consul >/dev/null 2>&1; then
    echo "install-servers: no apt-get here; install these yourself: ${need[*]} consul" >&2
    exit 1
  fi
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

if ! command -v consul >/dev/null 2>&1; then
  # Debian bookworm ships no consul; bullseye's 1.8.7 runs on bookworm.
  if ! apt-cache policy consul 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
    printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
      | $SUDO tee /etc/apt/sources.list.d/leadercron-bullseye.sources >/dev/null
    printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' \
      | $SUDO tee /etc/apt/preferences.d/leadercron-bullseye >/dev/null
  fi
  need+=(consul)
fi

if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  # consul comes from bullseye; everything else from the default suite.
  pkgs=()
  for p in "${need[@]}"; do [ "$p" = consul ] || pkgs+=("$p"); done
  if [ ${#pkgs[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  if printf '%s\n' "${need[@]}" | grep -qx consul; then
    $SUDO apt-get install -y -qq --no-install-recommends -t bullseye consul >/dev/null
  fi
fi

# Debian's packages may start their own services on default ports; the tests
# start their own instances on free ports, so stop the packaged ones we added.
for svc in etcd zookeeper consul prometheus; do
  if command -v service >/dev/null 2>&1; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
done
pkill -x etcd >/dev/null 2>&1 || true
echo "install-servers: etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}'), consul $(consul version 2>/dev/null | head -1 | awk '{print $2}'), redis $(redis-server --version | awk '{print $3}'), zookeeper $(ls /usr/share/java 2>/dev/null | grep -o "^zookeeper-[0-9.]*[0-9]" | head -1)"
