"""Per-job mode: what taking a job's lock costs each fire, alone and with replicas racing.

    python -m benchmarks.perjob [--fires 300] [--replicas 3] [--backends file,etcd,...]

For each backend (servers started on free loopback ports, as in the tests), through the real
:class:`~leadercron.perjob.PerJobScheduler` dispatch path (acquire the job's lock, claim the
fire, run an empty job, release):

* **alone**: one replica dispatches ``--fires`` consecutive fires; the time per fire, from the
  dispatch to the job's return, median and p99.
* **racing**: ``--replicas`` replicas, each with its own backend connection, dispatch the same
  ``--fires`` fires at the same instant (a barrier per fire). Reports how long the winner took to
  start the job, how long a loser took to learn it should skip, how the runs spread over the
  replicas, and checks that every fire ran exactly once.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from leadercron.backends import from_url
from leadercron.perjob import PerJobScheduler
from leadercron.term import current_run
from tests.servers import SERVERS, server_class
from tests.servers.base import Server

ALL = ["file", *SERVERS]
BASE = datetime(2030, 1, 1, tzinfo=UTC)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Replica:
    """One replica's PerJobScheduler, dispatching fires on demand (its own clock never fires)."""

    def __init__(self, url: str, identity: str, election: str, ttl: float) -> None:
        self.backend = from_url(url)
        self.identity = identity
        self.started: dict[datetime, float] = {}
        self.scheduler = PerJobScheduler(
            BackgroundScheduler(timezone=UTC),
            self.backend,
            election=election,
            identity=identity,
            default_ttl=ttl,
        )
        self.scheduler.add_job(self._job, "date", run_date=BASE + timedelta(days=365), id="job")
        self.scheduler.scheduler.start(paused=True)
        self.outcomes: list[str] = []
        self.scheduler.observe(lambda job, outcome, seconds: self.outcomes.append(outcome))

    def _job(self) -> None:
        run = current_run()
        assert run is not None
        self.started[run.scheduled_time] = time.perf_counter()

    def fire(self, when: datetime) -> None:
        job = self.scheduler.scheduler.get_job("job")
        self.scheduler.run_job(job, "default", [when], "bench")

    def close(self) -> None:
        self.scheduler.shutdown(1.0)
        self.backend.close()


def alone(url: str, fires: int, ttl: float) -> list[float]:
    replica = Replica(url, "solo", f"bench-{uuid.uuid4().hex[:8]}", ttl)
    try:
        timings = []
        for i in range(fires):
            start = time.perf_counter()
            replica.fire(BASE + timedelta(seconds=i))
            timings.append(time.perf_counter() - start)
        if replica.outcomes.count("success") != fires:
            raise RuntimeError(f"only {replica.outcomes.count('success')} of {fires} fires ran")
        return timings
    finally:
        replica.close()


def racing(url: str, fires: int, replicas: int, ttl: float) -> dict[str, Any]:
    election = f"bench-{uuid.uuid4().hex[:8]}"
    members = [Replica(url, f"r{i}", election, ttl) for i in range(replicas)]
    barrier = threading.Barrier(replicas + 1)
    go: list[float] = [0.0] * fires
    skip_times: list[float] = []
    lock = threading.Lock()

    def run(member: Replica) -> None:
        for i in range(fires):
            barrier.wait()
            when = BASE + timedelta(seconds=i)
            member.fire(when)
            if when not in member.started:
                with lock:
                    skip_times.append(time.perf_counter() - go[i])
            barrier.wait()

    threads = [threading.Thread(target=run, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    try:
        for i in range(fires):
            go[i] = time.perf_counter()
            barrier.wait()  # release the replicas for fire i
            barrier.wait()  # every replica is done with fire i
    finally:
        for thread in threads:
            thread.join(60)
    ran: collections.Counter[datetime] = collections.Counter()
    winner_times = []
    for member in members:
        for when, started in member.started.items():
            ran[when] += 1
            winner_times.append(started - go[int((when - BASE).total_seconds())])
    twice = sum(1 for n in ran.values() if n > 1)
    outcomes = collections.Counter(o for m in members for o in m.outcomes)
    for member in members:
        member.close()
    return {
        "fires": fires,
        "ran": len(ran),
        "twice": twice,
        "winner": winner_times,
        "skip": skip_times,
        "spread": sorted((len(m.started) for m in members), reverse=True),
        "outcomes": dict(outcomes),
    }


def server_url(name: str, tmp: Path) -> tuple[str, Server | None]:
    if name == "file":
        return f"file://{tmp / 'bench.lock'}", None
    server = server_class(name)()
    server.start()
    return server.url(), server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=30.0)
    parser.add_argument("--backends", default=",".join(ALL))
    args = parser.parse_args(argv)
    names = [n for n in args.backends.split(",") if n]
    tmp = Path(tempfile.mkdtemp(prefix="leadercron-perjob-"))
    print(f"# {args.fires} fires; racing: {args.replicas} replicas, one connection each")
    header = (
        f"{'backend':<12} {'alone p50':>10} {'alone p99':>10} {'race win p50':>13} "
        f"{'win p99':>9} {'skip p50':>9} {'ran':>5} {'twice':>6}  spread"
    )
    print(header)
    for name in names:
        url, server = server_url(name, tmp)
        try:
            solo = alone(url, args.fires, args.ttl)
            race = racing(url, args.fires, args.replicas, args.ttl)
        finally:
            if server is not None:
                server.cleanup()
        label = "kubernetes*" if name == "kubernetes" else name
        skip = statistics.median(race["skip"]) if race["skip"] else float("nan")
        print(
            f"{label:<12} {statistics.median(solo) * 1e3:>8.2f}ms "
            f"{percentile(solo, 0.99) * 1e3:>8.2f}ms "
            f"{statistics.median(race['winner']) * 1e3:>11.2f}ms "
            f"{percentile(race['winner'], 0.99) * 1e3:>7.2f}ms {skip * 1e3:>7.2f}ms "
            f"{race['ran']:>5} {race['twice']:>6}  {race['spread']}",
            flush=True,
        )
    print("# * kubernetes: the in-repo fake API server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
