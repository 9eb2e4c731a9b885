"""Per-job mode with real `leadercron run` processes on every backend.

Three replicas run three jobs; each fire must run on exactly one replica (at most once, and
none lost while the replicas are up), the runs must spread over the replicas, and a replica
killed with ``kill -9`` while it holds a job's lock must not keep the others from later fires.
"""

from __future__ import annotations

import collections
import itertools
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leadercron.errors import ConfigError
from tests.conftest import BackendCase, wait_until
from tests.e2e.harness import parse_fire, spawn

pytestmark = pytest.mark.slow

JOBS = ("a", "b", "c")


def rows(path: Path) -> list[tuple[str, str, datetime, int, float]]:
    """(identity, job, fire, term, wall-clock start) per recorded run."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:
            identity, job, fire, term, started = parts
            found.append(
                (identity, job, parse_fire(fire).replace(tzinfo=UTC), int(term), float(started))
            )
    return found


def test_per_job_mode_runs_each_fire_once_and_survives_a_killed_holder(
    backend_case: BackendCase, tmp_path: Path, python_env: dict[str, str], election: str
) -> None:
    if not backend_case.multiprocess:
        pytest.skip("the memory backend lives in one process")
    lock_ttl = max(1.0, backend_case.ttl)
    try:  # the shortest lock ttl the backend takes (a ZooKeeper server has a minimum session)
        backend_case.make().validate_timing(
            ttl=lock_ttl, renew_deadline=lock_ttl * 2 / 3, retry_period=lock_ttl / 3
        )
    except ConfigError:
        lock_ttl *= 2
    interval = lock_ttl + 1.0
    runs = tmp_path / "runs.txt"
    jobs = "".join(
        f"""
  - id: {job}
    interval: {interval}s
    func: tests.jobs:record_job
    args: ["{runs}", 0.4]"""
        for job in JOBS
    )
    config = tmp_path / "per-job.yaml"
    config.write_text(
        f"""
mode: per-job
election:
  name: {election}
  backend: "{backend_case.base_url}"
scheduler:
  lock_ttl: {lock_ttl}s
  grace_period: 5s
jobs:{jobs}
"""
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for identity in ("r1", "r2", "r3"):
            procs[identity] = spawn(config, identity, tmp_path, python_env)
        assert wait_until(lambda: len(rows(runs)) >= 9, 60, interval=0.05), "too few runs"
        # Kill a replica while it holds a lock (right after it started a run).
        victim = None
        deadline = time.monotonic() + 30
        while victim is None and time.monotonic() < deadline:
            recent = [r for r in rows(runs) if time.time() - r[4] < 0.2]
            if recent:
                victim = recent[-1][0]
            else:
                time.sleep(0.02)
        assert victim is not None
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        killed_at = datetime.now(UTC)
        after = killed_at + timedelta(seconds=lock_ttl + 0.5)
        assert wait_until(
            lambda: sum(1 for r in rows(runs) if r[2] > after + timedelta(seconds=interval)) >= 6,
            8 * interval + 30,
            interval=0.1,
        ), "the survivors stopped running jobs after the kill"
        for identity, proc in procs.items():
            if identity != victim:
                proc.send_signal(signal.SIGTERM)
        for identity, proc in procs.items():
            assert proc.wait(30) == 0 or identity == victim
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    recorded = rows(runs)
    fires = collections.Counter((job, fire) for _, job, fire, _, _ in recorded)
    twice = {key: n for key, n in fires.items() if n > 1}
    assert not twice, f"fires run more than once: {twice}"
    assert len({identity for identity, *_ in recorded}) >= 2, "the runs did not spread"
    for job in JOBS:
        times = sorted(fire for j, fire in fires if j == job)
        # While every replica is up, and again once the dead holder's lock has expired, every
        # fire runs: consecutive fires are one interval apart.
        before = [t for t in times if t < killed_at - timedelta(seconds=interval)]
        later = [t for t in times if t > after]
        for part in (before, later):
            gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(part)}
            assert gaps <= {interval}, (job, sorted(gaps), procs.keys())
        assert len(later) >= 2, (job, later)
    # Tokens of one job's lock grow with every acquisition.
    for job in JOBS:
        tokens = [term for _, j, _, term, _ in sorted(recorded, key=lambda r: r[2]) if j == job]
        assert tokens == sorted(tokens), (job, tokens)
        assert len(set(tokens)) == len(tokens), (job, tokens)
