"""Three `leadercron run` processes on the file backend: one leader, failover, handover."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadercron.backends.file import FileBackend
from tests.conftest import PYTHON, wait_until
from tests.e2e.harness import Replicas, fires_run_twice

pytestmark = pytest.mark.slow

TTL = 3.0


@pytest.fixture
def replicas(tmp_path: Path, python_env: dict[str, str]) -> Iterator[Replicas]:
    cmd_runs = tmp_path / "cmdruns.txt"
    line = "$LEADERCRON_IDENTITY $LEADERCRON_SCHEDULED_TIME $LEADERCRON_TERM $(date +%s.%N)"
    r = Replicas(
        tmp_path,
        python_env,
        f"file://{tmp_path / 'e2e.lock'}",
        election="e2e",
        ttl=TTL,
        renew_deadline=2.0,
        retry_period=0.5,
        interval="500ms",
        extra_jobs=f"""  - id: cmd
    interval: 1s
    command: ["sh", "-c", "echo \\"{line}\\" >> {cmd_runs}"]
""",
    )
    yield r
    r.stop_all()


def assert_no_fire_twice(rows: list[tuple[str, str, int, float]]) -> None:
    twice = fires_run_twice(rows)
    assert not twice, f"scheduled times run more than once: {twice}"


def test_one_leader_failover_and_handover(replicas: Replicas) -> None:
    for name in ("r1", "r2", "r3"):
        replicas.start(name)
    assert wait_until(lambda: replicas.leader() is not None, 15)
    first = replicas.leader()
    assert first is not None
    assert wait_until(lambda: len(replicas.rows()) >= 6, 15)
    time.sleep(1.0)
    assert {identity for identity, _, _, _ in replicas.rows()} == {first}

    # kill -9 the leader: another replica leads within ttl + 1s.
    replicas.procs[first].kill()
    killed_at = time.monotonic()
    assert wait_until(lambda: replicas.leader() not in (None, first), TTL + 1.0, interval=0.01)
    crash_takeover = time.monotonic() - killed_at
    second = replicas.leader()
    assert second is not None
    assert crash_takeover < TTL + 1.0
    assert wait_until(lambda: any(i == second for i, _, _, _ in replicas.rows()), 10)

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
    assert wait_until(lambda: any(i == third for i, _, _, _ in replicas.rows()), 10)
    time.sleep(1.5)

    rows = replicas.rows()
    assert_no_fire_twice(rows)
    assert_no_fire_twice(replicas.rows(replicas.tmp / "cmdruns.txt"))
    # Terms strictly increase from one leader to the next.
    terms = {identity: term for identity, _, term, _ in rows}
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
