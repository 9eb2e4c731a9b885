"""Three `leadercron run` processes on the file backend: one leader, failover, handover."""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadercron.backends.file import FileBackend
from tests.conftest import PYTHON, wait_until

pytestmark = pytest.mark.slow

TTL = 3.0


class Replicas:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp = tmp_path
        self.env = env
        self.lock = tmp_path / "e2e.lock"
        self.runs = tmp_path / "runs.txt"
        self.config = tmp_path / "leadercron.yaml"
        self.config.write_text(
            f"""
election:
  name: e2e
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
    command: ["sh", "-c", "echo \\"$LEADERCRON_IDENTITY $LEADERCRON_SCHEDULED_TIME $LEADERCRON_TERM\\" >> {self.runs}"]
  - id: pytick
    interval: 1s
    func: tests.jobs:record
    args: ["{self.tmp / "pyruns.txt"}"]
"""
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.backend = FileBackend(self.lock)

    def start(self, identity: str) -> None:
        log = open(self.tmp / f"{identity}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[identity] = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "leadercron",
                "run",
                "--config",
                str(self.config),
                "--identity",
                identity,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    def leader(self) -> str | None:
        info = self.backend.leader("e2e")
        return None if info is None else info.identity

    def run_lines(self, path: Path | None = None) -> list[tuple[str, str, int]]:
        path = path or self.runs
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            identity, scheduled, term = line.split()
            rows.append((identity, scheduled, int(term)))
        return rows

    def log(self, identity: str) -> str:
        return (self.tmp / f"{identity}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def replicas(tmp_path: Path, python_env: dict[str, str]) -> Iterator[Replicas]:
    r = Replicas(tmp_path, python_env)
    yield r
    r.stop_all()


def assert_no_fire_twice(rows: list[tuple[str, str, int]]) -> None:
    counts = collections.Counter(scheduled for _, scheduled, _ in rows)
    twice = {s: n for s, n in counts.items() if n > 1}
    assert not twice, f"scheduled times run more than once: {twice}"


def test_one_leader_failover_and_handover(replicas: Replicas) -> None:
    for name in ("r1", "r2", "r3"):
        replicas.start(name)
    assert wait_until(lambda: replicas.leader() is not None, 15)
    first = replicas.leader()
    assert first is not None
    assert wait_until(lambda: len(replicas.run_lines()) >= 6, 15)
    time.sleep(1.0)
    assert {identity for identity, _, _ in replicas.run_lines()} == {first}

    # kill -9 the leader: another replica leads within ttl + 1s.
    replicas.procs[first].kill()
    killed_at = time.monotonic()
    assert wait_until(lambda: replicas.leader() not in (None, first), TTL + 1.0, interval=0.01)
    crash_takeover = time.monotonic() - killed_at
    second = replicas.leader()
    assert second is not None
    assert crash_takeover < TTL + 1.0
    assert wait_until(lambda: any(i == second for i, _, _ in replicas.run_lines()), 10)

    # SIGTERM the new leader: the last replica leads within 1s.
    replicas.procs[second].send_signal(signal.SIGTERM)
    termed_at = time.monotonic()
    assert wait_until(
        lambda: replicas.leader() not in (None, first, second), 1.0, interval=0.005
    ), f"no handover within 1s of SIGTERM (leader: {replicas.leader()})"
    handover = time.monotonic() - termed_at
    third = replicas.leader()
    assert handover < 1.0
    assert replicas.procs[second].wait(timeout=10) == 0
    assert wait_until(lambda: any(i == third for i, _, _ in replicas.run_lines()), 10)
    time.sleep(1.5)

    rows = replicas.run_lines()
    assert_no_fire_twice(rows)
    assert_no_fire_twice(replicas.run_lines(replicas.tmp / "pyruns.txt"))
    # Terms strictly increase from one leader to the next.
    terms = {identity: term for identity, _, term in rows}
    assert terms[first] < terms[second] < terms[third]
    # Every line the replicas logged about leadership names identity, election, term, reason.
    transitions = [
        line
        for line in replicas.log(second).splitlines()
        if "leadercron.elector" in line and "->" in line
    ]
    assert any("follower -> leader" in t for t in transitions)
    assert any("leader -> stepping-down" in t and "reason=shutdown" in t for t in transitions)
    print(f"crash takeover {crash_takeover:.3f}s, graceful handover {handover:.3f}s")


def test_sigterm_waits_for_running_jobs_then_releases(
    tmp_path: Path, python_env: dict[str, str]
) -> None:
    lock = tmp_path / "grace.lock"
    marker = tmp_path / "done.txt"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
election: {{name: grace, backend: "file://{lock}", ttl: 3s, renew_deadline: 2s, retry_period: 500ms}}
scheduler: {{grace_period: 10s}}
jobs:
  - id: slow
    interval: 1s
    command: ["sh", "-c", "touch {tmp_path / "started"}; sleep 1.5; echo done >> {marker}"]
"""
    )
    proc = subprocess.Popen(
        [PYTHON, "-m", "leadercron", "run", "-c", str(config), "--identity", "solo"],
        stderr=subprocess.PIPE,
        env=python_env,
    )
    try:
        backend = FileBackend(lock)
        assert wait_until(lambda: backend.leader("grace") is not None, 10)
        # Wait until a run is in flight, then ask for shutdown.
        assert wait_until((tmp_path / "started").exists, 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert marker.exists(), "the running job was not allowed to finish"
        assert backend.leader("grace") is None, "the lease was not released on shutdown"
    finally:
        proc.kill()
        proc.wait()
