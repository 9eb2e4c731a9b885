"""Per-job mode in one process: each fire runs on the replica that wins the job's lock, once."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from leadercron import current_run, current_term
from leadercron.backends.base import Lease
from leadercron.backends.memory import MemoryBackend
from leadercron.errors import BackendUnavailable
from leadercron.metrics import PER_JOB_METRIC_NAMES, Metrics
from leadercron.perjob import PerJobScheduler, lock_name
from leadercron.scheduler import fire_key
from tests.conftest import wait_until


class Runs:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, datetime, int]] = []
        self.lock = threading.Lock()

    def record(self, seconds: float = 0.0) -> None:
        run = current_run()
        assert run is not None
        with self.lock:
            self.rows.append((run.term.identity, run.job_id, run.scheduled_time, run.term.token))
        if seconds:
            time.sleep(seconds)

    def fires(self) -> list[tuple[str, datetime]]:
        with self.lock:
            return [(job, fire) for _, job, fire, _ in self.rows]


@pytest.fixture
def made() -> Iterator[list[PerJobScheduler]]:
    members: list[PerJobScheduler] = []
    yield members
    for member in members:
        if member.scheduler.running:
            member.shutdown(1.0)


def replica(
    backend: MemoryBackend,
    identity: str,
    made: list[PerJobScheduler],
    *,
    ttl: float = 1.0,
    on_lost: Any = "finish",
) -> PerJobScheduler:
    scheduler = BackgroundScheduler(
        timezone=UTC, job_defaults={"misfire_grace_time": 10, "coalesce": True}
    )
    member = PerJobScheduler(
        scheduler, backend, election="e", identity=identity, default_ttl=ttl, on_lost=on_lost
    )
    made.append(member)
    return member


def fire_once(member: PerJobScheduler, job_id: str, fire: datetime) -> list[Any]:
    """Dispatch one fire of a job through the member's guard, as its executor would."""
    if not member.scheduler.running:
        member.scheduler.start(paused=True)  # applies the job defaults; fires come from the test
    job = member.scheduler.get_job(job_id)
    return member.run_job(job, "default", [fire], "test")


def test_lock_names() -> None:
    assert lock_name("billing", "nightly-export") == "billing.nightly-export"


def test_every_fire_runs_once_and_jobs_spread_over_replicas(made: list[PerJobScheduler]) -> None:
    store = uuid.uuid4().hex
    runs = Runs()
    members = [replica(MemoryBackend(store), f"r{i}", made) for i in range(3)]
    for member in members:
        for job in ("a", "b", "c", "d"):
            member.add_job(runs.record, "interval", seconds=0.2, id=job, args=[0.05])
    for member in members:
        member.start()
    assert wait_until(lambda: len(runs.fires()) >= 40, 30)
    for member in members:
        member.shutdown(2.0)
    fires = runs.fires()
    assert len(fires) == len(set(fires)), "a fire ran twice"
    # Every replica saw every fire; the lock spread the runs over more than one replica.
    assert len({identity for identity, *_ in runs.rows}) >= 2
    # Consecutive fires of one job: no gap (each fire ran on some replica).
    for job in ("a", "b", "c", "d"):
        times = sorted(fire for j, fire in fires if j == job)
        gaps = {round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(times)}
        assert gaps <= {0.2}, (job, gaps)


