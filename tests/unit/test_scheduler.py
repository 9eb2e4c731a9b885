"""LeaderScheduler: dispatch guard, anchored intervals, on_lost, shutdown, asyncio."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler

from leadercron import current_run, current_term
from leadercron.backends.memory import MemoryBackend
from leadercron.config import build
from leadercron.elector import Elector
from leadercron.errors import ConfigError
from leadercron.scheduler import LeaderScheduler
from leadercron.service import make_trigger
from tests.conftest import wait_until

TIMING = {"ttl": 1.5, "renew_deadline": 1.0, "retry_period": 0.2}


class Cluster:
    def __init__(self) -> None:
        self.store = uuid.uuid4().hex
        self.runs: list[tuple[str, datetime, int]] = []
        self.lock = threading.Lock()
        self.members: list[LeaderScheduler] = []

    def record(self) -> None:
        run = current_run()
        assert run is not None
        with self.lock:
            self.runs.append((run.term.identity, run.scheduled_time, run.term.token))

    def member(self, identity: str, *, on_lost: str = "finish") -> LeaderScheduler:
        elector = Elector(MemoryBackend(self.store), election="jobs", identity=identity, **TIMING)
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"misfire_grace_time": 5})
        member = LeaderScheduler(scheduler, elector, on_lost=on_lost)  # type: ignore[arg-type]
        self.members.append(member)
        return member

    def shutdown(self) -> None:
        for member in self.members:
            if member.scheduler.running:
                member.shutdown(0.5)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.shutdown()


def test_only_the_leader_runs_and_handover_runs_no_fire_twice(cluster: Cluster) -> None:
    a, b = cluster.member("a"), cluster.member("b")
    for member in (a, b):
        member.add_job(cluster.record, "interval", seconds=0.2, id="tick")
        member.start()
    assert wait_until(lambda: len(cluster.runs) >= 5, 10)
    leader = "a" if a.elector.is_leader() else "b"
    assert {identity for identity, _, _ in cluster.runs} == {leader}
    (a if leader == "a" else b).shutdown(2.0)
    follower = "b" if leader == "a" else "a"
    assert wait_until(lambda: any(i == follower for i, _, _ in cluster.runs), 5)
    fires = [scheduled for _, scheduled, _ in cluster.runs]
    assert len(fires) == len(set(fires)), "a fire time ran twice"
    tokens = {identity: token for identity, _, token in cluster.runs}
    assert tokens[follower] > tokens[leader]


def test_guard_stops_runs_when_not_leading_even_if_the_scheduler_runs(cluster: Cluster) -> None:
    member = cluster.member("a")
    member.add_job(cluster.record, "interval", seconds=0.1, id="tick")
    member.start()
    assert wait_until(lambda: len(cluster.runs) >= 2, 10)
    # Take the election away behind the elector's back, then force the scheduler to run:
    # the dispatch guard alone must keep jobs from starting once the local lease is gone.
    member.elector.stop(release=True, timeout=5)
    member.scheduler.resume()
    count = len(cluster.runs)
    time.sleep(0.6)
    assert len(cluster.runs) == count
    assert member.outcomes["tick"][0] == "skipped"


def test_missed_fires_after_a_pause_do_not_run_without_leadership(cluster: Cluster) -> None:
    member = cluster.member("a")
    member.add_job(cluster.record, "interval", seconds=0.1, id="tick")
    member.scheduler.start(paused=True)  # never elected: the elector is not started
    time.sleep(0.5)
    member.scheduler.resume()  # APScheduler now fires the missed runs at once
    time.sleep(0.5)
    assert cluster.runs == []
    assert member.outcomes["tick"][0] == "skipped"


def test_interval_fire_times_agree_across_replicas_started_apart() -> None:
    config = build(
        {
            "election": {"name": "x"},
            "jobs": [{"id": "j", "interval": "7s", "command": ["true"]}],
        }
    )
    first = make_trigger(config.jobs[0], config)
    now = datetime.now(UTC)
    times_a = []
    previous = None
    for _ in range(5):
        previous = first.get_next_fire_time(previous, now)
        times_a.append(previous)
    time.sleep(1.3)
    second = make_trigger(config.jobs[0], config)
    later = datetime.now(UTC)
    nxt = second.get_next_fire_time(None, later)
    assert nxt in times_a
    assert all(int(t.timestamp()) % 7 == 0 for t in times_a)
    # The same holds for the Python API: add_job anchors "interval" triggers.
    sched_a, sched_b = BackgroundScheduler(timezone=UTC), BackgroundScheduler(timezone=UTC)
    members = []
    for sched in (sched_a, sched_b):
        elector = Elector(MemoryBackend(uuid.uuid4().hex), election="x", identity="i", **TIMING)
        member = LeaderScheduler(sched, elector)
        sched.start(paused=True)
        member.add_job(print, "interval", seconds=7, id="j")
        members.append(member)
        time.sleep(1.1)
    try:
        next_a = sched_a.get_job("j").next_run_time
        next_b = sched_b.get_job("j").next_run_time
        # Same grid (epoch + k * 7s), whatever moment each replica added the job.
        assert next_a.timestamp() % 7 == 0
        assert next_b.timestamp() % 7 == 0
        assert (next_b - next_a).total_seconds() in (0.0, 7.0)
    finally:
        for sched in (sched_a, sched_b):
            sched.shutdown(wait=False)


def test_current_term_inside_a_job(cluster: Cluster) -> None:
    seen: list[tuple[str, str, int, bool]] = []

    def job() -> None:
        term = current_term()
        assert term is not None
        seen.append((term.identity, term.election, term.token, term.held))

    member = cluster.member("a")
    member.add_job(job, "interval", seconds=0.1, id="t")
    member.start()
    assert wait_until(lambda: len(seen) >= 1, 10)
    assert seen[0] == ("a", "jobs", 1, True)
    assert current_term() is None  # outside a job


def test_on_lost_cancel_signals_running_jobs(cluster: Cluster) -> None:
    cancelled = threading.Event()
    started = threading.Event()

    def long_job() -> None:
        run = current_run()
        assert run is not None
        started.set()
        if run.cancelled.wait(10):
            cancelled.set()

    member = cluster.member("a", on_lost="cancel")
    member.add_job(long_job, "interval", seconds=0.2, id="long")
    member.start()
    assert started.wait(10)
    member.elector.stop(release=True, timeout=5)  # the term ends while the job runs
    assert cancelled.wait(5)


def test_on_lost_finish_lets_running_jobs_complete(cluster: Cluster) -> None:
    finished = threading.Event()
    started = threading.Event()
    held_after: list[bool] = []

    def long_job() -> None:
        run = current_run()
        assert run is not None
        started.set()
        time.sleep(0.5)
        held_after.append(run.term.held)
        if not run.cancelled.is_set():
            finished.set()

    member = cluster.member("a", on_lost="finish")
    member.add_job(long_job, "interval", seconds=0.2, id="long")
    member.start()
    assert started.wait(10)
    member.elector.stop(release=True, timeout=5)
    assert finished.wait(5)
    assert held_after == [False]


def test_shutdown_waits_for_running_jobs_before_releasing(cluster: Cluster) -> None:
    events: list[str] = []
    started = threading.Event()

    def job() -> None:
        started.set()
        time.sleep(0.5)
        events.append("job done")

    member = cluster.member("a")
    member.add_job(job, "interval", seconds=0.3, id="slow")
    member.start()
    assert started.wait(10)
    backend = member.elector.backend
    assert member.shutdown(5.0) is True
    events.append("released" if backend.leader("jobs") is None else "still held")
    assert events == ["job done", "released"]


def test_shutdown_cancels_jobs_past_the_grace_period(cluster: Cluster) -> None:
    started = threading.Event()

    def stubborn() -> None:
        run = current_run()
        assert run is not None
        started.set()
        run.cancelled.wait(30)

    member = cluster.member("a")
    member.add_job(stubborn, "interval", seconds=0.3, id="stubborn")
    member.start()
    assert started.wait(10)
    begun = time.monotonic()
    assert member.shutdown(0.3) is False
    assert time.monotonic() - begun < 5


def test_unguarded_executors_are_refused() -> None:
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(4)})
    elector = Elector(MemoryBackend(uuid.uuid4().hex), election="x", identity="i", **TIMING)
    with pytest.raises(ConfigError, match="would run jobs unguarded"):
        LeaderScheduler(scheduler, elector)


def test_asyncio_scheduler() -> None:
    seen: list[str] = []

    async def coro_job() -> None:
        term = current_term()
        assert term is not None
        seen.append(f"async {term.token}")

    def sync_job() -> None:
        term = current_term()
        assert term is not None
        seen.append(f"sync {term.token}")

    async def main() -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        elector = Elector(MemoryBackend(uuid.uuid4().hex), election="x", identity="i", **TIMING)
        member = LeaderScheduler(scheduler, elector)
        member.add_job(coro_job, "interval", seconds=0.1, id="c")
        member.add_job(sync_job, "interval", seconds=0.1, id="s")
        member.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            any(s.startswith("async") for s in seen) and any(s.startswith("sync") for s in seen)
        ):
            await asyncio.sleep(0.05)
        await asyncio.to_thread(member.shutdown, 1.0)

    asyncio.run(main())
    assert "async 1" in seen
    assert "sync 1" in seen


class NoClaimsBackend(MemoryBackend):
    supports_claims = False


def test_without_claims_fires_scheduled_before_the_term_began_are_skipped() -> None:
    elector = Elector(NoClaimsBackend(uuid.uuid4().hex), election="x", identity="i", **TIMING)
    member = LeaderScheduler(BackgroundScheduler(timezone=UTC), elector)
    fired = threading.Event()
    member.add_job(
        fired.set,
        "date",
        run_date=datetime.now(UTC) - timedelta(seconds=1),
        id="old",
        misfire_grace_time=30,
    )
    member.start()
    assert wait_until(member.elector.is_leader, 5)
    time.sleep(0.3)
    try:
        assert not fired.is_set()
        assert member.outcomes["old"][0] == "skipped"
    finally:
        member.shutdown(1.0)
