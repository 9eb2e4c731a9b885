"""Every fire at most once across replicas, under SIGSTOP, kill -9 and a paused backend.

Each test runs real `leadercron run` processes on one backend (the file backend and every
server backend) with a 1 s interval job that records which replica ran which fire.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leadercron.term import format_time
from tests.conftest import BackendCase, wait_until
from tests.e2e.harness import Replicas, fires_run_twice, parse_fire

pytestmark = pytest.mark.slow


def timing(case: BackendCase) -> dict[str, float]:
    ttl = max(3.0, 2 * case.ttl)
    return {"ttl": ttl, "renew_deadline": round(ttl * 2 / 3, 3), "retry_period": round(ttl / 6, 3)}


def make(
    case: BackendCase, tmp_path: Path, env: dict[str, str], election: str, **kw: object
) -> Replicas:
    if not case.multiprocess:
        pytest.skip("the memory backend lives in one process")
    probe = case.make()
    if not probe.supports_claims:
        pytest.skip(f"{case.name} has no fenced claims yet")
    return Replicas(tmp_path, env, case.base_url, election=election, **timing(case), **kw)  # type: ignore[arg-type]


@pytest.fixture
def cleanup() -> Iterator[list[Replicas]]:
    made: list[Replicas] = []
    yield made
    for replicas in made:
        replicas.stop_all()


def wait_for_leader(
    replicas: Replicas, timeout: float, not_in: tuple[str | None, ...] = (None,)
) -> str:
    assert wait_until(lambda: replicas.leader() not in not_in, timeout, interval=0.02)
    leader = replicas.leader()
    assert leader is not None
    return leader


def test_a_stopped_leader_runs_nothing_when_it_wakes(
    backend_case: BackendCase,
    tmp_path: Path,
    python_env: dict[str, str],
    election: str,
    cleanup: list[Replicas],
) -> None:
    if not backend_case.make().supports_expiry:
        pytest.skip(f"{backend_case.name}: a stopped but connected holder keeps its term")
    replicas = make(backend_case, tmp_path, python_env, election)
    cleanup.append(replicas)
    t = timing(backend_case)
    for name in ("r1", "r2", "r3"):
        replicas.start(name)
    first = wait_for_leader(replicas, 30)
    assert wait_until(lambda: any(i == first for i, *_ in replicas.rows()), 15)
    old_term = max(term for i, _, term, _ in replicas.rows() if i == first)
    replicas.signal(first, signal.SIGSTOP)
    stopped_at = time.time()
    second = wait_for_leader(replicas, 2 * t["ttl"] + 5, not_in=(None, first))
    time.sleep(max(0.0, 2 * t["ttl"] + 1 - (time.time() - stopped_at)))
    replicas.signal(first, signal.SIGCONT)
    time.sleep(t["ttl"] + 2)
    rows = replicas.rows()
    assert not fires_run_twice(rows), fires_run_twice(rows)
    # Nothing the woken replica ran after its stop belongs to its old term.
    stale = [r for r in rows if r[0] == first and r[3] > stopped_at and r[2] <= old_term]
    assert not stale, f"the stopped leader ran under its old term after waking: {stale}"
    assert any(i == second for i, *_ in rows)


def test_kill_9_cycles_run_every_fire_exactly_once(
    backend_case: BackendCase,
    tmp_path: Path,
    python_env: dict[str, str],
    election: str,
    cleanup: list[Replicas],
) -> None:
    replicas = make(backend_case, tmp_path, python_env, election, coalesce=False)
    cleanup.append(replicas)
    t = timing(backend_case)
    names = ("r1", "r2", "r3")
    for name in names:
        replicas.start(name)
    leader = wait_for_leader(replicas, 30)
    assert wait_until(lambda: len(replicas.rows()) >= 2, 15)
    kills: list[tuple[str, datetime]] = []
    for _ in range(10):
        # Kill between two fires (at x.5 s), when the leader is not normally in the middle of a
        # claim: a replica killed after its claim and before its job starts loses that fire,
        # the one loss the guarantee allows (docs/concepts.md).
        time.sleep((0.5 - time.time() % 1.0) % 1.0)
        replicas.kill(leader)
        kills.append((leader, datetime.now(UTC).replace(tzinfo=None)))
        new_leader = wait_for_leader(replicas, t["ttl"] + 5, not_in=(None, leader))
        # The new leader has caught up with the fires that fell due during the failover.
        assert wait_until(lambda who=new_leader: any(i == who for i, *_ in replicas.rows()), 15)
        replicas.start(leader)
        leader = new_leader
        time.sleep(0.5)
    time.sleep(2.0)
    rows = replicas.rows()
    assert not fires_run_twice(rows), fires_run_twice(rows)
    fires = sorted(parse_fire(f) for _, f, _, _ in rows)
    # Within the grace window every 1 s fire from the first to the last ran — except a fire
    # that a killed leader had claimed and not yet started: claimed (a later leader's claim of
    # it was refused, or its catch-up found it as the last claimed fire), never run, and a
    # leader was killed within a second after it.
    logs = "".join(replicas.log(name) for name in names)
    missing = [
        earlier + timedelta(seconds=k)
        for earlier, later in itertools.pairwise(fires)
        for k in range(1, round((later - earlier).total_seconds()))
    ]
    for fire in missing:
        text = format_time(fire.replace(tzinfo=UTC))
        claimed = (
            f"skipped job=tick scheduled={text}: claim rejected" in logs
            or f"(last claimed {text})" in logs
        )
        killed_then = any(timedelta(0) <= at - fire < timedelta(seconds=1) for _, at in kills)
        assert claimed, f"fire {text} never ran and nobody claimed it; kills: {kills}"
        assert killed_then, f"fire {text} was claimed, never ran, no kill near it: {kills}"
    assert len(missing) <= 1, f"more than one fire lost in 10 kills: {missing}"
    assert len({i for i, *_ in rows}) >= 2


def test_coalesce_folds_the_fires_missed_during_a_failover(
    backend_case: BackendCase,
    tmp_path: Path,
    python_env: dict[str, str],
    election: str,
    cleanup: list[Replicas],
) -> None:
    replicas = make(backend_case, tmp_path, python_env, election, coalesce=True)
    cleanup.append(replicas)
    replicas.start("r1")
    assert wait_for_leader(replicas, 30) == "r1"
    assert wait_until(lambda: len(replicas.rows()) >= 1, 15)
    replicas.kill("r1")
    time.sleep(3.2)  # at least three fires fall due with nobody leading
    replicas.start("r2")
    assert wait_for_leader(replicas, 30, not_in=(None, "r1")) == "r2"
    assert wait_until(lambda: any(i == "r2" for i, *_ in replicas.rows()), 15)
    time.sleep(0.3)
    rows = replicas.rows()
    last_r1 = max(parse_fire(f) for i, f, _, _ in rows if i == "r1")
    first_by_r2 = min(parse_fire(f) for i, f, _, _ in rows if i == "r2")
    # One run stood in for all the fires missed while nobody led (coalesce): the fires between
    # r1's last and r2's first never ran one by one, unlike with coalesce off (test above).
    assert first_by_r2 - last_r1 >= timedelta(seconds=3), (last_r1, first_by_r2)
    assert not fires_run_twice(rows)


@contextmanager
def _paused_file_backend(case: BackendCase) -> Iterator[None]:
    """The file backend has no server: holding its mutex makes every operation time out."""
    path = case.base_url.removeprefix("file://").split("?")[0]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


@contextmanager
def paused(case: BackendCase) -> Iterator[None]:
    if case.server is None:
        with _paused_file_backend(case):
            yield
        return
    case.server.pause()
    try:
        yield
    finally:
        case.server.resume()


def test_paused_backend_stops_dispatch_by_the_renew_deadline(
    backend_case: BackendCase,
    tmp_path: Path,
    python_env: dict[str, str],
    election: str,
    cleanup: list[Replicas],
    fresh_case: Callable[[str], BackendCase],
) -> None:
    # A server of its own, since this test pauses it.
    case = backend_case if backend_case.server is None else fresh_case(backend_case.name)
    replicas = make(case, tmp_path, python_env, election, interval="200ms")
    cleanup.append(replicas)
    t = timing(case)
    for name in ("r1", "r2"):
        replicas.start(name)
    wait_for_leader(replicas, 30)
    assert wait_until(lambda: len(replicas.rows()) >= 3, 15)
    with paused(case):
        paused_at = time.time()
        time.sleep(t["ttl"] + 1)
        late = [r for r in replicas.rows() if r[3] > paused_at + t["renew_deadline"]]
    assert not late, f"jobs started after the renew deadline while the backend was paused: {late}"
    resumed_at = time.time()
    assert wait_until(lambda: any(r[3] > resumed_at for r in replicas.rows()), 60)
    time.sleep(t["ttl"])
    after = [r for r in replicas.rows() if r[3] > resumed_at]
    terms = {(i, term) for i, _, term, _ in after}
    assert len({term for _, term in terms}) == len(terms), "one term, one replica"
    assert not fires_run_twice(replicas.rows())
