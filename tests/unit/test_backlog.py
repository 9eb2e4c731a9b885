"""A fire that falls due while its job is still working through older fires is not lost."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.schedulers.background import BackgroundScheduler

from leadercron import current_run
from leadercron.backends.memory import MemoryBackend
from leadercron.elector import Elector
from leadercron.scheduler import LeaderScheduler
from tests.conftest import wait_until


class Job:
    """A job whose first run blocks until ``go`` is set; records every fire it runs."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.started = threading.Event()
        self.fires: list[datetime] = []

    def __call__(self) -> None:
        run = current_run()
        assert run is not None
        self.fires.append(run.scheduled_time)
        self.started.set()
        assert self.go.wait(10)


@pytest.fixture
def leader() -> Iterator[LeaderScheduler]:
    elector = Elector(
        MemoryBackend(uuid.uuid4().hex),
        election="backlog",
        identity="a",
        ttl=3,
        renew_deadline=2,
        retry_period=0.5,
    )
    member = LeaderScheduler(
        BackgroundScheduler(timezone=UTC, job_defaults={"misfire_grace_time": 30}), elector
    )
    member.start()
    assert wait_until(elector.is_leader, 10)
    yield member
    member.shutdown(1.0)


def test_a_fire_due_during_a_late_batch_runs_after_it(leader: LeaderScheduler) -> None:
    job = Job()
    scheduled = leader.add_job(
        job, "interval", seconds=1, id="tick", coalesce=False, next_run_time=None
    )
    executor = leader.scheduler._lookup_executor("default")
    now = datetime.now(UTC).replace(microsecond=0)
    late = [now - timedelta(seconds=3), now - timedelta(seconds=2), now - timedelta(seconds=1)]
    executor.submit_job(scheduled, late)  # a catch-up batch: its first fire starts 3 s late
    assert job.started.wait(5)
    executor.submit_job(scheduled, [now])  # due while the batch runs: queued, not dropped
    job.go.set()
    assert wait_until(lambda: len(job.fires) == 4, 10)
    assert job.fires == [*late, now]


def test_a_fire_due_while_an_on_time_run_overruns_is_skipped(leader: LeaderScheduler) -> None:
    job = Job()
    scheduled = leader.add_job(
        job, "interval", seconds=1, id="tick", coalesce=False, next_run_time=None
    )
    executor = leader.scheduler._lookup_executor("default")
    now = datetime.now(UTC)
    executor.submit_job(scheduled, [now])  # on time, and it overruns its interval
    assert job.started.wait(5)
    with pytest.raises(MaxInstancesReachedError):  # APScheduler's max_instances, unchanged
        executor.submit_job(scheduled, [now + timedelta(seconds=1)])
    job.go.set()
    assert wait_until(lambda: leader.outcomes.get("tick", ("",))[0] == "success", 10)
    assert job.fires == [now]
