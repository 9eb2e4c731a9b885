"""Fenced claims in the scheduler: at most once across replicas, catch-up after a failover."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from leadercron import current_run
from leadercron.backends.base import Lease
from leadercron.backends.memory import MemoryBackend
from leadercron.elector import Elector
from leadercron.scheduler import LeaderScheduler, fire_key
from tests.conftest import wait_until

TIMING = {"ttl": 1.5, "renew_deadline": 1.0, "retry_period": 0.2}


class Runs:
    def __init__(self) -> None:
        self.rows: list[tuple[str, datetime]] = []
        self.lock = threading.Lock()

    def record(self) -> None:
        run = current_run()
        assert run is not None
        with self.lock:
            self.rows.append((run.term.identity, run.scheduled_time))


@pytest.fixture
def members() -> Iterator[list[LeaderScheduler]]:
    made: list[LeaderScheduler] = []
    yield made
    for member in made:
        if member.scheduler.running:
            member.shutdown(0.5)


def member(
    store: str, identity: str, made: list[LeaderScheduler], **job_defaults: object
) -> LeaderScheduler:
    elector = Elector(MemoryBackend(store), election="jobs", identity=identity, **TIMING)
    scheduler = BackgroundScheduler(
        timezone=UTC, job_defaults={"misfire_grace_time": 10, "coalesce": True, **job_defaults}
    )
    m = LeaderScheduler(scheduler, elector)
    made.append(m)
    return m


def test_fire_keys_are_milliseconds() -> None:
    assert fire_key(datetime(2026, 11, 28, 9, 0, 0, 500_400, tzinfo=UTC)) == 1_795_856_400_500
    assert fire_key(datetime(2026, 11, 28, 9, 0, 0, 499_999, tzinfo=UTC)) == 1_795_856_400_500


class SlowRenewBackend(MemoryBackend):
    """A memory backend whose renewals hang while ``stall`` is set (a slow network)."""

    def __init__(self, store: str) -> None:
        super().__init__(store)
        self.stall = threading.Event()
        self.resume = threading.Event()

    def renew(self, lease: Lease) -> Lease | None:
        if self.stall.is_set():
            self.resume.wait(10)
        return super().renew(lease)


def test_a_deposed_leader_runs_nothing_it_did_not_claim() -> None:
    runs = Runs()
    backend = SlowRenewBackend(uuid.uuid4().hex)
    elector = Elector(backend, election="jobs", identity="a", **TIMING)
    a = LeaderScheduler(BackgroundScheduler(timezone=UTC), elector)
    a.add_job(runs.record, "interval", seconds=0.1, id="tick")
    a.start()
    try:
        assert wait_until(lambda: len(runs.rows) >= 2, 10)
        # The replica cannot learn of its loss (renewals hang) while another party takes the
        # election in the backend: until its local deadline it still believes it leads, and
        # every claim it makes in that window must be refused by the backend.
        backend.stall.set()
        time.sleep(0.25)  # let a renew get stuck
        with backend._store.lock:
            backend._store.records["jobs"].owner = -1
        count = len(runs.rows)
        assert wait_until(lambda: a.outcomes["tick"][0] == "rejected", 2)
        time.sleep(0.5)
        assert len(runs.rows) == count, "a deposed leader ran a fire"
    finally:
        backend.resume.set()
        a.shutdown(1.0)


def test_catch_up_runs_fires_missed_during_a_failover_once(members: list[LeaderScheduler]) -> None:
    store = uuid.uuid4().hex
    runs = Runs()
    a = member(store, "a", members)
    a.add_job(runs.record, "interval", seconds=1, id="tick")
    a.start()
    assert wait_until(lambda: len(runs.rows) >= 1, 10)
    # "a" dies without releasing: its lease lingers for the ttl while fires fall due.
    a.elector.stop(release=False, timeout=5)
    a.scheduler.shutdown(wait=False)
    last_by_a = max(t for _, t in runs.rows)
    time.sleep(2.2)
    b = member(store, "b", members)
    b.add_job(runs.record, "interval", seconds=1, id="tick")
    started_b = datetime.now(UTC)
    b.start()
    assert wait_until(lambda: any(i == "b" for i, _ in runs.rows), 10)
    b_fires = sorted(t for i, t in runs.rows if i == "b")
    # b ran a fire that fell due before it even started (caught up from the ledger), coalesced.
    assert b_fires[0] < started_b
    assert b_fires[0] > last_by_a
    fires = [t for _, t in runs.rows]
    assert len(fires) == len(set(fires)), "a fire ran twice"


def test_catch_up_without_coalesce_runs_each_missed_fire(members: list[LeaderScheduler]) -> None:
    store = uuid.uuid4().hex
    runs = Runs()
    a = member(store, "a", members, coalesce=False)
    a.add_job(runs.record, "interval", seconds=0.5, id="tick")
    a.start()
    assert wait_until(lambda: len(runs.rows) >= 1, 10)
    a.elector.stop(release=False, timeout=5)
    a.scheduler.shutdown(wait=False)
    last_by_a = max(t for _, t in runs.rows)
    time.sleep(2.0)
    b = member(store, "b", members, coalesce=False)
    b.add_job(runs.record, "interval", seconds=0.5, id="tick")
    b.start()
    assert wait_until(lambda: sum(1 for i, _ in runs.rows if i == "b") >= 5, 10)
    fires = sorted(t for _, t in runs.rows)
    assert len(fires) == len(set(fires)), "a fire ran twice"
    # Every half-second fire from a's last one to b's latest ran exactly once: no gap.
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(fires)]
    assert all(abs(g - 0.5) < 1e-3 for g in gaps if fires[0] >= last_by_a), gaps
    assert max(gaps) == pytest.approx(0.5, abs=1e-3), gaps
