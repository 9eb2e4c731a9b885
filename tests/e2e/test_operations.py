"""Three `leadercron run` processes on the file backend, each with its own HTTP listener.

Exactly one reports itself leader on /metrics and /leader; every one is live and ready; /status
agrees on who leads. After `kill -9` of the leader another one reports itself leader within
ttl + 1s, and the endpoints follow.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until
from tests.e2e.harness import spawn

pytestmark = pytest.mark.slow

TTL = 3.0
NAMES = ("r1", "r2", "r3")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[int, bytes] | None:
    """``(status, body)``, or ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class Cluster:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp = tmp_path
        self.env = env
        self.lock = tmp_path / "ops.lock"
        self.config = tmp_path / "leadercron.yaml"
        self.config.write_text(
            f"""
election:
  name: ops
  backend: file://{self.lock}
  ttl: {TTL}s
  renew_deadline: 2s
  retry_period: 500ms
scheduler:
  misfire_grace_time: 5s
  grace_period: 5s
jobs:
  - id: tick
    interval: 500ms
    command: ["true"]
  - id: pytick
    interval: 1s
    func: tests.jobs:record
    args: ["{tmp_path / "pyruns.txt"}"]
"""
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}

    def start(self, identity: str) -> None:
        port = free_port()
        self.urls[identity] = f"http://127.0.0.1:{port}"
        self.procs[identity] = spawn(
            self.config, identity, self.tmp, self.env, "--http-listen", f"127.0.0.1:{port}"
        )

    def get(self, identity: str, path: str) -> tuple[int, bytes] | None:
        return fetch(self.urls[identity] + path)

    def status_code(self, identity: str, path: str) -> int | None:
        answer = self.get(identity, path)
        return None if answer is None else answer[0]

    def metric(self, identity: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
        answer = self.get(identity, "/metrics")
        assert answer is not None, f"{identity} does not answer /metrics"
        assert answer[0] == 200
        found = {}
        for family in text_string_to_metric_families(answer[1].decode()):
            for sample in family.samples:
                if sample.name == name:
                    found[frozenset(sample.labels.items())] = sample.value
        return found

    def is_leader(self, identity: str) -> float | None:
        answer = self.get(identity, "/metrics")
        if answer is None or answer[0] != 200:
            return None
        line = f'leadercron_is_leader{{election="ops",identity="{identity}"}} '
        for text in answer[1].decode().splitlines():
            if text.startswith(line):
                return float(text[len(line) :])
        raise AssertionError(f"{identity}: no {line!r} in /metrics")

    def leaders(self, names: tuple[str, ...]) -> list[str]:
        return [name for name in names if self.is_leader(name) == 1]

    def status(self, identity: str) -> dict[str, Any]:
        answer = self.get(identity, "/status")
        assert answer is not None
        assert answer[0] == 200
        return json.loads(answer[1])  # type: ignore[no-any-return]

    def log(self, identity: str) -> str:
        return (self.tmp / f"{identity}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def cluster(tmp_path: Path, python_env: dict[str, str]) -> Iterator[Cluster]:
    c = Cluster(tmp_path, python_env)
    yield c
    c.stop_all()


def check_endpoints(cluster: Cluster, leader: str, followers: tuple[str, ...]) -> None:
    everyone = (leader, *followers)
    assert cluster.is_leader(leader) == 1
    for name in followers:
        assert cluster.is_leader(name) == 0, cluster.log(name)
    assert cluster.status_code(leader, "/leader") == 200
    for name in followers:
        assert cluster.status_code(name, "/leader") == 503
    for name in everyone:
        assert cluster.status_code(name, "/healthz") == 200, cluster.log(name)
        assert cluster.status_code(name, "/readyz") == 200, cluster.log(name)


def check_status(cluster: Cluster, leader: str, followers: tuple[str, ...]) -> int:
    """Check /status everywhere; return the leader's term."""
    status = cluster.status(leader)
    term = status["term"]
    assert isinstance(term, int)
    assert term >= 1
    assert status["state"] == "leader"
    assert status["role"] == "leader"
    assert status["is_leader"] is True
    assert status["leader_since"] is not None
    assert status["last_renew"] is not None
    for name in (leader, *followers):
        status = cluster.status(name)
        assert status["identity"] == name
        assert status["election"] == "ops"
        assert status["backend"] == {"kind": "file", "url": f"file://{cluster.lock}"}
        assert status["ready"] is True
        assert status["backend_up"] is True
        assert status["leader"] == {"identity": leader, "term": term}, (name, status)
        assert {job["id"] for job in status["jobs"]} == {"tick", "pytick"}
        for job in status["jobs"]:
            assert job["next_fire_time"].endswith("Z")
        if name != leader:
            assert status["role"] == "follower"
            assert status["is_leader"] is False
            assert status["term"] is None
    return term


def test_metrics_and_health_across_a_crash(cluster: Cluster) -> None:
    for name in NAMES:
        cluster.start(name)
    for name in NAMES:
        assert wait_until(lambda n=name: cluster.status_code(n, "/readyz") == 200, 30), cluster.log(
            name
        )
    assert wait_until(lambda: len(cluster.leaders(NAMES)) == 1, 15)
    # Steady state: the same single leader on every look.
    (first,) = cluster.leaders(NAMES)
    followers = tuple(n for n in NAMES if n != first)
    for _ in range(3):
        check_endpoints(cluster, first, followers)
    assert wait_until(
        lambda: all(cluster.status(n)["leader"] is not None for n in NAMES), 10, interval=0.1
    )
    first_term = check_status(cluster, first, followers)
    # The leader runs the jobs and counts them; its /status shows the outcomes.
    assert wait_until(
        lambda: {j["last_outcome"] for j in cluster.status(first)["jobs"]} == {"success"},
        10,
        interval=0.1,
    )
    runs = cluster.metric(first, "leadercron_job_runs_total")
    tick = {"election": "ops", "identity": first, "job": "tick", "outcome": "success"}
    assert runs[frozenset(tick.items())] >= 1
    transitions = cluster.metric(first, "leadercron_leader_transitions_total")
    assert list(transitions.values()) == [1.0]
    for name in followers:
        assert set(cluster.metric(name, "leadercron_leader_transitions_total").values()) == {0.0}

    if shutil.which("promtool"):
        answer = cluster.get(first, "/metrics")
        assert answer is not None
        result = subprocess.run(
            ["promtool", "check", "metrics"],
            input=answer[1],
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, (result.stdout + result.stderr).decode()

    # kill -9 the leader: another replica reports itself leader within ttl + 1s.
    cluster.procs[first].kill()
    cluster.procs[first].wait()
    killed_at = time.monotonic()
    assert wait_until(lambda: len(cluster.leaders(followers)) == 1, TTL + 1.0, interval=0.02)
    takeover = time.monotonic() - killed_at
    assert takeover < TTL + 1.0
    (second,) = cluster.leaders(followers)
    rest = tuple(n for n in followers if n != second)

    assert cluster.get(first, "/healthz") is None  # the killed replica answers nothing
    for _ in range(3):
        check_endpoints(cluster, second, rest)
    assert wait_until(
        lambda: all(cluster.status(n)["leader"]["identity"] == second for n in followers),
        10,
        interval=0.1,
    )
    second_term = check_status(cluster, second, rest)
    assert second_term > first_term
    transitions = cluster.metric(second, "leadercron_leader_transitions_total")
    assert list(transitions.values()) == [1.0]
    campaigns = cluster.metric(second, "leadercron_campaign_duration_seconds_count")
    assert list(campaigns.values()) == [1.0]
    print(f"takeover seen on /metrics {takeover:.3f}s after kill -9")
