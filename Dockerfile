# leadercron container image.
#
#   podman build --format docker -t leadercron .                 # every backend (EXTRAS=all)
#   podman build --format docker --build-arg EXTRAS=etcd -t leadercron:etcd .
#   podman build --format docker --build-arg EXTRAS= -t leadercron:file .   # file + memory only
#
# BASE_IMAGE must provide python3 (>= 3.11) with the venv module; scripts/image-smoke.sh passes
# a Debian bookworm image made locally with debootstrap when no registry is reachable.
# `--format docker` keeps the HEALTHCHECK (the OCI image format has no such field).
#
# At run time the image writes nothing outside /tmp (PYTHONDONTWRITEBYTECODE, HOME=/tmp), so it
# runs with a read-only root filesystem; the config file is expected at
# /etc/leadercron/config.yaml (mount it there, or set LEADERCRON_CONFIG).

ARG BASE_IMAGE=python:3.11-slim

# -- build: a virtualenv with leadercron and the chosen extras ---------------------------------
FROM ${BASE_IMAGE} AS build
ARG EXTRAS=all
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/leadercron
COPY pyproject.toml README.md ./
# Dependencies first, in a layer of their own (installed with an empty stand-in package), so a
# change to the source alone does not reinstall them. Byte-code is compiled here, at build
# time, so nothing needs to be written at run time.
RUN if [ -n "${EXTRAS}" ]; then spec=".[${EXTRAS}]"; else spec="."; fi \
    && mkdir leadercron && touch leadercron/__init__.py \
    && /opt/leadercron/bin/python -m pip install --no-cache-dir "${spec}" \
    && /opt/leadercron/bin/python -m pip uninstall --yes leadercron \
    && rm -rf leadercron build ./*.egg-info
COPY leadercron ./leadercron
RUN /opt/leadercron/bin/python -m pip install --no-cache-dir --no-deps . \
    && /opt/leadercron/bin/leadercron --version

# -- runtime ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG EXTRAS=all
LABEL org.opencontainers.image.title="leadercron" \
      org.opencontainers.image.description="Leader-elected APScheduler: scheduled jobs run on exactly one of several replicas" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.leadercron.extras="${EXTRAS}"

# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it without runAsUser.
RUN groupadd --gid 10001 leadercron \
    && useradd --no-log-init --uid 10001 --gid 10001 \
       --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin leadercron \
    && mkdir -p /etc/leadercron

COPY --from=build /opt/leadercron /opt/leadercron

ENV PATH=/opt/leadercron/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8 \
    HOME=/tmp \
    LEADERCRON_CONFIG=/etc/leadercron/config.yaml \
    LEADERCRON_HEALTHCHECK_URL=http://127.0.0.1:9464/healthz

USER 10001:10001
WORKDIR /tmp
EXPOSE 9464

# Liveness over the http listener (`http.listen: 0.0.0.0:9464` in the config); stdlib only.
# Another listen address: set LEADERCRON_HEALTHCHECK_URL. Kubernetes ignores HEALTHCHECK and
# uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['LEADERCRON_HEALTHCHECK_URL'], timeout=4).status == 200 else 1)"]

# leadercron is PID 1: it installs SIGTERM/SIGINT handlers, so `podman stop` / a pod deletion
# stops dispatching, lets running jobs finish for scheduler.grace_period, releases the lease
# (a follower takes over at once) and exits 0. A second signal cancels running jobs.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/leadercron/bin/leadercron"]
CMD ["run"]