def test_a_replica_that_finds_the_lock_held_skips_and_counts_it(
    made: list[PerJobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    store = uuid.uuid4().hex
    runs = Runs()
    a = replica(MemoryBackend(store), "a", made)
    b = replica(MemoryBackend(store), "b", made)
    metrics = Metrics(jobs=["job"], election="e", identity="b", backend_url="memory://x")
    b.observe(metrics.observe_job)
    for member in (a, b):
        member.add_job(runs.record, "date", run_date=datetime(2030, 1, 1, tzinfo=UTC), id="job")
    fire = datetime(2030, 1, 1, tzinfo=UTC)
    caplog.set_level("INFO", logger="leadercron.jobs")
    other = MemoryBackend(store).acquire(lock_name("e", "job"), "someone", 5.0)
    assert other is not None
    fire_once(b, "job", fire)
    assert runs.rows == []
    assert b.outcomes["job"][0] == "locked"
    assert "lock held by another replica (lock=e.job)" in caplog.text
    labels = {"election": "e", "identity": "b", "job": "job"}
    skips = metrics.registry.get_sample_value("leadercron_lock_skips_total", labels)
    skipped = metrics.registry.get_sample_value(
        "leadercron_job_runs_total", {**labels, "outcome": "skipped"}
    )
    assert (skips, skipped) == (1.0, 1.0)
    MemoryBackend(store).release(other)
    fire_once(a, "job", fire)
    assert [(i, j) for i, j, *_ in runs.rows] == [("a", "job")]


def test_two_replicas_racing_for_one_fire_run_it_once(made: list[PerJobScheduler]) -> None:
    """The lock alone is not enough: a replica that asks after the winner released must be
    refused by the fenced claim."""
    store = uuid.uuid4().hex
    runs = Runs()
    a = replica(MemoryBackend(store), "a", made)
    b = replica(MemoryBackend(store), "b", made)
    for member in (a, b):
        member.add_job(runs.record, "date", run_date=datetime(2030, 1, 1, tzinfo=UTC), id="job")
    fire = datetime(2030, 1, 1, tzinfo=UTC)
    fire_once(a, "job", fire)  # takes the lock, claims, runs, releases
    fire_once(b, "job", fire)  # the lock is free again: the claim refuses the same fire
    assert [(i, f) for i, _, f, _ in runs.rows] == [("a", fire)]
    assert b.outcomes["job"][0] == "rejected"
    # The next fire is free for either.
    fire_once(b, "job", fire + timedelta(seconds=1))
    assert [i for i, *_ in runs.rows] == ["a", "b"]
    # The lock is released after each run, and each acquisition has a new, larger token.
    tokens = [token for *_, token in runs.rows]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 2
    assert MemoryBackend(store).leader(lock_name("e", "job")) is None
    ledger = MemoryBackend(store).ledger(lock_name("e", "job"))
    assert ledger == {"job": fire_key(fire + timedelta(seconds=1))}


def test_many_threads_racing_for_the_same_fires(made: list[PerJobScheduler]) -> None:
    store = uuid.uuid4().hex
    runs = Runs()
    members = [replica(MemoryBackend(store), f"r{i}", made) for i in range(6)]
    for member in members:
        member.add_job(runs.record, "date", run_date=datetime(2030, 1, 1, tzinfo=UTC), id="job")
    base = datetime(2030, 1, 1, tzinfo=UTC)
    fires = [base + timedelta(seconds=i) for i in range(30)]
    barrier = threading.Barrier(len(members))

    def race(member: PerJobScheduler) -> None:
        for fire in fires:
            barrier.wait()
            fire_once(member, "job", fire)

    threads = [threading.Thread(target=race, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ran = [fire for _, _, fire, _ in runs.rows]
    assert len(ran) == len(set(ran)), "a fire ran twice"
    assert set(ran) <= set(fires)
    assert len(ran) >= len(fires) // 2  # most fires ran (a fire is lost only if every try lost)


def test_the_lock_is_extended_while_a_long_job_runs(made: list[PerJobScheduler]) -> None:
    store = uuid.uuid4().hex
    seen: list[tuple[bool, int]] = []

    def long_job() -> None:
        term = current_term()
        assert term is not None
        time.sleep(1.2)  # four times the lock ttl
        seen.append((term.held, term.token))

    a = replica(MemoryBackend(store), "a", made, ttl=0.3)
    a.add_job(long_job, "date", run_date=datetime(2030, 1, 1, tzinfo=UTC), id="job")
    worker = threading.Thread(target=fire_once, args=(a, "job", datetime(2030, 1, 1, tzinfo=UTC)))
    worker.start()
    assert wait_until(a.held_locks, 5)
    time.sleep(0.8)
    # Long past the ttl, nobody else can take the lock.
    assert MemoryBackend(store).acquire(lock_name("e", "job"), "b", 0.3) is None
    worker.join(5)
    assert seen
    assert seen[0][0] is True
    assert a.held_locks() == []
    assert MemoryBackend(store).leader(lock_name("e", "job")) is None


class LosingBackend(MemoryBackend):
    """A memory backend that reports every renew as lost once ``lose`` is set."""

    def __init__(self, store: str) -> None:
        super().__init__(store)
        self.lose = threading.Event()

    def renew(self, lease: Lease) -> Lease | None:
        if self.lose.is_set():
            return None
        return super().renew(lease)


def test_a_lost_lock_cancels_the_run_and_is_counted(made: list[PerJobScheduler]) -> None:
    store = uuid.uuid4().hex
    backend = LosingBackend(store)
    outcome: dict[str, object] = {}

    def job() -> None:
        run = current_run()
        assert run is not None
        outcome["cancelled"] = run.cancelled.wait(5)
        outcome["held"] = run.term.held

    a = replica(backend, "a", made, ttl=0.6, on_lost="cancel")
    metrics = Metrics(jobs=["job"], election="e", identity="a", backend_url="memory://x")
    a.on_lock_lost(metrics.lock_lost)
    a.add_job(job, "date", run_date=datetime(2030, 1, 1, tzinfo=UTC), id="job")
    worker = threading.Thread(target=fire_once, args=(a, "job", datetime(2030, 1, 1, tzinfo=UTC)))
    worker.start()
    assert wait_until(a.held_locks, 5)
    backend.lose.set()
    worker.join(10)
    assert outcome == {"cancelled": True, "held": False}
    labels = {"election": "e", "identity": "a", "job": "job"}
    assert metrics.registry.get_sample_value("leadercron_lock_losses_total", labels) == 1.0


class DownBackend(MemoryBackend):
    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        raise BackendUnavailable("connection refused")


def test_an_unreachable_backend_skips_the_fire_and_marks_the_backend_down(
    made: list[PerJobScheduler],
) -> None:
    runs = Runs()
    a = replica(DownBackend(uuid.uuid4().hex), "a", made)
    reports: list[bool] = []
    a.on_backend(reports.append)
    a.add_job(runs.record, "date", run_date=datetime(2030, 1, 1, tzinfo=UTC), id="job")
    fire_once(a, "job", datetime(2030, 1, 1, tzinfo=UTC))
    assert runs.rows == []
    assert a.outcomes["job"][0] == "skipped"
    assert reports == [False]


def test_a_replica_never_runs_two_fires_of_one_job_at_once(made: list[PerJobScheduler]) -> None:
    store = uuid.uuid4().hex
    runs = Runs()
    a = replica(MemoryBackend(store), "a", made)
    a.add_job(runs.record, "date", run_date=datetime(2030, 1, 1, tzinfo=UTC), id="job", args=[0.5])
    outcomes: list[str] = []
    a.observe(lambda job, outcome, seconds: outcomes.append(outcome))
    first = threading.Thread(target=fire_once, args=(a, "job", datetime(2030, 1, 1, tzinfo=UTC)))
    first.start()
    assert wait_until(a.held_locks, 5)
    fire_once(a, "job", datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC))
    first.join(5)
    assert len(runs.rows) == 1
    assert outcomes == ["locked", "success"]


def test_per_job_metrics_have_no_election_series() -> None:
    metrics = Metrics(
        jobs=["job"], election="e", identity="a", backend_url="redis://h", process_collectors=False
    )
    metrics.count_locks(lambda: 2.0)
    text = metrics.exposition().decode()
    for name in PER_JOB_METRIC_NAMES:
        assert name.removesuffix("_total") in text
    assert 'leadercron_locks_held{election="e",identity="a"} 2.0' in text
    assert "leadercron_is_leader" not in text
    assert 'backend="redis"' in text
    with pytest.raises(ValueError, match="without an elector"):
        Metrics(jobs=[], election="e")
